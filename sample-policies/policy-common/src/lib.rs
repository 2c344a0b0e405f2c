//! Pure logic shared by the sample policies.
//!
//! Nothing here depends on a wasm ABI, so the waPC and the component builds of a
//! policy give byte-for-byte the same messages, and the logic is unit-tested on
//! the host with a plain `cargo test -p policy-common`.

pub mod access;
pub mod digest;
pub mod ingress;
pub mod labels;
pub mod privileged;

/// The behaviours of the adversarial test guests, chosen by `settings.behaviour`.
pub mod adversarial {
    use serde::Deserialize;

    /// Every behaviour name that `validate_settings` accepts.
    pub const BEHAVIOURS: &[&str] = &[
        "accept",
        "loop",
        "memory-bomb",
        "trap",
        "counter",
        "garbage",
        "sleep",
        "log-flood",
        "stdio-flood",
        "huge-message",
        "proc-exit",
        "stack-overflow",
    ];

    /// A behaviour of the adversarial guests.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Behaviour {
        /// Accept the request (the default).
        Accept,
        /// Spin forever in `validate`.
        Loop,
        /// Grow memory without bound in `validate`.
        MemoryBomb,
        /// Execute `unreachable` in `validate`.
        Trap,
        /// Count `validate` calls in a static and report the count as the message.
        Counter,
        /// Return a response that is not JSON.
        Garbage,
        /// Sleep for [`SLEEP`] with `std::thread::sleep` (a WASI clock wait).
        Sleep,
        /// Log through the host's log call in a loop, forever.
        LogFlood,
        /// Print to stdout and stderr in a loop, forever.
        StdioFlood,
        /// Reject with a message of [`HUGE_MESSAGE_BYTES`] bytes.
        HugeMessage,
        /// Exit the process with status [`EXIT_STATUS`] instead of answering.
        ProcExit,
        /// Recurse without bound until the call stack is exhausted.
        StackOverflow,
    }

    impl Behaviour {
        /// Parses a behaviour name.
        pub fn from_name(name: &str) -> Option<Self> {
            Some(match name {
                "accept" => Self::Accept,
                "loop" => Self::Loop,
                "memory-bomb" => Self::MemoryBomb,
                "trap" => Self::Trap,
                "counter" => Self::Counter,
                "garbage" => Self::Garbage,
                "sleep" => Self::Sleep,
                "log-flood" => Self::LogFlood,
                "stdio-flood" => Self::StdioFlood,
                "huge-message" => Self::HugeMessage,
                "proc-exit" => Self::ProcExit,
                "stack-overflow" => Self::StackOverflow,
                _ => return None,
            })
        }
    }

    /// The adversarial guests' settings. Keys other than `behaviour` are ignored
    /// so that a test harness can pass extra settings through.
    #[derive(Debug, Default, Deserialize)]
    pub struct Settings {
        /// The behaviour's name; `accept` when absent.
        #[serde(default)]
        pub behaviour: Option<String>,
    }

    impl Settings {
        /// The chosen behaviour, or a message naming the unknown one.
        pub fn behaviour(&self) -> Result<Behaviour, String> {
            match self.behaviour.as_deref() {
                None => Ok(Behaviour::Accept),
                Some(name) => Behaviour::from_name(name).ok_or_else(|| {
                    format!(
                        "unknown behaviour {name:?}; expected one of: {}",
                        BEHAVIOURS.join(", ")
                    )
                }),
            }
        }
    }

    /// Spins forever. The loop condition is a volatile read of a static that
    /// nothing sets, so the optimiser cannot remove the loop.
    pub fn spin_forever() {
        static mut STOP: bool = false;
        // SAFETY: a read of a plain static that is never written.
        while !unsafe { core::ptr::read_volatile(&raw const STOP) } {
            core::hint::spin_loop();
        }
    }

    /// Allocates 1 MiB chunks, filling each, and keeps them all, until the
    /// allocator fails (which aborts: a trap on wasm).
    pub fn hoard_memory_forever() {
        const CHUNK: usize = 1 << 20;
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut chunk = Vec::with_capacity(CHUNK);
            chunk.resize(CHUNK, 0xA5);
            hoard.push(core::hint::black_box(chunk));
        }
    }

    /// Traps: `unreachable` on wasm, a panic elsewhere.
    pub fn trap() -> ! {
        #[cfg(target_arch = "wasm32")]
        core::arch::wasm32::unreachable();
        #[cfg(not(target_arch = "wasm32"))]
        panic!("trap");
    }

    /// Counts calls in a static and returns the new count. Fresh instances
    /// always answer 1.
    pub fn count() -> u32 {
        use core::sync::atomic::{AtomicU32, Ordering};
        static CALLS: AtomicU32 = AtomicU32::new(0);
        CALLS.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// How long the `sleep` behaviour sleeps: far beyond any evaluation deadline.
    pub const SLEEP: core::time::Duration = core::time::Duration::from_secs(30);

    /// Sleeps for [`SLEEP`]. On wasm32-wasip1 this is one `poll_oneoff` with a
    /// relative clock subscription; on wasm32-wasip2, a
    /// `monotonic-clock.subscribe-duration` pollable and `pollable.block`.
    pub fn sleep() {
        std::thread::sleep(SLEEP);
    }

    /// The text of the `n`th message of the `log-flood` behaviour.
    pub fn flood_line(n: u64) -> String {
        format!("log-flood message {n}: the guest logs in a loop until its deadline")
    }

    /// Writes to stdout and stderr in a loop, forever: 1 KiB lines on stdout,
    /// short ones on stderr. Write errors are ignored (unlike `println!`, which
    /// panics), so the guest floods whatever the host does with the bytes.
    pub fn flood_stdio() -> ! {
        use std::io::Write;
        let line = [b'#'; 1023];
        let mut n: u64 = 0;
        loop {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&line);
            let _ = writeln!(out, " stdout {n}");
            drop(out);
            let _ = writeln!(std::io::stderr().lock(), "stderr {n}");
            n = n.wrapping_add(1);
        }
    }

    /// The size of the `huge-message` behaviour's message: 48 MiB.
    pub const HUGE_MESSAGE_BYTES: usize = 48 << 20;

    /// The `huge-message` rejection as waPC JSON, built in one allocation so
    /// that it fits a 64 MiB memory cap.
    pub fn huge_rejection_json() -> Vec<u8> {
        const HEAD: &[u8] = br#"{"accepted":false,"message":""#;
        const TAIL: &[u8] = br#""}"#;
        let mut json = Vec::with_capacity(HEAD.len() + HUGE_MESSAGE_BYTES + TAIL.len());
        json.extend_from_slice(HEAD);
        json.resize(HEAD.len() + HUGE_MESSAGE_BYTES, b'x');
        json.extend_from_slice(TAIL);
        json
    }

    /// The `huge-message` text, in one allocation.
    pub fn huge_message() -> String {
        "x".repeat(HUGE_MESSAGE_BYTES)
    }

    /// The status the `proc-exit` behaviour exits with.
    pub const EXIT_STATUS: i32 = 3;

    /// Exits with [`EXIT_STATUS`]: WASI `proc_exit` on wasip1,
    /// `wasi:cli/exit.exit` on wasip2.
    pub fn exit() -> ! {
        std::process::exit(EXIT_STATUS)
    }

    /// Recurses until the call stack is exhausted. Each frame keeps a value
    /// that the optimiser cannot see through, so the recursion cannot become
    /// a loop; nothing is kept in linear memory, so it is the wasm call stack
    /// that overflows, not the shadow stack.
    pub fn overflow_stack() -> u64 {
        #[inline(never)]
        fn recurse(depth: u64) -> u64 {
            let here = core::hint::black_box(depth);
            if core::hint::black_box(here == u64::MAX) {
                return here;
            }
            // Not `recurse(..) + here`: LLVM turns accumulator recursion into a loop.
            let below = core::hint::black_box(recurse(here + 1));
            below.rotate_left(1) ^ here
        }
        recurse(0)
    }

    /// Parses the settings JSON text and checks the behaviour name.
    pub fn parse_settings(settings: &[u8]) -> Result<Behaviour, String> {
        let settings: Settings =
            serde_json::from_slice(settings).map_err(|e| format!("invalid settings: {e}"))?;
        settings.behaviour()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn names() {
            for name in BEHAVIOURS {
                assert!(Behaviour::from_name(name).is_some(), "{name}");
            }
            assert_eq!(parse_settings(b"{}"), Ok(Behaviour::Accept));
            assert_eq!(
                parse_settings(br#"{"behaviour":"loop"}"#),
                Ok(Behaviour::Loop)
            );
            assert_eq!(
                parse_settings(br#"{"behaviour":"memory-bomb","x":1}"#),
                Ok(Behaviour::MemoryBomb)
            );
            assert_eq!(
                parse_settings(br#"{"behaviour":"stack-overflow"}"#),
                Ok(Behaviour::StackOverflow)
            );
            let err = parse_settings(br#"{"behaviour":"nope"}"#).unwrap_err();
            assert!(err.contains("\"nope\""), "{err}");
        }

        #[test]
        fn the_huge_rejection_is_json_of_the_announced_size() {
            let json = huge_rejection_json();
            assert_eq!(json.capacity(), json.len(), "one exact allocation");
            let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
            assert_eq!(value["accepted"], false);
            assert_eq!(value["message"].as_str().unwrap().len(), HUGE_MESSAGE_BYTES);
            assert_eq!(huge_message().len(), HUGE_MESSAGE_BYTES);
        }
    }
}
