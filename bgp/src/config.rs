//! Configuration of the speaker and its peers (the shape the node daemon fills in from
//! Calico's BGPConfiguration / BGPPeer / Node resources).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::policy::Policy;

/// Global settings of a [`crate::Speaker`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GlobalConfig {
    /// BGP identifier.
    pub router_id: Ipv4Addr,
    /// Local AS number.
    pub local_as: u32,
    /// Where to accept connections; `None` for no listener (active-only peers).
    pub listen: Option<SocketAddr>,
    /// Route reflector cluster ID; `None` means the router ID. Only used when at least one peer
    /// is a route reflector client.
    pub cluster_id: Option<Ipv4Addr>,
    /// Install several equal best routes (ECMP); subscribers then see several next hops.
    pub multipath: bool,
    /// Advertise the graceful restart capability with this restart time (seconds, at most
    /// 4095); 0 disables graceful restart on all peers.
    pub graceful_restart_time: u16,
    /// This process is a restart of a speaker whose routes peers still hold (sets the R bit
    /// and the forwarding-state bits, RFC 4724 §3), and route selection is deferred until the
    /// peers' End-of-RIB (RFC 4724 §4.1).
    pub restarting: bool,
    /// When restarting, the longest route selection waits for End-of-RIB from every peer
    /// (seconds; the Selection_Deferral_Timer of RFC 4724 §4.1).
    pub selection_deferral_time: u16,
    /// IPv4 next hop to announce for IPv4 routes on IPv6 sessions (default: the router ID).
    pub next_hop_v4: Option<Ipv4Addr>,
    /// IPv6 next hop to announce for IPv6 routes on IPv4 sessions (default: the IPv4-mapped
    /// address of the session's local address).
    pub next_hop_v6: Option<Ipv6Addr>,
}

impl Default for GlobalConfig {
    fn default() -> Self {
        GlobalConfig {
            router_id: Ipv4Addr::UNSPECIFIED,
            local_as: 64512,
            listen: None,
            cluster_id: None,
            multipath: false,
            graceful_restart_time: 120,
            restarting: false,
            selection_deferral_time: 60,
            next_hop_v4: None,
            next_hop_v6: None,
        }
    }
}

/// How a peer is labelled in status output (Calico's "Node-to-node mesh", "Global", "Node
/// specific").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PeerLabel {
    /// A node-to-node mesh peer.
    #[default]
    Mesh,
    /// A global BGPPeer.
    Global,
    /// A node-specific BGPPeer.
    NodeSpecific,
}

/// One BGP neighbour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PeerConfig {
    /// The neighbour's address (identifies the peer).
    pub address: IpAddr,
    /// Its AS number; equal to the local AS for iBGP.
    pub remote_as: u32,
    /// The AS this speaker presents to this peer instead of the global one (BIRD `local as`,
    /// Calico's `localASNumber`).
    pub local_as: Option<u32>,
    /// TCP port to connect to (default 179).
    pub port: u16,
    /// Source address for outgoing connections (also the next-hop-self address).
    pub local_address: Option<IpAddr>,
    /// TCP MD5 signature password (RFC 2385).
    pub password: Option<String>,
    /// Never connect; only accept.
    pub passive: bool,
    /// The peer is a route reflector client of ours (RFC 4456).
    pub route_reflector_client: bool,
    /// Always set the next hop to our address, also on iBGP.
    pub next_hop_self: bool,
    /// Never change the next hop, also on eBGP (Calico's `keepOriginalNextHop`).
    pub keep_original_next_hop: bool,
    /// Offer graceful restart to this peer (needs a non-zero global restart time).
    pub graceful_restart: bool,
    /// Proposed hold time in seconds (0 or at least 3).
    pub hold_time: u16,
    /// Seconds between KEEPALIVEs; `None` is a third of the negotiated hold time, and a longer
    /// value is cut to that (BIRD `keepalive time`, Calico's `keepaliveTime`).
    pub keepalive_time: Option<u16>,
    /// Restart time announced to this peer in the graceful restart capability instead of the
    /// global one (BIRD `graceful restart time`, Calico's `maxRestartTime`).
    pub graceful_restart_time: Option<u16>,
    /// Seconds between connection attempts.
    pub connect_retry: u16,
    /// GTSM (RFC 5082): only accept packets with TTL 255 - hops + 1 or more; 0 = off.
    pub ttl_security: u8,
    /// eBGP multihop TTL; 0 = directly connected (TTL 1 for eBGP).
    pub multihop: u8,
    /// Maximum number of prefixes accepted; exceeding it sends Cease/1.
    pub max_prefixes: Option<u32>,
    /// After a max-prefix shutdown, restart the session after this many seconds (0 = stay down
    /// until reconfigured).
    pub max_prefixes_restart: u32,
    /// How many times our own AS may appear in a received AS_PATH (`numAllowedLocalASNumbers`).
    pub allowed_local_as: u8,
    /// Import policy; `None` accepts everything.
    pub import: Option<Policy>,
    /// Export policy; `None` is Calico's default (what this node originates, and what it
    /// reflects as a route reflector).
    pub export: Option<Policy>,
    /// Families to offer.
    pub ipv4: bool,
    /// Offer IPv6 unicast.
    pub ipv6: bool,
    /// Label shown in status output.
    pub label: PeerLabel,
    /// Run BFD with the peer (RFC 5880/5881 single hop) and take the session down at once
    /// when BFD detects a failure (RFC 5882); `None` relies on the hold timer alone.
    pub bfd: Option<BfdSettings>,
}

/// BFD timers of a peer (Calico Enterprise's names and defaults: 300 ms x 3, a failure is
/// detected within 900 ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BfdSettings {
    /// Desired minimum transmit interval, ms.
    pub min_tx_ms: u32,
    /// Required minimum receive interval, ms.
    pub min_rx_ms: u32,
    /// Detect multiplier (at least 1).
    pub multiplier: u8,
}

impl Default for BfdSettings {
    fn default() -> Self {
        BfdSettings {
            min_tx_ms: 300,
            min_rx_ms: 300,
            multiplier: 3,
        }
    }
}

impl BfdSettings {
    /// The timers of the BFD session.
    pub fn timers(&self) -> calyx_bfd::Timers {
        calyx_bfd::Timers {
            desired_min_tx: Duration::from_millis(u64::from(self.min_tx_ms.max(1))),
            required_min_rx: Duration::from_millis(u64::from(self.min_rx_ms.max(1))),
            detect_mult: self.multiplier.max(1),
        }
    }
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            remote_as: 0,
            local_as: None,
            port: 179,
            local_address: None,
            password: None,
            passive: false,
            route_reflector_client: false,
            next_hop_self: false,
            keep_original_next_hop: false,
            graceful_restart: true,
            hold_time: 90,
            keepalive_time: None,
            graceful_restart_time: None,
            connect_retry: 5,
            ttl_security: 0,
            multihop: 0,
            max_prefixes: None,
            max_prefixes_restart: 0,
            allowed_local_as: 0,
            import: None,
            export: None,
            ipv4: true,
            ipv6: true,
            label: PeerLabel::Mesh,
            bfd: None,
        }
    }
}

/// How a peer's configuration changed, and so what applying it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigChange {
    /// Nothing changed.
    None,
    /// Only what the RIB (or the BFD task) applies changed: no new session is needed.
    /// `import`: what we accept changed (the peer must send its routes again); `export`:
    /// what we send changed.
    Soft {
        /// Import-side settings changed.
        import: bool,
        /// Export-side settings changed.
        export: bool,
    },
    /// A session setting changed (address, AS, transport, timers, capabilities).
    Reset,
}

impl ConfigChange {
    /// Classify the change from `old` to `new`.
    pub fn between(old: &PeerConfig, new: &PeerConfig) -> ConfigChange {
        if old == new {
            return ConfigChange::None;
        }
        let import = old.import != new.import || old.allowed_local_as != new.allowed_local_as;
        let export = old.export != new.export
            || old.route_reflector_client != new.route_reflector_client
            || old.next_hop_self != new.next_hop_self
            || old.keep_original_next_hop != new.keep_original_next_hop;
        // Everything else equal (limits and the label need nothing but the new values)?
        let soft_fields = |c: &PeerConfig| PeerConfig {
            import: None,
            export: None,
            allowed_local_as: 0,
            route_reflector_client: false,
            next_hop_self: false,
            keep_original_next_hop: false,
            max_prefixes: None,
            max_prefixes_restart: 0,
            label: PeerLabel::Mesh,
            // BFD runs beside the session: the peer task switches it on, off or to new
            // timers without a new BGP session.
            bfd: None,
            ..c.clone()
        };
        if soft_fields(old) != soft_fields(new) {
            return ConfigChange::Reset;
        }
        ConfigChange::Soft { import, export }
    }
}

impl PeerConfig {
    /// A peer with defaults for everything else.
    pub fn new(address: IpAddr, remote_as: u32) -> Self {
        PeerConfig {
            address,
            remote_as,
            ..Default::default()
        }
    }

    /// The AS presented to this peer: its own [`PeerConfig::local_as`], or `global`.
    pub fn effective_local_as(&self, global: u32) -> u32 {
        self.local_as.unwrap_or(global)
    }

    /// The connect-retry interval.
    pub fn connect_retry_time(&self) -> Duration {
        Duration::from_secs(u64::from(self.connect_retry.max(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    #[test]
    fn policy_changes_are_soft_session_changes_reset() {
        let old = PeerConfig::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 65001);
        assert_eq!(ConfigChange::between(&old, &old), ConfigChange::None);
        let mut new = old.clone();
        new.export = Some(Policy::accept_all());
        assert_eq!(
            ConfigChange::between(&old, &new),
            ConfigChange::Soft {
                import: false,
                export: true
            }
        );
        new.import = Some(Policy::accept_all());
        assert_eq!(
            ConfigChange::between(&old, &new),
            ConfigChange::Soft {
                import: true,
                export: true
            }
        );
        let mut lim = old.clone();
        lim.max_prefixes = Some(10);
        lim.label = PeerLabel::Global;
        assert_eq!(
            ConfigChange::between(&old, &lim),
            ConfigChange::Soft {
                import: false,
                export: false
            }
        );
        let mut bfd = old.clone();
        bfd.bfd = Some(BfdSettings::default());
        assert_eq!(
            ConfigChange::between(&old, &bfd),
            ConfigChange::Soft {
                import: false,
                export: false
            }
        );
        for change in [
            |c: &mut PeerConfig| c.remote_as = 65002,
            |c: &mut PeerConfig| c.hold_time = 30,
            |c: &mut PeerConfig| c.password = Some("x".into()),
            |c: &mut PeerConfig| c.ipv6 = false,
            |c: &mut PeerConfig| c.local_as = Some(65009),
            |c: &mut PeerConfig| c.keepalive_time = Some(5),
            |c: &mut PeerConfig| c.graceful_restart_time = Some(30),
        ] {
            let mut n = new.clone();
            change(&mut n);
            assert_eq!(ConfigChange::between(&old, &n), ConfigChange::Reset);
        }
    }
}
