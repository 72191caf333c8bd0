//! Command-line arguments.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "flowrun",
    version,
    about = "Check and run .flow workflows against one record",
    after_help = "`flowrun FILE.flow ...` is short for `flowrun run FILE.flow ...`.\n\nExit codes: 0 success, 1 a step failed, 2 invalid workflow or input, 3 the execution paused, 4 standard output could not be written, 130 a batch was interrupted. With --entities and with `resume --all`: 1 when any record failed or did not run, otherwise 3 when any paused."
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
    /// Continue a paused or interrupted execution from its failed step, or
    /// every one of them with --all.
    Resume(ResumeArgs),
    /// List executions, or show one step by step.
    Runs(RunsArgs),
    /// Rewrite workflows in the canonical layout.
    Fmt(FmtArgs),
    /// Run the language server for editors, over standard input and output.
    Lsp(LspArgs),
}

#[derive(Debug, clap::Args)]
pub struct LspArgs {
    /// The entity schema for workflows without an `entity schema` line: a
    /// JSON Schema file or a sample entity JSON file.
    #[arg(long, value_name = "FILE")]
    pub entity_schema: Option<PathBuf>,

    /// Accepted for editors that pass it; standard input and output are
    /// the only transport.
    #[arg(long, hide = true)]
    pub stdio: bool,
}

#[derive(Debug, clap::Args)]
pub struct FmtArgs {
    /// The workflow files, or `-` to format standard input to standard
    /// output.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,

    /// Change nothing; list the files that are not in the canonical layout
    /// and exit with 1 when there is one.
    #[arg(long)]
    pub check: bool,
}

/// The location of the execution store.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// The SQLite file of the execution store. Default: FLOWRUN_STORE, or
    /// `.flowrun/flowrun.db` beside the workflow (for `run`) or in the
    /// current folder (for `resume` and `runs`).
    #[arg(long, value_name = "PATH", env = "FLOWRUN_STORE")]
    pub store: Option<PathBuf>,
}

/// Trust in servers' certificates.
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// A PEM file of CA certificates to trust besides the public ones, such
    /// as the certificate of a company's internal certificate authority.
    #[arg(long, value_name = "FILE", env = "FLOWRUN_CACERT")]
    pub cacert: Option<PathBuf>,
}

/// Notification channels besides standard error.
#[derive(Debug, Clone, clap::Args)]
pub struct NotifyArgs {
    /// Append each notification as a JSON line to this file.
    #[arg(long, value_name = "FILE")]
    pub notify_file: Option<PathBuf>,

    /// POST each notification as JSON to this URL, besides the workflow's
    /// `notify webhook` lines. Repeatable.
    #[arg(long, value_name = "URL")]
    pub notify_webhook: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    /// The id of the execution, as `flowrun runs` lists it.
    #[arg(required_unless_present_any = ["all", "workflow"], conflicts_with = "all")]
    pub execution_id: Option<String>,

    /// Resume every paused execution of the store, and every execution
    /// whose process stopped while it ran. Prints each entity as one JSON
    /// line, as a batch run does.
    #[arg(long)]
    pub all: bool,

    /// With --all, resume only the executions of this workflow file. The
    /// store then defaults to `.flowrun/flowrun.db` beside it.
    #[arg(long, value_name = "FILE")]
    pub workflow: Option<PathBuf>,

    /// With --all, how many executions run at once. Default: as for a
    /// batch run.
    #[arg(long, value_name = "N", value_parser = parse_concurrency, requires = "all")]
    pub concurrency: Option<usize>,

    /// With --all, limit requests per host, shared by all executions, such
    /// as `50/s`, `600/m` or `1000/h`, up to 1000000/s.
    #[arg(long, value_name = "RATE", value_parser = crate::run::politeness::Rate::parse, requires = "all")]
    pub rate: Option<crate::run::politeness::Rate>,

    /// Resume even when steps before the failed one changed since the
    /// execution stopped.
    #[arg(long)]
    pub force: bool,

    /// Send again a step whose request was in flight when flowrun stopped,
    /// even when its method is POST or PATCH. Its Idempotency-Key is the
    /// same as before, so a receiver can detect the duplicate.
    #[arg(long)]
    pub resend_in_flight: bool,

    /// A dotenv file of secrets; secrets are never stored, so a resumed
    /// execution needs them again.
    #[arg(long, value_name = "FILE")]
    pub secrets: Option<PathBuf>,

    #[command(flatten)]
    pub store: StoreArgs,

    #[command(flatten)]
    pub tls: TlsArgs,

    #[command(flatten)]
    pub notify: NotifyArgs,

    /// Format of the progress log on standard error.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Also log each request attempt and each decision.
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    #[command(subcommand)]
    pub command: Option<RunsCommand>,

    /// List only executions with this status. An interrupted execution was
    /// left running by a process that stopped; `flowrun resume` continues
    /// it.
    #[arg(long, value_enum)]
    pub status: Option<StatusFilter>,

    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Print the step-by-step history of one execution.
    Show {
        execution_id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFilter {
    // Both are stored as `running`: a running execution's process is alive,
    // and an interrupted one's has stopped.
    Running,
    Interrupted,
    Succeeded,
    Failed,
    Paused,
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

    #[command(flatten)]
    pub store: StoreArgs,

    /// Keep no record of the execution. It cannot be resumed.
    #[arg(long, conflicts_with = "store")]
    pub no_store: bool,

    #[command(flatten)]
    pub tls: TlsArgs,

    #[command(flatten)]
    pub notify: NotifyArgs,

    #[command(flatten)]
    pub batch: BatchArgs,
}

/// Running one workflow over many records.
#[derive(Debug, Clone, clap::Args)]
pub struct BatchArgs {
    /// Run once per record of this file, or of standard input for `-`:
    /// JSON Lines, a JSON array of objects, or CSV with a header row.
    /// Prints each updated entity as one JSON line.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["entity", "execution_id", "dry_run", "report"]
    )]
    pub entities: Option<String>,

    /// The layout of --entities. Default: CSV for a `.csv` file, a JSON
    /// array when the input starts with `[`, otherwise JSON Lines.
    #[arg(long, value_enum, value_name = "FORMAT", requires = "entities")]
    pub entities_format: Option<EntitiesFormat>,

    /// In CSV records, read cells that are JSON numbers as numbers and
    /// `true`/`false` as booleans; other cells stay strings. Numbers keep
    /// every digit, and `2e3` becomes 2000.
    #[arg(long, requires = "entities")]
    pub csv_types: bool,

    /// How many executions run at once.
    #[arg(
        long,
        value_name = "N",
        default_value_t = crate::batch::DEFAULT_CONCURRENCY,
        value_parser = parse_concurrency,
        requires = "entities"
    )]
    pub concurrency: usize,

    /// Limit requests per host, shared by all executions, such as `50/s`,
    /// `600/m` or `1000/h`, up to 1000000/s. Requests are spaced evenly.
    #[arg(long, value_name = "RATE", value_parser = crate::run::politeness::Rate::parse, requires = "entities")]
    pub rate: Option<crate::run::politeness::Rate>,

    /// Print each entity when its execution ends, not in input order.
    #[arg(long, requires = "entities")]
    pub unordered: bool,

    /// Leave out the first N records, such as those an interrupted batch
    /// already ran.
    #[arg(long, value_name = "N", default_value_t = 0, requires = "entities")]
    pub skip: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EntitiesFormat {
    Jsonl,
    Json,
    Csv,
}

fn parse_concurrency(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(count) if (1..=1024).contains(&count) => Ok(count),
        _ => Err(format!(
            "`{text}` is not a concurrency; give a whole number from 1 to 1024"
        )),
    }
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The workflow files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,

    /// `human` for people, `json` for editors and CI, `sarif` for code
    /// scanning tools, `github` for GitHub Actions annotations.
    #[arg(long, value_enum, default_value_t = CheckFormat::Human)]
    pub format: CheckFormat,

    /// The entity schema for workflows without an `entity schema` line: a
    /// JSON Schema file or a sample entity JSON file.
    #[arg(long, value_name = "FILE")]
    pub entity_schema: Option<PathBuf>,
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
    Sarif,
    Github,
}

const SUBCOMMANDS: [&str; 8] = ["run", "check", "resume", "runs", "fmt", "lsp", "help", "--help"];

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
