//! Policy groups (issue 14) over HTTPS with compiled sample policies: the
//! expression decides, short-circuits, and names each member that denied;
//! mutations count as false; monitor mode applies to the group; a member
//! that cannot load fails its group closed and nothing else; a changed group
//! is hot-reloaded, its unchanged members kept as loaded.

mod common;

use common::{Options, TestServer, fixture, module, policies_yaml};
use serde_json::Value;

const MESSAGE: &str = "privileged Pods run in the trusted namespace only";

/// "The Pod is not privileged, or it runs in `trusted`".
fn privileged_group(mode: &str) -> String {
    format!(
        "policyMode: {mode}\n\
         expression: \"not_privileged() || trusted_namespace()\"\n\
         message: {MESSAGE}\n\
         policies:\n  \
           not_privileged:\n    module: {}\n  \
           trusted_namespace:\n    module: {}\n    settings: {{namespaces: [trusted]}}\n",
        module("pod-privileged-wapc"),
        module("namespace-allowlist-wapc"),
    )
}

fn in_namespace(mut review: Value, namespace: &str) -> Value {
    review["request"]["namespace"] = namespace.into();
    review["request"]["object"]["metadata"]["namespace"] = namespace.into();
    review
}

/// The value of the evaluation counter for `policy`, summed over its labels.
async fn evaluations(server: &TestServer, policy: &str) -> u64 {
    let (_, metrics) = server.probe("/metrics").await;
    metrics
        .lines()
        .filter(|l| l.starts_with("portcullis_policy_evaluations_total{"))
        .filter(|l| l.contains(&format!("policy=\"{policy}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn a_group_denies_with_its_message_and_a_cause_per_denying_member() {
    let yaml = policies_yaml(&[("privileged-group", privileged_group("protect"))]);
    let server = TestServer::start(&yaml, Options::default()).await;

    let response = server
        .validate("privileged-group", &fixture("pod-privileged.json"))
        .await;
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(response["uid"], "22222222-2222-2222-2222-222222222222");
    assert_eq!(response["status"]["message"], MESSAGE, "{response}");
    let causes = response["status"]["details"]["causes"]
        .as_array()
        .expect("causes");
    assert_eq!(causes.len(), 2, "{response}");
    assert_eq!(causes[0]["field"], "spec.policies.not_privileged");
    assert!(
        causes[0]["message"]
            .as_str()
            .unwrap()
            .contains("Privileged container is not allowed"),
        "{response}"
    );
    assert_eq!(causes[1]["field"], "spec.policies.trusted_namespace");
    assert_eq!(
        causes[1]["message"],
        "namespace default is not one of the allowed namespaces (trusted)"
    );
    // A group never mutates.
    assert!(response.get("patch").is_none());

    // The same Pod where the expression allows it.
    let trusted = in_namespace(fixture("pod-privileged.json"), "trusted");
    let response = server.validate("privileged-group", &trusted).await;
    assert_eq!(response["allowed"], true, "{response}");
    assert!(response.get("status").is_none(), "{response}");

    // An unprivileged Pod: the first member decides, the second never runs.
    let before = evaluations(&server, "privileged-group/trusted_namespace").await;
    let response = server
        .validate("privileged-group", &fixture("pod-unprivileged.json"))
        .await;
    assert_eq!(response["allowed"], true, "{response}");
    assert_eq!(
        evaluations(&server, "privileged-group/trusted_namespace").await,
        before
    );
    // Metrics carry the group and its members.
    assert_eq!(evaluations(&server, "privileged-group").await, 3);
    assert_eq!(
        evaluations(&server, "privileged-group/not_privileged").await,
        3
    );
    assert_eq!(
        evaluations(&server, "privileged-group/trusted_namespace").await,
        2
    );

    // /readiness reports the group with its members.
    let (status, body) = server.probe("/readiness").await;
    assert_eq!(status, 200, "{body}");
    let readiness: Value = serde_json::from_str(&body).unwrap();
    let group = &readiness["policies"]["privileged-group"];
    assert_eq!(group["state"], "loaded", "{body}");
    assert_eq!(
        group["expression"],
        "not_privileged() || trusted_namespace()"
    );
    assert!(
        group["members"]["trusted_namespace"]["moduleDigest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    server.stop().await;
}

/// Short-circuiting, shown with a member that would time out: it is never
/// called when the expression does not need it, and when it is needed the
/// group fails closed at the member's deadline.
#[tokio::test]
async fn a_member_that_would_time_out_is_never_called_when_not_needed() {
    let group = |expression: &str| {
        format!(
            "expression: \"{expression}\"\n\
             message: denied by the group\n\
             policies:\n  \
               fine:\n    module: {accept}\n    settings: {{behaviour: accept}}\n  \
               stuck:\n    module: {looping}\n    settings: {{behaviour: loop}}\n    timeoutEvalSeconds: 1\n",
            accept = module("adversarial-wapc"),
            looping = module("adversarial-wapc"),
        )
    };
    let yaml = policies_yaml(&[
        ("or-group", group("fine() || stuck()")),
        ("and-group", group("!fine() && stuck()")),
        ("needed-group", group("stuck() || fine()")),
    ]);
    let server = TestServer::start(&yaml, Options::default()).await;
    let review = fixture("pod-privileged.json");

    let response = server.validate("or-group", &review).await;
    assert_eq!(response["allowed"], true, "{response}");
    let response = server.validate("and-group", &review).await;
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(response["status"]["message"], "denied by the group");
    // `fine` ran and accepted: no member denied, so no causes.
    assert_eq!(
        response["status"]["details"]["causes"],
        Value::Array(vec![]),
        "{response}"
    );
    assert_eq!(evaluations(&server, "or-group/stuck").await, 0);
    assert_eq!(evaluations(&server, "and-group/stuck").await, 0);
    assert_eq!(evaluations(&server, "or-group/fine").await, 1);

    // The same member, needed: it runs, hits its deadline, and the group
    // fails closed.
    let response = server.validate("needed-group", &review).await;
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(response["status"]["code"], 500, "{response}");
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains("member stuck"), "{message}");
    assert!(message.contains("deadline"), "{message}");
    assert_eq!(evaluations(&server, "needed-group/stuck").await, 1);
    assert_eq!(evaluations(&server, "needed-group/fine").await, 0);
    server.stop().await;
}

#[tokio::test]
async fn a_member_mutation_counts_as_false_with_upstreams_cause() {
    let group = format!(
        "expression: \"labels()\"\n\
         message: the group does not mutate\n\
         policies:\n  \
           labels:\n    module: {}\n    settings: {{labels: {{team: platform}}}}\n",
        module("default-labels-wapc"),
    );
    let yaml = policies_yaml(&[("mutating-group", group)]);
    let server = TestServer::start(&yaml, Options::default()).await;
    let response = server
        .validate("mutating-group", &fixture("pod-no-labels.json"))
        .await;
    assert_eq!(response["allowed"], false, "{response}");
    assert!(response.get("patch").is_none(), "{response}");
    assert_eq!(response["status"]["message"], "the group does not mutate");
    assert_eq!(
        response["status"]["details"]["causes"][0],
        serde_json::json!({
            "field": "spec.policies.labels",
            "message": "mutation is not allowed inside of policy group",
        })
    );
    server.stop().await;
}

#[tokio::test]
async fn monitor_mode_applies_to_the_group() {
    let yaml = policies_yaml(&[("monitored", privileged_group("monitor"))]);
    let server = TestServer::start(&yaml, Options::default()).await;
    let review = fixture("pod-privileged.json");
    let response = server.validate("monitored", &review).await;
    assert_eq!(response["allowed"], true, "{response}");
    assert!(response.get("status").is_none(), "{response}");
    // /audit gives the group's own verdict.
    let (status, body) = server.post("/audit/monitored", &review).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["allowed"], false, "{body}");
    assert_eq!(body["response"]["status"]["message"], MESSAGE);
    server.stop().await;
}

#[tokio::test]
async fn a_member_that_fails_to_load_fails_its_group_closed_and_nothing_else() {
    let broken = format!(
        "expression: \"fine() || missing()\"\n\
         message: never shown\n\
         policies:\n  \
           fine:\n    module: {}\n    settings: {{behaviour: accept}}\n  \
           missing:\n    module: file:///nonexistent/policy.wasm\n",
        module("adversarial-wapc"),
    );
    let bad_expression = format!(
        "expression: \"fine() || other()\"\n\
         message: never shown\n\
         policies:\n  \
           fine:\n    module: {}\n    settings: {{behaviour: accept}}\n",
        module("adversarial-wapc"),
    );
    let yaml = policies_yaml(&[
        ("broken-group", broken),
        ("bad-expression", bad_expression),
        ("privileged-group", privileged_group("protect")),
        (
            "plain",
            format!("module: {}", module("pod-privileged-wapc")),
        ),
    ]);
    let server = TestServer::start(&yaml, Options::default()).await;
    let review = fixture("pod-unprivileged.json");

    let response = server.validate("broken-group", &review).await;
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(response["status"]["code"], 500, "{response}");
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains("failed to load"), "{message}");
    assert!(message.contains("member missing"), "{message}");

    let response = server.validate("bad-expression", &review).await;
    assert_eq!(response["allowed"], false, "{response}");
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains("invalid expression"), "{message}");
    assert!(message.contains("calls other"), "{message}");

    // The rest of the server is unaffected.
    let response = server.validate("privileged-group", &review).await;
    assert_eq!(response["allowed"], true, "{response}");
    let response = server.validate("plain", &review).await;
    assert_eq!(response["allowed"], true, "{response}");

    let (_, body) = server.probe("/readiness").await;
    let readiness: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(readiness["policies"]["broken-group"]["state"], "error");
    assert_eq!(readiness["policies"]["privileged-group"]["state"], "loaded");
    server.stop().await;
}

fn group_members(server: &TestServer, id: &str) -> Vec<(String, usize)> {
    let set = server.server.as_ref().unwrap().policy_set();
    match set.get(id) {
        Some(portcullis_host::policy_set::PolicyState::Group(group)) => group
            .members
            .iter()
            .map(|(name, member)| (name.clone(), std::sync::Arc::as_ptr(member) as usize))
            .collect(),
        _ => panic!("{id} is not a loaded group"),
    }
}

#[tokio::test]
async fn a_group_is_hot_reloaded_and_keeps_its_unchanged_members() {
    let yaml = policies_yaml(&[("privileged-group", privileged_group("protect"))]);
    let server = TestServer::start(&yaml, Options::default()).await;
    let review = fixture("pod-privileged.json");
    let response = server.validate("privileged-group", &review).await;
    assert_eq!(response["allowed"], false, "{response}");
    let before = group_members(&server, "privileged-group");
    let generation = server.server.as_ref().unwrap().policy_set().generation;

    // `default` becomes a trusted namespace; the other member is unchanged.
    let changed = privileged_group("protect").replace("[trusted]", "[trusted, default]");
    std::fs::write(
        &server.policies_path,
        policies_yaml(&[("privileged-group", changed)]),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while server.server.as_ref().unwrap().policy_set().generation == generation {
        assert!(std::time::Instant::now() < deadline, "never reloaded");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let response = server.validate("privileged-group", &review).await;
    assert_eq!(response["allowed"], true, "{response}");
    let after = group_members(&server, "privileged-group");
    assert_eq!(after[0], before[0], "not_privileged is reused as loaded");
    assert_ne!(after[1], before[1], "trusted_namespace is reloaded");
    server.stop().await;
}
