//! The `llm` action. A local fake server stands in for what a real model
//! cannot be made to do on demand (429, 5xx, refusals, fenced or invalid
//! JSON) and for Anthropic's hosted API; `tests/llm_model.rs` runs against a
//! real model.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use support::cli::{flowrun, output, path_str, Workspace};
use support::server::{Reply, TestServer};

/// An OpenAI chat completion with this content and finish reason.
fn completion(content: &str, finish: &str) -> Reply {
    Reply::json(
        200,
        json!({
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "fake-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        }),
    )
}

/// Runs `source` with the built-in `openai` provider pointed at `server`.
fn run(source: &str, server: &TestServer, entity: &str) -> (i32, Value, String) {
    let workspace = Workspace::new();
    let flow = workspace.file("llm.flow", source);
    let entity = workspace.file("entity.json", entity);
    let base = format!("{}/v1", server.url());
    let (code, stdout, stderr) = output(
        flowrun(&[
            "run",
            path_str(&flow),
            "--entity",
            path_str(&entity),
            "--no-store",
        ])
        .env("OPENAI_BASE_URL", &base)
        .env("OPENAI_API_KEY", "sk-test-key-123")
        .env("FLOWRUN_OPENAI_MODEL", "fake-model")
        .env_remove("FLOWRUN_LLM_PROVIDER")
        .env_remove("FLOWRUN_LLM_MODEL"),
    );
    let entity = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (code, entity, stderr)
}

const CLASSIFY: &str = r#"
step "Classify claim" {
  llm prompt """
    Classify the claim described by these adjuster notes.
    Notes: <<entity.adjuster_notes>>
  """
  system "You are a claims triage assistant."
  choices ["auto", "property", "liability", "other"]
  -> entity.claim_type
}
"#;

#[test]
fn choices_request_and_answer() {
    let server = TestServer::scripted(vec![completion("{\"choice\": \" Property \"}", "stop")]);
    let (code, entity, stderr) = run(
        CLASSIFY,
        &server,
        r#"{"adjuster_notes": "Kitchen flooded \"badly\"."}"#,
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(entity["claim_type"], "property");

    let request = &server.requests()[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.target, "/v1/chat/completions");
    assert_eq!(request.header("authorization"), Some("Bearer sk-test-key-123"));
    assert_eq!(request.header_all("content-type"), vec!["application/json"]);
    let body: Value = serde_json::from_str(request.body_text()).unwrap();
    assert_eq!(
        body,
        json!({
            "model": "fake-model",
            "messages": [
                {"role": "system", "content": "You are a claims triage assistant."},
                {"role": "user", "content": "Classify the claim described by these adjuster notes.\nNotes: Kitchen flooded \"badly\"."}
            ],
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "choice",
                    "schema": {
                        "type": "object",
                        "properties": {"choice": {"type": "string", "enum": ["auto", "property", "liability", "other"]}},
                        "required": ["choice"],
                        "additionalProperties": false
                    },
                    "strict": true
                }
            }
        })
    );
    assert!(stderr.contains("(11 prompt and 7 completion tokens)"), "{stderr}");
    assert!(!stderr.contains("sk-test-key-123"), "{stderr}");
}

#[test]
fn choice_outside_the_set_is_an_error_naming_both() {
    let server = TestServer::scripted(vec![completion("{\"choice\": \"marine\"}", "stop")]);
    let source = CLASSIFY.replace("-> entity.claim_type", "-> entity.claim_type\n  repair off");
    let (code, entity, stderr) = run(&source, &server, r#"{"adjuster_notes": "x"}"#);
    assert_eq!(code, 3);
    assert_eq!(entity, json!({"adjuster_notes": "x"}));
    assert!(stderr.contains("flow::run::llm_invalid_output"), "{stderr}");
    assert!(
        stderr.contains(r#""marine" is not one of "auto", "property", "liability", "other""#),
        "{stderr}"
    );
}

const REVIEW: &str = r#"
step "Review application notes" {
  llm prompt "Flag potential compliance issues in: <<entity.application_notes>>"
  schema { flagged: boolean, reasons: [text], risk: "low" | "medium" | "high" }
  -> entity.compliance_review
}
"#;

#[test]
fn schema_answer_in_a_code_fence_is_accepted() {
    let fenced = "Here is the review:\n```json\n{\"flagged\": true, \"reasons\": [\"income unverified\"], \"risk\": \"HIGH\"}\n```";
    let server = TestServer::scripted(vec![completion(fenced, "stop")]);
    let (code, entity, stderr) = run(REVIEW, &server, r#"{"application_notes": "n"}"#);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        entity["compliance_review"],
        json!({"flagged": true, "reasons": ["income unverified"], "risk": "high"})
    );
    let body: Value = serde_json::from_str(server.requests()[0].body_text()).unwrap();
    assert_eq!(body["response_format"]["json_schema"]["name"], "answer");
    assert_eq!(
        body["response_format"]["json_schema"]["schema"]["required"],
        json!(["flagged", "reasons", "risk"])
    );
}

#[test]
fn prose_before_json_is_skipped() {
    let server = TestServer::scripted(vec![completion(
        "Sure. {\"flagged\": false, \"reasons\": [], \"risk\": \"low\"} Hope this helps.",
        "stop",
    )]);
    let (code, entity, stderr) = run(REVIEW, &server, r#"{"application_notes": "n"}"#);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        entity["compliance_review"],
        json!({"flagged": false, "reasons": [], "risk": "low"})
    );
}

#[test]
fn invalid_answer_gets_one_repair_round() {
    let server = TestServer::scripted(vec![
        completion(
            "{\"flagged\": \"yes\", \"reasons\": [], \"risk\": \"low\"}",
            "stop",
        ),
        completion("{\"flagged\": true, \"reasons\": [], \"risk\": \"low\"}", "stop"),
    ]);
    let (code, entity, stderr) = run(REVIEW, &server, r#"{"application_notes": "n"}"#);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(entity["compliance_review"]["flagged"], true);
    assert_eq!(server.request_count(), 2);
    let repair: Value = serde_json::from_str(server.requests()[1].body_text()).unwrap();
    let messages = repair["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[2]["role"], "user");
    assert!(
        messages[2]["content"].as_str().unwrap().contains("`flagged`"),
        "{messages:?}"
    );
}

#[test]
fn answer_still_invalid_after_repair_fails_the_step() {
    let server = TestServer::scripted(vec![completion("not json at all", "stop")]);
    let (code, entity, stderr) = run(REVIEW, &server, r#"{"application_notes": "n"}"#);
    assert_eq!(code, 3);
    assert_eq!(server.request_count(), 2);
    assert_eq!(entity, json!({"application_notes": "n"}));
    assert!(stderr.contains("still invalid after one repair"), "{stderr}");
}

#[test]
fn truncation_refusal_and_content_filter_are_errors() {
    let cases = [
        (
            completion("The claim is", "length"),
            "flow::run::llm_truncated",
            "was cut at its token limit",
        ),
        (
            completion("", "content_filter"),
            "flow::run::llm_refused",
            "content filter stopped the answer",
        ),
        (
            Reply::json(
                200,
                json!({"model": "fake-model", "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "refusal": "I can't help with that."}, "finish_reason": "stop"}]}),
            ),
            "flow::run::llm_refused",
            "refused to answer: I can't help with that.",
        ),
    ];
    let source =
        "step \"Summarise\" {\n  llm prompt \"Summarise: <<entity.notes>>\"\n  -> entity.summary\n}\n";
    for (reply, code_name, message) in cases {
        let server = TestServer::scripted(vec![reply]);
        let (code, entity, stderr) = run(source, &server, r#"{"notes": "n"}"#);
        assert_eq!(code, 3, "{stderr}");
        assert_eq!(entity, json!({"notes": "n"}));
        assert!(stderr.contains(code_name), "{stderr}");
        assert!(stderr.contains(message), "{stderr}");
        assert_eq!(server.request_count(), 1);
    }
}

#[test]
fn rate_limits_and_server_errors_are_retried() {
    let server = TestServer::scripted(vec![
        Reply::status(429).header("Retry-After", "0"),
        Reply::status(503),
        completion("A short summary.", "stop"),
    ]);
    let source = "step \"Summarise\" {\n  llm prompt \"Summarise: <<entity.notes>>\"\n  -> entity.summary\n  max_wait 5s\n}\n";
    let (code, entity, stderr) = run(source, &server, r#"{"notes": "n"}"#);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(entity["summary"], "A short summary.");
    assert_eq!(server.request_count(), 3);
}

#[test]
fn fallback_model_is_tried_after_failures() {
    let seen = Arc::new(AtomicUsize::new(0));
    let server = {
        let seen = seen.clone();
        TestServer::start(move |request| {
            seen.fetch_add(1, Ordering::SeqCst);
            let body: Value = serde_json::from_str(request.body_text()).unwrap();
            if body["model"] == "primary" {
                Reply::status(400).body("model not found")
            } else {
                completion("From the fallback.", "stop")
            }
        })
    };
    let source = "step \"Summarise\" {\n  llm model \"primary\" prompt \"Summarise\"\n  fallback [\"backup\"]\n  -> entity.summary\n}\n";
    let (code, entity, stderr) = run(source, &server, "{}");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(entity["summary"], "From the fallback.");
    let models: Vec<Value> = server
        .requests()
        .iter()
        .map(|request| serde_json::from_str::<Value>(request.body_text()).unwrap()["model"].clone())
        .collect();
    assert_eq!(models, vec![json!("primary"), json!("backup")]);
}

#[test]
fn anthropic_request_and_tool_answer() {
    let server = TestServer::scripted(vec![Reply::json(
        200,
        json!({
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-test",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "answer", "input": {"flagged": true, "reasons": ["r"], "risk": "medium"}}],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 20, "output_tokens": 9}
        }),
    )]);
    let source = format!(
        "provider claude {{\n  kind anthropic\n  base_url \"{}\"\n  api_key \"<<secret.CLAUDE_KEY>>\"\n  model \"claude-test\"\n}}\n{}",
        server.url(),
        REVIEW.replace("llm prompt", "llm provider \"claude\" prompt")
    );
    let workspace = Workspace::new();
    let flow = workspace.file("llm.flow", source);
    let entity = workspace.file("entity.json", r#"{"application_notes": "n"}"#);
    let (code, stdout, stderr) = output(
        flowrun(&[
            "run",
            path_str(&flow),
            "--entity",
            path_str(&entity),
            "--no-store",
        ])
        .env("FLOWRUN_SECRET_CLAUDE_KEY", "ak-secret-1"),
    );
    assert_eq!(code, 0, "{stderr}");
    let entity: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        entity["compliance_review"],
        json!({"flagged": true, "reasons": ["r"], "risk": "medium"})
    );

    let request = &server.requests()[0];
    assert_eq!(request.target, "/v1/messages");
    assert_eq!(request.header("x-api-key"), Some("ak-secret-1"));
    assert_eq!(request.header("anthropic-version"), Some("2023-06-01"));
    let body: Value = serde_json::from_str(request.body_text()).unwrap();
    assert_eq!(body["model"], "claude-test");
    assert_eq!(body["max_tokens"], 1024);
    assert_eq!(body["tool_choice"], json!({"type": "tool", "name": "answer"}));
    assert_eq!(body["tools"][0]["name"], "answer");
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": "Flag potential compliance issues in: n"}])
    );
    assert!(!stderr.contains("ak-secret-1"), "{stderr}");
}

#[test]
fn schema_members_spread_into_the_entity() {
    let server = TestServer::scripted(vec![completion(
        "{\"flagged\": false, \"reasons\": [], \"risk\": \"low\"}",
        "stop",
    )]);
    let source = REVIEW.replace("-> entity.compliance_review", "-> entity");
    let (code, entity, stderr) = run(&source, &server, r#"{"application_notes": "n"}"#);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        entity,
        json!({"application_notes": "n", "flagged": false, "reasons": [], "risk": "low"})
    );
}

#[test]
fn dry_run_shows_the_prompt_and_sends_nothing() {
    let server = TestServer::scripted(vec![completion("x", "stop")]);
    let workspace = Workspace::new();
    let flow = workspace.file("llm.flow", CLASSIFY);
    let entity = workspace.file("entity.json", r#"{"adjuster_notes": "Rear-ended at a light."}"#);
    let base = format!("{}/v1", server.url());
    let (code, stdout, stderr) = output(
        flowrun(&["run", path_str(&flow), "--entity", path_str(&entity), "--dry-run"])
            .env("OPENAI_BASE_URL", &base)
            .env("OPENAI_API_KEY", "sk-test-key-123")
            .env("FLOWRUN_OPENAI_MODEL", "fake-model"),
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(server.request_count(), 0);
    assert!(
        stdout.contains(&format!("POST {base}/chat/completions")),
        "{stdout}"
    );
    assert!(stdout.contains("Notes: Rear-ended at a light."), "{stdout}");
    assert!(stdout.contains("authorization: Bearer ***"), "{stdout}");
    assert!(!stdout.contains("sk-test-key-123"), "{stdout}");
}

#[test]
fn unknown_provider_is_a_check_diagnostic() {
    let workspace = Workspace::new();
    let flow = workspace.file(
        "llm.flow",
        "step \"S\" {\n  llm provider \"opnai\" prompt \"hi\"\n  -> entity.x\n}\n",
    );
    let (code, _, stderr) = output(&mut flowrun(&["check", path_str(&flow)]));
    assert_eq!(code, 2);
    assert!(stderr.contains("flow::check::unknown_provider"), "{stderr}");
    assert!(stderr.contains("did you mean `openai`?"), "{stderr}");
}

#[test]
fn usage_reaches_the_report_and_the_store() {
    let server = TestServer::scripted(vec![completion("A short summary.", "stop")]);
    let workspace = Workspace::new();
    let flow = workspace.file(
        "llm.flow",
        "step \"Summarise\" {\n  llm prompt \"Summarise\"\n  -> entity.summary\n}\n",
    );
    let report = workspace.dir.path().join("report.json");
    let store = workspace.dir.path().join("store.db");
    let base = format!("{}/v1", server.url());
    let (code, _, stderr) = output(
        flowrun(&[
            "run",
            path_str(&flow),
            "--report",
            path_str(&report),
            "--store",
            path_str(&store),
            "--execution-id",
            "u",
        ])
        .env("OPENAI_BASE_URL", &base)
        .env("FLOWRUN_OPENAI_MODEL", "fake-model"),
    );
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let usage = &report["steps"][0]["llm_usage"][0];
    assert_eq!(usage["provider"], "openai");
    assert_eq!(usage["model"], "fake-model");
    assert_eq!(usage["prompt_tokens"], 11);
    assert_eq!(usage["completion_tokens"], 7);
    assert!(usage["latency_ms"].is_u64());

    let (code, history, _) = output(&mut flowrun(&["runs", "show", "u", "--store", path_str(&store)]));
    assert_eq!(code, 0);
    assert!(
        history.contains("model fake-model via openai: 11 prompt and 7 completion tokens in "),
        "{history}"
    );
}

#[test]
fn flowrun_toml_providers_are_checked_where_used() {
    let workspace = Workspace::new();
    workspace.file(
        "flowrun.toml",
        "[providers.local]\nkind = \"openai\"\nbase_url = \"<<vars.llm_api>>\"\napi_key = \"<<secret.LOCAL_KEY>>\"\n",
    );
    let flow = workspace.file(
        "llm.flow",
        "step \"S\" {\n  llm prompt \"hi\"\n  -> entity.x\n}\n",
    );
    let (code, _, stderr) = output(&mut flowrun(&["check", path_str(&flow)]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("provider `local` reads `vars.llm_api`, which this workflow does not declare"),
        "{stderr}"
    );

    let flow = workspace.file(
        "llm.flow",
        "let llm_api = \"http://127.0.0.1:9/v1\"\nstep \"S\" {\n  llm prompt \"hi\"\n  -> entity.x\n}\n",
    );
    let (code, _, stderr) = output(&mut flowrun(&["run", path_str(&flow), "--no-store"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("secret `LOCAL_KEY` is not set"), "{stderr}");

    workspace.file(
        "flowrun.toml",
        "[providers.local]\nkind = \"openai\"\napi_key = \"sk-plain\"\n",
    );
    let (code, _, stderr) = output(&mut flowrun(&["check", path_str(&flow)]));
    assert_eq!(code, 2);
    assert!(stderr.contains("has an API key in plain text"), "{stderr}");
}

#[test]
fn repair_round_is_recorded_in_the_store() {
    let server = TestServer::scripted(vec![
        completion("{\"choice\": \"marine\"}", "stop"),
        completion("{\"choice\": \"auto\"}", "stop"),
    ]);
    let workspace = Workspace::new();
    let flow = workspace.file("llm.flow", CLASSIFY);
    let entity = workspace.file("entity.json", r#"{"adjuster_notes": "n"}"#);
    let store = workspace.dir.path().join("store.db");
    let base = format!("{}/v1", server.url());
    let (code, stdout, stderr) = output(
        flowrun(&[
            "run",
            path_str(&flow),
            "--entity",
            path_str(&entity),
            "--store",
            path_str(&store),
        ])
        .env("OPENAI_BASE_URL", &base)
        .env("FLOWRUN_OPENAI_MODEL", "fake-model"),
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap()["claim_type"],
        "auto"
    );
}

#[test]
fn dry_run_reports_an_unrenderable_prompt() {
    let workspace = Workspace::new();
    let flow = workspace.file(
        "llm.flow",
        "step \"T\" {\n  llm prompt \"x=<<entity.nope>>\"\n  -> entity.t\n}\nstep \"U\" {\n  http GET \"http://127.0.0.1:9/<<entity.t>>\"\n}\n",
    );
    let (code, stdout, stderr) =
        output(flowrun(&["run", path_str(&flow), "--dry-run"]).env("FLOWRUN_OPENAI_MODEL", "fake-model"));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stdout.contains("# step \"T\"\n# not rendered: merge field `entity.nope`"),
        "{stdout}"
    );
}

#[test]
fn dry_run_does_not_evaluate_model_answers() {
    let workspace = Workspace::new();
    let flow = workspace.file(
        "llm.flow",
        "step \"Score\" {\n  llm prompt \"Rate the claim\"\n  schema { score: number }\n  -> entity\n}\nset entity.next = <<entity.score>> + 1\n",
    );
    let (code, stdout, stderr) =
        output(flowrun(&["run", path_str(&flow), "--dry-run"]).env("FLOWRUN_OPENAI_MODEL", "fake-model"));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.ends_with(
            "# step \"set entity.next (line 6)\": not evaluated, because it reads `entity.score`, which the dry run does not know\n\n"
        ),
        "{stdout}"
    );
}

#[test]
fn api_key_must_be_a_secret() {
    let workspace = Workspace::new();
    let flow = workspace.file(
        "llm.flow",
        "let k = \"sk-plain\"\nprovider p {\n  api_key \"<<vars.k>>\"\n}\nstep \"S\" {\n  llm provider \"p\" prompt \"hi\"\n}\n",
    );
    let (code, _, stderr) = output(&mut flowrun(&["check", path_str(&flow)]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("an API key may use only `<<secret.NAME>>`"),
        "{stderr}"
    );
}

#[test]
fn secrets_in_answers_are_masked() {
    let server = TestServer::scripted(vec![completion("Your key is sk-test-key-123.", "stop")]);
    let source = "step \"S\" {\n  llm prompt \"Echo\"\n  -> entity.echo\n}\n";
    let (code, entity, stderr) = run(source, &server, "{}");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(entity["echo"], "Your key is ***.");
}

#[test]
fn fallback_models_may_contain_slashes() {
    let server = TestServer::start(|request| {
        let body: Value = serde_json::from_str(request.body_text()).unwrap();
        if body["model"] == "meta-llama/Llama-3-8b" {
            completion("From the fallback.", "stop")
        } else {
            Reply::status(400)
        }
    });
    let source = "step \"S\" {\n  llm model \"first\" prompt \"hi\"\n  fallback [\"meta-llama/Llama-3-8b\"]\n  -> entity.x\n}\n";
    let (code, entity, stderr) = run(source, &server, "{}");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(entity["x"], "From the fallback.");
}

#[test]
fn base_url_query_stays_after_the_path() {
    let server = TestServer::scripted(vec![completion("ok", "stop")]);
    let workspace = Workspace::new();
    let flow = workspace.file(
        "llm.flow",
        "step \"S\" {\n  llm prompt \"hi\"\n  -> entity.x\n}\n",
    );
    let base = format!("{}/openai/deployments/d1?api-version=2024-06-01", server.url());
    let (code, _, stderr) = output(
        flowrun(&["run", path_str(&flow), "--no-store"])
            .env("OPENAI_BASE_URL", &base)
            .env("FLOWRUN_OPENAI_MODEL", "fake-model"),
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        server.requests()[0].target,
        "/openai/deployments/d1/chat/completions?api-version=2024-06-01"
    );
}

#[test]
fn empty_answer_is_an_error() {
    let server = TestServer::scripted(vec![Reply::json(
        200,
        json!({"model": "fake-model", "choices": [{"index": 0, "message": {"role": "assistant", "content": null}, "finish_reason": "stop"}]}),
    )]);
    let source = "step \"S\" {\n  llm prompt \"hi\"\n  -> entity.x\n}\n";
    let (code, entity, stderr) = run(source, &server, "{}");
    assert_eq!(code, 3);
    assert_eq!(entity, json!({}));
    assert!(stderr.contains("flow::run::llm_failed"), "{stderr}");
    assert!(stderr.contains("returned an empty answer"), "{stderr}");
}

#[test]
fn broken_exchanges_are_retried_for_model_calls() {
    let server = TestServer::scripted(vec![Reply::close(), completion("ok", "stop")]);
    let source = "step \"S\" {\n  llm prompt \"hi\"\n  -> entity.x\n  max_wait 2s\n}\n";
    let (code, entity, stderr) = run(source, &server, "{}");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(entity["x"], "ok");
    assert_eq!(server.request_count(), 2);
}

#[test]
fn provider_and_webhook_urls_cannot_depend_on_the_entity() {
    let workspace = Workspace::new();
    let flow = workspace.file(
        "llm.flow",
        "let llm = \"<<entity.llm>>\"\n\
         notify webhook \"https://hooks.example.test/<<lower entity.id>>\"\n\
         provider p {\n  base_url \"<<default entity.llm \"http://127.0.0.1:9/v1\">>\"\n}\n\
         provider q {\n  base_url \"<<vars.llm>>\"\n}\n\
         step \"S\" {\n  llm provider \"p\" prompt \"hi\"\n}\n",
    );
    let (code, _, stderr) = output(&mut flowrun(&["check", path_str(&flow)]));
    assert_eq!(code, 2);
    assert_eq!(
        stderr
            .matches("a provider setting may use only `vars` and `secret`")
            .count(),
        2,
        "{stderr}"
    );
    assert!(
        stderr.contains("a webhook URL may use only `vars` and `secret`"),
        "{stderr}"
    );
}

const INJURY: &str = r#"
if llm "Does this note describe an injury?" about <<entity.adjuster_notes>> {
  set entity.injury = true
} else {
  set entity.injury = false
}
"#;

#[test]
fn llm_condition_yes_takes_the_then_branch() {
    let server = TestServer::scripted(vec![completion("{\"choice\": \"yes\"}", "stop")]);
    let (code, entity, stderr) = run(INJURY, &server, r#"{"adjuster_notes": "Driver hurt his neck."}"#);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(entity["injury"], true);
    let body: Value = serde_json::from_str(server.requests()[0].body_text()).unwrap();
    assert_eq!(
        body["messages"],
        json!([
            {"role": "system", "content": "Answer the question about the text with yes or no."},
            {"role": "user", "content": "Does this note describe an injury?\n\nText:\nDriver hurt his neck."}
        ])
    );
    assert_eq!(
        body["response_format"]["json_schema"]["schema"]["properties"]["choice"]["enum"],
        json!(["yes", "no"])
    );
    assert!(stderr.contains("took the `then` branch"), "{stderr}");
}

#[test]
fn llm_condition_no_takes_the_else_branch() {
    let server = TestServer::scripted(vec![completion("{\"choice\": \"No\"}", "stop")]);
    let (code, entity, stderr) = run(INJURY, &server, r#"{"adjuster_notes": "Hail dented the roof."}"#);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(entity["injury"], false);
    assert_eq!(server.request_count(), 1);
}

#[test]
fn llm_condition_invalid_answer_fails_the_if_step() {
    let server = TestServer::scripted(vec![
        completion("{\"choice\": \"maybe\"}", "stop"),
        completion("{\"choice\": \"perhaps\"}", "stop"),
    ]);
    let (code, entity, stderr) = run(INJURY, &server, r#"{"adjuster_notes": "Unclear."}"#);
    assert_eq!(code, 3, "{stderr}");
    // Neither branch ran.
    assert_eq!(entity, json!({"adjuster_notes": "Unclear."}));
    assert!(stderr.contains("flow::run::llm_invalid_output"), "{stderr}");
    assert!(
        stderr.contains(r#""perhaps" is not one of "yes", "no""#),
        "{stderr}"
    );
    // One repair round, as for the `llm` action.
    assert_eq!(server.request_count(), 2);
}

#[test]
fn llm_condition_retries_and_records_usage() {
    let server = TestServer::scripted(vec![
        Reply::status(429).header("Retry-After", "0"),
        completion("{\"choice\": \"yes\"}", "stop"),
    ]);
    let workspace = Workspace::new();
    let flow = workspace.file("llm.flow", INJURY);
    let entity = workspace.file("entity.json", r#"{"adjuster_notes": "Broken arm."}"#);
    let report = workspace.dir.path().join("report.json");
    let (code, _, stderr) = output(
        flowrun(&[
            "run",
            path_str(&flow),
            "--entity",
            path_str(&entity),
            "--no-store",
            "--report",
            path_str(&report),
        ])
        .env("OPENAI_BASE_URL", format!("{}/v1", server.url()))
        .env("FLOWRUN_OPENAI_MODEL", "fake-model")
        .env_remove("FLOWRUN_LLM_PROVIDER")
        .env_remove("FLOWRUN_LLM_MODEL"),
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(server.request_count(), 2);
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let step = &report["steps"][0];
    assert_eq!(step["name"], "if (line 2)");
    assert_eq!(step["branch"], "then");
    assert_eq!(step["attempts"].as_array().unwrap().len(), 2);
    assert_eq!(step["llm_usage"][0]["prompt_tokens"], 11);
    assert_eq!(step["llm_usage"][0]["completion_tokens"], 7);
}

#[test]
fn resume_after_a_branch_does_not_ask_the_model_again() {
    let chats = Arc::new(AtomicUsize::new(0));
    let posts = Arc::new(AtomicUsize::new(0));
    let server = {
        let (chats, posts) = (chats.clone(), posts.clone());
        TestServer::start(move |request| match request.target.as_str() {
            "/v1/chat/completions" => {
                chats.fetch_add(1, Ordering::SeqCst);
                completion("{\"choice\": \"yes\"}", "stop")
            }
            "/urgent" if posts.fetch_add(1, Ordering::SeqCst) == 0 => Reply::status(500),
            "/urgent" => Reply::status(200),
            _ => Reply::status(404),
        })
    };
    let source = format!(
        "if llm \"Is this urgent?\" about <<entity.notes>> {{\n  step \"Alert\" {{\n    http POST \"{}/urgent\" json {{ \"id\": \"<<entity.id>>\" }}\n  }}\n  set entity.alerted = true\n}}\n",
        server.url()
    );
    let workspace = Workspace::new();
    let flow = workspace.file("urgent.flow", &source);
    let entity = workspace.file("entity.json", r#"{"id": "C-1", "notes": "Water everywhere."}"#);
    let store = workspace.dir.path().join("store.db");
    let env = |command: &mut std::process::Command| {
        command
            .env("OPENAI_BASE_URL", format!("{}/v1", server.url()))
            .env("FLOWRUN_OPENAI_MODEL", "fake-model")
            .env_remove("FLOWRUN_LLM_PROVIDER")
            .env_remove("FLOWRUN_LLM_MODEL");
    };
    let mut first = flowrun(&[
        "run",
        path_str(&flow),
        "--entity",
        path_str(&entity),
        "--store",
        path_str(&store),
        "--execution-id",
        "urgent-1",
    ]);
    env(&mut first);
    let (code, _, stderr) = output(&mut first);
    assert_eq!(code, 3, "{stderr}");
    assert_eq!(chats.load(Ordering::SeqCst), 1);

    let (code, history, _) = output(&mut flowrun(&[
        "runs",
        "show",
        "urgent-1",
        "--store",
        path_str(&store),
    ]));
    assert_eq!(code, 0);
    assert!(
        history.contains("step 1 \"if (line 1)\": succeeded (run 1)\n  took the `then` branch\n"),
        "{history}"
    );

    let mut resume = flowrun(&["resume", "urgent-1", "--store", path_str(&store)]);
    env(&mut resume);
    let (code, stdout, stderr) = output(&mut resume);
    assert_eq!(code, 0, "{stderr}");
    let entity: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(entity["alerted"], true);
    // The stored branch decided; the model was asked once in all.
    assert_eq!(chats.load(Ordering::SeqCst), 1);
    assert_eq!(posts.load(Ordering::SeqCst), 2);
    let stored = flowrun::store::sqlite::SqliteStore::open(&store).unwrap();
    let record = flowrun::store::Store::execution(&stored, "urgent-1").unwrap();
    assert_eq!(record.vars["@branches"], json!({"if (line 1)": "then"}));
}

#[test]
fn llm_condition_about_a_blank_value_asks_no_model() {
    let server = TestServer::scripted(vec![completion("{\"choice\": \"yes\"}", "stop")]);
    let (code, entity, stderr) = run(INJURY, &server, r#"{"adjuster_notes": "  "}"#);
    assert_eq!(code, 3, "{stderr}");
    assert_eq!(entity, json!({"adjuster_notes": "  "}));
    assert!(stderr.contains("flow::run::condition_failed"), "{stderr}");
    assert!(
        stderr.contains("the LLM condition is about a blank value; no model was asked"),
        "{stderr}"
    );
    assert_eq!(server.request_count(), 0);
}
