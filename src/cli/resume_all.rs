//! `flowrun resume --all`: resumes every paused or interrupted execution of
//! a store, as a batch run runs records. Each execution passes the checks of
//! `flowrun resume ID` and is claimed before it runs, so an execution that
//! another process resumes at the same time runs only once.

use std::collections::HashMap;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rustls_pki_types::CertificateDer;

use crate::batch::writer::StoreWriter;
use crate::batch::{self, Finished, Numbered, Pace, Start};
use crate::cli::args::{LogFormat, ResumeArgs};
use crate::cli::batch::{self as batch_output, Log, Naming, Printer};
use crate::cli::executions::{
    self, check_resumable, process_is_alive, store_diagnostic, take_over, Permissions, Refusal,
};
use crate::cli::output::{self, Source};
use crate::cli::{check_source, fail_invalid, EXIT_OUTPUT_FAILED, EXIT_SUCCESS};
use crate::diagnostic::{Code, Diagnostic};
use crate::input;
use crate::program::Program;
use crate::run::http::Http;
use crate::run::notify::Channels;
use crate::run::politeness::Politeness;
use crate::run::{self, Options};
use crate::store::sqlite::SqliteStore;
use crate::store::{ExecutionStatus, Store, StoreError};

/// An execution found resumable when the store was listed.
struct Candidate {
    number: u64,
    id: String,
    /// The status and process it was listed with; the claim expects both.
    status: ExecutionStatus,
    pid: u32,
    source_path: String,
    /// The workflow it resumes on, or the diagnostic that stops it.
    workflow: Option<Result<Arc<Workflow>, Diagnostic>>,
}

impl Numbered for Candidate {
    fn number(&self) -> u64 {
        self.number
    }
}

/// A workflow file that listed executions resume on, read and checked once.
struct Workflow {
    text: String,
    program: Program,
    /// The client of its executions: it trusts the CA certificates of
    /// `--cacert` or of the `flowrun.toml` beside the workflow, and shares
    /// the politeness of every execution. Workflows that trust the same
    /// certificates share one client, and with it the connections and the
    /// gate on the first request to each HTTPS origin.
    http: Arc<Http>,
}

/// The connections and settings that every resumed execution shares.
struct Shared<'a> {
    /// The connection that reads, checks and claims each execution before
    /// it runs. The writer's connection cannot serve these reads, because
    /// they open transactions of their own and the writer runs every call
    /// inside its group's transaction.
    claims: Arc<Mutex<SqliteStore>>,
    /// The connection that records the steps of every running execution.
    writer: &'a StoreWriter,
    secrets: HashMap<String, String>,
    env: HashMap<String, String>,
    permissions: Permissions,
    channels: Channels,
    store_path: PathBuf,
}

/// Resumes every paused or interrupted execution of the store, optionally
/// only those of `--workflow`, and returns the exit code of a batch.
pub(crate) fn resume_all_command(args: &ResumeArgs) -> u8 {
    let level = if args.verbose {
        tracing::Level::DEBUG
    } else {
        tracing::Level::WARN
    };
    output::init_logging_at(args.log_format, level);
    let log = Log {
        json: args.log_format == LogFormat::Json,
    };

    let filter = match &args.workflow {
        Some(file) => match std::fs::canonicalize(file) {
            Ok(path) => Some(path.display().to_string()),
            Err(error) => {
                let diagnostic = Diagnostic::error(
                    Code::FileUnreadable,
                    format!("cannot read the workflow `{}`: {error}", file.display()),
                )
                .with_help("give --workflow the workflow file the executions were started from");
                return fail_invalid(&[diagnostic], None);
            }
        },
        None => None,
    };
    let path = executions::store_path(&args.store, args.workflow.as_deref());
    if !path.exists() {
        return fail_invalid(&[executions::no_store(&path)], None);
    }
    let secrets = match input::read_secrets(std::env::vars(), args.secrets.as_deref()) {
        Ok(secrets) => secrets,
        Err(diagnostic) => return fail_invalid(&[diagnostic], None),
    };
    // A `--cacert` file applies to every workflow, so one that cannot be
    // used stops the command, as it stops a batch, even with nothing to
    // resume.
    if args.tls.cacert.is_some() {
        if let Err(diagnostic) = executions::ca_certificates(&args.tls, Path::new(".")) {
            return fail_invalid(&[diagnostic], None);
        }
    }
    let store = match executions::open_writable_store(&path) {
        Ok(store) => store,
        Err(diagnostic) => return fail_invalid(&[diagnostic], None),
    };
    let candidates = match list_candidates(&store, filter.as_deref()) {
        Ok(candidates) => candidates,
        Err(error) => return fail_invalid(&[store_diagnostic(&error, &path)], None),
    };
    if candidates.is_empty() {
        let scope = match &args.workflow {
            Some(file) => format!(" of `{}`", file.display()),
            None => String::new(),
        };
        log.line(
            tracing::Level::INFO,
            &format!(
                "nothing to resume: the store `{}` holds no paused or interrupted executions{scope}",
                path.display()
            ),
        );
        return EXIT_SUCCESS;
    }

    // Every workflow's client shares one politeness, so that a Retry-After
    // and `--rate` hold all executions. Ending the waits of this client on
    // Ctrl-C ends those of the others.
    let politeness = Arc::new(Politeness::new(args.rate));
    let http = match Http::new() {
        Ok(http) => http.with_politeness(politeness.clone()),
        Err(error) => return startup_failed(&format!("cannot create the HTTP client: {error}")),
    };
    let mut candidates = candidates;
    let workflows = read_workflows(&candidates, args, &politeness);
    for candidate in &mut candidates {
        candidate.workflow = workflows.get(&candidate.source_path).cloned();
    }

    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return startup_failed(&format!("cannot start the async runtime: {error}")),
    };
    let started = executions::open_writable_store(&path).and_then(|connection| {
        StoreWriter::start(connection).map_err(|error| executions::store_diagnostic(&error, &path))
    });
    let writer = match started {
        Ok(writer) => writer,
        Err(diagnostic) => return fail_invalid(&[diagnostic], None),
    };
    let shared = Shared {
        claims: Arc::new(Mutex::new(store)),
        writer: &writer,
        secrets,
        env: run::llm::provider_env(std::env::vars()),
        permissions: Permissions {
            force: args.force,
            resend_in_flight: args.resend_in_flight,
        },
        channels: executions::channels(&args.notify),
        store_path: path.clone(),
    };

    let progress = batch_output::progress_bar_of(Some(candidates.len() as u64));
    output::set_progress_bar(progress.clone());
    let mut printer = Printer {
        out: BufWriter::with_capacity(64 * 1024, io::stdout().lock()),
        output_error: None,
        progress: &progress,
        source: None,
        log,
        naming: Naming::Executions,
    };
    // Every candidate goes in one chunk, which the channel has room for.
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    let _ = sender.try_send(candidates);
    drop(sender);
    let pace = Pace {
        concurrency: args.concurrency.unwrap_or(crate::batch::DEFAULT_CONCURRENCY),
        ordered: true,
        http: &http,
        item: "execution",
    };
    let started = Instant::now();
    let totals = runtime.block_on(async {
        let mut interrupts = batch_output::interrupts();
        batch::schedule(
            pace,
            receiver,
            &mut interrupts,
            &mut |finished, totals| printer.finished(finished, totals),
            // Boxed where it is made, as a batch boxes each execution, so
            // that the large future is not copied on each move.
            |candidate| Start::Run(Box::pin(shared.resume(candidate))),
        )
        .await
    });
    let elapsed = started.elapsed();
    printer.flush();
    output::set_progress_bar(None);
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    drop(shared);
    // A second Ctrl-C leaves executions in flight; the runtime drops them,
    // and with them their store handles, before the writer finishes.
    drop(runtime);
    let store_failure = writer.finish().err();

    batch_output::summarize_resumed(log, &totals, elapsed, &path);
    batch_output::report_store_failure(log, store_failure.as_ref());
    if printer.output_error.is_some() {
        return EXIT_OUTPUT_FAILED;
    }
    batch_output::exit_code(&totals, store_failure.is_some())
}

fn startup_failed(message: &str) -> u8 {
    fail_invalid(&[Diagnostic::error(Code::StartupFailed, message)], None)
}

/// Lists the paused executions and those left running by a process that is
/// gone, oldest first, only those of `workflow` when it is given.
fn list_candidates(store: &SqliteStore, workflow: Option<&str>) -> Result<Vec<Candidate>, StoreError> {
    let mut records = Vec::new();
    for status in [ExecutionStatus::Paused, ExecutionStatus::Running] {
        for summary in store.executions(Some(status))? {
            let record = store.execution(&summary.id)?;
            if record.status == ExecutionStatus::Running && process_is_alive(record.pid) {
                continue;
            }
            if workflow.is_some_and(|workflow| workflow != record.source_path) {
                continue;
            }
            records.push(record);
        }
    }
    // RFC 3339 strings with fractions of different lengths do not sort as
    // text, so the times are compared parsed.
    let started =
        |text: &str| time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok();
    records.sort_by_cached_key(|record| (started(&record.started_at), record.id.clone()));
    Ok(records
        .into_iter()
        .zip(1..)
        .map(|(record, number)| Candidate {
            number,
            id: record.id,
            status: record.status,
            pid: record.pid,
            source_path: record.source_path,
            workflow: None,
        })
        .collect())
}

/// Reads and checks each workflow that the candidates resume on, and
/// creates its HTTP client. The problems of a workflow are printed here
/// once; each of its executions then stops with one line that points to
/// them.
fn read_workflows(
    candidates: &[Candidate],
    args: &ResumeArgs,
    politeness: &Arc<Politeness>,
) -> HashMap<String, Result<Arc<Workflow>, Diagnostic>> {
    let mut workflows = HashMap::new();
    let mut clients = HashMap::new();
    for candidate in candidates {
        if workflows.contains_key(&candidate.source_path) {
            continue;
        }
        let path = Path::new(&candidate.source_path);
        let workflow = match input::read_flow(path) {
            Ok(text) => {
                let checked = check_source(&text, path);
                let source = Source {
                    name: &candidate.source_path,
                    text: &text,
                };
                output::eprint_diagnostics(&checked.diagnostics, Some(&source));
                if checked.diagnostics.iter().any(Diagnostic::is_error) {
                    Err(Diagnostic::error(
                        Code::ResumeRefused,
                        format!("the workflow `{}` has errors", candidate.source_path),
                    )
                    .with_help(
                        "fix the errors shown above for this workflow, then run `flowrun resume --all` again",
                    ))
                } else {
                    workflow_client(args, path, politeness, &mut clients).map(|http| {
                        Arc::new(Workflow {
                            text,
                            program: checked.program,
                            http,
                        })
                    })
                }
            }
            Err(diagnostic) => Err(diagnostic),
        };
        workflows.insert(candidate.source_path.clone(), workflow);
    }
    workflows
}

/// The HTTP clients of `resume --all`, by the CA certificates they trust.
type Clients = HashMap<Vec<CertificateDer<'static>>, Arc<Http>>;

/// Returns the HTTP client of the executions of the workflow at `path`:
/// the one in `clients` that trusts the same certificates, or a new one.
fn workflow_client(
    args: &ResumeArgs,
    path: &Path,
    politeness: &Arc<Politeness>,
    clients: &mut Clients,
) -> Result<Arc<Http>, Diagnostic> {
    let certificates = executions::ca_certificates(&args.tls, path)?;
    if let Some(http) = clients.get(&certificates) {
        return Ok(http.clone());
    }
    let http = match Http::with_ca_certificates(&certificates) {
        Ok(http) => Arc::new(http.with_politeness(politeness.clone())),
        Err(error) => {
            return Err(Diagnostic::error(
                Code::StartupFailed,
                format!("cannot create the HTTP client: {error}"),
            ))
        }
    };
    clients.insert(certificates, http.clone());
    Ok(http)
}

impl Shared<'_> {
    /// Takes `candidate` over and runs its remaining steps, or returns why
    /// it was left alone.
    async fn resume(&self, mut candidate: Candidate) -> Finished {
        let number = candidate.number;
        let id = candidate.id.clone();
        let rejected = |diagnostics: Vec<Diagnostic>| Finished::Rejected {
            number,
            line: None,
            execution: Some(id.clone()),
            diagnostics,
        };

        let workflow = match candidate.workflow.take() {
            Some(Ok(workflow)) => workflow,
            Some(Err(diagnostic)) => return rejected(vec![diagnostic]),
            None => {
                return rejected(vec![Diagnostic::error(
                    Code::FileUnreadable,
                    format!("the workflow `{}` was not read", candidate.source_path),
                )])
            }
        };

        // The checks and the claim wait for SQLite's write lock, which the
        // writer thread or another process may hold, so they run off the
        // async thread that the other executions share.
        let claims = self.claims.clone();
        let (secrets, env, permissions) = (self.secrets.clone(), self.env.clone(), self.permissions);
        let checked = workflow.clone();
        let taken = tokio::task::spawn_blocking(move || {
            let mut store = match claims.lock() {
                Ok(store) => store,
                Err(poisoned) => poisoned.into_inner(),
            };
            take_over_listed(&mut store, &candidate, &checked, secrets, env, permissions)
        })
        .await;

        let taken = match taken {
            Ok(result) => result,
            Err(error) => {
                return rejected(vec![Diagnostic::error(
                    Code::StartupFailed,
                    format!("the checks before the resume stopped unexpectedly: {error}"),
                )])
            }
        };
        let taken = match taken {
            Ok(taken) => taken,
            Err(Refusal::Invalid(diagnostics)) => return rejected(diagnostics),
            Err(Refusal::Store(error)) => return rejected(vec![store_diagnostic(&error, &self.store_path)]),
            Err(Refusal::Taken) => {
                return Finished::Skipped {
                    number,
                    execution: id.clone(),
                    reason: "another process resumed it after it was listed".to_string(),
                }
            }
        };

        let options = Options {
            dry_run: false,
            sleeper: Arc::new(run::retry::TokioSleeper),
            channels: self.channels.clone(),
            first_step: taken.first_step,
            earlier_failures: taken.earlier_failures,
            store_path: Some(self.store_path.clone()),
        };
        let mut handle = self.writer.handle();
        let report = run::execute(
            &workflow.program,
            &workflow.text,
            taken.execution,
            &workflow.http,
            &options,
            Some(&mut handle as &mut dyn Store),
        )
        .await;
        Finished::Ran {
            number,
            line: None,
            report: Box::new(report),
        }
    }
}

/// Reads the execution again and takes it over, unless another process
/// changed it since it was listed.
fn take_over_listed(
    store: &mut SqliteStore,
    candidate: &Candidate,
    workflow: &Workflow,
    secrets: HashMap<String, String>,
    env: HashMap<String, String>,
    permissions: Permissions,
) -> Result<executions::TakenOver, Refusal> {
    let record = store.execution(&candidate.id).map_err(Refusal::Store)?;
    if record.status != candidate.status || record.pid != candidate.pid || check_resumable(&record).is_err() {
        return Err(Refusal::Taken);
    }
    take_over(
        store,
        &record,
        &workflow.program,
        &workflow.text,
        secrets,
        env,
        permissions,
    )
}
