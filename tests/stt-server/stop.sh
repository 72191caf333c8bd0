#!/usr/bin/env bash
# Stops the server that tests/stt-server/start.sh started, if it is running.
# The packages in target/stt-cache/ stay, so the next start is quick.
#
#   bash tests/stt-server/stop.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="$here/../../target/stt-cache"
pidfile="$cache/server.pid"

if [[ ! -f "$pidfile" ]]; then
  rm -f "$cache/server.env"
  exit 0
fi
pid="$(cat "$pidfile")"
# Only a live server.py process is ours, because the id may have been reused.
if [[ "$pid" =~ ^[0-9]+$ && -r "/proc/$pid/cmdline" ]] &&
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'stt-server/server\.py'; then
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  printf 'stt-server: stopped the server (pid %s)\n' "$pid" >&2
fi
rm -f "$pidfile" "$cache/server.env"
