"""Ganymede's warm interpreter for the local spawner.

Importing jupyterhub-singleuser's modules takes seconds of CPU (most of a JupyterLab
start). This process imports them once, then forks a child per server: the child takes
the server's environment, working directory and log file, and runs the console script
as `python <script>` would.

Protocol (one JSON object per line): requests on stdin
  {"id": n, "script": path, "argv": [...], "env": {...}, "cwd": path, "log": path}
and on stdout
  {"ready": true}                       once the modules are imported,
  {"id": n, "pid": p} | {"id": n, "error": why}   for each request,
  {"exited": p, "status": s}            when a child ends (s: the raw wait status).
It exits when stdin closes; its children get SIGTERM when it dies (as it does when
the hub dies).

Run: python prefork.py <module to import>...
"""

import ctypes
import importlib
import json
import os
import selectors
import signal
import sys
import traceback

PR_SET_PDEATHSIG = 1


def die_with_parent(parent):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    # The parent may have died before the prctl took effect.
    if os.getppid() != parent:
        os._exit(1)


def run_child(request, parent, wake):
    code = 1
    try:
        os.setpgid(0, 0)
        die_with_parent(parent)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        # stdin and stdout (the control pipes) become /dev/null and the log.
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
        for fd in wake:
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = list(request["argv"])
        sys.path[0] = os.path.dirname(request["script"])
        import runpy

        runpy.run_path(request["script"], run_name="__main__")
        code = 0
    except SystemExit as exit:
        if exit.code is None:
            code = 0
        elif isinstance(exit.code, int):
            code = exit.code
        else:
            print(exit.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def main():
    parent = os.getppid()
    die_with_parent(parent)
    for name in sys.argv[1:]:
        try:
            importlib.import_module(name)
        except Exception as err:
            print(f"ganymede prefork: cannot import {name}: {err}", file=sys.stderr, flush=True)

    # A thread started by an import would not exist in the children, and a lock it held
    # would stay held there for good.
    threads = len(os.listdir("/proc/self/task"))
    if threads > 1:
        print(f"ganymede prefork: {threads} threads after the imports; forking may deadlock", file=sys.stderr, flush=True)

    out = os.fdopen(1, "w", buffering=1, closefd=False)

    def say(message):
        out.write(json.dumps(message) + "\n")
        out.flush()

    # SIGCHLD wakes the loop through a pipe, so one thread both forks and reaps.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)

    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ, "stdin")
    selector.register(wake_r, selectors.EVENT_READ, "child")
    pending = b""
    say({"ready": True})
    while True:
        for key, _ in selector.select():
            if key.data == "child":
                try:
                    while os.read(wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
                while True:
                    try:
                        pid, status = os.waitpid(-1, os.WNOHANG)
                    except ChildProcessError:
                        break
                    if pid == 0:
                        break
                    say({"exited": pid, "status": status})
                continue
            chunk = os.read(0, 65536)
            if not chunk:
                return
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = None
                try:
                    request = json.loads(line)
                    sys.stdout.flush()
                    sys.stderr.flush()
                    pid = os.fork()
                except Exception as err:
                    say({"id": request.get("id") if isinstance(request, dict) else None, "error": str(err)})
                    continue
                if pid == 0:
                    run_child(request, parent=os.getppid(), wake=(wake_r, wake_w))
                say({"id": request["id"], "pid": pid})


if __name__ == "__main__":
    main()
