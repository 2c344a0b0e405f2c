//! The accept loop: plain TCP or TLS, HTTP/1.1 and h2, connection limits
//! and timeouts, graceful drain.
//!
//! Written by hand rather than with `axum::serve` so that every new
//! connection picks up the TLS configuration current at accept time (that
//! is what makes certificate rotation work without a restart), and so that
//! slow or idle clients cannot hold the server:
//!
//! - at most [`ConnectionLimits::max_connections`] connections are open at
//!   once; further clients wait in the kernel's accept queue;
//! - a client has [`ConnectionLimits::header_read_timeout`] to finish the TLS
//!   handshake, then again to send its first request, and again for the
//!   head of every HTTP/1.1 request from its first byte ([`super::activity`]);
//! - a connection with no request in flight for
//!   [`ConnectionLimits::keep_alive_timeout`] is closed (gracefully: HTTP/2
//!   gets a GOAWAY), whatever bytes trickle in meanwhile; a connection that
//!   does not finish closing within the header timeout is dropped.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::activity::{Activity, Tracked};
use crate::tls::ReloadableTls;

/// Bounds on the connections of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnectionLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Time for the TLS handshake, and for each request's headers.
    pub header_read_timeout: Duration,
    /// Time a connection may stay without a request in flight.
    pub keep_alive_timeout: Duration,
}

/// HTTP/2 streams one connection may have open at once. The API server
/// multiplexes its webhook calls over few connections, so this is generous;
/// it bounds what one connection can make the server buffer.
const MAX_CONCURRENT_STREAMS: u32 = 256;
/// Largest request header section (both protocols).
const MAX_HEADER_BYTES: u32 = 64 * 1024;

/// Serves `router` on `listener` until `shutdown` turns true, then waits up
/// to `drain` for open connections to finish their requests, and closes
/// the ones left.
pub(crate) async fn serve(
    name: &'static str,
    listener: TcpListener,
    tls: Option<Arc<ReloadableTls>>,
    router: Router,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let max_connections = limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max_connections));
    let (kill, killed) = watch::channel(false);
    let builder = http_builder();
    loop {
        // Waiting for a slot before accepting leaves further clients in the
        // kernel's backlog instead of accepting sockets we cannot serve.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_closed) => break,
            },
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                warn!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if slots.available_permits() == 0 {
            debug!(
                listener = name,
                max_connections, "connection limit reached; new clients wait"
            );
        }
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            router: router.clone(),
            builder: builder.clone(),
            limits,
            shutdown: shutdown.clone(),
            killed: killed.clone(),
        };
        let acceptor = tls
            .as_ref()
            .map(|tls| tokio_rustls::TlsAcceptor::from(tls.current()));
        tokio::spawn(async move {
            let _slot = slot;
            let result = match acceptor {
                None => connection.serve(stream).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(stream)) => connection.serve(stream).await,
                        Ok(Err(e)) => {
                            debug!(listener = name, %peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            debug!(listener = name, %peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = result {
                debug!(listener = name, %peer, error = %e, "connection closed with an error");
            }
        });
    }
    drop(listener);
    let open = max_connections - slots.available_permits();
    info!(listener = name, connections = open, "draining connections");
    // Every connection task holds a slot until it ends.
    let all_closed = slots.acquire_many(u32::try_from(max_connections).unwrap_or(u32::MAX));
    tokio::select! {
        _ = all_closed => info!(listener = name, "all connections closed"),
        () = tokio::time::sleep(drain) => {
            warn!(listener = name, "drain timeout: closing remaining connections");
            let _ = kill.send(true);
        }
    }
}

/// hyper's own header timer stays off (no timer is given to it): the
/// connection's [`Activity`] runs the header and keep-alive clocks.
fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().max_buf_size(MAX_HEADER_BYTES as usize);
    builder
        .http2()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(MAX_HEADER_BYTES);
    builder
}

/// One accepted connection and what it needs to be served.
struct Connection {
    router: Router,
    builder: auto::Builder<TokioExecutor>,
    limits: ConnectionLimits,
    shutdown: watch::Receiver<bool>,
    killed: watch::Receiver<bool>,
}

impl Connection {
    /// Serves HTTP on `io` until the client closes, the connection idles
    /// out, or the server shuts down.
    async fn serve<I>(self, io: I) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            router,
            builder,
            limits,
            mut shutdown,
            mut killed,
        } = self;
        let activity = Activity::new();
        let service = {
            let activity = Arc::clone(&activity);
            hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                let busy = activity.begin();
                let call = tower::ServiceExt::oneshot(router.clone(), request);
                async move {
                    let response = call.await;
                    drop(busy);
                    response
                }
            })
        };
        let io = Tracked::new(io, Arc::clone(&activity));
        let connection = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        // Set once a graceful close has begun: the time after which the
        // connection is dropped if it has not finished by itself.
        let mut closing: Option<Instant> = None;
        let idle = activity.expired(limits.header_read_timeout, limits.keep_alive_timeout);
        tokio::pin!(idle);
        loop {
            let hard_stop = closing.unwrap_or_else(far_future);
            tokio::select! {
                result = connection.as_mut() => return result,
                _ = shutdown.wait_for(|stop| *stop), if closing.is_none() => {
                    connection.as_mut().graceful_shutdown();
                    // The drain timeout of the listener bounds this one.
                    closing = Some(far_future());
                }
                () = &mut idle, if closing.is_none() => {
                    connection.as_mut().graceful_shutdown();
                    closing = Some(Instant::now() + limits.header_read_timeout);
                }
                () = tokio::time::sleep_until(hard_stop), if closing.is_some() => return Ok(()),
                _ = killed.wait_for(|kill| *kill) => return Ok(()),
            }
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}
