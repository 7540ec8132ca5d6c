//! The hub's configuration: a TOML file (every key optional, with the defaults below),
//! overridden by `GANYMEDE_<SECTION>_<KEY>` environment variables, overridden by
//! `--set section.key=value` flags; then validated into a [`HubConfig`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The file format. Unknown keys are errors, so a typo never goes unnoticed.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubFile {
    pub hub: HubSection,
    pub cluster: ClusterSection,
    pub raft: RaftSection,
    pub proxy: ProxySection,
    pub events: EventsSection,
    pub servers: ServersSection,
    pub api: ApiSection,
    pub auth: AuthSection,
    pub spawner: SpawnerSection,
    /// Custom roles (JupyterHub's `load_roles`): `[[roles]]` with `name`, `scopes`,
    /// `users`, `groups`, `services`. Every replica must have the same ones.
    pub roles: Vec<ganymede_model::rbac::Role>,
}

/// Users' servers: JupyterHub's settings of the same names.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServersSection {
    pub allow_named_servers: bool,
    /// 0 = no limit.
    pub named_server_limit_per_user: u32,
    /// Servers starting at once, cluster-wide; 0 = no limit.
    pub concurrent_spawn_limit: u32,
    /// Servers running or starting, cluster-wide; 0 = no limit.
    pub active_server_limit: u32,
    /// How long a start request waits for the server before answering 202.
    pub slow_spawn_timeout: String,
    /// How long a stop request waits for the server before answering 202.
    pub slow_stop_timeout: String,
}

impl Default for ServersSection {
    fn default() -> Self {
        ServersSection {
            allow_named_servers: true,
            named_server_limit_per_user: 0,
            concurrent_spawn_limit: 100,
            active_server_limit: 0,
            slow_spawn_timeout: "10s".into(),
            slow_stop_timeout: "10s".into(),
        }
    }
}

/// How users' servers are started: JupyterHub's `Spawner` options.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpawnerSection {
    /// `local` (processes on the replica that took the request) or `none` (servers
    /// are started by something else, which reports through the API; for tests).
    pub kind: String,
    /// The single-user server command, found on `PATH` (the hub's, or the one in
    /// `environment`).
    pub cmd: Vec<String>,
    /// Appended to `cmd`.
    pub args: Vec<String>,
    /// Set in every server's environment, over everything else.
    pub environment: BTreeMap<String, String>,
    /// Variables passed on from the hub's environment.
    pub env_keep: Vec<String>,
    /// `$JUPYTERHUB_ROOT_DIR`; empty: the server's choice (its working directory).
    pub notebook_dir: String,
    /// `$JUPYTERHUB_DEFAULT_URL`, e.g. `/lab`; empty: the server's choice.
    pub default_url: String,
    /// Run servers as this OS user (the hub must run as root); empty: as the hub's user.
    pub user: String,
    /// When servers would run as root, pass `--ServerApp.allow_root=True` (JupyterLab
    /// refuses root otherwise).
    pub allow_root: bool,
    /// Users' home and working directories: `<home_dir>/<user>`; empty: `<data_dir>/homes`.
    pub home_dir: String,
    /// Servers' output: `<log_dir>/<user>[.<server>].log`; empty: `<data_dir>/server-logs`.
    pub log_dir: String,
    /// The hub API as servers reach it; empty: this replica's advertised API address.
    pub hub_connect_url: String,
    /// `$JUPYTERHUB_PUBLIC_URL`, the users' origin (e.g. `https://jupyter.example.org`).
    pub public_url: String,
    pub start_timeout: String,
    pub http_timeout: String,
    pub poll_interval: String,
    /// Grace between SIGTERM and SIGKILL when a server stops.
    pub stop_timeout: String,
    /// The leader fails the servers of a replica it has not heard from for this long.
    pub owner_timeout: String,
    /// Start servers from a warm Python interpreter that has already imported
    /// `prefork_preload` (when `cmd` is a Python console script, as
    /// jupyterhub-singleuser is): seconds faster; modules that read the environment
    /// when imported see the spawner's common environment, not each server's.
    pub prefork: bool,
    pub prefork_preload: Vec<String>,
}

impl Default for SpawnerSection {
    fn default() -> Self {
        SpawnerSection {
            kind: "local".into(),
            cmd: vec!["jupyterhub-singleuser".into()],
            args: Vec::new(),
            environment: BTreeMap::new(),
            env_keep: ganymede_spawner::DEFAULT_ENV_KEEP
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            notebook_dir: String::new(),
            default_url: String::new(),
            user: String::new(),
            allow_root: true,
            home_dir: String::new(),
            log_dir: String::new(),
            hub_connect_url: String::new(),
            public_url: String::new(),
            start_timeout: "60s".into(),
            http_timeout: "30s".into(),
            poll_interval: "10s".into(),
            stop_timeout: "10s".into(),
            owner_timeout: "10s".into(),
            prefork: false,
            prefork_preload: ganymede_spawner::DEFAULT_PRELOAD
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        }
    }
}

/// The validated spawner configuration; paths that default under the data directory
/// are resolved when the hub starts.
#[derive(Clone, Debug)]
pub struct SpawnerConfig {
    /// `None`: no spawner.
    pub local: Option<ganymede_spawner::LocalSettings>,
    pub run_as: Option<String>,
    pub hub_connect_url: Option<String>,
    pub timing: ganymede_hub::SpawnSettings,
}

/// Who may log in. `GANYMEDE_AUTHENTICATOR` also sets the authenticator; the dummy
/// authenticator's shared password comes only from `GANYMEDE_DUMMY_PASSWORD` (secrets
/// stay out of files).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// `native` (accounts with passwords in the replicated state; the default) or
    /// `dummy` (any name; the shared password when one is set).
    pub authenticator: String,
    /// Only these users may log in (plus `admin_users`); empty = everyone.
    pub allowed_users: Vec<String>,
    /// Made admin when they log in; with `native`, they need no approval to sign up.
    pub admin_users: Vec<String>,
    /// `native`: sign-ups need no admin approval.
    pub open_signup: bool,
    /// `native`: the shortest password accepted.
    pub minimum_password_length: usize,
    /// `native`: wrong passwords in a row before an account is locked (0: never).
    pub allowed_failed_logins: u32,
    /// `native`: how long a lock lasts.
    pub seconds_before_next_try: u64,
    /// Every authenticator: failed logins per user name, and per client address, within
    /// `login_failure_window` before this replica answers 429 without checking (0: no
    /// limit).
    pub login_failures_per_name: u32,
    pub login_failures_per_ip: u32,
    pub login_failure_window: String,
    /// `ldap`: the server, `ldap://host:port`.
    pub ldap_url: String,
    /// `ldap`: DNs to bind as, `{username}` replaced (escaped).
    pub ldap_bind_dn_templates: Vec<String>,
    /// `ldap`: or search for the user's DN under this base (empty: use the templates)…
    pub ldap_user_search_base: String,
    /// … by this attribute.
    pub ldap_user_attribute: String,
    /// `ldap`: who searches (empty: anonymous); the password comes only from
    /// `GANYMEDE_LDAP_SEARCH_PASSWORD`.
    pub ldap_search_bind_dn: String,
    /// `ldap`: group DNs whose members may log in (empty: everyone who binds).
    pub ldap_allowed_groups: Vec<String>,
    /// `ldap`: group DNs whose members are admins, and the others are not.
    pub ldap_admin_groups: Vec<String>,
    /// `oidc`: the OpenID provider's issuer URL.
    pub oidc_issuer: String,
    /// `oidc`: this hub's client id there; the secret only from
    /// `GANYMEDE_OIDC_CLIENT_SECRET`.
    pub oidc_client_id: String,
    /// `oidc`: the callback the provider redirects to, `<public URL>/hub/oauth_callback`.
    pub oidc_redirect_url: String,
    /// `oidc`: scopes beyond `openid`.
    pub oidc_scopes: Vec<String>,
    /// `oidc`: the claim that names a user at their first login (then `sub` keys them).
    pub oidc_username_claim: String,
    /// `oidc`: the claim that lists a user's groups.
    pub oidc_groups_claim: String,
    /// `oidc`: only members of these groups may log in (empty: everyone).
    pub oidc_allowed_groups: Vec<String>,
    /// `oidc`: members of these groups are admins, and the others are not.
    pub oidc_admin_groups: Vec<String>,
}

impl Default for AuthSection {
    fn default() -> Self {
        let native = ganymede_hub::NativeSettings::default();
        AuthSection {
            authenticator: "native".into(),
            allowed_users: Vec::new(),
            admin_users: Vec::new(),
            open_signup: native.open_signup,
            minimum_password_length: native.minimum_password_length,
            allowed_failed_logins: native.allowed_failed_logins,
            seconds_before_next_try: native.seconds_before_next_try.as_secs(),
            login_failures_per_name: ganymede_hub::LoginLimits::default().per_name,
            login_failures_per_ip: ganymede_hub::LoginLimits::default().per_ip,
            login_failure_window: "5m".into(),
            ldap_url: "ldap://127.0.0.1:389".into(),
            ldap_bind_dn_templates: Vec::new(),
            ldap_user_search_base: String::new(),
            ldap_user_attribute: "uid".into(),
            ldap_search_bind_dn: String::new(),
            ldap_allowed_groups: Vec::new(),
            ldap_admin_groups: Vec::new(),
            oidc_issuer: String::new(),
            oidc_client_id: String::new(),
            oidc_redirect_url: String::new(),
            oidc_scopes: ganymede_hub::OidcSettings::default().scopes,
            oidc_username_claim: "preferred_username".into(),
            oidc_groups_claim: "groups".into(),
            oidc_allowed_groups: Vec::new(),
            oidc_admin_groups: Vec::new(),
        }
    }
}

/// The REST API's own settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    /// The longest `expires_in` a new token may ask for; 0 = no limit.
    pub token_expires_in_max_seconds: u64,
    /// Whether `/hub/metrics` needs the `read:metrics` scope.
    pub authenticate_prometheus: bool,
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection {
            token_expires_in_max_seconds: 0,
            authenticate_prometheus: true,
        }
    }
}

/// The edge feed: gRPC snapshots and gap repair, and the ZeroMQ PUB socket of route
/// events. Served with the proxy token (`CONFIGPROXY_AUTH_TOKEN`), which edges present.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsSection {
    pub grpc_bind: String,
    pub pub_bind: String,
    /// TLS on the edge feed's gRPC: PEM certificate and key (both or neither). Edges then
    /// need `edge.hubs_ca`. (ZeroMQ has no TLS: its messages are signed, not encrypted.)
    pub tls_cert: String,
    pub tls_key: String,
    /// With TLS: the CA (PEM file) whose certificates edges must present (mutual TLS;
    /// edges set `edge.hubs_client_cert`/`hubs_client_key`). Empty: no client
    /// certificate asked for (edges still present the proxy token).
    pub tls_client_ca: String,
}

impl Default for EventsSection {
    fn default() -> Self {
        EventsSection {
            grpc_bind: "127.0.0.1:8381".into(),
            pub_bind: "127.0.0.1:8481".into(),
            tls_cert: String::new(),
            tls_key: String::new(),
            tls_client_ca: String::new(),
        }
    }
}

/// configurable-http-proxy's routes API, served by every hub replica. Its token comes
/// from `CONFIGPROXY_AUTH_TOKEN` (never from the file); without one it is not served.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySection {
    pub api_bind: String,
}

impl Default for ProxySection {
    fn default() -> Self {
        ProxySection {
            api_bind: "127.0.0.1:8001".into(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubSection {
    /// This replica's id in the cluster (a positive integer, unique, never reused).
    pub node_id: u64,
    /// Where this replica keeps its RocksDB database (created `0700`).
    pub data_dir: PathBuf,
    /// JupyterHub's REST API and pages (`/hub/…`).
    pub api_bind: String,
    /// Replica-to-replica gRPC (Raft, forwarding).
    pub raft_bind: String,
    /// The API address clients and peers should use; defaults to the bound address.
    pub advertise_api: String,
    /// The gRPC address peers should use; defaults to the bound address.
    pub advertise_raft: String,
    /// Largest request body the API accepts, in bytes.
    pub max_body_bytes: usize,
    /// Largest request head (request line and headers) the API accepts, in bytes: 431
    /// beyond.
    pub max_header_bytes: usize,
    /// How long a client may take to send a request's head, and how long a kept-alive
    /// connection may sit idle (slowloris).
    pub header_read_timeout: String,
    /// Connections open at once on each of the hub's listeners (API, routes API, Raft,
    /// edge feed); past it the HTTP ones answer 503, the gRPC ones close the connection.
    pub max_connections: usize,
    /// `tracing` filter, e.g. `info` or `ganymede_raft=debug,info`.
    pub log: String,
    /// `human` or `json` (one object per line); `--log-format` overrides it.
    pub log_format: String,
}

impl Default for HubSection {
    fn default() -> Self {
        HubSection {
            node_id: 1,
            data_dir: PathBuf::from("ganymede-data"),
            api_bind: "127.0.0.1:8081".into(),
            raft_bind: "127.0.0.1:8281".into(),
            advertise_api: String::new(),
            advertise_raft: String::new(),
            max_body_bytes: 1024 * 1024,
            max_header_bytes: 64 * 1024,
            header_read_timeout: "10s".into(),
            max_connections: 10_000,
            log: "info".into(),
            log_format: "human".into(),
        }
    }
}

/// One replica of the initial cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub node_id: u64,
    pub raft_addr: String,
    pub api_addr: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// The replicas a brand-new cluster starts with. The one with the lowest id founds
    /// the cluster, unless a peer already belongs to one. Leave empty on a replica that
    /// joins an existing cluster through `ganymede cluster add`.
    pub initial_members: Vec<Member>,
    /// How long a request may wait for a leader (through an election) before failing.
    pub request_timeout: String,
    /// Mutual TLS between replicas (all three or none): this replica's certificate and
    /// key, and the CA that signs every replica's (`ganymede certs`). The Raft port then
    /// refuses plaintext and peers without a certificate from that CA.
    pub tls_cert: String,
    pub tls_key: String,
    pub tls_ca: String,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            initial_members: Vec::new(),
            request_timeout: "10s".into(),
            tls_cert: String::new(),
            tls_key: String::new(),
            tls_ca: String::new(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSection {
    /// Leader heartbeats. Well below the election timeout.
    pub heartbeat_interval: String,
    /// A follower that hears no leader for a random time in [min, max] starts an
    /// election; voters refuse candidates while their lease on the old leader (max)
    /// runs, so failover takes about max plus one more timeout.
    pub election_timeout_min: String,
    pub election_timeout_max: String,
    /// Build a snapshot every this many log entries, then purge the log behind it.
    pub snapshot_logs_since_last: u64,
    /// Entries kept behind a snapshot for followers that lag a little.
    pub logs_kept_after_snapshot: u64,
}

impl Default for RaftSection {
    fn default() -> Self {
        RaftSection {
            heartbeat_interval: "50ms".into(),
            election_timeout_min: "150ms".into(),
            election_timeout_max: "300ms".into(),
            snapshot_logs_since_last: 10_000,
            logs_kept_after_snapshot: 2_000,
        }
    }
}

/// The validated configuration of a hub process.
#[derive(Clone, Debug)]
pub struct HubConfig {
    pub node_id: u64,
    pub data_dir: PathBuf,
    pub api_bind: SocketAddr,
    pub raft_bind: SocketAddr,
    pub advertise_api: Option<String>,
    pub advertise_raft: Option<String>,
    pub max_body_bytes: usize,
    /// Header, slowloris and connection limits of the HTTP listeners.
    pub serve_limits: ganymede_hub::ServeLimits,
    pub login_limits: ganymede_hub::LoginLimits,
    pub log: String,
    pub log_format: crate::LogFormat,
    pub proxy_api_bind: SocketAddr,
    pub events_grpc_bind: SocketAddr,
    pub events_pub_bind: SocketAddr,
    /// The edge feed's TLS certificate and key files.
    pub events_tls: Option<(PathBuf, PathBuf)>,
    /// The CA edges' client certificates must come from (mutual TLS on the feed).
    pub events_client_ca: Option<PathBuf>,
    /// Mutual TLS between replicas: certificate, key and CA files.
    pub peer_tls: Option<(PathBuf, PathBuf, PathBuf)>,
    pub initial_members: BTreeMap<u64, Member>,
    pub request_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    pub snapshot_logs_since_last: u64,
    pub logs_kept_after_snapshot: u64,
    pub settings: ganymede_hub::HubSettings,
    pub auth: ganymede_hub::AuthSettings,
    pub spawner: SpawnerConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config: {0}")]
    Parse(String),
    #[error("config: {key}: {message}")]
    Invalid { key: String, message: String },
}

pub(crate) fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// Every key path of the hub's file format, e.g. `hub.node_id`, with the environment
/// variable that overrides it.
pub fn keys() -> Vec<(String, String)> {
    // Arrays of tables are empty by default and so absent from the serialized defaults.
    keys_of(&HubFile::default(), &["cluster.initial_members"])
}

/// The key paths of any sectioned file format, from its serialized defaults.
pub fn keys_of<F: Serialize>(defaults: &F, extra: &[&str]) -> Vec<(String, String)> {
    let defaults = toml::Value::try_from(defaults).expect("the default config serializes");
    let mut keys: Vec<String> = extra.iter().map(|key| (*key).to_owned()).collect();
    if let toml::Value::Table(sections) = defaults {
        for (section, table) in sections {
            if let toml::Value::Table(table) = table {
                keys.extend(table.keys().map(|key| format!("{section}.{key}")));
            }
        }
    }
    let mut keys: Vec<(String, String)> = keys
        .into_iter()
        .map(|key| {
            let var = format!("GANYMEDE_{}", key.replace('.', "_")).to_uppercase();
            (key, var)
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// `human` or `json`.
pub fn log_format(key: &str, text: &str) -> Result<crate::LogFormat, ConfigError> {
    match text {
        "human" => Ok(crate::LogFormat::Human),
        "json" => Ok(crate::LogFormat::Json),
        other => Err(invalid(key, format!("{other:?} is neither \"human\" nor \"json\""))),
    }
}

/// Parses an override: a TOML value if it is one (`42`, `true`, `[…]`), else a string.
fn override_value(text: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("value = {text}")) {
        Ok(mut table) => table
            .remove("value")
            .unwrap_or_else(|| toml::Value::String(text.into())),
        Err(_) => toml::Value::String(text.into()),
    }
}

/// Loads the file (if any), applies environment and flag overrides, and validates.
/// `env` is passed in so that tests never touch the process environment.
pub fn load(
    file: Option<&std::path::Path>,
    env: impl IntoIterator<Item = (String, String)>,
    sets: &[String],
) -> Result<HubConfig, ConfigError> {
    let env: Vec<(String, String)> = env.into_iter().collect();
    let mut file: HubFile = load_file(file, env.iter().cloned(), sets, &keys())?;
    let dummy_password = env
        .iter()
        .find(|(name, _)| name == "GANYMEDE_DUMMY_PASSWORD")
        .map(|(_, value)| value.clone())
        .filter(|value| !value.is_empty());
    if let Some((_, authenticator)) = env.iter().find(|(name, _)| name == "GANYMEDE_AUTHENTICATOR") {
        file.auth.authenticator = authenticator.clone();
    }
    let mut config = validate(file)?;
    if let Some(password) = dummy_password
        && let ganymede_hub::Authenticator::Dummy { password: shared } = &mut config.auth.authenticator
    {
        *shared = Some(password.into());
    }
    if let ganymede_hub::Authenticator::Oidc(oidc) = &mut config.auth.authenticator {
        oidc.client_secret = env
            .iter()
            .find(|(name, _)| name == "GANYMEDE_OIDC_CLIENT_SECRET")
            .map(|(_, value)| value.clone().into());
    }
    if let ganymede_hub::Authenticator::Ldap(ldap) = &mut config.auth.authenticator {
        ldap.search_bind_password = env
            .iter()
            .find(|(name, _)| name == "GANYMEDE_LDAP_SEARCH_PASSWORD")
            .map(|(_, value)| value.clone().into());
    }
    Ok(config)
}

/// Reads a sectioned TOML file and applies the overrides of `keys`.
pub fn load_file<F: serde::de::DeserializeOwned>(
    file: Option<&std::path::Path>,
    env: impl IntoIterator<Item = (String, String)>,
    sets: &[String],
    keys: &[(String, String)],
) -> Result<F, ConfigError> {
    let mut table: toml::Table = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.into(),
                source,
            })?;
            toml::from_str(&text).map_err(|err| ConfigError::Parse(format!("{}: {err}", path.display())))?
        }
        None => toml::Table::new(),
    };
    let env: BTreeMap<String, String> = env.into_iter().collect();
    let mut overrides: Vec<(String, String)> = Vec::new();
    for (key, var) in keys {
        if let Some(value) = env.get(var) {
            overrides.push((key.clone(), value.clone()));
        }
    }
    for set in sets {
        let (key, value) = set
            .split_once('=')
            .ok_or_else(|| invalid(set, "--set takes section.key=value"))?;
        if !keys.iter().any(|(known, _)| known == key.trim()) {
            return Err(invalid(key.trim(), "no such config key"));
        }
        overrides.push((key.trim().to_owned(), value.to_owned()));
    }
    for (key, value) in overrides {
        let (section, name) = key.split_once('.').expect("keys are section.key");
        let section_table = table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| invalid(section, "must be a table"))?;
        section_table.insert(name.to_owned(), override_value(&value));
    }
    toml::Value::Table(table)
        .try_into()
        .map_err(|err: toml::de::Error| ConfigError::Parse(err.to_string()))
}

pub(crate) fn duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text)
        .map_err(|err| invalid(key, format!("{text:?} is not a duration ({err}); write e.g. \"250ms\"")))
}

pub(crate) fn socket(key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse()
        .map_err(|_| invalid(key, format!("{text:?} is not an ip:port address")))
}

/// An address to connect to: `ip:port`, `[ipv6]:port` or `host.name:port` (resolved
/// when connecting, so peers can be named by DNS — compose services, Kubernetes).
pub(crate) fn peer_address(key: &str, text: &str) -> Result<(), ConfigError> {
    if text.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let bad = || invalid(key, format!("{text:?} is not a host:port address"));
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().ok().filter(|port| *port > 0).ok_or_else(bad)?;
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if host.len() <= 253 && host.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(bad())
    }
}

fn validate(file: HubFile) -> Result<HubConfig, ConfigError> {
    let HubFile {
        hub,
        cluster,
        raft,
        proxy,
        events,
        servers,
        api,
        roles,
        auth,
        spawner,
    } = file;
    let normalize = |names: Vec<String>| -> std::collections::BTreeSet<String> {
        names
            .iter()
            .map(|n| ganymede_model::names::normalize_user_name(n))
            .collect()
    };
    let login_limits = ganymede_hub::LoginLimits {
        per_name: auth.login_failures_per_name,
        per_ip: auth.login_failures_per_ip,
        window: duration("auth.login_failure_window", &auth.login_failure_window)?,
    };
    let auth = ganymede_hub::AuthSettings {
        authenticator: match auth.authenticator.as_str() {
            "dummy" => ganymede_hub::Authenticator::Dummy { password: None },
            "native" => ganymede_hub::Authenticator::Native(ganymede_hub::NativeSettings {
                open_signup: auth.open_signup,
                minimum_password_length: auth.minimum_password_length,
                allowed_failed_logins: auth.allowed_failed_logins,
                seconds_before_next_try: Duration::from_secs(auth.seconds_before_next_try),
            }),
            "ldap" => {
                if auth.ldap_bind_dn_templates.is_empty() && auth.ldap_user_search_base.is_empty() {
                    return Err(invalid(
                        "auth.ldap_bind_dn_templates",
                        "the ldap authenticator needs bind DN templates or a user search base",
                    ));
                }
                let nonempty = |text: String| (!text.is_empty()).then_some(text);
                ganymede_hub::Authenticator::Ldap(ganymede_hub::LdapSettings {
                    url: auth.ldap_url,
                    bind_dn_templates: auth.ldap_bind_dn_templates,
                    user_search_base: nonempty(auth.ldap_user_search_base),
                    user_attribute: auth.ldap_user_attribute,
                    search_bind_dn: nonempty(auth.ldap_search_bind_dn),
                    search_bind_password: None,
                    allowed_groups: auth.ldap_allowed_groups,
                    admin_groups: auth.ldap_admin_groups,
                    ..Default::default()
                })
            }
            "oidc" => {
                for (key, value) in [
                    ("auth.oidc_issuer", &auth.oidc_issuer),
                    ("auth.oidc_client_id", &auth.oidc_client_id),
                    ("auth.oidc_redirect_url", &auth.oidc_redirect_url),
                ] {
                    if value.is_empty() {
                        return Err(invalid(key, "the oidc authenticator needs it"));
                    }
                }
                ganymede_hub::Authenticator::Oidc(ganymede_hub::OidcSettings {
                    issuer: auth.oidc_issuer,
                    client_id: auth.oidc_client_id,
                    client_secret: None,
                    redirect_url: auth.oidc_redirect_url,
                    scopes: auth.oidc_scopes,
                    username_claim: auth.oidc_username_claim,
                    groups_claim: auth.oidc_groups_claim,
                    allowed_groups: auth.oidc_allowed_groups,
                    admin_groups: auth.oidc_admin_groups,
                })
            }
            other => {
                return Err(invalid(
                    "auth.authenticator",
                    format!("{other:?} is not an authenticator this hub has (native, dummy, ldap, oidc)"),
                ));
            }
        },
        allowed_users: normalize(auth.allowed_users),
        admin_users: normalize(auth.admin_users),
    };
    let limit = |n: u32| (n > 0).then_some(n);
    let settings = ganymede_hub::HubSettings {
        roles: ganymede_model::rbac::Roles::with_custom(roles).map_err(|err| invalid("roles", err.to_string()))?,
        spawn_limits: ganymede_model::SpawnLimits {
            concurrent_spawns: limit(servers.concurrent_spawn_limit),
            active_servers: limit(servers.active_server_limit),
            named_servers_per_user: limit(servers.named_server_limit_per_user),
        },
        slow_spawn_timeout: duration("servers.slow_spawn_timeout", &servers.slow_spawn_timeout)?,
        slow_stop_timeout: duration("servers.slow_stop_timeout", &servers.slow_stop_timeout)?,
        allow_named_servers: servers.allow_named_servers,
        token_expires_in_max: (api.token_expires_in_max_seconds > 0)
            .then(|| Duration::from_secs(api.token_expires_in_max_seconds)),
        authenticate_prometheus: api.authenticate_prometheus,
    };
    if hub.node_id == 0 {
        return Err(invalid("hub.node_id", "must be a positive integer"));
    }
    let mut initial_members = BTreeMap::new();
    for member in cluster.initial_members {
        if member.node_id == 0 {
            return Err(invalid("cluster.initial_members", "node ids must be positive"));
        }
        peer_address("cluster.initial_members.raft_addr", &member.raft_addr)?;
        if initial_members.insert(member.node_id, member.clone()).is_some() {
            return Err(invalid(
                "cluster.initial_members",
                format!("node {} is listed twice", member.node_id),
            ));
        }
    }
    if !initial_members.is_empty() && !initial_members.contains_key(&hub.node_id) {
        return Err(invalid(
            "cluster.initial_members",
            format!("does not list this node ({})", hub.node_id),
        ));
    }
    let heartbeat_interval = duration("raft.heartbeat_interval", &raft.heartbeat_interval)?;
    let election_timeout_min = duration("raft.election_timeout_min", &raft.election_timeout_min)?;
    let election_timeout_max = duration("raft.election_timeout_max", &raft.election_timeout_max)?;
    if heartbeat_interval.is_zero() || heartbeat_interval >= election_timeout_min {
        return Err(invalid(
            "raft.heartbeat_interval",
            "must be positive and below raft.election_timeout_min",
        ));
    }
    if election_timeout_min >= election_timeout_max {
        return Err(invalid(
            "raft.election_timeout_min",
            "must be below raft.election_timeout_max",
        ));
    }
    if raft.snapshot_logs_since_last == 0 {
        return Err(invalid("raft.snapshot_logs_since_last", "must be positive"));
    }
    if hub.max_body_bytes < 1024 {
        return Err(invalid("hub.max_body_bytes", "must be at least 1024"));
    }
    if hub.max_header_bytes < 4096 {
        return Err(invalid("hub.max_header_bytes", "must be at least 4096"));
    }
    if hub.max_connections == 0 {
        return Err(invalid("hub.max_connections", "must be positive"));
    }
    let serve_limits = ganymede_hub::ServeLimits {
        max_connections: hub.max_connections,
        header_read_timeout: duration("hub.header_read_timeout", &hub.header_read_timeout)?,
        max_header_bytes: hub.max_header_bytes,
        ..Default::default()
    };
    let non_empty = |text: String| (!text.is_empty()).then_some(text);
    let spawner = spawner_config(spawner, &hub.data_dir)?;
    Ok(HubConfig {
        node_id: hub.node_id,
        data_dir: hub.data_dir,
        api_bind: socket("hub.api_bind", &hub.api_bind)?,
        raft_bind: socket("hub.raft_bind", &hub.raft_bind)?,
        advertise_api: non_empty(hub.advertise_api),
        advertise_raft: non_empty(hub.advertise_raft),
        max_body_bytes: hub.max_body_bytes,
        serve_limits,
        login_limits,
        log: hub.log,
        log_format: log_format("hub.log_format", &hub.log_format)?,
        proxy_api_bind: socket("proxy.api_bind", &proxy.api_bind)?,
        events_grpc_bind: socket("events.grpc_bind", &events.grpc_bind)?,
        events_pub_bind: socket("events.pub_bind", &events.pub_bind)?,
        events_client_ca: match (events.tls_client_ca.is_empty(), events.tls_cert.is_empty()) {
            (true, _) => None,
            (false, false) => Some(events.tls_client_ca.clone().into()),
            (false, true) => {
                return Err(invalid(
                    "events.tls_client_ca",
                    "needs events.tls_cert and events.tls_key (TLS on the feed)",
                ));
            }
        },
        events_tls: match (events.tls_cert.is_empty(), events.tls_key.is_empty()) {
            (true, true) => None,
            (false, false) => Some((events.tls_cert.into(), events.tls_key.into())),
            _ => {
                return Err(invalid(
                    "events.tls_cert",
                    "set both events.tls_cert and events.tls_key, or neither",
                ));
            }
        },
        initial_members,
        request_timeout: duration("cluster.request_timeout", &cluster.request_timeout)?,
        peer_tls: match [&cluster.tls_cert, &cluster.tls_key, &cluster.tls_ca].map(|path| path.is_empty()) {
            [true, true, true] => None,
            [false, false, false] => Some((
                cluster.tls_cert.clone().into(),
                cluster.tls_key.clone().into(),
                cluster.tls_ca.clone().into(),
            )),
            _ => {
                return Err(invalid(
                    "cluster.tls_cert",
                    "set all of cluster.tls_cert, cluster.tls_key and cluster.tls_ca, or none",
                ));
            }
        },
        heartbeat_interval,
        election_timeout_min,
        election_timeout_max,
        snapshot_logs_since_last: raft.snapshot_logs_since_last,
        logs_kept_after_snapshot: raft.logs_kept_after_snapshot,
        settings,
        auth,
        spawner,
    })
}

fn spawner_config(section: SpawnerSection, data_dir: &std::path::Path) -> Result<SpawnerConfig, ConfigError> {
    let non_empty = |text: &str| (!text.is_empty()).then(|| text.to_owned());
    let timing = ganymede_hub::SpawnSettings {
        start_timeout: duration("spawner.start_timeout", &section.start_timeout)?,
        http_timeout: duration("spawner.http_timeout", &section.http_timeout)?,
        poll_interval: duration("spawner.poll_interval", &section.poll_interval)?,
        owner_timeout: duration("spawner.owner_timeout", &section.owner_timeout)?,
        public_url: section.public_url.trim_end_matches('/').to_owned(),
        ..Default::default()
    };
    if let Some(url) = non_empty(&section.hub_connect_url)
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(invalid(
            "spawner.hub_connect_url",
            format!("{url:?} is not an http(s) URL"),
        ));
    }
    let local = match section.kind.as_str() {
        "none" => None,
        "local" => {
            if section.cmd.is_empty() || section.cmd[0].is_empty() {
                return Err(invalid("spawner.cmd", "must name a command"));
            }
            let dir = |text: &str, default: &str| non_empty(text).map_or_else(|| data_dir.join(default), PathBuf::from);
            let mut local = ganymede_spawner::LocalSettings::new(
                dir(&section.home_dir, "homes"),
                dir(&section.log_dir, "server-logs"),
                String::new(),
            );
            local.cmd = section.cmd;
            local.args = section.args;
            local.environment = section.environment;
            local.env_keep = section.env_keep;
            local.notebook_dir = non_empty(&section.notebook_dir);
            local.default_url = non_empty(&section.default_url);
            local.allow_root = section.allow_root;
            local.stop_timeout = duration("spawner.stop_timeout", &section.stop_timeout)?;
            local.prefork = section.prefork.then_some(section.prefork_preload);
            Some(local)
        }
        other => {
            return Err(invalid(
                "spawner.kind",
                format!("{other:?} is not a spawner this hub has (local, none)"),
            ));
        }
    };
    Ok(SpawnerConfig {
        local,
        run_as: non_empty(&section.user),
        hub_connect_url: non_empty(&section.hub_connect_url),
        timing,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// This package's directory at run time (cargo and nextest set it): a test binary
    /// reused from a shared target directory may have been built in another checkout.
    pub(crate) fn package_dir() -> PathBuf {
        std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
    }

    fn example() -> PathBuf {
        package_dir().join("../../ops/hub.example.toml")
    }

    #[test]
    fn peers_may_be_named_by_ip_or_by_dns_name() {
        for good in [
            "127.0.0.1:8281",
            "[::1]:8281",
            "hub-0.hubs.jupyter.svc:8281",
            "ganymede:8281",
        ] {
            assert!(peer_address("k", good).is_ok(), "{good}");
        }
        for bad in [
            "hub",
            "hub:",
            "hub:0",
            "hub:99999",
            ":8281",
            "hub_1:8281",
            "-hub:8281",
            "a..b:1",
            "ho st:1",
        ] {
            assert!(peer_address("k", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_example_config_parses() {
        let config = load(Some(&example()), [], &[]).expect("ops/hub.example.toml parses");
        assert_eq!(config.node_id, 1);
        assert_eq!(config.initial_members.len(), 3);
        assert_eq!(config.heartbeat_interval, Duration::from_millis(50));
    }

    #[test]
    fn cluster_tls_takes_all_three_files_or_none() {
        let set = |keys: &[&str]| {
            keys.iter()
                .map(|key| format!("cluster.{key}=x.pem"))
                .collect::<Vec<_>>()
        };
        let all = load(None, [], &set(&["tls_cert", "tls_key", "tls_ca"])).expect("all three");
        assert_eq!(all.peer_tls, Some(("x.pem".into(), "x.pem".into(), "x.pem".into())));
        assert!(load(None, [], &[]).expect("none").peer_tls.is_none());
        let error = load(None, [], &set(&["tls_cert", "tls_key"])).expect_err("two of three");
        assert!(error.to_string().contains("cluster.tls_ca"), "{error}");
    }

    #[test]
    fn defaults_need_no_file() {
        let config = load(None, [], &[]).expect("defaults are valid");
        assert_eq!(config.api_bind.port(), 8081);
        assert!(config.initial_members.is_empty());
    }

    #[test]
    fn environment_then_flags_override_the_file() {
        let env = [
            ("GANYMEDE_HUB_NODE_ID".to_string(), "2".to_string()),
            ("GANYMEDE_RAFT_HEARTBEAT_INTERVAL".to_string(), "20ms".to_string()),
            ("GANYMEDE_UNRELATED".to_string(), "ignored".to_string()),
        ];
        let sets = ["hub.api_bind=127.0.0.1:9999".to_string(), "hub.node_id=3".to_string()];
        let config = load(Some(&example()), env, &sets).expect("overrides apply");
        assert_eq!(config.node_id, 3, "a flag beats the environment");
        assert_eq!(config.heartbeat_interval, Duration::from_millis(20));
        assert_eq!(config.api_bind.port(), 9999);
        let members = "[{node_id=7, raft_addr=\"127.0.0.1:1\", api_addr=\"127.0.0.1:2\"}]";
        let env = [("GANYMEDE_CLUSTER_INITIAL_MEMBERS".to_string(), members.to_string())];
        let config = load(None, env, &["hub.node_id=7".to_string()]).expect("array override");
        assert_eq!(config.initial_members.keys().copied().collect::<Vec<_>>(), vec![7]);
    }

    #[test]
    fn mistakes_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let check = |text: &str, expected: &str| {
            let path = dir.path().join("hub.toml");
            std::fs::write(&path, text).expect("write");
            let message = load(Some(&path), [], &[]).expect_err(text).to_string();
            assert!(
                message.contains(expected),
                "{text:?} gave {message:?}, expected it to mention {expected:?}"
            );
        };
        check("[hub]\nnode_idd = 1\n", "node_idd");
        check("[hubb]\n", "hubb");
        check("[hub]\nnode_id = \"one\"\n", "node_id");
        check("[raft]\nheartbeat_interval = \"soon\"\n", "raft.heartbeat_interval");
        check("[raft]\nheartbeat_interval = \"1s\"\n", "raft.heartbeat_interval");
        check("[hub]\napi_bind = \"localhost\"\n", "hub.api_bind");
        check(
            "[hub]\nnode_id = 1\n[cluster]\ninitial_members = [{node_id = 2, raft_addr = \"127.0.0.1:1\", api_addr = \"x\"}]\n",
            "does not list this node",
        );
        check("not toml at all [", "config");
        let message = load(None, [], &["hub.nope=1".to_string()])
            .expect_err("unknown key")
            .to_string();
        assert!(message.contains("hub.nope"), "{message}");
        let message = load(Some(&dir.path().join("missing.toml")), [], &[])
            .expect_err("missing file")
            .to_string();
        assert!(message.contains("missing.toml"), "{message}");
    }

    #[test]
    fn every_key_has_an_environment_variable() {
        let keys = keys();
        assert!(keys.contains(&("hub.node_id".into(), "GANYMEDE_HUB_NODE_ID".into())));
        assert!(keys.contains(&(
            "raft.election_timeout_min".into(),
            "GANYMEDE_RAFT_ELECTION_TIMEOUT_MIN".into()
        )));
    }
}
