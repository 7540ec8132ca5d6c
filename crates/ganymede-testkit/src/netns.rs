//! Real network partitions for process tests: every hub in its own network namespace,
//! joined to every other by its own veth pair, so that any pair can be cut on its own.
//!
//! A cut is silent, as when a switch fails: each side routes the other's address into a
//! sink (a veth pair whose far end drops what it receives, with a permanent neighbour
//! entry so not even ARP fails), so packets vanish and connections time out rather than
//! being refused. Healing routes the address back over the pair's veth.
//!
//! The kernel here has no qdiscs (`tc … netem` is "unknown"), so loss and delay are not
//! offered; the test process reaches every hub over its own links, which are never cut.
//!
//! Everything is created inside a control namespace that the test runs in (see
//! [`in_own_namespace`]), and node namespaces are deleted on drop: nothing touches the
//! machine's own network.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Mutex;

/// The test process's own address, in the control namespace.
pub const CONTROL_ADDR: &str = "10.77.0.1";
/// A MAC address nobody has: where the sink sends cut traffic.
const NOWHERE_MAC: &str = "02:00:00:00:00:01";
const PREFIX_VAR: &str = "GANYMEDE_NETNS_PREFIX";

/// Hub `node`'s address: on its namespace's loopback, reached over per-peer links.
pub fn host(node: u64) -> String {
    format!("10.77.0.{}", 10 + node)
}

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|err| format!("cannot run ip {}: {err}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Runs the calling test again inside a network namespace of its own, and returns
/// `false` there is nothing left to do (the run inside passed; a failure panics with
/// its output above); returns `true` when the caller is already inside and should go on.
/// Panics, saying why, when network namespaces cannot be made here: a test that needs
/// partitions never passes without them.
pub fn in_own_namespace(test: &str) -> bool {
    if std::env::var_os(PREFIX_VAR).is_some() {
        return true;
    }
    let prefix = format!("gnm{}", std::process::id());
    let control = format!("{prefix}c");
    if let Err(err) = ip(&["netns", "add", &control]) {
        panic!("network namespaces are not available here ({err}); partition tests need root and iproute2");
    }
    let exe = std::env::current_exe().expect("the test binary");
    let status = Command::new("ip")
        .args(["netns", "exec", &control])
        .arg(exe)
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env(PREFIX_VAR, &prefix)
        .status();
    let _ = ip(&["netns", "del", &control]);
    let status = status.expect("run the test in its namespace");
    assert!(
        status.success(),
        "{test}, run in its own network namespace, failed: {status}"
    );
    false
}

/// The hubs' namespaces and the links between them.
pub struct Network {
    prefix: String,
    nodes: u64,
    /// Pairs `(low, high)` cut now.
    cut: Mutex<BTreeSet<(u64, u64)>>,
}

impl Network {
    /// Makes `nodes` namespaces, fully meshed, each also linked to the control namespace
    /// (the caller's, which [`in_own_namespace`] made).
    pub fn create(nodes: u64) -> Result<Network, String> {
        let prefix =
            std::env::var(PREFIX_VAR).map_err(|_| format!("{PREFIX_VAR} is not set: call in_own_namespace first"))?;
        let network = Network {
            prefix,
            nodes,
            cut: Mutex::new(BTreeSet::new()),
        };
        ip(&["link", "set", "lo", "up"])?;
        ip(&["addr", "add", &format!("{CONTROL_ADDR}/32"), "dev", "lo"])?;
        for node in 1..=nodes {
            let ns = network.namespace(node);
            let me = host(node);
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{me}/32"), "dev", "lo"])?;
            // The control link: the test's requests, never cut.
            let control_side = format!("c{node}");
            ip(&[
                "link",
                "add",
                &control_side,
                "type",
                "veth",
                "peer",
                "name",
                "ctl",
                "netns",
                &ns,
            ])?;
            ip(&["link", "set", &control_side, "up"])?;
            ip(&["-n", &ns, "link", "set", "ctl", "up"])?;
            ip(&[
                "route",
                "add",
                &format!("{me}/32"),
                "dev",
                &control_side,
                "src",
                CONTROL_ADDR,
            ])?;
            ip(&[
                "-n",
                &ns,
                "route",
                "add",
                &format!("{CONTROL_ADDR}/32"),
                "dev",
                "ctl",
                "src",
                &me,
            ])?;
            // The sink: cut traffic leaves by sink0 and is dropped at sink1.
            ip(&[
                "-n", &ns, "link", "add", "sink0", "type", "veth", "peer", "name", "sink1",
            ])?;
            ip(&["-n", &ns, "link", "set", "sink0", "up"])?;
            ip(&["-n", &ns, "link", "set", "sink1", "up"])?;
        }
        for a in 1..=nodes {
            for b in a + 1..=nodes {
                let (ns_a, ns_b) = (network.namespace(a), network.namespace(b));
                let (to_b, to_a) = (format!("to{b}"), format!("to{a}"));
                ip(&[
                    "-n", &ns_a, "link", "add", &to_b, "type", "veth", "peer", "name", &to_a, "netns", &ns_b,
                ])?;
                ip(&["-n", &ns_a, "link", "set", &to_b, "up"])?;
                ip(&["-n", &ns_b, "link", "set", &to_a, "up"])?;
                network.route(a, b, false)?;
                network.route(b, a, false)?;
            }
        }
        Ok(network)
    }

    pub fn nodes(&self) -> u64 {
        self.nodes
    }

    pub fn namespace(&self, node: u64) -> String {
        format!("{}h{node}", self.prefix)
    }

    /// The command prefix that runs a program in hub `node`'s namespace.
    pub fn launcher(&self, node: u64) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.namespace(node)]
    }

    /// Routes `from`'s traffic for `to` over their link, or into the sink.
    fn route(&self, from: u64, to: u64, sink: bool) -> Result<(), String> {
        let ns = self.namespace(from);
        let (target, me) = (host(to), host(from));
        let dev = if sink { "sink0".to_owned() } else { format!("to{to}") };
        ip(&[
            "-n",
            &ns,
            "route",
            "replace",
            &format!("{target}/32"),
            "dev",
            &dev,
            "src",
            &me,
        ])?;
        if sink {
            ip(&[
                "-n",
                &ns,
                "neigh",
                "replace",
                &target,
                "lladdr",
                NOWHERE_MAC,
                "dev",
                "sink0",
                "nud",
                "permanent",
            ])?;
        }
        Ok(())
    }

    /// Cuts `a` and `b` off from each other, both ways.
    pub fn cut(&self, a: u64, b: u64) {
        self.route(a, b, true).expect("cut");
        self.route(b, a, true).expect("cut");
        self.cut_pairs().insert((a.min(b), a.max(b)));
    }

    /// Cuts every pair that is not inside one of `groups`.
    pub fn partition(&self, groups: &[Vec<u64>]) {
        let group_of = |node: u64| groups.iter().position(|group| group.contains(&node));
        for a in 1..=self.nodes {
            for b in a + 1..=self.nodes {
                if group_of(a).is_none() || group_of(a) != group_of(b) {
                    self.cut(a, b);
                }
            }
        }
    }

    /// Restores every link that is cut.
    pub fn heal(&self) {
        let cut: Vec<(u64, u64)> = std::mem::take(&mut *self.cut_pairs()).into_iter().collect();
        for (a, b) in cut {
            self.route(a, b, false).expect("heal");
            self.route(b, a, false).expect("heal");
        }
    }

    fn cut_pairs(&self) -> std::sync::MutexGuard<'_, BTreeSet<(u64, u64)>> {
        self.cut.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for node in 1..=self.nodes {
            let _ = ip(&["netns", "del", &self.namespace(node)]);
        }
    }
}
