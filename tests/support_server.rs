//! Self-tests for the HTTP server in `tests/support/server.rs`.

mod support;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use support::server::{Reply, TestServer};

/// Upper bound for any single socket read in these tests, so a broken server fails a test
/// instead of hanging it.
const CLIENT_READ_TIMEOUT: Duration = Duration::from_secs(5);

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(field_name, _)| field_name.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

fn connect(server: &TestServer) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(server.addr()).expect("connect to test server");
    stream
        .set_read_timeout(Some(CLIENT_READ_TIMEOUT))
        .expect("set read timeout");
    BufReader::new(stream)
}

fn send(connection: &mut BufReader<TcpStream>, bytes: &[u8]) {
    let stream = connection.get_mut();
    stream.write_all(bytes).expect("write request");
    stream.flush().expect("flush request");
}

/// Reads one response whose body is delimited by Content-Length, or has none. Pass
/// `head_request` for a response to HEAD, which never has a body.
fn read_response(connection: &mut BufReader<TcpStream>, head_request: bool) -> Response {
    let mut status_line = String::new();
    connection.read_line(&mut status_line).expect("read status line");
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "status line {status_line:?}");
    let status = parts
        .next()
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("invalid status line {status_line:?}"));

    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        connection.read_line(&mut line).expect("read header line");
        let line = line
            .strip_suffix("\r\n")
            .unwrap_or_else(|| panic!("header line {line:?} does not end with CRLF"));
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("invalid header line {line:?}"));
        headers.push((name.to_string(), value.to_string()));
    }

    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if !head_request {
        if let Some(length) = response.header("content-length") {
            let length: usize = length.parse().expect("numeric Content-Length");
            response.body = vec![0; length];
            connection
                .read_exact(&mut response.body)
                .expect("read response body");
        }
    }
    response
}

/// Asserts that the server closes `connection` without sending anything more.
fn assert_closed(connection: &mut BufReader<TcpStream>) {
    let mut rest = Vec::new();
    match connection.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(error) if error.kind() == ErrorKind::ConnectionReset => {}
        Err(error) => panic!("expected the server to close the connection, got {error}"),
    }
    assert_eq!(String::from_utf8_lossy(&rest), "");
}

#[test]
fn post_records_exact_raw_bytes() {
    let server = TestServer::start(|_| Reply::new(201).header("X-Reply", "yes").body("created"));
    let request = b"POST /items?name=a%20b&x=1 HTTP/1.1\r\n\
        Host: 127.0.0.1\r\n\
        X-Custom-Header:  padded value \t\r\n\
        x-repeated: one\r\n\
        X-Repeated: two\r\n\
        Content-Length: 13\r\n\
        \r\n\
        {\"id\": \"a b\"}";

    let mut connection = connect(&server);
    send(&mut connection, request);
    let response = read_response(&mut connection, false);

    assert_eq!(response.status, 201);
    assert_eq!(response.header("x-reply"), Some("yes"));
    assert_eq!(response.header("content-length"), Some("7"));
    assert_eq!(response.body, b"created");

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let recorded = &requests[0];
    assert_eq!(
        String::from_utf8_lossy(&recorded.raw),
        String::from_utf8_lossy(request)
    );
    assert_eq!(recorded.raw, request);
    assert_eq!(recorded.method, "POST");
    assert_eq!(recorded.target, "/items?name=a%20b&x=1");
    assert_eq!(recorded.headers[1].0, "X-Custom-Header");
    assert_eq!(recorded.header("x-custom-header"), Some("padded value"));
    assert_eq!(recorded.header("X-REPEATED"), Some("one"));
    assert_eq!(recorded.header_all("x-repeated"), ["one", "two"]);
    assert_eq!(recorded.header("missing"), None);
    assert_eq!(recorded.body_text(), "{\"id\": \"a b\"}");
}

#[tokio::test]
async fn reqwest_post_is_recorded() {
    let server = TestServer::start(|request| {
        Reply::json(
            200,
            serde_json::json!({ "echo": request.body_text(), "target": request.target }),
        )
    });
    let client = reqwest::Client::new();

    let response = client
        .post(format!("{}/hooks/run?x=%2F", server.url()))
        .header("X-Trace", "abc")
        .body("payload")
        .send()
        .await
        .expect("send request");

    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let body: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).expect("JSON body");
    assert_eq!(
        body,
        serde_json::json!({ "echo": "payload", "target": "/hooks/run?x=%2F" })
    );

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].target, "/hooks/run?x=%2F");
    assert_eq!(requests[0].header("x-trace"), Some("abc"));
    assert_eq!(requests[0].header("content-length"), Some("7"));
    assert_eq!(requests[0].body, b"payload");
    assert!(requests[0].raw.ends_with(b"\r\n\r\npayload"));
}

#[test]
fn keep_alive_serves_requests_on_one_connection() {
    let server = TestServer::scripted(vec![
        Reply::new(200).body("first"),
        Reply::new(200).body("second"),
    ]);
    let mut connection = connect(&server);

    send(&mut connection, b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n");
    let first = read_response(&mut connection, false);
    send(&mut connection, b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n");
    let second = read_response(&mut connection, false);

    assert_eq!(first.body, b"first");
    assert_eq!(first.header("connection"), None);
    assert_eq!(second.body, b"second");
    assert_eq!(server.connection_count(), 1);
    let targets: Vec<String> = server.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, ["/one", "/two"]);
}

#[test]
fn pipelined_requests_answered_in_order() {
    let server = TestServer::start(|request| Reply::new(200).body(request.target.clone()));
    let mut connection = connect(&server);

    send(
        &mut connection,
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi\
          GET /c HTTP/1.1\r\nHost: x\r\n\r\n",
    );

    assert_eq!(read_response(&mut connection, false).body, b"/a");
    assert_eq!(read_response(&mut connection, false).body, b"/b");
    assert_eq!(read_response(&mut connection, false).body, b"/c");
    let requests = server.requests();
    assert_eq!(requests[1].body, b"hi");
    assert_eq!(requests[2].raw, b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n".to_vec());
}

#[tokio::test]
async fn reqwest_reuses_one_connection() {
    let server = TestServer::start(|_| Reply::new(200).body("ok"));
    let client = reqwest::Client::new();

    for path in ["/first", "/second"] {
        let response = client
            .get(format!("{}{path}", server.url()))
            .send()
            .await
            .expect("send request");
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(response.text().await.unwrap(), "ok");
    }

    assert_eq!(server.request_count(), 2);
    assert_eq!(server.connection_count(), 1);
}

#[test]
fn connection_close_request_closes_after_reply() {
    let server = TestServer::start(|_| Reply::new(200).body("bye"));
    let mut connection = connect(&server);

    send(
        &mut connection,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let response = read_response(&mut connection, false);

    assert_eq!(response.body, b"bye");
    assert_eq!(response.header("connection"), Some("close"));
    assert_closed(&mut connection);
}

#[test]
fn http_1_0_closes_unless_keep_alive() {
    let server = TestServer::start(|_| Reply::new(200).body("ok"));

    let mut closing = connect(&server);
    send(&mut closing, b"GET /closing HTTP/1.0\r\n\r\n");
    assert_eq!(
        read_response(&mut closing, false).header("connection"),
        Some("close")
    );
    assert_closed(&mut closing);

    let mut persistent = connect(&server);
    send(
        &mut persistent,
        b"GET /kept HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    );
    let response = read_response(&mut persistent, false);
    assert_eq!(response.header("connection"), Some("keep-alive"));
    send(
        &mut persistent,
        b"GET /again HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    );
    assert_eq!(read_response(&mut persistent, false).body, b"ok");
    assert_eq!(server.connection_count(), 2);
}

#[tokio::test]
async fn scripted_replies_in_order_then_repeat() {
    let server = TestServer::scripted(vec![
        Reply::status(200).body("one"),
        Reply::status(201).body("two"),
        Reply::status(503).body("last"),
    ]);
    let client = reqwest::Client::new();

    let mut seen = Vec::new();
    for _ in 0..5 {
        let response = client.get(server.url()).send().await.expect("send request");
        let status = response.status().as_u16();
        seen.push((status, response.text().await.unwrap()));
    }

    let expected = [
        (200, "one"),
        (201, "two"),
        (503, "last"),
        (503, "last"),
        (503, "last"),
    ];
    let seen: Vec<(u16, &str)> = seen
        .iter()
        .map(|(status, body)| (*status, body.as_str()))
        .collect();
    assert_eq!(seen, expected);
    assert_eq!(server.request_count(), 5);
}

#[test]
fn chunked_body_is_decoded() {
    let server = TestServer::start(|request| Reply::new(200).body(request.body.clone()));
    let pieces: [&[u8]; 6] = [
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-",
        b"Encoding: chunked\r\n\r\n5\r\nhel",
        b"lo\r\n7;name=value\r\n, world\r\n",
        b"1A\r\n",
        b"abcdefghijklmnopqrstuvwxyz\r\n0\r\n",
        b"X-Checksum: 42\r\n\r\n",
    ];
    let mut connection = connect(&server);

    // Separate writes with pauses make the server see the request in several reads, with
    // boundaries in the middle of header lines, chunk data and chunk-size lines.
    for piece in pieces {
        send(&mut connection, piece);
        thread::sleep(Duration::from_millis(20));
    }
    let response = read_response(&mut connection, false);

    let expected_body = b"hello, worldabcdefghijklmnopqrstuvwxyz";
    assert_eq!(response.status, 200);
    assert_eq!(response.body, expected_body);
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].body, expected_body);
    assert_eq!(requests[0].header("transfer-encoding"), Some("chunked"));
    assert_eq!(requests[0].header("x-checksum"), None);
    assert_eq!(requests[0].raw, pieces.concat());
}

#[test]
fn chunked_request_keeps_connection_usable() {
    let server = TestServer::start(|request| Reply::new(200).body(request.body.clone()));
    let mut connection = connect(&server);

    send(
        &mut connection,
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    );
    assert_eq!(read_response(&mut connection, false).body, b"abc");
    send(&mut connection, b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(read_response(&mut connection, false).body, b"");
    assert_eq!(server.connection_count(), 1);
}

#[tokio::test]
async fn hang_times_out_client_without_blocking() {
    let server = TestServer::scripted(vec![Reply::hang()]);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();

    let started = Instant::now();
    let error = client
        .post(format!("{}/slow", server.url()))
        .body("data")
        .send()
        .await
        .expect_err("a hanging reply must not produce a response");

    assert!(error.is_timeout(), "expected a timeout, got {error:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].target, "/slow");
    assert_eq!(requests[0].body, b"data");

    let dropping = Instant::now();
    drop(server);
    assert!(
        dropping.elapsed() < Duration::from_secs(2),
        "dropping the server took {:?}",
        dropping.elapsed()
    );
}

#[test]
fn drop_closes_hanging_connection() {
    let server = TestServer::scripted(vec![Reply::hang()]);
    let mut connection = connect(&server);
    send(&mut connection, b"GET /never HTTP/1.1\r\n\r\n");

    // The request is recorded before the reply, so the count shows the server has read it.
    let deadline = Instant::now() + CLIENT_READ_TIMEOUT;
    while server.request_count() == 0 {
        assert!(Instant::now() < deadline, "request was never recorded");
        thread::sleep(Duration::from_millis(5));
    }

    let dropping = Instant::now();
    drop(server);
    assert!(dropping.elapsed() < Duration::from_secs(2));
    let started = Instant::now();
    assert_closed(&mut connection);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn drop_with_idle_connection_returns() {
    let server = TestServer::start(|_| Reply::status(204));
    let mut idle = connect(&server);
    send(&mut idle, b"GET / HTTP/1.1\r\n\r\n");
    let response = read_response(&mut idle, false);
    assert_eq!(response.status, 204);
    assert_eq!(response.header("content-length"), None);

    let dropping = Instant::now();
    drop(server);
    assert!(dropping.elapsed() < Duration::from_secs(2));
    assert_closed(&mut idle);
}

#[tokio::test]
async fn delay_postpones_reply() {
    let delay = Duration::from_millis(200);
    let server = TestServer::scripted(vec![Reply::status(200).delay(delay)]);
    let client = reqwest::Client::new();

    let started = Instant::now();
    let response = client.get(server.url()).send().await.expect("send request");
    let elapsed = started.elapsed();

    assert_eq!(response.status().as_u16(), 200);
    assert!(elapsed >= delay, "reply came after {elapsed:?}");
    let recorded = &server.requests()[0];
    assert!(recorded.received_at >= started);
    assert!(recorded.received_at.duration_since(started) < delay);
}

#[test]
fn close_reply_sends_nothing() {
    let server = TestServer::scripted(vec![Reply::close()]);
    let mut connection = connect(&server);

    send(&mut connection, b"DELETE /thing HTTP/1.1\r\n\r\n");

    assert_closed(&mut connection);
    assert_eq!(server.request_count(), 1);
    assert_eq!(server.requests()[0].method, "DELETE");
}

#[tokio::test]
async fn close_reply_fails_reqwest_request() {
    let server = TestServer::scripted(vec![Reply::close()]);
    let client = reqwest::Client::builder()
        .timeout(CLIENT_READ_TIMEOUT)
        .build()
        .unwrap();

    let error = client
        .get(server.url())
        .send()
        .await
        .expect_err("a closed connection must not produce a response");

    assert!(!error.is_timeout(), "expected a connection error, got {error:?}");
    assert_eq!(server.request_count(), 1);
}

#[test]
fn head_response_has_length_but_no_body() {
    let server = TestServer::start(|_| Reply::new(200).body("twelve bytes"));
    let mut connection = connect(&server);

    send(&mut connection, b"HEAD / HTTP/1.1\r\n\r\n");
    let head = read_response(&mut connection, true);
    send(&mut connection, b"GET / HTTP/1.1\r\n\r\n");
    let get = read_response(&mut connection, false);

    assert_eq!(head.header("content-length"), Some("12"));
    assert_eq!(get.status, 200);
    assert_eq!(get.body, b"twelve bytes");
}

#[test]
fn expect_continue_gets_interim_response() {
    let server = TestServer::start(|request| Reply::new(200).body(request.body.clone()));
    let mut connection = connect(&server);

    send(
        &mut connection,
        b"PUT /f HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
    );
    let interim = read_response(&mut connection, false);
    send(&mut connection, b"data");
    let response = read_response(&mut connection, false);

    assert_eq!(interim.status, 100);
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"data");
}

#[test]
fn malformed_requests_rejected_and_not_recorded() {
    let cases: [(&str, &[u8]); 6] = [
        ("bare LF", b"GET / HTTP/1.1\nHost: x\n\n"),
        ("unknown version", b"GET / HTTP/2.0\r\n\r\n"),
        ("space in target", b"GET /a b HTTP/1.1\r\n\r\n"),
        ("folded header", b"GET / HTTP/1.1\r\nA: b\r\n  c\r\n\r\n"),
        (
            "conflicting framing",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "gzip coding",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        ),
    ];
    let server = TestServer::start(|_| Reply::status(200));

    for (case, request) in cases {
        let mut connection = connect(&server);
        send(&mut connection, request);
        let response = read_response(&mut connection, false);
        assert_eq!(response.status, 400, "case {case}");
        assert_eq!(response.header("connection"), Some("close"), "case {case}");
        assert!(!response.body.is_empty(), "case {case}");
    }
    assert_eq!(server.request_count(), 0);
}

#[test]
fn concurrent_connections_each_answered() {
    let server = TestServer::start(|request| {
        Reply::new(200)
            .body(request.target.clone())
            .delay(Duration::from_millis(100))
    });
    let (sender, receiver) = mpsc::channel();

    let started = Instant::now();
    for index in 0..8 {
        let sender = sender.clone();
        let mut connection = connect(&server);
        thread::spawn(move || {
            send(
                &mut connection,
                format!("GET /{index} HTTP/1.1\r\n\r\n").as_bytes(),
            );
            let response = read_response(&mut connection, false);
            sender.send((index, response.body)).unwrap();
        });
    }
    drop(sender);
    let mut results: Vec<(usize, Vec<u8>)> = receiver.iter().collect();
    results.sort();

    assert_eq!(results.len(), 8);
    for (index, body) in results {
        assert_eq!(body, format!("/{index}").into_bytes());
    }
    // One thread per connection runs the delays in parallel, not one after another.
    assert!(started.elapsed() < Duration::from_millis(700));
    assert_eq!(server.connection_count(), 8);
}

#[test]
#[should_panic(expected = "test server handler panicked: request method is GET, expected POST")]
fn handler_panic_raised_on_drop() {
    let server = TestServer::start(|request| {
        assert!(
            request.method == "POST",
            "request method is {}, expected POST",
            request.method
        );
        Reply::status(200)
    });
    let mut connection = connect(&server);

    send(&mut connection, b"GET / HTTP/1.1\r\n\r\n");
    let response = read_response(&mut connection, false);

    assert_eq!(response.status, 500);
    drop(server);
}

#[test]
fn servers_have_distinct_ports() {
    let first = TestServer::scripted(vec![Reply::status(200)]);
    let second = TestServer::scripted(vec![Reply::status(200)]);

    assert_ne!(first.addr(), second.addr());
    assert!(first.addr().ip().is_loopback());
    assert_eq!(first.url(), format!("http://127.0.0.1:{}", first.addr().port()));
}
