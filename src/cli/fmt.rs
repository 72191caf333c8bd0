//! `flowrun fmt`: rewrites workflows in the canonical layout.

use std::io::Read as _;
use std::path::Path;

use crate::cli::args::FmtArgs;
use crate::cli::output::{self, Source};
use crate::cli::{EXIT_INVALID, EXIT_STEP_FAILED, EXIT_SUCCESS};
use crate::diagnostic::{Code, Diagnostic};
use crate::format;
use crate::input;

/// Formats each file in place, or with `--check` lists the files that are
/// not formatted. Exits with 2 when a file cannot be read or parsed, else
/// with 1 when `--check` found a file to format, else with 0.
pub fn fmt_command(args: FmtArgs) -> u8 {
    let mut invalid = false;
    let mut unformatted = false;
    for file in &args.files {
        if file == Path::new("-") {
            match format_stdin(args.check) {
                Ok(Stdin::Formatted) => {}
                Ok(Stdin::NotFormatted) => unformatted = true,
                Err(()) => invalid = true,
            }
            continue;
        }
        let name = file.display().to_string();
        let text = match input::read_flow_as_written(file) {
            Ok(text) => text,
            Err(diagnostic) => {
                output::eprint_diagnostics(&[diagnostic], None);
                invalid = true;
                continue;
            }
        };
        let formatted = match format_keeping_bom(&text) {
            Ok(formatted) => formatted,
            Err(diagnostics) => {
                let source = Source {
                    name: &name,
                    text: without_bom(&text),
                };
                output::eprint_diagnostics(&diagnostics, Some(&source));
                invalid = true;
                continue;
            }
        };
        if formatted == text {
            continue;
        }
        if args.check {
            output::eprint_line(&format!("{name}: not formatted; run `flowrun fmt {name}`"));
            unformatted = true;
            continue;
        }
        if let Err(error) = write_replacing(file, &formatted) {
            let diagnostic = Diagnostic::error(
                Code::FileUnreadable,
                format!("cannot write the formatted workflow to `{name}`: {error}"),
            )
            .with_help("check that the file and its folder are writable");
            output::eprint_diagnostics(&[diagnostic], None);
            invalid = true;
        }
    }
    if invalid {
        EXIT_INVALID
    } else if unformatted {
        EXIT_STEP_FAILED
    } else {
        EXIT_SUCCESS
    }
}

/// The outcome of `fmt -` for input that parses.
enum Stdin {
    /// The input was written formatted to standard output, or with
    /// `--check` it was already formatted.
    Formatted,
    /// With `--check`, the input is not formatted.
    NotFormatted,
}

/// Formats standard input to standard output. With `check`, writes
/// nothing to standard output and names `<stdin>` on standard error when
/// the input is not formatted.
fn format_stdin(check: bool) -> Result<Stdin, ()> {
    let mut text = String::new();
    if let Err(error) = std::io::stdin().read_to_string(&mut text) {
        output::eprint_line(&format!("error: cannot read standard input: {error}"));
        return Err(());
    }
    match format_keeping_bom(&text) {
        Ok(formatted) if check => {
            if formatted == text {
                return Ok(Stdin::Formatted);
            }
            output::eprint_line("<stdin>: not formatted; run `flowrun fmt -` to format it");
            Ok(Stdin::NotFormatted)
        }
        Ok(formatted) => output::print_stdout(&formatted)
            .then_some(Stdin::Formatted)
            .ok_or(()),
        Err(diagnostics) => {
            let source = Source {
                name: "<stdin>",
                text: without_bom(&text),
            };
            output::eprint_diagnostics(&diagnostics, Some(&source));
            Err(())
        }
    }
}

/// Formats `text` and keeps its leading byte order mark, if any. Syntax
/// diagnostics point into the text after the mark, as `flowrun check`
/// reports them.
fn format_keeping_bom(text: &str) -> Result<String, Vec<Diagnostic>> {
    match text.strip_prefix(input::BOM) {
        Some(body) => format::format(body).map(|formatted| format!("{}{formatted}", input::BOM)),
        None => format::format(text),
    }
}

fn without_bom(text: &str) -> &str {
    text.strip_prefix(input::BOM).unwrap_or(text)
}

/// Writes `text` beside `path` and renames it over `path`, so that an
/// interrupted write never leaves half a workflow. A symbolic link is
/// resolved first, so the file it points to is rewritten and the link stays.
fn write_replacing(path: &Path, text: &str) -> std::io::Result<()> {
    let resolved = std::fs::canonicalize(path)?;
    let path = resolved.as_path();
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".fmt-tmp");
    let temporary = std::path::PathBuf::from(temporary);
    if let Ok(metadata) = std::fs::metadata(path) {
        std::fs::write(&temporary, text)?;
        std::fs::set_permissions(&temporary, metadata.permissions())?;
    } else {
        std::fs::write(&temporary, text)?;
    }
    std::fs::rename(&temporary, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary);
    })
}
