# shellcheck shell=bash
# The Debian packages Calyx's scripts need, in one place: sourced by deploy/demo.sh and
# tests/run.sh (and through it .ci/run), so that the two install steps cannot drift.
#
# Each entry is "package:probe", the probe being a command (or an absolute path) that the
# package provides, so a machine that has everything skips apt entirely. Installs use
# --no-install-recommends, so every package that is only *recommended* by another one is
# named here itself (libprotobuf-dev: the .proto files etcd-client's build script compiles
# against; protobuf-compiler only recommends it).

# What building Calyx needs (etcd-client generates its gRPC code with protoc at build time).
CALYX_BUILD_PACKAGES=(
    protobuf-compiler:protoc
    libprotobuf-dev:/usr/include/google/protobuf/descriptor.proto
)

# What the demo runs: etcd, a BIRD top-of-rack, namespaces, ping, python3 (reads CNI JSON).
CALYX_DEMO_PACKAGES=(
    "${CALYX_BUILD_PACKAGES[@]}"
    etcd-server:etcd
    etcd-client:etcdctl
    bird2:bird
    iproute2:ip
    iputils-ping:ping
    util-linux:nsenter
    python3:python3
)

# What deploy/build-image.sh needs to build the image without a registry: mmdebstrap for the
# root filesystem, podman to make it an image (runc: the runtime podman runs it with here,
# since crun refuses hybrid cgroup hierarchies), and containernetworking-plugins for the portmap
# plugin shipped in it.
CALYX_IMAGE_PACKAGES=(
    mmdebstrap:mmdebstrap
    podman:podman
    runc:runc
    containernetworking-plugins:/usr/lib/cni/portmap
)

# What the test suite drives for real: the demo's parts plus FRR, GoBGP, tcpdump, nft (the
# rules tests inspect and vandalise Calyx's nftables table with it) and iptables-nft (they check
# that it reads Calyx's rules in its FORWARD chain). The daemon itself speaks nf_tables netlink
# and needs neither.
CALYX_TEST_PACKAGES=(
    "${CALYX_DEMO_PACKAGES[@]}"
    frr:/usr/lib/frr/bgpd
    gobgpd:gobgpd
    tcpdump:tcpdump
    nftables:nft
    iptables:iptables-nft
    "${CALYX_IMAGE_PACKAGES[@]}"
    busybox-static:/bin/busybox
)

# calyx_install_packages ENTRY... : apt-get install every package whose probe is missing.
calyx_install_packages() {
    local need=() entry pkg probe
    for entry in "$@"; do
        pkg=${entry%%:*}
        probe=${entry#*:}
        if [ "${probe#/}" != "$probe" ]; then
            [ -e "$probe" ] || need+=("$pkg")
        else
            command -v "$probe" >/dev/null 2>&1 || need+=("$pkg")
        fi
    done
    [ ${#need[@]} -gt 0 ] || return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "needs root to install ${need[*]}" >&2
        return 1
    fi
    echo "==> installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}
