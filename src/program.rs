//! The checked workflow: what the checker hands to the interpreter.
//!
//! Every template here is compiled. Each merge field records how its value
//! is encoded at its position, and every name it uses was declared.

pub mod statement;

use std::time::Duration;

use crate::diagnostic::Span;
use crate::llm::schema::Field;
use crate::llm::ProviderKind;
use crate::syntax::ast::{Expr, PathKey};

#[derive(Debug, Clone)]
pub struct Program {
    pub name: String,
    pub variables: Vec<Variable>,
    pub steps: Vec<Step>,
    /// Each secret the workflow uses, with the span of its first use.
    pub secrets: Vec<(String, Span)>,
    /// Webhook URLs that receive notifications, from `notify webhook`.
    pub webhooks: Vec<Compiled>,
    /// Model providers declared in the workflow and in `flowrun.toml`.
    pub providers: Vec<ProviderConfig>,
}

/// A configured model provider.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: Option<Compiled>,
    pub api_key: Option<Compiled>,
    pub model: Option<String>,
    /// True when the provider's model reads images, set with `vision true`.
    pub vision: bool,
}

/// One action of a step.
#[derive(Debug, Clone)]
pub enum Action {
    Http(Request),
    Llm(LlmCall),
    Extract(ExtractCall),
    Transcribe(TranscribeCall),
    /// A statement outside a step, which is a step of its own.
    Statement(statement::Statement),
    Code(statement::CodeCall),
}

impl Action {
    /// The HTTP method the action sends with, for deciding whether an
    /// action that may have been sent can be sent again. A model call is a
    /// POST that changes nothing, so it counts as idempotent.
    pub fn method_name(&self) -> &'static str {
        match self {
            Action::Http(request) => request.method.as_str(),
            Action::Llm(_) => "LLM",
            Action::Extract(_) => "EXTRACT",
            Action::Transcribe(_) => "TRANSCRIBE",
            // An LLM condition changes nothing, like an `llm` action; other
            // statements only change the entity and variables.
            Action::Statement(statement::Statement::Condition(_)) => "IF",
            Action::Statement(_) => "SET",
            Action::Code(_) => "CODE",
        }
    }

    /// Every model call of the action: its own, or those of an LLM
    /// condition.
    pub fn llm_calls(&self) -> Vec<&LlmCall> {
        match self {
            Action::Llm(call) => vec![call],
            Action::Statement(statement::Statement::Condition(condition)) => condition.llm_calls(),
            _ => Vec::new(),
        }
    }

    pub fn span(&self) -> Span {
        match self {
            Action::Http(request) => request.span,
            Action::Llm(call) => call.span,
            Action::Code(call) => call.span,
            Action::Statement(_) => Span::default(),
            Action::Extract(call) => call.span,
            Action::Transcribe(call) => call.span,
        }
    }
}

/// `extract entity.FILE fields { ... } -> target`: reads a document and
/// asks a model for the declared fields.
#[derive(Debug, Clone)]
pub struct ExtractCall {
    /// The entity path or variable that holds the document reference.
    pub source: Expr,
    pub provider: Option<String>,
    pub model: Option<String>,
    /// Instructions added to the extraction prompt.
    pub prompt: Option<Compiled>,
    pub system: Option<Compiled>,
    pub fields: Vec<Field>,
    pub target: Option<LlmTarget>,
    pub span: Span,
}

/// `transcribe entity.FILE language "en" -> target`: sends audio to a
/// speech-to-text endpoint.
#[derive(Debug, Clone)]
pub struct TranscribeCall {
    /// The entity path or variable that holds the audio reference.
    pub source: Expr,
    pub provider: Option<String>,
    pub model: Option<String>,
    /// An ISO 639-1 code such as `en`; `None` lets the provider detect it.
    pub language: Option<String>,
    pub prompt: Option<Compiled>,
    pub transcript: Option<LlmTarget>,
    pub segments: Option<LlmTarget>,
    pub detected_language: Option<LlmTarget>,
    pub span: Span,
}

/// Limits of the steps that read files, from the step's option lines.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaParams {
    /// The largest file a step reads or downloads, in bytes.
    pub max_file_size: u64,
    /// The most characters of document text sent in one extraction request.
    pub input_budget: usize,
    /// The largest audio upload one transcription request carries, in bytes.
    pub upload_limit: u64,
}

impl Default for MediaParams {
    fn default() -> MediaParams {
        MediaParams {
            max_file_size: 200 * 1024 * 1024,
            input_budget: 24_000,
            upload_limit: 25 * 1024 * 1024,
        }
    }
}

/// A call to a model: `llm prompt "..." ... -> entity.field`.
#[derive(Debug, Clone)]
pub struct LlmCall {
    /// The provider the step names, or `None` for the default one.
    pub provider: Option<String>,
    pub model: Option<String>,
    /// Models tried in order when the call fails after its retries, each
    /// `MODEL` on the same provider or `PROVIDER/MODEL`.
    pub fallback: Vec<String>,
    pub prompt: Compiled,
    pub system: Option<Compiled>,
    pub output: LlmOutput,
    pub target: Option<LlmTarget>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LlmOutput {
    Text,
    Choices(Vec<String>),
    Schema(Vec<Field>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum LlmTarget {
    Entity(Vec<PathKey>),
    /// `-> entity`: each member of a schema answer becomes a field.
    EntityMembers,
    Variable(String),
}

/// Model parameters of a step, from its option lines.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LlmParams {
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub seed: Option<i64>,
    /// Send one repair request when an answer does not validate.
    pub repair: bool,
}

/// What a failed step does to the execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Record the failure, notify, go on with the next step.
    ContinueNotify,
    /// Stop at the step, store the execution as paused, notify.
    PauseNotify,
    /// Record the failure and go on, without a notification.
    ContinueSilently,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifySeverity {
    Low,
    Medium,
    High,
    Critical,
}

impl NotifySeverity {
    pub const ALL: [NotifySeverity; 4] = [
        NotifySeverity::Low,
        NotifySeverity::Medium,
        NotifySeverity::High,
        NotifySeverity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotifySeverity::Low => "low",
            NotifySeverity::Medium => "medium",
            NotifySeverity::High => "high",
            NotifySeverity::Critical => "critical",
        }
    }
}

/// A step's failure behaviour and the severity of its notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorPolicy {
    pub on_error: OnError,
    pub severity: NotifySeverity,
}

impl Default for ErrorPolicy {
    /// Pause and notify, so that no failure is skipped silently.
    fn default() -> ErrorPolicy {
        ErrorPolicy {
            on_error: OnError::PauseNotify,
            severity: NotifySeverity::Medium,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Variable {
    pub name: String,
    /// `None` when the value must come from `--var`, or when a step
    /// computes it.
    pub value: Option<VariableValue>,
    /// True for a variable that a `let` step computes where it stands in
    /// the workflow; a `--var` value then replaces its sources.
    pub deferred: bool,
    /// The declared type, or the type of the literal, that a `--var` value
    /// is converted to; `None` for an untyped `let` from a bare merge field.
    pub ty: Option<crate::program::statement::VarType>,
    /// True for a `let` with no value and no fallback, which a run needs a
    /// `--var` for.
    pub needs_var: bool,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub enum VariableValue {
    Template(Compiled),
    Literal(serde_json::Value),
}

#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub span: Span,
    pub actions: Vec<Action>,
    pub settings: Settings,
    pub policy: ErrorPolicy,
    /// The branches that must have been taken for the step to run, outer
    /// `if` first.
    pub guards: Vec<statement::Guard>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Put,
    Post,
    Patch,
    Delete,
}

impl Method {
    pub const ALL: [Method; 5] = [
        Method::Get,
        Method::Put,
        Method::Post,
        Method::Patch,
        Method::Delete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub url: Compiled,
    pub headers: Vec<HeaderTemplate>,
    pub body: Option<Body>,
    /// Values copied from the response after it succeeds, in order.
    pub saves: Vec<Save>,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub struct HeaderTemplate {
    pub name: String,
    pub value: Compiled,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub struct Body {
    pub content_type: String,
    /// True for `json` payloads, which are validated again after rendering.
    pub is_json: bool,
    pub template: Compiled,
    pub span: Span,
}

/// Per-step settings of the request behaviour.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub timeout: Duration,
    /// Retries after the first request, so `max_retries + 1` requests at most.
    pub max_retries: u32,
    pub max_wait: Duration,
    pub retry_server_errors: bool,
    pub retry_connection_errors: bool,
    /// Also retry exchanges that broke after the request was sent, which is
    /// safe only for requests that change nothing, such as model calls.
    pub retry_interrupted: bool,
    pub follow_redirects: bool,
    /// Send an `Idempotency-Key` header with POST and PATCH requests.
    pub idempotency_key: bool,
    pub llm: LlmParams,
    pub media: MediaParams,
    /// The largest response body read, in bytes.
    pub max_response_bytes: usize,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            timeout: Duration::from_secs(30),
            max_retries: 5,
            max_wait: Duration::from_secs(120),
            retry_server_errors: false,
            retry_connection_errors: false,
            retry_interrupted: false,
            follow_redirects: true,
            idempotency_key: true,
            llm: LlmParams {
                repair: true,
                ..LlmParams::default()
            },
            media: MediaParams::default(),
            max_response_bytes: 16 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Save {
    pub source: SaveSource,
    pub target: SaveTarget,
    /// The source as written, for messages.
    pub source_text: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SaveSource {
    Status,
    /// The body as text.
    Body,
    /// A header, by case-insensitive name.
    Header(String),
    /// A value inside the JSON body; an empty path is the whole body.
    Json(Vec<PathKey>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum SaveTarget {
    Entity(Vec<PathKey>),
    Variable(String),
}

/// The encoding of an inserted value at the position of its merge field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Percent-encoded: every byte outside `A-Z a-z 0-9 - . _ ~`.
    Url,
    /// Escaped as the content of a JSON string.
    JsonString,
    /// Written as a JSON value: strings quoted, numbers digit for digit.
    JsonValue,
    /// `& < > " '` written as character references.
    Markup,
    /// Escaped as the content of a JavaScript string.
    JavaScript,
    /// Inserted unchanged.
    Raw,
}

/// A template ready to render.
#[derive(Debug, Clone, Default)]
pub struct Compiled {
    pub pieces: Vec<Piece>,
}

#[derive(Debug, Clone)]
pub enum Piece {
    Text(String),
    Field {
        expr: Expr,
        encoding: Encoding,
        span: Span,
    },
}
