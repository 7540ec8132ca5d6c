"""Writes a copy of JupyterHub 6.1.1's OpenAPI description corrected where the contract says
real JupyterHub behaves differently from its own spec (shared/reference/jupyterhub-contract.md:
"observed wins").

    python contract_spec.py IN.yml OUT.json

Only documented deviations are patched; each patch names the contract section that documents
it. run.sh tests the hub against both the pristine spec (pass "spec") and this one (pass
"contract"): a failure that only the first shows is a spec bug, not a hub bug.
"""

from __future__ import annotations

import json
import sys

import yaml


class _Loader(yaml.SafeLoader):
    """YAML without implicit timestamps: the spec's examples stay the strings they are."""


_Loader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def nullable(schema: dict) -> None:
    """Let a property also be null (OpenAPI 3.1: type lists; enums need null listed too)."""
    kind = schema.get("type")
    if isinstance(kind, str):
        schema["type"] = [kind, "null"]
    elif isinstance(kind, list) and "null" not in kind:
        kind.append("null")
    if "enum" in schema and None not in schema["enum"]:
        schema["enum"].append(None)


# (schema, property, where the contract says it can be null)
NULLABLE = [
    # §2 Models, User: "server (url|null), pending ("spawn"|"stop"|null) ... user_info (dict|null)";
    # "admin:auth_state → auth_state (a null placeholder in lists ...)"; §1 Timestamps: "A missing
    # value is null" (last_activity of a user who never did anything).
    ("User", "server"),
    ("User", "pending"),
    ("User", "last_activity"),
    ("User", "user_info"),
    ("User", "auth_state"),
    # §2 Models, Server: "After a stop, started is null"; pending is null when nothing is pending;
    # last_activity of a server never used is null (§1 Timestamps).
    ("Server", "started"),
    ("Server", "pending"),
    ("Server", "last_activity"),
    # §1 Tokens, Expiry: "Ordinary API tokens have no expiry unless expires_in is given"; the
    # spec's own descriptions say "Null if there is no expiry" / "Can be null if token has
    # never been used" while typing them as plain strings.
    ("Token", "expires_at"),
    ("Token", "last_activity"),
    ("NewToken", "expires_at"),
    ("NewToken", "last_activity"),
]


def patch(spec: dict) -> list[str]:
    notes = []
    schemas = spec["components"]["schemas"]
    for name, prop in NULLABLE:
        nullable(schemas[name]["properties"][prop])
        notes.append(f"{name}.{prop}: nullable")

    # §2 (c) Services: GET /services answers "an object {name: Service}", not an array.
    content = spec["paths"]["/services"]["get"]["responses"][200]["content"]["application/json"]
    content["schema"] = {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/Service"}}
    notes.append("GET /services: object keyed by service name")
    return notes


def main() -> None:
    source, target = sys.argv[1], sys.argv[2]
    with open(source, encoding="utf-8") as f:
        spec = yaml.load(f, Loader=_Loader)  # noqa: S506 (a SafeLoader)
    notes = patch(spec)
    spec["info"]["description"] = (
        spec["info"].get("description", "")
        + "\n\nPatched by ops/schemathesis/contract_spec.py: " + "; ".join(notes) + "."
    )
    with open(target, "w", encoding="utf-8") as f:
        json.dump(spec, f, indent=1)
    print(f"contract_spec.py: {len(notes)} patches -> {target}")


if __name__ == "__main__":
    main()
