//! The local process spawner (JupyterHub's `LocalProcessSpawner`): one process per
//! server on this machine, in its own process group, with JupyterHub's environment,
//! a per-user working directory, and its output in a per-server log file.
//!
//! Every process carries `GANYMEDE_SPAWN=<instance>/<spawn_id>` in its environment,
//! and so do the kernels it starts: that marker finds a spawn's processes again after
//! the hub restarted, and finds all of them (kernels run in sessions of their own).
//! Children also get SIGTERM when the hub dies (`PR_SET_PDEATHSIG`), so a hub killed
//! with SIGKILL leaves no server behind; jupyter-server shuts its kernels down on it.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use rustix::process::{Pid, Signal};
use serde_json::json;
use tracing::{info, warn};

use crate::env::jupyterhub_env;
use crate::prefork::{self, ForkRequest, PREFORK_MARKER, Zygote};
use crate::{Observed, Progress, ProgressSink, SpawnError, SpawnRef, SpawnSpec, Spawner, Started};

/// The environment variable that marks a spawn's processes.
pub const SPAWN_MARKER: &str = "GANYMEDE_SPAWN";

/// An OS user the servers run as (the hub must be root to switch to it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

impl RunAs {
    /// Looks `name` up in the system's user database (`getent passwd`, so NSS and LDAP
    /// users count too).
    pub fn lookup(name: &str) -> Result<RunAs, SpawnError> {
        let output = std::process::Command::new("getent")
            .args(["passwd", name])
            .output()
            .map_err(|err| SpawnError::Config(format!("cannot look up user {name}: {err}")))?;
        let line = String::from_utf8_lossy(&output.stdout);
        let fields: Vec<&str> = line.trim_end().split(':').collect();
        match fields.as_slice() {
            [user, _, uid, gid, _, home, ..] if *user == name => Ok(RunAs {
                name: name.to_owned(),
                uid: uid
                    .parse()
                    .map_err(|_| SpawnError::Config(format!("bad uid for {name}")))?,
                gid: gid
                    .parse()
                    .map_err(|_| SpawnError::Config(format!("bad gid for {name}")))?,
                home: PathBuf::from(home),
            }),
            _ => Err(SpawnError::Config(format!("no such OS user: {name}"))),
        }
    }
}

/// How the local spawner runs servers (JupyterHub's `Spawner` options).
#[derive(Clone, Debug)]
pub struct LocalSettings {
    /// The command; `jupyterhub-singleuser` (found on `PATH`) by default.
    pub cmd: Vec<String>,
    /// Appended to `cmd`.
    pub args: Vec<String>,
    /// Set last, over everything (`Spawner.environment`).
    pub environment: BTreeMap<String, String>,
    /// Variables passed on from the hub's environment.
    pub env_keep: Vec<String>,
    /// `$JUPYTERHUB_ROOT_DIR`.
    pub notebook_dir: Option<String>,
    /// `$JUPYTERHUB_DEFAULT_URL`.
    pub default_url: Option<String>,
    /// Each user's home and working directory is `<homes>/<user>` (unless `run_as`).
    pub homes: PathBuf,
    /// Each server's output goes to `<logs>/<user>[.<server>].log`.
    pub logs: PathBuf,
    /// The address servers listen on.
    pub ip: String,
    /// How long a server has to exit after SIGTERM before it gets SIGKILL.
    pub stop_timeout: Duration,
    /// Run servers as this OS user (the hub must run as root).
    pub run_as: Option<RunAs>,
    /// Add `--ServerApp.allow_root=True` when servers would run as root (JupyterLab
    /// refuses root otherwise).
    pub allow_root: bool,
    /// Tells this replica's processes from others' on the same machine.
    pub instance: String,
    /// Start servers from a warm interpreter that has imported these modules (when the
    /// command is a Python console script); `None` runs the command afresh each time.
    pub prefork: Option<Vec<String>>,
}

impl LocalSettings {
    pub fn new(homes: PathBuf, logs: PathBuf, instance: String) -> Self {
        LocalSettings {
            cmd: vec!["jupyterhub-singleuser".into()],
            args: Vec::new(),
            environment: BTreeMap::new(),
            env_keep: crate::DEFAULT_ENV_KEEP.iter().map(|s| (*s).to_owned()).collect(),
            notebook_dir: None,
            default_url: None,
            homes,
            logs,
            ip: "127.0.0.1".into(),
            stop_timeout: Duration::from_secs(10),
            run_as: None,
            allow_root: true,
            instance,
            prefork: None,
        }
    }
}

/// A server's process: our child, or the warm interpreter's.
enum Process {
    Direct(std::process::Child),
    Forked { pid: u32, zygote: Arc<Zygote> },
}

impl Process {
    fn id(&self) -> u32 {
        match self {
            Process::Direct(child) => child.id(),
            Process::Forked { pid, .. } => *pid,
        }
    }

    /// How it ended, once it has (reaping it).
    fn try_wait(&mut self) -> Option<ExitStatus> {
        match self {
            Process::Direct(child) => child.try_wait().ok().flatten(),
            Process::Forked { pid, zygote } => {
                if let Some(status) = zygote.exit_status(*pid) {
                    zygote.forget(*pid);
                    return Some(ExitStatus::from_raw(status));
                }
                // Its interpreter died (SIGTERM reached the server): gone once /proc says so
                // (`is_zombie` is also true for a pid that no longer exists).
                (!zygote.is_alive() && is_zombie(*pid as i32)).then(|| ExitStatus::from_raw(Signal::TERM.as_raw()))
            }
        }
    }
}

/// A server this spawner launched.
struct Child {
    process: Process,
    url: String,
    state: serde_json::Value,
    log: PathBuf,
    exited: Option<String>,
    _port: PortClaim,
}

/// Processes are launched from one long-lived thread: `PR_SET_PDEATHSIG` fires when
/// the *thread* that forked a child ends, and a tokio blocking thread may end at any
/// time.
struct Launch {
    command: std::process::Command,
    then: Box<dyn FnOnce(std::io::Result<std::process::Child>) + Send>,
}

pub struct LocalProcessSpawner {
    settings: LocalSettings,
    children: Arc<Mutex<HashMap<u64, Child>>>,
    launcher: Mutex<std::sync::mpsc::Sender<Launch>>,
    ports: Arc<Mutex<Ports>>,
    /// The warm interpreter, when `prefork` is on and the command is a Python script.
    zygote: Arc<Mutex<Option<Arc<Zygote>>>>,
}

/// Ports for servers, handed out in turn from a random place in the range, never one
/// a starting or running server of this spawner holds, nor one another spawner on this
/// machine has leased (see [`PortLease`]).
struct Ports {
    low: u16,
    high: u16,
    next: u16,
    /// `None`: held without a machine-wide lease (leases could not be taken at all).
    reserved: HashMap<u16, Option<PortLease>>,
    lease_warned: bool,
}

impl Ports {
    fn new() -> Ports {
        let (low, high) = server_ports();
        Ports {
            low,
            high,
            next: low + rand::random::<u16>() % (high - low),
            reserved: Default::default(),
            lease_warned: false,
        }
    }

    fn take(&mut self, ip: &str) -> Result<u16, SpawnError> {
        for _ in 0..(self.high - self.low) {
            let port = self.next;
            self.next = if port + 1 >= self.high { self.low } else { port + 1 };
            if self.reserved.contains_key(&port) {
                continue;
            }
            let lease = match PortLease::take(ip, port) {
                Ok(Some(lease)) => Some(lease),
                // Another spawner on this machine holds it.
                Ok(None) => continue,
                // No abstract Unix sockets here (another kernel, a sandbox): the TCP
                // check below is all there is.
                Err(err) => {
                    if !std::mem::replace(&mut self.lease_warned, true) {
                        warn!(error = %err, "cannot lease server ports machine-wide; replicas on this machine may collide on a port");
                    }
                    None
                }
            };
            if std::net::TcpListener::bind((ip, port)).is_ok() {
                self.reserved.insert(port, lease);
                return Ok(port);
            }
        }
        Err(SpawnError::Io(format!(
            "no free port for a server on {ip} in {}..{}",
            self.low, self.high
        )))
    }

    fn release(&mut self, port: u16) {
        self.reserved.remove(&port);
    }
}

/// A claim on a server port shared by every spawner on the machine (replicas of a
/// local cluster, concurrent tests): a socket bound to an abstract Unix name. A free
/// TCP port only says that nothing has bound it *yet* — a server takes from
/// milliseconds to seconds (Python's imports) to bind the port it was given, and
/// another replica that checked meanwhile would hand out the same one. The name is
/// released when the lease is dropped or its process dies, so no file is left behind.
struct PortLease {
    _bound: std::os::unix::net::UnixDatagram,
}

impl PortLease {
    /// `Ok(None)` when someone else holds it.
    fn take(ip: &str, port: u16) -> std::io::Result<Option<PortLease>> {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("ganymede-server-port/{ip}:{port}");
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        match std::os::unix::net::UnixDatagram::bind_addr(&address) {
            Ok(bound) => Ok(Some(PortLease { _bound: bound })),
            Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => Ok(None),
            Err(err) => Err(err),
        }
    }
}

/// One attempt's port, back in the pool when dropped: with the attempt's record, or
/// with a launch abandoned half-way (its task aborted), so no port leaks.
struct PortClaim {
    ports: Arc<Mutex<Ports>>,
    port: u16,
}

impl PortClaim {
    fn take(ports: &Arc<Mutex<Ports>>, ip: &str) -> Result<PortClaim, SpawnError> {
        let port = lock(ports).take(ip)?;
        Ok(PortClaim {
            ports: ports.clone(),
            port,
        })
    }
}

impl Drop for PortClaim {
    fn drop(&mut self) {
        lock(&self.ports).release(self.port);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl LocalProcessSpawner {
    pub fn new(settings: LocalSettings) -> Result<Self, SpawnError> {
        if settings.cmd.is_empty() {
            return Err(SpawnError::Config("the spawner command is empty".into()));
        }
        let (launcher, launches) = std::sync::mpsc::channel::<Launch>();
        std::thread::Builder::new()
            .name("ganymede-launcher".into())
            .spawn(move || {
                for mut launch in launches {
                    (launch.then)(launch.command.spawn());
                }
            })
            .map_err(|err| SpawnError::Io(format!("cannot start the launcher thread: {err}")))?;
        let spawner = LocalProcessSpawner {
            settings,
            children: Default::default(),
            launcher: Mutex::new(launcher),
            ports: Arc::new(Mutex::new(Ports::new())),
            zygote: Default::default(),
        };
        spawner.start_zygote();
        Ok(spawner)
    }

    /// The script the warm interpreter runs and its interpreter, when prefork is on
    /// and the command is a Python console script.
    fn prefork_script(&self) -> Option<(PathBuf, PathBuf)> {
        self.settings.prefork.as_ref()?;
        let path = self.base_env().get("PATH").cloned();
        let script = resolve(&self.settings.cmd[0], path.as_deref()).ok()?;
        let python = prefork::script_interpreter(&script)?;
        Some((script, python))
    }

    /// The environment every server shares (the warm interpreter's): kept variables
    /// from the hub's, then `environment`.
    fn base_env(&self) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = self
            .settings
            .env_keep
            .iter()
            .filter_map(|name| Some((name.clone(), std::env::var(name).ok()?)))
            .collect();
        env.extend(self.settings.environment.clone());
        env
    }

    /// Starts the warm interpreter (in the background: it is used once it has
    /// imported its modules). Servers start afresh until then, or when it fails.
    fn start_zygote(&self) {
        let Some(preload) = &self.settings.prefork else { return };
        let Some((script, python)) = self.prefork_script() else {
            warn!(
                cmd = %self.settings.cmd[0],
                "prefork is on, but the spawner command is not a Python console script: servers start afresh"
            );
            return;
        };
        let mut command = Zygote::command(&python, preload);
        let mut env = self.base_env();
        env.insert(PREFORK_MARKER.into(), self.settings.instance.clone());
        // Its home is the servers' (or the one user's): what it leaves there is theirs.
        match &self.settings.run_as {
            Some(run_as) => {
                env.insert("HOME".into(), run_as.home.display().to_string());
                command.uid(run_as.uid).gid(run_as.gid);
            }
            None => {
                let _ = std::fs::create_dir_all(&self.settings.homes);
                env.insert("HOME".into(), self.settings.homes.display().to_string());
            }
        }
        let log = self.settings.logs.join("prefork.log");
        let stderr = std::fs::create_dir_all(&self.settings.logs)
            .and_then(|()| std::fs::OpenOptions::new().create(true).append(true).open(&log));
        command
            .env_clear()
            .envs(&env)
            .current_dir("/")
            .stderr(stderr.map_or_else(|_| Stdio::null(), Stdio::from))
            .process_group(0);
        die_with_parent(&mut command);
        let slot = self.zygote.clone();
        let then = move |launched: std::io::Result<std::process::Child>| match launched
            .and_then(|process| Zygote::new(process, script))
        {
            Ok(zygote) => *lock(&slot) = Some(Arc::new(zygote)),
            Err(err) => {
                warn!(python = %python.display(), %err, "cannot start the warm interpreter: servers start afresh");
            }
        };
        let _ = lock(&self.launcher).send(Launch {
            command,
            then: Box::new(then),
        });
    }

    /// Whether servers start from a warm interpreter now (prefork is on and it has
    /// imported its modules).
    pub fn is_warm(&self) -> bool {
        lock(&self.zygote).as_ref().is_some_and(|zygote| zygote.is_ready())
    }

    /// The warm interpreter if it is ready; restarts it if it died.
    fn ready_zygote(&self) -> Option<Arc<Zygote>> {
        let zygote = lock(&self.zygote).clone()?;
        if zygote.is_ready() {
            return Some(zygote);
        }
        if !zygote.is_alive() {
            lock(&self.zygote).take();
            self.start_zygote();
        }
        None
    }

    pub fn settings(&self) -> &LocalSettings {
        &self.settings
    }

    fn marker(&self, spawn_id: u64) -> String {
        format!("{}/{spawn_id}", self.settings.instance)
    }

    fn log_path(&self, user: &str, server: &str) -> PathBuf {
        let name = if server.is_empty() {
            format!("{}.log", file_safe(user))
        } else {
            format!("{}.{}.log", file_safe(user), file_safe(server))
        };
        self.settings.logs.join(name)
    }

    fn home(&self, user: &str) -> PathBuf {
        match &self.settings.run_as {
            Some(run_as) => run_as.home.clone(),
            None => self.settings.homes.join(file_safe(user)),
        }
    }

    async fn launch(&self, spec: &SpawnSpec, progress: &ProgressSink) -> Result<Started, SpawnError> {
        let claim = PortClaim::take(&self.ports, &self.settings.ip)?;
        self.launch_on(spec, progress, claim).await
    }

    async fn launch_on(
        &self,
        spec: &SpawnSpec,
        progress: &ProgressSink,
        claim: PortClaim,
    ) -> Result<Started, SpawnError> {
        let settings = &self.settings;
        let port = claim.port;
        let url = format!("http://{}:{port}", settings.ip);
        let bind_url = format!("{url}{}", spec.service_prefix);
        let home = self.home(&spec.user);
        let log = self.log_path(&spec.user, &spec.server);
        let mut env = jupyterhub_env(
            spec,
            &bind_url,
            &settings.env_keep,
            |name| std::env::var(name).ok(),
            settings.notebook_dir.as_deref(),
            settings.default_url.as_deref(),
            &BTreeMap::new(),
        );
        let user = settings.run_as.as_ref().map_or(spec.user.as_str(), |r| r.name.as_str());
        env.insert("USER".into(), user.to_owned());
        env.insert("HOME".into(), home.display().to_string());
        env.insert("SHELL".into(), "/bin/bash".into());
        for (name, value) in &settings.environment {
            env.insert(name.clone(), value.clone());
        }
        env.insert(SPAWN_MARKER.into(), self.marker(spec.spawn_id));

        let program = resolve(&settings.cmd[0], env.get("PATH").map(String::as_str))?;
        let mut args: Vec<String> = settings.cmd[1..].to_vec();
        args.extend(settings.args.iter().cloned());
        let as_root = settings.run_as.is_none() && rustix::process::geteuid().is_root();
        if as_root && settings.allow_root && !args.iter().any(|a| a.contains("allow_root") || a == "--allow-root") {
            args.push("--ServerApp.allow_root=True".into());
        }

        let run_as = settings.run_as.clone();
        let (home_dir, log_path) = (home.clone(), log.clone());
        let spawn_id = spec.spawn_id;
        let (stdout, stderr) =
            tokio::task::spawn_blocking(move || prepare(&home_dir, &log_path, run_as.as_ref(), spawn_id))
                .await
                .map_err(|err| SpawnError::Io(err.to_string()))??;

        let _ = progress.send(Progress {
            progress: 50,
            message: "Spawning server...".into(),
        });
        let process = match self.fork(&program, &args, &env, &home, &log).await {
            Some((pid, zygote)) => Process::Forked { pid, zygote },
            None => {
                let mut command = std::process::Command::new(&program);
                command
                    .args(&args)
                    .env_clear()
                    .envs(&env)
                    .current_dir(&home)
                    .stdin(Stdio::null())
                    .stdout(stdout)
                    .stderr(stderr)
                    .process_group(0);
                if let Some(run_as) = &settings.run_as {
                    command.uid(run_as.uid).gid(run_as.gid);
                }
                die_with_parent(&mut command);
                Process::Direct(self.run(command, &program).await?)
            }
        };
        let pid = process.id();
        if matches!(process, Process::Forked { .. }) {
            info!(user = %spec.user, server = %spec.server, spawn_id, pid, port, "server process started from the warm interpreter");
        } else {
            info!(user = %spec.user, server = %spec.server, spawn_id, pid, port, "server process started");
        }
        let state = json!({"pid": pid, "port": port, "log": log.display().to_string()});
        lock(&self.children).insert(
            spawn_id,
            Child {
                process,
                url: url.clone(),
                state: state.clone(),
                log,
                exited: None,
                _port: claim,
            },
        );
        Ok(Started { url, state })
    }

    /// Runs `command` from the launcher thread.
    async fn run(&self, command: std::process::Command, program: &Path) -> Result<std::process::Child, SpawnError> {
        let (reply, launched) = tokio::sync::oneshot::channel();
        lock(&self.launcher)
            .send(Launch {
                command,
                then: Box::new(move |result| {
                    let _ = reply.send(result);
                }),
            })
            .map_err(|_| SpawnError::Io("the launcher thread is gone".into()))?;
        launched
            .await
            .map_err(|_| SpawnError::Io("the launcher thread is gone".into()))?
            .map_err(|err| SpawnError::Command {
                command: program.display().to_string(),
                reason: err.to_string(),
            })
    }

    /// Starts the server from the warm interpreter, if one is ready and `program` is
    /// its script; `None` means "start it afresh".
    async fn fork(
        &self,
        program: &Path,
        args: &[String],
        env: &BTreeMap<String, String>,
        home: &Path,
        log: &Path,
    ) -> Option<(u32, Arc<Zygote>)> {
        let zygote = self.ready_zygote()?;
        if zygote.script != program {
            return None;
        }
        let mut argv = vec![program.display().to_string()];
        argv.extend(args.iter().cloned());
        let request = ForkRequest {
            script: program,
            argv,
            env,
            cwd: home,
            log,
        };
        match zygote.fork(request).await {
            Ok(pid) => Some((pid, zygote.clone())),
            Err(err) => {
                warn!(%err, "the warm interpreter could not start a server: starting it afresh");
                None
            }
        }
    }

    /// Whether our child for `spawn_id` has exited (reaping it if so).
    fn child_exit(&self, spawn_id: u64) -> Option<Option<String>> {
        let mut children = lock(&self.children);
        let child = children.get_mut(&spawn_id)?;
        if child.exited.is_none()
            && let Some(status) = child.process.try_wait()
        {
            child.exited = Some(describe_exit(status, &child.log));
        }
        Some(child.exited.clone())
    }

    /// Stops the spawn and everything it started: SIGTERM, then SIGKILL (resent while
    /// anything survives, since a process may fork meanwhile). An error means something
    /// still runs; the caller tries again.
    async fn terminate(&self, spawn_id: u64) -> Result<(), SpawnError> {
        let marker = self.marker(spawn_id);
        let leader = lock(&self.children).get(&spawn_id).map(|child| child.process.id());
        let gone = || async {
            let leader_gone = leader.is_none() || matches!(self.child_exit(spawn_id), Some(Some(_)) | None);
            leader_gone && marked_pids(marker.clone()).await.is_empty()
        };
        signal_all(leader, &marker, Signal::TERM).await;
        let deadline = Instant::now() + self.settings.stop_timeout;
        let mut stopped = false;
        while Instant::now() < deadline {
            if gone().await {
                stopped = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !stopped {
            warn!(spawn_id, "server did not stop after SIGTERM; sending SIGKILL");
            // SIGKILL takes an instant to land: reap the leader and wait for every marked
            // process (kernels in sessions of their own too) to be gone, so that a stop
            // that returned has stopped.
            let kill_deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < kill_deadline {
                signal_all(leader, &marker, Signal::KILL).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                if gone().await {
                    stopped = true;
                    break;
                }
            }
        }
        if !stopped {
            let survivors = marked_pids(marker.clone()).await;
            return Err(SpawnError::Io(format!(
                "processes of spawn {spawn_id} survive SIGKILL: {survivors:?}"
            )));
        }
        // Dropping the record returns its port.
        lock(&self.children).remove(&spawn_id);
        Ok(())
    }
}

impl Spawner for LocalProcessSpawner {
    fn start<'a>(
        &'a self,
        spec: &'a SpawnSpec,
        progress: &'a ProgressSink,
    ) -> BoxFuture<'a, Result<Started, SpawnError>> {
        async move {
            if let Some(child) = lock(&self.children).get(&spec.spawn_id) {
                return Ok(Started {
                    url: child.url.clone(),
                    state: child.state.clone(),
                });
            }
            self.launch(spec, progress).await
        }
        .boxed()
    }

    fn poll<'a>(&'a self, spawn: SpawnRef<'a>) -> BoxFuture<'a, Observed> {
        async move {
            match self.child_exit(spawn.spawn_id) {
                Some(None) => Observed::Running,
                Some(Some(exit)) => Observed::Exited(exit),
                // Not ours (the hub restarted): alive if anything still carries the marker.
                None => {
                    if marked_pids(self.marker(spawn.spawn_id)).await.is_empty() {
                        Observed::Exited("the server is not running".into())
                    } else {
                        Observed::Running
                    }
                }
            }
        }
        .boxed()
    }

    fn stop<'a>(&'a self, spawn: SpawnRef<'a>) -> BoxFuture<'a, Result<(), SpawnError>> {
        async move { self.terminate(spawn.spawn_id).await }.boxed()
    }

    fn sweep<'a>(&'a self, keep: &'a (dyn Fn(u64) -> bool + Send + Sync)) -> BoxFuture<'a, Vec<u64>> {
        async move {
            let prefix = format!("{}/", self.settings.instance);
            let mut ids: Vec<u64> = processes_marked(prefix)
                .await
                .into_iter()
                .map(|(_, id)| id)
                .chain(lock(&self.children).keys().copied())
                .filter(|id| !keep(*id))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            for id in &ids {
                warn!(spawn_id = id, "stopping a server nobody wants any more");
                if let Err(err) = self.terminate(*id).await {
                    warn!(spawn_id = id, error = %err, "cannot stop it");
                }
            }
            ids
        }
        .boxed()
    }
}

impl Drop for LocalProcessSpawner {
    fn drop(&mut self) {
        // The launcher thread ends with its channel; its children get SIGTERM.
        for child in lock(&self.children).values_mut() {
            let _ = child.process.try_wait();
        }
    }
}

/// The home directory exists (owned by `run_as`) and the log file is open for appending
/// with a line that says which spawn follows.
fn prepare(home: &Path, log: &Path, run_as: Option<&RunAs>, spawn_id: u64) -> Result<(Stdio, Stdio), SpawnError> {
    let io = |what: &str, path: &Path, err: std::io::Error| SpawnError::Io(format!("{what} {}: {err}", path.display()));
    std::fs::create_dir_all(home).map_err(|err| io("cannot create", home, err))?;
    if let Some(run_as) = run_as {
        std::os::unix::fs::chown(home, Some(run_as.uid), Some(run_as.gid))
            .map_err(|err| io("cannot chown", home, err))?;
    }
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(|err| io("cannot create", dir, err))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|err| io("cannot open", log, err))?;
    let _ = writeln!(file, "--- ganymede: spawn {spawn_id} ---");
    let stderr = file.try_clone().map_err(|err| io("cannot open", log, err))?;
    Ok((Stdio::from(file), Stdio::from(stderr)))
}

/// SIGTERM for the child when the thread that launched it (the hub) dies.
#[allow(unsafe_code)]
fn die_with_parent(command: &mut std::process::Command) {
    // SAFETY: the closure runs between fork and exec and only makes the prctl(2)
    // system call, which is async-signal-safe; it allocates nothing and takes no locks.
    unsafe {
        command.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(Signal::TERM)).map_err(std::io::Error::from)
        });
    }
}

/// The ports servers get: outside the kernel's ephemeral range, where bind-to-port-0
/// (JupyterHub's `random_port`) picks and where the next outgoing connection can take a
/// port before the server binds it; above it when there is room (Linux's default range
/// ends at 60999), else below it.
fn server_ports() -> (u16, u16) {
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut bounds = text.split_whitespace().filter_map(|n| n.parse::<u32>().ok());
            Some((bounds.next()?, bounds.next()?))
        })
        .unwrap_or((32_768, 60_999));
    match ephemeral {
        (_, high) if high + 1000 <= 65_535 => ((high + 1) as u16, 65_535),
        (low, _) if low > 11_000 => (10_000, low as u16),
        _ => (1024, 65_535),
    }
}

/// `program` as it will be run: a path as given, a bare name found on `path`.
pub(crate) fn resolve(program: &str, path: Option<&str>) -> Result<PathBuf, SpawnError> {
    if program.contains('/') {
        let candidate = PathBuf::from(program);
        return if candidate.is_file() {
            Ok(candidate)
        } else {
            Err(SpawnError::Command {
                command: program.to_owned(),
                reason: "no such file".into(),
            })
        };
    }
    path.unwrap_or_default()
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| SpawnError::Command {
            command: program.to_owned(),
            reason: "not found on PATH".into(),
        })
}

/// A user or server name as one file name component.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_@".contains(c) {
                c.to_string()
            } else {
                format!("%{:02X}", c as u32)
            }
        })
        .collect()
}

/// "exited with status 1: <the last line it printed>".
fn describe_exit(status: ExitStatus, log: &Path) -> String {
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "exited".to_owned(),
    };
    match last_line(log) {
        Some(line) => format!("{how}: {line}"),
        None => how,
    }
}

fn last_line(log: &Path) -> Option<String> {
    let mut file = std::fs::File::open(log).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(4096))).ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    let text = String::from_utf8_lossy(&tail);
    let line = text
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty() && !line.starts_with("--- ganymede:"))?;
    let line = line.trim();
    let mut shown: String = line.chars().take(300).collect();
    if shown.len() < line.len() {
        shown.push('…');
    }
    Some(shown)
}

/// Signals the process group of `leader` and every process carrying `marker`.
async fn signal_all(leader: Option<u32>, marker: &str, signal: Signal) {
    if let Some(pid) = leader.and_then(|pid| Pid::from_raw(pid as i32)) {
        let _ = rustix::process::kill_process_group(pid, signal);
    }
    for pid in marked_pids(marker.to_owned()).await {
        if let Some(pid) = Pid::from_raw(pid) {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }
}

async fn marked_pids(marker: String) -> Vec<i32> {
    processes_with(move |value| value == marker)
        .await
        .into_iter()
        .map(|(pid, _)| pid)
        .collect()
}

/// Live processes whose `GANYMEDE_SPAWN` starts with `prefix`, with their spawn ids.
pub async fn processes_marked(prefix: String) -> Vec<(i32, u64)> {
    processes_with(move |value| value.starts_with(&prefix))
        .await
        .into_iter()
        .filter_map(|(pid, value)| Some((pid, value.rsplit('/').next()?.parse().ok()?)))
        .collect()
}

/// Scans `/proc/*/environ` (the processes this user may read) for the marker.
async fn processes_with(matches: impl Fn(&str) -> bool + Send + 'static) -> Vec<(i32, String)> {
    tokio::task::spawn_blocking(move || {
        let needle = format!("{SPAWN_MARKER}=");
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| *pid as u32 != std::process::id())
            .filter_map(|pid| {
                let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
                let value = environ
                    .split(|b| *b == 0)
                    .filter_map(|entry| std::str::from_utf8(entry).ok())
                    .find_map(|entry| entry.strip_prefix(needle.as_str()))?
                    .to_owned();
                (matches(&value) && !is_zombie(pid)).then_some((pid, value))
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawners_on_one_machine_never_hand_out_the_same_port() {
        // Two replicas that happen to start at the same place, with no server bound yet.
        let mut first = Ports::new();
        let mut second = Ports::new();
        second.next = first.next;
        let mine: Vec<u16> = (0..20).map(|_| first.take("127.0.0.1").expect("port")).collect();
        let theirs: Vec<u16> = (0..20).map(|_| second.take("127.0.0.1").expect("port")).collect();
        assert!(mine.iter().all(|port| !theirs.contains(port)), "{mine:?} {theirs:?}");

        // A released port is free for the next spawner that comes to it.
        first.release(mine[0]);
        let mut third = Ports::new();
        third.next = mine[0];
        assert_eq!(third.take("127.0.0.1").expect("port"), mine[0]);
    }
}
