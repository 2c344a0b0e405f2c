//! The host side of the WIT imports. Every capability goes through the
//! embedder's [`HostCapabilities`](crate::HostCapabilities), with Kubewarden's
//! namespaces, operations and payloads, so both ABIs share one implementation.

use serde::Deserialize;
use serde_json::json;

use super::ComponentState;
use super::bindings::portcullis::policy::{crypto, host, kubernetes, net, oci, types};
use crate::capabilities::{CallContext, CapabilityError};
use crate::guest_log::GuestLevel;

impl ComponentState {
    fn capability<T: for<'de> Deserialize<'de>>(
        &self,
        namespace: &str,
        operation: &str,
        payload: serde_json::Value,
    ) -> Result<T, types::CapabilityError> {
        let payload = payload.to_string();
        let ctx = CallContext {
            policy_id: &self.policy_id,
            deadline: self.limits.deadline,
        };
        let answer = self
            .capabilities
            .call(&ctx, namespace, operation, payload.as_bytes())
            .map_err(|e| match e {
                CapabilityError::NotGranted(what) => types::CapabilityError::NotGranted(what),
                failed @ (CapabilityError::Failed(_) | CapabilityError::DeadlineExceeded(_)) => {
                    types::CapabilityError::Failed(failed.to_string())
                }
            })?;
        serde_json::from_slice(&answer).map_err(|e| {
            types::CapabilityError::Failed(format!(
                "{namespace}/{operation}: malformed host answer: {e}"
            ))
        })
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
    fn get_resource(
        &mut self,
        r: kubernetes::GetResourceRequest,
    ) -> Result<String, types::CapabilityError> {
        let value: serde_json::Value = self.capability(
            "kubernetes",
            "get_resource",
            json!({"api_version": r.api_version, "kind": r.kind, "name": r.name,
                   "namespace": r.namespace, "disable_cache": r.disable_cache}),
        )?;
        Ok(value.to_string())
    }

    fn list_resources(
        &mut self,
        r: kubernetes::ListResourcesRequest,
    ) -> Result<String, types::CapabilityError> {
        let operation = if r.namespace.is_some() {
            "list_resources_by_namespace"
        } else {
            "list_resources_all"
        };
        let value: serde_json::Value = self.capability(
            "kubernetes",
            operation,
            json!({"api_version": r.api_version, "kind": r.kind, "namespace": r.namespace,
                   "label_selector": r.label_selector, "field_selector": r.field_selector}),
        )?;
        Ok(value.to_string())
    }

    fn can_i(
        &mut self,
        r: kubernetes::CanIRequest,
    ) -> Result<kubernetes::CanIResponse, types::CapabilityError> {
        #[derive(Deserialize)]
        struct Answer {
            allowed: bool,
            #[serde(default)]
            reason: Option<String>,
        }
        let answer: Answer = self.capability(
            "kubernetes",
            "can_i",
            json!({"subject_access_review": {
                       "user": r.user, "groups": r.groups,
                       "resource_attributes": {"verb": r.verb, "group": r.group,
                                               "resource": r.resource, "namespace": r.namespace}},
                   "disable_cache": r.disable_cache}),
        )?;
        Ok(kubernetes::CanIResponse {
            allowed: answer.allowed,
            reason: answer.reason,
        })
    }
}

impl oci::Host for ComponentState {
    fn manifest_digest(&mut self, image: String) -> Result<String, types::CapabilityError> {
        #[derive(Deserialize)]
        struct Answer {
            digest: String,
        }
        let answer: Answer = self.capability("oci", "v1/manifest_digest", json!(image))?;
        Ok(answer.digest)
    }
}

impl net::Host for ComponentState {
    fn lookup_host(&mut self, host: String) -> Result<Vec<String>, types::CapabilityError> {
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
    ) -> Result<crypto::CertificateVerdict, types::CapabilityError> {
        #[derive(Deserialize)]
        struct Answer {
            trusted: bool,
            #[serde(default)]
            reason: Option<String>,
        }
        let pem = |data: String| json!({"encoding": "Pem", "data": data.into_bytes()});
        let answer: Answer = self.capability(
            "crypto",
            "v1/is_certificate_trusted",
            json!({"cert": pem(check.certificate),
                   "cert_chain": check.chain.into_iter().map(pem).collect::<Vec<_>>(),
                   "not_after": check.not_after}),
        )?;
        Ok(crypto::CertificateVerdict {
            trusted: answer.trusted,
            reason: answer.reason,
        })
    }
}
