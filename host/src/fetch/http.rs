//! `http://` and `https://` module downloads (reqwest, rustls).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use portcullis_config::{ModuleSourceAllowList, SourcesConfig};
use reqwest_oci::Url;
use reqwest_oci::redirect;

use super::{FetchError, MAX_MODULE_BYTES, USER_AGENT, error_chain, tls, transport_class};

/// Most redirects followed for one download.
const MAX_REDIRECTS: usize = 10;

/// One reqwest client per `host[:port]`, because trust settings
/// (`insecure_sources`, `source_authorities`) are per host and a CA trusted
/// for one host must not vouch for another.
#[derive(Debug, Default)]
pub(crate) struct HttpClients {
    cache: tokio::sync::Mutex<HashMap<String, reqwest_oci::Client>>,
    /// Redirects must stay inside the allow-list, when there is one.
    allowed: Option<Arc<ModuleSourceAllowList>>,
}

/// `host[:port]` as written in the URL (the key used by `sources.yml`).
pub(crate) fn host_key(url: &Url) -> Option<String> {
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    })
}

impl HttpClients {
    /// Clients whose redirects must stay inside `allowed`.
    pub(crate) fn new(allowed: Option<Arc<ModuleSourceAllowList>>) -> Self {
        Self {
            cache: tokio::sync::Mutex::default(),
            allowed,
        }
    }

    async fn client_for(
        &self,
        sources: &SourcesConfig,
        host: &str,
    ) -> Result<reqwest_oci::Client, FetchError> {
        let mut cache = self.cache.lock().await;
        if let Some(client) = cache.get(host) {
            return Ok(client.clone());
        }
        let mut builder = reqwest_oci::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .redirect(redirect_policy(sources.clone(), self.allowed.clone()));
        if sources.is_insecure(host) {
            // Kubewarden semantics: an insecure source may present any certificate.
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        for root in tls::roots_for(sources, host)? {
            let cert = root.to_reqwest().map_err(|e| FetchError::Config {
                what: format!("certificate authority for source {host}"),
                reason: error_chain(&e),
            })?;
            builder = builder.tls_certs_merge([cert]);
        }
        let client = builder.build().map_err(|e| FetchError::Config {
            what: format!("HTTP client for {host}"),
            reason: error_chain(&e),
        })?;
        cache.insert(host.to_owned(), client.clone());
        Ok(client)
    }

    /// Downloads `url`; `uri` is the caller's spelling, used in errors.
    pub(crate) async fn download(
        &self,
        sources: &SourcesConfig,
        uri: &str,
        url: &Url,
        progress: Option<&std::sync::Arc<dyn super::DownloadProgress>>,
    ) -> Result<Vec<u8>, FetchError> {
        let host = host_key(url).ok_or_else(|| FetchError::InvalidUri {
            uri: uri.to_owned(),
            reason: "missing host".to_owned(),
        })?;
        if url.scheme() == "http" && !sources.is_insecure(&host) {
            return Err(FetchError::InsecureNotAllowed {
                uri: uri.to_owned(),
                host,
            });
        }
        let client = self.client_for(sources, &host).await?;
        let unreachable = |e: reqwest_oci::Error| FetchError::Unreachable {
            uri: uri.to_owned(),
            reason: error_chain(&e),
            class: transport_class(&e),
        };
        let mut response = client.get(url.clone()).send().await.map_err(unreachable)?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::HttpStatus {
                uri: uri.to_owned(),
                status: status.as_u16(),
                reason: status.canonical_reason().unwrap_or("").to_owned(),
            });
        }
        if response
            .content_length()
            .is_some_and(|len| len > MAX_MODULE_BYTES)
        {
            return Err(FetchError::TooLarge {
                uri: uri.to_owned(),
                limit: MAX_MODULE_BYTES,
            });
        }
        // Read chunk by chunk so a server that lies about (or omits) the
        // length cannot make us buffer an unbounded body.
        let report = super::progress::Reporting::start(progress, uri, response.content_length());
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            report.advance(chunk.len());
            if (body.len() + chunk.len()) as u64 > MAX_MODULE_BYTES {
                return Err(FetchError::TooLarge {
                    uri: uri.to_owned(),
                    limit: MAX_MODULE_BYTES,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// Follows at most [`MAX_REDIRECTS`] redirects, never from `https` to plain
/// `http` (unless the target is an insecure source), and never out of the
/// allow-list: a redirect is a new download, and an allowed server must not
/// lead the policy-server to a place the operator did not allow.
fn redirect_policy(
    sources: SourcesConfig,
    allowed: Option<Arc<ModuleSourceAllowList>>,
) -> redirect::Policy {
    redirect::Policy::custom(move |attempt| {
        let refusal = redirect_refusal(
            attempt.url(),
            attempt.previous().len(),
            &sources,
            allowed.as_deref(),
        );
        match refusal {
            Some(reason) => attempt.error(reason),
            None => attempt.follow(),
        }
    })
}

/// Why a redirect to `url` (after `previous` others) must not be followed.
fn redirect_refusal(
    url: &Url,
    previous: usize,
    sources: &SourcesConfig,
    allowed: Option<&ModuleSourceAllowList>,
) -> Option<String> {
    if previous >= MAX_REDIRECTS {
        return Some(format!("more than {MAX_REDIRECTS} redirects"));
    }
    let host = host_key(url).unwrap_or_default();
    if url.scheme() == "http" && !sources.is_insecure(&host) {
        return Some(format!(
            "redirected to plain HTTP on {host}, which is not an insecure source"
        ));
    }
    if let Some(allowed) = allowed
        && !super::allowed::url_location(url).is_some_and(|l| allowed.allows(&l))
    {
        return Some(format!(
            "redirected to {}://{host}, outside allowed_module_sources",
            url.scheme()
        ));
    }
    None
}
