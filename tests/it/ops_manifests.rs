//! The deployable files (ops/docker, ops/compose, ops/k8s, ops/grafana) are checked where
//! neither Docker nor Kubernetes runs: `ops/check/run.sh` validates the Kubernetes objects
//! against the API's schemas, cross-checks names, ports, volumes and paths, runs the
//! Kubernetes start scripts with stand-ins, and starts every hub and edge configuration
//! once with the binary under test.

/// Every deployable file passes ops/check/run.sh.
#[test]
fn the_deployable_files_pass_the_manifest_checker() {
    let root = ganymede_testkit::repo_root();
    let output = std::process::Command::new("bash")
        .arg(root.join("ops/check/run.sh"))
        .env("GANYMEDE_BIN", crate::support::ganymede_bin())
        .output()
        .expect("bash runs ops/check/run.sh");
    assert!(
        output.status.success(),
        "ops/check/run.sh exited {}:\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Neither half may have been skipped quietly.
    let stdout = String::from_utf8_lossy(&output.stdout);
    for done in ["kubernetes-validate", "configurations started by"] {
        assert!(
            stdout.contains(done),
            "ops/check/run.sh did not report {done:?}:\n{stdout}"
        );
    }
}
