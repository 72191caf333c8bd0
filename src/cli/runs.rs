//! `flowrun runs` and `flowrun runs show ID`: the executions of a store.

use std::path::Path;

use crate::cli::args::{RunsArgs, RunsCommand, StatusFilter};
use crate::cli::batch::quote;
use crate::cli::executions::{no_store, open_store, process_is_alive, store_diagnostic, store_path};
use crate::cli::output;
use crate::cli::{fail_invalid, EXIT_SUCCESS};
use crate::store::sqlite::SqliteStore;
use crate::store::{ExecutionStatus, Store, StoreError};

/// `flowrun runs` and `flowrun runs show ID`.
pub(crate) fn runs_command(args: RunsArgs) -> u8 {
    let (store_args, show) = match &args.command {
        Some(RunsCommand::Show { execution_id, store }) => {
            let store = if store.store.is_some() { store } else { &args.store };
            (store, Some(execution_id))
        }
        None => (&args.store, None),
    };
    let path = store_path(store_args, None);
    if !path.exists() {
        return fail_invalid(&[no_store(&path)], None);
    }
    let store = match open_store(&path) {
        Ok(store) => store,
        Err(diagnostic) => return fail_invalid(&[diagnostic], None),
    };
    let text = match show {
        Some(id) => match history_text(&store, id) {
            Ok(text) => text,
            Err(error) => return fail_invalid(&[store_diagnostic(&error, &path)], None),
        },
        None => match list_text(&store, args.status) {
            Ok(text) => text,
            Err(error) => return fail_invalid(&[store_diagnostic(&error, &path)], None),
        },
    };
    if !output::print_stdout(&text.out) {
        return crate::cli::EXIT_OUTPUT_FAILED;
    }
    if store.read_only() {
        let journals = crate::store::journal::count(&path);
        if journals > 0 {
            let (journals, records) = match journals {
                1 => ("1 batch journal beside it was".to_string(), "it records"),
                many => (format!("{many} batch journals beside it were"), "they record"),
            };
            output::eprint_line(&format!(
                "warning: the store `{}` is read-only, so {journals} not applied, and the \
                 executions {records} are missing or out of date here: make the store writable \
                 and run `flowrun runs` again",
                path.display()
            ));
        }
    }
    if let Some(hint) = text.interrupted {
        output::eprint_line(&hint.line(&path));
    }
    EXIT_SUCCESS
}

/// The text of `flowrun runs` for standard output, and the hint that goes to
/// standard error when an execution in it is interrupted.
struct Listing {
    out: String,
    interrupted: Option<Interrupted>,
}

/// Executions that are stored as running although their process is gone.
enum Interrupted {
    /// Rows of the list.
    Listed,
    /// The execution of `flowrun runs show`, and the process that ran it.
    Shown { id: String, pid: u32 },
}

impl Interrupted {
    /// Builds the line that names the commands that continue the
    /// executions in the store at `path`.
    fn line(&self, path: &Path) -> String {
        let store = quote(&path.display().to_string());
        match self {
            Interrupted::Listed => format!(
                "interrupted executions were running in a process that stopped: continue them all with \
                 `flowrun resume --all --store {store}`, or one with `flowrun resume ID --store {store}`"
            ),
            Interrupted::Shown { id, pid } => format!(
                "execution {id} was running in process {pid}, which stopped: continue it with \
                 `flowrun resume {id} --store {store}`"
            ),
        }
    }
}

/// Returns the status that `flowrun runs` shows for execution `id`, read
/// as `status` and run by process `pid`: the stored one, except
/// `interrupted` for an execution stored as running whose process is gone,
/// which `flowrun resume` continues.
fn shown_status(
    store: &SqliteStore,
    id: &str,
    status: ExecutionStatus,
    pid: u32,
) -> Result<&'static str, StoreError> {
    if status != ExecutionStatus::Running || process_is_alive(pid) {
        return Ok(status.as_str());
    }
    // The process may have stored the execution's end and exited after the
    // row was read. It commits before it exits, so a second read made once
    // it is gone sees its last write.
    let again = store.execution(id)?;
    Ok(match again.status {
        ExecutionStatus::Running if again.pid == pid || !process_is_alive(again.pid) => INTERRUPTED,
        status => status.as_str(),
    })
}

const INTERRUPTED: &str = "interrupted";

/// Formats the executions of the store, newest first, only those that
/// `filter` names when it is given.
fn list_text(store: &SqliteStore, filter: Option<StatusFilter>) -> Result<Listing, StoreError> {
    // Both `running` and `interrupted` are stored as running, so whether
    // the process is alive decides between them.
    let (stored, shown) = match filter {
        None => (None, None),
        Some(StatusFilter::Running) => (
            Some(ExecutionStatus::Running),
            Some(ExecutionStatus::Running.as_str()),
        ),
        Some(StatusFilter::Interrupted) => (Some(ExecutionStatus::Running), Some(INTERRUPTED)),
        Some(StatusFilter::Succeeded) => (Some(ExecutionStatus::Succeeded), None),
        Some(StatusFilter::Failed) => (Some(ExecutionStatus::Failed), None),
        Some(StatusFilter::Paused) => (Some(ExecutionStatus::Paused), None),
    };
    let mut out = format!(
        "{:<36}  {:<11}  {:<20}  {:<25}  {}\n",
        "ID", "STATUS", "STARTED", "WORKFLOW", "NEXT STEP"
    );
    let mut interrupted = None;
    for execution in store.executions(stored)? {
        let status = shown_status(store, &execution.id, execution.status, execution.pid)?;
        if shown.is_some_and(|shown| shown != status) {
            continue;
        }
        if status == INTERRUPTED {
            interrupted = Some(Interrupted::Listed);
        }
        out.push_str(&format!(
            "{:<36}  {:<11}  {:<20}  {:<25}  {}\n",
            execution.id,
            status,
            execution.started_at.get(..19).unwrap_or(&execution.started_at),
            execution.workflow,
            execution.next_step_name.unwrap_or_else(|| "-".to_string())
        ));
    }
    Ok(Listing { out, interrupted })
}

/// Formats the step-by-step history of one execution for `flowrun runs show`.
fn history_text(store: &SqliteStore, id: &str) -> Result<Listing, StoreError> {
    let mut record = store.execution(id)?;
    let mut status = shown_status(store, id, record.status, record.pid)?;
    // The execution ended between the two reads: its steps are read after
    // its end, so that they agree with the status shown.
    if status != record.status.as_str() && status != INTERRUPTED {
        record = store.execution(id)?;
        status = record.status.as_str();
    }
    let steps = store.steps(id)?;
    let notifications = store.notifications(id)?;
    let mut text = format!(
        "execution {}\nworkflow  {} ({})\nstatus    {}\nstarted   {}\nupdated   {}\n",
        record.id, record.workflow, record.source_path, status, record.started_at, record.updated_at
    );
    if let Some(finished) = &record.finished_at {
        text.push_str(&format!("finished  {finished}\n"));
    }
    for step in &steps {
        text.push_str(&format!(
            "\nstep {} \"{}\": {} (run {})\n",
            step.index + 1,
            step.name,
            step.status.as_str(),
            step.runs
        ));
        let branch = record
            .vars
            .get(crate::run::BRANCHES_KEY)
            .and_then(|branches| branches.get(&step.name))
            .and_then(|branch| branch.as_str());
        if let Some(branch) = branch {
            text.push_str(&format!("  took the `{branch}` branch\n"));
        }
        for attempt in &step.attempts {
            let outcome = match (&attempt.status_code, &attempt.error) {
                (_, Some(error)) => error.clone(),
                (Some(code), None) => code.to_string(),
                (None, None) => "no response".to_string(),
            };
            text.push_str(&format!(
                "  attempt {} of action {}: {} {} -> {} in {} ms",
                attempt.number,
                attempt.action + 1,
                attempt.method,
                attempt.url,
                outcome,
                attempt.duration_ms
            ));
            if attempt.waited_ms > 0 {
                text.push_str(&format!(" after waiting {} ms", attempt.waited_ms));
            }
            text.push('\n');
        }
        for call in step.llm_usage.as_array().into_iter().flatten() {
            text.push_str(&format!(
                "  model {} via {}: {} prompt and {} completion tokens in {} ms\n",
                call["model"].as_str().unwrap_or_default(),
                call["provider"].as_str().unwrap_or_default(),
                call["prompt_tokens"],
                call["completion_tokens"],
                call["latency_ms"]
            ));
        }
        if let Some(error) = &step.error {
            text.push_str(&format!("  error: {error}\n"));
        }
    }
    for notification in &notifications {
        text.push_str(&format!(
            "\nnotification ({}) for step \"{}\" at {} via {}",
            notification.severity,
            notification.step,
            notification.sent_at,
            notification.channels.join(", ")
        ));
        if let Some(error) = &notification.delivery_error {
            text.push_str(&format!("; delivery failed: {error}"));
        }
        text.push('\n');
    }
    let interrupted = (status == INTERRUPTED).then(|| Interrupted::Shown {
        id: record.id.clone(),
        pid: record.pid,
    });
    Ok(Listing {
        out: text,
        interrupted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewExecution;

    /// No process has this id: Linux allocates ids below 4,194,304.
    const GONE: u32 = 4_194_304;

    #[test]
    fn execution_ended_after_read_shows_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("store.db")).unwrap();
        let entity = serde_json::json!({"id": "C-1"});
        store
            .begin_execution(&NewExecution {
                id: "ex-1",
                workflow: "claims",
                source_path: "/claims.flow",
                workflow_hash: "h",
                step_hashes: &[],
                step_names: &[],
                entity: &entity,
                vars: &serde_json::Map::new(),
                started_at: "2026-01-01T00:00:00Z",
                pid: GONE,
            })
            .unwrap();
        let status = shown_status(&store, "ex-1", ExecutionStatus::Running, GONE);
        assert_eq!(status.unwrap(), INTERRUPTED);

        // The listing read the row as running, and then the process stored
        // the end and exited.
        store
            .set_status("ex-1", ExecutionStatus::Succeeded, "2026-01-01T00:00:01Z")
            .unwrap();
        let status = shown_status(&store, "ex-1", ExecutionStatus::Running, GONE);
        assert_eq!(status.unwrap(), "succeeded");
        let history = history_text(&store, "ex-1").unwrap();
        assert!(history.out.contains("\nstatus    succeeded\n"), "{}", history.out);
        assert!(history.interrupted.is_none());
    }
}
