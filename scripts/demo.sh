#!/usr/bin/env bash
# Start the embedded service (SQLite, no servers needed), run `calib demo` against it, stop it.
set -euo pipefail
VENV=${VENV:-.venv}
PORT=${CALIB_DEMO_PORT:-8000}
"$VENV/bin/calib" up --port "$PORT" > "${TMPDIR:-/tmp}/calib-demo-service.log" 2>&1 &
service=$!
trap 'kill -TERM $service 2>/dev/null; wait $service 2>/dev/null || true' EXIT
"$VENV/bin/calib" demo --url "http://127.0.0.1:$PORT" --wait-ready 120
