#!/usr/bin/env python3
"""Checks Ganymede's deployable files where neither Docker nor Kubernetes runs.

    check_manifests.py --root <repo> [--ganymede <binary>] [--no-schemas]

What it checks, and why each matters (a mistake here is only found at deploy time):

ops/docker/Dockerfile   multi-stage; the builder runs `cargo build --release --locked
                        --bin ganymede` with libclang; COPY sources exist and are not
                        ignored; COPY --from names an earlier stage; the runtime targets
                        (hub, edge) have tini as ENTRYPOINT, a non-root USER, a HEALTHCHECK
                        whose tool is installed, EXPOSE and a VOLUME holding data_dir; the
                        hub has jupyterhub-singleuser (pinned JupyterHub/JupyterLab) on PATH.
ops/compose/            references resolve (depends_on, network_mode, volumes, bind
                        mounts, build files); images are pinned; hubs have distinct node
                        ids and data volumes; initial_members and the edges' hubs match the
                        hubs' addresses; no two processes sharing a network namespace bind
                        one port; health checks probe the right ports; secrets only by
                        `${VAR:?}` with VAR in env.example; Prometheus' targets, rule files
                        and token file, and Grafana's provisioning and dashboard paths exist.
ops/k8s/                every core object against the Kubernetes API schemas
                        (kubernetes-validate, strict, offline); the ServiceMonitors (a CRD)
                        structurally; selectors match pods, named ports exist, the
                        StatefulSet has its headless Service, claim templates, per-replica
                        Services, readiness on /hub/health and a PDB; the HPA targets the
                        edge Deployment; ConfigMap files the pods run exist; the start
                        scripts, run with stand-ins for getent and ganymede, give node ids
                        and ip:port peers; the kustomization lists every file.
ops/grafana/ganymede.json  panels have targets with PromQL that promtool accepts.
Everywhere              with --ganymede: every TOML key and GANYMEDE_* variable is one the
                        binary knows, and every hub and edge configuration is started once
                        by the real binary (loopback, port 0, a temporary data dir) until it
                        logs that it listens.

Exit status 1 with every problem listed; 0 when there is none.
"""

from __future__ import annotations

import argparse
import fnmatch
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import traceback
from pathlib import Path

import yaml

# Secrets and switches read from the environment besides GANYMEDE_<SECTION>_<KEY>.
ENV_EXTRAS = {
    "GANYMEDE_ADMIN_TOKEN",
    "GANYMEDE_AUTHENTICATOR",
    "GANYMEDE_DUMMY_PASSWORD",
    "GANYMEDE_OIDC_CLIENT_SECRET",
    "GANYMEDE_LDAP_SEARCH_PASSWORD",
    "GANYMEDE_HUB_URL",  # the `ganymede cluster` CLI and metrics-token.sh
}
# The jobs ops/prometheus/alerts.yml and ops/grafana/ganymede.json select on.
JOBS = {"ganymede-hub", "ganymede-edge"}
HUB_PINS = {"jupyterhub": "6.1.1", "jupyterlab": "4.6.6"}


class Problems:
    def __init__(self) -> None:
        self.items: list[str] = []
        self.notes: list[str] = []

    def add(self, where: str, message: str) -> None:
        item = f"{where}: {message}"
        if item not in self.items:
            self.items.append(item)

    def note(self, message: str) -> None:
        self.notes.append(message)


P = Problems()


# --- small helpers -------------------------------------------------------------------


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def load_yaml_docs(path: Path) -> list:
    try:
        return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    except (OSError, yaml.YAMLError) as err:
        P.add(rel(path), f"cannot parse: {err}")
        return []


def load_toml(text: str, where: str) -> dict | None:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        P.add(where, f"not valid TOML: {err}")
        return None


def ip_port(text: str) -> tuple[str, int] | None:
    """host, port when `text` is ip:port (what Ganymede's config accepts), else None."""
    match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([0-9.]+):(\d+)", str(text))
    if not match:
        return None
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return (host, port) if 0 <= port < 65536 else None


def port_of(text: str) -> int | None:
    parsed = ip_port(text)
    return parsed[1] if parsed else None


def labels_match(selector: dict | None, labels: dict | None) -> bool:
    return bool(selector) and all((labels or {}).get(k) == v for k, v in selector.items())


# --- the binary's view of the configuration ------------------------------------------


class Keys:
    """`ganymede config-keys`: section.key -> GANYMEDE_SECTION_KEY, hub and edge keys."""

    def __init__(self, binary: Path | None) -> None:
        self.binary = binary
        self.by_key: dict[str, str] = {}
        if binary is None:
            return
        out = subprocess.run([str(binary), "config-keys"], capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            P.add("ganymede config-keys", f"exited {out.returncode}: {out.stderr.strip()}")
            return
        for line in out.stdout.splitlines():
            key, var = line.split()
            self.by_key[key] = var
        self.by_var = {var: key for key, var in self.by_key.items()}

    def check_toml(self, config: dict, where: str) -> None:
        if not self.by_key:
            return
        for section, table in config.items():
            if section == "roles":
                continue
            if not isinstance(table, dict):
                P.add(where, f"[{section}] is not a table")
                continue
            for key in table:
                if f"{section}.{key}" not in self.by_key:
                    P.add(where, f"{section}.{key} is not a configuration key (`ganymede config-keys`)")

    def check_env(self, names, where: str) -> None:
        if not self.by_key:
            return
        for name in names:
            if name.startswith("GANYMEDE_") and name not in self.by_var and name not in ENV_EXTRAS:
                P.add(where, f"{name} is not a variable ganymede reads (`ganymede config-keys`)")


def effective(config: dict, env: dict[str, str], keys: Keys) -> dict:
    """The file's values with GANYMEDE_<SECTION>_<KEY> overrides applied (as TOML values
    where they parse as one, else strings, as the binary does)."""
    merged = {section: dict(table) for section, table in config.items() if isinstance(table, dict)}
    for name, value in env.items():
        key = keys.by_var.get(name) if keys.by_key else None
        if key is None:
            match = re.fullmatch(r"GANYMEDE_(HUB|CLUSTER|RAFT|PROXY|EVENTS|SERVERS|SPAWNER|API|AUTH|EDGE)_(\w+)", name)
            if not match:
                continue
            key = f"{match.group(1).lower()}.{match.group(2).lower()}"
        section, field = key.split(".", 1)
        try:
            parsed = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value
        merged.setdefault(section, {})[field] = parsed
    return merged


def check_members(members, where: str) -> dict[int, dict]:
    """config.rs's rules for cluster.initial_members, plus ip:port for both addresses."""
    by_id: dict[int, dict] = {}
    for member in members or []:
        node = member.get("node_id")
        if not isinstance(node, int) or node <= 0:
            P.add(where, f"initial_members: node_id {node!r} is not a positive integer")
            continue
        if node in by_id:
            P.add(where, f"initial_members: node {node} is listed twice")
        for field in ("raft_addr", "api_addr"):
            if ip_port(member.get(field, "")) is None:
                P.add(where, f"initial_members: node {node}'s {field} {member.get(field)!r} is not ip:port (host names are refused)")
        by_id[node] = member
    return by_id


class Runner:
    """Starts a configuration with the real binary, once, on loopback port 0."""

    def __init__(self, binary: Path | None) -> None:
        self.binary = binary
        self.ran = 0

    def run(self, kind: str, config_text: str, env: dict[str, str], where: str) -> None:
        if self.binary is None:
            return
        with tempfile.TemporaryDirectory(prefix="ganymede-check-") as tmp:
            config = Path(tmp) / f"{kind}.toml"
            config.write_text(config_text)
            clean = {k: v for k, v in os.environ.items() if not k.startswith("GANYMEDE_") and k != "CONFIGPROXY_AUTH_TOKEN"}
            clean.update(env)
            clean.setdefault("CONFIGPROXY_AUTH_TOKEN", "check-proxy-token")
            # The "listening" line is at info; a caller's RUST_LOG would hide it.
            clean["RUST_LOG"] = "info"
            if kind == "hub":
                clean.setdefault("GANYMEDE_ADMIN_TOKEN", "check-admin-token")
                for var in ("HUB_API_BIND", "HUB_RAFT_BIND", "PROXY_API_BIND", "EVENTS_GRPC_BIND", "EVENTS_PUB_BIND"):
                    clean[f"GANYMEDE_{var}"] = "127.0.0.1:0"
                clean["GANYMEDE_HUB_DATA_DIR"] = str(Path(tmp) / "data")
                # Servers are not the point, and prefork would start Python.
                clean["GANYMEDE_SPAWNER_KIND"] = "none"
                ready = "hub listening"
            else:
                clean["GANYMEDE_EDGE_BIND"] = "127.0.0.1:0"
                clean["GANYMEDE_EDGE_METRICS_BIND"] = "127.0.0.1:0"
                ready = "edge listening"
            log = Path(tmp) / "log"
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    [str(self.binary), kind, "--config", str(config)],
                    env=clean, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                )
            self.ran += 1
            deadline = time.monotonic() + 30
            try:
                while True:
                    text = log.read_text(errors="replace")
                    if ready in text:
                        return
                    if proc.poll() is not None:
                        P.add(where, f"`ganymede {kind}` refused this configuration (exit {proc.returncode}):\n    "
                              + "\n    ".join(text.strip().splitlines()[-5:]))
                        return
                    if time.monotonic() > deadline:
                        P.add(where, f"`ganymede {kind}` did not log '{ready}' within 30 s:\n    "
                              + "\n    ".join(text.strip().splitlines()[-5:]))
                        return
                    time.sleep(0.1)
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()


def members_for_dry_run(members: list, node_id: int) -> list:
    # The lowest member founds the cluster: a dry run must not try to (the addresses may
    # be a real local cluster's). The others only wait to be contacted.
    ids = [m.get("node_id") for m in members or []]
    return [] if ids and node_id == min(ids) else members


def toml_inline(members: list) -> str:
    return "[" + ", ".join(
        "{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in m.items()) + "}" for m in members
    ) + "]"


# --- Dockerfile ----------------------------------------------------------------------


class Stage:
    def __init__(self, index: int, base: str, name: str | None) -> None:
        self.index, self.base, self.name = index, base, name
        self.parent: Stage | None = None
        self.instructions: list[tuple[str, str]] = []

    def chain(self) -> list[Stage]:
        stages, stage = [], self
        while stage:
            stages.append(stage)
            stage = stage.parent
        return list(reversed(stages))

    def all(self, op: str) -> list[str]:
        return [args for stage in self.chain() for o, args in stage.instructions if o == op]

    def last(self, op: str) -> str | None:
        found = self.all(op)
        return found[-1] if found else None


def parse_dockerfile(path: Path) -> tuple[dict[str, str], list[Stage]]:
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        op, _, rest = line.partition(" ")
        op, rest = op.upper(), rest.strip()
        if op == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif op == "FROM":
            words = rest.split()
            words = [w for w in words if not w.startswith("--platform")]
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stage = Stage(len(stages), base, name)
            stage.parent = next((s for s in stages if s.name == base), None)
            stages.append(stage)
        elif stages:
            stages[-1].instructions.append((op, rest))
    return args, stages


def exec_form(text: str) -> list[str] | None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def ignored(path: str, patterns: list[str]) -> bool:
    hit = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path, pattern + "/*") or \
                (pattern.startswith("**/") and fnmatch.fnmatch(path, "*" + pattern[2:] + "*")):
            hit = not negate
    return hit


def check_dockerfile(keys: Keys, runner: Runner) -> dict:
    path = ROOT / "ops/docker/Dockerfile"
    where = rel(path)
    if not path.is_file():
        P.add(where, "missing")
        return {}
    args, stages = parse_dockerfile(path)
    if len(stages) < 2:
        P.add(where, "not a multi-stage build (a builder stage and a runtime stage)")
        return {}
    names = [s.name for s in stages]
    ignore_file = path.with_name(path.name + ".dockerignore")
    patterns = [l.strip() for l in ignore_file.read_text().splitlines()
                if l.strip() and not l.startswith("#")] if ignore_file.is_file() else []

    builder = next((s for s in stages if any("cargo build" in a for o, a in s.instructions if o == "RUN")), None)
    if builder is None:
        P.add(where, "no stage runs `cargo build`")
    else:
        build = next(a for o, a in builder.instructions if o == "RUN" and "cargo build" in a)
        for flag in ("--release", "--locked", "--bin ganymede"):
            if flag not in build:
                P.add(where, f"the builder's cargo build lacks {flag}")
        installs = " ".join(a for o, a in builder.instructions if o == "RUN")
        for package in ("clang", "libclang-dev"):
            if not re.search(rf"\b{re.escape(package)}\b", installs):
                P.add(where, f"the builder does not install {package} (the rocksdb crate's bindgen needs it)")

    for stage in stages:
        for op, rest in stage.instructions:
            if op not in ("COPY", "ADD"):
                continue
            words = shlex.split(rest)
            source_stage = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
            paths = [w for w in words if not w.startswith("--")]
            if source_stage is not None:
                earlier = [s.name for s in stages[: stage.index]]
                if source_stage not in earlier:
                    P.add(where, f"COPY --from={source_stage}: no earlier stage of that name")
                continue
            for source in paths[:-1]:
                if not (ROOT / source).exists():
                    P.add(where, f"COPY {source}: not in the build context (the repository root)")
                elif ignored(source, patterns):
                    P.add(where, f"COPY {source}: excluded by {rel(ignore_file)}")

    runtimes = {"hub": stages[-1]}
    if "edge" in names:
        runtimes["edge"] = stages[names.index("edge")]
    volumes_by_target: dict[str, list[str]] = {}
    for target, stage in runtimes.items():
        label = f"{where} (target {stage.name or stage.index})"
        if stage.chain()[0] is builder or "rust" in stage.chain()[0].base:
            P.add(label, "the runtime is based on the builder: it would ship the Rust toolchain")
        entry = stage.last("ENTRYPOINT")
        entry_list = exec_form(entry) if entry else None
        if not entry_list or not entry_list[0].endswith("/tini"):
            P.add(label, f"ENTRYPOINT must be tini in exec form (it reaps servers' orphans), not {entry!r}")
        elif "ganymede" not in " ".join(entry_list + (exec_form(stage.last("CMD") or "[]") or [])):
            P.add(label, "ENTRYPOINT/CMD do not run ganymede")
        user = stage.last("USER")
        if user is None or user.split(":")[0] in ("root", "0"):
            P.add(label, f"USER must be a non-root user, not {user!r}")
        health = stage.last("HEALTHCHECK")
        if not health or health.upper().startswith("NONE") or " CMD " not in f" {health} ":
            P.add(label, "no HEALTHCHECK")
        else:
            tool = health.split(" CMD ", 1)[1].split()[0] if " CMD " in health else ""
            installed = " ".join(stage.all("RUN"))
            if tool in ("curl", "wget") and not re.search(rf"install[^&]*\b{tool}\b", installed):
                P.add(label, f"HEALTHCHECK uses {tool}, which the image does not install")
            want = "/hub/health" if target == "hub" else "/metrics"
            if want not in health:
                P.add(label, f"HEALTHCHECK does not probe {want}")
        if not stage.all("EXPOSE"):
            P.add(label, "no EXPOSE")
        volumes = []
        for volume in stage.all("VOLUME"):
            volumes += exec_form(volume) or volume.split()
        if not volumes:
            P.add(label, "no VOLUME for the data directory")
        volumes_by_target[target] = volumes
        if not stage.chain()[0].base.endswith("-slim"):
            P.add(label, f"runtime base {stage.chain()[0].base} is not a slim image")

    hub = runtimes["hub"]
    env_text = " ".join(hub.all("ENV"))
    copies = " ".join(a for o, a in hub.instructions if o == "COPY" and "--from=" in a)
    venv = re.search(r"PATH=(/[^:\s]+)/bin", env_text)
    if not venv or venv.group(1) not in copies:
        P.add(where, "the hub's PATH has no venv copied into the image: the local spawner would not find jupyterhub-singleuser")
    reqs = ROOT / "ops/python/requirements.txt"
    if "ops/python/requirements.txt" not in path.read_text():
        P.add(where, "the JupyterLab venv is not installed from ops/python/requirements.txt")
    elif reqs.is_file():
        pins = dict(re.findall(r"^([\w.-]+)==(\S+)", reqs.read_text(), re.M))
        for package, version in HUB_PINS.items():
            if pins.get(package) != version:
                P.add(rel(reqs), f"{package} is pinned to {pins.get(package)}, the image promises {version}")
    if builder is not None and builder.base.startswith("rust:"):
        runtime_release = re.search(r"debian:(\w+)", hub.chain()[0].base)
        builder_release = re.search(r"-(\w+)$", builder.base)
        if runtime_release and builder_release and runtime_release.group(1) != builder_release.group(1):
            P.add(where, f"builder ({builder.base}) and runtime ({hub.chain()[0].base}) differ in Debian release: glibc would not match")

    # The image's default configurations.
    for kind, file in (("hub", "ops/docker/hub.toml"), ("edge", "ops/docker/edge.toml")):
        text = (ROOT / file).read_text() if (ROOT / file).is_file() else None
        if text is None:
            P.add(file, "missing (the Dockerfile copies it)")
            continue
        config = load_toml(text, file)
        if config is None:
            continue
        keys.check_toml(config, file)
        section = config.get(kind, {})
        for key in ("api_bind", "raft_bind") if kind == "hub" else ("bind", "metrics_bind"):
            if not str(section.get(key, "")).startswith("0.0.0.0:"):
                P.add(file, f"{kind}.{key} must listen on 0.0.0.0 in a container")
        if kind == "hub":
            data_dir = section.get("data_dir", "")
            if not any(data_dir.startswith(v.rstrip("/") + "/") for v in volumes_by_target.get("hub", [])):
                P.add(file, f"hub.data_dir {data_dir!r} is not inside the image's VOLUME")
            runner.run("hub", text, {"GANYMEDE_CLUSTER_INITIAL_MEMBERS": "[]"}, file)
        else:
            runner.run("edge", text, {}, file)
    return {"uid": (hub.last("USER") or "").split(":")[0]}


# --- compose -------------------------------------------------------------------------

INTERPOLATION = re.compile(r"\$\{(\w+)(:?[?-][^}]*)?\}")


def mounts(service: dict) -> list[tuple[str, str]]:
    out = []
    for volume in service.get("volumes", []) or []:
        if isinstance(volume, dict):
            out.append((str(volume.get("source", "")), str(volume.get("target", ""))))
        else:
            parts = str(volume).split(":")
            out.append((parts[0], parts[1] if len(parts) > 1 else parts[0]))
    return out


def mounted_file(service: dict, target: str, base: Path) -> Path | None:
    for source, dest in mounts(service):
        if dest == target and source.startswith((".", "/")):
            return (base / source).resolve()
    return None


def check_compose(keys: Keys, runner: Runner) -> None:
    path = ROOT / "ops/compose/compose.yaml"
    where = rel(path)
    base = path.parent
    docs = load_yaml_docs(path) if path.is_file() else P.add(where, "missing") or []
    if not docs:
        return
    compose = docs[0]
    services: dict = compose.get("services") or {}
    declared = set((compose.get("volumes") or {}).keys())
    used_volumes: set[str] = set()
    text = path.read_text()

    # Secrets and interpolation.
    example = base / "env.example"
    example_vars = dict(re.findall(r"^(\w+)=(.*)$", example.read_text(), re.M)) if example.is_file() else {}
    if not example.is_file():
        P.add(rel(example), "missing: compose.yaml's variables must be documented there")
    for var, value in example_vars.items():
        if value.strip():
            P.add(rel(example), f"{var} has a value: the example must not carry secrets")
    for match in INTERPOLATION.finditer(text):
        if match.group(1) not in example_vars:
            P.add(where, f"${{{match.group(1)}}} is not in env.example")
    gitignore = base / ".gitignore"
    if not gitignore.is_file() or ".env" not in gitignore.read_text().split():
        P.add(rel(gitignore), ".env (the real secrets) is not git-ignored")

    netns_of: dict[str, str] = {}
    for name, service in services.items():
        label = f"{where}: service {name}"
        mode = service.get("network_mode")
        if mode and str(mode).startswith("service:"):
            owner = str(mode).split(":", 1)[1]
            if owner not in services:
                P.add(label, f"network_mode names a service that does not exist: {owner}")
            elif services[owner].get("network_mode"):
                P.add(label, f"network_mode: {owner} itself joins another namespace")
            if service.get("ports"):
                P.add(label, "publishes ports, but shares another service's network namespace (publish them there)")
            netns_of[name] = owner
        else:
            netns_of[name] = name
        depends = service.get("depends_on") or {}
        for dep in depends if isinstance(depends, (list, dict)) else []:
            if dep not in services:
                P.add(label, f"depends_on names a service that does not exist: {dep}")
            elif dep == name:
                P.add(label, "depends on itself")
        for source, target in mounts(service):
            if source.startswith((".", "/")):
                if not (base / source).exists():
                    P.add(label, f"bind mount source {source} does not exist")
            elif source:
                used_volumes.add(source)
                if source not in declared:
                    P.add(label, f"volume {source} is not declared under top-level volumes")
        image = str(service.get("image", ""))
        if not image:
            P.add(label, "no image")
        elif ":" not in image.split("/")[-1] or image.endswith(":latest"):
            P.add(label, f"image {image} is not pinned to a version")
        build = service.get("build")
        if build:
            context = base / (build.get("context", ".") if isinstance(build, dict) else build)
            dockerfile = context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")
            if not dockerfile.is_file():
                P.add(label, f"build: {rel(dockerfile)} does not exist")
        env = service.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
        for var, value in env.items():
            if re.search(r"(TOKEN|PASSWORD|SECRET)$", var) and not re.fullmatch(r"\$\{\w+:\?[^}]*\}", str(value)):
                P.add(label, f"{var} must come from ${{VAR:?…}} (env.example), not be written here")
        keys.check_env(env.keys(), label)
        service["_env"] = {k: str(v) for k, v in env.items()}
    for volume in declared - used_volumes:
        P.add(where, f"volume {volume} is declared but no service mounts it")

    # Hubs and edges: effective configuration = mounted file + environment.
    hubs, edges = {}, {}
    for name, service in services.items():
        command = service.get("command") or []
        kind = command[0] if command and command[0] in ("hub", "edge") else None
        if kind is None:
            continue
        config_path = mounted_file(service, f"/etc/ganymede/{kind}.toml", base)
        if config_path is None or not config_path.is_file():
            P.add(f"{where}: service {name}", f"no /etc/ganymede/{kind}.toml mounted from a file")
            continue
        config_text = config_path.read_text()
        config = load_toml(config_text, rel(config_path))
        if config is None:
            continue
        keys.check_toml(config, rel(config_path))
        env = service["_env"]
        eff = effective(config, env, keys)
        (hubs if kind == "hub" else edges)[name] = (service, eff, config_text, env)

    if len(hubs) < 3:
        P.add(where, f"{len(hubs)} hub services; a cluster that survives a failure needs 3")
    if len(edges) < 2:
        P.add(where, f"{len(edges)} edge services; the issue asks for 2")
    ids: dict[int, str] = {}
    bound: dict[tuple[str, int], str] = {}

    def bind(service_name: str, what: str, address: str) -> None:
        port = port_of(address)
        if port is None:
            P.add(f"{where}: service {service_name}", f"{what} {address!r} is not ip:port")
            return
        key = (netns_of[service_name], port)
        if key in bound:
            P.add(f"{where}: service {service_name}", f"{what} port {port} is also bound by {bound[key]} in the same network namespace")
        bound[key] = f"{service_name} ({what})"

    hub_addrs = {}
    for name, (service, eff, config_text, env) in hubs.items():
        label = f"{where}: service {name}"
        hub, events, proxy = eff.get("hub", {}), eff.get("events", {}), eff.get("proxy", {})
        node = hub.get("node_id", 1)
        if node in ids:
            P.add(label, f"node_id {node} is also {ids[node]}'s (each replica needs its own, for good)")
            continue
        ids[node] = name
        defaults = {"api_bind": "127.0.0.1:8081", "raft_bind": "127.0.0.1:8281"}
        api = hub.get("api_bind", defaults["api_bind"])
        raft = hub.get("raft_bind", defaults["raft_bind"])
        for what, address in (("hub.api_bind", api), ("hub.raft_bind", raft),
                              ("proxy.api_bind", proxy.get("api_bind", "127.0.0.1:8001")),
                              ("events.grpc_bind", events.get("grpc_bind", "127.0.0.1:8381")),
                              ("events.pub_bind", events.get("pub_bind", "127.0.0.1:8481"))):
            bind(name, what, address)
        advertised_api = hub.get("advertise_api") or api
        advertised_raft = hub.get("advertise_raft") or raft
        hub_addrs[node] = {
            "api": advertised_api,
            "raft": advertised_raft,
            "grpc": events.get("grpc_bind", "127.0.0.1:8381"),
            "events": events.get("pub_bind", "127.0.0.1:8481"),
        }
        data = [t for s, t in mounts(service) if s in declared]
        data_dir = hub.get("data_dir", "")
        if not any(data_dir.startswith(t.rstrip("/") + "/") for t in data):
            P.add(label, f"hub.data_dir {data_dir!r} is not on a named volume: the replica's state would die with its container")
        members = check_members(eff.get("cluster", {}).get("initial_members"), label)
        if node not in members:
            P.add(label, f"initial_members does not list node {node}")
        health = " ".join(map(str, (service.get("healthcheck") or {}).get("test", [])))
        if f":{port_of(api)}/hub/health" not in health:
            P.add(label, f"the healthcheck does not probe /hub/health on the API port {port_of(api)}")
        dry_env = dict(env)
        dry_env["GANYMEDE_CLUSTER_INITIAL_MEMBERS"] = toml_inline(
            members_for_dry_run(eff.get("cluster", {}).get("initial_members"), node))
        runner.run("hub", config_text, dry_env, label)
    all_members = [check_members(eff.get("cluster", {}).get("initial_members"), where) for _, eff, _, _ in hubs.values()]
    for node, addrs in hub_addrs.items():
        for members in all_members:
            member = members.get(node)
            if member and (member.get("raft_addr") != addrs["raft"] or member.get("api_addr") != addrs["api"]):
                P.add(where, f"initial_members' node {node} ({member.get('raft_addr')}, {member.get('api_addr')}) "
                             f"is not where {ids[node]} is ({addrs['raft']}, {addrs['api']})")
            if not member:
                P.add(where, f"initial_members does not list node {node} ({ids[node]}) everywhere")
    if len({json.dumps(m, sort_keys=True, default=str) for m in all_members}) > 1:
        P.add(where, "the hubs do not all have the same initial_members")

    want_hubs = sorted((a["api"], a["grpc"], a["events"]) for a in hub_addrs.values())
    for name, (service, eff, config_text, env) in edges.items():
        label = f"{where}: service {name}"
        edge = eff.get("edge", {})
        bind(name, "edge.bind", edge.get("bind", "0.0.0.0:8000"))
        metrics = edge.get("metrics_bind", "127.0.0.1:9100")
        bind(name, "edge.metrics_bind", metrics)
        got = sorted((h.get("api"), h.get("grpc"), h.get("events")) for h in edge.get("hubs", []))
        for triple in got:
            if any(ip_port(a) is None for a in triple):
                P.add(label, f"edge.hubs entry {triple} is not ip:port (host names are refused)")
        if got != want_hubs:
            P.add(label, f"edge.hubs {got} are not the hubs' addresses {want_hubs}")
        health = " ".join(map(str, (service.get("healthcheck") or {}).get("test", [])))
        if f":{port_of(metrics)}/metrics" not in health:
            P.add(label, f"the healthcheck does not probe the metrics port {port_of(metrics)}")
        if "CONFIGPROXY_AUTH_TOKEN" not in env:
            P.add(label, "no CONFIGPROXY_AUTH_TOKEN: an edge cannot start without it")
        runner.run("edge", config_text, env, label)
    for name, (service, *_rest) in hubs.items():
        if "CONFIGPROXY_AUTH_TOKEN" not in service["_env"]:
            P.add(f"{where}: service {name}", "no CONFIGPROXY_AUTH_TOKEN: the edge feed would not be served")

    check_compose_prometheus(services, netns_of, hubs, edges, base)
    check_compose_grafana(services, base)
    for name, service in services.items():
        for source, target in mounts(service):
            if source.endswith(".sh") and (base / source).is_file():
                syntax = subprocess.run(["sh", "-n", str(base / source)], capture_output=True, text=True)
                if syntax.returncode != 0:
                    P.add(rel(base / source), f"sh -n: {syntax.stderr.strip()}")


def check_compose_prometheus(services: dict, netns_of: dict, hubs: dict, edges: dict, base: Path) -> None:
    name = next((n for n, s in services.items() if "prometheus" in str(s.get("image", ""))), None)
    if name is None:
        P.add("ops/compose/compose.yaml", "no Prometheus service")
        return
    service = services[name]
    label = f"ops/compose/compose.yaml: service {name}"
    config_path = mounted_file(service, "/etc/prometheus/prometheus.yml", base)
    if config_path is None or not config_path.is_file():
        P.add(label, "no prometheus.yml mounted at /etc/prometheus/prometheus.yml")
        return
    config = (load_yaml_docs(config_path) or [{}])[0]
    where = rel(config_path)
    for rule in config.get("rule_files", []):
        source = mounted_file(service, rule, base)
        if source is None or not source.is_file():
            P.add(where, f"rule file {rule} is not mounted from a file")
    # Each process's port, by the service DNS name that reaches it.
    ports = {"ganymede-hub": set(), "ganymede-edge": set()}
    for hub, (svc, eff, *_r) in hubs.items():
        ports["ganymede-hub"].add((netns_of[hub], port_of(eff.get("hub", {}).get("api_bind", "127.0.0.1:8081"))))
    for edge, (svc, eff, *_r) in edges.items():
        ports["ganymede-edge"].add((netns_of[edge], port_of(eff.get("edge", {}).get("metrics_bind", "127.0.0.1:9100"))))
    jobs = {job.get("job_name"): job for job in config.get("scrape_configs", [])}
    for job in JOBS:
        if job not in jobs:
            P.add(where, f"no job {job} (the alert rules and the dashboard select on it)")
            continue
        scraped = set()
        for static in jobs[job].get("static_configs", []):
            for target in static.get("targets", []):
                host, _, port = target.rpartition(":")
                if host not in services:
                    P.add(where, f"{job} target {target}: {host} is not a compose service")
                scraped.add((netns_of.get(host, host), int(port)))
        if scraped != ports[job]:
            P.add(where, f"{job} scrapes {sorted(scraped)}, but the processes listen on {sorted(ports[job])}")
    hub_job = jobs.get("ganymede-hub", {})
    if hub_job and hub_job.get("metrics_path") != "/hub/metrics":
        P.add(where, "ganymede-hub's metrics_path must be /hub/metrics")
    credentials = (hub_job.get("authorization") or {}).get("credentials_file")
    if not credentials:
        P.add(where, "ganymede-hub has no token: /hub/metrics needs read:metrics")
    elif not any(credentials.startswith(t.rstrip("/") + "/") for _, t in mounts(service)):
        P.add(where, f"the token file {credentials} is on no volume of {name}")
    if shutil.which("promtool"):
        out = subprocess.run(["promtool", "check", "config", "--syntax-only", str(config_path)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            P.add(where, f"promtool check config: {(out.stdout + out.stderr).strip()}")
    else:
        P.note("promtool not found: ops/compose/prometheus.yml syntax not checked by promtool")


def check_compose_grafana(services: dict, base: Path) -> None:
    name = next((n for n, s in services.items() if "grafana" in str(s.get("image", ""))), None)
    if name is None:
        P.add("ops/compose/compose.yaml", "no Grafana service")
        return
    service = services[name]
    label = f"ops/compose/compose.yaml: service {name}"
    provisioning = mounted_file(service, "/etc/grafana/provisioning", base)
    if provisioning is None or not provisioning.is_dir():
        P.add(label, "no provisioning directory mounted at /etc/grafana/provisioning")
        return
    datasources = [doc for f in sorted((provisioning / "datasources").glob("*.y*ml")) for doc in load_yaml_docs(f)]
    proms = [d for doc in datasources for d in doc.get("datasources", []) if d.get("type") == "prometheus"]
    if not proms:
        P.add(rel(provisioning / "datasources"), "no Prometheus data source")
    for source in proms:
        host = re.sub(r"^https?://", "", str(source.get("url", ""))).split(":")[0]
        if host not in services:
            P.add(rel(provisioning / "datasources"), f"data source url {source.get('url')}: {host} is not a compose service")
    if proms and not any(d.get("isDefault") for d in proms):
        P.add(rel(provisioning / "datasources"), "no default Prometheus data source: the dashboard's $datasource picks the default")
    providers = [p for f in sorted((provisioning / "dashboards").glob("*.y*ml"))
                 for doc in load_yaml_docs(f) for p in doc.get("providers", [])]
    if not providers:
        P.add(rel(provisioning / "dashboards"), "no dashboard provider")
    dashboard = ROOT / "ops/grafana/ganymede.json"
    for provider in providers:
        folder = (provider.get("options") or {}).get("path", "")
        mounted = [(s, t) for s, t in mounts(service) if t.startswith(folder.rstrip("/") + "/") or t == folder]
        if not mounted:
            P.add(rel(provisioning / "dashboards"), f"provider path {folder} has nothing mounted")
        for source, _ in mounted:
            if (base / source).resolve() != dashboard.resolve() and not (base / source).exists():
                P.add(label, f"dashboard mount {source} does not exist")
        if not any((base / s).resolve() == dashboard.resolve() for s, _ in mounted):
            P.add(label, f"ops/grafana/ganymede.json is not mounted under {folder}")


# --- Grafana dashboard ---------------------------------------------------------------


def check_dashboard() -> None:
    path = ROOT / "ops/grafana/ganymede.json"
    where = rel(path)
    try:
        dashboard = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        P.add(where, f"cannot parse: {err}")
        return
    for field in ("uid", "title", "panels"):
        if not dashboard.get(field):
            P.add(where, f"no {field}")
    variables = {v.get("name") for v in (dashboard.get("templating") or {}).get("list", [])}
    ids, exprs = set(), []
    panels = list(dashboard.get("panels", []))
    for panel in panels:
        panels += panel.get("panels", []) if panel.get("type") == "row" else []
    for panel in panels:
        title = f"{where}: panel {panel.get('title')!r}"
        if panel.get("id") in ids:
            P.add(title, f"id {panel.get('id')} is used twice")
        ids.add(panel.get("id"))
        if panel.get("type") == "row":
            continue
        if "gridPos" not in panel:
            P.add(title, "no gridPos")
        targets = panel.get("targets") or []
        if not targets:
            P.add(title, "no targets")
        for target in targets:
            expr = str(target.get("expr", "")).strip()
            if not expr:
                P.add(title, f"target {target.get('refId')} has no expr")
                continue
            for job in re.findall(r'job="([^"]+)"', expr):
                if job not in JOBS:
                    P.add(title, f"selects job {job!r}, which no scrape configuration has")
            exprs.append((title, expr))
        for ref in (panel.get("datasource") or {}, *[(t.get("datasource") or {}) for t in targets]):
            uid = str(ref.get("uid", ""))
            if uid.startswith("${") and uid[2:-1] not in variables:
                P.add(title, f"data source {uid} is not a dashboard variable")
    if not exprs:
        return
    if not shutil.which("promtool"):
        P.note("promtool not found: the dashboard's PromQL was not parsed")
        return
    # promtool parses PromQL in rule files; Grafana's interval variables become durations.
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:panel_{i}", "expr": re.sub(r"\$__(rate_)?interval|\$__range", "5m", expr)}
        for i, (_, expr) in enumerate(exprs)]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as file:
        yaml.safe_dump(rules, file)
        file.flush()
        out = subprocess.run(["promtool", "check", "rules", file.name], capture_output=True, text=True)
    if out.returncode != 0:
        P.add(where, f"promtool rejects a panel's PromQL:\n    {(out.stdout + out.stderr).strip()}")


# --- Kubernetes ----------------------------------------------------------------------


def pod_templates(objects: list) -> list[tuple[dict, dict]]:
    """(workload, pod template) for every Deployment and StatefulSet."""
    return [(o, o["spec"]["template"]) for o in objects
            if o.get("kind") in ("Deployment", "StatefulSet") and o.get("spec", {}).get("template")]


def container_ports(template: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for c in template["spec"].get("containers", [])
            for p in c.get("ports", []) if "name" in p}


def selects(selector: dict, workload: dict, template: dict) -> bool:
    """A Service selector picks this workload's pods (StatefulSet pod names included)."""
    labels = dict(template.get("metadata", {}).get("labels", {}))
    pod_name = selector.get("statefulset.kubernetes.io/pod-name")
    if pod_name is not None:
        if workload.get("kind") != "StatefulSet":
            return False
        sts, _, ordinal = pod_name.rpartition("-")
        if sts != workload["metadata"]["name"] or not ordinal.isdigit() or int(ordinal) >= workload["spec"].get("replicas", 1):
            return False
        labels["statefulset.kubernetes.io/pod-name"] = pod_name
    return labels_match(selector, labels)


def check_k8s(keys: Keys, runner: Runner, no_schemas: bool, image_uid: str) -> None:
    directory = ROOT / "ops/k8s"
    files = sorted(directory.glob("*.yaml"))
    kustomization = directory / "kustomization.yaml"
    listed = set()
    if kustomization.is_file():
        k = load_yaml_docs(kustomization)[0]
        listed = set(k.get("resources", []))
        for resource in listed:
            if not (directory / resource).is_file():
                P.add(rel(kustomization), f"lists {resource}, which does not exist")
        for file in files:
            if file != kustomization and file.name not in listed:
                P.add(rel(kustomization), f"does not list {file.name}")
        image_names = {i.get("name") for i in k.get("images", [])}
    else:
        P.add(rel(kustomization), "missing")
        image_names = set()
    objects: list[dict] = []
    for file in files:
        if file == kustomization:
            continue
        for doc in load_yaml_docs(file):
            doc["_file"] = rel(file)
            objects.append(doc)

    validate_schemas(objects, no_schemas)

    def named(kind: str) -> dict[str, dict]:
        return {o["metadata"]["name"]: o for o in objects if o.get("kind") == kind}

    services, configmaps = named("Service"), named("ConfigMap")
    templates = pod_templates(objects)
    readme = (directory / "README.md").read_text() if (directory / "README.md").is_file() else ""
    if not readme:
        P.add("ops/k8s/README.md", "missing: it documents the values to change")

    for o in objects:
        meta = o.get("metadata", {})
        if o.get("kind") != "Namespace" and meta.get("namespace") != "ganymede":
            P.add(f"{o['_file']}: {o.get('kind')} {meta.get('name')}", "namespace is not ganymede")

    # Workloads and their pods.
    for workload, template in templates:
        label = f"{workload['_file']}: {workload['kind']} {workload['metadata']['name']}"
        spec, pod = workload["spec"], template["spec"]
        if not labels_match(spec.get("selector", {}).get("matchLabels"), template["metadata"].get("labels")):
            P.add(label, "selector does not match the pod template's labels")
        if pod.get("enableServiceLinks") is not False:
            P.add(label, "enableServiceLinks must be false: service links put GANYMEDE_* variables in the environment, which override the configuration")
        security = pod.get("securityContext", {})
        if not security.get("runAsNonRoot"):
            P.add(label, "runAsNonRoot is not set")
        if image_uid and str(security.get("runAsUser")) != image_uid:
            P.add(label, f"runAsUser {security.get('runAsUser')} is not the image's user {image_uid}")
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])}
        for container in pod.get("containers", []):
            image = container.get("image", "")
            if image.split(":")[0] not in image_names:
                P.add(label, f"image {image} is not set by kustomization.yaml's images")
            names = [e["name"] for e in container.get("env", [])]
            keys.check_env(names, label)
            for env in container.get("env", []):
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref and (ref["name"] not in readme or ref["key"] not in readme):
                    P.add(label, f"Secret {ref['name']} key {ref['key']} is not documented in ops/k8s/README.md")
            mounted = {}
            for mount in container.get("volumeMounts", []):
                if mount["name"] not in volumes and mount["name"] not in claims:
                    P.add(label, f"volumeMount {mount['name']} has no volume or claim template")
                mounted[mount["mountPath"]] = mount["name"]
            for name, volume in volumes.items():
                cm = (volume.get("configMap") or {}).get("name")
                if cm and cm not in configmaps:
                    P.add(label, f"volume {name}: ConfigMap {cm} does not exist")
            # Files the command runs (and scripts they source) must be in the mounted ConfigMap.
            for word in container.get("command", []) + container.get("args", []):
                if not word.startswith("/etc/ganymede/"):
                    continue
                cm_name = (volumes.get(mounted.get("/etc/ganymede"), {}).get("configMap") or {}).get("name")
                data = configmaps.get(cm_name, {}).get("data", {})
                key = word.removeprefix("/etc/ganymede/")
                if key not in data:
                    P.add(label, f"runs {word}, which ConfigMap {cm_name} does not have")
                for sourced in re.findall(r"^\s*\. (/etc/ganymede/\S+)", data.get(key, ""), re.M):
                    if sourced.removeprefix("/etc/ganymede/") not in data:
                        P.add(label, f"{word} sources {sourced}, which ConfigMap {cm_name} does not have")
        for claim in claims:
            if not any(m["name"] == claim for c in pod["containers"] for m in c.get("volumeMounts", [])):
                P.add(label, f"volumeClaimTemplate {claim} is not mounted")
        if workload["kind"] == "StatefulSet":
            check_statefulset(workload, template, services, objects, label)
        if workload["kind"] == "Deployment":
            check_edge_deployment(workload, template, objects, label)

    # Services pick pods, and their target ports exist.
    for name, service in services.items():
        label = f"{service['_file']}: Service {name}"
        selector = service["spec"].get("selector")
        picked = [(w, t) for w, t in templates if selector and selects(selector, w, t)]
        if not picked:
            P.add(label, f"selector {selector} matches no pods")
        for port in service["spec"].get("ports", []):
            target = port.get("targetPort", port.get("port"))
            for w, t in picked:
                if isinstance(target, str) and target not in container_ports(t):
                    P.add(label, f"targetPort {target} is not a port of {w['metadata']['name']}'s pods")

    for policy in (o for o in objects if o.get("kind") == "NetworkPolicy"):
        label = f"{policy['_file']}: NetworkPolicy {policy['metadata']['name']}"
        selector = policy["spec"].get("podSelector", {}).get("matchLabels")
        picked = [t for w, t in templates if labels_match(selector, t["metadata"].get("labels"))]
        if not picked:
            P.add(label, "podSelector matches no pods")
        for rule in policy["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                if isinstance(port.get("port"), str) and not all(port["port"] in container_ports(t) for t in picked):
                    P.add(label, f"port {port['port']} is not a named port of the selected pods")
            for peer in rule.get("from", []):
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    peer_labels = peer["podSelector"].get("matchLabels")
                    if not any(labels_match(peer_labels, t["metadata"].get("labels")) for w, t in templates):
                        P.add(label, f"from podSelector {peer_labels} matches no pods")

    check_servicemonitors(objects, services, templates)
    check_k8s_configs(configmaps, templates, keys, runner)


def validate_schemas(objects: list, no_schemas: bool) -> None:
    try:
        import kubernetes_validate
    except ImportError:
        if no_schemas:
            P.note("kubernetes-validate not installed (--no-schemas): schemas not checked")
        else:
            P.add("ops/k8s", "kubernetes-validate is not installed: run ops/check/run.sh (it makes .venv-ops), or pass --no-schemas")
        return
    version = kubernetes_validate.latest_version()
    checked = 0
    for o in objects:
        body = {k: v for k, v in o.items() if k != "_file"}
        label = f"{o['_file']}: {o.get('kind')} {o.get('metadata', {}).get('name')}"
        if str(o.get("apiVersion", "")).startswith("monitoring.coreos.com/"):
            continue  # a CRD: no bundled schema; check_servicemonitors looks at it
        try:
            kubernetes_validate.validate(body, version, strict=True)
            checked += 1
        except kubernetes_validate.ValidationError as err:
            path = "/".join(str(p) for p in err.path)
            P.add(label, f"fails the Kubernetes {version} schema at {path or '(top)'}: {err.message}")
        except kubernetes_validate.SchemaNotFoundError:
            P.add(label, f"no Kubernetes {version} schema for {o.get('apiVersion')} {o.get('kind')}")
    P.note(f"kubernetes-validate {version}: {checked} objects valid (strict)")


def check_statefulset(sts: dict, template: dict, services: dict, objects: list, label: str) -> None:
    spec = sts["spec"]
    name = sts["metadata"]["name"]
    headless = services.get(spec.get("serviceName"))
    if headless is None or headless["spec"].get("clusterIP") != "None":
        P.add(label, f"serviceName {spec.get('serviceName')} is not a headless Service")
    elif not selects(headless["spec"].get("selector", {}), sts, template):
        P.add(label, f"headless Service {spec['serviceName']} does not select its pods")
    if not spec.get("volumeClaimTemplates"):
        P.add(label, "no volumeClaimTemplates: a replica's state must outlive its pod")
    replicas = spec.get("replicas", 1)
    if replicas < 3 or replicas % 2 == 0:
        P.add(label, f"{replicas} replicas: use an odd number, at least 3")
    for ordinal in range(replicas):
        service = services.get(f"{name}-{ordinal}")
        if service is None or service["spec"].get("clusterIP") == "None":
            P.add(label, f"no ClusterIP Service {name}-{ordinal}: hub-start.sh takes replica {ordinal}'s stable address from it")
    ports = container_ports(template)
    for container in template["spec"]["containers"]:
        probe = container.get("readinessProbe", {}).get("httpGet", {})
        if probe.get("path") != "/hub/health" or probe.get("port") not in ("api", ports.get("api")):
            P.add(label, f"readinessProbe must GET /hub/health on the API port, not {probe}")
    budgets = [o for o in objects if o.get("kind") == "PodDisruptionBudget"
               and labels_match(o["spec"].get("selector", {}).get("matchLabels"), template["metadata"].get("labels"))]
    if not budgets:
        P.add(label, "no PodDisruptionBudget: a drain could take a majority of replicas at once")
    for budget in budgets:
        if budget["spec"].get("maxUnavailable") != 1:
            P.add(f"{budget['_file']}: PodDisruptionBudget {budget['metadata']['name']}", "maxUnavailable must be 1")
    grace = template["spec"].get("terminationGracePeriodSeconds", 30)
    if grace < 30:
        P.add(label, f"terminationGracePeriodSeconds {grace}: a hub stops its servers before it exits")


def check_edge_deployment(deployment: dict, template: dict, objects: list, label: str) -> None:
    name = deployment["metadata"]["name"]
    hpas = [o for o in objects if o.get("kind") == "HorizontalPodAutoscaler"
            and o["spec"]["scaleTargetRef"].get("name") == name and o["spec"]["scaleTargetRef"].get("kind") == "Deployment"]
    if not hpas:
        P.add(label, "no HorizontalPodAutoscaler scales it")
    for hpa in hpas:
        if hpa.get("apiVersion") != "autoscaling/v2":
            P.add(f"{hpa['_file']}: HPA {hpa['metadata']['name']}", "use autoscaling/v2")
        if hpa["spec"].get("minReplicas", 1) < 2:
            P.add(f"{hpa['_file']}: HPA {hpa['metadata']['name']}", "minReplicas below 2: one edge is a single point of failure")
        resources = {m.get("resource", {}).get("name") for m in hpa["spec"].get("metrics", [])}
        for container in template["spec"]["containers"]:
            for resource in resources:
                if resource and resource not in container.get("resources", {}).get("requests", {}):
                    P.add(label, f"container {container['name']} requests no {resource}: the HPA cannot compute utilisation")
    if hpas and "replicas" in deployment["spec"]:
        P.add(label, "sets replicas although an HPA owns them (each apply would reset the count)")


def check_servicemonitors(objects: list, services: dict, templates: list) -> None:
    monitors = [o for o in objects if o.get("kind") == "ServiceMonitor"]
    jobs = set()
    for monitor in monitors:
        label = f"{monitor['_file']}: ServiceMonitor {monitor['metadata']['name']}"
        if monitor.get("apiVersion") != "monitoring.coreos.com/v1":
            P.add(label, f"apiVersion {monitor.get('apiVersion')}: the Prometheus Operator's is monitoring.coreos.com/v1")
        spec = monitor.get("spec", {})
        selector = spec.get("selector", {}).get("matchLabels")
        picked = [s for s in services.values() if labels_match(selector, s["metadata"].get("labels"))]
        if len(picked) != 1:
            P.add(label, f"selector {selector} matches {len(picked)} Services (want exactly one: every target once)")
        namespaces = (spec.get("namespaceSelector") or {}).get("matchNames")
        if namespaces is not None and "ganymede" not in namespaces:
            P.add(label, "namespaceSelector leaves out the namespace ganymede")
        if not spec.get("endpoints"):
            P.add(label, "no endpoints")
        for service in picked:
            job = service["metadata"].get("labels", {}).get(spec.get("jobLabel")) if spec.get("jobLabel") else service["metadata"]["name"]
            jobs.add(job)
            port_names = {p.get("name") for p in service["spec"].get("ports", [])}
            for endpoint in spec.get("endpoints", []):
                if endpoint.get("port") not in port_names:
                    P.add(label, f"endpoint port {endpoint.get('port')} is not a port of Service {service['metadata']['name']}")
                if job == "ganymede-hub":
                    if endpoint.get("path") != "/hub/metrics":
                        P.add(label, "the hubs' metrics are at /hub/metrics")
                    credentials = (endpoint.get("authorization") or {}).get("credentials") or {}
                    if not credentials.get("name") or not credentials.get("key"):
                        P.add(label, "no authorization.credentials: /hub/metrics needs a read:metrics token")
                    readme = (ROOT / "ops/k8s/README.md").read_text() if (ROOT / "ops/k8s/README.md").is_file() else ""
                    if credentials.get("name") and credentials["name"] not in readme:
                        P.add(label, f"Secret {credentials['name']} is not documented in ops/k8s/README.md")
    if jobs != JOBS:
        P.add("ops/k8s/servicemonitor.yaml", f"scrape jobs {sorted(j for j in jobs if j)} are not {sorted(JOBS)} (the alert rules' and dashboard's)")


def check_k8s_configs(configmaps: dict, templates: list, keys: Keys, runner: Runner) -> None:
    cm = configmaps.get("ganymede-config")
    if cm is None:
        P.add("ops/k8s/configmap.yaml", "no ConfigMap ganymede-config")
        return
    data = cm.get("data", {})
    where = "ops/k8s/configmap.yaml"
    configs = {}
    for kind in ("hub", "edge"):
        text = data.get(f"{kind}.toml")
        if text is None:
            P.add(where, f"no {kind}.toml")
            continue
        config = load_toml(text, f"{where} {kind}.toml")
        if config is not None:
            keys.check_toml(config, f"{where} {kind}.toml")
            configs[kind] = (config, text)
    for key, script in data.items():
        if key.endswith(".sh"):
            out = subprocess.run(["sh", "-n"], input=script, capture_output=True, text=True)
            if out.returncode != 0:
                P.add(f"{where} {key}", f"sh -n: {out.stderr.strip()}")

    def ports_of(component: str) -> dict[str, int]:
        return next((container_ports(t) for w, t in templates
                     if t["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component), {})

    hub_ports, edge_ports = ports_of("hub"), ports_of("edge")
    if "hub" in configs:
        hub = configs["hub"][0]
        for section, key, port_name in (("hub", "api_bind", "api"), ("hub", "raft_bind", "raft"),
                                        ("proxy", "api_bind", "proxy-api"), ("events", "grpc_bind", "feed-grpc"),
                                        ("events", "pub_bind", "feed-events")):
            value = hub.get(section, {}).get(key, "")
            if not value.startswith("0.0.0.0:") or port_of(value) != hub_ports.get(port_name):
                P.add(f"{where} hub.toml", f"{section}.{key} {value!r} is not 0.0.0.0:<the pod's {port_name} port {hub_ports.get(port_name)}>")
    if "edge" in configs:
        edge = configs["edge"][0].get("edge", {})
        for key, port_name in (("bind", "http"), ("metrics_bind", "metrics")):
            value = edge.get(key, "")
            if not value.startswith("0.0.0.0:") or port_of(value) != edge_ports.get(port_name):
                P.add(f"{where} edge.toml", f"edge.{key} {value!r} is not 0.0.0.0:<the pod's {port_name} port {edge_ports.get(port_name)}>")

    envs = {t["metadata"].get("labels", {}).get("app.kubernetes.io/component"):
            {e["name"]: e.get("value", "secret") for c in t["spec"]["containers"] for e in c.get("env", [])}
            for w, t in templates}
    hub_replicas = next((w["spec"].get("replicas", 1) for w, t in templates if w["kind"] == "StatefulSet"), 0)
    if envs.get("hub", {}).get("HUB_INITIAL_REPLICAS") != str(hub_replicas):
        P.add("ops/k8s/hub-statefulset.yaml", f"HUB_INITIAL_REPLICAS is not the StatefulSet's replicas ({hub_replicas})")
    if envs.get("edge", {}).get("HUB_REPLICAS") != str(hub_replicas):
        P.add("ops/k8s/edge-deployment.yaml", f"HUB_REPLICAS is not the hubs' replicas ({hub_replicas})")
    dry_run_start_scripts(data, configs, envs, hub_replicas, hub_ports, runner)


def dry_run_start_scripts(data: dict, configs: dict, envs: dict, replicas: int, hub_ports: dict, runner: Runner) -> None:
    """Runs hub-start.sh and edge-start.sh with stand-ins for getent (a Service resolves to
    192.0.2.<ordinal+10>, a documentation address) and ganymede (prints its environment)."""
    where = "ops/k8s/configmap.yaml"
    if "hub-start.sh" not in data or "edge-start.sh" not in data:
        P.add(where, "hub-start.sh or edge-start.sh is missing")
        return
    with tempfile.TemporaryDirectory(prefix="ganymede-k8s-") as tmp:
        etc, stubs = Path(tmp) / "etc", Path(tmp) / "bin"
        etc.mkdir()
        stubs.mkdir()
        for key, text in data.items():
            (etc / key).write_text(text)
        (stubs / "getent").write_text(
            '#!/bin/sh\ncase $2 in ganymede-hub-[0-9]*) n=${2##*-}; echo "192.0.2.$((n + 10)) $2.ganymede.svc.cluster.local $2" ;; *) exit 2 ;; esac\n')
        (stubs / "ganymede").write_text('#!/bin/sh\necho "ARGS $*"\nenv | grep -E "^(GANYMEDE_|CONFIGPROXY_)" | sort\n')
        for stub in stubs.iterdir():
            stub.chmod(0o755)

        def run(script: str, hostname: str, env: dict) -> dict | None:
            text = data[script].replace("/etc/ganymede/", f"{etc}/")
            (etc / script).write_text(text)
            full = {"PATH": f"{stubs}:/usr/bin:/bin", "HOSTNAME": hostname}
            full.update({k: v for k, v in env.items() if v != "secret"})
            out = subprocess.run(["sh", str(etc / script)], env=full, capture_output=True, text=True, timeout=30)
            if out.returncode != 0:
                P.add(f"{where} {script}", f"as {hostname}: exited {out.returncode}: {out.stderr.strip()}")
                return None
            result = {}
            for line in out.stdout.splitlines():
                name, _, value = line.partition("=") if not line.startswith("ARGS ") else ("ARGS", "", line[5:])
                result[name] = value
            return result

        hub_env = envs.get("hub", {})
        for ordinal in range(replicas + 1):
            host = f"ganymede-hub-{ordinal}"
            got = run("hub-start.sh", host, hub_env)
            if got is None:
                continue
            label = f"{where} hub-start.sh as {host}"
            if got.get("ARGS", "").split()[:1] != ["hub"]:
                P.add(label, f"does not exec `ganymede hub` ({got.get('ARGS')})")
            if got.get("GANYMEDE_HUB_NODE_ID") != str(ordinal + 1):
                P.add(label, f"node_id {got.get('GANYMEDE_HUB_NODE_ID')}, want {ordinal + 1}")
            me = f"192.0.2.{ordinal + 10}"
            want = {"GANYMEDE_HUB_ADVERTISE_API": f"{me}:{hub_ports.get('api')}",
                    "GANYMEDE_HUB_ADVERTISE_RAFT": f"{me}:{hub_ports.get('raft')}"}
            for var, value in want.items():
                if got.get(var) != value:
                    P.add(label, f"{var}={got.get(var)}, want {value}")
            members_text = got.get("GANYMEDE_CLUSTER_INITIAL_MEMBERS")
            if ordinal >= replicas:
                if members_text:
                    P.add(label, "a replica beyond the founders must start without initial_members (it waits for `ganymede cluster add`)")
                continue
            members = load_toml(f"v = {members_text}", label) if members_text else None
            members = members.get("v") if members else None
            if not members:
                P.add(label, "no initial_members")
                continue
            by_id = check_members(members, label)
            expected = {i + 1: (f"192.0.2.{i + 10}:{hub_ports.get('raft')}", f"192.0.2.{i + 10}:{hub_ports.get('api')}")
                        for i in range(replicas)}
            got_members = {n: (m.get("raft_addr"), m.get("api_addr")) for n, m in by_id.items()}
            if got_members != expected:
                P.add(label, f"initial_members {got_members}, want {expected}")
            if ordinal == replicas - 1 and "hub" in configs:
                # The real binary takes the script's environment (not as the founding node).
                env = {k: v for k, v in got.items() if k.startswith("GANYMEDE_")}
                runner.run("hub", configs["hub"][1], env, label)

        got = run("edge-start.sh", "ganymede-edge-7d9f-abcde", envs.get("edge", {}))
        if got is not None:
            label = f"{where} edge-start.sh"
            if got.get("ARGS", "").split()[:1] != ["edge"]:
                P.add(label, f"does not exec `ganymede edge` ({got.get('ARGS')})")
            hubs = load_toml(f"v = {got.get('GANYMEDE_EDGE_HUBS', '')}", label)
            hubs = hubs.get("v") if hubs else []
            want = [{"api": f"192.0.2.{i + 10}:{hub_ports.get('api')}", "grpc": f"192.0.2.{i + 10}:{hub_ports.get('feed-grpc')}",
                     "events": f"192.0.2.{i + 10}:{hub_ports.get('feed-events')}"} for i in range(replicas)]
            if hubs != want:
                P.add(label, f"edge.hubs {hubs}, want {want}")
            if "edge" in configs and hubs:
                env = {k: v for k, v in got.items() if k.startswith("GANYMEDE_")}
                runner.run("edge", configs["edge"][1], env, label)


# --- main ----------------------------------------------------------------------------


def main() -> int:
    global ROOT
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2])
    parser.add_argument("--ganymede", type=Path, help="the ganymede binary, for configuration checks")
    parser.add_argument("--no-schemas", action="store_true", help="do not require kubernetes-validate")
    args = parser.parse_args()
    ROOT = args.root.resolve()
    binary = args.ganymede if args.ganymede and args.ganymede.is_file() else None
    if binary is None:
        P.note("no ganymede binary: configuration keys not checked, configurations not started")
    keys = Keys(binary)
    runner = Runner(binary)

    # A file malformed in a way no check foresaw is still a problem, not a crash that
    # hides the other checks' findings.
    def guarded(what: str, check, *check_args):
        try:
            return check(*check_args)
        except Exception as err:  # noqa: BLE001
            where = traceback.extract_tb(err.__traceback__)[-1]
            P.add(what, f"could not be checked: {type(err).__name__}: {err} (check_manifests.py:{where.lineno})")
            return None

    image = guarded("ops/docker", check_dockerfile, keys, runner) or {}
    guarded("ops/compose", check_compose, keys, runner)
    guarded("ops/k8s", check_k8s, keys, runner, args.no_schemas, image.get("uid", ""))
    guarded("ops/grafana", check_dashboard)
    if binary is not None:
        P.note(f"{runner.ran} configurations started by {binary}")

    for note in P.notes:
        print(f"note: {note}")
    if P.items:
        print(f"\n{len(P.items)} problem(s) in the deployable files:", file=sys.stderr)
        for item in P.items:
            print(f"  - {item}", file=sys.stderr)
        return 1
    print("ops manifests: all checks passed (ops/docker, ops/compose, ops/k8s, ops/grafana)")
    return 0


ROOT = Path(".")

if __name__ == "__main__":
    sys.exit(main())
