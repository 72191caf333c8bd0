//! Rendering the JSON payload of one step against one entity.
//!
//! Run with `cargo bench --bench render`. The template comes from checking a
//! small workflow, exactly as `flowrun run` gets it.

use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{Map, Value};

use flowrun::render::{render, Scope};

const WORKFLOW: &str = r#"workflow "Render"
let source = "intake-portal"
step "Send claim" {
  http POST "http://127.0.0.1:8080/claims/<<entity.id>>" json {
    "claimNumber": "<<entity.claim_number>>",
    "policyId": <<entity.policy_id>>,
    "amount": <<entity.amount>>,
    "currency": "<<entity.currency>>",
    "urgent": <<entity.urgent>>,
    "submittedAt": "<<entity.submitted_at>>",
    "member": {
      "id": "<<entity.member.id>>",
      "name": "<<entity.member.name>>",
      "birthDate": "<<entity.member.birth_date>>"
    },
    "address": <<entity.member.address>>,
    "tags": <<entity.tags>>,
    "description": "<<entity.description>>",
    "source": "<<vars.source>>",
    "execution": "<<execution.id>>"
  }
}
"#;

/// An entity of ten top-level fields, with a nested object, an integer wider
/// than 64 bits and strings that need escaping.
const ENTITY: &str = r#"{
  "id": "C-2026-000417",
  "claim_number": "CLM-417-A",
  "policy_id": 123456789012345678901234567890,
  "amount": 1520.75,
  "currency": "EUR",
  "urgent": true,
  "submitted_at": "2026-12-04T10:30:00Z",
  "member": {
    "id": "M-88213",
    "name": "Zoë \"Zed\" O'Brien",
    "birth_date": "1984-02-29",
    "address": {"street": "12 Rue de l'Église", "city": "Lyon", "postcode": "69002", "country": "FR"}
  },
  "tags": ["water", "kitchen"],
  "description": "Pipe burst under the sink.\nWater reached the \"dining\" room\tand the hall\\cellar."
}"#;

fn bench_render(c: &mut Criterion) {
    let checked = flowrun::cli::check_source(WORKFLOW, Path::new("render.flow"));
    assert!(checked.diagnostics.is_empty(), "{:?}", checked.diagnostics);
    let flowrun::program::Action::Http(request) = &checked.program.steps[0].actions[0] else {
        panic!("the first action is an HTTP request");
    };
    let template = request
        .body
        .as_ref()
        .expect("the step has a JSON body")
        .template
        .clone();

    let entity: Value = serde_json::from_str(ENTITY).expect("the entity is valid JSON");
    let execution: Value = serde_json::json!({
        "id": "d2de4c0d-8ab1-428c-a220-ddc28e7b699d",
        "started_at": "2026-12-04T10:30:00Z",
        "workflow": "Render",
    });
    let mut vars = Map::new();
    vars.insert("source".to_string(), Value::String("intake-portal".to_string()));
    let secrets: HashMap<String, String> = HashMap::new();
    let scope = Scope {
        entity: &entity,
        execution: &execution,
        vars: &vars,
        secrets: &secrets,
        mask_secrets: false,
    };

    let rendered = render(&template, &scope).expect("the template renders");
    let parsed: Value = serde_json::from_str(&rendered).expect("the payload is valid JSON");
    assert_eq!(parsed["policyId"].to_string(), "123456789012345678901234567890");
    assert_eq!(parsed["member"]["name"], "Zoë \"Zed\" O'Brien");
    eprintln!(
        "template: {} pieces; payload: {} bytes",
        template.pieces.len(),
        rendered.len()
    );

    let mut group = c.benchmark_group("render");
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("json_payload", |b| {
        b.iter(|| render(black_box(&template), black_box(&scope)))
    });
    group.finish();
}

criterion_group!(benches, bench_render);
criterion_main!(benches);
