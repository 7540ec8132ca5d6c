//! `ganymede dev`: a working system on one machine with one command. It installs
//! JupyterHub's single-user server and JupyterLab into a project-local venv on first
//! run, then runs one hub replica (dummy authenticator, local spawner) and one edge as
//! child processes of itself, and stops both on Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

#[derive(clap::Args)]
pub struct DevArgs {
    /// Data, configuration and logs of the dev hub.
    #[arg(long, default_value = ".local/dev")]
    dir: PathBuf,
    /// The Python environment with jupyterhub-singleuser and JupyterLab; created (and
    /// filled from ops/python/requirements.txt when there is one) if missing.
    #[arg(long, default_value = ".venv")]
    venv: PathBuf,
    /// Where users go: the edge's port on 127.0.0.1.
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// The hub API's port on 127.0.0.1 (JupyterHub's default).
    #[arg(long, default_value_t = 8081)]
    hub_port: u16,
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir).with_context(|| format!("cannot create {}", args.dir.display()))?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let venv = absolute(&args.venv)?;
    ensure_venv(&venv).await?;
    let venv_bin = venv.join("bin");

    let admin_token = match std::env::var("GANYMEDE_ADMIN_TOKEN").ok().filter(|t| !t.is_empty()) {
        Some(token) => token,
        None => secret_file(&dir.join("admin-token"))?,
    };
    let proxy_token = secret_file(&dir.join("proxy-token"))?;
    let [raft, proxy, grpc, events, metrics] = [free_port()?, free_port()?, free_port()?, free_port()?, free_port()?];
    let path = format!(
        "{}:{}",
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into())
    );
    let hub_config = dir.join("hub.toml");
    std::fs::write(
        &hub_config,
        format!(
            "[hub]\nnode_id = 1\ndata_dir = {data:?}\napi_bind = \"127.0.0.1:{api}\"\nraft_bind = \"127.0.0.1:{raft}\"\n\n\
             [cluster]\ninitial_members = [{{ node_id = 1, raft_addr = \"127.0.0.1:{raft}\", api_addr = \"127.0.0.1:{api}\" }}]\n\n\
             [proxy]\napi_bind = \"127.0.0.1:{proxy}\"\n\n\
             [events]\ngrpc_bind = \"127.0.0.1:{grpc}\"\npub_bind = \"127.0.0.1:{events}\"\n\n\
             [auth]\nauthenticator = \"dummy\"\n\n\
             [spawner]\ncmd = [{cmd:?}]\ndefault_url = \"/lab\"\nprefork = true\nenvironment = {{ PATH = {path:?} }}\n",
            data = dir.join("hub").display().to_string(),
            api = args.hub_port,
            cmd = venv_bin.join("jupyterhub-singleuser").display().to_string(),
        ),
    )?;
    let edge_config = dir.join("edge.toml");
    std::fs::write(
        &edge_config,
        format!(
            "[edge]\nname = \"dev\"\nbind = \"127.0.0.1:{port}\"\nmetrics_bind = \"127.0.0.1:{metrics}\"\n\
             hubs = [{{ api = \"127.0.0.1:{api}\", grpc = \"127.0.0.1:{grpc}\", events = \"127.0.0.1:{events}\" }}]\n",
            port = args.port,
            api = args.hub_port,
        ),
    )?;

    let exe = std::env::current_exe().context("cannot find the ganymede binary")?;
    let env = [
        ("GANYMEDE_ADMIN_TOKEN", admin_token.as_str()),
        ("CONFIGPROXY_AUTH_TOKEN", proxy_token.as_str()),
    ];
    let mut hub = spawn(&exe, "hub", &hub_config, &dir.join("hub.log"), &env)?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    // Provisioning the admin token goes through Raft after the API is up: wait until
    // the token works, so that what the banner promises is true when it is printed.
    let hub_url = format!("http://127.0.0.1:{}/hub/api/user", args.hub_port);
    if let Err(err) = wait_for(&http, &hub_url, Some(&admin_token), &mut hub, "the hub").await {
        stop(vec![hub]).await;
        bail!("{err}; see {}", dir.join("hub.log").display());
    }
    let mut edge = spawn(&exe, "edge", &edge_config, &dir.join("edge.log"), &env)?;
    let edge_url = format!("http://127.0.0.1:{}/hub/api", args.port);
    if let Err(err) = wait_for(&http, &edge_url, None, &mut edge, "the edge").await {
        stop(vec![edge, hub]).await;
        bail!("{err}; see {}", dir.join("edge.log").display());
    }
    println!(
        "\nGanymede is running at http://127.0.0.1:{port}/\n\
         - sign in with any user name (dummy authenticator; GANYMEDE_DUMMY_PASSWORD sets a shared password)\n\
         - \"Start My Server\" runs JupyterLab from {venv}\n\
         - the admin API token is in {token_file}\n\
         - logs: {dir}/hub.log, {dir}/edge.log, {dir}/hub/server-logs/\n\
         Ctrl-C stops everything.",
        port = args.port,
        venv = venv.display(),
        token_file = dir.join("admin-token").display(),
        dir = dir.display(),
    );
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let outcome = tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = terminate.recv() => Ok(()),
        status = hub.wait() => Err(anyhow::anyhow!("the hub exited ({status:?}); see {}", dir.join("hub.log").display())),
        status = edge.wait() => Err(anyhow::anyhow!("the edge exited ({status:?}); see {}", dir.join("edge.log").display())),
    };
    println!("stopping…");
    stop(vec![edge, hub]).await;
    outcome
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    Ok(if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir()?.join(path)
    })
}

/// Creates the venv and installs the single-user server and JupyterLab, showing pip's
/// progress; a venv that has them is left alone.
async fn ensure_venv(venv: &Path) -> anyhow::Result<()> {
    if venv.join("bin/jupyterhub-singleuser").is_file() && venv.join("bin/jupyter-lab").is_file() {
        return Ok(());
    }
    println!(
        "Installing JupyterLab into {} (first run only; a minute or two)…",
        venv.display()
    );
    if !venv.join("bin/python").is_file() {
        run_visibly(Command::new("python3").arg("-m").arg("venv").arg(venv))
            .await
            .context("cannot create the venv (is python3-venv installed? ops/setup.sh installs it)")?;
    }
    let mut pip = Command::new(venv.join("bin/python"));
    pip.args(["-m", "pip", "install", "--disable-pip-version-check"]);
    let requirements = Path::new("ops/python/requirements.txt");
    if requirements.is_file() {
        pip.arg("-r").arg(requirements);
    } else {
        pip.args(["jupyterhub==6.1.1", "jupyterlab"]);
    }
    run_visibly(&mut pip).await.context("pip could not install JupyterLab")
}

async fn run_visibly(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .await?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

/// A token kept in `path` (0600), made on first use.
fn secret_file(path: &Path) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(token) = std::fs::read_to_string(path)
        && token.trim().len() >= 16
    {
        return Ok(token.trim().to_owned());
    }
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?
        .write_all(token.as_bytes())?;
    Ok(token)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn spawn(exe: &Path, role: &str, config: &Path, log: &Path, env: &[(&str, &str)]) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    Command::new(exe)
        .arg(role)
        .arg("--config")
        .arg(config)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start ganymede {role}"))
}

async fn wait_for(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    child: &mut Child,
    what: &str,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited ({status})");
        }
        let mut request = http.get(url);
        if let Some(token) = token {
            request = request.header("authorization", format!("token {token}"));
        }
        if request.send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("{what} did not answer at {url} within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SIGTERM, then up to 30 s for them to stop their servers and exit, then SIGKILL.
async fn stop(children: Vec<Child>) {
    for mut child in children {
        if let Some(pid) = child.id().and_then(|pid| rustix::process::Pid::from_raw(pid as i32)) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        if tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}
