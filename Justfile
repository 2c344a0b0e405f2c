# Portcullis tasks. `./dev <recipe>` installs what is missing first.

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# Build every sample and test policy into target/policies/NAME.wasm.
policies:
    scripts/build-policies.sh

# Build the host workspace (policy-server, portcullis CLI).
build:
    cargo build --workspace --bins

# Start the policy-server with the sample policies and send it the reference requests.
demo: policies build
    scripts/demo.sh

# The whole test suite: unit, integration, end-to-end against a real kube-apiserver, and lints.
# The test build comes first: its `portcullis` binary annotates the Python,
# JavaScript and Go policies, so the CLI is not built a second time with
# another feature set.
test: go-tools
    cargo test --workspace --no-run
    PORTCULLIS="${CARGO_TARGET_DIR:-target}/debug/portcullis" scripts/build-policies.sh
    just lint test-policies
    cargo test --workspace --no-fail-fast
    scripts/kind.sh test

# Unit tests of the sample policies' workspace (a separate cargo workspace), on the host.
test-policies:
    CARGO_TARGET_DIR="${PORTCULLIS_WASM_TARGET_DIR:-target/wasm}" \
        cargo test --manifest-path sample-policies/Cargo.toml --workspace

# Build the Go test tools: the OCI registry, the control-plane harness, helm and opa; fetch Gatekeeper's module (its templates and test objects).
go-tools:
    scripts/go-tools.sh registry control-plane helm opa gatekeeper

# rustfmt and clippy, warnings as errors; the sample policies on their wasm targets too.
lint: lint-policies
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# rustfmt and clippy of the sample policies, on the wasm target each one is built for.
lint-policies:
    cargo fmt --manifest-path sample-policies/Cargo.toml --all -- --check
    scripts/build-policies.sh --clippy

# Criterion benchmarks of one evaluation, per ABI and allocator.
bench: policies
    cargo bench -p portcullis-adapters --bench evaluation

# Load benchmark of the policy-server over HTTPS with wrk.
bench-load: policies
    PORTCULLIS_SETUP_BENCH=1 scripts/setup.sh
    cargo build --release -p portcullis-host --bins
    bench/load.sh

# Load benchmark of context-aware policies (3,000 Namespaces, 10,000 RoleBindings) against the local control plane; needs kubectl.
bench-context-aware: policies
    PORTCULLIS_SETUP_BENCH=1 scripts/setup.sh
    scripts/go-tools.sh control-plane
    bench/context-aware.sh

# Start the local control plane (etcd, kube-apiserver, kube-controller-manager) in the background.
cluster-up:
    scripts/control-plane.sh up

# Stop the local control plane.
cluster-down:
    scripts/control-plane.sh down

# Run the audit scanner against the local control plane (started if needed) with a real policy-server and two demo Pods, then list the reports; ARGS go to audit-scanner (docs/audit.md).
audit *args: policies
    cargo build -p portcullis-host -p portcullis-audit-scanner --bins
    scripts/audit-local.sh up
    scripts/audit-local.sh demo-objects
    scripts/audit-local.sh scan {{ args }} || { scripts/audit-local.sh down; exit 1; }
    scripts/audit-local.sh down
    kubectl --kubeconfig target/control-plane/kubeconfig get reports.openreports.io -A
    kubectl --kubeconfig target/control-plane/kubeconfig get clusterreports.openreports.io

# Benchmark of the audit scanner: 10,000 Pods in 100 namespaces, 5 policies, on a fresh local control plane (bench/audit.sh, BENCHMARKS.md).
bench-audit: policies
    cargo build --release -p portcullis-host -p portcullis-audit-scanner --bins
    bench/audit.sh

# ------------------------------------------------------------------ image
# The Dockerfile builds with docker, or buildah where no Docker engine runs;
# offline=1 builds on stand-ins for its base images, made from Debian packages
# and rustup, for hosts that reach no container registry (docs/install.md).

# Build the image TAG from the Dockerfile (offline=1: on stand-in base images).
image tag="portcullis:dev" offline="0":
    PORTCULLIS_SETUP_IMAGE=1 scripts/setup.sh
    scripts/image.sh {{ if offline == "1" { "--offline-bases" } else { "" } }} {{ tag }}

# Build the image, then test its user, labels, binaries, and policy-server as a webhook (tests/tests/image.rs).
image-test tag="portcullis:dev" offline="0": policies (image tag offline)
    scripts/go-tools.sh control-plane
    PORTCULLIS_IMAGE="{{ tag }}" PORTCULLIS_IMAGE_REVISION="$(git rev-parse HEAD)" \
        cargo test -p portcullis-tests --test image -- --ignored

# ------------------------------------------------------------------- kind
# A kind cluster running this checkout's image and Helm charts (scripts/kind.sh,
# docs/kind.md). The whole round trip:
#   just kind-up kind-load kind-install kind-e2e kind-down
# Needs Docker (installed and started here where it is missing: root and
# apt-get); where no container registry answers, the node image and the
# images the round trip needs are built here first (scripts/kind-node-image.sh).

# Build the kind node image, registry:2 and the kubectl image here, from Debian packages and Go modules (what kind-up does where no registry answers); cached.
kind-node-image:
    scripts/kind-node-image.sh --images

# Create the kind cluster `portcullis` and an OCI registry for policy modules (a container on the `kind` network, published on 127.0.0.1:5001).
kind-up:
    scripts/kind.sh up

# Build the image portcullis:dev (also tagged portcullis:dev-upgrade, for the upgrade test), load it into the kind cluster, and push the test policies to the kind registry.
kind-load: policies
    scripts/kind.sh load

# Install the charts into the kind cluster: CRDs, the controller and the default PolicyServer, all with portcullis:dev.
kind-install:
    scripts/kind.sh install helm

# Install the kustomize dev overlay into the kind cluster instead of the charts.
kind-install-kustomize:
    scripts/kind.sh install kustomize

# Uninstall the charts.
kind-uninstall:
    scripts/kind.sh uninstall helm

# Uninstall the kustomize dev overlay.
kind-uninstall-kustomize:
    scripts/kind.sh uninstall kustomize

# Run tests/tests/kind_e2e.rs against the charts in the kind cluster; the uninstall test runs last, alone (it uninstalls them).
kind-e2e:
    scripts/kind.sh e2e helm

# Run the kind tests that apply to the kustomize install, then its uninstall test.
kind-e2e-kustomize:
    scripts/kind.sh e2e kustomize

# Delete the kind cluster and its registry.
kind-down:
    scripts/kind.sh down
