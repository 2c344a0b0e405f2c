#!/usr/bin/env bash
# The audit scanner against the local control plane (scripts/control-plane.sh),
# with a real policy-server standing in for the PolicyServer `default`.
#
#   scripts/audit-local.sh up [POLICIES]   start the control plane if needed, install the
#                                          policy and report CRDs, start a policy-server
#                                          for PolicyServer `default` (HTTPS, a local CA,
#                                          certificate for policy-server-default.portcullis.svc)
#                                          and apply POLICIES active ClusterAdmissionPolicies
#                                          (default 2: no-privileged-pods, default-labels;
#                                          more alternate the two modules)
#   scripts/audit-local.sh demo-objects    a namespace `audit-demo` with a privileged and an
#                                          unprivileged Pod
#   scripts/audit-local.sh scan [ARGS...]  run target/<profile>/audit-scanner against it
#                                          (PORTCULLIS_AUDIT_PROFILE=debug|release, default debug)
#   scripts/audit-local.sh down            stop the policy-server (the control plane stays up;
#                                          `just cluster-down` stops it)
#
# There is no kubelet and no controller here: the policies' `status.policyStatus`
# is set to `active` by hand (what the controller does once their webhooks are
# registered), and the scanner reaches the policy-server through
# `--policy-server-address default=127.0.0.1:PORT` while still verifying its
# certificate for the Service name. State: target/audit-local/
# (PORTCULLIS_AUDIT_LOCAL_DIR overrides; PORTCULLIS_CONTROL_PLANE_DIR picks the
# control plane, as in scripts/control-plane.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
WORK="${PORTCULLIS_AUDIT_LOCAL_DIR:-$ROOT/target/audit-local}"
NAMESPACE=portcullis
SERVICE_HOST="policy-server-default.$NAMESPACE.svc"
POLICIES_DIR="$ROOT/target/policies"
KUBECONFIG_PATH="${PORTCULLIS_CONTROL_PLANE_DIR:-$ROOT/target/control-plane}/kubeconfig"

kubectl_() { kubectl --kubeconfig "$KUBECONFIG_PATH" "$@"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

certificates() {
  [[ -f "$WORK/pki/tls.crt" ]] && return 0
  mkdir -p "$WORK/pki"
  local d="$WORK/pki"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj /CN=portcullis-audit-local-ca -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj /CN=policy-server-default -keyout "$d/tls.key" -out "$d/tls.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\n' "$SERVICE_HOST" >"$d/ext"
  openssl x509 -req -in "$d/tls.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
    -days 30 -extfile "$d/ext" -out "$d/tls.crt" 2>/dev/null
}

# policy NAME MODULE SETTINGS_JSON
policy_entry() {
  printf 'clusterwide-%s:\n  module: file://%s/%s.wasm\n  settings: %s\n' "$1" "$POLICIES_DIR" "$2" "$3"
}

policy_names() {
  local count=$1 i
  for ((i = 1; i <= count; i++)); do
    if ((i == 1)); then echo "no-privileged-pods pod-privileged-wapc"
    elif ((i == 2)); then echo "default-labels default-labels-wapc"
    elif ((i % 2)); then echo "no-privileged-pods-$i pod-privileged-wapc"
    else echo "default-labels-$i default-labels-wapc"; fi
  done
}

up() {
  local count="${1:-2}"
  "$ROOT/scripts/control-plane.sh" up >/dev/null
  for f in "$ROOT"/controller/crds/*.yaml "$ROOT"/charts/portcullis-crds/files/*.yaml; do
    kubectl_ apply --server-side -f "$f" >/dev/null
  done
  kubectl_ wait --for=condition=Established --timeout=60s crd --all >/dev/null
  kubectl_ get namespace "$NAMESPACE" >/dev/null 2>&1 || kubectl_ create namespace "$NAMESPACE" >/dev/null
  certificates
  down >/dev/null 2>&1 || true
  : >"$WORK/policies.yml"
  local name module settings
  while read -r name module; do
    settings='{}'
    [[ $module == default-labels-wapc ]] && settings='{"labels": {"team": "platform"}}'
    policy_entry "$name" "$module" "$settings" >>"$WORK/policies.yml"
    local mutating=false annotations=''
    [[ $module == default-labels-wapc ]] && mutating=true
    [[ $module == pod-privileged-wapc ]] && annotations='
  annotations:
    io.kubewarden.policy.severity: high
    io.kubewarden.policy.category: Pod Security'
    kubectl_ apply -f - >/dev/null <<YAML
apiVersion: policies.portcullis.dev/v1
kind: ClusterAdmissionPolicy
metadata:
  name: $name$annotations
spec:
  policyServer: default
  module: file://$POLICIES_DIR/$module.wasm
  mutating: $mutating
  settings: $settings
  rules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      resources: ["pods"]
      operations: ["CREATE", "UPDATE"]
YAML
    kubectl_ patch clusteradmissionpolicy "$name" --subresource=status --type=merge \
      -p '{"status":{"policyStatus":"active"}}' >/dev/null
  done < <(policy_names "$count")
  local port ready
  port=$(free_port)
  ready=$(free_port)
  "$TARGET/${PORTCULLIS_AUDIT_PROFILE:-debug}/policy-server" --policies "$WORK/policies.yml" \
    --cert-file "$WORK/pki/tls.crt" --key-file "$WORK/pki/tls.key" \
    --addr 127.0.0.1 --port "$port" --readiness-probe-port "$ready" \
    --policies-download-dir "$WORK/store" --log-level warn >"$WORK/policy-server.log" 2>&1 &
  echo $! >"$WORK/policy-server.pid"
  echo "$port" >"$WORK/port"
  echo "$ready" >"$WORK/readiness-port"
  for _ in $(seq 1 600); do
    curl -fs "http://127.0.0.1:$ready/readiness" >/dev/null 2>&1 && break
    kill -0 "$(cat "$WORK/policy-server.pid")" 2>/dev/null || { cat "$WORK/policy-server.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "policy-server for PolicyServer default on 127.0.0.1:$port; $count policies active" >&2
}

demo_objects() {
  kubectl_ get namespace audit-demo >/dev/null 2>&1 || kubectl_ create namespace audit-demo >/dev/null
  for _ in $(seq 1 100); do
    kubectl_ -n audit-demo get serviceaccount default >/dev/null 2>&1 && break
    sleep 0.1
  done
  for pod in privileged unprivileged; do
    jq --arg n "$pod" '.request.object | .metadata.name = $n | .metadata.namespace = "audit-demo"' \
      "$ROOT/tests/fixtures/pod-$pod.json" | kubectl_ apply -f - >/dev/null
  done
}

scan() {
  [[ -f "$WORK/port" ]] || { echo "audit-local: run '$0 up' first" >&2; exit 1; }
  KUBECONFIG="$KUBECONFIG_PATH" "$TARGET/${PORTCULLIS_AUDIT_PROFILE:-debug}/audit-scanner" \
    --portcullis-namespace "$NAMESPACE" --ca-file "$WORK/pki/ca.crt" \
    --policy-server-address "default=127.0.0.1:$(cat "$WORK/port")" "$@"
}

down() {
  if [[ -f "$WORK/policy-server.pid" ]]; then
    local pid
    pid="$(cat "$WORK/policy-server.pid")"
    kill "$pid" 2>/dev/null && while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    rm -f "$WORK/policy-server.pid" "$WORK/port"
  fi
}

mkdir -p "$WORK"
case "${1:-}" in
  up) shift; up "$@" ;;
  demo-objects) demo_objects ;;
  scan) shift; scan "$@" ;;
  down) down ;;
  *) sed -n '2,20p' "$0" >&2; exit 2 ;;
esac
