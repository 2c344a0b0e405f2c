//! Property test of the waPC host-call boundary: a guest that calls the nine
//! `wapc` host imports with arbitrary pointers, lengths and names (a WAT
//! module generated per case) gets an answer or a typed error, never a host
//! panic; what it logs stays within the log budget; and the engine keeps
//! serving.

mod common;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use common::log_capture::capture;
use common::{engine, fixture, load};
use portcullis_adapters::{
    CallContext, CapabilityError, EvalContext, EvalError, HostCapabilities, PolicyRequest, Settings,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;

/// Names the guest's data segment holds at fixed offsets, so that some calls
/// reach the real routes (`kubewarden` `tracing/log`, a capability).
const NAMES: [(u32, &str); 6] = [
    (0, "kubewarden"),
    (16, "tracing"),
    (32, "log"),
    (48, "net"),
    (64, "v1/dns_lookup_host"),
    (96, "{\"level\":\"info\",\"message\":\"hi\"}"),
];
/// Where the arbitrary bytes of each case start.
const FREE: u32 = 160;
const PAGE: i64 = 65536;
/// The guest's memory: 10 MiB, so that lengths past the host's caps (8 MiB
/// answers and payloads, 4 KiB log lines) can be in bounds.
const PAGES: i64 = 160;

/// One import call with its arguments.
#[derive(Debug, Clone)]
enum Step {
    GuestRequest(i32, i32),
    GuestResponse(i32, i32),
    GuestError(i32, i32),
    HostCall([i32; 8]),
    HostResponse(i32),
    HostResponseLen,
    HostError(i32),
    HostErrorLen,
    ConsoleLog(i32, i32),
}

/// Pointers and lengths: the edges of memory, the known names, small and
/// arbitrary values.
fn arg() -> impl Strategy<Value = i32> {
    let edges = prop::sample::select(vec![
        0,
        1,
        -1,
        i32::MIN,
        i32::MAX,
        (PAGE - 1) as i32,
        PAGE as i32,
        (PAGE + 1) as i32,
        FREE as i32,
        5000,
        9 << 20,
        (PAGES * PAGE - 1) as i32,
        (PAGES * PAGE) as i32,
    ]);
    let names = prop::sample::select(
        NAMES
            .iter()
            .flat_map(|(o, n)| [*o as i32, n.len() as i32])
            .collect::<Vec<_>>(),
    );
    prop_oneof![
        3 => edges,
        3 => names,
        2 => 0..(2 * PAGE as i32),
        1 => 0..(PAGES * PAGE) as i32,
        1 => any::<i32>(),
    ]
}

/// A host call whose names are mostly real, with arbitrary payloads.
fn host_call() -> impl Strategy<Value = [i32; 8]> {
    let real = (
        prop::sample::select(vec![(16, 7, 32, 3), (48, 3, 64, 18)]),
        arg(),
        arg(),
    )
        .prop_map(|((ns, ns_len, op, op_len), ptr, len)| [0, 10, ns, ns_len, op, op_len, ptr, len]);
    let any_names = prop::array::uniform8(arg());
    prop_oneof![real, any_names]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (arg(), arg()).prop_map(|(a, b)| Step::GuestRequest(a, b)),
        (arg(), arg()).prop_map(|(a, b)| Step::GuestResponse(a, b)),
        (arg(), arg()).prop_map(|(a, b)| Step::GuestError(a, b)),
        host_call().prop_map(Step::HostCall),
        arg().prop_map(Step::HostResponse),
        Just(Step::HostResponseLen),
        arg().prop_map(Step::HostError),
        Just(Step::HostErrorLen),
        (arg(), arg()).prop_map(|(a, b)| Step::ConsoleLog(a, b)),
    ]
}

fn data(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "\\{b:02x}");
        s
    })
}

/// The guest of one case: `calls` in order, then return `status`.
fn guest(calls: &[Step], free_bytes: &[u8], status: i32) -> String {
    let mut wat = String::from(
        r#"(module
  (import "wapc" "__guest_request" (func $guest_request (param i32 i32)))
  (import "wapc" "__guest_response" (func $guest_response (param i32 i32)))
  (import "wapc" "__guest_error" (func $guest_error (param i32 i32)))
  (import "wapc" "__host_call" (func $host_call (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wapc" "__host_response" (func $host_response (param i32)))
  (import "wapc" "__host_response_len" (func $host_response_len (result i32)))
  (import "wapc" "__host_error" (func $host_error (param i32)))
  (import "wapc" "__host_error_len" (func $host_error_len (result i32)))
  (import "wapc" "__console_log" (func $console_log (param i32 i32)))
"#,
    );
    let _ = writeln!(wat, "  (memory (export \"memory\") {PAGES})");
    for (offset, name) in NAMES {
        let _ = writeln!(
            wat,
            "  (data (i32.const {offset}) \"{}\")",
            data(name.as_bytes())
        );
    }
    let _ = writeln!(wat, "  (data (i32.const {FREE}) \"{}\")", data(free_bytes));
    wat.push_str("  (func (export \"__guest_call\") (param i32 i32) (result i32)\n");
    for call in calls {
        let line = match call {
            Step::GuestRequest(a, b) => {
                format!("(call $guest_request (i32.const {a}) (i32.const {b}))")
            }
            Step::GuestResponse(a, b) => {
                format!("(call $guest_response (i32.const {a}) (i32.const {b}))")
            }
            Step::GuestError(a, b) => {
                format!("(call $guest_error (i32.const {a}) (i32.const {b}))")
            }
            Step::HostCall(args) => {
                let args: Vec<_> = args.iter().map(|a| format!("(i32.const {a})")).collect();
                format!("(drop (call $host_call {}))", args.join(" "))
            }
            Step::HostResponse(a) => format!("(call $host_response (i32.const {a}))"),
            Step::HostResponseLen => "(drop (call $host_response_len))".into(),
            Step::HostError(a) => format!("(call $host_error (i32.const {a}))"),
            Step::HostErrorLen => "(drop (call $host_error_len))".into(),
            Step::ConsoleLog(a, b) => {
                format!("(call $console_log (i32.const {a}) (i32.const {b}))")
            }
        };
        let _ = writeln!(wat, "    {line}");
    }
    let _ = writeln!(wat, "    i32.const {status}))");
    wat
}

/// Answers `net` calls with their payload, `oci` calls with an error.
struct Echo;

impl HostCapabilities for Echo {
    fn call(
        &self,
        _ctx: &CallContext<'_>,
        namespace: &str,
        operation: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, CapabilityError> {
        match namespace {
            "net" => Ok(payload.to_vec()),
            "oci" => Err(CapabilityError::Failed(format!("{operation}: no registry"))),
            other => Err(CapabilityError::NotGranted(other.to_string())),
        }
    }
}

#[test]
fn arbitrary_host_calls_get_an_answer_or_a_typed_error() {
    let mut ctx = EvalContext::new("fuzzed", Duration::from_secs(2));
    ctx.capabilities = Arc::new(Echo);
    let requests = [
        fixture("pod-privileged"),
        PolicyRequest::Raw(json!({"user": "alice"})),
    ];
    let case = (
        prop::collection::vec(step(), 1..8),
        prop::collection::vec(any::<u8>(), 0..48),
        prop::sample::select(vec![0, 1, 2, -1]),
        0..requests.len(),
    );
    // Each case compiles a module: a bounded number keeps the suite fast.
    let mut runner = TestRunner::new(Config {
        cases: 128,
        failure_persistence: None,
        ..Config::default()
    });
    let limits = portcullis_adapters::GuestLimits::DEFAULT;
    runner
        .run(&case, |(calls, free_bytes, status, request)| {
            let wat = guest(&calls, &free_bytes, status);
            let policy = engine()
                .load(&wat::parse_str(&wat).expect("valid WAT"))
                .map_err(|e| TestCaseError::fail(format!("{e}\n{wat}")))?;
            let (answer, events) =
                capture(|| policy.validate(&ctx, &requests[request], &Settings::default()));
            prop_assert!(events.len() <= limits.max_log_messages as usize + 1);
            for event in &events {
                prop_assert!(
                    event.message.len() <= limits.max_log_line_bytes + 64,
                    "a log line of {} bytes\n{wat}",
                    event.message.len()
                );
            }
            match answer {
                Ok(_) => {}
                // Every failure is typed, with a message.
                Err(err) => {
                    prop_assert!(!err.to_string().is_empty());
                    prop_assert!(
                        !matches!(err, EvalError::Timeout(_) | EvalError::OutOfMemory(_)),
                        "{err}\n{wat}"
                    );
                }
            }
            Ok(())
        })
        .unwrap();
    // And the engine still serves a real policy.
    let verdict = load("pod-privileged-wapc")
        .validate(
            &EvalContext::new("after", Duration::from_secs(2)),
            &fixture("pod-privileged"),
            &Settings::default(),
        )
        .unwrap();
    assert!(!verdict.accepted);
}
