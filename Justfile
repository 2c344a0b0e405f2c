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
test: policies go-tools lint
    cargo test --workspace --no-fail-fast

# Build the Go test tools: the OCI registry, the control-plane harness, helm and opa; fetch Gatekeeper's module (its templates and test objects).
go-tools:
    scripts/go-tools.sh registry control-plane helm opa gatekeeper

# rustfmt and clippy, warnings as errors.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Criterion benchmarks of one evaluation, per ABI and allocator.
bench: policies
    cargo bench -p portcullis-adapters --bench evaluation

# Load benchmark of the policy-server over HTTPS with wrk.
bench-load: policies
    PORTCULLIS_SETUP_BENCH=1 scripts/setup.sh
    cargo build --release -p portcullis-host --bins
    bench/load.sh

# Start the local control plane (etcd, kube-apiserver, kube-controller-manager) in the background.
cluster-up:
    scripts/control-plane.sh up

# Stop the local control plane.
cluster-down:
    scripts/control-plane.sh down

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
# A kind cluster running this checkout's image and Helm charts (needs Docker).
# The whole round trip, see docs/kind.md:
#   just kind-up kind-load kind-install kind-e2e kind-down

kind_bin := env_var_or_default("KIND", env_var("HOME") + "/.cache/portcullis/bin/kind")
helm_bin := env_var_or_default("HELM", env_var("HOME") + "/.cache/portcullis/bin/helm")
kind_cluster := "portcullis"
kind_context := "kind-" + kind_cluster
kind_namespace := "portcullis"
kind_registry := "portcullis-kind-registry"
kind_registry_port := "5001"

# Create the kind cluster `portcullis` and an OCI registry for policy modules (a container on the `kind` network, published on 127.0.0.1:5001).
kind-up:
    [[ -x "{{ kind_bin }}" ]] || scripts/go-tools.sh kind
    "{{ kind_bin }}" get clusters | grep -qx "{{ kind_cluster }}" || "{{ kind_bin }}" create cluster --name "{{ kind_cluster }}" --wait 180s
    docker inspect "{{ kind_registry }}" >/dev/null 2>&1 || docker run -d --restart=always --name "{{ kind_registry }}" --network kind -p "127.0.0.1:{{ kind_registry_port }}:5000" registry:2

# Build the image portcullis:dev (also tagged portcullis:dev-upgrade, for the upgrade test), load both into the kind cluster, and push the test policies to the kind registry.
kind-load: policies
    scripts/image.sh portcullis:dev
    docker tag portcullis:dev portcullis:dev-upgrade
    "{{ kind_bin }}" load docker-image portcullis:dev portcullis:dev-upgrade --name "{{ kind_cluster }}"
    sources="$(mktemp)"; trap 'rm -f "$sources"' EXIT; \
    printf 'insecure_sources:\n  - "127.0.0.1:{{ kind_registry_port }}"\n' > "$sources"; \
    for p in pod-privileged-wapc pod-privileged-component default-labels-wapc; do \
        cargo run -q -p portcullis-host --bin portcullis -- push "target/policies/$p.wasm" "registry://127.0.0.1:{{ kind_registry_port }}/policies/$p:v1" --sources-path "$sources"; \
    done

# Install the charts into the kind cluster: CRDs, the controller and the default PolicyServer, all with portcullis:dev.
kind-install:
    [[ -x "{{ helm_bin }}" ]] || scripts/go-tools.sh helm
    "{{ helm_bin }}" --kube-context "{{ kind_context }}" upgrade --install --wait portcullis-crds charts/portcullis-crds
    "{{ helm_bin }}" --kube-context "{{ kind_context }}" upgrade --install --wait --namespace "{{ kind_namespace }}" --create-namespace portcullis-controller charts/portcullis-controller --set image.repository=portcullis --set image.tag=dev
    "{{ helm_bin }}" --kube-context "{{ kind_context }}" upgrade --install --wait --namespace "{{ kind_namespace }}" portcullis-defaults charts/portcullis-defaults --set policyServer.image.repository=portcullis --set policyServer.image.tag=dev

# Run tests/tests/kind_e2e.rs against the kind cluster; the uninstall test runs last, alone (it removes the charts).
kind-e2e:
    registry_ip="$(docker inspect -f '{{{{ .NetworkSettings.Networks.kind.IPAddress }}' "{{ kind_registry }}")"; \
    export PORTCULLIS_KIND_CONTEXT="{{ kind_context }}" PORTCULLIS_KIND_NAMESPACE="{{ kind_namespace }}" \
        PORTCULLIS_KIND_REGISTRY="$registry_ip:5000" PORTCULLIS_KIND_IMAGE=portcullis:dev \
        PORTCULLIS_KIND_UPGRADE_IMAGE=portcullis:dev-upgrade HELM="{{ helm_bin }}"; \
    cargo test -p portcullis-tests --test kind_e2e -- --ignored --skip uninstall_leaves_no_webhooks; \
    cargo test -p portcullis-tests --test kind_e2e -- --ignored --exact uninstall_leaves_no_webhooks

# Delete the kind cluster and its registry.
kind-down:
    "{{ kind_bin }}" delete cluster --name "{{ kind_cluster }}"
    docker rm -f "{{ kind_registry }}" >/dev/null 2>&1 || true
