//! The edge's configuration: `[edge]` in a TOML file, overridden like the hub's
//! (`GANYMEDE_EDGE_<KEY>`, `--set edge.key=value`).

use std::time::Duration;

use ganymede_edge::{EdgeConfig, HubAddrs, HubEndpoint};
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, duration, invalid, keys_of, load_file, peer_address, socket};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeFile {
    pub edge: EdgeSection,
}

/// One hub replica: its HTTP API and its edge feed (gRPC and ZeroMQ), as `host:port`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubEntry {
    pub api: String,
    pub grpc: String,
    pub events: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeSection {
    pub name: String,
    pub bind: String,
    /// Serve HTTPS with this PEM certificate chain and key (both or neither); SIGHUP
    /// reloads them. `ganymede certs` makes a CA and certificates.
    pub tls_cert: String,
    pub tls_key: String,
    /// Worker threads serving traffic; 0 for one per CPU core.
    pub workers: usize,
    /// Prometheus metrics at `/metrics`; empty to serve none.
    pub metrics_bind: String,
    /// Every hub replica the edge may use: it subscribes to all of them.
    pub hubs: Vec<HubEntry>,
    /// The CA (PEM file) of the hubs' edge-feed certificates (`events.tls_cert`): gRPC to
    /// the hubs then uses TLS. Empty for plaintext.
    pub hubs_ca: String,
    /// This edge's certificate and key (PEM files, both or neither), for hubs whose feed
    /// asks edges for one (`events.tls_client_ca`): mutual TLS.
    pub hubs_client_cert: String,
    pub hubs_client_key: String,
    pub host_routing: bool,
    pub header_read_timeout: String,
    pub max_header_bytes: usize,
    pub upstream_connect_timeout: String,
    pub upstream_response_timeout: String,
    pub upstream_idle_timeout: String,
    pub health_interval: String,
    /// How often route activity is reported to the hubs (one command per report).
    pub activity_interval: String,
    pub log: String,
    /// `human` or `json` (one object per line); `--log-format` overrides it.
    pub log_format: String,
}

impl Default for EdgeSection {
    fn default() -> Self {
        EdgeSection {
            name: "edge".into(),
            bind: "0.0.0.0:8000".into(),
            tls_cert: String::new(),
            tls_key: String::new(),
            workers: 0,
            metrics_bind: "127.0.0.1:9100".into(),
            hubs: vec![HubEntry {
                api: "127.0.0.1:8081".into(),
                grpc: "127.0.0.1:8381".into(),
                events: "127.0.0.1:8481".into(),
            }],
            hubs_ca: String::new(),
            hubs_client_cert: String::new(),
            hubs_client_key: String::new(),
            host_routing: false,
            header_read_timeout: "30s".into(),
            max_header_bytes: 64 * 1024,
            upstream_connect_timeout: "5s".into(),
            upstream_response_timeout: "300s".into(),
            upstream_idle_timeout: "60s".into(),
            health_interval: "1s".into(),
            activity_interval: "5s".into(),
            log: "info".into(),
            log_format: "human".into(),
        }
    }
}

pub fn keys() -> Vec<(String, String)> {
    keys_of(&EdgeFile::default(), &[])
}

/// The validated configuration and the log filter.
pub fn load(
    file: Option<&std::path::Path>,
    env: impl IntoIterator<Item = (String, String)>,
    sets: &[String],
) -> Result<(EdgeConfig, String, crate::LogFormat), ConfigError> {
    let EdgeFile { edge } = load_file(file, env, sets, &keys())?;
    if edge.hubs.is_empty() {
        return Err(invalid("edge.hubs", "list at least one hub"));
    }
    let hubs_ca = if edge.hubs_ca.is_empty() {
        None
    } else {
        Some(
            std::fs::read(&edge.hubs_ca)
                .map_err(|err| invalid("edge.hubs_ca", format!("cannot read {}: {err}", edge.hubs_ca)))?,
        )
    };
    let grpc_scheme = if hubs_ca.is_some() { "https" } else { "http" };
    let mut hubs = Vec::new();
    for hub in &edge.hubs {
        peer_address("edge.hubs.api", &hub.api)?;
        peer_address("edge.hubs.grpc", &hub.grpc)?;
        peer_address("edge.hubs.events", &hub.events)?;
        hubs.push(HubAddrs {
            api: hub.api.clone(),
            feed: HubEndpoint {
                grpc: format!("{grpc_scheme}://{}", hub.grpc),
                events: format!("tcp://{}", hub.events),
            },
        });
    }
    let positive = |key: &str, text: &str| -> Result<Duration, ConfigError> {
        let value = duration(key, text)?;
        if value.is_zero() {
            return Err(invalid(key, "must be positive"));
        }
        Ok(value)
    };
    if !(1024..=1024 * 1024).contains(&edge.max_header_bytes) {
        return Err(invalid("edge.max_header_bytes", "must be between 1024 and 1048576"));
    }
    let mut config = EdgeConfig::new(socket("edge.bind", &edge.bind)?, hubs);
    config.name = edge.name;
    config.hubs_identity = match (edge.hubs_client_cert.is_empty(), edge.hubs_client_key.is_empty()) {
        (true, true) => None,
        (false, false) if hubs_ca.is_none() => {
            return Err(invalid("edge.hubs_client_cert", "needs edge.hubs_ca (TLS to the hubs)"));
        }
        (false, false) => {
            let read = |key: &str, path: &str| {
                std::fs::read(path).map_err(|err| invalid(key, format!("cannot read {path}: {err}")))
            };
            Some((
                read("edge.hubs_client_cert", &edge.hubs_client_cert)?,
                read("edge.hubs_client_key", &edge.hubs_client_key)?,
            ))
        }
        _ => {
            return Err(invalid(
                "edge.hubs_client_cert",
                "set both edge.hubs_client_cert and edge.hubs_client_key, or neither",
            ));
        }
    };
    config.hubs_ca = hubs_ca;
    config.tls = match (edge.tls_cert.is_empty(), edge.tls_key.is_empty()) {
        (true, true) => None,
        (false, false) => Some(ganymede_edge::TlsFiles {
            cert: edge.tls_cert.into(),
            key: edge.tls_key.into(),
        }),
        _ => {
            return Err(invalid(
                "edge.tls_cert",
                "set both edge.tls_cert and edge.tls_key, or neither",
            ));
        }
    };
    if edge.workers > 0 {
        config.workers = edge.workers;
    }
    config.metrics_bind = if edge.metrics_bind.is_empty() {
        None
    } else {
        Some(socket("edge.metrics_bind", &edge.metrics_bind)?)
    };
    config.host_routing = edge.host_routing;
    config.header_read_timeout = positive("edge.header_read_timeout", &edge.header_read_timeout)?;
    config.max_header_bytes = edge.max_header_bytes;
    config.upstream_connect_timeout = positive("edge.upstream_connect_timeout", &edge.upstream_connect_timeout)?;
    config.upstream_response_timeout = positive("edge.upstream_response_timeout", &edge.upstream_response_timeout)?;
    config.upstream_idle_timeout = positive("edge.upstream_idle_timeout", &edge.upstream_idle_timeout)?;
    config.health_interval = positive("edge.health_interval", &edge.health_interval)?;
    config.activity_interval = positive("edge.activity_interval", &edge.activity_interval)?;
    let log_format = crate::config::log_format("edge.log_format", &edge.log_format)?;
    Ok((config, edge.log, log_format))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_parses_and_env_overrides_hubs() {
        let path = crate::config::tests::package_dir().join("../../ops/edge.example.toml");
        let (config, log, _) = load(Some(&path), Vec::new(), &[]).expect("example parses");
        assert_eq!(config.bind.to_string(), "0.0.0.0:8000");
        assert_eq!(log, "info");
        let env = vec![(
            "GANYMEDE_EDGE_HUBS".to_owned(),
            r#"[{api="127.0.0.1:1", grpc="127.0.0.1:2", events="127.0.0.1:3"}, {api="127.0.0.1:4", grpc="127.0.0.1:5", events="127.0.0.1:6"}]"#.to_owned(),
        )];
        let (config, _, _) = load(None, env, &["edge.bind=127.0.0.1:8010".into()]).expect("overrides apply");
        assert_eq!(config.hubs.len(), 2);
        assert_eq!(config.hubs[1].feed.events, "tcp://127.0.0.1:6");
        assert_eq!(config.bind.to_string(), "127.0.0.1:8010");
    }

    #[test]
    fn mistakes_are_named() {
        let err = load(None, Vec::new(), &["edge.hubs=[]".into()]).expect_err("no hubs");
        assert!(err.to_string().contains("edge.hubs"), "{err}");
        let err = load(None, Vec::new(), &["edge.health_interval=0s".into()]).expect_err("zero");
        assert!(err.to_string().contains("edge.health_interval"), "{err}");
        let err = load(None, Vec::new(), &["edge.tls_cert=/x.pem".into()]).expect_err("half of TLS");
        assert!(err.to_string().contains("edge.tls_key"), "{err}");
        let err = load(None, Vec::new(), &["edge.bindd=1".into()]).expect_err("typo");
        assert!(err.to_string().contains("no such config key"), "{err}");
    }
}
