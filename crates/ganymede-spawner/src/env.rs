//! JupyterHub's environment contract for a single-user server (`Spawner.get_env()`),
//! as a pure function of the spawn and the settings.

use std::collections::BTreeMap;

use ganymede_model::names::url_quote;

use crate::SpawnSpec;

/// JupyterHub's `Spawner.env_keep`: what a server inherits from the hub's environment.
pub const DEFAULT_ENV_KEEP: &[&str] = &[
    "PATH",
    "PYTHONPATH",
    "LANG",
    "LC_ALL",
    "LD_LIBRARY_PATH",
    "VIRTUAL_ENV",
    "CONDA_ROOT",
    "CONDA_DEFAULT_ENV",
    "JUPYTERHUB_SINGLEUSER_APP",
];

/// The environment of a server: the kept variables from `inherited`, every
/// `JUPYTERHUB_*` variable the contract lists, the bind URL, `notebook_dir` and
/// `default_url` when set, then `environment` over all of it (as JupyterHub applies
/// `Spawner.environment` last).
#[allow(clippy::too_many_arguments)]
pub fn jupyterhub_env(
    spec: &SpawnSpec,
    bind_url: &str,
    env_keep: &[String],
    inherited: impl Fn(&str) -> Option<String>,
    notebook_dir: Option<&str>,
    default_url: Option<&str>,
    environment: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for name in env_keep {
        if let Some(value) = inherited(name) {
            env.insert(name.clone(), value);
        }
    }
    let json = |scopes: &[String]| serde_json::to_string(scopes).unwrap_or_else(|_| "[]".into());
    let access_scopes = json(&spec.oauth_access_scopes);
    let hub_api = spec.hub_api_url.trim_end_matches('/');
    let mut set = |name: &str, value: String| {
        env.insert(name.to_owned(), value);
    };
    set("JUPYTERHUB_API_TOKEN", spec.api_token.clone());
    set("JPY_API_TOKEN", spec.api_token.clone());
    set("JUPYTERHUB_CLIENT_ID", spec.client_id.clone());
    set("JUPYTERHUB_API_URL", hub_api.to_owned());
    set(
        "JUPYTERHUB_ACTIVITY_URL",
        // Quoted as JupyterHub quotes names in URLs (`@` and `~` kept).
        format!("{hub_api}/users/{}/activity", url_quote(&spec.user)),
    );
    set("JUPYTERHUB_BASE_URL", spec.base_url.clone());
    set("JUPYTERHUB_SERVICE_PREFIX", spec.service_prefix.clone());
    set("JUPYTERHUB_SERVICE_URL", bind_url.to_owned());
    set("JUPYTERHUB_USER", spec.user.clone());
    set("JUPYTERHUB_SERVER_NAME", spec.server.clone());
    set("JUPYTERHUB_OAUTH_CALLBACK_URL", spec.oauth_callback_url.clone());
    set("JUPYTERHUB_OAUTH_ACCESS_SCOPES", access_scopes.clone());
    set("JUPYTERHUB_OAUTH_SCOPES", access_scopes);
    set(
        "JUPYTERHUB_OAUTH_CLIENT_ALLOWED_SCOPES",
        json(&spec.oauth_client_allowed_scopes),
    );
    set("JUPYTERHUB_HOST", String::new());
    set("JUPYTERHUB_PUBLIC_URL", spec.public_url.clone());
    set(
        "JUPYTERHUB_PUBLIC_HUB_URL",
        if spec.public_url.is_empty() {
            String::new()
        } else {
            format!("{}/hub/", spec.public_url.trim_end_matches('/'))
        },
    );
    set("JUPYTERHUB_COOKIE_HOST_PREFIX_ENABLED", "0".into());
    if let Some(dir) = notebook_dir {
        set("JUPYTERHUB_ROOT_DIR", dir.to_owned());
    }
    if let Some(url) = default_url {
        set("JUPYTERHUB_DEFAULT_URL", url.to_owned());
    }
    for (name, value) in environment {
        env.insert(name.clone(), value.clone());
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SpawnSpec {
        SpawnSpec {
            user: "alice@example.org".into(),
            server: "gpu".into(),
            spawn_id: 7,
            api_token: "0123456789abcdef0123456789abcdef".into(),
            hub_api_url: "http://127.0.0.1:8081/hub/api/".into(),
            base_url: "/".into(),
            service_prefix: "/user/alice@example.org/gpu/".into(),
            client_id: "jupyterhub-user-alice%40example.org-gpu".into(),
            oauth_callback_url: "/user/alice@example.org/gpu/oauth_callback".into(),
            oauth_access_scopes: vec![
                "access:servers!server=alice@example.org/gpu".into(),
                "access:servers!user=alice@example.org".into(),
            ],
            oauth_client_allowed_scopes: vec![],
            public_url: String::new(),
            user_options: serde_json::json!({}),
        }
    }

    #[test]
    fn the_contract_variables_are_all_set() {
        let keep = vec!["PATH".to_owned(), "SECRET_OF_THE_HUB".to_owned(), "LANG".to_owned()];
        let env = jupyterhub_env(
            &spec(),
            "http://127.0.0.1:5000/user/alice@example.org/gpu/",
            &keep,
            |name| (name != "LANG").then(|| format!("hub-{name}")),
            Some("/srv/notebooks"),
            None,
            &BTreeMap::new(),
        );
        let get = |name: &str| env.get(name).map(String::as_str);
        assert_eq!(get("JUPYTERHUB_API_URL"), Some("http://127.0.0.1:8081/hub/api"));
        assert_eq!(
            get("JUPYTERHUB_ACTIVITY_URL"),
            Some("http://127.0.0.1:8081/hub/api/users/alice@example.org/activity")
        );
        assert_eq!(get("JUPYTERHUB_API_TOKEN"), get("JPY_API_TOKEN"));
        assert_eq!(get("JUPYTERHUB_SERVER_NAME"), Some("gpu"));
        assert_eq!(get("JUPYTERHUB_SERVICE_PREFIX"), Some("/user/alice@example.org/gpu/"));
        assert_eq!(
            get("JUPYTERHUB_SERVICE_URL"),
            Some("http://127.0.0.1:5000/user/alice@example.org/gpu/")
        );
        let scopes: Vec<String> =
            serde_json::from_str(get("JUPYTERHUB_OAUTH_ACCESS_SCOPES").expect("set")).expect("a JSON list");
        assert_eq!(scopes.len(), 2);
        assert_eq!(get("JUPYTERHUB_OAUTH_CLIENT_ALLOWED_SCOPES"), Some("[]"));
        assert_eq!(get("JUPYTERHUB_ROOT_DIR"), Some("/srv/notebooks"));
        assert_eq!(get("JUPYTERHUB_DEFAULT_URL"), None);
        assert_eq!(get("PATH"), Some("hub-PATH"));
        assert_eq!(
            get("SECRET_OF_THE_HUB"),
            Some("hub-SECRET_OF_THE_HUB"),
            "kept because listed"
        );
        assert_eq!(get("LANG"), None, "not in the hub's environment");
        for name in [
            "JUPYTERHUB_CLIENT_ID",
            "JUPYTERHUB_BASE_URL",
            "JUPYTERHUB_USER",
            "JUPYTERHUB_OAUTH_CALLBACK_URL",
            "JUPYTERHUB_OAUTH_SCOPES",
            "JUPYTERHUB_HOST",
            "JUPYTERHUB_PUBLIC_URL",
            "JUPYTERHUB_PUBLIC_HUB_URL",
            "JUPYTERHUB_COOKIE_HOST_PREFIX_ENABLED",
        ] {
            assert!(env.contains_key(name), "{name} missing");
        }
    }

    #[test]
    fn the_spawner_environment_overrides_everything() {
        let mut environment = BTreeMap::new();
        environment.insert("JUPYTERHUB_SERVICE_PREFIX".to_owned(), "/elsewhere/".to_owned());
        environment.insert("JUPYTERHUB_ACTIVITY_INTERVAL".to_owned(), "5".to_owned());
        let env = jupyterhub_env(
            &spec(),
            "http://127.0.0.1:1/",
            &[],
            |_| None,
            None,
            Some("/lab"),
            &environment,
        );
        assert_eq!(env["JUPYTERHUB_SERVICE_PREFIX"], "/elsewhere/");
        assert_eq!(env["JUPYTERHUB_ACTIVITY_INTERVAL"], "5");
        assert_eq!(env["JUPYTERHUB_DEFAULT_URL"], "/lab");
    }
}
