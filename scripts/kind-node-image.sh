#!/usr/bin/env bash
# Build a kind node image for Kubernetes $KUBE_VERSION on a host that reaches
# package registries (Debian, the Go module proxy) but no container registry,
# and print its name.
#
#   scripts/kind-node-image.sh            build what is missing, print the node image
#   scripts/kind-node-image.sh --images   also print the extra images for the tests
#                                         (registry:2, registry.k8s.io/kubectl), built too
#
# Where Docker Hub and registry.k8s.io are reachable, kind's own node image
# (kindest/node) is used instead: see scripts/kind.sh and docs/kind.md.
#
# The image is laid out as kind v0.33's `kind build node-image` lays it out on
# its base image (kind's images/base/Dockerfile), from the same sources:
#   - base: Debian bookworm (debootstrap) with the packages of kind's base image,
#     kind's own files (entrypoint, systemd units, containerd config) from the
#     sigs.k8s.io/kind module, and containerd, runc, crictl and the CNI plugins
#     built from their Go modules at the versions kind's base pins (crictl: the
#     nearest version the proxy serves);
#   - node: kubeadm, kubelet, kubectl in /usr/bin, /kind/version, kind's
#     default storage manifest, and these images preloaded into containerd:
#     kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy
#     (k8s.io/kubernetes), etcd (go.etcd.io/etcd/server, the version kubeadm
#     wants), CoreDNS (github.com/coredns/coredns, kubeadm's version), pause
#     (build/pause/linux/pause.c of the Kubernetes module), local-path-provisioner
#     and its helper (Debian's busybox).
# The Kubernetes binaries come from scripts/kind/kube, a Go module with the
# same dependency versions as the control-plane harness (tests/control-plane),
# so a machine that built the harness reuses its Go build cache.
#
# Not like upstream: no kindnetd. Its Go module is not served by the module
# proxy here, so pods are networked by containerd's CNI config template
# (ptp + host-local + portmap, with IP masquerade) from the node's pod CIDR
# instead (scripts/kind/cni-template.json; /kind/manifests/default-cni.yaml
# says so in a ConfigMap). One node per cluster (no routes between nodes), no
# NetworkPolicy enforcement.
#
# Idempotent and cached under ~/.cache/portcullis/kind (PORTCULLIS_KIND_CACHE):
# Go binaries and the Debian root filesystem are rebuilt only when their
# inputs change; the images carry a label with the hash of this script and
# its inputs, and are rebuilt only when it changes.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${PORTCULLIS_KIND_CACHE:-$HOME/.cache/portcullis/kind}"
BIN="$CACHE/bin"
STAMPS="$CACHE/stamps"

# Pinned versions. kind's base image pins containerd, runc, crictl and the CNI
# plugins (images/base/Dockerfile of the kind module); kubeadm pins etcd,
# CoreDNS and pause (cmd/kubeadm/app/constants).
KIND_VERSION=v0.33.0
KUBE_VERSION=v1.37.2
CONTAINERD_VERSION=v2.3.4
RUNC_VERSION=v1.4.3
CRICTL_VERSION=v1.37.0
CNI_PLUGINS_VERSION=v1.9.1
ETCD_IMAGE_TAG=3.7.0-0
COREDNS_VERSION=v1.14.6
PAUSE_TAGS=(3.10 3.10.2)
LOCAL_PATH_PROVISIONER_VERSION=v0.0.30
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# kind's base image packages (images/base/Dockerfile), less nfs-common and
# open-iscsi (network storage e2e tests only).
NODE_PACKAGES=systemd,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,pigz,fuse-overlayfs,e2fsprogs,bash,ca-certificates,curl,jq,procps
# Base of the control-plane images: the distroless cc stand-in
# (Debian's glibc, CA certificates, no shell) of scripts/offline-base-images.sh.
CC_BASE=localhost/portcullis-base/cc-debian12:nonroot

NODE_IMAGE="portcullis.local/kind-node:$KUBE_VERSION"
REGISTRY_IMAGE="registry:2"
KUBECTL_IMAGE="registry.k8s.io/kubectl:$KUBE_VERSION"
LABEL=dev.portcullis.kind.recipe

log() { echo "kind-node-image: $*" >&2; }
die() { log "$*"; exit 1; }

want_images=0
[[ "${1:-}" == "--images" ]] && want_images=1

[[ "$(id -u)" == 0 ]] || die "run as root (debootstrap)"
if ! command -v debootstrap >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  log "apt-get install debootstrap"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
for tool in docker go gcc debootstrap apt-get dpkg-deb jq; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required (Debian: apt-get install docker.io golang gcc debootstrap jq)"
done
mkdir -p "$BIN" "$STAMPS"

KIND_DIR="$(cd "$ROOT" && go mod download -json "sigs.k8s.io/kind@$KIND_VERSION" | jq -r .Dir)"
KUBE_DIR="$(cd "$ROOT" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | jq -r .Dir)"
[[ -d "$KIND_DIR/images/base/files" && -f "$KUBE_DIR/build/pause/linux/pause.c" ]] \
  || die "the sigs.k8s.io/kind or k8s.io/kubernetes module lacks the expected files"
GO_VERSION="$(go env GOVERSION)"
export GOFLAGS="-trimpath -buildvcs=false"

# ------------------------------------------------------------ helpers
# cached NAME KEY CMD...: run CMD unless the stamp NAME holds KEY.
cached() {
  local name="$1" key="$2"; shift 2
  if [[ -f "$STAMPS/$name" && "$(cat "$STAMPS/$name")" == "$key" ]]; then return 0; fi
  local start=$SECONDS
  log "building $name ..."
  "$@"
  echo "$key" > "$STAMPS/$name"
  log "built $name in $((SECONDS - start))s"
}

# go_install [VAR=VALUE...] GO-INSTALL-ARGS...: go install into $BIN.
go_install() { env GOBIN="$BIN" "$@"; }

# docker_image_ok IMAGE KEY: IMAGE exists with recipe label KEY.
docker_image_ok() {
  [[ "$(docker image inspect -f "{{ index .Config.Labels \"$LABEL\" }}" "$1" 2>/dev/null)" == "$2" ]]
}

# import_image ROOTFS_DIR IMAGE KEY DOCKERFILE_LINES...: a one-layer image from
# ROOTFS_DIR, then the metadata lines (ENTRYPOINT, USER, ...) on top, labelled KEY.
import_image() {
  local dir="$1" image="$2" key="$3"; shift 3
  local tmp="portcullis.local/import-tmp:$RANDOM$RANDOM"
  tar --numeric-owner -C "$dir" -c . | docker import - "$tmp" >/dev/null
  local ctx
  ctx="$(mktemp -d)"
  { echo "FROM $tmp"; echo "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    printf '%s\n' "$@"; echo "LABEL $LABEL=\"$key\""; } > "$ctx/Dockerfile"
  # The classic builder: it needs no registry (BuildKit fetches its frontend).
  DOCKER_BUILDKIT=0 docker build -q -t "$image" "$ctx" >/dev/null 2>"$ctx/err" \
    || { cat "$ctx/err" >&2; rm -rf "$ctx"; die "docker build of $image failed"; }
  rm -rf "$ctx"
  docker rmi "$tmp" >/dev/null
}

# ------------------------------------------------------------ Go binaries
kube_ldflags() {
  local minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  local x="" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    x+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    x+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "-s -w$x"
}

build_kube() {
  # Built from scripts/kind/kube, whose go.mod pins k8s.io/kubernetes and
  # etcd as the control-plane harness does and names the commands as tools.
  (cd "$ROOT/scripts/kind/kube" && go build -ldflags "$(kube_ldflags)" -o "$BIN/" \
    k8s.io/kubernetes/cmd/kubeadm k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kubectl \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-proxy ./etcd)
}

build_coredns() {
  (cd "$ROOT/scripts/kind/coredns" && go build -ldflags "-s -w" -o "$BIN/coredns" .)
}

build_containerd() {
  local v=github.com/containerd/containerd/v2
  go_install go install -tags=no_aufs,no_zfs,no_btrfs,no_devmapper \
    -ldflags="-s -w -X $v/version.Version=$CONTAINERD_VERSION -X $v/version.Package=$v" \
    "$v/cmd/containerd@$CONTAINERD_VERSION" "$v/cmd/ctr@$CONTAINERD_VERSION" "$v/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION"
}

build_runc() {
  # cgo and libseccomp, as runc's release build (the seccomp build tag).
  command -v pkg-config >/dev/null && pkg-config --exists libseccomp \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libseccomp-dev pkg-config >/dev/null; }
  go_install CGO_ENABLED=1 go install -tags=seccomp,urfave_cli_no_docs \
    -ldflags="-s -w -X main.version=${RUNC_VERSION#v}" "github.com/opencontainers/runc@$RUNC_VERSION"
}

build_crictl() {
  go_install CGO_ENABLED=0 go install -ldflags="-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" \
    "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
}

build_cni() {
  local p=github.com/containernetworking/plugins
  go_install CGO_ENABLED=0 go install -ldflags="-s -w -X $p/pkg/utils/buildversion.BuildVersion=$CNI_PLUGINS_VERSION" \
    "$p/plugins/ipam/host-local@$CNI_PLUGINS_VERSION" "$p/plugins/main/loopback@$CNI_PLUGINS_VERSION" \
    "$p/plugins/main/ptp@$CNI_PLUGINS_VERSION" "$p/plugins/meta/portmap@$CNI_PLUGINS_VERSION"
}

build_local_path_provisioner() {
  go_install go install -ldflags="-s -w -X main.VERSION=$LOCAL_PATH_PROVISIONER_VERSION" \
    "github.com/rancher/local-path-provisioner@$LOCAL_PATH_PROVISIONER_VERSION"
}

build_pause() {
  gcc -Os -Wall -Werror -static -DVERSION="v${PAUSE_TAGS[-1]}-portcullis" \
    -o "$BIN/pause" "$KUBE_DIR/build/pause/linux/pause.c"
}

src_hash() { # DIR: hash of a Go module's sources
  (cd "$1" && find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) -print0 \
    | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16
}

cached kube "kube=$KUBE_VERSION src=$(src_hash "$ROOT/scripts/kind/kube") $GO_VERSION" build_kube
cached coredns "coredns=$COREDNS_VERSION src=$(src_hash "$ROOT/scripts/kind/coredns") $GO_VERSION" build_coredns
cached containerd "containerd=$CONTAINERD_VERSION $GO_VERSION" build_containerd
cached runc "runc=$RUNC_VERSION $GO_VERSION" build_runc
cached crictl "crictl=$CRICTL_VERSION $GO_VERSION" build_crictl
cached cni "cni=$CNI_PLUGINS_VERSION $GO_VERSION" build_cni
cached local-path-provisioner "lpp=$LOCAL_PATH_PROVISIONER_VERSION $GO_VERSION" build_local_path_provisioner
cached pause "pause=$KUBE_VERSION" build_pause

# ------------------------------------------------------------ Debian root filesystem
build_node_rootfs() {
  local dir
  dir="$(mktemp -d)"
  debootstrap --variant=minbase --include="$NODE_PACKAGES" "$DEBIAN_SUITE" "$dir" "$DEBIAN_MIRROR" \
    > "$CACHE/debootstrap.log" 2>&1 || { tail -20 "$CACHE/debootstrap.log" >&2; rm -rf "$dir"; die "debootstrap failed"; }
  # What kind's base Dockerfile removes after installing (clean-install, unwanted units).
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/var/log/* \
    "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/tmp/* "$dir"/var/tmp/*
  tar --numeric-owner -C "$dir" -czf "$CACHE/node-rootfs.tar.gz.tmp" .
  mv "$CACHE/node-rootfs.tar.gz.tmp" "$CACHE/node-rootfs.tar.gz"
  rm -rf "$dir"
}
cached node-rootfs "$DEBIAN_SUITE $NODE_PACKAGES $DEBIAN_MIRROR" build_node_rootfs

# ------------------------------------------------------------ images
# One key for every image: this script, the scripts/kind tree, the versions
# and the Go binaries (their stamps).
RECIPE="$( { cat "${BASH_SOURCE[0]}"; find "$ROOT/scripts/kind" -type f | LC_ALL=C sort | xargs cat; cat "$STAMPS"/*; } | sha256sum | cut -c1-16)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

build_base() { # the kind base image, as a directory
  local r="$WORK/base" f="$KIND_DIR/images/base/files"
  mkdir -p "$r"
  tar -C "$r" -xzf "$CACHE/node-rootfs.tar.gz"
  install -m 0755 "$f"/usr/local/bin/* "$r/usr/local/bin/"
  mkdir -p "$r/kind/bin" "$r/LICENSES" "$r/etc/containerd" "$r/etc/default" "$r/etc/sysctl.d" \
    "$r/etc/systemd/system/kubelet.service.d" "$r/etc/kubernetes/manifests" "$r/opt/cni/bin"
  cp -r "$f/kind/." "$r/kind/"
  find "$r/kind" -type f -exec chmod 0644 {} + ; chmod 0755 "$r/kind" "$r/kind/bin" "$r"/kind/bin/*
  install -m 0644 "$f"/LICENSES/* "$r/LICENSES/"
  install -m 0644 "$f"/etc/crictl.yaml "$r/etc/"
  install -m 0644 "$f"/etc/containerd/* "$r/etc/containerd/"
  install -m 0644 "$f"/etc/default/* "$r/etc/default/"
  install -m 0644 "$f"/etc/sysctl.d/* "$r/etc/sysctl.d/"
  install -m 0644 "$f"/etc/systemd/system/*.service "$f"/etc/systemd/system/*.slice "$r/etc/systemd/system/"
  install -m 0644 "$f"/etc/systemd/system/kubelet.service.d/* "$r/etc/systemd/system/kubelet.service.d/"
  # The clean-up and service set-up of kind's base Dockerfile.
  find "$r/lib/systemd/system/sysinit.target.wants/" -name "systemd-tmpfiles-setup.service" -delete
  rm -f "$r"/lib/systemd/system/multi-user.target.wants/* "$r"/etc/systemd/system/*.wants/* \
    "$r"/lib/systemd/system/local-fs.target.wants/* "$r"/lib/systemd/system/sockets.target.wants/*udev* \
    "$r"/lib/systemd/system/sockets.target.wants/*initctl* "$r"/lib/systemd/system/basic.target.wants/*
  echo "ReadKMsg=no" >> "$r/etc/systemd/journald.conf"
  ln -sf /usr/lib/systemd/systemd "$r/sbin/init"
  systemctl --root="$r" enable kubelet.service containerd.service undo-mount-hacks.service >/dev/null 2>&1
  systemctl --root="$r" mask systemd-binfmt.service >/dev/null 2>&1
  # containerd, runc, crictl, CNI plugins.
  install -m 0755 "$BIN/containerd" "$BIN/ctr" "$BIN/containerd-shim-runc-v2" "$BIN/crictl" "$r/usr/local/bin/"
  install -m 0755 "$BIN/runc" "$r/usr/local/sbin/runc"
  install -m 0755 "$BIN/host-local" "$BIN/loopback" "$BIN/ptp" "$BIN/portmap" "$r/opt/cni/bin/"
  "$BIN/ctr" oci spec \
    | jq '.hooks.createContainer[.hooks.createContainer| length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' \
    | jq 'del(.process.rlimits)' > "$r/etc/containerd/cri-base.json"
  # Pod networking without kindnetd (see the header): containerd writes the
  # CNI config from this template once the kubelet sends it the pod CIDR.
  install -m 0644 "$ROOT/scripts/kind/cni-template.json" "$r/etc/containerd/cni-template.json"
  printf '\n# Portcullis: pod networking without kindnetd (scripts/kind-node-image.sh).\n[plugins."io.containerd.grpc.v1.cri".cni]\n  conf_template = "/etc/containerd/cni-template.json"\n' \
    >> "$r/etc/containerd/config.toml"
}

# The control-plane images: one binary on the cc base, run as root as
# upstream's are (kubeadm's static pods read root-only keys).
component_image() { # NAME IMAGE BINARY_PATH_IN_IMAGE [DOCKERFILE_LINES...]
  local name="$1" image="$2" path="$3"; shift 3
  local ctx="$WORK/img-$name"
  mkdir -p "$ctx"
  install -m 0755 "$BIN/$name" "$ctx/binary"
  [[ "$name" == registry ]] && registry_config > "$ctx/config.yml"
  { echo "FROM $CC_BASE"; echo "COPY binary $path"
    [[ "$name" == registry ]] && echo "COPY config.yml /etc/docker/registry/config.yml"
    echo "USER 0:0"; echo "WORKDIR /"; printf '%s\n' "$@"; echo "LABEL $LABEL=\"$RECIPE\""; } > "$ctx/Dockerfile"
  DOCKER_BUILDKIT=0 docker build -q -t "$image" "$ctx" >/dev/null 2>"$ctx/err" \
    || { cat "$ctx/err" >&2; die "docker build of $image failed"; }
  rm -rf "$ctx"
}

build_images() {
  "$ROOT/scripts/offline-base-images.sh" --docker-runtime >&2
  local reg=registry.k8s.io
  component_image kube-apiserver "$reg/kube-apiserver:$KUBE_VERSION" /usr/local/bin/kube-apiserver
  component_image kube-controller-manager "$reg/kube-controller-manager:$KUBE_VERSION" /usr/local/bin/kube-controller-manager
  component_image kube-scheduler "$reg/kube-scheduler:$KUBE_VERSION" /usr/local/bin/kube-scheduler
  component_image etcd "$reg/etcd:$ETCD_IMAGE_TAG" /usr/local/bin/etcd
  component_image coredns "$reg/coredns/coredns:$COREDNS_VERSION" /coredns 'ENTRYPOINT ["/coredns"]' 'EXPOSE 53 53/udp'
  component_image local-path-provisioner "$(storage_image provisioner)" /usr/local/bin/local-path-provisioner \
    'ENTRYPOINT ["/usr/local/bin/local-path-provisioner"]'
  component_image kubectl "$KUBECTL_IMAGE" /bin/kubectl 'USER 65532:65532' 'ENTRYPOINT ["/bin/kubectl"]'
  component_image registry "$REGISTRY_IMAGE" /bin/registry 'EXPOSE 5000' \
    'VOLUME ["/var/lib/registry"]' 'ENTRYPOINT ["/bin/registry"]' 'CMD ["serve", "/etc/docker/registry/config.yml"]'

  # pause: the static binary alone.
  mkdir -p "$WORK/pause"
  install -m 0755 "$BIN/pause" "$WORK/pause/pause"
  import_image "$WORK/pause" "$reg/pause:${PAUSE_TAGS[0]}" "$RECIPE" 'USER 65535:65535' 'ENTRYPOINT ["/pause"]'
  for t in "${PAUSE_TAGS[@]:1}"; do docker tag "$reg/pause:${PAUSE_TAGS[0]}" "$reg/pause:$t"; done

  # kube-proxy needs iptables, nft and conntrack: the node's own Debian root
  # filesystem, with the mode selection of upstream's iptables-wrapper.
  mkdir -p "$WORK/kube-proxy"
  tar -C "$WORK/kube-proxy" -xzf "$CACHE/node-rootfs.tar.gz"
  install -m 0755 "$BIN/kube-proxy" "$WORK/kube-proxy/usr/local/bin/kube-proxy"
  install -m 0755 "$ROOT/scripts/kind/iptables-wrapper" "$WORK/kube-proxy/usr/sbin/iptables-wrapper"
  for cmd in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
    ln -sf iptables-wrapper "$WORK/kube-proxy/usr/sbin/$cmd"
  done
  import_image "$WORK/kube-proxy" "$reg/kube-proxy:$KUBE_VERSION" "$RECIPE"
  rm -rf "$WORK/kube-proxy"

  # local-path-helper: a shell, rm and mkdir (Debian's busybox).
  mkdir -p "$WORK/helper/bin" "$WORK/debs"
  (cd "$WORK/debs" && apt-get download -q busybox-static >/dev/null)
  dpkg-deb -x "$WORK"/debs/busybox-static_*.deb "$WORK/debs/x"
  install -m 0755 "$WORK/debs/x/bin/busybox" "$WORK/helper/bin/busybox"
  for cmd in sh rm mkdir; do ln -s busybox "$WORK/helper/bin/$cmd"; done
  import_image "$WORK/helper" "$(storage_image helper)" "$RECIPE" 'ENV PATH=/bin'
}

# The storage images kind's default-storage manifest names.
storage_image() { # provisioner|helper
  sed -n "s/^const storage${1^}Image = \"\(.*\)\"$/\1/p" "$KIND_DIR/pkg/build/nodeimage/const_storage.go"
}

registry_config() {
  # registry:2's config file, as its image ships it.
  cat <<'EOF'
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
EOF
}

node_images() { # every image the node preloads
  echo registry.k8s.io/kube-apiserver:$KUBE_VERSION registry.k8s.io/kube-controller-manager:$KUBE_VERSION \
    registry.k8s.io/kube-scheduler:$KUBE_VERSION registry.k8s.io/kube-proxy:$KUBE_VERSION \
    registry.k8s.io/etcd:$ETCD_IMAGE_TAG registry.k8s.io/coredns/coredns:$COREDNS_VERSION \
    "${PAUSE_TAGS[@]/#/registry.k8s.io/pause:}" "$(storage_image provisioner)" "$(storage_image helper)"
}

build_node() {
  build_base
  local base="portcullis.local/kind-base:$KUBE_VERSION"
  import_image "$WORK/base" "$base" "$RECIPE" 'ENV container=docker' 'STOPSIGNAL SIGRTMIN+3' \
    'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]'
  rm -rf "$WORK/base"
  # What `kind build node-image` does on its base image (pkg/build/nodeimage).
  local id="portcullis-kind-build-$$"
  docker rm -f "$id" >/dev/null 2>&1 || true
  docker run -d --name "$id" --entrypoint=sleep --security-opt seccomp=unconfined "$base" infinity >/dev/null
  # shellcheck disable=SC2064
  trap "docker rm -f -v $id >/dev/null 2>&1 || true; rm -rf '$WORK'" EXIT
  local b
  for b in kubeadm kubelet kubectl; do docker cp "$BIN/$b" "$id:/usr/bin/$b"; done
  docker exec "$id" sh -c 'chmod +x /usr/bin/kubeadm /usr/bin/kubelet /usr/bin/kubectl && chown root:root /usr/bin/kubeadm /usr/bin/kubelet /usr/bin/kubectl'
  echo -n "$KUBE_VERSION" | docker exec -i "$id" sh -c 'cat > /kind/version'
  docker exec "$id" mkdir -p /kind/manifests
  (cd "$ROOT/scripts/kind/manifests" && go run . storage "$KIND_DIR") | docker exec -i "$id" sh -c 'cat > /kind/manifests/default-storage.yaml'
  docker exec -i "$id" sh -c 'cat > /kind/manifests/default-cni.yaml' < "$ROOT/scripts/kind/default-cni.yaml"
  docker exec "$id" bash -c 'nohup containerd > /dev/null 2>&1 &'
  docker exec "$id" bash -c 'for i in $(seq 30); do [ -S /run/containerd/containerd.sock ] && ctr info >/dev/null 2>&1 && exit 0; sleep 1; done; exit 1' \
    || die "containerd did not start in the build container"
  # shellcheck disable=SC2046
  docker save $(node_images) | docker exec -i "$id" ctr --namespace=k8s.io images import \
    --label=io.cri-containerd.pinned=pinned --all-platforms --no-unpack --digests - >/dev/null
  # Stop containerd and wait until it has exited (a zombie: `sleep` reaps nothing).
  docker exec "$id" pkill containerd
  docker exec "$id" bash -c 'for i in $(seq 30); do
      up=0; for p in $(pgrep -x containerd); do grep -q "^State:.*Z" /proc/$p/status || up=1; done
      [ $up = 0 ] && exit 0; sleep 1; done; exit 1' || die "containerd did not stop in the build container"
  docker commit --change 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]' \
    --change "LABEL $LABEL=\"$RECIPE\"" "$id" "$NODE_IMAGE" >/dev/null
  docker rm -f -v "$id" >/dev/null
  docker rmi "$base" >/dev/null 2>&1 || true
}

images_ok=1
for img in $(node_images) "$REGISTRY_IMAGE" "$KUBECTL_IMAGE"; do
  docker_image_ok "$img" "$RECIPE" || images_ok=0
done
if (( ! images_ok )); then
  start=$SECONDS
  log "building the component images ..."
  install -m 0755 "$HOME/.cache/portcullis/bin/registry" "$BIN/registry" 2>/dev/null \
    || install -m 0755 "$("$ROOT/scripts/go-tools.sh" registry | tail -n1)" "$BIN/registry"
  build_images
  log "built the component images in $((SECONDS - start))s"
fi
if ! docker_image_ok "$NODE_IMAGE" "$RECIPE"; then
  start=$SECONDS
  log "building $NODE_IMAGE ..."
  build_node
  log "built $NODE_IMAGE in $((SECONDS - start))s"
fi
# The images a previous recipe built, now untagged.
docker image prune -f --filter "label=$LABEL" >/dev/null
echo "$NODE_IMAGE"
if (( want_images )); then echo "$REGISTRY_IMAGE"; echo "$KUBECTL_IMAGE"; fi
