//! Tunnel MTU auto-detection, as Calico does it: underlay MTU minus the encapsulation overhead.

/// IPIP header overhead (outer IPv4 header).
pub const IPIP_OVERHEAD: u32 = 20;
/// VXLAN over IPv4 overhead (outer IPv4 + UDP + VXLAN + inner Ethernet).
pub const VXLAN_V4_OVERHEAD: u32 = 50;
/// VXLAN over IPv6 overhead (outer IPv6 + UDP + VXLAN + inner Ethernet).
pub const VXLAN_V6_OVERHEAD: u32 = 70;
/// Smallest MTU ever proposed (IPv6 minimum link MTU).
pub const MIN_MTU: u32 = 1280;

/// The MTU to give a tunnel: the configured one, or the underlay's minus `overhead`
/// (never below [`MIN_MTU`] for VXLAN v6 nor below 576 otherwise), or 1500 − overhead when the
/// underlay MTU is unknown.
pub fn tunnel_mtu(configured: Option<u32>, underlay_mtu: Option<u32>, overhead: u32) -> u32 {
    if let Some(m) = configured {
        return m;
    }
    let base = underlay_mtu.unwrap_or(1500);
    let floor = if overhead == VXLAN_V6_OVERHEAD {
        MIN_MTU
    } else {
        576
    };
    base.saturating_sub(overhead).max(floor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calico_defaults_on_1500() {
        assert_eq!(tunnel_mtu(None, Some(1500), IPIP_OVERHEAD), 1480);
        assert_eq!(tunnel_mtu(None, Some(1500), VXLAN_V4_OVERHEAD), 1450);
        assert_eq!(tunnel_mtu(None, Some(1500), VXLAN_V6_OVERHEAD), 1430);
    }

    #[test]
    fn jumbo_and_configured_and_unknown() {
        assert_eq!(tunnel_mtu(None, Some(9000), VXLAN_V4_OVERHEAD), 8950);
        assert_eq!(tunnel_mtu(Some(1400), Some(9000), VXLAN_V4_OVERHEAD), 1400);
        assert_eq!(tunnel_mtu(None, None, IPIP_OVERHEAD), 1480);
        assert_eq!(tunnel_mtu(None, Some(100), VXLAN_V6_OVERHEAD), MIN_MTU);
    }
}
