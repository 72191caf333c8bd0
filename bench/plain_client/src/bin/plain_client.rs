//! The plain client: the least work that sends the batch workload. For
//! each JSON line of the records file it POSTs to
//! `BASE/claims/<id>?source=<source>` with two headers and a JSON body, reads
//! the response, and prints the record with the response's `status` added,
//! as flowrun does. No store, no retries, no templates.
//!
//! Usage: plain_client BASE_URL RECORDS.jsonl [CONCURRENCY]

use std::io::{BufRead, BufWriter, Write};

use serde_json::{json, Value};

fn main() {
    let mut args = std::env::args().skip(1);
    let base = args.next().expect("BASE_URL");
    let path = args.next().expect("RECORDS.jsonl");
    let concurrency: usize = args.next().map_or(1, |text| text.parse().expect("CONCURRENCY"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(base, path, concurrency));
}

async fn send(client: &reqwest::Client, base: &str, mut record: Value) -> Value {
    let id = record["id"].as_str().unwrap_or_default().to_string();
    let source = record["source"].as_str().unwrap_or_default().to_string();
    let body = json!({"claimNumber": id, "amount": record["amount"], "holder": record["holder"]});
    let response = client
        .post(format!("{base}/claims/{id}?source={source}"))
        .header("X-Tenant", "acme")
        .header("X-Request-Id", id.as_str())
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .send()
        .await
        .unwrap();
    let answer: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap_or(Value::Null);
    record["status"] = answer["status"].clone();
    record
}

async fn run(base: String, path: String, concurrency: usize) {
    let client = reqwest::Client::builder().build().unwrap();
    let reader = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut lines = reader.lines();
    let mut running = tokio::task::JoinSet::new();
    let mut results = std::collections::BTreeMap::new();
    let mut next_out = 0usize;
    let mut taken = 0usize;
    let client = std::sync::Arc::new(client);
    let base = std::sync::Arc::new(base);
    loop {
        while running.len() < concurrency {
            let Some(line) = lines.next() else { break };
            let record: Value = serde_json::from_str(&line.unwrap()).unwrap();
            let (client, base, index) = (client.clone(), base.clone(), taken);
            taken += 1;
            running.spawn(async move { (index, send(&client, &base, record).await) });
        }
        let Some(done) = running.join_next().await else {
            break;
        };
        let (index, record) = done.unwrap();
        results.insert(index, record);
        while let Some(record) = results.remove(&next_out) {
            serde_json::to_writer(&mut out, &record).unwrap();
            out.write_all(b"\n").unwrap();
            next_out += 1;
        }
    }
    out.flush().unwrap();
}
