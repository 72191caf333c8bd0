//! The language server on a generated workflow of 5,000 lines, through
//! `flowrun lsp` as editors run it: the time from sending a `didChange` to
//! receiving its published diagnostics (the 10 ms debounce included), and
//! the time of a completion request.
//!
//! Run with `cargo bench --bench lsp`. It prints the median, the 95th
//! percentile and the slowest of each over its rounds.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const LINES: usize = 5_000;
const ROUNDS: usize = 60;

/// Builds a workflow of exactly `LINES` lines of POST and GET steps.
fn generated_workflow() -> String {
    let mut lines: Vec<String> = vec![
        r#"workflow "Generated""#.to_string(),
        r#"let claims_api = "http://127.0.0.1:8080/api""#.to_string(),
        String::new(),
    ];
    let mut number = 1;
    while lines.len() + 14 <= LINES {
        let step = format!(
            r#"step "Send claim {number}" {{
  http POST "<<vars.claims_api>>/claims/<<entity.id>>" json {{
    "claimNumber": "<<entity.claim_number>>",
    "amount": <<entity.amount>>,
    "execution": "<<execution.id>>"
  }} headers {{
    "X-Request-Id": "<<execution.id>>"
  }}
  timeout 10s
}}
step "Check {number}" {{
  http GET "<<vars.claims_api>>/auth?member=<<entity.member_id>>"
  save response.json.status -> entity.auth_status
}}"#
        );
        lines.extend(step.lines().map(str::to_string));
        number += 1;
    }
    while lines.len() < LINES {
        lines.push(format!("# filler line {}", lines.len() + 1));
    }
    lines.join("\n") + "\n"
}

struct Server {
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Server {
    fn send(&mut self, message: &Value) {
        let body = message.to_string();
        write!(self.stdin, "Content-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        self.stdin.flush().unwrap();
    }

    fn receive(&mut self) -> Value {
        let mut length = 0;
        loop {
            let mut line = String::new();
            assert!(
                self.stdout.read_line(&mut line).unwrap() > 0,
                "the server stopped"
            );
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some(value) = line.strip_prefix("Content-Length: ") {
                length = value.parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        self.stdout.read_exact(&mut body).unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    /// Receives until a message satisfies `done`.
    fn until(&mut self, done: impl Fn(&Value) -> bool) -> Value {
        loop {
            let message = self.receive();
            if done(&message) {
                return message;
            }
        }
    }
}

fn summary(name: &str, mut times: Vec<Duration>) {
    times.sort();
    let at = |fraction: f64| times[((times.len() - 1) as f64 * fraction).round() as usize];
    println!(
        "{name}: median {:.2} ms, p95 {:.2} ms, slowest {:.2} ms over {} rounds",
        at(0.5).as_secs_f64() * 1e3,
        at(0.95).as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
        times.len()
    );
}

fn main() {
    let text = generated_workflow();
    assert_eq!(text.lines().count(), LINES);
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowrun"))
        .arg("lsp")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("flowrun lsp starts");
    let mut server = Server {
        stdin: child.stdin.take().unwrap(),
        stdout: BufReader::new(child.stdout.take().unwrap()),
    };
    let uri = "untitled:generated.flow";
    server.send(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"capabilities": {}}}));
    server.until(|message| message["id"] == 0);
    server.send(
        &json!({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {
            "textDocument": {"uri": uri, "languageId": "flow", "version": 1, "text": text}
        }}),
    );
    let opened = server.until(|message| message["method"] == "textDocument/publishDiagnostics");
    assert_eq!(
        opened["params"]["diagnostics"],
        json!([]),
        "the generated workflow is clean"
    );

    // One-character edits inside the last step's URL, as typing does.
    let lines: Vec<&str> = text.lines().collect();
    let last_line = lines.iter().rposition(|line| line.contains("http GET")).unwrap();
    let mut change_times = Vec::new();
    let mut completion_times = Vec::new();
    for round in 0..ROUNDS {
        let version = round as i64 + 2;
        let character = 50 + (round % 2);
        let started = Instant::now();
        server.send(&json!({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {
            "textDocument": {"uri": uri, "version": version},
            "contentChanges": [{
                "range": {"start": {"line": last_line, "character": character}, "end": {"line": last_line, "character": character}},
                "text": if round % 2 == 0 { "x" } else { "" },
            }],
        }}));
        if round % 2 == 1 {
            // Undo the character typed in the round before.
            server.send(&json!({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {
                "textDocument": {"uri": uri, "version": version},
                "contentChanges": [{
                    "range": {"start": {"line": last_line, "character": 50}, "end": {"line": last_line, "character": 51}},
                    "text": "",
                }],
            }}));
        }
        server.until(|message| {
            message["method"] == "textDocument/publishDiagnostics" && message["params"]["version"] == version
        });
        change_times.push(started.elapsed());

        let started = Instant::now();
        let id = 1000 + round;
        server.send(
            &json!({"jsonrpc": "2.0", "id": id, "method": "textDocument/completion", "params": {
                "textDocument": {"uri": uri},
                "position": {"line": last_line, "character": 19},
            }}),
        );
        let reply = server.until(|message| message["id"] == id);
        completion_times.push(started.elapsed());
        assert!(reply["result"]["items"]
            .as_array()
            .is_some_and(|items| !items.is_empty()));
    }
    // Completion right after a change, before the debounce ends, so the
    // request itself parses and checks the new text.
    let mut cold_times = Vec::new();
    for round in 0..ROUNDS {
        let version = (ROUNDS + round) as i64 + 2;
        server.send(&json!({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {
            "textDocument": {"uri": uri, "version": version},
            "contentChanges": [{
                "range": {"start": {"line": last_line, "character": 50}, "end": {"line": last_line, "character": 50}},
                "text": "y",
            }],
        }}));
        let started = Instant::now();
        let id = 5000 + round;
        server.send(
            &json!({"jsonrpc": "2.0", "id": id, "method": "textDocument/completion", "params": {
                "textDocument": {"uri": uri},
                "position": {"line": last_line, "character": 19},
            }}),
        );
        server.until(|message| message["id"] == id);
        cold_times.push(started.elapsed());
        server.until(|message| {
            message["method"] == "textDocument/publishDiagnostics" && message["params"]["version"] == version
        });
    }
    summary("didChange to published diagnostics (5,000 lines)", change_times);
    summary("completion (5,000 lines)", completion_times);
    summary("completion right after a change (5,000 lines)", cold_times);

    server.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "shutdown"}));
    server.until(|message| message["id"] == 1);
    server.send(&json!({"jsonrpc": "2.0", "method": "exit"}));
    let status = child.wait().unwrap();
    assert!(status.success());
}
