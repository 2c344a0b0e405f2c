#!/usr/bin/env bash
# Load benchmark of context-aware policies, against the local control plane.
#
#   bench/context-aware.sh [duration-seconds]      (default 15)
#
# Starts the test harness' control plane (etcd + kube-apiserver, with an
# audit log), fills it with 3,000 Namespaces and 10,000 RoleBindings, then
# for each scenario starts a release policy-server (plain HTTP, --workers 2,
# the incumbent's conditions) whose policy lists the whole kind on every
# request, and drives it with wrk (2 threads, 8 keep-alive connections, POST
# of tests/fixtures/pod-unprivileged.json). The policy is the capability
# probe's `count` call: it lists the kind through the host and parses every
# item (typed k8s-openapi objects with kubewarden-policy-sdk for waPC,
# serde_json values for the component). Reported per scenario: req/s, p50,
# p99, the server's peak RSS (VmHWM, including its caches), and the LIST and
# GET requests the API server received for the kind while wrk ran (from the
# audit log).
#
# Needs: cargo, wrk, curl, kubectl, python3; the control-plane binary
# (scripts/go-tools.sh control-plane); the sample policies in target/policies
# (scripts/build-policies.sh).
set -euo pipefail

DURATION="${1:-15}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
FIXTURE="$ROOT/tests/fixtures/pod-unprivileged.json"
POLICIES="$ROOT/target/policies"
CONTROL_PLANE="${PORTCULLIS_CONTROL_PLANE_BIN:-$HOME/.cache/portcullis/bin/control-plane}"
WORK="$(mktemp -d)"
SERVER_PID=""
CP_PID=""
cleanup() {
  for pid in "$SERVER_PID" "$CP_PID"; do
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

for tool in cargo wrk curl kubectl python3; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 1; }
done
[[ -x "$CONTROL_PLANE" ]] || { echo "missing $CONTROL_PLANE: scripts/go-tools.sh control-plane" >&2; exit 1; }
for m in capability-probe-wapc capability-probe-component; do
  [[ -f "$POLICIES/$m.wasm" ]] || { echo "missing $POLICIES/$m.wasm: run scripts/build-policies.sh" >&2; exit 1; }
done

echo "building release policy-server..." >&2
cargo build --release --quiet -p portcullis-host --bin policy-server --manifest-path "$ROOT/Cargo.toml"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/policy-server"

# --- control plane, filled ----------------------------------------------------
echo "starting the control plane..." >&2
"$CONTROL_PLANE" --state-dir "$WORK/cp" --port 0 --audit-log "$WORK/audit.log" \
  --remove-state-on-exit >"$WORK/cp.out" 2>&1 &
CP_PID=$!
for _ in $(seq 1 1200); do
  [[ -s "$WORK/cp/ready" ]] && break
  kill -0 "$CP_PID" 2>/dev/null || { cat "$WORK/cp.out" >&2; exit 1; }
  sleep 0.1
done
[[ -s "$WORK/cp/ready" ]] || { echo "control plane not ready" >&2; exit 1; }
KUBECONFIG_FILE="$WORK/cp/kubeconfig"
k() { kubectl --kubeconfig "$KUBECONFIG_FILE" "$@"; }

echo "creating 3000 Namespaces and 10000 RoleBindings..." >&2
python3 - "$WORK" <<'PY'
import json, sys
work = sys.argv[1]
def chunks(items, n):
    size = (len(items) + n - 1) // n
    return [items[i:i + size] for i in range(0, len(items), size)]
namespaces = [{"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": f"bench-{i:04d}", "labels": {"team": f"team-{i % 50}"}}}
              for i in range(3000)]
bindings = [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": {"name": f"rb-{i:05d}", "namespace": "bench-rbac",
                          "labels": {"app": f"app-{i % 100}"}},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
             "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": f"user-{i}"}]}
            for i in range(10000)]
for name, items in [("ns", namespaces), ("rb", bindings)]:
    for n, part in enumerate(chunks(items, 4)):
        with open(f"{work}/{name}-{n}.json", "w") as f:
            json.dump({"apiVersion": "v1", "kind": "List", "items": part}, f)
PY
# `wait` with pids: a bare `wait` would also wait for the control plane.
create_all() {
  local pids=()
  for file in "$@"; do
    k create -f "$file" >/dev/null &
    pids+=($!)
  done
  wait "${pids[@]}"
}
create_all "$WORK"/ns-{0,1,2,3}.json
k create namespace bench-rbac >/dev/null
create_all "$WORK"/rb-{0,1,2,3}.json
echo "  $(k get namespaces -o name | grep -c bench-) namespaces, $(k get rolebindings -n bench-rbac -o name | wc -l) rolebindings" >&2

cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open("$FIXTURE", "rb"))
wrk.body = f:read("*a")
f:close()
LUA

PORT=38543
PROBE=38181

# reads RESOURCE -> "lists gets" so far in the audit log
reads() {
  python3 - "$WORK/audit.log" "$1" <<'PY'
import json, sys
lists = gets = 0
for line in open(sys.argv[1]):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get("objectRef", {}).get("resource") != sys.argv[2] or e.get("stage") != "ResponseComplete":
        continue
    lists += e.get("verb") == "list"
    gets += e.get("verb") == "get"
print(lists, gets)
PY
}

# scenario NAME MODULE API_VERSION KIND RESOURCE MASKS_JSON EXPECTED_ITEMS
scenario() {
  local name="$1" module="$2" api_version="$3" kind="$4" resource="$5" masks="$6" expected="$7"
  local arg
  arg=$(python3 -c 'import json,sys; print(json.dumps({"api_version": sys.argv[1], "kind": sys.argv[2], "label_selector": None, "field_selector": None, "field_masks": json.loads(sys.argv[3])}))' "$api_version" "$kind" "$masks")
  cat > "$WORK/policies.yml" <<YAML
bench:
  module: file://$POLICIES/$module.wasm
  settings: {"call": "count", "arg": $arg}
  contextAwareResources: [{apiVersion: $api_version, kind: $kind}]
  hostCapabilities: ["kubernetes/list_resources_all"]
YAML
  local start end ready
  start=$(date +%s.%N)
  "$BIN" --policies "$WORK/policies.yml" --addr 127.0.0.1 --port "$PORT" \
    --readiness-probe-port "$PROBE" --policies-download-dir "$WORK/store" \
    --kubeconfig "$KUBECONFIG_FILE" --workers 2 --log-level warn >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 1200); do
    curl -fs "http://127.0.0.1:$PROBE/readiness" >/dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
    sleep 0.05
  done
  end=$(date +%s.%N)
  ready=$(python3 -c "print(f'{$end - $start:.2f}')")
  local answer
  answer=$(curl -fs -X POST -H 'Content-Type: application/json' --data-binary "@$FIXTURE" \
    "http://127.0.0.1:$PORT/validate/bench")
  python3 - "$answer" "$expected" <<'PY'
import json, sys
response = json.loads(sys.argv[1])["response"]
message = response.get("status", {}).get("message", "")
# The system namespaces come on top of the 3,000.
assert response["allowed"] and json.loads(message)["items"] >= int(sys.argv[2]), response
PY
  local before after
  before=$(reads "$resource")
  wrk -t2 -c8 -d"${DURATION}s" --latency -s "$WORK/post.lua" "http://127.0.0.1:$PORT/validate/bench" >"$WORK/wrk.out"
  after=$(reads "$resource")
  local rss
  rss=$(awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$SERVER_PID/status")
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
  python3 - "$name" "$WORK/wrk.out" "$rss" "$ready" "$before" "$after" <<'PY'
import re, sys
name, path, rss, ready, before, after = sys.argv[1:]
text = open(path).read()
rps = re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)
def pct(p):
    m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)", text, re.M)
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
b, a = [list(map(int, x.split())) for x in (before, after)]
print(f"| {name} | {float(rps):,.0f} | {pct(50):.2f} ms | {pct(99):.2f} ms | {rss} MiB | {ready} s | {a[0]-b[0]} / {a[1]-b[1]} |"
      + (f" {errors.group(1)} non-2xx" if errors else ""))
PY
}

echo
echo "| scenario | req/s | p50 | p99 | peak RSS | ready | LIST / GET during run |"
echo "|---|---|---|---|---|---|---|"
scenario "3,000 Namespaces, waPC (SDK, typed)" capability-probe-wapc v1 Namespace namespaces null 3000
scenario "3,000 Namespaces, waPC, field mask metadata.name" capability-probe-wapc v1 Namespace namespaces '["metadata.name"]' 3000
scenario "3,000 Namespaces, component" capability-probe-component v1 Namespace namespaces null 3000
scenario "3,000 Namespaces, component, field mask metadata.name" capability-probe-component v1 Namespace namespaces '["metadata.name"]' 3000
scenario "10,000 RoleBindings, waPC (SDK, typed)" capability-probe-wapc rbac.authorization.k8s.io/v1 RoleBinding rolebindings null 10000
scenario "10,000 RoleBindings, waPC, field mask metadata.name" capability-probe-wapc rbac.authorization.k8s.io/v1 RoleBinding rolebindings '["metadata.name"]' 10000
scenario "10,000 RoleBindings, component" capability-probe-component rbac.authorization.k8s.io/v1 RoleBinding rolebindings null 10000
scenario "10,000 RoleBindings, component, field mask metadata.name" capability-probe-component rbac.authorization.k8s.io/v1 RoleBinding rolebindings '["metadata.name"]' 10000
