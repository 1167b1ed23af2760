//! The nf_tables netlink wire format, hand-written over [`crate::wire`]: the messages Calyx
//! sends (tables, chains, rules, sets, elements, in batches) and the parts of dump replies it
//! reads back. Constants are from `linux/netfilter/nf_tables.h` and `nfnetlink.h`.

use crate::wire::{self, begin_msg, end_msg, put_attr};

mod expr;
pub use expr::encode_exprs;

use super::model::{
    Action, AddrSet, Chain, Family, IfName, IpVersion, Match, Range, Rule, TableId,
};

/// `NFNL_SUBSYS_NFTABLES`.
pub const SUBSYS: u16 = 10;
/// `NFNL_MSG_BATCH_BEGIN`.
const BATCH_BEGIN: u16 = 0x10;
/// `NFNL_MSG_BATCH_END`.
const BATCH_END: u16 = 0x11;

/// `NFT_MSG_*` types (before the subsystem shift).
pub mod msg {
    /// New table.
    pub const NEWTABLE: u16 = 0;
    /// Get tables.
    pub const GETTABLE: u16 = 1;
    /// Delete a table.
    pub const DELTABLE: u16 = 2;
    /// New chain.
    pub const NEWCHAIN: u16 = 3;
    /// Get chains.
    pub const GETCHAIN: u16 = 4;
    /// Delete a chain.
    pub const DELCHAIN: u16 = 5;
    /// New rule.
    pub const NEWRULE: u16 = 6;
    /// Get rules.
    pub const GETRULE: u16 = 7;
    /// Delete rules.
    pub const DELRULE: u16 = 8;
    /// New set.
    pub const NEWSET: u16 = 9;
    /// Get sets.
    pub const GETSET: u16 = 10;
    /// Delete a set.
    pub const DELSET: u16 = 11;
    /// New set elements.
    pub const NEWSETELEM: u16 = 12;
    /// Get set elements.
    pub const GETSETELEM: u16 = 13;
    /// Delete set elements.
    pub const DELSETELEM: u16 = 14;
}

/// The full netlink message type of an `NFT_MSG_*`.
pub fn ty(m: u16) -> u16 {
    (SUBSYS << 8) | m
}

const NLA_F_NESTED: u16 = 0x8000;
const NLM_F_APPEND: u16 = 0x800;

// Attributes.
const TABLE_NAME: u16 = 1;
const CHAIN_TABLE: u16 = 1;
pub(crate) const CHAIN_NAME: u16 = 3;
pub(crate) const CHAIN_HOOK: u16 = 4;
pub(crate) const CHAIN_POLICY: u16 = 5;
pub(crate) const CHAIN_TYPE: u16 = 7;
pub(crate) const HOOK_HOOKNUM: u16 = 1;
pub(crate) const HOOK_PRIORITY: u16 = 2;
const RULE_TABLE: u16 = 1;
pub(crate) const RULE_CHAIN: u16 = 2;
pub(crate) const RULE_HANDLE: u16 = 3;
const RULE_EXPRESSIONS: u16 = 4;
pub(crate) const RULE_USERDATA: u16 = 7;
const LIST_ELEM: u16 = 1;
const EXPR_NAME: u16 = 1;
const EXPR_DATA: u16 = 2;
const SET_TABLE: u16 = 1;
pub(crate) const SET_NAME: u16 = 2;
pub(crate) const SET_FLAGS: u16 = 3;
const SET_KEY_TYPE: u16 = 4;
pub(crate) const SET_KEY_LEN: u16 = 5;
const SET_ID: u16 = 10;
const SET_ELEM_LIST_TABLE: u16 = 1;
const SET_ELEM_LIST_SET: u16 = 2;
pub(crate) const SET_ELEM_LIST_ELEMENTS: u16 = 3;
pub(crate) const SET_ELEM_KEY: u16 = 1;
pub(crate) const SET_ELEM_FLAGS: u16 = 3;
pub(crate) const DATA_VALUE: u16 = 1;
pub(crate) const DATA_VERDICT: u16 = 2;
const VERDICT_CODE: u16 = 1;
pub(crate) const VERDICT_CHAIN: u16 = 2;

/// `NFT_SET_INTERVAL`.
pub const SET_F_INTERVAL: u32 = 0x4;
/// `NFT_SET_MAP`.
pub const SET_F_MAP: u32 = 0x8;
/// `NFTA_SET_USERDATA`.
const SET_USERDATA: u16 = 13;
/// `NFTA_SET_DATA_TYPE`.
const SET_DATA_TYPE: u16 = 6;
/// `NFTA_SET_ELEM_DATA`.
pub(crate) const SET_ELEM_DATA: u16 = 2;
/// `NFT_DATA_VERDICT`: the data type of a verdict map.
const DATA_TYPE_VERDICT: u32 = 0xffff_ff00;
/// nft's data type for interface names (`ifname`).
const TYPE_IFNAME: u32 = 41;
/// Length of an interface name key (`IFNAMSIZ`).
pub const IFNAME_LEN: usize = 16;
/// `NFT_SET_ELEM_INTERVAL_END`.
pub(crate) const ELEM_F_INTERVAL_END: u32 = 0x1;
/// nft's data types for set keys (user space only; `nft list` prints by them).
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;

pub(crate) const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;
const NFT_RETURN: i32 = -5;

const REG_VERDICT: u32 = 0;
const REG_1: u32 = 1;
const REG_2: u32 = 2;
const REG_3: u32 = 3;

const META_IIFNAME: u32 = 6;
const META_OIFNAME: u32 = 7;
const META_NFPROTO: u32 = 15;
const META_L4PROTO: u32 = 16;
const PAYLOAD_NETWORK: u32 = 1;
const PAYLOAD_TRANSPORT: u32 = 2;
const CMP_EQ: u32 = 0;
const CMP_NEQ: u32 = 1;
const CT_STATE: u32 = 0;
const LOOKUP_F_INV: u32 = 1;
const NAT_RANGE_MAP_IPS: u32 = 0x1;
const NAT_RANGE_PROTO_SPECIFIED: u32 = 0x2;
const NAT_RANGE_PROTO_RANDOM_FULLY: u32 = 0x10;
const NFT_NAT_SNAT: u32 = 0;

/// `NFTNL_UDATA_RULE_COMMENT`: the TLV type nft stores a rule's comment under.
pub(crate) const UDATA_COMMENT: u8 = 0;

/// Prefix of every comment on a rule Calyx wrote.
pub const COMMENT_PREFIX: &str = "calyx:";

/// Starts an nfnetlink message: header and `nfgenmsg`.
fn begin(buf: &mut Vec<u8>, m: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> usize {
    let s = begin_msg(buf, ty(m), flags, seq);
    buf.push(family);
    buf.push(0); // NFNETLINK_V0
    buf.extend_from_slice(&res_id.to_be_bytes());
    s
}

fn put_str(buf: &mut Vec<u8>, t: u16, s: &str) {
    let mut v = Vec::with_capacity(s.len() + 1);
    v.extend_from_slice(s.as_bytes());
    v.push(0);
    put_attr(buf, t, &v);
}

fn put_be32(buf: &mut Vec<u8>, t: u16, v: u32) {
    put_attr(buf, t, &v.to_be_bytes());
}

/// Opens a nested attribute; returns its offset for [`nest_end`].
fn nest(buf: &mut Vec<u8>, t: u16) -> usize {
    let s = buf.len();
    buf.extend_from_slice(&0u16.to_ne_bytes());
    buf.extend_from_slice(&(t | NLA_F_NESTED).to_ne_bytes());
    s
}

fn nest_end(buf: &mut [u8], s: usize) {
    let len = (buf.len() - s) as u16;
    buf[s..s + 2].copy_from_slice(&len.to_ne_bytes());
}

/// Writes messages of one nf_tables transaction: `BATCH_BEGIN`, the requests (each asks for an
/// acknowledgement, so every failure is reported by sequence number), `BATCH_END`.
pub struct Batch {
    /// The encoded datagram.
    pub buf: Vec<u8>,
    /// Sequence number of the first request.
    pub first_seq: u32,
    seq: u32,
    /// Requests (between begin and end).
    pub requests: usize,
    /// What each request is, for error messages.
    pub what: Vec<String>,
}

impl Batch {
    /// Starts a batch whose requests are numbered from `first_seq`.
    pub fn new(first_seq: u32) -> Batch {
        let mut buf = Vec::with_capacity(4096);
        let s = begin_raw(&mut buf, BATCH_BEGIN, first_seq.wrapping_sub(1));
        end_msg(&mut buf, s);
        Batch {
            buf,
            first_seq,
            seq: first_seq,
            requests: 0,
            what: Vec::new(),
        }
    }

    /// Ends the batch; returns the datagram.
    pub fn finish(mut self) -> (Vec<u8>, Vec<String>) {
        let s = begin_raw(&mut self.buf, BATCH_END, self.seq);
        end_msg(&mut self.buf, s);
        (self.buf, self.what)
    }

    fn start(&mut self, m: u16, flags: u16, family: Family, what: String) -> usize {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        self.requests += 1;
        self.what.push(what);
        begin(
            &mut self.buf,
            m,
            wire::NLM_F_REQUEST | wire::NLM_F_ACK | flags,
            seq,
            family.nfproto(),
            0,
        )
    }

    /// Creates a table if it does not exist (never fails because it exists).
    pub fn add_table(&mut self, t: &TableId) {
        let s = self.start(
            msg::NEWTABLE,
            wire::NLM_F_CREATE,
            t.family,
            format!("add table {t}"),
        );
        put_str(&mut self.buf, TABLE_NAME, &t.name);
        end_msg(&mut self.buf, s);
    }

    /// Deletes a table and everything in it.
    pub fn del_table(&mut self, t: &TableId) {
        let s = self.start(msg::DELTABLE, 0, t.family, format!("delete table {t}"));
        put_str(&mut self.buf, TABLE_NAME, &t.name);
        end_msg(&mut self.buf, s);
    }

    /// Creates a chain.
    pub fn add_chain(&mut self, t: &TableId, name: &str, chain: &Chain) {
        let s = self.start(
            msg::NEWCHAIN,
            wire::NLM_F_CREATE,
            t.family,
            format!("add chain {t} {name}"),
        );
        put_str(&mut self.buf, CHAIN_TABLE, &t.name);
        put_str(&mut self.buf, CHAIN_NAME, name);
        if let Some(b) = &chain.base {
            let h = nest(&mut self.buf, CHAIN_HOOK);
            put_be32(&mut self.buf, HOOK_HOOKNUM, b.hook.number());
            put_be32(&mut self.buf, HOOK_PRIORITY, b.priority as u32);
            nest_end(&mut self.buf, h);
            put_be32(&mut self.buf, CHAIN_POLICY, if b.accept { 1 } else { 0 });
            put_str(&mut self.buf, CHAIN_TYPE, b.kind.name());
        }
        end_msg(&mut self.buf, s);
    }

    /// Deletes a chain (it must hold no rules and be the target of no jump).
    pub fn del_chain(&mut self, t: &TableId, name: &str) {
        let s = self.start(
            msg::DELCHAIN,
            0,
            t.family,
            format!("delete chain {t} {name}"),
        );
        put_str(&mut self.buf, CHAIN_TABLE, &t.name);
        put_str(&mut self.buf, CHAIN_NAME, name);
        end_msg(&mut self.buf, s);
    }

    /// Deletes every rule of a chain.
    pub fn flush_chain(&mut self, t: &TableId, name: &str) {
        let s = self.start(msg::DELRULE, 0, t.family, format!("flush chain {t} {name}"));
        put_str(&mut self.buf, RULE_TABLE, &t.name);
        put_str(&mut self.buf, RULE_CHAIN, name);
        end_msg(&mut self.buf, s);
    }

    /// Deletes one rule by handle.
    pub fn del_rule(&mut self, t: &TableId, chain: &str, handle: u64) {
        let s = self.start(
            msg::DELRULE,
            0,
            t.family,
            format!("delete rule {t} {chain} handle {handle}"),
        );
        put_str(&mut self.buf, RULE_TABLE, &t.name);
        put_str(&mut self.buf, RULE_CHAIN, chain);
        put_attr(&mut self.buf, RULE_HANDLE, &handle.to_be_bytes());
        end_msg(&mut self.buf, s);
    }

    /// Appends a rule to a chain (`append`), or inserts it at the top (`!append`).
    pub fn add_rule(&mut self, t: &TableId, chain: &str, rule: &Rule, append: bool) {
        let flags = wire::NLM_F_CREATE | if append { NLM_F_APPEND } else { 0 };
        let s = self.start(
            msg::NEWRULE,
            flags,
            t.family,
            format!("add rule {t} {chain} ({})", rule.comment),
        );
        put_str(&mut self.buf, RULE_TABLE, &t.name);
        put_str(&mut self.buf, RULE_CHAIN, chain);
        let exprs = encode_exprs(rule);
        put_attr(&mut self.buf, RULE_EXPRESSIONS | NLA_F_NESTED, &exprs);
        put_attr(
            &mut self.buf,
            RULE_USERDATA,
            &userdata(&rule_tag(rule, &exprs)),
        );
        end_msg(&mut self.buf, s);
    }

    /// Creates an interval set of addresses.
    pub fn add_set(&mut self, t: &TableId, name: &str, set: &AddrSet, id: u32) {
        let s = self.start(
            msg::NEWSET,
            wire::NLM_F_CREATE,
            t.family,
            format!("add set {t} {name}"),
        );
        put_str(&mut self.buf, SET_TABLE, &t.name);
        put_str(&mut self.buf, SET_NAME, name);
        put_be32(&mut self.buf, SET_FLAGS, SET_F_INTERVAL);
        let key_type = match set.version {
            IpVersion::V4 => TYPE_IPADDR,
            IpVersion::V6 => TYPE_IP6ADDR,
        };
        put_be32(&mut self.buf, SET_KEY_TYPE, key_type);
        put_be32(&mut self.buf, SET_KEY_LEN, set.version.addr_len() as u32);
        put_be32(&mut self.buf, SET_ID, id);
        end_msg(&mut self.buf, s);
    }

    /// Creates a set of interface names, or a verdict map keyed by them.
    pub fn add_if_map(&mut self, t: &TableId, name: &str, verdicts: bool, id: u32) {
        let s = self.start(
            msg::NEWSET,
            wire::NLM_F_CREATE,
            t.family,
            format!("add {} {t} {name}", if verdicts { "map" } else { "set" }),
        );
        put_str(&mut self.buf, SET_TABLE, &t.name);
        put_str(&mut self.buf, SET_NAME, name);
        if verdicts {
            put_be32(&mut self.buf, SET_FLAGS, SET_F_MAP);
        }
        put_be32(&mut self.buf, SET_KEY_TYPE, TYPE_IFNAME);
        put_be32(&mut self.buf, SET_KEY_LEN, IFNAME_LEN as u32);
        if verdicts {
            put_be32(&mut self.buf, SET_DATA_TYPE, DATA_TYPE_VERDICT);
        }
        put_be32(&mut self.buf, SET_ID, id);
        // nft's user data: the key is a string in host byte order
        // (`NFTNL_UDATA_SET_KEYBYTEORDER` = `BYTEORDER_HOST_ENDIAN`), so that `nft list` shows
        // the interface names; the kernel compares the bytes as they are either way.
        let mut udata = vec![0u8, 4];
        udata.extend_from_slice(&1u32.to_ne_bytes());
        put_attr(&mut self.buf, SET_USERDATA, &udata);
        end_msg(&mut self.buf, s);
    }

    /// Adds (`add`: with the chain each jumps to, for a verdict map) or deletes elements of
    /// an interface set or map, in messages of at most 256 elements.
    pub fn if_map_elems(
        &mut self,
        t: &TableId,
        map: &str,
        elems: &[(&str, Option<&str>)],
        add: bool,
    ) {
        self.set_elems(t, map, elems, add, |buf, (name, chain)| {
            let e = nest(buf, LIST_ELEM);
            let k = nest(buf, SET_ELEM_KEY);
            put_attr(buf, DATA_VALUE, &ifname_key(name));
            nest_end(buf, k);
            if let (true, Some(c)) = (add, chain) {
                let d = nest(buf, SET_ELEM_DATA);
                let v = nest(buf, DATA_VERDICT);
                put_be32(buf, VERDICT_CODE, NFT_JUMP as u32);
                put_str(buf, VERDICT_CHAIN, c);
                nest_end(buf, v);
                nest_end(buf, d);
            }
            nest_end(buf, e);
        });
    }

    /// Adds (`add`) or deletes elements of set `set`, `element` writing each one, in messages
    /// of at most 256 elements (a nested attribute is at most 64 KiB).
    fn set_elems<T>(
        &mut self,
        t: &TableId,
        set: &str,
        items: &[T],
        add: bool,
        mut element: impl FnMut(&mut Vec<u8>, &T),
    ) {
        let (m, flags, verb) = if add {
            (msg::NEWSETELEM, wire::NLM_F_CREATE, "add")
        } else {
            (msg::DELSETELEM, 0, "delete")
        };
        for chunk in items.chunks(256) {
            let s = self.start(
                m,
                flags,
                t.family,
                format!("{verb} {} element(s) of set {t} {set}", chunk.len()),
            );
            put_str(&mut self.buf, SET_ELEM_LIST_TABLE, &t.name);
            put_str(&mut self.buf, SET_ELEM_LIST_SET, set);
            let list = nest(&mut self.buf, SET_ELEM_LIST_ELEMENTS);
            for item in chunk {
                element(&mut self.buf, item);
            }
            nest_end(&mut self.buf, list);
            end_msg(&mut self.buf, s);
        }
    }

    /// Deletes a set (no rule may refer to it).
    pub fn del_set(&mut self, t: &TableId, name: &str) {
        let s = self.start(msg::DELSET, 0, t.family, format!("delete set {t} {name}"));
        put_str(&mut self.buf, SET_TABLE, &t.name);
        put_str(&mut self.buf, SET_NAME, name);
        end_msg(&mut self.buf, s);
    }

    /// Adds (`add`) or deletes ranges of a set, in messages of at most 256 ranges.
    pub fn set_ranges(
        &mut self,
        t: &TableId,
        set: &str,
        v: IpVersion,
        ranges: &[Range],
        add: bool,
    ) {
        self.set_elems(t, set, ranges, add, |buf, r| {
            put_elem(buf, &addr_bytes(v, r.start), false);
            if let Some(end) = r.end {
                put_elem(buf, &addr_bytes(v, end), true);
            }
        });
    }
}

fn begin_raw(buf: &mut Vec<u8>, t: u16, seq: u32) -> usize {
    let s = begin_msg(buf, t, wire::NLM_F_REQUEST, seq);
    buf.push(0); // AF_UNSPEC
    buf.push(0);
    buf.extend_from_slice(&SUBSYS.to_be_bytes());
    s
}

fn put_elem(buf: &mut Vec<u8>, key: &[u8], end: bool) {
    let e = nest(buf, LIST_ELEM);
    let k = nest(buf, SET_ELEM_KEY);
    put_attr(buf, DATA_VALUE, key);
    nest_end(buf, k);
    if end {
        put_be32(buf, SET_ELEM_FLAGS, ELEM_F_INTERVAL_END);
    }
    nest_end(buf, e);
}

/// An address of a range in network byte order.
pub fn addr_bytes(v: IpVersion, a: u128) -> Vec<u8> {
    match v {
        IpVersion::V4 => (a as u32).to_be_bytes().to_vec(),
        IpVersion::V6 => a.to_be_bytes().to_vec(),
    }
}

/// A dump request (`NLM_F_DUMP`) for `m` in `family`, filtered by table (and chain, for rules;
/// by set, for elements) when given.
pub fn dump_request(
    buf: &mut Vec<u8>,
    seq: u32,
    m: u16,
    family: Family,
    table: Option<&str>,
    second: Option<&str>,
) {
    let flags = wire::NLM_F_REQUEST | wire::NLM_F_DUMP;
    let s = begin(buf, m, flags, seq, family.nfproto(), 0);
    if let Some(t) = table {
        put_str(buf, 1, t); // *_TABLE is attribute 1 in rule, chain, set and element lists
    }
    if let Some(x) = second {
        // NFTA_RULE_CHAIN = 2, NFTA_SET_ELEM_LIST_SET = 2.
        put_str(buf, 2, x);
    }
    end_msg(buf, s);
}

/// An interface name as a 16-byte key (NUL-padded), as the kernel compares `iifname`.
pub fn ifname_key(name: &str) -> [u8; IFNAME_LEN] {
    let mut v = [0u8; IFNAME_LEN];
    let len = name.len().min(IFNAME_LEN - 1);
    v[..len].copy_from_slice(&name.as_bytes()[..len]);
    v
}

/// The comment Calyx stores on a rule: its purpose and a hash of its expressions, so that a
/// rule someone replaced (with new expressions, and nft's own comment or none) no longer
/// matches what Calyx expects and is rewritten.
pub fn rule_tag(rule: &Rule, exprs: &[u8]) -> String {
    // FNV-1a: stable across builds and versions, unlike std's hasher.
    let mut h: u32 = 0x811c_9dc5;
    for b in exprs {
        h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
    }
    let mut comment = rule.comment.clone();
    comment.truncate(100);
    format!("{COMMENT_PREFIX} {comment} [{h:08x}]")
}

/// The tag a rule gets (see [`rule_tag`]).
pub fn tag_of(rule: &Rule) -> String {
    rule_tag(rule, &encode_exprs(rule))
}

/// nft's user data for a rule comment: one TLV, the string NUL-terminated.
pub(crate) fn userdata(comment: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(comment.len() + 3);
    v.push(UDATA_COMMENT);
    v.push((comment.len() + 1).min(255) as u8);
    v.extend_from_slice(&comment.as_bytes()[..comment.len().min(254)]);
    v.push(0);
    v
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tags_differ_by_expressions() {
        let a = Rule::new(vec![], Action::Accept, "x");
        let b = Rule::new(vec![], Action::Drop, "x");
        assert_ne!(tag_of(&a), tag_of(&b));
        assert!(tag_of(&a).starts_with("calyx: x ["));
    }
}
