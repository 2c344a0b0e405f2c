//! Running async host work for a policy that waits on a blocking thread.
//!
//! Policies run on blocking threads and call the host synchronously. Work
//! that needs the network (the API server, a registry, DNS) is spawned as its
//! own task on the tokio runtime and the calling thread waits for it, no
//! longer than the evaluation's deadline. Every call is an independent task:
//! there is no single loop that serialises the calls of all policies, which
//! was the incumbent's bottleneck (one callback loop for every evaluation).

use std::future::Future;
use std::sync::mpsc;

use portcullis_adapters::{CallContext, CapabilityError};
use tokio::runtime::Handle;

/// A handle on the runtime that runs host work. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Bridge {
    handle: Handle,
}

impl Bridge {
    /// Runs host work on `handle`'s runtime.
    pub fn new(handle: Handle) -> Self {
        Self { handle }
    }

    /// The runtime of the calling async context, if any.
    pub fn current() -> Option<Self> {
        Handle::try_current().ok().map(Self::new)
    }

    /// The runtime handle, to spawn background tasks.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Runs `work` and waits for its answer until `ctx.deadline`. When the
    /// deadline passes first, the task is cancelled and the caller gets
    /// [`CapabilityError::DeadlineExceeded`] naming `what`.
    ///
    /// Must be called from a thread that is not a runtime worker (the
    /// evaluation's blocking thread): it blocks until the answer comes.
    pub fn run<T, F>(
        &self,
        ctx: &CallContext<'_>,
        what: &str,
        work: F,
    ) -> Result<T, CapabilityError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, CapabilityError>> + Send + 'static,
    {
        let remaining = ctx.remaining();
        if remaining.is_zero() {
            return Err(CapabilityError::DeadlineExceeded(what.to_string()));
        }
        let (sender, receiver) = mpsc::sync_channel(1);
        let task = self.handle.spawn(async move {
            // The receiver is gone when the caller gave up; nothing to do then.
            let _ = sender.send(work.await);
        });
        match receiver.recv_timeout(remaining) {
            Ok(answer) => answer,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                task.abort();
                Err(CapabilityError::DeadlineExceeded(what.to_string()))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(CapabilityError::Failed(format!(
                "{what}: the host task stopped without an answer"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn ctx(timeout: Duration) -> CallContext<'static> {
        CallContext {
            policy_id: "p",
            deadline: Instant::now() + timeout,
        }
    }

    #[test]
    fn answers_and_deadlines() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let bridge = Bridge::new(runtime.handle().clone());
        let answer = bridge.run(&ctx(Duration::from_secs(5)), "quick", async { Ok(7) });
        assert_eq!(answer, Ok(7));

        let started = Instant::now();
        let answer: Result<(), _> = bridge.run(&ctx(Duration::from_millis(100)), "slow", async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(())
        });
        assert_eq!(
            answer,
            Err(CapabilityError::DeadlineExceeded("slow".to_string()))
        );
        assert!(started.elapsed() < Duration::from_secs(5));

        let expired = CallContext {
            policy_id: "p",
            deadline: Instant::now() - Duration::from_millis(1),
        };
        let answer: Result<(), _> = bridge.run(&expired, "late", async { Ok(()) });
        assert!(matches!(answer, Err(CapabilityError::DeadlineExceeded(_))));
    }

    /// Calls from several blocking threads run at the same time: a slow call
    /// does not hold up a quick one.
    #[test]
    fn calls_are_not_serialised() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let bridge = Bridge::new(runtime.handle().clone());
        let slow_bridge = bridge.clone();
        let slow = std::thread::spawn(move || {
            slow_bridge.run(&ctx(Duration::from_secs(10)), "slow", async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                Ok(())
            })
        });
        std::thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        assert_eq!(
            bridge.run(&ctx(Duration::from_secs(10)), "quick", async { Ok(1) }),
            Ok(1)
        );
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(slow.join().unwrap(), Ok(()));
    }
}
