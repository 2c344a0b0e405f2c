//! Leader election of the `portcullis-controller` binary: real processes, as
//! the controller's ServiceAccount (bound only to `controller/deploy/rbac.yaml`),
//! against the shared control plane, each test in its own namespace with its
//! own `--selector` (so its own Lease).
//!
//! - Two replicas: exactly one leads (Lease holder, `portcullis_controller_leader`
//!   1 vs 0), only the leader reconciles, both are ready; SIGTERM to the leader
//!   releases the Lease and the standby takes over within seconds (not after
//!   the 15 s lease duration) and reconciles.
//! - A leader whose Lease is taken by someone else stops and exits non-zero
//!   at once.
//! - A leader that cannot renew (its RBAC revoked) exits non-zero after the
//!   10 s renew deadline, before the 15 s lease could expire for others.
//! - `--leader-elect=false` (here through `PORTCULLIS_LEADER_ELECT`) takes no
//!   Lease and reconciles.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{
    BindingGuard, Controller, Objects, TEST_LABEL, control_plane, eventually,
    impersonating_kubeconfig, install_rbac, jstr, sample, unique,
};
use portcullis_tests::control_plane::{ControlPlane, TestNamespace, target_dir};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(60);
/// How long a controller may take to exit after SIGTERM (it drains its
/// reconciles, then releases the Lease).
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);
/// The Lease duration: a takeover faster than this proves the release.
const LEASE_DURATION: Duration = Duration::from_secs(15);
/// The renew deadline.
const RENEW_DEADLINE: Duration = Duration::from_secs(10);

/// This test's readings of a controller's metrics.
impl Controller {
    /// `portcullis_controller_leader`.
    fn leader_gauge(&mut self) -> Option<f64> {
        sample(&self.metrics(), "portcullis_controller_leader", &[])
    }

    /// Successful PolicyServer reconciliations.
    fn policy_server_reconciles(&mut self) -> f64 {
        sample(
            &self.metrics(),
            "portcullis_controller_reconciliations_total",
            &[("kind", "PolicyServer"), ("result", "success")],
        )
        .unwrap_or(0.0)
    }

    /// Reconciliations of any kind and result.
    fn all_reconciles(&mut self) -> f64 {
        self.metrics()
            .lines()
            .filter(|l| l.starts_with("portcullis_controller_reconciliations_total{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }
}

/// A test's namespace, RBAC and impersonating kubeconfig.
struct Setup {
    cp: &'static ControlPlane,
    ns: TestNamespace,
    label: String,
    dir: PathBuf,
    kubeconfig: PathBuf,
    _binding: BindingGuard<'static>,
}

impl Setup {
    fn new(prefix: &str) -> Setup {
        let cp = control_plane();
        let ns = TestNamespace::new(prefix);
        let label = unique(prefix);
        let dir = target_dir().join(format!("leader-election-{label}"));
        std::fs::create_dir_all(&dir).expect("test dir");
        let binding = BindingGuard {
            cp,
            name: install_rbac(cp, ns.name(), &label),
        };
        let kubeconfig = impersonating_kubeconfig(cp, ns.name(), &dir);
        Setup {
            cp,
            ns,
            label,
            dir,
            kubeconfig,
            _binding: binding,
        }
    }

    fn ns(&self) -> &str {
        self.ns.name()
    }

    fn selector(&self) -> String {
        format!("{TEST_LABEL}={}", self.label)
    }

    fn lease_name(&self) -> String {
        portcullis_controller::leader::lease_name(Some(&self.selector()))
    }

    /// A controller with leader-election identity `id`, and `extra_env`.
    fn controller(&self, id: &str, extra_env: &[(&str, &str)]) -> Controller {
        Controller::start(
            &self.dir,
            &self.kubeconfig,
            self.ns(),
            &self.label,
            id,
            |cmd| {
                // The identity and whether to elect come from this test, not
                // from the environment it runs in.
                cmd.args(["--leader-election-id", id])
                    .env_remove("POD_NAME")
                    .env_remove("PORTCULLIS_LEADER_ELECT")
                    .envs(extra_env.iter().copied());
            },
        )
    }

    fn lease(&self) -> Option<Value> {
        let out = self.cp.kubectl(&[
            "-n",
            self.ns(),
            "get",
            "lease",
            &self.lease_name(),
            "-o",
            "json",
        ]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).expect("lease JSON"))
    }

    fn holder(&self) -> String {
        self.lease()
            .map(|l| jstr(&l, "/spec/holderIdentity").to_string())
            .unwrap_or_default()
    }

    fn objects(&self) -> Objects<'static> {
        Objects {
            cp: self.cp,
            label: self.label.clone(),
        }
    }

    fn apply_policy_server(&self, name: &str) {
        self.cp.apply(&format!(
            r#"apiVersion: policies.portcullis.dev/v1
kind: PolicyServer
metadata:
  name: {name}
  labels: {{{TEST_LABEL}: {label}}}
spec:
  image: ghcr.io/portcullis/policy-server:test
  replicas: 1
"#,
            label = self.label
        ));
    }

    fn deployment_exists(&self, ps: &str) -> bool {
        self.cp
            .kubectl(&[
                "-n",
                self.ns(),
                "get",
                "deployment",
                &format!("policy-server-{ps}"),
            ])
            .status
            .success()
    }

    fn delete_policy_server(&self, name: &str) {
        let out = self
            .cp
            .kubectl(&["delete", "policyserver", name, "--timeout=60s"]);
        assert!(
            out.status.success(),
            "delete policyserver {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn one_leader_reconciles_and_a_standby_takes_over_on_sigterm() {
    let s = Setup::new("leader");
    let lease = s.lease_name();
    assert!(
        lease.starts_with("portcullis-controller-") && lease.len() <= 63,
        "{lease}"
    );
    let (id_a, id_b) = (format!("{}-a", s.label), format!("{}-b", s.label));
    let mut a = s.controller(&id_a, &[]);
    let mut b = s.controller(&id_b, &[]);
    let objects = s.objects();

    // Exactly one leads: it holds the Lease and says so on /metrics.
    let holder = eventually("a holder in the Lease", TIMEOUT, || {
        a.assert_running();
        b.assert_running();
        Some(s.holder()).filter(|h| !h.is_empty())
    });
    let (mut leader, mut standby) = if holder == id_a {
        (a, b)
    } else {
        assert_eq!(holder, id_b, "the Lease holder is neither controller");
        (b, a)
    };
    let spec = s.lease().expect("the Lease");
    assert_eq!(spec["spec"]["leaseDurationSeconds"], 15, "{spec}");
    eventually("the leader gauges (1 and 0)", TIMEOUT, || {
        (leader.leader_gauge() == Some(1.0) && standby.leader_gauge() == Some(0.0)).then_some(())
    });
    // Both ready: a standby must not block a rollout.
    leader.wait_ready();
    standby.wait_ready();
    assert!(
        standby.events().iter().any(|f| f["message"]
            == "standby: another replica leads, waiting for the lease"
            && f["holder"] == leader.id()),
        "the standby did not log whom it waits for:\n{}",
        standby.log()
    );

    // Only the leader reconciles.
    let ps1 = unique("ps");
    s.apply_policy_server(&ps1);
    eventually("the first PolicyServer's Deployment", TIMEOUT, || {
        leader.assert_running();
        s.deployment_exists(&ps1).then_some(())
    });
    eventually("a successful reconcile on the leader", TIMEOUT, || {
        (leader.policy_server_reconciles() >= 1.0).then_some(())
    });
    let standby_metrics = standby.metrics();
    assert_eq!(
        sample(
            &standby_metrics,
            "portcullis_controller_reconciliations_total",
            &[("kind", "PolicyServer"), ("result", "success")],
        ),
        Some(0.0),
        "the standby exports its series at 0:\n{standby_metrics}"
    );
    assert_eq!(
        standby.all_reconciles(),
        0.0,
        "the standby reconciled:\n{standby_metrics}"
    );
    assert_eq!(s.holder(), leader.id(), "the lease changed hands");
    assert_eq!(standby.leader_gauge(), Some(0.0));

    // SIGTERM: the leader drains, releases, exits 0; the standby takes over
    // well within the lease duration (without the release it could not
    // before the Lease expired, 15 s after its last renewal).
    let status = leader.terminate(EXIT_TIMEOUT);
    let exited = Instant::now();
    assert!(
        status.success(),
        "leader exit status after SIGTERM: {status}\n{}",
        leader.log()
    );
    assert!(
        leader.logged("released leadership") && leader.logged("stopped"),
        "the leader did not release the lease:\n{}",
        leader.log()
    );
    eventually("the standby to hold the Lease", LEASE_DURATION, || {
        standby.assert_running();
        (s.holder() == standby.id()).then_some(())
    });
    let takeover = exited.elapsed();
    assert!(
        takeover < Duration::from_secs(6),
        "takeover took {takeover:?}: the lease was not released"
    );
    assert!(standby.logged("acquired leadership"), "{}", standby.log());
    eventually("the new leader's gauge", TIMEOUT, || {
        (standby.leader_gauge() == Some(1.0)).then_some(())
    });
    let lease_now = s.lease().expect("the Lease");
    assert!(
        lease_now["spec"]["leaseTransitions"].as_i64() >= Some(1),
        "{lease_now}"
    );

    // The new leader reconciles.
    let ps2 = unique("ps");
    s.apply_policy_server(&ps2);
    eventually("the second PolicyServer's Deployment", TIMEOUT, || {
        standby.assert_running();
        s.deployment_exists(&ps2).then_some(())
    });
    eventually("a successful reconcile on the new leader", TIMEOUT, || {
        (standby.policy_server_reconciles() >= 1.0).then_some(())
    });
    standby.wait_ready();

    // Clean up while the new leader runs (finalizers), then stop it too.
    for ps in [&ps1, &ps2] {
        s.delete_policy_server(ps);
    }
    drop(objects);
    let status = standby.terminate(EXIT_TIMEOUT);
    assert!(status.success(), "{status}\n{}", standby.log());
    eventually("the Lease to be released", TIMEOUT, || {
        s.holder().is_empty().then_some(())
    });
}

#[test]
fn a_leader_whose_lease_is_taken_exits_non_zero() {
    let s = Setup::new("stolen");
    let id = format!("{}-a", s.label);
    let mut c = s.controller(&id, &[]);
    eventually("the controller to lead", TIMEOUT, || {
        c.assert_running();
        (s.holder() == id && c.leader_gauge() == Some(1.0)).then_some(())
    });
    c.wait_ready();

    // Someone else writes itself into the Lease (as a buggy or misconfigured
    // candidate could): the controller must stop at its next renewal.
    s.cp.kubectl_ok(&[
        "-n",
        s.ns(),
        "patch",
        "lease",
        &s.lease_name(),
        "--type=merge",
        "-p",
        r#"{"spec":{"holderIdentity":"intruder"}}"#,
    ]);
    let taken = Instant::now();
    let status = c.wait_exit(Duration::from_secs(8));
    assert!(
        !status.success(),
        "a controller that lost its lease exited 0:\n{}",
        c.log()
    );
    assert!(
        taken.elapsed() < Duration::from_secs(6),
        "it kept running {:?} after losing the lease",
        taken.elapsed()
    );
    let lost = c
        .events()
        .into_iter()
        .find(|f| f["message"] == "lost leadership: stopped reconciling, exiting")
        .unwrap_or_else(|| panic!("no 'lost leadership' line:\n{}", c.log()));
    assert_eq!(lost["level"], "ERROR");
    assert!(
        lost["reason"]
            .as_str()
            .is_some_and(|r| r.contains("held by intruder")),
        "{lost}"
    );
    assert_eq!(
        s.holder(),
        "intruder",
        "the controller wrote the lease back"
    );
}

#[test]
fn a_leader_that_cannot_renew_exits_non_zero_before_the_lease_expires() {
    let s = Setup::new("renew");
    let id = format!("{}-a", s.label);
    let mut c = s.controller(&id, &[]);
    eventually("the controller to lead", TIMEOUT, || {
        c.assert_running();
        (s.holder() == id && c.leader_gauge() == Some(1.0)).then_some(())
    });
    c.wait_ready();
    let renewed = |s: &Setup| -> String {
        s.lease()
            .map(|l| jstr(&l, "/spec/renewTime").to_string())
            .unwrap_or_default()
    };
    // It renews (every 2 s), not only acquires.
    let first = renewed(&s);
    eventually("a renewal", Duration::from_secs(10), || {
        (renewed(&s) != first).then_some(())
    });

    // Its namespaced permissions (the Lease among them) go away: every
    // renewal now fails with 403.
    s.cp.kubectl_ok(&[
        "-n",
        s.ns(),
        "delete",
        "rolebinding",
        "portcullis-controller",
    ]);
    let revoked = Instant::now();
    let status = c.wait_exit(LEASE_DURATION + Duration::from_secs(10));
    let after = revoked.elapsed();
    assert!(
        !status.success(),
        "a controller that cannot renew exited 0:\n{}",
        c.log()
    );
    // Transient failures are retried until the deadline (the last renewal
    // was at most one 2 s retry period before the revocation)...
    assert!(
        after >= RENEW_DEADLINE - Duration::from_secs(3),
        "gave up after {after:?}, before the renew deadline:\n{}",
        c.log()
    );
    // ...and it gives up before another replica could take the Lease.
    assert!(
        after < LEASE_DURATION,
        "still running {after:?} after its last possible renewal:\n{}",
        c.log()
    );
    let events = c.events();
    let lost = events
        .iter()
        .find(|f| f["message"] == "lost leadership: stopped reconciling, exiting")
        .unwrap_or_else(|| panic!("no 'lost leadership' line:\n{}", c.log()));
    let reason = lost["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("renew deadline") && reason.contains("forbidden"),
        "{reason}"
    );
    assert!(
        events
            .iter()
            .any(|f| f["message"] == "cannot renew the lease; retrying"),
        "{}",
        c.log()
    );
}

#[test]
fn without_leader_election_no_lease_is_taken() {
    let s = Setup::new("noelect");
    let id = format!("{}-a", s.label);
    let mut c = s.controller(&id, &[("PORTCULLIS_LEADER_ELECT", "false")]);
    let objects = s.objects();
    c.wait_ready();
    assert_eq!(c.leader_gauge(), Some(1.0), "it reconciles, so it leads");
    let ps = unique("ps");
    s.apply_policy_server(&ps);
    eventually("the PolicyServer's Deployment", TIMEOUT, || {
        c.assert_running();
        s.deployment_exists(&ps).then_some(())
    });
    let leases =
        s.cp.kubectl_ok(&["-n", s.ns(), "get", "leases", "-o", "name"]);
    assert!(leases.trim().is_empty(), "leases: {leases}");
    s.delete_policy_server(&ps);
    drop(objects);
    let status = c.terminate(EXIT_TIMEOUT);
    assert!(status.success(), "{status}\n{}", c.log());
    assert!(!c.logged("released leadership"));
}
