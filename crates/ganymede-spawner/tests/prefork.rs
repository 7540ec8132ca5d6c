//! Prefork: servers started from a warm Python interpreter get their own environment,
//! working directory, arguments and log, are marked (their kernels too), report how
//! they exit, stop, and die with the spawner — and the preloaded modules are imported
//! once, not per server.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use ganymede_spawner::{LocalProcessSpawner, LocalSettings, Observed, SpawnRef, SpawnSpec, Spawner, processes_marked};

/// A single-user "server": writes what it sees, starts a "kernel" in a session of its
/// own, and waits; user bob's fails at once.
const SERVER: &str = r#"#!/usr/bin/python3
import json, os, subprocess, sys, time
import ganymede_test_heavy
if os.environ["JUPYTERHUB_USER"] == "bob":
    print("ModuleNotFoundError: no module named jupyterlab", file=sys.stderr)
    sys.exit(3)
with open("seen.json", "w") as out:
    json.dump({"env": dict(os.environ), "cwd": os.getcwd(), "argv": sys.argv,
               "ppid": os.getppid(), "name": __name__}, out)
subprocess.Popen(["sleep", "60"], start_new_session=True)
print("server running", flush=True)
time.sleep(60)
"#;

/// The "heavy" module: counts its imports.
const HEAVY: &str = r#"import os
with open(os.path.join(os.path.dirname(__file__), "imports"), "a") as out:
    out.write(f"{os.getpid()}\n")
"#;

fn spec(user: &str, spawn_id: u64) -> SpawnSpec {
    SpawnSpec {
        user: user.into(),
        server: String::new(),
        spawn_id,
        api_token: "0123456789abcdef0123456789abcdef".into(),
        hub_api_url: "http://127.0.0.1:1/hub/api".into(),
        base_url: "/".into(),
        service_prefix: format!("/user/{user}/"),
        client_id: format!("jupyterhub-user-{user}"),
        oauth_callback_url: format!("/user/{user}/oauth_callback"),
        oauth_access_scopes: vec![],
        oauth_client_allowed_scopes: vec![],
        public_url: String::new(),
        user_options: serde_json::json!({}),
    }
}

fn refer<'a>(user: &'a str, spawn_id: u64, state: &'a serde_json::Value) -> SpawnRef<'a> {
    SpawnRef {
        user,
        server: "",
        spawn_id,
        state,
    }
}

async fn eventually<T>(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn settings(dir: &Path) -> LocalSettings {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    let server = bin.join("test-singleuser");
    std::fs::write(&server, SERVER).expect("server");
    std::fs::set_permissions(&server, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(dir.join("ganymede_test_heavy.py"), HEAVY).expect("module");
    let mut settings = LocalSettings::new(
        dir.join("homes"),
        dir.join("logs"),
        format!("prefork-{}-{}", std::process::id(), dir.display().to_string().len()),
    );
    settings.cmd = vec![server.display().to_string()];
    settings.args = vec!["--flag=1".into()];
    settings.allow_root = false;
    settings.stop_timeout = Duration::from_secs(2);
    settings.environment = BTreeMap::from([("PYTHONPATH".into(), dir.display().to_string())]);
    settings.prefork = Some(vec!["ganymede_test_heavy".into(), "no_such_module_at_all".into()]);
    settings
}

fn sink() -> ganymede_spawner::ProgressSink {
    tokio::sync::mpsc::unbounded_channel().0
}

fn imports(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("imports"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_start_from_a_warm_interpreter() {
    let dir = tempfile::tempdir().expect("dir");
    let dir = dir.path();
    let settings = settings(dir);
    let instance = settings.instance.clone();
    let spawner = LocalProcessSpawner::new(settings).expect("spawner");
    eventually("the warm interpreter", Duration::from_secs(20), async || {
        spawner.is_warm().then_some(())
    })
    .await;
    assert_eq!(imports(dir).len(), 1, "the interpreter imported the module");

    let mut started = Vec::new();
    for (user, id) in [("alice", 1), ("carol", 2)] {
        let server = spawner.start(&spec(user, id), &sink()).await.expect("started");
        let seen_file = dir.join(format!("homes/{user}/seen.json"));
        let seen: serde_json::Value = eventually("the server's report", Duration::from_secs(10), async || {
            serde_json::from_str(&std::fs::read_to_string(&seen_file).ok()?).ok()
        })
        .await;
        assert_eq!(seen["env"]["JUPYTERHUB_USER"], user);
        assert_eq!(seen["env"]["JUPYTERHUB_SERVICE_PREFIX"], format!("/user/{user}/"));
        assert_eq!(
            seen["env"]["HOME"],
            dir.join(format!("homes/{user}")).display().to_string()
        );
        assert_eq!(seen["env"]["GANYMEDE_SPAWN"], format!("{instance}/{id}"));
        assert!(
            seen["env"].get("GANYMEDE_PREFORK").is_none(),
            "the interpreter's marker is not the server's"
        );
        assert_eq!(seen["cwd"], dir.join(format!("homes/{user}")).display().to_string());
        assert_eq!(seen["argv"][1], "--flag=1");
        assert_eq!(seen["name"], "__main__");
        let zygote = seen["ppid"].as_u64().expect("ppid");
        assert_ne!(
            zygote,
            u64::from(std::process::id()),
            "forked by the interpreter, not the hub"
        );
        let log_file = dir.join(format!("logs/{user}.log"));
        let log = eventually("the server's output in its log", Duration::from_secs(10), async || {
            let log = std::fs::read_to_string(&log_file).ok()?;
            log.contains("server running").then_some(log)
        })
        .await;
        assert!(log.starts_with(&format!("--- ganymede: spawn {id} ---")), "{log}");
        started.push((user, id, server));
    }
    assert_eq!(imports(dir).len(), 1, "servers did not import the module again");
    // Each server's kernel carries its marker.
    eventually("both kernels marked", Duration::from_secs(5), async || {
        let mut ids: Vec<u64> = processes_marked(format!("{instance}/"))
            .await
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        ids.sort_unstable();
        (ids == [1, 2]).then_some(())
    })
    .await;

    // A server that exits says why, as one started afresh does.
    let failed = spawner.start(&spec("bob", 3), &sink()).await.expect("launched");
    let exit = eventually("bob's exit", Duration::from_secs(10), async || {
        match spawner.poll(refer("bob", 3, &failed.state)).await {
            Observed::Exited(why) => Some(why),
            Observed::Running => None,
        }
    })
    .await;
    assert_eq!(
        exit,
        "exited with status 3: ModuleNotFoundError: no module named jupyterlab"
    );

    // Stopping takes the server and its kernel.
    let (user, id, server) = &started[0];
    assert_eq!(spawner.poll(refer(user, *id, &server.state)).await, Observed::Running);
    spawner.stop(refer(user, *id, &server.state)).await.expect("stopped");
    assert!(matches!(
        spawner.poll(refer(user, *id, &server.state)).await,
        Observed::Exited(_)
    ));
    let left: Vec<u64> = processes_marked(format!("{instance}/"))
        .await
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    assert_eq!(left, vec![2]);
    let pid = |server: &ganymede_spawner::Started| server.state["pid"].as_u64().expect("pid");
    assert!(
        !Path::new(&format!("/proc/{}", pid(server))).exists(),
        "the server process is gone"
    );

    // The rest dies with the spawner (the interpreter ends, its children get SIGTERM).
    let carol = pid(&started[1].2);
    drop(spawner);
    eventually(
        "carol's server to die with the spawner",
        Duration::from_secs(10),
        async || (!Path::new(&format!("/proc/{carol}")).exists()).then_some(()),
    )
    .await;
}
