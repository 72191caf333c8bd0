//! `flowrun resume --all`: the binary resumes the paused and interrupted
//! executions of a real SQLite store against a recording server on
//! 127.0.0.1.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use flowrun::store::sqlite::SqliteStore;
use flowrun::store::{ExecutionStatus, StepStatus, Store};
use serde_json::{json, Value};
use support::cli::{flowrun, flowrun_on_terminal, output, path_str, Workspace};
use support::server::{Recorded, Reply, TestServer};

/// Writes a one-step workflow named `name` that POSTs each record to
/// `/PREFIX/<<entity.id>>` and saves the server's `status` into the entity.
fn post_flow(workspace: &Workspace, server: &TestServer, name: &str, prefix: &str) -> PathBuf {
    workspace.file(
        name,
        format!(
            "workflow \"Sync\"\n\nstep \"Send\" {{\n  http POST \"{}/{prefix}/<<entity.id>>\" json {{\n    \"id\": \"<<entity.id>>\"\n  }}\n  save response.json.status -> entity.status\n}}\n",
            server.url()
        ),
    )
}

fn records(workspace: &Workspace, name: &str, count: usize) -> PathBuf {
    let lines: String = (0..count)
        .map(|index| format!("{{\"id\":\"C-{index}\"}}\n"))
        .collect();
    workspace.file(name, lines)
}

/// Starts a server that returns 503 for the record ids in the returned set,
/// and otherwise 200 with `{"status": "ok"}` after `delay`.
fn failing_for(ids: &[&str], delay: Duration) -> (TestServer, Arc<Mutex<HashSet<String>>>) {
    let broken: Arc<Mutex<HashSet<String>>> =
        Arc::new(Mutex::new(ids.iter().map(|id| id.to_string()).collect()));
    let set = broken.clone();
    let server = TestServer::start(move |request| {
        let id = record_id(request).to_string();
        if set.lock().unwrap().contains(&id) {
            return Reply::status(503);
        }
        Reply::json(200, json!({"status": "ok"})).delay(delay)
    });
    (server, broken)
}

/// Returns the record id of a request target such as `/claims/C-7`.
fn record_id(request: &Recorded) -> &str {
    request.target.rsplit('/').next().unwrap_or_default()
}

/// Counts the requests the server received for each target.
fn counts(server: &TestServer) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for request in server.requests() {
        *counts.entry(request.target.clone()).or_insert(0) += 1;
    }
    counts
}

fn expected_counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs
        .iter()
        .map(|(target, count)| (target.to_string(), *count))
        .collect()
}

fn lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Runs a batch of `input` through `flow` one record at a time, so that
/// the executions start in input order.
fn run_batch(flow: &Path, input: &Path, store: Option<&Path>) -> (i32, String, String) {
    let mut args = vec![
        "run",
        path_str(flow),
        "--entities",
        path_str(input),
        "--concurrency",
        "1",
    ];
    if let Some(store) = store {
        args.extend(["--store", path_str(store)]);
    }
    output(&mut flowrun(&args))
}

/// Returns the status of each execution of the store, by the `id` of its
/// entity.
fn statuses(store: &Path) -> BTreeMap<String, ExecutionStatus> {
    let store = SqliteStore::open(store).unwrap();
    store
        .executions(None)
        .unwrap()
        .into_iter()
        .map(|summary| {
            let record = store.execution(&summary.id).unwrap();
            let id = record.entity_before["id"].as_str().unwrap().to_string();
            (id, summary.status)
        })
        .collect()
}

/// Returns the execution id of the record whose entity has this `id`.
fn execution_of(store: &Path, id: &str) -> String {
    let store = SqliteStore::open(store).unwrap();
    store
        .executions(None)
        .unwrap()
        .into_iter()
        .find(|summary| store.execution(&summary.id).unwrap().entity_before["id"] == id)
        .unwrap()
        .id
}

/// Reads the counts of a summary such as `3 executions in 0.1 s (30 per
/// second): 2 succeeded, 0 failed, ...`, by what they count.
fn summary_counts(summary: &str) -> BTreeMap<String, usize> {
    let (_, counts) = summary.split_once("): ").unwrap();
    counts
        .split(", ")
        .map(|count| {
            let (number, what) = count.split_once(' ').unwrap();
            (what.to_string(), number.parse().unwrap())
        })
        .collect()
}

fn idempotency_keys(server: &TestServer, target: &str) -> Vec<String> {
    server
        .requests()
        .iter()
        .filter(|request| request.target == target)
        .map(|request| request.header("idempotency-key").unwrap().to_string())
        .collect()
}

#[test]
fn paused_steps_are_sent_once_more() {
    let (server, broken) = failing_for(&["C-1", "C-3", "C-4"], Duration::ZERO);
    let workspace = Workspace::new();
    let flow = post_flow(&workspace, &server, "sync.flow", "claims");
    let input = records(&workspace, "records.jsonl", 6);
    let store = workspace.dir.path().join("store.db");
    let store_arg = path_str(&store);

    let (code, _, stderr) = run_batch(&flow, &input, Some(&store));
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains(": 3 succeeded, 0 failed, 3 paused, 0 not run"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "continue them all with `flowrun resume --all --store '{store_arg}'`, or one with \
             `flowrun resume ID --store '{store_arg}'`"
        )),
        "{stderr}"
    );
    let still_paused = execution_of(&store, "C-4");

    // The server recovers for two of the three records.
    broken.lock().unwrap().retain(|id| id == "C-4");
    let (code, stdout, stderr) = output(&mut flowrun(&["resume", "--all", "--store", store_arg]));
    assert_eq!(code, 3, "{stderr}");
    assert_eq!(
        lines(&stdout),
        vec![
            json!({"id": "C-1", "status": "ok"}),
            json!({"id": "C-3", "status": "ok"}),
            json!({"id": "C-4"}),
        ]
    );
    assert!(
        stderr.contains(&format!(
            "execution {still_paused} paused at step \"Send\": POST {}/claims/C-4 returned 503 Service Unavailable",
            server.url()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("3 executions in "), "{stderr}");
    assert!(
        stderr.contains(": 2 succeeded, 0 failed, 1 paused, 0 not resumed, 0 taken over by another process"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "continue them with `flowrun resume --all --store '{store_arg}'`"
        )),
        "{stderr}"
    );
    assert_eq!(
        counts(&server),
        expected_counts(&[
            ("/claims/C-0", 1),
            ("/claims/C-1", 2),
            ("/claims/C-2", 1),
            ("/claims/C-3", 2),
            ("/claims/C-4", 2),
            ("/claims/C-5", 1),
        ])
    );

    broken.lock().unwrap().clear();
    let (code, stdout, stderr) = output(&mut flowrun(&["resume", "--all", "--store", store_arg]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(lines(&stdout), vec![json!({"id": "C-4", "status": "ok"})]);
    assert!(
        stderr.contains("1 execution in ")
            && stderr.contains(
                ": 1 succeeded, 0 failed, 0 paused, 0 not resumed, 0 taken over by another process"
            ),
        "{stderr}"
    );
    assert_eq!(
        counts(&server),
        expected_counts(&[
            ("/claims/C-0", 1),
            ("/claims/C-1", 2),
            ("/claims/C-2", 1),
            ("/claims/C-3", 2),
            ("/claims/C-4", 3),
            ("/claims/C-5", 1),
        ])
    );
    // Each resumed request carries the key of the record's first request.
    for target in ["/claims/C-1", "/claims/C-3", "/claims/C-4"] {
        let keys: BTreeSet<String> = idempotency_keys(&server, target).into_iter().collect();
        assert_eq!(keys.len(), 1, "{target}: {keys:?}");
    }
    let statuses = statuses(&store);
    assert_eq!(statuses.len(), 6);
    for (id, status) in &statuses {
        assert_eq!(*status, ExecutionStatus::Succeeded, "{id}");
    }
}

#[test]
fn nothing_to_resume_exits_0() {
    let (server, _) = failing_for(&[], Duration::ZERO);
    let workspace = Workspace::new();
    let flow = post_flow(&workspace, &server, "sync.flow", "claims");
    let input = records(&workspace, "records.jsonl", 2);
    let store = workspace.dir.path().join("store.db");
    let (code, _, stderr) = run_batch(&flow, &input, Some(&store));
    assert_eq!(code, 0, "{stderr}");

    let (code, stdout, stderr) = output(&mut flowrun(&["resume", "--all", "--store", path_str(&store)]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "");
    assert_eq!(
        stderr,
        format!(
            "nothing to resume: the store `{}` holds no paused or interrupted executions\n",
            store.display()
        )
    );
    assert_eq!(server.request_count(), 2);

    // A certificate file that cannot be used stops the command even then.
    let missing = workspace.dir.path().join("missing.pem");
    let (code, stdout, stderr) = output(&mut flowrun(&[
        "resume",
        "--all",
        "--store",
        path_str(&store),
        "--cacert",
        path_str(&missing),
    ]));
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stdout, "");
    assert!(stderr.contains("flow::input::invalid_cacert"), "{stderr}");
    assert!(!stderr.contains("nothing to resume"), "{stderr}");
}

#[test]
fn workflow_filter_resumes_only_its_executions() {
    let (server, broken) = failing_for(&["C-0", "C-1"], Duration::ZERO);
    let workspace = Workspace::new();
    let first = post_flow(&workspace, &server, "first.flow", "first");
    let second = post_flow(&workspace, &server, "second.flow", "second");
    let input = records(&workspace, "records.jsonl", 2);
    // Without --store, both batches keep their executions in the store
    // beside the workflows.
    for flow in [&first, &second] {
        let (code, _, stderr) = run_batch(flow, &input, None);
        assert_eq!(code, 3, "{stderr}");
    }
    let store = workspace.dir.path().join(".flowrun").join("flowrun.db");
    assert_eq!(
        SqliteStore::open(&store)
            .unwrap()
            .executions(Some(ExecutionStatus::Paused))
            .unwrap()
            .len(),
        4
    );

    broken.lock().unwrap().clear();
    let (code, stdout, stderr) = output(&mut flowrun(&["resume", "--all", "--workflow", path_str(&first)]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        lines(&stdout),
        vec![
            json!({"id": "C-0", "status": "ok"}),
            json!({"id": "C-1", "status": "ok"}),
        ]
    );
    assert_eq!(
        counts(&server),
        expected_counts(&[
            ("/first/C-0", 2),
            ("/first/C-1", 2),
            ("/second/C-0", 1),
            ("/second/C-1", 1),
        ])
    );
    let opened = SqliteStore::open(&store).unwrap();
    let paused: BTreeSet<String> = opened
        .executions(Some(ExecutionStatus::Paused))
        .unwrap()
        .into_iter()
        .map(|summary| opened.execution(&summary.id).unwrap().source_path)
        .collect();
    let second_path = std::fs::canonicalize(&second).unwrap().display().to_string();
    assert_eq!(paused, BTreeSet::from([second_path]));
    assert_eq!(
        opened.executions(Some(ExecutionStatus::Succeeded)).unwrap().len(),
        2
    );
    drop(opened);

    // The filter's file must exist.
    let missing = workspace.dir.path().join("missing.flow");
    let (code, stdout, stderr) = output(&mut flowrun(&[
        "resume",
        "--all",
        "--workflow",
        path_str(&missing),
        "--store",
        path_str(&store),
    ]));
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stdout, "");
    assert!(stderr.contains("flow::input::file_unreadable"), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot read the workflow `{}`", missing.display())),
        "{stderr}"
    );
}

#[test]
fn workflows_share_one_connection() {
    let (server, broken) = failing_for(&["C-0"], Duration::ZERO);
    let workspace = Workspace::new();
    let first = post_flow(&workspace, &server, "first.flow", "first");
    let second = post_flow(&workspace, &server, "second.flow", "second");
    let input = records(&workspace, "records.jsonl", 1);
    for flow in [&first, &second] {
        let (code, _, stderr) = run_batch(flow, &input, None);
        assert_eq!(code, 3, "{stderr}");
    }
    let connections = server.connection_count();

    broken.lock().unwrap().clear();
    let store = workspace.dir.path().join(".flowrun").join("flowrun.db");
    let (code, stdout, stderr) = output(&mut flowrun(&[
        "resume",
        "--all",
        "--store",
        path_str(&store),
        "--concurrency",
        "1",
    ]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert_eq!(
        counts(&server),
        expected_counts(&[("/first/C-0", 2), ("/second/C-0", 2)])
    );
    // Both workflows trust the same certificates, so the second
    // execution reuses the first one's kept-alive connection.
    assert_eq!(server.connection_count() - connections, 1);
}

#[test]
fn two_at_once_send_each_record_once() {
    let ids: Vec<String> = (0..12).map(|index| format!("C-{index}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let (server, broken) = failing_for(&id_refs, Duration::from_millis(150));
    let workspace = Workspace::new();
    let flow = post_flow(&workspace, &server, "sync.flow", "claims");
    let input = records(&workspace, "records.jsonl", 12);
    let store = workspace.dir.path().join("store.db");
    let (code, _, stderr) = run_batch(&flow, &input, Some(&store));
    assert_eq!(code, 3, "{stderr}");

    broken.lock().unwrap().clear();
    let children: Vec<_> = (0..2)
        .map(|_| {
            flowrun(&[
                "resume",
                "--all",
                "--concurrency",
                "3",
                "--store",
                path_str(&store),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let mut printed = Vec::new();
    let mut succeeded = 0;
    for child in children {
        let result = child.wait_with_output().unwrap();
        let stderr = String::from_utf8(result.stderr).unwrap();
        assert_eq!(result.status.code(), Some(0), "{stderr}");
        let stdout = lines(&String::from_utf8(result.stdout).unwrap());
        // A process that found nothing left to resume prints no summary.
        if let Some(summary) = stderr.lines().find(|line| line.contains(" executions in ")) {
            let counts = summary_counts(summary);
            assert_eq!(counts["succeeded"], stdout.len(), "{stderr}");
            let skipped = stderr
                .matches("was left alone: another process resumed it")
                .count();
            assert_eq!(counts["taken over by another process"], skipped, "{stderr}");
            succeeded += counts["succeeded"];
        }
        printed.extend(stdout);
    }
    assert_eq!(succeeded, 12);
    // Each paused record was sent once in the batch and once more by one
    // of the two resumes, and printed by that one only.
    let expected: Vec<(String, usize)> = ids.iter().map(|id| (format!("/claims/{id}"), 2)).collect();
    assert_eq!(counts(&server), expected.into_iter().collect::<BTreeMap<_, _>>());
    assert_eq!(printed.len(), 12);
    let printed_ids: BTreeSet<&str> = printed
        .iter()
        .map(|entity| entity["id"].as_str().unwrap())
        .collect();
    assert_eq!(printed_ids.len(), 12);
    for entity in &printed {
        assert_eq!(entity["status"], "ok");
    }
    let statuses = statuses(&store);
    assert_eq!(statuses.len(), 12);
    for (id, status) in &statuses {
        assert_eq!(*status, ExecutionStatus::Succeeded, "{id}");
    }
}

#[test]
fn in_flight_posts_need_resend_in_flight() {
    let hanging = Arc::new(AtomicBool::new(true));
    let flag = hanging.clone();
    let server = TestServer::start(move |_| {
        if flag.load(Ordering::SeqCst) {
            return Reply::hang();
        }
        Reply::json(200, json!({"status": "ok"}))
    });
    let workspace = Workspace::new();
    let flow = post_flow(&workspace, &server, "sync.flow", "claims");
    let input = records(&workspace, "records.jsonl", 2);
    let store = workspace.dir.path().join("store.db");
    let store_arg = path_str(&store);

    let mut child = flowrun(&[
        "run",
        path_str(&flow),
        "--entities",
        path_str(&input),
        "--concurrency",
        "2",
        "--store",
        store_arg,
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.request_count() < 2 {
        assert!(Instant::now() < deadline, "the batch never sent its requests");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    hanging.store(false, Ordering::SeqCst);
    let first = execution_of(&store, "C-0");
    let second = execution_of(&store, "C-1");
    assert_eq!(
        statuses(&store),
        BTreeMap::from([
            ("C-0".to_string(), ExecutionStatus::Running),
            ("C-1".to_string(), ExecutionStatus::Running),
        ])
    );

    let (code, stdout, stderr) = output(&mut flowrun(&[
        "resume",
        "--all",
        "--store",
        store_arg,
        "--log-format",
        "json",
    ]));
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stdout, "");
    let logged: Vec<Value> = lines(&stderr);
    for id in [&first, &second] {
        let line = logged
            .iter()
            .find(|line| line["spans"] == json!([{"name": "execution", "execution_id": id}]))
            .unwrap_or_else(|| panic!("no line names {id}: {stderr}"));
        assert_eq!(
            line["message"],
            format!(
                "execution {id} was not resumed: step \"Send\" of execution {id} was in flight when flowrun \
                 stopped, and its outcome is unknown"
            )
        );
        assert_eq!(line["code"], "flow::input::resume_refused");
        assert_eq!(line["level"], "ERROR");
    }
    assert!(
        logged
            .iter()
            .any(|line| line["message"].as_str().unwrap().ends_with(
                ": 0 succeeded, 0 failed, 0 paused, 2 not resumed, 0 taken over by another process"
            )),
        "{stderr}"
    );
    assert_eq!(server.request_count(), 2);
    let opened = SqliteStore::open(&store).unwrap();
    for id in [&first, &second] {
        assert_eq!(opened.steps(id).unwrap()[0].status, StepStatus::OutcomeUnknown);
    }
    drop(opened);

    let (code, stdout, stderr) = output(&mut flowrun(&[
        "resume",
        "--all",
        "--store",
        store_arg,
        "--resend-in-flight",
    ]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        lines(&stdout),
        vec![
            json!({"id": "C-0", "status": "ok"}),
            json!({"id": "C-1", "status": "ok"}),
        ]
    );
    assert_eq!(
        counts(&server),
        expected_counts(&[("/claims/C-0", 2), ("/claims/C-1", 2)])
    );
    for target in ["/claims/C-0", "/claims/C-1"] {
        let keys = idempotency_keys(&server, target);
        assert_eq!(keys[0], keys[1], "{target}");
    }
    assert_eq!(
        statuses(&store),
        BTreeMap::from([
            ("C-0".to_string(), ExecutionStatus::Succeeded),
            ("C-1".to_string(), ExecutionStatus::Succeeded),
        ])
    );
}

#[test]
fn rate_spaces_resumed_requests() {
    let ids = ["C-0", "C-1", "C-2", "C-3", "C-4", "C-5"];
    let (server, broken) = failing_for(&ids, Duration::ZERO);
    let workspace = Workspace::new();
    let flow = post_flow(&workspace, &server, "sync.flow", "claims");
    let input = records(&workspace, "records.jsonl", 6);
    let store = workspace.dir.path().join("store.db");
    let (code, _, stderr) = run_batch(&flow, &input, Some(&store));
    assert_eq!(code, 3, "{stderr}");
    let batch_requests = server.request_count();

    broken.lock().unwrap().clear();
    let (code, _, stderr) = output(&mut flowrun(&[
        "resume",
        "--all",
        "--concurrency",
        "6",
        "--rate",
        "10/s",
        "--store",
        path_str(&store),
    ]));
    assert_eq!(code, 0, "{stderr}");
    let times: Vec<Instant> = server.requests()[batch_requests..]
        .iter()
        .map(|request| request.received_at)
        .collect();
    assert_eq!(times.len(), 6);
    // Without the shared rate, the six executions would send at once.
    let spread = times[5].duration_since(times[0]);
    assert!(
        spread >= Duration::from_millis(450),
        "6 requests at 10/s took {spread:?}"
    );
}

/// A latch that server handlers wait at until the test opens it.
struct Latch {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Latch {
    fn new() -> Arc<Latch> {
        Arc::new(Latch {
            open: Mutex::new(false),
            opened: Condvar::new(),
        })
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }

    /// Waits until the latch is open, or at most 30 s, so that a test that
    /// fails before opening it does not block the server's thread forever.
    fn wait(&self) {
        let open = self.open.lock().unwrap();
        drop(
            self.opened
                .wait_timeout_while(open, Duration::from_secs(30), |open| !*open)
                .unwrap(),
        );
    }
}

/// Returns the id of the execution of the workflow at `flow` whose entity
/// has this `id`.
fn execution_of_workflow(store: &Path, flow: &Path, id: &str) -> String {
    let source_path = std::fs::canonicalize(flow).unwrap().display().to_string();
    let store = SqliteStore::open(store).unwrap();
    store
        .executions(None)
        .unwrap()
        .into_iter()
        .find(|summary| {
            let record = store.execution(&summary.id).unwrap();
            record.source_path == source_path && record.entity_before["id"] == id
        })
        .unwrap()
        .id
}

/// Returns the number, status code and wait of each attempt of the first
/// step of execution `id`.
fn attempts(store: &Path, id: &str) -> Vec<(u32, Option<u16>, u64)> {
    SqliteStore::open(store).unwrap().steps(id).unwrap()[0]
        .attempts
        .iter()
        .map(|attempt| (attempt.number, attempt.status_code, attempt.waited_ms))
        .collect()
}

#[test]
fn retry_after_holds_every_resumed_execution() {
    // Once resumed, /first/C-0 gets a 429 asking for 1 s, and /second/C-0
    // responds only after flowrun has logged that 429. So the execution of
    // /second/C-1, which starts when /second/C-0 ends, meets a closed gate.
    // Each workflow has an HTTP client of its own, but the gate is shared.
    let broken = Arc::new(AtomicBool::new(true));
    let throttled = Arc::new(AtomicBool::new(false));
    let latch = Latch::new();
    let server = {
        let (broken, throttled, latch) = (broken.clone(), throttled.clone(), latch.clone());
        TestServer::start(move |request| {
            if broken.load(Ordering::SeqCst) {
                return Reply::status(503);
            }
            match request.target.as_str() {
                "/first/C-0" if !throttled.swap(true, Ordering::SeqCst) => {
                    Reply::status(429).header("Retry-After", "1")
                }
                "/second/C-0" => {
                    latch.wait();
                    Reply::json(200, json!({"status": "ok"}))
                }
                _ => Reply::json(200, json!({"status": "ok"})),
            }
        })
    };
    let workspace = Workspace::new();
    let first = post_flow(&workspace, &server, "first.flow", "first");
    let second = post_flow(&workspace, &server, "second.flow", "second");
    let store = workspace.dir.path().join("store.db");
    let (code, _, stderr) = run_batch(&first, &records(&workspace, "one.jsonl", 1), Some(&store));
    assert_eq!(code, 3, "{stderr}");
    let (code, _, stderr) = run_batch(&second, &records(&workspace, "two.jsonl", 2), Some(&store));
    assert_eq!(code, 3, "{stderr}");
    let batch_requests = server.request_count();
    assert_eq!(batch_requests, 3);

    broken.store(false, Ordering::SeqCst);
    let mut child = flowrun(&[
        "resume",
        "--all",
        "--concurrency",
        "2",
        "--store",
        path_str(&store),
        "--log-format",
        "json",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (sender, logged) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in stderr.lines() {
            let _ = sender.send(line.unwrap());
        }
    });
    let mut log = Vec::new();
    let retry = loop {
        let line = logged
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|error| panic!("no retry was logged ({error}): {log:#?}"));
        let event: Value = serde_json::from_str(&line).unwrap();
        log.push(line);
        if event.get("wait_ms").is_some() {
            break event;
        }
    };
    assert_eq!(retry["wait_ms"], 1000, "{retry}");
    latch.open();
    let result = child.wait_with_output().unwrap();
    reader.join().unwrap();
    log.extend(logged.try_iter());
    let log = log.join("\n");
    assert_eq!(result.status.code(), Some(0), "{log}");
    assert_eq!(
        lines(&String::from_utf8(result.stdout).unwrap()),
        vec![
            json!({"id": "C-0", "status": "ok"}),
            json!({"id": "C-0", "status": "ok"}),
            json!({"id": "C-1", "status": "ok"}),
        ]
    );
    // One request per record in the batches and in the resume, and one
    // retry for the 429.
    assert_eq!(
        counts(&server),
        expected_counts(&[("/first/C-0", 3), ("/second/C-0", 2), ("/second/C-1", 2)])
    );

    // Only /second/C-0 may have been sent while the gate was closed: it may
    // have left before the 429 arrived. The retry of /first/C-0 and the
    // request of /second/C-1 waited until 1 s after the 429.
    let resumed = &server.requests()[batch_requests..];
    let throttled_request = resumed
        .iter()
        .find(|request| request.target == "/first/C-0")
        .unwrap();
    let throttled_at = throttled_request.received_at;
    let after_429: Vec<(&str, Duration)> = resumed
        .iter()
        .filter(|request| request.received_at > throttled_at && request.target != "/second/C-0")
        .map(|request| {
            (
                request.target.as_str(),
                request.received_at.duration_since(throttled_at),
            )
        })
        .collect();
    assert_eq!(after_429.len(), 2, "{after_429:?}");
    for (target, after) in &after_429 {
        assert!(
            *after >= Duration::from_secs(1),
            "{target} arrived {after:?} after the 429"
        );
    }

    let throttled_execution = execution_of_workflow(&store, &first, "C-0");
    assert_eq!(
        attempts(&store, &throttled_execution),
        [(1, Some(503), 0), (1, Some(429), 0), (2, Some(200), 1000)]
    );
    let held_execution = execution_of_workflow(&store, &second, "C-1");
    assert_eq!(
        attempts(&store, &held_execution),
        [(1, Some(503), 0), (1, Some(200), 0)]
    );
    let summaries = SqliteStore::open(&store).unwrap().executions(None).unwrap();
    let statuses: Vec<ExecutionStatus> = summaries.iter().map(|summary| summary.status).collect();
    assert_eq!(statuses, [ExecutionStatus::Succeeded; 3]);
}

#[test]
fn bad_resume_arguments_are_rejected() {
    let cases: [(&[&str], &str); 7] = [
        (&["resume"], "required arguments were not provided"),
        (&["resume", "some-id", "--all"], "cannot be used with"),
        (
            &["resume", "--all", "--concurrency", "0"],
            "`0` is not a concurrency",
        ),
        (
            &["resume", "--workflow", "a.flow"],
            "error: --workflow applies only to `flowrun resume --all`; run `flowrun resume --all --workflow FILE`",
        ),
        (
            &["resume", "some-id", "--concurrency", "4"],
            "error: --concurrency applies only to `flowrun resume --all`; remove it to resume execution some-id",
        ),
        (
            &["resume", "some-id", "--rate", "5/s"],
            "error: --rate applies only to `flowrun resume --all`; remove it to resume execution some-id",
        ),
        (
            &["resume", "some-id", "--workflow", "a.flow"],
            "error: --workflow applies only to `flowrun resume --all`",
        ),
    ];
    for (args, expected) in cases {
        let mut command: Command = flowrun(args);
        let (code, stdout, stderr) = output(&mut command);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert_eq!(stdout, "", "{args:?}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn workflow_with_errors_resumes_nothing() {
    let (server, broken) = failing_for(&["C-0", "C-1"], Duration::ZERO);
    let workspace = Workspace::new();
    let flow = post_flow(&workspace, &server, "sync.flow", "claims");
    let input = records(&workspace, "records.jsonl", 2);
    let store = workspace.dir.path().join("store.db");
    let (code, _, stderr) = run_batch(&flow, &input, Some(&store));
    assert_eq!(code, 3, "{stderr}");
    let first = execution_of(&store, "C-0");
    let second = execution_of(&store, "C-1");

    broken.lock().unwrap().clear();
    let text = std::fs::read_to_string(&flow).unwrap();
    std::fs::write(&flow, text.replace("http POST", "http POTS")).unwrap();
    let (code, stdout, stderr) = output(&mut flowrun(&["resume", "--all", "--store", path_str(&store)]));
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stdout, "");
    // The workflow's errors are printed once, then each execution names them.
    assert_eq!(stderr.matches("`POTS`").count(), 1, "{stderr}");
    let canonical = std::fs::canonicalize(&flow).unwrap();
    for id in [&first, &second] {
        assert!(
            stderr.contains(&format!(
                "execution {id} was not resumed:\nflow::input::resume_refused\n\n  × the workflow `{}` has errors",
                canonical.display()
            )),
            "{stderr}"
        );
    }
    assert!(
        stderr.contains(": 0 succeeded, 0 failed, 0 paused, 2 not resumed, 0 taken over by another process"),
        "{stderr}"
    );
    assert_eq!(server.request_count(), 2);
    assert_eq!(
        statuses(&store),
        BTreeMap::from([
            ("C-0".to_string(), ExecutionStatus::Paused),
            ("C-1".to_string(), ExecutionStatus::Paused),
        ])
    );
}

#[test]
fn changed_earlier_steps_need_force() {
    let (server, broken) = failing_for(&["C-0", "C-1"], Duration::ZERO);
    let workspace = Workspace::new();
    let flow = workspace.file(
        "sync.flow",
        format!(
            "step \"Look up\" {{\n  http GET \"{base}/lookup\"\n}}\n\
             step \"Send\" {{\n  http POST \"{base}/claims/<<entity.id>>\" json {{}}\n}}\n",
            base = server.url()
        ),
    );
    let input = records(&workspace, "records.jsonl", 2);
    let store = workspace.dir.path().join("store.db");
    let (code, _, stderr) = run_batch(&flow, &input, Some(&store));
    assert_eq!(code, 3, "{stderr}");

    broken.lock().unwrap().clear();
    let text = std::fs::read_to_string(&flow).unwrap();
    std::fs::write(&flow, text.replace("/lookup", "/lookup-v2")).unwrap();
    let (code, stdout, stderr) = output(&mut flowrun(&["resume", "--all", "--store", path_str(&store)]));
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stdout, "");
    assert_eq!(stderr.matches("(\"Look up\") of `").count(), 2, "{stderr}");
    assert!(stderr.contains("resume anyway with --force"), "{stderr}");
    assert_eq!(server.request_count(), 4);

    let (code, stdout, stderr) = output(&mut flowrun(&[
        "resume",
        "--all",
        "--force",
        "--store",
        path_str(&store),
    ]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(lines(&stdout), vec![json!({"id": "C-0"}), json!({"id": "C-1"})]);
    // Only the paused step is sent again; the edited step before it is not.
    assert_eq!(
        counts(&server),
        expected_counts(&[("/lookup", 2), ("/claims/C-0", 2), ("/claims/C-1", 2)])
    );
}

#[test]
fn ctrl_c_leaves_the_rest_paused() {
    let (server, broken) = failing_for(&["C-0", "C-1", "C-2"], Duration::from_millis(800));
    let workspace = Workspace::new();
    let flow = post_flow(&workspace, &server, "sync.flow", "claims");
    let input = records(&workspace, "records.jsonl", 3);
    let store = workspace.dir.path().join("store.db");
    let store_arg = path_str(&store);
    let (code, _, stderr) = run_batch(&flow, &input, Some(&store));
    assert_eq!(code, 3, "{stderr}");

    broken.lock().unwrap().clear();
    let child = flowrun(&["resume", "--all", "--concurrency", "1", "--store", store_arg])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.request_count() < 4 {
        assert!(Instant::now() < deadline, "the resume never sent a request");
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
    // The running execution finished; the others did not start.
    assert_eq!(
        lines(&String::from_utf8(result.stdout).unwrap()),
        vec![json!({"id": "C-0", "status": "ok"})]
    );
    assert!(
        stderr.contains(&format!(
            "interrupted: the executions not resumed yet still wait in the store; continue them with \
             `flowrun resume --all --store '{store_arg}'`"
        )),
        "{stderr}"
    );
    assert_eq!(
        statuses(&store),
        BTreeMap::from([
            ("C-0".to_string(), ExecutionStatus::Succeeded),
            ("C-1".to_string(), ExecutionStatus::Paused),
            ("C-2".to_string(), ExecutionStatus::Paused),
        ])
    );

    let (code, stdout, stderr) = output(&mut flowrun(&["resume", "--all", "--store", store_arg]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        lines(&stdout),
        vec![
            json!({"id": "C-1", "status": "ok"}),
            json!({"id": "C-2", "status": "ok"}),
        ]
    );
    assert_eq!(
        counts(&server),
        expected_counts(&[("/claims/C-0", 2), ("/claims/C-1", 2), ("/claims/C-2", 2)])
    );
}

#[test]
fn progress_bar_counts_executions() {
    let broken = Arc::new(AtomicBool::new(true));
    let flag = broken.clone();
    // C-2 pauses again, and C-3 responds late, so the bar is drawn while two of
    // the three executions are done.
    let server = TestServer::start(move |request| match record_id(request) {
        "C-0" => Reply::json(200, json!({"status": "ok"})),
        "C-2" => Reply::status(503),
        "C-3" if !flag.load(Ordering::SeqCst) => {
            Reply::json(200, json!({"status": "ok"})).delay(Duration::from_millis(1500))
        }
        _ if flag.load(Ordering::SeqCst) => Reply::status(503),
        _ => Reply::json(200, json!({"status": "ok"})),
    });
    let workspace = Workspace::new();
    let flow = post_flow(&workspace, &server, "sync.flow", "claims");
    let input = records(&workspace, "records.jsonl", 4);
    let store = workspace.dir.path().join("store.db");
    let (code, _, stderr) = run_batch(&flow, &input, Some(&store));
    assert_eq!(code, 3, "{stderr}");

    broken.store(false, Ordering::SeqCst);
    let (code, stdout, terminal) = output(&mut flowrun_on_terminal(&[
        "resume",
        "--all",
        "--store",
        path_str(&store),
    ]));
    assert_eq!(code, 3, "{terminal}");
    assert_eq!(
        lines(&stdout),
        vec![
            json!({"id": "C-1", "status": "ok"}),
            json!({"id": "C-2"}),
            json!({"id": "C-3", "status": "ok"}),
        ]
    );
    assert!(
        terminal.contains("2/3 done, ") && terminal.contains("0 failed, 1 paused, 0 not resumed"),
        "{terminal:?}"
    );
    let draws = terminal.matches(" done, ").count();
    assert!(draws >= 2, "{terminal:?}");
    assert_eq!(terminal.matches("/3 done, ").count(), draws, "{terminal:?}");
    assert!(
        terminal.contains(
            ": 2 succeeded, 0 failed, 1 paused, 0 not resumed, 0 taken over by another process\r\n"
        ),
        "{terminal:?}"
    );
    // Each line of standard error starts on a line of its own: after a line
    // break, or after the bar was cleared for it.
    let paused_line = format!("execution {} paused", execution_of(&store, "C-2"));
    for needle in ["warning: step", paused_line.as_str(), "3 executions in "] {
        let starts: Vec<usize> = terminal.match_indices(needle).map(|(start, _)| start).collect();
        assert!(!starts.is_empty(), "{needle}: {terminal:?}");
        for start in starts {
            let before = &terminal[..start];
            assert!(
                before.ends_with('\n') || before.ends_with("\u{1b}[2K"),
                "{needle} at {start}: {terminal:?}"
            );
        }
    }
}
