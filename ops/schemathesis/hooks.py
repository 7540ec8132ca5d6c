"""Schemathesis hooks for ops/schemathesis/run.sh (loaded through SCHEMATHESIS_HOOKS).

1. Path parameters: schemathesis makes up names ("0", "\\x80", ...) that only ever reach a 404.
   Two in three generated path parameters are replaced with resources run.sh seeded:
   users alice/bob/carol, user erin (only ever deleted or renamed, never started, so that
   DELETE /users/{name} can succeed), groups staff/empty, alice's named servers gpu (may be
   started) and idle (never started, so PATCH and DELETE can succeed), one of alice's tokens,
   the admin service, and the token's secret for the deprecated GET /authorizations/token/{token}.

2. Bodies: the spec's request schemas allow any extra property and any string as a name, so
   nearly every generated body is a 400 and the 2xx answers go untested. For the operations
   below two bodies in three are replaced with ones JupyterHub accepts (valid names, no
   extra keys, recent timestamps). Only the fuzzing phase uses these strategies.

3. Re-seeding: fuzzed DELETE/PATCH calls delete or rename the seeds. After every successful
   DELETE/PATCH they are put back (idempotently). Token ids change when the token is made
   again; the current one replaces the placeholder "@seed-token" just before each call.

4. A check, jupyterhub_error_shape: every API error is JSON {"status", "message"} (contract §1).

The hub's URL and token come from the environment (GANYMEDE_SX_API, GANYMEDE_SX_TOKEN).
"""

from __future__ import annotations

import datetime
import json
import os
import threading
import urllib.error
import urllib.request

import schemathesis
from hypothesis import strategies as st

API = os.environ["GANYMEDE_SX_API"].rstrip("/")
TOKEN = os.environ["GANYMEDE_SX_TOKEN"]

USERS = ["alice", "bob", "carol"]
MORTAL_USERS = ["erin"]
GROUPS = {"staff": ["alice", "bob"], "empty": []}
NAMED_SERVERS = {"alice": ["gpu", "idle"]}
STARTABLE_SERVERS = ["gpu", "new-one"]  # "idle" stays stopped
TOKEN_OWNER = "alice"
TOKEN_PLACEHOLDER = "@seed-token"
SECRET_PLACEHOLDER = "@seed-token-secret"
SERVICES = ["admin"]

_lock = threading.Lock()
_state = {"token_id": None, "token": None}


def _request(method: str, path: str, body: object | None = None) -> tuple[int, object | None]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(API + path, data=data, method=method)
    request.add_header("Authorization", f"token {TOKEN}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as err:
        raw = err.read()
        status = err.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


def seed() -> None:
    """Make every seeded resource exist again; cheap when they all do."""
    with _lock:
        for name in USERS + MORTAL_USERS:
            status, user = _request("GET", f"/users/{name}?include_stopped_servers")
            if status == 404:
                _request("POST", f"/users/{name}")
                user = None
            for server in NAMED_SERVERS.get(name, []):
                if not user or server not in (user.get("servers") or {}):
                    _request("PUT", f"/users/{name}/servers/{server}")
        for group, members in GROUPS.items():
            status, model = _request("GET", f"/groups/{group}")
            if status == 404:
                _request("POST", f"/groups/{group}", {"users": members})
            elif members and set(members) - set((model or {}).get("users") or []):
                _request("POST", f"/groups/{group}/users", {"users": members})
        token_id = _state["token_id"]
        if token_id is None or _request("GET", f"/users/{TOKEN_OWNER}/tokens/{token_id}")[0] != 200:
            status, model = _request("POST", f"/users/{TOKEN_OWNER}/tokens", {"note": "schemathesis seed"})
            if status == 201 and isinstance(model, dict):
                _state["token_id"] = model.get("id")
                _state["token"] = model.get("token")


# --- 1. path parameters ---

_NEW_NAME = st.from_regex(r"\Asx-[a-z0-9]{1,8}\Z")  # a valid user name no seed uses
_SERVER_NAME = st.from_regex(r"\As[a-z0-9]{0,6}\Z")  # a valid server name, start with a letter


def _seeded(method: str, path: str, params: dict) -> dict:
    """Strategies for the path parameters of one operation, drawn from the seeds."""
    out = {key: st.just(value) for key, value in params.items()}
    if path.startswith("/users/{name}"):
        if path == "/users/{name}" and method == "DELETE":
            out["name"] = st.sampled_from(MORTAL_USERS)
        elif path == "/users/{name}" and method == "PATCH":
            out["name"] = st.sampled_from(USERS + MORTAL_USERS)
        else:
            out["name"] = st.sampled_from(USERS)
        if "server_name" in params:
            out["name"] = st.just("alice")
            if method == "POST":
                out["server_name"] = st.sampled_from(STARTABLE_SERVERS)
            elif method == "PUT":
                out["server_name"] = st.one_of(st.sampled_from(NAMED_SERVERS["alice"]), _SERVER_NAME)
            else:
                out["server_name"] = st.sampled_from(NAMED_SERVERS["alice"] + ["new-one"])
        if "token_id" in params:
            out["name"] = st.just(TOKEN_OWNER)
            out["token_id"] = st.just(TOKEN_PLACEHOLDER)
    elif path.startswith("/groups/{name}"):
        out["name"] = st.sampled_from(sorted(GROUPS))
    elif path.startswith("/services/{name}"):
        out["name"] = st.sampled_from(SERVICES)
    elif path == "/authorizations/token/{token}":
        out["token"] = st.just(SECRET_PLACEHOLDER)
    return out


@schemathesis.hook
def flatmap_path_parameters(context, path_parameters):
    if not path_parameters:
        return st.just(path_parameters)
    operation = context.operation
    seeded = st.fixed_dictionaries(_seeded(operation.method.upper(), operation.path, path_parameters))
    # Two draws in three go to the seeds.
    return st.one_of(st.just(path_parameters), seeded, seeded)


# --- 2. bodies JupyterHub accepts ---

_OPTIONS = st.dictionaries(st.sampled_from(["image", "profile", "cpu"]), st.text("abc", max_size=4), max_size=2)
_SERVER_REQUEST = st.fixed_dictionaries(
    {}, optional={"display_name": st.text("ABC xyz", max_size=12), "user_options": _OPTIONS}
)


def _recent() -> st.SearchStrategy:
    now = datetime.datetime.now(datetime.timezone.utc)
    return st.integers(0, 3600).map(
        lambda ago: (now - datetime.timedelta(seconds=ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    )


VALID_BODIES = {
    ("POST", "/users"): st.fixed_dictionaries(
        {"usernames": st.lists(_NEW_NAME, min_size=1, max_size=3, unique=True)}, optional={"admin": st.booleans()}
    ),
    ("PATCH", "/users/{name}"): st.fixed_dictionaries({}, optional={"admin": st.booleans(), "name": _NEW_NAME}),
    ("POST", "/users/{name}/activity"): st.builds(
        lambda at, server: {"last_activity": at, "servers": ({server: {"last_activity": at}} if server is not None else {})},
        _recent(),
        st.sampled_from([None, "gpu", "idle"]),
    ),
    ("POST", "/users/{name}/server"): _SERVER_REQUEST,
    ("POST", "/users/{name}/servers/{server_name}"): _SERVER_REQUEST,
    ("PUT", "/users/{name}/servers/{server_name}"): _SERVER_REQUEST,
    ("PATCH", "/users/{name}/servers/{server_name}"): st.fixed_dictionaries(
        {}, optional={"name": _SERVER_NAME, "display_name": st.text("ABC xyz", max_size=12), "user_options": _OPTIONS}
    ),
    ("DELETE", "/users/{name}/servers/{server_name}"): st.fixed_dictionaries({}, optional={"remove": st.booleans()}),
    ("POST", "/users/{name}/tokens"): st.fixed_dictionaries(
        {},
        optional={
            "note": st.text("abc ", max_size=10),
            "expires_in": st.sampled_from([None, 0, 60, 3600]),
            "scopes": st.lists(st.sampled_from(["read:users!user", "read:servers!user", "self", "inherit"]), max_size=2),
        },
    ),
    ("POST", "/groups/{name}/users"): st.fixed_dictionaries({"users": st.lists(st.sampled_from(USERS), max_size=2)}),
    ("DELETE", "/groups/{name}/users"): st.fixed_dictionaries({"users": st.lists(st.sampled_from(USERS), max_size=2)}),
    ("PUT", "/groups/{name}/properties"): st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 9), max_size=2),
}


@schemathesis.hook
def flatmap_body(context, body):
    operation = context.operation
    valid = VALID_BODIES.get((operation.method.upper(), operation.path))
    if valid is None:
        return st.just(body)
    # Two draws in three are valid bodies.
    return st.one_of(st.just(body), valid, valid)


# --- 3. placeholders and re-seeding ---


@schemathesis.hook
def before_call(context, case, **kwargs):
    params = case.path_parameters or {}
    wants_id = params.get("token_id") == TOKEN_PLACEHOLDER
    wants_secret = params.get("token") == SECRET_PLACEHOLDER
    if not (wants_id or wants_secret):
        return
    if _state["token_id"] is None:
        seed()
    if wants_id:
        params["token_id"] = _state["token_id"] or "a0"
    if wants_secret:
        params["token"] = _state["token"] or "0" * 32


@schemathesis.hook
def after_call(context, case, response):
    if case.method.upper() in ("DELETE", "PATCH") and response.status_code < 300:
        seed()


# --- 4. a contract check ---


@schemathesis.check
def jupyterhub_error_shape(ctx, response, case):
    """Contract §1 "Error body": an API error is always JSON {"status": <int>, "message": <str|null>},
    with `status` equal to the HTTP status. Not for /oauth2/*, where oauthlib answers
    {"error", "error_description"}. Successful (< 400) replies are not looked at."""
    if response.status_code < 400 or case.operation.path.startswith("/oauth2/"):
        return None
    content_type = ";".join(response.headers.get("content-type", [])).lower()
    body = response.content or b""
    try:
        model = json.loads(body) if body else None
    except ValueError:
        model = None
    if not isinstance(model, dict):
        raise AssertionError(
            f"{response.status_code} with a non-JSON error body (Content-Type: {content_type or 'none'}): "
            f"{body[:120].decode('utf-8', 'replace')!r}"
        )
    if model.get("status") != response.status_code or not (model.get("message") is None or isinstance(model.get("message"), str)):
        raise AssertionError(f"{response.status_code} error body is not {{status, message}}: {model!r}")
    return None


if __name__ == "__main__":
    # run.sh seeds through the same code before schemathesis starts.
    seed()
    print(f"seeded users {USERS + MORTAL_USERS}, groups {sorted(GROUPS)}, alice's servers {NAMED_SERVERS['alice']}, token {_state['token_id']}")
