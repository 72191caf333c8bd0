//! The command line: `flowrun run` and `flowrun check`.
//!
//! Exit codes: 0 success, 1 a step failed, 2 invalid workflow or input.

pub mod args;
pub mod output;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser as _;
use serde_json::Value;

use crate::check::{self, Checked};
use crate::diagnostic::{self, Diagnostic};
use crate::input;
use crate::run::{self, http::Http, report::Outcome, Inputs, Options};
use crate::syntax;
use args::{CheckArgs, CheckFormat, Cli, Command, RunArgs};
use output::Source;

pub const EXIT_SUCCESS: u8 = 0;
pub const EXIT_STEP_FAILED: u8 = 1;
pub const EXIT_INVALID: u8 = 2;

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse_from(args::with_implicit_run(std::env::args_os().collect()));
    let code = match cli.command {
        Command::Run(args) => run_command(args),
        Command::Check(args) => check_command(args),
    };
    ExitCode::from(code)
}

/// Parses and checks one workflow's source.
pub fn check_source(text: &str, path: &Path) -> Checked {
    let parsed = syntax::parse(text);
    let default_name = path
        .file_stem()
        .map_or_else(|| "workflow".into(), |stem| stem.to_string_lossy());
    let mut checked = check::check(&parsed.file, &default_name);
    let mut diagnostics = parsed.diagnostics;
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
    let mut json_reports = Vec::new();
    for file in &args.files {
        let name = file.display().to_string();
        let text = match input::read_flow(file) {
            Ok(text) => text,
            Err(diagnostic) => {
                any_error = true;
                match args.format {
                    CheckFormat::Human => output::eprint_diagnostics(&[diagnostic], None),
                    CheckFormat::Json => json_reports.extend(output::render_json(
                        &[diagnostic],
                        &Source {
                            name: &name,
                            text: "",
                        },
                    )),
                }
                continue;
            }
        };
        let checked = check_source(&text, file);
        any_error |= checked.diagnostics.iter().any(Diagnostic::is_error);
        let source = Source {
            name: &name,
            text: &text,
        };
        match args.format {
            CheckFormat::Human => output::eprint_diagnostics(&checked.diagnostics, Some(&source)),
            CheckFormat::Json => json_reports.extend(output::render_json(&checked.diagnostics, &source)),
        }
    }
    if args.format == CheckFormat::Json && !output::print_json(&json_reports) {
        return EXIT_INVALID;
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

    let inputs = match read_inputs(&args) {
        Ok(inputs) => inputs,
        Err(diagnostics) => return fail_invalid(&diagnostics, None),
    };
    let execution = match run::prepare(&checked.program, &text, inputs, args.dry_run) {
        Ok(execution) => execution,
        Err(diagnostics) => return fail_invalid(&diagnostics, Some(&source)),
    };

    if !args.dry_run {
        output::init_logging(args.log_format, args.verbose);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return fail_start(&format!("cannot start the async runtime: {error}")),
    };
    let http = match Http::new() {
        Ok(http) => http,
        Err(error) => return fail_start(&format!("cannot create the HTTP client: {error}")),
    };
    let options = Options {
        dry_run: args.dry_run,
        sleeper: Arc::new(run::retry::TokioSleeper),
    };
    let report = runtime.block_on(run::execute(&checked.program, &text, execution, &http, &options));

    if let Some(path) = &args.report {
        let json = serde_json::to_string_pretty(&report).unwrap_or_default();
        if let Err(error) = std::fs::write(path, json + "\n") {
            output::eprint_diagnostics(
                &[Diagnostic::error(
                    diagnostic::Code::ReportNotWritten,
                    format!("cannot write the run report to `{}`: {error}", path.display()),
                )],
                None,
            );
        }
    }

    if args.dry_run {
        if !output::print_stdout(&output::format_dry_run(&report.dry_run)) {
            return EXIT_SUCCESS;
        }
        let any_unrendered = report.dry_run.iter().any(|request| request.error.is_some());
        return if any_unrendered {
            EXIT_STEP_FAILED
        } else {
            EXIT_SUCCESS
        };
    }

    if let Some(failure) = report.failure() {
        output::eprint_diagnostics(std::slice::from_ref(failure), Some(&source));
    }
    if !output::print_json(&report.entity) {
        return if report.outcome == Outcome::Succeeded {
            EXIT_SUCCESS
        } else {
            EXIT_STEP_FAILED
        };
    }
    match report.outcome {
        Outcome::Succeeded => EXIT_SUCCESS,
        Outcome::Failed => EXIT_STEP_FAILED,
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
        }),
        _ => Err(diagnostics),
    }
}

fn fail_invalid(diagnostics: &[Diagnostic], source: Option<&Source<'_>>) -> u8 {
    output::eprint_diagnostics(diagnostics, source);
    EXIT_INVALID
}

fn fail_start(message: &str) -> u8 {
    output::eprint_diagnostics(
        &[Diagnostic::error(diagnostic::Code::StartupFailed, message)],
        None,
    );
    EXIT_INVALID
}
