//! The DaemonSet's pod spec, run for real: the Calyx image built here by
//! `deploy/build-image.sh` (no registry), and the containers of
//! `deploy/kubernetes/daemonset.yaml` (the manifest itself, read as kubelet reads it) run with
//! podman as kubelet would run them on two nodes: the host network of each node's namespace,
//! the manifest's capabilities and no others, not privileged, no privilege escalation, its env
//! from the ConfigMap and Secrets of `deploy/kubernetes/`, its volumes as host paths of that
//! node, and its probes polled. The init container installs the CNI binaries and config into
//! the node's CNI directories; the daemon, with only NET_ADMIN, NET_RAW and NET_BIND_SERVICE,
//! does its whole job (Node registered, blocks claimed, BGP mesh up, routes programmed, ready),
//! and pods made by podman from those CNI directories reach each other across the nodes. With
//! forwarding off in the host and a read-only /proc/sys, the daemon says so at start-up.
//!
//! The one change to the manifests is the one every user makes: the ConfigMap's
//! `etcd_endpoints` points at the test's etcd (and `image:` at the image built here).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use calyx_tests::cluster::{NodeNs, Underlay};
use calyx_tests::podman::{busybox_image, Podman, BINARIES};
use calyx_tests::wait_until;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every document of every manifest in `deploy/kubernetes/`.
fn manifests() -> Vec<Value> {
    let mut docs = Vec::new();
    for entry in std::fs::read_dir(repo().join("deploy/kubernetes")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            for doc in serde_yaml_ng::Deserializer::from_str(&text) {
                use serde::Deserialize;
                let v = Value::deserialize(doc).unwrap();
                if !v.is_null() {
                    docs.push(v);
                }
            }
        }
    }
    docs
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

/// A Secret's data as files: `data` (base64) and `stringData`.
fn secret_files(secret: &Value) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    if let Some(data) = secret["data"].as_object() {
        for (k, v) in data {
            let mut child = Command::new("base64")
                .arg("-d")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(v.as_str().unwrap_or("").as_bytes())
                .unwrap();
            files.insert(k.clone(), child.wait_with_output().unwrap().stdout);
        }
    }
    if let Some(data) = secret["stringData"].as_object() {
        for (k, v) in data {
            files.insert(k.clone(), v.as_str().unwrap_or("").as_bytes().to_vec());
        }
    }
    files
}

/// What kubelet would give one node: its name, address, host root (host paths live under it,
/// but for the kernel's own `/lib/modules`) and the ConfigMap values after the user's edit.
struct Kubelet<'a> {
    docs: &'a [Value],
    node: &'a NodeNs,
    root: PathBuf,
    config: BTreeMap<String, String>,
    image: String,
}

impl Kubelet<'_> {
    fn host_path(&self, path: &str) -> PathBuf {
        if path == "/lib/modules" {
            return PathBuf::from(path);
        }
        self.root.join(path.trim_start_matches('/'))
    }

    /// `podman run` arguments for one container of the pod spec.
    fn run_args(&self, pod: &Value, container: &Value, name: &str) -> Vec<String> {
        let mut args: Vec<String> = vec!["run".into(), "--name".into(), name.into()];
        assert_eq!(
            pod["hostNetwork"], true,
            "the DaemonSet uses the host network"
        );
        args.push(format!("--network=ns:/run/netns/{}", self.node.ns.name()));
        let sc = &container["securityContext"];
        assert_ne!(sc["privileged"], true, "{name} must not be privileged");
        if sc["allowPrivilegeEscalation"] == false {
            args.push("--security-opt=no-new-privileges".into());
        }
        if let Some(uid) = sc["runAsUser"].as_u64() {
            args.push(format!("--user={uid}"));
        }
        for cap in sc["capabilities"]["drop"].as_array().into_iter().flatten() {
            args.push(format!("--cap-drop={}", cap.as_str().unwrap()));
        }
        for cap in sc["capabilities"]["add"].as_array().into_iter().flatten() {
            args.push(format!("--cap-add={}", cap.as_str().unwrap()));
        }
        for env in container["env"].as_array().into_iter().flatten() {
            let key = env["name"].as_str().unwrap();
            let value = if let Some(v) = env["value"].as_str() {
                Some(v.to_string())
            } else if let Some(r) = env["valueFrom"]["configMapKeyRef"].as_object() {
                assert!(
                    find(self.docs, "ConfigMap", r["name"].as_str().unwrap()).is_some(),
                    "{key}: no ConfigMap {:?}",
                    r["name"]
                );
                let v = self.config.get(r["key"].as_str().unwrap()).cloned();
                assert!(
                    v.is_some() || r.get("optional") == Some(&Value::Bool(true)),
                    "{key}: ConfigMap key {:?} missing",
                    r["key"]
                );
                v
            } else if let Some(f) = env["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some(match f {
                    "spec.nodeName" => self.node.name.clone(),
                    "status.hostIP" => self.node.ip.clone(),
                    other => panic!("{key}: fieldRef {other} not simulated"),
                })
            } else {
                panic!("{key}: env source not simulated: {env}")
            };
            if let Some(v) = value {
                args.push(format!("--env={key}={v}"));
            }
        }
        let volumes: BTreeMap<&str, &Value> = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| (v["name"].as_str().unwrap(), v))
            .collect();
        for m in container["volumeMounts"].as_array().into_iter().flatten() {
            let vname = m["name"].as_str().unwrap();
            let volume = volumes
                .get(vname)
                .unwrap_or_else(|| panic!("mount {vname}: no such volume"));
            let host = if let Some(path) = volume["hostPath"]["path"].as_str() {
                let host = self.host_path(path);
                std::fs::create_dir_all(&host).unwrap();
                host
            } else if let Some(secret) = volume["secret"]["secretName"].as_str() {
                let dir = self.root.join("secrets").join(secret);
                std::fs::create_dir_all(&dir).unwrap();
                let mode = volume["secret"]["defaultMode"].as_u64().unwrap_or(0o644) as u32;
                match find(self.docs, "Secret", secret) {
                    Some(s) => {
                        for (file, bytes) in secret_files(s) {
                            let path = dir.join(file);
                            std::fs::write(&path, bytes).unwrap();
                            use std::os::unix::fs::PermissionsExt;
                            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                                .unwrap();
                        }
                    }
                    None => assert_eq!(
                        volume["secret"]["optional"], true,
                        "secret {secret} missing and not optional"
                    ),
                }
                dir
            } else {
                panic!("volume {vname}: kind not simulated: {volume}");
            };
            let ro = if m["readOnly"] == true { ":ro" } else { "" };
            args.push(format!(
                "--volume={}:{}{ro}",
                host.display(),
                m["mountPath"].as_str().unwrap()
            ));
        }
        args.push(self.image.clone());
        for part in container["command"].as_array().into_iter().flatten() {
            args.push(part.as_str().unwrap().to_string());
        }
        for part in container["args"].as_array().into_iter().flatten() {
            args.push(part.as_str().unwrap().to_string());
        }
        // The command replaces the image's entrypoint, as in Kubernetes.
        if container["command"].is_array() {
            let cmd = args.iter().position(|a| a == &self.image).unwrap() + 1;
            let entry = args.remove(cmd);
            let at = args.iter().position(|a| a == &self.image).unwrap();
            args.insert(at, format!("--entrypoint={entry}"));
        }
        args
    }

    /// One HTTP probe of the container spec, from the node's network namespace: true on 200.
    fn probe(&self, probe: &Value) -> bool {
        let get = &probe["httpGet"];
        let (host, port, path) = (
            get["host"].as_str().unwrap_or("127.0.0.1"),
            get["port"].as_u64().unwrap(),
            get["path"].as_str().unwrap(),
        );
        let script = format!(
            "exec 3<>/dev/tcp/{host}/{port} && printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3"
        );
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                self.node.ns.name(),
                "timeout",
                "5",
                "bash",
                "-c",
            ])
            .arg(&script)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(" 200 ")
    }

    /// How long a probe may keep failing before kubelet gives up on it.
    fn patience(probe: &Value) -> Duration {
        let period = probe["periodSeconds"].as_u64().unwrap_or(10);
        let failures = probe["failureThreshold"].as_u64().unwrap_or(3);
        Duration::from_secs(period * failures)
    }
}

#[test]
fn daemonset_pod_spec_runs_under_podman_with_least_privilege() {
    let test = "daemonset_pod_spec_runs_under_podman_with_least_privilege";
    if !calyx_tests::require_binaries(test, &[BINARIES[0], BINARIES[1], "mmdebstrap"]) {
        return;
    }
    let t = format!("cxds{}", std::process::id() % 10_000);
    let Some(underlay) = Underlay::new(test, &t, "10.78.1") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let local = Podman::new(dir.path(), None, dir.path(), dir.path());

    // The image, built here from the binaries the suite built (no registry, no cargo).
    let image = format!("localhost/calyx-test:{t}");
    let bin_dir = calyx_tests::workspace_binary("calyx")
        .parent()
        .unwrap()
        .to_path_buf();
    let out = Command::new("bash")
        .arg(repo().join("deploy/build-image.sh"))
        .args(["--bin-dir", bin_dir.to_str().unwrap(), "--tag", &image])
        .output()
        .unwrap();
    local.track_image(&image);
    assert!(
        out.status.success(),
        "build-image.sh failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "{}",
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or("")
    );

    let docs = manifests();
    let ds = find(&docs, "DaemonSet", "calyx-node").expect("the DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let cm = find(&docs, "ConfigMap", "calyx-config").expect("the ConfigMap");
    let mut config: BTreeMap<String, String> = cm["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    config.insert("etcd_endpoints".into(), underlay.etcd_endpoint());

    let nodes: Vec<NodeNs> = (1..=2).map(|i| underlay.add_node(i)).collect();
    // Forwarding off in node1 (kubeadm would refuse such a host): the daemon must say it
    // cannot turn it on from its read-only /proc/sys.
    for n in &nodes {
        n.ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
    }
    let kubelets: Vec<Kubelet<'_>> = nodes
        .iter()
        .map(|node| Kubelet {
            docs: &docs,
            node,
            root: dir.path().join(&node.name),
            config: config.clone(),
            image: image.clone(),
        })
        .collect();

    let mut names = Vec::new();
    for k in &kubelets {
        // Init containers run to completion first.
        for (i, c) in pod["initContainers"].as_array().unwrap().iter().enumerate() {
            let name = format!("{t}-{}-init{i}", k.node.name);
            let mut args = k.run_args(pod, c, &name);
            args.insert(1, "--rm".into());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            local.ok(&args);
        }
        for b in ["calyx", "calyx-ipam", "portmap"] {
            assert!(
                k.host_path("/opt/cni/bin").join(b).is_file(),
                "{b} not installed"
            );
        }
        let conflist = k.host_path("/etc/cni/net.d").join("10-calyx.conflist");
        let conf: Value = serde_json::from_str(&std::fs::read_to_string(&conflist).unwrap())
            .expect("install-cni wrote JSON");
        assert_eq!(conf["plugins"][0]["nodename"], k.node.name.as_str());
        // Then the daemon.
        let c = &pod["containers"][0];
        let name = format!("{t}-{}-node", k.node.name);
        local.track_container(&name);
        let mut args = k.run_args(pod, c, &name);
        args.insert(1, "--detach".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        local.ok(&args);
        names.push(name);
    }
    let logs = |i: usize| {
        let out = local.run(&["logs", &names[i]]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let c = &pod["containers"][0];
    for (i, k) in kubelets.iter().enumerate() {
        let started = wait_until(Kubelet::patience(&c["startupProbe"]), || {
            k.probe(&c["startupProbe"])
        });
        assert!(started, "startup probe never passed:\n{}", logs(i));
    }
    // What the daemon could not do, said once at start-up.
    let said = wait_until(Duration::from_secs(10), || {
        logs(0).contains("net.ipv4.ip_forward is 0 and cannot be set here")
    });
    assert!(said, "no clear line about forwarding:\n{}", logs(0));
    // The host's part (kubeadm requires it), then everything works without privileges.
    for n in &nodes {
        n.ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    }
    for (i, k) in kubelets.iter().enumerate() {
        let ready = wait_until(Duration::from_secs(90), || k.probe(&c["readinessProbe"]));
        assert!(ready, "never ready:\n{}", logs(i));
        assert!(k.probe(&c["livenessProbe"]));
    }
    // The container holds the manifest's three capabilities and no others.
    for name in &names {
        let v: Value = serde_json::from_str(&local.ok(&["inspect", name])).unwrap();
        let mut caps: Vec<&str> = v[0]["EffectiveCaps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        caps.sort_unstable();
        assert_eq!(
            caps,
            ["CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW"],
            "{name}"
        );
        assert_eq!(v[0]["HostConfig"]["Privileged"], false);
    }
    // The daemons registered their nodes and route each other's blocks.
    let nodes_table = underlay.calyx(&["get", "nodes"]);
    let text = String::from_utf8_lossy(&nodes_table.stdout);
    assert!(text.contains("node1") && text.contains("node2"), "{text}");
    for (i, n) in nodes.iter().enumerate() {
        let routes = wait_until(Duration::from_secs(60), || {
            n.ns.exec(&["ip", "route", "show", "proto", "80"])
                .lines()
                .any(|l| l.contains(" via "))
        });
        assert!(
            routes,
            "no route to the other node's block on {}:\n{}",
            n.name,
            logs(i)
        );
    }

    // Pods through the CNI directories the init container filled.
    let engines: Vec<Podman> = kubelets
        .iter()
        .map(|k| {
            Podman::new(
                &k.root,
                Some(k.node.ns.name()),
                &k.host_path("/etc/cni/net.d"),
                &k.host_path("/opt/cni/bin"),
            )
        })
        .collect();
    let busybox = format!("localhost/calyx-test-busybox:{t}");
    if busybox_image(&engines[0], dir.path(), &busybox).is_none() {
        return;
    }
    let pods: Vec<String> = (0..2).map(|i| format!("{t}-pod{i}")).collect();
    for (i, p) in pods.iter().enumerate() {
        engines[i].track_container(p);
        engines[i].ok(&[
            "run",
            "-d",
            "--name",
            p,
            "--network",
            "k8s-pod-network",
            &busybox,
            "/bin/sleep",
            "3600",
        ]);
    }
    let ip1: Value = serde_json::from_str(&engines[1].ok(&["inspect", &pods[1]])).unwrap();
    let ip1 = ip1[0]["NetworkSettings"]["Networks"]["k8s-pod-network"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(ip1.starts_with("192.168."), "{ip1}");
    let reach = wait_until(Duration::from_secs(60), || {
        engines[0]
            .run(&["exec", &pods[0], "ping", "-c", "1", "-W", "2", &ip1])
            .status
            .success()
    });
    assert!(
        reach,
        "pod on node1 cannot reach {ip1}:\n{}\n{}",
        logs(0),
        logs(1)
    );
    // Pods first (their CNI DEL), then the daemons, then the image.
    drop(engines);
    drop(local);
}
