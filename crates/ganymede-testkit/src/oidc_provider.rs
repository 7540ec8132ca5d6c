//! A real OpenID Connect provider for authenticator tests: the npm `oidc-provider`
//! package run by `ops/oidc/provider.mjs` (users `alice`/`alice-pw` and `bob`/`bob-pw`,
//! see `ops/oidc/README.md`). Stopped when dropped.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub struct OidcProvider {
    pub issuer: String,
    child: Child,
}

fn fixture_dir() -> PathBuf {
    crate::repo_root().join("ops/oidc")
}

impl OidcProvider {
    /// Starts the provider on a free port with one confidential client.
    pub async fn start(client_id: &str, client_secret: &str, redirect_uri: &str) -> OidcProvider {
        let dir = fixture_dir();
        assert!(
            dir.join("node_modules/oidc-provider").is_dir(),
            "oidc-provider is not installed: run ops/setup.sh (it runs ops/oidc/setup.sh)"
        );
        let mut child = Command::new("node")
            .arg(dir.join("provider.mjs"))
            .args([
                "--port",
                "0",
                "--client-id",
                client_id,
                "--client-secret",
                client_secret,
            ])
            .args(["--redirect-uri", redirect_uri, "--exit-on-stdin-eof"])
            // Its stdin closing ends it, even if this test process dies.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs the OpenID provider");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
            .await
            .expect("the provider starts within 30 s")
            .expect("its stdout")
            .expect("a READY line");
        let port = ready
            .strip_prefix("READY ")
            .unwrap_or_else(|| panic!("unexpected first line {ready:?}"))
            .trim()
            .to_owned();
        OidcProvider {
            issuer: format!("http://127.0.0.1:{port}"),
            child,
        }
    }

    pub async fn stop(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}
