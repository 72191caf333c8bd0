//! HTTP/1.1 server for integration tests.
//!
//! `TestServer` listens on 127.0.0.1 on a port chosen by the OS, records every request it reads
//! and replies to each one with a [`Reply`] chosen by a handler or by a fixed script. It uses plain
//! std threads and sockets, one thread per connection, so it serves in-process async clients and
//! child processes such as the `flowrun` binary alike, and it needs no async runtime.
//!
//! The request parser is strict on purpose. A malformed request gets `400 Bad Request` with the
//! reason in the body and on stderr, and it is not recorded, so a client bug fails the test
//! instead of passing unnoticed.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Maximum size of a request line plus its header fields, and of a chunk-size line or the
/// trailer section of a chunked body.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Number of bytes requested from the socket per `read` call.
const READ_CHUNK_BYTES: usize = 8 * 1024;

/// One request as the server read it.
#[derive(Clone)]
pub struct Recorded {
    /// Exact bytes of the request line, header fields and body as received. For a chunked body
    /// this includes the chunk framing and any trailer fields.
    pub raw: Vec<u8>,
    pub method: String,
    /// Request-target exactly as sent, without percent-decoding.
    pub target: String,
    /// Header fields in the order received, with names in the case the client used. Values are
    /// trimmed of surrounding spaces and tabs and decoded as lossy UTF-8. Trailer fields of a
    /// chunked body appear only in `raw`.
    pub headers: Vec<(String, String)>,
    /// Body with any chunked framing removed.
    pub body: Vec<u8>,
    /// Time at which the last byte of the request was read.
    pub received_at: Instant,
}

impl Recorded {
    /// Returns the value of the first header field named `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(field_name, _)| field_name.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Returns the values of all header fields named `name`, compared case-insensitively, in the
    /// order received.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(field_name, _)| field_name.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
            .collect()
    }

    /// Returns the body as text.
    ///
    /// # Panics
    ///
    /// Panics if the body is not valid UTF-8.
    pub fn body_text(&self) -> &str {
        match std::str::from_utf8(&self.body) {
            Ok(text) => text,
            Err(error) => panic!(
                "request body is not valid UTF-8 ({error}): {:?}",
                String::from_utf8_lossy(&self.body)
            ),
        }
    }
}

// Shows the byte fields as lossy UTF-8 so that assertion failures are readable.
impl fmt::Debug for Recorded {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Recorded")
            .field("method", &self.method)
            .field("target", &self.target)
            .field("headers", &self.headers)
            .field("body", &String::from_utf8_lossy(&self.body))
            .field("raw", &String::from_utf8_lossy(&self.raw))
            .field("received_at", &self.received_at)
            .finish()
    }
}

/// What the server does with a request after recording it.
#[derive(Clone, Debug)]
pub struct Reply {
    action: Action,
    delay: Duration,
}

#[derive(Clone, Debug)]
enum Action {
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    Hang,
    Close,
}

impl Reply {
    /// Creates a response with the given status code, no header fields and an empty body.
    ///
    /// # Panics
    ///
    /// Panics unless `status` is in 200..=999. An informational (1xx) status would make the
    /// client wait for a final response that never comes.
    pub fn new(status: u16) -> Reply {
        assert!(
            (200..=999).contains(&status),
            "test server reply status must be in 200..=999, got {status}"
        );
        Reply {
            action: Action::Respond {
                status,
                headers: Vec::new(),
                body: Vec::new(),
            },
            delay: Duration::ZERO,
        }
    }

    /// Creates a response with the given status code and an empty body. Same as [`Reply::new`].
    pub fn status(status: u16) -> Reply {
        Reply::new(status)
    }

    /// Creates a response with `value` serialized as the body and `Content-Type: application/json`.
    pub fn json(status: u16, value: serde_json::Value) -> Reply {
        let body = serde_json::to_vec(&value).expect("serializing a serde_json::Value cannot fail");
        Reply::new(status)
            .header("Content-Type", "application/json")
            .body(body)
    }

    /// Creates a reply that sends no response. The connection stays open until the server is
    /// dropped, even if the client closes its side earlier.
    pub fn hang() -> Reply {
        Reply {
            action: Action::Hang,
            delay: Duration::ZERO,
        }
    }

    /// Creates a reply that closes the connection without sending a response.
    pub fn close() -> Reply {
        Reply {
            action: Action::Close,
            delay: Duration::ZERO,
        }
    }

    /// Adds a header field to the response. Fields are sent in the order added.
    ///
    /// # Panics
    ///
    /// Panics if the reply is not a response, if `name` is `Content-Length` or
    /// `Transfer-Encoding` (the server sets the framing itself), or if `name` or `value` contains
    /// CR or LF.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Reply {
        let name = name.into();
        let value = value.into();
        assert!(
            !name.eq_ignore_ascii_case("content-length") && !name.eq_ignore_ascii_case("transfer-encoding"),
            "test server sets {name} itself from the reply body"
        );
        assert!(
            !name.contains(['\r', '\n']) && !value.contains(['\r', '\n']),
            "header field {name:?}: {value:?} contains CR or LF"
        );
        match &mut self.action {
            Action::Respond { headers, .. } => headers.push((name, value)),
            Action::Hang | Action::Close => {
                panic!("header() applies only to a response, not to {:?}", self.action)
            }
        }
        self
    }

    /// Sets the response body, replacing any earlier body.
    ///
    /// # Panics
    ///
    /// Panics if the reply is not a response, or if the body is not empty and the status is
    /// 204 or 304, which cannot have a body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Reply {
        let new_body = body.into();
        match &mut self.action {
            Action::Respond { status, body, .. } => {
                assert!(
                    new_body.is_empty() || !status_forbids_body(*status),
                    "a {status} response cannot have a body"
                );
                *body = new_body;
            }
            Action::Hang | Action::Close => {
                panic!("body() applies only to a response, not to {:?}", self.action)
            }
        }
        self
    }

    /// Makes the server wait for `delay` after reading the request and before acting on this
    /// reply. Dropping the server ends the wait early and closes the connection.
    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

/// Returns whether a response with this status never has a body, so it gets no Content-Length.
fn status_forbids_body(status: u16) -> bool {
    status == 204 || status == 304
}

/// HTTP/1.1 server on 127.0.0.1 that records requests and replies with [`Reply`] values.
///
/// Dropping the server stops accepting connections, shuts down every open connection (which
/// also ends hanging and delayed replies) and returns without waiting for connection threads.
/// If the handler panicked, the drop panics with that message unless the thread is already
/// panicking, so an assertion inside a handler fails the test.
pub struct TestServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server that replies to every request with `handler(&request)`.
    ///
    /// If the handler panics, the client gets a 500 response and the panic is raised again when
    /// the server is dropped.
    pub fn start<F>(handler: F) -> TestServer
    where
        F: Fn(&Recorded) -> Reply + Send + Sync + 'static,
    {
        TestServer::start_with(Responder::Handler(Box::new(handler)))
    }

    /// Starts a server that replies to the Nth request, counted in the order requests are
    /// recorded, with the Nth reply, and to every request after the script ends with the last one.
    ///
    /// # Panics
    ///
    /// Panics if `replies` is empty.
    pub fn scripted(replies: Vec<Reply>) -> TestServer {
        assert!(
            !replies.is_empty(),
            "TestServer::scripted needs at least one reply"
        );
        TestServer::start_with(Responder::Script(replies))
    }

    fn start_with(responder: Responder) -> TestServer {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .unwrap_or_else(|error| panic!("test server failed to bind 127.0.0.1:0: {error}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("test server failed to read its address: {error}"));
        let shared = Arc::new(Shared {
            addr,
            responder,
            requests: Mutex::new(Vec::new()),
            state: Mutex::new(State::default()),
            stopping_changed: Condvar::new(),
        });

        let accept_shared = Arc::clone(&shared);
        let accept_thread = thread::Builder::new()
            .name(format!("test-server-{}-accept", addr.port()))
            .spawn(move || accept_connections(&accept_shared, listener))
            .unwrap_or_else(|error| panic!("test server failed to spawn its accept thread: {error}"));

        TestServer {
            addr,
            shared,
            accept_thread: Some(accept_thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns the base URL, `http://127.0.0.1:PORT`, with no trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Returns copies of all requests recorded so far, in the order they were completely read.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }

    pub fn request_count(&self) -> usize {
        lock(&self.shared.requests).len()
    }

    /// Returns the number of TCP connections accepted so far, which shows whether a client
    /// reused a connection.
    pub fn connection_count(&self) -> usize {
        lock(&self.shared.state).accepted_connections
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let open_connections = {
            let mut state = lock(&self.shared.state);
            state.stopping = true;
            std::mem::take(&mut state.open_connections)
        };
        self.shared.stopping_changed.notify_all();

        // Shutting down a clone of each socket ends blocked reads and writes in the
        // connection threads, which then exit on their own.
        for stream in open_connections.into_values() {
            let _ = stream.shutdown(Shutdown::Both);
        }

        // The accept thread is blocked in accept(), so a connection of our own wakes it up, and
        // it then reads `stopping`. If that connection fails, the thread is left blocked rather
        // than joined, because joining would hang.
        let woke_accept_thread = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)).is_ok();
        if let Some(accept_thread) = self.accept_thread.take() {
            if woke_accept_thread {
                let _ = accept_thread.join();
            } else {
                eprintln!(
                    "test server at {}: failed to wake the accept thread, leaving it running",
                    self.addr
                );
            }
        }

        let handler_panic = lock(&self.shared.state).handler_panic.take();
        if let Some(message) = handler_panic {
            if !thread::panicking() {
                panic!("test server handler panicked: {message}");
            }
        }
    }
}

/// State shared between the `TestServer` handle, the accept thread and connection threads.
struct Shared {
    addr: SocketAddr,
    responder: Responder,
    requests: Mutex<Vec<Recorded>>,
    state: Mutex<State>,
    /// Signalled once `State::stopping` becomes true.
    stopping_changed: Condvar,
}

enum Responder {
    Handler(Box<dyn Fn(&Recorded) -> Reply + Send + Sync>),
    Script(Vec<Reply>),
}

#[derive(Default)]
struct State {
    stopping: bool,
    /// Clones of the sockets of open connections, keyed by connection id, so that dropping the
    /// server can shut them down.
    open_connections: HashMap<u64, TcpStream>,
    accepted_connections: usize,
    next_connection_id: u64,
    /// Message of the first handler panic, raised again when the server is dropped.
    handler_panic: Option<String>,
}

impl Shared {
    /// Registers an accepted connection and returns its id, or `None` if the server is stopping
    /// or the socket cannot be cloned, in which case the caller drops the connection.
    fn register_connection(&self, stream: &TcpStream) -> Option<u64> {
        let mut state = lock(&self.state);
        if state.stopping {
            return None;
        }
        let clone = match stream.try_clone() {
            Ok(clone) => clone,
            Err(error) => {
                eprintln!(
                    "test server at {}: failed to clone an accepted socket, dropping the connection: {error}",
                    self.addr
                );
                return None;
            }
        };
        let id = state.next_connection_id;
        state.next_connection_id += 1;
        state.accepted_connections += 1;
        state.open_connections.insert(id, clone);
        Some(id)
    }

    /// Forgets a finished connection. The socket closes once the connection thread also drops
    /// its own handle.
    fn unregister_connection(&self, id: u64) {
        lock(&self.state).open_connections.remove(&id);
    }

    fn is_stopping(&self) -> bool {
        lock(&self.state).stopping
    }

    /// Blocks until the server is stopping or `timeout` has passed, and returns whether the
    /// server is stopping. `None` waits without a time limit.
    fn wait_until_stopping(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|timeout| Instant::now() + timeout);
        let mut state = lock(&self.state);
        while !state.stopping {
            match deadline {
                None => {
                    state = self
                        .stopping_changed
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return false;
                    }
                    state = self
                        .stopping_changed
                        .wait_timeout(state, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        }
        true
    }

    /// Records `request` and returns the reply for it.
    fn record_and_choose_reply(&self, request: Recorded) -> Reply {
        // The script index is taken under the same lock as the push, so the Nth recorded
        // request gets the Nth reply even when connections race.
        let index = {
            let mut requests = lock(&self.requests);
            requests.push(request.clone());
            requests.len() - 1
        };

        match &self.responder {
            Responder::Script(replies) => replies[index.min(replies.len() - 1)].clone(),
            Responder::Handler(handler) => {
                match panic::catch_unwind(AssertUnwindSafe(|| handler(&request))) {
                    Ok(reply) => reply,
                    Err(payload) => {
                        let message = panic_message(payload.as_ref());
                        let mut state = lock(&self.state);
                        if state.handler_panic.is_none() {
                            state.handler_panic = Some(message.clone());
                        }
                        Reply::new(500).body(format!("test server handler panicked: {message}"))
                    }
                }
            }
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_string()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Locks `mutex`, ignoring poisoning. No lock in this file is held across code that can panic
/// halfway through an update, so the data stays consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn accept_connections(shared: &Arc<Shared>, listener: TcpListener) {
    for incoming in listener.incoming() {
        let stream = match incoming {
            Ok(stream) => stream,
            Err(error) => {
                if shared.is_stopping() {
                    return;
                }
                eprintln!("test server at {}: accept failed: {error}", shared.addr);
                // Errors such as running out of file descriptors tend to repeat, so back off
                // instead of spinning.
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };

        let Some(id) = shared.register_connection(&stream) else {
            if shared.is_stopping() {
                return;
            }
            continue;
        };

        let connection_shared = Arc::clone(shared);
        let spawned = thread::Builder::new()
            .name(format!("test-server-{}-connection-{id}", shared.addr.port()))
            .spawn(move || {
                serve_connection(&connection_shared, &stream);
                connection_shared.unregister_connection(id);
                drop(stream);
            });
        if let Err(error) = spawned {
            eprintln!(
                "test server at {}: failed to spawn a connection thread, dropping the connection: {error}",
                shared.addr
            );
            shared.unregister_connection(id);
        }
    }
}

/// Reads requests from one connection and replies to them until the connection should close.
fn serve_connection(shared: &Shared, stream: &TcpStream) {
    let mut reader = RequestReader::new(stream);
    loop {
        let request = match reader.read_request() {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(RequestError::Malformed(reason)) => {
                eprintln!(
                    "test server at {}: rejected a malformed request with 400: {reason}",
                    shared.addr
                );
                let written = write_response(
                    stream,
                    &ResponseParts {
                        status: 400,
                        headers: &[],
                        body: reason.as_bytes(),
                        head_only: false,
                        connection: ConnectionHeader::Close,
                    },
                );
                if written.is_ok() {
                    close_after_response(stream);
                }
                return;
            }
            Err(RequestError::Truncated { bytes_read }) => {
                if !shared.is_stopping() {
                    eprintln!(
                        "test server at {}: client closed connection mid-request, after {bytes_read} bytes",
                        shared.addr
                    );
                }
                return;
            }
            Err(RequestError::Io(error)) => {
                if !shared.is_stopping() {
                    eprintln!(
                        "test server at {}: failed to read a request: {error}",
                        shared.addr
                    );
                }
                return;
            }
        };

        let head_only = request.recorded.method == "HEAD";
        let client_wants_close = request.client_wants_close;
        let http_1_0 = request.http_1_0;
        let reply = shared.record_and_choose_reply(request.recorded);

        if !reply.delay.is_zero() && shared.wait_until_stopping(Some(reply.delay)) {
            return;
        }

        let (status, headers, body) = match reply.action {
            Action::Respond {
                status,
                headers,
                body,
            } => (status, headers, body),
            Action::Hang => {
                shared.wait_until_stopping(None);
                return;
            }
            Action::Close => return,
        };

        // A Connection field set by the reply replaces the one the server would add.
        let reply_connection_tokens: Vec<String> = headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("connection"))
            .flat_map(|(_, value)| comma_separated_tokens(value))
            .collect();
        let reply_wants_close = reply_connection_tokens.iter().any(|token| token == "close");
        let close_after = client_wants_close || reply_wants_close;
        let connection = if !reply_connection_tokens.is_empty() {
            ConnectionHeader::None
        } else if close_after {
            ConnectionHeader::Close
        } else if http_1_0 {
            ConnectionHeader::KeepAlive
        } else {
            ConnectionHeader::None
        };

        let written = write_response(
            stream,
            &ResponseParts {
                status,
                headers: &headers,
                body: &body,
                head_only,
                connection,
            },
        );
        if written.is_err() {
            return;
        }
        if close_after {
            close_after_response(stream);
            return;
        }
    }
}

/// Sends FIN and discards input until the client closes or a short timeout passes.
///
/// Closing a socket that still has unread input makes the kernel send RST, and a client that
/// receives RST may discard the response before reading it. Unread input is likely after a
/// rejected request whose body was never read.
fn close_after_response(stream: &TcpStream) {
    if stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    if stream.set_read_timeout(Some(Duration::from_millis(200))).is_err() {
        return;
    }
    let mut discarded = [0u8; READ_CHUNK_BYTES];
    let mut reader = stream;
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        match reader.read(&mut discarded) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

enum ConnectionHeader {
    None,
    Close,
    KeepAlive,
}

struct ResponseParts<'a> {
    status: u16,
    headers: &'a [(String, String)],
    body: &'a [u8],
    /// Whether the request was HEAD, so the body is counted in Content-Length but not sent.
    head_only: bool,
    connection: ConnectionHeader,
}

fn write_response(mut stream: &TcpStream, parts: &ResponseParts<'_>) -> io::Result<()> {
    let mut response = format!("HTTP/1.1 {} {}\r\n", parts.status, reason_phrase(parts.status)).into_bytes();
    for (name, value) in parts.headers {
        response.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if !status_forbids_body(parts.status) {
        response.extend_from_slice(format!("Content-Length: {}\r\n", parts.body.len()).as_bytes());
    }
    match parts.connection {
        ConnectionHeader::None => {}
        ConnectionHeader::Close => response.extend_from_slice(b"Connection: close\r\n"),
        ConnectionHeader::KeepAlive => response.extend_from_slice(b"Connection: keep-alive\r\n"),
    }
    response.extend_from_slice(b"\r\n");
    if !parts.head_only && !status_forbids_body(parts.status) {
        response.extend_from_slice(parts.body);
    }
    stream.write_all(&response)?;
    stream.flush()
}

/// Returns a reason phrase for `status`, generic for codes not listed. HTTP/1.1 clients do not
/// act on the reason phrase, so generic text is enough.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => match status / 100 {
            2 => "Success",
            3 => "Redirection",
            4 => "Client Error",
            5 => "Server Error",
            _ => "Unknown",
        },
    }
}

/// Splits a list-valued header field such as Connection into lowercase tokens.
fn comma_separated_tokens(value: &str) -> impl Iterator<Item = String> + '_ {
    value
        .split(',')
        .map(|token| token.trim_matches([' ', '\t']).to_ascii_lowercase())
        .filter(|token| !token.is_empty())
}

enum RequestError {
    /// The request breaks HTTP/1.1 syntax or uses a feature this server does not support.
    Malformed(String),
    /// The client closed the connection before the request was complete.
    Truncated {
        bytes_read: usize,
    },
    Io(io::Error),
}

impl From<io::Error> for RequestError {
    fn from(error: io::Error) -> RequestError {
        RequestError::Io(error)
    }
}

/// A completely read request plus the connection details needed to reply to it.
struct ParsedRequest {
    recorded: Recorded,
    client_wants_close: bool,
    http_1_0: bool,
}

enum BodyFraming {
    None,
    ContentLength(usize),
    Chunked,
}

/// Buffered reader for the requests on one connection. Bytes read past the end of one request
/// stay buffered for the next, so pipelined requests work.
struct RequestReader<'a> {
    stream: &'a TcpStream,
    buffer: Vec<u8>,
    /// Bytes of the current request consumed so far, used to build `Recorded::raw`.
    raw: Vec<u8>,
}

impl<'a> RequestReader<'a> {
    fn new(stream: &'a TcpStream) -> RequestReader<'a> {
        RequestReader {
            stream,
            buffer: Vec::new(),
            raw: Vec::new(),
        }
    }

    /// Reads one complete request. Returns `Ok(None)` if the client closed the connection
    /// cleanly between requests.
    fn read_request(&mut self) -> Result<Option<ParsedRequest>, RequestError> {
        self.raw.clear();

        // HTTP/1.1 lets a server ignore empty lines before the request line. They are not part
        // of the request, so they stay out of `raw`.
        let request_line = loop {
            let Some(line) = self.read_line(MAX_HEAD_BYTES, true)? else {
                return Ok(None);
            };
            if line != b"\r\n" {
                break line;
            }
        };
        self.raw.extend_from_slice(&request_line);
        let (method, target, http_1_0) = parse_request_line(strip_crlf(&request_line))?;

        let mut headers = Vec::new();
        loop {
            let budget = MAX_HEAD_BYTES.saturating_sub(self.raw.len());
            let line = self
                .read_line(budget, false)?
                .expect("EOF is reported as Truncated");
            self.raw.extend_from_slice(&line);
            if line == b"\r\n" {
                break;
            }
            headers.push(parse_header_line(strip_crlf(&line))?);
        }

        let framing = body_framing(&headers)?;
        let expects_continue = headers.iter().any(|(name, value)| {
            name.eq_ignore_ascii_case("expect") && value.eq_ignore_ascii_case("100-continue")
        });
        let body_follows = match framing {
            BodyFraming::None | BodyFraming::ContentLength(0) => false,
            BodyFraming::ContentLength(_) | BodyFraming::Chunked => true,
        };
        if expects_continue && body_follows && !http_1_0 {
            let mut stream = self.stream;
            stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }

        let body = match framing {
            BodyFraming::None => Vec::new(),
            BodyFraming::ContentLength(length) => {
                let body = self.read_exact_bytes(length)?;
                self.raw.extend_from_slice(&body);
                body
            }
            BodyFraming::Chunked => self.read_chunked_body()?,
        };

        let connection_tokens: Vec<String> = headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("connection"))
            .flat_map(|(_, value)| comma_separated_tokens(value))
            .collect();
        let client_wants_close = if http_1_0 {
            !connection_tokens.iter().any(|token| token == "keep-alive")
        } else {
            connection_tokens.iter().any(|token| token == "close")
        };

        let recorded = Recorded {
            raw: std::mem::take(&mut self.raw),
            method,
            target,
            headers,
            body,
            received_at: Instant::now(),
        };
        Ok(Some(ParsedRequest {
            recorded,
            client_wants_close,
            http_1_0,
        }))
    }

    /// Decodes a chunked body, appending the framing and trailer section to `self.raw`.
    fn read_chunked_body(&mut self) -> Result<Vec<u8>, RequestError> {
        let mut body = Vec::new();
        loop {
            let size_line = self
                .read_line(MAX_HEAD_BYTES, false)?
                .expect("EOF is reported as Truncated");
            self.raw.extend_from_slice(&size_line);
            let size = parse_chunk_size(strip_crlf(&size_line))?;
            if size == 0 {
                break;
            }

            let data = self.read_exact_bytes(size)?;
            self.raw.extend_from_slice(&data);
            body.extend_from_slice(&data);

            let terminator = self.read_exact_bytes(2)?;
            self.raw.extend_from_slice(&terminator);
            if terminator != b"\r\n" {
                return Err(RequestError::Malformed(format!(
                    "chunk of {size} bytes is not followed by CRLF"
                )));
            }
        }

        // The trailer section ends with an empty line. Trailer fields are kept only in `raw`.
        let mut trailer_bytes = 0;
        loop {
            let budget = MAX_HEAD_BYTES.saturating_sub(trailer_bytes);
            let line = self
                .read_line(budget, false)?
                .expect("EOF is reported as Truncated");
            trailer_bytes += line.len();
            self.raw.extend_from_slice(&line);
            if line == b"\r\n" {
                return Ok(body);
            }
            parse_header_line(strip_crlf(&line))?;
        }
    }

    /// Reads one line including its CRLF. Returns `Ok(None)` only if `eof_allowed` and the
    /// connection ended before any byte of the line.
    fn read_line(&mut self, max_bytes: usize, eof_allowed: bool) -> Result<Option<Vec<u8>>, RequestError> {
        let mut searched = 0;
        loop {
            if let Some(offset) = self.buffer[searched..].iter().position(|&byte| byte == b'\n') {
                let end = searched + offset + 1;
                if end > max_bytes {
                    return Err(line_too_long(max_bytes));
                }
                let line: Vec<u8> = self.buffer.drain(..end).collect();
                if line.len() < 2 || line[line.len() - 2] != b'\r' {
                    return Err(RequestError::Malformed(
                        "line ends with a bare LF, but HTTP/1.1 requires CRLF".to_string(),
                    ));
                }
                return Ok(Some(line));
            }
            if self.buffer.len() > max_bytes {
                return Err(line_too_long(max_bytes));
            }
            searched = self.buffer.len();

            if self.fill_buffer()? == 0 {
                if eof_allowed && self.buffer.is_empty() {
                    return Ok(None);
                }
                return Err(RequestError::Truncated {
                    bytes_read: self.raw.len() + self.buffer.len(),
                });
            }
        }
    }

    fn read_exact_bytes(&mut self, length: usize) -> Result<Vec<u8>, RequestError> {
        while self.buffer.len() < length {
            if self.fill_buffer()? == 0 {
                return Err(RequestError::Truncated {
                    bytes_read: self.raw.len() + self.buffer.len(),
                });
            }
        }
        Ok(self.buffer.drain(..length).collect())
    }

    /// Appends whatever the socket has to the buffer and returns the byte count, 0 at EOF.
    fn fill_buffer(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; READ_CHUNK_BYTES];
        loop {
            let mut stream = self.stream;
            match stream.read(&mut chunk) {
                Ok(count) => {
                    self.buffer.extend_from_slice(&chunk[..count]);
                    return Ok(count);
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            }
        }
    }
}

fn line_too_long(max_bytes: usize) -> RequestError {
    RequestError::Malformed(format!(
        "request head, chunk-size line or trailer section exceeds {max_bytes} bytes"
    ))
}

fn trim_spaces_and_tabs(bytes: &[u8]) -> &[u8] {
    let is_kept = |byte: &u8| *byte != b' ' && *byte != b'\t';
    let Some(start) = bytes.iter().position(is_kept) else {
        return &[];
    };
    let end = bytes.iter().rposition(is_kept).map_or(start, |index| index + 1);
    &bytes[start..end]
}

fn strip_crlf(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r\n").unwrap_or(line)
}

/// Parses `METHOD SP request-target SP HTTP-version` and returns the method, the target and
/// whether the version is HTTP/1.0.
fn parse_request_line(line: &[u8]) -> Result<(String, String, bool), RequestError> {
    let line_text = String::from_utf8_lossy(line);
    let parts: Vec<&[u8]> = line.split(|&byte| byte == b' ').collect();
    let [method, target, version] = parts.as_slice() else {
        return Err(RequestError::Malformed(format!(
            "request line {line_text:?} does not have the form METHOD SP TARGET SP VERSION"
        )));
    };

    if method.is_empty() || !method.iter().all(|&byte| is_token_byte(byte)) {
        return Err(RequestError::Malformed(format!(
            "invalid method in request line {line_text:?}"
        )));
    }
    if target.is_empty() {
        return Err(RequestError::Malformed(format!(
            "empty request-target in request line {line_text:?}"
        )));
    }
    if let Some(byte) = target.iter().find(|&&byte| !byte.is_ascii_graphic()) {
        return Err(RequestError::Malformed(format!(
            "request-target in {line_text:?} contains byte 0x{byte:02x}, which must be percent-encoded"
        )));
    }
    let http_1_0 = match *version {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        _ => {
            return Err(RequestError::Malformed(format!(
                "unsupported HTTP version in request line {line_text:?}, expected HTTP/1.1 or HTTP/1.0"
            )))
        }
    };

    // Both parts were checked to be ASCII above.
    let method = String::from_utf8_lossy(method).into_owned();
    let target = String::from_utf8_lossy(target).into_owned();
    Ok((method, target, http_1_0))
}

fn parse_header_line(line: &[u8]) -> Result<(String, String), RequestError> {
    let line_text = String::from_utf8_lossy(line);
    if line.starts_with(b" ") || line.starts_with(b"\t") {
        return Err(RequestError::Malformed(format!(
            "header line {line_text:?} starts with whitespace (obsolete line folding is not supported)"
        )));
    }
    let Some(colon) = line.iter().position(|&byte| byte == b':') else {
        return Err(RequestError::Malformed(format!(
            "header line {line_text:?} has no colon"
        )));
    };

    let name = &line[..colon];
    if name.is_empty() || !name.iter().all(|&byte| is_token_byte(byte)) {
        return Err(RequestError::Malformed(format!(
            "invalid field name in header line {line_text:?}"
        )));
    }
    let value = trim_spaces_and_tabs(&line[colon + 1..]);
    if let Some(byte) = value
        .iter()
        .find(|&&byte| (byte < 0x20 && byte != b'\t') || byte == 0x7f)
    {
        return Err(RequestError::Malformed(format!(
            "field value in header line {line_text:?} contains control byte 0x{byte:02x}"
        )));
    }

    let name = String::from_utf8_lossy(name).into_owned();
    let value = String::from_utf8_lossy(value).into_owned();
    Ok((name, value))
}

/// Decides how the request body is delimited. RFC 9112 section 6.3 says that a message with
/// both Transfer-Encoding and Content-Length ought to be handled as an error, so this server
/// rejects it.
fn body_framing(headers: &[(String, String)]) -> Result<BodyFraming, RequestError> {
    let transfer_codings: Vec<String> = headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("transfer-encoding"))
        .flat_map(|(_, value)| comma_separated_tokens(value))
        .collect();
    let content_lengths: Vec<&str> = headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .flat_map(|(_, value)| value.split(','))
        .map(|value| value.trim_matches([' ', '\t']))
        .collect();

    if !transfer_codings.is_empty() {
        if !content_lengths.is_empty() {
            return Err(RequestError::Malformed(
                "request has both Transfer-Encoding and Content-Length".to_string(),
            ));
        }
        if transfer_codings != ["chunked"] {
            return Err(RequestError::Malformed(format!(
                "unsupported Transfer-Encoding {transfer_codings:?}, expected \"chunked\" alone"
            )));
        }
        return Ok(BodyFraming::Chunked);
    }

    let Some(first) = content_lengths.first() else {
        return Ok(BodyFraming::None);
    };
    if content_lengths.iter().any(|value| value != first) {
        return Err(RequestError::Malformed(format!(
            "conflicting Content-Length values {content_lengths:?}"
        )));
    }
    if first.is_empty() || !first.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(RequestError::Malformed(format!(
            "invalid Content-Length {first:?}"
        )));
    }
    first
        .parse::<usize>()
        .map(BodyFraming::ContentLength)
        .map_err(|_| RequestError::Malformed(format!("Content-Length {first} is too large")))
}

/// Parses a chunk-size line, ignoring any chunk extensions after `;`.
fn parse_chunk_size(line: &[u8]) -> Result<usize, RequestError> {
    let line_text = String::from_utf8_lossy(line);
    let size_end = line.iter().position(|&byte| byte == b';').unwrap_or(line.len());
    let digits = trim_spaces_and_tabs(&line[..size_end]);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(RequestError::Malformed(format!(
            "invalid chunk-size line {line_text:?}"
        )));
    }
    let digits = std::str::from_utf8(digits).expect("hex digits are ASCII");
    usize::from_str_radix(digits, 16)
        .map_err(|_| RequestError::Malformed(format!("chunk size {line_text:?} is too large")))
}

/// Returns whether `byte` is a `tchar` of RFC 9110, which may appear in a token such as a
/// method or field name.
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}
