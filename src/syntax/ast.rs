//! The syntax tree of a `.flow` file. Every node carries its byte span.
//!
//! The tree keeps words such as methods, payload kinds and option names as
//! written: the checker decides whether they are valid.

use crate::diagnostic::Span;

#[derive(Debug, Clone, PartialEq)]
pub struct File {
    pub header: Option<Header>,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub name: StringLit,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Let(Let),
    Step(Step),
    /// A workflow-level line such as `on error pause notify`.
    Setting(StepOption),
    Provider(ProviderBlock),
    /// `if`, `set`, `clear`, `stop`, or an `else` with no `if` before it.
    Statement(Statement),
}

/// `provider NAME { kind openai  base_url "..."  api_key "..."  model "..." }`
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderBlock {
    pub name: Ident,
    pub entries: Vec<ProviderEntry>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProviderEntry {
    pub key: Ident,
    pub value: ProviderValue,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProviderValue {
    Word(Ident),
    String(StringLit),
}

/// `llm ...`: a call to a model, with its clauses in the order written.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmAction {
    pub clauses: Vec<LlmClause>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LlmClause {
    /// `model`, `prompt`, `system` or `provider` with a string.
    Text { keyword: Ident, value: StringLit },
    /// `choices [...]` or `fallback [...]`.
    List {
        keyword: Ident,
        items: Vec<StringLit>,
        span: Span,
    },
    /// `schema { ... }`.
    Schema { fields: Vec<SchemaField>, span: Span },
    /// `-> entity.path`, `-> entity` or `-> vars.NAME`.
    Output { target: String, span: Span },
}

impl LlmClause {
    pub fn span(&self) -> Span {
        match self {
            LlmClause::Text { keyword, value } => Span::new(keyword.span.start, value.span.end),
            LlmClause::List { span, .. }
            | LlmClause::Schema { span, .. }
            | LlmClause::Output { span, .. } => *span,
        }
    }
}

/// `name: type "description"` in a schema, with `name?` for an optional field.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaField {
    pub name: Ident,
    pub optional: bool,
    pub ty: SchemaType,
    pub description: Option<StringLit>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SchemaType {
    /// `text`, `number`, `integer`, `boolean` or `date`, as written.
    Named(Ident),
    /// `"a" | "b" | "c"`.
    Enum(Vec<StringLit>, Span),
    /// `[type]`.
    List(Box<SchemaType>, Span),
    /// `{ field: type, ... }`.
    Object(Vec<SchemaField>, Span),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    pub text: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Let {
    pub name: Ident,
    /// The declared type, such as `number` in `let score: number = ...`.
    pub ty: Option<Ident>,
    /// `required`: a blank value fails the step.
    pub required: bool,
    /// `None` for `let name` with no value: the value must come from `--var`.
    pub value: Option<LetValue>,
    /// The sources after `or`, tried in order when the ones before are blank.
    pub fallbacks: Vec<LetValue>,
    /// The line the declaration starts on, which names its step.
    pub line: usize,
    pub span: Span,
}

impl Let {
    /// Whether the declaration uses only the forms resolved before the
    /// first step: no type, no `required`, no fallback, no bare merge field.
    pub fn is_simple(&self) -> bool {
        self.ty.is_none()
            && !self.required
            && self.fallbacks.is_empty()
            && !matches!(self.value, Some(Operand::Field(_)) | Some(Operand::Duration(..)))
    }
}

/// A value in a statement: a bare merge field, a string, a number, a
/// boolean or a duration.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    String(StringLit),
    /// A number literal, kept as written.
    Number(String, Span),
    Bool(bool, Span),
    /// A merge field written without quotes, standing for its value.
    Field(MergeField),
    /// A duration such as `30 days`, as written.
    Duration(String, Span),
}

/// The values a `let` may take are operands.
pub type LetValue = Operand;

impl Operand {
    pub fn span(&self) -> Span {
        match self {
            Operand::String(lit) => lit.span,
            Operand::Field(field) => field.span,
            Operand::Number(_, span) | Operand::Bool(_, span) | Operand::Duration(_, span) => *span,
        }
    }
}

/// A statement outside a step.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    If(IfBlock),
    /// An `else` block with no `if` before it, reported by the checker.
    ElseWithoutIf(Span),
    Set(SetStatement),
    Clear(ClearStatement),
    Stop(StopStatement),
}

/// `if CONDITION { ... } else { ... }`.
#[derive(Debug, Clone, PartialEq)]
pub struct IfBlock {
    /// The line the statement starts on, which names its step.
    pub line: usize,
    pub condition: Condition,
    pub then: Vec<Item>,
    /// The `else` block; `else if` is an `else` block holding one `if`.
    pub otherwise: Option<Vec<Item>>,
    /// From `if` to the end of the condition.
    pub head: Span,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Or(Vec<Condition>, Span),
    And(Vec<Condition>, Span),
    Not(Box<Condition>, Span),
    Compare {
        left: Operand,
        op: CompareOp,
        right: Operand,
        ignore_case: bool,
        span: Span,
    },
    In {
        left: Operand,
        items: Vec<Operand>,
        negated: bool,
        ignore_case: bool,
        span: Span,
    },
    Blank {
        operand: Operand,
        negated: bool,
        span: Span,
    },
    /// `llm "QUESTION" about VALUE`, with optional `model`/`provider` lines.
    Llm {
        question: StringLit,
        about: Option<Operand>,
        clauses: Vec<LlmClause>,
        span: Span,
    },
}

impl Condition {
    pub fn span(&self) -> Span {
        match self {
            Condition::Or(_, span)
            | Condition::And(_, span)
            | Condition::Not(_, span)
            | Condition::Compare { span, .. }
            | Condition::In { span, .. }
            | Condition::Blank { span, .. }
            | Condition::Llm { span, .. } => *span,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
    StartsWith,
    EndsWith,
}

impl CompareOp {
    pub fn is_ordering(self) -> bool {
        matches!(
            self,
            CompareOp::Lt | CompareOp::Le | CompareOp::Gt | CompareOp::Ge
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "==",
            CompareOp::Ne => "!=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
            CompareOp::Contains => "contains",
            CompareOp::StartsWith => "starts with",
            CompareOp::EndsWith => "ends with",
        }
    }
}

/// An operand, or arithmetic on operands.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueExpr {
    Operand(Operand),
    Binary {
        op: ArithOp,
        left: Box<ValueExpr>,
        right: Box<ValueExpr>,
        span: Span,
    },
}

impl ValueExpr {
    pub fn span(&self) -> Span {
        match self {
            ValueExpr::Operand(operand) => operand.span(),
            ValueExpr::Binary { span, .. } => *span,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl ArithOp {
    pub fn as_str(self) -> &'static str {
        match self {
            ArithOp::Add => "+",
            ArithOp::Sub => "-",
            ArithOp::Mul => "*",
            ArithOp::Div => "/",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetMode {
    Overwrite,
    OnlyIfBlank,
    Add,
}

/// `set TARGET = VALUE`, `... only if blank`, or `set TARGET add VALUE`.
#[derive(Debug, Clone, PartialEq)]
pub struct SetStatement {
    /// The line the statement starts on, which names its step.
    pub line: usize,
    pub target: String,
    pub target_span: Span,
    pub mode: SetMode,
    pub value: ValueExpr,
    pub span: Span,
}

/// `clear TARGET`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClearStatement {
    /// The line the statement starts on, which names its step.
    pub line: usize,
    pub target: String,
    pub target_span: Span,
    pub span: Span,
}

/// `stop`, or `stop failed "message"`.
#[derive(Debug, Clone, PartialEq)]
pub struct StopStatement {
    /// The line the statement starts on, which names its step.
    pub line: usize,
    pub failed: bool,
    pub message: Option<StringLit>,
    pub span: Span,
}

/// `code LANGUAGE """script"""`.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeAction {
    pub language: Ident,
    /// The script with its common indentation removed.
    pub script: String,
    /// The source offset of each line of `script`.
    pub line_starts: Vec<usize>,
    pub script_span: Span,
    pub span: Span,
}

/// `name: VALUE` in `inputs { ... }`.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeInput {
    pub name: Ident,
    pub value: ValueExpr,
    pub span: Span,
}

/// `name -> TARGET` in `outputs { ... }`.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeOutput {
    pub name: Ident,
    pub target: String,
    pub target_span: Span,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub name: String,
    /// The quoted name, or the action itself for a bare action.
    pub name_span: Span,
    /// True for an action written outside a step block.
    pub bare: bool,
    /// False when the written name holds merge fields, which names cannot.
    pub name_is_plain: bool,
    pub items: Vec<StepItem>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StepItem {
    Http(HttpAction),
    Llm(LlmAction),
    Extract(ExtractAction),
    Transcribe(TranscribeAction),
    Code(CodeAction),
    CodeInputs(Vec<CodeInput>, Span),
    CodeOutputs(Vec<CodeOutput>, Span),
    Option(StepOption),
}

/// `extract entity.FILE fields { ... } -> target`: structured extraction
/// from a document.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtractAction {
    /// The path of the field that holds the document, as written.
    pub source: String,
    pub source_span: Span,
    /// `fields { ... }`, `model`, `provider`, `prompt`, `system` and `->`,
    /// in the order written; `fields` is kept as a `Schema` clause.
    pub clauses: Vec<LlmClause>,
    pub span: Span,
}

/// `transcribe entity.FILE language "en" -> target`, with optional
/// `segments -> target` and `detected_language -> target` clauses.
#[derive(Debug, Clone, PartialEq)]
pub struct TranscribeAction {
    pub source: String,
    pub source_span: Span,
    pub clauses: Vec<TranscribeClause>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TranscribeClause {
    /// `language`, `model`, `provider` or `prompt` with a string.
    Text { keyword: Ident, value: StringLit },
    /// `-> target` for the transcript, or `segments -> target` and
    /// `detected_language -> target`, where `part` names the part.
    Output {
        part: Option<Ident>,
        target: String,
        span: Span,
    },
}

impl TranscribeClause {
    pub fn span(&self) -> Span {
        match self {
            TranscribeClause::Text { keyword, value } => Span::new(keyword.span.start, value.span.end),
            TranscribeClause::Output { part, span, .. } => {
                Span::new(part.as_ref().map_or(span.start, |part| part.span.start), span.end)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpAction {
    pub method: Ident,
    pub url: StringLit,
    /// Every payload written; more than one is reported by the checker.
    pub payloads: Vec<Payload>,
    pub headers: Vec<HeaderPair>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    pub kind: PayloadKind,
    pub body: PayloadBody,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PayloadKind {
    /// A kind keyword such as `json` or `xml`.
    Word(Ident),
    /// A media type spelled out, such as `"text/csv"`.
    MediaType(StringLit),
}

impl PayloadKind {
    pub fn span(&self) -> Span {
        match self {
            PayloadKind::Word(ident) => ident.span,
            PayloadKind::MediaType(lit) => lit.span,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PayloadBody {
    /// True for a `{ ... }` or `[ ... ]` block written without quotes.
    pub is_block: bool,
    pub template: Template,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HeaderPair {
    pub name: StringLit,
    pub value: StringLit,
    pub span: Span,
}

/// One option line of a step, kept as words for the checker to interpret.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOption {
    pub name: Ident,
    pub args: Vec<OptionArg>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OptionArg {
    /// The argument's text; for a quoted argument, its decoded content, or
    /// its content as written when it holds merge fields.
    pub text: String,
    /// The parsed content of a quoted argument.
    pub template: Option<Template>,
    pub quoted: bool,
    pub span: Span,
}

/// A string literal whose content is a template with merge fields.
#[derive(Debug, Clone, PartialEq)]
pub struct StringLit {
    pub template: Template,
    /// The literal including its quotes.
    pub span: Span,
}

impl StringLit {
    /// Returns the text when the literal holds no merge field.
    pub fn as_plain(&self) -> Option<String> {
        self.template.as_plain()
    }
}

/// Literal text and merge fields, in source order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Template {
    pub segments: Vec<Segment>,
}

impl Template {
    pub fn as_plain(&self) -> Option<String> {
        let mut text = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Text(part) => text.push_str(&part.text),
                Segment::Field(_) => return None,
            }
        }
        Some(text)
    }

    pub fn fields(&self) -> impl Iterator<Item = &MergeField> {
        self.segments.iter().filter_map(|segment| match segment {
            Segment::Field(field) => Some(field),
            Segment::Text(_) => None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    Text(TextPart),
    Field(MergeField),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TextPart {
    pub text: String,
    /// Where the text starts in the source.
    pub span: Span,
    /// True when `text` is a verbatim copy of the source at `span`, so that
    /// an offset into the text maps to `span.start + offset`.
    pub verbatim: bool,
}

/// `<<expr>>` in a template.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeField {
    pub expr: Expr,
    /// The whole field, `<<` and `>>` included.
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Path(Path),
    /// A helper call such as `default entity.name "n/a"`.
    Call(Call),
    String(String, Span),
    /// A number literal, kept as written.
    Number(String, Span),
}

impl Expr {
    pub fn span(&self) -> Span {
        match self {
            Expr::Path(path) => path.span,
            Expr::Call(call) => call.span,
            Expr::String(_, span) | Expr::Number(_, span) => *span,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub helper: Ident,
    pub args: Vec<Expr>,
    pub span: Span,
}

/// A dotted path such as `entity.items[0].sku` or `entity["first name"]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    pub root: Ident,
    pub segments: Vec<PathSegment>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PathSegment {
    pub key: PathKey,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathKey {
    Field(String),
    Index(usize),
}

impl Path {
    /// Renders the path as it is written in the canonical form.
    pub fn display(&self) -> String {
        let mut text = self.root.text.clone();
        for segment in &self.segments {
            push_path_key(&mut text, &segment.key);
        }
        text
    }
}

/// Appends one path step to `text` in canonical form: `.name`, `[0]`, or
/// `["quoted key"]` for a key that is not a plain name.
pub fn push_path_key(text: &mut String, key: &PathKey) {
    match key {
        PathKey::Index(index) => {
            text.push('[');
            text.push_str(&index.to_string());
            text.push(']');
        }
        PathKey::Field(name) if is_plain_key(name) => {
            text.push('.');
            text.push_str(name);
        }
        PathKey::Field(name) => {
            text.push('[');
            text.push_str(&serde_json::to_string(name).unwrap_or_default());
            text.push(']');
        }
    }
}

/// A key that can be written after a dot: letters, digits, `_` and `-`, not
/// starting with a digit.
pub fn is_plain_key(key: &str) -> bool {
    let mut chars = key.chars();
    match chars.next() {
        Some(first) if first.is_ascii_alphabetic() || first == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}
