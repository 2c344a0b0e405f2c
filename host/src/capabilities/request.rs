//! The requests a policy makes to the host, decoded from the wire.
//!
//! Policies send Kubewarden's payloads (the `kubewarden-policy-sdk` request
//! types, as JSON) under a namespace and an operation. They are decoded here
//! into [`CallbackRequestType`], the same enum, with the same variant and
//! field names, that Kubewarden's policy-evaluator uses and that `kwctl`
//! writes into its recorded sessions: a session file is a list of these
//! requests serialised as YAML, so matching the enum is what makes sessions
//! recorded by kwctl replay here unchanged, and the reverse.

use std::collections::{BTreeMap, BTreeSet};

use portcullis_adapters::CapabilityError;
use serde::{Deserialize, Serialize};

/// A keyless signature: the OIDC issuer and the exact subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeylessInfo {
    /// OIDC issuer, e.g. `https://token.actions.githubusercontent.com`.
    pub issuer: String,
    /// The signer's identity, e.g. an email address.
    pub subject: String,
}

/// A keyless signature whose subject starts with a URL prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeylessPrefixInfo {
    /// OIDC issuer.
    pub issuer: String,
    /// The prefix the subject (a URL) must start with.
    pub url_prefix: String,
}

/// `kubernetes/can_i`: the SubjectAccessReview to ask for (SDK `CanIRequest`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CanIRequest {
    /// Who wants to do what.
    pub subject_access_review: SubjectAccessReview,
    /// Ask the API server even if a recent answer is cached.
    #[serde(default)]
    pub disable_cache: bool,
}

/// The subject and the action of a SubjectAccessReview.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SubjectAccessReview {
    /// The groups of the user.
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    /// The action on a resource.
    pub resource_attributes: ResourceAttributes,
    /// The user, e.g. `system:serviceaccount:ns:name`.
    pub user: String,
}

/// The action of a SubjectAccessReview.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ResourceAttributes {
    /// API group; none or empty for the core group.
    #[serde(default)]
    pub group: Option<String>,
    /// A single object's name.
    #[serde(default)]
    pub name: Option<String>,
    /// The namespace; none for cluster-scoped checks.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Plural resource name, e.g. `pods`.
    pub resource: String,
    /// A sub-resource, e.g. `exec`.
    #[serde(default)]
    pub subresource: Option<String>,
    /// The verb, e.g. `create`.
    pub verb: String,
    /// API version.
    #[serde(default)]
    pub version: Option<String>,
}

/// A certificate as sent by the SDK: PEM or DER bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// How `data` is encoded.
    pub encoding: CertificateEncoding,
    /// The certificate (a JSON array of bytes on the wire).
    pub data: Vec<u8>,
}

/// The encoding of a [`Certificate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CertificateEncoding {
    /// DER bytes.
    Der,
    /// PEM text.
    Pem,
}

/// `crypto/v1/is_certificate_trusted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateVerificationRequest {
    /// The certificate to check.
    pub cert: Certificate,
    /// Intermediates, then the root last; none means Mozilla's roots.
    #[serde(default)]
    pub cert_chain: Option<Vec<Certificate>>,
    /// The time (RFC 3339) to check validity at; none (or empty) means now.
    #[serde(default)]
    pub not_after: Option<String>,
}

/// `oci/v1/verify`: Kubewarden's first, externally tagged, verification input.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum SigstoreVerificationInputV1 {
    SigstorePubKeyVerify {
        image: String,
        pub_keys: Vec<String>,
        annotations: Option<BTreeMap<String, String>>,
    },
    SigstoreKeylessVerify {
        image: String,
        keyless: Vec<KeylessInfo>,
        annotations: Option<BTreeMap<String, String>>,
    },
}

/// `oci/v2/verify`: the internally tagged verification input. The variant
/// names are the wire's.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
enum SigstoreVerificationInputV2 {
    SigstorePubKeyVerify {
        image: String,
        pub_keys: Vec<String>,
        annotations: Option<BTreeMap<String, String>>,
    },
    SigstoreKeylessVerify {
        image: String,
        keyless: Vec<KeylessInfo>,
        annotations: Option<BTreeMap<String, String>>,
    },
    SigstoreKeylessPrefixVerify {
        image: String,
        keyless_prefix: Vec<KeylessPrefixInfo>,
        annotations: Option<BTreeMap<String, String>>,
    },
    SigstoreGithubActionsVerify {
        image: String,
        owner: String,
        repo: Option<String>,
        annotations: Option<BTreeMap<String, String>>,
    },
    SigstoreCertificateVerify {
        image: String,
        certificate: Vec<u8>,
        certificate_chain: Option<Vec<Vec<u8>>>,
        require_rekor_bundle: bool,
        annotations: Option<BTreeMap<String, String>>,
    },
}

/// A request that goes to the cluster, a registry or the network, as named
/// by Kubewarden (`policy-evaluator` `CallbackRequestType`). Session files
/// record these.
#[allow(missing_docs)] // Field meanings are those of the SDK request types above.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallbackRequestType {
    OciManifestDigest {
        image: String,
    },
    OciManifest {
        image: String,
    },
    OciManifestAndConfig {
        image: String,
    },
    SigstorePubKeyVerify {
        image: String,
        pub_keys: Vec<String>,
        annotations: Option<BTreeMap<String, String>>,
    },
    SigstoreKeylessVerify {
        image: String,
        keyless: Vec<KeylessInfo>,
        annotations: Option<BTreeMap<String, String>>,
    },
    SigstoreKeylessPrefixVerify {
        image: String,
        keyless_prefix: Vec<KeylessPrefixInfo>,
        annotations: Option<BTreeMap<String, String>>,
    },
    SigstoreGithubActionsVerify {
        image: String,
        owner: String,
        repo: Option<String>,
        annotations: Option<BTreeMap<String, String>>,
    },
    SigstoreCertificateVerify {
        image: String,
        certificate: Vec<u8>,
        certificate_chain: Option<Vec<Vec<u8>>>,
        require_rekor_bundle: bool,
        annotations: Option<BTreeMap<String, String>>,
    },
    DNSLookupHost {
        host: String,
    },
    KubernetesListResourceNamespace {
        api_version: String,
        kind: String,
        namespace: String,
        label_selector: Option<String>,
        field_selector: Option<String>,
        #[serde(default)]
        field_masks: Option<BTreeSet<String>>,
    },
    KubernetesListResourceAll {
        api_version: String,
        kind: String,
        label_selector: Option<String>,
        field_selector: Option<String>,
        #[serde(default)]
        field_masks: Option<BTreeSet<String>>,
    },
    KubernetesGetResource {
        api_version: String,
        kind: String,
        name: String,
        namespace: Option<String>,
        disable_cache: bool,
        #[serde(default)]
        field_masks: Option<BTreeSet<String>>,
    },
    KubernetesCanI {
        request: CanIRequest,
        disable_cache: bool,
    },
}

impl CallbackRequestType {
    /// The Kubernetes resource type a list or get request reads, if any:
    /// the calls checked against `contextAwareResources`.
    pub fn kubernetes_resource(&self) -> Option<(&str, &str)> {
        match self {
            Self::KubernetesListResourceNamespace {
                api_version, kind, ..
            }
            | Self::KubernetesListResourceAll {
                api_version, kind, ..
            }
            | Self::KubernetesGetResource {
                api_version, kind, ..
            } => Some((api_version, kind)),
            _ => None,
        }
    }
}

/// Every host request a policy can make (logging aside).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRequest {
    /// Answered from outside the process: the cluster, a registry, DNS.
    Callback(CallbackRequestType),
    /// Answered by a pure computation, so never recorded (as with kwctl).
    CertificateTrust(CertificateVerificationRequest),
}

impl HostRequest {
    /// Decodes the `payload` a policy sent to `namespace`/`operation`.
    pub fn decode(
        namespace: &str,
        operation: &str,
        payload: &[u8],
    ) -> Result<Self, CapabilityError> {
        use CallbackRequestType as R;
        let bad = |e: serde_json::Error| {
            CapabilityError::Failed(format!(
                "{namespace}/{operation}: malformed request payload: {e}"
            ))
        };
        let callback = match (namespace, operation) {
            ("oci", "v1/verify") => serde_json::from_slice::<SigstoreVerificationInputV1>(payload)
                .map_err(bad)?
                .into(),
            ("oci", "v2/verify") => serde_json::from_slice::<SigstoreVerificationInputV2>(payload)
                .map_err(bad)?
                .into(),
            ("oci", "v1/manifest_digest") => R::OciManifestDigest {
                image: serde_json::from_slice(payload).map_err(bad)?,
            },
            ("oci", "v1/oci_manifest") => R::OciManifest {
                image: serde_json::from_slice(payload).map_err(bad)?,
            },
            ("oci", "v1/oci_manifest_config") => R::OciManifestAndConfig {
                image: serde_json::from_slice(payload).map_err(bad)?,
            },
            ("net", "v1/dns_lookup_host") => R::DNSLookupHost {
                host: serde_json::from_slice(payload).map_err(bad)?,
            },
            ("crypto", "v1/is_certificate_trusted") => {
                let mut request: CertificateVerificationRequest =
                    serde_json::from_slice(payload).map_err(bad)?;
                // The SDK sends "" for "now".
                request.not_after = request.not_after.filter(|s| !s.is_empty());
                return Ok(Self::CertificateTrust(request));
            }
            ("kubernetes", "list_resources_by_namespace") => {
                let r: ListByNamespace = serde_json::from_slice(payload).map_err(bad)?;
                R::KubernetesListResourceNamespace {
                    api_version: r.api_version,
                    kind: r.kind,
                    namespace: r.namespace,
                    label_selector: r.label_selector,
                    field_selector: r.field_selector,
                    field_masks: r.field_masks,
                }
            }
            ("kubernetes", "list_resources_all") => {
                let r: ListAll = serde_json::from_slice(payload).map_err(bad)?;
                R::KubernetesListResourceAll {
                    api_version: r.api_version,
                    kind: r.kind,
                    label_selector: r.label_selector,
                    field_selector: r.field_selector,
                    field_masks: r.field_masks,
                }
            }
            ("kubernetes", "get_resource") => {
                let r: Get = serde_json::from_slice(payload).map_err(bad)?;
                R::KubernetesGetResource {
                    api_version: r.api_version,
                    kind: r.kind,
                    name: r.name,
                    namespace: r.namespace,
                    disable_cache: r.disable_cache,
                    field_masks: r.field_masks,
                }
            }
            ("kubernetes", "can_i") => {
                let request: CanIRequest = serde_json::from_slice(payload).map_err(bad)?;
                R::KubernetesCanI {
                    disable_cache: request.disable_cache,
                    request,
                }
            }
            ("oci" | "net" | "crypto" | "kubernetes", _) => {
                return Err(CapabilityError::Failed(format!(
                    "unknown operation {operation:?} in host capability namespace {namespace:?}"
                )));
            }
            _ => {
                return Err(CapabilityError::Failed(format!(
                    "unknown host capability namespace {namespace:?}"
                )));
            }
        };
        Ok(Self::Callback(callback))
    }
}

/// SDK `ListResourcesByNamespaceRequest`.
#[derive(Deserialize)]
struct ListByNamespace {
    api_version: String,
    kind: String,
    namespace: String,
    #[serde(default)]
    label_selector: Option<String>,
    #[serde(default)]
    field_selector: Option<String>,
    #[serde(default)]
    field_masks: Option<BTreeSet<String>>,
}

/// SDK `ListAllResourcesRequest`.
#[derive(Deserialize)]
struct ListAll {
    api_version: String,
    kind: String,
    #[serde(default)]
    label_selector: Option<String>,
    #[serde(default)]
    field_selector: Option<String>,
    #[serde(default)]
    field_masks: Option<BTreeSet<String>>,
}

/// SDK `GetResourceRequest`.
#[derive(Deserialize)]
struct Get {
    api_version: String,
    kind: String,
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    disable_cache: bool,
    #[serde(default)]
    field_masks: Option<BTreeSet<String>>,
}

impl From<SigstoreVerificationInputV1> for CallbackRequestType {
    fn from(input: SigstoreVerificationInputV1) -> Self {
        match input {
            SigstoreVerificationInputV1::SigstorePubKeyVerify {
                image,
                pub_keys,
                annotations,
            } => Self::SigstorePubKeyVerify {
                image,
                pub_keys,
                annotations,
            },
            SigstoreVerificationInputV1::SigstoreKeylessVerify {
                image,
                keyless,
                annotations,
            } => Self::SigstoreKeylessVerify {
                image,
                keyless,
                annotations,
            },
        }
    }
}

impl From<SigstoreVerificationInputV2> for CallbackRequestType {
    fn from(input: SigstoreVerificationInputV2) -> Self {
        use SigstoreVerificationInputV2 as V2;
        match input {
            V2::SigstorePubKeyVerify {
                image,
                pub_keys,
                annotations,
            } => Self::SigstorePubKeyVerify {
                image,
                pub_keys,
                annotations,
            },
            V2::SigstoreKeylessVerify {
                image,
                keyless,
                annotations,
            } => Self::SigstoreKeylessVerify {
                image,
                keyless,
                annotations,
            },
            V2::SigstoreKeylessPrefixVerify {
                image,
                keyless_prefix,
                annotations,
            } => Self::SigstoreKeylessPrefixVerify {
                image,
                keyless_prefix,
                annotations,
            },
            V2::SigstoreGithubActionsVerify {
                image,
                owner,
                repo,
                annotations,
            } => Self::SigstoreGithubActionsVerify {
                image,
                owner,
                repo,
                annotations,
            },
            V2::SigstoreCertificateVerify {
                image,
                certificate,
                certificate_chain,
                require_rekor_bundle,
                annotations,
            } => Self::SigstoreCertificateVerify {
                image,
                certificate,
                certificate_chain,
                require_rekor_bundle,
                annotations,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(namespace: &str, operation: &str, payload: &str) -> HostRequest {
        HostRequest::decode(namespace, operation, payload.as_bytes())
            .unwrap_or_else(|e| panic!("{namespace}/{operation}: {e}"))
    }

    /// The payloads of `kubewarden-policy-sdk` 0.17, as upstream's own tests write them.
    #[test]
    fn decodes_every_sdk_payload() {
        let cases = [
            (
                "oci",
                "v1/verify",
                r#"{"SigstorePubKeyVerify":{"image":"ghcr.io/a/b:1","pub_keys":["k"],"annotations":null}}"#,
            ),
            (
                "oci",
                "v2/verify",
                r#"{"type":"SigstoreGithubActionsVerify","image":"i","owner":"o","repo":null,"annotations":{"a":"b"}}"#,
            ),
            ("oci", "v1/manifest_digest", r#""ghcr.io/a/b:1""#),
            ("oci", "v1/oci_manifest", r#""busybox""#),
            ("oci", "v1/oci_manifest_config", r#""busybox""#),
            ("net", "v1/dns_lookup_host", r#""example.com""#),
            (
                "kubernetes",
                "list_resources_by_namespace",
                r#"{"api_version":"v1","kind":"Pod","namespace":"default","label_selector":null,"field_selector":null,"field_masks":["metadata.name"]}"#,
            ),
            (
                "kubernetes",
                "list_resources_all",
                r#"{"api_version":"v1","kind":"Pod","label_selector":"a=b","field_selector":null}"#,
            ),
            (
                "kubernetes",
                "get_resource",
                r#"{"api_version":"v1","kind":"Pod","name":"test","namespace":"default","disable_cache":false}"#,
            ),
            (
                "kubernetes",
                "can_i",
                r#"{"subject_access_review":{"groups":null,"resource_attributes":{"group":null,"name":null,"namespace":null,"resource":"pods","subresource":null,"verb":"get","version":null},"user":"test"},"disable_cache":true}"#,
            ),
        ];
        for (namespace, operation, payload) in cases {
            assert!(matches!(
                decode(namespace, operation, payload),
                HostRequest::Callback(_)
            ));
        }
        let HostRequest::Callback(CallbackRequestType::KubernetesCanI {
            disable_cache: true,
            request,
        }) = decode("kubernetes", "can_i", cases[9].2)
        else {
            panic!("can_i");
        };
        assert_eq!(request.subject_access_review.user, "test");
        let HostRequest::CertificateTrust(request) = decode(
            "crypto",
            "v1/is_certificate_trusted",
            r#"{"cert":{"encoding":"Pem","data":[1,2]},"cert_chain":null,"not_after":""}"#,
        ) else {
            panic!("crypto");
        };
        assert_eq!(request.not_after, None);
        assert_eq!(request.cert.data, vec![1, 2]);
    }

    #[test]
    fn bad_payloads_and_names_fail_clearly() {
        let err = HostRequest::decode("kubernetes", "get_resource", b"{}").unwrap_err();
        assert!(
            err.to_string().contains("malformed request payload"),
            "{err}"
        );
        let err = HostRequest::decode("kubernetes", "delete_everything", b"{}").unwrap_err();
        assert!(err.to_string().contains("delete_everything"), "{err}");
        let err = HostRequest::decode("fs", "read", b"{}").unwrap_err();
        assert!(err.to_string().contains("\"fs\""), "{err}");
        let err = HostRequest::decode("net", "v1/dns_lookup_host", b"\xff").unwrap_err();
        assert!(err.to_string().contains("malformed"), "{err}");
    }

    /// The YAML form of a request is kwctl's: a tagged enum.
    #[test]
    fn yaml_form_is_kwctls() {
        let request = CallbackRequestType::KubernetesGetResource {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: "p-testing".into(),
            namespace: Some("local".into()),
            disable_cache: true,
            field_masks: None,
        };
        let yaml = serde_yaml::to_string(&request).unwrap();
        assert!(yaml.starts_with("!KubernetesGetResource\n"), "{yaml}");
        // A kwctl session written before field masks existed still parses.
        let old = "!KubernetesGetResource\napi_version: v1\nkind: Pod\nname: p-testing\nnamespace: local\ndisable_cache: true\n";
        assert_eq!(
            serde_yaml::from_str::<CallbackRequestType>(old).unwrap(),
            request
        );
    }
}
