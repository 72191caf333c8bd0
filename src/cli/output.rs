//! Everything flowrun writes to standard output and standard error goes
//! through this module.

use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::path::Path;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceCode};
use serde_json::{json, Value};

use crate::cli::args::LogFormat;
use crate::diagnostic::{Diagnostic, LineIndex, Severity, Span};
use crate::run::report::{Outcome, RenderedRequest, Report};

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
        let framed = match (source, diagnostic.span) {
            (Some(source), Some(_)) if touches_long_line(diagnostic, source.text) => {
                // miette cannot draw columns this far right, so the position
                // goes into the message instead of a source frame.
                let lines = LineIndex::new(source.text);
                let (line, column) = lines.line_col(diagnostic.span.map_or(0, |span| span.start));
                let mut plain = diagnostic.clone();
                plain.message = format!("{} (at {}:{line}:{column})", plain.message, source.name);
                plain.span = None;
                plain.related.clear();
                std::borrow::Cow::Owned(plain)
            }
            _ => std::borrow::Cow::Borrowed(diagnostic),
        };
        let report = MietteReport {
            diagnostic: &framed,
            source: named.as_ref().filter(|_| framed.span.is_some()),
        };
        // Rendering into a String cannot fail for lack of space.
        let _ = handler.render_report(&mut out, &report);
    }
    out
}

/// Source lines longer than this are not drawn in a frame.
const MAX_FRAMED_LINE: usize = 2_000;

/// Whether a span of the diagnostic lies on a line longer than
/// [`MAX_FRAMED_LINE`] bytes.
fn touches_long_line(diagnostic: &Diagnostic, text: &str) -> bool {
    let spans = diagnostic
        .span
        .into_iter()
        .chain(diagnostic.related.iter().map(|related| related.span));
    spans.into_iter().any(|span| {
        let start = text[..span.start.min(text.len())]
            .rfind('\n')
            .map_or(0, |index| index + 1);
        let end = text[span.end.min(text.len())..]
            .find('\n')
            .map_or(text.len(), |index| span.end + index);
        text[start..end]
            .split('\n')
            .any(|line| line.len() > MAX_FRAMED_LINE)
    })
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
    write_stderr(escape_controls(&text).as_bytes());
}

fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|columns| columns.parse().ok())
        .unwrap_or(100)
}

/// Writes to standard output. A reader that has gone away, as with
/// `flowrun ... | head`, is not an error. Returns false, after saying why on
/// standard error, when the output could not be written otherwise, such as
/// on a full disk.
pub fn print_stdout(text: &str) -> bool {
    let mut stdout = io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Ok(()) => true,
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => true,
        Err(error) => {
            eprint_line(&format!("error: cannot write to standard output: {error}"));
            false
        }
    }
}

pub fn print_json(value: &impl serde::Serialize) -> bool {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    print_stdout(&text)
}

/// Formats a dry run step by step: each request as an HTTP message, the
/// branch each condition step took, and the error of a step that failed
/// without a request to list it under. Returns the text and whether
/// anything failed.
pub fn format_dry_run_report(report: &Report) -> (String, bool) {
    let mut out = String::new();
    let mut failed = false;
    let mut listed = vec![false; report.dry_run.len()];
    for step in &report.steps {
        let mine: Vec<usize> = (0..report.dry_run.len())
            .filter(|&index| !listed[index] && report.dry_run[index].step == step.name)
            .collect();
        for &index in &mine {
            listed[index] = true;
        }
        let requests: Vec<RenderedRequest> =
            mine.iter().map(|&index| report.dry_run[index].clone()).collect();
        failed |= requests.iter().any(|request| request.error.is_some());
        out.push_str(&format_dry_run(&requests));
        if let Some(read) = &step.not_evaluated {
            out.push_str(&format!(
                "# step \"{}\": not evaluated, because it reads `{read}`, which the dry run does not know\n\n",
                step.name
            ));
        }
        if let Some(branch) = step.branch {
            out.push_str(&format!(
                "# step \"{}\": took the `{}` branch\n\n",
                step.name,
                branch.as_str()
            ));
        }
        let shown = requests.iter().any(|request| request.error.is_some());
        if step.outcome == Outcome::Failed && !shown {
            failed = true;
            let message = step.error_message.as_deref().unwrap_or("the step failed");
            out.push_str(&format!("# step \"{}\" failed: {}\n\n", step.name, message));
        }
    }
    let rest: Vec<RenderedRequest> = (0..report.dry_run.len())
        .filter(|&index| !listed[index])
        .map(|index| report.dry_run[index].clone())
        .collect();
    failed |= rest.iter().any(|request| request.error.is_some());
    out.push_str(&format_dry_run(&rest));
    (out, failed)
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

/// The progress bar on standard error, while a batch draws one. Log lines
/// are written while it is hidden, so that no line starts inside a draw.
static PROGRESS_BAR: std::sync::Mutex<Option<indicatif::ProgressBar>> = std::sync::Mutex::new(None);

/// Sets the progress bar that log lines and [`eprint_line`] hide while they
/// write, or none.
pub fn set_progress_bar(bar: Option<indicatif::ProgressBar>) {
    if let Ok(mut current) = PROGRESS_BAR.lock() {
        *current = bar;
    }
}

/// Writes to standard error, hiding the progress bar meanwhile.
fn write_stderr(bytes: &[u8]) {
    let bar = PROGRESS_BAR.lock().ok().and_then(|bar| bar.clone());
    let write = || {
        let _ = io::stderr().lock().write_all(bytes);
    };
    match bar {
        Some(bar) => bar.suspend(write),
        None => write(),
    }
}

/// One event of the log, written to standard error in one piece when the
/// formatter drops it.
struct LogLine(Vec<u8>);

impl Write for LogLine {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            write_stderr(&self.0);
        }
    }
}

/// Sends the progress log to standard error, as text or JSON Lines.
pub fn init_logging(format: LogFormat, verbose: bool) {
    let level = if verbose {
        tracing::Level::DEBUG
    } else {
        tracing::Level::INFO
    };
    init_logging_at(format, level);
}

/// Sends the progress log to standard error from `level` up.
pub fn init_logging_at(format: LogFormat, level: tracing::Level) {
    use tracing_subscriber::layer::SubscriberExt as _;

    // In a JSON log, flowrun's spans are always on, whatever the level, so
    // that every event names its execution. The text log shows no span
    // fields, so it keeps no spans, which saves creating two per record.
    let spans = format == LogFormat::Json;
    let filter = tracing_subscriber::filter::filter_fn(move |metadata| {
        if metadata.target().starts_with("flowrun") {
            if metadata.is_span() {
                spans
            } else {
                *metadata.level() <= level
            }
        } else {
            *metadata.level() <= tracing::Level::WARN
        }
    });
    // A closed standard error must not stop the run, so write errors of the
    // log are not reported (which would panic).
    let builder = tracing_subscriber::fmt()
        .with_writer(|| LogLine(Vec::new()))
        .with_target(false)
        .with_max_level(tracing::Level::TRACE)
        .log_internal_errors(false);
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
        // One line per event: a line break, such as one in a response body,
        // reads as a semicolon, and the body follows the message.
        let mut message = escape_controls(&fields.message).replace('\n', "; ");
        if let Some(body) = &fields.response_body {
            message.push_str("; response body: ");
            message.push_str(&escape_controls(body).replace('\n', "; "));
        }
        match fields.step {
            Some(step) => writeln!(
                writer,
                "{prefix}step \"{}\": {message}",
                escape_controls(&step).replace('\n', "\\n")
            ),
            None => writeln!(writer, "{prefix}{message}"),
        }
    }
}

/// The message, step and response body of one event. The text log shows
/// only these, as the message repeats the other fields; JSON logs carry
/// every field.
#[derive(Default)]
struct EventFields {
    message: String,
    step: Option<String>,
    response_body: Option<String>,
}

impl tracing::field::Visit for EventFields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "step" => self.step = Some(format!("{value:?}")),
            "response_body" => self.response_body = Some(format!("{value:?}")),
            _ => {}
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_string(),
            "step" => self.step = Some(value.to_string()),
            "response_body" => self.response_body = Some(value.to_string()),
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

/// Writes one line to standard error.
/// Writes one JSON object to standard error in the layout of the JSON log:
/// `timestamp`, `level`, `message`, then `fields`.
pub fn eprint_json_line(level: tracing::Level, message: &str, fields: serde_json::Map<String, Value>) {
    let timestamp = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut line = serde_json::Map::new();
    line.insert("timestamp".to_string(), Value::String(timestamp));
    line.insert("level".to_string(), Value::String(level.to_string()));
    line.insert("message".to_string(), Value::String(message.to_string()));
    line.extend(fields);
    write_stderr(format!("{}\n", Value::Object(line)).as_bytes());
}

pub fn eprint_line(line: &str) {
    let mut text = escape_controls(line);
    text.push('\n');
    write_stderr(text.as_bytes());
}

/// Escapes control characters other than line breaks and tabs, so that
/// values from entities and servers cannot move the cursor, change colours
/// or forge lines on a terminal. miette's own colour codes are kept.
pub fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' | '\t' => out.push(c),
            // An SGR sequence (ESC [ digits and semicolons m) only sets colours.
            '\u{1b}' if chars.peek() == Some(&'[') => {
                let rest: String = chars
                    .clone()
                    .skip(1)
                    .take_while(|c| c.is_ascii_digit() || *c == ';')
                    .collect();
                let is_colour = chars.clone().nth(rest.len() + 1) == Some('m');
                if is_colour {
                    out.push(c);
                } else {
                    out.push_str("\\u{1b}");
                }
            }
            c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    out
}

/// One checked file and what was found in it.
pub struct FileReport<'a> {
    pub source: Source<'a>,
    pub diagnostics: &'a [Diagnostic],
}

/// Renders diagnostics as one SARIF 2.1.0 log, for code scanning tools.
pub fn render_sarif(files: &[FileReport<'_>]) -> Value {
    let mut rule_ids: Vec<&'static str> = Vec::new();
    let mut results = Vec::new();
    for file in files {
        let lines = LineIndex::new(file.source.text);
        let location = |span: Option<Span>, message: Option<&str>| {
            let mut physical = json!({"artifactLocation": {"uri": sarif_uri(file.source.name)}});
            if let Some(span) = span {
                let (start_line, start_column) = lines.line_col(span.start);
                let (end_line, end_column) = lines.line_col(span.end);
                physical["region"] = json!({
                    "startLine": start_line,
                    "startColumn": start_column,
                    "endLine": end_line,
                    "endColumn": end_column,
                });
            }
            let mut location = json!({"physicalLocation": physical});
            if let Some(message) = message {
                location["message"] = json!({"text": message});
            }
            location
        };
        for diagnostic in file.diagnostics {
            let code = diagnostic.code.as_str();
            let rule_index = match rule_ids.iter().position(|id| *id == code) {
                Some(index) => index,
                None => {
                    rule_ids.push(code);
                    rule_ids.len() - 1
                }
            };
            let mut text = diagnostic.message.clone();
            if let Some(help) = &diagnostic.help {
                text.push_str("\nhelp: ");
                text.push_str(help);
            }
            let mut result = json!({
                "ruleId": code,
                "ruleIndex": rule_index,
                "level": match diagnostic.severity {
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                },
                "message": {"text": text},
                "locations": [location(diagnostic.span, None)],
            });
            if !diagnostic.related.is_empty() {
                result["relatedLocations"] = diagnostic
                    .related
                    .iter()
                    .enumerate()
                    .map(|(id, related)| {
                        let mut related_location = location(Some(related.span), Some(&related.message));
                        related_location["id"] = json!(id);
                        related_location
                    })
                    .collect();
            }
            results.push(result);
        }
    }
    let rules: Vec<Value> = rule_ids
        .iter()
        .map(|id| {
            json!({
                "id": id,
                "name": id,
                "helpUri": crate::diagnostic::docs_url(id),
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "flowrun",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            // Columns count Unicode code points, as `LineIndex::line_col` does.
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    })
}

/// Turns a file name into a SARIF artifact URI. An absolute path becomes a
/// `file:` URI. A relative path becomes a relative reference, with every
/// byte other than letters, digits, `-._~` and the separator
/// percent-encoded, so that `C:x.flow` cannot read as a scheme and `#`, `?`
/// and spaces stay in the path.
fn sarif_uri(name: &str) -> String {
    let path = if cfg!(windows) {
        name.replace('\\', "/")
    } else {
        name.to_string()
    };
    let mut uri = String::with_capacity(path.len() + 8);
    let absolute = Path::new(name).is_absolute();
    if absolute {
        // `/tmp/a.flow` and the UNC path `//server/share/a.flow` follow
        // `file:` as they are; `C:/flows/a.flow` needs a root slash.
        let prefix = if path.starts_with("//") {
            "file:"
        } else if path.starts_with('/') {
            "file://"
        } else {
            "file:///"
        };
        uri.push_str(prefix);
    }
    for (index, byte) in path.bytes().enumerate() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                uri.push(byte as char)
            }
            // The drive colon of an absolute Windows path, after `file:///`.
            b':' if absolute && index == 1 => uri.push(':'),
            _ => uri.push_str(&format!("%{byte:02X}")),
        }
    }
    uri
}

/// Renders diagnostics as GitHub Actions workflow commands, one line each,
/// which GitHub shows as annotations on the pull request.
pub fn render_github(diagnostics: &[Diagnostic], source: &Source<'_>) -> String {
    let lines = LineIndex::new(source.text);
    let mut out = String::new();
    for diagnostic in diagnostics {
        let command = match diagnostic.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut properties = vec![format!("file={}", github_property(source.name))];
        if let Some(span) = diagnostic.span {
            let (line, column) = lines.line_col(span.start);
            let (end_line, end_column) = lines.line_col(span.end);
            properties.push(format!("line={line}"));
            properties.push(format!("col={column}"));
            properties.push(format!("endLine={end_line}"));
            if end_line == line {
                properties.push(format!("endColumn={end_column}"));
            }
        }
        properties.push(format!("title={}", github_property(diagnostic.code.as_str())));
        let mut message = diagnostic.message.clone();
        if let Some(help) = &diagnostic.help {
            message.push_str("\nhelp: ");
            message.push_str(help);
        }
        out.push_str(&format!(
            "::{command} {}::{}\n",
            properties.join(","),
            github_data(&message)
        ));
    }
    out
}

/// Escapes the message of a workflow command.
fn github_data(text: &str) -> String {
    text.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

/// Escapes a property value of a workflow command.
fn github_property(text: &str) -> String {
    github_data(text).replace(':', "%3A").replace(',', "%2C")
}
