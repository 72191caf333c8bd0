//! File extraction without a real model: the text read from each document
//! format, asserted exactly, the failures that stop an `extract` action
//! before it calls a model, and how fixed answers of a scripted model
//! server are read.

mod support;

use flowrun::document::{self, DocumentError, Format, Location, Part};
use support::cli::{flowrun, output, path_str, Workspace};
use support::media::{fixture, media_tools};
use support::server::{Reply, TestServer};

fn read(name: &str) -> Result<document::Document, DocumentError> {
    media_tools();
    document::read(&std::fs::read(fixture(name)).unwrap())
}

fn part(location: Location, text: &str) -> Part {
    Part {
        location,
        text: text.to_string(),
    }
}

fn policy_pages() -> Vec<Part> {
    vec![
        part(
            Location::Page(1),
            "Harbor Mutual Auto Policy\nPolicy number: HM-2024-00417\nEffective date: March 1, 2026\nCoverage level: Premium",
        ),
        part(
            Location::Page(2),
            "Named drivers: Ada Lovelace, Grace Hopper\nTotal annual premium: $1,234.50",
        ),
    ]
}

const STATEMENT: &str = "Statement of Income\nRevenue: $84,200.00\nWages: $61,000.00\nLiabilities: $12,750.00\nApplicant: Jean Dupré";

#[test]
fn pdf_with_a_standard_font_is_read_page_by_page() {
    let document = read("policy_standard_font.pdf").unwrap();
    assert_eq!(document.format, Format::Pdf);
    assert_eq!(document.parts, policy_pages());
}

#[test]
fn pdf_with_an_embedded_subset_font_keeps_words_whole() {
    let document = read("statement_subset_font.pdf").unwrap();
    assert_eq!(document.parts, vec![part(Location::Page(1), STATEMENT)]);
}

#[test]
fn pdf_with_kerning_inside_words_keeps_words_whole() {
    let document = read("statement_kerned.pdf").unwrap();
    assert_eq!(
        document.text(),
        "Statement of Income\nRevenue: $84,200.00\nWages: $61,000.00\nTotal liabilities: $12,750.00\nApplicant: Jean Dupré"
    );
}

#[test]
fn encrypted_pdf_with_an_empty_user_password_opens() {
    let document = read("encrypted_empty_password.pdf").unwrap();
    assert_eq!(document.parts, policy_pages());
}

#[test]
fn encrypted_pdf_with_a_password_is_refused() {
    assert_eq!(read("encrypted_with_password.pdf"), Err(DocumentError::Encrypted));
}

#[test]
fn image_only_pdf_has_no_text() {
    assert_eq!(read("scanned.pdf"), Err(DocumentError::ScannedPdf));
}

#[test]
fn docx_paragraphs_and_table_keep_document_order() {
    let document = read("application.docx").unwrap();
    assert_eq!(document.format, Format::Docx);
    assert_eq!(
        document.parts,
        vec![
            part(Location::Paragraph(1), "Loan application of Jean Dupré"),
            part(
                Location::Paragraph(2),
                "Item\tAmount\nSalary\t$61,000.00\nCar loan\t$12,750.00"
            ),
            part(Location::Paragraph(3), "Signed on 2026-02-14"),
        ]
    );
}

#[test]
fn html_gives_its_visible_text() {
    let html = b"<!doctype html><html><head><title>x</title><script>alert(1)</script></head>\
<body><h1>Claim</h1><p>Amount: <b>$950.00</b></p><table><tr><td>Vehicle</td><td>Sedan</td></tr></table></body></html>";
    let document = document::read(html).unwrap();
    assert_eq!(document.format, Format::Html);
    assert_eq!(document.text(), "Claim\n\nAmount: $950.00\n\nVehicle\tSedan");
}

#[test]
fn csv_rows_are_parts() {
    let document = document::read(b"item,amount\nSalary,\"$61,000.00\"\n").unwrap();
    assert_eq!(document.format, Format::Csv);
    assert_eq!(
        document.parts,
        vec![
            part(Location::Row(1), "item\tamount"),
            part(Location::Row(2), "Salary\t$61,000.00"),
        ]
    );
}

const FLOW: &str = r#"
step "Read policy document" {
  extract entity.policy_document fields {
    policy_number: text "The policy number, as printed"
    effective_date: date
    annual_premium: number "Total annual premium in USD"
    coverage: "basic" | "standard" | "premium"
    named_drivers: [text]
  } -> entity
  retries 0
}
"#;

/// Runs `flow` against an entity whose `policy_document` is `document`,
/// with a provider on a port where nothing listens: these runs fail before
/// they would call it.
fn run_failing(flow: &str, document: &str) -> (i32, String) {
    media_tools();
    let workspace = Workspace::new();
    let flow = workspace.file("extract.flow", flow);
    let entity = workspace.file(
        "entity.json",
        serde_json::json!({ "policy_document": document }).to_string(),
    );
    let (code, _, stderr) = output(
        flowrun(&[
            "run",
            path_str(&flow),
            "--entity",
            path_str(&entity),
            "--no-store",
        ])
        .env("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
        .env("FLOWRUN_OPENAI_MODEL", "unused")
        .env_remove("OPENAI_API_KEY")
        .env_remove("FLOWRUN_LLM_PROVIDER"),
    );
    (code, stderr)
}

#[test]
fn extract_example_checks_clean() {
    let workspace = Workspace::new();
    let flow = workspace.file("extract.flow", FLOW);
    let (code, stdout, stderr) = output(&mut flowrun(&["check", path_str(&flow)]));
    assert_eq!(code, 0, "{stdout}{stderr}");
}

#[test]
fn password_protected_pdf_fails_the_step_with_a_clear_error() {
    let (code, stderr) = run_failing(FLOW, &fixture("encrypted_with_password.pdf"));
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("flow::run::extract_failed"), "{stderr}");
    assert!(
        stderr.contains(
            "the PDF is encrypted with a password; flowrun opens only PDFs whose user password is empty"
        ),
        "{stderr}"
    );
}

#[test]
fn scanned_pdf_and_images_need_ocr_or_a_vision_model() {
    let (code, stderr) = run_failing(FLOW, &fixture("scanned.pdf"));
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("the PDF has no text layer (it holds only images); it needs OCR or a vision model"),
        "{stderr}"
    );
    let png = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg==";
    let (code, stderr) = run_failing(FLOW, png);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains(
            "the document is a PNG image, which has no extractable text; it needs OCR or a vision model"
        ),
        "{stderr}"
    );
}

#[test]
fn missing_file_is_a_source_error() {
    let (code, stderr) = run_failing(FLOW, "/nonexistent/policy.pdf");
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("flow::run::source_unavailable"), "{stderr}");
    assert!(
        stderr.contains("`/nonexistent/policy.pdf` cannot be read: no such file"),
        "{stderr}"
    );
}

#[test]
fn file_larger_than_the_limit_is_refused_before_reading() {
    let flow = FLOW.replace("  retries 0\n", "  retries 0\n  max_file_size 10KB\n");
    let path = fixture("statement_subset_font.pdf");
    let size = std::fs::metadata(&path).unwrap().len();
    let (code, stderr) = run_failing(&flow, &format!("file://{path}"));
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "`file://{path}` is {size} bytes, more than the limit of 10240 bytes"
        )),
        "{stderr}"
    );
}

#[test]
fn unsupported_binary_file_is_named() {
    let (code, stderr) = run_failing(FLOW, "data:application/octet-stream;base64,AAECA/7/");
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("the file is not a supported document (binary data that is not UTF-8 text)"),
        "{stderr}"
    );
}

#[test]
fn other_url_schemes_are_refused() {
    let (code, stderr) = run_failing(FLOW, "ftp://127.0.0.1/policy.pdf");
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("uses the scheme `ftp`, which flowrun cannot read"),
        "{stderr}"
    );
}

const PNG: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg==";

/// Runs an extraction of `document` with a provider marked `vision true`
/// whose server answers with a fixed policy number; returns the exit code,
/// the entity, the body of the model request and standard error.
fn run_with_vision(document: &str) -> (i32, serde_json::Value, serde_json::Value, String) {
    media_tools();
    let answer = serde_json::json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "vision-model",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "{\"policy_number\": \"HM-2024-00417\"}"},
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    });
    let server = TestServer::scripted(vec![Reply::json(200, answer)]);
    let flow = format!(
        "provider eyes {{\n  kind openai\n  base_url \"{}/v1\"\n  model \"vision-model\"\n  vision true\n}}\n\n\
         step \"Read scan\" {{\n  extract entity.policy_document fields {{ policy_number: text }} -> entity\n}}\n",
        server.url()
    );
    let workspace = Workspace::new();
    let flow = workspace.file("vision.flow", flow);
    let entity = workspace.file(
        "entity.json",
        serde_json::json!({ "policy_document": document }).to_string(),
    );
    let (code, stdout, stderr) = output(
        flowrun(&[
            "run",
            path_str(&flow),
            "--entity",
            path_str(&entity),
            "--no-store",
        ])
        .env_remove("OPENAI_API_KEY")
        .env_remove("FLOWRUN_LLM_PROVIDER"),
    );
    let requests = server.requests();
    let body = requests
        .first()
        .map(|request| serde_json::from_slice(&request.body).unwrap())
        .unwrap_or_default();
    (
        code,
        serde_json::from_str(&stdout).unwrap_or_default(),
        body,
        stderr,
    )
}

#[test]
fn image_goes_to_a_vision_model() {
    let (code, entity, body, stderr) = run_with_vision(&format!("data:image/png;base64,{PNG}"));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(entity["policy_number"], "HM-2024-00417");
    let content = &body["messages"][1]["content"];
    assert_eq!(content[0]["type"], "text");
    assert_eq!(content[1]["type"], "image_url");
    assert_eq!(
        content[1]["image_url"]["url"],
        format!("data:image/png;base64,{PNG}")
    );
    assert_eq!(content.as_array().map(Vec::len), Some(2));
}

#[test]
fn scanned_pdf_pages_go_to_a_vision_model() {
    let (code, entity, body, stderr) = run_with_vision(&fixture("scanned.pdf"));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(entity["policy_number"], "HM-2024-00417");
    let content = body["messages"][1]["content"].as_array().unwrap();
    assert_eq!(content.len(), 2, "one text part and one page");
    let url = content[1]["image_url"]["url"].as_str().unwrap();
    assert!(url.starts_with("data:image/png;base64,iVBORw0KGgo"), "{url}");
}

/// Runs an extraction of `fields` from a short text document, with a
/// provider whose server answers every request with `content`; returns
/// the exit code, the entity written and standard error.
fn run_with_answer(fields: &str, content: &str) -> (i32, serde_json::Value, String) {
    let answer = serde_json::json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "scripted-model",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    });
    let server = TestServer::scripted(vec![Reply::json(200, answer)]);
    let flow = format!(
        "provider scripted {{\n  kind openai\n  base_url \"{}/v1\"\n  model \"scripted-model\"\n}}\n\n\
         step \"Read policy\" {{\n  extract entity.policy_document fields {{\n{fields}\n  }} -> entity\n  retries 0\n}}\n",
        server.url()
    );
    let workspace = Workspace::new();
    let flow = workspace.file("answer.flow", flow);
    let entity = workspace.file(
        "entity.json",
        serde_json::json!({ "policy_document": "data:,Policy%20HM-2024-00417" }).to_string(),
    );
    let (code, stdout, stderr) = output(
        flowrun(&[
            "run",
            path_str(&flow),
            "--entity",
            path_str(&entity),
            "--no-store",
        ])
        .env_remove("OPENAI_API_KEY")
        .env_remove("FLOWRUN_LLM_PROVIDER"),
    );
    assert_eq!(server.requests().len(), 1, "{stderr}");
    (code, serde_json::from_str(&stdout).unwrap_or_default(), stderr)
}

#[test]
fn required_text_placeholder_is_not_found() {
    for placeholder in ["N/A", "null", "none", "unknown", "-", "n/a", "None"] {
        let content = serde_json::json!({ "policy_number": placeholder }).to_string();
        let (code, entity, stderr) = run_with_answer("    policy_number: text", &content);
        assert_eq!(code, 3, "{placeholder}: {entity} {stderr}");
        assert!(stderr.contains("flow::run::extract_failed"), "{stderr}");
        assert!(
            stderr.contains("`policy_number` was not found in the document"),
            "{placeholder}: {stderr}"
        );
    }
}

#[test]
fn optional_text_placeholder_is_null() {
    let (code, entity, stderr) = run_with_answer(
        "    policy_number: text\n    middle_name?: text",
        r#"{"policy_number": "HM-2024-00417", "middle_name": "N/A"}"#,
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        entity,
        serde_json::json!({
            "policy_document": "data:,Policy%20HM-2024-00417",
            "policy_number": "HM-2024-00417",
            "middle_name": null
        })
    );
}

#[test]
fn enum_member_none_is_kept() {
    let (code, entity, stderr) =
        run_with_answer(r#"    coverage: "none" | "basic""#, r#"{"coverage": "None"}"#);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(entity["coverage"], "none");
}

#[test]
fn list_as_one_string_is_split() {
    let (code, entity, stderr) = run_with_answer(
        "    named_drivers: [text]",
        r#"{"named_drivers": "Ada Lovelace, Grace Hopper"}"#,
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        entity["named_drivers"],
        serde_json::json!(["Ada Lovelace", "Grace Hopper"])
    );
}

#[test]
fn invalid_json_answer_is_reported() {
    let (code, entity, stderr) = run_with_answer(
        "    policy_number: text\n    annual_premium: number\n    named_drivers: [text]",
        r#"{"policy_number": "HM-2024-00417", "annual_premium": NaN, "named_drivers": []}"#,
    );
    assert_eq!(code, 3, "{entity}");
    assert!(stderr.contains("flow::run::llm_invalid_output"), "{stderr}");
    assert!(
        stderr.contains(
            "the answer of model `scripted-model` for part 1 of the document is not valid JSON: expected value at line 1 column 54"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("was not found"), "{stderr}");
}
