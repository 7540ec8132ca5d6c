#!/usr/bin/env bash
# Smoke test for the OIDC fixture: starts provider.mjs on a free loopback port
# and walks the authorization-code + PKCE (S256) flow with curl, one redirect
# at a time, exactly as a non-JS client (e.g. a reqwest-based Rust test) would.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"
bash ./setup.sh

work=$(mktemp -d)
pid=
cleanup() {
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*" >&2
    if [[ -s $work/provider.err ]]; then
        echo "--- provider stderr ---" >&2
        cat "$work/provider.err" >&2
    fi
    exit 1
}
ok() { echo "ok: $*"; }

CLIENT_ID=ganymede-test
CLIENT_SECRET=ganymede-test-secret-0123456789
REDIRECT_URI=http://127.0.0.1:1/hub/oauth_callback   # never contacted

port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
ISSUER=http://127.0.0.1:$port

node provider.mjs --port "$port" --issuer "$ISSUER" \
    --client-id "$CLIENT_ID" --client-secret "$CLIENT_SECRET" \
    --redirect-uri "$REDIRECT_URI" --verbose \
    >"$work/provider.out" 2>"$work/provider.err" &
pid=$!

for _ in $(seq 1 100); do
    grep -q '^READY ' "$work/provider.out" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || fail "provider exited before READY"
    sleep 0.1
done
[[ $(cat "$work/provider.out") == "READY $port" ]] || fail "expected exactly 'READY $port' on stdout, got: $(cat "$work/provider.out")"
ok "provider pid $pid listening: $(cat "$work/provider.out")"

# req METHOD URL [curl args...]: sets STATUS and LOCATION (absolute), body in $work/body.
# Never follows redirects. Uses the cookie jar $JAR.
req() {
    local method=$1 url=$2
    shift 2
    local out
    out=$(curl -sS -X "$method" -o "$work/body" -D "$work/headers" \
        -b "$JAR" -c "$JAR" -w '%{http_code} %{redirect_url}' "$@" "$url")
    STATUS=${out%% *}
    LOCATION=${out#* }
    echo "  $method $url -> $STATUS${LOCATION:+ Location: $LOCATION}"
}

b64url() { node -e 'process.stdout.write(Buffer.from(require("fs").readFileSync(0)).toString("base64url"))'; }
query_param() { # query_param URL NAME
    node -e 'const v=new URL(process.argv[1]).searchParams.get(process.argv[2]); if(v===null) process.exit(1); process.stdout.write(v)' "$1" "$2"
}
json_field() { # json_field FILE NAME
    node -e 'const v=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"))[process.argv[2]]; if(v===undefined) process.exit(1); process.stdout.write(typeof v==="string"?v:JSON.stringify(v))' "$1" "$2"
}

curl -sS -f "$ISSUER/.well-known/openid-configuration" -o "$work/disco.json" || fail "discovery"
[[ $(json_field "$work/disco.json" issuer) == "$ISSUER" ]] || fail "discovery issuer"
AUTH=$(json_field "$work/disco.json" authorization_endpoint)
TOKEN=$(json_field "$work/disco.json" token_endpoint)
USERINFO=$(json_field "$work/disco.json" userinfo_endpoint)
JWKS=$(json_field "$work/disco.json" jwks_uri)
curl -sS -f "$JWKS" -o "$work/jwks.json" || fail "jwks"
ok "discovery: auth=$AUTH token=$TOKEN userinfo=$USERINFO jwks=$JWKS"

# login USER PASSWORD AUTH_METHOD(basic|post): full flow; leaves tokens in $work/token.json
login() {
    local user=$1 password=$2 method=$3
    JAR=$work/jar-$user
    rm -f "$JAR"
    local verifier challenge state nonce auth_url
    verifier=$(head -c 32 /dev/urandom | b64url)
    challenge=$(printf '%s' "$verifier" | openssl dgst -sha256 -binary 2>/dev/null | b64url) \
        || challenge=$(node -e 'process.stdout.write(require("crypto").createHash("sha256").update(process.argv[1]).digest("base64url"))' "$verifier")
    state=$(head -c 16 /dev/urandom | b64url)
    nonce=$(head -c 16 /dev/urandom | b64url)
    echo "== $user (token endpoint auth: client_secret_$method)"

    # 1. authorization request
    req GET "$AUTH" -G \
        --data-urlencode "client_id=$CLIENT_ID" \
        --data-urlencode "redirect_uri=$REDIRECT_URI" \
        --data-urlencode "response_type=code" \
        --data-urlencode "scope=openid profile email groups" \
        --data-urlencode "state=$state" \
        --data-urlencode "nonce=$nonce" \
        --data-urlencode "code_challenge=$challenge" \
        --data-urlencode "code_challenge_method=S256"
    [[ $STATUS == 303 && $LOCATION == "$ISSUER/interaction/"* ]] || fail "auth: expected 303 to interaction, got $STATUS $LOCATION"
    local interaction=$LOCATION

    # 2. login form
    req GET "$interaction"
    [[ $STATUS == 200 ]] || fail "interaction GET: $STATUS"
    grep -q 'name="login"' "$work/body" && grep -q 'name="password"' "$work/body" || fail "no login form"

    # 3. wrong password: form again with an error, 401
    req POST "$interaction" --data-urlencode "login=$user" --data-urlencode "password=wrong-$password"
    [[ $STATUS == 401 ]] || fail "wrong password: expected 401, got $STATUS"
    grep -q 'Invalid username or password' "$work/body" || fail "wrong password: no error shown"
    grep -q 'name="password"' "$work/body" || fail "wrong password: form not re-shown"
    ok "wrong password rejected (401, form re-shown with error)"

    # 4. correct password: 303 back to /auth/<uid>
    req POST "$interaction" --data-urlencode "login=$user" --data-urlencode "password=$password"
    [[ $STATUS == 303 && $LOCATION == "$AUTH/"* ]] || fail "login POST: expected 303 to $AUTH/<uid>, got $STATUS $LOCATION"

    # 5. resume: 303 to redirect_uri?code=...&state=...&iss=...
    req GET "$LOCATION"
    [[ $STATUS == 303 && $LOCATION == "$REDIRECT_URI?"* ]] || fail "resume: expected 303 to redirect_uri, got $STATUS $LOCATION"
    local code
    code=$(query_param "$LOCATION" code) || fail "no code in $LOCATION"
    [[ $(query_param "$LOCATION" state) == "$state" ]] || fail "state mismatch"
    [[ $(query_param "$LOCATION" iss) == "$ISSUER" ]] || fail "iss mismatch"
    ok "authorization code received"

    # 6. token exchange
    local auth_args=()
    if [[ $method == basic ]]; then
        auth_args=(-u "$CLIENT_ID:$CLIENT_SECRET")
    else
        auth_args=(--data-urlencode "client_id=$CLIENT_ID" --data-urlencode "client_secret=$CLIENT_SECRET")
    fi
    req POST "$TOKEN" "${auth_args[@]}" \
        --data-urlencode "grant_type=authorization_code" \
        --data-urlencode "code=$code" \
        --data-urlencode "redirect_uri=$REDIRECT_URI" \
        --data-urlencode "code_verifier=$verifier"
    [[ $STATUS == 200 ]] || fail "token: $STATUS $(cat "$work/body")"
    cp "$work/body" "$work/token.json"
    echo "  token response: $(node -e 'const t=JSON.parse(require("fs").readFileSync(0,"utf8")); for (const k of ["access_token","id_token"]) if (t[k]) t[k]=t[k].slice(0,12)+"..."; console.log(JSON.stringify(t))' <"$work/token.json")"

    # 7. id_token: verify RS256 signature against JWKS and print claims
    node -e '
        const fs = require("fs"), crypto = require("crypto");
        const [tokFile, jwksFile, iss, aud, nonce] = process.argv.slice(1);
        const { id_token } = JSON.parse(fs.readFileSync(tokFile, "utf8"));
        const [h, p, s] = id_token.split(".");
        const header = JSON.parse(Buffer.from(h, "base64url"));
        const claims = JSON.parse(Buffer.from(p, "base64url"));
        if (header.alg !== "RS256") throw new Error("alg " + header.alg);
        const jwk = JSON.parse(fs.readFileSync(jwksFile, "utf8")).keys.find((k) => k.kid === header.kid);
        const key = crypto.createPublicKey({ key: jwk, format: "jwk" });
        if (!crypto.verify("sha256", Buffer.from(h + "." + p), key, Buffer.from(s, "base64url"))) throw new Error("bad signature");
        if (claims.iss !== iss || claims.aud !== aud || claims.nonce !== nonce) throw new Error("iss/aud/nonce");
        console.log("  id_token header: " + JSON.stringify(header));
        console.log("  id_token claims: " + JSON.stringify(claims));
    ' "$work/token.json" "$work/jwks.json" "$ISSUER" "$CLIENT_ID" "$nonce" || fail "id_token check"
    ok "id_token signature (RS256) verified"

    # 8. userinfo
    local at
    at=$(json_field "$work/token.json" access_token)
    req GET "$USERINFO" -H "Authorization: Bearer $at"
    [[ $STATUS == 200 ]] || fail "userinfo: $STATUS"
    echo "  userinfo: $(cat "$work/body")"
    cp "$work/body" "$work/userinfo-$user.json"

    # 9. the code is single-use; replaying it also revokes the tokens it gave
    req POST "$TOKEN" "${auth_args[@]}" \
        --data-urlencode "grant_type=authorization_code" \
        --data-urlencode "code=$code" \
        --data-urlencode "redirect_uri=$REDIRECT_URI" \
        --data-urlencode "code_verifier=$verifier"
    [[ $STATUS == 400 && $(json_field "$work/body" error) == invalid_grant ]] || fail "code reuse: $STATUS $(cat "$work/body")"
    ok "second use of the code refused (400 invalid_grant)"
    req GET "$USERINFO" -H "Authorization: Bearer $at"
    [[ $STATUS == 401 ]] || fail "access token still valid after code replay: $STATUS"
    ok "access token revoked by the code replay (userinfo 401)"
}

expect_userinfo() { # USER SUB GROUPS_JSON
    local f=$work/userinfo-$1.json
    [[ $(json_field "$f" sub) == "$2" ]] || fail "$1 sub"
    [[ $(json_field "$f" email) == shared@example.org ]] || fail "$1 email"
    [[ $(json_field "$f" preferred_username) == "$1" ]] || fail "$1 preferred_username"
    [[ $(json_field "$f" groups) == "$3" ]] || fail "$1 groups"
    ok "$1 userinfo claims as expected"
}

login alice alice-pw basic
expect_userinfo alice sub-alice-0001 '["staff"]'
login bob bob-pw post
expect_userinfo bob sub-bob-0002 '["students"]'

# PKCE is required: an authorization request without code_challenge is refused
# (error redirected to the client's redirect_uri).
JAR=$work/jar-nopkce
req GET "$AUTH" -G --data-urlencode "client_id=$CLIENT_ID" --data-urlencode "redirect_uri=$REDIRECT_URI" \
    --data-urlencode "response_type=code" --data-urlencode "scope=openid" --data-urlencode "state=s"
[[ $STATUS == 303 && $(query_param "$LOCATION" error) == invalid_request ]] || fail "request without PKCE was not refused"
ok "authorization request without code_challenge refused (invalid_request)"

kill -TERM "$pid"
wait "$pid" 2>/dev/null && rc=0 || rc=$?
pid=
[[ $rc == 0 ]] || fail "provider exit status $rc after SIGTERM"
ok "provider stopped by SIGTERM"
echo "check.sh: all OIDC fixture checks passed"
