#!/usr/bin/env bash
# Build stand-ins for the Dockerfile's two base images from Debian packages
# and rustup, for hosts that reach package registries but not container
# registries (the project's development machines among them):
#
#   localhost/portcullis-base/rust:1.95-bookworm       for  rust:1.95-bookworm
#   localhost/portcullis-base/cc-debian12:nonroot     for  gcr.io/distroless/cc-debian12:nonroot
#
# They are assembled the way their upstreams are: the builder is a Debian
# bookworm debootstrap with a C toolchain and Rust installed by rustup into
# /usr/local/{rustup,cargo}; the runtime is the package set distroless "cc"
# unpacks (glibc, libgcc, libstdc++, libgomp, libssl, CA certificates, tzdata,
# netbase, base-files) with no shell and no package manager, and the
# distroless `nonroot` user, uid/gid 65532. Then:
#
#   scripts/image.sh --offline-bases
#
# builds the real Dockerfile on top of them. Idempotent: an image that exists
# is kept (pass --rebuild to replace both). Needs root, buildah and
# debootstrap (Debian: apt-get install buildah debootstrap).
#
#   scripts/offline-base-images.sh --docker-runtime [--rebuild]
#
# builds only the runtime stand-in, into the Docker engine's image store (no
# buildah, no debootstrap), for `scripts/image.sh --prebuilt` and the kind node
# image's control-plane images (scripts/kind-node-image.sh).
set -euo pipefail

rust_version="${RUST_VERSION:-1.95.0}"
suite="${DEBIAN_SUITE:-bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
builder_ref="localhost/portcullis-base/rust:1.95-bookworm"
runtime_ref="localhost/portcullis-base/cc-debian12:nonroot"
# Site-local CAs to trust in the builder (not in the runtime image).
extra_ca_dir="${EXTRA_CA_DIR:-/usr/local/share/ca-certificates}"

rebuild=0 docker_runtime=0
for arg in "$@"; do
    case "$arg" in
        --rebuild) rebuild=1 ;;
        --docker-runtime) docker_runtime=1 ;;
        *) echo "usage: $0 [--docker-runtime] [--rebuild]" >&2; exit 2 ;;
    esac
done

tools=(apt-get dpkg-deb)
if (( docker_runtime )); then tools+=(docker); else tools+=(buildah debootstrap); fi
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || { echo "offline-base-images: $tool is required" >&2; exit 1; }
done
[[ "$(id -u)" == 0 ]] || { echo "offline-base-images: run as root (debootstrap and buildah mount)" >&2; exit 1; }

exists() { buildah inspect --type image "$1" >/dev/null 2>&1; }

work="$(mktemp -d)"
containers=()
cleanup() {
    for c in "${containers[@]}"; do buildah rm "$c" >/dev/null 2>&1 || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# The runtime stand-in's files, into the directory $1.
runtime_rootfs() {
    local mnt="$1"
    # The package set of distroless cc-debian12 (its base + cc layers).
    local pkgs=(base-files netbase tzdata media-types ca-certificates libc6 libgcc-s1 libgomp1 libstdc++6 libssl3)
    (cd "$work" && apt-get download -q "${pkgs[@]}" >/dev/null 2>&1) \
        || { echo "offline-base-images: apt-get download ${pkgs[*]} failed" >&2; exit 1; }
    for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$mnt"; done
    rm -f "$work"/*.deb
    # ca-certificates' postinst builds the bundle; there is no shell to run it in the image.
    mkdir -p "$mnt/etc/ssl/certs"
    find "$mnt/usr/share/ca-certificates" -name '*.crt' | sort | xargs cat > "$mnt/etc/ssl/certs/ca-certificates.crt"
    cat > "$mnt/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
    cat > "$mnt/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
tty:x:5:
staff:x:50:
nonroot:x:65532:
EOF
    install -d -m 0700 -o 0 -g 0 "$mnt/root"
    install -d -m 0700 -o 65532 -g 65532 "$mnt/home/nonroot"
    install -d -m 1777 "$mnt/tmp"
    # No shell, no package manager: what distroless leaves out.
    rm -rf "$mnt/usr/share/doc" "$mnt/usr/share/man" "$mnt/usr/share/lintian"
}

runtime_env=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
             SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt)

build_runtime() {
    local ctr mnt
    ctr="$(buildah from scratch)"; containers+=("$ctr")
    mnt="$(buildah mount "$ctr")"
    runtime_rootfs "$mnt"
    buildah config --user 65532:65532 --workingdir /home/nonroot \
        "${runtime_env[@]/#/--env=}" "$ctr"
    buildah unmount "$ctr" >/dev/null
    buildah commit --quiet --rm "$ctr" "$runtime_ref" >/dev/null
    echo "offline-base-images: built $runtime_ref"
}

build_builder() {
    local ctr mnt
    ctr="$(buildah from scratch)"; containers+=("$ctr")
    mnt="$(buildah mount "$ctr")"
    debootstrap --variant=minbase --include=ca-certificates,curl,gcc,libc6-dev,make,pkg-config,git \
        "$suite" "$mnt" "$mirror" >"$work/debootstrap.log" 2>&1 \
        || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
    # Site-local CAs (a TLS-inspecting egress proxy, say) must be trusted by
    # rustup here and by cargo during the image build.
    if compgen -G "$extra_ca_dir/*.crt" >/dev/null; then
        cp "$extra_ca_dir"/*.crt "$mnt/usr/local/share/ca-certificates/"
    fi
    rm -rf "$mnt/var/cache/apt/archives"/*.deb "$mnt/var/lib/apt/lists"/*
    buildah config --workingdir / \
        --env RUSTUP_HOME=/usr/local/rustup --env CARGO_HOME=/usr/local/cargo \
        --env PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env RUST_VERSION="$rust_version" "$ctr"
    buildah run --isolation chroot --network host "$ctr" -- sh -euc "
        update-ca-certificates >/dev/null 2>&1
        curl --proto '=https' --tlsv1.2 -sSf -o /tmp/rustup-init \
            https://static.rust-lang.org/rustup/dist/x86_64-unknown-linux-gnu/rustup-init
        chmod +x /tmp/rustup-init
        /tmp/rustup-init -y -q --no-modify-path --profile minimal --default-toolchain $rust_version >/dev/null 2>&1
        rm /tmp/rustup-init
        chmod -R a+w /usr/local/rustup /usr/local/cargo
        rustc --version"
    buildah unmount "$ctr" >/dev/null
    buildah commit --quiet --rm "$ctr" "$builder_ref" >/dev/null
    echo "offline-base-images: built $builder_ref"
}

# The same runtime stand-in, in Docker's image store.
build_runtime_docker() {
    local dir="$work/rootfs" changes=(--change "USER 65532:65532" --change "WORKDIR /home/nonroot")
    local e
    for e in "${runtime_env[@]}"; do changes+=(--change "ENV $e"); done
    mkdir -p "$dir"
    runtime_rootfs "$dir"
    tar --numeric-owner -C "$dir" -c . | docker import "${changes[@]}" - "$runtime_ref" >/dev/null
    echo "offline-base-images: built $runtime_ref (docker)"
}

if (( docker_runtime )); then
    if (( rebuild )) || ! docker image inspect "$runtime_ref" >/dev/null 2>&1; then build_runtime_docker
    else echo "offline-base-images: have $runtime_ref (docker)"; fi
    exit 0
fi
if (( rebuild )) || ! exists "$runtime_ref"; then build_runtime; else echo "offline-base-images: have $runtime_ref"; fi
if (( rebuild )) || ! exists "$builder_ref"; then build_builder; else echo "offline-base-images: have $builder_ref"; fi
