//! The real client: stock JupyterHub 6.1.1 from PyPI, configured with
//! `ConfigurableHTTPProxy(should_start=False)` and pointed at a Ganymede hub's routes API,
//! spawns a real `jupyterhub-singleuser` that users reach through both Ganymede edges.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::{ProcessCluster, eventually};

fn venv_bin() -> PathBuf {
    ganymede_testkit::venv_bin(&["jupyterhub", "jupyterhub-singleuser"])
}

const TESTER_TOKEN: &str = "it-jupyterhub-service-token-3c2b1a";

/// JupyterHub, stopped with SIGTERM (so that it stops the servers it spawned) when dropped.
struct JupyterHub {
    child: Child,
    log: PathBuf,
}

impl Drop for JupyterHub {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- jupyterhub log ---\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python_str(text: &str) -> String {
    format!("{text:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_jupyterhub_spawns_a_server_reached_through_both_edges() {
    let bin = venv_bin();
    let mut cluster = ProcessCluster::new(3);
    cluster.start_all();
    cluster.leader().await;
    for _ in 0..2 {
        let edge = cluster.add_edge(&[]);
        cluster.start_edge(edge);
    }
    let work = cluster.dir.path().join("jupyterhub");
    std::fs::create_dir_all(work.join("home")).expect("work dir");
    let hub_port = ganymede_testkit::process::free_port();
    let config = format!(
        r#"c = get_config()  # noqa
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {edge_port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.JupyterHub.proxy_class = "jupyterhub.proxy.ConfigurableHTTPProxy"
c.ConfigurableHTTPProxy.should_start = False
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_port}"
c.ConfigurableHTTPProxy.auth_token = {proxy_token}
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = {home}
c.Spawner.cmd = [{singleuser}]
c.Spawner.args = ["--allow-root"]
c.Spawner.start_timeout = 90
c.Spawner.http_timeout = 90
c.JupyterHub.db_url = "sqlite:///" + {db}
c.JupyterHub.cookie_secret_file = {cookie}
c.JupyterHub.services = [{{"name": "tester", "api_token": {tester}}}]
c.JupyterHub.load_roles = [{{"name": "tester", "scopes": ["admin:users", "admin:servers", "access:servers", "proxy"], "services": ["tester"]}}]
"#,
        edge_port = cluster.edges[0].port,
        proxy_port = cluster.hub(2).proxy_port,
        proxy_token = python_str(ganymede_testkit::process::PROCESS_PROXY_TOKEN),
        home = python_str(&format!("{}/{{username}}", work.join("home").display())),
        singleuser = python_str(&bin.join("jupyterhub-singleuser").display().to_string()),
        db = python_str(&work.join("jupyterhub.sqlite").display().to_string()),
        cookie = python_str(&work.join("cookie_secret").display().to_string()),
        tester = python_str(TESTER_TOKEN),
    );
    let config_path = work.join("jupyterhub_config.py");
    std::fs::write(&config_path, config).expect("write config");
    let log = work.join("jupyterhub.log");
    let log_file = std::fs::File::create(&log).expect("log");
    let child = Command::new(bin.join("jupyterhub"))
        .arg("-f")
        .arg(&config_path)
        .current_dir(&work)
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()),
        )
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("log"))
        .stderr(log_file)
        .spawn()
        .expect("start jupyterhub");
    let jupyterhub = JupyterHub { child, log };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let api = |edge: usize, path: &str| cluster.edge_url(edge, &format!("/hub/api{path}"));
    let call = |method: reqwest::Method, url: String| {
        client
            .request(method, url)
            .header("authorization", format!("token {TESTER_TOKEN}"))
            .send()
    };

    // JupyterHub adds its "/" route through Ganymede: both edges then reach it (its
    // version is plain "6.1.1"; a Ganymede hub says "6.1.1+ganymede…").
    for edge in 0..2 {
        let url = api(edge, "/");
        eventually(
            "JupyterHub to be reachable through the edge",
            Duration::from_secs(60),
            || async {
                let body: Value = client.get(&url).send().await.ok()?.json().await.ok()?;
                (body["version"] == "6.1.1").then_some(())
            },
        )
        .await;
    }
    let routes = cluster.hub_routes(1).await.expect("routes");
    assert!(routes.contains_key("/"), "JupyterHub's default route: {routes:?}");

    let created = call(reqwest::Method::POST, api(0, "/users/alice"))
        .await
        .expect("create user");
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap_or_default());
    let started = call(reqwest::Method::POST, api(1, "/users/alice/server"))
        .await
        .expect("start");
    assert!(matches!(started.status().as_u16(), 201 | 202), "{}", started.status());
    let user: Value = eventually("alice's server to be ready", Duration::from_secs(120), || async {
        let user: Value = call(reqwest::Method::GET, api(0, "/users/alice"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (user["servers"][""]["ready"] == true).then_some(user)
    })
    .await;
    assert_eq!(user["servers"][""]["url"], "/user/alice/");

    // The route JupyterHub added, as Ganymede's routes API (and so the edges) hold it.
    let routes = cluster.hub_routes(3).await.expect("routes");
    assert!(routes.contains_key("/user/alice"), "{routes:?}");
    for edge in 0..2 {
        let url = cluster.edge_url(edge, "/user/alice/api/status");
        let status: Value = eventually("alice's server through the edge", Duration::from_secs(30), || async {
            let response = call(reqwest::Method::GET, url.clone()).await.ok()?;
            if response.status() != 200 {
                return None;
            }
            response.json().await.ok()
        })
        .await;
        assert!(status.get("started").is_some(), "jupyter_server's status: {status}");
    }

    // Stopping the server removes its route from every edge.
    let stopped = call(reqwest::Method::DELETE, api(0, "/users/alice/server"))
        .await
        .expect("stop");
    assert!(matches!(stopped.status().as_u16(), 202 | 204), "{}", stopped.status());
    for edge in 0..2 {
        eventually("alice's route to leave the edge", Duration::from_secs(60), || async {
            let (_, routes) = cluster.edge_routes(edge).await?;
            (!routes.contains_key("/user/alice")).then_some(())
        })
        .await;
    }
    drop(jupyterhub);
}
