//! IPAM objects exactly as Calico stores them in etcd (libcalico-go's `model` package), with
//! their keys. Plain data and small pure helpers; the algorithms live in `calyx-ipam`.
//!
//! These are machine-written, so they accept unknown fields (newer Calico versions add some;
//! a block keeps them in `extra` and writes them back) and are not validated.
//!
//! ```text
//! /calico/ipam/v2/assignment/ipv4/block/10.244.0.0-26      AllocationBlock
//! /calico/ipam/v2/host/node1/ipv4/block/10.244.0.0-26      BlockAffinity
//! /calico/ipam/v2/handle/<handle-id>                       IPAMHandle
//! /calico/ipam/v2/config                                   IPAMConfig
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::types::de_helpers;

/// The key of the IPAM configuration.
pub const IPAM_CONFIG_KEY: &str = "/calico/ipam/v2/config";
/// The prefix of every block key.
pub const BLOCK_KEY_PREFIX: &str = "/calico/ipam/v2/assignment/";
/// The prefix of every block-affinity key.
pub const AFFINITY_KEY_PREFIX: &str = "/calico/ipam/v2/host/";
/// The prefix of every handle key.
pub const HANDLE_KEY_PREFIX: &str = "/calico/ipam/v2/handle/";

fn family(cidr: &IpNet) -> u8 {
    match cidr {
        IpNet::V4(_) => 4,
        IpNet::V6(_) => 6,
    }
}

/// `10.244.0.0/26` -> `10.244.0.0-26` (how a CIDR appears in keys).
pub fn cidr_key_part(cidr: &IpNet) -> String {
    format!("{}-{}", cidr.network(), cidr.prefix_len())
}

/// `/calico/ipam/v2/assignment/ipv4/block/10.244.0.0-26`.
pub fn block_key(cidr: &IpNet) -> String {
    format!(
        "{BLOCK_KEY_PREFIX}ipv{}/block/{}",
        family(cidr),
        cidr_key_part(cidr)
    )
}

/// The block CIDR of a block key; `None` when `key` is not a block key.
pub fn block_cidr_from_key(key: &str) -> Option<IpNet> {
    let rest = key.strip_prefix(BLOCK_KEY_PREFIX)?;
    let (fam, rest) = rest.split_once("/block/")?;
    let cidr = parse_cidr_key_part(rest)?;
    (fam == format!("ipv{}", family(&cidr))).then_some(cidr)
}

/// `/calico/ipam/v2/host/node1/ipv4/block/10.244.0.0-26`.
pub fn affinity_key(host: &str, cidr: &IpNet) -> String {
    format!(
        "{AFFINITY_KEY_PREFIX}{host}/ipv{}/block/{}",
        family(cidr),
        cidr_key_part(cidr)
    )
}

/// The prefix of all affinity keys of one host: `/calico/ipam/v2/host/node1/`.
pub fn host_affinity_prefix(host: &str) -> String {
    format!("{AFFINITY_KEY_PREFIX}{host}/")
}

/// Host and block CIDR of an affinity key; `None` when `key` is not one.
pub fn affinity_from_key(key: &str) -> Option<(&str, IpNet)> {
    let rest = key.strip_prefix(AFFINITY_KEY_PREFIX)?;
    let (host, rest) = rest.split_once('/')?;
    let (fam, rest) = rest.split_once("/block/")?;
    let cidr = parse_cidr_key_part(rest)?;
    (!host.is_empty() && fam == format!("ipv{}", family(&cidr))).then_some((host, cidr))
}

/// `/calico/ipam/v2/handle/<id>`.
pub fn handle_key(handle_id: &str) -> String {
    format!("{HANDLE_KEY_PREFIX}{handle_id}")
}

/// The handle id of a handle key.
pub fn handle_id_from_key(key: &str) -> Option<&str> {
    key.strip_prefix(HANDLE_KEY_PREFIX)
        .filter(|h| !h.is_empty())
}

fn parse_cidr_key_part(s: &str) -> Option<IpNet> {
    let (addr, len) = s.rsplit_once('-')?;
    let net: IpNet = format!("{addr}/{len}").parse().ok()?;
    (net.network() == net.addr()).then_some(net)
}

/// One allocation's attributes: `{handle_id, secondary}`. Several allocations share one entry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AllocationAttribute {
    /// The handle that owns the allocation (Calico's `AttrPrimary`).
    #[serde(rename = "handle_id", default)]
    pub handle_id: Option<String>,
    /// Free-form attributes, e.g. `namespace`, `pod`, `node`, `type`.
    #[serde(
        rename = "secondary",
        default,
        deserialize_with = "de_helpers::null_default"
    )]
    pub secondary: BTreeMap<String, String>,
}

/// An IPAM block: `/calico/ipam/v2/assignment/ipv4/block/10.244.0.0-26`.
///
/// `allocations[ordinal]` is `None` when the address is free, or the index into `attributes`.
/// `unallocated` lists the free ordinals in the order they will be handed out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllocationBlock {
    /// The block's network.
    #[serde(deserialize_with = "de_helpers::cidr")]
    pub cidr: IpNet,
    /// `host:<nodename>` when the block is affine to a node; `null` otherwise.
    #[serde(default)]
    pub affinity: Option<String>,
    /// When true, only the affine host may allocate from the block.
    #[serde(default)]
    pub strict_affinity: bool,
    /// Per ordinal: `null` when free, else an index into `attributes`.
    #[serde(default, deserialize_with = "de_helpers::null_default")]
    pub allocations: Vec<Option<usize>>,
    /// Free ordinals.
    #[serde(default, deserialize_with = "de_helpers::null_default")]
    pub unallocated: Vec<usize>,
    /// Allocation attributes, shared by index.
    #[serde(default, deserialize_with = "de_helpers::null_default")]
    pub attributes: Vec<AllocationAttribute>,
    /// Set while the block is being deleted.
    #[serde(default)]
    pub deleted: bool,
    /// Incremented on every change to allocations.
    #[serde(default)]
    pub sequence_number: u64,
    /// Per allocation ordinal (as a string), the `sequenceNumber` when it was allocated.
    #[serde(
        default,
        deserialize_with = "de_helpers::null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub sequence_number_for_allocation: BTreeMap<String, u64>,
    /// Fields Calyx does not model (Calico's `hostAffinity`, a newer Calico's), kept as read
    /// and written back by every allocation and release.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The prefix Calico puts in front of the host name in `affinity`.
pub const HOST_AFFINITY_PREFIX: &str = "host:";

impl AllocationBlock {
    /// An empty block for `cidr` (host bits are cleared), every ordinal free in ascending order.
    /// Returns `None` if the block would have more than 2^20 addresses (Calico blocks have at
    /// most 4096).
    pub fn new(cidr: IpNet) -> Option<Self> {
        let cidr = cidr.trunc();
        let n = block_len(&cidr)?;
        Some(AllocationBlock {
            cidr,
            affinity: None,
            strict_affinity: false,
            allocations: vec![None; n],
            unallocated: (0..n).collect(),
            attributes: Vec::new(),
            deleted: false,
            sequence_number: 0,
            sequence_number_for_allocation: BTreeMap::new(),
            extra: serde_json::Map::new(),
        })
    }

    /// An empty block affine to `host`.
    pub fn new_affine(cidr: IpNet, host: &str) -> Option<Self> {
        let mut b = AllocationBlock::new(cidr)?;
        b.affinity = Some(format!("{HOST_AFFINITY_PREFIX}{host}"));
        Some(b)
    }

    /// The number of addresses in the block.
    pub fn num_addresses(&self) -> usize {
        block_len(&self.cidr).unwrap_or(0)
    }

    /// The host of a `host:<name>` affinity.
    pub fn affine_host(&self) -> Option<&str> {
        self.affinity.as_deref()?.strip_prefix(HOST_AFFINITY_PREFIX)
    }

    /// The address at `ordinal`, or `None` if out of range.
    pub fn ordinal_to_ip(&self, ordinal: usize) -> Option<IpAddr> {
        ordinal_to_ip(&self.cidr, ordinal)
    }

    /// The ordinal of `ip`, or `None` if it is not in the block.
    pub fn ip_to_ordinal(&self, ip: IpAddr) -> Option<usize> {
        ip_to_ordinal(&self.cidr, ip)
    }

    /// The number of allocated addresses.
    pub fn num_allocated(&self) -> usize {
        self.allocations.iter().filter(|a| a.is_some()).count()
    }

    /// The key of this block.
    pub fn key(&self) -> String {
        block_key(&self.cidr)
    }
}

/// The number of addresses in a block, if at most 2^20.
fn block_len(cidr: &IpNet) -> Option<usize> {
    let host_bits = u32::from(cidr.max_prefix_len() - cidr.prefix_len());
    (host_bits <= 20).then(|| 1usize << host_bits)
}

/// The `ordinal`-th address of `cidr` (counting from the network address).
pub fn ordinal_to_ip(cidr: &IpNet, ordinal: usize) -> Option<IpAddr> {
    let host_bits = u32::from(cidr.max_prefix_len() - cidr.prefix_len());
    let ord = u128::try_from(ordinal).ok()?;
    if host_bits < 128 && ord >> host_bits != 0 {
        return None;
    }
    match cidr.network() {
        IpAddr::V4(n) => {
            let v = u32::from(n).checked_add(u32::try_from(ord).ok()?)?;
            Some(IpAddr::V4(Ipv4Addr::from(v)))
        }
        IpAddr::V6(n) => Some(IpAddr::V6(Ipv6Addr::from(u128::from(n).checked_add(ord)?))),
    }
}

/// The ordinal of `ip` within `cidr`.
pub fn ip_to_ordinal(cidr: &IpNet, ip: IpAddr) -> Option<usize> {
    if !cidr.contains(&ip) {
        return None;
    }
    let off = match (cidr.network(), ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => u128::from(u32::from(a) - u32::from(n)),
        (IpAddr::V6(n), IpAddr::V6(a)) => u128::from(a) - u128::from(n),
        _ => return None,
    };
    usize::try_from(off).ok()
}

/// State of a block affinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum AffinityState {
    /// Claimed, block not yet created.
    #[serde(rename = "pending")]
    Pending,
    /// The block exists and is affine to the host. Also what an empty state (older Calico)
    /// means.
    #[default]
    #[serde(rename = "confirmed", alias = "")]
    Confirmed,
    /// Being released.
    #[serde(rename = "pendingDeletion")]
    PendingDeletion,
}

/// A block affinity: `/calico/ipam/v2/host/<node>/ipv4/block/<cidr>`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BlockAffinity {
    /// Where the claim stands.
    #[serde(default)]
    pub state: AffinityState,
    /// Set while the affinity is being deleted.
    #[serde(default)]
    pub deleted: bool,
}

/// An IPAM handle: `/calico/ipam/v2/handle/<id>`: how many addresses the handle holds per block.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IPAMHandle {
    /// The handle id. Calico does not store it (the key is authoritative); Calyx writes it when
    /// set, and it is empty when read from a Calico-written value.
    #[serde(rename = "handleID", default, skip_serializing_if = "String::is_empty")]
    pub handle_id: String,
    /// Block CIDR (`10.244.0.0/26`) -> number of addresses held in it.
    #[serde(default, deserialize_with = "de_helpers::null_default")]
    pub block: BTreeMap<String, u32>,
    /// Set while the handle is being deleted.
    #[serde(default)]
    pub deleted: bool,
}

/// Global IPAM settings: `/calico/ipam/v2/config`.
///
/// Field names are Calico's stored ones (`strict_affinity`, `auto_allocate_blocks`,
/// `maxBlocksPerHost`); camelCase spellings are accepted on input. All fields are always written.
/// When the key does not exist, use [`IPAMConfig::default`] (auto-allocation on); a stored value
/// missing `auto_allocate_blocks` means false, as Calico writes it with `omitempty`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IPAMConfig {
    /// Only the affine host may allocate from a block (no borrowing).
    #[serde(rename = "strict_affinity", alias = "strictAffinity", default)]
    pub strict_affinity: bool,
    /// Hosts claim new blocks automatically when theirs are full.
    #[serde(rename = "auto_allocate_blocks", alias = "autoAllocateBlocks", default)]
    pub auto_allocate_blocks: bool,
    /// Maximum blocks affine to one host; 0 means unlimited.
    #[serde(rename = "maxBlocksPerHost", default)]
    pub max_blocks_per_host: u32,
}

impl Default for IPAMConfig {
    fn default() -> Self {
        IPAMConfig {
            strict_affinity: false,
            auto_allocate_blocks: true,
            max_blocks_per_host: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let c: IpNet = "10.244.0.0/26".parse().unwrap();
        assert_eq!(
            block_key(&c),
            "/calico/ipam/v2/assignment/ipv4/block/10.244.0.0-26"
        );
        assert_eq!(block_cidr_from_key(&block_key(&c)), Some(c));
        assert_eq!(
            affinity_key("node1", &c),
            "/calico/ipam/v2/host/node1/ipv4/block/10.244.0.0-26"
        );
        assert_eq!(
            affinity_from_key(&affinity_key("node1", &c)),
            Some(("node1", c))
        );
        let c6: IpNet = "fd00:1::/122".parse().unwrap();
        assert_eq!(
            block_key(&c6),
            "/calico/ipam/v2/assignment/ipv6/block/fd00:1::-122"
        );
        assert_eq!(block_cidr_from_key(&block_key(&c6)), Some(c6));
        assert_eq!(
            block_cidr_from_key("/calico/ipam/v2/assignment/ipv6/block/10.0.0.0-26"),
            None
        );
        assert_eq!(
            handle_id_from_key(&handle_key("k8s-pod-network.abc")),
            Some("k8s-pod-network.abc")
        );
    }

    #[test]
    fn calico_block_fields_survive_a_rewrite() {
        // A block as Calico 3.31 stores it, with a field Calyx does not model.
        let stored = r#"{"cidr":"10.244.0.0/30","affinity":"host:node1","allocations":[0,null,null,null],"unallocated":[1,2,3],"attributes":[{"handle_id":"k8s-pod-network.c1","secondary":{"namespace":"default","node":"node1","pod":"web","timestamp":"2026-11-30 09:13:02.123 +0000 UTC"}}],"sequenceNumber":7,"sequenceNumberForAllocation":{"0":6},"deleted":false,"hostAffinity":"node1"}"#;
        let b: AllocationBlock = serde_json::from_str(stored).unwrap();
        assert_eq!(b.extra["hostAffinity"], "node1");
        let back: serde_json::Value = serde_json::to_value(&b).unwrap();
        assert_eq!(back["hostAffinity"], "node1");
        assert_eq!(back["attributes"][0]["secondary"]["pod"], "web");
    }

    #[test]
    fn ordinals() {
        let b = AllocationBlock::new("10.244.0.64/26".parse().unwrap()).unwrap();
        assert_eq!(b.num_addresses(), 64);
        assert_eq!(b.ordinal_to_ip(0), Some("10.244.0.64".parse().unwrap()));
        assert_eq!(b.ordinal_to_ip(63), Some("10.244.0.127".parse().unwrap()));
        assert_eq!(b.ordinal_to_ip(64), None);
        assert_eq!(b.ip_to_ordinal("10.244.0.100".parse().unwrap()), Some(36));
        assert_eq!(b.ip_to_ordinal("10.244.0.128".parse().unwrap()), None);
        assert_eq!(b.ip_to_ordinal("fd00::1".parse().unwrap()), None);
        let b6 = AllocationBlock::new("fd00::40/122".parse().unwrap()).unwrap();
        assert_eq!(b6.ordinal_to_ip(1), Some("fd00::41".parse().unwrap()));
        assert_eq!(b6.ip_to_ordinal("fd00::7f".parse().unwrap()), Some(63));
        let full = AllocationBlock::new("0.0.0.0/32".parse().unwrap()).unwrap();
        assert_eq!(full.num_addresses(), 1);
        assert!(AllocationBlock::new("10.0.0.0/8".parse().unwrap()).is_none());
    }

    #[test]
    fn calico_block_json() {
        // Shape of a block as written by Calico v3.2x.
        let j = r#"{"cidr":"10.244.0.0/30","affinity":"host:node1","strictAffinity":false,
            "allocations":[0,null,0,null],"unallocated":[1,3],
            "attributes":[{"handle_id":"k8s-pod-network.abc","secondary":{"namespace":"default","node":"node1","pod":"web"}}],
            "deleted":false,"sequenceNumber":7,"sequenceNumberForAllocation":{"0":5,"2":6}}"#;
        let b: AllocationBlock = serde_json::from_str(j).unwrap();
        assert_eq!(b.affine_host(), Some("node1"));
        assert_eq!(b.allocations, vec![Some(0), None, Some(0), None]);
        assert_eq!(b.num_allocated(), 2);
        assert_eq!(
            b.attributes[0].handle_id.as_deref(),
            Some("k8s-pod-network.abc")
        );
        let out = serde_json::to_value(&b).unwrap();
        assert_eq!(out["allocations"], serde_json::json!([0, null, 0, null]));
        assert_eq!(out["affinity"], "host:node1");
        let back: AllocationBlock = serde_json::from_value(out).unwrap();
        assert_eq!(back, b);
        let empty = AllocationBlock::new("10.0.0.0/31".parse().unwrap()).unwrap();
        let v = serde_json::to_value(&empty).unwrap();
        assert_eq!(v["affinity"], serde_json::Value::Null);
        assert_eq!(v["unallocated"], serde_json::json!([0, 1]));
    }

    #[test]
    fn affinity_handle_config() {
        let a: BlockAffinity =
            serde_json::from_str(r#"{"state":"pendingDeletion","deleted":false}"#).unwrap();
        assert_eq!(a.state, AffinityState::PendingDeletion);
        let a: BlockAffinity = serde_json::from_str(r#"{"state":""}"#).unwrap();
        assert_eq!(a.state, AffinityState::Confirmed);
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"state":"confirmed","deleted":false}"#
        );
        let h: IPAMHandle =
            serde_json::from_str(r#"{"block":{"10.244.0.0/26":2},"deleted":false}"#).unwrap();
        assert_eq!(h.block["10.244.0.0/26"], 2);
        assert_eq!(h.handle_id, "");
        let c: IPAMConfig =
            serde_json::from_str(r#"{"strict_affinity":true,"maxBlocksPerHost":4}"#).unwrap();
        assert!(c.strict_affinity && !c.auto_allocate_blocks && c.max_blocks_per_host == 4);
        let c: IPAMConfig =
            serde_json::from_str(r#"{"strictAffinity":true,"autoAllocateBlocks":true}"#).unwrap();
        assert!(c.strict_affinity && c.auto_allocate_blocks);
        assert!(IPAMConfig::default().auto_allocate_blocks);
        assert_eq!(
            serde_json::to_string(&IPAMConfig::default()).unwrap(),
            r#"{"strict_affinity":false,"auto_allocate_blocks":true,"maxBlocksPerHost":0}"#
        );
    }
}
