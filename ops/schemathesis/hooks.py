"""Schemathesis hooks for ops/schemathesis/run.sh (loaded through SCHEMATHESIS_HOOKS).

Two jobs:

1. Path parameters: schemathesis makes up names ("0", "\\x80", ...), which only ever reach a
   404. Half of the generated path parameters are replaced with resources that run.sh seeded
   (users alice/bob/carol, groups staff/empty, alice's named server gpu, one of alice's tokens,
   the admin service), so the 200/201/204 paths and their response schemas get exercised too.

2. Re-seeding: fuzzed DELETE/PATCH calls delete or rename the seeded resources. After every
   successful mutating call the seeds are put back (idempotently), so later cases still hit
   something. Token ids change when a token is re-created; the current one is substituted for
   the placeholder "@seed-token" just before each call.

The hub's URL and token come from the environment (GANYMEDE_SX_API, GANYMEDE_SX_TOKEN).
"""

from __future__ import annotations

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
GROUPS = {"staff": ["alice", "bob"], "empty": []}
NAMED_SERVERS = {"alice": ["gpu"]}
TOKEN_OWNER = "alice"
TOKEN_PLACEHOLDER = "@seed-token"
SERVICES = ["admin"]

_lock = threading.Lock()
_state = {"token_id": None}


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
        for name in USERS:
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


def _seeded(path: str, params: dict) -> dict:
    """Candidate replacements for the path parameters of one operation."""
    out = dict(params)
    if path.startswith("/users/{name}"):
        out["name"] = st.sampled_from(USERS)
        if "server_name" in params:
            out["name"] = st.just("alice")
            out["server_name"] = st.sampled_from(NAMED_SERVERS["alice"] + ["new-one"])
        if "token_id" in params:
            out["name"] = st.just(TOKEN_OWNER)
            out["token_id"] = st.just(TOKEN_PLACEHOLDER)
    elif path.startswith("/groups/{name}"):
        out["name"] = st.sampled_from(sorted(GROUPS))
    elif path.startswith("/services/{name}"):
        out["name"] = st.sampled_from(SERVICES)
    return out


@schemathesis.hook
def flatmap_path_parameters(context, path_parameters):
    if not path_parameters:
        return st.just(path_parameters)
    path = context.operation.path
    candidates = _seeded(path, path_parameters)
    seeded = st.fixed_dictionaries(
        {key: (value if isinstance(value, st.SearchStrategy) else st.just(value)) for key, value in candidates.items()}
    )
    return st.one_of(st.just(path_parameters), seeded)


@schemathesis.hook
def before_call(context, case, **kwargs):
    params = case.path_parameters
    if params and params.get("token_id") == TOKEN_PLACEHOLDER:
        if _state["token_id"] is None:
            seed()
        params["token_id"] = _state["token_id"] or "a0"


@schemathesis.hook
def after_call(context, case, response):
    if case.method.upper() in ("DELETE", "PATCH") and response.status_code < 300:
        seed()


if __name__ == "__main__":
    # run.sh seeds through the same code before schemathesis starts.
    seed()
    print(f"seeded users {USERS}, groups {sorted(GROUPS)}, alice/gpu, token {_state['token_id']}")
