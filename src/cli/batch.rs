//! `flowrun run FILE --entities RECORDS`: the batch command. Prints each
//! updated entity as one JSON line on standard output, a progress bar on a
//! terminal's standard error, a line for each record that failed, paused
//! or could not run, and a summary at the end.

use std::io::{self, BufWriter, IsTerminal as _, Write as _};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::batch::records::{self, Format};
use crate::batch::writer::{StoreWriter, WriteFailure};
use crate::batch::{self, Batch, Finished, Totals};
use crate::cli::args::{EntitiesFormat, LogFormat, RunArgs};
use crate::cli::output::{self, Source};
use crate::cli::{
    executions, fail_invalid, EXIT_INTERRUPTED, EXIT_OUTPUT_FAILED, EXIT_PAUSED, EXIT_STEP_FAILED,
    EXIT_SUCCESS,
};
use crate::diagnostic::{Code, Diagnostic};
use crate::input;
use crate::program::Program;
use crate::run::http::Http;
use crate::run::politeness::Politeness;
use crate::run::report::Outcome;
use crate::run::{self, split_response_body, Inputs};

/// Runs `program` once per record of `entities` and returns the exit code.
pub(crate) fn batch_command(
    args: &RunArgs,
    entities: &str,
    program: &Program,
    source: &Source<'_>,
    ca_certificates: &[rustls_pki_types::CertificateDer<'static>],
) -> u8 {
    let format = args.batch.entities_format.map(|format| match format {
        EntitiesFormat::Jsonl => Format::JsonLines,
        EntitiesFormat::Json => Format::JsonArray,
        EntitiesFormat::Csv => Format::Csv,
    });
    let records = match records::open(entities, format, args.batch.csv_types, args.batch.skip) {
        Ok(records) => records,
        Err(diagnostic) => return fail_invalid(&[diagnostic], None),
    };
    if args.batch.csv_types && records.format != Format::Csv {
        let diagnostic = Diagnostic::error(
            Code::InvalidRecord,
            format!(
                "--csv-types applies to CSV records, but {} is read as JSON",
                records.shown
            ),
        )
        .with_help("leave out --csv-types, or pass --entities-format csv");
        return fail_invalid(&[diagnostic], None);
    }

    let secrets = match input::read_secrets(std::env::vars(), args.secrets.as_deref()) {
        Ok(secrets) => secrets,
        Err(diagnostic) => return fail_invalid(&[diagnostic], None),
    };
    let mut vars = Vec::new();
    let mut diagnostics = Vec::new();
    for text in &args.vars {
        match input::parse_var(text) {
            Ok(pair) => vars.push(pair),
            Err(diagnostic) => diagnostics.push(diagnostic),
        }
    }
    if !diagnostics.is_empty() {
        return fail_invalid(&diagnostics, None);
    }
    let env = run::llm::provider_env(std::env::vars());
    // Unknown --var names, missing secrets and variables without a value
    // are the same for every record, so they stop the batch before it starts.
    let trial = Inputs {
        entity: serde_json::Value::Object(Default::default()),
        vars: vars.clone(),
        secrets: secrets.clone(),
        execution_id: None,
        env: env.clone(),
    };
    if let Err(diagnostics) = run::prepare(program, source.text, trial, false) {
        let for_all: Vec<Diagnostic> = diagnostics
            .into_iter()
            .filter(|diagnostic| {
                matches!(
                    diagnostic.code,
                    Code::InvalidVar | Code::SecretNotSet | Code::MissingVar
                )
            })
            .collect();
        if !for_all.is_empty() {
            return fail_invalid(&for_all, Some(source));
        }
    }

    let mut store_path = None;
    let mut writer = None;
    if !args.no_store {
        let path = executions::store_path(&args.store, Some(&args.file));
        let started = executions::open_writable_store(&path).and_then(|store| {
            StoreWriter::start(store).map_err(|error| executions::store_diagnostic(&error, &path))
        });
        match started {
            Ok(started) => writer = Some(started),
            Err(diagnostic) => return fail_invalid(&[diagnostic], None),
        }
        store_path = Some(path);
    }

    let level = if args.verbose {
        tracing::Level::DEBUG
    } else {
        tracing::Level::WARN
    };
    output::init_logging_at(args.log_format, level);
    let log = Log {
        json: args.log_format == LogFormat::Json,
    };

    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return startup_failed(&format!("cannot start the async runtime: {error}")),
    };
    let http = match Http::with_ca_certificates(ca_certificates) {
        Ok(http) => http.with_politeness(Arc::new(Politeness::new(args.batch.rate))),
        Err(error) => return startup_failed(&format!("cannot create the HTTP client: {error}")),
    };
    let source_path = std::fs::canonicalize(&args.file).unwrap_or_else(|_| args.file.clone());
    let batch = Batch {
        program,
        source: source.text,
        source_path: source_path.display().to_string(),
        vars,
        secrets,
        env,
        channels: executions::channels(&args.notify),
        http: &http,
        concurrency: args.batch.concurrency,
        ordered: !args.batch.unordered,
        store: writer.as_ref(),
        store_path: store_path.clone(),
    };

    let progress = progress_bar(entities, records.format, args.batch.skip);
    output::set_progress_bar(progress.clone());
    let mut printer = Printer {
        out: BufWriter::with_capacity(64 * 1024, io::stdout().lock()),
        output_error: None,
        progress: &progress,
        source: Some(source),
        log,
        naming: Naming::Records,
    };
    let started = Instant::now();
    let receiver = records::spawn(records);
    let totals = runtime.block_on(async {
        let mut interrupts = interrupts();
        batch::run(&batch, receiver, &mut interrupts, &mut |finished, totals| {
            printer.finished(finished, totals)
        })
        .await
    });
    let elapsed = started.elapsed();
    printer.flush();
    output::set_progress_bar(None);
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    drop(batch);
    // Every handle is gone once the batch returns, so this waits only for
    // the last group to commit.
    let store_failure = writer.map(StoreWriter::finish).and_then(Result::err);

    summarize(log, &totals, elapsed, store_path.as_deref(), args, entities);
    report_store_failure(log, store_failure.as_ref());
    if printer.output_error.is_some() {
        return EXIT_OUTPUT_FAILED;
    }
    exit_code(&totals, store_failure.is_some())
}

/// Starts listening for Ctrl-C on the current runtime: each SIGINT sends
/// one message on the returned channel.
pub(crate) fn interrupts() -> tokio::sync::mpsc::UnboundedReceiver<()> {
    let (signals, interrupts) = tokio::sync::mpsc::unbounded_channel();
    // Without a signal handler the run cannot be interrupted cleanly, but
    // it still runs.
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if signals.send(()).is_err() {
                break;
            }
        }
    });
    interrupts
}

/// Reports the first store write that failed during the run, if any.
pub(crate) fn report_store_failure(log: Log, failure: Option<&WriteFailure>) {
    if let Some(failure) = failure {
        let cause = if failure.locked {
            "another process kept the store locked for more than 2 s"
        } else {
            "free disk space or fix the store's permissions"
        };
        let diagnostic = Diagnostic::error(
            Code::StoreFailed,
            format!("the execution store failed: {}", failure.message),
        )
        .with_help(format!(
            "{cause}. The writes before the failure stay in the batch journal beside the store, \
             and the next flowrun command that opens the store applies them. The records after \
             the failure did not run or stopped before their next request: `flowrun resume --all` \
             continues the stopped ones"
        ));
        log.diagnostics(None, &[diagnostic], None);
    }
}

/// The exit code of a batch: 130 when interrupted, else 1 when any record
/// failed or could not run (or the store failed), else 3 when any paused,
/// else 0.
pub(crate) fn exit_code(totals: &Totals, store_failed: bool) -> u8 {
    if totals.interrupted {
        EXIT_INTERRUPTED
    } else if totals.failed > 0 || totals.rejected > 0 || store_failed {
        EXIT_STEP_FAILED
    } else if totals.paused > 0 {
        EXIT_PAUSED
    } else {
        EXIT_SUCCESS
    }
}

fn startup_failed(message: &str) -> u8 {
    fail_invalid(&[Diagnostic::error(Code::StartupFailed, message)], None)
}

/// The batch's own lines on standard error, in the layout of the log: plain
/// text, or with `--log-format json` one JSON object per line that names
/// the record and its execution in `spans`, as the events of the log do.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Log {
    pub json: bool,
}

/// The record or execution that a group of diagnostics is about, for
/// [`Log::diagnostics`].
struct Subject {
    /// Leads the text, such as `record 2 (line 4) did not run`.
    heading: String,
    spans: serde_json::Value,
}

impl Subject {
    /// Names record `number` and, when the input has lines (JSON Lines and
    /// CSV), the `line` it starts on.
    fn record(number: u64, line: Option<u64>) -> Subject {
        let named = match line {
            Some(line) => format!("record {number} (line {line})"),
            None => format!("record {number}"),
        };
        Subject {
            heading: format!("{named} did not run"),
            spans: spans(number, line, None),
        }
    }

    fn execution(id: &str) -> Subject {
        Subject {
            heading: format!("execution {id} was not resumed"),
            spans: execution_spans(id),
        }
    }
}

impl Log {
    pub(crate) fn line(self, level: tracing::Level, message: &str) {
        if self.json {
            output::eprint_json_line(level, message, serde_json::Map::new());
        } else {
            output::eprint_line(message);
        }
    }

    /// Writes a line about one record or execution, whose `spans` name it
    /// in the JSON format.
    fn record(self, line: RecordLine<'_>) {
        if self.json {
            let mut fields = serde_json::Map::new();
            fields.insert("outcome".to_string(), line.outcome.into());
            if let Some(body) = line.response_body {
                fields.insert("response_body".to_string(), body.into());
            }
            fields.insert("spans".to_string(), line.spans);
            output::eprint_json_line(line.level, &line.message, fields);
        } else {
            // One line per record: a line break in the body reads as a
            // semicolon, as in the message.
            let mut text = line.message;
            if let Some(body) = line.response_body {
                text.push_str("; response body: ");
                text.push_str(&body.replace('\n', "; "));
            }
            output::eprint_line(&text);
        }
    }

    /// Writes the diagnostics of `subject`, a record or an execution, or of
    /// the run without one.
    fn diagnostics(self, subject: Option<Subject>, diagnostics: &[Diagnostic], source: Option<&Source<'_>>) {
        if !self.json {
            if let Some(subject) = &subject {
                output::eprint_line(&format!("{}:", subject.heading));
            }
            output::eprint_diagnostics(diagnostics, source);
            return;
        }
        for diagnostic in diagnostics {
            let mut fields = serde_json::Map::new();
            fields.insert("code".to_string(), diagnostic.code.as_str().into());
            if let Some(help) = &diagnostic.help {
                fields.insert("help".to_string(), help.as_str().into());
            }
            let message = match &subject {
                Some(subject) => {
                    fields.insert("spans".to_string(), subject.spans.clone());
                    format!("{}: {}", subject.heading, diagnostic.message)
                }
                None => diagnostic.message.clone(),
            };
            output::eprint_json_line(tracing::Level::ERROR, &message, fields);
        }
    }
}

/// A line about one record or execution, for [`Log::record`].
struct RecordLine<'a> {
    level: tracing::Level,
    /// Names the record or execution in the JSON format.
    spans: serde_json::Value,
    /// The outcome, such as `failed` or `skipped`.
    outcome: &'a str,
    message: String,
    /// The excerpt of the response body that a `flow::run::http_status`
    /// failure carries: a field of the JSON format, and the end of the text.
    response_body: Option<&'a str>,
}

/// Builds the `spans` of a JSON log line about record `number`, which
/// starts on `line` of the input, as the span of its execution's events does.
fn spans(number: u64, line: Option<u64>, execution: Option<&str>) -> serde_json::Value {
    let mut record = serde_json::json!({"name": "record", "record": number});
    if let Some(line) = line {
        record["line"] = line.into();
    }
    let mut spans = vec![record];
    if let Some(execution) = execution {
        spans.push(serde_json::json!({"name": "execution", "execution_id": execution}));
    }
    serde_json::Value::Array(spans)
}

/// Builds the `spans` of a JSON log line about an execution that runs
/// outside a batch's records, as in `flowrun resume --all`.
fn execution_spans(execution: &str) -> serde_json::Value {
    serde_json::json!([{"name": "execution", "execution_id": execution}])
}

/// The way the lines about a finished item name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Naming {
    /// Records of a batch, by number, line and execution.
    Records,
    /// Executions of `flowrun resume --all`, by id.
    Executions,
}

/// Writes what each finished record leaves behind.
pub(crate) struct Printer<'a, W: io::Write> {
    /// Standard output, flushed after each line, so that what a killed
    /// batch printed stays as close as it can to what its store holds.
    pub out: BufWriter<W>,
    pub output_error: Option<io::Error>,
    pub progress: &'a Option<ProgressBar>,
    /// The workflow that the diagnostics of a record point into, if one.
    pub source: Option<&'a Source<'a>>,
    pub log: Log,
    pub naming: Naming,
}

impl<W: io::Write> Printer<'_, W> {
    /// Reports one finished record, and returns whether standard output
    /// still takes lines.
    pub(crate) fn finished(&mut self, finished: Finished, totals: &Totals) -> bool {
        match finished {
            Finished::Ran { number, line, report } => {
                let id = &report.execution_id;
                match report.outcome {
                    Outcome::Succeeded => {}
                    Outcome::Failed | Outcome::Paused => {
                        let verb = if report.outcome == Outcome::Failed {
                            "failed"
                        } else {
                            "paused"
                        };
                        let step = report
                            .steps
                            .iter()
                            .find(|step| step.outcome == Outcome::Failed)
                            .map(|step| format!(" at step \"{}\"", step.name))
                            .unwrap_or_default();
                        let failure = report.store_error.as_ref().or_else(|| report.failure());
                        let (reason, response_body) = match failure {
                            Some(diagnostic) => {
                                let (message, body) =
                                    split_response_body(diagnostic.code.as_str(), &diagnostic.message);
                                // One line per record: a line break, such as
                                // one in a traceback, reads as a semicolon.
                                (format!(": {}", message.replace('\n', "; ")), body)
                            }
                            None => (String::new(), None),
                        };
                        let (subject, spans) = match self.naming {
                            Naming::Records => {
                                let place = line.map(|line| format!("line {line}, ")).unwrap_or_default();
                                let subject = format!("record {number} ({place}execution {id})");
                                (subject, spans(number, line, Some(id)))
                            }
                            Naming::Executions => (format!("execution {id}"), execution_spans(id)),
                        };
                        self.log.record(RecordLine {
                            level: tracing::Level::WARN,
                            spans,
                            outcome: verb,
                            message: format!("{subject} {verb}{step}{reason}"),
                            response_body,
                        });
                    }
                }
                self.write_entity(&report.entity);
            }
            Finished::Rejected {
                number,
                line,
                execution,
                diagnostics,
            } => {
                let source = self
                    .source
                    .filter(|_| diagnostics.iter().any(|diagnostic| diagnostic.span.is_some()));
                let subject = match (self.naming, &execution) {
                    (Naming::Executions, Some(id)) => Subject::execution(id),
                    _ => Subject::record(number, line),
                };
                self.log.diagnostics(Some(subject), &diagnostics, source);
            }
            Finished::Skipped {
                execution, reason, ..
            } => {
                let message = format!("execution {execution} was left alone: {reason}");
                self.log.record(RecordLine {
                    level: tracing::Level::INFO,
                    spans: execution_spans(&execution),
                    outcome: "skipped",
                    message,
                    response_body: None,
                });
            }
        }
        if let Some(bar) = self.progress {
            bar.inc(1);
            if totals.failed + totals.paused + totals.rejected > 0 {
                let not_run = match self.naming {
                    Naming::Records => "not run",
                    Naming::Executions => "not resumed",
                };
                bar.set_message(format!(
                    ", {} failed, {} paused, {} {not_run}",
                    totals.failed, totals.paused, totals.rejected
                ));
            }
        }
        self.output_error.is_none()
    }

    fn write_entity(&mut self, entity: &serde_json::Value) {
        if self.output_error.is_some() {
            return;
        }
        let written = serde_json::to_writer(&mut self.out, entity)
            .map_err(io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"));
        let written = written.and_then(|()| self.out.flush());
        self.note(written);
    }

    pub(crate) fn flush(&mut self) {
        if self.output_error.is_none() {
            let flushed = self.out.flush();
            self.note(flushed);
        }
    }

    /// Keeps the first write error. A reader that went away, as with
    /// `| head`, is reported once by the summary.
    fn note(&mut self, result: io::Result<()>) {
        match result {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::BrokenPipe => {
                self.output_error = Some(error);
            }
            Err(error) => {
                let message = format!("cannot write to standard output: {error}");
                if self.log.json {
                    self.log.line(tracing::Level::ERROR, &message);
                } else {
                    output::eprint_line(&format!("error: {message}"));
                }
                self.output_error = Some(error);
            }
        }
    }
}

/// A progress bar on standard error when it is a terminal. For a JSON Lines
/// or CSV file the number of records after `skip` gives the total, and so an
/// ETA.
fn progress_bar(entities: &str, format: Format, skip: u64) -> Option<ProgressBar> {
    if !io::stderr().is_terminal() {
        return None;
    }
    let total = (entities != "-")
        .then(|| count_records(Path::new(entities), format))
        .flatten()
        .map(|records| records.saturating_sub(skip));
    progress_bar_of(total)
}

/// Creates a progress bar on standard error when it is a terminal, with an
/// ETA when the `total` is known.
pub(crate) fn progress_bar_of(total: Option<u64>) -> Option<ProgressBar> {
    if !io::stderr().is_terminal() {
        return None;
    }
    let (bar, template) = match total {
        Some(total) => (
            ProgressBar::new(total),
            "{bar:30} {pos}/{len} done, {rate}, ETA {eta}{msg}",
        ),
        None => (ProgressBar::new_spinner(), "{spinner} {pos} done, {rate}{msg}"),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        // indicatif's own `per_sec` shows four decimals.
        let style = style.with_key(
            "rate",
            |state: &indicatif::ProgressState, out: &mut dyn std::fmt::Write| {
                let _ = write!(out, "{:.0}/s", state.per_sec());
            },
        );
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    Some(bar)
}

/// Counts the records of a JSON Lines or CSV file by the rules the batch
/// reads them with, without keeping the file in memory. The file is read
/// once more for this, before the batch starts. Only a regular file is
/// counted: opening a named pipe can block, and reading it would take the
/// records from the batch.
fn count_records(path: &Path, format: Format) -> Option<u64> {
    if !std::fs::metadata(path).ok()?.is_file() {
        return None;
    }
    let file = std::fs::File::open(path).ok()?;
    records::count(file, format)
}

fn summarize(
    log: Log,
    totals: &Totals,
    elapsed: Duration,
    store: Option<&Path>,
    args: &RunArgs,
    entities: &str,
) {
    let records = totals.succeeded + totals.failed + totals.paused + totals.rejected;
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        records as f64 / seconds
    } else {
        0.0
    };
    let noun = if records == 1 { "record" } else { "records" };
    log.line(tracing::Level::INFO, &format!(
        "{records} {noun} in {seconds:.2} s ({rate:.0} per second): {} succeeded, {} failed, {} paused, {} not run",
        totals.succeeded, totals.failed, totals.paused, totals.rejected
    ));
    if totals.paused > 0 {
        let line = match store {
            Some(store) => {
                let store = quote(&store.display().to_string());
                format!(
                    "paused executions wait in the store: list them with `flowrun runs --status paused --store {store}`, \
                     and after fixing the cause continue them all with `flowrun resume --all --store {store}`, \
                     or one with `flowrun resume ID --store {store}`"
                )
            }
            None => "paused executions cannot be resumed: the batch ran with --no-store".to_string(),
        };
        log.line(tracing::Level::INFO, &line);
    }
    if totals.abandoned > 0 {
        let store = match store {
            Some(store) => format!(
                "their steps stay recorded as running: once this process has ended, \
                 `flowrun runs --status interrupted --store {}` lists them, \
                 and `flowrun resume ID` decides whether a step may be sent again",
                quote(&store.display().to_string())
            ),
            None => "the batch ran with --no-store, so nothing records whether their requests were sent"
                .to_string(),
        };
        log.line(
            tracing::Level::WARN,
            &format!(
                "stopped by a second Ctrl-C with {} executions in flight; {store}",
                totals.abandoned
            ),
        );
    } else if totals.interrupted || totals.output_closed {
        let cause = if totals.output_closed {
            "standard output was closed, so no further record started and the results of those still running \
             were not printed"
        } else {
            "interrupted"
        };
        let skip = totals.last_taken.max(args.batch.skip);
        log.line(
            tracing::Level::WARN,
            &format!(
            "{cause}: records up to number {skip} started and each ended as succeeded, failed or paused; \
             to run the rest, repeat the command with --skip {skip} (input {})",
            quote(entities)
        ),
        );
    }
}

/// Writes the summary of `flowrun resume --all`, which resumed executions
/// of the store at `store`.
pub(crate) fn summarize_resumed(log: Log, totals: &Totals, elapsed: Duration, store: &Path) {
    let executions = totals.succeeded + totals.failed + totals.paused + totals.rejected + totals.skipped;
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        executions as f64 / seconds
    } else {
        0.0
    };
    let noun = if executions == 1 {
        "execution"
    } else {
        "executions"
    };
    log.line(
        tracing::Level::INFO,
        &format!(
        "{executions} {noun} in {seconds:.2} s ({rate:.0} per second): {} succeeded, {} failed, {} paused, \
         {} not resumed, {} taken over by another process",
        totals.succeeded, totals.failed, totals.paused, totals.rejected, totals.skipped
    ),
    );
    let store = quote(&store.display().to_string());
    if totals.paused > 0 {
        log.line(
            tracing::Level::INFO,
            &format!(
                "paused executions wait in the store again: after fixing the cause, continue them with \
                 `flowrun resume --all --store {store}`"
            ),
        );
    }
    if totals.abandoned > 0 {
        log.line(
            tracing::Level::WARN,
            &format!(
                "stopped by a second Ctrl-C with {} executions in flight; their steps stay recorded as running: \
                 `flowrun resume --all --store {store}` takes them up again and decides whether a step may be \
                 sent again",
                totals.abandoned
            ),
        );
    } else if totals.interrupted || totals.output_closed {
        let cause = if totals.output_closed {
            "standard output was closed, so no further execution started and the entities of those still \
             running were not printed"
        } else {
            "interrupted"
        };
        log.line(
            tracing::Level::WARN,
            &format!(
                "{cause}: the executions not resumed yet still wait in the store; continue them with \
                 `flowrun resume --all --store {store}`"
            ),
        );
    }
}

/// Quotes `text` as one word for a POSIX shell.
pub(crate) fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}
