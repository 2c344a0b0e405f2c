#!/usr/bin/env bash
# Build the Go-built test tools into ~/.cache/portcullis/bin (or $PORTCULLIS_BIN_DIR).
#
#   scripts/go-tools.sh NAME...      NAME: registry | helm | kind | opa | vegeta | control-plane | gatekeeper | all
#
# `gatekeeper` is not a binary: it downloads Gatekeeper's Go module (its
# ConstraintTemplates, constraints and test objects, for the Rego conformance
# suite) and links its read-only directory at $BIN_DIR/../gatekeeper, printing
# that path.
#
# Idempotent: each binary has a NAME.stamp beside it holding what it was built
# from (module@version, or the source hash of tests/control-plane, plus the Go
# version); a tool is rebuilt only when that changes. PORTCULLIS_GO_TOOLS_FORCE=1
# rebuilds anyway. Modules come from the Go module proxy (GOPROXY as configured).
# Prints the path of each requested binary, one per line, on stdout.
set -euo pipefail

# Pinned versions. Bump here; the stamp makes the next run rebuild.
REGISTRY_PKG="github.com/distribution/distribution/v3/cmd/registry@v3.1.2"
HELM_PKG="helm.sh/helm/v3/cmd/helm@v3.22.0"
KIND_PKG="sigs.k8s.io/kind@v0.33.0"
OPA_PKG="github.com/open-policy-agent/opa@v1.22.4"
GATEKEEPER_MODULE="github.com/open-policy-agent/gatekeeper/v3@v3.23.1"
# The rate-limited load generator of bench/load.sh's soak (wrk cannot hold a rate).
VEGETA_PKG="github.com/tsenart/vegeta/v12@v12.13.0"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="${PORTCULLIS_BIN_DIR:-$HOME/.cache/portcullis/bin}"

log() { echo "go-tools: $*" >&2; }

if ! command -v go >/dev/null 2>&1; then
  log "the go command is not on PATH"; exit 1
fi
GO_VERSION="$(go env GOVERSION)"
CGO_ENABLED="$(go env CGO_ENABLED)"
# -buildvcs=false: a VCS stamp would make every commit relink the binaries.
export GOFLAGS="$(go env GOFLAGS) -trimpath -buildvcs=false"
mkdir -p "$BIN_DIR"

up_to_date() { # name wanted-stamp
  local bin="$BIN_DIR/$1" stamp="$BIN_DIR/$1.stamp"
  [[ "${PORTCULLIS_GO_TOOLS_FORCE:-0}" != 1 && -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$2" ]]
}

install_module() { # name pkg@version [ldflags]
  local name="$1" pkg="$2" ldflags="${3:-}" want tmp
  want="$pkg $GO_VERSION CGO_ENABLED=$CGO_ENABLED"
  [[ -n "$ldflags" ]] && want+=" ldflags=$ldflags"
  if up_to_date "$name" "$want"; then log "$name up to date ($pkg)"; return; fi
  log "building $name from $pkg ..."
  tmp="$(mktemp -d "$BIN_DIR/.build-$name.XXXXXX")"
  local start=$SECONDS
  if ! GOBIN="$tmp" go install -ldflags="$ldflags" "$pkg"; then rm -rf "$tmp"; log "building $name failed"; exit 1; fi
  # go install names the binary after the package path's last element, a major
  # version suffix (…/vegeta/v12) excepted.
  local built
  built="$(basename "${pkg%@*}")"
  [[ "$built" =~ ^v[0-9]+$ ]] && built="$(basename "$(dirname "${pkg%@*}")")"
  mv -f "$tmp/$built" "$BIN_DIR/$name"
  rm -rf "$tmp"
  echo "$want" > "$BIN_DIR/$name.stamp"
  log "built $name in $((SECONDS - start))s"
}

# The ldflags of helm's release build (its Makefile): the version, and the
# Kubernetes version of its client-go (v0.X.Y -> 1.X), which `helm template`
# and `helm lint` assume for a chart's kubeVersion constraint and
# .Capabilities.KubeVersion. Without them helm reports v3.x-dev and assumes
# Kubernetes v1.20, and refuses charts requiring more.
helm_ldflags() {
  local version="${HELM_PKG##*@}" dir client_go major minor
  dir="$(go mod download -json "${HELM_PKG%%/cmd/*}@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  client_go="$(awk '$1 == "k8s.io/client-go" {print $2; exit}' "$dir/go.mod")"
  [[ "$client_go" =~ ^v0\.([0-9]+)\. ]] || { log "helm: cannot read k8s.io/client-go's version from $dir/go.mod"; exit 1; }
  major=1 minor="${BASH_REMATCH[1]}"
  local m=helm.sh/helm/v3
  echo "-s -w -X $m/internal/version.version=$version -X $m/internal/version.gitTreeState=clean" \
    "-X $m/pkg/lint/rules.k8sVersionMajor=$major -X $m/pkg/lint/rules.k8sVersionMinor=$minor" \
    "-X $m/pkg/chartutil.k8sVersionMajor=$major -X $m/pkg/chartutil.k8sVersionMinor=$minor"
}

control_plane_hash() {
  (cd "$ROOT/tests/control-plane" && find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) -print0 \
    | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16
}

build_control_plane() {
  local want tmp start=$SECONDS
  want="control-plane src=$(control_plane_hash) $GO_VERSION CGO_ENABLED=$CGO_ENABLED"
  if up_to_date control-plane "$want"; then log "control-plane up to date"; return; fi
  log "building control-plane (etcd + kube-apiserver + kube-controller-manager; first build takes minutes) ..."
  tmp="$BIN_DIR/.control-plane.tmp.$$"
  if ! (cd "$ROOT/tests/control-plane" && go build -ldflags="-s -w" -o "$tmp" .); then
    rm -f "$tmp"; log "building control-plane failed"; exit 1
  fi
  mv -f "$tmp" "$BIN_DIR/control-plane"
  echo "$want" > "$BIN_DIR/control-plane.stamp"
  log "built control-plane in $((SECONDS - start))s"
}

# Gatekeeper's module: `go mod download` puts it in the module cache (verified
# against sum.golang.org); a symlink with a stamp makes the next run instant.
GATEKEEPER_LINK="$(dirname "$BIN_DIR")/gatekeeper"
fetch_gatekeeper() {
  local stamp="$GATEKEEPER_LINK.stamp" dir start=$SECONDS
  if [[ "${PORTCULLIS_GO_TOOLS_FORCE:-0}" != 1 && -d "$GATEKEEPER_LINK/" && -f "$stamp" \
        && "$(cat "$stamp")" == "$GATEKEEPER_MODULE" ]]; then
    log "gatekeeper up to date ($GATEKEEPER_MODULE)"; return
  fi
  log "downloading $GATEKEEPER_MODULE ..."
  if ! dir="$(cd "$BIN_DIR" && go mod download -json "$GATEKEEPER_MODULE" \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')" || [[ -z "$dir" || ! -d "$dir" ]]; then
    log "downloading $GATEKEEPER_MODULE failed"; exit 1
  fi
  ln -sfn "$dir" "$GATEKEEPER_LINK"
  echo "$GATEKEEPER_MODULE" > "$stamp"
  log "fetched gatekeeper in $((SECONDS - start))s"
}

if [[ $# -eq 0 ]]; then
  echo "usage: $0 registry|helm|kind|opa|vegeta|control-plane|gatekeeper|all ..." >&2; exit 2
fi
names=()
for arg in "$@"; do
  if [[ "$arg" == all ]]; then names+=(registry helm kind opa vegeta control-plane gatekeeper); else names+=("$arg"); fi
done
for name in "${names[@]}"; do
  case "$name" in
    registry) install_module registry "$REGISTRY_PKG" ;;
    helm) install_module helm "$HELM_PKG" "$(helm_ldflags)" ;;
    kind) install_module kind "$KIND_PKG" ;;
    opa) install_module opa "$OPA_PKG" ;;
    vegeta) install_module vegeta "$VEGETA_PKG" ;;
    gatekeeper) fetch_gatekeeper ;;
    control-plane) build_control_plane ;;
    *) log "unknown tool '$name' (known: registry helm kind opa vegeta control-plane gatekeeper all)"; exit 2 ;;
  esac
done
for name in "${names[@]}"; do
  if [[ "$name" == gatekeeper ]]; then echo "$GATEKEEPER_LINK"; else echo "$BIN_DIR/$name"; fi
done
