//! End-to-end tests of the HTTP step against a real server on 127.0.0.1
//! that records the exact bytes it receives.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use flowrun::cli::check_source;
use flowrun::diagnostic::Code;
use flowrun::run::http::Http;
use flowrun::run::report::{Outcome, Report};
use flowrun::run::retry::RecordingSleeper;
use flowrun::run::{execute, prepare, Inputs, Options};
use serde_json::{json, Value};
use support::server::{Recorded, Reply, TestServer};

struct Run {
    report: Report,
    waits: Vec<Duration>,
}

/// Checks and runs `source`, with `{base}` replaced by the server's URL.
/// Retry waits are recorded instead of slept.
async fn run_flow(source: &str, server: &TestServer, entity: Value) -> Run {
    run_with_secrets(source, server, entity, &[]).await
}

async fn run_with_secrets(source: &str, server: &TestServer, entity: Value, secrets: &[(&str, &str)]) -> Run {
    let source = source.replace("{base}", &server.url());
    let checked = check_source(&source, Path::new("test.flow"));
    assert!(checked.diagnostics.is_empty(), "{:#?}", checked.diagnostics);
    let inputs = Inputs {
        entity,
        vars: Vec::new(),
        secrets: secrets
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect::<HashMap<_, _>>(),
        execution_id: Some("exec-1".to_string()),
        env: HashMap::new(),
    };
    let execution = prepare(&checked.program, &source, inputs, false).expect("inputs are valid");
    let sleeper = Arc::new(RecordingSleeper::default());
    let options = Options {
        sleeper: sleeper.clone(),
        ..Options::default()
    };
    let http = Http::new().unwrap();
    let report = execute(&checked.program, &source, execution, &http, &options, None).await;
    Run {
        report,
        waits: sleeper.waits(),
    }
}

fn failure_code(report: &Report) -> Option<Code> {
    report.failure().map(|diagnostic| diagnostic.code)
}

fn only_request(server: &TestServer) -> Recorded {
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    requests.into_iter().next().unwrap()
}

fn hostile_entity() -> Value {
    serde_json::from_str(
        r#"{
            "id": "A/B?#%+ 😀",
            "claim_number": "CN \"7\" \\ back",
            "notes": "line1\nline2\ttab\u0001ctl & <b>",
            "amount": 123456789012345678901234567890,
            "rate": 0.1000000000000000055511151231257827,
            "nested": {"a": [1, {"b": null}], "c": "x\"y"},
            "nothing": null,
            "flag": true
        }"#,
    )
    .unwrap()
}

#[tokio::test]
async fn json_request_bytes_with_hostile_values() {
    let server = TestServer::scripted(vec![Reply::status(201)]);
    let source = r#"
step "Send claim" {
  http POST "{base}/claims/<<entity.id>>?n=<<entity.claim_number>>" json {
    "claimNumber": "<<entity.claim_number>>",
    "amount": <<entity.amount>>,
    "rate": <<entity.rate>>,
    "notes": "<<entity.notes>>",
    "nested": <<entity.nested>>,
    "nestedText": "<<entity.nested>>",
    "nothing": <<entity.nothing>>,
    "nothingText": "<<entity.nothing>>",
    "flag": <<entity.flag>>
  } headers {
    "X-Request-Id": "<<execution.id>>"
  }
}
"#;
    let run = run_flow(source, &server, hostile_entity()).await;
    assert_eq!(
        run.report.outcome,
        Outcome::Succeeded,
        "{:?}",
        run.report.failure()
    );

    let request = only_request(&server);
    let body = concat!(
        "{\n",
        "  \"claimNumber\": \"CN \\\"7\\\" \\\\ back\",\n",
        "  \"amount\": 123456789012345678901234567890,\n",
        "  \"rate\": 0.1000000000000000055511151231257827,\n",
        "  \"notes\": \"line1\\nline2\\ttab\\u0001ctl & <b>\",\n",
        "  \"nested\": {\"a\":[1,{\"b\":null}],\"c\":\"x\\\"y\"},\n",
        "  \"nestedText\": \"{\\\"a\\\":[1,{\\\"b\\\":null}],\\\"c\\\":\\\"x\\\\\\\"y\\\"}\",\n",
        "  \"nothing\": null,\n",
        "  \"nothingText\": \"\",\n",
        "  \"flag\": true\n",
        "}"
    );
    let expected = format!(
        "POST /claims/A%2FB%3F%23%25%2B%20%F0%9F%98%80?n=CN%20%227%22%20%5C%20back HTTP/1.1\r\n\
         content-type: application/json\r\n\
         x-request-id: exec-1\r\n\
         idempotency-key: {}\r\n\
         accept: */*\r\n\
         user-agent: flowrun/{}\r\n\
         host: {}\r\n\
         content-length: {}\r\n\
         \r\n\
         {body}",
        flowrun::run::idempotency_key("exec-1", "Send claim", 0, flowrun::program::Method::Post, true)
            .unwrap(),
        env!("CARGO_PKG_VERSION"),
        server.addr(),
        body.len()
    );
    assert_eq!(String::from_utf8_lossy(&request.raw), expected);
    let parsed: Value = serde_json::from_str(request.body_text()).unwrap();
    assert_eq!(parsed["notes"], json!("line1\nline2\ttab\u{1}ctl & <b>"));
}

#[tokio::test]
async fn xml_payload_escapes_markup() {
    let server = TestServer::scripted(vec![Reply::status(200)]);
    let source = r#"
http PUT "{base}/policies/<<entity.id>>/status" xml """
  <status>
    <note><<entity.notes>></note>
    <amount><<entity.amount>></amount>
  </status>
"""
"#;
    let entity = json!({"id": "P-1", "notes": "Tom & Jerry's \"<x>\"", "amount": 12.5});
    let run = run_flow(source, &server, entity).await;
    assert_eq!(run.report.outcome, Outcome::Succeeded);

    let request = only_request(&server);
    assert_eq!(request.header("content-type"), Some("application/xml"));
    assert_eq!(request.header_all("content-type").len(), 1);
    assert_eq!(
        request.body_text(),
        "<status>\n  <note>Tom &amp; Jerry&#39;s &quot;&lt;x&gt;&quot;</note>\n  <amount>12.5</amount>\n</status>"
    );
}

#[tokio::test]
async fn content_types_of_each_payload_kind() {
    let cases = [
        (
            "xhtml",
            "application/xhtml+xml",
            "<p><<entity.v>></p>",
            "<p>a&amp;b</p>",
        ),
        ("html", "text/html", "<p><<entity.v>></p>", "<p>a&amp;b</p>"),
        (
            "javascript",
            "application/javascript",
            "var v = \"<<entity.v>>\";",
            "var v = \"a&b\";",
        ),
        ("\"text/csv\"", "text/csv", "id,v\n1,<<entity.v>>", "id,v\n1,a&b"),
    ];
    for (kind, content_type, template, expected_body) in cases {
        let server = TestServer::scripted(vec![Reply::status(200)]);
        let source = format!("http POST \"{{base}}/x\" {kind} \"\"\"\n{template}\n\"\"\"\n");
        let run = run_flow(&source, &server, json!({"v": "a&b"})).await;
        assert_eq!(run.report.outcome, Outcome::Succeeded, "{kind}");
        let request = only_request(&server);
        assert_eq!(request.header_all("content-type"), vec![content_type], "{kind}");
        assert_eq!(request.body_text(), expected_body, "{kind}");
    }
}

#[tokio::test]
async fn javascript_payload_escapes_string_content() {
    let server = TestServer::scripted(vec![Reply::status(200)]);
    let source = "http POST \"{base}/x\" javascript \"\"\"\nsend('<<entity.v>>');\n\"\"\"\n";
    let entity = json!({"v": "it's \"x\"\n</script>\\"});
    let run = run_flow(source, &server, entity).await;
    assert_eq!(run.report.outcome, Outcome::Succeeded);
    assert_eq!(
        only_request(&server).body_text(),
        r#"send('it\'s \"x\"\n\u003C/script>\\');"#
    );
}

#[tokio::test]
async fn content_type_header_yields_to_the_payload_kind() {
    let server = TestServer::scripted(vec![Reply::status(200)]);
    let source = r#"http POST "{base}/x" json {"a": 1} headers { "Content-Type": "text/plain" }"#;
    let source = source.replace("{base}", &server.url());
    let checked = check_source(&source, Path::new("test.flow"));
    let codes: Vec<Code> = checked
        .diagnostics
        .iter()
        .map(|diagnostic| diagnostic.code)
        .collect();
    assert_eq!(codes, vec![Code::DuplicateContentType]);
    assert!(!checked.diagnostics[0].is_error());
}

#[tokio::test]
async fn merge_fields_are_substituted_once() {
    let server = TestServer::scripted(vec![Reply::status(200)]);
    let source = r#"http POST "{base}/x" json { "a": "<<entity.a>>", "literal": "\<<entity.b>>" }"#;
    let run = run_flow(source, &server, json!({"a": "<<entity.b>>", "b": "secret-ish"})).await;
    assert_eq!(run.report.outcome, Outcome::Succeeded);
    assert_eq!(
        only_request(&server).body_text(),
        r#"{ "a": "<<entity.b>>", "literal": "<<entity.b>>" }"#
    );
}

#[tokio::test]
async fn missing_merge_field_sends_nothing() {
    let server = TestServer::scripted(vec![Reply::status(200)]);
    let source = "step \"Send\" {\n  http POST \"{base}/x\" json { \"n\": \"<<entity.claim.number>>\" }\n}\n";
    let run = run_flow(source, &server, json!({"claim": {}})).await;
    assert_eq!(run.report.outcome, Outcome::Paused);
    assert_eq!(server.request_count(), 0);
    let failure = run.report.failure().unwrap();
    assert_eq!(failure.code, Code::MissingMergeField);
    let line = source
        .replace("{base}", &server.url())
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    let column = line.find("entity.claim.number").unwrap() + 1;
    assert_eq!(
        failure.message,
        format!(
            "merge field `entity.claim.number` at 2:{column} has no value: \
             `entity.claim.number` does not exist; nothing was sent"
        )
    );
}

#[tokio::test]
async fn default_helper_supplies_a_fallback() {
    let server = TestServer::scripted(vec![Reply::status(200)]);
    let source =
        r#"http POST "{base}/<<default entity.kind "none">>" json { "n": "<<default entity.n "n/a">>" }"#;
    let run = run_flow(source, &server, json!({"n": null})).await;
    assert_eq!(run.report.outcome, Outcome::Succeeded);
    let request = only_request(&server);
    assert_eq!(request.target, "/none");
    assert_eq!(request.body_text(), r#"{ "n": "n/a" }"#);
}

#[tokio::test]
async fn header_with_line_break_sends_nothing() {
    for encode in ["", "  encode off\n"] {
        let server = TestServer::scripted(vec![Reply::status(200)]);
        let source = format!(
            "step \"Send\" {{\n  http GET \"{{base}}/x\" headers {{ \"X-Note\": \"<<entity.note>>\" }}\n{encode}}}\n"
        );
        for note in ["a\r\nInjected: 1", "a\nb", "a\0b"] {
            let run = run_flow(&source, &server, json!({"note": note})).await;
            assert_eq!(failure_code(&run.report), Some(Code::HeaderInjection), "{note:?}");
        }
        assert_eq!(server.request_count(), 0);
    }
}

#[tokio::test]
async fn encode_off_inserts_values_unchanged() {
    let server = TestServer::scripted(vec![Reply::status(200)]);
    let source = "step \"Send\" {\n  http POST \"{base}/<<entity.path>>\" json { \"a\": <<entity.raw>> }\n  encode off\n}\n";
    let run = run_flow(source, &server, json!({"path": "a/b?c=d", "raw": "[1, 2]"})).await;
    assert_eq!(run.report.outcome, Outcome::Succeeded);
    let request = only_request(&server);
    assert_eq!(request.target, "/a/b?c=d");
    assert_eq!(request.body_text(), r#"{ "a": [1, 2] }"#);
}

#[tokio::test]
async fn encode_off_with_invalid_json_sends_nothing() {
    let server = TestServer::scripted(vec![Reply::status(200)]);
    let source =
        "step \"Send\" {\n  http POST \"{base}/x\" json { \"a\": \"<<entity.v>>\" }\n  encode off\n}\n";
    let run = run_flow(source, &server, json!({"v": "say \"hi\""})).await;
    assert_eq!(failure_code(&run.report), Some(Code::RenderedJsonInvalid));
    assert_eq!(server.request_count(), 0);
}

#[tokio::test]
async fn status_500_fails_after_one_request() {
    let server = TestServer::scripted(vec![Reply::status(500).body("database is down")]);
    let run = run_flow("http POST \"{base}/claims\" json {}", &server, json!({})).await;
    assert_eq!(server.request_count(), 1);
    let failure = run.report.failure().unwrap();
    assert_eq!(failure.code, Code::HttpStatus);
    assert_eq!(
        failure.message,
        format!(
            "POST {}/claims returned 500 Internal Server Error\nresponse body: database is down",
            server.url()
        )
    );
}

#[tokio::test]
async fn error_body_excerpt_stops_at_one_kibibyte_on_a_character_boundary() {
    let body = format!("{}€€", "x".repeat(1022));
    let server = TestServer::scripted(vec![Reply::status(400).body(body)]);
    let run = run_flow("http GET \"{base}/x\"", &server, json!({})).await;
    let message = &run.report.failure().unwrap().message;
    let excerpt = message.split("response body: ").nth(1).unwrap();
    assert_eq!(excerpt, "x".repeat(1022));
}

#[tokio::test]
async fn server_errors_retry_only_when_asked() {
    let server = TestServer::scripted(vec![Reply::status(503), Reply::status(502), Reply::status(200)]);
    let source = "step \"Send\" {\n  http POST \"{base}/x\" json {}\n  retry on 5xx\n}\n";
    let run = run_flow(source, &server, json!({})).await;
    assert_eq!(run.report.outcome, Outcome::Succeeded);
    assert_eq!(server.request_count(), 3);
    assert_eq!(run.waits.len(), 2);
    assert!(run.waits[0] <= Duration::from_secs(1));
    assert!(run.waits[1] <= Duration::from_secs(2));
}

#[tokio::test]
async fn too_many_requests_honours_retry_after_seconds() {
    let server = TestServer::scripted(vec![
        Reply::status(429).header("Retry-After", "2"),
        Reply::status(429).header("Retry-After", "7"),
        Reply::status(200),
    ]);
    let run = run_flow("http POST \"{base}/x\" json {}", &server, json!({})).await;
    assert_eq!(run.report.outcome, Outcome::Succeeded);
    assert_eq!(server.request_count(), 3);
    assert_eq!(run.waits, vec![Duration::from_secs(2), Duration::from_secs(7)]);

    let attempts = &run.report.steps[0].attempts;
    let numbers: Vec<u32> = attempts.iter().map(|attempt| attempt.number).collect();
    assert_eq!(numbers, vec![1, 2, 3]);
    let statuses: Vec<Option<u16>> = attempts.iter().map(|attempt| attempt.status).collect();
    assert_eq!(statuses, vec![Some(429), Some(429), Some(200)]);
    assert_eq!(attempts[2].waited, Duration::from_secs(7));
}

#[tokio::test]
async fn too_many_requests_honours_retry_after_dates() {
    let future = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
    let past = "Sun, 06 Nov 1994 08:49:37 GMT";
    let server = TestServer::scripted(vec![
        Reply::status(429).header("Retry-After", future),
        Reply::status(429).header("Retry-After", past),
        Reply::status(200),
    ]);
    let run = run_flow("http GET \"{base}/x\"", &server, json!({})).await;
    assert_eq!(run.report.outcome, Outcome::Succeeded);
    assert_eq!(server.request_count(), 3);
    assert_eq!(run.waits.len(), 2);
    // An HTTP-date has whole seconds, so the wait is between 29 and 30 s.
    assert!(
        run.waits[0] > Duration::from_secs(28) && run.waits[0] <= Duration::from_secs(30),
        "{:?}",
        run.waits
    );
    assert_eq!(run.waits[1], Duration::ZERO);
}

#[tokio::test]
async fn unparseable_or_absent_retry_after_backs_off() {
    let server = TestServer::scripted(vec![
        Reply::status(429).header("Retry-After", "soon-ish"),
        Reply::status(429),
        Reply::status(429),
        Reply::status(200),
    ]);
    let run = run_flow("http GET \"{base}/x\"", &server, json!({})).await;
    assert_eq!(run.report.outcome, Outcome::Succeeded);
    assert_eq!(server.request_count(), 4);
    assert_eq!(run.waits.len(), 3);
    let caps = [1, 2, 4].map(Duration::from_secs);
    for (wait, cap) in run.waits.iter().zip(caps) {
        assert!(*wait <= cap, "{wait:?} > {cap:?}");
    }
}

#[tokio::test]
async fn retry_after_over_the_maximum_fails_at_once() {
    let server = TestServer::scripted(vec![
        Reply::status(429).header("Retry-After", "300"),
        Reply::status(200),
    ]);
    let run = run_flow("http GET \"{base}/x\"", &server, json!({})).await;
    assert_eq!(server.request_count(), 1);
    assert!(run.waits.is_empty());
    let failure = run.report.failure().unwrap();
    assert_eq!(failure.code, Code::RetryWaitTooLong);
    assert!(
        failure
            .message
            .ends_with("Retry-After asks for 5m, more than the maximum wait of 2m"),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn max_wait_and_retries_are_configurable() {
    let server = TestServer::scripted(vec![
        Reply::status(429).header("Retry-After", "300"),
        Reply::status(200),
    ]);
    let source = "step \"Send\" {\n  http GET \"{base}/x\"\n  max_wait 10m\n}\n";
    let run = run_flow(source, &server, json!({})).await;
    assert_eq!(run.report.outcome, Outcome::Succeeded);
    assert_eq!(run.waits, vec![Duration::from_secs(300)]);

    let server = TestServer::scripted(vec![Reply::status(429).header("Retry-After", "0")]);
    let source = "step \"Send\" {\n  http GET \"{base}/x\"\n  retries 2\n}\n";
    let run = run_flow(source, &server, json!({})).await;
    assert_eq!(server.request_count(), 3);
    assert_eq!(failure_code(&run.report), Some(Code::TooManyRequests));
}

#[tokio::test]
async fn too_many_requests_gives_up_after_five_retries() {
    let server = TestServer::scripted(vec![Reply::status(429).header("Retry-After", "1")]);
    let run = run_flow("http POST \"{base}/x\" json {}", &server, json!({})).await;
    assert_eq!(server.request_count(), 6);
    assert_eq!(run.waits, vec![Duration::from_secs(1); 5]);
    let failure = run.report.failure().unwrap();
    assert_eq!(failure.code, Code::TooManyRequests);
    assert_eq!(
        failure.message,
        format!(
            "POST {}/x still returned 429 Too Many Requests after 6 requests",
            server.url()
        )
    );
}

#[tokio::test]
async fn timeout_covers_the_whole_exchange() {
    let server = TestServer::scripted(vec![Reply::status(200).delay(Duration::from_secs(5))]);
    let source = "step \"Slow\" {\n  http GET \"{base}/x\"\n  timeout 300ms\n}\n";
    let started = std::time::Instant::now();
    let run = run_flow(source, &server, json!({})).await;
    assert!(started.elapsed() < Duration::from_secs(4));
    let failure = run.report.failure().unwrap();
    assert_eq!(failure.code, Code::Timeout);
    assert_eq!(
        failure.message,
        format!("GET {}/x timed out after 300ms", server.url())
    );
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn connection_errors_fail_unless_retried() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let source = format!("step \"Down\" {{\n  http GET \"http://127.0.0.1:{port}/x\"\n  retry on connection\n  retries 2\n}}\n");
    let server = TestServer::scripted(vec![Reply::status(200)]);
    let run = run_flow(&source, &server, json!({})).await;
    assert_eq!(failure_code(&run.report), Some(Code::ConnectionFailed));
    assert_eq!(run.report.steps[0].attempts.len(), 3);
    assert_eq!(run.waits.len(), 2);
}

#[tokio::test]
async fn redirects_follow_standard_client_rules() {
    let server = TestServer::start(|request| match request.target.as_str() {
        "/see-other" => Reply::status(303).header("Location", "/landing"),
        "/found" => Reply::status(302).header("Location", "/landing"),
        "/moved" => Reply::status(301).header("Location", "/landing"),
        "/temporary" => Reply::status(307).header("Location", "/landing"),
        "/permanent" => Reply::status(308).header("Location", "/landing"),
        _ => Reply::status(200),
    });
    let cases = [
        ("see-other", "GET", ""),
        ("found", "GET", ""),
        ("moved", "GET", ""),
        ("temporary", "POST", r#"{"a": 1}"#),
        ("permanent", "POST", r#"{"a": 1}"#),
    ];
    for (path, method, body) in cases {
        let source = format!("http POST \"{{base}}/{path}\" json {{\"a\": 1}}");
        let before = server.request_count();
        let run = run_flow(&source, &server, json!({})).await;
        assert_eq!(run.report.outcome, Outcome::Succeeded, "{path}");
        let requests = server.requests();
        assert_eq!(requests.len() - before, 2, "{path}");
        let hop = &requests[before + 1];
        assert_eq!(hop.target, "/landing", "{path}");
        assert_eq!(hop.method, method, "{path}");
        assert_eq!(hop.body_text(), body, "{path}");
    }
}

#[tokio::test]
async fn redirect_to_another_host_drops_authorization() {
    let other = TestServer::scripted(vec![Reply::status(200)]);
    let location = format!("{}/elsewhere", other.url());
    let server = TestServer::start(move |request| match request.target.as_str() {
        "/away" => Reply::status(307).header("Location", location.clone()),
        "/here" => Reply::status(307).header("Location", "/same-host"),
        _ => Reply::status(200),
    });
    let source = r#"
step "Away" {
  http GET "{base}/away" headers { "Authorization": "Bearer t0k3n", "X-Trace": "1" }
}
step "Here" {
  http GET "{base}/here" headers { "Authorization": "Bearer t0k3n" }
}
"#;
    let run = run_flow(source, &server, json!({})).await;
    assert_eq!(run.report.outcome, Outcome::Succeeded);
    let hop = only_request(&other);
    assert_eq!(hop.header("authorization"), None);
    assert_eq!(hop.header("x-trace"), Some("1"));
    let same_host = server
        .requests()
        .into_iter()
        .find(|request| request.target == "/same-host")
        .unwrap();
    assert_eq!(same_host.header("authorization"), Some("Bearer t0k3n"));
}

#[tokio::test]
async fn redirect_loops_stop_after_ten_hops() {
    let server = TestServer::start(|_| Reply::status(302).header("Location", "/again"));
    let run = run_flow("http GET \"{base}/start\"", &server, json!({})).await;
    assert_eq!(failure_code(&run.report), Some(Code::TooManyRedirects));
    assert_eq!(server.request_count(), 11);
}

#[tokio::test]
async fn redirects_off_makes_a_redirect_final() {
    let server = TestServer::start(|_| Reply::status(302).header("Location", "/landing"));
    let source = "step \"No follow\" {\n  http GET \"{base}/x\"\n  save response.status -> entity.status\n  save response.headers.location -> entity.location\n  redirects off\n}\n";
    let run = run_flow(source, &server, json!({})).await;
    assert_eq!(run.report.outcome, Outcome::Succeeded);
    assert_eq!(server.request_count(), 1);
    assert_eq!(run.report.entity, json!({"status": 302, "location": "/landing"}));
}

#[tokio::test]
async fn save_copies_response_values_for_later_steps() {
    let server = TestServer::start(|request| match request.target.as_str() {
        "/auth" => Reply::json(
            200,
            json!({"status": "approved", "items": [{"id": 9007199254740993_u64}]}),
        )
        .header("X-Trace-Id", "trace-1"),
        _ => Reply::status(204),
    });
    let source = r#"
let auth_status = ""

step "Check authorization" {
  http GET "{base}/auth"
  save response.json.status -> entity.prior_auth.status
  save response.json.items[0].id -> entity.first_item
  save response.headers["X-Trace-Id"] -> entity.trace
  save response.json.status -> vars.auth_status
}

step "Report" {
  http POST "{base}/report/<<vars.auth_status>>" json { "status": "<<entity.prior_auth.status>>" }
}
"#;
    let run = run_flow(source, &server, json!({"id": "P-1"})).await;
    assert_eq!(
        run.report.outcome,
        Outcome::Succeeded,
        "{:?}",
        run.report.failure()
    );
    assert_eq!(
        run.report.entity,
        json!({"id": "P-1", "prior_auth": {"status": "approved"}, "first_item": 9007199254740993_u64, "trace": "trace-1"})
    );
    let requests = server.requests();
    assert_eq!(requests[1].target, "/report/approved");
    assert_eq!(requests[1].body_text(), r#"{ "status": "approved" }"#);
}

#[tokio::test]
async fn save_of_a_missing_value_fails_the_step() {
    let server = TestServer::scripted(vec![Reply::json(200, json!({"state": "ok"}))]);
    let source =
        "step \"Check\" {\n  http GET \"{base}/x\"\n  save response.json.status -> entity.status\n}\n";
    let run = run_flow(source, &server, json!({})).await;
    let failure = run.report.failure().unwrap();
    assert_eq!(failure.code, Code::SaveFailed);
    assert_eq!(
        failure.message,
        "cannot save `response.json.status`: the response JSON has no `response.json.status`"
    );
    assert_eq!(run.report.entity, json!({}));
}

#[tokio::test]
async fn steps_run_in_order_and_pause_at_a_failure() {
    let server = TestServer::start(|request| match request.target.as_str() {
        "/two" => Reply::status(404),
        _ => Reply::status(200),
    });
    let source = r#"
step "One" {
  http GET "{base}/one"
}
step "Two" {
  http GET "{base}/two"
}
step "Three" {
  http GET "{base}/three"
}
"#;
    let run = run_flow(source, &server, json!({})).await;
    assert_eq!(run.report.outcome, Outcome::Paused);
    let targets: Vec<String> = server
        .requests()
        .into_iter()
        .map(|request| request.target)
        .collect();
    assert_eq!(targets, vec!["/one", "/two"]);
    let outcomes: Vec<Outcome> = run.report.steps.iter().map(|step| step.outcome).collect();
    assert_eq!(outcomes, vec![Outcome::Succeeded, Outcome::Failed]);
}

#[tokio::test]
async fn secrets_are_sent_but_never_reported() {
    let server = TestServer::scripted(vec![Reply::status(401).body("bad token p@ss/w0rd")]);
    let source =
        r#"http GET "{base}/x?key=<<secret.KEY>>" headers { "Authorization": "Bearer <<secret.KEY>>" }"#;
    let run = run_with_secrets(source, &server, json!({}), &[("KEY", "p@ss/w0rd")]).await;
    let request = only_request(&server);
    assert_eq!(request.target, "/x?key=p%40ss%2Fw0rd");
    assert_eq!(request.header("authorization"), Some("Bearer p@ss/w0rd"));

    let failure = run.report.failure().unwrap();
    assert_eq!(
        failure.message,
        format!(
            "GET {}/x?key=*** returned 401 Unauthorized\nresponse body: bad token ***",
            server.url()
        )
    );
    let report_json = serde_json::to_string(&run.report).unwrap();
    assert!(!report_json.contains("p@ss"), "{report_json}");
    assert!(!report_json.contains("p%40ss"), "{report_json}");
}

#[tokio::test]
async fn other_payload_types_insert_values_unchanged() {
    let server = TestServer::scripted(vec![Reply::status(200)]);
    let source = "http POST \"{base}/upload\" \"text/csv\" \"\"\"\nid,notes\n<<entity.claim_number>>,<<entity.notes>>\n\"\"\"\n";
    let run = run_flow(source, &server, hostile_entity()).await;
    assert_eq!(run.report.outcome, Outcome::Succeeded);
    let request = only_request(&server);
    assert_eq!(request.header_all("content-type"), vec!["text/csv"]);
    assert_eq!(
        request.body_text(),
        "id,notes\nCN \"7\" \\ back,line1\nline2\ttab\u{1}ctl & <b>"
    );
}

#[tokio::test]
async fn xml_payload_with_hostile_values() {
    let server = TestServer::scripted(vec![Reply::status(200)]);
    let source = "http PUT \"{base}/x\" xml \"\"\"\n<c id=\"<<entity.id>>\"><n><<entity.notes>></n><a><<entity.amount>></a><z><<entity.nothing>></z></c>\n\"\"\"\n";
    let run = run_flow(source, &server, hostile_entity()).await;
    assert_eq!(run.report.outcome, Outcome::Succeeded);
    assert_eq!(
        only_request(&server).body_text(),
        "<c id=\"A/B?#%+ 😀\"><n>line1\nline2\ttab\u{1}ctl &amp; &lt;b&gt;</n><a>123456789012345678901234567890</a><z></z></c>"
    );
}

#[tokio::test]
async fn interrupted_exchange_is_not_retried_as_a_connection_error() {
    let server = TestServer::scripted(vec![Reply::close()]);
    let source = "step \"Send\" {\n  http POST \"{base}/x\" json {}\n  retry on connection\n}\n";
    let run = run_flow(source, &server, json!({})).await;
    assert_eq!(failure_code(&run.report), Some(Code::ConnectionFailed));
    assert_eq!(server.request_count(), 1);
    assert!(run.waits.is_empty());
}

#[tokio::test]
async fn dot_segments_from_values_send_nothing() {
    for id in ["..", "."] {
        let server = TestServer::scripted(vec![Reply::status(200)]);
        let run = run_flow(
            "http GET \"{base}/claims/<<entity.id>>/approve\"",
            &server,
            json!({"id": id}),
        )
        .await;
        assert_eq!(failure_code(&run.report), Some(Code::InvalidRequest), "{id}");
        assert_eq!(server.request_count(), 0, "{id}");
    }
}

#[tokio::test]
async fn json_suffix_media_types_are_encoded_as_json() {
    let server = TestServer::scripted(vec![Reply::status(200)]);
    let source = r#"http POST "{base}/x" "application/vnd.api+json" {"a": "<<entity.q>>"}"#;
    let run = run_flow(source, &server, json!({"q": "x\", \"admin\": true, \"y\": \""})).await;
    assert_eq!(run.report.outcome, Outcome::Succeeded);
    let request = only_request(&server);
    assert_eq!(
        request.header_all("content-type"),
        vec!["application/vnd.api+json"]
    );
    assert_eq!(request.body_text(), r#"{"a": "x\", \"admin\": true, \"y\": \""}"#);
}

#[tokio::test]
async fn control_characters_in_the_url_send_nothing() {
    let server = TestServer::scripted(vec![Reply::status(200)]);
    let source = "step \"Send\" {\n  http GET \"{base}/<<entity.v>>\"\n  encode off\n}\n";
    let run = run_flow(source, &server, json!({"v": "a\r\nforged"})).await;
    assert_eq!(failure_code(&run.report), Some(Code::InvalidRequest));
    assert_eq!(server.request_count(), 0);
}

#[tokio::test]
async fn failed_save_leaves_the_entity_unchanged() {
    let server = TestServer::scripted(vec![Reply::json(200, json!({"claim_id": "C"}))]);
    let source =
        "step \"Save\" {\n  http GET \"{base}/x\"\n  save response.json.claim_id -> entity.list[0]\n}\n";
    let run = run_flow(source, &server, json!({"a": 1})).await;
    assert_eq!(failure_code(&run.report), Some(Code::SaveFailed));
    assert_eq!(run.report.entity, json!({"a": 1}));
}

#[tokio::test]
async fn failed_save_leaves_variables_unchanged() {
    let server = TestServer::scripted(vec![
        Reply::json(200, json!({"claim_id": "C-9", "state": "open"})),
        Reply::status(200),
    ]);
    let source = "let state = \"none\"\nstep \"Save\" {\n  http GET \"{base}/x\"\n  save response.json.state -> vars.state\n  save response.json.claim_id -> entity.a.b\n  on error continue silently\n}\nstep \"Report\" {\n  http GET \"{base}/state/<<vars.state>>\"\n}\n";
    let run = run_flow(source, &server, json!({"a": 1})).await;
    assert_eq!(run.report.steps[0].outcome, Outcome::Failed);
    assert_eq!(run.report.entity, json!({"a": 1}));
    assert_eq!(server.requests()[1].target, "/state/none");
}

#[tokio::test]
async fn saves_to_top_level_fields_apply_in_order() {
    let server = TestServer::scripted(vec![Reply::json(200, json!({"id": "C-1", "n": 2}))]);
    let source = "step \"Save\" {\n  http GET \"{base}/x\"\n  save response.json.id -> entity.id\n  save response.json.n -> entity.count\n  save response.status -> entity.count\n}\n";
    let run = run_flow(source, &server, json!({"id": "old", "keep": true})).await;
    assert_eq!(run.report.outcome, Outcome::Succeeded);
    assert_eq!(
        run.report.entity,
        json!({"id": "C-1", "keep": true, "count": 200})
    );
}

#[tokio::test]
async fn large_response_saved_whole() {
    // Two megabytes arrive in several reads, so the body is put together.
    let big: String = (0..2 * 1024 * 1024)
        .map(|index| char::from(b'a' + (index % 26) as u8))
        .collect();
    let server = TestServer::scripted(vec![Reply::json(200, json!({"big": big}))]);
    let source = "step \"Fetch\" {\n  http GET \"{base}/x\"\n  save response.json.big -> entity.big\n}\n";
    let run = run_flow(source, &server, json!({})).await;
    assert_eq!(run.report.outcome, Outcome::Succeeded);
    assert_eq!(run.report.entity["big"].as_str(), Some(big.as_str()));
}

#[tokio::test]
async fn oversized_response_fails_the_step() {
    let server = TestServer::scripted(vec![Reply::new(200).body(vec![b'x'; 16 * 1024 * 1024 + 1])]);
    let run = run_flow("http GET \"{base}/x\"", &server, json!({})).await;
    assert_eq!(failure_code(&run.report), Some(Code::ResponseTooLarge));
}

/// Returns a step that saves `response.json.n` under `keys` nested keys of the entity.
fn deep_save(keys: usize) -> String {
    let path: Vec<String> = (0..keys).map(|index| format!("k{index}")).collect();
    format!(
        "step \"Save\" {{\n  http GET \"{{base}}/x\"\n  save response.json.n -> entity.{}\n}}\n",
        path.join(".")
    )
}

#[tokio::test]
async fn save_past_the_nesting_limit_fails() {
    let server = TestServer::scripted(vec![Reply::json(200, json!({"n": 1}))]);
    let run = run_flow(&deep_save(101), &server, json!({"id": "C-1"})).await;
    assert_eq!(failure_code(&run.report), Some(Code::SaveFailed));
    assert_eq!(run.report.entity, json!({"id": "C-1"}));
    let message = &run.report.failure().unwrap().message;
    assert!(
        message.ends_with(
            "it would be nested more than 100 levels deep, which flowrun cannot store and read back"
        ),
        "{message}"
    );
}

#[tokio::test]
async fn save_at_the_nesting_limit_succeeds() {
    let server = TestServer::scripted(vec![Reply::json(200, json!({"n": 1}))]);
    let run = run_flow(&deep_save(100), &server, json!({})).await;
    assert_eq!(run.report.outcome, Outcome::Succeeded);
    assert_eq!(flowrun::value::nesting(&run.report.entity), 100);
}

#[tokio::test]
async fn deep_response_into_a_variable_fails() {
    let deep: Value = serde_json::from_str(&format!("{}1{}", "[".repeat(100), "]".repeat(100))).unwrap();
    let server = TestServer::scripted(vec![Reply::json(200, json!({"v": deep}))]);
    let source =
        "let v = \"\"\nstep \"Save\" {\n  http GET \"{base}/x\"\n  save response.json.v -> vars.v\n}\n";
    let run = run_flow(source, &server, json!({})).await;
    assert_eq!(failure_code(&run.report), Some(Code::SaveFailed));
}

#[tokio::test]
async fn saved_values_never_hold_secrets() {
    let server = TestServer::scripted(vec![Reply::json(200, json!({"echo": "token s3cr3t-value here"}))]);
    let source = "step \"Echo\" {\n  http GET \"{base}/x?t=<<secret.KEY>>\"\n  save response.json.echo -> entity.echo\n}\n";
    let run = run_with_secrets(source, &server, json!({}), &[("KEY", "s3cr3t-value")]).await;
    assert_eq!(run.report.outcome, Outcome::Succeeded);
    assert_eq!(run.report.entity, json!({"echo": "token *** here"}));
}

#[tokio::test]
async fn url_variables_encode_entity_values() {
    let server = TestServer::scripted(vec![Reply::status(200)]);
    let source = "let u = \"{base}/e/<<entity.id>>\"\nhttp GET \"<<vars.u>>/tail\"\n";
    let run = run_flow(source, &server, json!({"id": "a b/c?admin=1#frag"})).await;
    assert_eq!(run.report.outcome, Outcome::Succeeded);
    assert_eq!(
        only_request(&server).target,
        "/e/a%20b%2Fc%3Fadmin%3D1%23frag/tail"
    );
}

#[tokio::test]
async fn variables_that_continue_a_url_encode_entity_values() {
    let server = TestServer::scripted(vec![Reply::status(200)]);
    let source = "let base = \"{base}\"\nlet u = \"<<vars.base>>/p/<<entity.id>>?q=<<entity.q>>\"\nlet path = \"/r/<<entity.id>>\"\nstep \"One\" {\n  http GET \"<<vars.u>>\"\n}\nstep \"Two\" {\n  http GET \"<<vars.base>><<vars.path>>\"\n}\n";
    let run = run_flow(
        source,
        &server,
        json!({"id": "admin/x?evil=1#", "q": "1&role=admin"}),
    )
    .await;
    assert_eq!(
        run.report.outcome,
        Outcome::Succeeded,
        "{:?}",
        run.report.failure()
    );
    let targets: Vec<String> = server
        .requests()
        .into_iter()
        .map(|request| request.target)
        .collect();
    assert_eq!(
        targets,
        vec![
            "/p/admin%2Fx%3Fevil%3D1%23?q=1%26role%3Dadmin",
            "/r/admin%2Fx%3Fevil%3D1%23"
        ]
    );
}

#[tokio::test]
async fn payload_body_may_start_on_the_next_line() {
    let server = TestServer::scripted(vec![Reply::status(200)]);
    let source =
        "step \"A\" {\n  http POST \"{base}/a\" json\n    # the claim\n    { \"a\": 1 }\n  timeout 5s\n}\n";
    let run = run_flow(source, &server, json!({})).await;
    assert_eq!(run.report.outcome, Outcome::Succeeded);
    assert_eq!(only_request(&server).body_text(), "{ \"a\": 1 }");
}
