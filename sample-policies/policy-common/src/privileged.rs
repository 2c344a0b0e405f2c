//! The pod-privileged policy: reject Pods that run a privileged container.

use serde::Deserialize;

/// The policy's settings. Unknown keys are rejected.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Do not check `spec.initContainers`.
    pub skip_init_containers: bool,
    /// Do not check `spec.ephemeralContainers`.
    pub skip_ephemeral_containers: bool,
}

/// Which containers of a Pod are privileged, by kind of container.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Findings {
    /// Names of privileged `spec.containers`.
    pub containers: Vec<String>,
    /// Names of privileged `spec.initContainers`.
    pub init_containers: Vec<String>,
    /// Names of privileged `spec.ephemeralContainers`.
    pub ephemeral_containers: Vec<String>,
}

/// The container lists of a Pod as `(name, privileged)` pairs, whatever types
/// the caller parsed the Pod with.
pub fn findings<'a>(
    settings: &Settings,
    containers: impl IntoIterator<Item = (&'a str, bool)>,
    init_containers: impl IntoIterator<Item = (&'a str, bool)>,
    ephemeral_containers: impl IntoIterator<Item = (&'a str, bool)>,
) -> Findings {
    fn privileged<'a>(it: impl IntoIterator<Item = (&'a str, bool)>) -> Vec<String> {
        it.into_iter()
            .filter(|(_, p)| *p)
            .map(|(n, _)| n.to_string())
            .collect()
    }
    Findings {
        containers: privileged(containers),
        init_containers: if settings.skip_init_containers {
            Vec::new()
        } else {
            privileged(init_containers)
        },
        ephemeral_containers: if settings.skip_ephemeral_containers {
            Vec::new()
        } else {
            privileged(ephemeral_containers)
        },
    }
}

impl Findings {
    /// The rejection message, or `None` when nothing is privileged.
    ///
    /// One clause per kind of container, `"; "`-separated, each naming the
    /// containers `", "`-separated, for example
    /// `Privileged container is not allowed: sidecar` or
    /// `Privileged container is not allowed: a, b; Privileged init container is not allowed: init`.
    pub fn message(&self) -> Option<String> {
        let mut clauses = Vec::new();
        for (what, names) in [
            ("container", &self.containers),
            ("init container", &self.init_containers),
            ("ephemeral container", &self.ephemeral_containers),
        ] {
            if !names.is_empty() {
                clauses.push(format!(
                    "Privileged {what} is not allowed: {}",
                    names.join(", ")
                ));
            }
        }
        if clauses.is_empty() {
            None
        } else {
            Some(clauses.join("; "))
        }
    }
}

/// The status code of a rejection. The waPC and the component builds both send
/// no code (Kubewarden's pod-privileged policy does the same), so the host's
/// default applies.
pub const REJECTION_CODE: Option<u16> = None;

/// A Pod reduced to the fields this policy reads (the component build parses
/// with this to stay small; the waPC build uses k8s-openapi).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PodLite {
    /// `spec`.
    pub spec: PodSpecLite,
}

/// The container lists of a Pod spec.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PodSpecLite {
    /// `spec.containers`.
    #[serde(deserialize_with = "null_as_default")]
    pub containers: Vec<ContainerLite>,
    /// `spec.initContainers`.
    #[serde(deserialize_with = "null_as_default")]
    pub init_containers: Vec<ContainerLite>,
    /// `spec.ephemeralContainers`.
    #[serde(deserialize_with = "null_as_default")]
    pub ephemeral_containers: Vec<ContainerLite>,
}

/// A container: its name and security context.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ContainerLite {
    /// `name`.
    pub name: String,
    /// `securityContext`.
    #[serde(deserialize_with = "null_as_default")]
    pub security_context: SecurityContextLite,
}

/// The part of a security context this policy reads.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SecurityContextLite {
    /// `privileged`.
    #[serde(deserialize_with = "null_as_default")]
    pub privileged: bool,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl PodLite {
    /// The findings for this Pod.
    pub fn findings(&self, settings: &Settings) -> Findings {
        fn pairs(v: &[ContainerLite]) -> impl Iterator<Item = (&str, bool)> {
            v.iter()
                .map(|c| (c.name.as_str(), c.security_context.privileged))
        }
        findings(
            settings,
            pairs(&self.spec.containers),
            pairs(&self.spec.init_containers),
            pairs(&self.spec.ephemeral_containers),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: &str) -> PodLite {
        serde_json::from_str(json).unwrap()
    }

    const MIXED: &str = r#"{"spec":{
        "containers":[{"name":"nginx"},{"name":"sidecar","securityContext":{"privileged":true}},
                      {"name":"other","securityContext":{"privileged":false}}],
        "initContainers":[{"name":"init","securityContext":{"privileged":true}}],
        "ephemeralContainers":[{"name":"debug","securityContext":{"privileged":true}}]}}"#;

    #[test]
    fn single_privileged_container() {
        let p = pod(
            r#"{"spec":{"containers":[{"name":"nginx"},{"name":"sidecar","securityContext":{"privileged":true}}]}}"#,
        );
        assert_eq!(
            p.findings(&Settings::default()).message().as_deref(),
            Some("Privileged container is not allowed: sidecar")
        );
    }

    #[test]
    fn all_kinds() {
        assert_eq!(
            pod(MIXED)
                .findings(&Settings::default())
                .message()
                .as_deref(),
            Some(
                "Privileged container is not allowed: sidecar; \
                 Privileged init container is not allowed: init; \
                 Privileged ephemeral container is not allowed: debug"
            )
        );
    }

    #[test]
    fn skips() {
        let s = Settings {
            skip_init_containers: true,
            skip_ephemeral_containers: true,
        };
        assert_eq!(
            pod(MIXED).findings(&s).message().as_deref(),
            Some("Privileged container is not allowed: sidecar")
        );
        let only_init = pod(
            r#"{"spec":{"containers":[{"name":"a"}],"initContainers":[{"name":"i","securityContext":{"privileged":true}}]}}"#,
        );
        assert_eq!(only_init.findings(&s).message(), None);
        assert_eq!(
            only_init
                .findings(&Settings::default())
                .message()
                .as_deref(),
            Some("Privileged init container is not allowed: i")
        );
    }

    #[test]
    fn several_names() {
        let p = pod(
            r#"{"spec":{"containers":[{"name":"a","securityContext":{"privileged":true}},{"name":"b","securityContext":{"privileged":true}}]}}"#,
        );
        assert_eq!(
            p.findings(&Settings::default()).message().as_deref(),
            Some("Privileged container is not allowed: a, b")
        );
    }

    #[test]
    fn nulls_and_missing() {
        assert_eq!(pod("{}").findings(&Settings::default()).message(), None);
        assert_eq!(
            pod(r#"{"spec":{"containers":null,"initContainers":[{"name":"x","securityContext":null}],
                "ephemeralContainers":[{"name":"y","securityContext":{"privileged":null}}]}}"#)
            .findings(&Settings::default())
            .message(),
            None
        );
    }

    #[test]
    fn settings_parse() {
        let s: Settings = serde_json::from_str("{}").unwrap();
        assert_eq!(s, Settings::default());
        let s: Settings = serde_json::from_str(r#"{"skip_init_containers":true}"#).unwrap();
        assert!(s.skip_init_containers && !s.skip_ephemeral_containers);
        let e = serde_json::from_str::<Settings>(r#"{"skipInitContainers":true}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn fixtures() {
        // The reference requests of the repository (tests/fixtures/).
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures");
        let check = |file: &str, want: Option<&str>| {
            let path = format!("{dir}/{file}");
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read the fixture {path}: {e}"));
            let review: serde_json::Value = serde_json::from_str(&text).unwrap();
            let p: PodLite = serde_json::from_value(review["request"]["object"].clone()).unwrap();
            assert_eq!(
                p.findings(&Settings::default()).message().as_deref(),
                want,
                "{file}"
            );
        };
        check("pod-unprivileged.json", None);
        check(
            "pod-privileged.json",
            Some("Privileged container is not allowed: sidecar"),
        );
        check("pod-no-labels.json", None);
        check(
            "pod-init-privileged.json",
            Some("Privileged init container is not allowed: setup"),
        );
    }
}
