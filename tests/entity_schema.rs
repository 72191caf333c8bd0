//! `flowrun check` with an entity schema: named by the workflow, or given
//! with `--entity-schema`, and silent without one.

mod support;

use serde_json::Value;
use support::cli::{flowrun, make_fifo, output_within, Workspace};

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

/// Runs `check` and returns the diagnostics of `check --format json`, with
/// a limit on the time the check may take.
fn schema_errors(args: &[&str], flow: &std::path::Path) -> Vec<Value> {
    let (code, stdout, stderr) = output_within(flowrun(args).arg(flow), std::time::Duration::from_secs(20));
    assert_eq!(code, 2, "{stderr}");
    let value: Value = serde_json::from_str(&stdout).expect("JSON");
    value.as_array().expect("an array").clone()
}

#[test]
fn schema_fifo_is_reported_without_blocking() {
    let workspace = Workspace::new();
    make_fifo(&workspace.dir.path().join("fifo.json"));
    let flow = workspace.file("claim.flow", format!("entity schema \"fifo.json\"\n{WORKFLOW}"));
    let errors = schema_errors(&["check", "--format", "json"], &flow);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["code"], "flow::check::invalid_entity_schema");
    let folder = flow.parent().unwrap().display().to_string();
    assert_eq!(
        errors[0]["message"],
        format!(
            "invalid entity schema: cannot read `{folder}/fifo.json`: it is a named pipe (FIFO), not a regular file"
        )
    );
    assert_eq!(
        errors[0]["range"]["start"],
        serde_json::json!({"line": 1, "column": 15})
    );
}

#[test]
fn schema_option_fifo_is_reported() {
    let workspace = Workspace::new();
    let fifo = workspace.dir.path().join("fifo.json");
    make_fifo(&fifo);
    let flow = workspace.file("claim.flow", WORKFLOW);
    let errors = schema_errors(
        &[
            "check",
            "--format",
            "json",
            "--entity-schema",
            fifo.to_str().unwrap(),
        ],
        &flow,
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["code"], "flow::check::invalid_entity_schema");
    assert_eq!(
        errors[0]["message"],
        format!(
            "invalid entity schema: cannot read `{}`: it is a named pipe (FIFO), not a regular file",
            fifo.display()
        )
    );
}

#[test]
fn schema_folder_and_oversized_file_are_reported() {
    let workspace = Workspace::new();
    std::fs::create_dir(workspace.dir.path().join("folder.json")).unwrap();
    let big = workspace.file("big.json", b"");
    let file = std::fs::File::options().write(true).open(&big).unwrap();
    // A sparse file: its size is read, not its content.
    file.set_len(16 * 1024 * 1024 + 1).unwrap();
    let folder = workspace.dir.path().display().to_string();
    for (name, reason) in [
        ("folder.json", "it is a folder, not a regular file".to_string()),
        (
            "big.json",
            "it holds 16777217 bytes, more than the limit of 16777216 bytes".to_string(),
        ),
    ] {
        let flow = workspace.file("claim.flow", format!("entity schema \"{name}\"\n{WORKFLOW}"));
        let errors = schema_errors(&["check", "--format", "json"], &flow);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            errors[0]["message"],
            format!("invalid entity schema: cannot read `{folder}/{name}`: {reason}")
        );
    }
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

/// The code, message and start of each diagnostic `flowrun check` reports
/// for `workflow` against the sample entity `sample`.
fn check_against(workflow: &str, sample: &str) -> Vec<(String, String, Value)> {
    let workspace = Workspace::new();
    let flow = workspace.file("claim.flow", workflow);
    let sample = workspace.file("sample.json", sample);
    let output = flowrun(&["check", "--format", "json", "--entity-schema"])
        .arg(&sample)
        .arg(&flow)
        .output()
        .expect("flowrun runs");
    let value: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            (
                entry["code"].as_str().unwrap().to_string(),
                entry["message"].as_str().unwrap().to_string(),
                entry["range"]["start"].clone(),
            )
        })
        .collect()
}

#[test]
fn set_statements_are_checked_against_field_types() {
    let found = check_against(
        "set entity.amount = \"abc\"\n\
         set entity.queue = 5\n\
         set entity.flagged = <<entity.amount>>\n\
         set entity.tags add \"synced\"\n\
         set entity.queue add \"x\"\n\
         set entity.amount = <<entity.amount>> * 2\n\
         set entity.queue = \"standard\" only if blank\n\
         set entity.due = <<entity.opened>> + 30 days\n\
         set entity.new_field = 1\n",
        r#"{"amount": 10.5, "queue": "q", "flagged": false, "tags": ["a"], "opened": "2024-01-01", "due": "2024-02-01"}"#,
    );
    let code = "flow::check::entity_write_type";
    assert_eq!(
        found,
        [
            (
                code.to_string(),
                "this writes a string to `entity.amount`, which is a number in the entity schema".to_string(),
                serde_json::json!({"line": 1, "column": 5}),
            ),
            (
                code.to_string(),
                "this writes a number to `entity.queue`, which is a string in the entity schema".to_string(),
                serde_json::json!({"line": 2, "column": 5}),
            ),
            (
                code.to_string(),
                "this writes a number to `entity.flagged`, which is a boolean in the entity schema"
                    .to_string(),
                serde_json::json!({"line": 3, "column": 5}),
            ),
            (
                code.to_string(),
                "`set ... add` appends to a list, but `entity.queue` is a string in the entity schema"
                    .to_string(),
                serde_json::json!({"line": 5, "column": 5}),
            ),
        ]
    );
}

#[test]
fn conditions_lets_and_code_inputs_read_known_paths() {
    let found = check_against(
        "let score: number = <<entity.bureau_scor>> or 0\n\
         if <<entity.claim_typ>> == \"auto\" and <<entity.risk>> is blank {\n  \
           set entity.queue = \"auto\"\n\
         }\n\
         step \"Compute\" {\n  \
           code python \"\"\"\n    outputs.risk = 1\n  \"\"\"\n  \
           inputs { score: <<entity.amout>> }\n  \
           outputs { risk -> entity.risk }\n\
         }\n\
         step \"Send\" {\n  \
           http GET \"http://127.0.0.1:9/<<entity.queue>>/<<entity.risk>>\"\n\
         }\n",
        r#"{"bureau_score": 700, "claim_type": "auto", "amount": 3}"#,
    );
    let unknown: Vec<(&str, &Value)> = found
        .iter()
        .filter(|(code, ..)| code == "flow::check::unknown_entity_field")
        .map(|(_, message, start)| (message.as_str(), start))
        .collect();
    assert_eq!(
        unknown,
        [
            (
                "`bureau_scor` is not a field of `entity` in the entity schema",
                &serde_json::json!({"line": 1, "column": 30}),
            ),
            (
                "`claim_typ` is not a field of `entity` in the entity schema",
                &serde_json::json!({"line": 2, "column": 13}),
            ),
            (
                "`amout` is not a field of `entity` in the entity schema",
                &serde_json::json!({"line": 9, "column": 28}),
            ),
        ]
    );
}

#[test]
fn nullable_types_and_unions_accept_their_values() {
    let found = check_against(
        "set entity.note = \"x\"\n\
         clear entity.note\n\
         set entity.either = 5\n\
         set entity.either = \"x\"\n\
         set entity.either = true\n\
         set entity.note = 5\n",
        r#"{"type": "object", "properties": {"note": {"type": ["string", "null"]}, "either": {"type": ["string", "number"]}}}"#,
    );
    assert_eq!(
        found,
        [(
            "flow::check::entity_write_type".to_string(),
            "this writes a number to `entity.note`, which is a string in the entity schema".to_string(),
            serde_json::json!({"line": 6, "column": 5}),
        )]
    );
}
