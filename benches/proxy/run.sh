#!/usr/bin/env bash
# Proxy data path: the Ganymede edge against configurable-http-proxy 5.3.0 (npm) and an
# nginx reverse proxy (Debian; as many workers as the edge has runtime threads), all in
# front of the same upstream (nginx answering "ok"), under the same wrk load, interleaved
# round by round in one run. Prints req/s, p50 and p99 per proxy and the ratios.
#
#   benches/proxy/run.sh            2 rounds of 10 s each, wrk -t2 -c64
#   ROUNDS=3 DURATION=5s CONNS=64 ROUTES=0 benches/proxy/run.sh
#   ROUTES=10000 adds that many other routes to each proxy first (lookup cost).
#   WORKERS=1 runs nginx and the edge with that many workers (default: one per core).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
ROUTES=${ROUTES:-0}
THREADS=${WORKERS:-$(nproc)}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
TOKEN=bench-proxy-token-$RANDOM$RANDOM

bash "$ROOT/benches/proxy/setup.sh"
(cd "$ROOT" && cargo build --locked --quiet --bin ganymede)


UP=$(port); NG=$(port); CP=$(port); CA=$(port); EP=$(port)
HUB_API=$(port); HUB_RAFT=$(port); HUB_ROUTES=$(port); HUB_FEED=$(port); HUB_EVENTS=$(port)

cat > "$WORK/upstream.conf" <<NGINX
worker_processes 1;
daemon off;
pid $WORK/upstream.pid;
error_log $WORK/upstream.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP; location / { return 200 "ok"; } }
}
NGINX
cat > "$WORK/proxy.conf" <<NGINX
worker_processes $THREADS;
daemon off;
pid $WORK/proxy.pid;
error_log $WORK/proxy.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream up { server 127.0.0.1:$UP; keepalive 128; }
  server {
    listen 127.0.0.1:$NG;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
    }
  }
}
NGINX
"$NGINX" -c "$WORK/upstream.conf" -e "$WORK/upstream.err" & started $!
"$NGINX" -c "$WORK/proxy.conf" -e "$WORK/proxy.err" & started $!
CONFIGPROXY_AUTH_TOKEN=$TOKEN "$CHP" --ip 127.0.0.1 --port "$CP" --api-ip 127.0.0.1 --api-port "$CA" \
  --log-level error > "$WORK/chp.log" 2>&1 & started $!

cat > "$WORK/hub.toml" <<TOML
[hub]
node_id = 1
data_dir = "$WORK/hub"
api_bind = "127.0.0.1:$HUB_API"
raft_bind = "127.0.0.1:$HUB_RAFT"
log = "warn"
[cluster]
initial_members = [{ node_id = 1, raft_addr = "127.0.0.1:$HUB_RAFT", api_addr = "127.0.0.1:$HUB_API" }]
[proxy]
api_bind = "127.0.0.1:$HUB_ROUTES"
[events]
grpc_bind = "127.0.0.1:$HUB_FEED"
pub_bind = "127.0.0.1:$HUB_EVENTS"
TOML
cat > "$WORK/edge.toml" <<TOML
[edge]
bind = "127.0.0.1:$EP"
workers = $THREADS
metrics_bind = ""
log = "warn"
hubs = [{ api = "127.0.0.1:$HUB_API", grpc = "127.0.0.1:$HUB_FEED", events = "127.0.0.1:$HUB_EVENTS" }]
TOML
CONFIGPROXY_AUTH_TOKEN=$TOKEN "$BIN" hub --config "$WORK/hub.toml" > "$WORK/hub.log" 2>&1 & started $!
wait_up "http://127.0.0.1:$HUB_API/hub/health" 200 0.05
CONFIGPROXY_AUTH_TOKEN=$TOKEN "$BIN" edge --config "$WORK/edge.toml" > "$WORK/edge.log" 2>&1 & started $!

add_route() {  # api-port path target
  curl -sf -o /dev/null -X POST -H "Authorization: token $TOKEN" -d "{\"target\": \"$3\"}" "http://127.0.0.1:$1/api/routes$2"
}
for api in "$CA" "$HUB_ROUTES"; do
  for _ in $(seq 1 100); do add_route "$api" /user/bench "http://127.0.0.1:$UP" && break; sleep 0.1; done
done
if (( ROUTES > 0 )); then
  echo "adding $ROUTES routes to each proxy..." >&2
  python3 - "$CA" "$HUB_ROUTES" "$TOKEN" "$ROUTES" <<'PY'
import concurrent.futures, json, sys, urllib.request
chp, hub, token, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def add(args):
    port, i = args
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/routes/user/u{i}", method="POST",
        data=json.dumps({"target": f"http://127.0.0.1:{10000 + i % 50000}"}).encode(),
        headers={"Authorization": f"token {token}"})
    urllib.request.urlopen(req, timeout=30).read()
with concurrent.futures.ThreadPoolExecutor(32) as pool:
    list(pool.map(add, [(p, i) for p in (chp, hub) for i in range(n)]))
PY
fi
URL_PATH=/user/bench/api/status
wait_up "http://127.0.0.1:$UP$URL_PATH" 200 0.05
wait_up "http://127.0.0.1:$EP$URL_PATH" 200 0.05
wait_up "http://127.0.0.1:$CP$URL_PATH" 200 0.05
wait_up "http://127.0.0.1:$NG$URL_PATH" 200 0.05

# wrk's output → "req/s p50_ms p99_ms"
measure() {
  wrk -t2 -c"$CONNS" -d"$DURATION" --latency "http://127.0.0.1:$1$URL_PATH" | awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) } /^Requests\/sec/ { rps = $2 }
    /Non-2xx/ { bad = $NF } /Socket errors/ { errs = $0 }
    END { printf "%.0f %.2f %.2f %s\n", rps, p50, p99, (bad == "" ? 0 : bad) }'
}

declare -A RESULTS
for round in $(seq 1 "$ROUNDS"); do
  for target in ganymede chp nginx direct; do
    case $target in ganymede) p=$EP;; chp) p=$CP;; nginx) p=$NG;; direct) p=$UP;; esac
    line=$(measure "$p")
    RESULTS[$target]+="$line;"
    echo "round $round  $target: $line (req/s p50_ms p99_ms non2xx)" >&2
  done
done

python3 - "${RESULTS[ganymede]}" "${RESULTS[chp]}" "${RESULTS[nginx]}" "${RESULTS[direct]}" "$CONNS" "$DURATION" "$ROUNDS" "$ROUTES" <<'PY'
import statistics, sys
names = ["ganymede edge", "configurable-http-proxy 5.3.0", "nginx (reverse proxy)", "direct to upstream"]
rows = {}
for name, raw in zip(names, sys.argv[1:5]):
    samples = [list(map(float, s.split())) for s in raw.strip(";").split(";")]
    rows[name] = [statistics.median(col) for col in zip(*samples)]
conns, duration, rounds, routes = sys.argv[5:9]
print(f"\nwrk -t2 -c{conns} -d{duration}, median of {rounds} interleaved rounds, {routes} extra routes")
print(f"{'target':32} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
for name, (rps, p50, p99, bad) in rows.items():
    print(f"{name:32} {rps:9.0f} {p50:8.2f} {p99:8.2f} {bad:8.0f}")
g, c, n = rows[names[0]], rows[names[1]], rows[names[2]]
print(f"\nedge / CHP   req/s: {g[0] / c[0]:.2f}x   (goal >= 5x)")
print(f"edge / nginx req/s: {g[0] / n[0]:.2f}x   (goal >= 0.9x)")
print(f"edge / nginx p99:   {g[2] / n[2]:.2f}x   (goal <= 1.2x)")
PY
