#!/usr/bin/env bash
# Stops the server that tests/llm-server/start.sh started, if it is running.
# The caches in target/llm-cache/ stay, so the next start is quick.
#
#   bash tests/llm-server/stop.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="$here/../../target/llm-cache"
pidfile="$cache/server.pid"

say() { printf 'llm-server: %s\n' "$*" >&2; }

if [[ ! -f "$pidfile" ]]; then
  say "no server to stop"
  rm -f "$cache/server.env"
  exit 0
fi

pid="$(cat "$pidfile")"
# Only a live server.mjs process is ours, because the id may have been reused.
if [[ "$pid" =~ ^[0-9]+$ && -r "/proc/$pid/cmdline" ]] &&
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'server\.mjs'; then
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "pid $pid did not stop within 10 s; killing it"
    kill -9 "$pid" 2>/dev/null || true
  fi
  say "stopped the server (pid $pid)"
else
  say "the server (pid $pid) was not running"
fi
rm -f "$pidfile" "$cache/server.env"
