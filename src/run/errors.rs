//! Diagnostics for failures during a run.

use crate::diagnostic::{Code, Diagnostic, LineIndex, Span};
use crate::program::Request;
use crate::render::RenderError;
use crate::run::http::{self, describe, format_duration, Exchange, Failure, Outgoing};
use crate::run::redact::Redactor;

/// Builds the diagnostic for a merge field that could not be rendered.
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

pub(crate) fn failure_diagnostic(
    failure: &Failure,
    outgoing: &Outgoing,
    request: &Request,
    redactor: &Redactor,
) -> Diagnostic {
    failure_diagnostic_for(failure, outgoing, request.span, redactor)
}

/// Builds the diagnostic of a failed exchange, labelled at `span`.
pub(crate) fn failure_diagnostic_for(
    failure: &Failure,
    outgoing: &Outgoing,
    span: Span,
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
        Failure::Certificate(_) => (
            Code::ConnectionFailed,
            format!("{target}: {}", redactor.redact(&describe(failure))),
            "when a private certificate authority signed the server's certificate, pass the authority's certificate in PEM with --cacert FILE or FLOWRUN_CACERT".to_string(),
        ),
        Failure::Interrupted(message) => (
            Code::ConnectionFailed,
            format!("{target}: {}", redactor.redact(message)),
            "the server may have received the request, so flowrun does not send it again; check the receiver before running the step again".to_string(),
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
        Failure::BodyTooLarge(_) => (
            Code::ResponseTooLarge,
            format!("{target}: {}", describe(failure)),
            "save only small responses; ask the server for a smaller page or a summary".to_string(),
        ),
        Failure::Stopped => (
            Code::RunInterrupted,
            format!("{target}: {}", describe(failure)),
            "the execution paused at this step; `flowrun resume ID` sends the request".to_string(),
        ),
    };
    Diagnostic::error(code, message)
        .with_label(span, "this request")
        .with_help(help)
}

fn status_failure(target: &str, exchange: &Exchange, redactor: &Redactor) -> (Code, String, String) {
    // Secrets are hidden before the cut, so that the cut cannot split one
    // and leave its first part readable.
    let redacted = redactor.redact(&String::from_utf8_lossy(&exchange.body));
    let excerpt = body_excerpt(redacted.as_bytes(), 1024);
    // White space around a body, such as its final line break, would end
    // the message with an empty line.
    let excerpt = excerpt.trim();
    let mut message = format!("{target} returned {}", exchange.status);
    if !excerpt.is_empty() {
        message.push_str(RESPONSE_BODY);
        message.push_str(excerpt);
    }
    let help = if exchange.status.is_server_error() {
        "the server failed to handle the request; `retry on 5xx` retries server errors"
    } else {
        "the server rejected the request: check the URL, headers and payload"
    };
    (Code::HttpStatus, message, help.to_string())
}

/// Separates the status line of a `flow::run::http_status` message from
/// the response body excerpt on the lines after it.
const RESPONSE_BODY: &str = "\nresponse body: ";

/// Splits the message of a diagnostic with `code` into the text before its
/// response body excerpt and the excerpt, for logs that put the body in a
/// field of its own. Only `flow::run::http_status` messages have an
/// excerpt, so other messages come back whole.
pub fn split_response_body<'a>(code: &str, message: &'a str) -> (&'a str, Option<&'a str>) {
    if code != Code::HttpStatus.as_str() {
        return (message, None);
    }

    // The status line, `METHOD URL returned STATUS`, has no line break.
    match message.split_once(RESPONSE_BODY) {
        Some((status, body)) => (status, Some(body)),
        None => (message, None),
    }
}

/// Returns the first `max` bytes of a body as text, cut on a UTF-8 boundary.
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

    #[test]
    fn response_body_splits_from_status_messages_only() {
        let message =
            "POST http://127.0.0.1/x returned 500 Internal Server Error\nresponse body: a\nresponse body: b";
        assert_eq!(
            split_response_body("flow::run::http_status", message),
            (
                "POST http://127.0.0.1/x returned 500 Internal Server Error",
                Some("a\nresponse body: b")
            )
        );
        assert_eq!(
            split_response_body(
                "flow::run::http_status",
                "GET http://127.0.0.1/x returned 404 Not Found"
            ),
            ("GET http://127.0.0.1/x returned 404 Not Found", None)
        );
        let traceback = "the Python script raised ValueError: x\nresponse body: y";
        assert_eq!(
            split_response_body("flow::run::code_failed", traceback),
            (traceback, None)
        );
    }
}
