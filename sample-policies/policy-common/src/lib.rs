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
            let err = parse_settings(br#"{"behaviour":"nope"}"#).unwrap_err();
            assert!(err.contains("\"nope\""), "{err}");
        }
    }
}
