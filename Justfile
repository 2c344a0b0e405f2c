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

# Build the Go test binaries: the OCI registry and the control-plane harness.
go-tools:
    scripts/go-tools.sh registry control-plane

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
