//! Progress of module downloads, for interactive tools (`portcullis pull`,
//! `run`, `test` on registry modules): the fetcher reports bytes as they
//! arrive; the policy-server installs no reporter.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

/// Receives the progress of each download.
pub trait DownloadProgress: Send + Sync {
    /// A download of `uri` starts; `total` is its size when known.
    fn start(&self, uri: &str, total: Option<u64>);
    /// `bytes` more arrived.
    fn advance(&self, bytes: u64);
    /// The download ended (successfully or not).
    fn finish(&self);
}

/// Reports `finish` when dropped, so that every exit path of a download ends it.
pub(crate) struct Reporting(pub(crate) Option<Arc<dyn DownloadProgress>>);

impl Reporting {
    pub(crate) fn start(
        progress: Option<&Arc<dyn DownloadProgress>>,
        uri: &str,
        total: Option<u64>,
    ) -> Self {
        if let Some(p) = progress {
            p.start(uri, total);
        }
        Reporting(progress.cloned())
    }

    pub(crate) fn advance(&self, bytes: usize) {
        if let Some(p) = &self.0 {
            p.advance(bytes as u64);
        }
    }
}

impl Drop for Reporting {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            p.finish();
        }
    }
}

/// A writer that reports what passes through it.
pub(crate) struct CountingWriter<'a, W> {
    pub(crate) inner: W,
    pub(crate) report: &'a Reporting,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for CountingWriter<'_, W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &poll {
            self.report.advance(*n);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
