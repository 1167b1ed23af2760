#!/usr/bin/env bash
# Builds the Calyx node image on this machine without pulling anything from a registry:
#
#   1. the binaries (`calyx`, `calyx-cni`, `calyx-ipam`) built here with cargo;
#   2. a minimal Debian root filesystem made by mmdebstrap from the Debian mirror: Debian's
#      essential set plus deploy/image-packages.txt (the same list deploy/Containerfile
#      installs), without documentation, man pages and locales;
#   3. the binaries, deploy/install-cni.sh (as /usr/local/bin/calyx-install-cni) and the
#      portmap CNI plugin of Debian's containernetworking-plugins added to it;
#   4. imported into podman as an OCI image with the Containerfile's entrypoint, command and
#      labels.
#
#   deploy/build-image.sh [--profile release|debug] [--bin-dir DIR] [--tag NAME] [--output FILE]
#
# --profile: the cargo profile of the binaries (release by default).
# --bin-dir: take calyx, calyx-cni and calyx-ipam from DIR as they are, without cargo (the test
#            suite passes the debug binaries it has already built, to save a release build on
#            2 cores, and it cannot run cargo while cargo runs it).
# --tag:     the image name (default localhost/calyx:<version>).
# --output:  also write the image as an OCI archive (podman save --format oci-archive).
# CALYX_DEBIAN_MIRROR (default http://deb.debian.org/debian) and CALYX_DEBIAN_SUITE
# (default bookworm) choose the packages. Installs what it needs with apt (deploy/packages.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=deploy/packages.sh
. deploy/packages.sh

profile=release
bin_dir=
tag=
output=
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile=${2:?--profile needs release or debug}; shift 2 ;;
        --bin-dir) bin_dir=${2:?--bin-dir needs a directory}; shift 2 ;;
        --tag) tag=${2:?--tag needs a name}; shift 2 ;;
        --output) output=${2:?--output needs a file}; shift 2 ;;
        *) echo "build-image: unknown argument $1" >&2; exit 2 ;;
    esac
done
case "$profile" in
    release | debug) ;;
    *) echo "build-image: --profile must be release or debug, not $profile" >&2; exit 2 ;;
esac
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
tag=${tag:-localhost/calyx:${version:-0.1.0}}
mirror=${CALYX_DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=${CALYX_DEBIAN_SUITE:-bookworm}

if [ -z "$bin_dir" ]; then
    calyx_install_packages "${CALYX_BUILD_PACKAGES[@]}" "${CALYX_IMAGE_PACKAGES[@]}"
    echo "==> cargo build ($profile) of calyx, calyx-cni, calyx-ipam"
    cargo_flags=(--locked --bins -p calyx -p calyx-cni)
    [ "$profile" = release ] && cargo_flags+=(--release)
    cargo build "${cargo_flags[@]}"
    bin_dir=${CARGO_TARGET_DIR:-target}/$profile
else
    calyx_install_packages "${CALYX_IMAGE_PACKAGES[@]}"
    profile="from $bin_dir"
fi
for b in calyx calyx-cni calyx-ipam; do
    [ -x "$bin_dir/$b" ] || { echo "build-image: $bin_dir/$b was not built" >&2; exit 1; }
done
portmap=/usr/lib/cni/portmap
[ -x "$portmap" ] || { echo "build-image: $portmap missing (containernetworking-plugins)" >&2; exit 1; }

work=$(mktemp -d /tmp/calyx-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
packages=$(grep -v '^\s*\(#\|$\)' deploy/image-packages.txt | paste -sd, -)
stage=$work/stage
mkdir -p "$stage"
install -m 0755 "$bin_dir/calyx" "$bin_dir/calyx-cni" "$bin_dir/calyx-ipam" "$portmap" "$stage/"
install -m 0755 deploy/install-cni.sh "$stage/calyx-install-cni"

echo "==> mmdebstrap $suite (essential + $packages) from $mirror"
mmdebstrap --quiet --variant=essential --include="$packages" \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook="sync-in '$stage' /usr/local/bin" \
    --customize-hook='mkdir -p "$1/var/lib/calyx"' \
    --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/*' \
    "$suite" "$work/rootfs.tar" "$mirror"

echo "==> podman import as $tag"
# The same entrypoint, command and labels as deploy/Containerfile (see there for why root).
podman import \
    --change 'ENTRYPOINT ["/usr/local/bin/calyx"]' \
    --change 'CMD ["node", "run"]' \
    --change 'LABEL org.opencontainers.image.title="calyx"' \
    --change 'LABEL org.opencontainers.image.description="Calyx node agent: IPAM in etcd, BGP speaker, route and tunnel reconciler"' \
    --change 'LABEL org.opencontainers.image.licenses="Apache-2.0"' \
    --change "LABEL org.opencontainers.image.version=\"$version\"" \
    "$work/rootfs.tar" "$tag" >/dev/null
if [ -n "$output" ]; then
    podman save --format oci-archive -o "$output" "$tag"
fi
size=$(podman image inspect --format '{{.Size}}' "$tag")
echo "built $tag: $((size / 1024 / 1024)) MiB (binaries: $profile)"
