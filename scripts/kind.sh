#!/usr/bin/env bash
# The kind round trip of docs/kind.md, one subcommand per Justfile recipe:
#
#   scripts/kind.sh up                 a kind cluster `portcullis` and the test registry
#   scripts/kind.sh load               the Portcullis image into it, the test policies into the registry
#   scripts/kind.sh install [helm]     the three Helm charts (crds, controller, defaults)
#   scripts/kind.sh install kustomize  the kustomize dev overlay instead (deploy/kustomize)
#   scripts/kind.sh uninstall [helm|kustomize]
#   scripts/kind.sh e2e [helm|kustomize]  tests/tests/kind_e2e.rs against it
#   scripts/kind.sh down               delete the cluster and the registry
#   scripts/kind.sh check              exit 0 if kind can run on this machine, else say why
#   scripts/kind.sh test               what `./dev test` runs: all of the above, timed, and
#                                      always `down` at the end
#
# Node image: kind's own (kindest/node) where Docker can pull it; on hosts
# that reach no container registry, a node image built here from Debian
# packages and Go modules (scripts/kind-node-image.sh), and with it the
# registry:2 and kubectl images the round trip needs. PORTCULLIS_KIND_NODE_IMAGE
# chooses: `upstream`, `local`, or an image reference (default: upstream if
# it can be pulled, else local).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TOOLS="${PORTCULLIS_BIN_DIR:-$HOME/.cache/portcullis/bin}"
KIND="${KIND:-$TOOLS/kind}"
HELM="${HELM:-$TOOLS/helm}"
CLUSTER=portcullis
CONTEXT="kind-$CLUSTER"
NAMESPACE=portcullis
REGISTRY=portcullis-kind-registry
REGISTRY_PORT=5001
IMAGE=portcullis:dev
UPGRADE_IMAGE=portcullis:dev-upgrade
# The image the kustomize dev overlay names (deploy/kustomize/overlays/dev).
KUSTOMIZE_IMAGE=ghcr.io/portcullis-dev/portcullis:dev
LOCAL_PREFIX=portcullis.local/kind-node:
STATE="$ROOT/target/kind"

log() { echo "kind: $*" >&2; }
die() { log "$*"; exit 1; }

kind_bin() {
  [[ -x "$KIND" ]] || "$ROOT/scripts/go-tools.sh" kind >/dev/null
  echo "$KIND"
}

helm_bin() {
  [[ -x "$HELM" ]] || "$ROOT/scripts/go-tools.sh" helm >/dev/null
  echo "$HELM"
}

# Reads the whole list first: with pipefail, `grep -q` quitting early would
# fail the pipeline on the writer's SIGPIPE.
cluster_exists() { local clusters; clusters="$("$(kind_bin)" get clusters 2>/dev/null)" && grep -qx "$CLUSTER" <<<"$clusters"; }

# The node image: the first line kind-node-image.sh prints. Taken after the
# script ends; `| head -n1` would kill it with SIGPIPE (exit 141 under
# pipefail) while it still prints the other images.
local_node_image() { local images; images="$(scripts/kind-node-image.sh --images)" && echo "${images%%$'\n'*}"; }

# The node image of the running cluster: local (built here) or not.
cluster_is_local() {
  [[ "$(docker inspect -f '{{.Config.Image}}' "$CLUSTER-control-plane" 2>/dev/null)" == "$LOCAL_PREFIX"* ]]
}

# kind's default node image (pkg/apis/config/defaults of the kind module).
upstream_node_image() {
  local dir
  dir="$(go mod download -json "sigs.k8s.io/kind@$(sed -n 's/^KIND_PKG="sigs.k8s.io\/kind@\(.*\)"$/\1/p' scripts/go-tools.sh)" | jq -r .Dir)"
  sed -n 's/^const Image = "\(.*\)"$/\1/p' "$dir/pkg/apis/config/defaults/image.go"
}

# Prints the node image to create the cluster with.
node_image() {
  local choice="${PORTCULLIS_KIND_NODE_IMAGE:-auto}" upstream
  case "$choice" in
    local) local_node_image; return ;;
    upstream) upstream_node_image; return ;;
    auto) ;;
    *) echo "$choice"; return ;;
  esac
  upstream="$(upstream_node_image)"
  if docker image inspect "$upstream" >/dev/null 2>&1 || timeout 300 docker pull -q "$upstream" >/dev/null 2>&1; then
    echo "$upstream"
  else
    log "cannot pull $upstream: building a node image here (scripts/kind-node-image.sh)"
    local_node_image
  fi
}

# The cluster config: kind's defaults, plus what this host needs.
cluster_config() {
  echo "kind: Cluster"
  echo "apiVersion: kind.x-k8s.io/v1alpha4"
  # On cgroup v1 the kubelet refuses to start unless told to (KubeletConfiguration
  # failCgroupV1, true by default since Kubernetes 1.35).
  if [[ "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" != cgroup2fs ]]; then
    cat <<'EOF'
kubeadmConfigPatches:
  - |
    kind: KubeletConfiguration
    failCgroupV1: false
EOF
  fi
  # Without CAP_SYS_RESOURCE in the bounding set (see scripts/kind-host.sh) no
  # process in the node may lower an oom_score_adj, and every pod sandbox
  # fails with "runc init: failed to update /proc/self/oom_score_adj:
  # Permission denied". containerd then keeps the scores it asks for at or
  # above its own, as kind's entrypoint sets it up for rootless nodes.
  local bnd
  bnd="$(awk '/^CapBnd:/ {print $2}' /proc/self/status)"
  if (( ! ((0x$bnd >> 24) & 1) )); then
    cat <<'EOF'
containerdConfigPatches:
  - |
    [plugins."io.containerd.grpc.v1.cri"]
      restrict_oom_score_adj = true
EOF
  fi
}

cmd_check() {
  if [[ "${PORTCULLIS_KIND:-1}" == 0 ]]; then echo "PORTCULLIS_KIND=0" ; return 1; fi
  if ! command -v docker >/dev/null 2>&1 || ! timeout 20 docker info >/dev/null 2>&1; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then return 0; fi
    echo "no Docker engine answers, and without root and apt-get none can be installed"; return 1
  fi
  return 0
}

cmd_up() {
  local kind image start=$SECONDS
  "$ROOT/scripts/kind-host.sh" setup
  kind="$(kind_bin)"
  if cluster_exists; then
    log "cluster $CLUSTER exists"
  else
    image="$(node_image)"
    mkdir -p "$STATE"
    cluster_config > "$STATE/cluster.yaml"
    log "creating cluster $CLUSTER with $image"
    "$kind" create cluster --name "$CLUSTER" --image "$image" --config "$STATE/cluster.yaml" --wait 300s
  fi
  if ! docker inspect "$REGISTRY" >/dev/null 2>&1; then
    if cluster_is_local; then scripts/kind-node-image.sh --images >/dev/null; fi
    docker run -d --restart=always --name "$REGISTRY" --network kind \
      -p "127.0.0.1:$REGISTRY_PORT:5000" registry:2 >/dev/null
  fi
  log "up in $((SECONDS - start))s"
}

cmd_load() {
  local kind start=$SECONDS images=("$IMAGE" "$UPGRADE_IMAGE" "$KUSTOMIZE_IMAGE")
  kind="$(kind_bin)"
  cluster_exists || die "no cluster $CLUSTER: run just kind-up"
  if cluster_is_local; then
    # No registry to pull the Dockerfile's base images from: the binaries are
    # built here and put on the runtime base (scripts/image.sh --prebuilt).
    scripts/image.sh --prebuilt "$IMAGE"
    # The controller chart's pre-delete hook runs kubectl from this image.
    images+=("$(scripts/kind-node-image.sh --images | tail -n1)")
  else
    scripts/image.sh "$IMAGE"
  fi
  docker tag "$IMAGE" "$UPGRADE_IMAGE"
  docker tag "$IMAGE" "$KUSTOMIZE_IMAGE"
  "$kind" load docker-image --name "$CLUSTER" "${images[@]}"
  # The CLI that pushes the policies: the one just built for the image, else
  # a debug build.
  local sources portcullis=(cargo run -q -p portcullis-host --bin portcullis --)
  if cluster_is_local; then
    local out=dist
    [[ "${PORTCULLIS_IMAGE_PROFILE:-dist}" == dev ]] && out=debug
    portcullis=("${CARGO_TARGET_DIR:-target}/$out/portcullis")
  fi
  sources="$(mktemp)"
  printf 'insecure_sources:\n  - "127.0.0.1:%s"\n' "$REGISTRY_PORT" > "$sources"
  for p in pod-privileged-wapc pod-privileged-component default-labels-wapc; do
    "${portcullis[@]}" push "target/policies/$p.wasm" \
      "registry://127.0.0.1:$REGISTRY_PORT/policies/$p:v1" --sources-path "$sources"
  done
  rm -f "$sources"
  log "loaded in $((SECONDS - start))s"
}

# Chart values for the images this cluster has: portcullis:dev, and on a
# locally built node image the kubectl image built with it.
chart_image_args() {
  local args=(--set image.repository=portcullis --set image.tag=dev)
  if cluster_is_local; then
    local kubectl_image
    kubectl_image="$(scripts/kind-node-image.sh --images | tail -n1)"
    args+=(--set "preDeleteHook.image.repository=${kubectl_image%:*}" --set "preDeleteHook.image.tag=${kubectl_image##*:}")
  fi
  printf '%s\n' "${args[@]}"
}

cmd_install() {
  local variant="${1:-helm}" helm start=$SECONDS
  cluster_exists || die "no cluster $CLUSTER: run just kind-up"
  case "$variant" in
    helm)
      helm="$(helm_bin)"
      local args
      mapfile -t args < <(chart_image_args)
      "$helm" --kube-context "$CONTEXT" upgrade --install --wait portcullis-crds charts/portcullis-crds
      "$helm" --kube-context "$CONTEXT" upgrade --install --wait --timeout 10m --namespace "$NAMESPACE" --create-namespace \
        portcullis-controller charts/portcullis-controller "${args[@]}"
      "$helm" --kube-context "$CONTEXT" upgrade --install --wait --timeout 10m --namespace "$NAMESPACE" \
        portcullis-defaults charts/portcullis-defaults \
        --set policyServer.image.repository=portcullis --set policyServer.image.tag=dev
      ;;
    kustomize)
      kubectl_cmd apply --server-side -k deploy/kustomize/overlays/dev
      kubectl_cmd -n "$NAMESPACE" rollout status deployment/portcullis-controller --timeout 10m
      ;;
    *) die "install: unknown variant $variant (helm | kustomize)" ;;
  esac
  log "installed ($variant) in $((SECONDS - start))s"
}

cmd_uninstall() {
  local variant="${1:-helm}"
  case "$variant" in
    helm)
      local helm
      helm="$(helm_bin)"
      "$helm" --kube-context "$CONTEXT" uninstall --wait --namespace "$NAMESPACE" portcullis-defaults portcullis-controller
      "$helm" --kube-context "$CONTEXT" uninstall --wait portcullis-crds
      ;;
    kustomize)
      # As docs/install.md says for kustomize: the policies and PolicyServers
      # first, while the controller runs and removes their webhooks.
      kubectl_cmd delete clusteradmissionpolicies.policies.portcullis.dev,admissionpolicies.policies.portcullis.dev \
        --all --all-namespaces --ignore-not-found --wait=true --timeout 2m
      kubectl_cmd delete policyservers.policies.portcullis.dev --all --ignore-not-found --wait=true --timeout 2m
      kubectl_cmd delete -k deploy/kustomize/overlays/dev --ignore-not-found --wait=true --timeout 5m
      ;;
    *) die "uninstall: unknown variant $variant (helm | kustomize)" ;;
  esac
}

kubectl_path() {
  if [[ -n "${KUBECTL:-}" ]]; then echo "$KUBECTL"
  elif [[ -x "$HOME/.cache/portcullis/kind/bin/kubectl" ]] && cluster_is_local; then echo "$HOME/.cache/portcullis/kind/bin/kubectl"
  else command -v kubectl || die "kubectl not found on PATH"
  fi
}

kubectl_cmd() { "$(kubectl_path)" --context "$CONTEXT" "$@"; }

# kind_e2e.rs against what `install VARIANT` installed. After the Helm
# charts: every test, then the uninstall test alone (it uninstalls them).
# After the kustomize overlay, which has no `default` PolicyServer: a
# validating and a mutating policy, then the kustomize uninstall.
cmd_e2e() {
  local variant="${1:-helm}" start=$SECONDS registry_ip
  registry_ip="$(docker inspect -f '{{ .NetworkSettings.Networks.kind.IPAddress }}' "$REGISTRY")"
  export PORTCULLIS_KIND_CONTEXT="$CONTEXT" PORTCULLIS_KIND_NAMESPACE="$NAMESPACE" \
    PORTCULLIS_KIND_REGISTRY="$registry_ip:5000" PORTCULLIS_KIND_IMAGE="$IMAGE" \
    PORTCULLIS_KIND_UPGRADE_IMAGE="$UPGRADE_IMAGE" PORTCULLIS_KIND_INSTALL="$variant" \
    HELM="$(helm_bin)" KUBECTL="$(kubectl_path)"
  case "$variant" in
    helm)
      cargo test -p portcullis-tests --test kind_e2e -- --ignored --skip uninstall_leaves_no_webhooks
      ;;
    kustomize)
      cargo test -p portcullis-tests --test kind_e2e -- --ignored --exact \
        cluster_policy_denies_privileged_pods mutating_cluster_policy_adds_default_labels
      ;;
    *) die "e2e: unknown variant $variant (helm | kustomize)" ;;
  esac
  cargo test -p portcullis-tests --test kind_e2e -- --ignored --exact uninstall_leaves_no_webhooks
  log "e2e ($variant) in $((SECONDS - start))s"
}

cmd_down() {
  if cluster_exists; then "$(kind_bin)" delete cluster --name "$CLUSTER"; fi
  docker rm -f "$REGISTRY" >/dev/null 2>&1 || true
}

cmd_test() {
  local why start=$SECONDS
  if ! why="$(cmd_check 2>&1)"; then
    log "SKIPPED the kind suite (tests/tests/kind_e2e.rs): $why"
    return 0
  fi
  # The image from the debug binaries the suite has just built, on a local
  # node image: a dist build would add a whole optimised compile to CI.
  export PORTCULLIS_IMAGE_PROFILE="${PORTCULLIS_IMAGE_PROFILE:-dev}"
  trap 'cmd_down' EXIT
  cmd_up
  cmd_load
  cmd_install helm
  cmd_e2e helm
  cmd_install kustomize
  cmd_e2e kustomize
  cmd_down
  trap - EXIT
  log "kind suite passed in $((SECONDS - start))s"
}

case "${1:-}" in
  up) cmd_up ;;
  load) cmd_load ;;
  install) cmd_install "${2:-helm}" ;;
  uninstall) cmd_uninstall "${2:-helm}" ;;
  e2e) cmd_e2e "${2:-helm}" ;;
  down) cmd_down ;;
  check) if why="$(cmd_check 2>&1)"; then echo "kind can run here"; else echo "kind cannot run here: $why" >&2; exit 1; fi ;;
  test) cmd_test ;;
  *) echo "usage: $0 up|load|install [helm|kustomize]|uninstall [helm|kustomize]|e2e [helm|kustomize]|down|check|test" >&2; exit 2 ;;
esac
