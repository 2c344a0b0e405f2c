#!/usr/bin/env bash
# The demo: start the policy-server with the sample policies, send it the
# reference admission requests, and print each verdict. Run it with `./dev demo`.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
server="$target/debug/policy-server"
policies="$repo/target/policies"
work="$repo/target/demo"
mkdir -p "$work"

for bin in "$server" "$policies/pod-privileged-wapc.wasm"; do
    [ -e "$bin" ] || { echo "demo: $bin is missing; run ./dev demo" >&2; exit 1; }
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
ready_port=$(free_port)

# The embedded default configuration: both ABIs, a mutating policy, and the
# same pod-privileged module again in monitor mode.
cat > "$work/policies.yml" <<YAML
pod-privileged-wapc:
  module: file://$policies/pod-privileged-wapc.wasm
pod-privileged-component:
  module: file://$policies/pod-privileged-component.wasm
default-labels-component:
  module: file://$policies/default-labels-component.wasm
  allowedToMutate: true
  settings:
    labels:
      team: platform
      portcullis.dev/managed: "true"
pod-privileged-monitor:
  module: file://$policies/pod-privileged-wapc.wasm
  policyMode: monitor
YAML

"$server" --policies "$work/policies.yml" --addr 127.0.0.1 --port "$port" \
    --readiness-probe-port "$ready_port" --policies-download-dir "$work/store" \
    --log-level warn >"$work/policy-server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT

for _ in $(seq 1 300); do
    curl -fs "http://127.0.0.1:$ready_port/readiness" >/dev/null 2>&1 && break
    kill -0 $pid 2>/dev/null || { cat "$work/policy-server.log"; exit 1; }
    sleep 0.1
done
echo "policy-server ready on http://127.0.0.1:$port (config: $work/policies.yml)"
echo

verdict() {
    local policy=$1 fixture=$2
    local out
    out=$(curl -fsS -H 'content-type: application/json' \
        --data-binary "@$repo/tests/fixtures/$fixture.json" \
        "http://127.0.0.1:$port/validate/$policy")
    jq -r --arg p "$policy" --arg f "$fixture" '
        .response as $r
        | (if $r.allowed then "ALLOWED" else "DENIED " end) as $v
        | "\($p | . + " " * (26 - length)) \($f | . + " " * (22 - length)) \($v)"
          + (if $r.status.message then "  \($r.status.message)" else "" end)
          + (if $r.patch then "  patch: \($r.patch | @base64d)" else "" end)' <<<"$out"
}

printf '%-26s %-22s %s\n' POLICY REQUEST VERDICT
for policy in pod-privileged-wapc pod-privileged-component pod-privileged-monitor; do
    for fixture in pod-unprivileged pod-privileged pod-init-privileged; do
        verdict "$policy" "$fixture"
    done
done
for fixture in pod-no-labels pod-partial-labels; do
    verdict default-labels-component "$fixture"
done
echo
echo "metrics (first lines):"
curl -fsS "http://127.0.0.1:$ready_port/metrics" | grep '^portcullis_policy_evaluations_total' | sed -n 1,5p
