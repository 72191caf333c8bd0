//! The command line: `flowrun run`, `check`, `resume` (one execution or
//! `--all`) and `runs`.
//!
//! Exit codes: 0 success, 1 a step failed, 2 invalid workflow or input,
//! 3 the execution paused, 4 standard output could not be written, 130 a
//! batch was interrupted.

pub mod args;
mod batch;
mod executions;
mod fmt;
pub mod output;
mod resume_all;
mod runs;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser as _;
use serde_json::Value;

use crate::check::{self, Checked};
use crate::diagnostic::{self, Diagnostic};
use crate::input;
use crate::run::report::{Outcome, Report};
use crate::run::{self, Inputs, Options};
use crate::store::{NewExecution, Store};
use crate::syntax;
use args::{CheckArgs, CheckFormat, Cli, Command, RunArgs};
use output::Source;

pub const EXIT_SUCCESS: u8 = 0;
pub const EXIT_STEP_FAILED: u8 = 1;
pub const EXIT_INVALID: u8 = 2;
pub const EXIT_PAUSED: u8 = 3;
pub const EXIT_OUTPUT_FAILED: u8 = 4;
/// A batch stopped taking records after Ctrl-C.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse_from(args::with_implicit_run(std::env::args_os().collect()));
    let code = match cli.command {
        Command::Run(args) => run_command(args),
        Command::Check(args) => check_command(args),
        Command::Resume(args) => executions::resume_command(args),
        Command::Runs(args) => runs::runs_command(args),
        Command::Fmt(args) => fmt::fmt_command(args),
        Command::Lsp(args) => crate::lsp::serve(args.entity_schema.as_deref()),
    };
    ExitCode::from(code)
}

/// Parses and checks one workflow's source.
pub fn check_source(text: &str, path: &Path) -> Checked {
    check_source_with(text, path, None)
}

/// Parses and checks one workflow's source, with `entity_schema` as the
/// entity schema when the workflow names none.
pub fn check_source_with(text: &str, path: &Path, entity_schema: Option<&Path>) -> Checked {
    let parsed = syntax::parse(text);
    check_tree(&parsed.file, parsed.diagnostics, path, entity_schema)
}

/// Checks a parsed workflow; `syntax_diagnostics` are the parser's.
pub fn check_tree(
    file: &syntax::ast::File,
    syntax_diagnostics: Vec<Diagnostic>,
    path: &Path,
    entity_schema: Option<&Path>,
) -> Checked {
    let default_name = path
        .file_stem()
        .map_or_else(|| "workflow".into(), |stem| stem.to_string_lossy());
    let folder = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let (providers, project_error) = match crate::project::load_providers(folder) {
        Ok(providers) => (providers, None),
        Err(diagnostic) => (Vec::new(), Some(diagnostic)),
    };
    let mut checked = check::check_with_providers(file, &default_name, providers);
    checked.diagnostics.extend(project_error);
    let (schema, schema_error) = crate::schema::for_workflow(file, path, entity_schema);
    checked.diagnostics.extend(schema_error);
    if let Some(schema) = &schema {
        checked.diagnostics.extend(check::entity::check(file, schema));
    }
    let mut diagnostics = syntax_diagnostics;
    if !diagnostics.is_empty() {
        // Steps that failed to parse are missing from the tree, so "no
        // steps" would only repeat the syntax errors.
        checked
            .diagnostics
            .retain(|diagnostic| diagnostic.code != diagnostic::Code::NoSteps);
    }
    diagnostics.append(&mut checked.diagnostics);
    diagnostic::sort(&mut diagnostics);
    checked.diagnostics = diagnostics;
    checked
}

fn check_command(args: CheckArgs) -> u8 {
    let mut any_error = false;
    let mut checked_files = Vec::new();
    for file in &args.files {
        let name = file.display().to_string();
        let (text, diagnostics) = match input::read_flow(file) {
            Ok(text) => {
                let diagnostics = check_source_with(&text, file, args.entity_schema.as_deref()).diagnostics;
                (text, diagnostics)
            }
            Err(diagnostic) => (String::new(), vec![diagnostic]),
        };
        any_error |= diagnostics.iter().any(Diagnostic::is_error);
        checked_files.push((name, text, diagnostics));
    }
    let reports: Vec<output::FileReport<'_>> = checked_files
        .iter()
        .map(|(name, text, diagnostics)| output::FileReport {
            source: Source { name, text },
            diagnostics,
        })
        .collect();
    let written = match args.format {
        CheckFormat::Human => {
            for report in &reports {
                let source = Some(&report.source).filter(|source| !source.text.is_empty());
                output::eprint_diagnostics(report.diagnostics, source);
            }
            let problems: usize = reports.iter().map(|report| report.diagnostics.len()).sum();
            if problems == 0 {
                let files = args.files.len();
                let noun = if files == 1 { "file" } else { "files" };
                output::eprint_line(&format!("{files} {noun} checked: no problems found"));
            }
            true
        }
        CheckFormat::Json => {
            let values: Vec<serde_json::Value> = reports
                .iter()
                .flat_map(|report| output::render_json(report.diagnostics, &report.source))
                .collect();
            output::print_json(&values)
        }
        CheckFormat::Sarif => output::print_json(&output::render_sarif(&reports)),
        CheckFormat::Github => {
            let lines: String = reports
                .iter()
                .map(|report| output::render_github(report.diagnostics, &report.source))
                .collect();
            output::print_stdout(&lines)
        }
    };
    if !written {
        return EXIT_OUTPUT_FAILED;
    }
    if any_error {
        EXIT_INVALID
    } else {
        EXIT_SUCCESS
    }
}

fn run_command(args: RunArgs) -> u8 {
    let name = args.file.display().to_string();
    let text = match input::read_flow(&args.file) {
        Ok(text) => text,
        Err(diagnostic) => return fail_invalid(&[diagnostic], None),
    };
    let source = Source {
        name: &name,
        text: &text,
    };
    let checked = check_source(&text, &args.file);
    if checked.diagnostics.iter().any(Diagnostic::is_error) {
        return fail_invalid(&checked.diagnostics, Some(&source));
    }
    output::eprint_diagnostics(&checked.diagnostics, Some(&source));
    let ca_certificates = match executions::ca_certificates(&args.tls, &args.file) {
        Ok(certificates) => certificates,
        Err(diagnostic) => return fail_invalid(&[diagnostic], None),
    };
    if let Some(entities) = &args.batch.entities {
        return batch::batch_command(&args, entities, &checked.program, &source, &ca_certificates);
    }

    let inputs = match read_inputs(&args) {
        Ok(inputs) => inputs,
        Err(diagnostics) => return fail_invalid(&diagnostics, None),
    };
    let entity_before = inputs.entity.clone();
    let execution = match run::prepare(&checked.program, &text, inputs, args.dry_run) {
        Ok(execution) => execution,
        Err(diagnostics) => return fail_invalid(&diagnostics, Some(&source)),
    };

    // The report file is created before anything is sent, so that a path
    // that cannot be written stops the run while it can still change course.
    let report_file = match &args.report {
        Some(path) => match std::fs::File::create(path) {
            Ok(file) => Some(file),
            Err(error) => {
                let diagnostic = Diagnostic::error(
                    diagnostic::Code::ReportNotWritten,
                    format!("cannot write the run report to `{}`: {error}", path.display()),
                )
                .with_help("give --report a path in a folder that exists and is writable");
                return fail_invalid(&[diagnostic], None);
            }
        },
        None => None,
    };

    // A dry run sends nothing, so it has nothing to record.
    let mut store = None;
    let mut store_file = None;
    if !args.dry_run && !args.no_store {
        let path = executions::store_path(&args.store, Some(&args.file));
        store_file = Some(path.clone());
        let mut opened = match executions::open_writable_store(&path) {
            Ok(opened) => opened,
            Err(diagnostic) => return fail_invalid(&[diagnostic], None),
        };
        let source_path = std::fs::canonicalize(&args.file).unwrap_or_else(|_| args.file.clone());
        let step_names: Vec<String> = checked
            .program
            .steps
            .iter()
            .map(|step| step.name.clone())
            .collect();
        let new = NewExecution {
            id: &execution.id,
            workflow: &checked.program.name,
            source_path: &source_path.display().to_string(),
            workflow_hash: &run::sha256_hex(&text),
            step_hashes: &run::step_hashes(&checked.program, &text),
            step_names: &step_names,
            entity: &entity_before,
            vars: &execution.stored_vars(),
            started_at: &execution.started_at,
            pid: std::process::id(),
        };
        if let Err(error) = opened.begin_execution(&new) {
            return fail_invalid(&[executions::store_diagnostic(&error, &path)], None);
        }
        store = Some(opened);
    }

    if !args.dry_run {
        output::init_logging(args.log_format, args.verbose);
    }
    let options = Options {
        dry_run: args.dry_run,
        sleeper: Arc::new(run::retry::TokioSleeper),
        channels: executions::channels(&args.notify),
        first_step: 0,
        earlier_failures: false,
        store_path: store_file.clone(),
    };
    let store_ref = store.as_mut().map(|store| store as &mut dyn Store);
    let report = match executions::execute_blocking(
        &checked.program,
        &text,
        execution,
        &options,
        store_ref,
        &ca_certificates,
    ) {
        Ok(report) => report,
        Err(code) => return code,
    };

    if let (Some(file), Some(path)) = (report_file, &args.report) {
        write_report(&report, file, path);
    }

    if args.dry_run {
        let (text, any_failed) = output::format_dry_run_report(&report);
        if !output::print_stdout(&text) {
            return EXIT_OUTPUT_FAILED;
        }
        return if any_failed {
            EXIT_STEP_FAILED
        } else {
            EXIT_SUCCESS
        };
    }
    finish_run(&report, &source, store_file.as_deref())
}

/// Prints what a run ended with and returns its exit code. `store` is the
/// store the execution is recorded in, if any.
pub(crate) fn finish_run(report: &Report, source: &Source<'_>, store: Option<&Path>) -> u8 {
    let failures: Vec<Diagnostic> = report.failures().cloned().collect();
    output::eprint_diagnostics(&failures, Some(source));
    if let Some(error) = &report.store_error {
        output::eprint_diagnostics(std::slice::from_ref(error), None);
    }
    if report.outcome == Outcome::Paused {
        let line = match store {
            Some(store) => format!(
                "execution {} paused; after fixing the cause, continue it with: flowrun resume {} --store '{}'",
                report.execution_id,
                report.execution_id,
                store.display().to_string().replace('\'', "'\\''")
            ),
            None => format!(
                "execution {} paused; it was run with --no-store, so it cannot be resumed",
                report.execution_id
            ),
        };
        output::eprint_line(&line);
    }
    if !output::print_json(&report.entity) {
        return EXIT_OUTPUT_FAILED;
    }
    match report.outcome {
        Outcome::Succeeded => EXIT_SUCCESS,
        Outcome::Failed => EXIT_STEP_FAILED,
        Outcome::Paused => EXIT_PAUSED,
    }
}

fn write_report(report: &Report, mut file: std::fs::File, path: &Path) {
    use std::io::Write as _;
    let json = serde_json::to_string_pretty(report).unwrap_or_default();
    if let Err(error) = file.write_all((json + "\n").as_bytes()) {
        output::eprint_diagnostics(
            &[Diagnostic::error(
                diagnostic::Code::ReportNotWritten,
                format!("cannot write the run report to `{}`: {error}", path.display()),
            )],
            None,
        );
    }
}

fn read_inputs(args: &RunArgs) -> Result<Inputs, Vec<Diagnostic>> {
    let mut diagnostics = Vec::new();
    let entity = match &args.entity {
        Some(path) => input::read_entity(path)
            .map_err(|diagnostic| diagnostics.push(diagnostic))
            .ok(),
        None => Some(Value::Object(Default::default())),
    };
    let secrets = input::read_secrets(std::env::vars(), args.secrets.as_deref())
        .map_err(|diagnostic| diagnostics.push(diagnostic))
        .ok();
    if let Some(id) = &args.execution_id {
        if let Err(diagnostic) = input::check_execution_id(id) {
            diagnostics.push(diagnostic);
        }
    }
    let mut vars = Vec::new();
    for text in &args.vars {
        match input::parse_var(text) {
            Ok(pair) => vars.push(pair),
            Err(diagnostic) => diagnostics.push(diagnostic),
        }
    }
    match (entity, secrets) {
        (Some(entity), Some(secrets)) if diagnostics.is_empty() => Ok(Inputs {
            entity,
            vars,
            secrets,
            execution_id: args.execution_id.clone(),
            env: run::llm::provider_env(std::env::vars()),
        }),
        _ => Err(diagnostics),
    }
}

pub(crate) fn fail_invalid(diagnostics: &[Diagnostic], source: Option<&Source<'_>>) -> u8 {
    output::eprint_diagnostics(diagnostics, source);
    EXIT_INVALID
}
