//! The Helm charts (`charts/`) and the kustomize install (`deploy/kustomize/`).
//!
//! Needs helm (`scripts/go-tools.sh helm`) and, for the server-side dry runs,
//! the control-plane harness (`scripts/go-tools.sh control-plane`) and kubectl.
//! That the image and the charts run in a real cluster is checked on kind
//! (`tests/tests/kind_e2e.rs`, run by `./dev test`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use portcullis_tests::control_plane::ControlPlane;
use serde_json::Value;

const KUBE_VERSION: &str = "1.34.0";
const CHARTS: [&str; 3] = [
    "portcullis-crds",
    "portcullis-controller",
    "portcullis-defaults",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn chart_dir(chart: &str) -> PathBuf {
    repo_root().join("charts").join(chart)
}

fn helm_path() -> PathBuf {
    if let Some(p) = std::env::var_os("HELM").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    let path = home.join(".cache/portcullis/bin/helm");
    assert!(
        path.is_file(),
        "helm not found at {}: build it with `scripts/go-tools.sh helm` (from the repository root), or set $HELM",
        path.display()
    );
    path
}

fn helm(args: &[&str]) -> std::process::Output {
    Command::new(helm_path())
        .args(args)
        .output()
        .expect("run helm")
}

fn helm_ok(args: &[&str]) -> String {
    let out = helm(args);
    assert!(
        out.status.success(),
        "helm {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("helm prints UTF-8")
}

/// `helm template <release> charts/<chart> -n <ns> --kube-version … ARGS`.
fn render(chart: &str, namespace: &str, args: &[&str]) -> String {
    let dir = chart_dir(chart);
    let mut all = vec![
        "template",
        chart,
        dir.to_str().unwrap(),
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
    ];
    all.extend_from_slice(args);
    helm_ok(&all)
}

/// Every non-empty YAML document as JSON.
fn parse(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| {
            let v =
                <serde_yaml::Value as serde::Deserialize>::deserialize(doc).expect("valid YAML");
            serde_json::to_value(v).expect("YAML maps to JSON")
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the render"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn is_hook(doc: &Value) -> bool {
    doc["metadata"]["annotations"]["helm.sh/hook"].is_string()
}

// ---------------------------------------------------------------- static checks

#[test]
fn crds_chart_is_a_copy_of_controller_crds() {
    let root = repo_root();
    let names = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml"))
            .collect()
    };
    let source = root.join("controller/crds");
    let copy = root.join("charts/portcullis-crds/templates");
    // templates/reports.yaml renders the optional report CRDs from files/.
    let mut copied = names(&copy);
    assert!(
        copied.remove("reports.yaml"),
        "templates/reports.yaml is missing"
    );
    assert_eq!(
        names(&source),
        copied,
        "charts/portcullis-crds/templates must hold exactly controller/crds/*.yaml; \
         run `cp controller/crds/*.yaml charts/portcullis-crds/templates/` then `scripts/render-kustomize.sh`"
    );
    for name in names(&source) {
        let a = std::fs::read_to_string(source.join(&name)).unwrap();
        let b = std::fs::read_to_string(copy.join(&name)).unwrap();
        assert!(
            a == b,
            "charts/portcullis-crds/templates/{name} differs from controller/crds/{name}; \
             run `cp controller/crds/*.yaml charts/portcullis-crds/templates/` then `scripts/render-kustomize.sh`"
        );
    }
}

#[test]
fn charts_lint() {
    for chart in CHARTS {
        let dir = chart_dir(chart);
        helm_ok(&[
            "lint",
            "--strict",
            dir.to_str().unwrap(),
            "--kube-version",
            KUBE_VERSION,
        ]);
        for file in [
            "Chart.yaml",
            "values.yaml",
            "values.schema.json",
            "README.md",
        ] {
            assert!(dir.join(file).is_file(), "{chart} has no {file}");
        }
        // Every top-level value is documented in the README's values table.
        let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
        let values: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(dir.join("values.yaml")).unwrap())
                .unwrap();
        if let Some(map) = values.as_mapping() {
            for key in map.keys() {
                let key = key.as_str().unwrap();
                assert!(
                    readme.contains(&format!("`{key}")),
                    "{chart}/README.md does not document `{key}`"
                );
            }
        }
    }
}

#[test]
fn crds_chart_renders_the_five_crds_and_the_report_crds() {
    let crds = |args: &[&str]| -> BTreeSet<String> {
        parse(&render("portcullis-crds", "portcullis", args))
            .iter()
            .map(|d| {
                assert_eq!(d["kind"], "CustomResourceDefinition");
                d["metadata"]["name"].as_str().unwrap().to_string()
            })
            .collect()
    };
    let portcullis = [
        "admissionpolicies.policies.portcullis.dev",
        "admissionpolicygroups.policies.portcullis.dev",
        "clusteradmissionpolicies.policies.portcullis.dev",
        "clusteradmissionpolicygroups.policies.portcullis.dev",
        "policyservers.policies.portcullis.dev",
    ];
    let openreports = ["clusterreports.openreports.io", "reports.openreports.io"];
    let legacy = [
        "clusterpolicyreports.wgpolicyk8s.io",
        "policyreports.wgpolicyk8s.io",
    ];
    let set = |lists: &[&[&str]]| -> BTreeSet<String> {
        lists
            .iter()
            .flat_map(|l| l.iter().map(|s| s.to_string()))
            .collect()
    };
    // By default: the Portcullis CRDs and the OpenReports ones the audit
    // scanner writes; the legacy report CRDs only on request.
    assert_eq!(crds(&[]), set(&[&portcullis, &openreports]));
    assert_eq!(
        crds(&["--set", "installOpenReportsCRDs=false"]),
        set(&[&portcullis])
    );
    assert_eq!(
        crds(&["--set", "installPolicyReportCRDs=true"]),
        set(&[&portcullis, &openreports, &legacy])
    );
}

/// Cluster-wide permissions: only what cannot be namespaced.
const CLUSTER_RESOURCES: [&str; 21] = [
    "policyservers",
    "clusteradmissionpolicies",
    "admissionpolicies",
    "clusteradmissionpolicygroups",
    "admissionpolicygroups",
    "policyservers/status",
    "clusteradmissionpolicies/status",
    "admissionpolicies/status",
    "clusteradmissionpolicygroups/status",
    "admissionpolicygroups/status",
    "policyservers/finalizers",
    "clusteradmissionpolicies/finalizers",
    "admissionpolicies/finalizers",
    "clusteradmissionpolicygroups/finalizers",
    "admissionpolicygroups/finalizers",
    "validatingwebhookconfigurations",
    "mutatingwebhookconfigurations",
    // The grants of context-aware policies (ClusterRoles, and Roles in the
    // namespaces of namespaced policies).
    "clusterroles",
    "roles",
    "clusterrolebindings",
    "rolebindings",
];

fn assert_rbac(docs: &[Value], namespace: &str) {
    for doc in docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
    {
        for rule in doc["rules"].as_array().expect("rules") {
            for field in ["verbs", "resources", "apiGroups"] {
                assert!(
                    !strings(&rule[field]).iter().any(|s| s.contains('*')),
                    "wildcard {field} in {}: {rule}",
                    doc["metadata"]["name"]
                );
            }
        }
    }
    // The audit scanner's ClusterRole is checked by assert_audit_scanner.
    for cr in of_kind(docs, "ClusterRole")
        .into_iter()
        .filter(|cr| cr["metadata"]["name"] != "portcullis-controller-audit-scanner")
    {
        for rule in cr["rules"].as_array().unwrap() {
            for resource in strings(&rule["resources"]) {
                assert!(
                    CLUSTER_RESOURCES.contains(&resource.as_str()),
                    "ClusterRole {} grants {resource} cluster-wide",
                    cr["metadata"]["name"]
                );
            }
        }
    }
    let role = one(docs, "Role", "portcullis-controller");
    assert_eq!(role["metadata"]["namespace"], namespace);
    let grants = |group: &str, resource: &str| -> Vec<String> {
        role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| {
                strings(&r["apiGroups"]).contains(&group.to_string())
                    && strings(&r["resources"]).contains(&resource.to_string())
            })
            .flat_map(|r| strings(&r["verbs"]))
            .collect()
    };
    for (group, resource) in [
        ("", "secrets"),
        ("", "configmaps"),
        ("", "services"),
        ("", "serviceaccounts"),
        ("apps", "deployments"),
        ("policy", "poddisruptionbudgets"),
    ] {
        let verbs = grants(group, resource);
        for verb in [
            "get", "list", "watch", "create", "patch", "update", "delete",
        ] {
            assert!(
                verbs.contains(&verb.to_string()),
                "Role lacks {verb} {resource}: {verbs:?}"
            );
        }
    }
    // Pods are watched: the controller caches them (readiness of the replicas).
    assert_eq!(
        grants("", "pods"),
        vec!["get".to_string(), "list".to_string(), "watch".to_string()]
    );
    // Leader election: the Lease in the controller's namespace only (no
    // ClusterRole may grant leases: see CLUSTER_RESOURCES).
    assert_eq!(
        grants("coordination.k8s.io", "leases"),
        vec![
            "get".to_string(),
            "create".to_string(),
            "update".to_string()
        ]
    );
    let rb = one(docs, "RoleBinding", "portcullis-controller");
    assert_eq!(rb["metadata"]["namespace"], namespace);
    assert_eq!(rb["roleRef"]["kind"], "Role");
    assert_eq!(rb["subjects"][0]["name"], "portcullis-controller");
    assert_eq!(rb["subjects"][0]["namespace"], namespace);
    let crb = one(docs, "ClusterRoleBinding", "portcullis-controller");
    assert_eq!(crb["roleRef"]["name"], "portcullis-controller");
    assert_eq!(crb["subjects"][0]["namespace"], namespace);
    // The webhook configurations are written by the controller (cluster-wide).
    let cr = one(docs, "ClusterRole", "portcullis-controller");
    let webhook_verbs: Vec<String> = cr["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            strings(&r["resources"]).contains(&"validatingwebhookconfigurations".to_string())
        })
        .flat_map(|r| strings(&r["verbs"]))
        .collect();
    for verb in ["create", "patch", "delete", "watch"] {
        assert!(
            webhook_verbs.contains(&verb.to_string()),
            "{webhook_verbs:?}"
        );
    }
}

fn assert_hardened(pod_spec: &Value, what: &str) {
    assert_eq!(pod_spec["securityContext"]["runAsNonRoot"], true, "{what}");
    assert_eq!(
        pod_spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
        "{what}"
    );
    let mut containers: Vec<&Value> = pod_spec["containers"].as_array().unwrap().iter().collect();
    if let Some(init) = pod_spec["initContainers"].as_array() {
        containers.extend(init);
    }
    for c in containers {
        let sc = &c["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true, "{what} {}", c["name"]);
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{what} {}", c["name"]);
        assert_eq!(
            sc["allowPrivilegeEscalation"], false,
            "{what} {}",
            c["name"]
        );
        assert_eq!(
            strings(&sc["capabilities"]["drop"]),
            vec!["ALL"],
            "{what} {}",
            c["name"]
        );
    }
}

/// The audit scanner's CronJob and least-privilege identity.
fn assert_audit_scanner(docs: &[Value], namespace: &str, secrets: bool) {
    let name = "portcullis-controller-audit-scanner";
    let sa = one(docs, "ServiceAccount", name);
    assert_eq!(sa["metadata"]["namespace"], namespace);
    let cr = one(docs, "ClusterRole", name);
    let report_groups = ["openreports.io", "wgpolicyk8s.io"];
    let mut reads_secrets = false;
    for rule in cr["rules"].as_array().unwrap() {
        let verbs = strings(&rule["verbs"]);
        let groups = strings(&rule["apiGroups"]);
        if strings(&rule["resources"]).contains(&"secrets".to_string()) {
            reads_secrets = true;
        }
        if groups.iter().all(|g| report_groups.contains(&g.as_str())) {
            continue;
        }
        assert!(
            verbs.iter().all(|v| v == "get" || v == "list"),
            "the audit scanner may only read outside its reports: {rule}"
        );
    }
    assert_eq!(reads_secrets, secrets, "Secrets access: {cr}");
    let bindings: Vec<&Value> = of_kind(docs, "ClusterRoleBinding")
        .into_iter()
        .filter(|b| b["subjects"][0]["name"] == name)
        .collect();
    let roles: BTreeSet<&str> = bindings
        .iter()
        .map(|b| {
            assert_eq!(b["subjects"][0]["namespace"], namespace);
            b["roleRef"]["name"].as_str().unwrap()
        })
        .collect();
    assert_eq!(roles, BTreeSet::from([name, "view"]));
    let cron = one(docs, "CronJob", name);
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
    let pod = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], name);
    assert_eq!(pod["restartPolicy"], "Never");
    assert_hardened(pod, "audit scanner");
    let c = &pod["containers"][0];
    assert_eq!(strings(&c["command"]), vec!["/usr/local/bin/audit-scanner"]);
    let args = strings(&c["args"]);
    let after = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .map(|i| args[i + 1].clone())
            .unwrap_or_else(|| panic!("no {flag} in {args:?}"))
    };
    assert_eq!(after("--portcullis-namespace"), namespace);
    assert_eq!(after("--ca-file"), "/pki/ca.crt");
    // Only the CA certificate of the CA Secret is mounted, never its key.
    assert_eq!(
        pod["volumes"][0]["secret"],
        serde_json::json!({"secretName": "portcullis-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]})
    );
}

#[test]
fn controller_chart_default_render() {
    let docs = parse(&render("portcullis-controller", "portcullis-system", &[]));
    assert_rbac(&docs, "portcullis-system");
    assert_audit_scanner(&docs, "portcullis-system", false);
    let cron = one(&docs, "CronJob", "portcullis-controller-audit-scanner");
    assert_eq!(cron["spec"]["schedule"], "0 * * * *");
    let args =
        strings(&cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]);
    for (flag, value) in [
        ("--report-kind", "openreports"),
        ("--parallel-namespaces", "4"),
        ("--parallel-resources", "64"),
        ("--parallel-policies", "5"),
        ("--page-size", "250"),
    ] {
        let i = args.iter().position(|a| a == flag).expect(flag);
        assert_eq!(args[i + 1], value, "{args:?}");
    }

    let deploy = one(&docs, "Deployment", "portcullis-controller");
    assert_eq!(deploy["metadata"]["namespace"], "portcullis-system");
    assert_eq!(deploy["spec"]["replicas"], 1);
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "portcullis-controller");
    assert_hardened(pod, "controller");
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "ghcr.io/portcullis-dev/portcullis:0.1.0");
    assert_eq!(
        strings(&c["command"]),
        vec!["/usr/local/bin/portcullis-controller"]
    );
    assert_eq!(
        strings(&c["args"]),
        [
            "run",
            "--namespace",
            "portcullis-system",
            "--log-level",
            "info",
            "--log-fmt",
            "json",
            "--metrics-addr",
            "0.0.0.0:8080",
            "--leader-elect=true"
        ]
    );
    // The leader-election identity is the Pod name.
    assert_eq!(
        c["env"],
        serde_json::json!([{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}])
    );
    assert_eq!(
        c["ports"],
        serde_json::json!([{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "metrics");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "metrics");
    assert!(deploy["spec"]["template"]["metadata"]["annotations"].is_null());

    // Certificates come from the controller: Helm renders no Secret and no
    // webhook configuration (nothing for `lookup` to regenerate).
    for kind in [
        "Secret",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ] {
        assert!(
            of_kind(&docs, kind).is_empty(),
            "the chart renders a {kind}"
        );
    }

    // The pre-delete hook: policies first, then PolicyServers, then the CA
    // Secret, with its own least-privilege identity.
    let job = one(&docs, "Job", "portcullis-controller-pre-delete");
    assert_eq!(job["metadata"]["annotations"]["helm.sh/hook"], "pre-delete");
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(
        pod["serviceAccountName"],
        "portcullis-controller-pre-delete"
    );
    assert_hardened(pod, "pre-delete job");
    let init_args = strings(&pod["initContainers"][0]["args"]);
    assert!(
        init_args[1].contains("clusteradmissionpolicies")
            && init_args[1].contains("admissionpolicies")
    );
    assert!(
        init_args.contains(&"--all-namespaces".to_string())
            && init_args.contains(&"--wait=true".to_string())
    );
    // kubectl needs a writable $HOME (discovery cache) on a read-only root filesystem.
    for c in [
        &pod["initContainers"][0],
        &pod["initContainers"][1],
        &pod["containers"][0],
    ] {
        assert_eq!(c["env"][0]["name"], "HOME");
        assert_eq!(c["env"][0]["value"], "/tmp");
        assert_eq!(c["volumeMounts"][0]["mountPath"], "/tmp");
    }
    assert!(pod["volumes"][0]["emptyDir"].is_object());
    let second_args = strings(&pod["initContainers"][1]["args"]);
    assert!(
        second_args[1].starts_with("policyservers"),
        "{second_args:?}"
    );
    let main_args = strings(&pod["containers"][0]["args"]);
    assert_eq!(
        main_args[..3],
        ["delete", "secret", "portcullis-ca"],
        "{main_args:?}"
    );
    assert!(main_args.contains(&"--namespace=portcullis-system".to_string()));
    let secret_role = one(&docs, "Role", "portcullis-controller-pre-delete");
    assert_eq!(
        strings(&secret_role["rules"][0]["resourceNames"]),
        ["portcullis-ca"]
    );
    assert_eq!(strings(&secret_role["rules"][0]["verbs"]), ["delete"]);
    let hook_role = one(&docs, "ClusterRole", "portcullis-controller-pre-delete");
    assert_eq!(
        hook_role["metadata"]["annotations"]["helm.sh/hook"],
        "pre-delete"
    );
    assert_eq!(
        strings(&hook_role["rules"][0]["verbs"]),
        ["get", "list", "watch", "delete"]
    );
    for kind in [
        "ServiceAccount",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ] {
        let d = one(&docs, kind, "portcullis-controller-pre-delete");
        assert_eq!(
            d["metadata"]["annotations"]["helm.sh/hook"], "pre-delete",
            "{kind}"
        );
    }
}

#[test]
fn controller_chart_custom_values() {
    let docs = parse(&render(
        "portcullis-controller",
        "policy-system",
        &[
            "--set",
            "replicas=2",
            "--set",
            "logLevel=debug",
            "--set",
            "logFormat=text",
            "--set",
            "alwaysAcceptOwnNamespace=false",
            "--set",
            "selector=shard=a",
            "--set",
            "image.tag=1.2.3",
            "--set",
            "telemetry.prometheusAnnotations.enabled=true",
            "--set",
            "metricsPort=9090",
            "--set",
            "telemetry.otlp.endpoint=http://otel-collector.observability:4318",
            "--set",
            "preDeleteHook.enabled=false",
            "--set",
            "leaderElection.enabled=false",
            "--set",
            "auditScanner.schedule=*/15 * * * *",
            "--set",
            "auditScanner.reportKind=policyreport",
            "--set",
            "auditScanner.parallelNamespaces=8",
            "--set",
            "auditScanner.auditSecrets=true",
            "--set",
            "auditScanner.clientCertSecret=scanner-client",
        ],
    ));
    assert_rbac(&docs, "policy-system");
    assert_audit_scanner(&docs, "policy-system", true);
    let cron = one(&docs, "CronJob", "portcullis-controller-audit-scanner");
    assert_eq!(cron["spec"]["schedule"], "*/15 * * * *");
    let scanner_pod = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let args = strings(&scanner_pod["containers"][0]["args"]);
    for (flag, value) in [
        ("--report-kind", "policyreport"),
        ("--parallel-namespaces", "8"),
        ("--client-cert", "/client-cert/tls.crt"),
        ("--client-key", "/client-cert/tls.key"),
    ] {
        let i = args.iter().position(|a| a == flag).expect(flag);
        assert_eq!(args[i + 1], value, "{args:?}");
    }
    assert_eq!(
        scanner_pod["volumes"][1]["secret"]["secretName"],
        "scanner-client"
    );
    // auditScanner.enabled=false renders none of it.
    let without = parse(&render(
        "portcullis-controller",
        "policy-system",
        &["--set", "auditScanner.enabled=false"],
    ));
    assert!(of_kind(&without, "CronJob").is_empty());
    assert!(without.iter().all(|d| {
        !d["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .contains("audit-scanner")
    }));
    let deploy = one(&docs, "Deployment", "portcullis-controller");
    assert_eq!(deploy["spec"]["replicas"], 2);
    let template = &deploy["spec"]["template"];
    assert_eq!(
        template["metadata"]["annotations"]["prometheus.io/scrape"],
        "true"
    );
    // The annotations point at the metrics port.
    assert_eq!(
        template["metadata"]["annotations"]["prometheus.io/port"],
        "9090"
    );
    assert_eq!(
        template["metadata"]["annotations"]["prometheus.io/path"],
        "/metrics"
    );
    let c = &template["spec"]["containers"][0];
    assert_eq!(
        c["env"],
        serde_json::json!([
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel-collector.observability:4318"},
        ])
    );
    assert_eq!(c["ports"][0]["name"], "metrics");
    assert_eq!(c["ports"][0]["containerPort"], 9090);
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "metrics");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "metrics");
    assert_eq!(c["image"], "ghcr.io/portcullis-dev/portcullis:1.2.3");
    assert_eq!(
        strings(&c["args"]),
        [
            "run",
            "--namespace",
            "policy-system",
            "--log-level",
            "debug",
            "--log-fmt",
            "text",
            "--metrics-addr",
            "0.0.0.0:9090",
            "--leader-elect=false",
            "--no-always-accept-own-namespace",
            "--selector",
            "shard=a"
        ]
    );
    assert!(of_kind(&docs, "Job").is_empty(), "hook disabled");
}

#[test]
fn values_schemas_reject_bad_values() {
    for (chart, set) in [
        ("portcullis-controller", "logFormat=xml"),
        ("portcullis-controller", "replicas=-1"),
        ("portcullis-controller", "unknownKey=1"),
        ("portcullis-controller", "metricsPort=0"),
        ("portcullis-controller", "leaderElection.enabled=maybe"),
        ("portcullis-controller", "leaderElection.leaseName=x"),
        (
            "portcullis-controller",
            "telemetry.prometheusAnnotations.port=9090",
        ),
        (
            "portcullis-defaults",
            "recommendedPolicies.defaultPolicyMode=enforce",
        ),
        (
            "portcullis-defaults",
            "recommendedPolicies.podPrivileged.module=ghcr.io/x",
        ),
        ("portcullis-defaults", "policyServer.name=Not_A_Label"),
        (
            "portcullis-defaults",
            "telemetry.otlp.endpoint=otel-collector:4318",
        ),
        (
            "portcullis-controller",
            "telemetry.otlp.endpoint=grpc://collector",
        ),
        ("portcullis-crds", "foo=bar"),
    ] {
        let dir = chart_dir(chart);
        let out = helm(&[
            "template",
            "x",
            dir.to_str().unwrap(),
            "--kube-version",
            KUBE_VERSION,
            "--set",
            set,
        ]);
        assert!(!out.status.success(), "{chart} accepted --set {set}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("schema"), "{chart} --set {set}: {err}");
    }
}

#[test]
fn defaults_chart_renders_policy_server_and_recommended_policies() {
    let docs = parse(&render("portcullis-defaults", "portcullis", &[]));
    assert_eq!(docs.len(), 1, "only the PolicyServer by default: {docs:?}");
    let ps = one(&docs, "PolicyServer", "default");
    assert_eq!(
        ps["spec"]["image"],
        "ghcr.io/portcullis-dev/portcullis:0.1.0"
    );
    assert_eq!(ps["spec"]["replicas"], 1);
    assert!(ps["spec"]["annotations"].is_null());

    let docs = parse(&render(
        "portcullis-defaults",
        "portcullis",
        &[
            "--set",
            "recommendedPolicies.enabled=true",
            "--set",
            "policyServer.replicas=2",
            "--set",
            "policyServer.minAvailable=1",
            "--set",
            "telemetry.prometheusAnnotations.enabled=true",
            "--set",
            "telemetry.serviceMonitor.enabled=true",
            "--set",
            "telemetry.otlp.endpoint=http://otel-collector.observability:4318",
            "--set",
            "policyServer.env[0].name=PORTCULLIS_LOG_LEVEL",
            "--set",
            "policyServer.env[0].value=debug",
        ],
    ));
    let ps = one(&docs, "PolicyServer", "default");
    assert_eq!(
        ps["spec"]["env"],
        serde_json::json!([
            {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel-collector.observability:4318"},
            {"name": "PORTCULLIS_LOG_LEVEL", "value": "debug"},
        ]),
        "the OTLP endpoint and policyServer.env"
    );
    assert_eq!(ps["spec"]["replicas"], 2);
    assert_eq!(ps["spec"]["minAvailable"], 1);
    assert_eq!(ps["spec"]["annotations"]["prometheus.io/port"], "8081");
    let cap = one(&docs, "ClusterAdmissionPolicy", "no-privileged-pod");
    assert_eq!(cap["spec"]["mode"], "monitor");
    assert_eq!(cap["spec"]["failurePolicy"], "Ignore");
    assert_eq!(cap["spec"]["policyServer"], "default");
    assert_eq!(
        cap["spec"]["module"],
        "registry://ghcr.io/portcullis-dev/policies/pod-privileged:v0.1.0"
    );
    assert_eq!(
        strings(&cap["spec"]["namespaceSelector"]["matchExpressions"][0]["values"]),
        ["kube-system", "kube-public", "kube-node-lease"]
    );
    let sm = one(&docs, "ServiceMonitor", "policy-server-default");
    assert_eq!(sm["metadata"]["namespace"], "portcullis");
    assert_eq!(
        sm["spec"]["endpoints"][0]["tlsConfig"]["ca"]["secret"]["name"],
        "portcullis-ca"
    );
    assert_eq!(
        sm["spec"]["endpoints"][0]["tlsConfig"]["serverName"],
        "policy-server-default.portcullis.svc"
    );

    // protect mode fails closed; the module is configurable.
    let docs = parse(&render(
        "portcullis-defaults",
        "portcullis",
        &[
            "--set",
            "recommendedPolicies.enabled=true",
            "--set",
            "recommendedPolicies.defaultPolicyMode=protect",
            "--set",
            "recommendedPolicies.podPrivileged.module=registry://registry.local/pp:v1",
        ],
    ));
    let cap = one(&docs, "ClusterAdmissionPolicy", "no-privileged-pod");
    assert_eq!(cap["spec"]["mode"], "protect");
    assert_eq!(cap["spec"]["failurePolicy"], "Fail");
    assert_eq!(cap["spec"]["module"], "registry://registry.local/pp:v1");

    // minAvailable and maxUnavailable together are refused at render time.
    let dir = chart_dir("portcullis-defaults");
    let out = helm(&[
        "template",
        "x",
        dir.to_str().unwrap(),
        "--kube-version",
        KUBE_VERSION,
        "--set",
        "policyServer.minAvailable=1",
        "--set",
        "policyServer.maxUnavailable=1",
    ]);
    assert!(!out.status.success());
}

#[test]
fn kustomize_base_is_the_helm_render() {
    let tmp = portcullis_tests::control_plane::target_dir()
        .join(format!("kustomize-render-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let out = Command::new(repo_root().join("scripts/render-kustomize.sh"))
        .arg(&tmp)
        .env("HELM", helm_path())
        .output()
        .expect("run scripts/render-kustomize.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let base = repo_root().join("deploy/kustomize/base");
    for file in [
        "kustomization.yaml",
        "namespace.yaml",
        "crds.yaml",
        "controller.yaml",
    ] {
        let fresh = std::fs::read_to_string(tmp.join(file)).unwrap();
        let checked_in = std::fs::read_to_string(base.join(file)).unwrap_or_default();
        assert!(
            fresh == checked_in,
            "deploy/kustomize/base/{file} is stale; run `scripts/render-kustomize.sh`"
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

/// The `portcullis-controller` binary of this build (next to the test
/// executable, as cargo builds it for the workspace's tests).
fn controller_binary() -> PathBuf {
    workspace_binary("portcullis-controller", "portcullis-controller")
}

/// A binary of the workspace, built next to the test executable.
fn workspace_binary(name: &str, package: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable");
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found next to {}: `cargo build -p {package}`",
                exe.display()
            )
        })
}

/// The audit scanner parses exactly the arguments the chart's CronJob gives
/// it, with default and non-default values (an unknown flag would fail
/// every Job, which no render or API server check sees).
#[test]
fn audit_scanner_binary_accepts_the_charts_arguments() {
    let bin = workspace_binary("audit-scanner", "portcullis-audit-scanner");
    for values in [
        &[][..],
        &[
            "--set",
            "auditScanner.reportKind=policyreport",
            "--set",
            "auditScanner.ignoreNamespaces={kube-system,tenant-a}",
            "--set",
            "auditScanner.disableStore=true",
            "--set",
            "auditScanner.outputScan=true",
            "--set",
            "auditScanner.pushgatewayUrl=http://pushgateway:9091",
            "--set",
            "auditScanner.clientCertSecret=scanner-client",
            "--set",
            "auditScanner.pageSize=1000",
            "--set",
            "logFormat=text",
        ][..],
    ] {
        let docs = parse(&render("portcullis-controller", "portcullis", values));
        let c = &one(&docs, "CronJob", "portcullis-controller-audit-scanner")["spec"]["jobTemplate"]
            ["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(strings(&c["command"]), ["/usr/local/bin/audit-scanner"]);
        let args = strings(&c["args"]);
        // `--help` after the chart's arguments: clap rejects an unknown or
        // malformed one before it prints the help.
        let out = Command::new(&bin)
            .args(&args)
            .arg("--help")
            .env_clear()
            .output()
            .expect("run audit-scanner");
        assert!(
            out.status.success(),
            "audit-scanner rejects the chart's arguments {args:?} ({values:?}):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The controller binary parses exactly the arguments the chart's Deployment
/// gives it, with default and non-default values (a flag the binary does not
/// know would crash-loop the Pod, and no API server check sees that).
#[test]
fn controller_binary_accepts_the_charts_arguments() {
    let bin = controller_binary();
    for values in [
        &[][..],
        &[
            "--set",
            "alwaysAcceptOwnNamespace=false",
            "--set",
            "selector=shard=a",
            "--set",
            "leaderElection.enabled=false",
            "--set",
            "logFormat=text",
            "--set",
            "metricsPort=9090",
        ][..],
    ] {
        let docs = parse(&render("portcullis-controller", "portcullis", values));
        let c = &one(&docs, "Deployment", "portcullis-controller")["spec"]["template"]["spec"]["containers"]
            [0];
        assert_eq!(
            strings(&c["command"]),
            ["/usr/local/bin/portcullis-controller"]
        );
        let args = strings(&c["args"]);
        // `--help` after the chart's arguments: clap rejects an unknown or
        // malformed one before it prints the help.
        let out = Command::new(&bin)
            .args(&args)
            .arg("--help")
            .env_clear()
            .output()
            .expect("run portcullis-controller");
        assert!(
            out.status.success(),
            "portcullis-controller rejects the chart's arguments {args:?} ({values:?}):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Files under `dir` (recursively) whose name ends with one of `suffixes`.
fn files_under(dir: &Path, suffixes: &[&str], found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, suffixes, found);
        } else if suffixes.iter().any(|s| path.to_string_lossy().ends_with(s)) {
            found.push(path);
        }
    }
}

/// The charts' defaults and the docs point at artifacts a release publishes
/// (`scripts/release.sh ghcr.io/portcullis-dev`): the charts' versions are the
/// workspace version, every policy artifact named is in
/// `sample-policies/published.txt` with the release's tag `v<version>`, and
/// every image tag is the release's version (or `dev`, or a `<placeholder>`).
#[test]
fn published_references_match_the_release() {
    const PREFIX: &str = "ghcr.io/portcullis-dev/";
    let root = repo_root();
    let version = env!("CARGO_PKG_VERSION");
    for chart in CHARTS {
        let meta: Value = serde_yaml::from_str(
            &std::fs::read_to_string(chart_dir(chart).join("Chart.yaml")).unwrap(),
        )
        .unwrap();
        assert_eq!(meta["version"], version, "{chart} version");
        assert_eq!(meta["appVersion"], version, "{chart} appVersion");
    }

    let published: BTreeSet<String> =
        std::fs::read_to_string(root.join("sample-policies/published.txt"))
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
    assert!(published.contains("pod-privileged"), "{published:?}");

    let mut files = vec![root.join("README.md")];
    for dir in ["charts", "deploy", "docs"] {
        files_under(&root.join(dir), &[".yaml", ".md", ".json"], &mut files);
    }
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (at, _) in text.match_indices(PREFIX) {
            let reference: String = text[at + PREFIX.len()..]
                .chars()
                .take_while(|c| !c.is_whitespace() && !"\"'`),]".contains(*c))
                .collect();
            let Some((repo, tag)) = reference.rsplit_once(':') else {
                continue; // a repository without a tag: `image.repository`
            };
            let place = format!("{} ({PREFIX}{reference})", file.display());
            if let Some(policy) = repo.strip_prefix("policies/") {
                if policy.starts_with('<') {
                    continue; // `policies/<name>:v<version>` in prose
                }
                assert!(
                    published.contains(policy),
                    "{place}: policy {policy} is not in sample-policies/published.txt"
                );
                assert_eq!(tag, format!("v{version}"), "{place}: policy tag");
            } else {
                assert_eq!(repo, "portcullis", "{place}: the only image is portcullis");
                assert!(
                    tag == version || tag == "dev" || tag.starts_with('<'),
                    "{place}: image tag {tag} is not the release's {version}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} references found");
}

// ------------------------------------------------- against the real API server

fn kubectl_stdin_ok(cp: &ControlPlane, args: &[&str], input: &str, what: &str) -> String {
    let out = cp.kubectl_stdin(args, input);
    assert!(
        out.status.success(),
        "{what}: kubectl {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn dry_run(cp: &ControlPlane, yaml: &str, what: &str) {
    kubectl_stdin_ok(
        cp,
        &[
            "apply",
            "--server-side",
            "--field-manager=charts-test",
            "--dry-run=server",
            "-f",
            "-",
        ],
        yaml,
        what,
    );
}

/// A stand-in for the Prometheus Operator's ServiceMonitor CRD (schema-less),
/// so that the telemetry render can be dry-run too.
const SERVICE_MONITOR_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  names: {kind: ServiceMonitor, listKind: ServiceMonitorList, plural: servicemonitors, singular: servicemonitor}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
"#;

/// The shared control plane with the chart's CRDs (and a ServiceMonitor
/// stand-in) installed for real, once per test binary.
fn install_crds() -> &'static ControlPlane {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    let cp = ControlPlane::shared();
    DONE.get_or_init(|| {
        let crds = render("portcullis-crds", "portcullis", &[]);
        kubectl_stdin_ok(
            cp,
            &[
                "apply",
                "--server-side",
                "--field-manager=charts-test",
                "-f",
                "-",
            ],
            &format!("{crds}\n---\n{SERVICE_MONITOR_CRD}"),
            "install CRDs",
        );
        cp.kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/policyservers.policies.portcullis.dev",
            "crd/clusteradmissionpolicies.policies.portcullis.dev",
            "crd/admissionpolicies.policies.portcullis.dev",
            "crd/servicemonitors.monitoring.coreos.com",
        ]);
    });
    cp
}

/// One test for everything that touches the API server, in order: CRDs for
/// real, then server-side dry runs of every render.
#[test]
fn renders_pass_server_side_dry_run() {
    let cp = install_crds();
    let ns = "portcullis-charts";
    cp.kubectl_ok(&["create", "namespace", ns]);
    // The kustomize base uses the fixed namespace `portcullis`.
    let _ = cp.kubectl(&["create", "namespace", "portcullis"]);
    let crds = render("portcullis-crds", ns, &[]);

    dry_run(cp, &crds, "portcullis-crds (update)");
    dry_run(
        cp,
        &render("portcullis-controller", ns, &[]),
        "portcullis-controller defaults",
    );
    dry_run(
        cp,
        &render(
            "portcullis-controller",
            ns,
            &[
                "--set",
                "replicas=2",
                "--set",
                "alwaysAcceptOwnNamespace=false",
                "--set",
                "telemetry.prometheusAnnotations.enabled=true",
                "--set",
                "podAnnotations.example\\.com/team=platform",
                "--set",
                "imagePullSecrets[0]=regcred",
            ],
        ),
        "portcullis-controller custom values",
    );
    dry_run(
        cp,
        &render("portcullis-defaults", ns, &[]),
        "portcullis-defaults defaults",
    );
    for mode in ["monitor", "protect"] {
        dry_run(
            cp,
            &render(
                "portcullis-defaults",
                ns,
                &[
                    "--set",
                    "recommendedPolicies.enabled=true",
                    "--set",
                    &format!("recommendedPolicies.defaultPolicyMode={mode}"),
                    "--set",
                    "policyServer.replicas=2",
                    "--set",
                    "policyServer.minAvailable=1",
                    "--set",
                    "telemetry.prometheusAnnotations.enabled=true",
                    "--set",
                    "telemetry.serviceMonitor.enabled=true",
                ],
            ),
            &format!("portcullis-defaults all on ({mode})"),
        );
    }

    // The dry runs do validate: the CRD's CEL rule rejects equal ports.
    let bad = render(
        "portcullis-defaults",
        ns,
        &["--set", "policyServer.webhookPort=8081"],
    );
    let out = cp.kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=charts-test",
            "--dry-run=server",
            "-f",
            "-",
        ],
        &bad,
    );
    assert!(
        !out.status.success(),
        "equal ports accepted by the API server"
    );

    for overlay in ["default", "dev"] {
        let dir = repo_root().join("deploy/kustomize/overlays").join(overlay);
        let rendered = cp.kubectl_ok(&["kustomize", dir.to_str().unwrap()]);
        let docs = parse(&rendered);
        let deploy = one(&docs, "Deployment", "portcullis-controller");
        let c = &deploy["spec"]["template"]["spec"]["containers"][0];
        if overlay == "dev" {
            assert_eq!(c["image"], "ghcr.io/portcullis-dev/portcullis:dev");
            assert_eq!(c["imagePullPolicy"], "Never");
            assert_eq!(strings(&c["args"])[3..5], ["--log-level", "debug"]);
        } else {
            assert_eq!(c["image"], "ghcr.io/portcullis-dev/portcullis:0.1.0");
            assert_eq!(strings(&c["args"])[1..3], ["--namespace", "portcullis"]);
        }
        assert_rbac(&docs, "portcullis");
        assert!(
            of_kind(&docs, "Job").is_empty(),
            "no Helm hook in kustomize"
        );
        assert!(!docs.iter().any(is_hook), "no Helm hook in kustomize");
        dry_run(cp, &rendered, &format!("kustomize overlay {overlay}"));
    }
}

fn can_i(
    cp: &ControlPlane,
    sa: &str,
    ns: &str,
    verb: &str,
    resource: &str,
    in_ns: Option<&str>,
) -> bool {
    let who = format!("--as=system:serviceaccount:{ns}:{sa}");
    let mut args = vec!["auth", "can-i", verb, resource, who.as_str()];
    if let Some(n) = in_ns {
        args.extend(["-n", n]);
    }
    let out = cp.kubectl(&args);
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

/// The controller's and the pre-delete hook's RBAC, installed for real and
/// exercised by impersonation: the hook's three kubectl commands (the Job's
/// exact args) delete every policy and PolicyServer, then the CA Secret, with
/// only the hook's permissions. (No controller runs here, so no finalizer delays the
/// deletion; with the controller, `--wait` waits for its cleanup.)
#[test]
fn rbac_and_pre_delete_hook_against_the_api_server() {
    let cp = install_crds();
    let ns = "portcullis-hook";
    cp.kubectl_ok(&["create", "namespace", ns]);
    cp.kubectl_ok(&["create", "namespace", "portcullis-hook-other"]);
    let docs = parse(&render(
        "portcullis-controller",
        ns,
        &["--set", "fullnameOverride=hooktest"],
    ));
    let rbac: Vec<String> = docs
        .iter()
        .filter(|d| {
            [
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
            ]
            .contains(&d["kind"].as_str().unwrap_or(""))
        })
        .map(|d| serde_yaml::to_string(d).expect("to YAML"))
        .collect();
    assert_eq!(
        rbac.len(),
        14,
        "controller SA/CR/CRB/Role/RB + hook SA/CR/CRB/Role/RB + audit scanner SA/CR/2 CRB"
    );
    kubectl_stdin_ok(
        cp,
        &[
            "apply",
            "--server-side",
            "--field-manager=charts-test",
            "-f",
            "-",
        ],
        &rbac.join("\n---\n"),
        "install RBAC",
    );

    // The audit scanner reads what it audits (through `view` and its own
    // cluster-scoped rules), writes its reports, and reads no Secret.
    let scanner = "hooktest-audit-scanner";
    let other = Some("portcullis-hook-other");
    for (verb, resource, namespace) in [
        ("list", "pods", other),
        ("list", "deployments.apps", other),
        ("list", "nodes", None),
        ("list", "namespaces", None),
        (
            "list",
            "clusteradmissionpolicies.policies.portcullis.dev",
            None,
        ),
        ("list", "admissionpolicies.policies.portcullis.dev", other),
        ("patch", "reports.openreports.io", other),
        ("delete", "clusterreports.openreports.io", None),
    ] {
        assert!(
            can_i(cp, scanner, ns, verb, resource, namespace),
            "the audit scanner cannot {verb} {resource}"
        );
    }
    for (verb, resource, namespace) in [
        ("get", "secrets", other),
        ("list", "secrets", Some(ns)),
        ("create", "pods", other),
        (
            "patch",
            "clusteradmissionpolicies.policies.portcullis.dev",
            None,
        ),
        ("delete", "pods", other),
    ] {
        assert!(
            !can_i(cp, scanner, ns, verb, resource, namespace),
            "the audit scanner can {verb} {resource}"
        );
    }

    let sa = "hooktest";
    assert!(can_i(cp, sa, ns, "create", "secrets", Some(ns)));
    assert!(can_i(cp, sa, ns, "patch", "deployments.apps", Some(ns)));
    assert!(can_i(
        cp,
        sa,
        ns,
        "create",
        "validatingwebhookconfigurations.admissionregistration.k8s.io",
        None
    ));
    assert!(can_i(
        cp,
        sa,
        ns,
        "update",
        "clusteradmissionpolicies.policies.portcullis.dev/status",
        None
    ));
    assert!(can_i(
        cp,
        sa,
        ns,
        "list",
        "admissionpolicies.policies.portcullis.dev",
        Some("portcullis-hook-other")
    ));
    assert!(!can_i(
        cp,
        sa,
        ns,
        "get",
        "secrets",
        Some("portcullis-hook-other")
    ));
    assert!(!can_i(
        cp,
        sa,
        ns,
        "create",
        "deployments.apps",
        Some("portcullis-hook-other")
    ));
    assert!(!can_i(
        cp,
        sa,
        ns,
        "delete",
        "policyservers.policies.portcullis.dev",
        None
    ));
    assert!(!can_i(cp, sa, ns, "create", "pods", Some(ns)));
    // Leader election: its Lease, in the release namespace only.
    for verb in ["get", "create", "update"] {
        assert!(
            can_i(cp, sa, ns, verb, "leases.coordination.k8s.io", Some(ns)),
            "{verb} leases"
        );
    }
    assert!(!can_i(
        cp,
        sa,
        ns,
        "delete",
        "leases.coordination.k8s.io",
        Some(ns)
    ));
    assert!(!can_i(
        cp,
        sa,
        ns,
        "update",
        "leases.coordination.k8s.io",
        Some("portcullis-hook-other")
    ));

    let hook_sa = "hooktest-pre-delete";
    assert!(can_i(
        cp,
        hook_sa,
        ns,
        "delete",
        "policyservers.policies.portcullis.dev",
        None
    ));
    assert!(!can_i(cp, hook_sa, ns, "get", "secrets", Some(ns)));
    assert!(!can_i(cp, hook_sa, ns, "delete", "secrets", Some(ns)));
    assert!(can_i(
        cp,
        hook_sa,
        ns,
        "delete",
        "secrets/portcullis-ca",
        Some(ns)
    ));
    assert!(!can_i(
        cp,
        hook_sa,
        ns,
        "delete",
        "validatingwebhookconfigurations.admissionregistration.k8s.io",
        None
    ));

    cp.apply(
        r#"
apiVersion: policies.portcullis.dev/v1
kind: PolicyServer
metadata: {name: hooktest}
spec: {image: "ghcr.io/portcullis-dev/portcullis:0.1.0", replicas: 1}
---
apiVersion: policies.portcullis.dev/v1
kind: ClusterAdmissionPolicy
metadata: {name: hooktest}
spec:
  policyServer: hooktest
  module: registry://ghcr.io/portcullis-dev/policies/pod-privileged:v0.1.0
  mutating: false
  rules: [{apiGroups: [""], apiVersions: [v1], resources: [pods], operations: [CREATE]}]
---
apiVersion: policies.portcullis.dev/v1
kind: AdmissionPolicy
metadata: {name: hooktest, namespace: portcullis-hook-other}
spec:
  policyServer: hooktest
  module: registry://ghcr.io/portcullis-dev/policies/pod-privileged:v0.1.0
  mutating: false
  rules: [{apiGroups: [""], apiVersions: [v1], resources: [pods], operations: [CREATE]}]
"#,
    );

    let job = one(&docs, "Job", "hooktest-pre-delete");
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], hook_sa);
    let who = format!("--as=system:serviceaccount:{ns}:{hook_sa}");
    cp.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "portcullis-ca",
        "-n",
        ns,
        "--from-literal=ca.crt=x",
    ]);
    for container in [
        &pod["initContainers"][0],
        &pod["initContainers"][1],
        &pod["containers"][0],
    ] {
        assert_eq!(strings(&container["command"]), ["kubectl"]);
        let mut args = strings(&container["args"]);
        args.push(who.clone());
        cp.kubectl_ok(&args);
    }
    for kind in [
        "policyservers.policies.portcullis.dev",
        "clusteradmissionpolicies.policies.portcullis.dev",
        "admissionpolicies.policies.portcullis.dev",
    ] {
        let left = cp.kubectl_ok(&["get", kind, "-A", "-o", "name"]);
        assert!(left.trim().is_empty(), "{kind} left after the hook: {left}");
    }
    let ca = cp.kubectl_ok(&["get", "secrets", "-n", ns, "-o", "name"]);
    assert!(
        !ca.contains("secret/portcullis-ca"),
        "the CA Secret is left after the hook: {ca}"
    );
}

/// The project's helm is built as helm's release build builds it
/// (`scripts/go-tools.sh`: the version ldflags): it reports its release
/// version and assumes the Kubernetes version of its client-go, not v1.20, so
/// the charts' `kubeVersion: >=1.31.0-0` holds for `helm template` and
/// `helm lint` without `--kube-version`, as with the helm users have.
#[test]
fn helm_renders_and_lints_the_charts_without_kube_version() {
    let version = helm_ok(&["version", "--template", "{{ .Version }}"]);
    assert!(
        version.starts_with("v3.") && !version.contains("dev") && !version.contains("unreleased"),
        "helm reports a release version: {version}"
    );
    for chart in CHARTS {
        let dir = chart_dir(chart);
        let dir = dir.to_str().unwrap();
        helm_ok(&["template", chart, dir]);
        helm_ok(&["lint", dir]);
    }
}
