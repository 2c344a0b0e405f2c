//! Enforcing `allowed_module_sources` ([`portcullis_config::module_sources`]).

use std::path::{Component, Path, PathBuf};

use oci_client::Reference;
use portcullis_config::{ModuleLocation, ModuleSourceAllowList, SourceScheme};
use reqwest_oci::Url;

use super::{FetchError, Source};

/// Refuses `source` unless the allow-list admits it.
pub(super) async fn check(
    allowed: &ModuleSourceAllowList,
    uri: &str,
    source: &Source,
) -> Result<(), FetchError> {
    let location = match source {
        Source::File(path) => file_location(path).await,
        Source::Http(url) => url_location(url),
        Source::Registry(reference) => Some(registry_location(reference)),
    };
    match location {
        Some(location) if allowed.allows(&location) => Ok(()),
        _ => Err(not_allowed(allowed, uri)),
    }
}

pub(super) fn not_allowed(allowed: &ModuleSourceAllowList, uri: &str) -> FetchError {
    FetchError::NotAllowed {
        uri: uri.to_owned(),
        allowed: allowed
            .patterns()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The location of an `http(s)` URL; `None` for other schemes.
pub(super) fn url_location(url: &Url) -> Option<ModuleLocation> {
    let scheme = match url.scheme() {
        "https" => SourceScheme::Https,
        "http" => SourceScheme::Http,
        _ => return None,
    };
    Some(ModuleLocation {
        scheme,
        host: Some(url.host_str()?.to_ascii_lowercase()),
        port: url.port(),
        path: url.path().to_owned(),
    })
}

fn registry_location(reference: &Reference) -> ModuleLocation {
    let registry = reference.registry();
    let (host, port) = registry
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host, Some(port.parse::<u16>().ok()?))))
        .unwrap_or((registry, None));
    ModuleLocation {
        scheme: SourceScheme::Registry,
        host: Some(host.to_ascii_lowercase()),
        port,
        path: format!("/{}", reference.repository()),
    }
}

/// The real path of a module file (symlinks resolved), so that a link in an
/// allowed directory pointing elsewhere is judged by where it points. A
/// path that does not resolve (a missing file) is judged lexically; the
/// fetch then fails on its own.
async fn file_location(path: &Path) -> Option<ModuleLocation> {
    let real = match tokio::fs::canonicalize(path).await {
        Ok(real) => real,
        Err(_) => lexically_normal(&std::path::absolute(path).ok()?),
    };
    Some(ModuleLocation {
        scheme: SourceScheme::File,
        host: None,
        port: None,
        path: real.to_str()?.to_owned(),
    })
}

fn lexically_normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_references_become_host_port_and_repository() {
        let reference: Reference = "127.0.0.1:5000/policies/x:v1".parse().unwrap();
        let location = registry_location(&reference);
        assert_eq!(location.host.as_deref(), Some("127.0.0.1"));
        assert_eq!(location.port, Some(5000));
        assert_eq!(location.path, "/policies/x");
        let reference: Reference = "ghcr.io/acme/p@sha256:0000000000000000000000000000000000000000000000000000000000000000"
            .parse()
            .unwrap();
        let location = registry_location(&reference);
        assert_eq!(location.host.as_deref(), Some("ghcr.io"));
        assert_eq!(location.path, "/acme/p");
    }

    #[test]
    fn parent_segments_are_resolved() {
        assert_eq!(
            lexically_normal(Path::new("/opt/policies/../../etc/x.wasm")),
            PathBuf::from("/etc/x.wasm")
        );
    }
}
