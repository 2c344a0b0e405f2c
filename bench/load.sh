#!/usr/bin/env bash
# Load benchmark of the policy-server.
#
#   bench/load.sh [duration-seconds]      (default 15)
#
# Builds the release policy-server, generates a throwaway CA and server
# certificate with openssl, and measures with wrk (1 thread, 8 keep-alive
# connections, POST of the reference fixture pod-privileged.json):
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
#
# SCENARIOS=request-path: the side-by-side comparison (issue 17). For each
# binary of POLICY_SERVER_BINS, module (Kubewarden's upstream pod-privileged
# if UPSTREAM_POD_PRIVILEGED names its built .wasm, our waPC and component
# samples) and scheme (plain HTTP keep-alive, HTTPS): wrk -t1 -c8 on
# pod-privileged.json, then wrk -t1 -c64 on deployment-30kb.json; ROUNDS
# rounds (default 3), the binaries alternating within each round; a fresh
# server and a 2 s warm-up before every measured run; medians.
# SMALL_CONNECTIONS (default 8) sets wrk's connections for pod-privileged.json:
# 1 measures an unsaturated server: each request waits for the previous
# answer, so req/s is 1 / latency.
# SCENARIOS=soak: peak req/s (wrk -t1 -c8, PEAK_SECONDS, HTTPS, the waPC
# sample, or the sample SOAK_MODULE names, e.g. pod-privileged-component),
# then vegeta at half that rate for SOAK_SECONDS (default 600), the server's
# VmRSS and the CPU the server and vegeta used every 10 s, and the count of
# non-2xx responses and errors (must be 0). On a machine with 2 or more CPUs
# the server runs on the first half of them and the load generator (wrk for
# the peak, vegeta for the soak) on the rest, so that neither starves the
# other and the peak and the soak see the same server; SOAK_PIN=0 shares
# every CPU between them instead.
#
# Needs: openssl, wrk, curl, bc, jq (cargo unless POLICY_SERVER_BIN(S) is
# set; vegeta for the soak: VEGETA=path, else scripts/go-tools.sh vegeta);
# the sample policies in target/policies (scripts/build-policies.sh).
# POLICY_SERVER_BIN=path measures that binary instead of building one;
# POLICY_SERVER_BINS="a=/path/one b=/path/two" compares builds side by side
# (request-path and soak; the other scenarios measure the first).
# PORT, PROBE: the webhook and readiness ports (default 38443, 38081).
set -euo pipefail

DURATION="${1:-15}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
FIXTURE="${FIXTURE:-$ROOT/tests/fixtures/pod-privileged.json}"
LARGE_FIXTURE="${LARGE_FIXTURE:-$ROOT/tests/fixtures/deployment-30kb.json}"
POLICIES="$ROOT/target/policies"
SCENARIOS="${SCENARIOS:-all}"
ROUNDS="${ROUNDS:-3}"
SMALL_CONNECTIONS="${SMALL_CONNECTIONS:-8}"
WARMUP_SECONDS="${WARMUP_SECONDS:-2}"
PEAK_SECONDS="${PEAK_SECONDS:-10}"
SOAK_SECONDS="${SOAK_SECONDS:-600}"
SOAK_PIN="${SOAK_PIN:-1}"
PORT="${PORT:-38443}"
PROBE="${PROBE:-38081}"
WORK="$(mktemp -d)"
SERVER_PID=""
LOAD_PID=""
# Command prefixes that pin the server and the load generator (the soak sets them).
SERVER_PIN=()
LOAD_PIN=()
cleanup() {
  if [[ -n "$LOAD_PID" ]] && kill -0 "$LOAD_PID" 2>/dev/null; then
    kill "$LOAD_PID" 2>/dev/null || true
    wait "$LOAD_PID" 2>/dev/null || true
  fi
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

case "$SCENARIOS" in
  all) modules=(pod-privileged-wapc pod-privileged-component pod-privileged-gatekeeper pod-privileged-opa default-labels-wapc default-labels-component adversarial-wapc adversarial-component namespace-allowlist-wapc) ;;
  groups) modules=(pod-privileged-wapc namespace-allowlist-wapc) ;;
  request-path) modules=(pod-privileged-wapc pod-privileged-component) ;;
  soak) modules=("${SOAK_MODULE:-pod-privileged-wapc}") ;;
  *) echo "unknown SCENARIOS=$SCENARIOS (all, groups, request-path, soak)" >&2; exit 2 ;;
esac
for tool in openssl wrk curl bc jq; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 1; }
done
for m in "${modules[@]}"; do
  [[ -f "$POLICIES/$m.wasm" ]] || { echo "missing $POLICIES/$m.wasm: run scripts/build-policies.sh" >&2; exit 1; }
done

# The binaries: BIN_LABELS[i] names BIN_PATHS[i]; BIN is the one start_server runs.
BIN_LABELS=()
BIN_PATHS=()
if [[ -n "${POLICY_SERVER_BINS:-}" ]]; then
  for entry in $POLICY_SERVER_BINS; do
    label="${entry%%=*}" path="${entry#*=}"
    [[ "$entry" == *=* && "$label" =~ ^[A-Za-z0-9._-]+$ ]] \
      || { echo "POLICY_SERVER_BINS: '$entry' is not label=path (label: letters, digits, . _ -)" >&2; exit 2; }
    BIN_LABELS+=("$label")
    BIN_PATHS+=("$path")
  done
elif [[ -n "${POLICY_SERVER_BIN:-}" ]]; then
  BIN_LABELS=(current)
  BIN_PATHS=("$POLICY_SERVER_BIN")
else
  command -v cargo >/dev/null || { echo "missing tool: cargo (or set POLICY_SERVER_BIN)" >&2; exit 1; }
  echo "building release policy-server..." >&2
  cargo build --release --quiet -p portcullis-host --bin policy-server --manifest-path "$ROOT/Cargo.toml"
  BIN_LABELS=(current)
  BIN_PATHS=("${CARGO_TARGET_DIR:-$ROOT/target}/release/policy-server")
fi
for path in "${BIN_PATHS[@]}"; do
  [[ -x "$path" ]] || { echo "not an executable: $path" >&2; exit 1; }
done
BIN="${BIN_PATHS[0]}"

# --- certificates -----------------------------------------------------------
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=bench CA" \
  -keyout "$WORK/ca.key" -out "$WORK/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=policy-server" \
  -keyout "$WORK/tls.key" -out "$WORK/tls.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > "$WORK/ext.cnf"
openssl x509 -req -in "$WORK/tls.csr" -CA "$WORK/ca.crt" -CAkey "$WORK/ca.key" -CAcreateserial \
  -days 1 -extfile "$WORK/ext.cnf" -out "$WORK/tls.crt" 2>/dev/null

# post_lua FIXTURE LUA: a wrk script POSTing FIXTURE.
post_lua() {
  cat > "$2" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open("$1", "rb"))
wrk.body = f:read("*a")
f:close()
LUA
}
post_lua "$FIXTURE" "$WORK/post.lua"

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
  "${SERVER_PIN[@]}" "$BIN" "${args[@]}" >"$WORK/server.log" 2>&1 &
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

# cpu_ticks PID: user + system CPU time of PID so far, in clock ticks (0 once
# it has exited). The command name is in parentheses and may hold spaces, so
# the fields are counted from its closing parenthesis.
cpu_ticks() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
  stat=${stat##*) }
  awk '{print $12 + $13}' <<<"$stat"
}

# cpu_list FIRST LAST: the CPUs FIRST..LAST as taskset takes them ("1", "2-3").
cpu_list() { if (( $1 == $2 )); then echo "$1"; else echo "$1-$2"; fi; }

# wrk_to OUT URL CONNS SECONDS LUA: one wrk run (1 thread), its output in OUT.
wrk_to() {
  "${LOAD_PIN[@]}" wrk -t1 -c"$3" -d"$4s" --latency -s "$5" "$2" >"$1" 2>&1 \
    || { cat "$1" >&2; echo "wrk failed against $2" >&2; exit 1; }
}

# wrk_errors OUT: non-2xx responses plus socket errors (connect, read, write, timeout).
wrk_errors() {
  awk '/Non-2xx or 3xx responses:/ {n += $NF}
       /Socket errors:/ {gsub(/,/, ""); n += $4 + $6 + $8 + $10}
       END {print n + 0}' "$1"
}

# wrk_ms OUT PERCENT: that latency percentile in ms.
wrk_ms() {
  awk -v p="$2%" '$1 == p {
    v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
    f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : -1
    if (f < 0) { print "unknown latency unit " $2 > "/dev/stderr"; exit 1 }
    printf "%.3f\n", v * f
  }' "$1"
}

wrk_rps() { awk '/^Requests\/sec:/ {print $2}' "$1"; }

# run_wrk URL -> "req/s p50 p99" (the fixed scenarios: 8 connections, DURATION)
run_wrk() {
  wrk_to "$WORK/wrk.last" "$1" 8 "$DURATION" "$WORK/post.lua"
  local out errors
  out=$(cat "$WORK/wrk.last")
  errors=$(wrk_errors "$WORK/wrk.last")
  if [[ "$errors" != 0 ]]; then
    echo "warning: $errors non-2xx responses or socket errors against $1" >&2
  fi
  echo "$(wrk_rps "$WORK/wrk.last") $(awk '$1 == "50%" {print $2}' <<<"$out") $(awk '$1 == "99%" {print $2}' <<<"$out")"
}

# verdict SCHEME POLICY FIXTURE -> denied | allowed (exits on anything but a
# well-formed AdmissionReview response to the fixture's uid)
verdict() {
  local body uid
  body=$(curl -sk -X POST -H 'Content-Type: application/json' --data-binary @"$3" \
    "$1://127.0.0.1:$PORT/validate/$2")
  uid=$(jq -r .request.uid "$3")
  case "$(jq -r --arg uid "$uid" 'if .response.uid == $uid then .response.allowed else "bad" end' <<<"$body" 2>/dev/null)" in
    false) echo denied ;;
    true) echo allowed ;;
    *) echo "unexpected answer of $2 ($1) to $(basename "$3"): $body" >&2; exit 1 ;;
  esac
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

# --- request-path: binaries side by side (issue 17) -------------------------

# policy_config ID MODULE_PATH FILE: a one-policy configuration (default
# execution mode: kubewarden-wapc, or the component ABI, told by the module).
policy_config() {
  printf '%s:\n  module: file://%s\n' "$1" "$2" > "$3"
}

# stats: numbers on stdin -> "median min max"
stats() {
  sort -g | awk '{v[NR] = $1} END {
    if (NR == 0) { print "- - -"; exit }
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    print m, v[1], v[NR]
  }'
}

# results_of LABEL MODULE SCHEME SIZE FIELD: that column of the matching
# result lines (fields: label module scheme size round rps p50 p99 hwm errors verdict)
results_of() {
  awk -v l="$1" -v m="$2" -v s="$3" -v z="$4" -v f="$5" \
    '$1 == l && $2 == m && $3 == s && $4 == z {print $f}' "$WORK/results"
}

# measure LABEL PATH MODULE SCHEME SIZE ROUND: a fresh server, the verdict, a
# warm-up, the measured wrk run; appends a line to $WORK/results.
measure() {
  local label="$1" module="$3" scheme="$4" size="$5" round="$6" tls=no conns="$SMALL_CONNECTIONS" lua="$WORK/post.lua" fixture="$FIXTURE"
  BIN="$2"
  [[ "$scheme" == https ]] && tls=yes
  if [[ "$size" == large ]]; then conns=64 lua="$WORK/post-large.lua" fixture="$LARGE_FIXTURE"; fi
  start_server "$WORK/rp-$module.yml" "$WORK/store-$label" "$tls"
  local url="$scheme://127.0.0.1:$PORT/validate/$module" kind
  kind=$(verdict "$scheme" "$module" "$fixture")
  if [[ "$size" == small && "$kind" != denied ]]; then
    echo "$label $module ($scheme) allowed $(basename "$fixture"), which must be denied" >&2; exit 1
  fi
  wrk_to "$WORK/warmup.wrk" "$url" "$conns" "$WARMUP_SECONDS" "$lua"
  local out="$WORK/wrk/$label.$module.$scheme.$size.$round"
  wrk_to "$out" "$url" "$conns" "$DURATION" "$lua"
  local hwm errors rps
  hwm=$(rss_kib "$SERVER_PID" VmHWM)
  stop_server
  errors=$(wrk_errors "$out")
  rps=$(wrk_rps "$out")
  if [[ "$errors" != 0 ]]; then
    echo "ERROR: $errors non-2xx responses or socket errors: $label $module $scheme $size, round $round:" >&2
    cat "$out" >&2
  fi
  echo "$label $module $scheme $size $round $rps $(wrk_ms "$out" 50) $(wrk_ms "$out" 99) $hwm $errors $kind" >> "$WORK/results"
  printf '  round %s: %-10s %-26s %-5s %-5s %8.0f req/s%s\n' "$round" "$label" "$module" "$scheme" "$size" "$rps" \
    "$([[ "$errors" == 0 ]] || echo " ($errors ERRORS)")" >&2
}

# table SIZE: the markdown table of one request size, then the HTTPS/HTTP
# ratios and, with several binaries, each against the first.
table() {
  local size="$1" label module scheme n=0 rps p50 p99 hwm errors verdict_col="" verdict_head="" verdict_sep=""
  if [[ "$size" == large ]]; then verdict_head=" verdict |" verdict_sep="---|"; fi
  echo "| binary | module | scheme |$verdict_head req/s (median of $ROUNDS; min–max) | p50 (median) | p99 (median) | peak RSS MiB (max) | errors |"
  echo "|---|---|---|$verdict_sep---|---|---|---|---|"
  for label in "${BIN_LABELS[@]}"; do
    for module in "${RP_MODULES[@]}"; do
      for scheme in http https; do
        read -r rps rps_min rps_max < <(results_of "$label" "$module" "$scheme" "$size" 6 | stats)
        read -r p50 _ < <(results_of "$label" "$module" "$scheme" "$size" 7 | stats)
        read -r p99 _ < <(results_of "$label" "$module" "$scheme" "$size" 8 | stats)
        read -r _ _ hwm < <(results_of "$label" "$module" "$scheme" "$size" 9 | stats)
        errors=$(results_of "$label" "$module" "$scheme" "$size" 10 | awk '{n += $1} END {print n + 0}')
        [[ "$errors" == 0 ]] || { errors="**$errors ERRORS**"; n=$((n + 1)); }
        if [[ "$size" == large ]]; then
          verdict_col=" $(results_of "$label" "$module" "$scheme" "$size" 11 | sort -u | paste -sd/) |"
        fi
        printf '| %s | %s | %s |%s %.0f (%.0f–%.0f) | %.2f ms | %.2f ms | %.1f | %s |\n' "$label" "$module" "$scheme" \
          "$verdict_col" "$rps" "$rps_min" "$rps_max" "$p50" "$p99" "$(echo "$hwm / 1024" | bc -l)" "$errors"
      done
    done
  done
  echo
  echo "HTTPS/HTTP req/s (medians):"
  local http https
  for label in "${BIN_LABELS[@]}"; do
    for module in "${RP_MODULES[@]}"; do
      read -r http _ < <(results_of "$label" "$module" http "$size" 6 | stats)
      read -r https _ < <(results_of "$label" "$module" https "$size" 6 | stats)
      printf -- '- %s %s: %.2f\n' "$label" "$module" "$(echo "$https / $http" | bc -l)"
    done
  done
  if (( ${#BIN_LABELS[@]} > 1 )); then
    echo
    echo "req/s against ${BIN_LABELS[0]} (medians):"
    local first other i
    for module in "${RP_MODULES[@]}"; do
      for scheme in http https; do
        read -r first _ < <(results_of "${BIN_LABELS[0]}" "$module" "$scheme" "$size" 6 | stats)
        for ((i = 1; i < ${#BIN_LABELS[@]}; i++)); do
          read -r other _ < <(results_of "${BIN_LABELS[i]}" "$module" "$scheme" "$size" 6 | stats)
          printf -- '- %s %s %s: %.2f\n' "${BIN_LABELS[i]}" "$module" "$scheme" "$(echo "$other / $first" | bc -l)"
        done
      done
    done
  fi
  TABLE_ERRORS=$((TABLE_ERRORS + n))
}

bench_request_path() {
  RP_MODULES=()
  if [[ -n "${UPSTREAM_POD_PRIVILEGED:-}" ]]; then
    if [[ -f "$UPSTREAM_POD_PRIVILEGED" ]]; then
      RP_MODULES+=(upstream)
      policy_config upstream "$(realpath "$UPSTREAM_POD_PRIVILEGED")" "$WORK/rp-upstream.yml"
    else
      echo "warning: UPSTREAM_POD_PRIVILEGED=$UPSTREAM_POD_PRIVILEGED does not exist; the upstream module is left out" >&2
    fi
  fi
  local m
  for m in pod-privileged-wapc pod-privileged-component; do
    RP_MODULES+=("$m")
    policy_config "$m" "$POLICIES/$m.wasm" "$WORK/rp-$m.yml"
  done
  post_lua "$LARGE_FIXTURE" "$WORK/post-large.lua"
  mkdir -p "$WORK/wrk"
  : > "$WORK/results"

  # Compile every module once per binary (each binary has its own compiled
  # cache), so that no measured server compiles.
  local i all="$WORK/rp-all.yml"
  for m in "${RP_MODULES[@]}"; do cat "$WORK/rp-$m.yml"; done > "$all"
  for i in "${!BIN_LABELS[@]}"; do
    BIN="${BIN_PATHS[i]}"
    start_server "$all" "$WORK/store-${BIN_LABELS[i]}" no
    stop_server
  done

  local round size scheme order
  for ((round = 1; round <= ROUNDS; round++)); do
    # The binaries alternate: A B, then B A in the next round, and so on.
    order=("${!BIN_LABELS[@]}")
    if (( round % 2 == 0 )); then
      order=()
      for ((i = ${#BIN_LABELS[@]} - 1; i >= 0; i--)); do order+=("$i"); done
    fi
    echo "round $round/$ROUNDS (load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    for size in small large; do
      for m in "${RP_MODULES[@]}"; do
        for scheme in http https; do
          for i in "${order[@]}"; do
            measure "${BIN_LABELS[i]}" "${BIN_PATHS[i]}" "$m" "$scheme" "$size" "$round"
          done
        done
      done
    done
  done

  TABLE_ERRORS=0
  echo
  echo "Request path: $(basename "$FIXTURE") ($(stat -c %s "$FIXTURE") B), wrk -t1 -c$SMALL_CONNECTIONS -d${DURATION}s, keep-alive, $ROUNDS rounds, $(nproc) CPUs"
  echo
  table small
  echo
  echo "Larger review: $(basename "$LARGE_FIXTURE") ($(stat -c %s "$LARGE_FIXTURE") B), wrk -t1 -c64 -d${DURATION}s, keep-alive, $ROUNDS rounds"
  echo
  table large
  if (( TABLE_ERRORS > 0 )); then
    echo "FAIL: $TABLE_ERRORS rows had non-2xx responses or socket errors" >&2
    exit 1
  fi
}

# --- soak: half the peak rate, RSS every 10 s --------------------------------
bench_soak() {
  local vegeta="${VEGETA:-}"
  if [[ -z "$vegeta" ]]; then
    vegeta=$(command -v vegeta || true)
    if [[ -z "$vegeta" ]]; then
      vegeta=$("$ROOT/scripts/go-tools.sh" vegeta)
      vegeta="${vegeta##*$'\n'}"
    fi
  fi
  [[ -x "$vegeta" ]] || { echo "vegeta not found (VEGETA=path, or scripts/go-tools.sh vegeta)" >&2; exit 1; }
  local id="${SOAK_MODULE:-pod-privileged-wapc}" failed=0 i cpus placement
  cpus=$(nproc)
  if [[ "$SOAK_PIN" == 1 ]] && (( cpus >= 2 )) && command -v taskset >/dev/null; then
    local half=$((cpus / 2)) server_cpus load_cpus
    server_cpus=$(cpu_list 0 $((half - 1)))
    load_cpus=$(cpu_list "$half" $((cpus - 1)))
    SERVER_PIN=(taskset -c "$server_cpus")
    LOAD_PIN=(taskset -c "$load_cpus")
    placement="server on CPU $server_cpus, wrk and vegeta on CPU $load_cpus"
  else
    placement="server, wrk and vegeta sharing all $cpus CPUs"
  fi
  local tick
  tick=$(getconf CLK_TCK)
  policy_config "$id" "$POLICIES/$id.wasm" "$WORK/soak.yml"
  printf 'POST https://127.0.0.1:%s/validate/%s\nContent-Type: application/json\n@%s\n' "$PORT" "$id" "$FIXTURE" > "$WORK/targets"
  for i in "${!BIN_LABELS[@]}"; do
    local label="${BIN_LABELS[i]}"
    BIN="${BIN_PATHS[i]}"
    start_server "$WORK/soak.yml" "$WORK/store-$label" no   # compiles the module
    stop_server
    start_server "$WORK/soak.yml" "$WORK/store-$label" yes
    [[ "$(verdict https "$id" "$FIXTURE")" == denied ]] || { echo "$id allowed $(basename "$FIXTURE")" >&2; exit 1; }
    local url="https://127.0.0.1:$PORT/validate/$id"
    wrk_to "$WORK/warmup.wrk" "$url" 8 "$WARMUP_SECONDS" "$WORK/post.lua"
    wrk_to "$WORK/peak.wrk" "$url" 8 "$PEAK_SECONDS" "$WORK/post.lua"
    local peak rate errors
    peak=$(wrk_rps "$WORK/peak.wrk")
    errors=$(wrk_errors "$WORK/peak.wrk")
    [[ "$errors" == 0 ]] || { cat "$WORK/peak.wrk" >&2; echo "ERROR: $errors errors in the peak run" >&2; failed=1; }
    rate=$(echo "$peak / 2" | bc)
    echo
    echo "Soak, $label: peak $peak req/s (wrk -t1 -c8 -d${PEAK_SECONDS}s, HTTPS, $id, $(basename "$FIXTURE")); vegeta at $rate req/s for $SOAK_SECONDS s, 8 keep-alive HTTP/1.1 connections; $placement"
    echo >&2 "soak $label: $rate req/s for $SOAK_SECONDS s (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    local results="$WORK/soak-$label.bin" samples="$WORK/rss-$label"
    : > "$samples"
    local start t next now
    start=$EPOCHREALTIME
    # Each sample: seconds, server VmRSS (KiB), server and vegeta CPU ticks so far.
    echo "0 $(rss_kib "$SERVER_PID" VmRSS) $(cpu_ticks "$SERVER_PID") 0" >> "$samples"
    # Results stream to a file (gob); response bodies are not kept (-max-body=0).
    "${LOAD_PIN[@]}" "$vegeta" attack -rate="$rate/s" -duration="${SOAK_SECONDS}s" -targets="$WORK/targets" \
      -keepalive=true -connections=8 -max-connections=8 -http2=false -root-certs="$WORK/ca.crt" \
      -max-body=0 -output="$results" 2>"$WORK/vegeta.err" &
    LOAD_PID=$!
    for ((t = 10; t < SOAK_SECONDS; t += 10)); do
      now=$EPOCHREALTIME
      next=$(echo "$start + $t - $now" | bc -l)
      [[ "$next" == -* ]] || sleep "$next"
      kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; echo "server died during the soak" >&2; exit 1; }
      kill -0 "$LOAD_PID" 2>/dev/null || break
      echo "$t $(rss_kib "$SERVER_PID" VmRSS) $(cpu_ticks "$SERVER_PID") $(cpu_ticks "$LOAD_PID")" >> "$samples"
    done
    local rc=0
    wait "$LOAD_PID" || rc=$?
    LOAD_PID=""
    [[ "$rc" == 0 ]] || { cat "$WORK/vegeta.err" >&2; echo "vegeta attack failed (exit $rc)" >&2; exit 1; }
    # vegeta has exited: the last row has no CPU figure for it (-1).
    echo "$(printf '%.0f' "$(echo "$EPOCHREALTIME - $start" | bc -l)") $(rss_kib "$SERVER_PID" VmRSS) $(cpu_ticks "$SERVER_PID") -1" >> "$samples"
    local hwm
    hwm=$(rss_kib "$SERVER_PID" VmHWM)
    stop_server

    "$vegeta" report -type=json "$results" > "$WORK/report.json"
    local requests ok rate_sent throughput lat
    requests=$(jq .requests "$WORK/report.json")
    ok=$(jq '[.status_codes // {} | to_entries[] | select(.key | test("^2")) | .value] | add // 0' "$WORK/report.json")
    errors=$((requests - ok))
    rate_sent=$(jq '.rate' "$WORK/report.json")
    throughput=$(jq '.throughput' "$WORK/report.json")
    lat=$(jq -r '.latencies | "p50 \(.["50th"] / 1e6 * 100 | round / 100) ms, p99 \(.["99th"] / 1e6 * 100 | round / 100) ms, max \(.max / 1e6 * 100 | round / 100) ms"' "$WORK/report.json")
    echo
    # CPU columns: cores used over the 10 s before the sample (1.00 = one CPU busy).
    echo "| t (s) | RSS MiB | server CPUs | vegeta CPUs |"
    echo "|---|---|---|---|"
    awk -v tick="$tick" '
      NR == 1 {printf "| %s | %.1f | | |\n", $1, $2 / 1024}
      NR > 1 {
        dt = ($1 - t) * tick
        load = ($4 < 0 || dt <= 0) ? "" : sprintf("%.2f", ($4 - l) / dt)
        server = (dt > 0) ? sprintf("%.2f", ($3 - c) / dt) : ""
        printf "| %s | %.1f | %s | %s |\n", $1, $2 / 1024, server, load
      }
      {t = $1; c = $3; if ($4 >= 0) l = $4}' "$samples"
    awk -v tick="$tick" '
      NR == 2 {t0 = $1; c0 = $3; l0 = $4}
      NR > 2 && $4 >= 0 {t1 = $1; c1 = $3; l1 = $4}
      END {if (t1 > t0) printf "CPU over the soak (10th second to the last sample): server %.2f CPUs, vegeta %.2f CPUs\n",
             (c1 - c0) / ((t1 - t0) * tick), (l1 - l0) / ((t1 - t0) * tick)
           else print "CPU over the soak: no figure; it needs samples at the 10th and 20th seconds (SOAK_SECONDS over 20)"}' "$samples"
    echo
    awk -v hwm="$hwm" '
      NR == 1 {first = $2; max = $2}
      {last = $2; if ($2 > max) max = $2}
      END {printf "RSS: first %.1f MiB, last %.1f MiB, max %.1f MiB, growth %+.1f MiB (%+.1f%%); peak (VmHWM, peak run included) %.1f MiB\n",
             first / 1024, last / 1024, max / 1024, (last - first) / 1024, 100 * (last - first) / first, hwm / 1024}' "$samples"
    printf 'requests %s (sent at %.1f/s, throughput %.1f/s), latency %s, status codes %s; results file %s\n' \
      "$requests" "$rate_sent" "$throughput" "$lat" "$(jq -c '.status_codes' "$WORK/report.json")" "$(du -h "$results" | cut -f1)"
    rm -f "$results"
    if [[ "$errors" == 0 ]]; then
      echo "non-2xx responses and errors: 0"
    else
      echo "ERROR: $errors non-2xx responses or errors: $(jq -c '.errors' "$WORK/report.json")"
      failed=1
    fi
  done
  (( failed == 0 )) || { echo "FAIL: the soak had errors" >&2; exit 1; }
}

case "$SCENARIOS" in
  groups) bench_groups; exit 0 ;;
  request-path) bench_request_path; exit 0 ;;
  soak) bench_soak; exit 0 ;;
esac

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
