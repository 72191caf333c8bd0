//! `llm` actions, their schemas, and `provider` blocks.

use crate::check::names::did_you_mean;
use crate::check::Checker;
use crate::diagnostic::{Code, Diagnostic, Span};
use crate::llm::schema::{Field, FieldType};
use crate::llm::ProviderKind;
use crate::program::{Compiled, Encoding, LlmCall, LlmOutput, LlmTarget, ProviderConfig};
use crate::syntax::ast::{
    Expr, LlmAction, LlmClause, PathKey, ProviderBlock, ProviderValue, SchemaField, SchemaType, StringLit,
};
use crate::syntax::template;

/// Providers available to every workflow, configured from environment variables.
pub const BUILT_IN_PROVIDERS: [&str; 2] = ["openai", "anthropic"];

const PROVIDER_KEYS: [&str; 5] = ["kind", "base_url", "api_key", "model", "vision"];
const PROVIDER_KINDS: [&str; 2] = ["openai", "anthropic"];
const FIELD_TYPES: [&str; 5] = ["text", "number", "integer", "boolean", "date"];

/// Schemas nested deeper than this are rejected, which also keeps the
/// recursive schema code far from the end of the stack.
const MAX_SCHEMA_DEPTH: usize = 32;

impl Checker {
    /// Reads the `provider` blocks of a file.
    pub(crate) fn providers(&mut self, blocks: &[&ProviderBlock]) -> Vec<ProviderConfig> {
        let mut providers: Vec<ProviderConfig> = Vec::new();
        let mut spans: Vec<Span> = Vec::new();
        for block in blocks {
            let name = block.name.text.clone();
            if let Some(index) = providers.iter().position(|provider| provider.name == name) {
                self.diagnostics.push(
                    Diagnostic::error(
                        Code::InvalidProvider,
                        format!("provider `{name}` is declared twice"),
                    )
                    .with_label(block.name.span, "declared again here")
                    .with_related(spans[index], "first declared here")
                    .with_help("keep one block per provider name"),
                );
                continue;
            }
            let mut config = ProviderConfig {
                kind: if name == "anthropic" {
                    ProviderKind::Anthropic
                } else {
                    ProviderKind::OpenAi
                },
                name,
                base_url: None,
                api_key: None,
                model: None,
                vision: false,
            };
            for entry in &block.entries {
                let key = entry.key.text.as_str();
                match (key, &entry.value) {
                    ("kind", ProviderValue::Word(word)) => match word.text.as_str() {
                        "openai" => config.kind = ProviderKind::OpenAi,
                        "anthropic" => config.kind = ProviderKind::Anthropic,
                        other => self.diagnostics.push(
                            Diagnostic::error(Code::InvalidProvider, format!("unknown provider kind `{other}`"))
                                .with_label(word.span, "not a provider kind")
                                .with_help(format!(
                                    "{} `openai` covers every server that speaks OpenAI chat completions",
                                    did_you_mean(other, &PROVIDER_KINDS, "kinds")
                                )),
                        ),
                    },
                    ("base_url", ProviderValue::String(value)) => {
                        config.base_url = Some(self.provider_template(value));
                    }
                    ("api_key", ProviderValue::String(value)) => {
                        if value.as_plain().is_some_and(|text| !text.is_empty()) {
                            self.diagnostics.push(
                                Diagnostic::error(Code::InvalidProvider, "an API key must not be written into the workflow")
                                    .with_label(value.span, "a key in plain text")
                                    .with_help("write `api_key \"<<secret.NAME>>\"` and set FLOWRUN_SECRET_NAME"),
                            );
                            continue;
                        }
                        let only_secrets = value.template.fields().all(|field| {
                            matches!(&field.expr, Expr::Path(path) if path.root.text == "secret")
                        });
                        if !only_secrets {
                            self.diagnostics.push(
                                Diagnostic::error(Code::InvalidProvider, "an API key may use only `<<secret.NAME>>`")
                                    .with_label(value.span, "not a secret")
                                    .with_help("write `api_key \"<<secret.NAME>>\"`, so that flowrun hides the key in everything it prints"),
                            );
                            continue;
                        }
                        config.api_key = Some(self.provider_template(value));
                    }
                    ("vision", ProviderValue::Word(word)) if word.text == "true" || word.text == "false" => {
                        config.vision = word.text == "true";
                    }
                    ("model", ProviderValue::String(value)) => match value.as_plain() {
                        Some(model) => config.model = Some(model),
                        None => self.plain_text_required(value, "a model name"),
                    },
                    (key, _) if PROVIDER_KEYS.contains(&key) => self.diagnostics.push(
                        Diagnostic::error(Code::InvalidProvider, format!("invalid value for `{key}`"))
                            .with_label(entry.span, "wrong kind of value")
                            .with_help("write `kind openai`, `base_url \"...\"`, `api_key \"<<secret.NAME>>\"`, `model \"...\"` or `vision true`"),
                    ),
                    (key, _) => self.diagnostics.push(
                        Diagnostic::error(Code::InvalidProvider, format!("unknown provider setting `{key}`"))
                            .with_label(entry.key.span, "not a provider setting")
                            .with_help(did_you_mean(key, &PROVIDER_KEYS, "settings")),
                    ),
                }
            }
            spans.push(block.name.span);
            providers.push(config);
        }
        providers
    }

    /// Compiles a provider's URL or key, which may use variables and secrets only.
    fn provider_template(&mut self, value: &StringLit) -> Compiled {
        for field in value.template.fields() {
            if self.varies_per_execution(&field.expr) {
                {
                    self.diagnostics.push(
                        Diagnostic::error(
                            Code::InvalidProvider,
                            "a provider setting may use only `vars` and `secret`",
                        )
                        .with_label(field.span, "differs per execution")
                        .with_help("a provider is the same for every execution; use a variable or a secret"),
                    );
                }
            }
        }
        self.compile(&value.template, |_| Encoding::Raw)
    }

    fn plain_text_required(&mut self, value: &StringLit, what: &str) {
        self.diagnostics.push(
            Diagnostic::error(Code::InvalidLlm, format!("{what} cannot hold merge fields"))
                .with_label(value.span, "merge field here")
                .with_help(format!("write {what} as plain text")),
        );
    }

    /// Checks an `llm` action and compiles it. `known_providers` are the
    /// names a step may use.
    pub(crate) fn llm_call(&mut self, action: &LlmAction, known_providers: &[String]) -> Option<LlmCall> {
        let mut prompt = None;
        let mut system = None;
        let mut model = None;
        let mut provider = None;
        let mut fallback = Vec::new();
        let mut output = LlmOutput::Text;
        let mut output_span: Option<Span> = None;
        let mut target = None;
        let mut seen: Vec<(String, Span)> = Vec::new();

        for clause in &action.clauses {
            let keyword = match clause {
                LlmClause::Text { keyword, .. } | LlmClause::List { keyword, .. } => keyword.text.clone(),
                LlmClause::Schema { .. } => "schema".to_string(),
                LlmClause::Output { .. } => "->".to_string(),
            };
            if let Some((_, first)) = seen.iter().find(|(name, _)| *name == keyword) {
                self.diagnostics.push(
                    Diagnostic::error(
                        Code::InvalidLlm,
                        format!("`{keyword}` is given twice in one `llm` action"),
                    )
                    .with_label(clause.span(), "given again here")
                    .with_related(*first, "first given here")
                    .with_help("keep one of the two"),
                );
                continue;
            }
            seen.push((keyword.clone(), clause.span()));

            match clause {
                LlmClause::Text { keyword, value } => match keyword.text.as_str() {
                    "prompt" => prompt = Some(self.compile(&value.template, |_| Encoding::Raw)),
                    "system" => system = Some(self.compile(&value.template, |_| Encoding::Raw)),
                    "model" => match value.as_plain() {
                        Some(text) if !text.trim().is_empty() => model = Some(text),
                        Some(_) => self.plain_text_required(value, "a non-empty model name"),
                        None => self.plain_text_required(value, "a model name"),
                    },
                    "provider" => match value.as_plain() {
                        Some(name) => {
                            self.check_provider_name(&name, value.span, known_providers);
                            provider = Some(name);
                        }
                        None => self.plain_text_required(value, "a provider name"),
                    },
                    other => unreachable!("Checker::llm_call: the grammar allows no keyword `{other}`"),
                },
                LlmClause::List { keyword, items, span } => {
                    let mut values = Vec::new();
                    for item in items {
                        match item.as_plain() {
                            Some(text) if !text.trim().is_empty() => values.push(text),
                            Some(_) => self.plain_text_required(item, "a non-empty entry"),
                            None => self.plain_text_required(item, "a list entry"),
                        }
                    }
                    if keyword.text == "fallback" {
                        fallback = values;
                        continue;
                    }
                    if values.is_empty() {
                        self.diagnostics.push(
                            Diagnostic::error(Code::InvalidLlm, "`choices` needs at least one choice")
                                .with_label(*span, "no choices")
                                .with_help(
                                    "write the allowed answers, such as `choices [\"auto\", \"property\"]`",
                                ),
                        );
                        continue;
                    }
                    if let Some(first) = output_span {
                        self.both_choices_and_schema(*span, first);
                        continue;
                    }
                    output_span = Some(*span);
                    output = LlmOutput::Choices(values);
                }
                LlmClause::Schema { fields, span } => {
                    if let Some(first) = output_span {
                        self.both_choices_and_schema(*span, first);
                        continue;
                    }
                    output_span = Some(*span);
                    if fields.is_empty() {
                        self.diagnostics.push(
                            Diagnostic::error(Code::InvalidSchema, "a schema needs at least one field")
                                .with_label(*span, "no fields")
                                .with_help(
                                    "declare fields such as `schema { flagged: boolean, reasons: [text] }`",
                                ),
                        );
                        continue;
                    }
                    output = LlmOutput::Schema(self.schema_fields(fields));
                }
                LlmClause::Output { target: text, span } => {
                    target = self.llm_target(text, *span);
                }
            }
        }

        if let (Some(LlmTarget::EntityMembers), false) = (&target, matches!(output, LlmOutput::Schema(_))) {
            self.diagnostics.push(
                Diagnostic::error(
                    Code::InvalidLlm,
                    "`-> entity` spreads the members of a schema answer",
                )
                .with_label(action.span, "this action has no schema")
                .with_help(
                    "write the answer to one field, such as `-> entity.summary`, or declare a `schema`",
                ),
            );
        }

        let Some(prompt) = prompt else {
            self.diagnostics.push(
                Diagnostic::error(Code::InvalidLlm, "an `llm` action needs a `prompt`")
                    .with_label(action.span, "no prompt")
                    .with_help(
                        "write `llm prompt \"...\"`, or `llm prompt \"\"\"` for a prompt over several lines",
                    ),
            );
            return None;
        };
        Some(LlmCall {
            provider,
            model,
            fallback,
            prompt,
            system,
            output,
            target,
            span: action.span,
        })
    }

    /// Checks the settings of the providers that `llm` actions use: each
    /// variable they read must be declared, and each secret they read is
    /// required like a secret of the workflow.
    pub(crate) fn check_provider_uses(
        &mut self,
        steps: &[crate::program::Step],
        providers: &[ProviderConfig],
    ) {
        for step in steps {
            // The model calls of each action, LLM conditions included.
            let uses = step
                .actions
                .iter()
                .flat_map(|action| -> Vec<(&Option<String>, Span)> {
                    match action {
                        crate::program::Action::Extract(call) => vec![(&call.provider, call.span)],
                        crate::program::Action::Transcribe(call) => vec![(&call.provider, call.span)],
                        other => other
                            .llm_calls()
                            .into_iter()
                            .map(|call| (&call.provider, call.span))
                            .collect(),
                    }
                });
            for (provider, span) in uses {
                let name = match provider {
                    Some(name) => name.as_str(),
                    None if providers.len() == 1 => providers[0].name.as_str(),
                    None => continue,
                };
                let Some(provider) = providers.iter().find(|provider| provider.name == name) else {
                    continue;
                };
                let templates = provider.base_url.iter().chain(provider.api_key.iter());
                for piece in templates.flat_map(|template| template.pieces.iter()) {
                    let crate::program::Piece::Field {
                        expr: Expr::Path(path),
                        ..
                    } = piece
                    else {
                        continue;
                    };
                    let Some(PathKey::Field(key)) = path.segments.first().map(|segment| &segment.key) else {
                        continue;
                    };
                    match path.root.text.as_str() {
                        "vars" if !self.variables.contains_key(key) => self.diagnostics.push(
                            Diagnostic::error(
                                Code::UnknownVariable,
                                format!("provider `{name}` reads `vars.{key}`, which this workflow does not declare"),
                            )
                            .with_label(span, "this action uses the provider")
                            .with_help(format!("declare it with `let {key} = \"...\"`")),
                        ),
                        "secret" if !self.program_secrets.iter().any(|(known, _)| known == key) => {
                            self.program_secrets.push((key.clone(), span));
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    pub(crate) fn check_provider_name(&mut self, name: &str, span: Span, known: &[String]) {
        if known.iter().any(|known| known == name) {
            return;
        }
        let names: Vec<&str> = known.iter().map(String::as_str).collect();
        self.diagnostics.push(
            Diagnostic::error(
                Code::UnknownProvider,
                format!("no provider named `{name}` is configured"),
            )
            .with_label(span, "unknown provider")
            .with_help(format!(
                "{} Declare it with `provider {name} {{ ... }}` or in flowrun.toml.",
                did_you_mean(name, &names, "providers")
            )),
        );
    }

    fn both_choices_and_schema(&mut self, span: Span, first: Span) {
        self.diagnostics.push(
            Diagnostic::error(
                Code::InvalidLlm,
                "an `llm` action has `choices` or a `schema`, not both",
            )
            .with_label(span, "second output form")
            .with_related(first, "first output form")
            .with_help("for a classification with more fields, declare a schema with an enum field"),
        );
    }

    pub(super) fn llm_target(&mut self, text: &str, span: Span) -> Option<LlmTarget> {
        let mut diagnostics = Vec::new();
        let expr = template::parse_expression(text, span.start, span, &mut diagnostics);
        let path = match expr {
            Some(Expr::Path(path)) => path,
            _ => {
                self.invalid_target(text, span);
                return None;
            }
        };
        let keys: Vec<PathKey> = path.segments.iter().map(|segment| segment.key.clone()).collect();
        match (path.root.text.as_str(), keys.as_slice()) {
            ("entity", []) => Some(LlmTarget::EntityMembers),
            ("entity", _) => Some(LlmTarget::Entity(keys)),
            ("vars", [PathKey::Field(name)]) => {
                self.check_variable_use(&path);
                Some(LlmTarget::Variable(name.clone()))
            }
            _ => {
                self.invalid_target(text, span);
                None
            }
        }
    }

    fn invalid_target(&mut self, text: &str, span: Span) {
        self.diagnostics.push(
            Diagnostic::error(Code::InvalidLlm, format!("cannot write the answer to `{text}`"))
                .with_label(span, "not a target")
                .with_help(
                    "write `-> entity.FIELD`, `-> entity` to spread a schema answer, or `-> vars.NAME`",
                ),
        );
    }

    pub(super) fn schema_fields(&mut self, fields: &[SchemaField]) -> Vec<Field> {
        let mut seen: Vec<(String, Span)> = Vec::new();
        let mut result = Vec::new();
        for field in fields {
            let name = field.name.text.clone();
            if let Some((_, first)) = seen.iter().find(|(known, _)| *known == name) {
                self.diagnostics.push(
                    Diagnostic::error(Code::InvalidSchema, format!("field `{name}` is declared twice"))
                        .with_label(field.name.span, "declared again here")
                        .with_related(*first, "first declared here")
                        .with_help("give each field its own name"),
                );
                continue;
            }
            seen.push((name.clone(), field.name.span));
            let Some(ty) = self.schema_type(&field.ty) else {
                continue;
            };
            let description = match &field.description {
                Some(lit) => match lit.as_plain() {
                    Some(text) => Some(text),
                    None => {
                        self.plain_text_required(lit, "a field description");
                        None
                    }
                },
                None => None,
            };
            result.push(Field {
                name,
                ty,
                description,
                optional: field.optional,
            });
        }
        result
    }

    fn schema_type(&mut self, ty: &SchemaType) -> Option<FieldType> {
        let span = match ty {
            SchemaType::Named(ident) => ident.span,
            SchemaType::Enum(_, span) | SchemaType::List(_, span) | SchemaType::Object(_, span) => *span,
        };
        if self.schema_depth >= MAX_SCHEMA_DEPTH {
            self.diagnostics.push(
                Diagnostic::error(
                    Code::InvalidSchema,
                    format!("a schema nests more than {MAX_SCHEMA_DEPTH} levels"),
                )
                .with_label(span, "too deep")
                .with_help("flatten the schema; models answer shallow schemas more reliably"),
            );
            return None;
        }
        self.schema_depth += 1;
        let result = self.schema_type_inner(ty);
        self.schema_depth -= 1;
        result
    }

    fn schema_type_inner(&mut self, ty: &SchemaType) -> Option<FieldType> {
        match ty {
            SchemaType::Named(ident) => match ident.text.as_str() {
                "text" => Some(FieldType::Text),
                "number" => Some(FieldType::Number),
                "integer" => Some(FieldType::Integer),
                "boolean" => Some(FieldType::Boolean),
                "date" => Some(FieldType::Date),
                other => {
                    self.diagnostics.push(
                        Diagnostic::error(Code::InvalidSchema, format!("unknown field type `{other}`"))
                            .with_label(ident.span, "not a type")
                            .with_help(match crate::check::names::suggest(other, FIELD_TYPES) {
                                Some(known) => format!("did you mean `{known}`?"),
                                None => "types are text, number, integer, boolean, date, \"a\" | \"b\" enumerations, [type] lists and { ... } objects".to_string(),
                            }),
                    );
                    None
                }
            },
            SchemaType::Enum(items, span) => {
                let mut values = Vec::new();
                for item in items {
                    match item.as_plain() {
                        Some(text) if !values.contains(&text) => values.push(text),
                        Some(text) => self.diagnostics.push(
                            Diagnostic::error(Code::InvalidSchema, format!("\"{text}\" is listed twice"))
                                .with_label(item.span, "repeated value")
                                .with_help("list each value once"),
                        ),
                        None => self.plain_text_required(item, "an enumeration value"),
                    }
                }
                if values.is_empty() {
                    self.diagnostics.push(
                        Diagnostic::error(Code::InvalidSchema, "an enumeration needs at least one value")
                            .with_label(*span, "no values"),
                    );
                    return None;
                }
                Some(FieldType::Enum(values))
            }
            SchemaType::List(item, _) => self.schema_type(item).map(|item| FieldType::List(Box::new(item))),
            SchemaType::Object(fields, span) => {
                if fields.is_empty() {
                    self.diagnostics.push(
                        Diagnostic::error(Code::InvalidSchema, "an object type needs at least one field")
                            .with_label(*span, "no fields"),
                    );
                    return None;
                }
                Some(FieldType::Object(self.schema_fields(fields)))
            }
        }
    }
}
