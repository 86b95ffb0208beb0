#!/usr/bin/env bash
# Start the process list of deploy/README.md on this machine with real PostgreSQL and Redis
# (ports on 127.0.0.1), ingest a few messages, check they are triaged, that a worker
# delivered their webhooks and ran a backfill, then stop everything.
#
#   deploy/smoke.sh                     # uses .venv/bin/python, trains a model if none
#   PY=/path/python TRIAGE_MODEL_DIR=... deploy/smoke.sh
#
# Settings it reads (defaults for this machine): SMOKE_PG_URL (an existing database; a schema
# of its own is created and dropped), SMOKE_REDIS_URL. Exit status 0 when every check passed.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
PG_URL="${SMOKE_PG_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test}"
REDIS_URL="${SMOKE_REDIS_URL:-redis://127.0.0.1:6379/0}"
RUN="smoke$$$(date +%s)"
WORK="$(mktemp -d)"
PIDS=()

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
log() { echo "smoke: $*" >&2; }

cleanup() {
  status=$?
  for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  "$PY" - <<PYEOF || true
import redis, sqlalchemy
engine = sqlalchemy.create_engine("$PG_URL", isolation_level="AUTOCOMMIT")
with engine.connect() as conn:
    conn.exec_driver_sql('DROP SCHEMA IF EXISTS "$RUN" CASCADE')
client = redis.Redis.from_url("$REDIS_URL")
for key in client.scan_iter("$RUN:*"):
    client.delete(key)
PYEOF
  if [ $status -ne 0 ]; then for f in "$WORK"/*.log; do echo "--- $f" >&2; tail -n 30 "$f" >&2; done; fi
  rm -rf "$WORK"
  exit $status
}
trap cleanup EXIT INT TERM

"$PY" - <<PYEOF
import sqlalchemy
engine = sqlalchemy.create_engine("$PG_URL", isolation_level="AUTOCOMMIT")
with engine.connect() as conn:
    conn.exec_driver_sql('CREATE SCHEMA "$RUN"')
PYEOF

RECEIVER_PORT="$(free_port)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export TRIAGE_DATABASE_URL="$PG_URL?options=-csearch_path%3D$RUN"
export TRIAGE_BROKER_URL="$REDIS_URL" TRIAGE_BROKER_NAMESPACE="$RUN"
export TRIAGE_VAR_DIR="$WORK/var" TRIAGE_MODEL_DIR="${TRIAGE_MODEL_DIR:-$ROOT/var/models}"
export TRIAGE_WEBHOOK_URL="http://127.0.0.1:$RECEIVER_PORT/hook" TRIAGE_WEBHOOK_SECRET="smoke-secret"
export TRIAGE_SLA_MONITOR_INTERVAL_S=2 TRIAGE_WEBHOOK_POLL_INTERVAL_S=0.5

start() {  # name, command...: each process in its own group, logs in $WORK
  local name=$1; shift
  setsid "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=("$!")
}

TRIAGE=("$PY" -m triage.cli)
"${TRIAGE[@]}" ensure-model >"$WORK/model.log" 2>&1
"${TRIAGE[@]}" users add smoke --role integration >/dev/null
TOKEN="$("${TRIAGE[@]}" keys create smoke --scope ingest)"

# a webhook receiver that writes every delivery it gets to a file
start receiver "$PY" -c "
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers['Content-Length']))
        with open('$WORK/webhooks.jsonl', 'ab') as f: f.write(body + b'\n')
        self.send_response(200); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(('127.0.0.1', $RECEIVER_PORT), H).serve_forever()"

# the process list (deploy/README.md): two API processes, a scheduler, a worker for the
# default queue and one for retraining
API1="$(free_port)"; API2="$(free_port)"
start api1 "${TRIAGE[@]}" serve --host 127.0.0.1 --port "$API1" --log-level warning
start api2 "${TRIAGE[@]}" serve --host 127.0.0.1 --port "$API2" --log-level warning
start scheduler "${TRIAGE[@]}" scheduler
start worker "${TRIAGE[@]}" worker --queue default --threads 4
start worker-retrain "${TRIAGE[@]}" worker --queue retrain --threads 1

for port in "$API1" "$API2"; do
  for i in $(seq 120); do
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break
    [ "$i" = 120 ] && { log "API on $port not ready"; exit 1; }
    sleep 0.5
  done
done
log "API processes ready on $API1 and $API2"

n=0
for port in "$API1" "$API2" "$API1"; do
  n=$((n + 1))
  reply="$(curl -fsS -X POST "http://127.0.0.1:$port/v1/messages" -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' \
    -d "{\"source\":\"smoke\",\"external_id\":\"m$n\",\"text\":\"耳机左边没有声音了，第${n}次联系客服，要求换货\"}")"
  echo "$reply" | "$PY" -c 'import json,sys; c=json.load(sys.stdin)["case"]; assert c["grade"] in (1,2,3) and c["dispute_type"], c' \
    || { log "message $n not triaged: $reply"; exit 1; }
done
log "3 messages triaged"

for i in $(seq 60); do
  got=$(grep -c '"event":"triaged"' "$WORK/webhooks.jsonl" 2>/dev/null || true)
  [ "${got:-0}" -ge 3 ] && break
  [ "$i" = 60 ] && { log "the worker delivered ${got:-0} of 3 webhooks"; exit 1; }
  sleep 0.5
done
log "a worker delivered the 3 triaged webhooks"

printf '%s\n' '{"source":"archive","external_id":"a1","text":"快递三天还没到"}' \
  '{"source":"archive","external_id":"a2","text":"充电器插上就冒烟，太危险了"}' >"$WORK/archive.jsonl"
report="$(timeout 60 "${TRIAGE[@]}" backfill "$WORK/archive.jsonl" --chunk-size 1)"
echo "$report" | "$PY" -c 'import json,sys; r=json.load(sys.stdin); assert r["status"]=="done" and r["created"]==2, r' \
  || { log "backfill through the workers failed: $report"; exit 1; }
log "the workers ran a 2-chunk backfill"
log "ok"
