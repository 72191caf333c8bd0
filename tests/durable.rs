//! Failure behaviours, notifications and durable executions: the `flowrun`
//! binary against a recording server on 127.0.0.1 and a real SQLite store.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowrun::store::sqlite::SqliteStore;
use flowrun::store::{ExecutionStatus, StepStatus, Store};
use serde_json::{json, Value};
use support::cli::{flowrun, output, path_str, Workspace};
use support::server::{Recorded, Reply, TestServer};

fn store_path(workspace: &Workspace) -> PathBuf {
    workspace.dir.path().join("store.db")
}

/// Runs `flow` as execution `id`, recorded in the store at `store`.
fn run_stored(flow: &Path, store: &str, id: &str) -> (i32, String, String) {
    output(&mut flowrun(&[
        "run",
        path_str(flow),
        "--store",
        store,
        "--execution-id",
        id,
    ]))
}

fn targets(server: &TestServer) -> Vec<String> {
    server
        .requests()
        .into_iter()
        .map(|request| format!("{} {}", request.method, request.target))
        .collect()
}

/// Starts a server that returns 500 on `path` until the returned flag is
/// cleared, `route`'s reply where it has one, and 200 otherwise.
fn failing_until_fixed(
    path: &'static str,
    route: impl Fn(&Recorded) -> Option<Reply> + Send + Sync + 'static,
) -> (TestServer, Arc<AtomicBool>) {
    let broken = Arc::new(AtomicBool::new(true));
    let flag = broken.clone();
    let server = TestServer::start(move |request| {
        if request.target == path && flag.load(Ordering::SeqCst) {
            return Reply::status(500);
        }
        route(request).unwrap_or_else(|| Reply::status(200))
    });
    (server, broken)
}

fn notification_lines(path: &Path) -> Vec<Value> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Starts a server whose `/fail` returns 500 and everything else 200 with `{"ok": true}`.
fn flaky_server() -> TestServer {
    TestServer::start(|request| match request.target.as_str() {
        "/fail" => Reply::status(500).body("broken"),
        _ => Reply::json(200, json!({"ok": true})),
    })
}

#[test]
fn continue_notify_goes_on_and_notifies_once() {
    let server = flaky_server();
    let hooks = TestServer::scripted(vec![Reply::status(204)]);
    let workspace = Workspace::new();
    let source = format!(
        "workflow \"Claim intake\"\nnotify webhook \"{hooks}/hook\"\n\n\
         step \"Send claim\" {{\n  http POST \"{base}/fail\" json {{}}\n  on error continue notify severity low\n}}\n\n\
         step \"After\" {{\n  http GET \"{base}/after\"\n}}\n",
        hooks = hooks.url(),
        base = server.url()
    );
    let flow = workspace.file("claims.flow", source);
    let entity = workspace.file("claim.json", r#"{"id": "C-1"}"#);
    let notify_file = workspace.dir.path().join("notifications.jsonl");
    let store = store_path(&workspace);
    let (code, stdout, stderr) = output(&mut flowrun(&[
        "run",
        path_str(&flow),
        "--entity",
        path_str(&entity),
        "--execution-id",
        "exec-1",
        "--notify-file",
        path_str(&notify_file),
        "--store",
        path_str(&store),
    ]));

    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap(),
        json!({"id": "C-1"})
    );
    assert_eq!(targets(&server), vec!["POST /fail", "GET /after"]);
    assert!(
        stderr.contains("warning: step \"Send claim\": notification (low): step \"Send claim\" failed: POST"),
        "{stderr}"
    );

    let lines = notification_lines(&notify_file);
    assert_eq!(lines.len(), 1);
    let hook = &hooks.requests()[0];
    assert_eq!(hooks.request_count(), 1);
    assert_eq!(hook.method, "POST");
    assert_eq!(hook.target, "/hook");
    assert_eq!(hook.header_all("content-type"), vec!["application/json"]);
    let body: Value = serde_json::from_str(hook.body_text()).unwrap();
    assert_eq!(body, lines[0]);
    let object = body.as_object().unwrap();
    let keys: Vec<&str> = object.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        vec![
            "workflow",
            "execution_id",
            "step",
            "severity",
            "action",
            "error",
            "entity_id",
            "execution_started_at",
            "failed_at"
        ]
    );
    assert_eq!(body["workflow"], "Claim intake");
    assert_eq!(body["execution_id"], "exec-1");
    assert_eq!(body["step"], "Send claim");
    assert_eq!(body["severity"], "low");
    assert_eq!(body["action"], "continue_notify");
    assert_eq!(body["entity_id"], "C-1");
    assert_eq!(body["error"]["code"], "flow::run::http_status");
    assert_eq!(
        body["error"]["message"],
        format!(
            "POST {}/fail returned 500 Internal Server Error\nresponse body: broken",
            server.url()
        )
    );
    for field in ["execution_started_at", "failed_at"] {
        let text = body[field].as_str().unwrap();
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap();
    }

    let store = SqliteStore::open(&store).unwrap();
    let record = store.execution("exec-1").unwrap();
    assert_eq!(record.status, ExecutionStatus::Failed);
    let steps = store.steps("exec-1").unwrap();
    let statuses: Vec<StepStatus> = steps.iter().map(|step| step.status).collect();
    assert_eq!(statuses, vec![StepStatus::FailedContinued, StepStatus::Succeeded]);
    assert_eq!(store.notifications("exec-1").unwrap().len(), 1);
}

#[test]
fn stop_failed_notifies_that_the_execution_failed() {
    let workspace = Workspace::new();
    let flow = workspace.file(
        "stop.flow",
        "if <<entity.kind>> == \"FRAUD\" {\n  stop failed \"fraud suspected for <<entity.id>>\"\n}\nset entity.after = true\n",
    );
    let entity = workspace.file("claim.json", r#"{"id": "A", "kind": "FRAUD"}"#);
    let notify_file = workspace.dir.path().join("notifications.jsonl");
    let store_file = store_path(&workspace);
    let (code, stdout, stderr) = output(&mut flowrun(&[
        "run",
        path_str(&flow),
        "--entity",
        path_str(&entity),
        "--store",
        path_str(&store_file),
        "--execution-id",
        "exec-stop",
        "--notify-file",
        path_str(&notify_file),
    ]));
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap(),
        json!({"id": "A", "kind": "FRAUD"})
    );
    let lines = notification_lines(&notify_file);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["action"], "stop_failed");
    assert_eq!(lines[0]["error"]["code"], "flow::run::stopped");
    assert_eq!(
        lines[0]["error"]["message"],
        "the workflow stopped the execution as failed: fraud suspected for A"
    );
    let store = SqliteStore::open(&store_file).unwrap();
    assert_eq!(
        store.execution("exec-stop").unwrap().status,
        ExecutionStatus::Failed
    );
}

#[test]
fn continue_silently_goes_on_without_notifying() {
    let server = flaky_server();
    let hooks = TestServer::scripted(vec![Reply::status(204)]);
    let workspace = Workspace::new();
    let source = format!(
        "notify webhook \"{hooks}/hook\"\n\
         step \"Optional enrichment\" {{\n  http GET \"{base}/fail\"\n  on error continue silently\n}}\n\
         step \"After\" {{\n  http GET \"{base}/after\"\n}}\n",
        hooks = hooks.url(),
        base = server.url()
    );
    let flow = workspace.file("claims.flow", source);
    let notify_file = workspace.dir.path().join("notifications.jsonl");
    let store = store_path(&workspace);
    let (code, _, stderr) = output(&mut flowrun(&[
        "run",
        path_str(&flow),
        "--notify-file",
        path_str(&notify_file),
        "--store",
        path_str(&store),
        "--execution-id",
        "exec-2",
    ]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(targets(&server), vec!["GET /fail", "GET /after"]);
    assert!(!stderr.contains("notification"), "{stderr}");
    assert_eq!(notification_lines(&notify_file).len(), 0);
    assert_eq!(hooks.request_count(), 0);
    let store = SqliteStore::open(&store).unwrap();
    assert_eq!(
        store.execution("exec-2").unwrap().status,
        ExecutionStatus::Succeeded
    );
    assert_eq!(store.notifications("exec-2").unwrap().len(), 0);
}

#[test]
fn pause_stops_and_resume_sends_only_the_rest() {
    let broken = Arc::new(AtomicBool::new(true));
    let server = {
        let broken = broken.clone();
        TestServer::start(move |request| match request.target.as_str() {
            "/claims" => Reply::json(201, json!({"claim_id": "CS-1"})),
            "/status" if broken.load(Ordering::SeqCst) => Reply::status(503),
            "/status" => Reply::status(204),
            _ => Reply::json(200, json!({"score": 712})),
        })
    };
    let workspace = Workspace::new();
    let source = format!(
        "workflow \"Claim intake\"\non error pause notify severity high\n\n\
         step \"Create\" {{\n  http POST \"{base}/claims\" json {{ \"id\": \"<<entity.id>>\" }}\n  save response.json.claim_id -> entity.claim_id\n}}\n\n\
         step \"Status\" {{\n  http POST \"{base}/status\" json {{ \"claim\": \"<<entity.claim_id>>\" }}\n}}\n\n\
         step \"Score\" {{\n  http GET \"{base}/score\"\n  save response.json.score -> entity.score\n}}\n",
        base = server.url()
    );
    let flow = workspace.file("claims.flow", source);
    let entity = workspace.file("claim.json", r#"{"id": "C-9"}"#);
    let notify_file = workspace.dir.path().join("notifications.jsonl");
    let store_file = store_path(&workspace);
    let store_arg = path_str(&store_file);

    let (code, stdout, stderr) = output(&mut flowrun(&[
        "run",
        path_str(&flow),
        "--entity",
        path_str(&entity),
        "--execution-id",
        "exec-3",
        "--store",
        store_arg,
        "--notify-file",
        path_str(&notify_file),
    ]));
    assert_eq!(code, 3, "{stderr}");
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap(),
        json!({"id": "C-9", "claim_id": "CS-1"})
    );
    assert_eq!(targets(&server), vec!["POST /claims", "POST /status"]);
    let lines = notification_lines(&notify_file);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["severity"], "high");
    assert_eq!(lines[0]["action"], "pause_notify");

    {
        let store = SqliteStore::open(&store_file).unwrap();
        let record = store.execution("exec-3").unwrap();
        assert_eq!(record.status, ExecutionStatus::Paused);
        assert_eq!(record.next_step, 1);
        assert_eq!(record.entity_before, json!({"id": "C-9"}));
        assert_eq!(record.entity, json!({"id": "C-9", "claim_id": "CS-1"}));
    }
    let (code, listed, _) = output(&mut flowrun(&[
        "runs", "--status", "paused", "--store", store_arg,
    ]));
    assert_eq!(code, 0);
    assert!(listed.lines().nth(1).unwrap().starts_with("exec-3"), "{listed}");
    assert!(listed.contains("paused"), "{listed}");
    assert!(listed.contains("Status"), "{listed}");

    broken.store(false, Ordering::SeqCst);
    let (code, stdout, stderr) = output(&mut flowrun(&["resume", "exec-3", "--store", store_arg]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap(),
        json!({"id": "C-9", "claim_id": "CS-1", "score": 712})
    );
    assert_eq!(
        targets(&server),
        vec!["POST /claims", "POST /status", "POST /status", "GET /score"]
    );
    let requests = server.requests();
    assert_eq!(requests[1].body_text(), r#"{ "claim": "CS-1" }"#);
    assert_eq!(
        requests[1].header("idempotency-key"),
        requests[2].header("idempotency-key")
    );
    assert!(requests[1].header("idempotency-key").is_some());
    assert_ne!(
        requests[0].header("idempotency-key"),
        requests[1].header("idempotency-key")
    );

    let store = SqliteStore::open(&store_file).unwrap();
    assert_eq!(
        store.execution("exec-3").unwrap().status,
        ExecutionStatus::Succeeded
    );
    let steps = store.steps("exec-3").unwrap();
    let runs: Vec<(StepStatus, u32)> = steps.iter().map(|step| (step.status, step.runs)).collect();
    assert_eq!(
        runs,
        vec![
            (StepStatus::Succeeded, 1),
            (StepStatus::Succeeded, 2),
            (StepStatus::Succeeded, 1)
        ]
    );

    let (code, history, _) = output(&mut flowrun(&["runs", "show", "exec-3", "--store", store_arg]));
    assert_eq!(code, 0);
    assert!(
        history.contains("step 2 \"Status\": succeeded (run 2)"),
        "{history}"
    );
    assert!(history.contains("-> 503 in "), "{history}");

    let (code, _, stderr) = output(&mut flowrun(&["resume", "exec-3", "--store", store_arg]));
    assert_eq!(code, 2);
    assert!(stderr.contains("flow::input::resume_refused"), "{stderr}");
    assert!(stderr.contains("has already succeeded"), "{stderr}");
}

#[test]
fn resume_refuses_changed_earlier_steps_unless_forced() {
    let (server, broken) = failing_until_fixed("/two", |_| None);
    let workspace = Workspace::new();
    let write = |first: &str| {
        let source = format!(
            "step \"One\" {{\n  http GET \"{base}/{first}\"\n}}\nstep \"Two\" {{\n  http GET \"{base}/two\"\n}}\n",
            base = server.url()
        );
        workspace.file("claims.flow", source)
    };
    let flow = write("one");
    let store_file = store_path(&workspace);
    let store_arg = path_str(&store_file);
    let (code, _, _) = run_stored(&flow, store_arg, "e");
    assert_eq!(code, 3);

    write("changed");
    broken.store(false, Ordering::SeqCst);
    let (code, _, stderr) = output(&mut flowrun(&["resume", "e", "--store", store_arg]));
    assert_eq!(code, 2);
    assert!(stderr.contains("step 1 (\"One\")"), "{stderr}");
    assert!(stderr.contains("changed since execution e stopped"), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");

    let (code, _, stderr) = output(&mut flowrun(&["resume", "e", "--store", store_arg, "--force"]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(targets(&server), vec!["GET /one", "GET /two", "GET /two"]);
}

#[test]
fn step_with_several_actions_fails_only_when_all_fail() {
    let server = flaky_server();
    let workspace = Workspace::new();
    let source = format!(
        "step \"Partial\" {{\n  http GET \"{base}/fail\"\n  http GET \"{base}/ok\"\n}}\n\
         step \"Total\" {{\n  http GET \"{base}/fail\"\n  http POST \"{base}/fail\" json {{}}\n}}\n\
         step \"Never\" {{\n  http GET \"{base}/never\"\n}}\n",
        base = server.url()
    );
    let flow = workspace.file("claims.flow", source);
    let notify_file = workspace.dir.path().join("notifications.jsonl");
    let store_file = store_path(&workspace);
    let (code, _, stderr) = output(&mut flowrun(&[
        "run",
        path_str(&flow),
        "--notify-file",
        path_str(&notify_file),
        "--store",
        path_str(&store_file),
        "--execution-id",
        "e",
    ]));
    assert_eq!(code, 3, "{stderr}");
    assert_eq!(
        targets(&server),
        vec!["GET /fail", "GET /ok", "GET /fail", "POST /fail"]
    );
    assert!(
        stderr.contains("warning: step \"Partial\": one action failed, another succeeded"),
        "{stderr}"
    );
    let lines = notification_lines(&notify_file);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["step"], "Total");
    let store = SqliteStore::open(&store_file).unwrap();
    let statuses: Vec<StepStatus> = store.steps("e").unwrap().iter().map(|step| step.status).collect();
    assert_eq!(statuses, vec![StepStatus::Succeeded, StepStatus::Failed]);
}

#[test]
fn failed_webhook_delivery_does_not_change_the_outcome() {
    let server = flaky_server();
    let hooks = TestServer::scripted(vec![Reply::status(500)]);
    let workspace = Workspace::new();
    let source = format!(
        "step \"A\" {{\n  http GET \"{base}/fail\"\n  on error continue notify\n}}\nstep \"B\" {{\n  http GET \"{base}/b\"\n}}\n",
        base = server.url()
    );
    let flow = workspace.file("claims.flow", source);
    let store_file = store_path(&workspace);
    let webhook = format!("{}/hook", hooks.url());
    let (code, _, stderr) = output(&mut flowrun(&[
        "run",
        path_str(&flow),
        "--notify-webhook",
        &webhook,
        "--store",
        path_str(&store_file),
        "--execution-id",
        "e",
    ]));
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(hooks.request_count(), 1);
    assert!(stderr.contains("webhook delivery failed: POST"), "{stderr}");
    assert_eq!(targets(&server), vec!["GET /fail", "GET /b"]);
    let store = SqliteStore::open(&store_file).unwrap();
    let notifications = store.notifications("e").unwrap();
    assert_eq!(notifications.len(), 1);
    assert!(notifications[0]
        .delivery_error
        .as_deref()
        .unwrap()
        .contains("500"));
}

#[test]
fn webhook_delivery_retries_after_429() {
    let server = flaky_server();
    let hooks = TestServer::scripted(vec![
        Reply::status(429).header("Retry-After", "0"),
        Reply::status(204),
    ]);
    let workspace = Workspace::new();
    let source = format!("step \"A\" {{\n  http GET \"{}/fail\"\n}}\n", server.url());
    let flow = workspace.file("claims.flow", source);
    let webhook = format!("{}/hook", hooks.url());
    let (code, _, _) = output(&mut flowrun(&[
        "run",
        path_str(&flow),
        "--notify-webhook",
        &webhook,
        "--no-store",
    ]));
    assert_eq!(code, 3);
    assert_eq!(hooks.request_count(), 2);
    assert_eq!(hooks.requests()[0].body, hooks.requests()[1].body);
}

/// Starts `flowrun run` as a child and waits until the server has received
/// `count` requests.
fn run_until_requests(flow: &Path, store: &Path, server: &TestServer, count: usize) -> std::process::Child {
    let child = flowrun(&[
        "run",
        path_str(flow),
        "--store",
        path_str(store),
        "--execution-id",
        "crash",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.request_count() < count {
        assert!(
            Instant::now() < deadline,
            "the server saw only {:?}",
            targets(server)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

fn hanging_server(path: &'static str, hang_first: usize) -> TestServer {
    let seen = AtomicUsize::new(0);
    TestServer::start(move |request: &Recorded| {
        if request.target == path && seen.fetch_add(1, Ordering::SeqCst) < hang_first {
            return Reply::hang();
        }
        Reply::json(200, json!({"ok": request.target}))
    })
}

#[test]
fn kill_during_a_get_then_resume_sends_no_completed_step_twice() {
    let server = hanging_server("/two", 1);
    let workspace = Workspace::new();
    let source = format!(
        "step \"One\" {{\n  http POST \"{base}/one\" json {{}}\n  save response.json.ok -> entity.one\n}}\n\
         step \"Two\" {{\n  http GET \"{base}/two\"\n}}\n\
         step \"Three\" {{\n  http GET \"{base}/three\"\n}}\n",
        base = server.url()
    );
    let flow = workspace.file("claims.flow", source);
    let store_file = store_path(&workspace);
    let mut child = run_until_requests(&flow, &store_file, &server, 2);
    child.kill().unwrap();
    child.wait().unwrap();

    {
        let store = SqliteStore::open(&store_file).unwrap();
        let record = store.execution("crash").unwrap();
        assert_eq!(record.status, ExecutionStatus::Running);
        assert_eq!(record.next_step, 1);
        assert_eq!(record.entity, json!({"one": "/one"}));
        let statuses: Vec<StepStatus> = store
            .steps("crash")
            .unwrap()
            .iter()
            .map(|step| step.status)
            .collect();
        assert_eq!(statuses, vec![StepStatus::Succeeded, StepStatus::Running]);
    }

    let (code, stdout, stderr) = output(&mut flowrun(&[
        "resume",
        "crash",
        "--store",
        path_str(&store_file),
    ]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap(),
        json!({"one": "/one"})
    );
    assert_eq!(
        targets(&server),
        vec!["POST /one", "GET /two", "GET /two", "GET /three"]
    );
    let store = SqliteStore::open(&store_file).unwrap();
    let steps = store.steps("crash").unwrap();
    assert_eq!(steps[1].runs, 2);
    assert_eq!(steps[1].status, StepStatus::Succeeded);
}

#[test]
fn kill_during_a_post_requires_resend_in_flight() {
    let server = hanging_server("/two", 1);
    let workspace = Workspace::new();
    let source = format!(
        "step \"One\" {{\n  http GET \"{base}/one\"\n}}\nstep \"Two\" {{\n  http POST \"{base}/two\" json {{}}\n}}\n",
        base = server.url()
    );
    let flow = workspace.file("claims.flow", source);
    let store_file = store_path(&workspace);
    let mut child = run_until_requests(&flow, &store_file, &server, 2);
    child.kill().unwrap();
    child.wait().unwrap();

    let (code, _, stderr) = output(&mut flowrun(&[
        "resume",
        "crash",
        "--store",
        path_str(&store_file),
    ]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("step \"Two\" of execution crash was in flight"),
        "{stderr}"
    );
    assert!(stderr.contains("--resend-in-flight"), "{stderr}");
    assert_eq!(server.request_count(), 2);
    {
        let store = SqliteStore::open(&store_file).unwrap();
        assert_eq!(
            store.steps("crash").unwrap()[1].status,
            StepStatus::OutcomeUnknown
        );
    }

    let (code, _, stderr) = output(&mut flowrun(&[
        "resume",
        "crash",
        "--store",
        path_str(&store_file),
        "--resend-in-flight",
    ]));
    assert_eq!(code, 0, "{stderr}");
    let requests = server.requests();
    assert_eq!(targets(&server), vec!["GET /one", "POST /two", "POST /two"]);
    assert!(requests[1].header("idempotency-key").is_some());
    assert_eq!(
        requests[1].header("idempotency-key"),
        requests[2].header("idempotency-key")
    );
}

/// Formats the rows of `flowrun runs` for the executions of `store`, newest
/// first, with the status that `status_of` gives each id, and only those
/// whose status is `only` when it is given.
fn runs_listing(store: &Path, status_of: &dyn Fn(&str) -> &'static str, only: Option<&str>) -> String {
    let mut text = format!(
        "{:<36}  {:<11}  {:<20}  {:<25}  {}\n",
        "ID", "STATUS", "STARTED", "WORKFLOW", "NEXT STEP"
    );
    for execution in SqliteStore::open(store).unwrap().executions(None).unwrap() {
        let status = status_of(&execution.id);
        if only.is_some_and(|only| only != status) {
            continue;
        }
        text.push_str(&format!(
            "{:<36}  {:<11}  {:<20}  {:<25}  {}\n",
            execution.id,
            status,
            &execution.started_at[..19],
            execution.workflow,
            execution.next_step_name.unwrap()
        ));
    }
    text
}

#[test]
fn runs_marks_killed_executions_interrupted() {
    let server = TestServer::start(|_| Reply::hang());
    let workspace = Workspace::new();
    let base = server.url();
    let batch_flow = workspace.file(
        "sync.flow",
        format!("workflow \"Sync\"\n\nstep \"Send\" {{\n  http POST \"{base}/claims/<<entity.id>>\" json {{}}\n}}\n"),
    );
    let single_flow = workspace.file(
        "alone.flow",
        format!("workflow \"Alone\"\n\nstep \"Fetch\" {{\n  http GET \"{base}/alone\"\n}}\n"),
    );
    let input = workspace.file("records.jsonl", "{\"id\":\"C-0\"}\n{\"id\":\"C-1\"}\n");
    let store = store_path(&workspace);
    let store_arg = path_str(&store);
    let quoted = format!("'{store_arg}'");
    let runs = |extra: &[&str]| {
        let mut arguments = vec!["runs"];
        arguments.extend_from_slice(extra);
        arguments.extend_from_slice(&["--store", store_arg]);
        output(&mut flowrun(&arguments))
    };

    let mut batch = flowrun(&[
        "run",
        path_str(&batch_flow),
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
    let mut single = flowrun(&[
        "run",
        path_str(&single_flow),
        "--store",
        store_arg,
        "--execution-id",
        "alone",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    // Each step is recorded before its request leaves, and the batch's
    // writer commits it to the tables within milliseconds.
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.request_count() < 3 || SqliteStore::open(&store).unwrap().executions(None).unwrap().len() < 3
    {
        assert!(
            Instant::now() < deadline,
            "the server saw only {:?}",
            targets(&server)
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    // Both processes are alive, so nothing is interrupted.
    let (code, stdout, stderr) = runs(&[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, runs_listing(&store, &|_| "running", None));
    assert_eq!(stderr, "");
    let (code, stdout, stderr) = runs(&["--status", "interrupted"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, runs_listing(&store, &|_| "running", Some("interrupted")));
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert_eq!(stderr, "");

    let batch_pid = batch.id();
    batch.kill().unwrap();
    batch.wait().unwrap();

    let after_kill = |id: &str| if id == "alone" { "running" } else { "interrupted" };
    let (code, stdout, stderr) = runs(&[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, runs_listing(&store, &after_kill, None));
    assert_eq!(
        stderr,
        format!(
            "interrupted executions were running in a process that stopped: continue them all with \
             `flowrun resume --all --store {quoted}`, or one with `flowrun resume ID --store {quoted}`\n"
        )
    );
    let (code, stdout, stderr) = runs(&["--status", "running"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, runs_listing(&store, &after_kill, Some("running")));
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert_eq!(stderr, "");
    let (code, stdout, stderr) = runs(&["--status", "interrupted"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, runs_listing(&store, &after_kill, Some("interrupted")));
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    assert!(
        stderr.starts_with("interrupted executions were running"),
        "{stderr}"
    );

    let killed = SqliteStore::open(&store)
        .unwrap()
        .executions(None)
        .unwrap()
        .into_iter()
        .find(|execution| execution.id != "alone")
        .unwrap();
    assert_eq!(killed.status, ExecutionStatus::Running);
    assert_eq!(killed.pid, batch_pid);
    let (code, stdout, stderr) = runs(&["show", &killed.id]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.lines().nth(2), Some("status    interrupted"), "{stdout}");
    assert_eq!(
        stderr,
        format!(
            "execution {id} was running in process {batch_pid}, which stopped: continue it with \
             `flowrun resume {id} --store {quoted}`\n",
            id = killed.id
        )
    );
    let (code, stdout, stderr) = runs(&["show", "alone"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.lines().nth(2), Some("status    running"), "{stdout}");
    assert_eq!(stderr, "");

    single.kill().unwrap();
    single.wait().unwrap();
    let (code, stdout, stderr) = runs(&[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, runs_listing(&store, &|_| "interrupted", None));
}

#[test]
fn idempotency_key_can_be_turned_off() {
    let server = TestServer::scripted(vec![Reply::status(200)]);
    let workspace = Workspace::new();
    let source = format!(
        "step \"One\" {{\n  http POST \"{}/one\" json {{}}\n  idempotency_key off\n}}\n",
        server.url()
    );
    let flow = workspace.file("claims.flow", source);
    let (code, _, _) = output(&mut flowrun(&["run", path_str(&flow), "--no-store"]));
    assert_eq!(code, 0);
    assert_eq!(server.requests()[0].header("idempotency-key"), None);
}

#[test]
fn corrupt_store_gives_a_clear_error() {
    let server = TestServer::scripted(vec![Reply::status(200)]);
    let workspace = Workspace::new();
    let flow = workspace.file("claims.flow", format!("http GET \"{}/x\"\n", server.url()));
    let store_file = workspace.file("store.db", vec![0x5a_u8; 8192]);
    let (code, stdout, stderr) = output(&mut flowrun(&[
        "run",
        path_str(&flow),
        "--store",
        path_str(&store_file),
    ]));
    assert_eq!(code, 2);
    assert_eq!(stdout, "");
    assert!(stderr.contains("flow::input::store_unavailable"), "{stderr}");
    assert!(stderr.contains(&format!(
        "the store `{}` is not a flowrun store or is damaged",
        path_str(&store_file)
    )));
    assert_eq!(server.request_count(), 0);
    assert_eq!(std::fs::read(&store_file).unwrap(), vec![0x5a_u8; 8192]);
}

/// Starts a server that answers one request with 200, and writes a
/// workflow that sends it one `method` request, beside a new store.
/// Returns the server, the workspace, the workflow and the store.
fn one_request_beside_store(method: &str) -> (TestServer, Workspace, PathBuf, PathBuf) {
    let server = TestServer::scripted(vec![Reply::status(200)]);
    let workspace = Workspace::new();
    let flow = workspace.file("claims.flow", format!("http {method} \"{}/x\"\n", server.url()));
    let store_file = store_path(&workspace);
    drop(SqliteStore::open(&store_file).unwrap());
    (server, workspace, flow, store_file)
}

#[test]
fn locked_store_gives_a_clear_error_without_hanging() {
    let (server, _workspace, flow, store_file) = one_request_beside_store("GET");
    let holder = rusqlite::Connection::open(&store_file).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();

    let started = Instant::now();
    let (code, _, stderr) = output(&mut flowrun(&[
        "run",
        path_str(&flow),
        "--store",
        path_str(&store_file),
    ]));
    // A bound against hanging, well above the store's lock wait.
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(code, 2);
    assert!(stderr.contains("is locked by another process"), "{stderr}");
    assert_eq!(server.request_count(), 0);
    holder.execute_batch("ROLLBACK").unwrap();
}

/// Sets the permission bits of `file` to `mode`.
fn set_mode(file: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Returns the flowrun command `args`, which file permissions apply to.
/// Root writes a read-only file anyway, so as root the command runs under
/// `setpriv` without the capability that allows it.
fn flowrun_bound_by_permissions(args: &[&str]) -> std::process::Command {
    use std::os::unix::fs::MetadataExt;
    let command = flowrun(args);
    if std::fs::metadata("/proc/self").unwrap().uid() != 0 {
        return command;
    }
    let mut wrapped = std::process::Command::new("setpriv");
    wrapped
        .args(["--bounding-set", "-dac_override", "--"])
        .arg(command.get_program())
        .args(command.get_args())
        .stdin(Stdio::null());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    wrapped
}

/// Makes `store` read-only and returns the flowrun command `args`.
fn flowrun_on_read_only(store: &Path, args: &[&str]) -> std::process::Command {
    set_mode(store, 0o444);
    flowrun_bound_by_permissions(args)
}

#[test]
fn read_only_store_refused_before_sending() {
    let (server, workspace, flow, store_file) = one_request_beside_store("POST");
    let records = workspace.file("records.jsonl", "{\"id\":\"C-1\"}\n");

    for entities in [None, Some(path_str(&records))] {
        let mut args = vec!["run", path_str(&flow), "--store", path_str(&store_file)];
        args.extend(entities.iter().flat_map(|path| ["--entities", path]));
        let (code, stdout, stderr) = output(&mut flowrun_on_read_only(&store_file, &args));
        assert_eq!(code, 2, "{stderr}");
        assert_eq!(stdout, "");
        assert!(
            stderr.contains(&format!("the store `{}` is read-only", path_str(&store_file))),
            "{stderr}"
        );
        assert!(stderr.contains("writable for this user"), "{stderr}");
    }
    assert_eq!(server.request_count(), 0);
}

#[test]
fn read_only_store_lists_without_journal() {
    let workspace = Workspace::new();
    let store_file = store_path(&workspace);
    drop(SqliteStore::open(&store_file).unwrap());
    // The journal of a batch whose process is gone, with no entries yet.
    let journal = store_file.with_file_name("store.db-batch-4194304-1");
    std::fs::write(&journal, "").unwrap();

    let (code, stdout, stderr) = output(&mut flowrun_on_read_only(
        &store_file,
        &["runs", "--store", path_str(&store_file)],
    ));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert_eq!(
        stderr.trim_end(),
        format!(
            "warning: the store `{}` is read-only, so 1 batch journal beside it was not \
             applied, and the executions it records are missing or out of date here: make the \
             store writable and run `flowrun runs` again",
            path_str(&store_file)
        )
    );
    assert!(journal.exists());
}

#[test]
fn read_only_sidecar_named_after_store_writable() {
    let (server, _workspace, flow, store_file) = one_request_beside_store("POST");
    // Reading the read-only store creates its `-shm` file read-only too.
    let (code, _, stderr) = output(&mut flowrun_on_read_only(
        &store_file,
        &["runs", "--store", path_str(&store_file)],
    ));
    assert_eq!(code, 0, "{stderr}");
    let shm = format!("{}-shm", path_str(&store_file));
    set_mode(&store_file, 0o644);

    let (code, stdout, stderr) = output(&mut flowrun_bound_by_permissions(&[
        "run",
        path_str(&flow),
        "--store",
        path_str(&store_file),
    ]));
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stdout, "");
    assert!(
        stderr.contains(&format!("the store `{shm}` is read-only")),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("make `{shm}` writable")), "{stderr}");
    assert_eq!(server.request_count(), 0);
}

#[test]
fn two_processes_share_one_store() {
    let server = TestServer::start(|_| Reply::status(200).delay(Duration::from_millis(20)));
    let workspace = Workspace::new();
    let source = (1..=5)
        .map(|index| {
            format!(
                "step \"S{index}\" {{\n  http GET \"{}/s{index}\"\n}}\n",
                server.url()
            )
        })
        .collect::<String>();
    let flow = workspace.file("claims.flow", source);
    let store_file = store_path(&workspace);
    let children: Vec<_> = ["a", "b"]
        .iter()
        .map(|id| {
            flowrun(&[
                "run",
                path_str(&flow),
                "--store",
                path_str(&store_file),
                "--execution-id",
                id,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for child in children {
        let result = child.wait_with_output().unwrap();
        assert_eq!(
            result.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&result.stderr)
        );
    }
    let store = SqliteStore::open(&store_file).unwrap();
    for id in ["a", "b"] {
        assert_eq!(store.execution(id).unwrap().status, ExecutionStatus::Succeeded);
        assert_eq!(store.steps(id).unwrap().len(), 5);
    }
}

#[test]
fn variables_holding_secrets_are_stored_masked_and_rendered_again_on_resume() {
    let (server, broken) = failing_until_fixed("/two", |_| None);
    let workspace = Workspace::new();
    let source = format!(
        "let auth = \"Bearer <<secret.TOK>>\"\nstep \"One\" {{\n  http GET \"{base}/one\"\n}}\n\
         step \"Two\" {{\n  http POST \"{base}/two\" json {{ \"a\": \"<<vars.auth>>\" }}\n}}\n",
        base = server.url()
    );
    let flow = workspace.file("claims.flow", source);
    let store_file = store_path(&workspace);
    let store_arg = path_str(&store_file);
    let (code, _, _) = output(
        flowrun(&[
            "run",
            path_str(&flow),
            "--store",
            store_arg,
            "--execution-id",
            "v",
        ])
        .env("FLOWRUN_SECRET_TOK", "first-secret-1"),
    );
    assert_eq!(code, 3);
    let raw = std::fs::read(&store_file).unwrap();
    let wal = std::fs::read(store_file.with_extension("db-wal")).unwrap_or_default();
    for bytes in [&raw, &wal] {
        assert!(!String::from_utf8_lossy(bytes).contains("first-secret-1"));
    }
    assert_eq!(
        SqliteStore::open(&store_file)
            .unwrap()
            .execution("v")
            .unwrap()
            .vars,
        serde_json::Map::new()
    );

    broken.store(false, Ordering::SeqCst);
    let (code, _, stderr) =
        output(flowrun(&["resume", "v", "--store", store_arg]).env("FLOWRUN_SECRET_TOK", "rotated-secret-2"));
    assert_eq!(code, 0, "{stderr}");
    let requests = server.requests();
    assert_eq!(
        requests.last().unwrap().body_text(),
        r#"{ "a": "Bearer rotated-secret-2" }"#
    );
}

#[test]
fn concurrent_resumes_send_the_failed_step_once() {
    let (server, broken) = failing_until_fixed("/two", |request| match request.target.as_str() {
        "/two" => Some(Reply::status(200).delay(Duration::from_millis(300))),
        _ => None,
    });
    let workspace = Workspace::new();
    let source = format!(
        "step \"One\" {{\n  http GET \"{base}/one\"\n}}\nstep \"Two\" {{\n  http PATCH \"{base}/two\" json {{}}\n}}\n",
        base = server.url()
    );
    let flow = workspace.file("claims.flow", source);
    let store_file = store_path(&workspace);
    let store_arg = path_str(&store_file);
    let (code, _, _) = run_stored(&flow, store_arg, "c");
    assert_eq!(code, 3);

    broken.store(false, Ordering::SeqCst);
    let children: Vec<_> = (0..3)
        .map(|_| {
            flowrun(&["resume", "c", "--store", store_arg])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let codes: Vec<Option<i32>> = children
        .into_iter()
        .map(|child| child.wait_with_output().unwrap().status.code())
        .collect();
    assert_eq!(
        codes.iter().filter(|code| **code == Some(0)).count(),
        1,
        "{codes:?}"
    );
    assert_eq!(
        codes.iter().filter(|code| **code == Some(2)).count(),
        2,
        "{codes:?}"
    );
    assert_eq!(targets(&server), vec!["GET /one", "PATCH /two", "PATCH /two"]);
}

#[test]
fn resume_follows_the_failed_step_by_name() {
    let (server, broken) = failing_until_fixed("/two", |_| None);
    let workspace = Workspace::new();
    let step =
        |name: &str, path: &str| format!("step \"{name}\" {{\n  http GET \"{}/{path}\"\n}}\n", server.url());
    let flow = workspace.file("claims.flow", step("One", "one") + &step("Two", "two"));
    let store_file = store_path(&workspace);
    let store_arg = path_str(&store_file);
    let (code, _, _) = run_stored(&flow, store_arg, "n");
    assert_eq!(code, 3);
    broken.store(false, Ordering::SeqCst);

    workspace.file("claims.flow", step("One", "one"));
    let (code, _, stderr) = output(&mut flowrun(&["resume", "n", "--store", store_arg, "--force"]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("step \"Two\", where execution n stopped, is no longer in"),
        "{stderr}"
    );

    workspace.file(
        "claims.flow",
        step("Zero", "zero") + &step("One", "one") + &step("Two", "two"),
    );
    let (code, _, stderr) = output(&mut flowrun(&["resume", "n", "--store", store_arg]));
    assert_eq!(code, 2, "{stderr}");
    let (code, _, stderr) = output(&mut flowrun(&["resume", "n", "--store", store_arg, "--force"]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(targets(&server), vec!["GET /one", "GET /two", "GET /two"]);
}

#[test]
fn resumed_execution_keeps_earlier_continued_failures() {
    let (server, broken) = failing_until_fixed("/hard", |request| match request.target.as_str() {
        "/soft" => Some(Reply::status(500)),
        _ => None,
    });
    let workspace = Workspace::new();
    let source = format!(
        "step \"Soft\" {{\n  http GET \"{base}/soft\"\n  on error continue notify\n}}\nstep \"Hard\" {{\n  http GET \"{base}/hard\"\n}}\n",
        base = server.url()
    );
    let flow = workspace.file("claims.flow", source);
    let store_file = store_path(&workspace);
    let store_arg = path_str(&store_file);
    let (code, _, stderr) = run_stored(&flow, store_arg, "k");
    assert_eq!(code, 3);
    assert!(
        stderr.contains(&format!("flowrun resume k --store '{store_arg}'")),
        "{stderr}"
    );
    broken.store(false, Ordering::SeqCst);
    let (code, _, _) = output(&mut flowrun(&["resume", "k", "--store", store_arg]));
    assert_eq!(code, 1);
    let store = SqliteStore::open(&store_file).unwrap();
    assert_eq!(store.execution("k").unwrap().status, ExecutionStatus::Failed);
}

#[test]
fn execution_ids_are_checked() {
    let workspace = Workspace::new();
    let flow = workspace.file("claims.flow", "http GET \"http://127.0.0.1:9/x\"\n");
    for id in ["", "claim 17", "a\nb"] {
        let (code, _, stderr) = output(&mut flowrun(&[
            "run",
            path_str(&flow),
            "--no-store",
            "--execution-id",
            id,
        ]));
        assert_eq!(code, 2, "{id:?}");
        assert!(stderr.contains("flow::input::invalid_execution_id"), "{stderr}");
    }
}

#[test]
fn forced_resume_after_a_reorder_still_reruns_the_failed_step() {
    let (server, broken) = failing_until_fixed("/b", |_| None);
    let workspace = Workspace::new();
    let step =
        |name: &str, path: &str| format!("step \"{name}\" {{\n  http GET \"{}/{path}\"\n}}\n", server.url());
    let flow = workspace.file("claims.flow", step("A", "a") + &step("B", "b"));
    let store_file = store_path(&workspace);
    let store_arg = path_str(&store_file);
    let (code, _, _) = run_stored(&flow, store_arg, "r");
    assert_eq!(code, 3);

    workspace.file(
        "claims.flow",
        step("A", "a") + &step("Validate", "validate") + &step("B", "b"),
    );
    let (code, _, _) = output(&mut flowrun(&["resume", "r", "--store", store_arg, "--force"]));
    assert_eq!(code, 3);
    broken.store(false, Ordering::SeqCst);
    let (code, _, stderr) = output(&mut flowrun(&["resume", "r", "--store", store_arg]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(targets(&server), vec!["GET /a", "GET /b", "GET /b", "GET /b"]);
}

#[test]
fn saved_variables_survive_a_resume() {
    let (server, broken) = failing_until_fixed("/b", |request| match request.target.as_str() {
        "/card" => Some(Reply::json(200, json!({"card": "****1234"}))),
        _ => None,
    });
    let workspace = Workspace::new();
    let source = format!(
        "let card = \"<<entity.card>>\"\nstep \"A\" {{\n  http GET \"{base}/card\"\n  save response.json.card -> vars.card\n}}\n\
         step \"B\" {{\n  http GET \"{base}/b\"\n}}\nstep \"C\" {{\n  http POST \"{base}/c\" json {{ \"card\": \"<<vars.card>>\" }}\n}}\n",
        base = server.url()
    );
    let flow = workspace.file("claims.flow", source);
    let entity = workspace.file("entity.json", r#"{"card": "INIT"}"#);
    let store_file = store_path(&workspace);
    let store_arg = path_str(&store_file);
    let (code, _, _) = output(&mut flowrun(&[
        "run",
        path_str(&flow),
        "--entity",
        path_str(&entity),
        "--store",
        store_arg,
        "--execution-id",
        "s",
    ]));
    assert_eq!(code, 3);
    broken.store(false, Ordering::SeqCst);
    let (code, _, stderr) = output(&mut flowrun(&["resume", "s", "--store", store_arg]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        server.requests().last().unwrap().body_text(),
        r#"{ "card": "****1234" }"#
    );
}

#[test]
fn silent_failures_do_not_fail_a_resumed_execution() {
    let (server, broken) = failing_until_fixed("/b", |request| match request.target.as_str() {
        "/optional" => Some(Reply::status(500)),
        _ => None,
    });
    let workspace = Workspace::new();
    let source = format!(
        "step \"Optional\" {{\n  http GET \"{base}/optional\"\n  on error continue silently\n}}\nstep \"B\" {{\n  http GET \"{base}/b\"\n}}\n",
        base = server.url()
    );
    let flow = workspace.file("claims.flow", source);
    let store_file = store_path(&workspace);
    let store_arg = path_str(&store_file);
    let (code, _, _) = run_stored(&flow, store_arg, "q");
    assert_eq!(code, 3);
    broken.store(false, Ordering::SeqCst);
    let (code, _, _) = output(&mut flowrun(&["resume", "q", "--store", store_arg]));
    assert_eq!(code, 0);
}

#[test]
fn text_log_names_an_unparseable_retry_after() {
    let server = TestServer::scripted(vec![
        Reply::status(429).header("Retry-After", "soon-ish"),
        Reply::status(200),
    ]);
    let workspace = Workspace::new();
    let source = format!(
        "step \"Send\" {{\n  http GET \"{}/x\"\n  max_wait 100ms\n}}\n",
        server.url()
    );
    let flow = workspace.file("claims.flow", source);
    let (code, _, stderr) = output(&mut flowrun(&["run", path_str(&flow), "--no-store"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(
            "warning: step \"Send\": ignoring the unparseable Retry-After `soon-ish`; backing off\n"
        ),
        "{stderr}"
    );
}
