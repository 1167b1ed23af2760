//! Unit tests of the translation from Calico's resources to the speaker's configuration.

#![allow(clippy::field_reassign_with_default)] // Specs are built field by field, as users write them.

use super::plan::{waits_for, MULTIHOP_TTL};
use super::*;
use crate::cluster::ClusterState;
use crate::config::RouterIdSetting;
use crate::secrets::Secrets;
use calyx_datastore::resources::{
    Asn, BGPConfiguration, BGPPeer, BGPPeerSpec, BindMode, CommunityValue, NextHopMode, Node,
    PeerIp, ReversePeering, SourceAddress,
};
use calyx_datastore::resources::{NodeBGPSpec, NodeSpec, ObjectMeta};
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr};

fn node(name: &str, ip: &str, cluster: Option<&str>, labels: &[(&str, &str)]) -> Node {
    let mut meta = ObjectMeta::named(name);
    for (k, v) in labels {
        meta.labels.insert((*k).into(), (*v).into());
    }
    Node {
        metadata: meta,
        spec: NodeSpec {
            bgp: Some(NodeBGPSpec {
                ipv4_address: Some(format!("{ip}/24").parse().unwrap()),
                route_reflector_cluster_id: cluster.map(|c| c.parse().unwrap()),
                ..Default::default()
            }),
            ..Default::default()
        },
        status: None,
        extra: Default::default(),
    }
}

/// A cluster state holding `nodes` (also used by the IPv6 tests).
pub(super) fn cluster(nodes: Vec<Node>) -> ClusterState {
    let mut s = ClusterState::default();
    for n in nodes {
        s.nodes.insert(n.metadata.name.clone(), n);
    }
    s
}

fn addrs(p: &Plan) -> Vec<String> {
    p.peers.keys().map(ToString::to_string).collect()
}

#[test]
fn full_mesh_peers_every_other_node_and_originates_own_blocks() {
    let mut s = cluster(vec![
        node("a", "10.0.0.1", None, &[]),
        node("b", "10.0.0.2", None, &[]),
        node("c", "10.0.0.3", None, &[]),
    ]);
    for (cidr, host) in [("10.65.0.0/26", "a"), ("10.65.1.0/26", "b")] {
        s.affinities.insert(cidr.parse().unwrap(), host.to_string());
    }
    let p = plan(&s, "a", RouterIdSetting::NodeAddress, &Secrets::default()).unwrap();
    assert_eq!(addrs(&p), ["10.0.0.2", "10.0.0.3"]);
    assert!(p
        .peers
        .values()
        .all(|c| c.label == PeerLabel::Mesh && c.remote_as == 64512 && c.port == 179));
    assert_eq!(p.global.router_id.to_string(), "10.0.0.1");
    assert_eq!(
        p.originate
            .keys()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["10.65.0.0/26"]
    );
}

#[test]
fn a_node_originates_the_addresses_it_borrowed_inside_exported_pools() {
    use calyx_datastore::resources::{IPPool, IPPoolSpec};
    let mut s = cluster(vec![
        node("a", "10.0.0.1", None, &[]),
        node("b", "10.0.0.2", None, &[]),
    ]);
    s.pools.insert(
        "p".into(),
        IPPool::new("p", IPPoolSpec::new("10.65.0.0/24".parse().unwrap())),
    );
    s.affinities
        .insert("10.65.0.0/29".parse().unwrap(), "b".to_string());
    s.affinities
        .insert("10.65.0.8/29".parse().unwrap(), "a".to_string());
    // a's workloads: one in its own block, one borrowed from b's, one outside every pool.
    s.local_workloads = ["10.65.0.9", "10.65.0.3", "192.168.7.7"]
        .iter()
        .map(|ip| ip.parse().unwrap())
        .collect();
    let originated = |s: &ClusterState, me: &str| -> Vec<String> {
        plan(s, me, RouterIdSetting::NodeAddress, &Secrets::default())
            .unwrap()
            .originate
            .keys()
            .map(ToString::to_string)
            .collect()
    };
    assert_eq!(originated(&s, "a"), ["10.65.0.3/32", "10.65.0.8/29"]);
    if let Some(p) = s.pools.get_mut("p") {
        p.spec.disable_bgp_export = true;
    }
    assert!(originated(&s, "a").is_empty());
}

#[test]
fn route_reflector_clients_and_no_mesh() {
    let mut s = cluster(vec![
        node("rr", "10.0.0.1", Some("224.0.0.1"), &[("rr", "true")]),
        node("b", "10.0.0.2", None, &[]),
        node("c", "10.0.0.3", None, &[]),
    ]);
    let mut cfg = BGPConfiguration::new("default", Default::default());
    cfg.spec.node_to_node_mesh_enabled = Some(false);
    s.bgp_configs.insert("default".into(), cfg);
    let mut spec = BGPPeerSpec::default();
    spec.node_selector = "all()".into();
    spec.peer_selector = "rr == 'true'".into();
    s.bgp_peers
        .insert("to-rr".into(), BGPPeer::new("to-rr", spec));
    let mut spec = BGPPeerSpec::default();
    spec.node_selector = "rr == 'true'".into();
    spec.peer_selector = "!has(rr)".into();
    s.bgp_peers
        .insert("rr-to-clients".into(), BGPPeer::new("rr-to-clients", spec));

    let client = plan(&s, "b", RouterIdSetting::NodeAddress, &Secrets::default()).unwrap();
    assert_eq!(addrs(&client), ["10.0.0.1"]);
    assert!(!client.peers.values().next().unwrap().route_reflector_client);
    let rr = plan(&s, "rr", RouterIdSetting::NodeAddress, &Secrets::default()).unwrap();
    assert_eq!(addrs(&rr), ["10.0.0.2", "10.0.0.3"]);
    assert!(rr.peers.values().all(|p| p.route_reflector_client));
    assert_eq!(rr.global.cluster_id, Some("224.0.0.1".parse().unwrap()));
}

#[test]
fn one_selector_peer_makes_the_peering_in_both_directions() {
    let mut s = cluster(vec![
        node("rr", "10.0.0.1", Some("224.0.0.1"), &[("rr", "true")]),
        node("b", "10.0.0.2", None, &[]),
        node("c", "10.0.0.3", None, &[]),
    ]);
    let mut cfg = BGPConfiguration::new("default", Default::default());
    cfg.spec.node_to_node_mesh_enabled = Some(false);
    s.bgp_configs.insert("default".into(), cfg);
    let mut spec = BGPPeerSpec::default();
    spec.node_selector = "all()".into();
    spec.peer_selector = "rr == 'true'".into();
    s.bgp_peers
        .insert("to-rr".into(), BGPPeer::new("to-rr", spec));
    let rr = plan(&s, "rr", RouterIdSetting::NodeAddress, &Secrets::default()).unwrap();
    assert_eq!(addrs(&rr), ["10.0.0.2", "10.0.0.3"]);
    assert!(rr.peers.values().all(|p| p.route_reflector_client));
    let b = plan(&s, "b", RouterIdSetting::NodeAddress, &Secrets::default()).unwrap();
    assert_eq!(addrs(&b), ["10.0.0.1"]);
}

#[test]
fn explicit_peers_by_node_selector() {
    let mut s = cluster(vec![
        node("a", "10.0.0.1", None, &[("rack", "r1")]),
        node("b", "10.0.0.2", None, &[("rack", "r2")]),
    ]);
    let mut spec = BGPPeerSpec::default();
    spec.node_selector = "rack == 'r1'".into();
    spec.peer_ip = Some(PeerIp {
        addr: "10.0.0.254".parse().unwrap(),
        port: None,
    });
    spec.as_number = Some(Asn(64513));
    s.bgp_peers.insert("tor".into(), BGPPeer::new("tor", spec));
    let a = plan(&s, "a", RouterIdSetting::NodeAddress, &Secrets::default()).unwrap();
    let tor = &a.peers[&"10.0.0.254".parse::<IpAddr>().unwrap()];
    assert_eq!((tor.remote_as, tor.label), (64513, PeerLabel::NodeSpecific));
    let b = plan(&s, "b", RouterIdSetting::NodeAddress, &Secrets::default()).unwrap();
    assert!(!b
        .peers
        .contains_key(&"10.0.0.254".parse::<IpAddr>().unwrap()));
}

#[test]
fn a_reflector_makes_ibgp_peers_given_by_address_its_clients() {
    let mut s = cluster(vec![
        node("rr", "10.0.0.1", Some("224.0.0.1"), &[("rr", "true")]),
        node("b", "10.0.0.2", None, &[]),
    ]);
    let mut cfg = BGPConfiguration::new("default", Default::default());
    cfg.spec.node_to_node_mesh_enabled = Some(false);
    s.bgp_configs.insert("default".into(), cfg);
    for (name, addr, asn) in [("client", "10.0.9.1", 64512), ("tor", "10.0.9.254", 65000)] {
        let mut spec = BGPPeerSpec::default();
        spec.peer_ip = Some(PeerIp {
            addr: addr.parse().unwrap(),
            port: None,
        });
        spec.as_number = Some(Asn(asn));
        s.bgp_peers.insert(name.into(), BGPPeer::new(name, spec));
    }
    let ip = |a: &str| a.parse::<IpAddr>().unwrap();
    let rr = plan(&s, "rr", RouterIdSetting::NodeAddress, &Secrets::default()).unwrap();
    assert!(
        rr.peers[&ip("10.0.9.1")].route_reflector_client,
        "same AS: a client"
    );
    assert!(
        !rr.peers[&ip("10.0.9.254")].route_reflector_client,
        "eBGP: never"
    );
    // Without a cluster ID the node reflects nothing.
    let b = plan(&s, "b", RouterIdSetting::NodeAddress, &Secrets::default()).unwrap();
    assert!(!b.peers[&ip("10.0.9.1")].route_reflector_client);
}

#[test]
fn router_id_settings() {
    let s = cluster(vec![node("a", "10.0.0.1", None, &[])]);
    let fixed = plan(
        &s,
        "a",
        RouterIdSetting::Fixed("1.2.3.4".parse().unwrap()),
        &Secrets::default(),
    )
    .unwrap();
    assert_eq!(fixed.global.router_id.to_string(), "1.2.3.4");
    let hashed = plan(&s, "a", RouterIdSetting::Hash, &Secrets::default()).unwrap();
    assert_ne!(hashed.global.router_id, Ipv4Addr::UNSPECIFIED);
    assert!(plan(
        &s,
        "missing",
        RouterIdSetting::NodeAddress,
        &Secrets::default()
    )
    .is_none());
}

#[test]
fn node_to_node_sessions_are_one_way_as_calico_makes_them() {
    // Text comparison, as confd's template does: "10.0.0.5" > "10.0.0.10".
    assert!(waits_for(
        "10.0.0.5".parse().unwrap(),
        Some("10.0.0.10".parse().unwrap())
    ));
    assert!(!waits_for(
        "10.0.0.10".parse().unwrap(),
        Some("10.0.0.5".parse().unwrap())
    ));
    assert!(!waits_for("10.0.0.5".parse().unwrap(), None));
    let s = cluster(vec![
        node("a", "10.0.0.1", None, &[]),
        node("b", "10.0.0.2", None, &[]),
    ]);
    let a = plan(&s, "a", RouterIdSetting::NodeAddress, &Secrets::default()).unwrap();
    let b = plan(&s, "b", RouterIdSetting::NodeAddress, &Secrets::default()).unwrap();
    assert!(a.peers.values().all(|p| p.passive), "a waits for b");
    assert!(b.peers.values().all(|p| !p.passive), "b connects to a");
}

fn ip(a: &str) -> IpAddr {
    a.parse().unwrap()
}

fn yaml_peer(yaml: &str) -> BGPPeer {
    serde_yaml_ng::from_str(yaml).unwrap()
}

fn yaml_config(yaml: &str) -> BGPConfiguration {
    serde_yaml_ng::from_str(yaml).unwrap()
}

fn two_nodes() -> ClusterState {
    cluster(vec![
        node("a", "10.0.0.1", None, &[("rack", "r1")]),
        node("b", "10.0.0.2", None, &[("rack", "r2")]),
    ])
}

fn plan_of(s: &ClusterState, me: &str, secrets: &Secrets) -> Plan {
    plan(s, me, RouterIdSetting::NodeAddress, secrets).unwrap()
}

#[test]
fn an_explicit_peer_gets_what_confd_renders_for_it() {
    let mut s = two_nodes();
    s.bgp_peers.insert(
        "tor".into(),
        yaml_peer(
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor}\n\
             spec:\n  peerIP: 10.9.0.1\n  asNumber: 65001\n  maxRestartTime: 30s\n\
             \x20 keepaliveTime: 10s\n  localASNumber: 64600\n  numAllowedLocalASNumbers: 2\n\
             \x20 password: {secretKeyRef: {name: bgp, key: tor}}\n",
        ),
    );
    let secrets = Secrets::with_values(&[("bgp", "tor", "pw")]);
    let p = plan_of(&s, "a", &secrets);
    let tor = &p.peers[&ip("10.9.0.1")];
    assert_eq!(tor.remote_as, 65001);
    assert_eq!(tor.local_as, Some(64600));
    assert_eq!(
        tor.multihop, MULTIHOP_TTL,
        "confd: `multihop` for every BGPPeer"
    );
    assert_eq!(tor.ttl_security, 0);
    assert_eq!(
        tor.local_address,
        Some(ip("10.0.0.1")),
        "sourceAddress UseNodeIP"
    );
    assert_eq!(tor.password.as_deref(), Some("pw"));
    assert_eq!(tor.graceful_restart_time, Some(30));
    assert_eq!(tor.keepalive_time, Some(10));
    assert_eq!(tor.allowed_local_as, 2);
    assert_eq!(tor.label, PeerLabel::Global);
    assert!(!tor.passive && !tor.next_hop_self && !tor.keep_original_next_hop);
    // Without the Secret: the peering stays, without a password (as confd).
    let p = plan_of(&s, "a", &Secrets::default());
    assert_eq!(p.peers[&ip("10.9.0.1")].password, None);
}

#[test]
fn ttl_security_source_address_and_next_hop_modes() {
    let mut s = two_nodes();
    let mut spec = BGPPeerSpec::default();
    spec.peer_ip = Some(PeerIp {
        addr: ip("10.9.0.1"),
        port: Some(1179),
    });
    spec.as_number = Some(Asn(65001));
    spec.ttl_security = Some(2);
    spec.source_address = Some(SourceAddress::None);
    spec.keep_original_next_hop = true;
    s.bgp_peers
        .insert("tor".into(), BGPPeer::new("tor", spec.clone()));
    let tor =
        |s: &ClusterState| plan_of(s, "a", &Secrets::default()).peers[&ip("10.9.0.1")].clone();
    let t = tor(&s);
    assert_eq!((t.ttl_security, t.multihop, t.port), (2, 2, 1179));
    assert_eq!(t.local_address, None);
    assert!(
        t.keep_original_next_hop,
        "legacy keepOriginalNextHop on eBGP"
    );
    // The legacy flag does nothing on iBGP; nextHopMode beats it.
    spec.as_number = Some(Asn(64512));
    s.bgp_peers
        .insert("tor".into(), BGPPeer::new("tor", spec.clone()));
    assert!(!tor(&s).keep_original_next_hop);
    for (mode, nh_self, keep) in [
        (NextHopMode::Self_, true, false),
        (NextHopMode::Keep, false, true),
        (NextHopMode::Auto, false, false),
    ] {
        spec.next_hop_mode = Some(mode);
        s.bgp_peers
            .insert("tor".into(), BGPPeer::new("tor", spec.clone()));
        let t = tor(&s);
        assert_eq!(
            (t.next_hop_self, t.keep_original_next_hop),
            (nh_self, keep),
            "{mode:?}"
        );
    }
}

#[test]
fn the_mesh_uses_the_mesh_password_restart_time_and_each_nodes_listen_port() {
    let mut s = two_nodes();
    s.bgp_configs.insert(
        "default".into(),
        yaml_config(
            "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\n\
             spec:\n  listenPort: 1790\n  nodeMeshMaxRestartTime: 45s\n\
             \x20 nodeMeshPassword: {secretKeyRef: {name: bgp, key: mesh}}\n",
        ),
    );
    s.bgp_configs.insert(
        "node.b".into(),
        yaml_config(
            "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: node.b}\n\
             spec:\n  listenPort: 1791\n",
        ),
    );
    let secrets = Secrets::with_values(&[("bgp", "mesh", "m")]);
    let a = plan_of(&s, "a", &secrets);
    let b = plan_of(&s, "b", &secrets);
    assert_eq!(a.global.listen.unwrap().port(), 1790);
    assert_eq!(
        b.global.listen.unwrap().port(),
        1791,
        "node.b overrides listenPort"
    );
    let to_b = &a.peers[&ip("10.0.0.2")];
    assert_eq!(to_b.port, 1791, "a connects to b's own port");
    assert_eq!(b.peers[&ip("10.0.0.1")].port, 1790);
    assert_eq!(to_b.password.as_deref(), Some("m"));
    assert_eq!(to_b.graceful_restart_time, Some(45));
    assert_eq!(to_b.multihop, MULTIHOP_TTL);
    assert_eq!(to_b.local_address, Some(ip("10.0.0.1")));
    assert_eq!(to_b.label, PeerLabel::Mesh);
}

#[test]
fn bind_mode_node_ip_listens_on_the_node_address() {
    let mut s = two_nodes();
    let mut cfg = BGPConfiguration::new("default", Default::default());
    cfg.spec.bind_mode = Some(BindMode::NodeIP);
    s.bgp_configs.insert("default".into(), cfg);
    let a = plan_of(&s, "a", &Secrets::default());
    assert_eq!(a.global.listen.unwrap().to_string(), "10.0.0.1:179");
    s.bgp_configs.clear();
    let a = plan_of(&s, "a", &Secrets::default());
    assert_eq!(a.global.listen.unwrap().to_string(), "0.0.0.0:179");
}

#[test]
fn a_peer_ip_naming_a_node_makes_the_reverse_peering_unless_manual() {
    let mut s = cluster(vec![
        node("a", "10.0.0.1", None, &[("rack", "r1")]),
        node("b", "10.0.0.2", None, &[("rack", "r1")]),
        node("c", "10.0.0.3", None, &[("rack", "r2")]),
    ]);
    let mut cfg = BGPConfiguration::new("default", Default::default());
    cfg.spec.node_to_node_mesh_enabled = Some(false);
    s.bgp_configs.insert("default".into(), cfg);
    // rack r1 peers with node c by address.
    let mut spec = BGPPeerSpec::default();
    spec.node_selector = "rack == 'r1'".into();
    spec.peer_ip = Some(PeerIp {
        addr: ip("10.0.0.3"),
        port: None,
    });
    spec.as_number = Some(Asn(64512));
    s.bgp_peers
        .insert("to-c".into(), BGPPeer::new("to-c", spec.clone()));
    let c = plan_of(&s, "c", &Secrets::default());
    assert_eq!(
        addrs(&c),
        ["10.0.0.1", "10.0.0.2"],
        "c peers back with rack r1"
    );
    assert!(c.peers.values().all(|p| p.label == PeerLabel::NodeSpecific));
    let a = plan_of(&s, "a", &Secrets::default());
    assert_eq!(addrs(&a), ["10.0.0.3"]);
    spec.reverse_peering = Some(ReversePeering::Manual);
    s.bgp_peers
        .insert("to-c".into(), BGPPeer::new("to-c", spec.clone()));
    assert!(plan_of(&s, "c", &Secrets::default()).peers.is_empty());
    // Another AS than the node's: not that node, no reverse peering.
    spec.reverse_peering = None;
    spec.as_number = Some(Asn(65000));
    s.bgp_peers
        .insert("to-c".into(), BGPPeer::new("to-c", spec));
    assert!(plan_of(&s, "c", &Secrets::default()).peers.is_empty());
}

#[test]
fn a_global_peer_wins_over_a_node_specific_one_to_the_same_address() {
    let mut s = two_nodes();
    for (name, node_sel, asn) in [("a-node", "rack == 'r1'", 65002), ("z-global", "", 65001)] {
        let mut spec = BGPPeerSpec::default();
        spec.node_selector = node_sel.into();
        spec.peer_ip = Some(PeerIp {
            addr: ip("10.9.0.1"),
            port: None,
        });
        spec.as_number = Some(Asn(asn));
        s.bgp_peers.insert(name.into(), BGPPeer::new(name, spec));
    }
    let a = plan_of(&s, "a", &Secrets::default());
    let tor = &a.peers[&ip("10.9.0.1")];
    assert_eq!((tor.remote_as, tor.label), (65001, PeerLabel::Global));
}

#[test]
fn reachable_by_gives_a_static_route_to_the_peer() {
    let mut s = two_nodes();
    let mut spec = BGPPeerSpec::default();
    spec.node = "a".into();
    spec.peer_ip = Some(PeerIp {
        addr: ip("10.9.0.1"),
        port: None,
    });
    spec.as_number = Some(Asn(65001));
    spec.reachable_by = "10.0.0.254".into();
    s.bgp_peers
        .insert("tor".into(), BGPPeer::new("tor", spec.clone()));
    let routes = static_routes(&s, "a");
    assert_eq!(routes.get(&ip("10.9.0.1")), Some(&ip("10.0.0.254")));
    assert!(static_routes(&s, "b").is_empty(), "b has no such peering");
    spec.reachable_by = "fd00::1".into();
    s.bgp_peers
        .insert("tor".into(), BGPPeer::new("tor", spec.clone()));
    assert!(
        static_routes(&s, "a").is_empty(),
        "another family: ignored, as confd"
    );
    spec.reachable_by = "not-an-ip".into();
    s.bgp_peers.insert("tor".into(), BGPPeer::new("tor", spec));
    assert!(static_routes(&s, "a").is_empty());
}

#[test]
fn communities_of_prefix_advertisements_and_the_node_override() {
    let mut s = two_nodes();
    s.affinities
        .insert("10.65.0.0/26".parse().unwrap(), "a".into());
    s.bgp_configs.insert(
        "default".into(),
        yaml_config(
            "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\n\
             spec:\n  serviceClusterIPs: [{cidr: 10.96.0.0/12}]\n\
             \x20 serviceLoadBalancerIPs: [{cidr: 192.0.2.0/28}]\n\
             \x20 communities: [{name: big, value: '64512:300:100'}]\n\
             \x20 prefixAdvertisements:\n\
             \x20 - {cidr: 10.65.0.0/16, communities: [big, '64512:120']}\n\
             \x20 - {cidr: 10.65.0.0/26, communities: ['64512:120', '64512:121']}\n",
        ),
    );
    let a = plan_of(&s, "a", &Secrets::default());
    assert_eq!(
        a.originate[&"10.65.0.0/26".parse::<IpNet>().unwrap()],
        [
            CommunityValue::Large(64512, 300, 100),
            CommunityValue::Standard(64512, 120),
            CommunityValue::Standard(64512, 121)
        ]
    );
    assert!(a.originate[&"10.96.0.0/12".parse::<IpNet>().unwrap()].is_empty());
    assert!(a
        .originate
        .contains_key(&"192.0.2.0/28".parse::<IpNet>().unwrap()));
    // node.a's own prefixAdvertisements replace the cluster's for a.
    s.bgp_configs.insert(
        "node.a".into(),
        yaml_config(
            "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: node.a}\n\
             spec:\n  prefixAdvertisements: [{cidr: 10.65.0.0/16, communities: ['65000:1']}]\n",
        ),
    );
    let a = plan_of(&s, "a", &Secrets::default());
    assert_eq!(
        a.originate[&"10.65.0.0/26".parse::<IpNet>().unwrap()],
        [CommunityValue::Standard(65000, 1)]
    );
    // serviceLoadBalancerAggregation: Disabled: no LoadBalancer range.
    let mut cfg = s.bgp_configs["default"].clone();
    cfg.spec
        .extra
        .insert("serviceLoadBalancerAggregation".into(), "Disabled".into());
    s.bgp_configs.insert("default".into(), cfg);
    let a = plan_of(&s, "a", &Secrets::default());
    assert!(!a
        .originate
        .contains_key(&"192.0.2.0/28".parse::<IpNet>().unwrap()));
}

#[test]
fn a_global_peer_ip_of_a_node_uses_its_listen_port_and_is_one_way() {
    let mut s = two_nodes();
    let mut cfg = BGPConfiguration::new("default", Default::default());
    cfg.spec.node_to_node_mesh_enabled = Some(false);
    s.bgp_configs.insert("default".into(), cfg);
    let mut b_cfg = BGPConfiguration::new("node.b", Default::default());
    b_cfg.spec.listen_port = Some(1791);
    s.bgp_configs.insert("node.b".into(), b_cfg);
    let mut spec = BGPPeerSpec::default();
    spec.peer_ip = Some(PeerIp {
        addr: ip("10.0.0.2"),
        port: None,
    });
    spec.as_number = Some(Asn(64512));
    s.bgp_peers
        .insert("to-b".into(), BGPPeer::new("to-b", spec));
    let a = plan_of(&s, "a", &Secrets::default());
    let to_b = &a.peers[&ip("10.0.0.2")];
    assert_eq!((to_b.port, to_b.passive), (1791, true));
    assert_eq!(to_b.label, PeerLabel::Global);
    // b peers back (reverse peering), connecting to a's port.
    let b = plan_of(&s, "b", &Secrets::default());
    let to_a = &b.peers[&ip("10.0.0.1")];
    assert_eq!((to_a.port, to_a.passive), (179, false));
    assert_eq!(to_a.label, PeerLabel::NodeSpecific);
    assert_eq!(b.global.listen.unwrap().port(), 1791);
}

#[test]
fn the_source_address_is_the_node_address_of_the_peer_family() {
    let mut s = two_nodes();
    if let Some(bgp) = s.nodes.get_mut("a").and_then(|n| n.spec.bgp.as_mut()) {
        bgp.ipv6_address = Some("fd00::1/64".parse().unwrap());
    }
    let mut spec = BGPPeerSpec::default();
    spec.peer_ip = Some(PeerIp {
        addr: ip("fd00::99"),
        port: None,
    });
    spec.as_number = Some(Asn(65001));
    s.bgp_peers.insert("v6".into(), BGPPeer::new("v6", spec));
    let a = plan_of(&s, "a", &Secrets::default());
    assert_eq!(a.peers[&ip("fd00::99")].local_address, Some(ip("fd00::1")));
    let b = plan_of(&s, "b", &Secrets::default());
    assert_eq!(
        b.peers[&ip("fd00::99")].local_address,
        None,
        "b has no IPv6 address"
    );
}

#[test]
fn filters_apply_to_bgppeer_peerings_not_to_the_mesh() {
    use calyx_datastore::resources::{BGPFilter, BGPFilterRule, BGPFilterSpec};
    let mut s = cluster(vec![
        node("a", "10.0.0.1", None, &[("rr", "true")]),
        node("b", "10.0.0.2", None, &[]),
        node("c", "10.0.0.3", None, &[]),
    ]);
    let rule = BGPFilterRule {
        cidr: "10.1.0.0/16".into(),
        match_operator: "In".into(),
        action: "Reject".into(),
        ..Default::default()
    };
    let spec = BGPFilterSpec {
        import_v4: vec![rule.clone()],
        export_v4: vec![rule],
        ..Default::default()
    };
    s.bgp_filters.insert("f".into(), BGPFilter::new("f", spec));
    let mut tor = BGPPeerSpec::default();
    tor.peer_ip = Some(PeerIp {
        addr: "10.0.0.254".parse().unwrap(),
        port: None,
    });
    tor.as_number = Some(Asn(65000));
    tor.filters = vec!["f".into()];
    s.bgp_peers.insert("tor".into(), BGPPeer::new("tor", tor));
    // Every node peers with the node labelled rr (and it back: reverse peering).
    let mut to_rr = BGPPeerSpec::default();
    to_rr.peer_selector = "rr == 'true'".into();
    to_rr.node_selector = "!has(rr)".into();
    to_rr.filters = vec!["f".into(), "missing".into()];
    s.bgp_peers
        .insert("to-rr".into(), BGPPeer::new("to-rr", to_rr));
    let ip = |t: &str| t.parse::<IpAddr>().unwrap();
    let a = plan(&s, "a", RouterIdSetting::NodeAddress, &Secrets::default()).unwrap();
    for addr in ["10.0.0.254", "10.0.0.2", "10.0.0.3"] {
        let p = &a.peers[&ip(addr)];
        assert_eq!(p.import.as_ref().unwrap().rules.len(), 1, "{addr}");
        assert_eq!(p.export.as_ref().unwrap().rules.len(), 1, "{addr}");
    }
    let b = plan(&s, "b", RouterIdSetting::NodeAddress, &Secrets::default()).unwrap();
    assert!(b.peers[&ip("10.0.0.1")].import.is_some());
    // b-c is a mesh peering: no filters, as confd renders the mesh.
    let mesh = &b.peers[&ip("10.0.0.3")];
    assert_eq!(mesh.label, PeerLabel::Mesh);
    assert_eq!((&mesh.import, &mesh.export), (&None, &None));
    // The missing filter is reported on the nodes whose peerings name it.
    let probs = filter_problems(&s, "b");
    assert_eq!(probs.len(), 1, "{probs:?}");
    assert_eq!(probs[0].filter, "missing");
    assert_eq!(probs[0].used_by, ["BGPPeer \"to-rr\""]);
    // Deleting the filter leaves the peerings without policies.
    s.bgp_filters.clear();
    let a = plan(&s, "a", RouterIdSetting::NodeAddress, &Secrets::default()).unwrap();
    assert!(a
        .peers
        .values()
        .all(|p| p.import.is_none() && p.export.is_none()));
}
