//! Parsing and checking a generated workflow of 10,000 lines.
//!
//! Run with `cargo bench --bench check`. The source is built in memory, so no
//! large file is kept in the repository.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const LINES: usize = 10_000;

/// Builds a workflow of exactly `LINES` lines: a header, a few variables,
/// alternating POST and GET steps, then comment lines to fill up.
fn generated_workflow() -> String {
    let mut lines: Vec<String> = vec![
        r#"workflow "Generated""#.to_string(),
        r#"let claims_api = "http://127.0.0.1:8080/api""#.to_string(),
        r#"let region = "north""#.to_string(),
        "let batch_size = 25".to_string(),
        String::new(),
    ];
    let mut number = 1;
    loop {
        let step = step_pair(number);
        if lines.len() + step.len() > LINES {
            break;
        }
        lines.extend(step);
        number += 1;
    }
    while lines.len() < LINES {
        lines.push(format!("# filler line {}", lines.len() + 1));
    }
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// Returns the lines of two steps, 14 in all, named after `number` so that
/// names stay unique.
fn step_pair(number: usize) -> Vec<String> {
    let text = format!(
        r#"step "Send claim {number}" {{
  http POST "<<vars.claims_api>>/claims/<<entity.id>>?region=<<vars.region>>" json {{
    "claimNumber": "<<entity.claim_number>>",
    "amount": <<entity.amount>>,
    "execution": "<<execution.id>>"
  }} headers {{
    "X-Request-Id": "<<execution.id>>"
  }}
  timeout 10s
}}
step "Check {number}" {{
  http GET "<<vars.claims_api>>/auth?member=<<entity.member_id>>"
  save response.json.status -> entity.auth_status
}}
"#
    );
    text.lines().map(str::to_string).collect()
}

fn bench_check(c: &mut Criterion) {
    let text = generated_workflow();
    assert_eq!(text.lines().count(), LINES);
    let path = Path::new("generated.flow");

    let checked = flowrun::cli::check_source(&text, path);
    assert!(
        checked.diagnostics.is_empty(),
        "the generated workflow has diagnostics: {:?}",
        checked.diagnostics
    );
    eprintln!(
        "generated workflow: {} lines, {} bytes, {} steps",
        LINES,
        text.len(),
        checked.program.steps.len()
    );

    let mut group = c.benchmark_group("check");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.sample_size(50);
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("check_source_10000_lines", |b| {
        b.iter(|| flowrun::cli::check_source(black_box(&text), black_box(path)))
    });
    group.finish();
}

criterion_group!(benches, bench_check);
criterion_main!(benches);
