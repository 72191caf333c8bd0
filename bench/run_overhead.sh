#!/usr/bin/env bash
# Measures what a one-step `flowrun run` adds to one HTTP exchange, compared
# with curl sending the same request to the same local server.
#
# Usage: bench/run_overhead.sh (from any directory)
#
# Builds target/release/flowrun, starts bench/http_server.py on a free port of
# 127.0.0.1 and runs hyperfine with --warmup 5 --runs 50. Then it prints the
# medians, their difference and the verdict against the 10 ms target, and
# exits 0 whether or not the target is met. The server is stopped on exit.
# Needs cargo, curl, python3 and hyperfine, and installs nothing.

set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

missing=0
for tool in hyperfine curl python3 cargo; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "error: $tool is not installed" >&2
        missing=1
    fi
done
if [[ $missing -ne 0 ]]; then
    echo "On Debian: apt-get update && apt-get install -y hyperfine curl python3" >&2
    echo "(hyperfine is also on crates.io: cargo install hyperfine)" >&2
    exit 1
fi

# Every request goes straight to 127.0.0.1, never through a proxy.
unset http_proxy HTTP_PROXY https_proxy HTTPS_PROXY all_proxy ALL_PROXY
export no_proxy=127.0.0.1,localhost NO_PROXY=127.0.0.1,localhost

work=$(mktemp -d)
server_pid=""
cleanup() {
    if [[ -n $server_pid ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "building target/release/flowrun" >&2
cargo build --release --quiet --bin flowrun
flowrun="$repo/target/release/flowrun"

python3 bench/http_server.py --port-file "$work/port" &
server_pid=$!
for _ in $(seq 100); do
    [[ -s $work/port ]] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "error: bench/http_server.py exited before writing its port" >&2
        exit 1
    fi
    sleep 0.05
done
if [[ ! -s $work/port ]]; then
    echo "error: the HTTP server wrote no port within 5 s" >&2
    exit 1
fi
port=$(cat "$work/port")
api="http://127.0.0.1:$port/api"

payload='{"claimNumber":"CLM-417-A","amount":1520.75,"member":"M-88213"}'
cat >"$work/entity.json" <<'JSON'
{"id": "C-417", "claim_number": "CLM-417-A", "amount": 1520.75, "member_id": "M-88213"}
JSON
cat >"$work/step.flow" <<'FLOW'
workflow "Run overhead"
let claims_api = "http://127.0.0.1:8080/api"
step "Send claim" {
  http POST "<<vars.claims_api>>/claims/<<entity.id>>" json {"claimNumber":"<<entity.claim_number>>","amount":<<entity.amount>>,"member":"<<entity.member_id>>"}
}
FLOW

cd "$work"
curl_cmd="curl -s -o /dev/null -X POST -H 'content-type: application/json' --data '$payload' $api/claims/C-417"
flowrun_cmd="$flowrun run step.flow --entity entity.json --var claims_api=$api"

# Run each command once and check its result before timing.
status=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'content-type: application/json' \
    --data "$payload" "$api/claims/C-417")
if [[ $status != 200 ]]; then
    echo "error: curl got status $status from the local server" >&2
    exit 1
fi
if ! "$flowrun" run step.flow --entity entity.json --var "claims_api=$api" >/dev/null 2>"$work/run.log"; then
    echo "error: flowrun run failed:" >&2
    cat "$work/run.log" >&2
    exit 1
fi

# With --shell=none, hyperfine starts no shell and sends all output to /dev/null.
# The `--version` commands measure program start-up alone, for reference.
hyperfine --shell=none --warmup 5 --runs 50 --export-json "$work/results.json" \
    --command-name curl "$curl_cmd" \
    --command-name flowrun "$flowrun_cmd" \
    --command-name "curl --version" "curl --version" \
    --command-name "flowrun --version" "$flowrun --version"

python3 - "$work/results.json" <<'PY'
import json
import sys

results = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
print()
print("| command | median (ms) | min (ms) | max (ms) | stddev (ms) |")
print("| --- | ---: | ---: | ---: | ---: |")
for name in ("curl", "flowrun", "curl --version", "flowrun --version"):
    result = results[name]
    print(f"| {name} | {result['median'] * 1e3:.2f} | {result['min'] * 1e3:.2f} "
          f"| {result['max'] * 1e3:.2f} | {result['stddev'] * 1e3:.2f} |")
difference = (results["flowrun"]["median"] - results["curl"]["median"]) * 1e3
verdict = "met" if difference < 10 else "not met"
print()
print(f"flowrun median minus curl median: {difference:.2f} ms (target under 10 ms: {verdict})")
PY
