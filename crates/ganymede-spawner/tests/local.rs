//! The local process spawner against real processes (`sh`, `sleep`): the environment
//! reaches the server, stops are graceful then forceful and take every process of the
//! spawn, starts are idempotent, and a new spawner finds and sweeps what an old one left.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ganymede_spawner::{
    LocalProcessSpawner, LocalSettings, Observed, SpawnError, SpawnRef, SpawnSpec, Spawner, processes_marked,
};

fn spec(spawn_id: u64) -> SpawnSpec {
    SpawnSpec {
        user: "alice".into(),
        server: String::new(),
        spawn_id,
        api_token: "0123456789abcdef0123456789abcdef".into(),
        hub_api_url: "http://127.0.0.1:1/hub/api".into(),
        base_url: "/".into(),
        service_prefix: "/user/alice/".into(),
        client_id: "jupyterhub-user-alice".into(),
        oauth_callback_url: "/user/alice/oauth_callback".into(),
        oauth_access_scopes: vec!["access:servers!server=alice/".into()],
        oauth_client_allowed_scopes: vec![],
        public_url: String::new(),
        user_options: serde_json::json!({}),
    }
}

fn settings(dir: &std::path::Path, script: &str) -> LocalSettings {
    let mut settings = LocalSettings::new(
        dir.join("homes"),
        dir.join("logs"),
        format!("test-{}-{}", std::process::id(), dir.display().to_string().len()),
    );
    settings.cmd = vec!["sh".into(), "-c".into(), script.into()];
    settings.allow_root = false;
    settings.stop_timeout = Duration::from_millis(500);
    settings
}

fn refer(spawn_id: u64, state: &serde_json::Value) -> SpawnRef<'_> {
    SpawnRef {
        user: "alice",
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

fn sink() -> ganymede_spawner::ProgressSink {
    tokio::sync::mpsc::unbounded_channel().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_gets_jupyterhubs_environment_and_stops_with_everything_it_started() {
    let dir = tempfile::tempdir().expect("dir");
    // The server writes its environment, starts a "kernel" in a session of its own, and waits.
    let settings = settings(dir.path(), "env > \"$HOME/env.txt\"; setsid sleep 60 & exec sleep 60");
    let instance = settings.instance.clone();
    let spawner = LocalProcessSpawner::new(settings).expect("spawner");
    let (progress, mut steps) = tokio::sync::mpsc::unbounded_channel();
    let started = spawner.start(&spec(1), &progress).await.expect("started");
    assert!(started.url.starts_with("http://127.0.0.1:"), "{}", started.url);
    assert_eq!(steps.recv().await.expect("a progress step").progress, 50);
    let env_file = dir.path().join("homes/alice/env.txt");
    let env = eventually("the environment file", Duration::from_secs(10), async || {
        let text = std::fs::read_to_string(&env_file).ok()?;
        text.contains("JUPYTERHUB_USER=").then_some(text)
    })
    .await;
    let vars: BTreeMap<&str, &str> = env.lines().filter_map(|line| line.split_once('=')).collect();
    assert_eq!(vars["JUPYTERHUB_USER"], "alice");
    assert_eq!(vars["JUPYTERHUB_SERVICE_PREFIX"], "/user/alice/");
    assert_eq!(vars["JUPYTERHUB_SERVICE_URL"], format!("{}/user/alice/", started.url));
    assert_eq!(vars["JUPYTERHUB_API_URL"], "http://127.0.0.1:1/hub/api");
    assert_eq!(vars["JUPYTERHUB_CLIENT_ID"], "jupyterhub-user-alice");
    assert_eq!(vars["HOME"], dir.path().join("homes/alice").display().to_string());
    assert!(vars.contains_key("PATH"), "PATH is kept");
    assert!(
        !vars.contains_key("CARGO_MANIFEST_DIR"),
        "the hub's other variables are not passed on"
    );
    assert_eq!(vars["GANYMEDE_SPAWN"], format!("{instance}/1"));

    // Both processes carry the marker; poll sees the server running.
    eventually("two marked processes", Duration::from_secs(5), async || {
        (processes_marked(format!("{instance}/")).await.len() == 2).then_some(())
    })
    .await;
    assert_eq!(spawner.poll(refer(1, &started.state)).await, Observed::Running);

    // Starting the same spawn again answers where it runs, and starts nothing.
    let again = spawner.start(&spec(1), &sink()).await.expect("idempotent");
    assert_eq!(again, started);
    assert_eq!(processes_marked(format!("{instance}/")).await.len(), 2);

    spawner.stop(refer(1, &started.state)).await.expect("stopped");
    assert!(
        processes_marked(format!("{instance}/")).await.is_empty(),
        "nothing left running"
    );
    assert!(matches!(
        spawner.poll(refer(1, &started.state)).await,
        Observed::Exited(_)
    ));
    // Stopping again is fine.
    spawner.stop(refer(1, &started.state)).await.expect("stopped twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let dir = tempfile::tempdir().expect("dir");
    let settings = settings(dir.path(), "trap '' TERM; echo ready; while :; do sleep 0.05; done");
    let instance = settings.instance.clone();
    let spawner = LocalProcessSpawner::new(settings).expect("spawner");
    let started = spawner.start(&spec(2), &sink()).await.expect("started");
    // "ready" comes after the trap is set: a SIGTERM before it would end the shell.
    let log = dir.path().join("logs/alice.log");
    eventually("the server to ignore SIGTERM", Duration::from_secs(5), async || {
        std::fs::read_to_string(&log).ok()?.contains("ready").then_some(())
    })
    .await;
    assert!(!processes_marked(format!("{instance}/")).await.is_empty());
    let begun = Instant::now();
    spawner.stop(refer(2, &started.state)).await.expect("stopped");
    assert!(
        begun.elapsed() >= Duration::from_millis(450),
        "SIGTERM first, then the grace period"
    );
    assert!(processes_marked(format!("{instance}/")).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_commands_fail_clearly() {
    let dir = tempfile::tempdir().expect("dir");
    let mut missing = settings(dir.path(), "");
    missing.cmd = vec!["no-such-singleuser-command".into()];
    let spawner = LocalProcessSpawner::new(missing).expect("spawner");
    let err = spawner.start(&spec(3), &sink()).await.expect_err("not found");
    assert!(matches!(err, SpawnError::Command { .. }), "{err:?}");
    assert!(err.to_string().contains("no-such-singleuser-command"), "{err}");
    assert!(err.to_string().contains("not found on PATH"), "{err}");

    let spawner = LocalProcessSpawner::new(settings(
        dir.path(),
        "echo 'ModuleNotFoundError: jupyterlab' >&2; exit 3",
    ))
    .expect("spawner");
    let started = spawner.start(&spec(4), &sink()).await.expect("launched");
    let exit = eventually("the exit", Duration::from_secs(5), async || {
        match spawner.poll(refer(4, &started.state)).await {
            Observed::Exited(why) => Some(why),
            Observed::Running => None,
        }
    })
    .await;
    assert_eq!(exit, "exited with status 3: ModuleNotFoundError: jupyterlab");
    let log = std::fs::read_to_string(dir.path().join("logs/alice.log")).expect("log");
    assert!(
        log.contains("--- ganymede: spawn 4 ---") && log.contains("ModuleNotFoundError"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_die_with_their_spawner_and_a_new_one_sweeps_what_is_left() {
    let dir = tempfile::tempdir().expect("dir");
    // The server's own process dies with the spawner (SIGTERM on parent death); the
    // "kernel" in its own session ignores SIGTERM and survives it.
    let settings = settings(
        dir.path(),
        "setsid sh -c 'trap \"\" TERM; exec sleep 60' & exec sleep 60",
    );
    let instance = settings.instance.clone();
    {
        let spawner = LocalProcessSpawner::new(settings.clone()).expect("spawner");
        spawner.start(&spec(5), &sink()).await.expect("started");
        spawner.start(&spec(6), &sink()).await.expect("started");
        eventually("four marked processes", Duration::from_secs(5), async || {
            (processes_marked(format!("{instance}/")).await.len() >= 4).then_some(())
        })
        .await;
    }
    // Only the two stragglers are left.
    let left = eventually(
        "the servers to die with their spawner",
        Duration::from_secs(10),
        async || {
            let left = processes_marked(format!("{instance}/")).await;
            (left.len() == 2).then_some(left)
        },
    )
    .await;
    let mut ids: Vec<u64> = left.iter().map(|(_, id)| *id).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![5, 6]);

    // A new spawner (the replica restarted) sees spawn 5 as running and sweeps spawn 6,
    // which the record no longer wants.
    let spawner = LocalProcessSpawner::new(settings).expect("spawner");
    let null = serde_json::Value::Null;
    assert_eq!(spawner.poll(refer(5, &null)).await, Observed::Running);
    let swept = spawner.sweep(&|id| id == 5).await;
    assert_eq!(swept, vec![6]);
    let left: Vec<u64> = processes_marked(format!("{instance}/"))
        .await
        .iter()
        .map(|(_, id)| *id)
        .collect();
    assert_eq!(left, vec![5]);
    spawner.stop(refer(5, &null)).await.expect("stopped");
    assert!(processes_marked(format!("{instance}/")).await.is_empty());
}
