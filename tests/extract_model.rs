//! Structured extraction against a real model: Gemma 3 270M served on
//! 127.0.0.1 by `tests/llm-server`. It is a base model, so these tests
//! assert the shape and types of what is written, and the provenance and
//! chunking that flowrun itself records, never the meaning of the values.

mod support;

use serde_json::Value;
use support::cli::{flowrun, output, path_str, Workspace};
use support::media::{fixture, media_tools};
use support::model::model_server_url;
use support::server::{Reply, TestServer};

/// Runs `flow` against `entity` and returns the exit code, the entity
/// written and the run report.
fn run(flow: &str, entity: Value) -> (i32, Value, Value, String) {
    media_tools();
    let base = model_server_url();
    let workspace = Workspace::new();
    let flow = workspace.file("extract.flow", flow);
    let entity = workspace.file("entity.json", entity.to_string());
    let report = workspace.dir.path().join("report.json");
    let (code, stdout, stderr) = output(
        flowrun(&[
            "run",
            path_str(&flow),
            "--entity",
            path_str(&entity),
            "--no-store",
            "--report",
            path_str(&report),
        ])
        .env("OPENAI_BASE_URL", &base)
        .env_remove("OPENAI_API_KEY")
        .env("FLOWRUN_OPENAI_MODEL", "gemma-3-270m")
        .env_remove("FLOWRUN_LLM_PROVIDER")
        .env_remove("FLOWRUN_LLM_MODEL"),
    );
    let report = std::fs::read_to_string(&report)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null);
    (
        code,
        serde_json::from_str(&stdout).unwrap_or(Value::Null),
        report,
        stderr,
    )
}

fn is_iso_date(value: &Value) -> bool {
    value.as_str().is_some_and(|text| {
        text.len() == 10
            && text.bytes().enumerate().all(|(index, byte)| {
                if index == 4 || index == 7 {
                    byte == b'-'
                } else {
                    byte.is_ascii_digit()
                }
            })
    })
}

#[test]
fn policy_fields_are_written_with_their_types_and_provenance() {
    let flow = r#"
step "Read policy document" {
  extract entity.policy_document fields {
    policy_number: text "The policy number, as printed"
    effective_date: date
    annual_premium: number "Total annual premium in USD"
    coverage: "basic" | "standard" | "premium"
    named_drivers: [text]
  } -> entity
  max_tokens 200
  seed 11
  temperature 0
}
"#;
    let (code, entity, report, stderr) = run(
        flow,
        serde_json::json!({ "policy_document": fixture("policy_standard_font.pdf") }),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(entity["policy_number"].is_string(), "{entity}");
    assert!(is_iso_date(&entity["effective_date"]), "{entity}");
    assert!(entity["annual_premium"].is_number(), "{entity}");
    assert!(
        ["basic", "standard", "premium"].contains(&entity["coverage"].as_str().unwrap_or("")),
        "{entity}"
    );
    assert!(
        entity["named_drivers"]
            .as_array()
            .is_some_and(|drivers| drivers.iter().all(Value::is_string)),
        "{entity}"
    );
    let step = &report["steps"][0];
    assert_eq!(step["llm_usage"].as_array().map(Vec::len), Some(1), "{report}");
    let provenance = step["provenance"].as_array().expect("a provenance list");
    let fields: Vec<&str> = provenance
        .iter()
        .map(|entry| entry["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "policy_number",
            "effective_date",
            "annual_premium",
            "coverage",
            "named_drivers"
        ]
    );
    for entry in provenance {
        match entry["location"].as_str() {
            Some(location) => {
                assert!(location == "page 1" || location == "page 2", "{entry}");
                assert!(entry["snippet"].is_string(), "{entry}");
            }
            None => assert!(entry["snippet"].is_null(), "{entry}"),
        }
    }
}

#[test]
fn statement_downloaded_over_http_goes_to_one_object_field() {
    let statement = std::fs::read(fixture("statement_subset_font.pdf")).unwrap();
    let server = TestServer::scripted(vec![Reply::new(200)
        .header("Content-Type", "application/pdf")
        .body(statement)]);
    let flow = r#"
step "Read statement" {
  extract entity.statement_url fields {
    revenue: number
    liabilities: number
    applicant?: text
  } -> entity.statement
  max_tokens 120
  seed 5
  temperature 0
}
"#;
    let (code, entity, _, stderr) = run(
        flow,
        serde_json::json!({ "statement_url": format!("{}/files/statement.pdf", server.url()) }),
    );
    assert_eq!(code, 0, "{stderr}");
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "GET");
    assert_eq!(requests[0].target, "/files/statement.pdf");
    let statement = &entity["statement"];
    assert!(statement["revenue"].is_number(), "{entity}");
    assert!(statement["liabilities"].is_number(), "{entity}");
    assert!(
        statement["applicant"].is_string() || statement["applicant"].is_null(),
        "{entity}"
    );
    let members: Vec<&String> = statement.as_object().unwrap().keys().collect();
    assert_eq!(members, ["revenue", "liabilities", "applicant"]);
}

#[test]
fn long_document_is_sent_in_chunks_within_the_budget() {
    // Three paragraphs of 900 characters each, with a budget of 1000: no
    // two fit in one request, so three requests go out.
    let paragraph = |word: &str| vec![word; 150].join(" ");
    let text = format!(
        "{}\n\n{}\n\n{}",
        paragraph("claim"),
        paragraph("notes"),
        paragraph("total")
    );
    assert_eq!(paragraph("claim").len(), 899);
    let uri = format!(
        "data:text/plain,{}",
        text.replace(' ', "%20").replace('\n', "%0A")
    );
    let flow = r#"
step "Read notes" {
  extract entity.notes fields {
    claim_number?: text
    total?: number
  } -> entity.extracted
  input_budget 1000
  max_tokens 60
  seed 2
  temperature 0
}
"#;
    let (code, entity, report, stderr) = run(flow, serde_json::json!({ "notes": uri }));
    assert_eq!(code, 0, "{stderr}");
    let step = &report["steps"][0];
    assert_eq!(step["attempts"].as_array().map(Vec::len), Some(3), "{report}");
    assert_eq!(step["llm_usage"].as_array().map(Vec::len), Some(3), "{report}");
    let extracted = &entity["extracted"];
    assert!(
        extracted["claim_number"].is_string() || extracted["claim_number"].is_null(),
        "{entity}"
    );
    assert!(
        extracted["total"].is_number() || extracted["total"].is_null(),
        "{entity}"
    );
}
