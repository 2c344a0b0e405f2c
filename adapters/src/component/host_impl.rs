//! The host side of the WIT imports. Every capability goes through the
//! embedder's [`HostCapabilities`](crate::HostCapabilities), with Kubewarden's
//! namespaces, operations and payloads, so both ABIs share one implementation.
//!
//! The 0.2 interfaces are implemented here; the frozen 0.1 interfaces (same
//! functions, minus the 0.2 additions) convert their arguments and delegate.

use serde::Deserialize;
use serde_json::{Value, json};

use super::ComponentState;
use super::bindings::portcullis::policy::{crypto, host, kubernetes, net, oci, types};
use super::bindings_v0_1::portcullis::policy as v0_1;
use crate::capabilities::{CallContext, CapabilityError};
use crate::guest_log::GuestLevel;

type CapResult<T> = Result<T, types::CapabilityError>;

impl ComponentState {
    /// One host call; the answer as JSON bytes.
    fn call_host(&self, namespace: &str, operation: &str, payload: &Value) -> CapResult<Vec<u8>> {
        let payload = payload.to_string();
        let ctx = CallContext {
            policy_id: &self.policy_id,
            deadline: self.limits.deadline,
        };
        self.capabilities
            .call(&ctx, namespace, operation, payload.as_bytes())
            .map_err(|e| match e {
                CapabilityError::NotGranted(what) => types::CapabilityError::NotGranted(what),
                failed @ (CapabilityError::Failed(_) | CapabilityError::DeadlineExceeded(_)) => {
                    types::CapabilityError::Failed(failed.to_string())
                }
            })
    }

    /// One host call whose JSON answer is parsed into `T`.
    fn capability<T: for<'de> Deserialize<'de>>(
        &self,
        namespace: &str,
        operation: &str,
        payload: Value,
    ) -> CapResult<T> {
        let answer = self.call_host(namespace, operation, &payload)?;
        serde_json::from_slice(&answer).map_err(|e| {
            types::CapabilityError::Failed(format!(
                "{namespace}/{operation}: malformed host answer: {e}"
            ))
        })
    }

    /// One host call whose JSON answer goes to the guest as text, unparsed:
    /// large lists are copied, not re-serialised.
    fn capability_text(
        &self,
        namespace: &str,
        operation: &str,
        payload: Value,
    ) -> CapResult<String> {
        let answer = self.call_host(namespace, operation, &payload)?;
        String::from_utf8(answer).map_err(|e| {
            types::CapabilityError::Failed(format!(
                "{namespace}/{operation}: the host answer is not UTF-8: {e}"
            ))
        })
    }
}

/// `None` for no masks, as the SDK sends it.
fn masks(field_masks: Vec<String>) -> Option<Vec<String>> {
    (!field_masks.is_empty()).then_some(field_masks)
}

/// `None` for no annotations, as the SDK sends it.
fn annotations(pairs: Vec<(String, String)>) -> Value {
    if pairs.is_empty() {
        Value::Null
    } else {
        Value::Object(
            pairs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        )
    }
}

impl types::Host for ComponentState {}

impl host::Host for ComponentState {
    fn log(&mut self, level: host::LogLevel, message: String) {
        let level = match level {
            host::LogLevel::Trace => GuestLevel::Trace,
            host::LogLevel::Debug => GuestLevel::Debug,
            host::LogLevel::Info => GuestLevel::Info,
            host::LogLevel::Warn => GuestLevel::Warn,
            host::LogLevel::Error => GuestLevel::Error,
        };
        self.limits
            .output(&self.policy_id)
            .log(level, &message, None);
    }
}

impl kubernetes::Host for ComponentState {
    fn get_resource(&mut self, r: kubernetes::GetResourceRequest) -> CapResult<String> {
        self.get_resource_masked(r, Vec::new())
    }

    fn list_resources(&mut self, r: kubernetes::ListResourcesRequest) -> CapResult<String> {
        self.list_resources_masked(r, Vec::new())
    }

    fn get_resource_masked(
        &mut self,
        r: kubernetes::GetResourceRequest,
        field_masks: Vec<String>,
    ) -> CapResult<String> {
        self.capability_text(
            "kubernetes",
            "get_resource",
            json!({"api_version": r.api_version, "kind": r.kind, "name": r.name,
                   "namespace": r.namespace, "disable_cache": r.disable_cache,
                   "field_masks": masks(field_masks)}),
        )
    }

    fn list_resources_masked(
        &mut self,
        r: kubernetes::ListResourcesRequest,
        field_masks: Vec<String>,
    ) -> CapResult<String> {
        let operation = if r.namespace.is_some() {
            "list_resources_by_namespace"
        } else {
            "list_resources_all"
        };
        self.capability_text(
            "kubernetes",
            operation,
            json!({"api_version": r.api_version, "kind": r.kind, "namespace": r.namespace,
                   "label_selector": r.label_selector, "field_selector": r.field_selector,
                   "field_masks": masks(field_masks)}),
        )
    }

    fn can_i(&mut self, r: kubernetes::CanIRequest) -> CapResult<kubernetes::CanIResponse> {
        #[derive(Deserialize)]
        struct Answer {
            allowed: bool,
            #[serde(default)]
            reason: Option<String>,
        }
        let group = (!r.group.is_empty()).then_some(r.group);
        let answer: Answer = self.capability(
            "kubernetes",
            "can_i",
            json!({"subject_access_review": {
                       "user": r.user, "groups": r.groups,
                       "resource_attributes": {"verb": r.verb, "group": group,
                                               "resource": r.resource, "namespace": r.namespace}},
                   "disable_cache": r.disable_cache}),
        )?;
        Ok(kubernetes::CanIResponse {
            allowed: answer.allowed,
            reason: answer.reason.filter(|r| !r.is_empty()),
        })
    }
}

impl oci::Host for ComponentState {
    fn manifest_digest(&mut self, image: String) -> CapResult<String> {
        #[derive(Deserialize)]
        struct Answer {
            digest: String,
        }
        let answer: Answer = self.capability("oci", "v1/manifest_digest", json!(image))?;
        Ok(answer.digest)
    }

    fn manifest(&mut self, image: String) -> CapResult<String> {
        self.capability_text("oci", "v1/oci_manifest", json!(image))
    }

    fn manifest_and_config(&mut self, image: String) -> CapResult<oci::ManifestWithConfig> {
        #[derive(Deserialize)]
        struct Answer {
            manifest: Value,
            digest: String,
            config: Value,
        }
        let answer: Answer = self.capability("oci", "v1/oci_manifest_config", json!(image))?;
        Ok(oci::ManifestWithConfig {
            manifest: answer.manifest.to_string(),
            digest: answer.digest,
            config: answer.config.to_string(),
        })
    }

    fn verify_signature(&mut self, check: oci::SignatureCheck) -> CapResult<oci::SignatureVerdict> {
        #[derive(Deserialize)]
        struct Answer {
            is_trusted: bool,
            digest: String,
        }
        let keyless = |signers: Vec<oci::KeylessSigner>, subject: &str| -> Vec<Value> {
            signers
                .into_iter()
                .map(|s| json!({"issuer": s.issuer, subject: s.subject}))
                .collect()
        };
        // Kubewarden's `oci/v2/verify` input, internally tagged by `type`.
        let payload = match check {
            oci::SignatureCheck::PubKeys(s) => json!({
                "type": "SigstorePubKeyVerify", "image": s.image, "pub_keys": s.pub_keys,
                "annotations": annotations(s.annotations)}),
            oci::SignatureCheck::Keyless(s) => json!({
                "type": "SigstoreKeylessVerify", "image": s.image,
                "keyless": keyless(s.signers, "subject"),
                "annotations": annotations(s.annotations)}),
            oci::SignatureCheck::KeylessPrefix(s) => json!({
                "type": "SigstoreKeylessPrefixVerify", "image": s.image,
                "keyless_prefix": keyless(s.signers, "url_prefix"),
                "annotations": annotations(s.annotations)}),
            oci::SignatureCheck::GithubActions(s) => json!({
                "type": "SigstoreGithubActionsVerify", "image": s.image, "owner": s.owner,
                "repo": s.repo, "annotations": annotations(s.annotations)}),
            oci::SignatureCheck::Certificate(s) => json!({
                "type": "SigstoreCertificateVerify", "image": s.image,
                "certificate": s.certificate.into_bytes(),
                "certificate_chain": s.certificate_chain
                    .map(|chain| chain.into_iter().map(String::into_bytes).collect::<Vec<_>>()),
                "require_rekor_bundle": s.require_rekor_bundle,
                "annotations": annotations(s.annotations)}),
        };
        let answer: Answer = self.capability("oci", "v2/verify", payload)?;
        Ok(oci::SignatureVerdict {
            trusted: answer.is_trusted,
            digest: answer.digest,
        })
    }
}

impl net::Host for ComponentState {
    fn lookup_host(&mut self, host: String) -> CapResult<Vec<String>> {
        #[derive(Deserialize)]
        struct Answer {
            ips: Vec<String>,
        }
        let answer: Answer = self.capability("net", "v1/dns_lookup_host", json!(host))?;
        Ok(answer.ips)
    }
}

impl crypto::Host for ComponentState {
    fn is_certificate_trusted(
        &mut self,
        check: crypto::CertificateCheck,
    ) -> CapResult<crypto::CertificateVerdict> {
        #[derive(Deserialize)]
        struct Answer {
            trusted: bool,
            #[serde(default)]
            reason: Option<String>,
        }
        let pem = |data: String| json!({"encoding": "Pem", "data": data.into_bytes()});
        let chain: Vec<Value> = check.chain.into_iter().map(pem).collect();
        let answer: Answer = self.capability(
            "crypto",
            "v1/is_certificate_trusted",
            json!({"cert": pem(check.certificate),
                   "cert_chain": (!chain.is_empty()).then_some(chain),
                   "not_after": check.not_after}),
        )?;
        Ok(crypto::CertificateVerdict {
            trusted: answer.trusted,
            reason: answer.reason.filter(|r| !r.is_empty()),
        })
    }
}

// The 0.1 contract: same functions, older types.

fn from_v0_2<T>(result: CapResult<T>) -> Result<T, v0_1::types::CapabilityError> {
    result.map_err(|e| match e {
        types::CapabilityError::NotGranted(what) => v0_1::types::CapabilityError::NotGranted(what),
        types::CapabilityError::Failed(why) => v0_1::types::CapabilityError::Failed(why),
    })
}

impl v0_1::types::Host for ComponentState {}

impl v0_1::host::Host for ComponentState {
    fn log(&mut self, level: v0_1::host::LogLevel, message: String) {
        use v0_1::host::LogLevel as L;
        let level = match level {
            L::Trace => host::LogLevel::Trace,
            L::Debug => host::LogLevel::Debug,
            L::Info => host::LogLevel::Info,
            L::Warn => host::LogLevel::Warn,
            L::Error => host::LogLevel::Error,
        };
        host::Host::log(self, level, message);
    }
}

impl v0_1::kubernetes::Host for ComponentState {
    fn get_resource(
        &mut self,
        r: v0_1::kubernetes::GetResourceRequest,
    ) -> Result<String, v0_1::types::CapabilityError> {
        from_v0_2(kubernetes::Host::get_resource(
            self,
            kubernetes::GetResourceRequest {
                api_version: r.api_version,
                kind: r.kind,
                name: r.name,
                namespace: r.namespace,
                disable_cache: r.disable_cache,
            },
        ))
    }

    fn list_resources(
        &mut self,
        r: v0_1::kubernetes::ListResourcesRequest,
    ) -> Result<String, v0_1::types::CapabilityError> {
        from_v0_2(kubernetes::Host::list_resources(
            self,
            kubernetes::ListResourcesRequest {
                api_version: r.api_version,
                kind: r.kind,
                namespace: r.namespace,
                label_selector: r.label_selector,
                field_selector: r.field_selector,
            },
        ))
    }

    fn can_i(
        &mut self,
        r: v0_1::kubernetes::CanIRequest,
    ) -> Result<v0_1::kubernetes::CanIResponse, v0_1::types::CapabilityError> {
        let answer = from_v0_2(kubernetes::Host::can_i(
            self,
            kubernetes::CanIRequest {
                user: r.user,
                groups: r.groups,
                verb: r.verb,
                group: r.group,
                resource: r.resource,
                namespace: r.namespace,
                disable_cache: r.disable_cache,
            },
        ))?;
        Ok(v0_1::kubernetes::CanIResponse {
            allowed: answer.allowed,
            reason: answer.reason,
        })
    }
}

impl v0_1::oci::Host for ComponentState {
    fn manifest_digest(&mut self, image: String) -> Result<String, v0_1::types::CapabilityError> {
        from_v0_2(oci::Host::manifest_digest(self, image))
    }
}

impl v0_1::net::Host for ComponentState {
    fn lookup_host(&mut self, host: String) -> Result<Vec<String>, v0_1::types::CapabilityError> {
        from_v0_2(net::Host::lookup_host(self, host))
    }
}

impl v0_1::crypto::Host for ComponentState {
    fn is_certificate_trusted(
        &mut self,
        check: v0_1::crypto::CertificateCheck,
    ) -> Result<v0_1::crypto::CertificateVerdict, v0_1::types::CapabilityError> {
        let verdict = from_v0_2(crypto::Host::is_certificate_trusted(
            self,
            crypto::CertificateCheck {
                certificate: check.certificate,
                chain: check.chain,
                not_after: check.not_after,
            },
        ))?;
        Ok(v0_1::crypto::CertificateVerdict {
            trusted: verdict.trusted,
            reason: verdict.reason,
        })
    }
}
