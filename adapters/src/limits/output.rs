//! [`GuestOutput`]: everything a guest writes to the log in one evaluation,
//! through one budget.
//!
//! Log calls (waPC `tracing/log` and `__console_log`, WIT `host.log`) and the
//! lines a guest writes to stdout and stderr become `tracing` events with the
//! target `policy_log` and the policy id, at most
//! [`GuestLimits::max_log_messages`] of them and
//! [`GuestLimits::max_log_bytes`] in all, each cut at
//! [`GuestLimits::max_log_line_bytes`]. What is over the budget is counted
//! and reported in one warning when the evaluation ends, so a guest that logs
//! in a loop until its deadline costs a bounded number of log lines.

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use super::GuestLimits;
use crate::guest_log::{self, GuestLevel, StdStream};

/// The log budget of one evaluation, shared by the guest's log calls and its
/// stdout and stderr. Created on first use; dropped with the evaluation's
/// store, when it flushes unterminated stdout/stderr lines and reports what
/// it suppressed.
pub(crate) struct GuestOutput {
    policy: Arc<str>,
    limits: GuestLimits,
    state: Mutex<Budget>,
}

#[derive(Default)]
struct Budget {
    messages: u32,
    bytes: usize,
    suppressed_messages: u64,
    suppressed_bytes: u64,
    stdout: PendingLine,
    stderr: PendingLine,
}

/// The unterminated end of what a guest wrote to one stream, up to the line
/// cap; `cut` counts the bytes of that line beyond it.
#[derive(Default)]
struct PendingLine {
    bytes: Vec<u8>,
    cut: usize,
}

impl Budget {
    fn has_room(&self, limits: &GuestLimits) -> bool {
        self.messages < limits.max_log_messages && self.bytes < limits.max_log_bytes
    }

    fn suppress(&mut self, bytes: usize) {
        self.suppressed_messages += 1;
        self.suppressed_bytes += bytes as u64;
    }
}

impl GuestOutput {
    /// A fresh budget for one evaluation of `policy`.
    pub(crate) fn new(policy: Arc<str>, limits: GuestLimits) -> Arc<Self> {
        Arc::new(GuestOutput {
            policy,
            limits,
            state: Mutex::new(Budget::default()),
        })
    }

    fn budget(&self) -> MutexGuard<'_, Budget> {
        // The budget holds counters only; one left behind by a panic is fine.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether another message would be logged. Lets a caller skip parsing
    /// a message that would be suppressed anyway; it must then call
    /// [`Self::suppress`].
    pub(crate) fn has_room(&self) -> bool {
        self.budget().has_room(&self.limits)
    }

    /// Count a message of `bytes` that was not logged.
    pub(crate) fn suppress(&self, bytes: usize) {
        self.budget().suppress(bytes);
    }

    /// Log one message of the guest, if the budget allows.
    pub(crate) fn log(&self, level: GuestLevel, message: &str, fields: Option<&str>) {
        self.log_cut(level, message, 0, fields);
    }

    /// Log the head of a message of which `cut` more bytes were not read.
    pub(crate) fn log_head(&self, level: GuestLevel, head: &str, cut: usize) {
        self.log_cut(level, head, cut, None);
    }

    fn log_cut(&self, level: GuestLevel, message: &str, already_cut: usize, fields: Option<&str>) {
        let max_line = self.limits.max_log_line_bytes;
        let mut budget = self.budget();
        if !budget.has_room(&self.limits) {
            budget.suppress(message.len() + already_cut + fields.map_or(0, str::len));
            return;
        }
        let message = cut(message, max_line, already_cut);
        let fields = fields.map(|f| cut(f, max_line, 0));
        budget.messages += 1;
        budget.bytes += message.len() + fields.as_deref().map_or(0, str::len);
        drop(budget);
        guest_log::emit(&self.policy, level, &message, fields.as_deref());
    }

    /// Take bytes the guest wrote to stdout or stderr: each complete line is
    /// a log message.
    fn write(&self, stream: StdStream, mut bytes: &[u8]) {
        let limits = &self.limits;
        let mut budget = self.budget();
        while !bytes.is_empty() {
            let (segment, complete) = match bytes.iter().position(|b| *b == b'\n') {
                Some(end) => (&bytes[..end], true),
                None => (bytes, false),
            };
            bytes = &bytes[(segment.len() + usize::from(complete)).min(bytes.len())..];
            let room = budget.has_room(limits);
            let pending = match stream {
                StdStream::Stdout => &mut budget.stdout,
                StdStream::Stderr => &mut budget.stderr,
            };
            if !room {
                // Over budget: count, keep nothing.
                let len = pending.bytes.len() + pending.cut + segment.len();
                if complete {
                    *pending = PendingLine::default();
                    budget.suppress(len);
                } else {
                    pending.cut += segment.len();
                }
                continue;
            }
            let keep = segment.len().min(
                limits
                    .max_log_line_bytes
                    .saturating_sub(pending.bytes.len()),
            );
            pending.bytes.extend_from_slice(&segment[..keep]);
            pending.cut += segment.len() - keep;
            if complete {
                let line = std::mem::take(pending);
                self.emit_line(&mut budget, stream, line);
            }
        }
    }

    fn emit_line(&self, budget: &mut Budget, stream: StdStream, line: PendingLine) {
        let text = String::from_utf8_lossy(&line.bytes);
        let text = cut(&text, self.limits.max_log_line_bytes, line.cut);
        budget.messages += 1;
        budget.bytes += text.len();
        guest_log::emit_stdio(&self.policy, stream, &text);
    }
}

impl Drop for GuestOutput {
    fn drop(&mut self) {
        let budget = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        for stream in [StdStream::Stdout, StdStream::Stderr] {
            let pending = match stream {
                StdStream::Stdout => std::mem::take(&mut budget.stdout),
                StdStream::Stderr => std::mem::take(&mut budget.stderr),
            };
            if pending.bytes.is_empty() && pending.cut == 0 {
                continue;
            }
            if budget.has_room(&self.limits) {
                let text = String::from_utf8_lossy(&pending.bytes);
                let text = cut(&text, self.limits.max_log_line_bytes, pending.cut);
                budget.messages += 1;
                guest_log::emit_stdio(&self.policy, stream, &text);
            } else {
                budget.suppress(pending.bytes.len() + pending.cut);
            }
        }
        if budget.suppressed_messages > 0 {
            guest_log::emit_suppressed(
                &self.policy,
                budget.suppressed_messages,
                budget.suppressed_bytes,
                &self.limits,
            );
        }
    }
}

/// `text` cut to at most `max` bytes (on a character boundary), with a marker
/// saying how many bytes were cut, counting `already_cut` more.
fn cut(text: &str, max: usize, already_cut: usize) -> Cow<'_, str> {
    if text.len() <= max && already_cut == 0 {
        return Cow::Borrowed(text);
    }
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let dropped = text.len() - end + already_cut;
    Cow::Owned(format!("{}… [{dropped} more bytes cut]", &text[..end]))
}

/// The guest's stdout or stderr: a WASI stream that feeds [`GuestOutput`].
/// It never blocks and never fails, so a guest's `println!` neither stalls
/// nor panics, whatever the budget.
#[derive(Clone)]
pub(crate) struct GuestStdio {
    output: Arc<GuestOutput>,
    stream: StdStream,
}

impl GuestStdio {
    pub(crate) fn new(output: Arc<GuestOutput>, stream: StdStream) -> Self {
        GuestStdio { output, stream }
    }
}

impl IsTerminal for GuestStdio {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStdio {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

/// How much a guest may write in one WASI call; the copy out of its memory
/// is bounded by the host-call fuel as well.
const WRITE_PERMIT: usize = 1 << 20;

#[wasmtime_wasi::async_trait]
impl OutputStream for GuestStdio {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.output.write(self.stream, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestStdio {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestStdio {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.output.write(self.stream, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_short_text_and_marks_long_text() {
        assert_eq!(cut("short", 10, 0), "short");
        assert_eq!(
            cut("0123456789abc", 10, 0),
            "0123456789… [3 more bytes cut]"
        );
        // On a character boundary: "é" is two bytes.
        assert_eq!(cut("aé", 2, 0), "a… [2 more bytes cut]");
        assert_eq!(cut("abc", 10, 5), "abc… [5 more bytes cut]");
    }

    fn limits() -> GuestLimits {
        GuestLimits {
            max_log_messages: 3,
            max_log_bytes: 1000,
            max_log_line_bytes: 8,
            ..GuestLimits::DEFAULT
        }
    }

    #[test]
    fn the_budget_counts_messages_and_stdio_lines_together() {
        let output = GuestOutput::new("p".into(), limits());
        output.log(GuestLevel::Info, "one", None);
        output.write(StdStream::Stdout, b"two\nthr");
        output.write(StdStream::Stdout, b"ee, a long line\nfour\n");
        output.log(GuestLevel::Info, "five", None);
        let budget = output.budget();
        assert_eq!(budget.messages, 3);
        assert_eq!(budget.suppressed_messages, 2, "four and five");
        assert_eq!(budget.suppressed_bytes, 4 + 4);
        assert!(budget.stdout.bytes.is_empty());
    }

    #[test]
    fn an_endless_line_keeps_only_its_head() {
        let output = GuestOutput::new("p".into(), limits());
        for _ in 0..1000 {
            output.write(StdStream::Stderr, b"0123456789");
        }
        let budget = output.budget();
        assert_eq!(budget.stderr.bytes, b"01234567");
        assert_eq!(budget.stderr.cut, 10_000 - 8);
        assert_eq!(budget.messages, 0);
    }
}
