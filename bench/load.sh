#!/usr/bin/env bash
# Load benchmark of the policy-server.
#
#   bench/load.sh [duration-seconds]      (default 15)
#
# Builds the release policy-server, generates a throwaway CA and server
# certificate with openssl, and measures with wrk (8 keep-alive connections,
# POST of the reference fixture pod-privileged.json):
#   1. HTTPS, waPC pod-privileged policy;
#   2. HTTPS, component pod-privileged policy;
#   3. HTTPS, Rego pod-privileged policies (Gatekeeper mode, OPA mode);
#   4. plain HTTP, waPC policy;
# reporting req/s, p50/p99 latency and the server's peak RSS (VmHWM); then
#   5. a 20-policy configuration: time to ready and idle RSS (cold compiled cache);
#   6. a restart of the same configuration with the compiled cache warm: time to ready;
#   7. a two-member policy group (both members run: the privileged fixture
#      in namespace default) against its two members as separate policies,
#      evaluated one after the other: µs of server time per admission.
# SCENARIOS=groups runs scenario 7 only.
# Needs: cargo, openssl, wrk, curl; the sample policies in target/policies
# (scripts/build-policies.sh). POLICY_SERVER_BIN=path measures that binary
# instead of building one (to compare two builds on the same machine).
set -euo pipefail

DURATION="${1:-15}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
FIXTURE="${FIXTURE:-$ROOT/tests/fixtures/pod-privileged.json}"
POLICIES="$ROOT/target/policies"
WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

for tool in cargo openssl wrk curl; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 1; }
done
for m in pod-privileged-wapc pod-privileged-component pod-privileged-gatekeeper pod-privileged-opa default-labels-wapc default-labels-component adversarial-wapc adversarial-component namespace-allowlist-wapc; do
  [[ -f "$POLICIES/$m.wasm" ]] || { echo "missing $POLICIES/$m.wasm: run scripts/build-policies.sh" >&2; exit 1; }
done

if [[ -n "${POLICY_SERVER_BIN:-}" ]]; then
  BIN="$POLICY_SERVER_BIN"
else
  echo "building release policy-server..." >&2
  cargo build --release --quiet -p portcullis-host --bin policy-server --manifest-path "$ROOT/Cargo.toml"
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/policy-server"
fi

# --- certificates -----------------------------------------------------------
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=bench CA" \
  -keyout "$WORK/ca.key" -out "$WORK/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=policy-server" \
  -keyout "$WORK/tls.key" -out "$WORK/tls.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > "$WORK/ext.cnf"
openssl x509 -req -in "$WORK/tls.csr" -CA "$WORK/ca.crt" -CAkey "$WORK/ca.key" -CAcreateserial \
  -days 1 -extfile "$WORK/ext.cnf" -out "$WORK/tls.crt" 2>/dev/null

cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open("$FIXTURE", "rb"))
wrk.body = f:read("*a")
f:close()
LUA

PORT=38443
PROBE=38081

# start_server CONFIG DOWNLOAD_DIR TLS(yes|no) -> sets SERVER_PID and READY (seconds to ready)
start_server() {
  local config="$1" dir="$2" tls="$3"
  local args=(--policies "$config" --addr 127.0.0.1 --port "$PORT" --readiness-probe-port "$PROBE"
              --policies-download-dir "$dir" --log-level warn)
  if [[ "$tls" == yes ]]; then
    args+=(--cert-file "$WORK/tls.crt" --key-file "$WORK/tls.key")
  fi
  local start end
  start=$(date +%s.%N)
  "$BIN" "${args[@]}" >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 600); do
    if curl -fs "http://127.0.0.1:$PROBE/readiness" >/dev/null 2>&1; then
      end=$(date +%s.%N)
      READY=$(echo "$end - $start" | bc -l)
      return 0
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; echo "server died" >&2; exit 1; }
    sleep 0.05
  done
  echo "server not ready after 30 s" >&2
  cat "$WORK/server.log" >&2
  exit 1
}

stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

rss_kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }

# run_wrk URL -> "req/s p50 p99"
run_wrk() {
  local out
  out=$(wrk -t2 -c8 -d"${DURATION}s" --latency -s "$WORK/post.lua" "$1")
  echo "$out" >"$WORK/wrk.last"
  local rps p50 p99 non2xx
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  if [[ -n "$non2xx" ]]; then
    echo "warning: $non2xx non-2xx responses" >&2
  fi
  echo "$rps $p50 $p99"
}

# --- 6. a two-member group against its members one after the other --------
bench_groups() {
  cat > "$WORK/policies-groups.yml" <<YAML
not-privileged:
  module: file://$POLICIES/pod-privileged-wapc.wasm
trusted-namespace:
  module: file://$POLICIES/namespace-allowlist-wapc.wasm
  settings: {namespaces: [trusted]}
privileged-group:
  expression: "not_privileged() || trusted_namespace()"
  message: privileged Pods run in the trusted namespace only
  policies:
    not_privileged:
      module: file://$POLICIES/pod-privileged-wapc.wasm
    trusted_namespace:
      module: file://$POLICIES/namespace-allowlist-wapc.wasm
      settings: {namespaces: [trusted]}
YAML
  start_server "$WORK/policies-groups.yml" "$WORK/store-groups" yes
  local verdict
  verdict=$(curl -sk -X POST -H 'Content-Type: application/json' --data-binary @"$FIXTURE" \
    "https://127.0.0.1:$PORT/validate/privileged-group")
  # Both members ran and denied: two causes.
  [[ "$verdict" == *'"allowed":false'* && "$verdict" == *spec.policies.trusted_namespace* ]] \
    || { echo "unexpected group verdict: $verdict" >&2; exit 1; }
  echo
  echo "| run (HTTPS, 8 conns, keep-alive) | req/s | p50 | p99 | µs per admission |"
  echo "|---|---|---|---|---|"
  local id rps p50 p99 sequential=0 group_us
  for id in not-privileged trusted-namespace privileged-group; do
    read -r rps p50 p99 < <(run_wrk "https://127.0.0.1:$PORT/validate/$id")
    local us
    us=$(echo "1000000 / $rps" | bc -l)
    printf '| %s | %s | %s | %s | %.0f |\n' "$id" "$rps" "$p50" "$p99" "$us"
    if [[ "$id" == privileged-group ]]; then
      group_us=$us
    else
      sequential=$(echo "$sequential + $us" | bc -l)
    fi
  done
  printf '| the two members one after the other (sum) | | | | %.0f |\n' "$sequential"
  printf '\ngroup / members one after the other: %.2f\n' "$(echo "$group_us / $sequential" | bc -l)"
  stop_server
}

if [[ "${SCENARIOS:-all}" == groups ]]; then
  bench_groups
  exit 0
fi

cat > "$WORK/policies.yml" <<YAML
priv-wapc:
  module: file://$POLICIES/pod-privileged-wapc.wasm
priv-component:
  module: file://$POLICIES/pod-privileged-component.wasm
priv-gatekeeper:
  module: file://$POLICIES/pod-privileged-gatekeeper.wasm
  executionMode: gatekeeper
priv-opa:
  module: file://$POLICIES/pod-privileged-opa.wasm
  executionMode: opa
YAML

# Compile once so that the measured runs' peak RSS is serving, not compiling.
start_server "$WORK/policies.yml" "$WORK/store" no
stop_server

echo
echo "| run | req/s | p50 | p99 | peak RSS (MiB) |"
echo "|---|---|---|---|---|"
for scenario in "https priv-wapc yes" "https priv-component yes" "https priv-gatekeeper yes" "https priv-opa yes" "http priv-wapc no"; do
  read -r scheme id tls <<<"$scenario"
  start_server "$WORK/policies.yml" "$WORK/store" "$tls"
  # Sanity check: the fixture must be rejected (it is a privileged pod).
  verdict=$(curl -sk -X POST -H 'Content-Type: application/json' --data-binary @"$FIXTURE" \
    "$scheme://127.0.0.1:$PORT/validate/$id")
  [[ "$verdict" == *'"allowed":false'* ]] || { echo "unexpected verdict for $id: $verdict" >&2; exit 1; }
  read -r rps p50 p99 < <(run_wrk "$scheme://127.0.0.1:$PORT/validate/$id")
  hwm=$(rss_kib "$SERVER_PID" VmHWM)
  printf '| %s %s (8 conns, keep-alive) | %s | %s | %s | %.1f |\n' "$scheme" "$id" "$rps" "$p50" "$p99" "$(echo "$hwm / 1024" | bc -l)"
  stop_server
done

# --- 20 policies: ready time and idle RSS, then restart with a warm cache ---
{
  i=0
  for n in $(seq 1 4); do
    for m in pod-privileged-wapc pod-privileged-component; do
      i=$((i + 1)); printf 'p%02d-%s:\n  module: file://%s/%s.wasm\n' "$i" "$m" "$POLICIES" "$m"
    done
    for m in default-labels-wapc default-labels-component; do
      i=$((i + 1)); printf 'p%02d-%s:\n  module: file://%s/%s.wasm\n  allowedToMutate: true\n  settings: {labels: {owner: team-%d}}\n' "$i" "$m" "$POLICIES" "$m" "$n"
    done
    for m in adversarial-wapc; do
      i=$((i + 1)); printf 'p%02d-%s:\n  module: file://%s/%s.wasm\n  settings: {behaviour: accept}\n' "$i" "$m" "$POLICIES" "$m"
    done
  done
} > "$WORK/policies-20.yml"

echo
echo "| run | policies | ready (s) | idle RSS (MiB) |"
echo "|---|---|---|---|"
rm -rf "$WORK/store20"
start_server "$WORK/policies-20.yml" "$WORK/store20" yes
sleep 2
rss=$(rss_kib "$SERVER_PID" VmRSS)
loaded=$(curl -fs "http://127.0.0.1:$PROBE/readiness" | grep -o '"state":"loaded"' | wc -l)
printf '| cold start (empty compiled cache) | %s loaded | %.2f | %.1f |\n' "$loaded" "$READY" "$(echo "$rss / 1024" | bc -l)"
stop_server
start_server "$WORK/policies-20.yml" "$WORK/store20" yes
sleep 2
rss=$(rss_kib "$SERVER_PID" VmRSS)
loaded=$(curl -fs "http://127.0.0.1:$PROBE/readiness" | grep -o '"state":"loaded"' | wc -l)
printf '| restart, modules unchanged (warm compiled cache) | %s loaded | %.2f | %.1f |\n' "$loaded" "$READY" "$(echo "$rss / 1024" | bc -l)"
stop_server

bench_groups
