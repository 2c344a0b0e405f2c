//! `http://` and `https://` module downloads (reqwest, rustls).

use std::collections::HashMap;
use std::time::Duration;

use portcullis_config::SourcesConfig;
use reqwest_oci::Url;

use super::{FetchError, MAX_MODULE_BYTES, USER_AGENT, error_chain, tls};

/// One reqwest client per `host[:port]`, because trust settings
/// (`insecure_sources`, `source_authorities`) are per host and a CA trusted
/// for one host must not vouch for another.
#[derive(Debug, Default)]
pub(crate) struct HttpClients {
    cache: tokio::sync::Mutex<HashMap<String, reqwest_oci::Client>>,
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
            .read_timeout(Duration::from_secs(60));
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
