//! Everything flowrun writes to standard output and standard error goes
//! through this module.

use std::fmt;
use std::io::{self, IsTerminal, Write};

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceCode};
use serde_json::{json, Value};

use crate::cli::args::LogFormat;
use crate::diagnostic::{Diagnostic, LineIndex, Severity, Span};
use crate::run::report::RenderedRequest;

/// A source file, for diagnostics that point into it.
pub struct Source<'a> {
    pub name: &'a str,
    pub text: &'a str,
}

/// Renders diagnostics as miette reports. `width` is the terminal width.
pub fn render_human(
    diagnostics: &[Diagnostic],
    source: Option<&Source<'_>>,
    width: usize,
    color: bool,
) -> String {
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(width)
        .with_links(false);
    let named = source.map(|source| NamedSource::new(source.name, source.text.to_string()));
    let mut out = String::new();
    for diagnostic in diagnostics {
        let report = MietteReport {
            diagnostic,
            source: named.as_ref().filter(|_| diagnostic.span.is_some()),
        };
        // Rendering into a String cannot fail for lack of space.
        let _ = handler.render_report(&mut out, &report);
    }
    out
}

/// Renders diagnostics as one JSON array, for editors and CI.
pub fn render_json(diagnostics: &[Diagnostic], source: &Source<'_>) -> Vec<Value> {
    let lines = LineIndex::new(source.text);
    let range = |span: Span| {
        let (start_line, start_column) = lines.line_col(span.start);
        let (end_line, end_column) = lines.line_col(span.end);
        json!({
            "start": {"line": start_line, "column": start_column},
            "end": {"line": end_line, "column": end_column},
        })
    };
    diagnostics
        .iter()
        .map(|diagnostic| {
            json!({
                "file": source.name,
                "code": diagnostic.code.as_str(),
                "severity": diagnostic.severity,
                "message": diagnostic.message,
                "span": diagnostic.span,
                "range": diagnostic.span.map(range),
                "label": diagnostic.label,
                "help": diagnostic.help,
                "related": diagnostic.related.iter().map(|related| json!({
                    "message": related.message,
                    "span": related.span,
                    "range": range(related.span),
                })).collect::<Vec<_>>(),
            })
        })
        .collect()
}

/// Writes diagnostics to standard error for people.
pub fn eprint_diagnostics(diagnostics: &[Diagnostic], source: Option<&Source<'_>>) {
    if diagnostics.is_empty() {
        return;
    }
    let stderr = io::stderr();
    let color = stderr.is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let text = render_human(diagnostics, source, terminal_width(), color);
    let _ = stderr.lock().write_all(text.as_bytes());
}

fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|columns| columns.parse().ok())
        .unwrap_or(100)
}

/// Writes to standard output. Returns false when the reader has gone away,
/// as with `flowrun ... | head`, so that the caller can exit quietly.
pub fn print_stdout(text: &str) -> bool {
    let mut stdout = io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Ok(()) => true,
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => false,
        Err(_) => false,
    }
}

pub fn print_json(value: &impl serde::Serialize) -> bool {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    print_stdout(&text)
}

/// Formats the requests of a dry run as HTTP messages.
pub fn format_dry_run(requests: &[RenderedRequest]) -> String {
    let mut out = String::new();
    for request in requests {
        out.push_str(&format!("# step \"{}\"\n", request.step));
        if let Some(error) = &request.error {
            out.push_str(&format!("# not rendered: {error}\n\n"));
            continue;
        }
        out.push_str(&format!("{} {}\n", request.method, request.url));
        for (name, value) in &request.headers {
            out.push_str(&format!("{name}: {value}\n"));
        }
        if let Some(body) = &request.body {
            out.push('\n');
            out.push_str(body);
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

/// Sends the progress log to standard error, as text or JSON Lines.
pub fn init_logging(format: LogFormat, verbose: bool) {
    use tracing_subscriber::layer::SubscriberExt as _;

    let level = if verbose {
        tracing::Level::DEBUG
    } else {
        tracing::Level::INFO
    };
    let filter = tracing_subscriber::filter::Targets::new()
        .with_target("flowrun", level)
        .with_default(tracing::Level::WARN);
    let builder = tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_target(false)
        .with_max_level(level);
    // A second call finds a subscriber in place, which is harmless.
    let _ = match format {
        LogFormat::Text => {
            let subscriber = builder.event_format(ProgressFormat).finish().with(filter);
            tracing::subscriber::set_global_default(subscriber)
        }
        LogFormat::Json => {
            let subscriber = builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .finish()
                .with(filter);
            tracing::subscriber::set_global_default(subscriber)
        }
    };
}

/// The text progress log: one line per event, `step "NAME": message`, with
/// `warning:` or `error:` before it where the level calls for it.
struct ProgressFormat;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for ProgressFormat
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _context: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let mut fields = EventFields::default();
        event.record(&mut fields);
        let prefix = match *event.metadata().level() {
            tracing::Level::ERROR => "error: ",
            tracing::Level::WARN => "warning: ",
            tracing::Level::DEBUG | tracing::Level::TRACE => "debug: ",
            tracing::Level::INFO => "",
        };
        match fields.step {
            Some(step) => writeln!(writer, "{prefix}step \"{step}\": {}", fields.message),
            None => writeln!(writer, "{prefix}{}", fields.message),
        }
    }
}

/// The message and step of one event. The text log shows only these, as
/// the message repeats the other fields; JSON logs carry every field.
#[derive(Default)]
struct EventFields {
    message: String,
    step: Option<String>,
}

impl tracing::field::Visit for EventFields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "step" => self.step = Some(format!("{value:?}")),
            _ => {}
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_string(),
            "step" => self.step = Some(value.to_string()),
            _ => {}
        }
    }
}

/// Adapts a [`Diagnostic`] to miette's report renderer.
struct MietteReport<'a> {
    diagnostic: &'a Diagnostic,
    source: Option<&'a NamedSource<String>>,
}

impl fmt::Debug for MietteReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.diagnostic, f)
    }
}

impl fmt::Display for MietteReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diagnostic.message)
    }
}

impl std::error::Error for MietteReport<'_> {}

impl miette::Diagnostic for MietteReport<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        Some(Box::new(self.diagnostic.code.as_str()))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.diagnostic.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.diagnostic
            .help
            .as_ref()
            .map(|help| Box::new(help.as_str()) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.source.map(|source| source as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.source?;
        let span = self.diagnostic.span?;
        let label = Some(self.diagnostic.label.clone()).filter(|label| !label.is_empty());
        let primary = LabeledSpan::new_primary_with_span(label, (span.start, span.len()));
        let related = self.diagnostic.related.iter().map(|related| {
            LabeledSpan::new_with_span(
                Some(related.message.clone()),
                (related.span.start, related.span.len()),
            )
        });
        Some(Box::new(std::iter::once(primary).chain(related)))
    }
}
