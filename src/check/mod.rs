//! Checking: validates a syntax tree and lowers it into a [`Program`].
//!
//! Checking never stops at the first problem: it reports every diagnostic it
//! finds and still returns the program, which is only meant to run when no
//! diagnostic is an error.

pub mod entity;
mod fields;
mod json;
mod llm;
mod media;
pub mod names;
mod options;
mod policy;
pub mod statement;

use std::collections::HashMap;

use crate::diagnostic::{Code, Diagnostic, Span};
use crate::program::statement::VarType;
use crate::program::{
    Action, Body, Compiled, Encoding, ErrorPolicy, HeaderTemplate, Method, NotifySeverity, OnError, Piece,
    Program, ProviderConfig, Request, Step, Variable, VariableValue,
};
use crate::syntax::ast::{self, Item, LetValue, PayloadKind, StepItem};
use names::did_you_mean;

pub use fields::{EXECUTION_FIELDS, HELPERS, ROOTS};
pub use llm::BUILT_IN_PROVIDERS;

/// The default timeout of a step with an `llm` action, which is longer
/// because models respond more slowly than most APIs.
pub const LLM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A program and the problems found in it.
#[derive(Debug)]
pub struct Checked {
    pub program: Program,
    pub diagnostics: Vec<Diagnostic>,
}

/// Payload kind keywords and the Content-Type each one sends.
pub const PAYLOAD_KINDS: [(&str, &str); 5] = [
    ("json", "application/json"),
    ("xml", "application/xml"),
    ("xhtml", "application/xhtml+xml"),
    ("javascript", "application/javascript"),
    ("html", "text/html"),
];

/// Checks `file`. `default_name` names the workflow when it has no header.
pub fn check(file: &ast::File, default_name: &str) -> Checked {
    check_with_providers(file, default_name, Vec::new())
}

/// Checks `file` with providers configured outside it, in `flowrun.toml`.
pub fn check_with_providers(file: &ast::File, default_name: &str, mut extra: Vec<ProviderConfig>) -> Checked {
    let mut checker = Checker {
        provider_names: Vec::new(),
        execution_vars: Default::default(),
        url_vars: Default::default(),
        schema_depth: 0,
        diagnostics: Vec::new(),
        variables: HashMap::new(),
        variable_order: Vec::new(),
        later_variables: HashMap::new(),
        unreached_variables: Default::default(),
        program_secrets: Vec::new(),
        var_types: HashMap::new(),
        python: statement::python_available(),
    };
    let name = match &file.header {
        Some(header) => header.name.as_plain().unwrap_or_else(|| {
            checker.diagnostics.push(
                Diagnostic::error(Code::InvalidName, "a workflow name cannot hold merge fields")
                    .with_label(header.name.span, "merge field in the name")
                    .with_help("write the name as plain text"),
            );
            default_name.to_string()
        }),
        None => default_name.to_string(),
    };

    // Every `let`, also those inside `if` blocks, is declared before the
    // steps are checked. The simple ones at the top level are resolved
    // before the first step; the others are steps of their own.
    let mut lets: Vec<(&ast::Let, bool)> = Vec::new();
    statement::collect_lets(&file.items, true, &mut lets);
    let settings: Vec<&ast::StepOption> = file
        .items
        .iter()
        .filter_map(|item| match item {
            Item::Setting(setting) => Some(setting),
            _ => None,
        })
        .collect();
    for (decl, _) in &lets {
        checker
            .later_variables
            .entry(decl.name.text.clone())
            .or_insert(decl.name.span);
    }
    let variables = lets
        .iter()
        .filter_map(|(decl, simple)| {
            if *simple {
                checker.variable(decl)
            } else {
                checker.deferred_variable(decl)
            }
        })
        .collect();
    let workflow = checker.workflow_settings(&settings);
    let blocks: Vec<&ast::ProviderBlock> = file
        .items
        .iter()
        .filter_map(|item| match item {
            Item::Provider(block) => Some(block),
            _ => None,
        })
        .collect();
    let mut providers = checker.providers(&blocks);
    // A block in the workflow wins over flowrun.toml's entry of that name.
    extra.retain(|external| !providers.iter().any(|provider| provider.name == external.name));
    providers.append(&mut extra);
    checker.provider_names = BUILT_IN_PROVIDERS.iter().map(|name| name.to_string()).collect();
    for provider in &providers {
        if !checker.provider_names.contains(&provider.name) {
            checker.provider_names.push(provider.name.clone());
        }
    }
    let default_policy = ErrorPolicy {
        on_error: workflow
            .on_error
            .map_or(OnError::PauseNotify, |line| line.on_error),
        severity: workflow
            .on_error
            .and_then(|line| line.severity)
            .unwrap_or(NotifySeverity::Medium),
    };

    // A `let` step's variable may be used only below its declaration, so it
    // counts as declared once the walk over the steps reaches it.
    checker.unreached_variables = lets
        .iter()
        .filter(|(_, simple)| !simple)
        .map(|(decl, _)| decl.name.text.clone())
        .collect();
    let mut flat = statement::Flattener {
        steps: Vec::new(),
        step_names: HashMap::new(),
        default_policy,
    };
    checker.flatten(&file.items, &[], &mut flat);
    let steps = flat.steps;

    if steps.is_empty() && checker.diagnostics.is_empty() {
        checker.diagnostics.push(
            Diagnostic::warning(Code::NoSteps, "the workflow has no steps, so a run does nothing").with_help(
                "add a step, such as `step \"Ping\" { http GET \"https://api.example.test/health\" }`",
            ),
        );
    }

    checker.check_provider_uses(&steps, &providers);

    let program = Program {
        name,
        variables,
        steps,
        secrets: checker.program_secrets,
        webhooks: workflow.webhooks,
        providers,
    };
    Checked {
        program,
        diagnostics: checker.diagnostics,
    }
}

pub(crate) struct Checker {
    pub diagnostics: Vec<Diagnostic>,
    /// Provider names an `llm` action may use.
    pub provider_names: Vec<String>,
    /// Variables whose `let` reads the entity or the execution.
    pub execution_vars: std::collections::HashSet<String>,
    /// Variables whose value is a URL, or a path that continues one.
    pub url_vars: std::collections::HashSet<String>,
    /// How deep the schema being checked nests at this point.
    pub schema_depth: usize,
    /// Variables declared so far, with the span of their name.
    pub variables: HashMap<String, Span>,
    pub variable_order: Vec<String>,
    /// Every `let` in the file, to tell "declared later" from "undeclared".
    pub later_variables: HashMap<String, Span>,
    /// Variables of `let` steps that the walk over the steps has not
    /// reached yet: a use of one is a use before its declaration.
    pub unreached_variables: std::collections::HashSet<String>,
    pub program_secrets: Vec<(String, Span)>,
    /// The type of each declared variable.
    pub var_types: HashMap<String, crate::program::statement::VarType>,
    /// Whether `python3` runs here, for compiling the scripts of code steps.
    pub python: bool,
}

impl Checker {
    fn variable(&mut self, decl: &ast::Let) -> Option<Variable> {
        let name = &decl.name.text;
        let value = decl.value.as_ref().map(|value| match value {
            // A variable that contains a URL is compiled as one, so that entity
            // values in its path and query are percent-encoded like those of
            // a URL written in the request itself.
            LetValue::String(lit) if is_url_template(&lit.template, &self.url_vars) => {
                self.url_vars.insert(decl.name.text.clone());
                VariableValue::Template(self.url_template(lit, false))
            }
            LetValue::String(lit) => VariableValue::Template(self.compile(&lit.template, |_| Encoding::Raw)),
            LetValue::Number(text, _) => VariableValue::Literal(
                serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.clone())),
            ),
            LetValue::Bool(value, _) => VariableValue::Literal(serde_json::Value::Bool(*value)),
            // Only simple declarations come here, which have neither.
            LetValue::Field(_) | LetValue::Duration(..) => VariableValue::Literal(serde_json::Value::Null),
        });
        if let Some(first) = self.variables.get(name) {
            self.diagnostics.push(
                Diagnostic::error(
                    Code::DuplicateVariable,
                    format!("variable `{name}` is declared twice"),
                )
                .with_label(decl.name.span, "declared again here")
                .with_related(*first, "first declared here")
                .with_help("remove one declaration or rename it"),
            );
            return None;
        }
        self.variables.insert(name.clone(), decl.name.span);
        self.variable_order.push(name.clone());
        if let Some(LetValue::String(lit)) = &decl.value {
            if lit
                .template
                .fields()
                .any(|field| self.varies_per_execution(&field.expr))
            {
                self.execution_vars.insert(name.clone());
            }
        }
        let ty = match &decl.value {
            Some(LetValue::Number(..)) => VarType::Number,
            Some(LetValue::Bool(..)) => VarType::Boolean,
            _ => VarType::Text,
        };
        self.var_types.insert(name.clone(), ty);
        Some(Variable {
            name: name.clone(),
            needs_var: value.is_none(),
            value,
            deferred: false,
            ty: Some(ty),
            span: decl.span,
        })
    }

    fn step(&mut self, step: &ast::Step, default_policy: ErrorPolicy) -> Step {
        let mut actions: Vec<Action> = Vec::new();
        let mut option_items = Vec::new();
        for item in &step.items {
            match item {
                StepItem::Http(action) => actions.push(Action::Http(self.request(action))),
                StepItem::Llm(action) => {
                    let known = self.provider_names.clone();
                    if let Some(call) = self.llm_call(action, &known) {
                        actions.push(Action::Llm(call));
                    }
                }
                StepItem::Extract(action) => {
                    let known = self.provider_names.clone();
                    if let Some(call) = self.extract_call(action, &known) {
                        actions.push(Action::Extract(call));
                    }
                }
                StepItem::Transcribe(action) => {
                    let known = self.provider_names.clone();
                    if let Some(call) = self.transcribe_call(action, &known) {
                        actions.push(Action::Transcribe(call));
                    }
                }
                StepItem::Option(option) => option_items.push((actions.len(), option)),
                StepItem::Code(_) | StepItem::CodeInputs(..) | StepItem::CodeOutputs(..) => {}
            }
        }
        if let Some(call) = self.code_call(step) {
            actions.push(Action::Code(call));
        }
        let has_llm = step.items.iter().any(|item| {
            matches!(
                item,
                StepItem::Llm(_) | StepItem::Extract(_) | StepItem::Transcribe(_)
            )
        });
        let has_code = step.items.iter().any(|item| matches!(item, StepItem::Code(_)));
        if actions.is_empty() && !has_llm && !has_code {
            self.diagnostics.push(
                Diagnostic::error(Code::EmptyStep, format!("step \"{}\" has no action", step.name))
                    .with_label(step.name_span, "this step does nothing")
                    .with_help("add an action such as `http GET \"https://...\"`, or remove the step"),
            );
        }
        let (mut settings, on_error) = self.options(&option_items, &mut actions);
        let timeout_given = option_items
            .iter()
            .any(|(_, option)| option.name.text == "timeout");
        if has_llm && !timeout_given {
            settings.timeout = LLM_TIMEOUT;
        }
        // A step's own `on error` line replaces the workflow's behaviour; a
        // severity it does not name comes from the workflow.
        let policy = match on_error {
            Some(line) => ErrorPolicy {
                on_error: line.on_error,
                severity: line.severity.unwrap_or(default_policy.severity),
            },
            None => default_policy,
        };
        if let Some(Action::Code(call)) = actions.last_mut() {
            self.code_options(&option_items, call);
        }
        Step {
            name: step.name.clone(),
            span: step.span,
            actions,
            settings,
            policy,
            guards: Vec::new(),
        }
    }

    fn request(&mut self, action: &ast::HttpAction) -> Request {
        let method = self.method(&action.method);
        let url = self.url(&action.url);

        let mut body = None;
        for (index, payload) in action.payloads.iter().enumerate() {
            if index > 0 {
                self.diagnostics.push(
                    Diagnostic::error(Code::DuplicatePayload, "a request has at most one payload")
                        .with_label(payload.span, "second payload")
                        .with_related(action.payloads[0].span, "first payload")
                        .with_help("merge the payloads into one"),
                );
                continue;
            }
            if method == Some(Method::Get) {
                self.diagnostics.push(
                    Diagnostic::error(Code::PayloadOnGet, "a GET request cannot carry a payload")
                        .with_label(payload.span, "payload on a GET request")
                        .with_help("remove the payload, or use POST, PUT, PATCH or DELETE"),
                );
            }
            body = self.body(payload);
        }

        let headers = self.headers(action, body.as_ref());
        Request {
            method: method.unwrap_or(Method::Get),
            url,
            headers,
            body,
            saves: Vec::new(),
            span: action.span,
        }
    }

    fn method(&mut self, method: &ast::Ident) -> Option<Method> {
        if let Some(known) = Method::ALL
            .into_iter()
            .find(|known| known.as_str() == method.text)
        {
            return Some(known);
        }
        let names: Vec<&str> = Method::ALL.iter().map(|known| known.as_str()).collect();
        self.diagnostics.push(
            Diagnostic::error(
                Code::UnknownMethod,
                format!("unknown HTTP method `{}`", method.text),
            )
            .with_label(method.span, "not a supported method")
            .with_help(did_you_mean(&method.text, &names, "methods")),
        );
        None
    }

    /// Compiles a URL. Merge fields before the path (at the start of the URL,
    /// or in its scheme and host) supply a base URL and are inserted as
    /// written. Fields in the path and query are percent-encoded.
    fn url(&mut self, url: &ast::StringLit) -> Compiled {
        self.url_template(url, true)
    }

    /// Compiles a URL, or with `absolute` false also a path such as
    /// `/claims/<<entity.id>>` that a variable holds for a URL to continue.
    fn url_template(&mut self, url: &ast::StringLit, absolute: bool) -> Compiled {
        let mut encodings = Vec::new();
        let mut seen_text = String::new();
        let mut in_path = false;
        for segment in &url.template.segments {
            match segment {
                ast::Segment::Text(part) => {
                    if !in_path {
                        seen_text.push_str(&part.text);
                        in_path = url_path_started(&seen_text);
                    }
                }
                ast::Segment::Field(_) => encodings.push(if in_path { Encoding::Url } else { Encoding::Raw }),
            }
        }
        if !absolute {
            // A variable's path is checked where a request uses it.
        } else if let Some(first) = url.template.segments.first() {
            if let ast::Segment::Text(part) = first {
                let lower = part.text.to_ascii_lowercase();
                let complete = lower.starts_with("http://") || lower.starts_with("https://");
                let partial = "https://".starts_with(&lower) || "http://".starts_with(&lower);
                let followed_by_field = url.template.segments.len() > 1;
                if !(complete || partial && followed_by_field) {
                    self.diagnostics.push(
                        Diagnostic::error(Code::InvalidUrl, "a URL must start with http:// or https://")
                            .with_label(url.span, "not an absolute http(s) URL")
                            .with_help("write the full URL, or start it with a variable that holds the base URL, such as \"<<vars.api>>/path\""),
                    );
                }
            }
        } else {
            self.diagnostics.push(
                Diagnostic::error(Code::InvalidUrl, "the URL is empty")
                    .with_label(url.span, "empty URL")
                    .with_help("write an absolute URL such as \"https://api.example.test/items\""),
            );
        }
        self.compile(&url.template, |index| encodings[index])
    }

    fn body(&mut self, payload: &ast::Payload) -> Option<Body> {
        let content_type = match &payload.kind {
            PayloadKind::Word(word) => match PAYLOAD_KINDS.iter().find(|(kind, _)| *kind == word.text) {
                Some((_, content_type)) => content_type.to_string(),
                None => {
                    let kinds: Vec<&str> = PAYLOAD_KINDS.iter().map(|(kind, _)| *kind).collect();
                    let help = match names::suggest(&word.text, kinds.iter().copied()) {
                        Some(kind) => format!("did you mean `{kind}`?"),
                        None => format!(
                            "valid kinds: {}; for another type, spell out its media type in quotes, such as \"text/csv\"",
                            names::quote_list(&kinds)
                        ),
                    };
                    self.diagnostics.push(
                        Diagnostic::error(
                            Code::UnknownPayloadKind,
                            format!("unknown payload kind `{}`", word.text),
                        )
                        .with_label(word.span, "not a payload kind")
                        .with_help(help),
                    );
                    return None;
                }
            },
            PayloadKind::MediaType(lit) => {
                let text = lit.as_plain().unwrap_or_default();
                if !is_media_type(&text) {
                    self.diagnostics.push(
                        Diagnostic::error(Code::UnknownPayloadKind, format!("`{text}` is not a media type"))
                            .with_label(lit.span, "not `type/subtype`")
                            .with_help("write a media type such as \"text/csv\" or \"application/x-www-form-urlencoded\""),
                    );
                    return None;
                }
                text
            }
        };

        let kind = body_kind(&content_type);
        let is_json = kind == Encoding::JsonValue;
        if payload.body.is_block && !is_json {
            self.diagnostics.push(
                Diagnostic::error(
                    Code::PayloadBodyMismatch,
                    format!("a `{{ ... }}` block is a JSON body, but this payload sends `{content_type}`"),
                )
                .with_label(payload.body.span, "JSON block")
                .with_related(payload.kind.span(), "payload kind")
                .with_help(
                    "write the body as a string, such as \"\"\" ... \"\"\", or use a JSON payload kind",
                ),
            );
        }
        let template = &payload.body.template;
        let template = if is_json {
            match json::scan(template, payload.body.span.end) {
                Ok(encodings) => self.compile(template, |index| encodings[index]),
                Err(error) => {
                    self.diagnostics.push(
                        Diagnostic::error(Code::InvalidJsonPayload, format!("invalid JSON payload: {}", error.message))
                            .with_label(error.span, error.message)
                            .with_help("merge fields may stand for whole values, as in `\"amount\": <<entity.amount>>`, or sit inside strings"),
                    );
                    self.compile(template, |_| Encoding::Raw)
                }
            }
        } else {
            self.compile(template, |_| kind)
        };
        Some(Body {
            content_type,
            is_json,
            template,
            span: payload.span,
        })
    }

    fn headers(&mut self, action: &ast::HttpAction, body: Option<&Body>) -> Vec<HeaderTemplate> {
        let mut headers = Vec::new();
        for pair in &action.headers {
            let Some(name) = pair.name.as_plain() else {
                self.diagnostics.push(
                    Diagnostic::error(Code::InvalidHeaderName, "a header name cannot hold merge fields")
                        .with_label(pair.name.span, "merge field in a header name")
                        .with_help("write the header name as plain text; merge fields belong in the value"),
                );
                continue;
            };
            if let Some(invalid) = invalid_header_name_char(&name) {
                let what = match invalid {
                    None => "is empty".to_string(),
                    Some(' ') => "contains a space".to_string(),
                    Some('\t') => "contains a tab".to_string(),
                    Some(c) if c.is_control() => format!("contains the control character U+{:04X}", c as u32),
                    Some(c) => format!("contains `{c}`"),
                };
                self.diagnostics.push(
                    Diagnostic::error(Code::InvalidHeaderName, format!("invalid header name \"{name}\": it {what}"))
                        .with_label(pair.name.span, "invalid header name")
                        .with_help("header names use letters, digits and ! # $ % & ' * + - . ^ _ ` | ~, with no spaces or colons"),
                );
                continue;
            }
            if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("transfer-encoding") {
                self.diagnostics.push(
                    Diagnostic::error(
                        Code::InvalidHeaderName,
                        format!("flowrun sets the `{name}` header itself"),
                    )
                    .with_label(pair.name.span, "framing header")
                    .with_help("remove the header; flowrun writes the length of the body it sends"),
                );
                continue;
            }
            if name.eq_ignore_ascii_case("content-type") {
                if let Some(body) = body {
                    self.diagnostics.push(
                        Diagnostic::warning(Code::DuplicateContentType, "Content-Type is given twice")
                            .with_label(pair.span, "this header is ignored")
                            .with_related(body.span, format!("the payload kind sends `{}`", body.content_type))
                            .with_help("remove the header; to send another type, spell it out as the payload kind, such as \"application/vnd.api+json\" { ... }"),
                    );
                    continue;
                }
            }
            let literal_control = pair
                .value
                .template
                .segments
                .iter()
                .find_map(|segment| match segment {
                    ast::Segment::Text(part) => part.text.chars().find(|c| c.is_control() && *c != '\t'),
                    ast::Segment::Field(_) => None,
                });
            if let Some(c) = literal_control {
                self.diagnostics.push(
                    Diagnostic::error(
                        Code::InvalidHeaderValue,
                        format!("header `{name}` contains the control character U+{:04X}", c as u32),
                    )
                    .with_label(pair.value.span, "not allowed in a header value")
                    .with_help("header values hold visible characters, spaces and tabs; remove the escape such as \\n"),
                );
                continue;
            }
            let value = self.compile(&pair.value.template, |_| Encoding::Raw);
            headers.push(HeaderTemplate {
                name,
                value,
                span: pair.span,
            });
        }
        headers
    }
}

/// Reports whether a `let` template is a URL or a URL path. Such a template
/// starts with `http://`, `https://` or `/`, or with a URL variable followed
/// by `/` or `?`, as in `"<<vars.api>>/claims/<<entity.id>>"`.
fn is_url_template(template: &ast::Template, url_vars: &std::collections::HashSet<String>) -> bool {
    match template.segments.as_slice() {
        [ast::Segment::Text(part), ..] => {
            let lower = part.text.to_ascii_lowercase();
            lower.starts_with("http://") || lower.starts_with("https://") || lower.starts_with('/')
        }
        [ast::Segment::Field(field), ast::Segment::Text(next), ..] => {
            let names_url_var = matches!(&field.expr, ast::Expr::Path(path)
                if path.root.text == "vars"
                    && matches!(path.segments.first().map(|segment| &segment.key),
                        Some(ast::PathKey::Field(name)) if url_vars.contains(name)));
            names_url_var && next.text.starts_with(['/', '?'])
        }
        _ => false,
    }
}

/// Reports whether the URL text seen so far has reached the path, which
/// starts after `scheme://host`, or at a `/`, `?` or `#` without a scheme.
fn url_path_started(text: &str) -> bool {
    let after_scheme = match text.find("://") {
        Some(index) => &text[index + 3..],
        None => text,
    };
    after_scheme.contains(['/', '?', '#'])
}

/// Returns `Some(None)` for an empty name, `Some(Some(c))` for the first
/// character not allowed in a header name, or `None` when the name is valid.
fn invalid_header_name_char(name: &str) -> Option<Option<char>> {
    if name.is_empty() {
        return Some(None);
    }
    name.chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(*c)))
        .map(Some)
}

/// Selects how merge fields are encoded in a body of this media type: JSON
/// for `application/json` and `+json` types, markup escaping for XML and
/// HTML types, JavaScript escaping for JavaScript, and unchanged otherwise.
/// `JsonValue` means a JSON body, whose fields are encoded by position.
fn body_kind(content_type: &str) -> Encoding {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Encoding::JsonValue,
        _ if essence.ends_with("+json") => Encoding::JsonValue,
        "application/xml" | "text/xml" | "text/html" | "application/xhtml+xml" => Encoding::Markup,
        _ if essence.ends_with("+xml") => Encoding::Markup,
        "application/javascript" | "text/javascript" | "application/ecmascript" => Encoding::JavaScript,
        _ => Encoding::Raw,
    }
}

fn is_media_type(text: &str) -> bool {
    let essence = text.split(';').next().unwrap_or("").trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    let token = |part: &str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$&-^_.+".contains(c))
    };
    token(kind) && token(subtype) && !text.chars().any(|c| c.is_control() && c != '\t')
}

/// Returns the text pieces of a compiled template joined, or `None` when it
/// contains a merge field.
pub fn plain_text(compiled: &Compiled) -> Option<String> {
    let mut text = String::new();
    for piece in &compiled.pieces {
        match piece {
            Piece::Text(part) => text.push_str(part),
            Piece::Field { .. } => return None,
        }
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_path_detection() {
        assert!(!url_path_started("https://"));
        assert!(!url_path_started("https://api.test:8080"));
        assert!(url_path_started("https://api.test/"));
        assert!(url_path_started("/claims/"));
        assert!(url_path_started("?id="));
    }

    #[test]
    fn media_types() {
        assert!(is_media_type("text/csv"));
        assert!(is_media_type("application/vnd.api+json; charset=utf-8"));
        assert!(!is_media_type("csv"));
        assert!(!is_media_type("text/"));
        assert!(!is_media_type("text /csv"));
        assert!(!is_media_type("text/csv; charset=\u{1}utf-8"));
        assert!(!is_media_type("text/csv;\r\n charset=utf-8"));
        assert!(is_media_type("text/csv;\tcharset=utf-8"));
    }

    #[test]
    fn header_names() {
        assert_eq!(invalid_header_name_char("X-Request-Id"), None);
        assert_eq!(invalid_header_name_char(""), Some(None));
        assert_eq!(invalid_header_name_char("X Id"), Some(Some(' ')));
        assert_eq!(invalid_header_name_char("X:Id"), Some(Some(':')));
    }
}
