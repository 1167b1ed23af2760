//! BGP for the node daemon (backend `bird`): which peers this node has (full mesh, BGPPeer
//! resources, route reflector clusters), what it originates (its blocks and the service
//! ranges), and the speaker that makes it so, fed to the dataplane as best routes.
//!
//! [`plan`] is pure (the datastore snapshot in, the wanted BGP setup out) and unit-tested;
//! [`Bgp`] applies plans to a running [`Speaker`], restarting it only when the global settings
//! (AS, router ID, listen port) change.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use calyx_bgp::{BestRouteChange, GlobalConfig, PeerConfig, PeerLabel, Speaker, State};
use calyx_datastore::resources::{Asn, BGPConfiguration, Node};
use calyx_datastore::selector::Selector;
use ipnet::IpNet;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::cluster::ClusterState;
use super::config::RouterIdSetting;
use super::status::PeerStatus;
use super::tasks::BEST_ROUTE_FEED;

/// The BGP setup this node should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Router ID, AS, listen address.
    pub global: GlobalConfig,
    /// Peers by address.
    pub peers: BTreeMap<IpAddr, PeerConfig>,
    /// Prefixes to originate.
    pub originate: BTreeSet<IpNet>,
}

fn node_ipv4(node: &Node) -> Option<Ipv4Addr> {
    node.spec
        .bgp
        .as_ref()
        .and_then(|b| b.ipv4_address)
        .map(|n| n.addr())
}

fn node_as(node: &Node, global: Asn) -> u32 {
    node.spec
        .bgp
        .as_ref()
        .and_then(|b| b.as_number)
        .unwrap_or(global)
        .0
}

fn cluster_id(node: &Node) -> Option<Ipv4Addr> {
    node.spec
        .bgp
        .as_ref()
        .and_then(|b| b.route_reflector_cluster_id)
}

fn selects(selector: &str, node: &Node) -> bool {
    match Selector::parse(selector) {
        Ok(s) => s.matches(&node.metadata.labels),
        Err(e) => {
            warn!(%selector, error = %e, "ignoring a BGPPeer with a bad selector");
            false
        }
    }
}

/// A router ID derived from the node name, for nodes without an IPv4 address
/// (`CALICO_ROUTER_ID=hash`): FNV-1a, never 0.0.0.0.
fn hashed_router_id(name: &str) -> Ipv4Addr {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    Ipv4Addr::from(h.max(1))
}

/// Whether this node waits for `peer` to connect instead of connecting itself. Between two
/// nodes Calico's confd makes the session one-way (`passive on` when the peer's address is the
/// greater, compared as text), so that a mesh never has both ends connecting at once; the same
/// rule here means Calyx and calico-node agree on who connects in a mixed cluster.
fn waits_for(peer: Ipv4Addr, me: Option<Ipv4Addr>) -> bool {
    me.is_some_and(|me| peer.to_string() > me.to_string())
}

/// What BGP should look like for node `me`; `None` when the node cannot run BGP yet (no
/// Node resource, or no router ID).
pub fn plan(state: &ClusterState, me: &str, router_id: RouterIdSetting) -> Option<Plan> {
    let node = state.nodes.get(me)?;
    let defaults = BGPConfiguration::new("default", Default::default());
    let config = state.bgp_configs.get("default").unwrap_or(&defaults);
    let global_as = config.spec.effective_as_number();
    let port = config.spec.effective_listen_port();
    let my_ip = node_ipv4(node);
    let id = match router_id {
        RouterIdSetting::Fixed(ip) => ip,
        RouterIdSetting::Hash => hashed_router_id(me),
        RouterIdSetting::NodeAddress => my_ip?,
    };
    let my_cluster = cluster_id(node);
    let global = GlobalConfig {
        router_id: id,
        local_as: node_as(node, global_as),
        listen: Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)),
        cluster_id: my_cluster,
        ..GlobalConfig::default()
    };

    let mut peers: BTreeMap<IpAddr, PeerConfig> = BTreeMap::new();
    let node_peer = |other: &Node, label: PeerLabel| -> Option<PeerConfig> {
        let ip = node_ipv4(other)?;
        // A route reflector treats a node outside its cluster as its client.
        let rr_client = my_cluster.is_some() && cluster_id(other) != my_cluster;
        Some(PeerConfig {
            address: IpAddr::V4(ip),
            remote_as: node_as(other, global_as),
            port,
            route_reflector_client: rr_client,
            label,
            passive: waits_for(ip, my_ip),
            ..PeerConfig::default()
        })
    };
    if config.spec.effective_node_to_node_mesh_enabled() && my_cluster.is_none() {
        for (name, other) in &state.nodes {
            if name == me || cluster_id(other).is_some() {
                continue;
            }
            if let Some(p) = node_peer(other, PeerLabel::Mesh) {
                peers.insert(p.address, p);
            }
        }
    }
    for peer in state.bgp_peers.values() {
        let spec = &peer.spec;
        let applies_to = |name: &str, n: &Node| {
            if !spec.node.is_empty() {
                spec.node == name
            } else if !spec.node_selector.is_empty() {
                selects(&spec.node_selector, n)
            } else {
                true
            }
        };
        let label = if spec.node.is_empty() && spec.node_selector.is_empty() {
            PeerLabel::Global
        } else {
            PeerLabel::NodeSpecific
        };
        // As in Calico, a peering between nodes is set up in both directions: a node chosen by
        // `peerSelector` peers with every node the BGPPeer applies to (so one BGPPeer
        // `nodeSelector: all()`, `peerSelector: route-reflector == 'true'` is enough).
        if !spec.peer_selector.is_empty() && selects(&spec.peer_selector, node) {
            for (name, other) in &state.nodes {
                if name == me || !applies_to(name, other) {
                    continue;
                }
                if let Some(p) = node_peer(other, label) {
                    peers.entry(p.address).or_insert(p);
                }
            }
        }
        if !applies_to(me, node) {
            continue;
        }
        if let (Some(ip), Some(asn)) = (&spec.peer_ip, spec.as_number) {
            if Some(ip.addr) == my_ip.map(IpAddr::V4) {
                continue;
            }
            // As confd (bgp_processor.go): a reflector treats an iBGP peer given by address
            // as its client; such a peer has no cluster ID of its own to compare.
            let rr_client = my_cluster.is_some() && asn.0 == global.local_as;
            peers.insert(
                ip.addr,
                PeerConfig {
                    address: ip.addr,
                    remote_as: asn.0,
                    port: ip.port.unwrap_or(179),
                    keep_original_next_hop: spec.keep_original_next_hop,
                    route_reflector_client: rr_client,
                    ttl_security: spec.ttl_security.unwrap_or(0),
                    allowed_local_as: spec
                        .num_allowed_local_as_numbers
                        .map_or(0, |n| u8::try_from(n).unwrap_or(u8::MAX)),
                    label,
                    ..PeerConfig::default()
                },
            );
        }
        if !spec.peer_selector.is_empty() {
            for (name, other) in &state.nodes {
                if name == me || !selects(&spec.peer_selector, other) {
                    continue;
                }
                if let Some(p) = node_peer(other, label) {
                    peers.insert(p.address, p);
                }
            }
        }
    }

    let mut originate: BTreeSet<IpNet> = state
        .blocks_of(me)
        .filter(|cidr| {
            state
                .pool_of(cidr)
                .is_none_or(|p| !p.spec.disable_bgp_export)
        })
        .collect();
    // Workload addresses of this node outside its own blocks (borrowed from other nodes'
    // blocks, or in a block affine to no node): their /32 (/128), so that longest match takes
    // them past the block owner's route. As Calico's BIRD exports a workload's kernel route:
    // inside a pool that is exported, outside the node's own blocks.
    originate.extend(
        state
            .local_workloads
            .iter()
            .map(|ip| IpNet::from(*ip))
            .filter(|net| {
                state
                    .pool_of(net)
                    .is_some_and(|p| !p.spec.disable_bgp_export)
                    && !state.blocks_of(me).any(|b| b.contains(net))
            }),
    );
    for service in config
        .spec
        .service_cluster_ips
        .iter()
        .chain(&config.spec.service_external_ips)
    {
        originate.insert(service.cidr);
    }
    super::bfd::apply(&mut peers, state, node, config);
    Some(Plan {
        global,
        peers,
        originate,
    })
}

/// The running speaker and what was last handed to it.
pub struct Bgp {
    speaker: Option<Speaker>,
    stop: CancellationToken,
    applied: Option<Plan>,
    /// The global settings the running speaker was started with.
    running_global: Option<GlobalConfig>,
    /// The best-route feed of a speaker started since the last [`Bgp::take_feed`].
    new_feed: Option<mpsc::Receiver<BestRouteChange>>,
    restarting: bool,
    graceful_restart: bool,
    hold_time: u16,
    /// Set when the last [`Bgp::apply`] could not start the speaker or set its peers: the
    /// daemon applies the plan again at this time even if nothing in the datastore changed.
    retry_at: Option<Instant>,
}

/// How soon a failed [`Bgp::apply`] is tried again (e.g. the port still held by a process
/// that is going away).
const APPLY_RETRY: Duration = Duration::from_secs(2);

impl Bgp {
    /// No speaker yet; `restarting` sets the graceful-restart R bit on the first start (we
    /// came back within the restart time and kept our routes).
    /// `hold_time` is offered to every peer.
    pub fn new(
        stop: CancellationToken,
        restarting: bool,
        graceful_restart: bool,
        hold_time: u16,
    ) -> Bgp {
        Bgp {
            speaker: None,
            stop,
            applied: None,
            running_global: None,
            new_feed: None,
            restarting,
            graceful_restart,
            hold_time,
            retry_at: None,
        }
    }

    /// A failed [`Bgp::apply`] is due to be tried again.
    pub fn retry_due(&self) -> bool {
        self.retry_at.is_some_and(|t| Instant::now() >= t)
    }

    /// Makes the speaker match `plan`: a new global setup restarts it; peers and originated
    /// prefixes are changed in place.
    pub async fn apply(&mut self, plan: Plan) {
        if self.applied.as_ref() == Some(&plan) {
            return;
        }
        let restart = match (&self.speaker, &self.running_global) {
            (Some(_), Some(running)) => running != &plan.global,
            _ => true,
        };
        if restart {
            if let Some(old) = self.speaker.take() {
                info!("BGP global settings changed; restarting the speaker");
                old.shutdown(false).await;
            }
            let mut global = plan.global.clone();
            global.restarting = std::mem::take(&mut self.restarting);
            match Speaker::start(global, self.stop.child_token()).await {
                Ok(speaker) => {
                    match speaker.subscribe(BEST_ROUTE_FEED).await {
                        Ok(feed) => self.new_feed = Some(feed),
                        Err(e) => warn!(error = %e, "cannot subscribe to best routes"),
                    }
                    self.speaker = Some(speaker);
                    self.running_global = Some(plan.global.clone());
                    self.applied = None;
                }
                Err(e) => {
                    warn!(error = %e, retry_in = ?APPLY_RETRY, "cannot start the BGP speaker");
                    self.retry_at = Some(Instant::now() + APPLY_RETRY);
                    return;
                }
            }
        }
        let Some(speaker) = &self.speaker else { return };
        let previous = self.applied.take();
        let mut peers: Vec<PeerConfig> = plan.peers.values().cloned().collect();
        for p in &mut peers {
            p.graceful_restart = self.graceful_restart;
            p.hold_time = self.hold_time;
        }
        if previous.as_ref().map(|p| &p.peers) != Some(&plan.peers) {
            if let Err(e) = speaker.set_peers(peers).await {
                warn!(error = %e, retry_in = ?APPLY_RETRY, "cannot update BGP peers");
                self.retry_at = Some(Instant::now() + APPLY_RETRY);
                return;
            }
        }
        let before = previous.map(|p| p.originate).unwrap_or_default();
        for prefix in plan.originate.difference(&before) {
            if let Err(e) = speaker.originate(*prefix, None).await {
                warn!(error = %e, %prefix, "cannot originate");
            }
        }
        for prefix in before.difference(&plan.originate) {
            if let Err(e) = speaker.withdraw(*prefix).await {
                warn!(error = %e, %prefix, "cannot withdraw");
            }
        }
        self.applied = Some(plan);
        self.retry_at = None;
    }

    /// The best-route feed of a newly started speaker, once: the resolver drains it.
    pub fn take_feed(&mut self) -> Option<mpsc::Receiver<BestRouteChange>> {
        self.new_feed.take()
    }

    /// Peers for `calyx node status`.
    pub fn peer_status(&self) -> Vec<PeerStatus> {
        let Some(speaker) = &self.speaker else {
            return Vec::new();
        };
        speaker
            .status()
            .into_iter()
            .map(|s| {
                let rr_client = self
                    .applied
                    .as_ref()
                    .and_then(|p| p.peers.get(&s.address))
                    .is_some_and(|p| p.route_reflector_client);
                PeerStatus {
                    address: s.address.to_string(),
                    peer_type: match (rr_client, s.label) {
                        (true, _) => "route reflector client",
                        (false, PeerLabel::Mesh) => "node-to-node mesh",
                        (false, PeerLabel::Global) => "global",
                        (false, PeerLabel::NodeSpecific) => "node specific",
                    }
                    .to_string(),
                    state: if s.state == State::Established {
                        "up"
                    } else {
                        "start"
                    }
                    .to_string(),
                    info: match &s.last_error {
                        Some(e) if s.state != State::Established => format!("{:?} {e}", s.state),
                        _ => format!("{:?}", s.state),
                    },
                    since: s
                        .since
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                    prefixes_received: s.prefixes_received,
                    prefixes_advertised: s.prefixes_advertised,
                    bfd: s.bfd.map(|b| super::status::BfdStatus {
                        state: b.snapshot.state.to_string(),
                        detect_ms: b.snapshot.detect_time_us / 1000,
                        failures: b.failures,
                    }),
                }
            })
            .collect()
    }

    /// Stops the speaker: with graceful restart, close without a NOTIFICATION so that peers
    /// keep our routes while we restart; otherwise a Cease to every peer.
    pub async fn shutdown(self) {
        if let Some(speaker) = self.speaker {
            speaker.shutdown(self.graceful_restart).await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)] // Specs are built field by field, as users write them.
mod tests {
    use super::*;
    use calyx_datastore::resources::{
        BGPPeer, BGPPeerSpec, NodeBGPSpec, NodeSpec, ObjectMeta, PeerIp,
    };

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

    fn cluster(nodes: Vec<Node>) -> ClusterState {
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
        let p = plan(&s, "a", RouterIdSetting::NodeAddress).unwrap();
        assert_eq!(addrs(&p), ["10.0.0.2", "10.0.0.3"]);
        assert!(p
            .peers
            .values()
            .all(|c| c.label == PeerLabel::Mesh && c.remote_as == 64512 && c.port == 179));
        assert_eq!(p.global.router_id.to_string(), "10.0.0.1");
        assert_eq!(
            p.originate
                .iter()
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
            plan(s, me, RouterIdSetting::NodeAddress)
                .unwrap()
                .originate
                .iter()
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

        let client = plan(&s, "b", RouterIdSetting::NodeAddress).unwrap();
        assert_eq!(addrs(&client), ["10.0.0.1"]);
        assert!(!client.peers.values().next().unwrap().route_reflector_client);
        let rr = plan(&s, "rr", RouterIdSetting::NodeAddress).unwrap();
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
        let rr = plan(&s, "rr", RouterIdSetting::NodeAddress).unwrap();
        assert_eq!(addrs(&rr), ["10.0.0.2", "10.0.0.3"]);
        assert!(rr.peers.values().all(|p| p.route_reflector_client));
        let b = plan(&s, "b", RouterIdSetting::NodeAddress).unwrap();
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
        let a = plan(&s, "a", RouterIdSetting::NodeAddress).unwrap();
        let tor = &a.peers[&"10.0.0.254".parse::<IpAddr>().unwrap()];
        assert_eq!((tor.remote_as, tor.label), (64513, PeerLabel::NodeSpecific));
        let b = plan(&s, "b", RouterIdSetting::NodeAddress).unwrap();
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
        let rr = plan(&s, "rr", RouterIdSetting::NodeAddress).unwrap();
        assert!(
            rr.peers[&ip("10.0.9.1")].route_reflector_client,
            "same AS: a client"
        );
        assert!(
            !rr.peers[&ip("10.0.9.254")].route_reflector_client,
            "eBGP: never"
        );
        // Without a cluster ID the node reflects nothing.
        let b = plan(&s, "b", RouterIdSetting::NodeAddress).unwrap();
        assert!(!b.peers[&ip("10.0.9.1")].route_reflector_client);
    }

    #[test]
    fn router_id_settings() {
        let s = cluster(vec![node("a", "10.0.0.1", None, &[])]);
        let fixed = plan(&s, "a", RouterIdSetting::Fixed("1.2.3.4".parse().unwrap())).unwrap();
        assert_eq!(fixed.global.router_id.to_string(), "1.2.3.4");
        let hashed = plan(&s, "a", RouterIdSetting::Hash).unwrap();
        assert_ne!(hashed.global.router_id, Ipv4Addr::UNSPECIFIED);
        assert!(plan(&s, "missing", RouterIdSetting::NodeAddress).is_none());
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
        let a = plan(&s, "a", RouterIdSetting::NodeAddress).unwrap();
        let b = plan(&s, "b", RouterIdSetting::NodeAddress).unwrap();
        assert!(a.peers.values().all(|p| p.passive), "a waits for b");
        assert!(b.peers.values().all(|p| !p.passive), "b connects to a");
    }
}
