//! Reconciler configuration (Felix's settings of the same meaning).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// Name of the IPIP device.
pub const IPIP_DEVICE: &str = "tunl0";
/// Name of the IPv4 VXLAN device.
pub const VXLAN_V4_DEVICE: &str = "vxlan.calico";
/// Name of the IPv6 VXLAN device.
pub const VXLAN_V6_DEVICE: &str = "vxlan-v6.calico";

/// Static configuration of a [`crate::Reconciler`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Route protocol number that marks the routes this reconciler owns (Felix: 80).
    pub route_protocol: u8,
    /// Routing table it manages (254 = main).
    pub table: u32,
    /// Metric (priority) of its routes; 0 means the kernel default (IPv6 stores 1024).
    pub metric: u32,
    /// The underlay interface; `None` = the interface that holds the node address.
    pub underlay_interface: Option<String>,
    /// MTU of `tunl0`; `None` = underlay MTU − 20.
    pub ipip_mtu: Option<u32>,
    /// MTU of `vxlan.calico`; `None` = underlay MTU − 50.
    pub vxlan_mtu: Option<u32>,
    /// MTU of `vxlan-v6.calico`; `None` = underlay MTU − 70.
    pub vxlan_v6_mtu: Option<u32>,
    /// Full resync period (Felix `routeRefreshInterval`, default 90 s).
    pub route_refresh_interval: Duration,
    /// Preferred source address of the IPv4 unicast routes (Felix
    /// `deviceRouteSourceAddress`); must be an address of this host.
    pub route_src_v4: Option<Ipv4Addr>,
    /// Preferred source address of the IPv6 unicast routes (Felix
    /// `deviceRouteSourceAddressIPv6`).
    pub route_src_v6: Option<Ipv6Addr>,
    /// First retry delay of a failed route; doubled on each failure.
    pub retry_initial: Duration,
    /// Upper bound of the retry delay.
    pub retry_max: Duration,
    /// Route updates that may wait in the queue between the producer and the reconciler;
    /// [`crate::ReconcilerHandle::update_routes`] waits while it is full.
    pub update_queue_limit: usize,
    /// Route writes per pass at most; the rest follow in the next pass, after the
    /// notifications of these writes were read (so that the kernel's buffer for them does not
    /// overflow, which would cost a full resync).
    pub max_writes_per_pass: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            route_protocol: 80,
            table: 254,
            metric: 0,
            underlay_interface: None,
            ipip_mtu: None,
            vxlan_mtu: None,
            vxlan_v6_mtu: None,
            route_refresh_interval: Duration::from_secs(90),
            route_src_v4: None,
            route_src_v6: None,
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(30),
            // Four of the node resolver's batches: enough to keep the writer busy; more only
            // holds memory (each queued update carries its own hop list).
            update_queue_limit: 65_536,
            max_writes_per_pass: 32_768,
        }
    }
}

/// The settings of a [`Config`] that may change while the reconciler runs
/// ([`crate::ReconcilerHandle::set_live`]): FelixConfiguration's `deviceRouteProtocol`,
/// `ipipMTU`, `vxlanMTU`, `vxlanMTUV6`, `routeRefreshInterval` and
/// `deviceRouteSourceAddress` / `deviceRouteSourceAddressIPv6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveConfig {
    /// See [`Config::route_protocol`]. On a change the routes of the old protocol are moved
    /// to the new one (replaced in place, so no gap and no duplicate) or deleted.
    pub route_protocol: u8,
    /// See [`Config::ipip_mtu`].
    pub ipip_mtu: Option<u32>,
    /// See [`Config::vxlan_mtu`].
    pub vxlan_mtu: Option<u32>,
    /// See [`Config::vxlan_v6_mtu`].
    pub vxlan_v6_mtu: Option<u32>,
    /// See [`Config::route_refresh_interval`].
    pub route_refresh_interval: Duration,
    /// See [`Config::route_src_v4`]. A change rewrites the routes whose source differs.
    pub route_src_v4: Option<Ipv4Addr>,
    /// See [`Config::route_src_v6`].
    pub route_src_v6: Option<Ipv6Addr>,
}

impl Config {
    /// The live part of this configuration.
    pub fn live(&self) -> LiveConfig {
        LiveConfig {
            route_protocol: self.route_protocol,
            ipip_mtu: self.ipip_mtu,
            vxlan_mtu: self.vxlan_mtu,
            vxlan_v6_mtu: self.vxlan_v6_mtu,
            route_refresh_interval: self.route_refresh_interval,
            route_src_v4: self.route_src_v4,
            route_src_v6: self.route_src_v6,
        }
    }

    /// Takes the live settings from `live`.
    pub fn set_live(&mut self, live: LiveConfig) {
        self.route_protocol = live.route_protocol;
        self.ipip_mtu = live.ipip_mtu;
        self.vxlan_mtu = live.vxlan_mtu;
        self.vxlan_v6_mtu = live.vxlan_v6_mtu;
        self.route_refresh_interval = live.route_refresh_interval;
        self.route_src_v4 = live.route_src_v4;
        self.route_src_v6 = live.route_src_v6;
    }
}
