//! The interpreter: runs a checked program against one entity.
//!
//! [`prepare`] validates the run's inputs and resolves variables; a problem
//! there means the run cannot start. [`execute`] walks the steps in order;
//! a step that fails is recorded in the [`Report`] and ends the run.

pub mod http;
pub mod redact;
pub mod report;
pub mod retry;
mod save;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use serde_json::{json, Map, Value};
use tracing::{error, info, info_span, Instrument};

use crate::check::names::did_you_mean;
use crate::diagnostic::{Code, Diagnostic, LineIndex};
use crate::program::{Program, Request, Step, VariableValue};
use crate::render::{self, RenderError, Scope};
use http::{describe, format_duration, Exchange, Failure, Http, Outgoing};
use redact::Redactor;
use report::{Outcome, RenderedRequest, Report, StepReport};
use retry::Sleeper;

/// What a run starts from, as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub entity: Value,
    /// `--var name=value` pairs, in order; a later pair wins.
    pub vars: Vec<(String, String)>,
    pub secrets: HashMap<String, String>,
    pub execution_id: Option<String>,
}

/// The state of one execution.
pub struct Execution {
    pub id: String,
    pub started_at: String,
    pub workflow: String,
    pub entity: Value,
    pub vars: Map<String, Value>,
    pub secrets: HashMap<String, String>,
    pub redactor: Redactor,
    execution_value: Value,
    mask_secrets: bool,
}

impl Execution {
    fn scope(&self) -> Scope<'_> {
        Scope {
            entity: &self.entity,
            execution: &self.execution_value,
            vars: &self.vars,
            secrets: &self.secrets,
            mask_secrets: self.mask_secrets,
        }
    }
}

pub struct Options {
    /// Render every request and send nothing.
    pub dry_run: bool,
    pub sleeper: Arc<dyn Sleeper>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            dry_run: false,
            sleeper: Arc::new(retry::TokioSleeper),
        }
    }
}

/// Checks the inputs of a run and resolves the workflow's variables. A dry
/// run masks secrets, so it needs none of them set.
pub fn prepare(
    program: &Program,
    source: &str,
    inputs: Inputs,
    dry_run: bool,
) -> Result<Execution, Vec<Diagnostic>> {
    let mut diagnostics = Vec::new();
    let declared: Vec<&str> = program
        .variables
        .iter()
        .map(|variable| variable.name.as_str())
        .collect();
    let mut overrides: HashMap<String, String> = HashMap::new();
    for (name, value) in inputs.vars {
        if !declared.contains(&name.as_str()) {
            diagnostics.push(
                Diagnostic::error(
                    Code::InvalidVar,
                    format!("--var {name}: the workflow declares no variable `{name}`"),
                )
                .with_help(did_you_mean(&name, &declared, "variables")),
            );
        }
        overrides.insert(name, value);
    }

    if !dry_run {
        for (name, span) in &program.secrets {
            if !inputs.secrets.contains_key(name) {
                diagnostics.push(
                    Diagnostic::error(Code::SecretNotSet, format!("secret `{name}` is not set"))
                        .with_label(*span, "used here")
                        .with_help(format!(
                            "set the environment variable FLOWRUN_SECRET_{name}, or add `{name}=...` to the file given with --secrets"
                        )),
                );
            }
        }
    }

    let started_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let id = inputs
        .execution_id
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    // A dry run writes `***` for every secret itself, and redacting the
    // values too would also hide text that merely looks like a secret.
    let redactor = if dry_run {
        Redactor::default()
    } else {
        Redactor::new(inputs.secrets.values().map(String::as_str))
    };
    let mut execution = Execution {
        execution_value: json!({"id": id, "started_at": started_at, "workflow": program.name}),
        id,
        started_at,
        workflow: program.name.clone(),
        entity: inputs.entity,
        vars: Map::new(),
        secrets: inputs.secrets,
        redactor,
        mask_secrets: dry_run,
    };
    if !diagnostics.is_empty() {
        return Err(diagnostics);
    }

    let lines = LineIndex::new(source);
    for variable in &program.variables {
        let value = match (overrides.remove(&variable.name), &variable.value) {
            (Some(text), _) => Value::String(text),
            (None, Some(VariableValue::Literal(value))) => value.clone(),
            (None, Some(VariableValue::Template(template))) => {
                match render::render(template, &execution.scope()) {
                    Ok(text) => Value::String(text),
                    Err(error) => {
                        diagnostics.push(render_diagnostic(&error, &lines, &execution.redactor));
                        continue;
                    }
                }
            }
            (None, None) => {
                diagnostics.push(
                    Diagnostic::error(
                        Code::MissingVar,
                        format!("variable `{}` has no value", variable.name),
                    )
                    .with_label(variable.span, "declared without a value")
                    .with_help(format!("pass it with --var {}=VALUE", variable.name)),
                );
                continue;
            }
        };
        execution.vars.insert(variable.name.clone(), value);
    }
    if diagnostics.is_empty() {
        Ok(execution)
    } else {
        Err(diagnostics)
    }
}

/// Runs every step in order and returns the report.
pub async fn execute(
    program: &Program,
    source: &str,
    mut execution: Execution,
    http: &Http,
    options: &Options,
) -> Report {
    let lines = LineIndex::new(source);
    let mut report = Report {
        execution_id: execution.id.clone(),
        workflow: execution.workflow.clone(),
        started_at: execution.started_at.clone(),
        outcome: Outcome::Succeeded,
        steps: Vec::new(),
        entity: Value::Null,
        dry_run: Vec::new(),
    };
    let span = info_span!("execution", execution_id = %execution.id);
    async {
        for step in &program.steps {
            let step_report = run_step(step, &mut execution, http, options, &lines, &mut report.dry_run)
                .instrument(info_span!("step", step = %step.name))
                .await;
            let failed = step_report.outcome == Outcome::Failed;
            report.steps.push(step_report);
            if failed {
                report.outcome = Outcome::Failed;
                break;
            }
        }
    }
    .instrument(span)
    .await;
    report.entity = execution.entity;
    report
}

async fn run_step(
    step: &Step,
    execution: &mut Execution,
    http: &Http,
    options: &Options,
    lines: &LineIndex<'_>,
    dry_run: &mut Vec<RenderedRequest>,
) -> StepReport {
    info!(step = %step.name, "started");
    let started = Instant::now();
    let mut attempts = Vec::new();
    let mut result = Ok(());
    for request in &step.requests {
        let outgoing = match build(request, execution, lines) {
            Ok(outgoing) => outgoing,
            Err(diagnostic) if options.dry_run => {
                dry_run.push(RenderedRequest {
                    step: step.name.clone(),
                    method: request.method.as_str().to_string(),
                    url: String::new(),
                    headers: Vec::new(),
                    body: None,
                    error: Some(diagnostic.message),
                });
                continue;
            }
            Err(diagnostic) => {
                result = Err(diagnostic);
                break;
            }
        };
        if options.dry_run {
            dry_run.push(rendered(step, &outgoing, &execution.redactor));
            save::apply_placeholders(request, execution);
            continue;
        }

        let redact = |text: &str| execution.redactor.redact(text);
        let context = http::Context {
            step: &step.name,
            sleeper: options.sleeper.as_ref(),
            redact: &redact,
        };
        let sent = http::send(http, &outgoing, &step.settings, &context, &mut attempts).await;
        let exchange = match sent {
            Ok(exchange) => exchange,
            Err(failure) => {
                result = Err(failure_diagnostic(
                    &failure,
                    &outgoing,
                    request,
                    &execution.redactor,
                ));
                break;
            }
        };
        info!(
            step = %step.name,
            method = %outgoing.method,
            url = %outgoing.display_url,
            status = exchange.status.as_u16(),
            "{} {} returned {}",
            outgoing.method,
            outgoing.display_url,
            exchange.status
        );
        if let Err(diagnostic) = save::apply_all(request, &exchange, execution) {
            result = Err(diagnostic);
            break;
        }
    }

    let duration = started.elapsed();
    let retries = attempts.iter().filter(|attempt| attempt.number > 1).count();
    let outcome = if result.is_ok() {
        Outcome::Succeeded
    } else {
        Outcome::Failed
    };
    let duration_ms = duration.as_millis() as u64;
    match &result {
        Ok(()) => info!(
            step = %step.name,
            duration_ms,
            retries,
            "succeeded in {duration_ms} ms with {retries} retries"
        ),
        Err(diagnostic) => error!(
            step = %step.name,
            duration_ms,
            retries,
            code = %diagnostic.code,
            "failed in {duration_ms} ms with {retries} retries: {}",
            diagnostic.code
        ),
    }
    let error = result.err();
    StepReport {
        name: step.name.clone(),
        outcome,
        duration,
        attempts,
        error_message: error.as_ref().map(|diagnostic| diagnostic.message.clone()),
        error,
    }
}

/// Renders a request. Nothing is sent when this fails.
fn build(request: &Request, execution: &Execution, lines: &LineIndex<'_>) -> Result<Outgoing, Diagnostic> {
    let scope = execution.scope();
    let redactor = &execution.redactor;
    let render = |template| {
        render::render(template, &scope).map_err(|error| render_diagnostic(&error, lines, redactor))
    };

    let url_text = render(&request.url)?;
    let display_url = redactor.redact(&url_text);
    let url = reqwest::Url::parse(&url_text)
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https"))
        .ok_or_else(|| {
            Diagnostic::error(
                Code::InvalidRequest,
                format!("the URL `{display_url}` is not a valid http(s) URL"),
            )
            .with_label(request.span, "this request")
            .with_help("check the values that the merge fields of the URL insert")
        })?;

    let mut headers = HeaderMap::new();
    let body = match &request.body {
        Some(body) => {
            let text = render(&body.template)?;
            if body.is_json {
                if let Err(error) = serde_json::from_str::<serde::de::IgnoredAny>(&text) {
                    return Err(Diagnostic::error(
                        Code::RenderedJsonInvalid,
                        format!("the rendered JSON payload is invalid ({error}); nothing was sent"),
                    )
                    .with_label(body.span, "this payload")
                    .with_help("with `encode off`, inserted values must form valid JSON themselves; remove `encode off` to have them encoded"));
                }
            }
            let content_type = HeaderValue::from_str(&body.content_type).map_err(|_| {
                Diagnostic::error(
                    Code::InvalidRequest,
                    format!("invalid Content-Type `{}`", body.content_type),
                )
                .with_label(body.span, "this payload")
            })?;
            headers.insert(CONTENT_TYPE, content_type);
            Some(Bytes::from(text))
        }
        None => None,
    };

    for header in &request.headers {
        let value = render(&header.value)?;
        if value.contains(['\r', '\n', '\0']) {
            return Err(Diagnostic::error(
                Code::HeaderInjection,
                format!(
                    "header `{}` would contain a line break or NUL after rendering; nothing was sent",
                    header.name
                ),
            )
            .with_label(header.span, "this header")
            .with_help(
                "remove CR, LF and NUL characters from the inserted value before it reaches a header",
            ));
        }
        let name = HeaderName::from_bytes(header.name.as_bytes()).map_err(|_| {
            Diagnostic::error(
                Code::InvalidRequest,
                format!("invalid header name `{}`", header.name),
            )
            .with_label(header.span, "this header")
        })?;
        let value = HeaderValue::from_str(&value).map_err(|_| {
            Diagnostic::error(
                Code::InvalidRequest,
                format!(
                    "header `{}` has a value with control characters; nothing was sent",
                    header.name
                ),
            )
            .with_label(header.span, "this header")
            .with_help("header values may hold visible characters, spaces and tabs only")
        })?;
        headers.append(name, value);
    }

    Ok(Outgoing {
        method: reqwest::Method::from_bytes(request.method.as_str().as_bytes())
            .unwrap_or(reqwest::Method::GET),
        url,
        headers,
        body,
        display_url,
    })
}

fn rendered(step: &Step, outgoing: &Outgoing, redactor: &Redactor) -> RenderedRequest {
    // A masked secret in the path or query was percent-encoded like any value.
    let url = outgoing.display_url.replace("%2A%2A%2A", redact::MASK);
    let headers = outgoing
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.to_string(),
                redactor.redact(&String::from_utf8_lossy(value.as_bytes())),
            )
        })
        .collect();
    RenderedRequest {
        step: step.name.clone(),
        method: outgoing.method.to_string(),
        url,
        headers,
        body: outgoing
            .body
            .as_ref()
            .map(|body| redactor.redact(&String::from_utf8_lossy(body))),
        error: None,
    }
}

/// The diagnostic for a merge field that could not be rendered.
pub fn render_diagnostic(error: &RenderError, lines: &LineIndex<'_>, redactor: &Redactor) -> Diagnostic {
    let span = error.span();
    let (line, column) = lines.line_col(span.start);
    match error {
        RenderError::Missing { path, full, span } => {
            let detail = if path == full {
                format!("`{path}` does not exist")
            } else {
                format!("`{path}` does not exist, so `{full}` cannot be read")
            };
            Diagnostic::error(
                Code::MissingMergeField,
                format!("merge field `{full}` at {line}:{column} has no value: {detail}; nothing was sent"),
            )
            .with_label(*span, format!("`{path}` is missing"))
            .with_help(format!(
                "add the field to the entity, or give a fallback with `<<default {full} \"...\">>`"
            ))
        }
        RenderError::Helper { message, span } => Diagnostic::error(
            Code::HelperFailed,
            format!(
                "merge field at {line}:{column} failed: {}; nothing was sent",
                redactor.redact(message)
            ),
        )
        .with_label(*span, "this helper call")
        .with_help("check the value the helper receives, or give a fallback with `default`"),
    }
}

fn failure_diagnostic(
    failure: &Failure,
    outgoing: &Outgoing,
    request: &Request,
    redactor: &Redactor,
) -> Diagnostic {
    let target = format!("{} {}", outgoing.method, outgoing.display_url);
    let (code, message, help) = match failure {
        Failure::Status(exchange) => status_failure(&target, exchange, redactor),
        Failure::Timeout(timeout) => (
            Code::Timeout,
            format!("{target} timed out after {}", format_duration(*timeout)),
            "raise the step's limit with a line such as `timeout 60s`".to_string(),
        ),
        Failure::Connection(message) => (
            Code::ConnectionFailed,
            format!("{target}: {}", redactor.redact(message)),
            "check that the server is up and the URL is right; `retry on connection` retries failed connections".to_string(),
        ),
        Failure::TooManyRedirects => (
            Code::TooManyRedirects,
            format!("{target} was redirected more than {} times", http::MAX_REDIRECTS),
            "check the URL for a redirect loop, or stop following redirects with `redirects off`".to_string(),
        ),
        Failure::TooManyRequests { requests } => (
            Code::TooManyRequests,
            format!(
                "{target} still returned 429 Too Many Requests after {requests} {}",
                if *requests == 1 { "request" } else { "requests" }
            ),
            "raise the number of retries with a line such as `retries 10`, or run the workflow later".to_string(),
        ),
        Failure::WaitTooLong { .. } => (
            Code::RetryWaitTooLong,
            format!("{target}: {}", describe(failure)),
            "raise the limit with a line such as `max_wait 10m`, or run the workflow later".to_string(),
        ),
        Failure::BodyTooLarge => (
            Code::ResponseTooLarge,
            format!("{target}: {}", describe(failure)),
            "save only small responses; ask the server for a smaller page or a summary".to_string(),
        ),
    };
    Diagnostic::error(code, message)
        .with_label(request.span, "this request")
        .with_help(help)
}

fn status_failure(target: &str, exchange: &Exchange, redactor: &Redactor) -> (Code, String, String) {
    let excerpt = redactor.redact(&body_excerpt(&exchange.body, 1024));
    let mut message = format!("{target} returned {}", exchange.status);
    if !excerpt.is_empty() {
        message.push_str("\nresponse body: ");
        message.push_str(&excerpt);
    }
    let help = if exchange.status.is_server_error() {
        "the server failed to handle the request; `retry on 5xx` retries server errors"
    } else {
        "the server rejected the request: check the URL, headers and payload"
    };
    (Code::HttpStatus, message, help.to_string())
}

/// The first `max` bytes of a body as text, cut on a UTF-8 boundary.
pub fn body_excerpt(body: &[u8], max: usize) -> String {
    let cut = &body[..body.len().min(max)];
    match std::str::from_utf8(cut) {
        Ok(text) => text.to_string(),
        Err(error) if error.error_len().is_none() => {
            String::from_utf8_lossy(&cut[..error.valid_up_to()]).into_owned()
        }
        Err(_) => String::from_utf8_lossy(cut).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_cut_on_character_boundaries() {
        let body = "ab€".as_bytes();
        assert_eq!(body_excerpt(body, 3), "ab");
        assert_eq!(body_excerpt(body, 5), "ab€");
        assert_eq!(body_excerpt(b"\xff\xfeok", 4), "\u{fffd}\u{fffd}ok");
    }
}
