//! The `admission.k8s.io/v1` wire types the server produces.
//!
//! Requests are kept as `serde_json::Value` and handed to the policy as-is, so
//! only the response side is typed. Optional fields are omitted rather than
//! serialised as `null` (upstream sends `null` warnings, which some clients
//! trip over).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `apiVersion` of the AdmissionReview documents this server accepts and sends.
pub const ADMISSION_API_VERSION: &str = "admission.k8s.io/v1";
/// `kind` of the AdmissionReview documents.
pub const ADMISSION_KIND: &str = "AdmissionReview";
/// The only patch type Kubernetes accepts.
pub const JSON_PATCH_TYPE: &str = "JSONPatch";

/// An AdmissionReview carrying a response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReviewResponse {
    /// Always [`ADMISSION_API_VERSION`].
    pub api_version: String,
    /// Always [`ADMISSION_KIND`].
    pub kind: String,
    /// The verdict.
    pub response: AdmissionResponse,
}

impl AdmissionReviewResponse {
    /// Wraps a response in an `admission.k8s.io/v1` AdmissionReview.
    pub fn new(response: AdmissionResponse) -> Self {
        Self {
            api_version: ADMISSION_API_VERSION.to_string(),
            kind: ADMISSION_KIND.to_string(),
            response,
        }
    }
}

/// `AdmissionResponse` of `admission.k8s.io/v1`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    /// The uid of the request this answers.
    pub uid: String,
    /// Whether the request is admitted.
    pub allowed: bool,
    /// Base64 of an RFC 6902 JSON patch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// `JSONPatch` when `patch` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<String>,
    /// Why the request was rejected (or the policy's message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<AdmissionStatus>,
    /// Annotations for the audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_annotations: Option<BTreeMap<String, String>>,
    /// Warnings shown to the API client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<String>>,
}

impl AdmissionResponse {
    /// A rejection with a message and an HTTP-like code.
    pub fn reject(uid: impl Into<String>, message: impl Into<String>, code: u16) -> Self {
        Self {
            uid: uid.into(),
            allowed: false,
            status: Some(AdmissionStatus {
                message: Some(message.into()),
                code: Some(code),
                details: None,
            }),
            ..Self::default()
        }
    }

    /// A plain acceptance.
    pub fn allow(uid: impl Into<String>) -> Self {
        Self {
            uid: uid.into(),
            allowed: true,
            ..Self::default()
        }
    }

    /// The status message, if any.
    pub fn message(&self) -> Option<&str> {
        self.status.as_ref()?.message.as_deref()
    }
}

/// The subset of `metav1.Status` used in admission responses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionStatus {
    /// Human-readable reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// HTTP-like status code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// Extra causes (the policy's own message when a custom one replaced it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
}

/// `metav1.StatusDetails` (only `causes` is used).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDetails {
    /// The individual causes.
    #[serde(default)]
    pub causes: Vec<StatusCause>,
}

/// `metav1.StatusCause`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusCause {
    /// Machine-readable reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The field the cause refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}
