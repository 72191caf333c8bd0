//! Checks every workflow under `samples/` and runs each one with the `flowrun` binary against a
//! test server that replies the way `samples/server.py` does, model calls included.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use flowrun::check::plain_text;
use flowrun::cli::check_source;
use flowrun::cli::output::{render_human, Source};
use flowrun::program::{Action, VariableValue};
use serde_json::{json, Value};
use support::server::{Recorded, Reply, TestServer};

/// The address that `samples/server.py` listens on by default, which the samples' `let` lines
/// point at so that they run as they are.
const SAMPLE_SERVER: &str = "http://127.0.0.1:8080";

const CLAIMS_TOKEN: &str = "claims-token-7Qx2vR";
const EXECUTION_ID: &str = "fixed-id";

/// A sample and the variables that contain its base URLs, each with the path prefix it adds to the
/// server's address. `llm_api` is the base URL of the `local` model provider of
/// `samples/flowrun.toml`.
struct Sample {
    name: &'static str,
    bases: &'static [(&'static str, &'static str)],
}

const SAMPLES: [Sample; 3] = [
    Sample {
        name: "claim_intake",
        bases: &[("claims_api", "/claims-api"), ("llm_api", "/v1")],
    },
    Sample {
        name: "loan_application",
        bases: &[("los_api", "/los"), ("bureau_api", "/bureau"), ("llm_api", "/v1")],
    },
    Sample {
        name: "prior_auth",
        bases: &[("auth_api", "/auth-api"), ("llm_api", "/v1")],
    },
];

fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples")
}

fn sample(name: &str) -> &'static Sample {
    SAMPLES
        .iter()
        .find(|sample| sample.name == name)
        .unwrap_or_else(|| panic!("no sample named {name} in SAMPLES"))
}

/// Returns every `samples/*.flow` file, sorted.
fn sample_flows() -> Vec<PathBuf> {
    let mut flows: Vec<PathBuf> = std::fs::read_dir(samples_dir())
        .expect("samples/ is readable")
        .map(|entry| entry.expect("samples/ entry is readable").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "flow"))
        .collect();
    flows.sort();
    flows
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{} is not JSON: {error}", path.display()))
}

fn entity_file(name: &str) -> PathBuf {
    samples_dir().join(format!("{name}.entity.json"))
}

#[test]
fn every_sample_checks_without_diagnostics() {
    for path in sample_flows() {
        let text = std::fs::read_to_string(&path).expect("sample is readable");
        let checked = check_source(&text, &path);
        let name = path.display().to_string();
        let source = Source {
            name: &name,
            text: &text,
        };
        assert!(
            checked.diagnostics.is_empty(),
            "{name} has diagnostics:\n{}",
            render_human(&checked.diagnostics, Some(&source), 100, false)
        );
    }
}

#[test]
fn samples_have_entities_and_run_tests() {
    let found: BTreeSet<String> = sample_flows()
        .iter()
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    let listed: BTreeSet<String> = SAMPLES.iter().map(|sample| sample.name.to_string()).collect();
    assert_eq!(found, listed, "samples/*.flow and SAMPLES differ");
    for name in &found {
        assert!(
            read_json(&entity_file(name)).is_object(),
            "{name}.entity.json is not a JSON object"
        );
    }
}

/// The README runs each sample with no `--var` against `python3 samples/server.py`, so each
/// base URL must default to that server and the prefix its routes use.
#[test]
fn base_urls_default_to_the_sample_server() {
    for sample in &SAMPLES {
        let path = samples_dir().join(format!("{}.flow", sample.name));
        let text = std::fs::read_to_string(&path).expect("sample is readable");
        let program = check_source(&text, &path).program;
        let defaults: Vec<(String, Option<String>)> = program
            .variables
            .iter()
            .map(|variable| {
                let default = match &variable.value {
                    Some(VariableValue::Template(template)) => plain_text(template),
                    Some(VariableValue::Literal(_)) | None => None,
                };
                (variable.name.clone(), default)
            })
            .collect();
        let expected: Vec<(String, Option<String>)> = sample
            .bases
            .iter()
            .map(|(name, prefix)| (name.to_string(), Some(format!("{SAMPLE_SERVER}{prefix}"))))
            .collect();
        assert_eq!(defaults, expected, "variables of {}", sample.name);
    }
}

/// The samples' `llm` steps name the `local` provider of `samples/flowrun.toml`, whose base URL
/// is the `llm_api` variable, so that a test can point it at its server with `--var`.
#[test]
fn flowrun_toml_configures_the_local_provider() {
    let path = samples_dir().join("flowrun.toml");
    let text = std::fs::read_to_string(&path).expect("samples/flowrun.toml is readable");
    let settings: toml::Table = toml::from_str(&text).expect("samples/flowrun.toml is TOML");
    assert_eq!(
        settings["providers"]["local"],
        toml::Value::Table(toml::toml! {
            kind = "openai"
            base_url = "<<vars.llm_api>>"
            model = "sample-model"
        }),
        "{text}"
    );
    for sample in &SAMPLES {
        let path = samples_dir().join(format!("{}.flow", sample.name));
        let text = std::fs::read_to_string(&path).expect("sample is readable");
        let program = check_source(&text, &path).program;
        let providers: Vec<(&str, Option<&str>)> = program
            .providers
            .iter()
            .map(|provider| (provider.name.as_str(), provider.model.as_deref()))
            .collect();
        assert_eq!(providers, [("local", Some("sample-model"))], "{}", sample.name);
        // Naming the provider keeps FLOWRUN_LLM_PROVIDER from sending the call elsewhere.
        let llm_providers: Vec<Option<&str>> = program
            .steps
            .iter()
            .flat_map(|step| &step.actions)
            .flat_map(Action::llm_calls)
            .map(|call| call.provider.as_deref())
            .collect();
        assert_eq!(llm_providers, [Some("local")], "llm steps of {}", sample.name);
    }
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts that the run succeeded and returns the entity it printed.
    fn entity(&self) -> Value {
        assert_eq!(
            self.code,
            Some(0),
            "flowrun failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|error| panic!("stdout is not JSON ({error}):\n{}", self.stdout))
    }
}

/// Runs a sample with its entity file, its base URLs pointed at `server`, a fixed execution id
/// and the claims token in the environment.
fn run_sample(name: &str, server: &TestServer) -> Run {
    support::media::media_tools();
    let sample = sample(name);
    let mut command = Command::new(env!("CARGO_BIN_EXE_flowrun"));
    command
        .arg("run")
        .arg(samples_dir().join(format!("{name}.flow")))
        .arg("--entity")
        .arg(entity_file(name))
        .arg("--execution-id")
        .arg(EXECUTION_ID)
        // The samples folder is part of the repository; the store would
        // land in it, and a second run would find the fixed id taken.
        .arg("--no-store")
        // The entities name their files relative to the repository's root.
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    for (variable, prefix) in sample.bases {
        command
            .arg("--var")
            .arg(format!("{variable}={}{prefix}", server.url()));
    }
    // Secrets and proxies from the developer's environment would change what is sent.
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if key_text.starts_with("FLOWRUN_SECRET_") || key_text.to_ascii_lowercase().ends_with("_proxy") {
            command.env_remove(&key);
        }
    }
    command
        .env("FLOWRUN_SECRET_CLAIMS_TOKEN", CLAIMS_TOKEN)
        .env("NO_COLOR", "1");
    let output = command.output().expect("flowrun starts");
    let run = Run {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
    };
    assert!(
        !run.stderr.contains(CLAIMS_TOKEN),
        "the claims token leaked to stderr:\n{}",
        run.stderr
    );
    run
}

fn not_found(request: &Recorded) -> Reply {
    Reply::json(
        404,
        json!({"error": format!("no route for {} {}", request.method, request.target)}),
    )
}

/// The path of the chat completions endpoint under the `local` provider's base URL.
const CHAT_COMPLETIONS: &str = "/v1/chat/completions";

/// Builds an OpenAI chat completion with the message `content`, as `samples/server.py` does. It
/// echoes the requested model, has one choice and counts one token a word.
fn chat_completion(request: &Recorded, content: &str) -> Reply {
    // The handler runs on the server's thread, so it does not panic on a bad request. The test
    // checks the request body after the run.
    let call: Value = serde_json::from_str(request.body_text()).unwrap_or_default();
    let no_messages = Vec::new();
    let prompt_tokens: usize = call["messages"]
        .as_array()
        .unwrap_or(&no_messages)
        .iter()
        .map(|message| {
            message["content"]
                .as_str()
                .unwrap_or_default()
                .split_whitespace()
                .count()
        })
        .sum();
    let completion_tokens = content.split_whitespace().count();
    Reply::json(
        200,
        json!({
            "id": "chatcmpl-5b1d0c7e9a2f4e63b8d41f07",
            "object": "chat.completion",
            "created": 1_796_400_000,
            "model": call["model"],
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": null},
                "finish_reason": "stop"
            }],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens
            }
        }),
    )
}

/// True for the structured-output request of an `extract` action.
fn is_extraction(request: &Recorded) -> bool {
    let body: Value = serde_json::from_str(request.body_text()).unwrap_or_default();
    body["response_format"]["json_schema"]["name"] == "extraction"
}

/// Asserts that `request` is the extraction request of a sample and that
/// the document's text reached the model; returns the field names of its
/// schema.
fn extraction_fields(request: &Recorded, line: &str) -> Vec<String> {
    let body = chat_body(request);
    let prompt = body["messages"][1]["content"].as_str().unwrap_or_default();
    assert!(prompt.contains(line), "{prompt}");
    body["response_format"]["json_schema"]["schema"]["properties"]
        .as_object()
        .expect("the schema has properties")
        .keys()
        .cloned()
        .collect()
}

/// Asserts that `request` is a model call without credentials and returns its body.
fn chat_body(request: &Recorded) -> Value {
    assert_eq!(
        (request.method.as_str(), request.target.as_str()),
        ("POST", CHAT_COMPLETIONS)
    );
    // The `local` provider has no API key, so no Authorization header is sent.
    assert_eq!(request.header("Authorization"), None, "{request:?}");
    json_body(request)
}

fn methods_and_targets(requests: &[Recorded]) -> Vec<(&str, &str)> {
    requests
        .iter()
        .map(|request| (request.method.as_str(), request.target.as_str()))
        .collect()
}

fn json_body(request: &Recorded) -> Value {
    assert_eq!(
        request.header("Content-Type"),
        Some("application/json"),
        "{request:?}"
    );
    serde_json::from_str(request.body_text())
        .unwrap_or_else(|error| panic!("body is not JSON ({error}): {request:?}"))
}

#[test]
fn claim_intake_classifies_and_files_the_claim() {
    let server = TestServer::start(
        |request| match (request.method.as_str(), request.target.as_str()) {
            ("POST", CHAT_COMPLETIONS) if is_extraction(request) => chat_completion(
                request,
                &json!({
                    "policy_number": "POL-HO-7731902",
                    "effective_date": "January 15, 2026",
                    "annual_premium": "$1,842.00",
                    "deductible": "$1,000.00",
                    "coverage_level": "Standard"
                })
                .to_string(),
            ),
            ("POST", CHAT_COMPLETIONS) => chat_completion(request, r#"{"choice": "property"}"#),
            ("POST", "/claims-api/claims/CLM-2026-004817") => Reply::json(
                201,
                json!({
                    "claim_id": "CS-400101",
                    "claim_number": "CLM-2026-004817",
                    "status": "received"
                }),
            ),
            ("PUT", "/claims-api/policies/POL-HO-7731902/status") => Reply::status(204),
            _ => not_found(request),
        },
    );

    let run = run_sample("claim_intake", &server);
    let entity = run.entity();

    let requests = server.requests();
    assert_eq!(
        methods_and_targets(&requests),
        [
            ("POST", CHAT_COMPLETIONS),
            ("POST", "/claims-api/claims/CLM-2026-004817"),
            ("PUT", "/claims-api/policies/POL-HO-7731902/status"),
            ("POST", CHAT_COMPLETIONS),
        ]
    );

    // The notes reach the model as written: their quotes and ampersand are escaped only by the
    // JSON encoding of the request.
    assert_eq!(
        chat_body(&requests[0]),
        json!({
            "model": "sample-model",
            "messages": [
                {"role": "system", "content": "You are a claims triage assistant."},
                {
                    "role": "user",
                    "content": "Classify the insurance claim described by these notes.\n\
                                Notes: Burst supply line under the kitchen sink; water reached the \
                                basement. Insured says \"no earlier leaks\". Plumber's invoice & \
                                photos attached."
                }
            ],
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "choice",
                    "schema": {
                        "type": "object",
                        "properties": {
                            "choice": {"type": "string", "enum": ["auto", "property", "liability", "other"]}
                        },
                        "required": ["choice"],
                        "additionalProperties": false
                    },
                    "strict": true
                }
            }
        })
    );

    let bearer = format!("Bearer {CLAIMS_TOKEN}");
    for request in &requests[1..3] {
        assert_eq!(
            request.header("Authorization"),
            Some(bearer.as_str()),
            "{request:?}"
        );
        assert_eq!(request.header("X-Request-Id"), Some(EXECUTION_ID), "{request:?}");
    }

    let claim = json_body(&requests[1]);
    assert_eq!(
        claim,
        json!({
            "claimNumber": "CLM-2026-004817",
            "policyId": "POL-HO-7731902",
            "insuredName": "Dana O'Brien",
            "lossType": "water_damage",
            "lossDate": "2026-11-28",
            "reportedDate": "2026-12-01",
            "amount": 18450.75,
            "currency": "USD",
            "notes": "Burst supply line under the kitchen sink; water reached the basement. \
                      Insured says \"no earlier leaks\". Plumber's invoice & photos attached.",
            "claimType": "property",
            "queue": "property-senior",
            "executionId": EXECUTION_ID
        })
    );
    // The amount keeps the digits of the entity rather than passing through a float.
    assert!(
        requests[1].body_text().contains("\"amount\": 18450.75,"),
        "{:?}",
        requests[1]
    );

    assert_eq!(requests[2].header("Content-Type"), Some("application/xml"));
    assert_eq!(
        requests[2].body_text(),
        "<policyStatus>\n  <policyId>POL-HO-7731902</policyId>\n  <status>CLAIM_OPEN</status>\n  \
         <claimId>CS-400101</claimId>\n  <lossDate>2026-11-28</lossDate>\n</policyStatus>"
    );

    assert_eq!(
        extraction_fields(&requests[3], "Policy number: POL-HO-7731902"),
        [
            "policy_number",
            "effective_date",
            "annual_premium",
            "deductible",
            "coverage_level"
        ]
    );

    let mut expected = read_json(&entity_file("claim_intake"));
    expected["claim_type"] = json!("property");
    expected["claims_system_id"] = json!("CS-400101");
    // The values as printed are coerced to their declared types.
    expected["policy"]["terms"] = json!({
        "policy_number": "POL-HO-7731902",
        "effective_date": "2026-01-15",
        "annual_premium": 1842,
        "deductible": 1000,
        "coverage_level": "standard"
    });
    expected["queue"] = json!("property-senior");
    assert_eq!(entity, expected);
}

#[test]
fn claim_intake_routes_by_the_claim_type() {
    for (claim_type, queue) in [("auto", "auto-unit"), ("liability", "standard")] {
        let answer = json!({ "choice": claim_type }).to_string();
        let server =
            TestServer::start(
                move |request| match (request.method.as_str(), request.target.as_str()) {
                    ("POST", CHAT_COMPLETIONS) if is_extraction(request) => chat_completion(
                        request,
                        &json!({
                            "policy_number": "POL-HO-7731902",
                            "effective_date": "January 15, 2026",
                            "annual_premium": "$1,842.00",
                            "deductible": "$1,000.00",
                            "coverage_level": "Standard"
                        })
                        .to_string(),
                    ),
                    ("POST", CHAT_COMPLETIONS) => chat_completion(request, &answer),
                    ("POST", "/claims-api/claims/CLM-2026-004817") => {
                        Reply::json(201, json!({"claim_id": "CS-400102"}))
                    }
                    ("PUT", "/claims-api/policies/POL-HO-7731902/status") => Reply::status(204),
                    _ => not_found(request),
                },
            );
        let entity = run_sample("claim_intake", &server).entity();
        assert_eq!(entity["queue"], queue, "{claim_type}");
        let claim = json_body(&server.requests()[1]);
        assert_eq!(claim["queue"], queue, "{claim_type}");
        assert_eq!(claim["claimType"], claim_type);
    }
}

/// The transcript of `samples/files/patient_call.wav`, as `samples/server.py` sends it.
const PATIENT_CALL: &str = "The patient called to confirm the appointment for next Tuesday.";

/// The summary that `samples/server.py` sends for the prior authorization sample's clinical notes,
/// which is their first sentence.
const PRIOR_AUTH_SUMMARY: &str =
    "Six weeks of right knee pain after a twisting injury on a hike, with locking and swelling on stairs.";

#[test]
fn prior_auth_saves_decision_and_notes_summary() {
    let server = TestServer::start(|request| {
        let path = request.target.split('?').next().unwrap_or_default();
        match (request.method.as_str(), path) {
            ("POST", CHAT_COMPLETIONS) => chat_completion(request, PRIOR_AUTH_SUMMARY),
            ("POST", "/v1/audio/transcriptions") => Reply::json(
                200,
                json!({
                    "task": "transcribe",
                    "language": "english",
                    "duration": 4.971,
                    "text": PATIENT_CALL,
                    "segments": [{"id": 0, "start": 0.0, "end": 4.971, "text": PATIENT_CALL}]
                }),
            ),
            ("GET", "/auth-api/auth") => Reply::json(
                200,
                json!({
                    "status": "approved",
                    "reference": "PA-88201",
                    "member": "XGH884213907",
                    "code": "73721",
                    "valid_through": "2027-03-15"
                }),
            )
            .header("X-Trace-Id", "trace-5f2c9a"),
            _ => not_found(request),
        }
    });

    let run = run_sample("prior_auth", &server);
    let entity = run.entity();

    let requests = server.requests();
    assert_eq!(
        methods_and_targets(&requests),
        [
            (
                "GET",
                "/auth-api/auth?member=XGH884213907&code=73721&npi=1487652093&date=2026-12-15"
            ),
            ("POST", CHAT_COMPLETIONS),
            ("POST", "/v1/audio/transcriptions"),
        ]
    );
    assert_eq!(requests[0].header("Accept"), Some("application/json"));
    assert_eq!(requests[0].header("X-Payer-Id"), Some("60054"));
    assert_eq!(requests[0].header("Authorization"), None);
    assert!(requests[0].body.is_empty(), "{:?}", requests[0]);

    let mut expected = read_json(&entity_file("prior_auth"));
    let notes = expected["procedure"]["clinical_notes"]
        .as_str()
        .expect("the entity has clinical notes")
        .to_string();
    // A text request has no system prompt and no response_format, and it sends the step's `max_tokens`.
    assert_eq!(
        chat_body(&requests[1]),
        json!({
            "model": "sample-model",
            "messages": [{"role": "user", "content": format!("Summarise for the care team: {notes}")}],
            "max_tokens": 300
        })
    );

    expected["prior_auth"] = json!({
        "requested_at": "2026-12-02T15:40:00Z",
        "status": "approved",
        "reference": "PA-88201",
        "valid_through": "2027-03-15",
        "trace_id": "trace-5f2c9a"
    });
    expected["notes_summary"] = json!(PRIOR_AUTH_SUMMARY);

    let upload = &requests[2];
    assert!(
        upload
            .header("Content-Type")
            .is_some_and(|value| value.starts_with("multipart/form-data; boundary=")),
        "{upload:?}"
    );
    let recording = std::fs::read(samples_dir().join("files/patient_call.wav")).unwrap();
    let head = String::from_utf8_lossy(&upload.body[..upload.body.len() - recording.len()]).into_owned();
    assert!(
        head.contains("name=\"file\"; filename=\"patient_call.wav\"\r\nContent-Type: audio/wav\r\n"),
        "{head}"
    );
    assert!(head.contains("name=\"language\"\r\n\r\nen\r\n"), "{head}");
    expected["call_transcript"] = json!(PATIENT_CALL);
    expected["call_segments"] = json!([{"start": 0.0, "end": 4.971, "text": PATIENT_CALL}]);
    assert_eq!(entity, expected);
}

/// Returns the compliance review that `samples/server.py` sends for the loan application sample's
/// notes.
fn loan_review() -> Value {
    json!({
        "flagged": true,
        "reasons": [
            "Income paid in cash is undocumented; verify it before counting it.",
            "The application leaves out income or debts that the notes mention.",
            "Another owner of the collateral has to consent to the lien."
        ],
        "risk": "high"
    })
}

#[test]
fn loan_application_is_submitted_scored_and_reviewed() {
    let server = TestServer::start(|request| {
        let path = request.target.split('?').next().unwrap_or_default();
        match (request.method.as_str(), path) {
            ("POST", CHAT_COMPLETIONS) if is_extraction(request) => chat_completion(
                request,
                &json!({
                    "gross_annual_income": "$86,400.00",
                    "monthly_debt_payments": "$1,150.00",
                    "total_liabilities": "$31,780.00",
                    "statement_date": "November 30, 2026"
                })
                .to_string(),
            ),
            ("POST", CHAT_COMPLETIONS) => chat_completion(request, &loan_review().to_string()),
            ("POST", "/los/applications") => Reply::json(
                201,
                json!({
                    "loan_number": "LN-5100234",
                    "application_id": "APP-2026-118305",
                    "status": "submitted"
                }),
            )
            .header("Location", "/los/applications/LN-5100234"),
            ("GET", "/bureau/score") => Reply::json(200, json!({"score": 712, "model": "FICO Score 8"})),
            _ => not_found(request),
        }
    });

    let run = run_sample("loan_application", &server);
    let entity = run.entity();

    let requests = server.requests();
    assert_eq!(
        methods_and_targets(&requests),
        [
            ("POST", "/los/applications"),
            ("GET", "/bureau/score?consent=CNS-7f3a91&reference=LN-5100234"),
            ("POST", CHAT_COMPLETIONS),
            ("POST", CHAT_COMPLETIONS),
        ]
    );
    assert_eq!(requests[0].header("X-Request-Id"), Some(EXECUTION_ID));
    assert_eq!(
        json_body(&requests[0]),
        json!({
            "applicationId": "APP-2026-118305",
            "channel": "branch",
            "product": "auto_refinance",
            "requestedAmount": 24500,
            "termMonths": 60,
            "purpose": "Refinance of a 2022 Subaru Outback",
            "applicant": {
                "firstName": "Marcus",
                "lastName": "Okafor",
                "email": "marcus.okafor@example.com",
                "dateOfBirth": "1987-04-19",
                "annualIncome": 86400,
                "employer": "Northwind Logistics",
                "address": {
                    "line1": "418 Alder Street",
                    "city": "Spokane",
                    "state": "WA",
                    "postal_code": "99201"
                }
            },
            "submissionId": EXECUTION_ID
        })
    );
    for request in &requests {
        assert_eq!(request.header("Authorization"), None, "{request:?}");
    }
    assert!(requests[1].body.is_empty(), "{:?}", requests[1]);

    let mut expected = read_json(&entity_file("loan_application"));
    let notes = expected["application_notes"]
        .as_str()
        .expect("the entity has application notes")
        .to_string();
    assert_eq!(
        chat_body(&requests[2]),
        json!({
            "model": "sample-model",
            "messages": [
                {"role": "user", "content": format!("Flag potential compliance issues in: {notes}")}
            ],
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "answer",
                    "schema": {
                        "type": "object",
                        "properties": {
                            "flagged": {"type": "boolean"},
                            "reasons": {"type": "array", "items": {"type": "string"}},
                            "risk": {"type": "string", "enum": ["low", "medium", "high"]}
                        },
                        "required": ["flagged", "reasons", "risk"],
                        "additionalProperties": false
                    },
                    "strict": true
                }
            }
        })
    );

    expected["los"] = json!({"loan_number": "LN-5100234", "status": "submitted"});
    expected["credit_score"] = json!(712);
    expected["credit_score_model"] = json!("FICO Score 8");
    expected["compliance_review"] = loan_review();

    assert_eq!(
        extraction_fields(&requests[3], "Gross annual income: $86,400.00"),
        [
            "gross_annual_income",
            "monthly_debt_payments",
            "total_liabilities",
            "statement_date"
        ]
    );
    expected["statement"] = json!({
        "gross_annual_income": 86400,
        "monthly_debt_payments": 1150,
        "total_liabilities": 31780,
        "statement_date": "2026-11-30"
    });
    // The code step priced the loan from the captured score of 712.
    expected["pricing"] = json!({"tier": "B", "monthly_payment": 479.26});
    assert_eq!(entity, expected);
    assert!(
        run.stderr.contains("score 712 gives tier B at 0.0649 APR"),
        "{}",
        run.stderr
    );
}

#[test]
fn loan_application_without_a_score_goes_to_manual_review() {
    let server = TestServer::start(|request| {
        let path = request.target.split('?').next().unwrap_or_default();
        match (request.method.as_str(), path) {
            ("POST", CHAT_COMPLETIONS) if is_extraction(request) => chat_completion(
                request,
                &json!({
                    "gross_annual_income": "$86,400.00",
                    "monthly_debt_payments": "$1,150.00",
                    "total_liabilities": "$31,780.00",
                    "statement_date": "November 30, 2026"
                })
                .to_string(),
            ),
            ("POST", CHAT_COMPLETIONS) => chat_completion(request, &loan_review().to_string()),
            ("POST", "/los/applications") => {
                Reply::json(201, json!({"loan_number": "LN-5100235", "status": "submitted"}))
            }
            ("GET", "/bureau/score") => Reply::json(200, json!({"score": null, "model": "FICO Score 8"})),
            _ => not_found(request),
        }
    });
    let entity = run_sample("loan_application", &server).entity();
    assert_eq!(entity["review"], "manual");
    assert_eq!(entity["credit_score"], Value::Null);
    assert_eq!(entity.get("pricing"), None);
    // The submission, the score, the statement extraction and the review.
    assert_eq!(server.requests().len(), 4);
}
