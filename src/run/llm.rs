//! Runs an `llm` action: resolves its provider, renders the prompt, calls
//! the model with the retry rules of HTTP steps, validates the answer and
//! writes it to the entity or a variable.

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use serde_json::Value;
use tracing::{info, warn};

use crate::diagnostic::{Code, Diagnostic, LineIndex};
use crate::llm::{
    self, schema, ChatRequest, Completion, FinishReason, Message, ProviderKind, Role, StructuredOutput,
};
use crate::program::{LlmCall, LlmOutput, LlmTarget, Program, Settings, Step};
use crate::render;
use crate::run::errors::{failure_diagnostic_for, render_diagnostic};
use crate::run::http::{self, Http, Outgoing};
use crate::run::report::{Attempt, LlmUsage, RenderedRequest};
use crate::run::save::set_path;
use crate::run::Execution;

/// Environment variables that configure the built-in providers.
pub const PROVIDER_ENV: [&str; 9] = [
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "FLOWRUN_OPENAI_MODEL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "FLOWRUN_ANTHROPIC_MODEL",
    "FLOWRUN_LLM_PROVIDER",
    "FLOWRUN_LLM_MODEL",
    "FLOWRUN_TRANSCRIBE_MODEL",
];

/// A provider ready to call.
#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: String,
    pub api_key: Option<String>,
    pub model: Option<String>,
    /// True when the model reads images.
    pub vision: bool,
}

/// The parts of a step that one model call uses.
pub(crate) struct CallContext<'a> {
    pub program: &'a Program,
    pub step: &'a Step,
    pub action: usize,
    pub http: &'a Http,
    pub sleeper: &'a dyn crate::run::retry::Sleeper,
    pub lines: &'a LineIndex<'a>,
    pub dry_run: bool,
}

/// Picks the provider of a call: the one it names, else `FLOWRUN_LLM_PROVIDER`,
/// else the workflow's only declared provider, else `openai`.
pub fn resolve_provider(
    program: &Program,
    name: Option<&str>,
    execution: &Execution,
) -> Result<Provider, String> {
    let env = &execution.env;
    let declared: Vec<&str> = program
        .providers
        .iter()
        .map(|provider| provider.name.as_str())
        .collect();
    let name = match name {
        Some(name) => name.to_string(),
        None => match env.get("FLOWRUN_LLM_PROVIDER") {
            Some(name) => name.clone(),
            None if declared.len() == 1 => declared[0].to_string(),
            None => "openai".to_string(),
        },
    };
    let scope = execution.scope();
    let render = |template: &crate::program::Compiled| {
        render::render(template, &scope).map_err(|error| match error {
            render::RenderError::Missing { full, .. } => {
                format!("provider `{name}` uses `{full}`, which has no value")
            }
            render::RenderError::Helper { message, .. } => format!("provider `{name}`: {message}"),
        })
    };
    let config = program.providers.iter().find(|provider| provider.name == name);
    let kind = match config {
        Some(config) => config.kind,
        None if name == "anthropic" => ProviderKind::Anthropic,
        None if name == "openai" => ProviderKind::OpenAi,
        None => return Err(format!("no provider named `{name}` is configured")),
    };
    let (key_env, url_env, model_env, default_url) = match kind {
        ProviderKind::OpenAi => (
            "OPENAI_API_KEY",
            "OPENAI_BASE_URL",
            "FLOWRUN_OPENAI_MODEL",
            llm::openai::DEFAULT_BASE_URL,
        ),
        ProviderKind::Anthropic => (
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_BASE_URL",
            "FLOWRUN_ANTHROPIC_MODEL",
            llm::anthropic::DEFAULT_BASE_URL,
        ),
    };
    // Environment variables configure a provider only where the workflow
    // leaves a setting open, and only the built-in provider of that name.
    let built_in = name == "openai" || name == "anthropic";
    let from_env = |variable: &str| {
        if built_in {
            env.get(variable).cloned()
        } else {
            None
        }
    };
    let base_url = match config.and_then(|config| config.base_url.as_ref()) {
        Some(template) => render(template)?,
        None => from_env(url_env).unwrap_or_else(|| default_url.to_string()),
    };
    let api_key = match config.and_then(|config| config.api_key.as_ref()) {
        Some(template) => Some(render(template)?),
        None => from_env(key_env),
    };
    let model = config
        .and_then(|config| config.model.clone())
        .or_else(|| from_env(model_env))
        .or_else(|| env.get("FLOWRUN_LLM_MODEL").cloned());
    Ok(Provider {
        name,
        kind,
        base_url,
        api_key,
        model,
        vision: config.is_some_and(|config| config.vision),
    })
}

/// Runs one `llm` action and writes its answer. Attempts and token usage
/// are added to `attempts` and `usage`.
pub(crate) async fn run(
    call: &LlmCall,
    context: &CallContext<'_>,
    execution: &mut Execution,
    attempts: &mut Vec<Attempt>,
    usage: &mut Vec<LlmUsage>,
    dry_run: &mut Vec<RenderedRequest>,
) -> Result<(), Diagnostic> {
    let fail = |code: Code, message: String, help: &str| {
        Diagnostic::error(code, message)
            .with_label(call.span, "this llm action")
            .with_help(help.to_string())
    };
    let rendered_prompt = render_prompts(call, execution, context.lines);
    let (prompt, system) = match rendered_prompt {
        Ok(rendered) => rendered,
        Err(diagnostic) => {
            if context.dry_run {
                dry_run.push(RenderedRequest {
                    step: context.step.name.clone(),
                    method: "POST".to_string(),
                    url: String::new(),
                    headers: Vec::new(),
                    body: None,
                    error: Some(diagnostic.message.clone()),
                });
                write_placeholder(call, execution);
            }
            return Err(diagnostic);
        }
    };

    // A fallback `PROVIDER/MODEL` names a provider only when the part before
    // the slash is one; model names such as `meta-llama/Llama-3-8b` have
    // slashes of their own.
    let known_provider = |name: &str| {
        crate::check::BUILT_IN_PROVIDERS.contains(&name)
            || context
                .program
                .providers
                .iter()
                .any(|provider| provider.name == name)
    };
    let mut candidates = vec![(call.provider.clone(), call.model.clone())];
    for entry in &call.fallback {
        match entry.split_once('/') {
            Some((provider, model)) if known_provider(provider) => {
                candidates.push((Some(provider.to_string()), Some(model.to_string())))
            }
            _ => candidates.push((call.provider.clone(), Some(entry.clone()))),
        }
    }

    let params = &context.step.settings.llm;
    let structured = match &call.output {
        LlmOutput::Text => None,
        LlmOutput::Choices(choices) => Some(StructuredOutput {
            name: "choice".to_string(),
            schema: schema::choices_schema(choices),
        }),
        LlmOutput::Schema(fields) => Some(StructuredOutput {
            name: "answer".to_string(),
            schema: schema::object_schema(fields),
        }),
    };

    let mut last_failure = None;
    for (index, (provider_name, model)) in candidates.iter().enumerate() {
        let provider =
            resolve_provider(context.program, provider_name.as_deref(), execution).map_err(|message| {
                fail(
                    Code::LlmFailed,
                    message,
                    "configure the provider in the workflow, flowrun.toml or the environment",
                )
            })?;
        let Some(model) = model.clone().or_else(|| provider.model.clone()) else {
            return Err(fail(
                Code::LlmFailed,
                format!("no model is set for provider `{}`", provider.name),
                "write `llm model \"NAME\" prompt ...`, set `model` in the provider, or set FLOWRUN_OPENAI_MODEL, FLOWRUN_ANTHROPIC_MODEL or FLOWRUN_LLM_MODEL",
            ));
        };
        let mut request = ChatRequest {
            model: model.clone(),
            system: system.clone(),
            messages: vec![Message {
                role: Role::User,
                content: prompt.clone(),
            }],
            max_tokens: params.max_tokens,
            temperature: params.temperature,
            top_p: params.top_p,
            seed: params.seed,
            structured: structured.clone(),
            images: Vec::new(),
        };
        if context.dry_run {
            let outgoing = outgoing(&provider, &request, execution)?;
            dry_run.push(crate::run::request::rendered(
                context.step,
                &outgoing,
                &execution.redactor,
            ));
            write_placeholder(call, execution);
            return Ok(());
        }

        let completion = match complete(&provider, &request, context, execution, attempts, usage).await {
            Ok(completion) => completion,
            Err(diagnostic) => {
                if index + 1 < candidates.len() {
                    warn!(step = %context.step.name, "model `{model}` failed; trying the next fallback: {}", diagnostic.message);
                }
                last_failure = Some(diagnostic);
                continue;
            }
        };
        check_finish(&completion, call)?;
        // A secret the model repeats must not reach the entity or the store.
        let answer_text = execution.redactor.redact(&completion.text);

        let answer = match interpret(&call.output, &answer_text) {
            Ok(answer) => answer,
            Err(problem) if params.repair && call.output != LlmOutput::Text => {
                warn!(step = %context.step.name, "the answer is invalid ({problem}); asking the model to repair it");
                request.messages.push(Message {
                    role: Role::Assistant,
                    content: shorten(&answer_text),
                });
                request.messages.push(Message {
                    role: Role::User,
                    content: format!(
                        "Your answer is invalid: {problem}. Answer again with only JSON that follows the schema."
                    ),
                });
                let repaired = complete(&provider, &request, context, execution, attempts, usage).await?;
                check_finish(&repaired, call)?;
                interpret(&call.output, &execution.redactor.redact(&repaired.text)).map_err(|problem| {
                    fail(
                        Code::LlmInvalidOutput,
                        format!(
                            "the model's answer is still invalid after one repair: {}",
                            execution.redactor.redact(&problem)
                        ),
                        "make the prompt clearer, or use a model that supports structured output",
                    )
                })?
            }
            Err(problem) => {
                return Err(fail(
                    Code::LlmInvalidOutput,
                    format!(
                        "the model's answer is invalid: {}",
                        execution.redactor.redact(&problem)
                    ),
                    "make the prompt clearer, or let flowrun ask for a repair with `repair on`",
                ))
            }
        };
        let answer = execution.redact_value(answer);
        write_answer(call, answer, execution)
            .map_err(|message| fail(Code::SaveFailed, message, "check the target of `->`"))?;
        return Ok(());
    }
    Err(last_failure.unwrap_or_else(|| {
        fail(
            Code::LlmFailed,
            "no model could be called".to_string(),
            "configure a provider",
        )
    }))
}

/// Renders the prompt and the system prompt of a call.
fn render_prompts(
    call: &LlmCall,
    execution: &Execution,
    lines: &LineIndex<'_>,
) -> Result<(String, Option<String>), Diagnostic> {
    let scope = execution.scope();
    let render = |template| {
        render::render(template, &scope)
            .map_err(|error| render_diagnostic(&error, lines, &execution.redactor))
    };
    let prompt = render(&call.prompt)?;
    let system = call.system.as_ref().map(render).transpose()?;
    Ok((prompt, system))
}

/// The longest part of a model's answer that messages and repair requests
/// repeat, so that a huge invalid answer is not echoed in full.
const ECHO_LIMIT: usize = 2_000;

fn shorten(text: &str) -> String {
    if text.len() <= ECHO_LIMIT {
        return text.to_string();
    }
    let mut end = ECHO_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

fn check_finish(completion: &Completion, call: &LlmCall) -> Result<(), Diagnostic> {
    let fail = |code: Code, message: String, help: &str| {
        Err(Diagnostic::error(code, message)
            .with_label(call.span, "this llm action")
            .with_help(help.to_string()))
    };
    match completion.finish {
        FinishReason::Length => fail(
            Code::LlmTruncated,
            format!(
                "the answer of model `{}` was cut at its token limit ({} tokens); nothing was written",
                completion.model, completion.usage.completion_tokens
            ),
            "raise the limit with a line such as `max_tokens 1000`, or ask for a shorter answer",
        ),
        FinishReason::Refusal => fail(
            Code::LlmRefused,
            format!(
                "model `{}` refused to answer: {}",
                completion.model,
                completion.refusal.as_deref().unwrap_or(&completion.finish_raw)
            ),
            "rephrase the prompt, or handle the refusal with the step's `on error` line",
        ),
        FinishReason::ContentFilter => fail(
            Code::LlmRefused,
            format!(
                "the provider's content filter stopped the answer of model `{}`",
                completion.model
            ),
            "rephrase the prompt, or handle the refusal with the step's `on error` line",
        ),
        FinishReason::Stop | FinishReason::Other if completion.text.trim().is_empty() => fail(
            Code::LlmFailed,
            format!(
                "model `{}` returned an empty answer (finish reason `{}`); nothing was written",
                completion.model, completion.finish_raw
            ),
            "check the model and the prompt; an empty answer often means the model refused or was cut short",
        ),
        FinishReason::Stop | FinishReason::Other => Ok(()),
    }
}

/// Turns the answer text into the value to write, or says why it is
/// invalid.
fn interpret(output: &LlmOutput, text: &str) -> Result<Value, String> {
    match output {
        LlmOutput::Text => Ok(Value::String(text.trim().to_string())),
        LlmOutput::Choices(choices) => {
            let answer = match schema::extract_json(text) {
                Some(Value::Object(map)) => map
                    .get("choice")
                    .and_then(Value::as_str)
                    .unwrap_or(text)
                    .to_string(),
                Some(Value::String(answer)) => answer,
                _ => text.to_string(),
            };
            schema::match_choice(&answer, choices)
                .map(Value::String)
                .ok_or_else(|| {
                    let allowed: Vec<String> = choices.iter().map(|choice| format!("\"{choice}\"")).collect();
                    format!(
                        "\"{}\" is not one of {}",
                        shorten(answer.trim()),
                        allowed.join(", ")
                    )
                })
        }
        LlmOutput::Schema(fields) => {
            let value =
                schema::extract_json(text).ok_or_else(|| "the answer holds no JSON object".to_string())?;
            schema::validate(&value, fields)
        }
    }
}

fn write_answer(call: &LlmCall, answer: Value, execution: &mut Execution) -> Result<(), String> {
    match &call.target {
        None => Ok(()),
        Some(LlmTarget::Variable(name)) => {
            if let Some(reason) = crate::value::too_deep(1, &answer) {
                return Err(format!("cannot write `vars.{name}`: {reason}"));
            }
            execution.vars.insert(name.clone(), answer);
            execution.secret_vars.remove(name);
            Ok(())
        }
        Some(LlmTarget::Entity(path)) => {
            let mut entity = execution.entity.clone();
            set_path(&mut entity, path, answer)?;
            execution.entity = entity;
            Ok(())
        }
        Some(LlmTarget::EntityMembers) => {
            let (Value::Object(members), Value::Object(entity)) = (answer, &mut execution.entity) else {
                return Err("the answer is not an object, so its members cannot become fields".to_string());
            };
            for (key, value) in members {
                entity.insert(key, value);
            }
            Ok(())
        }
    }
}

/// In a dry run, later steps may read the answer: they see a placeholder,
/// with one member per declared field for a schema answer.
fn write_placeholder(call: &LlmCall, execution: &mut Execution) {
    let placeholder = match &call.output {
        LlmOutput::Schema(fields) => object_placeholder(fields),
        LlmOutput::Text | LlmOutput::Choices(_) => Value::String(PLACEHOLDER.to_string()),
    };
    let _ = write_answer(call, placeholder, execution);
}

const PLACEHOLDER: &str = "<llm answer>";

fn object_placeholder(fields: &[schema::Field]) -> Value {
    Value::Object(
        fields
            .iter()
            .map(|field| (field.name.clone(), type_placeholder(&field.ty)))
            .collect(),
    )
}

fn type_placeholder(ty: &schema::FieldType) -> Value {
    match ty {
        schema::FieldType::Object(fields) => object_placeholder(fields),
        schema::FieldType::List(item) => Value::Array(vec![type_placeholder(item)]),
        _ => Value::String(PLACEHOLDER.to_string()),
    }
}

pub(crate) fn outgoing(
    provider: &Provider,
    request: &ChatRequest,
    execution: &Execution,
) -> Result<Outgoing, Diagnostic> {
    let (endpoint, body, headers) = match provider.kind {
        ProviderKind::OpenAi => (
            llm::openai::endpoint(&provider.base_url),
            llm::openai::request_body(request),
            llm::openai::headers(provider.api_key.as_deref()),
        ),
        ProviderKind::Anthropic => (
            llm::anthropic::endpoint(&provider.base_url),
            llm::anthropic::request_body(request),
            llm::anthropic::headers(provider.api_key.as_deref()),
        ),
    };
    let invalid = |message: String| {
        Diagnostic::error(Code::LlmFailed, message).with_help("check the provider's base URL and API key")
    };
    let url = reqwest::Url::parse(&endpoint).map_err(|error| {
        invalid(format!(
            "provider `{}` has an invalid URL `{}`: {error}",
            provider.name,
            execution.redactor.redact(&endpoint)
        ))
    })?;
    let mut header_map = HeaderMap::new();
    header_map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(format!("invalid header name `{name}`")))?;
        let value = HeaderValue::from_str(&value).map_err(|_| {
            invalid(format!(
                "provider `{}` has an API key that is not a valid header value",
                provider.name
            ))
        })?;
        header_map.insert(name, value);
    }
    Ok(Outgoing {
        method: reqwest::Method::POST,
        display_url: execution.redactor.redact(url.as_str()),
        url,
        headers: header_map,
        body: Some(Bytes::from(serde_json::to_vec(&body).unwrap_or_default())),
    })
}

/// Sends one request to a model and parses the answer.
pub(crate) async fn complete(
    provider: &Provider,
    request: &ChatRequest,
    context: &CallContext<'_>,
    execution: &Execution,
    attempts: &mut Vec<Attempt>,
    usage: &mut Vec<LlmUsage>,
) -> Result<Completion, Diagnostic> {
    let outgoing = outgoing(provider, request, execution)?;
    // A model call changes nothing at the provider, so server errors and
    // failed connections are retried as well as 429.
    let settings = Settings {
        retry_server_errors: true,
        retry_connection_errors: true,
        retry_interrupted: true,
        ..context.step.settings.clone()
    };
    let redact = |text: &str| execution.redactor.redact(text);
    let http_context = http::Context {
        step: &context.step.name,
        action: context.action,
        sleeper: context.sleeper,
        redact: &redact,
    };
    let started = Instant::now();
    let exchange = http::send(context.http, &outgoing, &settings, &http_context, attempts)
        .await
        .map_err(|failure| {
            failure_diagnostic_for(&failure, &outgoing, context.step_span(), &execution.redactor)
        })?;
    let latency = started.elapsed();
    let parsed = match provider.kind {
        ProviderKind::OpenAi => llm::openai::parse_response(&exchange.body),
        ProviderKind::Anthropic => llm::anthropic::parse_response(&exchange.body),
    };
    let completion = parsed.map_err(|error| {
        Diagnostic::error(Code::LlmFailed, execution.redactor.redact(&error.to_string()))
            .with_help("check that the provider's base URL points at a compatible API")
    })?;
    // Model names and refusals come from the provider and may repeat a
    // secret of the prompt.
    let completion = Completion {
        model: execution.redactor.redact(&completion.model),
        refusal: completion
            .refusal
            .map(|refusal| execution.redactor.redact(&refusal)),
        finish_raw: execution.redactor.redact(&completion.finish_raw),
        ..completion
    };
    info!(
        step = %context.step.name,
        model = %completion.model,
        prompt_tokens = completion.usage.prompt_tokens,
        completion_tokens = completion.usage.completion_tokens,
        latency_ms = latency.as_millis() as u64,
        "model `{}` answered in {} ms ({} prompt and {} completion tokens)",
        request.model,
        latency.as_millis(),
        completion.usage.prompt_tokens,
        completion.usage.completion_tokens
    );
    usage.push(LlmUsage {
        provider: provider.name.clone(),
        model: request.model.clone(),
        prompt_tokens: completion.usage.prompt_tokens,
        completion_tokens: completion.usage.completion_tokens,
        latency_ms: latency.as_millis() as u64,
    });
    Ok(completion)
}

impl CallContext<'_> {
    fn step_span(&self) -> crate::diagnostic::Span {
        self.step.span
    }
}

/// Collects the environment variables that configure providers.
pub fn provider_env(variables: impl IntoIterator<Item = (String, String)>) -> HashMap<String, String> {
    variables
        .into_iter()
        .filter(|(key, _)| PROVIDER_ENV.contains(&key.as_str()))
        .collect()
}
