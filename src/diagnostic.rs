//! Diagnostics shared by every stage: a stable code, a severity, a message,
//! a labelled span and optional help.
//!
//! Spans are byte offsets into the source. Line and column numbers are
//! computed only when a diagnostic is printed (see [`LineIndex`]).

use std::fmt;

/// A half-open byte range `start..end` in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

impl From<pest::Span<'_>> for Span {
    fn from(span: pest::Span<'_>) -> Span {
        Span::new(span.start(), span.end())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

macro_rules! codes {
    ($($variant:ident => $code:literal,)*) => {
        /// Stable diagnostic codes. `docs/diagnostics.md` has one section per code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $($variant,)*
        }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $code,)*
                }
            }
        }
    };
}

codes! {
    SyntaxError => "flow::syntax::unexpected",
    InvalidEscape => "flow::syntax::invalid_escape",
    UnterminatedMergeField => "flow::syntax::unterminated_merge_field",
    InvalidMergeField => "flow::syntax::invalid_merge_field",
    UnknownMethod => "flow::check::unknown_method",
    PayloadOnGet => "flow::check::payload_on_get",
    InvalidJsonPayload => "flow::check::invalid_json_payload",
    UnknownMergeFieldRoot => "flow::check::unknown_merge_field_root",
    UnknownVariable => "flow::check::unknown_variable",
    UnknownExecutionField => "flow::check::unknown_execution_field",
    UnknownHelper => "flow::check::unknown_helper",
    InvalidHelperCall => "flow::check::invalid_helper_call",
    DuplicateStepName => "flow::check::duplicate_step_name",
    DuplicateVariable => "flow::check::duplicate_variable",
    InvalidHeaderName => "flow::check::invalid_header_name",
    InvalidHeaderValue => "flow::check::invalid_header_value",
    DuplicateContentType => "flow::check::duplicate_content_type",
    UnknownPayloadKind => "flow::check::unknown_payload_kind",
    InvalidTimeout => "flow::check::invalid_timeout",
    InvalidRetry => "flow::check::invalid_retry",
    UnknownOption => "flow::check::unknown_option",
    InvalidOption => "flow::check::invalid_option",
    DuplicateOption => "flow::check::duplicate_option",
    InvalidSave => "flow::check::invalid_save",
    EmptyStep => "flow::check::empty_step",
    InvalidUrl => "flow::check::invalid_url",
    DuplicatePayload => "flow::check::duplicate_payload",
    InvalidSecretPath => "flow::check::invalid_secret_path",
    InvalidName => "flow::check::invalid_name",
    NoSteps => "flow::check::no_steps",
    InvalidOnError => "flow::check::invalid_on_error",
    UnknownSetting => "flow::check::unknown_setting",
    InvalidNotify => "flow::check::invalid_notify",
    PayloadBodyMismatch => "flow::check::payload_body_mismatch",
    InvalidLlm => "flow::check::invalid_llm",
    InvalidSchema => "flow::check::invalid_schema",
    UnknownProvider => "flow::check::unknown_provider",
    InvalidProvider => "flow::check::invalid_provider",
    // Entity schema
    UnknownEntityField => "flow::check::unknown_entity_field",
    EntityTypeMismatch => "flow::check::entity_type_mismatch",
    EntityWriteType => "flow::check::entity_write_type",
    InvalidEntitySchema => "flow::check::invalid_entity_schema",
    FileNotFound => "flow::input::file_not_found",
    FileUnreadable => "flow::input::file_unreadable",
    FileNotUtf8 => "flow::input::not_utf8",
    EmptyFile => "flow::input::empty_file",
    InvalidEntity => "flow::input::invalid_entity",
    EntityNotObject => "flow::input::entity_not_object",
    SecretNotSet => "flow::input::secret_not_set",
    InvalidSecretsFile => "flow::input::invalid_secrets_file",
    InvalidVar => "flow::input::invalid_var",
    MissingVar => "flow::input::missing_var",
    MissingMergeField => "flow::run::missing_merge_field",
    HeaderInjection => "flow::run::header_injection",
    RenderedJsonInvalid => "flow::run::invalid_json_body",
    InvalidRequest => "flow::run::invalid_request",
    HttpStatus => "flow::run::http_status",
    Timeout => "flow::run::timeout",
    ConnectionFailed => "flow::run::connection_failed",
    TooManyRequests => "flow::run::too_many_requests",
    RetryWaitTooLong => "flow::run::retry_wait_too_long",
    TooManyRedirects => "flow::run::too_many_redirects",
    SaveFailed => "flow::run::save_failed",
    HelperFailed => "flow::run::helper_failed",
    ResponseTooLarge => "flow::run::response_too_large",
    ReportNotWritten => "flow::run::report_not_written",
    StartupFailed => "flow::run::startup_failed",
    StoreFailed => "flow::run::store_failed",
    LlmFailed => "flow::run::llm_failed",
    LlmTruncated => "flow::run::llm_truncated",
    LlmRefused => "flow::run::llm_refused",
    LlmInvalidOutput => "flow::run::llm_invalid_output",
    StoreUnavailable => "flow::input::store_unavailable",
    ResumeRefused => "flow::input::resume_refused",
    InvalidExecutionId => "flow::input::invalid_execution_id",
    InvalidCaCert => "flow::input::invalid_cacert",
    // Batch runs
    InvalidRecord => "flow::input::invalid_record",
    RunInterrupted => "flow::run::interrupted",
    // File extraction and audio transcription
    InvalidExtract => "flow::check::invalid_extract",
    InvalidTranscribe => "flow::check::invalid_transcribe",
    SourceUnavailable => "flow::run::source_unavailable",
    ExtractFailed => "flow::run::extract_failed",
    TranscribeFailed => "flow::run::transcribe_failed",
    // Conditions, variables, field updates and code steps
    ElseWithoutIf => "flow::check::else_without_if",
    TypeMismatch => "flow::check::type_mismatch",
    UnknownType => "flow::check::unknown_type",
    UnknownUnit => "flow::check::unknown_unit",
    InvalidTarget => "flow::check::invalid_target",
    InvalidCode => "flow::check::invalid_code",
    PythonSyntax => "flow::check::python_syntax",
    ConditionFailed => "flow::run::condition_failed",
    RequiredVariable => "flow::run::required_variable",
    InvalidValue => "flow::run::invalid_value",
    CodeFailed => "flow::run::code_failed",
    CodeTimeout => "flow::run::code_timeout",
    InterpreterMissing => "flow::run::interpreter_missing",
    Stopped => "flow::run::stopped",
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the documentation of each code is published: `docs/diagnostics.md`
/// of the repository, one section per code.
pub const DOCS_BASE: &str = "https://github.com/flowrun/flowrun/blob/main/docs/diagnostics.md";

/// The address of the documentation section of a code such as
/// `flow::check::unknown_method`.
pub fn docs_url(code: &str) -> String {
    let anchor: String = code.chars().filter(|c| *c != ':').collect();
    format!("{DOCS_BASE}#{anchor}")
}

/// A secondary label pointing at another site, such as the first definition
/// of a duplicated name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Related {
    pub span: Span,
    pub message: String,
}

/// One problem found in a workflow, its input, or its run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub code: Code,
    pub severity: Severity,
    pub message: String,
    /// The offending site; `None` for problems that belong to no source span,
    /// such as an entity file that is not valid JSON.
    pub span: Option<Span>,
    pub label: String,
    pub help: Option<String>,
    pub related: Vec<Related>,
}

impl Diagnostic {
    pub fn error(code: Code, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code,
            severity: Severity::Error,
            message: message.into(),
            span: None,
            label: String::new(),
            help: None,
            related: Vec::new(),
        }
    }

    pub fn warning(code: Code, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, message)
        }
    }

    pub fn with_label(mut self, span: Span, label: impl Into<String>) -> Diagnostic {
        self.span = Some(span);
        self.label = label.into();
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    pub fn with_related(mut self, span: Span, message: impl Into<String>) -> Diagnostic {
        self.related.push(Related {
            span,
            message: message.into(),
        });
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Converts byte offsets to 1-based line and column numbers. Columns count
/// Unicode scalar values, as editors do. A line ends at `\n`, `\r\n` or a
/// lone `\r`, as in the grammar and the language server.
pub struct LineIndex<'a> {
    source: &'a str,
    /// Computed on the first lookup: most runs never print a diagnostic.
    line_starts: std::sync::OnceLock<Vec<usize>>,
}

impl<'a> LineIndex<'a> {
    pub fn new(source: &'a str) -> LineIndex<'a> {
        LineIndex {
            source,
            line_starts: std::sync::OnceLock::new(),
        }
    }

    fn line_starts(&self) -> &[usize] {
        self.line_starts.get_or_init(|| {
            let bytes = self.source.as_bytes();
            let mut line_starts = vec![0];
            for (offset, byte) in bytes.iter().enumerate() {
                let lone_cr = *byte == b'\r' && bytes.get(offset + 1) != Some(&b'\n');
                if *byte == b'\n' || lone_cr {
                    line_starts.push(offset + 1);
                }
            }
            line_starts
        })
    }

    pub fn source(&self) -> &'a str {
        self.source
    }

    /// Returns the 1-based line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.source.len());
        let line_starts = self.line_starts();
        let line = match line_starts.binary_search(&offset) {
            Ok(line) => line,
            Err(next) => next - 1,
        };
        let start = line_starts[line];
        let column = self.source[start..floor_char_boundary(self.source, offset)]
            .chars()
            .count();
        (line + 1, column + 1)
    }
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// Sorts diagnostics by position so that reports read top to bottom, with
/// syntax errors before the checker's findings at the same place.
pub fn sort(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by_key(|diagnostic| {
        let start = diagnostic.span.map_or(0, |span| span.start);
        let is_syntax = diagnostic.code.as_str().starts_with("flow::syntax");
        (!is_syntax, start)
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique() {
        let mut seen = HashSet::new();
        for code in Code::ALL {
            assert!(seen.insert(code.as_str()), "duplicate code {code}");
        }
    }

    #[test]
    fn codes_follow_stage_naming() {
        for code in Code::ALL {
            let parts: Vec<&str> = code.as_str().split("::").collect();
            assert_eq!(parts.len(), 3, "{code}");
            assert_eq!(parts[0], "flow", "{code}");
            assert!(["syntax", "check", "input", "run"].contains(&parts[1]), "{code}");
        }
    }

    #[test]
    fn docs_url_points_at_the_section_of_the_code() {
        assert_eq!(
            docs_url("flow::check::payload_on_get"),
            format!("{DOCS_BASE}#flowcheckpayload_on_get")
        );
    }

    #[test]
    fn line_col_counts_characters() {
        let index = LineIndex::new("ab\né€x\n");
        assert_eq!(index.line_col(0), (1, 1));
        assert_eq!(index.line_col(3), (2, 1));
        assert_eq!(index.line_col(8), (2, 3));
        assert_eq!(index.line_col(9), (2, 4));
    }

    #[test]
    fn line_col_ends_lines_at_a_lone_cr() {
        let index = LineIndex::new("a\rb\r\nc\nd");
        assert_eq!(index.line_col(2), (2, 1));
        assert_eq!(index.line_col(4), (2, 3));
        assert_eq!(index.line_col(5), (3, 1));
        assert_eq!(index.line_col(7), (4, 1));
    }
}
