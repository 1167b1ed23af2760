//! A datastore that Calico 3.31 wrote, used by Calyx: every object exactly as calico-node,
//! calicoctl and Calico's CNI plugin store them (a Node with `interfaces`, `wireguard`,
//! `status`, labels and annotations; an IPPool with `assignmentMode`; FelixConfiguration;
//! BGPConfiguration with communities; ClusterInformation; a WorkloadEndpoint with `ports`).
//! `calyx get` of each kind, `calyx label`, `calyx patch`, the node daemon's own Node update
//! and a CNI ADD on that node all work, and every field Calyx does not model is still there,
//! as the same JSON value. Then the WorkloadEndpoint lifecycle of `calyx-cni` with kubelet's
//! CNI_ARGS: ADD records it with exactly Calico's fields, `calyx get/label wep` work, a DEL
//! for another container keeps it, the pod's own DEL removes it.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use calyx_tests::cluster::{cni_conf, require_plugins, run_cni, Daemon, Pod, Underlay};
use calyx_tests::wait_until;
use serde_json::{json, Value};

const RES: &str = "/calico/resources/v3/projectcalico.org";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The stored value at `key` as JSON; `None` when absent.
fn stored(u: &Underlay, key: &str) -> Option<Value> {
    let out = u.etcd().etcdctl(&["get", key, "--print-value-only"]);
    let out = out.trim();
    (!out.is_empty()).then(|| serde_json::from_str(out).unwrap())
}

/// `calyx ARGS` in the underlay; panics with its output when it fails.
fn calyx_ok(u: &Underlay, args: &[&str]) -> String {
    let out = u.calyx(args);
    assert!(
        out.status.success(),
        "calyx {args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The objects, as Calico 3.31 stores them (compact JSON, its field order). `ip` is node1's
/// address.
fn calico_objects(ip: &str) -> Vec<(String, Value)> {
    let node = json!({"kind":"Node","apiVersion":"projectcalico.org/v3",
        "metadata":{"name":"node1","uid":"5d1f6f0e-3c1b-4b8e-9a51-0f7d2f0c1a11",
            "creationTimestamp":"2026-11-30T09:12:44Z",
            "labels":{"beta.kubernetes.io/arch":"amd64","beta.kubernetes.io/os":"linux",
                "kubernetes.io/arch":"amd64","kubernetes.io/hostname":"node1","kubernetes.io/os":"linux"},
            "annotations":{"projectcalico.org/kube-labels":"{\"kubernetes.io/hostname\":\"node1\"}"}},
        "spec":{"bgp":{"ipv4Address":format!("{ip}/24")},
            "orchRefs":[{"nodeName":"node1","orchestrator":"k8s"}],
            "wireguard":{"interfaceIPv4Address":"10.244.9.1"},
            "addresses":[{"address":format!("{ip}/24"),"type":"CalicoNodeIP"},{"address":ip,"type":"InternalIP"}],
            "interfaces":[{"name":"eth0","addresses":[ip,"fe80::4c2a:1ff:fe3b:9d10"]},{"name":"lo","addresses":["127.0.0.1","::1"]}]},
        "status":{"wireguardPublicKey":"jZt0v1F1rVw1Jq2Yq8b0Xg3y1ZkT4Qm2T2bM0l0oQmE=","podCIDRs":["10.244.0.0/24"]}});
    let pool = json!({"kind":"IPPool","apiVersion":"projectcalico.org/v3",
        "metadata":{"name":"default-ipv4-ippool","uid":"0c3a8e0e-7d2a-4f5b-8d3e-1b2c3d4e5f60",
            "creationTimestamp":"2026-11-30T09:12:40Z"},
        "spec":{"cidr":"10.244.0.0/16","vxlanMode":"Always","ipipMode":"Never","natOutgoing":true,
            "blockSize":26,"nodeSelector":"all()","allowedUses":["Workload","Tunnel"],
            "assignmentMode":"Automatic"}});
    let felix = json!({"kind":"FelixConfiguration","apiVersion":"projectcalico.org/v3",
        "metadata":{"name":"default","uid":"a1b2c3d4-0000-4000-8000-000000000001",
            "creationTimestamp":"2026-11-30T09:12:41Z"},
        "spec":{"bpfEnabled":false,"bpfLogLevel":"","floatingIPs":"Disabled","healthPort":9099,
            "logSeverityScreen":"Info","reportingInterval":"0s","vxlanVNI":4096,
            "wireguardEnabled":true,"nftablesMode":"Auto"}});
    let bgp = json!({"kind":"BGPConfiguration","apiVersion":"projectcalico.org/v3",
        "metadata":{"name":"default","uid":"b1b2c3d4-0000-4000-8000-000000000002",
            "creationTimestamp":"2026-11-30T09:12:42Z"},
        "spec":{"logSeverityScreen":"Info","nodeToNodeMeshEnabled":true,"asNumber":64512,
            "communities":[{"name":"bgp-large-community","value":"63400:300:100"}],
            "prefixAdvertisements":[{"cidr":"10.244.0.0/16","communities":["bgp-large-community","63400:120"]}],
            "serviceLoadBalancerAggregation":"Enabled","localWorkloadPeeringIPV4":"169.254.0.179"}});
    let ci = json!({"kind":"ClusterInformation","apiVersion":"projectcalico.org/v3",
        "metadata":{"name":"default","uid":"c1b2c3d4-0000-4000-8000-000000000003",
            "creationTimestamp":"2026-11-30T09:12:39Z"},
        "spec":{"clusterGUID":"6e2f0d4c1b8a4f3e9d7c5b3a1f0e2d4c","clusterType":"k8s,bgp,kubeadm",
            "calicoVersion":"v3.31.7","datastoreReady":true,"variant":"Calico"}});
    let wep = json!({"kind":"WorkloadEndpoint","apiVersion":"projectcalico.org/v3",
        "metadata":{"name":"node2-k8s-coredns--7db6d8ff4d--x2x9k-eth0","generateName":"coredns-7db6d8ff4d-",
            "namespace":"kube-system","uid":"d1b2c3d4-0000-4000-8000-000000000004",
            "creationTimestamp":"2026-11-30T09:13:02Z",
            "labels":{"k8s-app":"kube-dns","pod-template-hash":"7db6d8ff4d",
                "projectcalico.org/namespace":"kube-system","projectcalico.org/orchestrator":"k8s",
                "projectcalico.org/serviceaccount":"coredns"}},
        "spec":{"orchestrator":"k8s","node":"node2","containerID":"4f5e6d7c8b9a","pod":"coredns-7db6d8ff4d-x2x9k",
            "endpoint":"eth0","serviceAccountName":"coredns","ipNetworks":["10.244.1.2/32"],
            "profiles":["kns.kube-system","ksa.kube-system.coredns"],"interfaceName":"cali5a3c1f2e9b7",
            "mac":"3e:9a:41:0b:c2:7d",
            "ports":[{"name":"dns","protocol":"UDP","port":53,"hostPort":0,"hostIP":""},
                     {"name":"dns-tcp","protocol":"TCP","port":53,"hostPort":0,"hostIP":""}]}});
    vec![
        (format!("{RES}/nodes/node1"), node),
        (format!("{RES}/ippools/default-ipv4-ippool"), pool),
        (format!("{RES}/felixconfigurations/default"), felix),
        (format!("{RES}/bgpconfigurations/default"), bgp),
        (format!("{RES}/clusterinformations/default"), ci),
        (
            format!(
                "{RES}/workloadendpoints/kube-system/node2-k8s-coredns--7db6d8ff4d--x2x9k-eth0"
            ),
            wep,
        ),
    ]
}

/// Sets `pointer` in `v` to `new`'s value there (a field Calyx is expected to write), or
/// removes it when `new` has none.
fn take(v: &mut Value, new: &Value, pointer: &str) {
    let (parent, field) = pointer.rsplit_once('/').unwrap();
    let target = v.pointer_mut(parent).unwrap().as_object_mut().unwrap();
    match new.pointer(pointer) {
        Some(x) => target.insert(field.to_string(), x.clone()),
        None => target.remove(field),
    };
}

#[test]
fn calico_331_datastore_works_and_loses_nothing() {
    let test = "calico_331_datastore_works_and_loses_nothing";
    let t = format!("cc{}", std::process::id() % 10_000);
    let Some(underlay) = Underlay::new(test, &t, "10.82.1") else {
        return;
    };
    if !require_plugins(test) {
        return;
    }
    let node = underlay.add_node(1);
    let objects = calico_objects(&node.ip);
    for (key, value) in &objects {
        underlay
            .etcd()
            .etcdctl(&["put", key, &serde_json::to_string(value).unwrap()]);
    }
    let original = |i: usize| objects[i].1.clone();

    // `calyx get` of every kind Calyx shows.
    let nodes: Value =
        serde_json::from_str(&calyx_ok(&underlay, &["get", "nodes", "-o", "json"])).unwrap();
    let item = &nodes["items"][0];
    assert_eq!(
        item["spec"]["interfaces"],
        original(0)["spec"]["interfaces"]
    );
    assert_eq!(item["status"], original(0)["status"]);
    let wide = calyx_ok(&underlay, &["get", "nodes", "-o", "wide"]);
    assert!(wide.contains(&format!("{}/24", node.ip)), "{wide}");
    let pools = calyx_ok(&underlay, &["get", "ippools", "-o", "wide"]);
    assert!(pools.contains("10.244.0.0/16"), "{pools}");
    let pool: Value = serde_json::from_str(&calyx_ok(
        &underlay,
        &["get", "ippool", "default-ipv4-ippool", "-o", "json"],
    ))
    .unwrap();
    assert_eq!(pool["spec"]["assignmentMode"], "Automatic");
    let bgp = calyx_ok(&underlay, &["get", "bgpconfig", "default", "-o", "yaml"]);
    assert!(bgp.contains("63400:300:100"), "{bgp}");
    assert!(bgp.contains("localWorkloadPeeringIPV4"), "{bgp}");
    assert_eq!(
        calyx_ok(&underlay, &["get", "felixconfigurations"]),
        "NAME\ndefault\n"
    );
    let mut felix: Value = serde_json::from_str(&calyx_ok(
        &underlay,
        &["get", "felixconfig", "default", "-o", "json"],
    ))
    .unwrap();
    assert!(felix["metadata"]["resourceVersion"].is_string());
    felix["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    assert_eq!(felix, original(2));
    let ci = calyx_ok(&underlay, &["get", "clusterinformation"]);
    assert!(ci.contains("v3.31.7"), "{ci}");
    let weps = calyx_ok(&underlay, &["get", "wep", "-A"]);
    assert!(
        weps.contains("kube-system")
            && weps.contains("coredns-7db6d8ff4d-x2x9k")
            && weps.contains("10.244.1.2/32")
            && weps.contains("cali5a3c1f2e9b7"),
        "{weps}"
    );

    // `calyx label` and `calyx patch`: only the label or the patched field changes.
    calyx_ok(&underlay, &["label", "nodes", "node1", "rack=r1"]);
    let mut expected_node = original(0);
    expected_node["metadata"]["labels"]["rack"] = json!("r1");
    assert_eq!(stored(&underlay, &objects[0].0).unwrap(), expected_node);
    calyx_ok(
        &underlay,
        &[
            "patch",
            "ippool",
            "default-ipv4-ippool",
            "-p",
            r#"{"spec":{"natOutgoing":false}}"#,
        ],
    );
    let mut expected_pool = original(1);
    expected_pool["spec"]
        .as_object_mut()
        .unwrap()
        .remove("natOutgoing");
    let got_pool = stored(&underlay, &objects[1].0).unwrap();
    // Calyx writes the modes and defaults it models explicitly; everything else is Calico's.
    assert_eq!(got_pool, expected_pool);
    calyx_ok(
        &underlay,
        &[
            "label",
            "wep",
            "node2-k8s-coredns--7db6d8ff4d--x2x9k-eth0",
            "-n",
            "kube-system",
            "tier=dns",
        ],
    );
    let mut expected_wep = original(5);
    expected_wep["metadata"]["labels"]["tier"] = json!("dns");
    assert_eq!(stored(&underlay, &objects[5].0).unwrap(), expected_wep);
    // A typo in user input is one clear line; Calico's own fields are accepted.
    let out = underlay.calyx(&[
        "patch",
        "ippool",
        "default-ipv4-ippool",
        "-p",
        r#"{"spec":{"natoutgoing":true}}"#,
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("spec: unknown field `natoutgoing`"),
        "{}",
        text(&out.stderr)
    );
    calyx_ok(
        &underlay,
        &[
            "patch",
            "ippool",
            "default-ipv4-ippool",
            "-p",
            r#"{"spec":{"namespaceSelector":"all()"}}"#,
        ],
    );

    // The daemon updates its own Node (addresses, the VXLAN tunnel address and MAC) and
    // ClusterInformation; nothing else in them changes.
    let daemon = Daemon::start(&underlay, &node, &[("CALICO_NETWORKING_BACKEND", "vxlan")]);
    let written = wait_until(Duration::from_secs(60), || {
        stored(&underlay, &objects[0].0)
            .is_some_and(|n| n["spec"]["ipv4VXLANTunnelAddr"].is_string())
    });
    assert!(
        written,
        "the daemon wrote no tunnel address:\n{}",
        daemon.log()
    );
    let got = stored(&underlay, &objects[0].0).unwrap();
    for pointer in [
        "/spec/ipv4VXLANTunnelAddr",
        "/spec/vxlanTunnelMACAddr",
        "/spec/bgp/ipv4Address",
        "/spec/bgp/asNumber",
    ] {
        take(&mut expected_node, &got, pointer);
    }
    assert_eq!(got, expected_node, "{}", daemon.log());
    assert_eq!(got["spec"]["bgp"]["ipv4Address"], format!("{}/24", node.ip));
    let ci_now = stored(&underlay, &objects[4].0).unwrap();
    let mut expected_ci = original(4);
    take(&mut expected_ci, &ci_now, "/spec/calicoVersion");
    assert_eq!(ci_now, expected_ci);
    for i in [2, 3, 5] {
        let want = if i == 5 {
            expected_wep.clone()
        } else {
            original(i)
        };
        assert_eq!(
            stored(&underlay, &objects[i].0).unwrap(),
            want,
            "{}",
            objects[i].0
        );
    }

    // A CNI ADD on that node works, and touches no Calico field of its Node.
    let pod = Pod::add(&underlay, &node, &format!("{t}-p1"));
    assert!(pod.ip.starts_with("10.244."), "{}", pod.ip);
    assert_eq!(stored(&underlay, &objects[0].0).unwrap(), got);
    // `calyx ipam` reads the same datastore.
    let show = calyx_ok(&underlay, &["ipam", "show", "--show-blocks"]);
    assert!(show.contains("10.244.0.0/16"), "{show}");
    calyx_ok(&underlay, &["ipam", "check"]);
    drop(pod);
    drop(daemon);
}

#[test]
fn cni_records_workload_endpoints_as_calico_does() {
    let test = "cni_records_workload_endpoints_as_calico_does";
    let t = format!("cw{}", std::process::id() % 10_000);
    let Some(underlay) = Underlay::new(test, &t, "10.82.2") else {
        return;
    };
    if !require_plugins(test) {
        return;
    }
    underlay.apply(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.247.0.0/16, vxlanMode: Always}\n",
    );
    let node = underlay.add_node(1);
    // A pod name with dashes: Calico doubles them in the endpoint's name.
    let pod_name = format!("{t}-web-0");
    let pod = Pod::add(&underlay, &node, &pod_name);
    let wep_name = format!("node1-k8s-{}-eth0", pod_name.replace('-', "--"));
    let key = format!("{RES}/workloadendpoints/default/{wep_name}");
    let wep = stored(&underlay, &key).unwrap_or_else(|| {
        panic!(
            "no WorkloadEndpoint at {key}: {}",
            underlay
                .etcd()
                .etcdctl(&["get", "--prefix", "/calico/resources/", "--keys-only"])
        )
    });
    let mac = pod
        .ns
        .exec(&["cat", "/sys/class/net/eth0/address"])
        .trim()
        .to_string();
    let host_if = wep["spec"]["interfaceName"].as_str().unwrap().to_string();
    assert!(host_if.starts_with("cali") && host_if.len() == 15, "{wep}");
    assert!(
        node.ns.try_exec(&["ip", "link", "show", &host_if]),
        "{host_if} is not on the node"
    );
    let meta = wep["metadata"].as_object().unwrap();
    assert!(
        meta["uid"].is_string() && meta["creationTimestamp"].is_string(),
        "{wep}"
    );
    let mut wep_fixed = wep.clone();
    let m = wep_fixed["metadata"].as_object_mut().unwrap();
    m.remove("uid");
    m.remove("creationTimestamp");
    assert_eq!(
        wep_fixed,
        json!({"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
            "metadata": {"name": wep_name, "namespace": "default",
                "labels": {"projectcalico.org/namespace": "default",
                           "projectcalico.org/orchestrator": "k8s"}},
            "spec": {"orchestrator": "k8s", "node": "node1", "containerID": format!("ctr-{pod_name}"),
                "pod": pod_name, "endpoint": "eth0", "ipNetworks": [format!("{}/32", pod.ip)],
                "profiles": ["kns.default"], "interfaceName": host_if, "mac": mac}})
    );

    // calicoctl's table, in the default namespace and across all.
    let table = calyx_ok(&underlay, &["get", "workloadendpoints"]);
    let mut lines = table.lines();
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["WORKLOAD", "NODE", "NETWORKS", "INTERFACE"]
    );
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        [
            pod_name.as_str(),
            "node1",
            &format!("{}/32", pod.ip),
            &host_if
        ]
    );
    let all = calyx_ok(
        &underlay,
        &["get", "weps", "--all-namespaces", "-o", "wide"],
    );
    assert!(all.starts_with("NAMESPACE   NAME"), "{all}");
    assert!(all.contains("kns.default"), "{all}");
    let one: Value = serde_json::from_str(&calyx_ok(
        &underlay,
        &["get", "wep", &wep_name, "-n", "default", "-o", "json"],
    ))
    .unwrap();
    assert_eq!(one["spec"]["containerID"], format!("ctr-{pod_name}"));
    assert!(
        calyx_ok(&underlay, &["get", "wep", "-n", "other"])
            .lines()
            .count()
            == 1
    );

    // Labels: set, then refuse a change without --overwrite, as for the other kinds.
    calyx_ok(
        &underlay,
        &["label", "workloadendpoint", &wep_name, "app=web"],
    );
    assert_eq!(
        stored(&underlay, &key).unwrap()["metadata"]["labels"]["app"],
        "web"
    );
    let out = underlay.calyx(&["label", "wep", &wep_name, "-n", "default", "app=db"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--overwrite"),
        "{}",
        text(&out.stderr)
    );

    // A DEL for another sandbox of the same pod keeps the endpoint (Calico's rule) ...
    let conf = cni_conf(&underlay, &node);
    let out = run_cni(node.ns.name(), "DEL", "ctr-old", &pod_name, &conf);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(stored(&underlay, &key).is_some());
    // ... and the current sandbox's interface.
    assert!(
        node.ns.try_exec(&["ip", "link", "show", &host_if]),
        "a DEL for an old sandbox removed {host_if}"
    );
    // ... the pod's own DEL removes it.
    let out = pod.del();
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(stored(&underlay, &key).is_none());
    assert!(!node.ns.try_exec(&["ip", "link", "show", &host_if]));
    // Idempotent.
    assert!(pod.del().status.success());
}

/// Calico 3.31 YAML as users have it: every field of the API is accepted (and stored as
/// written, modelled or not); a typo is one error line naming it, and writes nothing.
#[test]
fn apply_takes_calico_331_fields_and_refuses_typos() {
    let test = "apply_takes_calico_331_fields_and_refuses_typos";
    let Some(etcd) = calyx_tests::etcd::Etcd::start(test) else {
        return;
    };
    let run = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_calyx"))
            .args(args)
            .env("ETCD_ENDPOINTS", etcd.endpoint())
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let yaml = r#"apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: pool-a
  annotations: {owner: team-a}
spec:
  cidr: 10.250.0.0/16
  blockSize: 26
  vxlanMode: CrossSubnet
  natOutgoing: true
  disableBGPExport: true
  nodeSelector: all()
  namespaceSelector: projectcalico.org/name == 'shop'
  allowedUses: [Workload]
  assignmentMode: Manual
---
apiVersion: projectcalico.org/v3
kind: Node
metadata:
  name: node9
  labels: {rack: r9}
spec:
  bgp: {ipv4Address: 10.9.0.9/24}
  wireguard: {interfaceIPv4Address: 10.250.9.1}
  interfaces:
  - name: eth0
    addresses: [10.9.0.9]
  addresses:
  - {address: 10.9.0.9/24, type: CalicoNodeIP}
status:
  podCIDRs: [10.250.9.0/24]
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec:
  peerIP: 10.9.0.1
  asNumber: 65001
  localASNumber: 64999
  reachableBy: 10.9.0.254
  nextHopMode: Self
  password: {secretKeyRef: {name: bgp, key: pw, optional: true}}
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec:
  communities: [{name: c1, value: "64512:1"}]
  prefixAdvertisements: [{cidr: 10.250.0.0/16, communities: [c1]}]
  serviceLoadBalancerAggregation: Disabled
  localWorkloadPeeringIPV4: 169.254.0.179
---
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec:
  wireguardEnabled: true
  routeTableRanges: [{min: 1, max: 250}]
  healthTimeoutOverrides: [{name: InternalDataplaneMainLoop, timeout: 90s}]
  nftablesMode: Enabled
"#;
    let out = run(&["apply", "-f", "-"], yaml);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let get = |args: &[&str]| -> Value {
        let out = run(args, "");
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let pool = get(&["get", "ippool", "pool-a", "-o", "json"]);
    assert_eq!(
        pool["spec"]["namespaceSelector"],
        "projectcalico.org/name == 'shop'"
    );
    assert_eq!(pool["spec"]["assignmentMode"], "Manual");
    assert_eq!(pool["metadata"]["annotations"]["owner"], "team-a");
    let node = get(&["get", "node", "node9", "-o", "json"]);
    assert_eq!(node["spec"]["interfaces"][0]["name"], "eth0");
    assert_eq!(node["status"]["podCIDRs"][0], "10.250.9.0/24");
    let peer = get(&["get", "bgppeer", "tor", "-o", "json"]);
    assert_eq!(peer["spec"]["localASNumber"], 64999);
    assert_eq!(peer["spec"]["nextHopMode"], "Self");
    let felix = get(&["get", "felixconfig", "default", "-o", "json"]);
    assert_eq!(felix["spec"]["routeTableRanges"][0]["max"], 250);
    assert_eq!(felix["spec"]["nftablesMode"], "Enabled");

    let before = etcd.etcdctl(&["get", "--prefix", "/calico"]);
    for (typo, field) in [
        (
            yaml.replace("namespaceSelector", "namespaceselector"),
            "namespaceselector",
        ),
        (yaml.replace("  interfaces:", "  interface:"), "interface"),
        (yaml.replace("reachableBy", "reachable"), "reachable"),
        (yaml.replace("podCIDRs", "podCidrs"), "podCidrs"),
        (
            yaml.replace("wireguardEnabled", "wireguardEnable"),
            "wireguardEnable",
        ),
    ] {
        let out = run(&["apply", "-f", "-"], &typo);
        assert!(!out.status.success(), "{field} was accepted");
        let stderr = text(&out.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(
            lines[0].contains(&format!("unknown field `{field}`")) && lines[0].contains("line "),
            "{stderr}"
        );
    }
    assert_eq!(etcd.etcdctl(&["get", "--prefix", "/calico"]), before);
}

/// `IPReservation` as calicoctl handles it: apply, get (table `NAME CIDRS`, JSON as written, at
/// Calico's key), typos and bad CIDRs refused, delete.
#[test]
fn ipreservations_apply_get_delete() {
    let test = "ipreservations_apply_get_delete";
    let Some(etcd) = calyx_tests::etcd::Etcd::start(test) else {
        return;
    };
    let run = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_calyx"))
            .args(args)
            .env("ETCD_ENDPOINTS", etcd.endpoint())
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let yaml = "apiVersion: projectcalico.org/v3\nkind: IPReservation\nmetadata: {name: infra}\n\
                spec:\n  reservedCIDRs: [10.0.0.0/30, 10.0.1.7, 'fd00::/126']\n";
    let out = run(&["apply", "-f", "-"], yaml);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key = "/calico/resources/v3/projectcalico.org/ipreservations/infra";
    let stored = etcd.etcdctl(&["get", key, "--print-value-only"]);
    let v: Value = serde_json::from_str(stored.trim()).unwrap();
    assert_eq!(v["kind"], "IPReservation");
    assert_eq!(v["spec"]["reservedCIDRs"][1], "10.0.1.7");
    let out = run(&["get", "ipreservations"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("CIDRS"), "{table}");
    assert!(table.contains("10.0.0.0/30,10.0.1.7,fd00::/126"), "{table}");
    let out = run(&["get", "ipr", "infra", "-o", "json"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["spec"]["reservedCIDRs"][2], "fd00::/126");
    for (bad, want) in [
        (
            yaml.replace("reservedCIDRs", "reservedCidrs"),
            "reservedCidrs",
        ),
        (yaml.replace("10.0.1.7", "10.0.1.300"), "reservedCIDRs[1]"),
    ] {
        let out = run(&["apply", "-f", "-"], &bad);
        assert!(!out.status.success(), "{bad} was accepted");
        assert!(text(&out.stderr).contains(want), "{}", text(&out.stderr));
    }
    let out = run(&["delete", "ipreservation", "infra"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(etcd.etcdctl(&["get", key]).trim().is_empty());
}

/// `calyx get ipamconfigurations` shows IPAM's own record (`/calico/ipam/v2/config`, as Calico
/// writes it) as calicoctl's `IPAMConfiguration` `default`.
#[test]
fn ipamconfigurations_shown_from_ipam_record() {
    let test = "ipamconfigurations_shown_from_ipam_record";
    let Some(etcd) = calyx_tests::etcd::Etcd::start(test) else {
        return;
    };
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_calyx"))
            .args(args)
            .env("ETCD_ENDPOINTS", etcd.endpoint())
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    // Nothing stored: nothing to show, and `default` does not exist.
    let out = run(&["get", "ipamconfigurations"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "NAME\n");
    assert!(!run(&["get", "ipamconfig", "default"]).status.success());
    etcd.etcdctl(&[
        "put",
        "/calico/ipam/v2/config",
        r#"{"strict_affinity":true,"auto_allocate_blocks":true,"maxBlocksPerHost":3}"#,
    ]);
    let out = run(&["get", "ipamconfigurations"]);
    assert_eq!(text(&out.stdout), "NAME\ndefault\n");
    let out = run(&["get", "ipamconfig", "default", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kind"], "IPAMConfiguration");
    assert_eq!(v["spec"]["strictAffinity"], true);
    assert_eq!(v["spec"]["autoAllocateBlocks"], true);
    assert_eq!(v["spec"]["maxBlocksPerHost"], 3);
    assert!(!run(&["get", "ipamconfig", "other"]).status.success());
}

/// `BGPFilter` as calicoctl handles it: apply, get (calicoctl's rule-count columns, JSON as
/// written, at Calico's key), typos and wrong-family CIDRs refused, delete; a filter a newer
/// Calico wrote (fields of its API that 3.31 lacks) keeps them through `calyx label`.
#[test]
fn bgpfilters_apply_get_label_delete() {
    let test = "bgpfilters_apply_get_label_delete";
    let Some(etcd) = calyx_tests::etcd::Etcd::start(test) else {
        return;
    };
    let run = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_calyx"))
            .args(args)
            .env("ETCD_ENDPOINTS", etcd.endpoint())
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let yaml = "apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata: {name: tor}\nspec:\n\
                \x20 importV4:\n  - {action: Accept, matchOperator: In, cidr: 10.0.0.0/8, \
                prefixLength: {min: 16, max: 24}}\n  - {action: Reject}\n\
                \x20 exportV6:\n  - {action: Reject, source: RemotePeers, interface: 'eth*'}\n";
    let out = run(&["apply", "-f", "-"], yaml);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key = format!("{RES}/bgpfilters/tor");
    let stored = etcd.etcdctl(&["get", &key, "--print-value-only"]);
    let v: Value = serde_json::from_str(stored.trim()).unwrap();
    assert_eq!(v["kind"], "BGPFilter");
    assert_eq!(v["spec"]["importV4"][0]["prefixLength"]["max"], 24);
    assert_eq!(v["spec"]["exportV6"][0]["interface"], "eth*");
    let out = run(&["get", "bgpfilters"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec![
                "NAME",
                "NUMEXPORTV4",
                "NUMIMPORTV4",
                "NUMEXPORTV6",
                "NUMIMPORTV6"
            ],
            vec!["tor", "0", "2", "1", "0"]
        ],
        "{table}"
    );
    let out = run(&["get", "bf", "tor", "-o", "json"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["spec"]["importV4"][1], json!({"action": "Reject"}));
    for (bad, want) in [
        (
            yaml.replace("matchOperator", "operator"),
            "unknown field `operator`",
        ),
        (
            yaml.replace("10.0.0.0/8", "fd00::/8"),
            "spec.importV4[0].cidr",
        ),
        (yaml.replace("Accept", "Allow"), "spec.importV4[0].action"),
    ] {
        let out = run(&["apply", "-f", "-"], &bad);
        assert!(!out.status.success(), "{bad} was accepted");
        assert!(text(&out.stderr).contains(want), "{}", text(&out.stderr));
    }
    // A newer Calico's filter: stored leniently, its fields written back unchanged.
    let newer = json!({"kind":"BGPFilter","apiVersion":"projectcalico.org/v3",
        "metadata":{"name":"newer","uid":"0b9c","creationTimestamp":"2026-11-30T09:12:44Z"},
        "spec":{"exportV4":[{"action":"Accept","peerType":"eBGP",
            "operations":[{"addCommunity":{"value":"65000:100"}}]}]}});
    let newer_key = format!("{RES}/bgpfilters/newer");
    etcd.etcdctl(&["put", &newer_key, &newer.to_string()]);
    let out = run(&["label", "bgpfilter", "newer", "team=net"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let after: Value = serde_json::from_str(
        etcd.etcdctl(&["get", &newer_key, "--print-value-only"])
            .trim(),
    )
    .unwrap();
    assert_eq!(after["metadata"]["labels"]["team"], "net");
    assert_eq!(after["spec"], newer["spec"]);
    assert_eq!(after["metadata"]["uid"], "0b9c");
    let out = run(&["delete", "bgpfilter", "tor"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(etcd.etcdctl(&["get", &key]).trim().is_empty());
}
