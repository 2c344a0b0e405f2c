#!/usr/bin/env python3
"""Writes tests/fixtures/deployment-30kb.json: the larger review of bench/load.sh.

    bench/gen-deployment-fixture.py [OUT]   (default tests/fixtures/deployment-30kb.json)

An admission.k8s.io/v1 AdmissionReview (CREATE of an apps/v1 Deployment) of
about 30 KB: five containers and an init container with many environment
variables, volume mounts, resources and probes, labels and annotations. The
container `debug-shell` is privileged, so a policy that reads a Deployment's
Pod template (Kubewarden's pod-privileged) denies it. Deterministic: the same
script writes the same bytes (indent 1, like the other fixtures).
"""

import json
import os
import sys

APP = "checkout"
NS = "shop"
UID = "33333333-3333-3333-3333-333333333333"

LABELS = {
    "app.kubernetes.io/name": APP,
    "app.kubernetes.io/instance": f"{APP}-prod",
    "app.kubernetes.io/version": "4.12.3",
    "app.kubernetes.io/component": "api",
    "app.kubernetes.io/part-of": "shop",
    "app.kubernetes.io/managed-by": "helm",
    "helm.sh/chart": f"{APP}-4.12.3",
    "team": "payments",
    "cost-center": "cc-4711",
    "environment": "production",
}


def env_vars(prefix, n):
    """n environment variables: literals, and every fifth from a Secret,
    ConfigMap or the downward API, like real charts have."""
    out = []
    for i in range(n):
        name = f"{prefix}_SETTING_{i:02d}"
        kind = i % 10
        if kind == 5:
            out.append({"name": name, "valueFrom": {"secretKeyRef": {
                "name": f"{APP}-secrets", "key": f"{prefix.lower()}-secret-{i:02d}", "optional": False}}})
        elif kind == 7:
            out.append({"name": name, "valueFrom": {"configMapKeyRef": {
                "name": f"{APP}-config", "key": f"{prefix.lower()}.setting.{i:02d}"}}})
        elif kind == 9:
            out.append({"name": name, "valueFrom": {"fieldRef": {
                "apiVersion": "v1", "fieldPath": "metadata.namespace" if i % 20 == 9 else "status.podIP"}}})
        else:
            out.append({"name": name,
                        "value": f"https://{prefix.lower()}-{i:02d}.{NS}.svc.cluster.local:8443/v1/endpoint?retries=3&timeout=2500ms"})
    return out


def probe(path, port, initial, period):
    return {"httpGet": {"path": path, "port": port, "scheme": "HTTP"},
            "initialDelaySeconds": initial, "periodSeconds": period,
            "timeoutSeconds": 2, "successThreshold": 1, "failureThreshold": 3}


def restricted():
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def container(name, image, prefix, n_env, port, mounts, privileged=False):
    c = {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": [f"--config=/etc/{APP}/{name}.yaml", "--log-format=json", "--log-level=info",
                 f"--listen=:{port}", "--metrics-listen=:9090", "--graceful-shutdown=25s"],
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}] if port else [],
        "env": env_vars(prefix, n_env),
        "envFrom": [{"configMapRef": {"name": f"{APP}-{name}-env"}},
                    {"secretRef": {"name": f"{APP}-{name}-env", "optional": True}}],
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi", "ephemeral-storage": "1Gi"},
                      "limits": {"cpu": "1", "memory": "512Mi", "ephemeral-storage": "2Gi"}},
        "volumeMounts": [{"name": m, "mountPath": f"/var/run/{APP}/{m}", "readOnly": m != "tmp"} for m in mounts],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if port:
        c["livenessProbe"] = probe("/healthz", port, 10, 10)
        c["readinessProbe"] = probe("/readyz", port, 5, 5)
        c["startupProbe"] = probe("/healthz", port, 0, 2)
    if privileged:
        c["securityContext"] = {"privileged": True, "capabilities": {"add": ["SYS_PTRACE", "NET_ADMIN"]}}
    else:
        c["securityContext"] = restricted()
    return c


def deployment():
    mounts = ["config", "secrets", "tls", "tmp", "cache", "service-account-token"]
    annotations = {
        "deployment.kubernetes.io/revision": "42",
        "meta.helm.sh/release-name": f"{APP}-prod",
        "meta.helm.sh/release-namespace": NS,
        "shop.example.com/owner": "payments-oncall@example.com",
        "shop.example.com/runbook": f"https://runbooks.example.com/{APP}/production",
        "shop.example.com/dashboard": f"https://grafana.example.com/d/{APP}/overview?orgId=1&var-namespace={NS}",
    }
    template_annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9090",
        "prometheus.io/path": "/metrics",
        "checksum/config": "9f2c4e1d7a3b5c6d8e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d",
        "checksum/secrets": "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9",
        "kubectl.kubernetes.io/default-container": "api",
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": APP, "namespace": NS, "labels": LABELS, "annotations": annotations},
        "spec": {
            "replicas": 6,
            "revisionHistoryLimit": 5,
            "progressDeadlineSeconds": 600,
            "selector": {"matchLabels": {"app.kubernetes.io/name": APP, "app.kubernetes.io/instance": f"{APP}-prod"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": LABELS, "annotations": template_annotations},
                "spec": {
                    "serviceAccountName": APP,
                    "automountServiceAccountToken": False,
                    "priorityClassName": "business-critical",
                    "terminationGracePeriodSeconds": 30,
                    "dnsPolicy": "ClusterFirst",
                    "restartPolicy": "Always",
                    "schedulerName": "default-scheduler",
                    "securityContext": {"fsGroup": 10001, "runAsNonRoot": True,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "nodeSelector": {"kubernetes.io/os": "linux", "node.example.com/pool": "general"},
                    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "payments", "effect": "NoSchedule"}],
                    "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
                        "weight": 100, "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": APP}}}}]}},
                    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                                   "whenUnsatisfiable": "ScheduleAnyway",
                                                   "labelSelector": {"matchLabels": {"app.kubernetes.io/name": APP}}}],
                    "initContainers": [container("migrate", f"registry.example.com/shop/{APP}-migrate:4.12.3",
                                                 "MIGRATE", 8, 0, ["config", "secrets", "tmp"])],
                    "containers": [
                        container("api", f"registry.example.com/shop/{APP}:4.12.3", "API", 16, 8080, mounts),
                        container("worker", f"registry.example.com/shop/{APP}-worker:4.12.3", "WORKER", 12, 8081, mounts),
                        container("envoy", "envoyproxy/envoy:v1.31.2", "ENVOY", 6, 15001, ["config", "tls", "tmp"]),
                        container("log-shipper", "fluent/fluent-bit:3.1.9", "FLUENT", 6, 2020, ["config", "tmp"]),
                        container("debug-shell", "busybox:1.36", "DEBUG", 4, 0, ["tmp"], privileged=True),
                    ],
                    "volumes": [
                        {"name": "config", "configMap": {"name": f"{APP}-config", "defaultMode": 420}},
                        {"name": "secrets", "secret": {"secretName": f"{APP}-secrets", "defaultMode": 256}},
                        {"name": "tls", "secret": {"secretName": f"{APP}-tls", "defaultMode": 256}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "512Mi"}},
                        {"name": "cache", "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}},
                        {"name": "service-account-token", "projected": {"defaultMode": 420, "sources": [
                            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607, "audience": "shop"}},
                            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
                                "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}},
                    ],
                },
            },
        },
    }


def review():
    gvk = {"group": "apps", "version": "v1", "kind": "Deployment"}
    gvr = {"group": "apps", "version": "v1", "resource": "deployments"}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": UID,
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": APP,
            "namespace": NS,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:ci:deployer",
                         "uid": "44444444-4444-4444-4444-444444444444",
                         "groups": ["system:serviceaccounts", "system:serviceaccounts:ci", "system:authenticated"]},
            "object": deployment(),
            "oldObject": None,
            "dryRun": False,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "helm"},
        },
    }


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "tests/fixtures/deployment-30kb.json")
    text = json.dumps(review(), indent=1)
    with open(out, "w") as f:
        f.write(text)
    print(f"{out}: {len(text)} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
