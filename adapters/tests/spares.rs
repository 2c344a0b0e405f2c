//! Spare component instances: made after an evaluation, for the same
//! policy's next one. Each is fresh (it has run nothing but its
//! instantiation), serves one evaluation, runs under that evaluation's own
//! deadline, and serves only the policy it was made for.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{fixture, load};
use portcullis_adapters::{
    CallContext, CapabilityError, EngineConfig, EvalContext, EvalError, HostCapabilities,
    PolicyEngine, Settings,
};
use serde_json::json;

fn behaviour(name: &str) -> Settings {
    Settings::new(json!({ "behaviour": name }))
}

/// A grant of its own: only the same `Arc` is the same grant.
struct Granting;

impl HostCapabilities for Granting {
    fn call(
        &self,
        _: &CallContext<'_>,
        _: &str,
        _: &str,
        _: &[u8],
    ) -> Result<Vec<u8>, CapabilityError> {
        Ok(b"{}".to_vec())
    }
}

#[test]
fn the_next_evaluation_of_a_component_policy_finds_its_instance_ready() {
    let module = load("pod-privileged-component");
    let ctx = EvalContext::new("spare-ready", Duration::from_secs(2));
    let other_policy = EvalContext::new("spare-other", Duration::from_secs(2));
    assert!(!module.has_spare_for(&ctx));
    for _ in 0..3 {
        let verdict = module
            .validate(&ctx, &fixture("pod-privileged"), &Settings::default())
            .unwrap();
        assert!(!verdict.accepted);
        assert!(module.has_spare_for(&ctx), "made after the evaluation");
        assert!(!module.has_spare_for(&other_policy), "for this policy only");
    }
    // waPC modules instantiate per request, as before.
    let wapc = load("pod-privileged-wapc");
    wapc.validate(&ctx, &fixture("pod-privileged"), &Settings::default())
        .unwrap();
    assert!(!wapc.has_spare_for(&ctx));
}

#[test]
fn a_spare_is_as_fresh_as_a_new_instance() {
    let module = load("adversarial-component");
    let ctx = EvalContext::new("spare-counter", Duration::from_secs(2));
    for n in 0..5 {
        let verdict = module
            .validate(&ctx, &fixture("pod-unprivileged"), &behaviour("counter"))
            .unwrap();
        assert_eq!(
            verdict.message.as_deref(),
            Some("1"),
            "evaluation {n}: the instance had run before"
        );
        assert!(module.has_spare_for(&ctx));
    }
}

#[test]
fn a_spare_runs_under_the_deadline_of_the_evaluation_that_takes_it() {
    let module = load("adversarial-component");
    let deadline = Duration::from_millis(300);
    let ctx = EvalContext::new("spare-deadline", deadline);
    module
        .validate(&ctx, &fixture("pod-unprivileged"), &behaviour("accept"))
        .unwrap();
    assert!(module.has_spare_for(&ctx));
    // Longer than the deadline the spare was made under: its own clock must
    // not be the one that counts.
    std::thread::sleep(deadline * 2);
    let verdict = module
        .validate(&ctx, &fixture("pod-unprivileged"), &behaviour("accept"))
        .expect("a spare that waited longer than a deadline still evaluates");
    assert!(verdict.accepted);

    // And the new deadline holds: a guest that sleeps 30 s is cut at it.
    assert!(module.has_spare_for(&ctx));
    let started = Instant::now();
    let err = module
        .validate(&ctx, &fixture("pod-unprivileged"), &behaviour("sleep"))
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, EvalError::Timeout(d) if d == deadline),
        "{err}"
    );
    assert!(took >= deadline, "cut before its deadline: {took:?}");
    assert!(took < Duration::from_secs(5), "not cut: {took:?}");
}

#[test]
fn a_spare_serves_only_the_capabilities_it_was_made_under() {
    let module = load("adversarial-component");
    let granted: Arc<dyn HostCapabilities> = Arc::new(Granting);
    let ctx = EvalContext {
        capabilities: granted.clone(),
        ..EvalContext::new("spare-capabilities", Duration::from_secs(2))
    };
    module
        .validate(&ctx, &fixture("pod-unprivileged"), &behaviour("accept"))
        .unwrap();
    assert!(module.has_spare_for(&ctx));
    // The same policy id with another grant (a reload that changed it).
    let reloaded = EvalContext {
        capabilities: Arc::new(Granting),
        ..EvalContext::new("spare-capabilities", Duration::from_secs(2))
    };
    assert!(!module.has_spare_for(&reloaded));
    // Without a grant at all, neither.
    let none = EvalContext::new("spare-capabilities", Duration::from_secs(2));
    assert!(!module.has_spare_for(&none));
}

#[test]
fn spares_are_bounded_by_the_engine_and_can_be_turned_off() {
    // An eighth of 16 instances: room for two spares in the whole engine.
    let engine = PolicyEngine::new(EngineConfig {
        max_instances: 16,
        ..Default::default()
    })
    .unwrap();
    let module = engine
        .load(&common::policy_bytes("pod-privileged-component"))
        .unwrap();
    let policies: Vec<_> = ["one", "two", "three"]
        .into_iter()
        .map(|id| EvalContext::new(id, Duration::from_secs(2)))
        .collect();
    for ctx in &policies {
        module
            .validate(ctx, &fixture("pod-privileged"), &Settings::default())
            .unwrap();
    }
    let ready: Vec<bool> = policies.iter().map(|c| module.has_spare_for(c)).collect();
    assert_eq!(ready, [true, true, false], "the budget was spent");
    // Taking a spare gives its share back for the next one.
    module
        .validate(
            &policies[0],
            &fixture("pod-privileged"),
            &Settings::default(),
        )
        .unwrap();
    assert!(module.has_spare_for(&policies[0]));

    let off = PolicyEngine::new(EngineConfig {
        spare_instances: 0,
        ..Default::default()
    })
    .unwrap();
    let module = off
        .load(&common::policy_bytes("pod-privileged-component"))
        .unwrap();
    let ctx = &policies[0];
    module
        .validate(ctx, &fixture("pod-privileged"), &Settings::default())
        .unwrap();
    assert!(!module.has_spare_for(ctx));
}
