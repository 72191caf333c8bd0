//! Retry timing: `Retry-After` parsing, exponential backoff with full
//! jitter, and the clock the waits run on.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use rand::Rng;

/// The wait a `Retry-After` header requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// Wait this long; zero for a date in the past.
    Wait(Duration),
    /// The header is absent or cannot be parsed, so backoff applies.
    Unusable,
}

/// Parses a `Retry-After` value: delta-seconds, or an HTTP-date in any of
/// the three formats RFC 9110 allows (IMF-fixdate, RFC 850, asctime).
pub fn parse_retry_after(value: &str, now: SystemTime) -> RetryAfter {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit()) {
        // A number too large for u64 is still a valid, very long wait.
        let seconds = value.parse::<u64>().unwrap_or(u64::MAX);
        return RetryAfter::Wait(Duration::from_secs(seconds));
    }
    match httpdate::parse_http_date(value) {
        Ok(date) => RetryAfter::Wait(date.duration_since(now).unwrap_or(Duration::ZERO)),
        Err(_) => RetryAfter::Unusable,
    }
}

/// The cap of the backoff before retry number `retry` (1-based):
/// 1 s, 2 s, 4 s and so on, never above `max_wait`.
pub fn backoff_cap(retry: u32, max_wait: Duration) -> Duration {
    let exponent = retry.saturating_sub(1).min(30);
    Duration::from_secs(1u64 << exponent).min(max_wait)
}

/// Draws a backoff wait with full jitter: uniform between zero and the cap.
pub fn backoff(retry: u32, max_wait: Duration) -> Duration {
    let cap = backoff_cap(retry, max_wait);
    let millis = cap.as_millis() as u64;
    Duration::from_millis(rand::thread_rng().gen_range(0..=millis))
}

/// Where retry waits happen. The command line sleeps on the tokio clock;
/// tests record the waits instead, so that a 120 s wait takes no time.
pub trait Sleeper: Send + Sync {
    fn sleep(
        &self,
        duration: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>;
}

pub struct TokioSleeper;

impl Sleeper for TokioSleeper {
    fn sleep(
        &self,
        duration: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// Records each wait and returns at once.
#[derive(Default)]
pub struct RecordingSleeper {
    waits: Mutex<Vec<Duration>>,
}

impl RecordingSleeper {
    pub fn waits(&self) -> Vec<Duration> {
        self.waits.lock().map(|waits| waits.clone()).unwrap_or_default()
    }
}

impl Sleeper for RecordingSleeper {
    fn sleep(
        &self,
        duration: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        if let Ok(mut waits) = self.waits.lock() {
            waits.push(duration);
        }
        Box::pin(std::future::ready(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn retry_after_seconds() {
        assert_eq!(
            parse_retry_after("3", at(0)),
            RetryAfter::Wait(Duration::from_secs(3))
        );
        assert_eq!(parse_retry_after(" 0 ", at(0)), RetryAfter::Wait(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", at(0)),
            RetryAfter::Wait(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn retry_after_dates_in_all_three_formats() {
        // 784111777 is Sun, 06 Nov 1994 08:49:37 GMT.
        let now = at(784_111_777 - 10);
        for value in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(
                parse_retry_after(value, now),
                RetryAfter::Wait(Duration::from_secs(10)),
                "{value}"
            );
        }
    }

    #[test]
    fn retry_after_past_date_is_zero() {
        let now = at(784_111_777 + 60);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            RetryAfter::Wait(Duration::ZERO)
        );
    }

    #[test]
    fn retry_after_garbage_is_unusable() {
        for value in ["", "soon", "-1", "1.5", "Sun, 32 Nov 1994 08:49:37 GMT"] {
            assert_eq!(parse_retry_after(value, at(0)), RetryAfter::Unusable, "{value:?}");
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let max = Duration::from_secs(120);
        assert_eq!(backoff_cap(1, max), Duration::from_secs(1));
        assert_eq!(backoff_cap(2, max), Duration::from_secs(2));
        assert_eq!(backoff_cap(3, max), Duration::from_secs(4));
        assert_eq!(backoff_cap(8, max), Duration::from_secs(120));
        assert_eq!(
            backoff_cap(1, Duration::from_millis(300)),
            Duration::from_millis(300)
        );
        for retry in 1..6 {
            assert!(backoff(retry, max) <= backoff_cap(retry, max));
        }
    }
}
