//! The controller's CA and the policy-servers' serving certificates (rcgen,
//! ECDSA P-256).

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

/// Common name of the CA certificate.
pub const CA_COMMON_NAME: &str = "portcullis-ca";
/// Lifetime of the CA.
pub const CA_VALIDITY: Duration = Duration::days(3650);
/// Lifetime of a serving certificate.
pub const SERVING_VALIDITY: Duration = Duration::days(365);
/// A serving certificate is re-issued this long before it expires.
pub const RENEW_BEFORE: Duration = Duration::days(60);

/// Errors while generating or loading certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen failed (bad key PEM, invalid parameters, ...).
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// A PEM certificate and its PEM private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertAndKey {
    /// PEM certificate.
    pub cert_pem: String,
    /// PEM (PKCS#8) private key.
    pub key_pem: String,
    /// Expiry, seconds since the Unix epoch.
    pub not_after: String,
}

fn unix_seconds(t: OffsetDateTime) -> String {
    t.unix_timestamp().to_string()
}

fn ca_params(not_before: OffsetDateTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationName, "Portcullis");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = not_before;
    params.not_after = not_before + CA_VALIDITY;
    params
}

/// Generates a new self-signed CA.
pub fn generate_ca() -> Result<CertAndKey, CertError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let not_before = OffsetDateTime::now_utc() - Duration::minutes(5);
    let params = ca_params(not_before);
    let not_after = unix_seconds(params.not_after);
    let cert = params.self_signed(&key)?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after,
    })
}

/// Issues a serving certificate for `dns_names` signed by the CA whose key is
/// `ca_key_pem`. The issuer is rebuilt from the key and the fixed CA subject,
/// so the result verifies against the stored CA certificate.
pub fn issue_serving_cert(ca_key_pem: &str, dns_names: &[String]) -> Result<CertAndKey, CertError> {
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    let now = OffsetDateTime::now_utc();
    let issuer = ca_params(now - Duration::minutes(5)).self_signed(&ca_key)?;

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(dns_names.to_vec())?;
    let mut dn = DistinguishedName::new();
    if let Some(first) = dns_names.first() {
        dn.push(DnType::CommonName, first.as_str());
    }
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + SERVING_VALIDITY;
    let not_after = unix_seconds(params.not_after);
    let cert = params.signed_by(&key, &issuer, &ca_key)?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after,
    })
}

/// Fingerprint of what a serving certificate was issued for: the CA
/// certificate and the DNS names. Stored on the Secret; a change re-issues.
pub fn cert_inputs_fingerprint(ca_cert_pem: &str, dns_names: &[String]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(ca_cert_pem.as_bytes());
    for name in dns_names {
        hasher.update([0u8]);
        hasher.update(name.as_bytes());
    }
    hex::encode(&hasher.finalize()[..16])
}

/// Whether a certificate expiring at `not_after` must be renewed
/// now. `not_after` is seconds since the Unix epoch; unparseable values count as expired.
pub fn needs_renewal(not_after: &str) -> bool {
    match not_after
        .parse::<i64>()
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
    {
        Some(t) => t - RENEW_BEFORE <= OffsetDateTime::now_utc(),
        None => true,
    }
}

/// Whether a certificate expiring at `not_after` (seconds since the Unix
/// epoch) has expired. Unparseable values count as expired.
pub fn is_expired(not_after: &str) -> bool {
    match not_after
        .parse::<i64>()
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
    {
        Some(t) => t <= OffsetDateTime::now_utc(),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_cert_is_signed_by_ca() {
        let ca = generate_ca().unwrap();
        let names = vec!["policy-server-default.portcullis.svc".to_string()];
        let leaf = issue_serving_cert(&ca.key_pem, &names).unwrap();
        assert!(leaf.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(!needs_renewal(&leaf.not_after));
        assert!(needs_renewal("garbage"));
        assert!(is_expired("0") && !is_expired(&leaf.not_after));
        assert_ne!(
            cert_inputs_fingerprint(&ca.cert_pem, &names),
            cert_inputs_fingerprint(&ca.cert_pem, &[])
        );
    }
}
