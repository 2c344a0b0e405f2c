//! `crypto/v1/is_certificate_trusted`, with rustls-webpki.
//!
//! Kubewarden's semantics: the chain lists intermediates first and the root
//! last (the root is the trust anchor); without a chain, Mozilla's roots are
//! the anchors. Validity is checked at `not_after` (RFC 3339) or now. Any
//! extended key usage is accepted. The answer is
//! `{"trusted": bool, "reason": string}`; a certificate that cannot even be
//! parsed is an error.

use std::time::{Duration, SystemTime};

use portcullis_adapters::CapabilityError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, TrustAnchor, UnixTime};
use serde::Serialize;
use webpki::{EndEntityCert, Error as WebPkiError, ExtendedKeyUsageValidator, KeyPurposeIdIter};

use super::request::{Certificate, CertificateEncoding, CertificateVerificationRequest};

const EXPIRED: &str = "Certificate is being used after its expiration date";
const NOT_YET_VALID: &str = "Certificate is being used before its validity date";
const NOT_TRUSTED: &str = "Certificate is not trusted by the provided cert chain";

/// The answer of `crypto/v1/is_certificate_trusted` (SDK `BoolWithReason`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertificateVerdict {
    /// Whether the certificate is trusted.
    pub trusted: bool,
    /// Why not; empty when trusted.
    pub reason: String,
}

/// Checks `request`; see the module docs.
pub fn is_certificate_trusted(
    request: &CertificateVerificationRequest,
) -> Result<CertificateVerdict, CapabilityError> {
    let failed =
        |what: String| CapabilityError::Failed(format!("crypto/v1/is_certificate_trusted: {what}"));
    let cert = der(&request.cert).map_err(failed)?;
    let end_entity = EndEntityCert::try_from(&cert)
        .map_err(|e| failed(format!("not a valid end-entity certificate: {e}")))?;
    let time = match &request.not_after {
        Some(text) => {
            let at =
                time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| failed(format!("not_after {text:?} is not an RFC 3339 time")))?;
            let seconds = u64::try_from(at.unix_timestamp())
                .map_err(|_| failed(format!("not_after {text:?} is before 1970")))?;
            UnixTime::since_unix_epoch(Duration::from_secs(seconds))
        }
        None => UnixTime::since_unix_epoch(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        ),
    };

    let chain: Vec<CertificateDer<'static>> = request
        .cert_chain
        .iter()
        .flatten()
        .map(der)
        .collect::<Result<_, _>>()
        .map_err(failed)?;
    let (anchors, intermediates): (Vec<TrustAnchor<'_>>, &[CertificateDer<'_>]) =
        match chain.split_last() {
            Some((root, intermediates)) => (
                vec![webpki::anchor_from_trusted_cert(root).map_err(|e| {
                    failed(format!(
                        "the last certificate of the chain cannot be a trust anchor: {e}"
                    ))
                })?],
                intermediates,
            ),
            None => (webpki_roots::TLS_SERVER_ROOTS.to_vec(), &[]),
        };

    let outcome = end_entity.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        intermediates,
        time,
        AnyUsage,
        None,
        None,
    );
    Ok(match outcome {
        Ok(_) => CertificateVerdict {
            trusted: true,
            reason: String::new(),
        },
        Err(e) => CertificateVerdict {
            trusted: false,
            reason: match e {
                WebPkiError::CertExpired { .. } => EXPIRED.to_string(),
                WebPkiError::CertNotValidYet { .. } => NOT_YET_VALID.to_string(),
                WebPkiError::UnknownIssuer | WebPkiError::InvalidSignatureForPublicKey => {
                    NOT_TRUSTED.to_string()
                }
                other => format!("Certificate not trusted: {other}"),
            },
        },
    })
}

fn der(certificate: &Certificate) -> Result<CertificateDer<'static>, String> {
    match certificate.encoding {
        CertificateEncoding::Pem => CertificateDer::from_pem_slice(&certificate.data)
            .map_err(|e| format!("certificate PEM data is not valid: {e}")),
        CertificateEncoding::Der => Ok(CertificateDer::from(certificate.data.clone())),
    }
}

/// Upstream accepts any extended key usage.
struct AnyUsage;

impl ExtendedKeyUsageValidator for AnyUsage {
    fn validate(&self, _: KeyPurposeIdIter<'_, '_>) -> Result<(), WebPkiError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use time::OffsetDateTime;

    use super::*;

    struct Issued {
        cert: rcgen::Certificate,
        key: KeyPair,
    }

    fn issue(ca: bool, days: (i64, i64), issuer: Option<&Issued>) -> Issued {
        let mut params = CertificateParams::new(vec!["example.test".to_string()]).unwrap();
        let now = OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(days.0);
        params.not_after = now + time::Duration::days(days.1);
        if ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        let key = KeyPair::generate().unwrap();
        let cert = match issuer {
            Some(issuer) => params.signed_by(&key, &issuer.cert, &issuer.key).unwrap(),
            None => params.self_signed(&key).unwrap(),
        };
        Issued { cert, key }
    }

    fn pem(issued: &Issued) -> Certificate {
        Certificate {
            encoding: CertificateEncoding::Pem,
            data: issued.cert.pem().into_bytes(),
        }
    }

    fn check(cert: &Issued, chain: &[&Issued], not_after: Option<&str>) -> CertificateVerdict {
        is_certificate_trusted(&CertificateVerificationRequest {
            cert: pem(cert),
            cert_chain: (!chain.is_empty()).then(|| chain.iter().map(|c| pem(c)).collect()),
            not_after: not_after.map(str::to_string),
        })
        .unwrap()
    }

    #[test]
    fn chains_made_with_rcgen() {
        let root = issue(true, (-700, 700), None);
        let intermediate = issue(true, (-365, 700), Some(&root));
        let leaf = issue(false, (-10, 10), Some(&intermediate));
        assert!(check(&leaf, &[&intermediate, &root], None).trusted);

        let direct = issue(false, (-10, 10), Some(&root));
        assert!(check(&direct, &[&root], None).trusted);

        let other_root = issue(true, (-700, 700), None);
        let verdict = check(&leaf, &[&intermediate, &other_root], None);
        assert_eq!(
            verdict,
            CertificateVerdict {
                trusted: false,
                reason: NOT_TRUSTED.to_string()
            }
        );

        let expired = issue(false, (-365, -10), Some(&root));
        assert_eq!(check(&expired, &[&root], None).reason, EXPIRED);
        let future = issue(false, (10, 20), Some(&root));
        assert_eq!(check(&future, &[&root], None).reason, NOT_YET_VALID);

        // Checked at a given time instead of now.
        let at = (OffsetDateTime::now_utc() - time::Duration::days(100))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        assert!(check(&expired, &[&root], Some(&at)).trusted);

        // No chain: Mozilla's roots, which did not sign a test certificate.
        assert_eq!(check(&direct, &[], None).reason, NOT_TRUSTED);
    }

    #[test]
    fn garbage_is_an_error_not_a_verdict() {
        let request = CertificateVerificationRequest {
            cert: Certificate {
                encoding: CertificateEncoding::Pem,
                data: b"hello".to_vec(),
            },
            cert_chain: None,
            not_after: None,
        };
        assert!(is_certificate_trusted(&request).is_err());
        let request = CertificateVerificationRequest {
            cert: Certificate {
                encoding: CertificateEncoding::Der,
                data: vec![0x30, 0x03, 1, 2, 3],
            },
            cert_chain: None,
            not_after: Some("yesterday".into()),
        };
        assert!(is_certificate_trusted(&request).is_err());
    }
}
