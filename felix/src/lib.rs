//! Dataplane reconciler: kernel routes, IPIP/VXLAN tunnels, FDB and neighbours via netlink.
