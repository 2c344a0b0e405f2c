#!/usr/bin/env bash
# Local Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager)
# for development, from the Go harness in tests/control-plane/.
#
#   scripts/control-plane.sh up      build if needed, start in the background, wait
#                                    for ready, print the kubeconfig path
#   scripts/control-plane.sh down    stop it (SIGTERM via the pid file), wait for exit
#   scripts/control-plane.sh status  print whether it runs
#
# State dir: target/control-plane (PORTCULLIS_CONTROL_PLANE_DIR overrides).
# Port: PORTCULLIS_CONTROL_PLANE_PORT (default 0 = a free port, see the kubeconfig).
# The audit log goes to STATE_DIR/audit.log.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${PORTCULLIS_CONTROL_PLANE_DIR:-$ROOT/target/control-plane}"
PORT="${PORTCULLIS_CONTROL_PLANE_PORT:-0}"
TIMEOUT="${PORTCULLIS_CONTROL_PLANE_TIMEOUT:-120}"

running_pid() {
  local pid
  [[ -f "$DIR/pid" ]] || return 1
  pid="$(cat "$DIR/pid" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && grep -q control-plane "/proc/$pid/cmdline" 2>/dev/null || return 1
  echo "$pid"
}

up() {
  local bin pid
  if pid="$(running_pid)" && [[ -f "$DIR/ready" ]]; then
    echo "control plane already running (pid $pid)" >&2
    echo "$DIR/kubeconfig"
    return 0
  fi
  bin="$("$ROOT/scripts/go-tools.sh" control-plane | tail -n1)"
  mkdir -p "$DIR"
  rm -f "$DIR/ready"
  local start=$SECONDS
  setsid "$bin" --state-dir "$DIR" --port "$PORT" --audit-log "$DIR/audit.log" \
    </dev/null >/dev/null 2>"$DIR/start.err" &
  pid=$!
  while [[ ! -f "$DIR/ready" ]]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "control plane exited during start-up:" >&2
      cat "$DIR/start.err" >&2 || true
      tail -n 30 "$DIR/control-plane.log" >&2 2>/dev/null || true
      return 1
    fi
    if (( SECONDS - start > TIMEOUT )); then
      echo "control plane not ready after ${TIMEOUT}s; stopping it. Last log lines:" >&2
      tail -n 30 "$DIR/control-plane.log" >&2 2>/dev/null || true
      kill "$pid" 2>/dev/null || true
      return 1
    fi
    sleep 0.1
  done
  echo "control plane ready at $(cat "$DIR/ready") (pid $pid, $((SECONDS - start))s); kubectl --kubeconfig $DIR/kubeconfig ..." >&2
  echo "$DIR/kubeconfig"
}

down() {
  local pid i
  if ! pid="$(running_pid)"; then
    echo "control plane not running" >&2
    rm -f "$DIR/pid" "$DIR/ready"
    return 0
  fi
  kill -TERM "$pid"
  for ((i = 0; i < 400; i++)); do
    kill -0 "$pid" 2>/dev/null || { echo "control plane stopped (pid $pid)" >&2; return 0; }
    sleep 0.1
  done
  echo "control plane (pid $pid) did not stop in 40s; killing it" >&2
  pkill -KILL -P "$pid" 2>/dev/null || true  # its kube-controller-manager child
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$DIR/pid" "$DIR/ready"
}

status() {
  local pid
  if pid="$(running_pid)"; then
    if [[ -f "$DIR/ready" ]]; then echo "running (pid $pid) at $(cat "$DIR/ready"), kubeconfig $DIR/kubeconfig"
    else echo "starting (pid $pid)"; fi
  else
    echo "not running"; return 1
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
