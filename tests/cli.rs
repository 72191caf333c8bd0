//! Tests of the `flowrun` binary: exit codes, standard output, the logs on
//! standard error, and the handling of bad input.

mod support;

use std::io::Write;
use std::process::Stdio;

use serde_json::{json, Value};
use support::cli::{flowrun, make_fifo, output, output_within, path_str, Workspace};
use support::server::{Reply, TestServer};

const CLAIM_FLOW: &str = r#"workflow "Claim intake"

let api = "http://127.0.0.1:9/unused"

step "Send claim" {
  http POST "<<vars.api>>/claims/<<entity.id>>" json { "n": "<<entity.claim_number>>" } headers {
    "Authorization": "Bearer <<secret.CLAIMS_TOKEN>>"
  }
  save response.json.claim_id -> entity.claims_system_id
}
"#;

#[test]
fn run_prints_the_updated_entity() {
    let server = TestServer::scripted(vec![Reply::json(201, json!({"claim_id": "CS-9"}))]);
    let workspace = Workspace::new();
    let flow = workspace.file("claim.flow", CLAIM_FLOW);
    let entity = workspace.file("claim.json", r#"{"id": "C-1", "claim_number": "CN-7"}"#);
    let api = format!("api={}", server.url());

    let (code, stdout, stderr) = output(
        flowrun(&[
            "run",
            path_str(&flow),
            "--entity",
            path_str(&entity),
            "--var",
            &api,
        ])
        .env("FLOWRUN_SECRET_CLAIMS_TOKEN", "tok-123"),
    );

    assert_eq!(code, 0, "{stderr}");
    let printed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        printed,
        json!({"id": "C-1", "claim_number": "CN-7", "claims_system_id": "CS-9"})
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines[0], "step \"Send claim\": started");
    assert_eq!(
        lines[1],
        format!(
            "step \"Send claim\": POST {}/claims/C-1 returned 201 Created",
            server.url()
        )
    );
    assert!(
        lines[2].starts_with("step \"Send claim\": succeeded in "),
        "{stderr}"
    );
    assert!(lines[2].ends_with(" ms with 0 retries"), "{stderr}");
    assert_eq!(lines.len(), 3, "{stderr}");

    let request = &server.requests()[0];
    assert_eq!(request.header("authorization"), Some("Bearer tok-123"));
    assert!(!stderr.contains("tok-123"));
}

#[test]
fn file_argument_alone_means_run() {
    let server = TestServer::scripted(vec![Reply::status(204)]);
    let workspace = Workspace::new();
    let flow = workspace.file("ping.flow", format!("http GET \"{}/ping\"\n", server.url()));
    let (code, stdout, _) = output(&mut flowrun(&[path_str(&flow)]));
    assert_eq!(code, 0);
    assert_eq!(stdout, "{}\n");
    assert_eq!(server.request_count(), 1);
}

#[test]
fn entity_from_standard_input() {
    let server = TestServer::scripted(vec![Reply::status(200)]);
    let workspace = Workspace::new();
    let flow = workspace.file(
        "ping.flow",
        format!("http GET \"{}/c/<<entity.id>>\"\n", server.url()),
    );
    let mut child = flowrun(&["run", path_str(&flow), "--entity", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"id": "from-stdin"}"#)
        .unwrap();
    let result = child.wait_with_output().unwrap();
    assert_eq!(result.status.code(), Some(0));
    assert_eq!(server.requests()[0].target, "/c/from-stdin");
}

#[test]
fn failed_step_pauses_by_default_and_still_prints_the_entity() {
    let server = TestServer::scripted(vec![
        Reply::json(200, json!({"status": "ok"})),
        Reply::status(503),
    ]);
    let workspace = Workspace::new();
    let source = format!(
        "step \"Check\" {{\n  http GET \"{0}/a\"\n  save response.json.status -> entity.status\n}}\n\nstep \"Send\" {{\n  http POST \"{0}/b\" json {{}}\n}}\n",
        server.url()
    );
    let flow = workspace.file("two.flow", source);
    let (code, stdout, stderr) = output(&mut flowrun(&[
        "run",
        path_str(&flow),
        "--execution-id",
        "exec-7",
    ]));
    assert_eq!(code, 3);
    assert!(stderr.contains("flowrun resume exec-7"), "{stderr}");
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap(),
        json!({"status": "ok"})
    );
    assert!(stderr.contains("error: step \"Send\": failed in "), "{stderr}");
    assert!(stderr.contains("flow::run::http_status"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "POST {}/b returned 503 Service Unavailable",
            server.url()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("two.flow:7:3"), "{stderr}");
}

#[test]
fn invalid_workflow_exits_2_and_sends_nothing() {
    let server = TestServer::scripted(vec![Reply::status(200)]);
    let workspace = Workspace::new();
    let flow = workspace.file("bad.flow", format!("http POTS \"{}/x\"\n", server.url()));
    let (code, stdout, stderr) = output(&mut flowrun(&["run", path_str(&flow)]));
    assert_eq!(code, 2);
    assert_eq!(stdout, "");
    assert!(stderr.contains("flow::check::unknown_method"), "{stderr}");
    assert!(stderr.contains("did you mean `POST`?"), "{stderr}");
    assert_eq!(server.request_count(), 0);
}

#[test]
fn check_reports_every_file_and_problem() {
    let workspace = Workspace::new();
    let good = workspace.file("good.flow", "http GET \"https://api.example.test/x\"\n");
    let bad = workspace.file(
        "bad.flow",
        "http GET \"https://api.example.test/<<entiy.id>>\" json {}\n",
    );
    let (code, _, stderr) = output(&mut flowrun(&["check", path_str(&good), path_str(&bad)]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("flow::check::unknown_merge_field_root"),
        "{stderr}"
    );
    assert!(stderr.contains("flow::check::payload_on_get"), "{stderr}");

    let (code, stdout, stderr) = output(&mut flowrun(&["check", path_str(&good)]));
    assert_eq!(
        (code, stdout.as_str(), stderr.as_str()),
        (0, "", "1 file checked: no problems found\n")
    );
}

#[test]
fn check_json_format_for_editors() {
    let workspace = Workspace::new();
    let bad = workspace.file(
        "bad.flow",
        "step \"A\" {\n  http GET \"https://x.test/\"\n  timout 5s\n}\n",
    );
    let (code, stdout, _) = output(&mut flowrun(&["check", "--format", "json", path_str(&bad)]));
    assert_eq!(code, 2);
    let diagnostics: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        diagnostics,
        json!([{
            "file": path_str(&bad),
            "code": "flow::check::unknown_option",
            "severity": "error",
            "message": "unknown step option `timout`",
            "span": {"start": 42, "end": 48},
            "range": {"start": {"line": 3, "column": 3}, "end": {"line": 3, "column": 9}},
            "label": "not a step option",
            "help": "did you mean `timeout`?",
            "related": []
        }])
    );
}

#[test]
fn json_log_writes_one_event_per_line() {
    let server = TestServer::scripted(vec![
        Reply::status(429).header("Retry-After", "0"),
        Reply::status(200),
    ]);
    let workspace = Workspace::new();
    let flow = workspace.file(
        "one.flow",
        format!("step \"Ping\" {{\n  http GET \"{}/x\"\n}}\n", server.url()),
    );
    let (code, _, stderr) = output(&mut flowrun(&[
        "run",
        path_str(&flow),
        "--log-format",
        "json",
        "--execution-id",
        "exec-42",
    ]));
    assert_eq!(code, 0, "{stderr}");
    let events: Vec<Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let messages: Vec<&str> = events
        .iter()
        .map(|event| event["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages[0], "started");
    assert!(
        messages[1].ends_with("failed with 429 Too Many Requests; attempt 2 of 6 in 0ms"),
        "{messages:?}"
    );
    assert_eq!(events[1]["level"], "WARN");
    assert_eq!(events[1]["attempt"], 2);
    assert_eq!(events[1]["wait_ms"], 0);
    assert_eq!(events[2]["status"], 200);
    assert_eq!(events[3]["retries"], 1);
    for event in &events {
        assert_eq!(event["step"], "Ping");
        assert_eq!(event["spans"][0]["execution_id"], "exec-42");
    }
}

#[test]
fn json_log_notification_keeps_body_apart() {
    let server = TestServer::scripted(vec![
        Reply::status(500).body("line one\nline two\n"),
        Reply::status(500).body("line one\nline two\n"),
    ]);
    let workspace = Workspace::new();
    let flow = workspace.file(
        "notify.flow",
        format!(
            "step \"Send\" {{\n  http POST \"{}/claims\" json {{ \"a\": 1 }}\n  on error continue notify\n}}\n",
            server.url()
        ),
    );
    let failure = format!(
        "notification (medium): step \"Send\" failed: POST {}/claims returned 500 Internal Server Error",
        server.url()
    );

    let (code, _, stderr) = output(&mut flowrun(&[
        "run",
        path_str(&flow),
        "--log-format",
        "json",
        "--no-store",
        "--execution-id",
        "exec-7",
    ]));
    assert_eq!(code, 1, "{stderr}");
    let notification: Value = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|event| event["severity"] == "medium")
        .unwrap_or_else(|| panic!("{stderr}"));
    assert_eq!(notification["level"], "WARN");
    assert_eq!(notification["message"], json!(failure));
    assert_eq!(notification["response_body"], "line one\nline two");
    assert_eq!(notification["code"], "flow::run::http_status");
    assert_eq!(notification["step"], "Send");
    assert_eq!(
        notification["spans"],
        json!([{"execution_id": "exec-7", "name": "execution"}])
    );

    let (code, _, stderr) = output(&mut flowrun(&["run", path_str(&flow), "--no-store"]));
    assert_eq!(code, 1, "{stderr}");
    let line = stderr
        .lines()
        .find(|line| line.contains("notification (medium)"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert_eq!(
        line,
        format!("warning: step \"Send\": {failure}; response body: line one; line two")
    );
}

#[test]
fn dry_run_sends_nothing_and_masks_secrets() {
    let server = TestServer::scripted(vec![Reply::status(200)]);
    let workspace = Workspace::new();
    let flow = workspace.file("claim.flow", CLAIM_FLOW);
    let entity = workspace.file("claim.json", r#"{"id": "C 1", "claim_number": "CN-7"}"#);
    let api = format!("api={}", server.url());
    let (code, stdout, stderr) = output(
        flowrun(&[
            "run",
            path_str(&flow),
            "--entity",
            path_str(&entity),
            "--var",
            &api,
            "--dry-run",
            "--execution-id",
            "e-1",
        ])
        .env("FLOWRUN_SECRET_CLAIMS_TOKEN", "tok-123"),
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        format!(
            "# step \"Send claim\"\nPOST {}/claims/C%201\ncontent-type: application/json\nauthorization: Bearer ***\nidempotency-key: {}\n\n{{ \"n\": \"CN-7\" }}\n\n",
            server.url(),
            flowrun::run::idempotency_key("e-1", "Send claim", 0, flowrun::program::Method::Post, true).unwrap()
        )
    );
    assert_eq!(server.request_count(), 0);
}

#[test]
fn unset_secret_exits_2_and_sends_nothing() {
    let server = TestServer::scripted(vec![Reply::status(200)]);
    let workspace = Workspace::new();
    let flow = workspace.file("claim.flow", CLAIM_FLOW);
    let api = format!("api={}", server.url());
    let (code, _, stderr) = output(&mut flowrun(&["run", path_str(&flow), "--var", &api]));
    assert_eq!(code, 2);
    assert!(stderr.contains("flow::input::secret_not_set"), "{stderr}");
    assert!(stderr.contains("secret `CLAIMS_TOKEN` is not set"), "{stderr}");
    assert!(stderr.contains("FLOWRUN_SECRET_CLAIMS_TOKEN"), "{stderr}");
    assert_eq!(server.request_count(), 0);
}

#[test]
fn secrets_file_supplies_secrets() {
    let server = TestServer::scripted(vec![Reply::json(200, json!({"claim_id": "x"}))]);
    let workspace = Workspace::new();
    let flow = workspace.file("claim.flow", CLAIM_FLOW);
    let secrets = workspace.file("secrets.env", "# claims\nCLAIMS_TOKEN=\"from file\"\n");
    let entity = workspace.file("claim.json", r#"{"id": "C-1", "claim_number": "CN-7"}"#);
    let api = format!("api={}", server.url());
    let (code, _, stderr) = output(&mut flowrun(&[
        "run",
        path_str(&flow),
        "--entity",
        path_str(&entity),
        "--var",
        &api,
        "--secrets",
        path_str(&secrets),
    ]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        server.requests()[0].header("authorization"),
        Some("Bearer from file")
    );
}

#[test]
fn bad_input_exits_2_with_a_clear_error() {
    let workspace = Workspace::new();
    let flow = workspace.file("ok.flow", "let api\nhttp GET \"<<vars.api>>/x\"\n");
    let empty = workspace.file("empty.flow", "  \n\n");
    let latin1 = workspace.file("latin1.flow", b"http GET \"https://x.test/caf\xe9\"\n");
    let not_json = workspace.file("bad.json", "{\n  \"id\": 1,\n}");
    let list = workspace.file("list.json", "[1, 2]");
    let missing = workspace.dir.path().join("missing.flow");

    let cases: Vec<(Vec<&str>, &str, String)> = vec![
        (
            vec!["run", path_str(&missing)],
            "flow::input::file_not_found",
            format!("cannot read workflow `{}`", path_str(&missing)),
        ),
        (
            vec!["run", path_str(&empty)],
            "flow::input::empty_file",
            "is empty".to_string(),
        ),
        (
            vec!["run", path_str(&latin1)],
            "flow::input::not_utf8",
            "is not valid UTF-8 (first invalid byte at offset 28)".to_string(),
        ),
        (
            vec![
                "run",
                path_str(&flow),
                "--var",
                "api=http://127.0.0.1:9",
                "--entity",
                path_str(&not_json),
            ],
            "flow::input::invalid_entity",
            "is not valid JSON: trailing comma at 3:1".to_string(),
        ),
        (
            vec![
                "run",
                path_str(&flow),
                "--var",
                "api=http://127.0.0.1:9",
                "--entity",
                path_str(&list),
            ],
            "flow::input::entity_not_object",
            "is a list, not a JSON object".to_string(),
        ),
        (
            vec!["run", path_str(&flow)],
            "flow::input::missing_var",
            "variable `api` has no value".to_string(),
        ),
        (
            vec!["run", path_str(&flow), "--var", "apii=x"],
            "flow::input::invalid_var",
            "the workflow declares no variable `apii`".to_string(),
        ),
        (
            vec!["run", path_str(&flow), "--var", "novalue"],
            "flow::input::invalid_var",
            "expected NAME=VALUE".to_string(),
        ),
        (
            vec!["check", path_str(&missing)],
            "flow::input::file_not_found",
            "cannot read workflow".to_string(),
        ),
    ];
    for (args, code, message) in cases {
        let (exit, stdout, stderr) = output(&mut flowrun(&args));
        assert_eq!(exit, 2, "{args:?}: {stderr}");
        assert_eq!(stdout, "", "{args:?}");
        assert!(stderr.contains(code), "{args:?}: {stderr}");
        assert!(stderr.contains(&message), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn dry_run_shows_saved_values_as_placeholders() {
    let workspace = Workspace::new();
    let source = r#"
step "Create" {
  http POST "https://api.example.test/claims" json {}
  save response.json.id -> entity.remote_id
}
step "Confirm" {
  http PUT "https://api.example.test/claims/<<entity.remote_id>>" json { "id": "<<entity.remote_id>>" }
}
"#;
    let flow = workspace.file("chain.flow", source);
    let (code, stdout, stderr) = output(&mut flowrun(&["run", path_str(&flow), "--dry-run"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("PUT https://api.example.test/claims/%3Cresponse.json.id%3E\n"),
        "{stdout}"
    );
    assert!(stdout.contains(r#"{ "id": "<response.json.id>" }"#), "{stdout}");
}

#[test]
fn unwritable_report_path_stops_before_sending() {
    let server = TestServer::scripted(vec![Reply::status(200)]);
    let workspace = Workspace::new();
    let flow = workspace.file("ping.flow", format!("http GET \"{}/x\"\n", server.url()));
    let missing = workspace.dir.path().join("no-such-folder").join("report.json");
    let (code, _, stderr) = output(&mut flowrun(&[
        "run",
        path_str(&flow),
        "--no-store",
        "--report",
        path_str(&missing),
    ]));
    assert_eq!(code, 2);
    assert!(stderr.contains("flow::run::report_not_written"), "{stderr}");
    assert_eq!(server.request_count(), 0);
}

#[test]
fn byte_order_mark_is_ignored() {
    let server = TestServer::scripted(vec![Reply::status(200)]);
    let workspace = Workspace::new();
    let flow = workspace.file("bom.flow", format!("\u{feff}http GET \"{}/x\"\n", server.url()));
    let entity = workspace.file("bom.json", "\u{feff}{\"id\": 1}");
    let (code, stdout, stderr) = output(&mut flowrun(&[
        "run",
        path_str(&flow),
        "--no-store",
        "--entity",
        path_str(&entity),
    ]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "{\n  \"id\": 1\n}\n");
}

#[test]
fn closed_standard_error_does_not_stop_the_run() {
    let server = TestServer::start(|_| Reply::status(200));
    let workspace = Workspace::new();
    let source: String = (1..=20)
        .map(|index| {
            format!(
                "step \"S{index}\" {{\n  http GET \"{}/s{index}\"\n}}\n",
                server.url()
            )
        })
        .collect();
    let flow = workspace.file("many.flow", source);
    let mut child = flowrun(&["run", path_str(&flow), "--no-store"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    let result = child.wait_with_output().unwrap();
    assert_eq!(result.status.code(), Some(0));
    assert_eq!(server.request_count(), 20);
    assert_eq!(String::from_utf8(result.stdout).unwrap(), "{}\n");
}

#[test]
fn dry_run_shows_a_secret_base_url_masked() {
    let workspace = Workspace::new();
    let flow = workspace.file("secret.flow", "http GET \"<<secret.BASE>>/status\"\n");
    let (code, stdout, stderr) = output(&mut flowrun(&["run", path_str(&flow), "--dry-run"]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "# step \"GET (line 1)\"\nGET ***/status\n\n");
}

#[test]
fn dry_run_lists_failed_conditions_and_the_branch_taken() {
    let workspace = Workspace::new();
    let flow = workspace.file(
        "branch.flow",
        "if <<entity.amount>> > 100 {\n  set entity.big = true\n}\n",
    );
    let blank = workspace.file("blank.json", r#"{"amount": ""}"#);
    let (code, stdout, _) = output(&mut flowrun(&[
        "run",
        path_str(&flow),
        "--entity",
        path_str(&blank),
        "--dry-run",
    ]));
    assert_eq!(code, 1);
    assert!(
        stdout.ends_with("failed: `>` cannot compare a blank value: `entity.amount` is blank\n\n"),
        "{stdout}"
    );

    let large = workspace.file("large.json", r#"{"amount": 500}"#);
    let (code, stdout, stderr) = output(&mut flowrun(&[
        "run",
        path_str(&flow),
        "--entity",
        path_str(&large),
        "--dry-run",
    ]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.ends_with(": took the `then` branch\n\n"), "{stdout}");

    let typed = workspace.file(
        "typed.flow",
        "let amt: number = <<entity.amount_text>>\nset entity.x = <<vars.amt>>\n",
    );
    let text = workspace.file("text.json", r#"{"amount_text": "abc"}"#);
    let (code, stdout, _) = output(&mut flowrun(&[
        "run",
        path_str(&typed),
        "--entity",
        path_str(&text),
        "--dry-run",
    ]));
    assert_eq!(code, 1);
    assert!(stdout.contains("failed: "), "{stdout}");
    assert!(stdout.contains("abc"), "{stdout}");
}

#[test]
fn dry_run_does_not_evaluate_values_a_code_step_sets() {
    let workspace = Workspace::new();
    let flow = workspace.file(
        "dry.flow",
        "step \"Score\" {\n  code python \"\"\"\n    outputs.r = 41\n  \"\"\"\n  outputs { r -> entity.r }\n}\n\
         set entity.y = <<entity.r>> + 1\n\
         if <<entity.y>> > 40 {\n  http POST \"http://127.0.0.1:9/high\" json { \"r\": \"<<entity.r>>\" }\n}\n\
         set entity.z = <<entity.base>> + 1\n",
    );
    let entity = workspace.file("claim.json", r#"{"base": 1}"#);
    let (code, stdout, stderr) = output(&mut flowrun(&[
        "run",
        path_str(&flow),
        "--entity",
        path_str(&entity),
        "--execution-id",
        "exec-dry",
        "--dry-run",
    ]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(
        stdout,
        "# step \"set entity.y (line 7)\": not evaluated, because it reads `entity.r`, which the dry run does not know\n\n\
         # step \"if (line 8)\": not evaluated, because it reads `entity.y`, which the dry run does not know\n\n\
         # step \"if (line 8)\": took the `then` branch\n\n\
         # step \"POST (line 9)\"\nPOST http://127.0.0.1:9/high\ncontent-type: application/json\nidempotency-key: 9658ca80-37e0-5f9c-a098-6c6644f6a5db\n\n{ \"r\": \"<outputs.r>\" }\n\n"
    );
}

#[test]
fn named_pipes_are_reported_without_blocking() {
    let workspace = Workspace::new();
    let fifo = workspace.dir.path().join("pipe.flow");
    make_fifo(&fifo);
    let limit = std::time::Duration::from_secs(20);
    for command in ["check", "fmt", "run"] {
        let (exit, stdout, stderr) = output_within(&mut flowrun(&[command, path_str(&fifo)]), limit);
        assert_eq!(exit, 2, "{command}: {stderr}");
        assert_eq!(stdout, "", "{command}");
        assert!(
            stderr.contains("flow::input::file_unreadable"),
            "{command}: {stderr}"
        );
        assert!(
            stderr.contains(&format!(
                "cannot read workflow `{}`: it is a named pipe (FIFO), not a regular file",
                fifo.display()
            )),
            "{command}: {stderr}"
        );
    }

    // A `flowrun.toml` beside the workflow is read by `check` too.
    let project = workspace.dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    make_fifo(&project.join("flowrun.toml"));
    let flow = project.join("a.flow");
    std::fs::write(&flow, "step \"a\" {\n  http GET \"http://127.0.0.1:9/\"\n}\n").unwrap();
    let (exit, stdout, stderr) = output_within(
        &mut flowrun(&["check", "--format", "json", path_str(&flow)]),
        limit,
    );
    assert_eq!(exit, 2, "{stderr}");
    let value: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(value[0]["code"], "flow::check::invalid_provider");
    assert_eq!(
        value[0]["message"],
        format!(
            "`{}` is invalid: cannot be read: it is a named pipe (FIFO), not a regular file",
            project.join("flowrun.toml").display()
        )
    );
}

fn nested_ifs(depth: usize) -> String {
    format!(
        "{}set entity.x = 1\n{}",
        "if <<entity.amount>> > 1 {\n".repeat(depth),
        "}\n".repeat(depth)
    )
}

#[test]
fn if_blocks_nest_up_to_limit() {
    let workspace = Workspace::new();
    let limit = std::time::Duration::from_secs(60);
    let flow = workspace.file("deep.flow", nested_ifs(64));
    let (exit, _, stderr) = output_within(&mut flowrun(&["check", path_str(&flow)]), limit);
    assert_eq!(exit, 0, "{stderr}");
    assert_eq!(stderr, "1 file checked: no problems found\n");
    let (exit, _, stderr) = output_within(&mut flowrun(&["fmt", path_str(&flow)]), limit);
    assert_eq!(exit, 0, "{stderr}");
    let entity = workspace.file("entity.json", r#"{"amount": 2}"#);
    let (exit, stdout, stderr) = output_within(
        &mut flowrun(&[
            "run",
            "--dry-run",
            "--no-store",
            "--entity",
            path_str(&entity),
            path_str(&flow),
        ]),
        limit,
    );
    assert_eq!(exit, 0, "{stderr}");
    assert!(
        stdout.ends_with("# step \"if (line 64)\": took the `then` branch\n\n"),
        "{stdout}"
    );
}

#[test]
fn if_blocks_past_limit_are_rejected() {
    let workspace = Workspace::new();
    let limit = std::time::Duration::from_secs(60);
    for depth in [65, 900, 5000] {
        let text = nested_ifs(depth);
        let flow = workspace.file("deep.flow", &text);
        let (exit, stdout, stderr) = output_within(
            &mut flowrun(&["check", "--format", "json", path_str(&flow)]),
            limit,
        );
        assert_eq!(exit, 2, "{depth}: {stderr}");
        let value: Value = serde_json::from_str(&stdout).unwrap();
        let start = "if <<entity.amount>> > 1 {\n".len() * 64;
        assert_eq!(
            value,
            json!([{
                "file": path_str(&flow),
                "code": "flow::syntax::unexpected",
                "severity": "error",
                "message": "`if` and `else` blocks nest more than 64 levels deep",
                "span": {"start": start, "end": start + 2},
                "range": {"start": {"line": 65, "column": 1}, "end": {"line": 65, "column": 3}},
                "label": "this block is nested 65 levels deep",
                "help": "join conditions with `and`, or move the inner blocks to steps of their own; blocks may nest at most 64 levels, and each `else if` counts one level more than the `if` before it",
                "related": [],
            }]),
            "{depth}"
        );
        let (exit, stdout, stderr) = output_within(&mut flowrun(&["fmt", path_str(&flow)]), limit);
        assert_eq!(exit, 2, "{depth}: {stderr}");
        assert_eq!(stdout, "");
        assert!(
            stderr.contains("`if` and `else` blocks nest more than 64 levels deep"),
            "{depth}: {stderr}"
        );
        assert!(!stderr.contains("overflow"), "{depth}: {stderr}");
        assert_eq!(std::fs::read_to_string(&flow).unwrap(), text, "{depth}");
    }
}

#[test]
fn long_arithmetic_and_deep_parentheses_are_syntax_errors() {
    let workspace = Workspace::new();
    let limit = std::time::Duration::from_secs(60);
    let cases = [
        (
            format!("set entity.x = {}1\n", "1 + ".repeat(20_000)),
            "arithmetic nests more than 256 operations deep",
        ),
        (
            format!("set entity.x = {}1{}\n", "(".repeat(3000), ")".repeat(3000)),
            "parentheses and `not` nest more than 64 levels deep",
        ),
        (
            format!("if {}<<entity.a>> > 1 {{\n}}\n", "not ".repeat(3000)),
            "parentheses and `not` nest more than 64 levels deep",
        ),
    ];
    for (text, message) in cases {
        let flow = workspace.file("deep.flow", &text);
        for command in ["check", "fmt"] {
            let (exit, _, stderr) = output_within(&mut flowrun(&[command, path_str(&flow)]), limit);
            assert_eq!(exit, 2, "{command} {message}: {stderr}");
            assert!(stderr.contains("flow::syntax::unexpected"), "{stderr}");
            assert!(stderr.contains(message), "{command}: {stderr}");
        }
    }
    let (exit, _, stderr) = output_within(
        &mut flowrun(&[
            "check",
            path_str(&workspace.file("ok.flow", format!("set entity.x = {}1\n", "1 + ".repeat(255)))),
        ]),
        limit,
    );
    assert_eq!(exit, 0, "{stderr}");
}
