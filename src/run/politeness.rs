//! Politeness towards the hosts a run calls, shared by every execution of a
//! batch: a gate per host that a 429 closes, and an optional rate limit per
//! host.
//!
//! A host is a scheme, a host name and a port. Every request waits at its
//! host's gate before it is sent. A 429 closes the gate for the wait before
//! its retry: the `Retry-After`, or without a usable one the backoff wait
//! the execution drew. So the other executions hold their next request to
//! the host instead of collecting 429s of their own.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// A request rate: `count` requests per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

/// The highest rate `--rate` accepts, in requests per second. Requests
/// leave one interval apart, and the interval is counted in whole
/// nanoseconds, so above this an interval could be off by more than 0.1%,
/// and above 10^9 per second it would be zero: no limit at all.
pub const MAX_PER_SECOND: u64 = 1_000_000;

impl Rate {
    /// Parses `50/s`, `600/m` or `1000/h`: a count from 1 up to
    /// [`MAX_PER_SECOND`] per second, so 1000000/s, 60000000/m or
    /// 3600000000/h.
    pub fn parse(text: &str) -> Result<Rate, String> {
        let (count, unit) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}` is not a rate; write it as COUNT/UNIT, such as 50/s"))?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            other => {
                return Err(format!(
                    "`{text}`: unknown unit `{other}`; use s, m or h, such as 50/s"
                ))
            }
        };
        let unit = unit.trim();
        let max = MAX_PER_SECOND * per.as_secs();
        let count_text = count.trim();
        let whole = !count_text.is_empty() && count_text.bytes().all(|byte| byte.is_ascii_digit());
        // Digits too many for a u64 are above the maximum too.
        let parsed = whole.then(|| count_text.parse::<u64>().unwrap_or(u64::MAX));
        match parsed {
            Some(count @ 1..) if count <= max => Ok(Rate {
                // The maximum, 3600000000/h, fits in a u32.
                count: count as u32,
                per,
            }),
            Some(1..) => Err(format!(
                "`{text}`: the count {count_text} is above the maximum of {max}/{unit}; give a whole number \
                 from 1 to {max}, which is {MAX_PER_SECOND} requests per second"
            )),
            _ => Err(format!(
                "`{text}`: the count must be a whole number from 1 to {max}, such as 50/{unit}"
            )),
        }
    }

    /// The time between two requests to one host.
    pub fn interval(self) -> Duration {
        self.per / self.count
    }
}

/// What a request to a host does now.
enum Decision {
    Go,
    /// The gate is closed until then.
    Closed(Instant),
    /// The request has the rate limit's slot at this instant.
    Slot(Instant),
}

/// The shared state of every host a run has called.
#[derive(Debug)]
pub struct Politeness {
    interval: Option<Duration>,
    hosts: Mutex<HashMap<String, Host>>,
    /// Set once waits end early, as after the first Ctrl-C of a batch.
    stopped: watch::Sender<bool>,
}

/// The error of a wait that [`Politeness::stop_waiting`] ended: the request
/// that waited was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

#[derive(Debug, Clone, Copy)]
struct Host {
    /// No request goes to the host before this instant.
    open_at: Instant,
    /// The earliest instant the rate limit lets the next request go.
    next_slot: Instant,
}

impl Politeness {
    /// Creates the shared state; with a rate, requests to one host are
    /// spaced evenly, one every `rate.interval()`, which is a token bucket
    /// holding one token.
    pub fn new(rate: Option<Rate>) -> Politeness {
        Politeness {
            interval: rate.map(Rate::interval),
            hosts: Mutex::new(HashMap::new()),
            stopped: watch::channel(false).0,
        }
    }

    /// Ends every wait for a gate, a rate slot or a retry at once, and every
    /// such wait after it. Requests that need no wait still go.
    pub fn stop_waiting(&self) {
        self.stopped.send_replace(true);
    }

    /// Runs `wait` unless [`Politeness::stop_waiting`] ends it first. A wait
    /// that is over when it is first polled, such as a free lock, finishes
    /// even after the stop.
    pub async fn wait<T>(&self, wait: impl Future<Output = T>) -> Result<T, Stopped> {
        let mut stopped = self.stopped.subscribe();
        tokio::select! {
            biased;
            value = wait => Ok(value),
            _ = stopped.wait_for(|stopped| *stopped) => Err(Stopped),
        }
    }

    /// Waits until a request to `url`'s host may go: until its gate is open
    /// and, with a rate limit, until it has its own slot. Fails when the
    /// wait is ended by [`Politeness::stop_waiting`].
    pub async fn before_request(&self, url: &reqwest::Url) -> Result<(), Stopped> {
        let key = host_key(url);
        loop {
            match self.decide(&key) {
                Decision::Go => return Ok(()),
                Decision::Closed(open_at) => self.wait(tokio::time::sleep_until(open_at)).await?,
                Decision::Slot(slot) => {
                    self.wait(tokio::time::sleep_until(slot)).await?;
                    // A gate closed while the request waited for its slot
                    // sends it back to the queue, so that the requests it
                    // held leave one interval apart when it opens.
                    if self.gate_open(&key) {
                        return Ok(());
                    }
                }
            }
        }
    }

    fn decide(&self, key: &str) -> Decision {
        let now = Instant::now();
        let mut hosts = self.hosts.lock().unwrap_or_else(|poison| poison.into_inner());
        // Only a host's first request copies its key.
        if !hosts.contains_key(key) {
            hosts.insert(
                key.to_string(),
                Host {
                    open_at: now,
                    next_slot: now,
                },
            );
        }
        let Some(host) = hosts.get_mut(key) else {
            return Decision::Go;
        };
        if host.open_at > now {
            return Decision::Closed(host.open_at);
        }
        let Some(interval) = self.interval else {
            return Decision::Go;
        };
        let slot = host.next_slot.max(now);
        host.next_slot = slot + interval;
        if slot <= now {
            Decision::Go
        } else {
            Decision::Slot(slot)
        }
    }

    fn gate_open(&self, key: &str) -> bool {
        let now = Instant::now();
        let hosts = self.hosts.lock().unwrap_or_else(|poison| poison.into_inner());
        hosts.get(key).is_none_or(|host| host.open_at <= now)
    }

    /// Closes `url`'s host's gate for `wait`, the wait before a 429's
    /// retry. A gate already closed for longer stays closed.
    pub fn hold(&self, url: &reqwest::Url, wait: Duration) {
        let now = Instant::now();
        let mut hosts = self.hosts.lock().unwrap_or_else(|poison| poison.into_inner());
        let host = hosts.entry(host_key(url)).or_insert(Host {
            open_at: now,
            next_slot: now,
        });
        host.open_at = host.open_at.max(now + wait);
        // With a rate limit, the requests held at the gate leave it one
        // interval apart rather than all at once.
        host.next_slot = host.next_slot.max(host.open_at);
    }
}

/// The scheme, host and port of `url`, such as `https://api.example.com:443`.
fn host_key(url: &reqwest::Url) -> String {
    let (scheme, host) = (url.scheme(), url.host_str().unwrap_or_default());
    let port = url.port_or_known_default().unwrap_or(0).to_string();
    let mut key = String::with_capacity(scheme.len() + host.len() + port.len() + 4);
    for part in [scheme, "://", host, ":", &port] {
        key.push_str(part);
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> reqwest::Url {
        reqwest::Url::parse(text).unwrap()
    }

    #[test]
    fn rates_parse_with_their_unit() {
        assert_eq!(
            Rate::parse("50/s").unwrap(),
            Rate {
                count: 50,
                per: Duration::from_secs(1)
            }
        );
        assert_eq!(
            Rate::parse("600/m").unwrap().interval(),
            Duration::from_millis(100)
        );
        assert_eq!(Rate::parse("3600/h").unwrap().interval(), Duration::from_secs(1));
        assert_eq!(
            Rate::parse("50").unwrap_err(),
            "`50` is not a rate; write it as COUNT/UNIT, such as 50/s"
        );
        assert_eq!(
            Rate::parse("0/s").unwrap_err(),
            "`0/s`: the count must be a whole number from 1 to 1000000, such as 50/s"
        );
        assert_eq!(
            Rate::parse("1.5/m").unwrap_err(),
            "`1.5/m`: the count must be a whole number from 1 to 60000000, such as 50/m"
        );
    }

    #[test]
    fn rates_up_to_a_million_per_second() {
        assert_eq!(
            Rate::parse("1000000/s").unwrap().interval(),
            Duration::from_micros(1)
        );
        assert_eq!(
            Rate::parse("60000000/m").unwrap().interval(),
            Duration::from_micros(1)
        );
        assert_eq!(
            Rate::parse("3600000000/h").unwrap().interval(),
            Duration::from_micros(1)
        );
        assert_eq!(
            Rate::parse("1000001/s").unwrap_err(),
            "`1000001/s`: the count 1000001 is above the maximum of 1000000/s; give a whole number from 1 \
             to 1000000, which is 1000000 requests per second"
        );
        assert_eq!(
            Rate::parse("4294967295/s").unwrap_err(),
            "`4294967295/s`: the count 4294967295 is above the maximum of 1000000/s; give a whole number \
             from 1 to 1000000, which is 1000000 requests per second"
        );
        assert_eq!(
            Rate::parse("99999999999999999999999/h").unwrap_err(),
            "`99999999999999999999999/h`: the count 99999999999999999999999 is above the maximum of \
             3600000000/h; give a whole number from 1 to 3600000000, which is 1000000 requests per second"
        );
        assert_eq!(
            Rate::parse("5/d").unwrap_err(),
            "`5/d`: unknown unit `d`; use s, m or h, such as 50/s"
        );
    }

    #[test]
    fn hosts_differ_by_scheme_host_and_port() {
        assert_eq!(host_key(&url("http://127.0.0.1/a?b")), "http://127.0.0.1:80");
        assert_eq!(host_key(&url("https://Example.com/x")), "https://example.com:443");
        assert_eq!(host_key(&url("http://127.0.0.1:8080/")), "http://127.0.0.1:8080");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_delays_only_its_own_host() {
        let politeness = Politeness::new(None);
        let started = Instant::now();
        politeness.hold(&url("http://127.0.0.1:9000/x"), Duration::from_secs(3));
        politeness
            .before_request(&url("http://127.0.0.1:9001/y"))
            .await
            .unwrap();
        assert_eq!(started.elapsed(), Duration::ZERO);
        politeness
            .before_request(&url("http://127.0.0.1:9000/z"))
            .await
            .unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        // A shorter hold does not shorten a longer one.
        politeness.hold(&url("http://127.0.0.1:9000/x"), Duration::from_secs(5));
        politeness.hold(&url("http://127.0.0.1:9000/x"), Duration::from_secs(1));
        politeness
            .before_request(&url("http://127.0.0.1:9000/z"))
            .await
            .unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(8));
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_spaces_requests_evenly() {
        let politeness = Politeness::new(Some(Rate::parse("4/s").unwrap()));
        let started = Instant::now();
        let mut times = Vec::new();
        for _ in 0..4 {
            politeness
                .before_request(&url("http://127.0.0.1:9000/"))
                .await
                .unwrap();
            times.push(started.elapsed().as_millis());
        }
        assert_eq!(times, [0, 250, 500, 750]);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_held_by_a_gate_keep_the_rate() {
        let politeness = std::sync::Arc::new(Politeness::new(Some(Rate::parse("10/s").unwrap())));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let politeness = politeness.clone();
            tasks.push(tokio::spawn(async move {
                politeness
                    .before_request(&url("http://127.0.0.1:9000/"))
                    .await
                    .unwrap();
                started.elapsed().as_millis()
            }));
        }
        // The first request has left; the others hold slots at 100, 200
        // and 300 ms when a 429 closes the gate until 1050 ms.
        tokio::time::sleep(Duration::from_millis(50)).await;
        politeness.hold(&url("http://127.0.0.1:9000/"), Duration::from_secs(1));
        let mut times = Vec::new();
        for task in tasks {
            times.push(task.await.unwrap());
        }
        times.sort_unstable();
        assert_eq!(times, [0, 1050, 1150, 1250]);
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_ends_the_waits_but_not_free_requests() {
        let politeness = std::sync::Arc::new(Politeness::new(None));
        politeness.hold(&url("http://127.0.0.1:9000/"), Duration::from_secs(60));
        let started = Instant::now();
        let held = {
            let politeness = politeness.clone();
            tokio::spawn(async move { politeness.before_request(&url("http://127.0.0.1:9000/")).await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        politeness.stop_waiting();
        assert_eq!(held.await.unwrap(), Err(Stopped));
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert_eq!(
            politeness.before_request(&url("http://127.0.0.1:9001/")).await,
            Ok(())
        );
        assert_eq!(
            politeness.wait(tokio::time::sleep(Duration::from_secs(5))).await,
            Err(Stopped)
        );
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        // A wait that is over at once, such as a free lock, still ends with
        // its value.
        let free = tokio::sync::Mutex::new(7);
        assert_eq!(politeness.wait(free.lock()).await.map(|value| *value), Ok(7));
    }

    #[test]
    fn rates_too_large_name_the_maximum() {
        assert_eq!(
            Rate::parse("100000000000/s").unwrap_err(),
            "`100000000000/s`: the count 100000000000 is above the maximum of 1000000/s; give a whole \
             number from 1 to 1000000, which is 1000000 requests per second"
        );
        assert_eq!(
            Rate::parse("-5/s").unwrap_err(),
            "`-5/s`: the count must be a whole number from 1 to 1000000, such as 50/s"
        );
    }
}
