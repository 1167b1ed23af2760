//! Reading nf_tables dump replies: the parts of chains, rules, sets and set elements the rules
//! engine compares with what it wants.

use super::model::{BaseChain, ChainType, Hook, Range};
use super::nft::{
    CHAIN_HOOK, CHAIN_NAME, CHAIN_POLICY, CHAIN_TYPE, DATA_VALUE, DATA_VERDICT,
    ELEM_F_INTERVAL_END, HOOK_HOOKNUM, HOOK_PRIORITY, NF_DROP, RULE_CHAIN, RULE_HANDLE,
    RULE_USERDATA, SET_ELEM_DATA, SET_ELEM_FLAGS, SET_ELEM_KEY, SET_ELEM_LIST_ELEMENTS, SET_FLAGS,
    SET_KEY_LEN, SET_NAME, UDATA_COMMENT, VERDICT_CHAIN,
};
use crate::wire;

/// The comment in a rule's user data, if it has one.
pub(crate) fn comment_of(udata: &[u8]) -> Option<String> {
    let mut rest = udata;
    while rest.len() >= 2 {
        let (t, len) = (rest[0], rest[1] as usize);
        let v = rest.get(2..2 + len)?;
        if t == UDATA_COMMENT {
            let s = v.split(|b| *b == 0).next().unwrap_or(&[]);
            return Some(String::from_utf8_lossy(s).into_owned());
        }
        rest = &rest[2 + len..];
    }
    None
}

fn nfgen_body(payload: &[u8]) -> &[u8] {
    payload.get(4..).unwrap_or(&[])
}

fn get_str(v: &[u8]) -> String {
    String::from_utf8_lossy(v.split(|b| *b == 0).next().unwrap_or(&[])).into_owned()
}

fn be32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

/// A chain as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelChain {
    /// Name.
    pub name: String,
    /// Hook settings for a base chain; `None` for a regular chain.
    pub base: Option<BaseChain>,
    /// A base chain whose type or hook Calyx does not model (never equal to a desired one).
    pub unknown_base: bool,
}

/// Parses an `NFT_MSG_NEWCHAIN` dump reply.
pub fn parse_chain(payload: &[u8]) -> Option<KernelChain> {
    let mut name = None;
    let (mut hook, mut prio, mut policy, mut kind) = (None, None, None, None);
    for (t, v) in wire::attrs(nfgen_body(payload)) {
        match t {
            CHAIN_NAME => name = Some(get_str(v)),
            CHAIN_HOOK => {
                for (ht, hv) in wire::attrs(v) {
                    match ht {
                        HOOK_HOOKNUM => hook = be32(hv),
                        HOOK_PRIORITY => prio = be32(hv),
                        _ => {}
                    }
                }
            }
            CHAIN_POLICY => policy = be32(v),
            CHAIN_TYPE => kind = Some(get_str(v)),
            _ => {}
        }
    }
    let name = name?;
    let mut unknown_base = false;
    let base = match hook {
        None => None,
        Some(h) => {
            let kind = match kind.as_deref() {
                Some("filter") => Some(ChainType::Filter),
                Some("nat") => Some(ChainType::Nat),
                _ => None,
            };
            match (Hook::from_number(h), kind) {
                (Some(hook), Some(kind)) => Some(BaseChain {
                    kind,
                    hook,
                    priority: prio.unwrap_or(0) as i32,
                    accept: policy != Some(NF_DROP as u32),
                }),
                _ => {
                    unknown_base = true;
                    None
                }
            }
        }
    };
    Some(KernelChain {
        name,
        base,
        unknown_base,
    })
}

/// A rule as the kernel reports it: where it is, its handle and Calyx's comment if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRule {
    /// Chain name.
    pub chain: String,
    /// Handle (for deletion).
    pub handle: u64,
    /// The comment of its user data.
    pub comment: Option<String>,
}

/// Parses an `NFT_MSG_NEWRULE` dump reply.
pub fn parse_rule(payload: &[u8]) -> Option<KernelRule> {
    let (mut chain, mut handle, mut comment) = (None, None, None);
    for (t, v) in wire::attrs(nfgen_body(payload)) {
        match t {
            RULE_CHAIN => chain = Some(get_str(v)),
            RULE_HANDLE => handle = Some(u64::from_be_bytes(v.get(..8)?.try_into().ok()?)),
            RULE_USERDATA => comment = comment_of(v),
            _ => {}
        }
    }
    Some(KernelRule {
        chain: chain?,
        handle: handle?,
        comment,
    })
}

/// A set as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSet {
    /// Name.
    pub name: String,
    /// `NFT_SET_*` flags.
    pub flags: u32,
    /// Key length in bytes.
    pub key_len: u32,
}

/// Parses an `NFT_MSG_NEWSET` dump reply.
pub fn parse_set(payload: &[u8]) -> Option<KernelSet> {
    let (mut name, mut flags, mut key_len) = (None, 0, 0);
    for (t, v) in wire::attrs(nfgen_body(payload)) {
        match t {
            SET_NAME => name = Some(get_str(v)),
            SET_FLAGS => flags = be32(v).unwrap_or(0),
            SET_KEY_LEN => key_len = be32(v).unwrap_or(0),
            _ => {}
        }
    }
    Some(KernelSet {
        name: name?,
        flags,
        key_len,
    })
}

/// Parses an `NFT_MSG_NEWSETELEM` dump reply into `(key, interval_end)` pairs.
pub fn parse_elems(payload: &[u8], out: &mut Vec<(u128, bool)>) {
    for (t, v) in wire::attrs(nfgen_body(payload)) {
        if t != SET_ELEM_LIST_ELEMENTS {
            continue;
        }
        for (_, e) in wire::attrs(v) {
            let (mut key, mut end) = (None, false);
            for (et, ev) in wire::attrs(e) {
                match et {
                    SET_ELEM_KEY => {
                        for (kt, kv) in wire::attrs(ev) {
                            if kt == DATA_VALUE {
                                key = match kv.len() {
                                    4 => be32(kv).map(u128::from),
                                    16 => kv.try_into().ok().map(u128::from_be_bytes),
                                    _ => None,
                                };
                            }
                        }
                    }
                    SET_ELEM_FLAGS => end = be32(ev).unwrap_or(0) & ELEM_F_INTERVAL_END != 0,
                    _ => {}
                }
            }
            if let Some(k) = key {
                out.push((k, end));
            }
        }
    }
}

/// Parses an `NFT_MSG_NEWSETELEM` dump reply of an interface set or verdict map into
/// `(interface name, chain jumped to)` pairs (the chain is empty for a plain set).
pub fn parse_if_map_elems(payload: &[u8], out: &mut Vec<(String, String)>) {
    for (t, v) in wire::attrs(nfgen_body(payload)) {
        if t != SET_ELEM_LIST_ELEMENTS {
            continue;
        }
        for (_, e) in wire::attrs(v) {
            let (mut key, mut chain) = (None, String::new());
            for (et, ev) in wire::attrs(e) {
                match et {
                    SET_ELEM_KEY => {
                        for (kt, kv) in wire::attrs(ev) {
                            if kt == DATA_VALUE {
                                key = Some(get_str(kv));
                            }
                        }
                    }
                    SET_ELEM_DATA => {
                        for (dt, dv) in wire::attrs(ev) {
                            if dt == DATA_VERDICT {
                                for (vt, vv) in wire::attrs(dv) {
                                    if vt == VERDICT_CHAIN {
                                        chain = get_str(vv);
                                    }
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
            if let Some(k) = key {
                out.push((k, chain));
            }
        }
    }
}

/// Rebuilds ranges from interval-set elements (each start followed by its end; an end with
/// no start before it, as nft writes for address 0, is skipped).
pub fn ranges_of(mut elems: Vec<(u128, bool)>) -> Vec<Range> {
    // Sorted by key; at equal keys an end comes first (it closes the previous range).
    elems.sort_by_key(|(k, end)| (*k, !*end));
    let mut out = Vec::new();
    let mut open: Option<u128> = None;
    for (k, end) in elems {
        match (end, open) {
            (false, None) => open = Some(k),
            (false, Some(s)) => {
                // A start while open: the previous range had no end (should not happen).
                out.push(Range {
                    start: s,
                    end: None,
                });
                open = Some(k);
            }
            (true, Some(s)) => {
                out.push(Range {
                    start: s,
                    end: Some(k),
                });
                open = None;
            }
            (true, None) => {}
        }
    }
    if let Some(s) = open {
        out.push(Range {
            start: s,
            end: None,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::rules::nft::userdata;

    #[test]
    fn comment_roundtrip() {
        let u = userdata("calyx: hello [0000abcd]");
        assert_eq!(comment_of(&u).as_deref(), Some("calyx: hello [0000abcd]"));
        // nft's own comment format reads the same.
        assert_eq!(
            comment_of(b"\x00\x09calyx hi\x00").as_deref(),
            Some("calyx hi")
        );
        assert_eq!(comment_of(b"\x00\x40ab"), None);
    }

    #[test]
    fn ranges_from_elements() {
        let e = vec![(0x0a42_0000, true), (0x0a41_0000, false), (0, true)];
        assert_eq!(
            ranges_of(e),
            vec![Range {
                start: 0x0a41_0000,
                end: Some(0x0a42_0000)
            }]
        );
        let e = vec![(5, false), (9, true), (9, false)];
        assert_eq!(
            ranges_of(e),
            vec![
                Range {
                    start: 5,
                    end: Some(9)
                },
                Range {
                    start: 9,
                    end: None
                }
            ]
        );
    }
}
