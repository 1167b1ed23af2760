//! Borrowed addresses end to end: a pool so small that node1 must take addresses from other
//! nodes' blocks (`strictAffinity: false`, Calico's default), pods on those addresses, and
//! pings between them and pods on the two other nodes, in BGP mode and in VXLAN mode, also
//! after the owner of a borrowed-from block restarts its daemon. And `calyx delete node` of a
//! stopped node whose pods borrowed and lent addresses: none of its IPAM keys remain, the other
//! nodes' allocations and pods are untouched.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::time::Duration;

use calyx_tests::cluster::{Cluster, Daemon, Pod};
use calyx_tests::wait_until;
use ipnet::Ipv4Net;

fn tag(test: &str) -> String {
    format!("cxw{}{}", test, std::process::id() % 10_000)
}

/// (block CIDR, affine node) of every block.
fn blocks(c: &Cluster) -> Vec<(Ipv4Net, Option<String>)> {
    c.underlay
        .etcd()
        .etcdctl(&[
            "get",
            "--prefix",
            "--print-value-only",
            "/calico/ipam/v2/assignment/",
        ])
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|b| {
            let cidr = b["cidr"].as_str()?.parse().ok()?;
            let host = b["affinity"]
                .as_str()
                .and_then(|a| a.strip_prefix("host:"))
                .map(str::to_string);
            Some((cidr, host))
        })
        .collect()
}

/// The node whose block holds `ip`.
fn owner_of(c: &Cluster, ip: &str) -> Option<String> {
    let ip: Ipv4Addr = ip.parse().ok()?;
    blocks(c)
        .into_iter()
        .find(|(cidr, _)| cidr.contains(&ip))
        .and_then(|(_, host)| host)
}

/// Pings both ways between every borrowed-address pod and every pod of the other nodes.
fn ping_both_ways(c: &Cluster, borrowed: &[Pod], others: &[(usize, Pod)], what: &str) {
    for b in borrowed {
        for (node, o) in others {
            for (from, to, dir) in [(b, o, "to"), (o, b, "from")] {
                let reached = wait_until(Duration::from_secs(30), || from.ping(&to.ip));
                assert!(
                    reached,
                    "{what}: borrowed {} (node1) {dir} {} (node{}) fails:\n{}\nlogs:\n{}",
                    b.ip,
                    o.ip,
                    node + 1,
                    c.routes(),
                    c.logs()
                );
            }
        }
    }
}

/// A pool of 4 blocks of 4 addresses, 3 nodes (each claims a block at start-up), one pod on
/// node2 and node3, then pods on node1 until two of its addresses are borrowed from the
/// others' blocks.
fn borrowed_reachable(test: &str, t: &str, prefix: &str, pool: &str, env: &[(&str, &str)]) {
    let mut vars = vec![
        ("CALICO_IPV4POOL_CIDR", pool),
        ("CALICO_IPV4POOL_BLOCK_SIZE", "30"),
    ];
    vars.extend_from_slice(env);
    let Some(mut c) = Cluster::start(test, t, prefix, 3, &vars, |_| {}) else {
        return;
    };
    let others: Vec<(usize, Pod)> = (1..3)
        .map(|i| (i, Pod::add(&c.underlay, &c.nodes[i], &format!("{t}-o{i}"))))
        .collect();
    let mut own: Vec<Pod> = Vec::new();
    let mut borrowed: Vec<Pod> = Vec::new();
    for j in 0..14 {
        if borrowed.len() == 2 {
            break;
        }
        let pod = Pod::add(&c.underlay, &c.nodes[0], &format!("{t}-b{j}"));
        if owner_of(&c, &pod.ip).as_deref() == Some("node1") {
            own.push(pod);
        } else {
            borrowed.push(pod);
        }
    }
    assert_eq!(
        borrowed.len(),
        2,
        "node1 never borrowed: blocks {:?}",
        blocks(&c)
    );
    let owners: Vec<String> = borrowed
        .iter()
        .map(|p| owner_of(&c, &p.ip).expect("a borrowed address's block has an owner"))
        .collect();
    assert!(
        owners.iter().all(|o| o != "node1"),
        "borrowed from {owners:?}"
    );
    eprintln!(
        "{test}: node1 borrowed {:?} from {owners:?}",
        borrowed.iter().map(|p| p.ip.as_str()).collect::<Vec<_>>()
    );
    ping_both_ways(&c, &borrowed, &others, "borrowed address");

    // The owner of the first borrowed-from block restarts: its routes are rebuilt from the
    // datastore (VXLAN) or relearned (BGP), and the borrowed address stays reachable.
    let owner = &owners[0];
    let index = c
        .nodes
        .iter()
        .position(|n| &n.name == owner)
        .expect("the owner is a node of the cluster");
    c.daemons[index].stop();
    c.daemons[index] = Daemon::start(&c.underlay, &c.nodes[index], &vars);
    c.wait_up();
    ping_both_ways(&c, &borrowed, &others, "after the block owner restarted");

    // Released: the borrowed /32 leaves the other nodes' tables.
    let gone = borrowed.remove(0);
    let gone_ip = gone.ip.clone();
    drop(gone);
    for (i, n) in c.nodes.iter().enumerate() {
        let left = wait_until(Duration::from_secs(20), || {
            !n.ns
                .exec(&["ip", "route", "show", &format!("{gone_ip}/32")])
                .contains(&gone_ip)
        });
        assert!(
            left,
            "node{}: {gone_ip}/32 still routed:\n{}",
            i + 1,
            c.routes()
        );
    }
    drop(own);
}

#[test]
fn borrowed_addresses_are_reachable_in_bgp_mode() {
    borrowed_reachable(
        "borrowed_addresses_are_reachable_in_bgp_mode",
        &tag("b"),
        "10.82.1",
        "10.182.0.0/28",
        &[("CALICO_NETWORKING_BACKEND", "bird")],
    );
}

#[test]
fn borrowed_addresses_are_reachable_in_vxlan_mode() {
    borrowed_reachable(
        "borrowed_addresses_are_reachable_in_vxlan_mode",
        &tag("v"),
        "10.82.2",
        "10.183.0.0/28",
        &[
            ("CALICO_NETWORKING_BACKEND", "vxlan"),
            ("CALICO_IPV4POOL_VXLAN", "Always"),
        ],
    );
}

/// Every allocation as (address, `node` attribute).
fn allocations(c: &Cluster) -> Vec<(Ipv4Addr, String)> {
    let mut out = Vec::new();
    for b in c.underlay.ipam_blocks() {
        let Some(net) = b["cidr"].as_str().and_then(|c| c.parse::<Ipv4Net>().ok()) else {
            continue;
        };
        for (ordinal, a) in b["allocations"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let Some(index) = a.as_u64() else { continue };
            let node = b["attributes"][usize::try_from(index).unwrap()]["secondary"]["node"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let ip = Ipv4Addr::from(u32::from(net.network()) + u32::try_from(ordinal).unwrap());
            out.push((ip, node));
        }
    }
    out.sort();
    out
}

/// The keys under `/calico/ipam/v2/` that belong to `node`: its affinities and host key, its
/// tunnel handles, blocks affine to it or holding one of its addresses.
fn ipam_keys_of(c: &Cluster, node: &str) -> Vec<String> {
    let dump = c
        .underlay
        .etcd()
        .etcdctl(&["get", "--prefix", "/calico/ipam/v2/"]);
    let lines: Vec<&str> = dump.lines().collect();
    lines
        .chunks(2)
        .filter(|kv| {
            let (key, value) = (kv[0], kv.get(1).copied().unwrap_or_default());
            key.contains(&format!("/host/{node}/"))
                || key.ends_with(&format!("/host/{node}"))
                || key.ends_with(&format!("-addr-{node}"))
                || value.contains(&format!("\"host:{node}\""))
                || value.contains(&format!("\"node\":\"{node}\""))
        })
        .map(|kv| kv[0].to_string())
        .collect()
}

#[test]
fn delete_node_releases_its_ipam_state() {
    let test = "delete_node_releases_its_ipam_state";
    let t = tag("d");
    let vars = [
        ("CALICO_NETWORKING_BACKEND", "vxlan"),
        ("CALICO_IPV4POOL_VXLAN", "Always"),
        ("CALICO_IPV4POOL_CIDR", "10.184.0.0/28"),
        ("CALICO_IPV4POOL_BLOCK_SIZE", "30"),
    ];
    // One block per node: a node whose block is full borrows at once.
    let Some(mut c) = Cluster::start(test, &t, "10.82.3", 3, &vars, |u| {
        let out = u.calyx(&["ipam", "configure", "--max-blocks-per-host", "1"]);
        assert!(out.status.success(), "{out:?}");
    }) else {
        return;
    };
    c.underlay.apply(
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: node3-tor\n\
         spec:\n  node: node3\n  peerIP: 10.82.3.254\n  asNumber: 65001\n---\n\
         apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: all-tor\n\
         spec:\n  peerIP: 10.82.3.253\n  asNumber: 65001\n",
    );
    // Each block holds 4 addresses, one of them its node's VTEP. node3 takes 2 (one left),
    // node2 fills its block, node1 fills its block and borrows the last one, from node3's.
    let node3_pods: Vec<Pod> = (0..2)
        .map(|j| Pod::add(&c.underlay, &c.nodes[2], &format!("{t}-c{j}")))
        .collect();
    let mut kept: Vec<(usize, Pod)> = (0..3)
        .map(|j| (1, Pod::add(&c.underlay, &c.nodes[1], &format!("{t}-b{j}"))))
        .collect();
    kept.extend((0..4).map(|j| (0, Pod::add(&c.underlay, &c.nodes[0], &format!("{t}-a{j}")))));
    let lent = &kept.last().expect("node1's last pod").1.ip;
    assert_eq!(
        owner_of(&c, lent).as_deref(),
        Some("node3"),
        "{:?}",
        blocks(&c)
    );
    let before = allocations(&c);
    let others_before: Vec<_> = before.iter().filter(|(_, n)| n != "node3").collect();
    assert_eq!(
        before.iter().filter(|(_, n)| n == "node3").count(),
        3,
        "node3's pods and VTEP: {before:?}"
    );
    assert!(!ipam_keys_of(&c, "node3").is_empty());

    // node3 stops (its pods stay, as on a node that died), then is deleted.
    c.daemons[2].stop();
    let out = c.calyx_ok(&["delete", "node", "node3"]);
    eprintln!("{test}: {out}");
    assert!(out.contains("Successfully deleted 1"), "{out}");
    // node3's block lost node3's addresses and its affinity, and keeps node1's.
    assert!(out.contains("kept 1 block(s)"), "{out}");
    assert_eq!(owner_of(&c, lent), None, "{:?}", blocks(&c));
    assert_eq!(ipam_keys_of(&c, "node3"), Vec::<String>::new(), "{out}");
    let after = allocations(&c);
    let others_after: Vec<_> = after.iter().collect();
    assert_eq!(
        others_after, others_before,
        "other nodes' allocations untouched"
    );
    c.calyx_ok(&["ipam", "check"]);
    let peers = c.calyx_ok(&["get", "bgppeers"]);
    assert!(
        !peers.contains("node3-tor") && peers.contains("all-tor"),
        "{peers}"
    );
    let nodes = c.calyx_ok(&["get", "nodes"]);
    assert!(!nodes.contains("node3"), "{nodes}");

    // The remaining nodes' pods, including an address borrowed from node3's block (now
    // affine to no node), still reach each other.
    c.all_pairs_ping(&kept, Duration::from_secs(30), "after deleting node3");
    drop(node3_pods);
}
