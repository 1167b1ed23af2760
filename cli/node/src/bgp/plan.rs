//! The translation of Calico's BGP resources into the speaker's configuration, rule for rule
//! as confd renders them into BIRD (`confd/pkg/backends/calico/client.go` `updatePeersV1`,
//! `bgp_processor.go`, `bird.cfg.template`, `bird_aggr.cfg.template`). Pure: the datastore
//! snapshot and the resolved passwords in, the wanted setup out.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use calyx_bgp::{GlobalConfig, PeerConfig, PeerLabel};
use calyx_datastore::resources::{
    Asn, BGPConfiguration, BGPFilter, BGPPeer, BGPPeerSpec, BindMode, CommunityValue, GoDuration,
    NextHopMode, Node, ReversePeering, SourceAddress, DEFAULT_BGP_CONFIGURATION,
};
use calyx_datastore::selector::Selector;
use ipnet::IpNet;
use tracing::warn;

use crate::cluster::ClusterState;
use crate::config::RouterIdSetting;
use crate::secrets::Secrets;

/// The TTL of BIRD's plain `multihop` (its `multihop` without a number is 64 hops), which
/// confd gives every peering without `ttlSecurity`, mesh included.
pub const MULTIHOP_TTL: u8 = 64;

/// The BGP setup this node should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Router ID, AS, listen address.
    pub global: GlobalConfig,
    /// Peers by address.
    pub peers: BTreeMap<IpAddr, PeerConfig>,
    /// Prefixes to originate, with the communities attached to each (`prefixAdvertisements`).
    pub originate: BTreeMap<IpNet, Vec<CommunityValue>>,
}

fn node_ipv4(node: &Node) -> Option<Ipv4Addr> {
    node.spec
        .bgp
        .as_ref()
        .and_then(|b| b.ipv4_address)
        .map(|n| n.addr())
}

fn node_ipv6(node: &Node) -> Option<Ipv6Addr> {
    node.spec
        .bgp
        .as_ref()
        .and_then(|b| b.ipv6_address)
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

pub(super) fn selects(selector: &str, node: &Node) -> bool {
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
/// greater, compared as text, in each family), so that a mesh never has both ends connecting
/// at once; the same rule here means Calyx and calico-node agree on who connects in a mixed
/// cluster.
pub(super) fn waits_for(peer: IpAddr, me: Option<IpAddr>) -> bool {
    me.is_some_and(|me| peer.to_string() > me.to_string())
}

/// The node's address of `v6`'s family.
fn node_addr(node: &Node, v6: bool) -> Option<IpAddr> {
    if v6 {
        node_ipv6(node).map(IpAddr::V6)
    } else {
        node_ipv4(node).map(IpAddr::V4)
    }
}

/// Whole seconds of a Go duration (rounded, as confd's `math.Round`), within `u16`.
fn seconds(d: &GoDuration) -> u16 {
    u16::try_from(d.0.as_secs_f64().round() as u64).unwrap_or(u16::MAX)
}

/// The cluster's and this node's BGP settings: `default`, and `node.<name>` over it for the
/// fields confd lets a node override (`listenPort`, `prefixAdvertisements`,
/// `logSeverityScreen`); every other field is read from `default` only, as in confd.
struct Settings<'a> {
    global: &'a BGPConfiguration,
    state: &'a ClusterState,
}

impl<'a> Settings<'a> {
    fn new(state: &'a ClusterState, defaults: &'a BGPConfiguration) -> Settings<'a> {
        Settings {
            global: state
                .bgp_configs
                .get(DEFAULT_BGP_CONFIGURATION)
                .unwrap_or(defaults),
            state,
        }
    }

    fn of_node(&self, node: &str) -> Option<&'a BGPConfiguration> {
        self.state.bgp_configs.get(&format!("node.{node}"))
    }

    /// The port `node` listens on: its own `listenPort`, the cluster's, or 179.
    fn listen_port(&self, node: &str) -> u16 {
        self.of_node(node)
            .and_then(|c| c.spec.listen_port)
            .unwrap_or_else(|| self.global.spec.effective_listen_port())
    }

    /// The `prefixAdvertisements` that apply to `node`: its own object's when it has any (with
    /// the communities named in that object), else the cluster's.
    fn advertisements(&self, node: &str) -> &'a BGPConfiguration {
        match self.of_node(node) {
            Some(c) if !c.spec.prefix_advertisements.is_empty() => c,
            _ => self.global,
        }
    }
}

/// The peer settings a BGPPeer gives every peering it makes (confd's
/// `setPeerConfigFieldsFromV3Resource`, the template's constants and its `filters`).
fn peer_fields(
    cfg: &mut PeerConfig,
    spec: &BGPPeerSpec,
    me: &Node,
    secrets: &Secrets,
    filters: &BTreeMap<String, BGPFilter>,
) {
    cfg.password = secrets.password(spec.password.as_ref());
    let policies = super::filters::policies(&spec.filters, filters);
    cfg.import = policies.import;
    cfg.export = policies.export;
    // The node's address of the peer's family (confd uses the IPv6 one for IPv6 peers).
    cfg.local_address = match spec.source_address.unwrap_or_default() {
        SourceAddress::UseNodeIP if cfg.address.is_ipv4() => node_ipv4(me).map(IpAddr::V4),
        SourceAddress::UseNodeIP => node_ipv6(me).map(IpAddr::V6),
        SourceAddress::None => None,
    };
    cfg.graceful_restart_time = spec.max_restart_time.as_ref().map(seconds);
    cfg.keepalive_time = spec.keepalive_time.as_ref().map(seconds);
    cfg.ttl_security = spec.ttl_security.unwrap_or(0);
    // `ttl security on; multihop N` or `ttl security off; multihop`.
    cfg.multihop = if cfg.ttl_security > 0 {
        cfg.ttl_security
    } else {
        MULTIHOP_TTL
    };
    cfg.allowed_local_as = spec
        .num_allowed_local_as_numbers
        .map_or(0, |n| u8::try_from(n).unwrap_or(u8::MAX));
}

/// `nextHopMode` (or, when unset, the deprecated `keepOriginalNextHop`, which confd applies to
/// eBGP peers only).
fn next_hop(cfg: &mut PeerConfig, spec: &BGPPeerSpec, local_as: u32) {
    match spec.next_hop_mode {
        Some(NextHopMode::Self_) => cfg.next_hop_self = true,
        Some(NextHopMode::Keep) => cfg.keep_original_next_hop = true,
        Some(NextHopMode::Auto) => {}
        None => {
            cfg.keep_original_next_hop = spec.keep_original_next_hop && cfg.remote_as != local_as
        }
    }
}

/// Whether the BGPPeer is a global one (neither `node` nor `nodeSelector`).
fn is_global(spec: &BGPPeerSpec) -> bool {
    spec.node.is_empty() && spec.node_selector.is_empty()
}

/// Whether the BGPPeer gives node `name` its peerings.
pub(crate) fn applies_to(spec: &BGPPeerSpec, name: &str, node: &Node) -> bool {
    if !spec.node.is_empty() {
        spec.node == name
    } else if !spec.node_selector.is_empty() {
        selects(&spec.node_selector, node)
    } else {
        true
    }
}

/// The inputs of one plan.
struct Planner<'a> {
    state: &'a ClusterState,
    me: &'a str,
    node: &'a Node,
    my_ip: Option<Ipv4Addr>,
    my_ip6: Option<Ipv6Addr>,
    my_as: u32,
    my_cluster: Option<Ipv4Addr>,
    global_as: Asn,
    settings: Settings<'a>,
    secrets: &'a Secrets,
}

impl Planner<'_> {
    /// A peering with another Calico node as a BGPPeer makes it (`peerSelector`, or the
    /// reverse of a peering; confd's `nodeAsBGPPeers`): the node's address, AS and listen
    /// port, the BGPPeer's session settings. `localASNumber` applies only to `peerIP`
    /// peerings, as in confd.
    /// One peering per family both nodes have an address of (confd renders the IPv4 one
    /// into bird.cfg and the IPv6 one into bird6.cfg).
    fn node_peer(
        &self,
        name: &str,
        other: &Node,
        peer: &BGPPeer,
        label: PeerLabel,
    ) -> Vec<PeerConfig> {
        [false, true]
            .into_iter()
            .filter_map(|v6| self.node_peer_of(name, other, peer, label, v6))
            .collect()
    }

    /// This node's address of `v6`'s family.
    fn my_addr(&self, v6: bool) -> Option<IpAddr> {
        if v6 {
            self.my_ip6.map(IpAddr::V6)
        } else {
            self.my_ip.map(IpAddr::V4)
        }
    }

    /// [`Planner::node_peer`] in one family.
    fn node_peer_of(
        &self,
        name: &str,
        other: &Node,
        peer: &BGPPeer,
        label: PeerLabel,
        v6: bool,
    ) -> Option<PeerConfig> {
        let ip = node_addr(other, v6)?;
        let me = self.my_addr(v6)?;
        if ip == me {
            return None;
        }
        let remote_as = node_as(other, self.global_as);
        let mut cfg = PeerConfig {
            address: ip,
            remote_as,
            port: self.settings.listen_port(name),
            // A reflector treats an iBGP node outside its cluster as its client.
            route_reflector_client: self.my_cluster.is_some()
                && remote_as == self.my_as
                && cluster_id(other) != self.my_cluster,
            label,
            passive: waits_for(ip, Some(me)),
            ..PeerConfig::default()
        };
        peer_fields(
            &mut cfg,
            &peer.spec,
            self.node,
            self.secrets,
            &self.state.bgp_filters,
        );
        next_hop(&mut cfg, &peer.spec, self.my_as);
        Some(cfg)
    }

    /// The peering a BGPPeer with `peerIP` makes (confd's `updatePeersV1`, `peerIP` branch).
    fn ip_peer(&self, peer: &BGPPeer, label: PeerLabel) -> Option<PeerConfig> {
        let spec = &peer.spec;
        let (ip, asn) = (spec.peer_ip.as_ref()?, spec.as_number?);
        if Some(ip.addr) == self.my_addr(ip.addr.is_ipv6()) {
            return None;
        }
        // A Calico node at that address (and AS): connect to its listen port unless the
        // BGPPeer names one.
        let calico_node = self.nodes_at(ip.addr, asn, ip.port).into_iter().next();
        let port = ip
            .port
            .or_else(|| calico_node.map(|n| self.settings.listen_port(n)))
            .unwrap_or(179);
        let local_as = spec.local_as_number.map_or(self.my_as, |a| a.0);
        let mut cfg = PeerConfig {
            address: ip.addr,
            remote_as: asn.0,
            local_as: spec.local_as_number.map(|a| a.0),
            port,
            // As confd (bgp_processor.go): a reflector treats an iBGP peer given by address
            // as its client; such a peer has no cluster ID of its own to compare.
            route_reflector_client: self.my_cluster.is_some() && asn.0 == local_as,
            // confd makes a global peering with another Calico node (any node at that
            // address) one-way like the mesh.
            passive: label == PeerLabel::Global
                && self
                    .state
                    .nodes
                    .values()
                    .any(|n| node_addr(n, ip.addr.is_ipv6()) == Some(ip.addr))
                && waits_for(ip.addr, self.my_addr(ip.addr.is_ipv6())),
            label,
            ..PeerConfig::default()
        };
        peer_fields(
            &mut cfg,
            spec,
            self.node,
            self.secrets,
            &self.state.bgp_filters,
        );
        next_hop(&mut cfg, spec, local_as);
        Some(cfg)
    }

    /// The Calico nodes at `addr` with AS `asn` (and, when `port` is given, listening there
    /// by their own or the cluster's `listenPort`; any port when neither is set): those a
    /// `peerIP` BGPPeer names (confd's `nodesWithIPPortAndAS`).
    fn nodes_at(&self, addr: IpAddr, asn: Asn, port: Option<u16>) -> Vec<&str> {
        let port_matches = |name: &str| {
            let Some(p) = port else { return true };
            self.settings
                .of_node(name)
                .and_then(|c| c.spec.listen_port)
                .or(self.settings.global.spec.listen_port)
                .is_none_or(|l| l == p)
        };
        self.state
            .nodes
            .iter()
            .filter(|(name, n)| {
                node_addr(n, addr.is_ipv6()) == Some(addr)
                    && node_as(n, self.global_as) == asn.0
                    && port_matches(name)
            })
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// The peerings BGPPeer `peer` gives this node directly.
    fn forward(&self, peer: &BGPPeer) -> Vec<PeerConfig> {
        let spec = &peer.spec;
        let Some(node) = self.state.nodes.get(self.me) else {
            return Vec::new();
        };
        if !applies_to(spec, self.me, node) {
            return Vec::new();
        }
        let label = if is_global(spec) {
            PeerLabel::Global
        } else {
            PeerLabel::NodeSpecific
        };
        if spec.peer_ip.is_some() {
            return self.ip_peer(peer, label).into_iter().collect();
        }
        if spec.peer_selector.is_empty() {
            return Vec::new();
        }
        self.state
            .nodes
            .iter()
            .filter(|(name, other)| name.as_str() != self.me && selects(&spec.peer_selector, other))
            .flat_map(|(name, other)| self.node_peer(name, other, peer, label))
            .collect()
    }

    /// The reverse peerings BGPPeer `peer` gives this node: when this node is one the BGPPeer
    /// peers with (by `peerSelector`, or by `peerIP` and `asNumber`), it peers back with every
    /// node the BGPPeer applies to, unless `reversePeering: Manual`.
    fn reverse(&self, peer: &BGPPeer) -> Vec<PeerConfig> {
        let spec = &peer.spec;
        if spec.reverse_peering == Some(ReversePeering::Manual) {
            return Vec::new();
        }
        let Some(node) = self.state.nodes.get(self.me) else {
            return Vec::new();
        };
        let chosen = if !spec.peer_selector.is_empty() {
            selects(&spec.peer_selector, node)
        } else if let (Some(ip), Some(asn)) = (&spec.peer_ip, spec.as_number) {
            self.nodes_at(ip.addr, asn, ip.port).contains(&self.me)
        } else {
            false
        };
        if !chosen {
            return Vec::new();
        }
        self.state
            .nodes
            .iter()
            .filter(|(name, other)| name.as_str() != self.me && applies_to(spec, name, other))
            .flat_map(|(name, other)| self.node_peer(name, other, peer, PeerLabel::NodeSpecific))
            .collect()
    }

    /// The node-to-node mesh (confd's mesh peers): every other node that is not a route
    /// reflector, from its address, AS and listen port, with the mesh password and restart
    /// time of the cluster's BGPConfiguration; one session per family both nodes have an
    /// address of (confd's IPv4 mesh in bird.cfg, its IPv6 mesh between the nodes' IPv6
    /// addresses in bird6.cfg).
    fn mesh(&self) -> Vec<PeerConfig> {
        let spec = &self.settings.global.spec;
        let password = self.secrets.password(spec.node_mesh_password.as_ref());
        let restart = spec.node_mesh_max_restart_time.as_ref().map(seconds);
        let mut peers = Vec::new();
        for (name, other) in &self.state.nodes {
            if name.as_str() == self.me || cluster_id(other).is_some() {
                continue;
            }
            for v6 in [false, true] {
                let (Some(ip), Some(me)) = (node_addr(other, v6), self.my_addr(v6)) else {
                    continue;
                };
                if ip == me {
                    continue;
                }
                peers.push(PeerConfig {
                    address: ip,
                    remote_as: node_as(other, self.global_as),
                    port: self.settings.listen_port(name),
                    local_address: Some(me),
                    password: password.clone(),
                    graceful_restart_time: restart,
                    multihop: MULTIHOP_TTL,
                    passive: waits_for(ip, Some(me)),
                    label: PeerLabel::Mesh,
                    ..PeerConfig::default()
                });
            }
        }
        peers
    }
}

/// What BGP should look like for node `me`; `None` when the node cannot run BGP yet (no
/// Node resource, or no router ID).
pub fn plan(
    state: &ClusterState,
    me: &str,
    router_id: RouterIdSetting,
    secrets: &Secrets,
) -> Option<Plan> {
    let node = state.nodes.get(me)?;
    let defaults = BGPConfiguration::new(DEFAULT_BGP_CONFIGURATION, Default::default());
    let settings = Settings::new(state, &defaults);
    let config = settings.global;
    let global_as = config.spec.effective_as_number();
    let my_ip = node_ipv4(node);
    let id = match router_id {
        RouterIdSetting::Fixed(ip) => ip,
        RouterIdSetting::Hash => hashed_router_id(me),
        RouterIdSetting::NodeAddress => my_ip?,
    };
    let my_ip6 = node_ipv6(node);
    let my_cluster = cluster_id(node);
    // `bindMode: NodeIP`: listen on the node's address only (BIRD `listen bgp address`). A
    // node with an IPv6 address listens on `[::]`, which takes both families (Calico runs
    // one BIRD per family, each on its own address; one socket cannot bind two addresses,
    // so a dual-stack node with `bindMode: NodeIP` listens on all of them).
    let listen_ip = match (config.spec.bind_mode, my_ip, my_ip6) {
        (Some(BindMode::NodeIP), Some(ip), None) => IpAddr::V4(ip),
        (Some(BindMode::NodeIP), None, Some(ip)) => IpAddr::V6(ip),
        (_, _, Some(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let global = GlobalConfig {
        router_id: id,
        local_as: node_as(node, global_as),
        listen: Some(SocketAddr::new(listen_ip, settings.listen_port(me))),
        cluster_id: my_cluster,
        // Calico's BIRD runs its kernel protocol with `merge paths on`: equal best routes
        // from several peers become one ECMP route.
        multipath: true,
        ..GlobalConfig::default()
    };
    let planner = Planner {
        state,
        me,
        node,
        my_ip,
        my_ip6,
        my_as: global.local_as,
        my_cluster,
        global_as,
        settings,
        secrets,
    };

    // As confd: global BGPPeers first, then node-specific ones, then reverse peerings; the
    // first peering to an address wins. An explicit peering replaces the mesh one.
    let mut explicit: BTreeMap<IpAddr, PeerConfig> = BTreeMap::new();
    for global_pass in [true, false] {
        for peer in state.bgp_peers.values() {
            if is_global(&peer.spec) == global_pass {
                for p in planner.forward(peer) {
                    explicit.entry(p.address).or_insert(p);
                }
            }
        }
    }
    for peer in state.bgp_peers.values() {
        for p in planner.reverse(peer) {
            explicit.entry(p.address).or_insert(p);
        }
    }
    let mut peers: BTreeMap<IpAddr, PeerConfig> = BTreeMap::new();
    if config.spec.effective_node_to_node_mesh_enabled() && my_cluster.is_none() {
        peers.extend(planner.mesh().into_iter().map(|p| (p.address, p)));
    }
    peers.extend(explicit);
    // Each session carries its own family only, as Calico's two BIRDs do (bird.cfg peers
    // over IPv4 with IPv4 routes, bird6.cfg over IPv6 with IPv6 routes): IPv6 routes sent
    // over an IPv4 session would need an IPv4-mapped next hop, which routers reject.
    for p in peers.values_mut() {
        p.ipv4 = p.address.is_ipv4();
        p.ipv6 = p.address.is_ipv6();
    }
    crate::bfd::apply(&mut peers, state, node, config);

    Some(Plan {
        global,
        peers,
        originate: originated(state, me, &planner.settings),
    })
}

/// What node `me` originates, with the communities of the `prefixAdvertisements` that cover
/// each prefix (all of them, as confd's `apply_communities` adds every matching rule's).
fn originated(
    state: &ClusterState,
    me: &str,
    settings: &Settings<'_>,
) -> BTreeMap<IpNet, Vec<CommunityValue>> {
    let mut prefixes: BTreeSet<IpNet> = state
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
    prefixes.extend(
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
    let spec = &settings.global.spec;
    prefixes.extend(
        spec.service_cluster_ips
            .iter()
            .chain(&spec.service_external_ips)
            .map(|s| s.cidr),
    );
    // LoadBalancer ranges are advertised whole while `serviceLoadBalancerAggregation` is
    // `Enabled` (the default); when disabled Calico advertises each service's /32 from the
    // Kubernetes API, which Calyx does not read.
    let aggregated = spec
        .extra
        .get("serviceLoadBalancerAggregation")
        .and_then(|v| v.as_str())
        != Some("Disabled");
    if aggregated {
        prefixes.extend(spec.service_load_balancer_ips.iter().map(|s| s.cidr));
    }
    let ads = settings.advertisements(me);
    prefixes
        .into_iter()
        .map(|prefix| {
            let mut communities: Vec<CommunityValue> = Vec::new();
            for ad in &ads.spec.prefix_advertisements {
                if !ad.cidr.contains(&prefix) {
                    continue;
                }
                for c in &ad.communities {
                    let value = CommunityValue::parse(c).or_else(|| {
                        ads.spec
                            .communities
                            .iter()
                            .find(|d| &d.name == c)
                            .and_then(|d| CommunityValue::parse(&d.value))
                    });
                    match value {
                        Some(v) if !communities.contains(&v) => communities.push(v),
                        Some(_) => {}
                        None => warn!(community = %c, cidr = %ad.cidr,
                            "prefixAdvertisements names an undefined community; ignored"),
                    }
                }
            }
            (prefix, communities)
        })
        .collect()
}

/// The static routes `reachableBy` asks for (confd's `bird_aggr` template): for each BGPPeer
/// peering of this node with `reachableBy`, `<peer>/32 via <reachableBy>`, so that a peer on a
/// loopback behind a gateway is reached that way and not over a route learned from itself.
pub fn static_routes(state: &ClusterState, me: &str) -> BTreeMap<IpAddr, IpAddr> {
    let mut routes = BTreeMap::new();
    let Some(node) = state.nodes.get(me) else {
        return routes;
    };
    let mine = [node_addr(node, false), node_addr(node, true)];
    for (name, peer) in &state.bgp_peers {
        let spec = &peer.spec;
        if spec.reachable_by.is_empty() || !applies_to(spec, me, node) {
            continue;
        }
        let Ok(gateway) = spec.reachable_by.parse::<IpAddr>() else {
            warn!(peer = %name, reachable_by = %spec.reachable_by,
                "BGPPeer reachableBy is not an address; no static route");
            continue;
        };
        let targets: Vec<IpAddr> = match &spec.peer_ip {
            Some(ip) => vec![ip.addr],
            None if !spec.peer_selector.is_empty() => state
                .nodes
                .iter()
                .filter(|(n, other)| n.as_str() != me && selects(&spec.peer_selector, other))
                .flat_map(|(_, other)| [node_addr(other, false), node_addr(other, true)])
                .flatten()
                .collect(),
            None => Vec::new(),
        };
        for target in targets {
            // confd refuses a gateway of the other family.
            if target.is_ipv4() == gateway.is_ipv4() && !mine.contains(&Some(target)) {
                routes.entry(target).or_insert(gateway);
            }
        }
    }
    routes
}
