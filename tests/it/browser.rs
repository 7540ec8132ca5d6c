//! The real thing in a real browser: headless Chromium signs in at an edge, starts a
//! server from the home page, watches the progress bar fill, lands in JupyterLab (the
//! real one, started by the local spawner), runs `print(6*7)` in a new notebook (through
//! the edge's WebSocket path to a real ipykernel), and stops the server from the home
//! page; then the same through the second edge. Servers start from the replicas' warm
//! interpreters (`spawner.prefork`, as `ganymede dev` runs them).

use std::time::Duration;

use ganymede_testkit::venv_bin;
use ganymede_testkit::webdriver::Chromium;

use crate::support::ProcessCluster;

const PATIENCE: Duration = Duration::from_secs(90);

/// The first cell's editor.
const CELL: &str = ".jp-Notebook .jp-Cell .cm-content";

/// What the notebook shows, for a failure message: kernel status, the first cell, its
/// prompt and output, and any dialog or notification in the way.
const NOTEBOOK_STATE: &str = "function text(css) { var e = document.querySelector(css); return e ? e.innerText : null; }\
    return JSON.stringify({\
      kernel: (document.querySelector('.jp-Notebook-ExecutionIndicator') || {dataset: {}}).dataset.status,\
      cell: text('.jp-Notebook .jp-Cell .cm-content'),\
      prompt: text('.jp-Notebook .jp-Cell .jp-InputPrompt'),\
      output: text('.jp-Notebook .jp-OutputArea-output'),\
      dialog: text('.jp-Dialog'),\
      notification: text('.Toastify'),\
      focus: document.activeElement ? document.activeElement.className : null,\
    });";

/// Runs the first cell (Shift+Enter in its editor) until its output is `expected`. A run
/// that shows nothing within a while is tried again, printing what the notebook showed:
/// under load a key press can land before JupyterLab is ready for it.
async fn run_first_cell_until(browser: &Chromium, expected: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut attempts = 0;
    loop {
        attempts += 1;
        browser.click(CELL).await;
        browser.type_into(CELL, "\u{E008}\u{E007}\u{E000}").await;
        let attempt_ends = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::time::Instant::now() < attempt_ends {
            let output = browser
                .execute(
                    "var o = document.querySelector('.jp-Notebook .jp-OutputArea-output'); return o ? o.innerText : '';",
                    vec![],
                )
                .await;
            if output.as_str().map(str::trim) == Some(expected) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let state = browser.execute(NOTEBOOK_STATE, vec![]).await;
        assert!(
            tokio::time::Instant::now() < deadline,
            "no output {expected:?} after {attempts} runs; the notebook shows {state}"
        );
        eprintln!("run {attempts} of the first cell showed no output yet; the notebook shows {state}");
    }
}

/// Start from home, watch the progress bar, use JupyterLab, stop from home.
async fn notebook_round_trip(browser: &Chromium, base: &str) {
    browser.goto(&format!("{base}/hub/home")).await;
    browser.find("#default-server[data-state=\"stopped\"]", PATIENCE).await;
    browser.click("#start").await;
    browser.find("#progress-bar", PATIENCE).await;
    // Remember how far the bar got; sessionStorage outlives the move to the server.
    browser
        .execute(
            "sessionStorage.setItem('progress', '0');\
             (function watch() {\
               var bar = document.getElementById('progress-bar');\
               if (bar) { sessionStorage.setItem('progress', String(Math.max(+sessionStorage.getItem('progress'), bar.value))); }\
               requestAnimationFrame(watch);\
             })();",
            vec![],
        )
        .await;
    // JupyterLab's launcher, after the OAuth round trip through the hub.
    browser
        .find(".jp-LauncherCard[data-category=\"Notebook\"]", PATIENCE)
        .await;
    let url = browser.current_url().await;
    assert!(url.starts_with(&format!("{base}/user/alice/lab")), "{url}");
    let progress = browser
        .execute("return sessionStorage.getItem('progress');", vec![])
        .await;
    assert_eq!(progress, "100", "the progress bar reached 100 %");

    browser.click(".jp-LauncherCard[data-category=\"Notebook\"]").await;
    // The kernel is up once the notebook's execution indicator says idle; keys typed
    // before the editor exists would be lost.
    browser
        .find(".jp-Notebook-ExecutionIndicator[data-status=\"idle\"]", PATIENCE)
        .await;
    browser.click(CELL).await;
    browser.type_into(CELL, "print(6*7)").await;
    ganymede_testkit::eventually("the cell to hold print(6*7)", PATIENCE, || async {
        let text = browser
            .execute(&format!("return document.querySelector('{CELL}').innerText;"), vec![])
            .await;
        (text.as_str() == Some("print(6*7)")).then_some(())
    })
    .await;
    run_first_cell_until(browser, "42").await;

    browser.goto(&format!("{base}/hub/home")).await;
    browser.find("#default-server[data-state=\"running\"]", PATIENCE).await;
    browser.click("#stop").await;
    browser.find("#default-server[data-state=\"stopped\"]", PATIENCE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyterlab_in_chromium_through_both_edges() {
    let bin = venv_bin(&["jupyterhub-singleuser", "jupyter-lab"]);
    let mut cluster = ProcessCluster::new(3);
    cluster.configure_spawner(&format!(
        "cmd = [{:?}]\ndefault_url = \"/lab\"\nprefork = true\nstop_timeout = \"5s\"\nhttp_timeout = \"90s\"\nstart_timeout = \"90s\"",
        bin.join("jupyterhub-singleuser").display().to_string()
    ));
    for hub in &cluster.hubs {
        crate::support::append_config(&hub.config, "\n[auth]\nauthenticator = \"dummy\"\n");
    }
    cluster.start_all();
    cluster.leader().await;
    for _ in 0..2 {
        let edge = cluster.add_edge(&[]);
        cluster.start_edge(edge);
    }
    // Servers start from each replica's warm interpreter (as `ganymede dev`'s do).
    ganymede_testkit::eventually("warm interpreters on every replica", PATIENCE, || async {
        (1..=3)
            .all(|id| {
                std::fs::read_to_string(&cluster.hub(id).log).is_ok_and(|log| log.contains("warm interpreter ready"))
            })
            .then_some(())
    })
    .await;
    let browser = Chromium::start().await;
    let first = cluster.edge_url(0, "");
    browser.goto(&format!("{first}/hub/home")).await;
    browser.find("#username_input", PATIENCE).await;
    browser.type_into("#username_input", "alice").await;
    browser.type_into("#password_input", "anything").await;
    browser.click("#login_submit").await;
    browser.wait_for_text("Signed in as alice", PATIENCE).await;

    notebook_round_trip(&browser, &first).await;
    // The second edge: same host, so the same cookies; a new server, a new notebook.
    notebook_round_trip(&browser, &cluster.edge_url(1, "")).await;
    browser.quit().await;
    let warm_starts = cluster
        .logs()
        .matches("server process started from the warm interpreter")
        .count();
    assert_eq!(warm_starts, 2, "both servers came from a warm interpreter");
    ganymede_testkit::eventually("nothing left running", PATIENCE, || async {
        (1..=3)
            .all(|id| ganymede_testkit::process::servers_with_home_under(&cluster.data_dir(id)).is_empty())
            .then_some(())
    })
    .await;
}
