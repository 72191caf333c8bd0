//! Command-line arguments.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "flowrun",
    version,
    about = "Check and run .flow workflows against one record",
    after_help = "`flowrun FILE.flow ...` is short for `flowrun run FILE.flow ...`.\n\nExit codes: 0 success, 1 a step failed, 2 invalid workflow or input."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a workflow against one entity and print the updated entity.
    Run(RunArgs),
    /// Report every problem in one or more workflows.
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The workflow file.
    pub file: PathBuf,

    /// The entity: a JSON file holding one object, or `-` for standard
    /// input. Without it the entity is `{}`.
    #[arg(long, short = 'e', value_name = "FILE")]
    pub entity: Option<String>,

    /// Set a variable, overriding its `let` value. Repeatable.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,

    /// A dotenv file of secrets (`NAME=value` lines). Its values win over
    /// FLOWRUN_SECRET_<NAME> environment variables.
    #[arg(long, value_name = "FILE")]
    pub secrets: Option<PathBuf>,

    /// Use this execution id instead of a new UUID.
    #[arg(long, value_name = "ID")]
    pub execution_id: Option<String>,

    /// Print every rendered request, secrets masked, and send nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Format of the progress log on standard error.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Also log each request attempt and each decision.
    #[arg(long, short = 'v')]
    pub verbose: bool,

    /// Write the run report, as JSON, to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The workflow files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,

    /// `human` for people, `json` for editors and CI.
    #[arg(long, value_enum, default_value_t = CheckFormat::Human)]
    pub format: CheckFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckFormat {
    Human,
    Json,
}

const SUBCOMMANDS: [&str; 4] = ["run", "check", "help", "--help"];

/// Inserts `run` when the first argument is a file rather than a command,
/// so that `flowrun FILE.flow` works as `flowrun run FILE.flow`.
pub fn with_implicit_run(args: Vec<OsString>) -> Vec<OsString> {
    let Some(first) = args.get(1).and_then(|arg| arg.to_str()) else {
        return args;
    };
    let is_command = SUBCOMMANDS.contains(&first) || first.starts_with('-');
    if is_command {
        return args;
    }
    let mut rewritten = args;
    rewritten.insert(1, OsString::from("run"));
    rewritten
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn file_first_means_run() {
        assert_eq!(
            with_implicit_run(words(&["flowrun", "a.flow"])),
            words(&["flowrun", "run", "a.flow"])
        );
        assert_eq!(
            with_implicit_run(words(&["flowrun", "check", "a.flow"])),
            words(&["flowrun", "check", "a.flow"])
        );
        assert_eq!(
            with_implicit_run(words(&["flowrun", "--version"])),
            words(&["flowrun", "--version"])
        );
    }
}
