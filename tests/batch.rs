//! Batch runs: the `flowrun` binary over many records against a recording
//! server on 127.0.0.1 and a real SQLite store.

mod support;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowrun::store::sqlite::SqliteStore;
use flowrun::store::{ExecutionStatus, Store};
use serde_json::{json, Value};
use support::cli::{flowrun, flowrun_on_terminal, output, path_str, Workspace};
use support::server::{Recorded, Reply, TestServer};

/// Writes a one-step workflow that POSTs each record to `/claims/<<entity.id>>`
/// and saves the server's `status` into the entity.
fn post_flow(workspace: &Workspace, server: &TestServer, extra: &str) -> PathBuf {
    workspace.file(
        "sync.flow",
        format!(
            "workflow \"Sync\"\n\nstep \"Send\" {{\n  http POST \"{}/claims/<<entity.id>>\" json {{\n    \"id\": \"<<entity.id>>\"\n  }}\n  save response.json.status -> entity.status\n{extra}}}\n",
            server.url()
        ),
    )
}

fn records(workspace: &Workspace, count: usize) -> PathBuf {
    let lines: String = (0..count)
        .map(|index| format!("{{\"id\":\"C-{index}\"}}\n"))
        .collect();
    workspace.file("records.jsonl", lines)
}

fn ok_server() -> TestServer {
    TestServer::start(|_| Reply::json(200, json!({"status": "ok"})))
}

/// Runs `flow` over the records in `input` without a store, with `options`
/// after them, and returns the exit code, standard output and standard error.
fn run_records(flow: &Path, input: &Path, options: &[&str]) -> (i32, String, String) {
    output(&mut batch_command(flow, input, None, options))
}

/// Returns the command that runs `flow` over the records in `input` with
/// `options`, recorded in the store at `store`, or with `--no-store`.
fn batch_command(flow: &Path, input: &Path, store: Option<&Path>, options: &[&str]) -> Command {
    let mut args = vec!["run", path_str(flow), "--entities", path_str(input)];
    match store {
        Some(store) => args.extend(["--store", path_str(store)]),
        None => args.push("--no-store"),
    }
    args.extend_from_slice(options);
    flowrun(&args)
}

/// Returns the record id in a request target such as `/claims/C-7`.
fn record_id(request: &Recorded) -> &str {
    request.target.trim_start_matches("/claims/")
}

fn lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn ids(entities: &[Value]) -> Vec<String> {
    entities
        .iter()
        .map(|entity| entity["id"].as_str().unwrap().to_string())
        .collect()
}

fn expected_ids(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|index| format!("C-{index}")).collect()
}

fn statuses(store: &Path) -> Vec<ExecutionStatus> {
    let store = SqliteStore::open(store).unwrap();
    store
        .executions(None)
        .unwrap()
        .into_iter()
        .map(|summary| summary.status)
        .collect()
}

#[test]
fn output_follows_input_order_unless_unordered() {
    // Earlier records answer later, so completion order is reversed.
    let server = TestServer::start(|request| {
        let index: u64 = record_id(request).trim_start_matches("C-").parse().unwrap();
        Reply::json(200, json!({"status": "ok"})).delay(Duration::from_millis(120 * (6 - index)))
    });
    let workspace = Workspace::new();
    let flow = post_flow(&workspace, &server, "");
    let input = records(&workspace, 6);

    let (code, stdout, stderr) = run_records(&flow, &input, &["--concurrency", "6"]);
    assert_eq!(code, 0, "{stderr}");
    let entities = lines(&stdout);
    assert_eq!(ids(&entities), expected_ids(0..6));
    assert_eq!(entities[0], json!({"id": "C-0", "status": "ok"}));
    assert!(
        stderr.contains("6 records in ") && stderr.contains(": 6 succeeded, 0 failed, 0 paused, 0 not run"),
        "{stderr}"
    );

    let (code, stdout, stderr) = run_records(&flow, &input, &["--concurrency", "6", "--unordered"]);
    assert_eq!(code, 0, "{stderr}");
    let mut reversed = expected_ids(0..6);
    reversed.reverse();
    assert_eq!(ids(&lines(&stdout)), reversed);
}

#[test]
fn one_failing_record_fails_alone() {
    let server = TestServer::start(|request| match record_id(request) {
        "C-7" => Reply::status(500).body("broken"),
        _ => Reply::json(200, json!({"status": "ok"})),
    });
    let workspace = Workspace::new();
    let flow = post_flow(&workspace, &server, "  on error continue notify\n");
    let input = records(&workspace, 20);
    let store = workspace.dir.path().join("store.db");

    let (code, stdout, stderr) = output(&mut batch_command(&flow, &input, Some(&store), &[]));
    assert_eq!(code, 1, "{stderr}");
    let entities = lines(&stdout);
    assert_eq!(ids(&entities), expected_ids(0..20));
    assert_eq!(entities[7], json!({"id": "C-7"}));
    assert_eq!(entities[8], json!({"id": "C-8", "status": "ok"}));
    assert!(stderr.contains("record 8 (line 8, execution "), "{stderr}");
    assert!(
        stderr.contains(") failed at step \"Send\": POST ")
            && stderr.contains("returned 500 Internal Server Error"),
        "{stderr}"
    );
    assert!(
        stderr.contains(": 19 succeeded, 1 failed, 0 paused, 0 not run"),
        "{stderr}"
    );
    assert_eq!(server.request_count(), 20);

    let statuses = statuses(&store);
    assert_eq!(statuses.len(), 20);
    assert_eq!(
        statuses
            .iter()
            .filter(|status| **status == ExecutionStatus::Failed)
            .count(),
        1
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|status| **status == ExecutionStatus::Succeeded)
            .count(),
        19
    );
}

#[test]
fn batch_store_lock_keeps_journal() {
    let workspace = Workspace::new();
    let store = workspace.dir.path().join("store.db");
    drop(SqliteStore::open(&store).unwrap());
    // The first request takes the store's write lock and keeps it until
    // the batch has ended.
    let holder: Arc<std::sync::Mutex<Option<rusqlite::Connection>>> = Arc::default();
    let (server_holder, server_store) = (holder.clone(), store.clone());
    let server = TestServer::start(move |_| {
        let mut holder = server_holder.lock().unwrap();
        if holder.is_none() {
            let connection = rusqlite::Connection::open(&server_store).unwrap();
            connection.execute_batch("BEGIN EXCLUSIVE").unwrap();
            *holder = Some(connection);
        }
        Reply::json(200, json!({"status": "ok"}))
    });
    let flow = post_flow(&workspace, &server, "");
    let input = records(&workspace, 2);

    let (code, stdout, stderr) = output(&mut batch_command(
        &flow,
        &input,
        Some(&store),
        &["--concurrency", "1"],
    ));
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(ids(&lines(&stdout)), expected_ids(0..2));
    assert!(
        stderr.contains(&format!(
            "the execution store failed: the store `{}` is locked by another process",
            path_str(&store)
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("another process kept the store locked for more than 2 s."),
        "{stderr}"
    );
    assert!(!stderr.contains("free disk space"), "{stderr}");

    let connection = holder.lock().unwrap().take().unwrap();
    connection.execute_batch("ROLLBACK").unwrap();
    drop(connection);
    assert_eq!(
        statuses(&store),
        vec![ExecutionStatus::Succeeded, ExecutionStatus::Succeeded]
    );
}

#[test]
fn a_paused_record_resumes_on_its_own() {
    let broken = Arc::new(AtomicBool::new(true));
    let flag = broken.clone();
    let server = TestServer::start(move |request| {
        if record_id(request) == "C-2" && flag.load(Ordering::SeqCst) {
            return Reply::status(503);
        }
        Reply::json(200, json!({"status": "ok"}))
    });
    let workspace = Workspace::new();
    let flow = post_flow(&workspace, &server, "");
    let input = records(&workspace, 5);
    let store = workspace.dir.path().join("store.db");

    let (code, stdout, stderr) = output(&mut batch_command(&flow, &input, Some(&store), &[]));
    assert_eq!(code, 3, "{stderr}");
    assert_eq!(ids(&lines(&stdout)), expected_ids(0..5));
    assert!(
        stderr.contains(": 4 succeeded, 0 failed, 1 paused, 0 not run"),
        "{stderr}"
    );
    assert!(
        stderr.contains("flowrun runs --status paused --store '"),
        "{stderr}"
    );

    let opened = SqliteStore::open(&store).unwrap();
    let paused = opened.executions(Some(ExecutionStatus::Paused)).unwrap();
    assert_eq!(paused.len(), 1);
    let record = opened.execution(&paused[0].id).unwrap();
    assert_eq!(record.entity_before, json!({"id": "C-2"}));
    drop(opened);

    broken.store(false, Ordering::SeqCst);
    let (code, stdout, stderr) = output(&mut flowrun(&[
        "resume",
        &paused[0].id,
        "--store",
        path_str(&store),
    ]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap(),
        json!({"id": "C-2", "status": "ok"})
    );
    let c2: Vec<Recorded> = server
        .requests()
        .into_iter()
        .filter(|request| record_id(request) == "C-2")
        .collect();
    assert_eq!(c2.len(), 2);
    assert_eq!(c2[0].header("idempotency-key"), c2[1].header("idempotency-key"));
    assert!(statuses(&store)
        .iter()
        .all(|status| *status == ExecutionStatus::Succeeded));
}

#[test]
fn a_retry_after_holds_every_execution_of_the_host() {
    let served_429 = Arc::new(AtomicBool::new(false));
    let flag = served_429.clone();
    let server = TestServer::start(move |request| {
        if record_id(request) == "C-3" && !flag.swap(true, Ordering::SeqCst) {
            return Reply::status(429).header("Retry-After", "1");
        }
        Reply::json(200, json!({"status": "ok"})).delay(Duration::from_millis(20))
    });
    let workspace = Workspace::new();
    let flow = post_flow(&workspace, &server, "");
    let input = records(&workspace, 24);

    let (code, stdout, stderr) = run_records(&flow, &input, &["--concurrency", "4"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(ids(&lines(&stdout)), expected_ids(0..24));

    let requests = server.requests();
    // Exactly one extra request, for the record that got the 429.
    assert_eq!(requests.len(), 25);
    let c3: Vec<&Recorded> = requests
        .iter()
        .filter(|request| record_id(request) == "C-3")
        .collect();
    assert_eq!(c3.len(), 2);
    let refused_at = c3[0].received_at;
    // Requests already on their way when flowrun read the 429 are the only
    // ones in the second after it. Every later request waited for the gate.
    // The 400 ms allow for reading the 429 late on a loaded machine.
    let early: Vec<&str> = requests
        .iter()
        .filter(|request| {
            request.received_at > refused_at + Duration::from_millis(400)
                && request.received_at < refused_at + Duration::from_secs(1)
        })
        .map(record_id)
        .collect();
    assert_eq!(early, Vec::<&str>::new());
    let after: Vec<&Recorded> = requests
        .iter()
        .filter(|request| request.received_at >= refused_at + Duration::from_secs(1))
        .collect();
    assert!(after.len() >= 16, "{} requests after the wait", after.len());
    assert!(c3[1].received_at >= refused_at + Duration::from_secs(1));
}

#[test]
fn a_rate_spaces_requests_to_one_host() {
    let server = ok_server();
    let workspace = Workspace::new();
    let flow = post_flow(&workspace, &server, "");
    let input = records(&workspace, 11);

    let (code, _, stderr) = run_records(&flow, &input, &["--concurrency", "8", "--rate", "10/s"]);
    assert_eq!(code, 0, "{stderr}");
    let times: Vec<Instant> = server
        .requests()
        .iter()
        .map(|request| request.received_at)
        .collect();
    assert_eq!(times.len(), 11);
    let spread = times[10].duration_since(times[0]);
    assert!(
        spread >= Duration::from_millis(950),
        "11 requests at 10/s took {spread:?}"
    );
    // Request k leaves no earlier than k intervals after the first slot. A
    // request that the machine delays after its slot can arrive close to
    // the next one, so gaps between neighbours are not checked. The 50 ms
    // allow for the first request's own delay.
    for (k, time) in times.iter().enumerate() {
        let since_first = time.duration_since(times[0]);
        let earliest = Duration::from_millis(100 * k as u64).saturating_sub(Duration::from_millis(50));
        assert!(
            since_first >= earliest,
            "request {k} arrived {since_first:?} after the first"
        );
    }
}

#[test]
fn bad_rates_and_concurrency_are_refused() {
    let workspace = Workspace::new();
    let flow = workspace.file("w.flow", "step \"A\" {\n  http GET \"http://127.0.0.1:9/\"\n}\n");
    let input = workspace.file("r.jsonl", "{}\n");
    let (code, _, stderr) = output(&mut flowrun(&[
        "run",
        path_str(&flow),
        "--entities",
        path_str(&input),
        "--rate",
        "50",
    ]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("`50` is not a rate; write it as COUNT/UNIT, such as 50/s"),
        "{stderr}"
    );
    let (code, _, stderr) = output(&mut flowrun(&[
        "run",
        path_str(&flow),
        "--entities",
        path_str(&input),
        "--rate",
        "4294967295/s",
    ]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains(
            "invalid value '4294967295/s' for '--rate <RATE>': `4294967295/s`: the count 4294967295 is above \
             the maximum of 1000000/s; give a whole number from 1 to 1000000, which is 1000000 requests per \
             second"
        ),
        "{stderr}"
    );
    let (code, _, stderr) = output(&mut flowrun(&[
        "run",
        path_str(&flow),
        "--entities",
        path_str(&input),
        "--concurrency",
        "0",
    ]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("`0` is not a concurrency; give a whole number from 1 to 1024"),
        "{stderr}"
    );
}

#[test]
fn csv_columns_become_fields_typed_on_request() {
    let server = ok_server();
    let workspace = Workspace::new();
    let flow = workspace.file(
        "csv.flow",
        format!(
            "step \"Send\" {{\n  http POST \"{}/claims/<<entity.id>>\" json {{\n    \"amount\": <<entity.amount>>,\n    \"zip\": <<entity.zip>>,\n    \"open\": <<entity.open>>\n  }}\n}}\n",
            server.url()
        ),
    );
    let input = workspace.file(
        "claims.csv",
        "id,amount,zip,open\nC-1,12.50,00123,true\n\"C-2\",-3,9,false\n",
    );

    let (code, stdout, stderr) = run_records(&flow, &input, &["--csv-types"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        "{\"id\":\"C-1\",\"amount\":12.50,\"zip\":\"00123\",\"open\":true}\n{\"id\":\"C-2\",\"amount\":-3,\"zip\":9,\"open\":false}\n"
    );
    // Records run concurrently, so the server may receive them in either
    // order.
    let mut bodies: Vec<String> = server
        .requests()
        .iter()
        .map(|request| request.body_text().to_string())
        .collect();
    bodies.sort();
    assert_eq!(
        bodies,
        [
            "{\n  \"amount\": -3,\n  \"zip\": 9,\n  \"open\": false\n}",
            "{\n  \"amount\": 12.50,\n  \"zip\": \"00123\",\n  \"open\": true\n}"
        ]
    );

    // Without --csv-types every cell is a string.
    let (code, stdout, stderr) = run_records(&flow, &input, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        lines(&stdout)[0],
        json!({"id": "C-1", "amount": "12.50", "zip": "00123", "open": "true"})
    );
    assert_eq!(
        server.requests()[2..]
            .iter()
            .find(|request| request.target == "/claims/C-1")
            .unwrap()
            .body_text(),
        "{\n  \"amount\": \"12.50\",\n  \"zip\": \"00123\",\n  \"open\": \"true\"\n}"
    );
}

#[test]
fn csv_errors_name_the_record_and_its_lines() {
    let server = ok_server();
    let workspace = Workspace::new();
    let flow = post_flow(&workspace, &server, "");
    // Lines end with CRLF. Line 1 is the header and line 2 is blank. C-0 is
    // on line 3, and C-1 on lines 4 and 5 with a quoted note. Line 6 is
    // blank, and line 7 a row of one cell. C-2 spans lines 8 to 10 with a
    // quoted note and has a cell too many. C-3 is on line 11.
    let input = workspace.file(
        "claims.csv",
        "id,note\r\n\r\nC-0,a\r\n\"C-1\",\"two\r\nlines\"\r\n\r\nbad\r\nC-2,\"x\r\ny\r\nz\",extra\r\nC-3,d\r\n",
    );

    let (code, stdout, stderr) = run_records(&flow, &input, &["--concurrency", "1"]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        lines(&stdout),
        [
            json!({"id": "C-0", "note": "a", "status": "ok"}),
            json!({"id": "C-1", "note": "two\r\nlines", "status": "ok"}),
            json!({"id": "C-3", "note": "d", "status": "ok"}),
        ]
    );
    let shown = format!("`{}`", input.display());
    assert!(
        stderr.contains(&format!(
            "record 3 (line 7) of {shown} has 1 cell, but the header row has 2 columns"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "record 4 (lines 8 to 10) of {shown} has 3 cells, but the header row has 2 columns"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("record 3 (line 7) did not run:\n"), "{stderr}");
    assert!(stderr.contains("record 4 (line 8) did not run:\n"), "{stderr}");
}

#[test]
fn bad_csv_header_stops_before_running() {
    let server = ok_server();
    let workspace = Workspace::new();
    let flow = post_flow(&workspace, &server, "");
    let cases: [(&str, &[u8], &str); 2] = [
        (
            "twice.csv",
            b"id,note,id\nC-0,a,b\n",
            "names the column `id` twice",
        ),
        ("latin1.csv", b"id,caf\xe9\nC-0,a\n", "is not valid UTF-8"),
    ];
    for (name, text, problem) in cases {
        let input = workspace.file(name, text);
        let (code, stdout, stderr) = run_records(&flow, &input, &[]);
        assert_eq!(code, 2, "{stderr}");
        assert_eq!(stdout, "");
        assert!(
            stderr.contains(&format!("the header row of `{}` {problem}", input.display())),
            "{stderr}"
        );
        assert!(!stderr.contains("did not run"), "{stderr}");
    }
    assert_eq!(server.request_count(), 0);
}

#[test]
fn unreadable_json_line_heading_names_line() {
    let server = ok_server();
    let workspace = Workspace::new();
    let flow = post_flow(&workspace, &server, "");
    // Record 2 is on line 3, after a blank line, and is cut short.
    let input = workspace.file("records.jsonl", "{\"id\":\"C-0\"}\n\n{\"a\":\n");
    let quoted_input = format!("`{}`", input.display());

    let (code, stdout, stderr) = run_records(&flow, &input, &[]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(ids(&lines(&stdout)), ["C-0"]);
    let (report, summary) = stderr.rsplit_once("2 records in ").unwrap();
    assert_eq!(
        report,
        format!(
            "record 2 (line 3) did not run:\n\
             flow::input::invalid_record\n\
             \n  \u{d7} line 3 of {quoted_input} is not valid JSON: EOF while parsing a value at column 5\n\
             \x20 help: JSON Lines holds one JSON object per line\n"
        )
    );
    assert!(
        summary.ends_with(": 1 succeeded, 0 failed, 0 paused, 1 not run\n"),
        "{stderr}"
    );

    let (code, _, stderr) = run_records(&flow, &input, &["--log-format", "json"]);
    assert_eq!(code, 1, "{stderr}");
    let rejected: Value = serde_json::from_str(stderr.lines().next().unwrap()).unwrap();
    assert_eq!(
        rejected["message"],
        json!(format!(
            "record 2 (line 3) did not run: line 3 of {quoted_input} is not valid JSON: EOF while parsing a value at column 5"
        ))
    );
    assert_eq!(
        rejected["spans"],
        json!([{"name": "record", "record": 2, "line": 3}])
    );
}

#[test]
fn non_utf8_json_line_heading_names_line() {
    let server = ok_server();
    let workspace = Workspace::new();
    let flow = post_flow(&workspace, &server, "");
    // Record 2, on line 3, contains the byte 0xFF: it fails alone.
    let input = workspace.file(
        "records.jsonl",
        b"{\"id\":\"C-0\"}\n\n{\"id\":\"\xff\"}\n{\"id\":\"C-2\"}\n",
    );
    let quoted_input = format!("`{}`", input.display());

    let (code, stdout, stderr) = run_records(&flow, &input, &[]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(ids(&lines(&stdout)), ["C-0", "C-2"]);
    let (report, summary) = stderr.rsplit_once("3 records in ").unwrap();
    assert_eq!(
        report,
        format!(
            "record 2 (line 3) did not run:\n\
             flow::input::invalid_record\n\
             \n  \u{d7} line 3 of {quoted_input} is not UTF-8: its byte 8 is not part of a UTF-8 character\n\
             \x20 help: save the records as UTF-8; JSON Lines holds one JSON object per line\n"
        )
    );
    assert!(
        summary.contains(": 2 succeeded, 0 failed, 0 paused, 1 not run"),
        "{summary}"
    );
}

#[test]
fn record_lines_name_the_input_line() {
    let server = TestServer::start(|request| match record_id(request) {
        "C-2" => Reply::status(500).body("broken"),
        _ => Reply::json(200, json!({"status": "ok"})),
    });
    let workspace = Workspace::new();
    let flow = workspace.file(
        "greet.flow",
        format!(
            "let greeting = \"hi <<entity.name>>\"\n\nstep \"Send\" {{\n  http POST \"{}/claims/<<entity.id>>\" json {{\n    \"greeting\": \"<<vars.greeting>>\"\n  }}\n  on error continue notify\n}}\n",
            server.url()
        ),
    );
    // Record 2, on line 4, has no name, and record 3, on line 6, fails.
    let input = workspace.file(
        "records.jsonl",
        "{\"id\":\"C-0\",\"name\":\"a\"}\n\n\n{\"id\":\"C-1\"}\n\n{\"id\":\"C-2\",\"name\":\"c\"}\n",
    );

    for log_format in ["text", "json"] {
        let (code, stdout, stderr) = run_records(&flow, &input, &["--log-format", log_format]);
        assert_eq!(code, 1, "{stderr}");
        assert_eq!(ids(&lines(&stdout)), ["C-0", "C-2"]);
        assert!(stderr.contains("record 2 (line 4) did not run"), "{stderr}");
        assert!(stderr.contains("record 3 (line 6, execution "), "{stderr}");
    }

    let (_, _, stderr) = run_records(&flow, &input, &["--log-format", "json"]);
    let events: Vec<Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let rejected = events
        .iter()
        .find(|event| event["code"] == "flow::run::missing_merge_field")
        .unwrap_or_else(|| panic!("{stderr}"));
    assert_eq!(
        rejected["spans"],
        json!([{"name": "record", "record": 2, "line": 4}])
    );
    let failed: Vec<&Value> = events
        .iter()
        .filter(|event| event["message"].as_str().unwrap().contains("/claims/C-2"))
        .collect();
    assert_eq!(failed.len(), 2, "{stderr}");
    for event in failed {
        assert_eq!(
            event["spans"][0],
            json!({"name": "record", "record": 3, "line": 6}),
            "{event}"
        );
    }
}

#[test]
fn csv_typed_numbers_keep_their_digits() {
    let server = ok_server();
    let workspace = Workspace::new();
    let flow = workspace.file(
        "numbers.flow",
        format!(
            "step \"Send\" {{\n  http POST \"{}/claims/<<entity.id>>\" json {{\n    \"a\": <<entity.a>>,\n    \"b\": <<entity.b>>,\n    \"c\": <<entity.c>>,\n    \"d\": <<entity.d>>\n  }}\n}}\n",
            server.url()
        ),
    );
    let input = workspace.file(
        "numbers.csv",
        "id,a,b,c,d\nC-1,2e3,0.10000000000000000001,12345678901234567890123,-1.50E-2\n",
    );

    let (code, stdout, stderr) = run_records(&flow, &input, &["--csv-types"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        "{\"id\":\"C-1\",\"a\":2000,\"b\":0.10000000000000000001,\"c\":12345678901234567890123,\"d\":-0.0150}\n"
    );
    assert_eq!(
        server.requests()[0].body_text(),
        "{\n  \"a\": 2000,\n  \"b\": 0.10000000000000000001,\n  \"c\": 12345678901234567890123,\n  \"d\": -0.0150\n}"
    );
}

#[test]
fn a_json_array_on_standard_input_and_a_bad_record() {
    let server = ok_server();
    let workspace = Workspace::new();
    let flow = post_flow(&workspace, &server, "");
    let mut child = flowrun(&["run", path_str(&flow), "--entities", "-", "--no-store"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"[{\"id\": \"C-0\"}, {\"id\": \"C-1\"}, 3]")
        .unwrap();
    let result = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(result.stderr).unwrap();
    assert_eq!(result.status.code(), Some(1), "{stderr}");
    assert_eq!(
        ids(&lines(&String::from_utf8(result.stdout).unwrap())),
        expected_ids(0..2)
    );
    assert!(stderr.contains("record 3 (line 1) did not run:"), "{stderr}");
    assert!(
        stderr.contains("record 3 of standard input is a number, not a JSON object"),
        "{stderr}"
    );
    assert!(
        stderr.contains(": 2 succeeded, 0 failed, 0 paused, 1 not run"),
        "{stderr}"
    );
}

/// Feeds standard input a piece at a time, and after each piece waits for
/// the entity lines it lets run, while the input stays open.
fn records_run_as_they_arrive(format: &[&str], pieces: &[(&str, &[&str])]) {
    let server = ok_server();
    let workspace = Workspace::new();
    let flow = post_flow(&workspace, &server, "");
    let mut args = vec!["run", path_str(&flow), "--entities", "-", "--no-store"];
    args.extend_from_slice(format);
    let mut child = flowrun(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            if sender.send(line.unwrap()).is_err() {
                break;
            }
        }
    });

    for (piece, expected) in pieces {
        stdin.write_all(piece.as_bytes()).unwrap();
        stdin.flush().unwrap();
        for id in *expected {
            let line = receiver.recv_timeout(Duration::from_secs(10));
            assert_eq!(
                line.as_deref(),
                Ok(format!("{{\"id\":\"{id}\",\"status\":\"ok\"}}").as_str()),
                "after {piece:?}"
            );
        }
    }

    drop(stdin);
    let result = child.wait_with_output().unwrap();
    reader.join().unwrap();
    assert_eq!(result.status.code(), Some(0));
    assert_eq!(
        server.request_count(),
        pieces.iter().map(|(_, ids)| ids.len()).sum::<usize>()
    );
}

#[test]
fn json_lines_run_before_input_ends() {
    records_run_as_they_arrive(
        &[],
        &[
            ("{\"id\":\"C-0\"}\n", &["C-0"]),
            ("{\"id\":\"C-1\"}\n{\"id\":\"C-2\"}\n", &["C-1", "C-2"]),
        ],
    );
}

#[test]
fn csv_rows_run_before_input_ends() {
    records_run_as_they_arrive(
        &["--entities-format", "csv"],
        &[("id\nC-0\n", &["C-0"]), ("C-1\n", &["C-1"])],
    );
}

#[test]
fn array_elements_run_before_input_ends() {
    records_run_as_they_arrive(
        &[],
        &[("[{\"id\":\"C-0\"},", &["C-0"]), (" {\"id\":\"C-1\"}]", &["C-1"])],
    );
}

#[test]
fn ctrl_c_finishes_running_executions() {
    let server =
        TestServer::start(|_| Reply::json(200, json!({"status": "ok"})).delay(Duration::from_millis(600)));
    let workspace = Workspace::new();
    let flow = post_flow(&workspace, &server, "");
    let input = records(&workspace, 40);
    let store = workspace.dir.path().join("store.db");

    let child = batch_command(&flow, &input, Some(&store), &["--concurrency", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.request_count() < 3 {
        assert!(Instant::now() < deadline, "the batch never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let signalled = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());
    let result = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(result.stderr).unwrap();
    assert_eq!(result.status.code(), Some(130), "{stderr}");

    // The three executions in flight finished and were recorded; nothing
    // else started.
    let sent: BTreeSet<String> = server
        .requests()
        .iter()
        .map(|request| record_id(request).to_string())
        .collect();
    assert_eq!(sent, expected_ids(0..3).into_iter().collect());
    assert_eq!(
        ids(&lines(&String::from_utf8(result.stdout).unwrap())),
        expected_ids(0..3)
    );
    assert_eq!(statuses(&store), vec![ExecutionStatus::Succeeded; 3]);
    assert!(
        stderr.contains(": 3 succeeded, 0 failed, 0 paused, 0 not run"),
        "{stderr}"
    );
    assert!(stderr.contains("repeat the command with --skip 3"), "{stderr}");
    assert!(
        stderr.contains(
            "warning: interrupted: no further record starts, and requests waiting for a Retry-After, for \
             --rate or for the first response from an HTTPS origin are not sent; waiting for 3 running \
             executions to finish (Ctrl-C again stops them at once)\n"
        ),
        "{stderr}"
    );

    let (code, stdout, stderr) = output(&mut batch_command(
        &flow,
        &input,
        Some(&store),
        &["--concurrency", "40", "--skip", "3"],
    ));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(ids(&lines(&stdout)), expected_ids(3..40));
    let mut all: Vec<String> = server
        .requests()
        .iter()
        .map(|request| record_id(request).to_string())
        .collect();
    all.sort_by_key(|id| id.trim_start_matches("C-").parse::<u32>().unwrap());
    assert_eq!(all, expected_ids(0..40));
    assert_eq!(statuses(&store), vec![ExecutionStatus::Succeeded; 40]);
}

/// Checks whether the store, or a batch journal beside it, records step 0
/// of execution `id` as begun. The store is read before and after the journals,
/// because the writer may fold and empty a journal in between.
fn step_begun(store: &Path, id: &str) -> bool {
    let running = || {
        SqliteStore::open(store)
            .unwrap()
            .steps(id)
            .ok()
            .and_then(|steps| steps.first().map(|step| step.status))
            == Some(flowrun::store::StepStatus::Running)
    };
    if running() {
        return true;
    }
    let needle = format!(r#""op":"begin_step","id":"{id}","index":0,"#);
    let journaled = std::fs::read_dir(store.parent().unwrap())
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("store.db-batch-"))
        .any(|entry| {
            std::fs::read_to_string(entry.path())
                .unwrap_or_default()
                .contains(&needle)
        });
    journaled || running()
}

#[test]
fn each_step_is_recorded_as_begun_before_its_request() {
    let workspace = Workspace::new();
    let store = workspace.dir.path().join("store.db");
    let store_for_server = store.clone();
    // The server looks the execution up as each request arrives, and fails
    // the request unless its step is recorded as begun.
    let server = TestServer::start(move |request| {
        let id = request.header("x-execution").unwrap_or_default().to_string();
        if step_begun(&store_for_server, &id) {
            Reply::json(200, json!({"status": "ok"}))
        } else {
            Reply::status(500).body(format!("step of {id} is not recorded"))
        }
    });
    let flow = workspace.file(
        "w.flow",
        format!(
            "step \"Send\" {{\n  http POST \"{}/claims/<<entity.id>>\" json {{}} headers {{\n    \"X-Execution\": \"<<execution.id>>\"\n  }}\n  save response.json.status -> entity.status\n  on error continue notify\n}}\n",
            server.url()
        ),
    );
    let input = records(&workspace, 30);

    let (code, stdout, stderr) = output(&mut batch_command(
        &flow,
        &input,
        Some(&store),
        &["--concurrency", "8"],
    ));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        lines(&stdout).iter().all(|entity| entity["status"] == "ok"),
        "{stdout}"
    );
    assert_eq!(server.request_count(), 30);
    assert_eq!(statuses(&store), vec![ExecutionStatus::Succeeded; 30]);
}

#[test]
fn a_second_ctrl_c_abandons_running_executions() {
    let server = TestServer::start(|_| Reply::hang());
    let workspace = Workspace::new();
    let flow = post_flow(&workspace, &server, "");
    let input = records(&workspace, 10);
    let store = workspace.dir.path().join("store.db");

    let child = batch_command(&flow, &input, Some(&store), &["--concurrency", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.request_count() < 2 {
        assert!(Instant::now() < deadline, "the batch never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let started = Instant::now();
    for _ in 0..2 {
        let signalled = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(signalled.success());
        std::thread::sleep(Duration::from_millis(200));
    }
    let result = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(result.stderr).unwrap();
    assert_eq!(result.status.code(), Some(130), "{stderr}");
    // The steps' 30 s timeout did not have to pass.
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(String::from_utf8(result.stdout).unwrap(), "");
    assert!(
        stderr.contains(
            "stopped by a second Ctrl-C with 2 executions in flight; their steps stay recorded as running"
        ),
        "{stderr}"
    );

    // Both executions read as running in a process that is gone, so a
    // resume refuses to send their POST again without --resend-in-flight.
    let opened = SqliteStore::open(&store).unwrap();
    let running = opened.executions(Some(ExecutionStatus::Running)).unwrap();
    assert_eq!(running.len(), 2);
    drop(opened);
    let (code, _, stderr) = output(&mut flowrun(&[
        "resume",
        &running[0].id,
        "--store",
        path_str(&store),
    ]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("flow::input::resume_refused"), "{stderr}");
    assert_eq!(server.request_count(), 2);
}

/// A server that replies to every record at once, except that it holds
/// `/claims/{held}` until the returned flag is set, for at most 30 s.
fn holding_server(held: &'static str) -> (TestServer, Arc<AtomicBool>) {
    let released = Arc::new(AtomicBool::new(false));
    let flag = released.clone();
    let server = TestServer::start(move |request| {
        if record_id(request) == held {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !flag.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Reply::json(200, json!({"status": "ok"}))
    });
    (server, released)
}

#[test]
fn each_output_line_leaves_when_its_record_ends() {
    let (server, released) = holding_server("C-2");
    let workspace = Workspace::new();
    let flow = post_flow(&workspace, &server, "");
    let input = records(&workspace, 3);
    let mut child = flowrun(&[
        "run",
        path_str(&flow),
        "--entities",
        path_str(&input),
        "--concurrency",
        "1",
        "--no-store",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            if sender.send(line.unwrap()).is_err() {
                break;
            }
        }
    });

    // The first two lines arrive while the third record is still held.
    let mut early = Vec::new();
    for _ in 0..2 {
        early.push(receiver.recv_timeout(Duration::from_secs(10)).unwrap());
    }
    released.store(true, Ordering::SeqCst);
    let result = child.wait_with_output().unwrap();
    reader.join().unwrap();
    assert_eq!(result.status.code(), Some(0));
    let rest: Vec<String> = receiver.try_iter().collect();
    assert_eq!(
        early,
        [r#"{"id":"C-0","status":"ok"}"#, r#"{"id":"C-1","status":"ok"}"#]
    );
    assert_eq!(rest, [r#"{"id":"C-2","status":"ok"}"#]);
}

#[test]
fn a_closed_standard_output_stops_taking_records() {
    let (server, released) = holding_server("C-1");
    let workspace = Workspace::new();
    let flow = post_flow(&workspace, &server, "");
    let input = records(&workspace, 10);
    let store = workspace.dir.path().join("store.db");
    let mut child = batch_command(&flow, &input, Some(&store), &["--concurrency", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read one line, then go away like `head -n 1`.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    assert_eq!(first, "{\"id\":\"C-0\",\"status\":\"ok\"}\n");
    drop(stdout);
    released.store(true, Ordering::SeqCst);
    let result = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(result.stderr).unwrap();
    assert_eq!(result.status.code(), Some(4), "{stderr}");

    // The record in flight finished and was stored; no record started after it.
    let sent: Vec<String> = server
        .requests()
        .iter()
        .map(|request| record_id(request).to_string())
        .collect();
    assert_eq!(sent, expected_ids(0..2));
    assert_eq!(statuses(&store), vec![ExecutionStatus::Succeeded; 2]);
    assert!(
        stderr.contains("2 records in ") && stderr.contains(": 2 succeeded, 0 failed, 0 paused, 0 not run"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "standard output was closed, so no further record started and the results of those still running \
             were not printed: records up to number 2 started and each ended as succeeded, failed or paused; \
             to run the rest, repeat the command with \
             --skip 2"
        ),
        "{stderr}"
    );
}

#[test]
fn bad_elements_of_a_json_array_fail_alone() {
    let server = ok_server();
    let workspace = Workspace::new();
    let flow = post_flow(&workspace, &server, "");
    let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
    let input = workspace.file(
        "records.json",
        format!(
            "[{{\"id\":\"C-0\"}}, 5, \"str\", [1,2], null, {{\"id\": {deep}}}, {{\"id\":\"C-1\"}}, {{\"id\":\"C-2\"}}]"
        ),
    );
    let (code, stdout, stderr) = run_records(&flow, &input, &["--concurrency", "1"]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(ids(&lines(&stdout)), expected_ids(0..3));
    let mut sent: Vec<String> = server
        .requests()
        .iter()
        .map(|request| record_id(request).to_string())
        .collect();
    sent.sort();
    assert_eq!(sent, expected_ids(0..3));
    let shown = format!("record 2 of `{}` is a number, not a JSON object", input.display());
    assert!(stderr.contains(&shown), "{stderr}");
    let shown = format!(
        "record 6 of `{}` is nested more than 100 levels deep",
        input.display()
    );
    assert!(stderr.contains(&shown), "{stderr}");
    assert!(
        stderr.contains(": 3 succeeded, 0 failed, 0 paused, 5 not run"),
        "{stderr}"
    );

    // Broken syntax stops the reading and says where.
    let input = workspace.file(
        "broken.json",
        "[{\"id\":\"C-0\"},\n  {\"id\": },\n  {\"id\":\"C-1\"}]",
    );
    let (code, stdout, stderr) = run_records(&flow, &input, &[]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(ids(&lines(&stdout)), expected_ids(0..1));
    let shown = format!(
        "record 2 of `{0}` is not valid JSON: expected value; reading stopped at record 2, and the rest of `{0}` \
         was not read",
        input.display()
    );
    assert!(stderr.contains(&shown), "{stderr}");
    assert!(stderr.contains("record 2 (line 2) did not run:"), "{stderr}");
}

/// Runs a batch of three records in which `C-1` gets a 500 and the third is
/// no object, and returns the exit code, standard error and the store.
fn failing_batch(log_format: &str) -> (i32, String, String, PathBuf, Workspace, TestServer) {
    let server = TestServer::start(|request| match record_id(request) {
        "C-1" => Reply::status(500).body("broken"),
        _ => Reply::json(200, json!({"status": "ok"})),
    });
    let workspace = Workspace::new();
    let flow = post_flow(&workspace, &server, "  on error continue notify\n");
    let input = workspace.file("records.jsonl", "{\"id\":\"C-0\"}\n{\"id\":\"C-1\"}\n[2]\n");
    let store = workspace.dir.path().join("store.db");
    let (code, _, stderr) = output(&mut batch_command(
        &flow,
        &input,
        Some(&store),
        &["--log-format", log_format],
    ));
    let shown = format!("`{}`", input.display());
    (code, stderr, shown, store, workspace, server)
}

#[test]
fn json_logs_name_the_record_and_execution_on_every_line() {
    let (code, stderr, shown, store, _workspace, server) = failing_batch("json");
    assert_eq!(code, 1, "{stderr}");
    let failed = SqliteStore::open(&store)
        .unwrap()
        .executions(Some(ExecutionStatus::Failed))
        .unwrap();
    assert_eq!(failed.len(), 1);
    let id = failed[0].id.clone();

    let events: Vec<Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not a JSON object: {line}")))
        .collect();
    let about_c1: Vec<&Value> = events
        .iter()
        .filter(|event| event["message"].as_str().unwrap().contains("/claims/C-1"))
        .collect();
    // The notification and the record's own line.
    assert_eq!(about_c1.len(), 2, "{stderr}");
    for event in &about_c1 {
        assert_eq!(
            event["spans"][0],
            json!({"name": "record", "record": 2, "line": 2}),
            "{event}"
        );
        assert_eq!(event["spans"][1]["execution_id"], json!(id), "{event}");
    }
    let url = server.url();
    assert_eq!(
        about_c1[0]["message"],
        json!(format!(
            "notification (medium): step \"Send\" failed: POST {url}/claims/C-1 returned 500 Internal Server Error"
        ))
    );
    assert_eq!(about_c1[0]["response_body"], "broken");
    assert_eq!(
        about_c1[1]["message"],
        json!(format!(
            "record 2 (line 2, execution {id}) failed at step \"Send\": POST {url}/claims/C-1 returned 500 \
             Internal Server Error"
        ))
    );
    assert_eq!(about_c1[1]["response_body"], "broken");
    assert_eq!(about_c1[1]["level"], "WARN");
    assert_eq!(about_c1[1]["outcome"], "failed");

    let rejected = events
        .iter()
        .find(|event| {
            event["message"]
                .as_str()
                .unwrap()
                .starts_with("record 3 (line 3) did not run")
        })
        .unwrap();
    assert_eq!(
        rejected["message"],
        json!(format!(
            "record 3 (line 3) did not run: line 3 of {shown} is an array, not a JSON object"
        ))
    );
    assert_eq!(rejected["code"], "flow::input::invalid_record");
    assert_eq!(rejected["level"], "ERROR");
    assert_eq!(
        rejected["spans"],
        json!([{"name": "record", "record": 3, "line": 3}])
    );

    let summary = events.last().unwrap();
    assert_eq!(summary["level"], "INFO");
    assert!(
        summary["message"]
            .as_str()
            .unwrap()
            .ends_with(": 1 succeeded, 1 failed, 0 paused, 1 not run"),
        "{summary}"
    );
}

#[test]
fn text_logs_keep_a_response_body_on_its_line() {
    let (code, stderr, _, _, _workspace, server) = failing_batch("text");
    assert_eq!(code, 1, "{stderr}");
    let url = server.url();
    let notification = format!(
        "warning: step \"Send\": notification (medium): step \"Send\" failed: POST {url}/claims/C-1 returned 500 \
         Internal Server Error; response body: broken\n"
    );
    assert!(stderr.contains(&notification), "{stderr}");
    let record = format!(
        ") failed at step \"Send\": POST {url}/claims/C-1 returned 500 Internal Server Error; response body: broken\n"
    );
    assert!(stderr.contains(&record), "{stderr}");
    assert!(!stderr.contains("\\n"), "{stderr}");
}

#[test]
fn ctrl_c_ends_retry_after_waits() {
    // The first request for C-0 gets a 429 asking for a 60 s wait, which
    // closes the host's gate; C-1 answers late, so C-2 starts behind the gate.
    let served_429 = Arc::new(AtomicBool::new(false));
    let flag = served_429.clone();
    let server = TestServer::start(move |request| match record_id(request) {
        "C-0" if !flag.swap(true, Ordering::SeqCst) => Reply::status(429).header("Retry-After", "60"),
        "C-1" => Reply::json(200, json!({"status": "ok"})).delay(Duration::from_millis(300)),
        _ => Reply::json(200, json!({"status": "ok"})),
    });
    let workspace = Workspace::new();
    let flow = post_flow(&workspace, &server, "");
    let input = records(&workspace, 10);
    let store = workspace.dir.path().join("store.db");
    let mut child = batch_command(
        &flow,
        &input,
        Some(&store),
        &["--concurrency", "2", "--unordered"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    assert_eq!(first, "{\"id\":\"C-1\",\"status\":\"ok\"}\n");
    std::thread::sleep(Duration::from_millis(300));

    let started = Instant::now();
    let signalled = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let result = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(result.stderr).unwrap();
    assert_eq!(result.status.code(), Some(130), "{stderr}");
    // Neither the 60 s Retry-After nor the gate was waited out.
    assert!(started.elapsed() < Duration::from_secs(20));
    let mut paused = ids(&lines(&rest));
    paused.sort();
    assert_eq!(paused, ["C-0", "C-2"]);
    // C-0 and C-1 go out at once, so their arrival order varies.
    let mut sent: Vec<String> = server
        .requests()
        .iter()
        .map(|request| record_id(request).to_string())
        .collect();
    sent.sort();
    assert_eq!(sent, ["C-0", "C-1"]);
    let url = server.url();
    for (number, id) in [(1, "C-0"), (3, "C-2")] {
        let line = format!(
            ") paused at step \"Send\": POST {url}/claims/{id}: not sent: the run was interrupted while the \
             request waited\n"
        );
        assert!(
            stderr.contains(&format!("record {number} (line {number}, execution ")),
            "{stderr}"
        );
        assert!(stderr.contains(&line), "{stderr}");
    }
    assert!(
        stderr.contains(": 1 succeeded, 0 failed, 2 paused, 0 not run"),
        "{stderr}"
    );

    // Both wait in the store as paused, and a resume sends the request.
    let opened = SqliteStore::open(&store).unwrap();
    let waiting = opened.executions(Some(ExecutionStatus::Paused)).unwrap();
    assert_eq!(waiting.len(), 2);
    drop(opened);
    for execution in &waiting {
        let (code, stdout, stderr) = output(&mut flowrun(&[
            "resume",
            &execution.id,
            "--store",
            path_str(&store),
        ]));
        assert_eq!(code, 0, "{stderr}");
        let entity: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(entity["status"], "ok", "{stdout}");
    }
    let mut sent: Vec<String> = server
        .requests()
        .iter()
        .map(|request| record_id(request).to_string())
        .collect();
    sent.sort();
    assert_eq!(sent, ["C-0", "C-0", "C-1", "C-2"]);
    assert_eq!(statuses(&store), vec![ExecutionStatus::Succeeded; 3]);
}

#[test]
fn killed_batch_keeps_begun_steps() {
    // The server never responds to the second step of C-5, so the batch
    // stops there.
    let server = TestServer::start(|request| {
        if request.target == "/two/C-5" {
            return Reply::hang();
        }
        Reply::json(200, json!({"status": request.target}))
    });
    let workspace = Workspace::new();
    let flow = workspace.file(
        "w.flow",
        format!(
            "step \"One\" {{\n  http POST \"{base}/one/<<entity.id>>\" json {{}}\n  save response.json.status -> entity.one\n}}\n\
             step \"Two\" {{\n  http POST \"{base}/two/<<entity.id>>\" json {{}}\n}}\n",
            base = server.url()
        ),
    );
    let input = records(&workspace, 10);
    let store = workspace.dir.path().join("store.db");
    let mut child = batch_command(&flow, &input, Some(&store), &["--concurrency", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.request_count() < 12 {
        assert!(Instant::now() < deadline, "the batch never reached C-5");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let journals = || {
        std::fs::read_dir(workspace.dir.path())
            .unwrap()
            .filter(|entry| {
                entry
                    .as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("store.db-batch-")
            })
            .count()
    };
    assert_eq!(journals(), 1);

    // Opening the store applies what the killed process left in its journal.
    let opened = SqliteStore::open(&store).unwrap();
    assert_eq!(journals(), 0);
    let mut summaries = opened.executions(None).unwrap();
    summaries.sort_by_key(|summary| summary.started_at.clone());
    assert_eq!(summaries.len(), 6);
    let mut finished = 0;
    for summary in &summaries {
        let record = opened.execution(&summary.id).unwrap();
        let steps: Vec<flowrun::store::StepStatus> = opened
            .steps(&summary.id)
            .unwrap()
            .iter()
            .map(|step| step.status)
            .collect();
        if record.entity["id"] == "C-5" {
            assert_eq!(record.status, ExecutionStatus::Running);
            assert_eq!(record.entity, json!({"id": "C-5", "one": "/one/C-5"}));
            assert_eq!(record.next_step, 1);
            assert_eq!(
                steps,
                vec![
                    flowrun::store::StepStatus::Succeeded,
                    flowrun::store::StepStatus::Running
                ]
            );
        } else {
            assert_eq!(record.status, ExecutionStatus::Succeeded, "{record:?}");
            assert_eq!(steps, vec![flowrun::store::StepStatus::Succeeded; 2]);
            finished += 1;
        }
    }
    assert_eq!(finished, 5);
}

/// Writes a workflow of two steps: "Send" POSTs to `/send/ID` and goes on
/// after a failure, and "Confirm" POSTs to `/confirm/ID` and pauses after
/// one. Each saves the server's `status`.
fn send_and_confirm_flow(workspace: &Workspace, server: &TestServer) -> PathBuf {
    let url = server.url();
    workspace.file(
        "sync.flow",
        format!(
            "workflow \"Sync\"\n\nstep \"Send\" {{\n  http POST \"{url}/send/<<entity.id>>\"\n  \
             save response.json.status -> entity.sent\n  on error continue notify\n}}\n\n\
             step \"Confirm\" {{\n  http POST \"{url}/confirm/<<entity.id>>\"\n  \
             save response.json.status -> entity.confirmed\n}}\n"
        ),
    )
}

/// Six records in JSON Lines with CRLF line ends and blank lines between
/// them: C-0 succeeds, C-1 fails, C-2 pauses, line 8 is not JSON, C-3
/// succeeds and C-4 succeeds after 1.5 s, so that the progress bar is drawn
/// while only C-4 is running.
fn progress_batch() -> (TestServer, Workspace, PathBuf, PathBuf) {
    let server = TestServer::start(|request| match request.target.as_str() {
        "/send/C-1" | "/confirm/C-2" => Reply::status(500).body("broken"),
        "/send/C-4" => Reply::json(200, json!({"status": "ok"})).delay(Duration::from_millis(1500)),
        _ => Reply::json(200, json!({"status": "ok"})),
    });
    let workspace = Workspace::new();
    let flow = send_and_confirm_flow(&workspace, &server);
    let input = workspace.file(
        "records.jsonl",
        "{\"id\":\"C-0\"}\r\n\r\n{\"id\":\"C-1\"}\r\n\r\n\r\n{\"id\":\"C-2\"}\r\n\r\nnot json\r\n{\"id\":\"C-3\"}\r\n\r\n{\"id\":\"C-4\"}\r\n\r\n",
    );
    (server, workspace, flow, input)
}

/// Returns the entities the progress batch prints, in input order.
fn progress_batch_entities() -> Vec<Value> {
    vec![
        json!({"id": "C-0", "sent": "ok", "confirmed": "ok"}),
        json!({"id": "C-1", "confirmed": "ok"}),
        json!({"id": "C-2", "sent": "ok"}),
        json!({"id": "C-3", "sent": "ok", "confirmed": "ok"}),
        json!({"id": "C-4", "sent": "ok", "confirmed": "ok"}),
    ]
}

#[test]
fn progress_bar_on_a_terminal() {
    let (_server, _workspace, flow, input) = progress_batch();
    let (code, stdout, terminal) = output(&mut flowrun_on_terminal(&[
        "run",
        path_str(&flow),
        "--entities",
        path_str(&input),
        "--concurrency",
        "8",
        "--no-store",
    ]));
    assert_eq!(code, 1, "{terminal}");
    assert_eq!(lines(&stdout), progress_batch_entities());
    assert!(stdout.ends_with("}\n"), "{stdout:?}");

    // Five of six records are done while C-4 waits for its response, and
    // every draw shows a total of six: records, not lines.
    assert!(
        terminal.contains("5/6 done, ") && terminal.contains("1 failed, 1 paused, 1 not run"),
        "{terminal:?}"
    );
    let draws = terminal.matches(" done, ").count();
    assert!(draws >= 2, "{terminal:?}");
    assert_eq!(terminal.matches("/6 done, ").count(), draws, "{terminal:?}");
    assert!(terminal.contains('\u{1b}'), "{terminal:?}");
    assert!(
        terminal.contains("6 records in ")
            && terminal.contains(": 3 succeeded, 1 failed, 1 paused, 1 not run\r\n"),
        "{terminal:?}"
    );
    assert!(
        terminal.contains("failed at step \"Send\"") && terminal.contains("paused at step \"Confirm\""),
        "{terminal:?}"
    );
    // Each draw shows a whole rate, and a comma before the counts.
    for draw in terminal
        .split("\u{1b}[2K")
        .filter(|draw| draw.contains(" done, "))
    {
        let rate = draw.split(" done, ").nth(1).unwrap().split("/s").next().unwrap();
        assert!(rate.bytes().all(|byte| byte.is_ascii_digit()), "{draw:?}");
        if draw.contains(" failed, ") {
            assert!(
                draw.contains(", 1 failed, ") || draw.contains(", 0 failed, "),
                "{draw:?}"
            );
        }
    }
    // Each log line starts on a line of its own: first, after a line break,
    // or after the bar was cleared for it. A record that fails at once can
    // log before the bar's first draw.
    for needle in [
        "error: step",
        "warning: step",
        "record 2 (",
        "record 3 (",
        "6 records in ",
    ] {
        let starts: Vec<usize> = terminal.match_indices(needle).map(|(start, _)| start).collect();
        assert!(!starts.is_empty(), "{needle}: {terminal:?}");
        for start in starts {
            let before = &terminal[..start];
            assert!(
                before.is_empty() || before.ends_with('\n') || before.ends_with("\u{1b}[2K"),
                "{needle} at {start}: {terminal:?}"
            );
        }
    }
}

#[test]
fn progress_total_leaves_out_skipped_records() {
    let (_server, _workspace, flow, input) = progress_batch();
    let (code, stdout, terminal) = output(&mut flowrun_on_terminal(&[
        "run",
        path_str(&flow),
        "--entities",
        path_str(&input),
        "--concurrency",
        "8",
        "--no-store",
        "--skip",
        "2",
    ]));
    assert_eq!(code, 1, "{terminal}");
    assert_eq!(lines(&stdout), progress_batch_entities()[2..]);
    assert!(
        terminal.contains("3/4 done, ") && terminal.contains("0 failed, 1 paused, 1 not run"),
        "{terminal:?}"
    );
    assert!(
        terminal.contains("4 records in ")
            && terminal.contains(": 2 succeeded, 0 failed, 1 paused, 1 not run\r\n"),
        "{terminal:?}"
    );
}

#[test]
fn no_progress_bar_off_a_terminal() {
    let (_server, _workspace, flow, input) = progress_batch();
    let (code, stdout, stderr) = run_records(&flow, &input, &["--concurrency", "8"]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(lines(&stdout), progress_batch_entities());
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
    assert!(!stderr.contains('\r'), "{stderr:?}");
    assert!(!stderr.contains(" done, "), "{stderr:?}");
    assert!(
        stderr.contains("6 records in ") && stderr.contains(": 3 succeeded, 1 failed, 1 paused, 1 not run\n"),
        "{stderr:?}"
    );
}

#[test]
fn records_from_a_named_pipe_with_a_terminal() {
    let server = ok_server();
    let workspace = Workspace::new();
    let flow = post_flow(&workspace, &server, "");
    let fifo = workspace.dir.path().join("records.jsonl");
    support::cli::make_fifo(&fifo);
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let records: String = (0..5)
                .map(|index| format!("{{\"id\":\"C-{index}\"}}\n"))
                .collect();
            std::fs::write(&fifo, records).unwrap();
        })
    };
    let (code, stdout, terminal) = support::cli::output_within(
        &mut flowrun_on_terminal(&[
            "run",
            path_str(&flow),
            "--entities",
            path_str(&fifo),
            // With the format given, nothing is read ahead to detect it, so a
            // second reader of the pipe would get the records.
            "--entities-format",
            "jsonl",
            "--no-store",
        ]),
        Duration::from_secs(30),
    );
    writer.join().unwrap();
    assert_eq!(code, 0, "{terminal}");
    assert_eq!(ids(&lines(&stdout)), expected_ids(0..5));
    assert!(
        terminal.contains("5 records in ")
            && terminal.contains(": 5 succeeded, 0 failed, 0 paused, 0 not run\r\n"),
        "{terminal:?}"
    );
}

/// Runs 12 records, 4 at once, against a server that responds to the
/// first request with a 429 without `Retry-After` and to every other
/// request after 100 ms. Returns the requests the server recorded and the backoff wait, in
/// milliseconds, that the JSON log gives for the one retry.
fn backoff_batch() -> (Vec<Recorded>, u64) {
    let served_429 = Arc::new(AtomicBool::new(false));
    let flag = served_429.clone();
    let server = TestServer::start(move |_| {
        if !flag.swap(true, Ordering::SeqCst) {
            return Reply::status(429);
        }
        Reply::json(200, json!({"status": "ok"})).delay(Duration::from_millis(100))
    });
    let workspace = Workspace::new();
    let flow = post_flow(&workspace, &server, "  max_wait 800ms\n");
    let input = records(&workspace, 12);

    let (code, stdout, stderr) = run_records(&flow, &input, &["--concurrency", "4", "--log-format", "json"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(ids(&lines(&stdout)), expected_ids(0..12));

    let waits: Vec<u64> = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|event| event["wait_ms"].as_u64())
        .collect();
    assert_eq!(waits.len(), 1, "{stderr}");
    (server.requests(), waits[0])
}

#[test]
fn a_429_without_retry_after_holds_every_execution() {
    // The backoff wait is drawn at random from 0 to 800 ms. The fifth record
    // starts once a response comes, 100 ms after the 429, so a wait under
    // 250 ms is too short to tell a request held by the gate from one sent
    // without it. The batch then runs again.
    let mut runs = 0;
    loop {
        runs += 1;
        let (requests, wait_ms) = backoff_batch();
        assert!(wait_ms <= 800, "a backoff of {wait_ms} ms is above max_wait");
        // One request per record, and one retry for the record that got the 429.
        assert_eq!(requests.len(), 13, "{requests:#?}");
        let twice: Vec<Vec<&Recorded>> = expected_ids(0..12)
            .iter()
            .map(|id| {
                requests
                    .iter()
                    .filter(|request| record_id(request) == id)
                    .collect::<Vec<_>>()
            })
            .filter(|sent| sent.len() > 1)
            .collect();
        assert_eq!(twice.len(), 1, "{requests:#?}");
        let retries = &twice[0];
        assert_eq!(retries.len(), 2, "{requests:#?}");
        let refused = retries[0];

        // The first request of each of the four records that started
        // together may have left before the 429 came back. Every other
        // request, the retry included, waited for the gate, which closed
        // after the 429 arrived and stayed closed for the drawn wait.
        let opened_at = refused.received_at + Duration::from_millis(wait_ms);
        let mut seen = BTreeSet::new();
        let early: Vec<String> = requests
            .iter()
            .filter(|request| {
                let id = record_id(request);
                let first_of_its_record = seen.insert(id.to_string());
                let started_together = expected_ids(0..4).iter().any(|started| started == id);
                !(first_of_its_record && started_together)
            })
            .filter(|request| request.received_at < opened_at)
            .map(|request| {
                format!(
                    "{} at +{:?}",
                    request.target,
                    request.received_at.duration_since(refused.received_at)
                )
            })
            .collect();
        assert_eq!(
            early,
            Vec::<String>::new(),
            "the gate was closed for {wait_ms} ms"
        );
        assert!(retries[1].received_at >= opened_at);

        if wait_ms >= 250 {
            break;
        }
        assert!(runs < 12, "12 backoff waits in a row were under 250 ms");
    }
}
