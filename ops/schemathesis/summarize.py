"""Reads one schemathesis NDJSON event report and prints, per operation, what was sent and what
came back, and every distinct failing check with one reproducing curl (the smallest request).

    python summarize.py [--gate CHECK,CHECK] [--base-url URL] REPORT.ndjson

Exits 1 when a check named in --gate failed (run.sh's verdict), else 0. The curls name the
token as $TOKEN and the hub as $HUB (the base URL, e.g. http://127.0.0.1:8081/hub/api).
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import re
import shlex
import sys


PROBES = "~ methods the spec does not list (coverage phase's 405 probes)"


def decode(blob: dict | None) -> bytes:
    if not blob:
        return b""
    if "$base64" in blob:
        return base64.b64decode(blob["$base64"])
    return json.dumps(blob).encode()


def printable(text: str) -> str:
    """Control characters (NULs included) as escapes, so the summary stays a text file."""
    return "".join(ch if ch.isprintable() or ch in "\n" else ch.encode("unicode_escape").decode() for ch in text)


def signature(check: str, failure: dict) -> str:
    """What makes two failures the same finding: check, title, first line, schema location."""
    message = failure.get("message") or ""
    first = message.strip().splitlines()[0] if message.strip() else ""
    # Values differ run to run ("'x' is not of type ..."): keep the shape only.
    if len(first) > 120:
        first = first[:117] + "..."
    where = re.search(r"Schema at (\S+?):", message)
    status = re.search(r"status code (\d+)", message)
    parts = [check, failure.get("title", ""), first]
    if where:
        parts.append(where.group(1))
    if status:
        parts.append(f"[{status.group(1)}]")
    return " | ".join(parts)


def curl(request: dict, base_url: str | None) -> str:
    uri = request["uri"]
    if base_url and uri.startswith(base_url):
        uri = "$HUB" + uri[len(base_url):]
    words = ["curl", "-sS", "-i", "-X", request["method"], "-H", '"Authorization: token $TOKEN"']
    for name, values in (request.get("headers") or {}).items():
        if name.lower() in ("authorization", "user-agent", "x-schemathesis-testcaseid", "accept-encoding", "accept", "connection", "content-length"):
            continue
        for value in values:
            words += ["-H", shlex.quote(f"{name}: {value}")]
    body = decode(request.get("body"))
    if body:
        try:
            text = body.decode("utf-8")
            words += ["--data-binary", shlex.quote(text)]
        except UnicodeDecodeError:
            words += ["--data-binary", f"@<(printf %b {shlex.quote(repr(body)[2:-1])})"]
    words.append('"' + uri + '"' if uri.startswith("$HUB") else shlex.quote(uri))
    return " ".join(words)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gate", default="", help="checks whose failures fail the run")
    parser.add_argument("--base-url")
    parser.add_argument("report")
    args = parser.parse_args()
    gate = {name for name in args.gate.split(",") if name}

    statuses: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    probes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    failures: dict[str, dict[str, dict]] = collections.defaultdict(dict)
    seed = None
    with open(args.report, encoding="utf-8") as f:
        for line in f:
            event = json.loads(line)
            kind, data = next(iter(event.items()))
            if kind == "Initialize":
                seed = data.get("seed")
            if kind != "ScenarioFinished":
                continue
            recorder = data["recorder"]
            label = recorder["label"]
            for case_id, interaction in (recorder.get("interactions") or {}).items():
                response = interaction.get("response")
                method = interaction["request"]["method"]
                code = response["status_code"] if response else "no response"
                # Coverage also sends the other methods to probe for 405s; count them apart.
                if label.startswith(method + " "):
                    statuses[label][code] += 1
                else:
                    probes[label][f"{method}:{code}"] += 1
            for case_id, results in (recorder.get("checks") or {}).items():
                interaction = (recorder.get("interactions") or {}).get(case_id)
                if interaction is None:
                    continue
                method = interaction["request"]["method"]
                # Coverage's probes with methods the spec does not list: one group for all paths.
                group = label if label.startswith(method + " ") else PROBES
                for result in results:
                    if result.get("status") != "failure":
                        continue
                    failure = (result.get("failure_info") or {}).get("failure") or {}
                    sig = signature(result["name"], failure)
                    size = len(interaction["request"]["uri"]) + len(decode(interaction["request"].get("body")))
                    entry = failures[group].get(sig)
                    response = interaction.get("response") or {}
                    if entry is None:
                        entry = failures[group][sig] = {"check": result["name"], "count": 0, "size": None, "where": set()}
                    entry["count"] += 1
                    entry["where"].add(f"{method} {label.split(' ', 1)[1]}")
                    if entry["size"] is None or size < entry["size"]:
                        entry.update(
                            size=size,
                            message=failure.get("message", ""),
                            curl=curl(interaction["request"], args.base_url),
                            status=response.get("status_code"),
                            body=decode(response.get("content")).decode("utf-8", "replace"),
                        )

    print(f"seed: {seed}")
    print(f"\n## Responses per operation ({len(statuses)} operations; status x count)\n")
    for label in sorted(statuses):
        counts = ", ".join(f"{code}x{n}" for code, n in sorted(statuses[label].items(), key=lambda kv: str(kv[0])))
        print(f"  {label:50s} {counts}")
        if probes.get(label):
            print(f"  {'':50s} other methods: " + ", ".join(sorted(probes[label])))

    by_check = collections.Counter()
    print("\n## Distinct failures\n")
    for label in sorted(failures):
        print(f"### {label}")
        for sig, entry in sorted(failures[label].items()):
            by_check[entry["check"]] += 1
            print(printable(f"- {sig}  (seen {entry['count']}x)"))
            if label == PROBES:
                where = sorted(entry["where"])
                print(f"    on {len(where)} method+path pairs, e.g. " + ", ".join(where[:6]))
            print(printable(f"    {entry['curl']}"))
            body = printable(entry["body"]).replace("\n", "\\n")
            if len(body) > 400:
                body = body[:400] + "...(truncated)"
            print(f"    -> {entry['status']} {body}")
        print()
    if not failures:
        print("  none")
    print("## Distinct failures by check: " + (", ".join(f"{k}={v}" for k, v in sorted(by_check.items())) or "none"))
    gated = sum(n for check, n in by_check.items() if check in gate)
    if gate:
        print(f"## Gate ({','.join(sorted(gate))}): {'FAIL' if gated else 'pass'} ({gated} distinct failures)")
    return 1 if gated else 0


if __name__ == "__main__":
    sys.exit(main())
