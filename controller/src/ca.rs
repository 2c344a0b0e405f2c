//! The controller's CA, in Secret `portcullis-ca` of its namespace: created
//! when missing, rotated before it expires, and the bundle every webhook
//! trusts during a rotation.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;
use tracing::info;

use crate::certs;
use crate::context::{Context, Error};
use crate::names::{ANNOTATION_CERT_NOT_AFTER, CA_SECRET, MANAGED_BY, PART_OF};

/// The controller's CA as stored in Secret `portcullis-ca`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ca {
    /// PEM certificate of the current CA (signs serving certificates).
    pub cert_pem: String,
    /// PEM key of the current CA.
    pub key_pem: String,
    /// What webhooks trust: the current CA, then the previous one while it
    /// is still valid (during a rotation).
    pub bundle_pem: String,
}

/// Key of the previous CA certificate in the CA Secret, kept after a rotation.
pub const OLD_CA_KEY: &str = "old-ca.crt";
/// Annotation on the CA Secret: expiry of `old-ca.crt` (Unix seconds).
pub const ANNOTATION_OLD_CA_NOT_AFTER: &str = "policies.portcullis.dev/old-ca-not-after";

fn ca_secret(namespace: &str, ca: &certs::CertAndKey, old: Option<(&str, &str)>) -> Secret {
    let mut annotations =
        BTreeMap::from([(ANNOTATION_CERT_NOT_AFTER.to_string(), ca.not_after.clone())]);
    let mut data = BTreeMap::from([
        (
            "ca.crt".to_string(),
            ByteString(ca.cert_pem.clone().into_bytes()),
        ),
        (
            "ca.key".to_string(),
            ByteString(ca.key_pem.clone().into_bytes()),
        ),
    ]);
    if let Some((old_cert, old_not_after)) = old {
        data.insert(
            OLD_CA_KEY.to_string(),
            ByteString(old_cert.as_bytes().to_vec()),
        );
        annotations.insert(
            ANNOTATION_OLD_CA_NOT_AFTER.to_string(),
            old_not_after.to_string(),
        );
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(CA_SECRET.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/part-of".to_string(), PART_OF.to_string()),
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    MANAGED_BY.to_string(),
                ),
            ])),
            annotations: Some(annotations),
            ..Default::default()
        },
        type_: Some("Opaque".to_string()),
        data: Some(data),
        ..Default::default()
    }
}

/// The CA, created in Secret `portcullis-ca` if missing, and rotated when it
/// expires within [`certs::RENEW_BEFORE`]: the new CA replaces `ca.crt` /
/// `ca.key` and the previous certificate stays as `old-ca.crt` (in every
/// webhook's caBundle) until it expires. A CA Secret without the controller's
/// expiry annotation (provided by someone else) is never rotated. Concurrent
/// writers are serialised by the Secret's resourceVersion.
///
/// The Secret is read from the controller's cache; only writes (and the
/// read after a conflicting write) go to the API server.
pub async fn ensure_ca(ctx: &Context) -> Result<Ca, Error> {
    let namespace = ctx.opts.namespace.as_str();
    let api: Api<Secret> = ctx.own_namespace();
    let Some(secret) = ctx.stores.ca_secret(namespace) else {
        let ca = certs::generate_ca()?;
        return match api
            .create(&PostParams::default(), &ca_secret(namespace, &ca, None))
            .await
        {
            Ok(created) => {
                info!(namespace, "created CA secret {CA_SECRET}");
                ca_from_secret(&created, namespace)
            }
            // Another reconcile created it first: use theirs.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                ca_from_secret(&api.get(CA_SECRET).await?, namespace)
            }
            Err(e) => Err(e.into()),
        };
    };
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    let current = ca_from_secret(&secret, namespace)?;
    let rotate = annotations
        .get(ANNOTATION_CERT_NOT_AFTER)
        .is_some_and(|not_after| certs::needs_renewal(not_after));
    let old_expired = secret_key(&secret, OLD_CA_KEY).is_some()
        && annotations
            .get(ANNOTATION_OLD_CA_NOT_AFTER)
            .is_none_or(|t| certs::is_expired(t));
    if !rotate && !old_expired {
        return Ok(current);
    }
    let mut replacement = if rotate {
        let ca = certs::generate_ca()?;
        let old_not_after = annotations
            .get(ANNOTATION_CERT_NOT_AFTER)
            .cloned()
            .unwrap_or_default();
        info!(namespace, "rotating the CA in {CA_SECRET}");
        ca_secret(namespace, &ca, Some((&current.cert_pem, &old_not_after)))
    } else {
        info!(
            namespace,
            "dropping the expired previous CA from {CA_SECRET}"
        );
        let ca = certs::CertAndKey {
            cert_pem: current.cert_pem.clone(),
            key_pem: current.key_pem.clone(),
            not_after: annotations
                .get(ANNOTATION_CERT_NOT_AFTER)
                .cloned()
                .unwrap_or_default(),
        };
        ca_secret(namespace, &ca, None)
    };
    replacement.metadata.resource_version = secret.metadata.resource_version.clone();
    match api
        .replace(CA_SECRET, &PostParams::default(), &replacement)
        .await
    {
        Ok(written) => ca_from_secret(&written, namespace),
        // Someone else rotated it concurrently: use theirs.
        Err(kube::Error::Api(e)) if e.code == 409 => {
            ca_from_secret(&api.get(CA_SECRET).await?, namespace)
        }
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn secret_key(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
}

fn ca_from_secret(secret: &Secret, namespace: &str) -> Result<Ca, Error> {
    let missing = |key| Error::BadCaSecret {
        namespace: namespace.to_string(),
        name: CA_SECRET.to_string(),
        key,
    };
    let cert_pem = secret_key(secret, "ca.crt").ok_or_else(|| missing("ca.crt"))?;
    let key_pem = secret_key(secret, "ca.key").ok_or_else(|| missing("ca.key"))?;
    let mut bundle_pem = cert_pem.clone();
    if let Some(old) = secret_key(secret, OLD_CA_KEY) {
        if !bundle_pem.ends_with('\n') {
            bundle_pem.push('\n');
        }
        bundle_pem.push_str(&old);
    }
    Ok(Ca {
        cert_pem,
        key_pem,
        bundle_pem,
    })
}
