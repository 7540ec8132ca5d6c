//! The warm interpreter (`prefork.py`): a Python process that has imported the
//! single-user server's modules and forks a child per server, so a server starts
//! without seconds of imports. Spoken to over its stdin and stdout, one JSON object
//! per line; it reaps its children and says when one exits.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tracing::{info, warn};

/// The interpreter's program, passed with `-c` (nothing to write to disk, readable by
/// whichever user the servers run as).
pub const PREFORK_PY: &str = include_str!("prefork.py");

/// Marks the warm interpreter's own process (`GANYMEDE_PREFORK=<instance>`).
pub const PREFORK_MARKER: &str = "GANYMEDE_PREFORK";

/// The modules imported up front by default: what `jupyterhub-singleuser` with
/// JupyterLab imports, except `jupyterhub.singleuser` itself, which reads its server's
/// environment when imported.
pub const DEFAULT_PRELOAD: &[&str] = &[
    "jupyter_server.serverapp",
    "jupyterhub.log",
    "jupyterhub.httpclient",
    "jupyterhub.services.auth",
    "jupyterlab.labapp",
    "jupyter_lsp",
    "notebook_shim",
    "jupyter_server_terminals",
];

/// A server to fork.
pub struct ForkRequest<'a> {
    pub script: &'a Path,
    pub argv: Vec<String>,
    pub env: &'a BTreeMap<String, String>,
    pub cwd: &'a Path,
    pub log: &'a Path,
}

#[derive(Default)]
struct Shared {
    ready: AtomicBool,
    alive: AtomicBool,
    replies: Mutex<HashMap<u64, tokio::sync::oneshot::Sender<Result<u32, String>>>>,
    exits: Mutex<HashMap<u32, i32>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub struct Zygote {
    /// The console script it runs for each server.
    pub script: PathBuf,
    process: Mutex<std::process::Child>,
    requests: Mutex<Option<std::process::ChildStdin>>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
}

impl Zygote {
    /// The command that starts the interpreter `python` importing `preload`.
    pub fn command(python: &Path, preload: &[String]) -> std::process::Command {
        let mut command = std::process::Command::new(python);
        command
            .arg("-c")
            .arg(PREFORK_PY)
            .args(preload)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        command
    }

    /// Takes over a started interpreter (see [`Zygote::command`]) that runs `script`.
    pub fn new(mut process: std::process::Child, script: PathBuf) -> std::io::Result<Zygote> {
        let (Some(requests), Some(replies)) = (process.stdin.take(), process.stdout.take()) else {
            return Err(std::io::Error::other("the interpreter's pipes are missing"));
        };
        let shared = Arc::new(Shared::default());
        shared.alive.store(true, Ordering::SeqCst);
        let reader = shared.clone();
        let pid = process.id();
        std::thread::Builder::new()
            .name("ganymede-prefork".into())
            .spawn(move || read_replies(BufReader::new(replies), &reader, pid))?;
        Ok(Zygote {
            script,
            process: Mutex::new(process),
            requests: Mutex::new(Some(requests)),
            shared,
            next_id: AtomicU64::new(1),
        })
    }

    /// Whether it has imported its modules and still runs.
    pub fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::SeqCst) && self.is_alive()
    }

    pub fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::SeqCst)
    }

    /// Forks a server; its pid.
    pub async fn fork(&self, request: ForkRequest<'_>) -> Result<u32, String> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let (reply, replied) = tokio::sync::oneshot::channel();
        lock(&self.shared.replies).insert(id, reply);
        let line = json!({
            "id": id,
            "script": request.script,
            "argv": request.argv,
            "env": request.env,
            "cwd": request.cwd,
            "log": request.log,
        })
        .to_string();
        let written = match lock(&self.requests).as_mut() {
            // A request is a few kilobytes: the pipe takes it without blocking.
            Some(requests) => requests
                .write_all(line.as_bytes())
                .and_then(|()| requests.write_all(b"\n"))
                .and_then(|()| requests.flush())
                .map_err(|err| format!("the warm interpreter is gone: {err}")),
            None => Err("the warm interpreter is stopped".into()),
        };
        if let Err(err) = written {
            lock(&self.shared.replies).remove(&id);
            return Err(err);
        }
        match tokio::time::timeout(Duration::from_secs(10), replied).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the warm interpreter ended".into()),
            Err(_) => {
                lock(&self.shared.replies).remove(&id);
                Err("the warm interpreter did not answer within 10 s".into())
            }
        }
    }

    /// The raw wait status of a child that has exited.
    pub fn exit_status(&self, pid: u32) -> Option<i32> {
        lock(&self.shared.exits).get(&pid).copied()
    }

    /// Forgets a child's exit (it has been reported).
    pub fn forget(&self, pid: u32) {
        lock(&self.shared.exits).remove(&pid);
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        // End of input ends the interpreter; its children get SIGTERM.
        lock(&self.requests).take();
        let mut process = lock(&self.process);
        for _ in 0..50 {
            if matches!(process.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = process.kill();
        let _ = process.wait();
    }
}

fn read_replies(replies: impl BufRead, shared: &Shared, pid: u32) {
    for line in replies.lines() {
        let Ok(line) = line else { break };
        let Ok(message) = serde_json::from_str::<Value>(&line) else {
            warn!(pid, line, "the warm interpreter said something unexpected");
            continue;
        };
        if message["ready"] == json!(true) {
            info!(pid, "warm interpreter ready");
            shared.ready.store(true, Ordering::SeqCst);
        } else if let Some(child) = message["exited"].as_u64().and_then(|p| u32::try_from(p).ok()) {
            let status = message["status"]
                .as_i64()
                .and_then(|s| i32::try_from(s).ok())
                .unwrap_or(-1);
            lock(&shared.exits).insert(child, status);
        } else if let Some(id) = message["id"].as_u64()
            && let Some(reply) = lock(&shared.replies).remove(&id)
        {
            let result = match message["pid"].as_u64().and_then(|p| u32::try_from(p).ok()) {
                Some(child) => Ok(child),
                None => Err(message["error"].as_str().unwrap_or("no pid").to_owned()),
            };
            let _ = reply.send(result);
        }
    }
    shared.alive.store(false, Ordering::SeqCst);
    warn!(pid, "the warm interpreter ended");
    lock(&shared.replies).clear();
}

/// The Python interpreter a console script runs with (its `#!` line), if it is one.
pub fn script_interpreter(script: &Path) -> Option<PathBuf> {
    let first = first_line(script)?;
    let mut words = first.strip_prefix("#!")?.split_whitespace();
    let mut program = words.next()?;
    if Path::new(program).file_name()? == "env" {
        program = words.find(|word| !word.starts_with('-'))?;
    }
    let name = Path::new(program).file_name()?.to_str()?;
    if !name.starts_with("python") {
        return None;
    }
    if program.contains('/') {
        Some(PathBuf::from(program))
    } else {
        crate::local::resolve(program, std::env::var("PATH").ok().as_deref()).ok()
    }
}

/// A file's first line, from its first 512 bytes (a binary has no line to speak of).
fn first_line(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path).ok()?.take(512).read_to_end(&mut bytes).ok()?;
    let end = bytes.iter().position(|b| *b == b'\n').unwrap_or(bytes.len());
    String::from_utf8(bytes[..end].to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, body).expect("write");
        path
    }

    #[test]
    fn interpreter_of_a_console_script() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dir = dir.path();
        let direct = script(dir, "a", "#!/opt/venv/bin/python3.11\nimport sys\n");
        assert_eq!(
            script_interpreter(&direct),
            Some(PathBuf::from("/opt/venv/bin/python3.11"))
        );
        let spaced = script(dir, "b", "#! /usr/bin/python -E\n");
        assert_eq!(script_interpreter(&spaced), Some(PathBuf::from("/usr/bin/python")));
        let shell = script(dir, "c", "#!/bin/sh\nexec python3 \"$@\"\n");
        assert_eq!(script_interpreter(&shell), None);
        let binary = script(dir, "d", "\u{7f}ELF\u{2}\u{1}\u{1}");
        assert_eq!(script_interpreter(&binary), None);
        assert_eq!(script_interpreter(&dir.join("missing")), None);
    }
}
