//! `allowed_module_sources`: the operator's allow-list of where policy
//! modules may come from (a Portcullis extension of `sources.yml`).
//!
//! Each entry is a URI prefix:
//!
//! | Pattern | Allows |
//! |---|---|
//! | `registry://ghcr.io/acme/` | OCI references on `ghcr.io` whose repository is under `acme/` (`ghcr.io/acme/policies/x:v1`, also written without `registry://`) |
//! | `registry://registry.local:5000` | every repository of that registry (the port is part of the host) |
//! | `registry://*.acme.example/` | every registry on a subdomain of `acme.example` (not `acme.example` itself) |
//! | `https://policies.example.com/wasm/` | `https://` downloads from that host under `/wasm/` |
//! | `http://mirror.local:8080/` | plain-HTTP downloads from that host (still subject to `insecure_sources`) |
//! | `file:///opt/policies/` | local files whose real path (symlinks resolved) is under `/opt/policies/` |
//!
//! Rules:
//! - the scheme must be equal (`registry`, `https`, `http` or `file`); a
//!   bare reference such as `ghcr.io/acme/p:v1` is a `registry://` source;
//! - the host is compared case-insensitively, exactly, or as a subdomain for
//!   a leading `*.`; a pattern without a port matches only the scheme's
//!   default port (no port written, or 443 for `https`, 80 for `http`);
//! - the path is a prefix that ends on a `/` boundary: `registry://ghcr.io/acme`
//!   allows `ghcr.io/acme/x` and not `ghcr.io/acme-evil/x`. For a registry the
//!   path is the repository (the tag or digest plays no part);
//! - a URL path holding an encoded `/`, `\` or `.` (`%2F`, `%5C`, `%2E`)
//!   matches no pattern that has a path.
//!
//! Absent: every source is allowed. Present but empty: no source is.

use std::fmt;

/// A URI scheme of a module source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceScheme {
    /// `registry://` (OCI artifacts).
    Registry,
    /// `https://`.
    Https,
    /// `http://`.
    Http,
    /// `file://`.
    File,
}

impl SourceScheme {
    fn parse(text: &str) -> Option<Self> {
        Some(match text.to_ascii_lowercase().as_str() {
            "registry" => Self::Registry,
            "https" => Self::Https,
            "http" => Self::Http,
            "file" => Self::File,
            _ => return None,
        })
    }

    fn default_port(self) -> Option<u16> {
        match self {
            Self::Https => Some(443),
            Self::Http => Some(80),
            Self::Registry | Self::File => None,
        }
    }

    /// The scheme's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Registry => "registry",
            Self::Https => "https",
            Self::Http => "http",
            Self::File => "file",
        }
    }
}

/// Where a module comes from, normalised by the fetcher: what a
/// [`ModuleSourcePattern`] is matched against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleLocation {
    /// The scheme.
    pub scheme: SourceScheme,
    /// The host, lower case (`None` for files).
    pub host: Option<String>,
    /// The port, when one is written.
    pub port: Option<u16>,
    /// `/repository` for registries, the URL path for http(s), the real
    /// absolute path for files.
    pub path: String,
}

/// One parsed `allowed_module_sources` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSourcePattern {
    text: String,
    scheme: SourceScheme,
    host: HostPattern,
    port: Option<u16>,
    /// Without a trailing `/`; empty for "any path".
    path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// `file://` patterns have no host.
    None,
    Exact(String),
    /// `*.suffix`: strict subdomains of `suffix`.
    Subdomains(String),
}

impl fmt::Display for ModuleSourcePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl ModuleSourcePattern {
    /// Parses a pattern (see the module docs); the error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        let (scheme, rest) = trimmed.split_once("://").ok_or_else(|| {
            "expected a URI prefix with a scheme (registry://, https://, http:// or file://)"
                .to_string()
        })?;
        let scheme = SourceScheme::parse(scheme).ok_or_else(|| {
            format!("unsupported scheme {scheme:?}: use registry, https, http or file")
        })?;
        if rest.contains(['?', '#', '@', '\\']) || rest.chars().any(char::is_whitespace) {
            return Err("a pattern has no query, fragment, user or backslash".to_string());
        }
        let (authority, path) = match scheme {
            SourceScheme::File => ("", rest),
            _ => match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            },
        };
        let (host, port) = match scheme {
            SourceScheme::File => {
                if !path.starts_with('/') {
                    return Err("a file:// pattern needs an absolute path (file:///dir/)".into());
                }
                (HostPattern::None, None)
            }
            _ => parse_authority(authority)?,
        };
        if path
            .split('/')
            .any(|segment| segment == "." || segment == "..")
        {
            return Err("a pattern's path has no . or .. segments".to_string());
        }
        if path.contains('*') {
            return Err("a wildcard is only allowed as the first label of the host (*.)".into());
        }
        let path = path.trim_end_matches('/').to_string();
        Ok(Self {
            text: trimmed.to_string(),
            scheme,
            host,
            port,
            path,
        })
    }

    /// Whether `location` is allowed by this pattern.
    pub fn matches(&self, location: &ModuleLocation) -> bool {
        if location.scheme != self.scheme {
            return false;
        }
        let host_ok = match (&self.host, location.host.as_deref()) {
            (HostPattern::None, None) => true,
            (HostPattern::Exact(h), Some(host)) => host.eq_ignore_ascii_case(h),
            (HostPattern::Subdomains(suffix), Some(host)) => {
                let host = host.to_ascii_lowercase();
                // `suffix` is `.domain`: something must come before it.
                host.strip_suffix(suffix.as_str())
                    .is_some_and(|labels| !labels.is_empty() && !labels.ends_with('.'))
            }
            _ => false,
        };
        if !host_ok {
            return false;
        }
        let default = self.scheme.default_port();
        let port_ok = match self.port {
            Some(port) => location.port.or(default) == Some(port),
            None => location.port.is_none() || location.port == default,
        };
        if !port_ok {
            return false;
        }
        if self.path.is_empty() {
            return true;
        }
        if has_encoded_separator(&location.path) {
            return false;
        }
        location.path == self.path
            || location
                .path
                .strip_prefix(self.path.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

fn parse_authority(authority: &str) -> Result<(HostPattern, Option<u16>), String> {
    if authority.is_empty() {
        return Err("missing host".to_string());
    }
    if authority.starts_with('[') {
        return Err("IPv6 literals are not supported in patterns".to_string());
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => {
            let port = port
                .parse::<u16>()
                .map_err(|_| format!("invalid port {port:?}"))?;
            (host, Some(port))
        }
        None => (authority, None),
    };
    let host = host.to_ascii_lowercase();
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(name) => (true, name),
        None => (false, host.as_str()),
    };
    let valid = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if !valid {
        return Err(format!(
            "invalid host {host:?}: expected a DNS name or IPv4 address, optionally starting with *."
        ));
    }
    Ok((
        if wildcard {
            HostPattern::Subdomains(format!(".{name}"))
        } else {
            HostPattern::Exact(name.to_string())
        },
        port,
    ))
}

fn has_encoded_separator(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    ["%2f", "%5c", "%2e"].iter().any(|e| lower.contains(e))
}

/// A parsed `allowed_module_sources` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSourceAllowList {
    patterns: Vec<ModuleSourcePattern>,
}

impl ModuleSourceAllowList {
    /// Parses every entry; the error names the first bad one.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        let patterns = entries
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                ModuleSourcePattern::parse(entry.as_ref())
                    .map_err(|e| format!("allowed_module_sources[{i}] {:?}: {e}", entry.as_ref()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { patterns })
    }

    /// Whether some pattern allows `location`.
    pub fn allows(&self, location: &ModuleLocation) -> bool {
        self.patterns.iter().any(|p| p.matches(location))
    }

    /// The patterns, for messages.
    pub fn patterns(&self) -> &[ModuleSourcePattern] {
        &self.patterns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(host: &str, port: Option<u16>, repo: &str) -> ModuleLocation {
        ModuleLocation {
            scheme: SourceScheme::Registry,
            host: Some(host.into()),
            port,
            path: format!("/{repo}"),
        }
    }

    fn web(scheme: SourceScheme, host: &str, port: Option<u16>, path: &str) -> ModuleLocation {
        ModuleLocation {
            scheme,
            host: Some(host.into()),
            port,
            path: path.into(),
        }
    }

    fn file(path: &str) -> ModuleLocation {
        ModuleLocation {
            scheme: SourceScheme::File,
            host: None,
            port: None,
            path: path.into(),
        }
    }

    fn pattern(text: &str) -> ModuleSourcePattern {
        ModuleSourcePattern::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn registry_prefixes_stop_at_path_boundaries() {
        let p = pattern("registry://ghcr.io/acme/");
        assert!(p.matches(&registry("ghcr.io", None, "acme/policies/x")));
        assert!(p.matches(&registry("GHCR.io", None, "acme/x")));
        assert!(p.matches(&registry("ghcr.io", None, "acme")));
        assert!(!p.matches(&registry("ghcr.io", None, "acme-evil/x")));
        assert!(!p.matches(&registry("ghcr.io", None, "other/acme/x")));
        assert!(!p.matches(&registry("ghcr.io.evil.com", None, "acme/x")));
        assert!(!p.matches(&registry("ghcr.io", Some(5000), "acme/x")));
        let no_slash = pattern("registry://ghcr.io/acme");
        assert!(no_slash.matches(&registry("ghcr.io", None, "acme/x")));
        assert!(!no_slash.matches(&registry("ghcr.io", None, "acmes/x")));
        let whole = pattern("registry://registry.local:5000");
        assert!(whole.matches(&registry("registry.local", Some(5000), "any/thing")));
        assert!(!whole.matches(&registry("registry.local", None, "any/thing")));
        assert!(!whole.matches(&registry("registry.local", Some(5001), "any")));
    }

    #[test]
    fn host_wildcards_match_strict_subdomains() {
        let p = pattern("registry://*.acme.example/");
        assert!(p.matches(&registry("eu.acme.example", None, "x")));
        assert!(p.matches(&registry("a.b.acme.example", None, "x")));
        assert!(!p.matches(&registry("acme.example", None, "x")));
        assert!(!p.matches(&registry("evilacme.example", None, "x")));
    }

    #[test]
    fn web_sources_need_the_same_scheme_and_port() {
        let p = pattern("https://policies.example.com/wasm/");
        assert!(p.matches(&web(
            SourceScheme::Https,
            "policies.example.com",
            None,
            "/wasm/p.wasm"
        )));
        assert!(p.matches(&web(
            SourceScheme::Https,
            "policies.example.com",
            Some(443),
            "/wasm/p.wasm"
        )));
        assert!(!p.matches(&web(
            SourceScheme::Https,
            "policies.example.com",
            Some(8443),
            "/wasm/p.wasm"
        )));
        assert!(!p.matches(&web(
            SourceScheme::Http,
            "policies.example.com",
            None,
            "/wasm/p.wasm"
        )));
        assert!(!p.matches(&web(
            SourceScheme::Https,
            "policies.example.com",
            None,
            "/wasm/..%2Fsecret.wasm"
        )));
        assert!(!p.matches(&web(
            SourceScheme::Https,
            "policies.example.com",
            None,
            "/wasmx/p.wasm"
        )));
    }

    #[test]
    fn file_patterns_are_directories() {
        let p = pattern("file:///opt/policies/");
        assert!(p.matches(&file("/opt/policies/a.wasm")));
        assert!(p.matches(&file("/opt/policies/sub/a.wasm")));
        assert!(!p.matches(&file("/opt/policies-evil/a.wasm")));
        assert!(!p.matches(&file("/etc/passwd")));
        assert!(!p.matches(&registry("opt", None, "policies/a")));
    }

    #[test]
    fn bad_patterns_are_rejected_with_a_reason() {
        for (bad, why) in [
            ("ghcr.io/acme", "scheme"),
            ("ftp://h/", "unsupported scheme"),
            ("registry://", "missing host"),
            ("registry://h:99999/", "port"),
            ("registry://a.*.b/", "invalid host"),
            ("https://h/a/*/b", "wildcard"),
            ("https://u@h/", "user"),
            ("https://h/a/../b", ".."),
            ("file://relative/dir", "absolute"),
            ("registry://[::1]:5000/", "IPv6"),
        ] {
            let err = ModuleSourcePattern::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let err = ModuleSourceAllowList::parse(&["registry://ok/", "nope"]).unwrap_err();
        assert!(err.contains("allowed_module_sources[1] \"nope\""), "{err}");
    }

    #[test]
    fn an_empty_list_allows_nothing() {
        let list = ModuleSourceAllowList::parse::<&str>(&[]).unwrap();
        assert!(!list.allows(&registry("ghcr.io", None, "x")));
    }
}
