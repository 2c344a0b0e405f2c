//! What a connection is doing, for its header-read and keep-alive clocks.
//!
//! hyper's own HTTP/1.1 header timer also runs between requests, so it
//! would close a kept-alive connection after the header timeout instead of
//! the keep-alive timeout, and it does not run before hyper-util's `auto`
//! builder has seen enough bytes to pick a protocol. The clocks here see the
//! plaintext bytes ([`Tracked`]) and the requests ([`Busy`]) of one
//! connection:
//!
//! - **idle**: no request in flight since `idle_since` (the end of the last
//!   request, or the opening of the connection); the limit is the header
//!   timeout before the first request (a client that connects and sends
//!   nothing) and the keep-alive timeout after it;
//! - **head**: on an HTTP/1.1 connection, bytes arrived while no request
//!   was in flight, so a request head is being sent: it must be complete
//!   (the request handed to the service) within the header timeout. HTTP/2
//!   has no such phase (control frames arrive any time); its dribbled
//!   HEADERS frames start no request, so the idle clock cuts them.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// The HTTP/2 connection preface starts with this; an HTTP/1.1 request
/// line never does.
const H2_PREFACE_START: &[u8] = b"PRI *";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Unknown,
    Http1,
    Http2,
}

struct State {
    in_flight: usize,
    idle_since: Instant,
    seen_request: bool,
    head_started: Option<Instant>,
    protocol: Protocol,
}

/// Requests in flight on one connection, and its clocks.
pub(crate) struct Activity {
    state: Mutex<State>,
    changed: Notify,
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                in_flight: 0,
                idle_since: Instant::now(),
                seen_request: false,
                head_started: None,
                protocol: Protocol::Unknown,
            }),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A request was handed to the service; it is in flight until the
    /// returned guard is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> Busy {
        let mut state = self.lock();
        state.in_flight += 1;
        state.head_started = None;
        Busy(Arc::clone(self))
    }

    fn bytes_read(&self, bytes: &[u8]) {
        let mut state = self.lock();
        if state.protocol == Protocol::Unknown {
            state.protocol = if bytes.starts_with(H2_PREFACE_START) {
                Protocol::Http2
            } else {
                Protocol::Http1
            };
        }
        if state.protocol == Protocol::Http1 && state.in_flight == 0 && state.head_started.is_none()
        {
            state.head_started = Some(Instant::now());
            drop(state);
            self.changed.notify_one();
        }
    }

    /// Completes when the connection should be closed: idle for its limit,
    /// or a request head not finished within the header timeout.
    pub(crate) fn expired(
        self: &Arc<Self>,
        header_read_timeout: Duration,
        keep_alive_timeout: Duration,
    ) -> impl Future<Output = ()> + use<> {
        let activity = Arc::clone(self);
        async move {
            loop {
                let deadline = {
                    let state = activity.lock();
                    if state.in_flight > 0 {
                        None
                    } else {
                        let idle_limit = if state.seen_request {
                            keep_alive_timeout
                        } else {
                            header_read_timeout
                        };
                        let idle = state.idle_since + idle_limit;
                        Some(match state.head_started {
                            Some(started) => idle.min(started + header_read_timeout),
                            None => idle,
                        })
                    }
                };
                let changed = activity.changed.notified();
                match deadline {
                    Some(deadline) if Instant::now() >= deadline => return,
                    Some(deadline) => {
                        tokio::select! {
                            () = tokio::time::sleep_until(deadline) => {}
                            () = changed => {}
                        }
                    }
                    // A request is in flight: the request timeout bounds it.
                    None => changed.await,
                }
            }
        }
    }
}

/// A request in flight; its end restarts the connection's idle clock.
pub(crate) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.in_flight -= 1;
        state.seen_request = true;
        state.idle_since = Instant::now();
        drop(state);
        self.0.changed.notify_one();
    }
}

/// A connection's byte stream, reporting what it reads to its [`Activity`].
pub(crate) struct Tracked<I> {
    io: I,
    activity: Arc<Activity>,
}

impl<I> Tracked<I> {
    pub(crate) fn new(io: I, activity: Arc<Activity>) -> Self {
        Self { io, activity }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result
            && buf.filled().len() > before
        {
            self.activity.bytes_read(&buf.filled()[before..]);
        }
        result
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
