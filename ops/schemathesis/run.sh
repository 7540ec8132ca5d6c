#!/usr/bin/env bash
# Property-based API testing of one Ganymede hub against JupyterHub 6.1.1's OpenAPI description
# (shared/reference/jupyterhub-rest-api.yml) with schemathesis (ops/schemathesis/requirements.txt).
#
#   ops/schemathesis/run.sh
#
# For each pass it starts a fresh single-member hub on free loopback ports with a temporary data
# dir, waits for /hub/api, seeds users alice/bob/carol/erin, groups staff/empty, alice's named
# servers gpu and idle and one of alice's tokens (hooks.py steers most generated path parameters
# and bodies at them and puts them back after a fuzzed DELETE/PATCH), runs schemathesis with the
# admin token, stops the hub by PID and summarizes the NDJSON report (summarize.py). Passes:
#
#   spec      the pristine spec; checks not_a_server_error + response_schema_conformance.
#             Only a server error fails the run: schema failures here include the spec's own
#             bugs (see contract).
#   contract  the spec corrected where shared/reference/jupyterhub-contract.md documents that
#             real JupyterHub answers differently (contract_spec.py); the same checks plus
#             jupyterhub_error_shape (hooks.py: every API error is JSON {status, message}, contract
#             §1); any failure fails the run. A schema failure only `spec` shows is a spec bug.
#   status    status_code_conformance alone, on the corrected spec. Informational: the spec
#             documents almost no 4xx, so every 400/404/409 is "undocumented"
#             (SX_GATE_STATUS=1 makes it fail the run too).
#
# Exit status: 0 all gates passed, 1 a gate failed, 2 the harness itself failed (no venv, no hub).
# Reports (JUnit XML, NDJSON, summary.txt, the hub's log) stay in the printed directory.
#
# Environment:
#   GANYMEDE_BIN      the ganymede binary (default ~/.cache/ganymede/target/debug/ganymede)
#   SX_PASSES         which passes, in order (default "spec contract status")
#   SX_MAX_EXAMPLES   test cases per operation and phase (default 25)
#   SX_BUDGET         seconds for all schemathesis runs together; each is interrupted (SIGINT:
#                     it still writes its reports) when its share is spent (default 240)
#   SX_SEED           hypothesis seed, for comparable runs (default 20261126; "random" for none)
#   SX_WORKERS        schemathesis workers (default 1: the machine has 2 cores)
#   SX_OUT            where reports go (default a new /tmp/ganymede-schemathesis.XXXXXX)
#   SX_SPEC           the OpenAPI file (default <repo>/../shared/reference/jupyterhub-rest-api.yml)
#   SX_GATE_STATUS    1: status_code_conformance failures fail the run too
#   SX_VENV           the venv (default <repo>/.venv-schemathesis); PYTHON makes it (python3)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${GANYMEDE_BIN:-$HOME/.cache/ganymede/target/debug/ganymede}
VENV=${SX_VENV:-$ROOT/.venv-schemathesis}
REQS=$HERE/requirements.txt
SPEC=${SX_SPEC:-$ROOT/../shared/reference/jupyterhub-rest-api.yml}
PASSES=${SX_PASSES:-spec contract status}
MAX_EXAMPLES=${SX_MAX_EXAMPLES:-25}
BUDGET=${SX_BUDGET:-240}
SEED=${SX_SEED:-20261126}
WORKERS=${SX_WORKERS:-1}
GATE_STATUS=${SX_GATE_STATUS:-0}

die() { echo "schemathesis/run.sh: $*" >&2; exit 2; }

[[ -x $BIN ]] || die "no ganymede binary at $BIN (build it, or set GANYMEDE_BIN)"
[[ -f $SPEC ]] || die "no OpenAPI description at $SPEC (set SX_SPEC)"
command -v curl >/dev/null || die "curl is needed"

# --- the venv: created once, reinstalled only when requirements.txt changes (as ops/venv.sh) ---
if [[ ! -x $VENV/bin/python ]]; then
  echo "run.sh: creating $VENV" >&2
  "${PYTHON:-python3}" -m venv "$VENV" || die "cannot create $VENV (python3-venv missing?)"
fi
stamp=$VENV/.requirements.sha256
want=$(sha256sum "$REQS" | cut -d' ' -f1)
if [[ ! -s $stamp || $(cat "$stamp") != "$want" ]]; then
  echo "run.sh: installing $(grep -v '^#' "$REQS" | grep -c .) pinned package(s) into $VENV" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS" >&2 || die "pip install failed"
  echo "$want" > "$stamp"
fi
PY=$VENV/bin/python
ST=$VENV/bin/schemathesis

OUT=${SX_OUT:-$(mktemp -d /tmp/ganymede-schemathesis.XXXXXX)}
mkdir -p "$OUT"
TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
HUB_PID=""

# --- one hub: single-member cluster, fresh data dir, free loopback ports ---
free_ports() {
  "$PY" -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()'
}

start_hub() {
  local dir=$1 api_port raft_port
  read -r api_port raft_port < <(free_ports)
  mkdir -p "$dir"
  # Servers are the test single-user server (they start in milliseconds; the API is what
  # is tested), built beside the hub binary; without it, no spawner at all.
  local spawner='kind = "none"'
  local test_server
  test_server=$(dirname "$BIN")/ganymede-test-singleuser
  if [[ -x $test_server ]]; then
    spawner="cmd = [\"$test_server\"]
stop_timeout = \"1s\""
  fi
  cat > "$dir/hub.toml" <<TOML
# Written by ops/schemathesis/run.sh
[hub]
node_id = 1
data_dir = "$dir/data"
api_bind = "127.0.0.1:$api_port"
raft_bind = "127.0.0.1:$raft_port"
log = "info"

[cluster]
initial_members = [
  { node_id = 1, raft_addr = "127.0.0.1:$raft_port", api_addr = "127.0.0.1:$api_port" },
]

[servers]
# Start and stop requests answer 202 after this instead of waiting the default 10 s.
slow_spawn_timeout = "200ms"
slow_stop_timeout = "200ms"

[spawner]
$spawner
TOML
  # Only our config: no GANYMEDE_* override from the caller's environment (they beat the file),
  # and no CONFIGPROXY_AUTH_TOKEN, so the routes API and edge feed (two more ports) stay off.
  local unset=(-u CONFIGPROXY_AUTH_TOKEN)
  local name
  while read -r name; do unset+=(-u "$name"); done < <(env | grep -o '^GANYMEDE_[A-Z0-9_]*' || true)
  env "${unset[@]}" GANYMEDE_ADMIN_TOKEN="$TOKEN" "$BIN" hub --config "$dir/hub.toml" > "$dir/hub.log" 2>&1 &
  HUB_PID=$!
  API=http://127.0.0.1:$api_port/hub/api
  # Answering /hub/api is not enough: the admin token must be provisioned (needs a leader).
  local deadline=$((SECONDS + 60))
  until [[ $(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: token $TOKEN" "$API/user") == 200 ]]; do
    kill -0 "$HUB_PID" 2>/dev/null || { tail -20 "$dir/hub.log" >&2; die "the hub exited; log: $dir/hub.log"; }
    (( SECONDS < deadline )) || die "the hub did not answer within 60 s; log: $dir/hub.log"
    sleep 0.2
  done
}

stop_hub() {
  [[ -n $HUB_PID ]] || return 0
  local pid=$HUB_PID
  HUB_PID=""
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
trap stop_hub EXIT
trap 'exit 130' INT TERM

# --- operations left out, each for a reason ---
# JupyterHub 5's sharing (/shares/{owner}[/{server_name}], /share-codes/{owner}[/{server_name}],
# /users/{name}/shared[/{owner}/{server_name}], /groups/{name}/shared[/{owner}/{server_name}]):
# not implemented by Ganymede yet; every such path is the API's JSON 404.
EXCLUDE_PATHS='^/(shares|share-codes)/|^/(users|groups)/\{name\}/shared'
# POST /shutdown: implemented, and it stops the replica that takes it (202, then the process
# exits), which would end the run.
# PATCH /proxy: JupyterHub's "point the hub at another proxy" ({api_url, auth_token}).
# Ganymede's edges subscribe to the replicated route events; there is no proxy to
# repoint, so the hub answers 405 (JSON) rather than a 200 that would change nothing.
EXCLUDE_OPS=(post-shutdown patch-proxy)

# Contract-corrected copy of the spec.
CONTRACT_SPEC=$OUT/jupyterhub-rest-api.contract.json
"$PY" "$HERE/contract_spec.py" "$SPEC" "$CONTRACT_SPEC" >&2

seed_args=()
[[ $SEED == random ]] || seed_args=(--seed "$SEED")

read -r -a pass_list <<< "$PASSES"
started=$SECONDS
deadline=$((SECONDS + BUDGET))
verdict=0
results=()
for i in "${!pass_list[@]}"; do
  pass=${pass_list[$i]}
  case $pass in
    spec) spec=$SPEC; checks=not_a_server_error,response_schema_conformance; gate=not_a_server_error ;;
    contract)
      spec=$CONTRACT_SPEC; checks=not_a_server_error,response_schema_conformance,jupyterhub_error_shape; gate=$checks ;;
    status)
      spec=$CONTRACT_SPEC; checks=status_code_conformance
      if [[ $GATE_STATUS == 1 ]]; then gate=$checks; else gate=""; fi ;;
    *) die "unknown pass '$pass' (known: spec contract status)" ;;
  esac
  left=$((deadline - SECONDS))
  share=$((left / (${#pass_list[@]} - i)))
  if (( share < 20 )); then
    results+=("$pass: skipped, time budget spent")
    verdict=1
    continue
  fi
  dir=$OUT/$pass
  start_hub "$dir"
  GANYMEDE_SX_API=$API GANYMEDE_SX_TOKEN=$TOKEN "$PY" "$HERE/hooks.py" >&2
  echo "run.sh: pass '$pass' against $API (checks $checks, at most ${share}s)" >&2
  rc=0
  (
    cd "$dir"
    GANYMEDE_SX_API=$API GANYMEDE_SX_TOKEN=$TOKEN SCHEMATHESIS_HOOKS=$HERE/hooks.py \
      timeout -s INT -k 15 "$share" "$ST" run "$spec" \
      --url "$API" \
      --header "Authorization: token $TOKEN" \
      --checks "$checks" \
      --phases examples,coverage,fuzzing \
      --max-examples "$MAX_EXAMPLES" \
      --continue-on-failure \
      --exclude-path-regex "$EXCLUDE_PATHS" \
      "${EXCLUDE_OPS[@]/#/--exclude-operation-id=}" \
      --generation-with-security-parameters false \
      --generation-database none \
      --request-timeout 15 \
      --workers "$WORKERS" \
      "${seed_args[@]}" \
      --report junit,ndjson \
      --report-dir "$dir/report" \
      --report-junit-path "$dir/report/junit.xml" \
      --report-ndjson-path "$dir/report/events.ndjson" \
      --no-color
  ) > "$dir/schemathesis.txt" 2>&1 || rc=$?
  stop_hub
  rm -rf "$dir/data"
  # 124: interrupted at its time share (the reports are still written).
  grep -E '^(API Operations|  (Selected|Tested):|=+ .* in [0-9.]+s =+$)' "$dir/schemathesis.txt" | sed "s/^/  [$pass] /" >&2 || true
  if [[ ! -s $dir/report/events.ndjson ]]; then
    results+=("$pass: schemathesis exited $rc without a report; see $dir/schemathesis.txt")
    verdict=2
    continue
  fi
  gate_rc=0
  "$PY" "$HERE/summarize.py" --gate "$gate" --base-url "$API" "$dir/report/events.ndjson" > "$dir/summary.txt" || gate_rc=$?
  line=$(grep '^## Distinct failures by check' "$dir/summary.txt" | sed 's/^## Distinct failures by check: //')
  tested=$(grep -Eo 'Tested: [0-9]+' "$dir/schemathesis.txt" | grep -Eo '[0-9]+' || echo "?")
  note=""
  (( rc == 124 )) && note=" (interrupted at its time share)"
  if (( gate_rc != 0 )); then
    results+=("$pass: FAIL  operations tested $tested; distinct failures: $line$note")
    (( verdict == 2 )) || verdict=1
  else
    if [[ -n $gate ]]; then note=" (gate: $gate)$note"; else note=" (informational)$note"; fi
    results+=("$pass: ok    operations tested $tested; distinct failures: $line$note")
  fi
done

echo
echo "schemathesis $("$ST" --version | grep -Eo '[0-9]+(\.[0-9]+)+') against $BIN, ${MAX_EXAMPLES} examples per operation, seed ${SEED}, $((SECONDS - started)) s"
for r in "${results[@]}"; do echo "  $r"; done
echo "reports: $OUT/<pass>/{summary.txt,schemathesis.txt,report/junit.xml,report/events.ndjson,hub.log}"
exit "$verdict"
