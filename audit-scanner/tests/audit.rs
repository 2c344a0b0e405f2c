//! The audit scanner against the real API server (with
//! kube-controller-manager's garbage collector) and a real policy-server
//! over HTTPS running compiled sample policies.
//!
//! Needs `scripts/go-tools.sh control-plane`, `scripts/build-policies.sh` and
//! `cargo build -p portcullis-host --bins`.

mod common;

use std::io::{BufRead as _, Read as _, Write as _};
use std::time::Duration;

use common::{World, ap, cap, capg, results};
use serde_json::{Value, json};

const REPORT: &str = "reports.openreports.io";
const CLUSTER_REPORT: &str = "clusterreports.openreports.io";

fn pair(policy: &str, result: &str) -> (String, String) {
    (policy.to_string(), result.to_string())
}

/// Writes (create, update, patch, delete) on report resources in the audit
/// log after byte `from`, but the cluster's own controllers': the namespace
/// controller and the garbage collector delete the reports of the other
/// tests' namespaces whenever their teardown gets to it.
fn report_writes(world: &World, from: u64) -> Vec<Value> {
    let mut file = std::fs::File::open(world.cp.audit_log_path()).expect("audit log");
    let mut text = String::new();
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(from)).expect("seek");
    file.read_to_string(&mut text).expect("read audit log");
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| {
            let user = e["user"]["username"].as_str().unwrap_or_default();
            let controller = user == "system:kube-controller-manager"
                || user.starts_with("system:serviceaccount:kube-system:");
            let resource = e["objectRef"]["resource"].as_str().unwrap_or_default();
            let verb = e["verb"].as_str().unwrap_or_default();
            [
                "reports",
                "clusterreports",
                "policyreports",
                "clusterpolicyreports",
            ]
            .contains(&resource)
                && !controller
                && ["create", "update", "patch", "delete", "deletecollection"].contains(&verb)
        })
        .collect()
}

fn audit_log_len(world: &World) -> u64 {
    std::fs::metadata(world.cp.audit_log_path())
        .map(|m| m.len())
        .unwrap_or(0)
}

/// A non-compliant Pod, a compliant Pod and a cluster-scoped object get the
/// right reports; a second run over the unchanged cluster writes nothing;
/// deleting the Pod deletes its report (garbage collection); deleting a
/// policy prunes its results, and the reports nothing audits any more.
#[test]
fn reports_gc_steady_state_and_pruning() {
    let label = format!("basic-{}", common::unique());
    let mut privileged = cap(
        &format!("priv-{label}"),
        &label,
        &[""],
        &["pods"],
        "pod-privileged-wapc",
    );
    privileged.manifest["metadata"]["annotations"] = json!({
        "io.kubewarden.policy.severity": "high",
        "io.kubewarden.policy.category": "Pod Security",
    });
    let mut labels = cap(
        &format!("labels-{label}"),
        &label,
        &[""],
        &["pods"],
        "default-labels-wapc",
    );
    labels.settings = json!({"labels": {"team": "platform"}});
    labels.manifest["spec"]["mutating"] = json!(true);
    let namespaces = cap(
        &format!("ns-{label}"),
        &label,
        &[""],
        &["namespaces"],
        "pod-privileged-wapc",
    );
    let (priv_id, labels_id, ns_id) = (privileged.id(), labels.id(), namespaces.id());
    let mut world = World::new(&label, vec![privileged, labels, namespaces]);
    let ns = world.namespace("audit-basic", true);
    let bad = world.pod(ns.name(), "bad", true, json!({"app": "web"}));
    let good = world.pod(ns.name(), "good", false, json!({"app": "web"}));
    let ns_uid = world.uid(None, "namespace", ns.name());

    let first = world.scan(&[]);
    first.assert_complete();
    assert_eq!(first.count("reports_written"), 3, "{}", first.stderr);
    assert_eq!(first.count("fail"), 1);

    let bad_report = world
        .report(REPORT, Some(ns.name()), &bad)
        .expect("report of the bad pod");
    assert_eq!(
        results(&bad_report),
        vec![pair(&labels_id, "pass"), pair(&priv_id, "fail")]
    );
    let fail = bad_report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["result"] == "fail")
        .unwrap();
    assert!(
        fail["message"]
            .as_str()
            .unwrap()
            .contains("Privileged container is not allowed"),
        "{fail}"
    );
    assert_eq!(fail["severity"], "high");
    assert_eq!(fail["category"], "Pod Security");
    assert_eq!(fail["source"], "portcullis");
    assert!(fail["timestamp"]["seconds"].as_i64().unwrap() > 0);
    assert_eq!(
        bad_report["summary"],
        json!({"pass": 1, "fail": 1, "warn": 0, "error": 0, "skip": 0})
    );
    assert_eq!(bad_report["scope"]["kind"], "Pod");
    assert_eq!(bad_report["scope"]["name"], "bad");
    let owner = &bad_report["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["uid"].as_str()),
        (Some("Pod"), Some(bad.as_str()))
    );

    assert_eq!(
        world.results(REPORT, Some(ns.name()), &good),
        vec![pair(&labels_id, "pass"), pair(&priv_id, "pass")]
    );
    let ns_report = world
        .report(CLUSTER_REPORT, None, &ns_uid)
        .expect("ClusterReport of the namespace");
    assert_eq!(results(&ns_report), vec![pair(&ns_id, "pass")]);
    assert_eq!(ns_report["scope"]["kind"], "Namespace");

    // `kubectl get reports` shows the counts.
    let table = world.k.ok(&["get", REPORT, "-n", ns.name()]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "KIND", "NAME", "PASS", "FAIL", "WARN", "ERROR", "SKIP", "AGE"
        ],
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.starts_with(&bad))
        .expect("row of the bad pod");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[1..8],
        ["Pod", "bad", "1", "1", "0", "0", "0"],
        "{table}"
    );

    // A second run over the unchanged cluster writes nothing.
    let versions = |w: &World| {
        [
            w.report(REPORT, Some(ns.name()), &bad).unwrap()["metadata"]["resourceVersion"].clone(),
            w.report(REPORT, Some(ns.name()), &good).unwrap()["metadata"]["resourceVersion"]
                .clone(),
            w.report(CLUSTER_REPORT, None, &ns_uid).unwrap()["metadata"]["resourceVersion"].clone(),
        ]
    };
    let before = versions(&world);
    let log_offset = audit_log_len(&world);
    let second = world.scan(&[]);
    second.assert_complete();
    assert_eq!(second.count("reports_written"), 0, "{}", second.stderr);
    assert_eq!(second.count("reports_unchanged"), 3);
    assert_eq!(second.count("reports_deleted"), 0);
    assert_eq!(report_writes(&world, log_offset), Vec::<Value>::new());
    assert_eq!(versions(&world), before);

    // Deleting the Pod deletes its report (garbage collector).
    world
        .k
        .ok(&["delete", "pod", "bad", "-n", ns.name(), "--wait=false"]);
    world.wait_report_gone(REPORT, Some(ns.name()), &bad);

    // Deleting a policy prunes its results on the next run; the namespace's
    // report, audited by nothing any more, is deleted.
    world.delete_policy(&format!("priv-{label}"));
    world.delete_policy(&format!("ns-{label}"));
    let third = world.scan(&[]);
    third.assert_complete();
    assert_eq!(
        world.results(REPORT, Some(ns.name()), &good),
        vec![pair(&labels_id, "pass")]
    );
    assert!(world.report(CLUSTER_REPORT, None, &ns_uid).is_none());
    assert_eq!(third.count("reports_deleted"), 1);
}

/// Policy groups are audited like policies, at `/audit/<group id>`, with the
/// group's verdict and message.
#[test]
fn groups_are_audited_with_their_verdict() {
    let label = format!("grp-{}", common::unique());
    let group = capg(
        &format!("grp-{label}"),
        &label,
        "not_privileged() && true",
        "the group denied the Pod",
        vec![("not_privileged", "pod-privileged-wapc")],
    );
    let group_id = group.id();
    assert!(group_id.starts_with("group-clusterwide-"), "{group_id}");
    let world = World::new(&label, vec![group]);
    let ns = world.namespace("audit-grp", true);
    let bad = world.pod(ns.name(), "bad", true, json!({"app": "web"}));
    let good = world.pod(ns.name(), "good", false, json!({"app": "web"}));

    let scan = world.scan(&[]);
    scan.assert_complete();
    assert_eq!(
        world.results(REPORT, Some(ns.name()), &bad),
        vec![pair(&group_id, "fail")]
    );
    assert_eq!(
        world.results(REPORT, Some(ns.name()), &good),
        vec![pair(&group_id, "pass")]
    );
    let report = world.report(REPORT, Some(ns.name()), &bad).unwrap();
    let message = report["results"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("the group denied the Pod"), "{report}");
    assert_eq!(
        report["results"][0]["properties"]["policy-kind"], "ClusterAdmissionPolicyGroup",
        "{report}"
    );
}

/// `backgroundAudit: false` and inactive policies are skipped; namespace
/// and object selectors, matchConditions and a namespaced policy's own
/// namespace are honoured.
#[test]
fn skips_selectors_and_match_conditions() {
    let label = format!("sel-{}", common::unique());
    let labelled = common::namespace(&label, "audit-sel", true);
    let other = common::namespace(&label, "audit-sel-other", false);

    let mut selected = cap(
        &format!("objsel-{label}"),
        &label,
        &[""],
        &["pods"],
        "pod-privileged-wapc",
    );
    selected.manifest["spec"]["objectSelector"] = json!({"matchLabels": {"audit": "yes"}});
    let mut conditional = cap(
        &format!("cond-{label}"),
        &label,
        &[""],
        &["pods"],
        "pod-privileged-wapc",
    );
    conditional.manifest["spec"]["matchConditions"] = json!([
        {"name": "only-cond", "expression": "object.metadata.name.startsWith('p-cond')"},
        {"name": "creates", "expression": "request.operation == 'CREATE'"},
    ]);
    let mut broken = cap(
        &format!("broken-{label}"),
        &label,
        &[""],
        &["pods"],
        "pod-privileged-wapc",
    );
    broken.manifest["spec"]["matchConditions"] = json!([{"name": "asks-authorizer", "expression": "authorizer.group('').resource('pods').check('get').allowed()"}]);
    broken.manifest["spec"]["failurePolicy"] = json!("Ignore");
    broken.manifest["spec"]["objectSelector"] = json!({"matchLabels": {"audit": "yes"}});
    let mut off = cap(
        &format!("off-{label}"),
        &label,
        &[""],
        &["pods"],
        "pod-privileged-wapc",
    );
    off.manifest["spec"]["backgroundAudit"] = json!(false);
    let mut pending = cap(
        &format!("pending-{label}"),
        &label,
        &[""],
        &["pods"],
        "pod-privileged-wapc",
    );
    pending.status = Some("pending");
    let own = ap("own", labelled.name(), "pod-privileged-wapc");
    let elsewhere = ap("elsewhere", other.name(), "pod-privileged-wapc");
    let ids: Vec<String> = [&selected, &conditional, &broken, &own, &elsewhere]
        .iter()
        .map(|p| p.id())
        .collect();
    let (sel_id, cond_id, broken_id, own_id, elsewhere_id) =
        (&ids[0], &ids[1], &ids[2], &ids[3], &ids[4]);
    let world = World::new(
        &label,
        vec![selected, conditional, broken, off, pending, own, elsewhere],
    );
    let p_sel = world.pod(labelled.name(), "p-sel", false, json!({"audit": "yes"}));
    let p_cond = world.pod(labelled.name(), "p-cond", true, json!({"app": "web"}));
    let p_other = world.pod(other.name(), "p-other", true, json!({"audit": "yes"}));

    let scan = world.scan(&[]);
    scan.assert_complete();
    assert!(
        scan.stderr.contains("backgroundAudit is false")
            && scan.stderr.contains("policy status is pending"),
        "{}",
        scan.stderr
    );
    assert_eq!(world.results(REPORT, Some(labelled.name()), &p_sel), {
        let mut v = vec![
            pair(sel_id, "pass"),
            pair(broken_id, "skip"),
            pair(own_id, "pass"),
        ];
        v.sort();
        v
    });
    let broken_result = world.report(REPORT, Some(labelled.name()), &p_sel).unwrap()["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["policy"] == json!(broken_id))
        .cloned()
        .unwrap();
    assert!(
        broken_result["message"]
            .as_str()
            .unwrap()
            .contains("asks-authorizer"),
        "{broken_result}"
    );
    assert_eq!(world.results(REPORT, Some(labelled.name()), &p_cond), {
        let mut v = vec![pair(cond_id, "fail"), pair(own_id, "fail")];
        v.sort();
        v
    });
    // The unlabelled namespace: no cluster-wide policy applies, only its own
    // AdmissionPolicy.
    assert_eq!(
        world.results(REPORT, Some(other.name()), &p_other),
        vec![pair(elsewhere_id, "fail")]
    );
}

/// `--disable-store --output-scan` prints results and writes nothing; the
/// legacy PolicyReport format; metrics pushed to a Pushgateway.
#[test]
fn output_scan_legacy_format_and_pushed_metrics() {
    let label = format!("out-{}", common::unique());
    let policy = cap(
        &format!("priv-{label}"),
        &label,
        &[""],
        &["pods"],
        "pod-privileged-wapc",
    );
    let id = policy.id();
    let world = World::new(&label, vec![policy]);
    let ns = world.namespace("audit-out", true);
    let bad = world.pod(ns.name(), "bad", true, json!({}));

    let dry = world.scan(&["--disable-store", "--output-scan", "--namespace", ns.name()]);
    dry.assert_complete();
    let lines: Vec<Value> = dry
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 1, "{}", dry.stdout);
    assert_eq!(lines[0]["uid"], json!(bad));
    assert_eq!(lines[0]["kind"], "Pod");
    assert_eq!(lines[0]["results"][0]["policy"], json!(id));
    assert_eq!(lines[0]["results"][0]["result"], "fail");
    assert!(world.report(REPORT, Some(ns.name()), &bad).is_none());
    // The progress log at the end counts the one Pod listed, of a final total.
    let progress = dry.last_progress();
    assert_eq!(progress["objects_done"], 1, "{progress}");
    assert_eq!(progress["objects_total"], 1, "{progress}");
    assert_eq!(progress["total_final"], true, "{progress}");
    assert_eq!(progress["namespaces_done"], 1, "{progress}");
    assert_eq!(progress["eta_seconds"], 0, "{progress}");
    let line = progress["progress"].as_str().unwrap_or_default();
    assert!(line.starts_with("1 of 1 objects, "), "{line}");

    // A Pushgateway stand-in: records one request.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gateway = format!("http://{}", listener.local_addr().unwrap());
    let received = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
        let mut head = String::new();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let mut stream = stream;
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .unwrap();
        (head, String::from_utf8(body).unwrap())
    });
    let legacy = world.scan(&[
        "--report-kind",
        "policyreport",
        "--namespace",
        ns.name(),
        "--pushgateway-url",
        &gateway,
    ]);
    legacy.assert_complete();
    let report = world
        .report("policyreports.wgpolicyk8s.io", Some(ns.name()), &bad)
        .expect("PolicyReport");
    assert_eq!(report["apiVersion"], "wgpolicyk8s.io/v1alpha2");
    assert_eq!(results(&report), vec![pair(&id, "fail")]);
    assert!(world.report(REPORT, Some(ns.name()), &bad).is_none());
    let (head, body) = received.join().unwrap();
    assert!(
        head.starts_with("PUT /metrics/job/portcullis-audit-scanner HTTP/1.1"),
        "{head}"
    );
    assert!(
        body.contains("portcullis_audit_results_total{result=\"fail\"} 1\n"),
        "{body}"
    );
    assert!(body.contains("portcullis_audit_run_success 1\n"), "{body}");

    // Back to OpenReports: the legacy report goes. Two Pods, one per LIST
    // page: the first page announces the second, and the count ends exact.
    world.pod(ns.name(), "good", false, json!({}));
    let back = world.scan(&["--namespace", ns.name(), "--page-size", "1"]);
    back.assert_complete();
    let progress = back.last_progress();
    assert_eq!(progress["objects_done"], 2, "{progress}");
    assert_eq!(progress["objects_total"], 2, "{progress}");
    assert!(world.report(REPORT, Some(ns.name()), &bad).is_some());
    assert!(
        world
            .report("policyreports.wgpolicyk8s.io", Some(ns.name()), &bad)
            .is_none()
    );
}

/// A CA and a client certificate it signs, written to `dir` as
/// `<name>-ca.crt`, `<name>.crt` and `<name>.key`.
fn client_pki(dir: &std::path::Path, name: &str) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} client CA"));
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let key = KeyPair::generate().expect("client key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
    params
        .distinguished_name
        .push(DnType::CommonName, "portcullis-audit-scanner");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &ca, &ca_key).expect("client cert");
    std::fs::write(dir.join(format!("{name}-ca.crt")), ca.pem()).expect("write");
    std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).expect("write");
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).expect("write");
}

/// Mutual TLS: against a policy-server that requires client certificates,
/// a scan without one, or with one from another CA, records `error`
/// results; with `--client-cert`/`--client-key` it gets the verdicts.
#[test]
fn mutual_tls_with_the_policy_servers() {
    let label = format!("mtls-{}", common::unique());
    let policy = cap(
        &format!("priv-{label}"),
        &label,
        &[""],
        &["pods"],
        "pod-privileged-wapc",
    );
    let id = policy.id();
    let pki = tempfile::tempdir().expect("tempdir");
    client_pki(pki.path(), "trusted");
    client_pki(pki.path(), "rogue");
    let client_ca = format!(
        "--client-ca-file={}",
        pki.path().join("trusted-ca.crt").display()
    );
    let world = World::with_server_args(&label, vec![policy], &[&client_ca]);
    let ns = world.namespace("audit-mtls", true);
    let bad = world.pod(ns.name(), "bad", true, json!({}));
    let good = world.pod(ns.name(), "good", false, json!({}));
    let path = |f: &str| pki.path().join(f).display().to_string();

    let without = world.scan(&["--namespace", ns.name()]);
    assert_eq!(without.count("error"), 2, "{}", without.stderr);
    assert_eq!(without.count("pass") + without.count("fail"), 0);
    for uid in [&bad, &good] {
        assert_eq!(
            world.results(REPORT, Some(ns.name()), uid),
            vec![pair(&id, "error")]
        );
    }
    let report = world.report(REPORT, Some(ns.name()), &bad).expect("report");
    let message = report["results"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("CertificateRequired"), "{message}");

    let (rogue_cert, rogue_key) = (path("rogue.crt"), path("rogue.key"));
    let rogue = world.scan(&[
        "--namespace",
        ns.name(),
        "--client-cert",
        &rogue_cert,
        "--client-key",
        &rogue_key,
    ]);
    assert_eq!(rogue.count("error"), 2, "{}", rogue.stderr);
    let report = world.report(REPORT, Some(ns.name()), &bad).expect("report");
    let message = report["results"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("UnknownCA"), "{message}");

    let (cert, key) = (path("trusted.crt"), path("trusted.key"));
    let with = world.scan(&[
        "--namespace",
        ns.name(),
        "--client-cert",
        &cert,
        "--client-key",
        &key,
    ]);
    with.assert_complete();
    assert_eq!(with.count("error"), 0, "{}", with.stderr);
    assert_eq!(
        world.results(REPORT, Some(ns.name()), &bad),
        vec![pair(&id, "fail")]
    );
    assert_eq!(
        world.results(REPORT, Some(ns.name()), &good),
        vec![pair(&id, "pass")]
    );
}

/// A run killed half-way (SIGKILL) leaves the reports it did not reach as
/// they were, has deleted no stale report, and the next complete run
/// prunes it. The run is held half-way by a policy bound to a
/// "policy-server" that accepts connections and never answers: every other
/// namespace is finished and a new report written before the kill.
#[test]
fn a_run_killed_half_way_prunes_nothing() {
    let label = format!("kill-{}", common::unique());
    let privileged = cap(
        &format!("priv-{label}"),
        &label,
        &[""],
        &["pods"],
        "pod-privileged-wapc",
    );
    let priv_id = privileged.id();
    let mut world = World::new(&label, vec![privileged]);
    let gone = world.namespace("audit-kill-gone", true);
    let orphan = world.pod(gone.name(), "orphan", false, json!({}));
    let ns = world.namespace("audit-kill", true);
    let bad = world.pod(ns.name(), "bad", true, json!({}));
    world.scan(&[]).assert_complete();
    assert!(world.report(REPORT, Some(gone.name()), &orphan).is_some());

    // The orphan's report is now stale: its namespace no longer matches.
    world
        .k
        .ok(&["label", "namespace", gone.name(), "audit-test-"]);
    let new = world.pod(ns.name(), "new", true, json!({}));
    // A policy that never answers, for one Pod.
    let stall_server = format!("stall-{label}");
    let mut stall = cap(
        &format!("stall-{label}"),
        &label,
        &[""],
        &["pods"],
        "pod-privileged-wapc",
    );
    stall.manifest["spec"]["policyServer"] = json!(stall_server);
    stall.manifest["spec"]["timeoutSeconds"] = json!(30);
    stall.manifest["spec"]["objectSelector"] = json!({"matchLabels": {"stall": "true"}});
    world.apply_policy(stall);
    world.pod(ns.name(), "slow", false, json!({"stall": "true"}));
    // Never accepted: the kernel completes the TCP handshake, the TLS one
    // waits.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_address = format!("{stall_server}={}", silent.local_addr().expect("addr"));

    let mut child = world
        .scan_command(&["--policy-server-address", &silent_address])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn audit-scanner");
    let stderr = child.stderr.take().expect("stderr");
    let (events, received) = std::sync::mpsc::channel::<Value>();
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            log.push_str(&line);
            log.push('\n');
            if let Ok(event) = serde_json::from_str::<Value>(&line) {
                let _ = events.send(event);
            }
        }
        log
    });
    // Half-way: every namespace but the held one done, the new report
    // written.
    let deadline = std::time::Instant::now() + Duration::from_secs(25);
    let mut half_way = false;
    while !half_way && std::time::Instant::now() < deadline {
        let Ok(event) = received.recv_timeout(Duration::from_secs(1)) else {
            continue;
        };
        let fields = &event["fields"];
        assert_ne!(
            fields["message"], "audit run finished",
            "the run ended before the kill"
        );
        half_way = fields["message"] == "audit progress"
            && fields["namespaces_done"].as_u64().map(|d| d + 1)
                == fields["namespaces_total"].as_u64()
            && world.report(REPORT, Some(ns.name()), &new).is_some();
    }
    child.kill().expect("kill");
    let _ = child.wait();
    let log = reader.join().expect("reader");
    assert!(half_way, "the run did not get half-way:\n{log}");
    drop(silent);

    assert!(
        world.report(REPORT, Some(gone.name()), &orphan).is_some(),
        "a killed run deleted a stale report:\n{log}"
    );
    assert_eq!(
        world.results(REPORT, Some(ns.name()), &new),
        vec![pair(&priv_id, "fail")]
    );
    assert_eq!(
        world.results(REPORT, Some(ns.name()), &bad),
        vec![pair(&priv_id, "fail")]
    );

    // The next complete run prunes it.
    world.delete_policy(&format!("stall-{label}"));
    let complete = world.scan(&[]);
    complete.assert_complete();
    assert!(
        complete.count("reports_deleted") >= 1,
        "{}",
        complete.stderr
    );
    assert!(world.report(REPORT, Some(gone.name()), &orphan).is_none());
}
