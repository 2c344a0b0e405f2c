#!/usr/bin/env bash
# Benchmark of the audit scanner (BENCHMARKS.md, "The audit scanner"):
# NAMESPACES x PODS Pods (default 100 x 100 = 10,000, half of them privileged)
# and POLICIES active ClusterAdmissionPolicies on Pods (default 5), on a FRESH
# local control plane of its own (target/bench-audit/control-plane, not the one
# `just cluster-up` starts), with a real policy-server (scripts/audit-local.sh).
# Two scanner runs: the first writes every report, the second finds nothing
# changed. Per run it prints the wall time, the scanner's peak RSS
# (/usr/bin/time), the API requests by verb as the API server's audit log counts
# them (the scanner's requests are the ones without a User-Agent), the
# policy-server evaluations and the report writes (the scanner's own counters).
#
#   bench/audit.sh                 release binaries (cargo build --release first)
#   PORTCULLIS_AUDIT_PROFILE=debug bench/audit.sh
#   BENCH_NAMESPACES=5 BENCH_PODS=10 BENCH_POLICIES=5 bench/audit.sh   (a quick check)
#
# Extra arguments go to audit-scanner (e.g. --parallel-resources 128).
# Results: target/bench-audit/result.md; the control plane is stopped at the end.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NAMESPACES="${BENCH_NAMESPACES:-100}"
PODS="${BENCH_PODS:-100}"
POLICIES="${BENCH_POLICIES:-5}"
export PORTCULLIS_AUDIT_PROFILE="${PORTCULLIS_AUDIT_PROFILE:-release}"
DIR="$ROOT/target/bench-audit"
export PORTCULLIS_CONTROL_PLANE_DIR="$DIR/control-plane"
export PORTCULLIS_AUDIT_LOCAL_DIR="$DIR/local"
KUBECONFIG_PATH="$PORTCULLIS_CONTROL_PLANE_DIR/kubeconfig"
kubectl_() { kubectl --kubeconfig "$KUBECONFIG_PATH" "$@"; }

cleanup() {
  "$ROOT/scripts/audit-local.sh" down || true
  "$ROOT/scripts/control-plane.sh" down || true
}
trap cleanup EXIT

"$ROOT/scripts/control-plane.sh" down >/dev/null 2>&1 || true
rm -rf "$DIR"
mkdir -p "$DIR/pods"
"$ROOT/scripts/audit-local.sh" up "$POLICIES"

echo "creating $NAMESPACES namespaces x $PODS Pods" >&2
start=$SECONDS
for ((n = 0; n < NAMESPACES; n++)); do printf 'bench-%03d\n' "$n"; done >"$DIR/namespaces"
jq -R '{apiVersion: "v1", kind: "Namespace", metadata: {name: .}}' "$DIR/namespaces" |
  jq -s '{apiVersion: "v1", kind: "List", items: .}' | kubectl_ create -f - >/dev/null
# Pods need their namespace's `default` ServiceAccount (made by kube-controller-manager).
for _ in $(seq 1 600); do
  [[ $(kubectl_ get serviceaccounts -A --no-headers 2>/dev/null | awk '$1 ~ /^bench-/ && $2 == "default"' | wc -l) -ge $NAMESPACES ]] && break
  sleep 0.2
done
while read -r ns; do
  jq -n --arg ns "$ns" --argjson pods "$PODS" \
    --slurpfile privileged "$ROOT/tests/fixtures/pod-privileged.json" \
    --slurpfile unprivileged "$ROOT/tests/fixtures/pod-unprivileged.json" '
    {apiVersion: "v1", kind: "List", items: [range(0; $pods) as $i |
      (if $i % 2 == 0 then $privileged[0] else $unprivileged[0] end).request.object
      | .metadata = {name: "pod-\($i)", namespace: $ns, labels: {app: "bench-\($i % 10)"}}]}' \
    >"$DIR/pods/$ns.json"
done <"$DIR/namespaces"
ls "$DIR"/pods/*.json | xargs -P 4 -n 1 kubectl --kubeconfig "$KUBECONFIG_PATH" create -f >/dev/null
pods=$(kubectl_ get pods -A --no-headers --chunk-size 1000 | awk '$1 ~ /^bench-/' | wc -l)
echo "$pods Pods in $((SECONDS - start)) s" >&2
[[ $pods -eq $((NAMESPACES * PODS)) ]] || { echo "expected $((NAMESPACES * PODS)) Pods" >&2; exit 1; }

# run N: the scanner once, then its figures as one markdown table row.
run() {
  local n=$1; shift
  local since log="$DIR/run-$n.log" rss="$DIR/run-$n.time"
  since=$(date -u +%Y-%m-%dT%H:%M:%S.%6NZ)
  local t0 t1
  t0=$(date +%s.%N)
  /usr/bin/time -v -o "$rss" "$ROOT/scripts/audit-local.sh" scan --log-fmt json "$@" >"$log" 2>&1 ||
    { tail -n 20 "$log" >&2; exit 1; }
  t1=$(date +%s.%N)
  sleep 1 # the audit log is written asynchronously
  local finished verbs
  finished=$(jq -c 'select(.fields.message == "audit run finished") | .fields' "$log" | tail -n1)
  # The scanner sends no User-Agent; kubectl, the control plane and the
  # policy-server's clients all do.
  verbs=$(jq -r --arg since "$since" \
    'select(.userAgent == null and .stage == "ResponseComplete" and .requestReceivedTimestamp >= $since) | .verb' \
    "$PORTCULLIS_CONTROL_PLANE_DIR/audit.log" | sort | uniq -c | awk '{printf "%s%s %s", sep, $2, $1; sep=", "}')
  # /usr/bin/time measures the scan wrapper's process tree's largest process: the scanner.
  printf '| %s | %.1f s | %.1f s | %.1f MiB | %s | %s | %s | %s | %s |\n' "$n" \
    "$(echo "$t1 - $t0" | bc)" \
    "$(jq -r '.duration_seconds' <<<"$finished")" \
    "$(awk -F': ' '/Maximum resident/ {print $2 / 1024}' "$rss")" \
    "$(jq -r '.objects' <<<"$finished")" \
    "$(jq -r '.evaluations' <<<"$finished")" \
    "$(jq -r '"\(.reports_written) written, \(.reports_unchanged) unchanged, \(.reports_deleted) deleted"' <<<"$finished")" \
    "$verbs" \
    "$(jq -r '.complete' <<<"$finished")"
}

{
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), \`bench/audit.sh $*\` (profile $PORTCULLIS_AUDIT_PROFILE), $NAMESPACES namespaces x $PODS Pods, $POLICIES policies, load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  echo '| run | wall | scanner duration | scanner peak RSS | objects | evaluations | reports | API requests by verb (audit log) | complete |'
  echo '|---|---|---|---|---|---|---|---|---|'
  run 1 "$@"
  run 2 "$@"
  echo
  echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$DIR/result.md"
