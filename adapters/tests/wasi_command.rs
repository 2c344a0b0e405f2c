//! The WASI command adapter (Kubewarden's `executionMode: wasi`) against
//! hostile guests, written in WAT so that each one does exactly one bad thing:
//! spin, hoard memory, trap, fail, flood stdout or stderr, pass a bad pointer
//! to `host.call`, or keep state between calls. Every one must cost only its
//! own evaluation and come back as a typed error. The real Go policy is in
//! tests/policies.rs.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use portcullis_adapters::{
    Abi, CallContext, CapabilityError, EngineConfig, EvalContext, EvalError, HostCapabilities,
    LoadedModule, PolicyEngine, PolicyRequest, Settings,
};
use serde_json::json;

const MEMORY_CAP: u64 = 32 << 20;

fn engine() -> &'static PolicyEngine {
    static ENGINE: OnceLock<PolicyEngine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        PolicyEngine::new(EngineConfig {
            max_instances: 16,
            max_memory_bytes: MEMORY_CAP,
            ..Default::default()
        })
        .expect("engine")
    })
}

/// A WASI command: the WASI imports it may use, `host.call`, one page of
/// memory, a `$write(fd, ptr, len)` helper, data, and `_start` = `body`.
fn command(data: &str, body: &str) -> LoadedModule {
    let wat = format!(
        r#"(module
          (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
          (import "host" "call" (func $call (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (global $calls (mut i32) (i32.const 0))
          (func $write (param $fd i32) (param $ptr i32) (param $len i32)
            (i32.store (i32.const 0) (local.get $ptr))
            (i32.store (i32.const 4) (local.get $len))
            (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
          {data}
          (func (export "_start") (local $n i32) {body}))"#
    );
    let wasm = wat::parse_str(&wat).expect("wat");
    let module = engine().load(&wasm).expect("load");
    assert_eq!(module.abi(), Abi::WasiCommand);
    module
}

const ACCEPT: &str = r#"(data (i32.const 100) "{\"accepted\":true,\"valid\":true}")"#;

fn ctx() -> EvalContext {
    EvalContext::new("wasi-test", Duration::from_millis(300))
}

fn request() -> PolicyRequest {
    PolicyRequest::Admission(json!({"uid": "u", "operation": "CREATE", "object": {}}))
}

fn validate(
    module: &LoadedModule,
    ctx: &EvalContext,
) -> Result<portcullis_adapters::ValidationResponse, EvalError> {
    module.validate(ctx, &request(), &Settings::default())
}

#[test]
fn answers_on_stdout_for_both_operations() {
    let m = command(
        ACCEPT,
        "(call $write (i32.const 1) (i32.const 100) (i32.const 30))",
    );
    assert!(validate(&m, &ctx()).unwrap().accepted);
    assert!(
        m.validate_settings(&ctx(), &Settings::default())
            .unwrap()
            .valid
    );
    // exit(0) after the answer is success too.
    let m = command(
        ACCEPT,
        "(call $write (i32.const 1) (i32.const 100) (i32.const 30)) (call $proc_exit (i32.const 0))",
    );
    assert!(validate(&m, &ctx()).unwrap().accepted);
}

#[test]
fn every_call_is_a_fresh_instance() {
    let m = command(
        r#"(data (i32.const 100) "{\"accepted\":false,\"message\":\"1\"}")
           (data (i32.const 200) "{\"accepted\":false,\"message\":\"2\"}")"#,
        r#"(global.set $calls (i32.add (global.get $calls) (i32.const 1)))
           (if (i32.eq (global.get $calls) (i32.const 1))
             (then (call $write (i32.const 1) (i32.const 100) (i32.const 32)))
             (else (call $write (i32.const 1) (i32.const 200) (i32.const 32))))"#,
    );
    for _ in 0..5 {
        assert_eq!(validate(&m, &ctx()).unwrap().message.as_deref(), Some("1"));
    }
    let reused = m
        .validate_reusing_instance(&ctx(), &request(), &Settings::default(), 3)
        .unwrap();
    assert_eq!(
        reused.message.as_deref(),
        Some("1"),
        "a command cannot be reused"
    );
}

#[test]
fn a_spinning_guest_is_stopped_at_its_deadline() {
    let m = command("", "(loop $l (br $l))");
    let started = Instant::now();
    let err = validate(&m, &ctx()).unwrap_err();
    assert!(matches!(err, EvalError::Timeout(_)), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_memory_hoarder_hits_the_cap() {
    let m = command(
        "",
        "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))",
    );
    let err = validate(&m, &ctx()).unwrap_err();
    assert!(matches!(err, EvalError::OutOfMemory(MEMORY_CAP)), "{err}");
}

#[test]
fn traps_and_failures_are_typed() {
    let err = validate(&command("", "unreachable"), &ctx()).unwrap_err();
    assert!(matches!(err, EvalError::Trap(_)), "{err}");

    // A non-zero exit is a failure, explained by stderr.
    let m = command(
        r#"(data (i32.const 100) "cannot parse the request\n")"#,
        "(call $write (i32.const 2) (i32.const 100) (i32.const 25)) (call $proc_exit (i32.const 3))",
    );
    let err = validate(&m, &ctx()).unwrap_err();
    assert!(
        matches!(&err, EvalError::Guest(m) if m == "cannot parse the request"),
        "{err}"
    );
    // For settings, such a failure is a verdict.
    let verdict = m.validate_settings(&ctx(), &Settings::default()).unwrap();
    assert!(!verdict.valid);
    let err = validate(&command("", "(call $proc_exit (i32.const 1))"), &ctx()).unwrap_err();
    assert!(err.to_string().contains("exited with status 1"), "{err}");

    let m = command(
        r#"(data (i32.const 100) "not json")"#,
        "(call $write (i32.const 1) (i32.const 100) (i32.const 8))",
    );
    let err = validate(&m, &ctx()).unwrap_err();
    assert!(matches!(err, EvalError::MalformedOutput(_)), "{err}");
}

#[test]
fn floods_of_stdout_and_stderr_are_cut_short() {
    for fd in [1, 2] {
        // 60 KiB a write, forever.
        let m = command(
            "",
            &format!(
                "(loop $l (call $write (i32.const {fd}) (i32.const 0) (i32.const 61440)) (br $l))"
            ),
        );
        let started = Instant::now();
        let err = validate(&m, &ctx()).unwrap_err();
        assert!(
            matches!(err, EvalError::MalformedOutput(_)),
            "fd {fd}: {err}"
        );
        assert!(started.elapsed() < Duration::from_secs(1), "fd {fd}");
    }
}

#[test]
fn a_bad_pointer_to_host_call_fails_the_guest_not_the_host() {
    let m = command(
        "",
        "(drop (call $call (i32.const -16) (i32.const 100) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)))",
    );
    let err = validate(&m, &ctx()).unwrap_err();
    assert!(matches!(err, EvalError::MalformedOutput(_)), "{err}");
}

/// Answers `net/v1/dns_lookup_host` with `pong`, checking the deadline it is given.
struct Pong;

impl HostCapabilities for Pong {
    fn call(
        &self,
        ctx: &CallContext<'_>,
        namespace: &str,
        operation: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, CapabilityError> {
        assert!(ctx.remaining() > Duration::ZERO && ctx.remaining() <= Duration::from_millis(300));
        assert_eq!(ctx.policy_id, "wasi-test");
        assert_eq!(
            (namespace, operation, payload),
            ("net", "v1/dns_lookup_host", &b"\"example.com\""[..])
        );
        Ok(b"pong".to_vec())
    }
}

#[test]
fn host_calls_answer_on_stdin() {
    // host.call, then read the answer from stdin and return it as the message.
    let m = command(
        r#"(data (i32.const 200) "kubewarden")
           (data (i32.const 220) "net")
           (data (i32.const 240) "v1/dns_lookup_host")
           (data (i32.const 280) "\"example.com\"")
           (data (i32.const 300) "{\"accepted\":true,\"message\":\"")
           (data (i32.const 400) "\"}")"#,
        r#"(drop (call $call (i32.const 200) (i32.const 10) (i32.const 220) (i32.const 3)
                             (i32.const 240) (i32.const 18) (i32.const 280) (i32.const 13)))
           (i32.store (i32.const 16) (i32.const 1000))
           (i32.store (i32.const 20) (i32.const 4096))
           (drop (call $fd_read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 24)))
           (call $write (i32.const 1) (i32.const 300) (i32.const 28))
           (call $write (i32.const 1) (i32.const 1000) (i32.load (i32.const 24)))
           (call $write (i32.const 1) (i32.const 400) (i32.const 2))"#,
    );
    let granted = EvalContext {
        capabilities: Arc::new(Pong),
        ..ctx()
    };
    assert_eq!(
        validate(&m, &granted).unwrap().message.as_deref(),
        Some("pong")
    );
    // Without the grant, the guest reads the refusal.
    let message = validate(&m, &ctx()).unwrap().message.unwrap();
    assert!(
        message.contains("capability not granted: net/v1/dns_lookup_host"),
        "{message}"
    );
}
