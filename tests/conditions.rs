//! Conditions, typed variables, field updates and `stop`, run in-process
//! against the entity they change.

mod support;

use std::collections::HashMap;
use std::path::Path;

use flowrun::cli::check_source;
use flowrun::diagnostic::{Code, Severity};
use flowrun::run::http::Http;
use flowrun::run::report::{Outcome, Report};
use flowrun::run::{execute, prepare, Inputs, Options};
use serde_json::{json, Value};
use support::server::{Reply, TestServer};

async fn run_with_vars(source: &str, entity: Value, vars: &[(&str, &str)]) -> Report {
    let checked = check_source(source, Path::new("test.flow"));
    let errors: Vec<_> = checked
        .diagnostics
        .iter()
        .filter(|diagnostic| diagnostic.severity == Severity::Error)
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let inputs = Inputs {
        entity,
        vars: vars
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect(),
        secrets: HashMap::new(),
        execution_id: Some("exec-1".to_string()),
        env: HashMap::new(),
    };
    let execution = prepare(&checked.program, source, inputs, false).expect("inputs are valid");
    let http = Http::new().unwrap();
    execute(
        &checked.program,
        source,
        execution,
        &http,
        &Options::default(),
        None,
    )
    .await
}

/// Parses JSON keeping every digit of its numbers, which `json!` rounds.
fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

async fn run(source: &str, entity: Value) -> Report {
    run_with_vars(source, entity, &[]).await
}

/// Runs `if CONDITION` against `entity` and returns the branch taken.
async fn branch(condition: &str, entity: Value) -> &'static str {
    let source = format!(
        "if {condition} {{\n  set entity.result = \"then\"\n}} else {{\n  set entity.result = \"else\"\n}}\n"
    );
    let report = run(&source, entity).await;
    assert_eq!(
        report.outcome,
        Outcome::Succeeded,
        "{condition}: {:#?}",
        report.failure()
    );
    match report.entity["result"].as_str() {
        Some("then") => "then",
        Some("else") => "else",
        other => panic!("{condition}: no branch ran ({other:?})"),
    }
}

/// Runs `if CONDITION` and returns the message of the step that failed.
async fn condition_error(condition: &str, entity: Value) -> String {
    let source = format!(
        "if {condition} {{\n  set entity.result = \"then\"\n}} else {{\n  set entity.result = \"else\"\n}}\n"
    );
    let report = run(&source, entity).await;
    assert_eq!(report.outcome, Outcome::Paused, "{condition}");
    assert_eq!(report.entity.get("result"), None, "{condition}: a branch ran");
    let failure = report.failure().expect("the condition failed");
    assert_eq!(failure.code, Code::ConditionFailed, "{condition}");
    failure.message.clone()
}

#[tokio::test]
async fn numbers_compare_numerically_whatever_their_form() {
    let cases = [
        ("<<entity.n>> == 5", json!({"n": 5}), "then"),
        ("<<entity.n>> == 5", json!({"n": 5.0}), "then"),
        ("<<entity.n>> == 5", json!({"n": "5.00"}), "then"),
        ("<<entity.n>> == 5", json!({"n": 6}), "else"),
        ("<<entity.n>> != 5", json!({"n": 6}), "then"),
        ("<<entity.n>> != 5", json!({"n": "5"}), "else"),
        ("<<entity.n>> < 10", json!({"n": 9.99}), "then"),
        ("<<entity.n>> < 10", json!({"n": 10}), "else"),
        ("<<entity.n>> <= 10", json!({"n": 10}), "then"),
        ("<<entity.n>> > 5000", json!({"n": "5000.01"}), "then"),
        ("<<entity.n>> > 5000", json!({"n": 5000}), "else"),
        ("<<entity.n>> >= 5000", json!({"n": 5000}), "then"),
        // Text "10" and "9" compare as numbers once one side is a number.
        ("<<entity.n>> > 9", json!({"n": "10"}), "then"),
        (
            "<<entity.a>> < <<entity.b>>",
            parse(r#"{"a": 0.1, "b": 0.10000000000000001}"#),
            "then",
        ),
    ];
    for (condition, entity, expected) in cases {
        assert_eq!(
            branch(condition, entity.clone()).await,
            expected,
            "{condition} with {entity}"
        );
    }
}

#[tokio::test]
async fn text_compares_exactly_unless_ignoring_case() {
    let cases = [
        (r#"<<entity.t>> == "auto""#, json!({"t": "auto"}), "then"),
        (r#"<<entity.t>> == "auto""#, json!({"t": "Auto"}), "else"),
        (
            r#"<<entity.t>> == "auto" ignoring case"#,
            json!({"t": "AUTO"}),
            "then",
        ),
        (r#"<<entity.t>> != "auto""#, json!({"t": "Auto"}), "then"),
        (
            r#"<<entity.t>> contains "flood""#,
            json!({"t": "basement flooded"}),
            "then",
        ),
        (
            r#"<<entity.t>> contains "Flood""#,
            json!({"t": "basement flooded"}),
            "else",
        ),
        (
            r#"<<entity.t>> contains "Flood" ignoring case"#,
            json!({"t": "basement flooded"}),
            "then",
        ),
        (
            r#"<<entity.tags>> contains "vip""#,
            json!({"tags": ["new", "vip"]}),
            "then",
        ),
        (
            r#"<<entity.tags>> contains "vi""#,
            json!({"tags": ["new", "vip"]}),
            "else",
        ),
        (
            r#"<<entity.t>> starts with "CLM-""#,
            json!({"t": "CLM-17"}),
            "then",
        ),
        (
            r#"<<entity.t>> starts with "clm-""#,
            json!({"t": "CLM-17"}),
            "else",
        ),
        (
            r#"<<entity.t>> starts with "clm-" ignoring case"#,
            json!({"t": "CLM-17"}),
            "then",
        ),
        (
            r#"<<entity.t>> ends with ".pdf""#,
            json!({"t": "scan.pdf"}),
            "then",
        ),
        (
            r#"<<entity.t>> ends with ".PDF" ignoring case"#,
            json!({"t": "scan.pdf"}),
            "then",
        ),
        (
            r#"<<entity.t>> in ["auto", "home"]"#,
            json!({"t": "home"}),
            "then",
        ),
        (
            r#"<<entity.t>> in ["auto", "home"]"#,
            json!({"t": "Home"}),
            "else",
        ),
        (
            r#"<<entity.t>> in ["auto", "home"] ignoring case"#,
            json!({"t": "Home"}),
            "then",
        ),
        (
            r#"<<entity.t>> not in ["auto", "home"]"#,
            json!({"t": "life"}),
            "then",
        ),
        (r#"<<entity.n>> in [1, 2, 3]"#, json!({"n": "2.0"}), "then"),
        (r#"<<entity.t>> < "b""#, json!({"t": "a"}), "then"),
    ];
    for (condition, entity, expected) in cases {
        assert_eq!(
            branch(condition, entity.clone()).await,
            expected,
            "{condition} with {entity}"
        );
    }
}

#[tokio::test]
async fn dates_booleans_and_blank_tests() {
    let cases = [
        (
            r#"<<entity.d>> < "2024-03-01""#,
            json!({"d": "2024-02-29"}),
            "then",
        ),
        (
            r#"<<entity.d>> > "2024-03-01""#,
            json!({"d": "2024-02-29"}),
            "else",
        ),
        // 00:30 at +01:00 is 23:30 UTC the day before.
        (
            r#"<<entity.d>> < "2024-03-01T00:00:00Z""#,
            json!({"d": "2024-03-01T00:30:00+01:00"}),
            "then",
        ),
        (
            r#"<<entity.d>> == "2024-03-01T01:00:00+01:00""#,
            json!({"d": "2024-03-01T00:00:00Z"}),
            "then",
        ),
        ("<<entity.flag>> == true", json!({"flag": true}), "then"),
        ("<<entity.flag>> == true", json!({"flag": "TRUE"}), "then"),
        ("<<entity.flag>> != true", json!({"flag": false}), "then"),
        ("<<entity.x>> is blank", json!({}), "then"),
        ("<<entity.x>> is blank", json!({"x": null}), "then"),
        ("<<entity.x>> is blank", json!({"x": "  "}), "then"),
        ("<<entity.x>> is blank", json!({"x": []}), "then"),
        ("<<entity.x>> is blank", json!({"x": 0}), "else"),
        ("<<entity.x>> is blank", json!({"x": false}), "else"),
        ("<<entity.x>> is not blank", json!({"x": "a"}), "then"),
        ("<<entity.x>> is not blank", json!({}), "else"),
        // A blank operand is equal only to another blank.
        (r#"<<entity.x>> == "auto""#, json!({}), "else"),
        (r#"<<entity.x>> != "auto""#, json!({}), "then"),
        (r#"<<entity.x>> contains "a""#, json!({}), "else"),
        (r#"<<entity.x>> in ["a"]"#, json!({}), "else"),
    ];
    for (condition, entity, expected) in cases {
        assert_eq!(
            branch(condition, entity.clone()).await,
            expected,
            "{condition} with {entity}"
        );
    }
}

#[tokio::test]
async fn and_or_not_and_parentheses() {
    let condition = r#"not (<<entity.a>> == 1 or <<entity.b>> == 2) and <<entity.c>> == 3"#;
    assert_eq!(branch(condition, json!({"a": 0, "b": 0, "c": 3})).await, "then");
    assert_eq!(branch(condition, json!({"a": 1, "b": 0, "c": 3})).await, "else");
    assert_eq!(branch(condition, json!({"a": 0, "b": 2, "c": 3})).await, "else");
    assert_eq!(branch(condition, json!({"a": 0, "b": 0, "c": 4})).await, "else");
    // `and` binds tighter than `or`.
    let precedence = "<<entity.a>> == 1 or <<entity.b>> == 1 and <<entity.c>> == 1";
    assert_eq!(branch(precedence, json!({"a": 1, "b": 0, "c": 0})).await, "then");
    assert_eq!(branch(precedence, json!({"a": 0, "b": 1, "c": 0})).await, "else");
    // `and` stops at the first false part, so the blank amount is not read.
    let short = "<<entity.kind>> == \"auto\" and <<entity.amount>> > 5000";
    assert_eq!(branch(short, json!({"kind": "home"})).await, "else");
}

#[tokio::test]
async fn blank_and_unconvertible_operands_are_errors() {
    assert_eq!(
        condition_error("<<entity.amount>> > 5000", json!({})).await,
        "`>` cannot compare a blank value: `entity.amount` is blank"
    );
    for op in ["<", "<=", ">="] {
        let message = condition_error(&format!("<<entity.amount>> {op} 5000"), json!({"amount": ""})).await;
        assert_eq!(
            message,
            format!("`{op}` cannot compare a blank value: `entity.amount` is blank")
        );
    }
    assert_eq!(
        condition_error("5000 < <<entity.amount>>", json!({"amount": null})).await,
        "`<` cannot compare a blank value: `entity.amount` is blank"
    );
    assert_eq!(
        condition_error("<<entity.amount>> > 5000", json!({"amount": "lots"})).await,
        "`>` compares numbers, but `entity.amount` is `lots`"
    );
    assert_eq!(
        condition_error("<<entity.flag>> == true", json!({"flag": "maybe"})).await,
        "`==` compares booleans, but `entity.flag` is `maybe`"
    );
    assert_eq!(
        condition_error("<<entity.n>> < 5", json!({"n": true})).await,
        "`<` compares numbers, but `entity.n` is `true`"
    );
}

#[tokio::test]
async fn a_failed_condition_follows_the_step_failure_behaviour() {
    let source = r#"
on error continue notify
if <<entity.amount>> > 5000 {
  set entity.route = "large"
} else {
  set entity.route = "small"
}
set entity.after = "ran"
"#;
    let report = run(source, json!({})).await;
    assert_eq!(report.outcome, Outcome::Failed);
    assert_eq!(report.entity, json!({"after": "ran"}));
    let names: Vec<&str> = report.steps.iter().map(|step| step.name.as_str()).collect();
    assert_eq!(names, ["if (line 3)", "set entity.after (line 8)"]);
    assert_eq!(report.steps[0].branch, None);
}

#[tokio::test]
async fn nested_branches_and_the_branch_in_the_report() {
    let source = r#"
if <<entity.type>> == "auto" {
  if <<entity.amount>> > 5000 {
    set entity.queue = "auto-large"
  } else {
    set entity.queue = "auto-small"
  }
} else if <<entity.type>> == "home" {
  set entity.queue = "home"
} else {
  set entity.queue = "other"
  stop
}
set entity.routed = true
"#;
    let report = run(source, json!({"type": "auto", "amount": 9000})).await;
    assert_eq!(report.entity["queue"], "auto-large");
    assert_eq!(report.entity["routed"], true);
    let taken: Vec<(&str, Option<&str>)> = report
        .steps
        .iter()
        .map(|step| (step.name.as_str(), step.branch.map(|branch| branch.as_str())))
        .collect();
    assert_eq!(
        taken,
        [
            ("if (line 2)", Some("then")),
            ("if (line 3)", Some("then")),
            ("set entity.queue (line 4)", None),
            ("set entity.routed (line 14)", None),
        ]
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["steps"][0]["branch"], "then");
    assert!(json["steps"][2].get("branch").is_none());

    let report = run(source, json!({"type": "auto", "amount": 10})).await;
    assert_eq!(report.entity["queue"], "auto-small");
    assert_eq!(report.steps[1].branch.map(|branch| branch.as_str()), Some("else"));

    let report = run(source, json!({"type": "home"})).await;
    assert_eq!(
        report.entity,
        json!({"type": "home", "queue": "home", "routed": true})
    );
    let names: Vec<&str> = report.steps.iter().map(|step| step.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "if (line 2)",
            "if (line 8)",
            "set entity.queue (line 9)",
            "set entity.routed (line 14)"
        ]
    );

    // `stop` ends the execution successfully: the last line does not run.
    let report = run(source, json!({"type": "life"})).await;
    assert_eq!(report.outcome, Outcome::Succeeded);
    assert_eq!(report.entity, json!({"type": "life", "queue": "other"}));
}

#[tokio::test]
async fn a_step_inside_a_branch_sends_only_when_taken() {
    let server = TestServer::scripted(vec![Reply::status(201)]);
    let source = r#"
if <<entity.claim_type>> == "auto" and <<entity.amount>> > 5000 {
  step "Send to the auto unit" {
    http POST "{base}/claims" json { "id": "<<entity.id>>" }
  }
} else {
  set entity.queue = "standard"
}
"#
    .replace("{base}", &server.url());
    let report = run(
        &source,
        json!({"id": "C-1", "claim_type": "auto", "amount": 5000}),
    )
    .await;
    assert_eq!(report.entity["queue"], "standard");
    assert_eq!(server.request_count(), 0);

    let report = run(
        &source,
        json!({"id": "C-2", "claim_type": "auto", "amount": 5000.5}),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Succeeded);
    assert_eq!(report.entity.get("queue"), None);
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].body_text(), r#"{ "id": "C-2" }"#);
}

#[tokio::test]
async fn stop_failed_ends_the_execution_with_its_message() {
    let source = r#"
on error continue notify
if <<entity.policy>> is blank {
  stop failed "no active policy for <<entity.id>>"
}
set entity.after = true
"#;
    let report = run(source, json!({"id": "C-9"})).await;
    assert_eq!(report.outcome, Outcome::Failed);
    assert_eq!(report.entity, json!({"id": "C-9"}));
    let failure = report.failure().unwrap();
    assert_eq!(failure.code, Code::Stopped);
    assert_eq!(
        failure.message,
        "the workflow stopped the execution as failed: no active policy for C-9"
    );
    let report = run(source, json!({"id": "C-9", "policy": "P-1"})).await;
    assert_eq!(report.outcome, Outcome::Succeeded);
    assert_eq!(report.entity["after"], true);
}

#[tokio::test]
async fn let_fallbacks_resolve_in_order() {
    let source = r#"
let score: number = <<entity.bureau_score>> or <<entity.manual_score>> or 0
let band: text = <<vars.score>>
set entity.score = <<vars.score>>
set entity.band = <<vars.band>>
"#;
    let cases = [
        (
            json!({"bureau_score": 710, "manual_score": 600}),
            json!(710),
            "710",
        ),
        (json!({"manual_score": "612"}), json!(612), "612"),
        (json!({"bureau_score": "", "manual_score": null}), json!(0), "0"),
        (
            json!({"bureau_score": "  ", "manual_score": 580.5}),
            json!(580.5),
            "580.5",
        ),
    ];
    for (entity, score, band) in cases {
        let report = run(source, entity.clone()).await;
        assert_eq!(report.outcome, Outcome::Succeeded, "{entity}");
        assert_eq!(report.entity["score"], score, "{entity}");
        assert_eq!(report.entity["band"], band, "{entity}");
    }
    // A --var value replaces the sources and is converted like them.
    let report = run_with_vars(source, json!({"bureau_score": 710}), &[("score", "455")]).await;
    assert_eq!(report.entity["score"], json!(455));
}

#[tokio::test]
async fn required_and_conversion_errors_name_the_variable() {
    let source = r#"
on error continue notify
let owner: text required = <<entity.owner_email>> or <<entity.backup_email>>
set entity.after = true
"#;
    let report = run(source, json!({"owner_email": ""})).await;
    assert_eq!(report.outcome, Outcome::Failed);
    let failure = report.failure().unwrap();
    assert_eq!(failure.code, Code::RequiredVariable);
    assert_eq!(
        failure.message,
        "variable `owner` is required, but `entity.owner_email` and `entity.backup_email` are all blank"
    );
    // The step's failure behaviour applies: the next step still ran.
    assert_eq!(report.entity["after"], true);

    let report = run(source, json!({"backup_email": "b@example.test"})).await;
    assert_eq!(report.outcome, Outcome::Succeeded);

    let cases = [
        ("number", json!("abc"), "variable `v`: `abc` is not a number"),
        (
            "boolean",
            json!("yes"),
            "variable `v`: `yes` is not a boolean (true or false)",
        ),
        (
            "date",
            json!("31/01/2024"),
            "variable `v`: `31/01/2024` is not a date (YYYY-MM-DD)",
        ),
        (
            "datetime",
            json!("noon"),
            "variable `v`: `noon` is not a date-time (RFC 3339)",
        ),
        ("uuid", json!("123"), "variable `v`: `123` is not a UUID"),
    ];
    for (ty, value, message) in cases {
        let source = format!("let v: {ty} = <<entity.v>>\nset entity.v = <<vars.v>>\n");
        let report = run(&source, json!({ "v": value })).await;
        assert_eq!(report.outcome, Outcome::Paused, "{ty}");
        let failure = report.failure().unwrap();
        assert_eq!(failure.code, Code::InvalidValue, "{ty}");
        assert_eq!(failure.message, message);
    }

    let cases = [
        ("number", json!("12.50"), parse("12.50")),
        ("boolean", json!("False"), json!(false)),
        ("date", json!("2024-01-31T02:00:00+02:00"), json!("2024-01-31")),
        ("datetime", json!("2024-01-31"), json!("2024-01-31T00:00:00Z")),
        (
            "uuid",
            json!("6F9619FF-8B86-D011-B42D-00C04FC964FF"),
            json!("6f9619ff-8b86-d011-b42d-00c04fc964ff"),
        ),
        ("text", json!(42), json!("42")),
    ];
    for (ty, value, expected) in cases {
        let source = format!("let v: {ty} = <<entity.v>>\nset entity.v = <<vars.v>>\n");
        let report = run(&source, json!({ "v": value })).await;
        assert_eq!(report.entity["v"].to_string(), expected.to_string(), "{ty}");
    }
}

#[tokio::test]
async fn field_update_modes() {
    let source = r#"
set entity.queue = "standard"
set entity.owner = "unassigned" only if blank
set entity.reviewer = "desk" only if blank
set entity.tags add "synced"
set entity.tags add "new"
set entity.labels add "first"
clear entity.notes
clear entity.absent
"#;
    let report = run(
        source,
        json!({"queue": "old", "owner": "ann@example.test", "reviewer": " ", "tags": ["new"], "notes": "x"}),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{:#?}", report.failure());
    assert_eq!(
        report.entity,
        json!({
            "queue": "standard",
            "owner": "ann@example.test",
            "reviewer": "desk",
            "tags": ["new", "synced"],
            "notes": null,
            "labels": ["first"]
        })
    );

    let report = run("set entity.tags add \"x\"\n", json!({"tags": "a,b"})).await;
    let failure = report.failure().unwrap();
    assert_eq!(failure.code, Code::InvalidValue);
    assert_eq!(
        failure.message,
        "`add` appends to a list, but `entity.tags` holds text"
    );
}

#[tokio::test]
async fn variables_are_written_like_fields() {
    let source = r#"
let total: number = 0
let seen = "none"
set vars.total = <<vars.total>> + 1.10
set vars.total = <<vars.total>> + 2.20
set vars.seen = "first" only if blank
set entity.total = <<vars.total>>
set entity.seen = <<vars.seen>>
"#;
    let report = run(source, json!({})).await;
    assert_eq!(report.entity["total"].to_string(), "3.30");
    assert_eq!(report.entity["seen"], "none");
}

#[tokio::test]
async fn variables_past_the_nesting_limit_fail() {
    // The variables are one level, so a value nested 100 deep goes past 100.
    let deep: Value = serde_json::from_str(&format!("{}1{}", "[".repeat(100), "]".repeat(100))).unwrap();
    // An untyped variable keeps the JSON value it is set to.
    let source = "let copy = <<entity.missing>>\nset vars.copy = <<entity.deep>>\n";
    let report = run(source, json!({"deep": deep})).await;
    let failure = report.failure().expect("the statement failed");
    assert_eq!(failure.code, Code::InvalidValue);
    assert!(
        failure.message.ends_with(
            "it would be nested more than 100 levels deep, which flowrun cannot store and read back"
        ),
        "{}",
        failure.message
    );

    let limit: Value = serde_json::from_str(&format!("{}1{}", "[".repeat(99), "]".repeat(99))).unwrap();
    let report = run(source, json!({"deep": limit})).await;
    assert_eq!(report.outcome, Outcome::Succeeded);
}

#[tokio::test]
async fn arithmetic_is_exact() {
    let cases = [
        ("<<entity.a>> + <<entity.b>>", json!({"a": 0.1, "b": 0.2}), "0.3"),
        ("<<entity.price>> * 3", json!({"price": 19.99}), "59.97"),
        (
            "<<entity.a>> - <<entity.b>>",
            json!({"a": "100.10", "b": 0.1}),
            "100.00",
        ),
        ("10 / 4", json!({}), "2.5"),
        ("1 / 3", json!({}), "0.3333333333333333333333333333"),
        ("2 + 3 * 4", json!({}), "14"),
        ("(2 + 3) * 4", json!({}), "20"),
        ("10 - 2 - 3", json!({}), "5"),
        (
            "<<entity.big>> + 1",
            parse(r#"{"big": 12345678901234567890.12}"#),
            "12345678901234567891.12",
        ),
    ];
    for (expr, entity, expected) in cases {
        let report = run(&format!("set entity.result = {expr}\n"), entity).await;
        assert_eq!(report.entity["result"].to_string(), expected, "{expr}");
    }
    let errors = [
        (
            "1 / <<entity.zero>>",
            json!({"zero": 0}),
            "division by zero: `entity.zero` is 0",
        ),
        (
            "<<entity.a>> + 1",
            json!({"a": "x"}),
            "`+` works on numbers, but `entity.a` is `x`",
        ),
        (
            "<<entity.subtotal>> + <<entity.tax>>",
            json!({"subtotal": 10}),
            "`+` needs a value, but `entity.tax` is blank",
        ),
    ];
    for (expr, entity, message) in errors {
        let report = run(&format!("set entity.result = {expr}\n"), entity).await;
        let failure = report.failure().expect("the calculation fails");
        assert_eq!(failure.code, Code::InvalidValue, "{expr}");
        assert_eq!(failure.message, message);
        assert_eq!(report.outcome, Outcome::Paused);
    }
}

#[tokio::test]
async fn dates_plus_durations() {
    let cases = [
        (
            "<<entity.d>> + 30 days",
            json!({"d": "2024-01-31"}),
            json!("2024-03-01"),
        ),
        (
            "<<entity.d>> - 1 week",
            json!({"d": "2024-03-01"}),
            json!("2024-02-23"),
        ),
        (
            "<<entity.d>> + 1 hour",
            json!({"d": "2024-01-31"}),
            json!("2024-01-31T01:00:00Z"),
        ),
        (
            "<<entity.d>> + 90 minutes",
            json!({"d": "2024-01-31T23:00:00+02:00"}),
            json!("2024-02-01T00:30:00+02:00"),
        ),
        (
            "<<entity.d>> + 1 day + 12 hours",
            json!({"d": "2024-02-28"}),
            json!("2024-02-29T12:00:00Z"),
        ),
    ];
    for (expr, entity, expected) in cases {
        let report = run(&format!("set entity.result = {expr}\n"), entity).await;
        assert_eq!(
            report.entity["result"],
            expected,
            "{expr}: {:#?}",
            report.failure()
        );
    }
    let report = run(
        "set entity.result = <<entity.d>> + 1 day\n",
        json!({"d": "tomorrow"}),
    )
    .await;
    assert_eq!(
        report.failure().unwrap().message,
        "`+` with a duration needs a date or date-time, but `entity.d` is `tomorrow`"
    );
}

#[test]
fn check_time_diagnostics() {
    let codes = |source: &str| -> Vec<(Code, String)> {
        check_source(source, Path::new("test.flow"))
            .diagnostics
            .into_iter()
            .map(|diagnostic| {
                let span = diagnostic.span.expect("a span");
                (diagnostic.code, source[span.start..span.end].to_string())
            })
            .collect()
    };
    assert_eq!(
        codes("if <<vars.nope>> == 1 {\n  set entity.x = 1\n}\n"),
        [(Code::UnknownVariable, "nope".to_string())]
    );
    assert_eq!(
        codes("let score: number = 0\nif <<vars.score>> > \"high\" {\n  set entity.x = 1\n}\n"),
        [(Code::TypeMismatch, "<<vars.score>> > \"high\"".to_string())]
    );
    // Text that converts to the variable's type is fine.
    assert_eq!(
        codes("let score: number = 0\nlet due: date = <<entity.due>>\nif <<vars.score>> > \"600\" and <<vars.due>> < \"2024-01-01\" {\n  set entity.x = 1\n}\n"),
        []
    );
    assert_eq!(
        codes("let due: date = <<entity.due>>\nif <<vars.due>> in [\"2024-01-01\", 5] {\n  set entity.x = 1\n}\n"),
        [(Code::TypeMismatch, "<<vars.due>> in [\"2024-01-01\", 5".to_string())]
    );
    assert_eq!(
        codes("if true > false {\n  set entity.x = 1\n}\n"),
        [(Code::TypeMismatch, "true > false".to_string())]
    );
    assert_eq!(
        codes("else {\n  set entity.x = 1\n}\n"),
        [(Code::ElseWithoutIf, "else".to_string())]
    );
    assert_eq!(
        codes("set entity.x = 1\n}\nelse {\n  set entity.x = 2\n}\n")
            .iter()
            .map(|(code, _)| *code)
            .collect::<Vec<_>>(),
        [Code::SyntaxError]
    );
    assert_eq!(
        codes("set vars.count = 1\n"),
        [(Code::UnknownVariable, "count".to_string())]
    );
}

#[test]
fn python_that_does_not_compile_is_a_warning() {
    if flowrun::check::statement::find_on_path("python3").is_none() {
        eprintln!("python3 is not on PATH; the warning needs it");
        return;
    }
    let source = "step \"Compute\" {\n  code python \"\"\"\n    total = (1 +\n  \"\"\"\n}\n";
    let diagnostics = check_source(source, Path::new("test.flow")).diagnostics;
    assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
    assert_eq!(diagnostics[0].code, Code::PythonSyntax);
    assert_eq!(diagnostics[0].severity, Severity::Warning);
    assert!(diagnostics[0]
        .message
        .starts_with("the Python script does not compile: SyntaxError"));
    let valid = "step \"Compute\" {\n  code python \"\"\"\n    outputs.total = inputs.a + 1\n  \"\"\"\n}\n";
    assert_eq!(check_source(valid, Path::new("test.flow")).diagnostics, []);
}

#[test]
fn a_resume_computes_a_secret_variable_again() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use support::cli::{flowrun, output, path_str, Workspace};

    let calls = Arc::new(AtomicUsize::new(0));
    let server = {
        let calls = calls.clone();
        TestServer::start(move |_| {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                Reply::status(500)
            } else {
                Reply::status(200)
            }
        })
    };
    let workspace = Workspace::new();
    let source = format!(
        "let token: text required = <<secret.API_TOKEN>>\n\nstep \"Call\" {{\n  http POST \"{}/x\" json {{ \"a\": 1 }} headers {{ \"Authorization\": \"Bearer <<vars.token>>\" }}\n}}\n",
        server.url()
    );
    let flow = workspace.file("secret.flow", source);
    let store = workspace.dir.path().join("store.db");
    let (code, _, stderr) = output(
        flowrun(&[
            "run",
            path_str(&flow),
            "--store",
            path_str(&store),
            "--execution-id",
            "s-1",
        ])
        .env("FLOWRUN_SECRET_API_TOKEN", "tok-4711"),
    );
    assert_eq!(code, 3, "{stderr}");
    let stored = flowrun::store::sqlite::SqliteStore::open(&store).unwrap();
    let record = flowrun::store::Store::execution(&stored, "s-1").unwrap();
    // The secret is not stored, not even masked.
    assert_eq!(record.vars.get("token"), None);

    let (code, _, stderr) = output(
        flowrun(&["resume", "s-1", "--store", path_str(&store)]).env("FLOWRUN_SECRET_API_TOKEN", "tok-4711"),
    );
    assert_eq!(code, 0, "{stderr}");
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].header("Authorization"), Some("Bearer tok-4711"));
}

#[tokio::test]
async fn lists_and_objects_do_not_order_or_match_as_text() {
    let entity = json!({"l": ["x", "y"], "o": {"k": 1}, "n": [1, 2]});
    assert_eq!(
        condition_error("<<entity.l>> < \"x\"", entity.clone()).await,
        "`<` cannot compare lists: `entity.l` is a list"
    );
    assert_eq!(
        condition_error("<<entity.o>> >= <<entity.o>>", entity.clone()).await,
        "`>=` cannot compare objects: `entity.o` is an object"
    );
    assert_eq!(
        condition_error("<<entity.o>> contains \"k\" ignoring case", entity.clone()).await,
        "`contains` cannot compare objects: `entity.o` is an object"
    );
    assert_eq!(
        condition_error("<<entity.n>> starts with <<entity.n>>", entity.clone()).await,
        "`starts with` cannot compare lists: `entity.n` is a list"
    );
    assert_eq!(
        condition_error("\"x\" ends with <<entity.l>>", entity.clone()).await,
        "`ends with` cannot compare lists: `entity.l` is a list"
    );
    // A list still holds the item `contains` looks for.
    assert_eq!(branch("<<entity.l>> contains \"y\"", entity).await, "then");
}

#[tokio::test]
async fn numbers_out_of_range_are_not_matched_as_text() {
    let entity = parse(r#"{"big": 1e400}"#);
    assert_eq!(
        condition_error("<<entity.big>> contains \"1\"", entity).await,
        "`contains` cannot use `entity.big`: the number `1e+400` is out of range (larger than an exact decimal holds, about 7.9e28)"
    );
}

#[tokio::test]
async fn numbers_out_of_range_are_named_so_when_ordered() {
    let entity = parse(r#"{"big": 123456789012345678901234567890123}"#);
    assert_eq!(
        condition_error("<<entity.big>> > 5", entity).await,
        "`>` cannot compare `entity.big`: the number `123456789012345678901234567890123` is out of range (larger than an exact decimal holds, about 7.9e28)"
    );
}

#[tokio::test]
async fn in_with_mixed_items_compares_each_item() {
    let entity = json!({"a": 10, "b": 10, "c": 11, "t": "zz"});
    assert_eq!(
        branch("<<entity.a>> in [<<entity.b>>, \"zz\"]", entity.clone()).await,
        "then"
    );
    assert_eq!(
        branch("<<entity.a>> in [<<entity.c>>, \"zz\"]", entity.clone()).await,
        "else"
    );
    assert_eq!(
        branch("<<entity.t>> in [5, \"zz\"]", entity.clone()).await,
        "then"
    );
    assert_eq!(
        condition_error("<<entity.t>> in [5, 6]", entity).await,
        "`==` compares numbers, but `entity.t` is `zz`"
    );
}

#[tokio::test]
async fn arithmetic_and_typed_variables_name_numbers_out_of_range() {
    let report = run("set entity.y = <<entity.big>> + 1\n", parse(r#"{"big": 1e400}"#)).await;
    let failure = report.failure().unwrap();
    assert_eq!(failure.code, Code::InvalidValue);
    assert_eq!(
        failure.message,
        "`+` cannot use `entity.big`: the number `1e+400` is out of range (larger than an exact decimal holds, about 7.9e28)"
    );
}

#[test]
fn secrets_written_to_the_entity_are_masked() {
    use support::cli::{flowrun, output, path_str, Workspace};

    let workspace = Workspace::new();
    let flow = workspace.file(
        "copy.flow",
        "let header = \"Bearer <<secret.TOK>>\"\n\
         set entity.copy = <<secret.TOK>>\n\
         set entity.quoted = \"x<<secret.TOK>>x\"\n\
         set entity.header = <<vars.header>>\n\
         step \"Echo\" {\n  \
           code python \"\"\"\n    outputs.echo = inputs.token + \"!\"\n  \"\"\"\n  \
           inputs { token: <<secret.TOK>> }\n  \
           outputs { echo -> entity.echo }\n\
         }\n",
    );
    let entity = workspace.file("entity.json", "{\"id\": \"C-1\"}");
    let store = workspace.dir.path().join("store.db");
    let report = workspace.dir.path().join("report.json");
    let (code, stdout, stderr) = output(
        flowrun(&[
            "run",
            path_str(&flow),
            "--entity",
            path_str(&entity),
            "--store",
            path_str(&store),
            "--report",
            path_str(&report),
            "--execution-id",
            "m-1",
        ])
        .env("FLOWRUN_SECRET_TOK", "tk-8812"),
    );
    assert_eq!(code, 0, "{stderr}");
    let printed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        printed,
        json!({"id": "C-1", "copy": "***", "quoted": "x***x", "header": "Bearer ***", "echo": "***!"})
    );
    let written = std::fs::read_to_string(&report).unwrap();
    assert!(!written.contains("tk-8812"), "{written}");
    let stored = flowrun::store::sqlite::SqliteStore::open(&store).unwrap();
    let record = flowrun::store::Store::execution(&stored, "m-1").unwrap();
    assert_eq!(record.entity, printed);
}

#[tokio::test]
async fn out_of_range_messages_give_the_true_reason() {
    let cases = [
        (
            r#"{"v": 1.0e-30}"#,
            "variable `v`: `1.0e-30` is out of range (more than 28 digits after the decimal point)",
        ),
        (
            r#"{"v": "0.00000000000000000000000000001"}"#,
            "variable `v`: `0.00000000000000000000000000001` is out of range (more than 28 digits after the decimal point)",
        ),
        (
            r#"{"v": 1e400}"#,
            "variable `v`: `1e+400` is out of range (larger than an exact decimal holds, about 7.9e28)",
        ),
        (
            r#"{"v": 1234567890.1234567890123456789012}"#,
            "variable `v`: `1234567890.1234567890123456789012` is out of range (more than 28 significant digits)",
        ),
    ];
    for (entity, message) in cases {
        let report = run(
            "let v: number = <<entity.v>>
set entity.v = <<vars.v>>
",
            parse(entity),
        )
        .await;
        let failure = report.failure().expect("the conversion fails");
        assert_eq!(failure.code, Code::InvalidValue, "{entity}");
        assert_eq!(failure.message, message);
    }
}

#[tokio::test]
async fn list_contains_compares_items_like_equals() {
    let cases = [
        ("<<entity.a>> contains 5", json!({"a": [5.0, "c"]}), "then"),
        ("<<entity.a>> contains 5.0", json!({"a": [5, "c"]}), "then"),
        (
            "<<entity.a>> contains <<entity.b>>",
            json!({"a": [5, "c"], "b": 5.0}),
            "then",
        ),
        ("<<entity.a>> contains \"5.00\"", json!({"a": [5]}), "then"),
        ("<<entity.a>> contains 6", json!({"a": [5.0, "c"]}), "else"),
        ("<<entity.a>> contains \"C\"", json!({"a": [5, "c"]}), "else"),
        (
            "<<entity.a>> contains \"C\" ignoring case",
            json!({"a": [5, "c"]}),
            "then",
        ),
        ("<<entity.a>> contains true", json!({"a": ["TRUE"]}), "then"),
        (
            "<<entity.a>> contains \"2024-03-01\"",
            json!({"a": ["2024-03-01T01:00:00Z"]}),
            "else",
        ),
        (
            "<<entity.a>> contains \"2024-03-01\"",
            json!({"a": ["2024-03-01T00:00:00Z"]}),
            "then",
        ),
    ];
    for (condition, entity, expected) in cases {
        assert_eq!(
            branch(condition, entity.clone()).await,
            expected,
            "{condition} with {entity}"
        );
    }
    assert_eq!(
        condition_error("<<entity.a>> contains 5", parse(r#"{"a": ["x", 1e400]}"#)).await,
        "`contains` cannot compare an item of `entity.a`: the number `1e+400` is out of range (larger than an exact decimal holds, about 7.9e28)"
    );
}

#[tokio::test]
async fn add_skips_values_equal_to_an_item() {
    let source = r#"
set entity.a add 5
set entity.b add "5"
set entity.c add 6
set entity.d add <<entity.more>>
"#;
    let report = run(
        source,
        parse(r#"{"a": [5.0], "b": [5], "c": [5.0], "d": ["5.00"], "more": [5, 7, 7.0]}"#),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{:#?}", report.failure());
    assert_eq!(report.entity["a"].to_string(), "[5.0]");
    assert_eq!(report.entity["b"].to_string(), "[5]");
    assert_eq!(report.entity["c"].to_string(), "[5.0,6]");
    assert_eq!(report.entity["d"].to_string(), r#"["5.00",7]"#);
}

#[tokio::test]
async fn in_is_false_for_a_blank_value() {
    let cases = [
        (r#"<<entity.kind>> in ["auto", ""]"#, json!({}), "else"),
        (
            r#"<<entity.kind>> in ["auto", ""]"#,
            json!({"kind": "  "}),
            "else",
        ),
        (
            r#"<<entity.kind>> in ["auto", " "]"#,
            json!({"kind": null}),
            "else",
        ),
        (r#"<<entity.kind>> not in ["auto", ""]"#, json!({}), "then"),
        (r#"<<entity.kind>> not in ["auto"]"#, json!({"kind": ""}), "then"),
        (
            r#"<<entity.kind>> in ["auto", ""]"#,
            json!({"kind": "auto"}),
            "then",
        ),
        (
            r#"<<entity.kind>> not in ["auto", ""]"#,
            json!({"kind": "auto"}),
            "else",
        ),
    ];
    for (condition, entity, expected) in cases {
        assert_eq!(
            branch(condition, entity.clone()).await,
            expected,
            "{condition} with {entity}"
        );
    }
}

#[tokio::test]
async fn in_with_a_number_out_of_range_is_an_error() {
    let entity = parse(r#"{"a": 1e400}"#);
    assert_eq!(
        condition_error(r#"<<entity.a>> in ["x"]"#, entity.clone()).await,
        "`in` cannot compare `entity.a`: the number `1e+400` is out of range (larger than an exact decimal holds, about 7.9e28)"
    );
    assert_eq!(
        condition_error(r#"<<entity.a>> not in ["x", 5]"#, entity).await,
        "`not in` cannot compare `entity.a`: the number `1e+400` is out of range (larger than an exact decimal holds, about 7.9e28)"
    );
}

#[tokio::test]
async fn a_date_takes_a_date_time_only_at_midnight_utc() {
    let source = "let due: date = <<entity.d>>\nset entity.due = <<vars.due>>\n";
    let report = run(source, json!({"d": "2024-01-01T23:30:00-05:00"})).await;
    assert_eq!(report.outcome, Outcome::Paused);
    let failure = report.failure().unwrap();
    assert_eq!(failure.code, Code::InvalidValue);
    assert_eq!(
        failure.message,
        "variable `due`: `2024-01-01T23:30:00-05:00` is a date-time that is not midnight UTC, so it is not a date (YYYY-MM-DD)"
    );
    assert_eq!(report.entity.get("due"), None);

    let report = run(source, json!({"d": "2024-01-02T01:00:00+01:00"})).await;
    assert_eq!(report.entity["due"], "2024-01-02");

    let source = r#"
let d: date = "2024-01-01"
set entity.later = <<vars.d>> + 1 hour
set entity.next = <<vars.d>> + 1 day
set vars.d = <<vars.d>> + 1 hour
"#;
    let report = run(source, json!({})).await;
    assert_eq!(report.entity["later"], "2024-01-01T01:00:00Z");
    assert_eq!(report.entity["next"], "2024-01-02");
    let failure = report
        .failure()
        .expect("a date variable does not take a date-time");
    assert_eq!(failure.code, Code::InvalidValue);
    assert_eq!(
        failure.message,
        "`vars.d`: `2024-01-01T01:00:00Z` is a date-time that is not midnight UTC, so it is not a date (YYYY-MM-DD)"
    );
}

#[tokio::test]
async fn date_arithmetic_stays_within_years_0000_to_9999() {
    let entity = json!({"a": "0000-01-01", "b": "0000-01-01T00:30:00Z", "c": "9999-12-31", "e": "9999-12-31T23:00:00-05:00"});
    let cases = [
        (
            "<<entity.a>> - 1 seconds",
            "`-` moves `entity.a` (`0000-01-01`) outside the years 0000 to 9999",
        ),
        (
            "<<entity.a>> - 1 days",
            "`-` moves `entity.a` (`0000-01-01`) outside the years 0000 to 9999",
        ),
        (
            "<<entity.b>> - 1 hours",
            "`-` moves `entity.b` (`0000-01-01T00:30:00Z`) outside the years 0000 to 9999",
        ),
        (
            "<<entity.c>> + 1 days",
            "`+` moves `entity.c` (`9999-12-31`) outside the years 0000 to 9999",
        ),
        (
            "<<entity.e>> + 2 hours",
            "`+` moves `entity.e` (`9999-12-31T23:00:00-05:00`) outside the years 0000 to 9999",
        ),
    ];
    for (expr, message) in cases {
        let report = run(&format!("set entity.r = {expr}\n"), entity.clone()).await;
        assert_eq!(report.outcome, Outcome::Paused, "{expr}");
        assert_eq!(report.entity.get("r"), None, "{expr}");
        let failure = report.failure().expect("the calculation fails");
        assert_eq!(failure.code, Code::InvalidValue, "{expr}");
        assert_eq!(failure.message, message);
    }
    let report = run("set entity.r = <<entity.b>> - 30 minutes\n", entity).await;
    assert_eq!(report.entity["r"], "0000-01-01T00:00:00Z");
}

#[tokio::test]
async fn numbers_with_underscores_are_not_numbers() {
    let report = run("let score: number = <<entity.s>>\n", json!({"s": "1_000"})).await;
    let failure = report.failure().unwrap();
    assert_eq!(failure.code, Code::InvalidValue);
    assert_eq!(failure.message, "variable `score`: `1_000` is not a number");
    assert_eq!(
        condition_error("<<entity.x>> == 100", json!({"x": "1_00"})).await,
        "`==` compares numbers, but `entity.x` is `1_00`"
    );
    let report = run("set entity.y = <<entity.x>> + 1\n", json!({"x": "1_0"})).await;
    assert_eq!(
        report.failure().unwrap().message,
        "`+` works on numbers, but `entity.x` is `1_0`"
    );
}

#[tokio::test]
async fn an_untyped_let_keeps_the_json_type_of_its_field() {
    let source = r#"
let n = <<entity.num>>
let flag = <<entity.flag>>
let tags = <<entity.tags>>
let m = <<entity.missing>> or <<entity.num>>
set entity.n = <<vars.n>>
set entity.f = <<vars.flag>>
set entity.t = <<vars.tags>>
set entity.m = <<vars.m>>
set vars.n = <<vars.n>> + 1
set entity.n_plus_one = <<vars.n>>
"#;
    let report = run(source, parse(r#"{"num": 1.50, "flag": true, "tags": ["a"]}"#)).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{:#?}", report.failure());
    assert_eq!(report.entity["n"].to_string(), "1.50");
    assert_eq!(report.entity["f"], json!(true));
    assert_eq!(report.entity["t"], json!(["a"]));
    assert_eq!(report.entity["m"].to_string(), "1.50");
    assert_eq!(report.entity["n_plus_one"].to_string(), "2.50");

    // A number literal gives the type, so text converts to a number.
    let report = run(
        "let n = <<entity.num>> or 0\nset entity.n = <<vars.n>>\n",
        json!({"num": "12.50"}),
    )
    .await;
    assert_eq!(report.entity["n"].to_string(), "12.50");
    // A --var value is text.
    let report = run_with_vars(
        "let n = <<entity.num>>\nset entity.n = <<vars.n>>\n",
        json!({"num": 3}),
        &[("n", "7")],
    )
    .await;
    assert_eq!(report.entity["n"], json!("7"));

    // `: text` converts a list or an object to its JSON text.
    let report = run(
        "let l: text = <<entity.tags>>\nlet o: text = <<entity.obj>>\nset entity.l = <<vars.l>>\nset entity.o = <<vars.o>>\n",
        json!({"tags": ["a"], "obj": {"k": 1}}),
    )
    .await;
    assert_eq!(report.entity["l"], json!(r#"["a"]"#));
    assert_eq!(report.entity["o"], json!(r#"{"k":1}"#));
}

#[test]
fn durations_as_values_are_type_mismatches() {
    let problems = |source: &str| -> Vec<(Code, String, String)> {
        check_source(source, Path::new("test.flow"))
            .diagnostics
            .into_iter()
            .filter(|diagnostic| diagnostic.code != Code::PythonSyntax)
            .map(|diagnostic| {
                let span = diagnostic.span.expect("a span");
                (
                    diagnostic.code,
                    source[span.start..span.end].to_string(),
                    diagnostic.message,
                )
            })
            .collect()
    };
    let mismatch =
        |text: &str, message: &str| vec![(Code::TypeMismatch, text.to_string(), message.to_string())];
    assert_eq!(
        problems("let wait = 30 days\nset entity.x = 1\n"),
        mismatch("30 days", "variable `wait` cannot hold the duration `30 days`")
    );
    assert_eq!(
        problems("let wait: number = <<entity.w>> or 1 hour\nset entity.x = 1\n"),
        mismatch("1 hour", "variable `wait` cannot hold the duration `1 hour`")
    );
    assert_eq!(
        problems("set entity.t = 30 days\n"),
        mismatch("30 days", "`set entity.t` cannot write a duration")
    );
    assert_eq!(
        problems("set entity.t = 1 day + 2 hours\n"),
        mismatch("1 day + 2 hours", "`set entity.t` cannot write a duration")
    );
    assert_eq!(
        problems("step \"Compute\" {\n  code python \"\"\"\n    outputs.a = inputs.w\n  \"\"\"\n  inputs { w: 2 weeks }\n  outputs { a -> entity.a }\n}\n"),
        mismatch("2 weeks", "input `w` cannot be a duration")
    );
    assert_eq!(problems("set entity.t = <<entity.d>> + 30 days + 1 hour\n"), []);
}

#[test]
fn months_and_years_are_unknown_units() {
    let cases = [
        ("months", "1 months"),
        ("month", "1 month"),
        ("years", "2 years"),
        ("year", "1year"),
    ];
    for (unit, expr) in cases {
        let source = format!("set entity.t = <<entity.a>> + {expr}\n");
        let diagnostics = check_source(&source, Path::new("test.flow")).diagnostics;
        assert_eq!(diagnostics.len(), 1, "{expr}: {diagnostics:#?}");
        assert_eq!(diagnostics[0].code, Code::UnknownUnit, "{expr}");
        assert_eq!(diagnostics[0].message, format!("unknown duration unit `{unit}`"));
        let span = diagnostics[0].span.expect("a span");
        assert_eq!(&source[span.start..span.end], expr);
        assert_eq!(
            diagnostics[0].help.as_deref(),
            Some("valid units: `weeks`, `days`, `hours`, `minutes`, `seconds`; a month or a year has no fixed length, so write days, such as `30 days`")
        );
    }
}

#[test]
fn typed_variables_used_before_their_let_are_reported() {
    let diagnostics = |source: &str| -> Vec<(Code, String, String)> {
        check_source(source, Path::new("test.flow"))
            .diagnostics
            .into_iter()
            .map(|diagnostic| {
                let span = diagnostic.span.expect("a span");
                (
                    diagnostic.code,
                    diagnostic.message,
                    source[span.start..span.end].to_string(),
                )
            })
            .collect()
    };
    let unknown = |name: &str| {
        (
            Code::UnknownVariable,
            format!("unknown variable `{name}`"),
            name.to_string(),
        )
    };
    assert_eq!(
        diagnostics("if <<vars.b>> == \"x\" {\n  set entity.a = 1\n}\nlet b: text = \"x\"\n"),
        [unknown("b")]
    );
    assert_eq!(
        diagnostics("set entity.a = <<vars.b>>\nlet b: text = \"x\"\n"),
        [unknown("b")]
    );
    assert_eq!(
        diagnostics("set vars.b = \"y\"\nlet b: text = \"x\"\n"),
        [unknown("b")]
    );
    let own = diagnostics("let x: number = <<entity.a>> or <<vars.x>>\n");
    assert_eq!(own, [unknown("x")]);
    let checked = check_source(
        "let x: number = <<entity.a>> or <<vars.x>>\n",
        Path::new("test.flow"),
    );
    assert_eq!(
        checked.diagnostics[0].help.as_deref(),
        Some("a `let` cannot read its own variable: give `x` a fallback that does not use `vars.x`")
    );
    // Below its `let`, also one inside an `if` block, the variable is known.
    assert_eq!(
        diagnostics("let b: text = \"x\"\nif <<vars.b>> == \"x\" {\n  let c: number = 1\n  set entity.a = <<vars.c>>\n}\nset entity.c = <<vars.c>>\n"),
        []
    );
}

#[test]
fn in_lists_skip_text_items_a_number_never_equals() {
    let messages = |source: &str| -> Vec<String> {
        check_source(source, Path::new("test.flow"))
            .diagnostics
            .into_iter()
            .map(|diagnostic| diagnostic.message)
            .collect()
    };
    assert_eq!(
        messages("let s: number = 0\nif <<vars.s>> in [1, \"n/a\"] {\n  set entity.x = 1\n}\n"),
        Vec::<String>::new()
    );
    assert_eq!(
        messages("let due: date = <<entity.due>>\nif <<vars.due>> in [\"2024-01-01\", 5] {\n  set entity.x = 1\n}\n"),
        ["`in` compares date with number"]
    );
    assert_eq!(
        messages("let s: number = 0\nif <<vars.s>> not in [true] {\n  set entity.x = 1\n}\n"),
        ["`not in` compares number with boolean"]
    );
}

#[tokio::test]
async fn in_with_text_items_for_a_number_variable() {
    let source = "let s: number = <<entity.s>>\nif <<vars.s>> in [1, \"n/a\"] {\n  set entity.r = \"then\"\n} else {\n  set entity.r = \"else\"\n}\n";
    let report = run(source, json!({"s": 1})).await;
    assert_eq!(report.entity["r"], "then");
    let report = run(source, json!({"s": 5})).await;
    assert_eq!(report.entity["r"], "else");
}

/// Prepares `source` with `vars` and returns the code and message of each
/// input error.
fn prepare_errors(source: &str, vars: &[(&str, &str)]) -> Vec<(Code, String)> {
    let checked = check_source(source, Path::new("test.flow"));
    assert!(checked.diagnostics.is_empty(), "{:#?}", checked.diagnostics);
    let inputs = Inputs {
        entity: json!({}),
        vars: vars
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect(),
        secrets: HashMap::new(),
        execution_id: Some("exec-1".to_string()),
        env: HashMap::new(),
    };
    match prepare(&checked.program, source, inputs, false) {
        Ok(_) => Vec::new(),
        Err(diagnostics) => diagnostics
            .into_iter()
            .map(|diagnostic| (diagnostic.code, diagnostic.message))
            .collect(),
    }
}

#[test]
fn var_values_are_converted_when_the_run_starts() {
    assert_eq!(
        prepare_errors(
            "let limit = 5000\nset entity.limit = <<vars.limit>>\n",
            &[("limit", "abc")]
        ),
        [(
            Code::InvalidVar,
            "--var limit=abc: variable `limit` is a number, but `abc` is not a number".to_string()
        )]
    );
    assert_eq!(
        prepare_errors(
            "let due: date = <<entity.due>>\nset entity.due = <<vars.due>>\n",
            &[("due", "soon")]
        ),
        [(
            Code::InvalidVar,
            "--var due=soon: variable `due` is a date, but `soon` is not a date (YYYY-MM-DD)".to_string()
        )]
    );
    assert_eq!(
        prepare_errors("let n: number\nset entity.n = <<vars.n>>\n", &[]),
        [(Code::MissingVar, "variable `n` has no value".to_string())]
    );
    assert_eq!(
        prepare_errors("let n: number\nset entity.n = <<vars.n>>\n", &[("n", "7")]),
        []
    );
}

#[tokio::test]
async fn var_values_keep_the_type_of_the_let() {
    let report = run_with_vars(
        "let limit = 5000\nset entity.limit = <<vars.limit>>\n",
        json!({}),
        &[("limit", "50")],
    )
    .await;
    assert_eq!(report.entity, json!({"limit": 50}));

    let report = run_with_vars(
        "let n: number\nset entity.n = <<vars.n>>\n",
        json!({}),
        &[("n", "7.50")],
    )
    .await;
    assert_eq!(report.entity["n"].to_string(), "7.50");

    // An empty value is blank, so the fallbacks decide.
    let source = "let score: number = <<entity.score>> or 0\nset entity.s = <<vars.score>>\n";
    let report = run_with_vars(source, json!({"score": 640}), &[("score", "")]).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{:#?}", report.failure());
    assert_eq!(report.entity["s"], json!(640));
    let report = run_with_vars(source, json!({}), &[("score", " ")]).await;
    assert_eq!(report.entity["s"], json!(0));
}
