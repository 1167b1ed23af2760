#!/bin/bash
# calyx-install-cni: what Calico's install-cni does, for Calyx. Run by the DaemonSet's
# initContainer (image path /usr/local/bin/calyx-install-cni) with the host's /opt/cni/bin and
# /etc/cni/net.d mounted under /host:
#
#   1. copies the CNI binaries from the image into the host's CNI bin directory:
#        calyx-ipam -> calyx-ipam (IPAM plugin, `"ipam": {"type": "calyx-ipam"}`)
#        calyx-cni  -> calyx      (main plugin, `"type": "calyx"`; skipped until it is built)
#        portmap    -> portmap    (containernetworking-plugins' hostPort plugin, chained after
#                                  calyx as in Calico's manifests; skipped when not in the image)
#      each through a temporary name and a rename, so a kubelet running the old binary at that
#      moment never sees a half-written file;
#   2. copies the etcd TLS files (when configured and not empty) to <net dir>/calyx-tls/, since
#      the CNI plugins run on the host where /calico-secrets does not exist;
#   3. fills in the CNI network config template and writes it as <net dir>/10-calyx.conflist,
#      again through a rename.
#
# Environment (defaults in brackets):
#   CNI_NETWORK_CONFIG   the template (from the ConfigMap's cni_network_config) [required]
#   CNI_CONF_NAME        file name of the written config [10-calyx.conflist]
#   CNI_MTU              replaces __CNI_MTU__ [1440]
#   KUBERNETES_NODE_NAME replaces __KUBERNETES_NODE_NAME__ [required]
#   ETCD_ENDPOINTS       replaces __ETCD_ENDPOINTS__ [required]
#   ETCD_CA_CERT_FILE, ETCD_CERT_FILE, ETCD_KEY_FILE
#                        TLS files inside this container; when set and not empty they are
#                        copied, and __ETCD_CA_CERT_FILE__ / __ETCD_CERT_FILE__ /
#                        __ETCD_KEY_FILE__ become their host paths; otherwise "" [unset]
#   CNI_LOG_LEVEL        replaces __LOG_LEVEL__ [info]
#   SOURCE_DIR           where the binaries are in the image [/usr/local/bin]
#   CNI_BIN_DIR          the host's CNI bin dir as mounted here [/host/opt/cni/bin]
#   CNI_NET_DIR          the host's CNI config dir as mounted here [/host/etc/cni/net.d]
#   HOST_CNI_NET_DIR     the same directory as the host sees it [/etc/cni/net.d]
set -euo pipefail

SOURCE_DIR=${SOURCE_DIR:-/usr/local/bin}
CNI_BIN_DIR=${CNI_BIN_DIR:-/host/opt/cni/bin}
CNI_NET_DIR=${CNI_NET_DIR:-/host/etc/cni/net.d}
HOST_CNI_NET_DIR=${HOST_CNI_NET_DIR:-/etc/cni/net.d}
CNI_CONF_NAME=${CNI_CONF_NAME:-10-calyx.conflist}
CNI_MTU=${CNI_MTU:-1440}
CNI_LOG_LEVEL=${CNI_LOG_LEVEL:-info}

die() {
    echo "calyx-install-cni: $*" >&2
    exit 1
}

[ -n "${CNI_NETWORK_CONFIG:-}" ] || die "CNI_NETWORK_CONFIG is empty"
[ -n "${KUBERNETES_NODE_NAME:-}" ] || die "KUBERNETES_NODE_NAME is empty"
[ -n "${ETCD_ENDPOINTS:-}" ] || die "ETCD_ENDPOINTS is empty"
case "$CNI_MTU" in
    '' | *[!0-9]*) die "CNI_MTU=\"$CNI_MTU\" is not a number" ;;
esac

mkdir -p "$CNI_BIN_DIR" "$CNI_NET_DIR"

# Copy $1 from the image to $2 in the host's bin directory, atomically.
install_bin() {
    local src="$SOURCE_DIR/$1" dst="$CNI_BIN_DIR/$2"
    cp "$src" "$dst.calyx-tmp"
    chmod 0755 "$dst.calyx-tmp"
    mv -f "$dst.calyx-tmp" "$dst"
    echo "calyx-install-cni: installed $dst"
}

[ -f "$SOURCE_DIR/calyx-ipam" ] || die "$SOURCE_DIR/calyx-ipam is missing from the image"
install_bin calyx-ipam calyx-ipam
if [ -f "$SOURCE_DIR/calyx-cni" ]; then
    install_bin calyx-cni calyx
else
    echo "calyx-install-cni: no $SOURCE_DIR/calyx-cni in this image; main plugin not installed"
fi
if [ -f "$SOURCE_DIR/portmap" ]; then
    install_bin portmap portmap
fi

# Copy one TLS file (variable name $1, host file name $2); print the host path, or nothing.
tls_file() {
    local path="${!1:-}"
    if [ -z "$path" ]; then
        return 0
    fi
    [ -f "$path" ] || die "$1=$path does not exist"
    if [ ! -s "$path" ]; then
        echo "calyx-install-cni: $1=$path is empty; leaving it out of the CNI config" >&2
        return 0
    fi
    mkdir -p "$CNI_NET_DIR/calyx-tls"
    chmod 0700 "$CNI_NET_DIR/calyx-tls"
    cp "$path" "$CNI_NET_DIR/calyx-tls/$2.calyx-tmp"
    chmod 0600 "$CNI_NET_DIR/calyx-tls/$2.calyx-tmp"
    mv -f "$CNI_NET_DIR/calyx-tls/$2.calyx-tmp" "$CNI_NET_DIR/calyx-tls/$2"
    echo "$HOST_CNI_NET_DIR/calyx-tls/$2"
}

ca=$(tls_file ETCD_CA_CERT_FILE etcd-ca)
cert=$(tls_file ETCD_CERT_FILE etcd-cert)
key=$(tls_file ETCD_KEY_FILE etcd-key)

# Replacements are quoted so that bash 5.2's patsub_replacement never treats '&' in a value as
# "the matched text".
conf=$CNI_NETWORK_CONFIG
conf=${conf//__ETCD_ENDPOINTS__/"$ETCD_ENDPOINTS"}
conf=${conf//__ETCD_CA_CERT_FILE__/"$ca"}
conf=${conf//__ETCD_CERT_FILE__/"$cert"}
conf=${conf//__ETCD_KEY_FILE__/"$key"}
conf=${conf//__KUBERNETES_NODE_NAME__/"$KUBERNETES_NODE_NAME"}
conf=${conf//__CNI_MTU__/"$CNI_MTU"}
conf=${conf//__LOG_LEVEL__/"$CNI_LOG_LEVEL"}
case "$conf" in
    *__[A-Z_]*__*) die "the CNI network config still holds a placeholder: $(grep -o '__[A-Z_]*__' <<<"$conf" | head -n 1)" ;;
esac

printf '%s\n' "$conf" >"$CNI_NET_DIR/$CNI_CONF_NAME.calyx-tmp"
chmod 0644 "$CNI_NET_DIR/$CNI_CONF_NAME.calyx-tmp"
mv -f "$CNI_NET_DIR/$CNI_CONF_NAME.calyx-tmp" "$CNI_NET_DIR/$CNI_CONF_NAME"
echo "calyx-install-cni: wrote $HOST_CNI_NET_DIR/$CNI_CONF_NAME"
