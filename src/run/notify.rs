//! Notifications of failed steps: always a line on standard error, and
//! optionally a JSON line in a file and a POST to each webhook.
//!
//! A notification that cannot be delivered is logged and recorded, and
//! never changes the outcome of the run.

use std::io::Write as _;
use std::path::PathBuf;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use serde::Serialize;
use serde_json::Value;
use tracing::warn;

use crate::program::{NotifySeverity, Settings};
use crate::run::errors::split_response_body;
use crate::run::http::{self, describe, Http, Outgoing};
use crate::run::redact::Redactor;
use crate::run::retry::Sleeper;
use crate::store::NotificationRecord;

/// The document every channel receives.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    pub workflow: String,
    pub execution_id: String,
    pub step: String,
    pub severity: NotifySeverity,
    /// The action the execution took: `continue_notify`, `pause_notify`, or
    /// `stop_failed` when a `stop failed` statement ended it as failed.
    pub action: &'static str,
    pub error: NotificationError,
    /// The entity's `id` field, when it has one.
    pub entity_id: Option<Value>,
    pub execution_started_at: String,
    pub failed_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct NotificationError {
    pub code: String,
    pub message: String,
}

/// Where notifications go besides standard error.
#[derive(Debug, Clone, Default)]
pub struct Channels {
    /// A file that receives one JSON line per notification.
    pub file: Option<PathBuf>,
    /// Rendered webhook URLs.
    pub webhooks: Vec<String>,
}

/// Sends `notification` to every channel and returns what happened.
pub async fn send(
    notification: &Notification,
    channels: &Channels,
    http: &Http,
    sleeper: &dyn Sleeper,
    redactor: &Redactor,
) -> NotificationRecord {
    let document = redactor.redact(&serde_json::to_string(notification).unwrap_or_default());
    let mut used = vec!["stderr".to_string()];
    let mut failures = Vec::new();

    // The response body goes in a field of its own: the JSON log keeps it
    // apart, and the text log writes it after the message.
    let message = redactor.redact(&notification.error.message);
    let (failure, response_body) = split_response_body(&notification.error.code, &message);
    warn!(
        step = %notification.step,
        severity = notification.severity.as_str(),
        code = %notification.error.code,
        response_body,
        "notification ({}): step \"{}\" failed: {}",
        notification.severity.as_str(),
        notification.step,
        failure
    );

    if let Some(path) = &channels.file {
        used.push("file".to_string());
        if let Err(error) = append_line(path, &document) {
            let message = format!(
                "cannot append to the notification file `{}`: {error}",
                path.display()
            );
            warn!(step = %notification.step, "{message}");
            failures.push(message);
        }
    }

    for url in &channels.webhooks {
        used.push("webhook".to_string());
        if let Err(message) = post(url, &document, http, sleeper, redactor).await {
            warn!(step = %notification.step, "webhook delivery failed: {message}");
            failures.push(message);
        }
    }

    NotificationRecord {
        step: notification.step.clone(),
        severity: notification.severity.as_str().to_string(),
        error: redactor.redact(&notification.error.message),
        channels: used,
        delivery_error: (!failures.is_empty()).then(|| failures.join("; ")),
        sent_at: notification.failed_at.clone(),
    }
}

fn append_line(path: &std::path::Path, line: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    // One write call per line, so that lines from concurrent runs do not
    // interleave within a line.
    file.write_all(format!("{line}\n").as_bytes())
}

/// POSTs the document to a webhook with the retry rules of HTTP steps.
async fn post(
    url: &str,
    document: &str,
    http: &Http,
    sleeper: &dyn Sleeper,
    redactor: &Redactor,
) -> Result<(), String> {
    let display_url = redactor.redact(url);
    if url.chars().any(char::is_control) || crate::run::request::has_dot_segment(url) {
        return Err(format!(
            "invalid webhook URL `{display_url}`: it has a control character or a `.` or `..` path segment"
        ));
    }
    let parsed =
        reqwest::Url::parse(url).map_err(|error| format!("invalid webhook URL `{display_url}`: {error}"))?;
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let outgoing = Outgoing {
        method: reqwest::Method::POST,
        url: parsed,
        headers,
        body: Some(Bytes::from(document.to_string())),
        display_url: display_url.clone(),
    };
    let redact = |text: &str| redactor.redact(text);
    let context = http::Context {
        step: "notification",
        action: 0,
        sleeper,
        redact: &redact,
    };
    let mut attempts = Vec::new();
    http::send(http, &outgoing, &Settings::default(), &context, &mut attempts)
        .await
        .map(|_| ())
        .map_err(|failure| format!("POST {display_url}: {}", redactor.redact(&describe(&failure))))
}
