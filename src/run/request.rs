//! Renders a step's request from its templates, before anything is sent.

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};

use crate::diagnostic::{Code, Diagnostic, LineIndex};
use crate::program::{Method, Request, Step};
use crate::render;
use crate::run::errors::render_diagnostic;
use crate::run::http::Outgoing;
use crate::run::redact::{self, Redactor};
use crate::run::report::RenderedRequest;
use crate::run::Execution;

const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The `Idempotency-Key` of one action of one step of an execution: a
/// name-based UUID (version 5) of the execution id, the step's name and the
/// action's position, so that every retry and every resend of the action
/// carries the same key, also when steps are added before it. `None` where
/// no key is sent: methods other than POST and PATCH, and steps with
/// `idempotency_key off`.
pub fn idempotency_key(
    execution_id: &str,
    step: &str,
    action: usize,
    method: Method,
    enabled: bool,
) -> Option<String> {
    if !enabled || !matches!(method, Method::Post | Method::Patch) {
        return None;
    }
    // Written as a JSON array, so that no step name or id can make two
    // different triples read the same. A tuple serializes as that array
    // without building a JSON value first.
    let name =
        serde_json::to_vec(&(execution_id, step, action)).expect("two strings and a number always serialize");
    // The UUID of `Uuid::new_v5`, hashed with a SHA-1 that uses the CPU's
    // SHA instructions where there are some.
    use sha1::Digest as _;
    let hash = sha1::Sha1::new()
        .chain_update(uuid::Uuid::NAMESPACE_OID.as_bytes())
        .chain_update(&name)
        .finalize();
    let mut bytes = [0; 16];
    bytes.copy_from_slice(&hash[..16]);
    let key = uuid::Builder::from_sha1_bytes(bytes).into_uuid();
    Some(key.hyphenated().to_string())
}

/// Renders a request. Nothing is sent when this fails.
pub(crate) fn build(
    request: &Request,
    execution: &Execution,
    idempotency_key: Option<&str>,
    lines: &LineIndex<'_>,
) -> Result<Outgoing, Diagnostic> {
    let scope = execution.scope();
    let redactor = &execution.redactor;
    let render = |template| {
        render::render(template, &scope).map_err(|error| render_diagnostic(&error, lines, redactor))
    };

    let url_text = render(&request.url)?;
    let display_url = redactor.redact(&url_text);
    if url_text.chars().any(char::is_control) {
        return Err(Diagnostic::error(
            Code::InvalidRequest,
            format!(
                "the URL `{}` contains a line break or another control character; nothing was sent",
                display_url.escape_debug()
            ),
        )
        .with_label(request.span, "this request")
        .with_help(
            "remove control characters from the values inserted into the URL, or turn `encode` back on",
        ));
    }
    if has_dot_segment(&url_text) {
        return Err(Diagnostic::error(
            Code::InvalidRequest,
            format!(
                "the URL `{display_url}` has a `.` or `..` path segment, which would change the path the request goes to; nothing was sent"
            ),
        )
        .with_label(request.span, "this request")
        .with_help("check the values inserted into the URL path; a value of `..` cannot name a resource"));
    }
    let parsed = reqwest::Url::parse(&url_text)
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https"));
    let (url, display_url) = match parsed {
        // The log shows the URL as it is sent, after the parser resolved
        // any `.` and `..` segments.
        Some(url) => {
            let display = redactor.redact(url.as_str());
            (url, display)
        }
        // A dry run masks secrets, so a base URL held in a secret cannot
        // parse; the request is shown as rendered.
        None if execution.mask_secrets && display_url.contains(redact::MASK) => {
            let placeholder =
                reqwest::Url::parse("http://masked.invalid/").expect("the placeholder URL is valid");
            (placeholder, display_url)
        }
        None => {
            return Err(Diagnostic::error(
                Code::InvalidRequest,
                format!("the URL `{display_url}` is not a valid http(s) URL"),
            )
            .with_label(request.span, "this request")
            .with_help("check the values that the merge fields of the URL insert"))
        }
    };

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

    if let Some(key) = idempotency_key {
        if !headers.contains_key(IDEMPOTENCY_KEY) {
            let value = HeaderValue::from_str(key).map_err(|_| {
                Diagnostic::error(
                    Code::InvalidRequest,
                    "the Idempotency-Key is not a valid header value",
                )
                .with_label(request.span, "this request")
                .with_help("use an execution id of visible characters, or `idempotency_key off`")
            })?;
            headers.insert(IDEMPOTENCY_KEY, value);
        }
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

/// Returns whether the path of a URL has a `.` or `..` segment, written plainly or
/// percent-encoded, which URL parsers resolve by removing path segments.
pub(crate) fn has_dot_segment(url: &str) -> bool {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path_start = after_scheme.find('/').unwrap_or(after_scheme.len());
    let path = &after_scheme[path_start..];
    let path = path.split(['?', '#']).next().unwrap_or("");
    path.split('/').any(|segment| {
        let dot = |text: &str| text == "." || text.eq_ignore_ascii_case("%2e");
        // A dot segment is one or two dots, each written `.` or `%2e`.
        dot(segment)
            || [1, 3]
                .into_iter()
                .any(|at| segment.get(..at).is_some_and(dot) && segment.get(at..).is_some_and(dot))
    })
}

pub(crate) fn rendered(step: &Step, outgoing: &Outgoing, redactor: &Redactor) -> RenderedRequest {
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

#[cfg(test)]
mod tests {
    use super::{has_dot_segment, idempotency_key};
    use crate::program::Method;

    #[test]
    fn idempotency_key_is_uuid_v5() {
        for (id, step, action) in [("exec-1", "Send claim", 0), ("e", "Step \"2\" é", 7)] {
            let name = serde_json::to_vec(&(id, step, action)).unwrap();
            let expected = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, &name).to_string();
            let key = idempotency_key(id, step, action, Method::Post, true);
            assert_eq!(key.as_deref(), Some(expected.as_str()));
        }
        // The value a resumed execution must send again, computed outside Rust.
        assert_eq!(
            idempotency_key("exec-1", "Send claim", 0, Method::Patch, true).as_deref(),
            Some("274ba883-8446-500a-adba-7f9e690bc987")
        );
    }

    #[test]
    fn dot_segments_in_every_spelling() {
        for segment in [".", "..", "%2e", "%2E", ".%2e", "%2E.", "%2e%2E"] {
            let url = format!("http://h/a/{segment}/b");
            assert!(has_dot_segment(&url), "{url}");
            let last = format!("http://h/a/{segment}");
            assert!(has_dot_segment(&last), "{last}");
        }
    }

    #[test]
    fn dotted_names_are_not_dot_segments() {
        for segment in ["...", ".a", "a.", "%2e%2e%2e", "%2ea", "%2", "%2e%2", "é.", ".é"] {
            let url = format!("http://h/a/{segment}/b");
            assert!(!has_dot_segment(&url), "{url}");
        }
    }

    #[test]
    fn dot_segments_after_the_path_are_ignored() {
        assert!(!has_dot_segment("http://h/a?next=/../b"));
        assert!(!has_dot_segment("http://h/a#/./b"));
        assert!(!has_dot_segment("http://h.example/a"));
    }
}
