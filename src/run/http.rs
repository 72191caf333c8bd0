//! Sends one HTTP request with the step's timeout, redirect and retry rules.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{redirect, Certificate, Client, StatusCode};
use rustls_pki_types::CertificateDer;
use tokio::sync::OwnedMutexGuard;
use tracing::{debug, warn};

use crate::program::Settings;
use crate::run::politeness::{Politeness, Stopped};
use crate::run::report::Attempt;
use crate::run::retry::{backoff, parse_retry_after, RetryAfter, Sleeper};

/// Redirects a client follows before it gives up.
pub const MAX_REDIRECTS: usize = 10;

/// Pooled clients shared by every step of a run.
pub struct Http {
    following: Pool,
    manual: Pool,
    /// Gates and rate limits per host, shared by the executions of a batch.
    politeness: Option<std::sync::Arc<crate::run::politeness::Politeness>>,
}

/// A client, whose connections are pooled per host and kept alive, and the
/// gates that send the first request to each HTTPS origin alone.
///
/// The gate exists because the connection pool opens a connection for
/// every request that finds no idle one. Without it, the first requests of
/// a batch would each open a connection before any of them learned from
/// the TLS handshake (ALPN) that the server speaks HTTP/2, whose single
/// connection carries every request at once. Once a request to an origin
/// has received its response headers, later requests no longer wait.
struct Pool {
    client: Client,
    /// Per origin, such as `https://api.example.test:443`: whether a
    /// request has received its response headers. The map keeps one entry
    /// per origin for the life of the run.
    first_requests: Mutex<HashMap<String, Arc<tokio::sync::Mutex<bool>>>>,
}

impl Pool {
    fn new(client: Client) -> Pool {
        Pool {
            client,
            first_requests: Mutex::new(HashMap::new()),
        }
    }

    /// Waits until `url` may be sent. Returns the held gate when this is
    /// the first request to its HTTPS origin, so that other requests wait
    /// until it has received its response headers. Plain HTTP never waits,
    /// because the client speaks only HTTP/1.1 there. With `politeness`,
    /// [`Politeness::stop_waiting`] ends the wait, as after the first
    /// Ctrl-C of a batch, and the request is not sent.
    async fn wait_for_first_request(
        &self,
        url: &reqwest::Url,
        politeness: Option<&Politeness>,
    ) -> Result<Option<OwnedMutexGuard<bool>>, Stopped> {
        if url.scheme() != "https" {
            return Ok(None);
        }
        let gate = {
            let mut gates = self
                .first_requests
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            gates
                .entry(url.origin().ascii_serialization())
                .or_default()
                .clone()
        };
        let locked = gate.lock_owned();
        let guard = match politeness {
            Some(politeness) => politeness.wait(locked).await?,
            None => locked.await,
        };
        if *guard {
            Ok(None)
        } else {
            Ok(Some(guard))
        }
    }
}

impl Http {
    /// Creates the clients, which trust the public certificate authorities
    /// of the `webpki-roots` crate.
    pub fn new() -> Result<Http, reqwest::Error> {
        Http::with_ca_certificates(&[])
    }

    /// Creates the clients, which trust `ca_certificates` (DER, as
    /// [`crate::cacert::read_ca_certificates`] returns them) besides the
    /// public certificate authorities.
    pub fn with_ca_certificates(ca_certificates: &[CertificateDer<'static>]) -> Result<Http, reqwest::Error> {
        let user_agent = concat!("flowrun/", env!("CARGO_PKG_VERSION"));
        let builder = |policy: redirect::Policy| -> Result<Client, reqwest::Error> {
            let mut builder = Client::builder().user_agent(user_agent).redirect(policy);
            for certificate in ca_certificates {
                builder = builder.add_root_certificate(Certificate::from_der(certificate)?);
            }
            builder.build()
        };
        Ok(Http {
            following: Pool::new(builder(redirect::Policy::limited(MAX_REDIRECTS))?),
            manual: Pool::new(builder(redirect::Policy::none())?),
            politeness: None,
        })
    }

    /// Makes every request wait at its host's gate and rate limit, and a 429
    /// close the gate for every execution that shares `politeness`: for its
    /// `Retry-After`, or without a usable one for the backoff wait drawn.
    pub fn with_politeness(mut self, politeness: std::sync::Arc<crate::run::politeness::Politeness>) -> Http {
        self.politeness = Some(politeness);
        self
    }

    /// Ends the waits of every request at its host's gate, for its rate
    /// slot, before a retry or for the first response from its HTTPS
    /// origin, so that those requests are not sent. Without politeness it
    /// does nothing.
    pub fn stop_waiting(&self) {
        if let Some(politeness) = &self.politeness {
            politeness.stop_waiting();
        }
    }
}

/// A request ready to send.
pub struct Outgoing {
    pub method: reqwest::Method,
    pub url: reqwest::Url,
    pub headers: HeaderMap,
    pub body: Option<Bytes>,
    /// The URL as logs and reports show it, secrets redacted.
    pub display_url: String,
}

/// A response read in full.
#[derive(Debug)]
pub struct Exchange {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Debug)]
pub enum Failure {
    /// A final response outside 2xx and 3xx.
    Status(Exchange),
    Timeout(Duration),
    /// No connection could be made, so the server received nothing.
    Connection(String),
    /// The TLS handshake rejected the server's certificate, so the server
    /// received nothing. The text is the TLS library's reason.
    Certificate(String),
    /// The exchange broke after the request may have reached the server,
    /// such as a connection closed before or during the response.
    Interrupted(String),
    TooManyRedirects,
    /// Still 429 after every retry.
    TooManyRequests {
        requests: u32,
    },
    /// The server asked for a wait longer than the step allows.
    WaitTooLong {
        wait: Duration,
        max_wait: Duration,
    },
    /// The body exceeded this many bytes.
    BodyTooLarge(usize),
    /// The run stopped waiting, as after the first Ctrl-C of a batch, while
    /// the request waited for a `Retry-After`, its turn under a rate limit
    /// or the response headers of the first request to its HTTPS origin.
    /// This request was not sent.
    Stopped,
}

/// The parts of a step that sending one request uses.
pub struct Context<'a> {
    /// The step's name, for log events.
    pub step: &'a str,
    /// The position of the sending action in its step, from 0.
    pub action: usize,
    pub sleeper: &'a dyn Sleeper,
    /// Hides secrets in the messages that attempts record.
    pub redact: &'a dyn Fn(&str) -> String,
}

/// Sends `request`, retrying as `settings` allow, and records every attempt.
pub async fn send(
    http: &Http,
    request: &Outgoing,
    settings: &Settings,
    context: &Context<'_>,
    attempts: &mut Vec<Attempt>,
) -> Result<Exchange, Failure> {
    let redact = context.redact;
    let pool = if settings.follow_redirects {
        &http.following
    } else {
        &http.manual
    };
    let mut waited = Duration::ZERO;
    // Numbering goes on from earlier sends of the same action, such as a
    // model call's repair round or fallback, so every attempt has its own number.
    let mut number = attempts
        .iter()
        .filter(|attempt| attempt.action == context.action)
        .map(|attempt| attempt.number)
        .max()
        .unwrap_or(0);
    loop {
        number += 1;
        // The gate comes before the host's rate limit, so that requests
        // that waited at it still leave one rate interval apart.
        let first_request = pool
            .wait_for_first_request(&request.url, http.politeness.as_deref())
            .await
            .map_err(|_| Failure::Stopped)?;
        if let Some(politeness) = &http.politeness {
            politeness
                .before_request(&request.url)
                .await
                .map_err(|_| Failure::Stopped)?;
        }
        let started = Instant::now();
        let result = send_once(
            &pool.client,
            request,
            settings.timeout,
            settings.max_response_bytes,
            first_request,
        )
        .await;
        let duration = started.elapsed();
        attempts.push(Attempt {
            action: context.action,
            number,
            method: request.method.to_string(),
            url: request.display_url.clone(),
            status: match &result {
                Ok(exchange) => Some(exchange.status.as_u16()),
                Err(Failure::Status(exchange)) => Some(exchange.status.as_u16()),
                Err(_) => None,
            },
            duration,
            waited,
            error: result.as_ref().err().map(|failure| redact(&describe(failure))),
        });
        // Built only when the event is logged.
        let outcome = || match &result {
            Ok(exchange) | Err(Failure::Status(exchange)) => exchange.status.to_string(),
            Err(failure) => redact(&describe(failure)),
        };
        debug!(
            step = context.step,
            attempt = number,
            method = %request.method,
            url = %request.display_url,
            duration_ms = duration.as_millis() as u64,
            "attempt {number}: {} {} -> {} in {} ms",
            request.method,
            request.display_url,
            outcome(),
            duration.as_millis()
        );

        let retries_left = number <= settings.max_retries;
        let wait = match &result {
            Ok(exchange) if exchange.status == StatusCode::TOO_MANY_REQUESTS => {
                if !retries_left {
                    return Err(Failure::TooManyRequests { requests: number });
                }
                let header = exchange
                    .headers
                    .get(RETRY_AFTER)
                    .and_then(|value| value.to_str().ok());
                let wait = match header.map(|value| parse_retry_after(value, SystemTime::now())) {
                    Some(RetryAfter::Wait(wait)) if wait > settings.max_wait => {
                        return Err(Failure::WaitTooLong {
                            wait,
                            max_wait: settings.max_wait,
                        });
                    }
                    Some(RetryAfter::Wait(wait)) => wait,
                    Some(RetryAfter::Unusable) => {
                        let value = header.unwrap_or_default();
                        warn!(
                            step = context.step,
                            value, "ignoring the unparseable Retry-After `{value}`; backing off"
                        );
                        backoff(number, settings.max_wait)
                    }
                    None => backoff(number, settings.max_wait),
                };
                // The host's gate closes for this wait, the backoff drawn
                // included, so that the other executions hold their requests
                // to the host instead of collecting 429s of their own.
                if let Some(politeness) = &http.politeness {
                    politeness.hold(&request.url, wait);
                }
                wait
            }
            Ok(exchange)
                if exchange.status.is_server_error() && settings.retry_server_errors && retries_left =>
            {
                backoff(number, settings.max_wait)
            }
            Err(Failure::Connection(_)) if settings.retry_connection_errors && retries_left => {
                backoff(number, settings.max_wait)
            }
            Err(Failure::Interrupted(_)) if settings.retry_interrupted && retries_left => {
                backoff(number, settings.max_wait)
            }
            _ => {
                return match result {
                    Ok(exchange) if exchange.status.is_success() || exchange.status.is_redirection() => {
                        Ok(exchange)
                    }
                    Ok(exchange) => Err(Failure::Status(exchange)),
                    Err(failure) => Err(failure),
                };
            }
        };
        let reason = match &result {
            Ok(exchange) => exchange.status.to_string(),
            Err(failure) => redact(&describe(failure)),
        };
        warn!(
            step = context.step,
            status = result.as_ref().ok().map(|exchange| exchange.status.as_u16()),
            attempt = number + 1,
            wait_ms = wait.as_millis() as u64,
            reason = %reason,
            "{} {} failed with {reason}; attempt {} of {} in {}",
            request.method,
            request.display_url,
            number + 1,
            settings.max_retries + 1,
            format_duration(wait)
        );
        match &http.politeness {
            Some(politeness) => politeness
                .wait(context.sleeper.sleep(wait))
                .await
                .map_err(|_| Failure::Stopped)?,
            None => context.sleeper.sleep(wait).await,
        }
        waited = wait;
    }
}

/// Sends `request` once. `first_request` is the gate held by the first
/// request to an HTTPS origin. It opens for later requests once the
/// response headers have arrived over a connection now in the pool.
async fn send_once(
    client: &Client,
    request: &Outgoing,
    timeout: Duration,
    limit: usize,
    first_request: Option<OwnedMutexGuard<bool>>,
) -> Result<Exchange, Failure> {
    let mut builder = client
        .request(request.method.clone(), request.url.clone())
        .headers(request.headers.clone())
        .timeout(timeout);
    if let Some(body) = &request.body {
        builder = builder.body(body.clone());
    }
    let sent = builder.send().await;
    if let Some(mut connected) = first_request {
        *connected = sent.is_ok();
    }
    let mut response = sent.map_err(|error| classify(error, timeout))?;
    let status = response.status();
    let headers = std::mem::take(response.headers_mut());
    // A body that comes in one chunk is kept as it is, without a copy.
    let mut first = None;
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|error| classify(error, timeout))? {
        let received = first.as_ref().map_or(0, Bytes::len) + body.len();
        if received + chunk.len() > limit {
            return Err(Failure::BodyTooLarge(limit));
        }
        match first.take() {
            None if body.is_empty() => first = Some(chunk),
            earlier => {
                if let Some(earlier) = earlier {
                    body.extend_from_slice(&earlier);
                }
                body.extend_from_slice(&chunk);
            }
        }
    }
    let body = first.unwrap_or_else(|| Bytes::from(body));
    Ok(Exchange {
        status,
        headers,
        body,
    })
}

fn classify(error: reqwest::Error, timeout: Duration) -> Failure {
    if error.is_timeout() {
        Failure::Timeout(timeout)
    } else if error.is_redirect() {
        Failure::TooManyRedirects
    } else if let Some(reason) = certificate_error(&error) {
        Failure::Certificate(reason)
    } else if error.is_connect() {
        Failure::Connection(error_chain(&error))
    } else {
        Failure::Interrupted(error_chain(&error))
    }
}

/// Returns the TLS library's reason when the server's certificate was
/// rejected, such as "invalid peer certificate: UnknownIssuer". The connector reports
/// it inside nested `io::Error`s, whose `source` skips the wrapped error,
/// so each cause is unwrapped by hand.
fn certificate_error(error: &reqwest::Error) -> Option<String> {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let mut inner: &(dyn std::error::Error + 'static) = cause;
        while let Some(wrapped) = inner
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            inner = wrapped;
        }
        if let Some(tls @ rustls::Error::InvalidCertificate(_)) = inner.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        source = cause.source();
    }
    None
}

/// What failed and its innermost cause, such as "connection failed:
/// Connection refused (os error 111)", without the URL that reqwest's own
/// message carries.
fn error_chain(error: &reqwest::Error) -> String {
    let mut innermost = None;
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        innermost = Some(cause.to_string());
        source = cause.source();
    }
    match innermost {
        Some(cause) => format!("{}: {cause}", error_kind(error)),
        None => error_kind(error).to_string(),
    }
}

/// Says that a body is larger than `limit` bytes, in MiB when the limit is
/// a whole number of them.
fn format_size_limit(limit: usize) -> String {
    if limit.is_multiple_of(1 << 20) {
        format!("the response body is larger than {} MiB", limit >> 20)
    } else {
        format!("the response body is larger than {limit} bytes")
    }
}

/// Describes a failure in one line, for reports.
pub fn describe(failure: &Failure) -> String {
    match failure {
        Failure::Status(exchange) => format!("status {}", exchange.status),
        Failure::Timeout(timeout) => format!("timed out after {}", format_duration(*timeout)),
        Failure::Connection(message) | Failure::Interrupted(message) => message.clone(),
        Failure::Certificate(reason) => format!("the server's certificate is not trusted: {reason}"),
        Failure::TooManyRedirects => format!("more than {MAX_REDIRECTS} redirects"),
        Failure::TooManyRequests { requests } => format!("429 Too Many Requests after {requests} attempts"),
        Failure::WaitTooLong { wait, max_wait } => format!(
            "Retry-After asks for {}, more than the maximum wait of {}",
            format_duration(*wait),
            format_duration(*max_wait)
        ),
        Failure::BodyTooLarge(limit) => format_size_limit(*limit),
        Failure::Stopped => "not sent: the run was interrupted while the request waited".to_string(),
    }
}

/// Formats a duration as people write it: `250ms`, `10s`, `2m30s`.
pub fn format_duration(duration: Duration) -> String {
    if duration.as_secs() > 24 * 3600 {
        return format!("{}s", duration.as_secs());
    }
    let millis = duration.as_millis();
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let seconds = duration.as_secs();
    if !millis.is_multiple_of(1000) {
        return format!("{:.1}s", duration.as_secs_f64());
    }
    match (seconds / 3600, seconds % 3600 / 60, seconds % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

/// Names what failed without the URL, which reqwest's own message carries
/// and which may hold a secret.
fn error_kind(error: &reqwest::Error) -> &'static str {
    if error.is_connect() {
        "connection failed"
    } else if error.is_body() || error.is_decode() {
        "reading the response failed"
    } else {
        "request failed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_secs(10)), "10s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_secs(150)), "2m30s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(format_duration(Duration::from_secs(3725)), "1h2m5s");
    }
}
