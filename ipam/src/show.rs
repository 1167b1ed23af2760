//! `calyx ipam show`: usage per pool and per block, borrowed addresses, one address's details.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use calyx_datastore::store::Store;
use ipnet::IpNet;
use serde::Serialize;

use crate::block;
use crate::check::Borrowed;
use crate::error::Result;
use crate::model::{AllocationBlock, BLOCK_KEY_PREFIX};
use crate::pools::{self, Pool};
use crate::types::attr_keys;
use crate::Ipam;

/// Usage of one pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolUsage {
    /// The pool's name.
    pub name: String,
    /// The pool's network.
    pub cidr: IpNet,
    /// Whether the pool is disabled.
    pub disabled: bool,
    /// Addresses in the pool.
    pub total: u128,
    /// Addresses allocated.
    pub in_use: u128,
    /// Addresses free.
    pub free: u128,
}

/// Usage of one block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockUsage {
    /// The block.
    pub cidr: IpNet,
    /// The pool it is in (none when the pool is gone).
    pub pool: Option<String>,
    /// The node it is affine to.
    pub node: Option<String>,
    /// Addresses in the block.
    pub total: u128,
    /// Addresses allocated.
    pub in_use: u128,
    /// Addresses free.
    pub free: u128,
    /// Of the allocated, those used by other nodes.
    pub borrowed: u128,
}

/// The whole picture, as `calyx ipam show [--show-blocks] [--show-borrowed] -o json` prints it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ShowReport {
    /// Per pool.
    pub pools: Vec<PoolUsage>,
    /// Per block.
    pub blocks: Vec<BlockUsage>,
    /// Borrowed addresses.
    pub borrowed: Vec<Borrowed>,
}

/// What is known about one address (`calyx ipam show --ip ADDR`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpInfo {
    /// The address.
    pub ip: IpAddr,
    /// Its pool, if any.
    pub pool: Option<String>,
    /// Its block, if the block exists.
    pub block: Option<IpNet>,
    /// The node the block is affine to.
    pub block_node: Option<String>,
    /// Whether it is allocated.
    pub allocated: bool,
    /// The handle that holds it.
    pub handle: Option<String>,
    /// The allocation's attributes (node, pod, namespace, timestamp, type).
    pub attributes: BTreeMap<String, String>,
    /// Used on a node other than the block's.
    pub borrowed: bool,
}

impl ShowReport {
    /// calicoctl's table: `GROUPING | CIDR | IPS TOTAL | IPS IN USE | IPS FREE`, one row per
    /// pool and, with `show_blocks`, one per block under it.
    pub fn table(&self, show_blocks: bool) -> String {
        let mut rows: Vec<[String; 5]> = vec![[
            "GROUPING".into(),
            "CIDR".into(),
            "IPS TOTAL".into(),
            "IPS IN USE".into(),
            "IPS FREE".into(),
        ]];
        let pct = |n: u128, d: u128| match (n * 100).checked_div(d) {
            // Whole percent is all the table needs.
            Some(p) => format!("{p}%"),
            None => "0%".to_string(),
        };
        for p in &self.pools {
            rows.push([
                "IP Pool".into(),
                p.cidr.to_string(),
                p.total.to_string(),
                format!("{} ({})", p.in_use, pct(p.in_use, p.total)),
                format!("{} ({})", p.free, pct(p.free, p.total)),
            ]);
            if show_blocks {
                for b in self.blocks.iter().filter(|b| p.cidr.contains(&b.cidr)) {
                    rows.push([
                        "Block".into(),
                        b.cidr.to_string(),
                        b.total.to_string(),
                        format!("{} ({})", b.in_use, pct(b.in_use, b.total)),
                        format!("{} ({})", b.free, pct(b.free, b.total)),
                    ]);
                }
            }
        }
        if show_blocks {
            for b in self
                .blocks
                .iter()
                .filter(|b| !self.pools.iter().any(|p| p.cidr.contains(&b.cidr)))
            {
                rows.push([
                    "Block (no pool)".into(),
                    b.cidr.to_string(),
                    b.total.to_string(),
                    format!("{} ({})", b.in_use, pct(b.in_use, b.total)),
                    format!("{} ({})", b.free, pct(b.free, b.total)),
                ]);
            }
        }
        render(&rows)
    }

    /// The borrowed-address table: `IP | BORROWING-NODE | BLOCK | BLOCK OWNER | HANDLE`.
    pub fn borrowed_table(&self) -> String {
        let mut rows: Vec<[String; 5]> = vec![[
            "IP".into(),
            "BORROWING-NODE".into(),
            "BLOCK".into(),
            "BLOCK OWNER".into(),
            "HANDLE".into(),
        ]];
        for b in &self.borrowed {
            rows.push([
                b.ip.to_string(),
                b.used_by.clone(),
                b.block.to_string(),
                b.block_node.clone(),
                b.handle.clone().unwrap_or_default(),
            ]);
        }
        render(&rows)
    }
}

fn render<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let sep = {
        let mut s = String::from("+");
        for w in widths {
            s.push_str(&"-".repeat(w + 2));
            s.push('+');
        }
        s
    };
    let mut out = String::new();
    let _ = writeln!(out, "{sep}");
    for (i, r) in rows.iter().enumerate() {
        out.push('|');
        for (c, w) in r.iter().zip(widths) {
            let _ = write!(out, " {c:<w$} |");
        }
        out.push('\n');
        if i == 0 {
            let _ = writeln!(out, "{sep}");
        }
    }
    let _ = writeln!(out, "{sep}");
    out
}

fn size(cidr: &IpNet) -> u128 {
    let bits = u32::from(cidr.max_prefix_len() - cidr.prefix_len());
    if bits >= 128 {
        u128::MAX
    } else {
        1u128 << bits
    }
}

impl<S: Store> Ipam<S> {
    /// Usage per pool and per block, and the borrowed addresses.
    pub async fn show(&self) -> Result<ShowReport> {
        let all_pools = pools::list_pools(self.store()).await?;
        let listing = self.store().list(BLOCK_KEY_PREFIX).await?;
        let blocks: Vec<AllocationBlock> = listing
            .kvs
            .iter()
            .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
            .collect();
        let mut report = ShowReport::default();
        for b in &blocks {
            let pool = all_pools.iter().find(|p| p.cidr.contains(&b.cidr));
            let total = size(&b.cidr);
            let in_use = b.num_allocated() as u128;
            let mut borrowed = 0;
            for (o, attr) in block::allocated(b) {
                if let (Some(bn), Some(n)) = (b.affine_host(), attr.secondary.get(attr_keys::NODE))
                {
                    if bn != n {
                        borrowed += 1;
                        if let Some(ip) = b.ordinal_to_ip(o) {
                            report.borrowed.push(Borrowed {
                                ip,
                                block: b.cidr,
                                block_node: bn.to_string(),
                                used_by: n.clone(),
                                handle: attr.handle_id.clone(),
                            });
                        }
                    }
                }
            }
            report.blocks.push(BlockUsage {
                cidr: b.cidr,
                pool: pool.map(|p| p.name.clone()),
                node: b.affine_host().map(str::to_string),
                total,
                in_use,
                free: total.saturating_sub(in_use),
                borrowed,
            });
        }
        for p in &all_pools {
            let total = size(&p.cidr);
            let in_use: u128 = report
                .blocks
                .iter()
                .filter(|b| p.cidr.contains(&b.cidr))
                .map(|b| b.in_use)
                .sum();
            report.pools.push(PoolUsage {
                name: p.name.clone(),
                cidr: p.cidr,
                disabled: p.disabled,
                total,
                in_use,
                free: total.saturating_sub(in_use),
            });
        }
        Ok(report)
    }

    /// Everything known about one address.
    pub async fn ip_info(&self, ip: IpAddr) -> Result<IpInfo> {
        let all_pools = pools::list_pools(self.store()).await?;
        let pool: Option<&Pool> = all_pools.iter().find(|p| p.cidr.contains(&ip));
        let mut info = IpInfo {
            ip,
            pool: pool.map(|p| p.name.clone()),
            block: None,
            block_node: None,
            allocated: false,
            handle: None,
            attributes: BTreeMap::new(),
            borrowed: false,
        };
        let Some(cidr) = self.block_containing(ip).await? else {
            return Ok(info);
        };
        let Some(kv) = self.store().get(&crate::model::block_key(&cidr)).await? else {
            return Ok(info);
        };
        let b: AllocationBlock = crate::ipam::decode(&kv)?;
        info.block = Some(cidr);
        info.block_node = b.affine_host().map(str::to_string);
        if let Some(attr) = b.ip_to_ordinal(ip).and_then(|o| block::attribute_at(&b, o)) {
            info.allocated = true;
            info.handle = attr.handle_id.clone();
            info.attributes = attr.secondary.clone();
            info.borrowed = match (b.affine_host(), attr.secondary.get(attr_keys::NODE)) {
                (Some(bn), Some(n)) => bn != n,
                _ => false,
            };
        }
        Ok(info)
    }
}
