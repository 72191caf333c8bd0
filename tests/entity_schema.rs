//! `flowrun check` with an entity schema: named by the workflow, or given
//! with `--entity-schema`, and silent without one.

mod support;

use serde_json::Value;
use support::cli::{flowrun, Workspace};

const WORKFLOW: &str =
    "step \"Send\" {\n  http GET \"http://127.0.0.1:9/claims/<<entity.claim_numbr>>\"\n}\n";

fn codes(stdout: &[u8]) -> Vec<String> {
    let value: Value = serde_json::from_slice(stdout).expect("JSON");
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(|entry| entry["code"].as_str().expect("a code").to_string())
        .collect()
}

#[test]
fn entity_schema_option_reports_unknown_paths() {
    let workspace = Workspace::new();
    let flow = workspace.file("claim.flow", WORKFLOW);
    let sample = workspace.file("sample.json", r#"{"claim_number": "C-1"}"#);
    let output = flowrun(&["check", "--format", "json", "--entity-schema"])
        .arg(&sample)
        .arg(&flow)
        .output()
        .expect("flowrun runs");
    assert_eq!(output.status.code(), Some(0), "a warning keeps exit code 0");
    let value: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(value[0]["code"], "flow::check::unknown_entity_field");
    assert_eq!(value[0]["severity"], "warning");
    assert_eq!(value[0]["help"], "did you mean `claim_number`?");
    assert_eq!(value[0]["range"]["start"]["column"], 48);
}

#[test]
fn without_a_schema_the_checks_are_silent() {
    let workspace = Workspace::new();
    let flow = workspace.file("claim.flow", WORKFLOW);
    let output = flowrun(&["check", "--format", "json"])
        .arg(&flow)
        .output()
        .expect("flowrun runs");
    assert_eq!(output.status.code(), Some(0));
    assert!(codes(&output.stdout).is_empty());
}

#[test]
fn an_unreadable_schema_is_an_error_at_its_line() {
    let workspace = Workspace::new();
    let flow = workspace.file(
        "claim.flow",
        format!("entity schema \"missing.json\"\n{WORKFLOW}"),
    );
    let output = flowrun(&["check", "--format", "json"])
        .arg(&flow)
        .output()
        .expect("flowrun runs");
    assert_eq!(output.status.code(), Some(2));
    let value: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(value[0]["code"], "flow::check::invalid_entity_schema");
    assert_eq!(
        value[0]["range"]["start"],
        serde_json::json!({"line": 1, "column": 15})
    );
    assert!(
        value[0]["message"].as_str().unwrap().contains("missing.json"),
        "{}",
        value[0]
    );
}

#[test]
fn fields_written_by_earlier_lines_are_known() {
    let workspace = Workspace::new();
    let flow = workspace.file(
        "claim.flow",
        "step \"Read\" {\n  extract entity.doc fields {\n    policy_number: text\n  } -> entity\n}\nstep \"Send\" {\n  http GET \"http://127.0.0.1:9/p/<<entity.policy_number>>/<<entity.holder>>\"\n  save response.body -> entity.reply\n}\nstep \"Again\" {\n  http GET \"http://127.0.0.1:9/r/<<entity.reply>>/<<entity.polcy>>\"\n}\n",
    );
    let sample = workspace.file("sample.json", r#"{"doc": "/tmp/policy.pdf", "policy": "P-1"}"#);
    let output = flowrun(&["check", "--format", "json", "--entity-schema"])
        .arg(&sample)
        .arg(&flow)
        .output()
        .expect("flowrun runs");
    let value: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let unknown: Vec<&str> = value
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["code"] == "flow::check::unknown_entity_field")
        .map(|entry| entry["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        unknown,
        [
            "`holder` is not a field of `entity` in the entity schema",
            "`polcy` is not a field of `entity` in the entity schema"
        ]
    );
}
