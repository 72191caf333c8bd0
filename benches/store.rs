//! The execution store's cost per step: what `flowrun run` writes before
//! and after each step (`begin_step`, then `end_step` with two attempts, the
//! entity and the variables), on a real SQLite file in WAL mode.
//!
//! Run with `cargo bench --bench store`. The file lives in a temporary
//! folder on the same disk as the system's temporary files.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Map, Value};

use flowrun::store::sqlite::SqliteStore;
use flowrun::store::{AttemptRecord, NewExecution, StepEnd, StepStatus, Store};

fn entity() -> Value {
    json!({
        "id": "C-2026-000417",
        "claim_number": "CLM-417-A",
        "amount": 1520.75,
        "policy": {"id": "POL-HO-7731902", "holder": "Dana O'Brien"},
        "notes": "Burst supply line under the kitchen sink; water reached the basement.",
        "tags": ["water", "kitchen"],
        "claims_system_id": "CS-400101"
    })
}

fn attempts() -> Vec<AttemptRecord> {
    let attempt = |number: u32, status: u16| AttemptRecord {
        action: 0,
        number,
        method: "POST".to_string(),
        url: "http://127.0.0.1:8080/claims-api/claims/CLM-417-A".to_string(),
        status_code: Some(status),
        duration_ms: 12,
        waited_ms: if number > 1 { 1000 } else { 0 },
        error: None,
    };
    vec![attempt(1, 429), attempt(2, 201)]
}

fn step_cycle(criterion: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut store = SqliteStore::open(&dir.path().join("bench.db")).expect("the store opens");
    let entity = entity();
    let vars: Map<String, Value> = [(
        "claims_api".to_string(),
        json!("http://127.0.0.1:8080/claims-api"),
    )]
    .into_iter()
    .collect();
    let step_names = vec!["Send claim".to_string()];
    let step_hashes = vec!["0".repeat(64)];
    let methods = vec!["POST".to_string()];
    let attempts = attempts();
    let usage = json!([]);
    let mut execution_number = 0u64;

    criterion.bench_function("store: begin_step + end_step", |bench| {
        bench.iter_custom(|iterations| {
            // One execution per batch, with one step row per iteration, as a
            // long workflow would write them.
            execution_number += 1;
            let id = format!("bench-{execution_number}");
            let new = NewExecution {
                id: &id,
                workflow: "Bench",
                source_path: "/bench.flow",
                workflow_hash: "0",
                step_hashes: &step_hashes,
                step_names: &step_names,
                entity: &entity,
                vars: &vars,
                started_at: "2026-12-04T10:30:00Z",
                pid: std::process::id(),
            };
            store.begin_execution(&new).expect("the execution is recorded");
            let started = std::time::Instant::now();
            for index in 0..iterations as usize {
                store
                    .begin_step(&id, index, "Send claim", &methods, "2026-12-04T10:30:01Z", 1)
                    .expect("the step begins");
                let end = StepEnd {
                    llm_usage: &usage,
                    index,
                    status: StepStatus::Succeeded,
                    error: None,
                    code: None,
                    attempts: &attempts,
                    entity: &entity,
                    vars: &vars,
                    next_step: index + 1,
                    at: "2026-12-04T10:30:02Z",
                };
                store
                    .end_step(black_box(&id), black_box(&end))
                    .expect("the step ends");
            }
            started.elapsed()
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(8));
    targets = step_cycle
}
criterion_main!(benches);
