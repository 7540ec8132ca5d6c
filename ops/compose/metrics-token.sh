#!/bin/sh
# Makes (once) the token Prometheus scrapes the hubs' /hub/metrics with, and writes it
# to $TOKEN_FILE. The hubs need read:metrics (JupyterHub's authenticate_prometheus);
# it is granted to the user "prometheus" by the hub config's "metrics" role, so the
# token can do nothing else. Idempotent: a token that still works is kept.
#
#   GANYMEDE_HUB_URL      any hub, e.g. http://ganymede:8081
#   GANYMEDE_ADMIN_TOKEN  the admin token the hubs were started with
#   TOKEN_FILE            where the token goes (default /run/secrets/ganymede-metrics-token)
set -eu

hub=${GANYMEDE_HUB_URL:?GANYMEDE_HUB_URL is not set}
admin=${GANYMEDE_ADMIN_TOKEN:?GANYMEDE_ADMIN_TOKEN is not set}
file=${TOKEN_FILE:-/run/secrets/ganymede-metrics-token}
user=${METRICS_USER:-prometheus}

api() {
  # -f: an HTTP error is a failure; the caller decides which failures are fine.
  curl -fsS --max-time 10 -H "Authorization: token $admin" "$@"
}

if [ -s "$file" ] && curl -fsS --max-time 10 -o /dev/null -H "Authorization: token $(cat "$file")" "$hub/hub/metrics"; then
  echo "metrics-token: $file still works"
  exit 0
fi

# The admin token is provisioned once a leader commits it: wait for that, not just for
# the API to answer.
tries=0
until api -o /dev/null "$hub/hub/api/user"; do
  tries=$((tries + 1))
  [ "$tries" -lt 120 ] || { echo "metrics-token: $hub did not accept the admin token within 2 minutes" >&2; exit 1; }
  sleep 1
done

# 409: the user exists already (an earlier run whose token file was lost).
status=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -H "Authorization: token $admin" -X POST "$hub/hub/api/users/$user")
case $status in
  201|409) ;;
  *) echo "metrics-token: creating user $user answered $status" >&2; exit 1 ;;
esac

body=$(api -X POST -d '{"scopes": ["read:metrics"], "note": "prometheus scrape"}' "$hub/hub/api/users/$user/tokens")
token=$(printf '%s' "$body" | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p')
[ -n "$token" ] || { echo "metrics-token: no token in the answer: $body" >&2; exit 1; }

umask 022
printf '%s' "$token" > "$file.tmp"
# Prometheus runs as another user (nobody) and only it mounts this volume.
chmod 0444 "$file.tmp"
mv "$file.tmp" "$file"
echo "metrics-token: wrote $file"
