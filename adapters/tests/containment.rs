//! Whatever a guest does, it costs only its own evaluation: waits end at the
//! deadline, log and stdio floods stay within the budget, huge answers are
//! refused before they are copied, and exits and stack overflows are
//! ordinary, typed failures. Each test runs the real adversarial guests of
//! `sample-policies/` (`target/policies/`, built by `just policies`) in both
//! ABIs, and the Go guest where Go waits differently.
//!
//! The time bounds are generous on purpose (a loaded 2-core machine): they
//! check that a 30 s wait is cut at a deadline of a fraction of a second, not
//! how fast. Figures are in BENCHMARKS.md.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::log_capture::{Event, capture};
use common::{engine, fixture, load};
use portcullis_adapters::{
    CallContext, CapabilityError, EngineConfig, EvalContext, EvalError, GuestLimits,
    HostCapabilities, LoadedModule, PolicyEngine, Settings,
};
use serde_json::json;

/// Both ABIs' adversarial guests, and the Go one (behaviours `accept` and
/// `sleep` only).
const RUST_GUESTS: [&str; 2] = ["adversarial-wapc", "adversarial-component"];
const GO_GUEST: &str = "adversarial-go";

/// Far more than a cut wait takes, far less than the 30 s the guests sleep.
const SLACK: Duration = Duration::from_secs(5);

fn settings(behaviour: &str) -> Settings {
    Settings::new(json!({"behaviour": behaviour}))
}

/// Evaluate `behaviour` of `guest` with `timeout`, as policy `policy`; the
/// error, and how long it took.
fn run(guest: &str, behaviour: &str, policy: &str, timeout: Duration) -> (EvalError, Duration) {
    let ctx = EvalContext::new(policy, timeout);
    // Compiled (once per test binary) before the clock starts.
    let module = load(guest);
    let started = Instant::now();
    let result = module.validate(&ctx, &fixture("pod-unprivileged"), &settings(behaviour));
    let took = started.elapsed();
    match result {
        Err(err) => (err, took),
        // Not the verdict itself: a huge message would flood the test output.
        Ok(verdict) => panic!(
            "{guest} {behaviour}: answered after {took:?}, accepted: {}, message of {} bytes",
            verdict.accepted,
            verdict.message.map_or(0, |m| m.len())
        ),
    }
}

/// A healthy policy still answers.
fn assert_serving() {
    let ctx = EvalContext::new("healthy", Duration::from_secs(2));
    for abi in ["wapc", "component"] {
        let verdict = load(&format!("pod-privileged-{abi}"))
            .validate(&ctx, &fixture("pod-privileged"), &Settings::default())
            .unwrap();
        assert!(!verdict.accepted, "{abi}");
    }
}

#[test]
fn a_sleeping_guest_times_out_at_its_deadline() {
    let deadline = Duration::from_millis(200);
    for guest in RUST_GUESTS.into_iter().chain([GO_GUEST]) {
        let (err, took) = run(guest, "sleep", "sleeper", deadline);
        eprintln!("{guest}: a 30 s sleep with a {deadline:?} deadline ended after {took:?}");
        assert!(
            matches!(err, EvalError::Timeout(d) if d == deadline),
            "{guest}: {err}"
        );
        assert!(
            took >= deadline,
            "{guest}: cut before its deadline, {took:?}"
        );
        assert!(took < SLACK, "{guest}: the 30 s sleep took {took:?}");
    }
    assert_serving();
}

#[test]
fn sleeping_guests_do_not_hold_up_other_evaluations() {
    // Compiled beforehand: compiling is not what this measures.
    for name in RUST_GUESTS
        .into_iter()
        .chain(["pod-privileged-wapc", "pod-privileged-component"])
    {
        load(name);
    }
    let deadline = Duration::from_millis(1500);
    let done = Arc::new(AtomicBool::new(false));
    let sleepers: Vec<_> = RUST_GUESTS
        .into_iter()
        .map(|guest| {
            let done = done.clone();
            std::thread::spawn(move || {
                let outcome = run(guest, "sleep", "sleeper", deadline);
                done.store(true, Ordering::SeqCst);
                (guest, outcome)
            })
        })
        .collect();
    // While both sleep, a third evaluation on another thread answers.
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    assert_serving();
    assert!(
        !done.load(Ordering::SeqCst),
        "a sleeper ended before the healthy evaluation: the test proves nothing"
    );
    assert!(started.elapsed() < deadline, "{:?}", started.elapsed());
    for sleeper in sleepers {
        let (guest, (err, took)) = sleeper.join().unwrap();
        assert!(matches!(err, EvalError::Timeout(_)), "{guest}: {err}");
        assert!(took < deadline + SLACK, "{guest}: took {took:?}");
    }
}

fn policy_events<'a>(events: &'a [Event], policy: &str) -> Vec<&'a Event> {
    events.iter().filter(|e| e.policy == policy).collect()
}

/// The events of a flood: at most the budget, and one line that says how
/// much was suppressed.
fn assert_within_budget(guest: &str, events: &[&Event]) {
    let limits = GuestLimits::DEFAULT;
    assert!(
        events.len() <= limits.max_log_messages as usize + 1,
        "{guest}: {} events",
        events.len()
    );
    let suppressed: Vec<_> = events
        .iter()
        .filter(|e| e.suppressed_messages.is_some())
        .collect();
    assert_eq!(suppressed.len(), 1, "{guest}: {suppressed:?}");
    assert!(
        suppressed[0].suppressed_messages.unwrap() > 100,
        "{guest}: the flood was not a flood: {:?}",
        suppressed[0]
    );
    assert!(suppressed[0].message.contains("suppressed"), "{guest}");
    let bytes: usize = events.iter().map(|e| e.message.len()).sum();
    assert!(
        bytes <= limits.max_log_bytes + limits.max_log_line_bytes + 1024,
        "{guest}: {bytes} bytes logged"
    );
}

#[test]
fn a_log_flood_costs_a_bounded_number_of_lines() {
    for guest in RUST_GUESTS {
        let policy = format!("{guest}-log-flood");
        let ((err, _), events) =
            capture(|| run(guest, "log-flood", &policy, Duration::from_millis(300)));
        assert!(matches!(err, EvalError::Timeout(_)), "{guest}: {err}");
        let events = policy_events(&events, &policy);
        assert!(
            events
                .iter()
                .any(|e| e.message.contains("log-flood message 0")),
            "{guest}: the first messages are logged, tagged with the policy id"
        );
        assert_within_budget(guest, &events);
    }
}

#[test]
fn stdout_and_stderr_go_to_the_log_within_the_budget() {
    let limits = GuestLimits::DEFAULT;
    for guest in RUST_GUESTS {
        let policy = format!("{guest}-stdio-flood");
        let ((err, _), events) =
            capture(|| run(guest, "stdio-flood", &policy, Duration::from_millis(300)));
        assert!(matches!(err, EvalError::Timeout(_)), "{guest}: {err}");
        let events = policy_events(&events, &policy);
        let stream = |name: &str| {
            events
                .iter()
                .filter(|e| e.stream.as_deref() == Some(name))
                .count()
        };
        assert!(
            stream("stdout") > 0,
            "{guest}: no stdout line in {events:?}"
        );
        assert!(stream("stderr") > 0, "{guest}: no stderr line");
        for event in &events {
            assert!(
                event.message.len() <= limits.max_log_line_bytes + 64,
                "{guest}: a line of {} bytes",
                event.message.len()
            );
        }
        assert_within_budget(guest, &events);
    }
    assert_serving();
}

#[test]
fn a_huge_answer_is_malformed_output_not_a_huge_allocation() {
    for guest in RUST_GUESTS {
        let (err, _) = run(guest, "huge-message", "huge", Duration::from_secs(5));
        assert!(
            matches!(err, EvalError::MalformedOutput(_)),
            "{guest}: {err}"
        );
        let limit = GuestLimits::DEFAULT.max_transfer_bytes.to_string();
        assert!(err.to_string().contains(&limit), "{guest}: {err}");
    }
    assert_serving();
}

#[test]
fn proc_exit_is_an_exit_error() {
    let (err, _) = run(
        "adversarial-wapc",
        "proc-exit",
        "exit",
        Duration::from_secs(2),
    );
    assert!(matches!(err, EvalError::Exited(3)), "{err}");
    assert_eq!(err.kind(), "exit");
    // WASI 0.2 has only success and failure: `exit(3)` is `exit(err)`, status 1.
    let (err, _) = run(
        "adversarial-component",
        "proc-exit",
        "exit",
        Duration::from_secs(2),
    );
    assert!(matches!(err, EvalError::Exited(1)), "{err}");
    assert!(err.to_string().contains("instead of answering"), "{err}");
    assert_serving();
}

#[test]
fn a_stack_overflow_is_a_trap() {
    for guest in RUST_GUESTS {
        let (err, _) = run(guest, "stack-overflow", "overflow", Duration::from_secs(5));
        assert!(matches!(err, EvalError::Trap(_)), "{guest}: {err}");
        assert!(err.to_string().contains("stack overflow"), "{guest}: {err}");
    }
    assert_serving();
}

/// A capability that answers only after the evaluation's deadline, and
/// records the deadline it was given.
struct Overrunning {
    given: std::sync::Mutex<Option<Instant>>,
}

impl HostCapabilities for Overrunning {
    fn call(
        &self,
        ctx: &CallContext<'_>,
        _namespace: &str,
        _operation: &str,
        _payload: &[u8],
    ) -> Result<Vec<u8>, CapabilityError> {
        *self.given.lock().unwrap() = Some(ctx.deadline);
        std::thread::sleep(ctx.remaining() + Duration::from_millis(100));
        Ok(br#"{"ips":[]}"#.to_vec())
    }
}

/// A waPC guest that makes one host call and then accepts.
const HOST_CALL_THEN_ACCEPT: &str = r#"(module
  (import "wapc" "__host_call"
    (func $host_call (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wapc" "__guest_response" (func $respond (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "kubewarden")
  (data (i32.const 16) "net")
  (data (i32.const 32) "v1/dns_lookup_host")
  (data (i32.const 64) "\"example.com\"")
  (data (i32.const 128) "{\"accepted\":true}")
  (func (export "__guest_call") (param i32 i32) (result i32)
    (drop (call $host_call (i32.const 0) (i32.const 10) (i32.const 16) (i32.const 3)
                           (i32.const 32) (i32.const 18) (i32.const 64) (i32.const 13)))
    (call $respond (i32.const 128) (i32.const 17))
    i32.const 1))"#;

#[test]
fn a_capability_that_answers_after_the_deadline_is_a_timeout() {
    let policy = engine()
        .load(&wat::parse_str(HOST_CALL_THEN_ACCEPT).unwrap())
        .unwrap();
    // The guest itself answers.
    let ok = policy.validate(
        &EvalContext::new("host-call", Duration::from_secs(2)),
        &fixture("pod-privileged"),
        &Settings::default(),
    );
    assert!(ok.unwrap().accepted);

    let capabilities = Arc::new(Overrunning {
        given: Default::default(),
    });
    let timeout = Duration::from_millis(300);
    let mut ctx = EvalContext::new("host-call", timeout);
    ctx.capabilities = capabilities.clone();
    let started = Instant::now();
    let err = policy
        .validate(&ctx, &fixture("pod-privileged"), &Settings::default())
        .unwrap_err();
    assert!(
        matches!(err, EvalError::Timeout(d) if d == timeout),
        "{err}"
    );
    let given = capabilities
        .given
        .lock()
        .unwrap()
        .expect("the call was made");
    // The capability got the evaluation's deadline: start + timeout.
    let offset = given.saturating_duration_since(started);
    assert!(
        offset >= timeout && offset <= timeout + Duration::from_millis(100),
        "deadline {offset:?} after the start"
    );
}

/// A waPC guest with 4 MiB of memory that asks WASI for `len` random bytes,
/// then accepts.
fn random_guest(len: u32) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
          (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
          (import "wapc" "__guest_response" (func $respond (param i32 i32)))
          (memory (export "memory") 64)
          (data (i32.const 0) "{{\"accepted\":true}}")
          (func (export "__guest_call") (param i32 i32) (result i32)
            (drop (call $random (i32.const 64) (i32.const {len})))
            (call $respond (i32.const 0) (i32.const 17))
            i32.const 1))"#
    ))
    .unwrap()
}

#[test]
fn random_reads_are_capped() {
    let ctx = EvalContext::new("random", Duration::from_secs(2));
    let small = engine().load(&random_guest(32)).unwrap();
    assert!(
        small
            .validate(&ctx, &fixture("pod-privileged"), &Settings::default())
            .unwrap()
            .accepted
    );
    // 2 MiB: it fits in the guest's memory, but each such call would cost
    // the host a 2 MiB buffer (wasmtime-wasi allows 64 MiB, and makes and
    // fills the buffer before it checks that it fits in the guest's memory).
    let huge = engine().load(&random_guest(2 << 20)).unwrap();
    let err = huge
        .validate(&ctx, &fixture("pod-privileged"), &Settings::default())
        .unwrap_err();
    assert!(matches!(err, EvalError::Trap(_)), "{err}");
    assert!(err.to_string().contains("exceeds limit"), "{err}");
}

/// A waPC guest with two memories that grows each to `pages` pages.
fn two_memories(pages: u32) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
          (import "wapc" "__guest_response" (func $respond (param i32 i32)))
          (memory $a (export "memory") 1)
          (memory $b 1)
          (data (memory $a) (i32.const 0) "{{\"accepted\":true}}")
          (func (export "__guest_call") (param i32 i32) (result i32)
            (if (i32.lt_s (memory.grow $a (i32.const {pages})) (i32.const 0)) (then unreachable))
            (if (i32.lt_s (memory.grow $b (i32.const {pages})) (i32.const 0)) (then unreachable))
            (call $respond (i32.const 0) (i32.const 17))
            i32.const 1))"#
    ))
    .unwrap()
}

#[test]
fn the_memory_cap_holds_for_all_memories_of_an_instance() {
    // The on-demand allocator: the pooling one allows one memory per module.
    let engine = PolicyEngine::new(EngineConfig {
        pooling: false,
        max_memory_bytes: 64 << 20,
        ..Default::default()
    })
    .unwrap();
    let ctx = EvalContext::new("memories", Duration::from_secs(2));
    let request = fixture("pod-privileged");
    // 2 x 16 MiB fit in 64 MiB.
    let small: LoadedModule = engine.load(&two_memories(256)).unwrap();
    assert!(
        small
            .validate(&ctx, &request, &Settings::default())
            .unwrap()
            .accepted
    );
    // 2 x 40 MiB do not, though each would alone.
    let large = engine.load(&two_memories(640)).unwrap();
    let err = large
        .validate(&ctx, &request, &Settings::default())
        .unwrap_err();
    assert!(matches!(err, EvalError::OutOfMemory(_)), "{err}");
}
