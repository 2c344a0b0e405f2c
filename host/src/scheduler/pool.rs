//! The evaluation threads: a fixed set of long-lived threads that run the
//! jobs the scheduler has granted a slot to.
//!
//! Why not `tokio::task::spawn_blocking`: its pool is shared with every
//! other blocking task of the process (file reads, DNS), grows to 512
//! threads, and parks idle threads for 10 s before retiring them. A pool
//! sized by the scheduler's slots cannot be oversubscribed (a job is only
//! submitted once a slot is granted, and each slot maps to a thread), keeps
//! wasmtime's per-thread state warm, and names its threads for profilers.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, PoisonError};

/// A unit of work for an evaluation thread.
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// Long-lived evaluation threads pulling jobs from one queue. Dropping the
/// pool lets each thread finish its current job and exit.
pub(crate) struct EvaluationPool {
    jobs: Sender<Job>,
}

/// Native stack of an evaluation thread: room for wasmtime's guest stack
/// limit plus the host frames around it (the same as tokio's blocking
/// threads, which ran evaluations before).
const THREAD_STACK_BYTES: usize = 2 * 1024 * 1024;

impl EvaluationPool {
    /// Starts `threads` evaluation threads.
    pub(crate) fn new(threads: usize) -> std::io::Result<Self> {
        let (jobs, receiver) = channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for n in 0..threads.max(1) {
            let receiver = Arc::clone(&receiver);
            std::thread::Builder::new()
                .name(format!("portcullis-eval-{n}"))
                .stack_size(THREAD_STACK_BYTES)
                .spawn(move || run_jobs(&receiver))?;
        }
        Ok(Self { jobs })
    }

    /// Queues `job`; an idle thread picks it up. Returns the job back when
    /// every thread has gone (which only happens if they panicked outside a
    /// job, i.e. never).
    pub(crate) fn submit(&self, job: Job) -> Result<(), Job> {
        self.jobs.send(job).map_err(|e| e.0)
    }
}

fn run_jobs(receiver: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job; a poisoned
        // lock (a panic while receiving, which cannot happen) is still usable.
        let job = receiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recv();
        let Ok(job) = job else {
            return;
        };
        // A panicking evaluation must not take the thread with it: the job
        // wrapper reports the panic to its waiter.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}
