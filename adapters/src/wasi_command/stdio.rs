//! The guest's stdio, in memory.
//!
//! - stdin holds the payload, then each host call's answer. A WASI command
//!   policy reads its payload until end of file, and after each `host.call`
//!   reads the answer the same way; so the pipe reports end of file when it
//!   is empty and can be refilled by the host between the two
//!   (wasmtime-wasi's `MemoryInputPipe` cannot be refilled).
//! - stdout and stderr are capped: a write past the cap traps the guest at
//!   once, rather than failing quietly (wasmtime-wasi's `MemoryOutputPipe`
//!   reports a closed stream, which a guest may ignore in a loop until its
//!   deadline).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use wasmtime_wasi::cli::{IsTerminal, StdinStream, StdoutStream};
use wasmtime_wasi::p2::{InputStream, OutputStream, Pollable, StreamError};

/// A refillable in-memory stdin. Clones share the buffer.
#[derive(Clone, Default)]
pub(crate) struct StdinPipe {
    buffer: Arc<Mutex<VecDeque<u8>>>,
}

impl StdinPipe {
    pub(crate) fn new(bytes: &[u8]) -> Self {
        let pipe = StdinPipe::default();
        pipe.refill(bytes);
        pipe
    }

    /// Replace whatever the guest has not read with `bytes`.
    pub(crate) fn refill(&self, bytes: &[u8]) {
        let mut buffer = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        buffer.clear();
        buffer.extend(bytes);
    }

    fn take(&self, max: usize) -> Vec<u8> {
        let mut buffer = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        let n = max.min(buffer.len());
        buffer.drain(..n).collect()
    }
}

#[wasmtime_wasi::async_trait]
impl InputStream for StdinPipe {
    fn read(&mut self, size: usize) -> Result<Bytes, StreamError> {
        let bytes = self.take(size);
        if bytes.is_empty() && size > 0 {
            return Err(StreamError::Closed);
        }
        Ok(Bytes::from(bytes))
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for StdinPipe {
    // Always ready: the data is in memory, or there is none (end of file).
    async fn ready(&mut self) {}
}

impl AsyncRead for StdinPipe {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let bytes = self.take(buf.remaining());
        buf.put_slice(&bytes);
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for StdinPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdinStream for StdinPipe {
    fn p2_stream(&self) -> Box<dyn InputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncRead + Send + Sync> {
        Box::new(self.clone())
    }
}

/// An in-memory stdout or stderr of at most `cap` bytes. Clones share it.
#[derive(Clone)]
pub(crate) struct CappedOutput {
    buffer: Arc<Mutex<Vec<u8>>>,
    overflowed: Arc<AtomicBool>,
    cap: usize,
}

impl CappedOutput {
    pub(crate) fn new(cap: usize) -> Self {
        CappedOutput {
            buffer: Arc::default(),
            overflowed: Arc::default(),
            cap,
        }
    }

    /// What the guest wrote (at most the cap).
    pub(crate) fn contents(&self) -> Vec<u8> {
        self.buffer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether the guest tried to write past the cap.
    pub(crate) fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Relaxed)
    }

    /// Append `bytes`, or record the overflow and refuse them all.
    fn append(&self, bytes: &[u8]) -> bool {
        let mut buffer = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        if bytes.len() > self.cap - buffer.len() {
            self.overflowed.store(true, Ordering::Relaxed);
            return false;
        }
        buffer.extend_from_slice(bytes);
        true
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CappedOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        if self.append(&bytes) {
            Ok(())
        } else {
            Err(StreamError::Trap(wasmtime::Error::msg(format!(
                "the policy wrote more than {} bytes",
                self.cap
            ))))
        }
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always ready for a write of any reasonable size: one past the cap
        // traps in `write`.
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for CappedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(if self.append(buf) {
            Ok(buf.len())
        } else {
            Err(std::io::Error::other("output cap exceeded"))
        })
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for CappedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_to_end_of_file_and_refills() {
        let mut pipe = StdinPipe::new(b"hello");
        assert_eq!(&pipe.read(3).unwrap()[..], b"hel");
        assert_eq!(&pipe.read(10).unwrap()[..], b"lo");
        assert!(matches!(pipe.read(10), Err(StreamError::Closed)));
        pipe.refill(b"answer");
        assert_eq!(&pipe.read(100).unwrap()[..], b"answer");
        assert!(matches!(pipe.read(1), Err(StreamError::Closed)));
    }

    #[test]
    fn output_is_capped() {
        let mut out = CappedOutput::new(4);
        out.write(Bytes::from_static(b"abc")).unwrap();
        assert!(!out.overflowed());
        assert!(matches!(
            out.write(Bytes::from_static(b"de")),
            Err(StreamError::Trap(_))
        ));
        assert!(out.overflowed());
        assert_eq!(out.contents(), b"abc");
    }
}
