//! Runs `extract` and `transcribe` actions, and loads the files they read:
//! a local path, a `file://` URL, an `http(s)://` URL downloaded with the
//! HTTP step's client and retry rules, or a `data:` URI.

use std::path::PathBuf;

use base64::Engine;
use bytes::Bytes;
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::diagnostic::{Code, Diagnostic, Span};
use crate::program::{Action, Settings};
use crate::render;
use crate::run::errors::failure_diagnostic_for;
use crate::run::http::{self, Outgoing};
use crate::run::llm::CallContext;
use crate::run::report::{Attempt, LlmUsage, Provenance, RenderedRequest};
use crate::run::{extract, transcribe, Execution};

/// The records an action adds to its step's report.
pub(crate) struct Records<'a> {
    pub attempts: &'a mut Vec<Attempt>,
    pub usage: &'a mut Vec<LlmUsage>,
    pub provenance: &'a mut Vec<Provenance>,
    pub dry_run: &'a mut Vec<RenderedRequest>,
}

/// Runs one `extract` or `transcribe` action.
pub(crate) async fn run(
    action: &Action,
    context: &CallContext<'_>,
    execution: &mut Execution,
    records: &mut Records<'_>,
) -> Result<(), Diagnostic> {
    match action {
        Action::Extract(call) => extract::run(call, context, execution, records).await,
        Action::Transcribe(call) => transcribe::run(call, context, execution, records).await,
        Action::Http(_) | Action::Llm(_) | Action::Statement(_) | Action::Code(_) => {
            unreachable!("media::run: called for another kind of action")
        }
    }
}

/// A file's bytes, with its name and how messages show its reference.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    pub bytes: Bytes,
    /// The last segment of the path or URL, when there is one.
    pub name: Option<String>,
    /// The reference as messages show it: a data URI is cut short and
    /// secrets are hidden.
    pub display: String,
}

/// Reads the reference an action names: the value must be a string.
pub(crate) fn reference(
    source: &crate::syntax::ast::Expr,
    execution: &Execution,
    span: Span,
) -> Result<String, Diagnostic> {
    let scope = execution.scope();
    let written = match source {
        crate::syntax::ast::Expr::Path(path) => path.display(),
        _ => String::new(),
    };
    let value = render::evaluate(source, &scope).map_err(|_| {
        Diagnostic::error(Code::SourceUnavailable, format!("`{written}` has no value"))
            .with_label(span, "reads this field")
            .with_help(format!(
                "set `{written}` to a path, an http(s) or file URL, or a data URI"
            ))
    })?;
    match value.as_ref() {
        Value::String(text) if !text.trim().is_empty() => Ok(text.trim().to_string()),
        other => Err(Diagnostic::error(
            Code::SourceUnavailable,
            format!(
                "`{written}` holds {}, not a path, URL or data URI",
                describe(other)
            ),
        )
        .with_label(span, "reads this field")
        .with_help("set the field to a string such as \"claims/policy.pdf\" or \"https://...\"")),
    }
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "an empty string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Loads the file a reference names, failing when it is larger than
/// `limit` bytes.
pub(crate) async fn load(
    reference: &str,
    limit: u64,
    context: &CallContext<'_>,
    execution: &Execution,
    attempts: &mut Vec<Attempt>,
    span: Span,
) -> Result<Loaded, Diagnostic> {
    let display = display_reference(&execution.redactor.redact(reference));
    let fail = |message: String, help: &str| {
        Diagnostic::error(Code::SourceUnavailable, message)
            .with_label(span, "this action")
            .with_help(help.to_string())
    };
    let too_large = |size: u64| {
        fail(
            format!(
                "{display} is {} bytes, more than the limit of {limit} bytes",
                size
            ),
            "raise the limit with a line such as `max_file_size 500MB`",
        )
    };
    let lower = reference.to_ascii_lowercase();
    if lower.starts_with("data:") {
        let bytes = decode_data_uri(reference).map_err(|reason| {
            fail(
                format!("the data URI is invalid: {reason}"),
                "write data:MEDIA-TYPE;base64,DATA",
            )
        })?;
        if bytes.len() as u64 > limit {
            return Err(too_large(bytes.len() as u64));
        }
        return Ok(Loaded {
            bytes: Bytes::from(bytes),
            name: None,
            display,
        });
    }
    if lower.starts_with("http://") || lower.starts_with("https://") {
        let url = reqwest::Url::parse(reference)
            .map_err(|error| fail(format!("{display} is not a valid URL: {error}"), "check the URL"))?;
        let name = url
            .path_segments()
            .and_then(|mut segments| segments.next_back())
            .filter(|segment| !segment.is_empty())
            .map(str::to_string);
        let outgoing = Outgoing {
            method: reqwest::Method::GET,
            display_url: execution.redactor.redact(url.as_str()),
            url,
            headers: HeaderMap::new(),
            body: None,
        };
        let settings = Settings {
            max_response_bytes: usize::try_from(limit).unwrap_or(usize::MAX),
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
        let exchange = http::send(context.http, &outgoing, &settings, &http_context, attempts)
            .await
            .map_err(|failure| {
                if let http::Failure::BodyTooLarge(_) = failure {
                    return fail(
                        format!("{display} is larger than the limit of {limit} bytes"),
                        "raise the limit with a line such as `max_file_size 500MB`",
                    );
                }
                failure_diagnostic_for(&failure, &outgoing, span, &execution.redactor)
            })?;
        return Ok(Loaded {
            bytes: exchange.body,
            name,
            display,
        });
    }
    let path = if lower.starts_with("file:") {
        reqwest::Url::parse(reference)
            .ok()
            .and_then(|url| url.to_file_path().ok())
            .ok_or_else(|| {
                fail(
                    format!("{display} is not a valid file URL"),
                    "write file:///ABSOLUTE/PATH",
                )
            })?
    } else if let Some((scheme, _)) = reference.split_once("://") {
        return Err(fail(
            format!("{display} uses the scheme `{scheme}`, which flowrun cannot read"),
            "use a local path, a file://, http:// or https:// URL, or a data URI",
        ));
    } else {
        PathBuf::from(reference)
    };
    let metadata = std::fs::metadata(&path).map_err(|error| {
        fail(
            format!("{display} cannot be read: {}", io_reason(&error)),
            "check the path; a relative path starts at the folder flowrun runs in",
        )
    })?;
    if metadata.is_dir() {
        return Err(fail(format!("{display} is a folder, not a file"), "name a file"));
    }
    if metadata.len() > limit {
        return Err(too_large(metadata.len()));
    }
    let bytes = tokio::fs::read(&path).await.map_err(|error| {
        fail(
            format!("{display} cannot be read: {}", io_reason(&error)),
            "check the file's permissions",
        )
    })?;
    Ok(Loaded {
        bytes: Bytes::from(bytes),
        name: path.file_name().map(|name| name.to_string_lossy().into_owned()),
        display,
    })
}

fn io_reason(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => error.to_string(),
    }
}

/// Formats a reference for messages: quoted, and a data URI cut after its
/// media type.
fn display_reference(reference: &str) -> String {
    if reference.len() > 5 && reference[..5].eq_ignore_ascii_case("data:") {
        let head = reference.split(',').next().unwrap_or("data:");
        return format!("the data URI `{head},…`");
    }
    format!("`{reference}`")
}

/// Decodes a `data:` URI: base64 when its header ends in `;base64`, else
/// percent-encoded text.
pub(crate) fn decode_data_uri(uri: &str) -> Result<Vec<u8>, String> {
    let rest = &uri[5..];
    let (header, data) = rest.split_once(',').ok_or("it has no comma before the data")?;
    if header.to_ascii_lowercase().ends_with(";base64") {
        let cleaned: String = data.chars().filter(|c| !c.is_whitespace()).collect();
        base64::engine::general_purpose::STANDARD
            .decode(cleaned.as_bytes())
            .or_else(|_| {
                base64::engine::general_purpose::STANDARD_NO_PAD.decode(cleaned.trim_end_matches('='))
            })
            .map_err(|error| format!("the base64 data is invalid: {error}"))
    } else {
        percent_decode(data)
    }
}

fn percent_decode(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text
                .get(index + 1..index + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| format!("`%` at byte {index} is not followed by two hex digits"))?;
            out.push(hex);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::decode_data_uri;

    #[test]
    fn data_uris_decode() {
        assert_eq!(
            decode_data_uri("data:text/plain;base64,SGVsbG8=").unwrap(),
            b"Hello"
        );
        assert_eq!(
            decode_data_uri("data:text/plain;base64,SGVsbG8").unwrap(),
            b"Hello"
        );
        assert_eq!(
            decode_data_uri("data:,Hello%2C%20world").unwrap(),
            b"Hello, world"
        );
        assert!(decode_data_uri("data:text/plain;base64").is_err());
        assert!(decode_data_uri("data:,bad%zz").is_err());
    }
}
