#!/usr/bin/env bash
# Logins per second through the login form (GET /hub/login for the _xsrf cookie, then
# POST username/password/_xsrf; a redirect is a success), Ganymede against JupyterHub
# 6.1.1 (PyPI), same machine, same run, interleaved round by round:
#   - dummy: any name, no password check (both hubs' DummyAuthenticator);
#   - native: passwords checked against a stored hash — Ganymede's native authenticator
#     (argon2id, the argon2 crate's defaults: m=19456 KiB, t=2, p=1, OWASP's minimum).
#     JupyterHub 6.1.1 has no working counterpart: jupyterhub-nativeauthenticator 1.3.0
#     (the latest) answers every login with a 500 on it (its LoginHandler still calls
#     the removed `self.statsd`), so its row is compared with JupyterHub's dummy logins —
#     an upper bound for any JupyterHub authenticator.
# Each login is a new session: Ganymede commits it through Raft (one replica, fsync on);
# JupyterHub writes it to SQLite. USERS distinct accounts are used round-robin.
#
#   benches/hubapi/logins.sh             ROUNDS=2 DURATION=10 THREADS=16 USERS=64
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-10}
THREADS=${THREADS:-16}
USERS=${USERS:-64}
TOKEN=bench-hub-token-$RANDOM$RANDOM$RANDOM

bash "$ROOT/benches/proxy/setup.sh"
VENV_BIN=$(bash "$ROOT/ops/venv.sh")
(cd "$ROOT" && cargo build --locked --quiet --bin ganymede)


# ganymede <name> <authenticator> → prints its base URL
ganymede() {
  local name=$1 authenticator=$2 api raft
  api=$(port); raft=$(port)
  cat > "$WORK/$name.toml" <<TOML
[hub]
node_id = 1
data_dir = "$WORK/$name"
api_bind = "127.0.0.1:$api"
raft_bind = "127.0.0.1:$raft"
log = "warn"
[cluster]
initial_members = [{ node_id = 1, raft_addr = "127.0.0.1:$raft", api_addr = "127.0.0.1:$api" }]
[auth]
authenticator = "$authenticator"
open_signup = true
allowed_failed_logins = 0
TOML
  GANYMEDE_ADMIN_TOKEN=$TOKEN "$BIN" hub --config "$WORK/$name.toml" > "$WORK/$name.log" 2>&1 & started $!
  wait_up "http://127.0.0.1:$api/hub/health"
  echo "http://127.0.0.1:$api"
}


declare -A BASE
BASE[ganymede.dummy]=$(ganymede g-dummy dummy)
BASE[ganymede.native]=$(ganymede g-native native)
BASE[jupyterhub.dummy]=$(jupyterhub j-dummy 'c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True')

# The login load: THREADS threads, each its own keep-alive connection, logging in
# round-robin as USERS accounts for DURATION seconds; prints logins/s and p99 ms.
LOAD=$(cat <<'PY'
import http.client, re, sys, threading, time, urllib.parse
mode, base, threads, duration, users = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
host = urllib.parse.urlparse(base)
PASSWORD = "bench-password-1"
def conn():
    return http.client.HTTPConnection(host.hostname, host.port, timeout=60)
def xsrf(c):
    c.request("GET", "/hub/login")
    r = c.getresponse(); r.read()
    for header, value in r.getheaders():
        if header.lower() == "set-cookie" and value.startswith("_xsrf="):
            return value.split(";")[0].split("=", 1)[1]
    raise RuntimeError("no _xsrf cookie")
def post(c, path, fields, token):
    body = urllib.parse.urlencode({**fields, "_xsrf": token})
    c.request("POST", path, body=body, headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": f"_xsrf={token}"})
    r = c.getresponse(); r.read()
    return r.status
if mode == "signup":
    c = conn()
    for i in range(users):
        status = post(c, "/hub/signup", {"username": f"bench{i}", "signup_password": PASSWORD,
                                           "signup_password_confirmation": PASSWORD}, xsrf(c))
        if status >= 400:
            raise SystemExit(f"sign-up of bench{i} at {base}: {status}")
    raise SystemExit(0)
ok, bad, latencies, lock = 0, 0, [], threading.Lock()
deadline = time.monotonic() + duration
def worker(n):
    global ok, bad
    c, i = conn(), n
    while time.monotonic() < deadline:
        start = time.monotonic()
        try:
            status = post(c, "/hub/login", {"username": f"bench{i % users}", "password": PASSWORD}, xsrf(c))
        except Exception:
            status, c = 599, conn()
        took = time.monotonic() - start
        with lock:
            if status in (302, 303): ok += 1; latencies.append(took)
            else: bad += 1
        i += threads
ts = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
[t.start() for t in ts]; [t.join() for t in ts]
latencies.sort()
p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else float("nan")
print(f"{ok / duration:.1f} {p99:.1f} {bad}")
PY
)

python3 -c "$LOAD" signup "${BASE[ganymede.native]}" 1 0 "$USERS"

declare -A R
for round in $(seq 1 "$ROUNDS"); do
  for target in ganymede.dummy jupyterhub.dummy ganymede.native; do
    out=$(python3 -c "$LOAD" login "${BASE[$target]}" "$THREADS" "$DURATION" "$USERS")
    R[$target]+="$out;"
    echo "round $round $target: [$out] (logins/s p99_ms failures)" >&2
  done
done

python3 - "${R[ganymede.dummy]}" "${R[jupyterhub.dummy]}" "${R[ganymede.native]}" \
  "$THREADS" "$DURATION" "$ROUNDS" <<'PY'
import json, statistics, sys
def med(raw):
    rows = [list(map(float, s.split())) for s in raw.strip(";").split(";")]
    return [statistics.median(col) for col in zip(*rows)]
gd, jd, gn = (med(a) for a in sys.argv[1:4])
threads, duration, rounds = sys.argv[4:7]
print(f"\nlogins through the form, {threads} threads x {duration}s, median of {rounds} interleaved rounds")
print(f"{'':30} {'ganymede':>10} {'jupyterhub':>11} {'ratio':>7}")
print(f"{'dummy logins/s':30} {gd[0]:10.1f} {jd[0]:11.1f} {gd[0]/jd[0]:6.1f}x")
print(f"{'dummy p99 ms':30} {gd[1]:10.1f} {jd[1]:11.1f}")
print(f"{'native (argon2id) logins/s':30} {gn[0]:10.1f} {jd[0]:11.1f} {gn[0]/jd[0]:6.1f}x  (vs JupyterHub's dummy)")
print(f"{'native p99 ms':30} {gn[1]:10.1f} {jd[1]:11.1f}")
print(f"failures: ganymede {gd[2]:.0f}/{gn[2]:.0f}, jupyterhub {jd[2]:.0f}")
print(json.dumps({"ganymede": {"dummy_per_s": gd[0], "dummy_p99_ms": gd[1], "native_per_s": gn[0], "native_p99_ms": gn[1]},
                  "jupyterhub": {"dummy_per_s": jd[0], "dummy_p99_ms": jd[1]}}))
PY
