//! `hostCapabilities`: which host capabilities a policy may call.
//!
//! The patterns and their validation follow Kubewarden's policy-evaluator
//! exactly, so that a `policies.yml` written for Kubewarden grants the same
//! calls here: `*` grants everything; `oci/*` or `oci/v1/*` grant a subtree;
//! `oci/v1/verify` grants one operation. Every segment before a wildcard, and
//! every segment of an exact path, must name a known capability: a typo is a
//! load error for that policy instead of a silent denial at run time.

use std::collections::BTreeSet;
use std::fmt;

/// The capability tree: every callable `namespace/operation` path.
/// `tracing/log` is not in it: logging is never gated.
pub const KNOWN_CAPABILITIES: &[&str] = &[
    "oci/v1/verify",
    "oci/v1/manifest_digest",
    "oci/v1/oci_manifest",
    "oci/v1/oci_manifest_config",
    "oci/v2/verify",
    "net/v1/dns_lookup_host",
    "crypto/v1/is_certificate_trusted",
    "kubernetes/list_resources_by_namespace",
    "kubernetes/list_resources_all",
    "kubernetes/get_resource",
    "kubernetes/can_i",
];

/// Why a `hostCapabilities` pattern is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// An empty (or blank) pattern.
    #[error("hostCapabilities: an empty pattern is not allowed")]
    Empty,
    /// A `*` that is not a whole last segment (`oci*`, `oci/v1/oci_*`).
    #[error(
        "hostCapabilities: invalid wildcard in {pattern:?}: `*` must be the whole last segment, as in `oci/*`"
    )]
    InvalidWildcard {
        /// The pattern as written.
        pattern: String,
    },
    /// A segment that names no capability.
    #[error(
        "hostCapabilities: unknown segment {segment:?} in {pattern:?}{}",
        if valid.is_empty() { String::new() } else { format!(" (expected one of: {valid})") }
    )]
    UnknownSegment {
        /// The pattern as written.
        pattern: String,
        /// The first segment that is not known.
        segment: String,
        /// The known segments at that position, comma separated.
        valid: String,
    },
    /// A path that stops at a namespace or version instead of an operation.
    #[error("hostCapabilities: {pattern:?} names no single capability; did you mean {pattern}/* ?")]
    Incomplete {
        /// The pattern as written.
        pattern: String,
    },
}

/// The host capabilities granted to one policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CapabilityGrants {
    /// Nothing is granted: the default, as with Kubewarden's policy-server.
    #[default]
    DenyAll,
    /// `*`: everything is granted.
    AllowAll,
    /// Some subtrees and some exact paths.
    Patterns {
        /// `oci/` for `oci/*`, `oci/v1/` for `oci/v1/*`.
        prefixes: BTreeSet<String>,
        /// Exact `namespace/operation` paths.
        exact: BTreeSet<String>,
    },
}

impl CapabilityGrants {
    /// Parses and validates `patterns`. As upstream, a `*` anywhere grants
    /// everything and the other patterns are not looked at.
    pub fn new<I, S>(patterns: I) -> Result<Self, GrantError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut prefixes = BTreeSet::new();
        let mut exact = BTreeSet::new();
        for pattern in patterns {
            let original = pattern.as_ref();
            let trimmed = original.trim();
            if trimmed.is_empty() {
                return Err(GrantError::Empty);
            }
            if trimmed == "*" {
                return Ok(Self::AllowAll);
            }
            if let Some(position) = trimmed.find('*') {
                if position != trimmed.len() - 1 || !trimmed[..position].ends_with('/') {
                    return Err(GrantError::InvalidWildcard {
                        pattern: original.to_string(),
                    });
                }
                validate(trimmed)?;
                prefixes.insert(trimmed[..position].to_string());
            } else {
                validate(trimmed)?;
                exact.insert(trimmed.to_string());
            }
        }
        if prefixes.is_empty() && exact.is_empty() {
            Ok(Self::DenyAll)
        } else {
            Ok(Self::Patterns { prefixes, exact })
        }
    }

    /// Whether `namespace/operation` is granted.
    pub fn is_granted(&self, namespace: &str, operation: &str) -> bool {
        match self {
            Self::AllowAll => true,
            Self::DenyAll => false,
            Self::Patterns { prefixes, exact } => {
                let path = format!("{namespace}/{operation}");
                exact.contains(&path) || prefixes.iter().any(|p| path.starts_with(p.as_str()))
            }
        }
    }
}

impl fmt::Display for CapabilityGrants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AllowAll => f.write_str("[*]"),
            Self::DenyAll => f.write_str("[]"),
            Self::Patterns { prefixes, exact } => {
                let items: Vec<String> = prefixes
                    .iter()
                    .map(|p| format!("{p}*"))
                    .chain(exact.iter().cloned())
                    .collect();
                write!(f, "[{}]", items.join(", "))
            }
        }
    }
}

/// Checks a pattern (`a/b/c` or `a/b/*`) against [`KNOWN_CAPABILITIES`].
fn validate(pattern: &str) -> Result<(), GrantError> {
    let segments: Vec<&str> = pattern.split('/').collect();
    for (depth, segment) in segments.iter().enumerate() {
        if *segment == "*" {
            // The syntax check put it last; its parent is a known node.
            return Ok(());
        }
        let prefix = &segments[..depth];
        let children = children_of(prefix);
        if !children.contains(segment) {
            return Err(GrantError::UnknownSegment {
                pattern: pattern.to_string(),
                segment: (*segment).to_string(),
                valid: children.into_iter().collect::<Vec<_>>().join(", "),
            });
        }
        let path = segments[..=depth].join("/");
        let is_leaf = KNOWN_CAPABILITIES.contains(&path.as_str());
        let is_last = depth == segments.len() - 1;
        if is_leaf && !is_last {
            return Err(GrantError::UnknownSegment {
                pattern: pattern.to_string(),
                segment: segments[depth + 1].to_string(),
                valid: String::new(),
            });
        }
        if !is_leaf && is_last {
            return Err(GrantError::Incomplete {
                pattern: pattern.to_string(),
            });
        }
    }
    Ok(())
}

/// The known segments directly below `prefix` in the capability tree.
fn children_of(prefix: &[&str]) -> BTreeSet<&'static str> {
    KNOWN_CAPABILITIES
        .iter()
        .filter_map(|path| {
            let segments: Vec<&'static str> = path.split('/').collect();
            (segments.len() > prefix.len() && segments[..prefix.len()] == *prefix)
                .then(|| segments[prefix.len()])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn granted(patterns: &[&str], namespace: &str, operation: &str) -> bool {
        CapabilityGrants::new(patterns)
            .unwrap()
            .is_granted(namespace, operation)
    }

    #[test]
    fn matching_as_upstream() {
        assert!(!granted(&[], "oci", "v1/verify"));
        assert!(granted(&["*"], "kubernetes", "can_i"));
        assert!(granted(&["oci/v1/verify"], "oci", "v1/verify"));
        assert!(!granted(&["oci/v1/verify"], "oci", "v2/verify"));
        assert!(granted(&["oci/*"], "oci", "v2/verify"));
        assert!(granted(&["oci/*"], "oci", "v1/manifest_digest"));
        assert!(!granted(&["oci/*"], "net", "v1/dns_lookup_host"));
        assert!(granted(&["oci/v2/*"], "oci", "v2/verify"));
        assert!(!granted(&["oci/v2/*"], "oci", "v1/verify"));
        assert!(granted(
            &["oci/*", "kubernetes/can_i"],
            "kubernetes",
            "can_i"
        ));
        assert!(!granted(
            &["oci/*", "kubernetes/can_i"],
            "net",
            "v1/dns_lookup_host"
        ));
        assert!(granted(&["kubernetes/*"], "kubernetes", "get_resource"));
        assert!(granted(
            &["crypto/*"],
            "crypto",
            "v1/is_certificate_trusted"
        ));
    }

    #[test]
    fn every_known_capability_parses_exactly_and_by_namespace() {
        for path in KNOWN_CAPABILITIES {
            let (namespace, operation) = path.split_once('/').unwrap();
            assert!(granted(&[path], namespace, operation), "{path}");
            let wildcard = format!("{namespace}/*");
            assert!(
                granted(&[wildcard.as_str()], namespace, operation),
                "{path}"
            );
        }
    }

    #[test]
    fn star_wins_over_anything_else() {
        assert_eq!(
            CapabilityGrants::new(["*", "oci/*", "kubernetes/can_i"]).unwrap(),
            CapabilityGrants::AllowAll
        );
        assert_eq!(
            CapabilityGrants::new(Vec::<String>::new()).unwrap(),
            CapabilityGrants::DenyAll
        );
    }

    #[test]
    fn invalid_patterns_are_load_errors() {
        for bad in ["oci*", "oci/v1/oci_*", "*/oci", "", "  "] {
            let err = CapabilityGrants::new([bad]).unwrap_err();
            assert!(
                matches!(err, GrantError::Empty | GrantError::InvalidWildcard { .. }),
                "{bad:?}: {err}"
            );
        }
        for bad in [
            "unknown/v1/op",
            "oci/v99/verify",
            "oci/v1/nonexistent",
            "kubernetes/nonexistent",
            "unknown/*",
            "oci/v99/*",
            "kubernetes/can_i/x",
        ] {
            let err = CapabilityGrants::new([bad]).unwrap_err();
            assert!(
                matches!(err, GrantError::UnknownSegment { .. }),
                "{bad:?}: {err}"
            );
        }
        for bad in ["oci", "oci/v1", "net", "kubernetes"] {
            let err = CapabilityGrants::new([bad]).unwrap_err();
            assert!(
                matches!(err, GrantError::Incomplete { .. }),
                "{bad:?}: {err}"
            );
            assert!(err.to_string().contains(&format!("{bad}/*")), "{err}");
        }
        let err = CapabilityGrants::new(["oci/v99/verify"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("v1") && err.contains("v2"), "{err}");
    }

    #[test]
    fn display() {
        assert_eq!(CapabilityGrants::AllowAll.to_string(), "[*]");
        assert_eq!(CapabilityGrants::DenyAll.to_string(), "[]");
        let grants = CapabilityGrants::new(["kubernetes/can_i", "oci/*"]).unwrap();
        assert_eq!(grants.to_string(), "[oci/*, kubernetes/can_i]");
    }
}
