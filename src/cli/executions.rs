//! Commands and helpers around the execution store: opening it and
//! `flowrun resume`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::CertificateDer;

use crate::cli::args::{NotifyArgs, ResumeArgs, StoreArgs, TlsArgs};
use crate::cli::output::{self, Source};
use crate::cli::{check_source, fail_invalid, finish_run, EXIT_INVALID};
use crate::diagnostic::{Code, Diagnostic};
use crate::input;
use crate::program::Program;
use crate::run::http::Http;
use crate::run::notify::Channels;
use crate::run::report::Report;
use crate::run::{self, Execution, Options};
use crate::store::sqlite::SqliteStore;
use crate::store::{ExecutionRecord, ExecutionStatus, StepRecord, StepStatus, Store, StoreError};

/// Resolves the store's file: `--store` or FLOWRUN_STORE, else
/// `.flowrun/flowrun.db` beside the workflow, or in the current folder when
/// there is no workflow.
pub(crate) fn store_path(args: &StoreArgs, workflow: Option<&Path>) -> PathBuf {
    if let Some(path) = &args.store {
        return path.clone();
    }
    let folder = workflow
        .and_then(Path::parent)
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    folder.join(".flowrun").join("flowrun.db")
}

/// Opens the store for reading: a read-only file is read as of its last commit.
pub(crate) fn open_store(path: &Path) -> Result<SqliteStore, Diagnostic> {
    SqliteStore::open(path).map_err(|error| store_diagnostic(&error, path))
}

/// Opens the store for a command that writes it, failing before anything
/// runs when the file is read-only.
pub(crate) fn open_writable_store(path: &Path) -> Result<SqliteStore, Diagnostic> {
    SqliteStore::open_writable(path).map_err(|error| store_diagnostic(&error, path))
}

pub(crate) fn store_diagnostic(error: &StoreError, path: &Path) -> Diagnostic {
    let help = match error {
        StoreError::Locked { .. } => {
            "another flowrun process holds the store; wait for it, or give this run its own file with --store PATH"
                .to_string()
        }
        StoreError::ReadOnly { path } => {
            format!("make `{path}` writable for this user, or choose another file with --store PATH")
        }
        StoreError::Corrupt { .. } => format!(
            "move `{}` aside to keep it for inspection; flowrun then starts a new store",
            path.display()
        ),
        StoreError::NotFound { .. } => "list the executions of this store with `flowrun runs`".to_string(),
        StoreError::AlreadyExists { id } => format!(
            "give each run its own --execution-id, or continue this one with `flowrun resume {id}`"
        ),
        StoreError::Open { .. } | StoreError::Other(_) => {
            "check that the folder exists and is writable, or choose another file with --store PATH".to_string()
        }
    };
    Diagnostic::error(Code::StoreUnavailable, error.to_string()).with_help(help)
}

pub(crate) fn channels(args: &NotifyArgs) -> Channels {
    Channels {
        file: args.notify_file.clone(),
        webhooks: args.notify_webhook.clone(),
    }
}

/// Reads the CA certificates of `--cacert` or FLOWRUN_CACERT, else those
/// that `flowrun.toml` beside `workflow` names. Returns none when neither
/// names a file.
pub(crate) fn ca_certificates(
    args: &TlsArgs,
    workflow: &Path,
) -> Result<Vec<CertificateDer<'static>>, Diagnostic> {
    if let Some(path) = &args.cacert {
        return crate::cacert::read_ca_certificates(path, crate::cacert::OPTION);
    }
    let folder = workflow
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match crate::project::load_cacert(folder)? {
        Some((path, project_file)) => {
            let origin = format!("`cacert` under `[tls]` in `{}`", project_file.display());
            crate::cacert::read_ca_certificates(&path, &origin)
        }
        None => Ok(Vec::new()),
    }
}

/// Runs an execution on a single-threaded runtime, with an HTTP client that
/// also trusts `ca_certificates`. On a startup failure, returns the exit
/// code after printing why.
pub(crate) fn execute_blocking(
    program: &Program,
    source: &str,
    execution: Execution,
    options: &Options,
    store: Option<&mut dyn Store>,
    ca_certificates: &[CertificateDer<'static>],
) -> Result<Report, u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| fail_start(&format!("cannot start the async runtime: {error}")))?;
    let http = Http::with_ca_certificates(ca_certificates)
        .map_err(|error| fail_start(&format!("cannot create the HTTP client: {error}")))?;
    Ok(runtime.block_on(run::execute(program, source, execution, &http, options, store)))
}

fn fail_start(message: &str) -> u8 {
    output::eprint_diagnostics(&[Diagnostic::error(Code::StartupFailed, message)], None);
    EXIT_INVALID
}

fn refusal(message: String, help: &str) -> Diagnostic {
    Diagnostic::error(Code::ResumeRefused, message).with_help(help)
}

/// `flowrun resume ID`, or `flowrun resume --all`: runs a paused or
/// interrupted execution again from its first unfinished step.
pub(crate) fn resume_command(args: ResumeArgs) -> u8 {
    let Some(execution_id) = args.execution_id.clone() else {
        if !args.all {
            output::eprint_line(
                "error: --workflow applies only to `flowrun resume --all`; run `flowrun resume --all --workflow FILE`",
            );
            return EXIT_INVALID;
        }
        return crate::cli::resume_all::resume_all_command(&args);
    };
    // These options shape a bulk resume only; clap's `requires` does not
    // reject them next to an execution id.
    let bulk_only = [
        ("--concurrency", args.concurrency.is_some()),
        ("--rate", args.rate.is_some()),
        ("--workflow", args.workflow.is_some()),
    ];
    if let Some((option, _)) = bulk_only.iter().find(|(_, given)| *given) {
        output::eprint_line(&format!(
            "error: {option} applies only to `flowrun resume --all`; remove it to resume execution {execution_id}"
        ));
        return EXIT_INVALID;
    }
    // Logging starts first, so that the warnings about forced and resent
    // steps reach standard error.
    output::init_logging(args.log_format, args.verbose);
    let path = store_path(&args.store, None);
    if !path.exists() {
        return fail_invalid(&[no_store(&path)], None);
    }
    let mut store = match open_writable_store(&path) {
        Ok(store) => store,
        Err(diagnostic) => return fail_invalid(&[diagnostic], None),
    };
    let record = match store.execution(&execution_id) {
        Ok(record) => record,
        Err(error) => return fail_invalid(&[store_diagnostic(&error, &path)], None),
    };
    if let Err(diagnostic) = check_resumable(&record) {
        return fail_invalid(&[diagnostic], None);
    }

    let workflow = PathBuf::from(&record.source_path);
    let name = workflow.display().to_string();
    let text = match input::read_flow(&workflow) {
        Ok(text) => text,
        Err(diagnostic) => return fail_invalid(&[diagnostic], None),
    };
    let source = Source {
        name: &name,
        text: &text,
    };
    let checked = check_source(&text, &workflow);
    if checked.diagnostics.iter().any(Diagnostic::is_error) {
        return fail_invalid(&checked.diagnostics, Some(&source));
    }
    let secrets = match input::read_secrets(std::env::vars(), args.secrets.as_deref()) {
        Ok(secrets) => secrets,
        Err(diagnostic) => return fail_invalid(&[diagnostic], None),
    };
    let ca_certificates = match ca_certificates(&args.tls, &workflow) {
        Ok(certificates) => certificates,
        Err(diagnostic) => return fail_invalid(&[diagnostic], None),
    };
    let env = run::llm::provider_env(std::env::vars());
    let permissions = Permissions {
        force: args.force,
        resend_in_flight: args.resend_in_flight,
    };
    let taken = take_over(
        &mut store,
        &record,
        &checked.program,
        &text,
        secrets,
        env,
        permissions,
    );
    let taken = match taken {
        Ok(taken) => taken,
        Err(Refusal::Invalid(diagnostics)) => return fail_invalid(&diagnostics, Some(&source)),
        Err(Refusal::Taken) => return fail_invalid(&[taken_by_another(&record.id)], None),
        Err(Refusal::Store(error)) => return fail_invalid(&[store_diagnostic(&error, &path)], None),
    };
    let options = Options {
        dry_run: false,
        sleeper: Arc::new(run::retry::TokioSleeper),
        channels: channels(&args.notify),
        first_step: taken.first_step,
        earlier_failures: taken.earlier_failures,
        store_path: Some(path.clone()),
    };
    match execute_blocking(
        &checked.program,
        &text,
        taken.execution,
        &options,
        Some(&mut store),
        &ca_certificates,
    ) {
        Ok(report) => finish_run(&report, &source, Some(&path)),
        Err(code) => code,
    }
}

/// Rejects an execution that has already ended or still runs in a live
/// process.
pub(crate) fn check_resumable(record: &ExecutionRecord) -> Result<(), Diagnostic> {
    match record.status {
        ExecutionStatus::Paused => Ok(()),
        ExecutionStatus::Running if process_is_alive(record.pid) => Err(refusal(
            format!("execution {} is still running in process {}", record.id, record.pid),
            "wait for that process to end; resume only continues executions that paused or whose process stopped",
        )),
        ExecutionStatus::Running => Ok(()),
        ExecutionStatus::Succeeded | ExecutionStatus::Failed => Err(refusal(
            format!("execution {} has already {}", record.id, record.status.as_str()),
            "only paused executions, and executions whose process stopped, can be resumed",
        )),
    }
}

fn taken_by_another(id: &str) -> Diagnostic {
    refusal(
        format!("execution {id} was resumed by another process"),
        "check its progress with `flowrun runs show ID`",
    )
}

/// The flags of `resume` that allow a take-over the checks would refuse.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Permissions {
    /// `--force`: resume although steps before the failed one changed.
    pub force: bool,
    /// `--resend-in-flight`: send again a POST or PATCH left in flight.
    pub resend_in_flight: bool,
}

/// An execution claimed by this process, ready to run its remaining steps.
pub(crate) struct TakenOver {
    pub execution: Execution,
    pub first_step: usize,
    /// A step before the resume point failed with `continue notify`.
    pub earlier_failures: bool,
}

/// The reason [`take_over`] left an execution alone.
pub(crate) enum Refusal {
    /// The execution cannot resume, for the reasons in the diagnostics.
    Invalid(Vec<Diagnostic>),
    /// Another process resumed it after it was read.
    Taken,
    Store(StoreError),
}

/// Checks that `record` can resume on `program`, whose source is `text`,
/// then claims it for this process and records the workflow it resumes on.
/// A step left in flight whose resend is refused is marked
/// `outcome_unknown`.
pub(crate) fn take_over(
    store: &mut dyn Store,
    record: &ExecutionRecord,
    program: &Program,
    text: &str,
    secrets: HashMap<String, String>,
    env: HashMap<String, String>,
    permissions: Permissions,
) -> Result<TakenOver, Refusal> {
    let first_step = first_step_to_run(record, program, text, permissions.force)
        .map_err(|diagnostic| Refusal::Invalid(vec![diagnostic]))?;
    let steps = store.steps(&record.id).map_err(Refusal::Store)?;
    let in_flight = in_flight_step(&steps, record);
    // A paused execution has no step running, unless another resume has
    // taken it over since it was read.
    if record.status == ExecutionStatus::Paused
        && in_flight.is_some_and(|step| step.status == StepStatus::Running)
    {
        return Err(Refusal::Taken);
    }
    if let Some(step) = in_flight {
        if let Some(diagnostic) = reject_in_flight(step, record, permissions.resend_in_flight) {
            // The refusal still records what is known of the step: its
            // outcome is unknown.
            if step.status == StepStatus::Running {
                store
                    .mark_outcome_unknown(&record.id, step.index, &run::now())
                    .map_err(Refusal::Store)?;
            }
            return Err(Refusal::Invalid(vec![diagnostic]));
        }
    }
    let execution = run::prepare_resume(program, record, secrets, env).map_err(Refusal::Invalid)?;

    // Only one process may take the execution over; the claim fails when
    // another resume changed it since it was read.
    let claimed = store
        .claim(
            &record.id,
            record.status,
            record.pid,
            std::process::id(),
            &run::now(),
        )
        .map_err(Refusal::Store)?;
    if !claimed {
        return Err(Refusal::Taken);
    }
    if let Some(step) = in_flight.filter(|step| step.status == StepStatus::Running) {
        store
            .mark_outcome_unknown(&record.id, step.index, &run::now())
            .map_err(Refusal::Store)?;
    }
    // The store follows the workflow as it is now, so that a later resume
    // finds the steps where this one left them.
    let step_names: Vec<String> = program.steps.iter().map(|step| step.name.clone()).collect();
    store
        .rebase(
            &record.id,
            &run::sha256_hex(text),
            &run::step_hashes(program, text),
            &step_names,
            first_step,
            &run::now(),
        )
        .map_err(Refusal::Store)?;
    Ok(TakenOver {
        execution,
        first_step,
        earlier_failures: steps
            .iter()
            .any(|step| step.status == StepStatus::FailedContinued),
    })
}

pub(crate) fn no_store(path: &Path) -> Diagnostic {
    Diagnostic::error(
        Code::StoreUnavailable,
        format!("no execution store at `{}`", path.display()),
    )
    .with_help(
        "`flowrun run` keeps its store beside the workflow, in FOLDER/.flowrun/flowrun.db: \
         pass that path with --store, or set FLOWRUN_STORE",
    )
}

/// Finds where a resume continues: the step that stopped the execution,
/// looked up by name in the workflow as it is now. Refuses when that step
/// is gone, or when a step before it changed, unless forced.
fn first_step_to_run(
    record: &ExecutionRecord,
    program: &Program,
    text: &str,
    force: bool,
) -> Result<usize, Diagnostic> {
    let hashes = run::step_hashes(program, text);
    let Some(stopped_at) = record.step_names.get(record.next_step) else {
        // Every recorded step finished; the process stopped before it could
        // record the end of the execution.
        return Ok(program.steps.len());
    };
    let Some(index) = program.steps.iter().position(|step| &step.name == stopped_at) else {
        return Err(refusal(
            format!(
                "step \"{stopped_at}\", where execution {} stopped, is no longer in `{}`",
                record.id, record.source_path
            ),
            "restore the step; resume needs the step that stopped the execution",
        ));
    };
    let unchanged = index == record.next_step
        && (0..index).all(|position| record.step_hashes.get(position) == hashes.get(position));
    if unchanged {
        return Ok(index);
    }
    if force {
        tracing::warn!(
            "resuming although the steps before \"{stopped_at}\" changed since the execution stopped"
        );
        return Ok(index);
    }
    let changed = (0..index.max(record.next_step))
        .find(|&position| record.step_hashes.get(position) != hashes.get(position))
        .unwrap_or(0);
    let name = program
        .steps
        .get(changed)
        .map(|step| step.name.clone())
        .or_else(|| record.step_names.get(changed).cloned())
        .unwrap_or_default();
    Err(refusal(
        format!(
            "step {} (\"{name}\") of `{}` changed since execution {} stopped, so its recorded results may not fit the workflow",
            changed + 1,
            record.source_path,
            record.id
        ),
        "undo the change to the steps before the failed one, or resume anyway with --force",
    ))
}

/// Finds the step that was running when the execution's process stopped.
fn in_flight_step<'a>(steps: &'a [StepRecord], record: &ExecutionRecord) -> Option<&'a StepRecord> {
    steps.iter().find(|step| {
        step.index == record.next_step
            && matches!(step.status, StepStatus::Running | StepStatus::OutcomeUnknown)
    })
}

/// A step left running by a process that stopped may have sent its
/// requests. It is sent again only when all its methods are idempotent or
/// `--resend-in-flight` allows it.
fn reject_in_flight(step: &StepRecord, record: &ExecutionRecord, resend: bool) -> Option<Diagnostic> {
    let idempotent = step
        .methods
        .iter()
        .all(|method| matches!(method.as_str(), "GET" | "PUT" | "DELETE" | "LLM"));
    if idempotent || resend {
        tracing::warn!(
            "step \"{}\" was in flight when flowrun stopped; sending it again",
            step.name
        );
        return None;
    }
    Some(refusal(
        format!(
            "step \"{}\" of execution {} was in flight when flowrun stopped, and its outcome is unknown",
            step.name, record.id
        ),
        "its method is not idempotent: check whether the receiver acted on it, then resume with --resend-in-flight to send it again with the same Idempotency-Key",
    ))
}

/// Reports whether a flowrun process with this id runs (Linux: `/proc/PID`).
/// A zombie, or another program that reused the id, does not count.
pub(crate) fn process_is_alive(pid: u32) -> bool {
    if pid == 0 || pid == std::process::id() {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the command name, which is in parentheses.
    let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
    if matches!(state, None | Some('Z') | Some('X')) {
        return false;
    }
    let command_line = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let program = command_line.split(|byte| *byte == 0).next().unwrap_or_default();
    String::from_utf8_lossy(program).contains("flowrun")
}
