//! Registry credentials from a Docker `config.json`.
//!
//! Only the static forms are supported: `auths.<host>.auth` (base64
//! `user:password`) and `auths.<host>.username`/`password`. Credential
//! helpers (`credsStore`, `credHelpers`) would mean running external programs
//! from the admission server; they are skipped with a log line and the
//! registry is accessed anonymously.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

use super::FetchError;

/// Parsed credentials, keyed by normalised registry host (`host[:port]`).
#[derive(Clone, Default)]
pub(crate) struct DockerCredentials {
    by_host: HashMap<String, (String, String)>,
}

// Never print secrets, not even in debug logs.
impl std::fmt::Debug for DockerCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerCredentials")
            .field("hosts", &self.by_host.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    creds_store: Option<String>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "lowercase")]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

impl DockerCredentials {
    /// Loads credentials.
    ///
    /// `explicit` is a `config.json` or a directory holding one; when it is
    /// given, a missing or malformed file is an error because the user asked
    /// for it. Otherwise `$DOCKER_CONFIG` or `~/.docker` is tried and problems
    /// only produce a warning: a policy server must not refuse to start
    /// because of an unrelated developer file.
    pub(crate) fn load(explicit: Option<&Path>) -> Result<Self, FetchError> {
        match explicit {
            Some(path) => {
                let file = config_file_path(path);
                Self::from_file(&file)
            }
            None => {
                let Some(file) = default_config_file() else {
                    return Ok(Self::default());
                };
                if !file.exists() {
                    return Ok(Self::default());
                }
                Self::from_file(&file).or_else(|e| {
                    tracing::warn!(error = %e, "ignoring unreadable docker config; registries are accessed anonymously");
                    Ok(Self::default())
                })
            }
        }
    }

    fn from_file(file: &Path) -> Result<Self, FetchError> {
        let err = |reason: String| FetchError::Config {
            what: format!("docker config {}", file.display()),
            reason,
        };
        let text = std::fs::read(file).map_err(|e| err(e.to_string()))?;
        let parsed: ConfigFile = serde_json::from_slice(&text).map_err(|e| err(e.to_string()))?;
        Self::from_parsed(parsed).map_err(err)
    }

    fn from_parsed(parsed: ConfigFile) -> Result<Self, String> {
        if let Some(store) = &parsed.creds_store {
            tracing::info!(
                creds_store = %store,
                "docker credsStore is not supported; only inline auths are used"
            );
        }
        for (host, helper) in &parsed.cred_helpers {
            tracing::info!(%host, %helper, "docker credHelpers are not supported; skipping");
        }
        let mut by_host = HashMap::new();
        for (key, entry) in parsed.auths {
            let host = normalize_host(&key);
            let credentials = match (&entry.auth, &entry.username, &entry.password) {
                (Some(auth), _, _) if !auth.is_empty() => {
                    Some(decode_auth(auth).map_err(|e| format!("auths.{key}.auth: {e}"))?)
                }
                (_, Some(user), Some(pass)) => Some((user.clone(), pass.clone())),
                _ => None,
            };
            match credentials {
                Some(c) => {
                    by_host.insert(host, c);
                }
                None if entry.identitytoken.is_some() => {
                    tracing::info!(%host, "docker identitytoken credentials are not supported; skipping");
                }
                None => {}
            }
        }
        Ok(Self { by_host })
    }

    /// The credentials to use for `registry` (`host[:port]`), or anonymous.
    pub(crate) fn auth_for(&self, registry: &str) -> RegistryAuth {
        let host = normalize_host(registry);
        match self.by_host.get(&host) {
            Some((user, pass)) => RegistryAuth::Basic(user.clone(), pass.clone()),
            None => RegistryAuth::Anonymous,
        }
    }
}

fn config_file_path(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("config.json")
    } else {
        path.to_path_buf()
    }
}

fn default_config_file() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(".docker").join("config.json"))
}

fn decode_auth(auth: &str) -> Result<(String, String), String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|e| format!("invalid base64 ({e})"))?;
    let text = String::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())?;
    let (user, pass) = text
        .split_once(':')
        .ok_or_else(|| "expected base64 of user:password".to_owned())?;
    Ok((user.to_owned(), pass.to_owned()))
}

/// Docker writes keys as `host`, `https://host`, or `https://host/v1/`;
/// Docker Hub appears under several names that all mean the same registry.
fn normalize_host(key: &str) -> String {
    let without_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = without_scheme
        .split('/')
        .next()
        .unwrap_or(without_scheme)
        .to_ascii_lowercase();
    match host.as_str() {
        "docker.io" | "registry-1.docker.io" | "index.docker.io" => "index.docker.io".to_owned(),
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> DockerCredentials {
        DockerCredentials::from_parsed(serde_json::from_str(json).unwrap()).unwrap()
    }

    #[test]
    fn auth_and_username_password_forms() {
        let creds = parse(
            r#"{"auths": {
                "https://reg.example:5000/v1/": {"auth": "dXNlcjpwYTpzcw=="},
                "other.example": {"username": "u2", "password": "p2"},
                "https://index.docker.io/v1/": {"auth": "aHViOmh1Yg=="},
                "helper.example": {}
            }, "credHelpers": {"gcr.io": "gcloud"}}"#,
        );
        assert!(matches!(creds.auth_for("reg.example:5000"),
            RegistryAuth::Basic(u, p) if u == "user" && p == "pa:ss"));
        assert!(matches!(creds.auth_for("other.example"),
            RegistryAuth::Basic(u, p) if u == "u2" && p == "p2"));
        assert!(matches!(creds.auth_for("docker.io"), RegistryAuth::Basic(u, _) if u == "hub"));
        assert!(matches!(
            creds.auth_for("helper.example"),
            RegistryAuth::Anonymous
        ));
        assert!(matches!(
            creds.auth_for("reg.example"),
            RegistryAuth::Anonymous
        ));
        assert!(!format!("{creds:?}").contains("pa:ss"));
    }

    #[test]
    fn malformed_auth_is_an_error_for_explicit_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"auths": {"h": {"auth": "!!!"}}}"#,
        )
        .unwrap();
        let err = DockerCredentials::load(Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("auths.h.auth"), "{err}");
        let err = DockerCredentials::load(Some(&dir.path().join("missing.json")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.json"), "{err}");
    }
}
