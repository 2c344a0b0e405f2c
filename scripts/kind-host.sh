#!/usr/bin/env bash
# Make this host able to run kind (scripts/kind.sh up runs this).
#
#   scripts/kind-host.sh setup    install and start a Docker engine if none answers (Debian's
#                                 docker.io), with the OCI-runtime wrapper where the host needs it
#
# Idempotent: it changes the host only where something is missing:
#   - Docker engine: `apt-get install docker.io` (root and apt needed), then dockerd
#     is started in the background when no init system runs it (containers,
#     firecracker VMs); its log is /var/log/portcullis-dockerd.log.
#   - Privileged containers (every kind node is one) fail on hosts whose
#     capability bounding set lacks a capability Docker grants them:
#       runc create failed: unable to start container process: unable to apply caps: operation not permitted
#     Docker 20.10 asks runc for every capability it knows, whatever the host
#     allows. Where the bounding set lacks some, setup installs
#     /usr/local/sbin/portcullis-runc, a wrapper that deletes those capabilities
#     from the container's config.json (or `runc exec`'s process.json) and
#     execs runc, registers it in /etc/docker/daemon.json as the default
#     runtime, and restarts dockerd. A host with the full set gets no wrapper.
set -euo pipefail

log() { echo "kind-host: $*" >&2; }

WRAPPER=/usr/local/sbin/portcullis-runc
DAEMON_JSON=/etc/docker/daemon.json
DOCKERD_LOG=/var/log/portcullis-dockerd.log

docker_answers() { command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1; }

# Capability names by number (linux/capability.h); the kernel's bounding set
# is a bit mask over these.
CAPS=(CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP
      LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK
      IPC_OWNER SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN
      SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE
      AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM
      BLOCK_SUSPEND AUDIT_READ PERFMON BPF CHECKPOINT_RESTORE)

# The capabilities Docker grants a privileged container that this host's
# bounding set lacks, as a JSON array of CAP_ names.
missing_caps() {
  local bnd i out=()
  bnd="$(awk '/^CapBnd:/ {print $2}' /proc/self/status)"
  for i in "${!CAPS[@]}"; do
    (( (0x$bnd >> i) & 1 )) || out+=("\"CAP_${CAPS[$i]}\"")
  done
  local IFS=,
  echo "[${out[*]}]"
}

write_wrapper() { # json-array-of-caps
  local runc
  runc="$(command -v runc)" || { log "runc not found"; exit 1; }
  cat > "$WRAPPER.tmp" <<EOF
#!/bin/sh
# OCI runtime wrapper written by Portcullis' scripts/kind-host.sh. This host's
# capability bounding set lacks $1, which Docker grants
# privileged containers; runc then fails with "unable to apply caps". Delete
# them from the container's config.json (create, run) or the process.json of
# \`runc exec\`, then run the real runc.
drop='$1'
strip() {
  [ -f "\$1" ] || return 0
  jq --argjson drop "\$drop" '
    def keep: map(select(. as \$c | \$drop | index(\$c) | not));
    (if .process.capabilities then .process.capabilities |= map_values(if type == "array" then keep else . end) else . end)
    | (if .capabilities then .capabilities |= map_values(if type == "array" then keep else . end) else . end)
  ' "\$1" > "\$1.portcullis-tmp" && mv "\$1.portcullis-tmp" "\$1"
}
bundle= process= cmd= prev=
for a in "\$@"; do
  case "\$prev" in --bundle|-b) bundle=\$a ;; --process|-p) process=\$a ;; esac
  case "\$a" in
    --bundle=*) bundle=\${a#--bundle=} ;;
    --process=*) process=\${a#--process=} ;;
    create|run|exec) [ -z "\$cmd" ] && cmd=\$a ;;
  esac
  prev=\$a
done
case "\$cmd" in
  create|run) strip "\${bundle:-.}/config.json" ;;
  exec) [ -n "\$process" ] && strip "\$process" ;;
esac
exec $runc "\$@"
EOF
  chmod 0755 "$WRAPPER.tmp"
  mv "$WRAPPER.tmp" "$WRAPPER"
}

# daemon.json with the wrapper as the default runtime, other keys kept.
register_wrapper() {
  mkdir -p "$(dirname "$DAEMON_JSON")"
  local current='{}'
  [[ -s "$DAEMON_JSON" ]] && current="$(cat "$DAEMON_JSON")"
  jq --arg path "$WRAPPER" \
    '.runtimes["portcullis-runc"] = {path: $path} | ."default-runtime" = "portcullis-runc"' \
    <<<"$current" > "$DAEMON_JSON.tmp"
  if cmp -s "$DAEMON_JSON.tmp" "$DAEMON_JSON" 2>/dev/null; then rm -f "$DAEMON_JSON.tmp"; return 1; fi
  mv "$DAEMON_JSON.tmp" "$DAEMON_JSON"
  return 0
}

stop_dockerd() {
  local pid
  pid="$(cat /var/run/docker.pid 2>/dev/null)" || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
  log "dockerd (pid $pid) did not stop"; exit 1
}

start_dockerd() {
  if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
    systemctl restart docker
  else
    # No init system (a container, a microVM): run dockerd ourselves.
    setsid dockerd </dev/null >>"$DOCKERD_LOG" 2>&1 &
  fi
  for _ in $(seq 60); do docker_answers && return 0; sleep 1; done
  log "dockerd did not answer within 60s; last lines of $DOCKERD_LOG:"
  tail -n 20 "$DOCKERD_LOG" >&2 || true
  exit 1
}

setup() {
  local need=()
  command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
  command -v jq >/dev/null 2>&1 || need+=(jq)
  if ((${#need[@]})); then
    if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
      log "missing ${need[*]}: install a Docker engine (https://docs.docker.com/engine/install/) and jq"; exit 1
    fi
    log "apt-get install ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi

  local drop restart=0
  drop="$(missing_caps)"
  if [[ "$drop" != "[]" ]]; then
    if [[ "$(id -u)" != 0 ]]; then log "this host lacks capabilities $drop; run setup as root to install the runtime wrapper"; exit 1; fi
    local before=""
    [[ -f "$WRAPPER" ]] && before="$(cat "$WRAPPER")"
    write_wrapper "$drop"
    [[ "$before" == "$(cat "$WRAPPER")" ]] || restart=1
    register_wrapper && restart=1
    (( restart )) && log "runtime wrapper $WRAPPER drops $drop from privileged containers"
  fi

  if docker_answers && (( restart )); then
    log "restarting dockerd to register the runtime wrapper"
    stop_dockerd
  fi
  docker_answers || { log "starting dockerd"; start_dockerd; }
}

case "${1:-}" in
  setup) setup ;;
  *) echo "usage: $0 setup" >&2; exit 2 ;;
esac
