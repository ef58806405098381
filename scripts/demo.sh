#!/usr/bin/env bash
# Start the embedded service (SQLite, no servers needed), run `calib demo` against it, stop it,
# and say how to bring it back to look at what the demo made.
set -euo pipefail
VENV=${VENV:-.venv}
PORT=${CALIB_DEMO_PORT:-8000}
"$VENV/bin/calib" up --port "$PORT" > "${TMPDIR:-/tmp}/calib-demo-service.log" 2>&1 &
service=$!
trap 'kill -TERM $service 2>/dev/null; wait $service 2>/dev/null || true' EXIT
"$VENV/bin/calib" demo --url "http://127.0.0.1:$PORT" --wait-ready 120
kill -TERM $service 2>/dev/null; wait $service 2>/dev/null || true
trap - EXIT
data_dir=$("$VENV/bin/python" -c 'from shared.runtime.settings import get_settings; print(get_settings().data_dir)')
cat <<TEXT

The demo's service has stopped; what it made is kept in $data_dir.
To look at it in the dashboard:
  $VENV/bin/calib up --port $PORT     # the same embedded service, until Ctrl-C
  then open http://127.0.0.1:$PORT/ui/instruments/TT-103 and log in with the token in $data_dir/token
TEXT
