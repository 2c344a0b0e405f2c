//! The cases: `gator verify` suites found in the module, and tables
//! transcribed from the bats scripts and demo scripts of the module (each
//! entry names the script lines it comes from).

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::model::{self, Code, Constraint, Template};
use super::{Outcome, violations};

pub fn all(root: &Path) -> Vec<Outcome> {
    let mut out = Vec::new();
    out.extend(verify_suites(root));
    out.extend(gator_test(root));
    out.extend(scripted(root));
    out
}

const CEL: &str = "CEL engine (K8sNativeValidation / ValidatingAdmissionPolicy), not Rego";
const EXPANSION: &str =
    "gator/Gatekeeper expansion of workloads into the Pods they create (ExpansionTemplate)";

/// Why an evaluation error happened, when it is a known limit.
fn blocker(error: &str) -> Option<String> {
    if let Some(rest) = error.split("builtin function `").nth(1) {
        let name = rest.split('`').next().unwrap_or(rest);
        return Some(format!("builtin `{name}` is not implemented"));
    }
    if error.contains("CEL engine") {
        return Some(CEL.into());
    }
    None
}

fn docs(path: &Path) -> Vec<Value> {
    model::documents(path)
}

fn first_template(path: &Path) -> Template {
    docs(path)
        .iter()
        .find_map(model::template)
        .unwrap_or_else(|| panic!("no ConstraintTemplate in {}", path.display()))
}

fn first_constraint(path: &Path) -> Constraint {
    docs(path)
        .iter()
        .find_map(model::constraint)
        .unwrap_or_else(|| panic!("no constraint in {}", path.display()))
}

fn is_object(doc: &Value) -> bool {
    model::template(doc).is_none()
        && model::constraint(doc).is_none()
        && doc["kind"] != "Suite"
        && !doc["apiVersion"]
            .as_str()
            .unwrap_or_default()
            .starts_with("expansion.gatekeeper.sh")
        && doc["kind"].is_string()
}

/// `kubectl apply` puts a namespaced object without a namespace in `default`.
fn in_namespace(mut object: Value) -> Value {
    const CLUSTER_SCOPED: &[&str] = &[
        "Namespace",
        "Node",
        "PersistentVolume",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "StorageClass",
        "PriorityClass",
        "APIService",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ];
    let kind = object["kind"].as_str().unwrap_or_default();
    if !CLUSTER_SCOPED.contains(&kind)
        && object["metadata"].is_object()
        && object["metadata"]["namespace"].is_null()
    {
        object["metadata"]["namespace"] = Value::String("default".into());
    }
    object
}

fn namespaces(objects: &[Value]) -> Vec<Value> {
    objects
        .iter()
        .filter(|o| o["kind"] == "Namespace")
        .cloned()
        .collect()
}

/// The `gator verify` suites of the module.
fn verify_suites(root: &Path) -> Vec<Outcome> {
    let mut out = Vec::new();
    let mut files = Vec::new();
    super::walk(root, &mut files);
    files.sort();
    for file in files {
        for suite in docs(&file).into_iter().filter(|d| d["kind"] == "Suite") {
            let dir = file.parent().unwrap_or(root);
            let rel = file
                .strip_prefix(root)
                .unwrap_or(&file)
                .display()
                .to_string();
            for test in suite["tests"].as_array().into_iter().flatten() {
                let template =
                    first_template(&dir.join(test["template"].as_str().unwrap_or_default()));
                let constraint =
                    first_constraint(&dir.join(test["constraint"].as_str().unwrap_or_default()));
                for case in test["cases"].as_array().into_iter().flatten() {
                    let name = format!(
                        "{rel} {}/{}",
                        test["name"].as_str().unwrap_or("?"),
                        case["name"].as_str().unwrap_or("?")
                    );
                    out.push(verify_case(dir, &name, test, case, &template, &constraint));
                }
            }
        }
    }
    out
}

fn verify_case(
    dir: &Path,
    name: &str,
    test: &Value,
    case: &Value,
    template: &Template,
    constraint: &Constraint,
) -> Outcome {
    let outcome = |agrees: bool, detail: String, blocked_by: Option<String>| Outcome {
        source: "gator verify",
        name: name.to_string(),
        agrees,
        detail,
        blocked_by,
    };
    if test.get("expansion").is_some() {
        return outcome(false, "not run".into(), Some(EXPANSION.into()));
    }
    let object = docs(&dir.join(case["object"].as_str().unwrap_or_default()))
        .into_iter()
        .next()
        .unwrap_or(Value::Null);
    let mut inventory: Vec<Value> = case["inventory"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .flat_map(|p| docs(&dir.join(p)))
        .collect();
    inventory.push(object.clone());
    let messages = if !constraint.enforced_by_gator()
        || !constraint.matches(template, &object, "CREATE", &namespaces(&inventory))
    {
        Ok(Vec::new())
    } else {
        violations(template, constraint, &object, "CREATE", None, &inventory)
    };
    let messages = match messages {
        Ok(m) => m,
        Err(e) => return outcome(false, format!("error: {e}"), blocker(&e)),
    };
    let mut agrees = true;
    let mut checked = Vec::new();
    for assertion in case["assertions"].as_array().into_iter().flatten() {
        let matching: Vec<&String> = match assertion["message"].as_str() {
            Some(pattern) => {
                let re = regex::Regex::new(pattern).unwrap();
                messages.iter().filter(|m| re.is_match(m)).collect()
            }
            None => messages.iter().collect(),
        };
        let ok = match &assertion["violations"] {
            Value::Bool(true) => !matching.is_empty(),
            Value::Bool(false) => matching.is_empty(),
            Value::String(s) if s == "yes" => !matching.is_empty(),
            Value::String(s) if s == "no" => matching.is_empty(),
            Value::Number(n) => n.as_u64() == Some(matching.len() as u64),
            // No count given: at least one.
            _ => !matching.is_empty(),
        };
        checked.push(format!(
            "violations {} (want {})",
            matching.len(),
            assertion["violations"]
        ));
        agrees &= ok;
    }
    outcome(
        agrees,
        format!("{}; messages {messages:?}", checked.join(", ")),
        None,
    )
}

/// Inputs of `gator test`, and what test/gator/test/test.bats expects.
struct GatorTest {
    /// Lines of test.bats.
    lines: &'static str,
    inputs: &'static [&'static str],
    violations: bool,
    messages: &'static [&'static str],
    blocked_by: Option<&'static str>,
}

const GATOR_TESTS: &[GatorTest] = &[
    GatorTest {
        lines: "54-60",
        inputs: &["fixtures/manifests/with-policies/no-violations.yaml"],
        violations: false,
        messages: &[],
        blocked_by: None,
    },
    GatorTest {
        lines: "62-74,150-167",
        inputs: &["fixtures/manifests/with-policies/with-violations.yaml"],
        violations: true,
        messages: &["Container <tomcat> in your <Pod> <test-pod1> has no <readinessProbe>"],
        blocked_by: None,
    },
    GatorTest {
        lines: "88-90",
        inputs: &["fixtures/manifests/with-policies/with-violations-rego-v1.yaml"],
        violations: true,
        messages: &[],
        blocked_by: None,
    },
    GatorTest {
        lines: "92-96,108-115",
        inputs: &[
            "fixtures/manifests/no-policies/with-violations.yaml",
            "fixtures/policies/default",
        ],
        violations: true,
        messages: &["Container <tomcat> in your <Pod> <test-pod1> has no <readinessProbe>"],
        blocked_by: None,
    },
    GatorTest {
        lines: "117-123",
        inputs: &[
            "fixtures/policies/default",
            "fixtures/manifests/no-policies/no-violations.yaml",
        ],
        violations: false,
        messages: &[],
        blocked_by: None,
    },
    GatorTest {
        lines: "125-127",
        inputs: &[
            "fixtures/policies/default",
            "fixtures/manifests/no-policies/with-violations.yaml",
        ],
        violations: true,
        messages: &[],
        blocked_by: None,
    },
    GatorTest {
        lines: "169-176",
        inputs: &["fixtures/manifests/different-extensions"],
        violations: true,
        messages: &["Container <tomcat> in your <Pod> <test-pod1> has no <readinessProbe>"],
        blocked_by: None,
    },
    GatorTest {
        lines: "178-190",
        inputs: &[
            "fixtures/policies/default/template_k8srequiredprobes.yaml",
            "fixtures/policies/enforcement_action/k8srequiredprobes/deny.yaml",
            "fixtures/manifests/no-policies/with-violations.yaml",
        ],
        violations: true,
        messages: &["Container <tomcat> in your <Pod> <test-pod1> has no <readinessProbe>"],
        blocked_by: None,
    },
    // enforcementAction other than deny: gator exits 0 but still reports the violation.
    GatorTest {
        lines: "192-204",
        inputs: &[
            "fixtures/policies/default/template_k8srequiredprobes.yaml",
            "fixtures/policies/enforcement_action/k8srequiredprobes/foo.yaml",
            "fixtures/manifests/no-policies/with-violations.yaml",
        ],
        violations: true,
        messages: &["Container <tomcat> in your <Pod> <test-pod1> has no <readinessProbe>"],
        blocked_by: None,
    },
    GatorTest {
        lines: "206-217",
        inputs: &[
            "fixtures/policies/default",
            "fixtures/manifests/referential-data",
        ],
        violations: true,
        messages: &["ingress host conflicts with an existing ingress <example-host.example.com>"],
        blocked_by: None,
    },
    // The OCI images of the test hold test/gator/oci-artifacts; the files are used directly.
    GatorTest {
        lines: "219-235",
        inputs: &[
            "../oci-artifacts/templates",
            "../oci-artifacts/constraints",
            "fixtures/manifests/no-policies/violating-ns.yaml",
        ],
        violations: true,
        messages: &["you must provide labels: {\"geo\"}"],
        blocked_by: None,
    },
    GatorTest {
        lines: "253-266",
        inputs: &["fixtures/manifests/with-policies/with-violations-and-defaults.yaml"],
        violations: true,
        // The bats test also finds "aRequiredLabel", in the violation's details
        // (`missing_labels`): the violation exists only if that default applied.
        messages: &["aRequiredMessage"],
        blocked_by: None,
    },
    GatorTest {
        lines: "268-278",
        inputs: &[
            "fixtures/manifests/expansion/expansion-w-ns-selector.yaml",
            "fixtures/manifests/expansion/ns.yaml",
        ],
        violations: true,
        messages: &["[Implied by expand-deployments] All pods must have an `owner` label"],
        blocked_by: Some(EXPANSION),
    },
];

fn gator_test(root: &Path) -> Vec<Outcome> {
    let base = root.join("test/gator/test");
    GATOR_TESTS
        .iter()
        .map(|t| {
            let name = format!(
                "test/gator/test/test.bats:{} {}",
                t.lines,
                t.inputs.join(" + ")
            );
            let outcome = |agrees: bool, detail: String, blocked_by: Option<String>| Outcome {
                source: "gator test",
                name: name.clone(),
                agrees,
                detail,
                blocked_by,
            };
            if let Some(b) = t.blocked_by {
                return outcome(false, "not run".into(), Some(b.into()));
            }
            let all: Vec<Value> = t.inputs.iter().flat_map(|i| docs(&base.join(i))).collect();
            match run_all(&all, &all) {
                Err((e, b)) => outcome(false, format!("error: {e}"), b),
                Ok(messages) => {
                    let found = |want: &&str| messages.iter().any(|m| m.contains(want));
                    let agrees =
                        messages.is_empty() != t.violations && t.messages.iter().all(found);
                    outcome(agrees, format!("messages {messages:?}"), None)
                }
            }
        })
        .collect()
}

/// Every object of `docs` against every constraint whose template is in
/// `docs`, as gator test does; the violation messages.
fn run_all(docs: &[Value], inventory: &[Value]) -> Result<Vec<String>, (String, Option<String>)> {
    let templates: Vec<Template> = docs.iter().filter_map(model::template).collect();
    let constraints: Vec<Constraint> = docs.iter().filter_map(model::constraint).collect();
    let objects: Vec<&Value> = docs.iter().filter(|d| is_object(d)).collect();
    let mut messages = Vec::new();
    for constraint in &constraints {
        let Some(template) = templates.iter().find(|t| t.kind == constraint.kind) else {
            continue;
        };
        for object in &objects {
            if !constraint.matches(template, object, "CREATE", &namespaces(inventory)) {
                continue;
            }
            match violations(template, constraint, object, "CREATE", None, inventory) {
                Ok(m) => messages.extend(m),
                Err(e) => {
                    let b = blocker(&e);
                    return Err((e, b));
                }
            }
        }
    }
    Ok(messages)
}

/// An object the API server admits or denies in a script of the module.
struct Scripted {
    /// The script and its lines.
    script: &'static str,
    /// Directory of the paths below, in the module.
    dir: &'static str,
    templates: &'static [&'static str],
    constraints: &'static [&'static str],
    object: &'static str,
    operation: &'static str,
    /// A change applied to the object for an UPDATE (label key and value).
    label: Option<(&'static str, &'static str)>,
    /// Objects that exist when the object is applied (for referential templates).
    existing: &'static [&'static str],
    denied: bool,
    message: Option<&'static str>,
}

const fn case(
    script: &'static str,
    dir: &'static str,
    templates: &'static [&'static str],
    constraints: &'static [&'static str],
    object: &'static str,
    existing: &'static [&'static str],
    denied: bool,
) -> Scripted {
    Scripted {
        script,
        dir,
        templates,
        constraints,
        object,
        operation: "CREATE",
        label: None,
        existing,
        denied,
        message: None,
    }
}

const BATS: &str = "test/bats/tests";
const BASIC: &str = "demo/basic";
const BANK: &str = "demo/agilebank";
const BANK_TEMPLATES: &[&str] = &["templates"];
const BANK_CONSTRAINTS: &[&str] = &["constraints"];
const BANK_EXISTING: &[&str] = &["dryrun/existing_resources", "good_resources/namespace.yaml"];

const SCRIPTED: &[Scripted] = &[
    // test/bats/test.bats
    case(
        "test/bats/test.bats:124-128 (ValidatingAdmissionPolicy)",
        BATS,
        &["templates/k8srequiredlabels_template_vap.yaml"],
        &["constraints/all_ns_must_have_label_provided_vapbinding.yaml"],
        "bad/bad_ns.yaml",
        &[],
        true,
    ),
    case(
        "test/bats/test.bats:231-234",
        BATS,
        &["templates/k8srequiredlabels_template.yaml"],
        &["constraints/all_cm_must_have_gatekeeper.yaml"],
        "good/good_cm.yaml",
        &["good/playground_ns.yaml"],
        false,
    ),
    case(
        "test/bats/test.bats:236-238",
        BATS,
        &["templates/k8srequiredlabels_template.yaml"],
        &["constraints/all_cm_must_have_gatekeeper.yaml"],
        "bad/bad_cm.yaml",
        &["good/playground_ns.yaml"],
        true,
    ),
    case(
        "test/bats/test.bats:258-263 (scoped enforcement actions)",
        BATS,
        &["templates/k8srequiredlabels_template.yaml"],
        &["constraints/all_cm_must_have_gatekeeper_scoped.yaml"],
        "bad/bad_cm_scoped.yaml",
        &["good/playground_ns.yaml"],
        true,
    ),
    case(
        "test/bats/test.bats:273-275",
        BATS,
        &["templates/k8scontainterlimits_template.yaml"],
        &["constraints/containers_must_be_limited.yaml"],
        "bad/opa_no_limits.yaml",
        &[],
        true,
    ),
    case(
        "test/bats/test.bats:277",
        BATS,
        &["templates/k8scontainterlimits_template.yaml"],
        &["constraints/containers_must_be_limited.yaml"],
        "good/opa.yaml",
        &[],
        false,
    ),
    case(
        "test/bats/test.bats:300-302 (referential)",
        BATS,
        &["templates/k8suniquelabel_template.yaml"],
        &["constraints/all_cm_gatekeeper_label_unique.yaml"],
        "bad/no_dupe_cm_2.yaml",
        &[
            "good/playground_ns.yaml",
            "good/no_dupe_cm.yaml",
            "bad/bad_cm_audit.yaml",
        ],
        true,
    ),
    case(
        "test/bats/test.bats:767-769 (Rego v1)",
        BATS,
        &["templates/k8srequiredlabels_template_regov1.yaml"],
        &["constraints/all_ns_must_have_label_provided.yaml"],
        "bad/bad_ns.yaml",
        &[],
        true,
    ),
    case(
        "test/bats/test.bats:791-792 (namespaceObject, CEL)",
        BATS,
        &["templates/k8snamespacelabelcheck_template_cel.yaml"],
        &["constraints/ns_must_have_env_label_cel.yaml"],
        "good/cm_in_labeled_ns.yaml",
        &[
            "good/ns_with_env_label.yaml",
            "bad/ns_without_env_label.yaml",
        ],
        false,
    ),
    case(
        "test/bats/test.bats:824-825 (namespaceObject)",
        BATS,
        &["templates/k8snamespacelabelcheck_template_rego.yaml"],
        &["constraints/ns_must_have_env_label_rego.yaml"],
        "good/cm_in_labeled_ns.yaml",
        &[
            "good/ns_with_env_label.yaml",
            "bad/ns_without_env_label.yaml",
        ],
        false,
    ),
    Scripted {
        message: Some("does not have required label"),
        ..case(
            "test/bats/test.bats:828-831 (namespaceObject)",
            BATS,
            &["templates/k8snamespacelabelcheck_template_rego.yaml"],
            &["constraints/ns_must_have_env_label_rego.yaml"],
            "bad/cm_in_unlabeled_ns.yaml",
            &[
                "good/ns_with_env_label.yaml",
                "bad/ns_without_env_label.yaml",
            ],
            true,
        )
    },
    case(
        "test/bats/test.bats:848-849 (template operations: UPDATE only)",
        BATS,
        &["templates/k8srequiredlabels_template_with_update_operations.yaml"],
        &["constraints/all_ns_must_have_label_provided.yaml"],
        "good/good_ns.yaml",
        &[],
        false,
    ),
    Scripted {
        operation: "UPDATE",
        label: Some(("test", "label")),
        ..case(
            "test/bats/test.bats:851-853 (template operations: UPDATE only)",
            BATS,
            &["templates/k8srequiredlabels_template_with_update_operations.yaml"],
            &["constraints/all_ns_must_have_label_provided.yaml"],
            "good/good_ns.yaml",
            &[],
            true,
        )
    },
    case(
        "test/bats/test.bats:860-862 (template operations: all)",
        BATS,
        &["templates/k8srequiredlabels_template_with_all_operations.yaml"],
        &["constraints/all_ns_must_have_label_provided.yaml"],
        "good/good_ns.yaml",
        &[],
        true,
    ),
    // demo/basic/demo.sh
    case(
        "demo/basic/demo.sh:19",
        BASIC,
        &["templates/k8srequiredlabels_template.yaml"],
        &["constraints/all_ns_must_have_gatekeeper.yaml"],
        "bad/bad_ns.yaml",
        &[],
        true,
    ),
    case(
        "demo/basic/demo.sh:23",
        BASIC,
        &["templates/k8srequiredlabels_template.yaml"],
        &["constraints/all_ns_must_have_gatekeeper.yaml"],
        "good/good_ns.yaml",
        &[],
        false,
    ),
    case(
        "demo/basic/demo.sh:33",
        BASIC,
        &["templates/k8suniquelabel_template.yaml"],
        &["constraints/all_ns_gatekeeper_label_unique.yaml"],
        "good/no_dupe_ns.yaml",
        &["good/good_ns.yaml"],
        false,
    ),
    case(
        "demo/basic/demo.sh:37 (referential)",
        BASIC,
        &["templates/k8suniquelabel_template.yaml"],
        &["constraints/all_ns_gatekeeper_label_unique.yaml"],
        "bad/no_dupe_ns_2.yaml",
        &["good/good_ns.yaml", "good/no_dupe_ns.yaml"],
        true,
    ),
    // demo/agilebank/demo.sh: every template and constraint at once
    case(
        "demo/agilebank/demo.sh:62",
        BANK,
        BANK_TEMPLATES,
        BANK_CONSTRAINTS,
        "good_resources/namespace.yaml",
        &["dryrun/existing_resources"],
        false,
    ),
    case(
        "demo/agilebank/demo.sh:65",
        BANK,
        BANK_TEMPLATES,
        BANK_CONSTRAINTS,
        "bad_resources/opa_no_limits.yaml",
        BANK_EXISTING,
        true,
    ),
    case(
        "demo/agilebank/demo.sh:68",
        BANK,
        BANK_TEMPLATES,
        BANK_CONSTRAINTS,
        "bad_resources/opa_limits_too_high.yaml",
        BANK_EXISTING,
        true,
    ),
    case(
        "demo/agilebank/demo.sh:71",
        BANK,
        BANK_TEMPLATES,
        BANK_CONSTRAINTS,
        "bad_resources/opa_wrong_repo.yaml",
        BANK_EXISTING,
        true,
    ),
    case(
        "demo/agilebank/demo.sh:74",
        BANK,
        BANK_TEMPLATES,
        BANK_CONSTRAINTS,
        "good_resources/opa.yaml",
        BANK_EXISTING,
        false,
    ),
    case(
        "demo/agilebank/demo.sh:80 (referential)",
        BANK,
        BANK_TEMPLATES,
        BANK_CONSTRAINTS,
        "bad_resources/duplicate_service.yaml",
        // The Service it duplicates is Gatekeeper's metrics Service (kustomize base).
        &[
            "../../config/rbac/auth_proxy_service.yaml",
            "good_resources/namespace.yaml",
        ],
        true,
    ),
    case(
        "demo/agilebank/demo.sh:127 (via expansion)",
        BANK,
        BANK_TEMPLATES,
        BANK_CONSTRAINTS,
        "bad_resources/deployment_nolimit.yaml",
        BANK_EXISTING,
        true,
    ),
    case(
        "demo/agilebank/demo.sh:176 (dryrun, referential)",
        BANK,
        &["dryrun/k8suniqueingresshost_template.yaml"],
        &["dryrun/unique-ingress-host.yaml"],
        "dryrun/bad_resource/duplicate_ing.yaml",
        &["dryrun/existing_resources"],
        true,
    ),
];

fn scripted(root: &Path) -> Vec<Outcome> {
    SCRIPTED
        .iter()
        .map(|s| {
            let dir = root.join(s.dir);
            let path = |p: &&str| -> PathBuf { dir.join(p) };
            let name = format!("{} {}", s.script, s.object);
            let outcome = |agrees: bool, detail: String, blocked_by: Option<String>| Outcome {
                source: "scripts",
                name: name.clone(),
                agrees,
                detail,
                blocked_by,
            };
            let mut policy_docs: Vec<Value> = s
                .templates
                .iter()
                .map(path)
                .flat_map(|p| docs(&p))
                .collect();
            policy_docs.extend(s.constraints.iter().map(path).flat_map(|p| docs(&p)));
            let templates: Vec<Template> = policy_docs.iter().filter_map(model::template).collect();
            if templates.iter().all(|t| t.code == Code::Cel) {
                return outcome(false, "not run".into(), Some(CEL.into()));
            }
            let mut object = docs(&dir.join(s.object))
                .into_iter()
                .next()
                .map(in_namespace)
                .unwrap_or(Value::Null);
            let old = s.label.map(|_| object.clone());
            if let Some((k, v)) = s.label {
                object["metadata"]["labels"][k] = Value::String(v.into());
            }
            let mut inventory: Vec<Value> = s
                .existing
                .iter()
                .map(path)
                .flat_map(|p| docs(&p))
                .filter(is_object)
                .map(in_namespace)
                .collect();
            inventory.push(object.clone());
            let mut messages = Vec::new();
            for constraint in policy_docs.iter().filter_map(model::constraint) {
                let Some(template) = templates.iter().find(|t| t.kind == constraint.kind) else {
                    continue;
                };
                if !constraint.matches(template, &object, s.operation, &namespaces(&inventory)) {
                    continue;
                }
                match violations(
                    template,
                    &constraint,
                    &object,
                    s.operation,
                    old.as_ref(),
                    &inventory,
                ) {
                    Ok(m) => messages.extend(m),
                    Err(e) => return outcome(false, format!("error: {e}"), blocker(&e)),
                }
            }
            let denied = !messages.is_empty();
            let message_ok = s
                .message
                .is_none_or(|want| messages.iter().any(|m| m.contains(want)));
            let agrees = denied == s.denied && message_ok;
            let blocked_by = if !agrees && s.script.contains("via expansion") {
                Some(EXPANSION.to_string())
            } else {
                None
            };
            outcome(
                agrees,
                format!(
                    "{} (want {}); messages {messages:?}",
                    if denied { "denied" } else { "admitted" },
                    if s.denied { "denied" } else { "admitted" }
                ),
                blocked_by,
            )
        })
        .collect()
}
