//! Level-triggered synchronisation: read back what the kernel holds in Calyx's tables (and at
//! the top of the foreign chains it inserts into), compare it with the desired ruleset, and
//! write the difference as one transaction.
//!
//! What is compared: each chain's hook, type, priority and policy, and its rules by the tag
//! Calyx stores in their comment (purpose + hash of the expressions, see [`nft::rule_tag`]);
//! each set's flags and key length, and its elements as ranges. A chain whose rules differ is
//! flushed and rewritten; a set's elements are added and deleted one by one; a table whose
//! structure differs (a base chain's hook or priority changed, a set's type) is deleted and
//! rebuilt, all inside the one transaction, so packets never see a half-written table.

use std::collections::BTreeMap;
use std::io;

use super::model::{IfMap, Range, Ruleset, Table, TableId};
use super::nft::{self, msg, Batch};
use super::parse::{self, KernelChain, KernelRule, KernelSet};
use super::sock::NfSocket;

/// What the kernel holds of one of Calyx's tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelTable {
    /// Chains by name, with their rules in order.
    pub chains: BTreeMap<String, (KernelChain, Vec<KernelRule>)>,
    /// Sets by name, with their elements as ranges.
    pub sets: BTreeMap<String, (KernelSet, Vec<Range>)>,
    /// Interface sets and verdict maps by name: interface -> chain (empty for a set).
    pub if_maps: BTreeMap<String, (KernelSet, BTreeMap<String, String>)>,
}

/// Whether a kernel set is one of Calyx's interface sets or maps: Calyx's address sets are
/// all interval sets, its interface sets and maps never are.
fn is_if_map(s: &KernelSet) -> bool {
    s.flags & nft::SET_F_INTERVAL == 0
}

fn table_attr(payload: &[u8], attr: u16) -> Option<String> {
    crate::wire::attrs(payload.get(4..)?)
        .find(|(t, _)| *t == attr)
        .map(|(_, v)| {
            String::from_utf8_lossy(v.split(|b| *b == 0).next().unwrap_or(&[])).into_owned()
        })
}

/// Reads one table; `None` when it does not exist.
pub fn read_table(sock: &mut NfSocket, id: &TableId) -> io::Result<Option<KernelTable>> {
    let mut exists = false;
    sock.dump(msg::GETTABLE, id.family, None, None, |p| {
        if table_attr(p, 1).as_deref() == Some(id.name.as_str()) {
            exists = true;
        }
    })?;
    if !exists {
        return Ok(None);
    }
    let mut t = KernelTable::default();
    // Chain dumps are not filtered by table in the kernel: filter here.
    sock.dump(msg::GETCHAIN, id.family, None, None, |p| {
        if table_attr(p, 1).as_deref() != Some(id.name.as_str()) {
            return;
        }
        if let Some(c) = parse::parse_chain(p) {
            t.chains.insert(c.name.clone(), (c, Vec::new()));
        }
    })?;
    let mut rules = Vec::new();
    sock.dump(msg::GETRULE, id.family, Some(&id.name), None, |p| {
        if let Some(r) = parse::parse_rule(p) {
            rules.push(r);
        }
    })?;
    for r in rules {
        if let Some((_, v)) = t.chains.get_mut(&r.chain) {
            v.push(r);
        }
    }
    let mut sets = Vec::new();
    sock.dump(msg::GETSET, id.family, Some(&id.name), None, |p| {
        if let Some(s) = parse::parse_set(p) {
            sets.push(s);
        }
    })?;
    for s in sets {
        if is_if_map(&s) {
            let mut elems = Vec::new();
            sock.dump(
                msg::GETSETELEM,
                id.family,
                Some(&id.name),
                Some(&s.name),
                |p| parse::parse_if_map_elems(p, &mut elems),
            )?;
            t.if_maps
                .insert(s.name.clone(), (s, elems.into_iter().collect()));
            continue;
        }
        let mut elems = Vec::new();
        sock.dump(
            msg::GETSETELEM,
            id.family,
            Some(&id.name),
            Some(&s.name),
            |p| parse::parse_elems(p, &mut elems),
        )?;
        t.sets.insert(s.name.clone(), (s, parse::ranges_of(elems)));
    }
    Ok(Some(t))
}

/// Reads the rules of a foreign chain; `None` when the chain (or its table) does not exist.
pub fn read_chain(
    sock: &mut NfSocket,
    id: &TableId,
    chain: &str,
) -> io::Result<Option<Vec<KernelRule>>> {
    let mut exists = false;
    sock.dump(msg::GETCHAIN, id.family, None, None, |p| {
        if table_attr(p, 1).as_deref() == Some(id.name.as_str())
            && table_attr(p, 3).as_deref() == Some(chain)
        {
            exists = true;
        }
    })?;
    if !exists {
        return Ok(None);
    }
    let mut rules = Vec::new();
    sock.dump(msg::GETRULE, id.family, Some(&id.name), Some(chain), |p| {
        if let Some(r) = parse::parse_rule(p) {
            rules.push(r);
        }
    })?;
    Ok(Some(rules))
}

/// Counts of what a plan changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanStats {
    /// Tables created or rebuilt whole.
    pub tables_built: usize,
    /// Tables deleted.
    pub tables_deleted: usize,
    /// Chains (re)written.
    pub chains_written: usize,
    /// Set ranges added or deleted.
    pub ranges_changed: usize,
    /// Foreign chains whose inserted rules were (re)written.
    pub inserts_written: usize,
}

impl PlanStats {
    /// Whether the plan changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == PlanStats::default()
    }
}

fn build_table(b: &mut Batch, id: &TableId, t: &Table, set_id: &mut u32) {
    for (name, s) in &t.sets {
        *set_id += 1;
        b.add_set(id, name, s, *set_id);
        b.set_ranges(id, name, s.version, &s.ranges(), true);
    }
    for (name, c) in &t.chains {
        b.add_chain(id, name, c);
    }
    // Maps after the chains their elements jump to.
    for (name, m) in &t.if_maps {
        *set_id += 1;
        b.add_if_map(id, name, m.verdicts, *set_id);
        b.if_map_elems(id, name, &if_elems(m, m.elements.keys()), true);
    }
    for (name, c) in &t.chains {
        for r in &c.rules {
            b.add_rule(id, name, r, true);
        }
    }
}

/// The elements `names` of `m` as [`Batch::if_map_elems`] takes them.
fn if_elems<'a>(
    m: &'a IfMap,
    names: impl Iterator<Item = &'a String>,
) -> Vec<(&'a str, Option<&'a str>)> {
    names
        .map(|n| {
            let chain = m.elements.get(n).map(String::as_str);
            (n.as_str(), chain.filter(|_| m.verdicts))
        })
        .collect()
}

fn if_map_flags(m: &IfMap) -> u32 {
    if m.verdicts {
        nft::SET_F_MAP
    } else {
        0
    }
}

/// A structural difference the incremental path cannot fix in place: a base chain's hook, type
/// or priority (the kernel cannot change them), or a set's type.
fn needs_rebuild(t: &Table, k: &KernelTable) -> bool {
    for (name, (kc, _)) in &k.chains {
        if kc.unknown_base {
            return true;
        }
        if let Some(c) = t.chains.get(name) {
            if c.base != kc.base {
                return true;
            }
        }
    }
    for (name, (ks, _)) in &k.sets {
        if let Some(s) = t.sets.get(name) {
            if ks.flags != nft::SET_F_INTERVAL || ks.key_len as usize != s.version.addr_len() {
                return true;
            }
        }
        if t.if_maps.contains_key(name) {
            return true;
        }
    }
    for (name, (ks, _)) in &k.if_maps {
        if let Some(m) = t.if_maps.get(name) {
            if ks.flags != if_map_flags(m) || ks.key_len as usize != nft::IFNAME_LEN {
                return true;
            }
        }
        if t.sets.contains_key(name) {
            return true;
        }
    }
    false
}

/// Adds to `b` what makes the kernel's copy of table `id` equal `t`.
pub fn plan_table(
    b: &mut Batch,
    id: &TableId,
    t: &Table,
    kernel: Option<&KernelTable>,
    set_id: &mut u32,
    stats: &mut PlanStats,
) {
    let Some(k) = kernel else {
        b.add_table(id);
        build_table(b, id, t, set_id);
        stats.tables_built += 1;
        return;
    };
    if needs_rebuild(t, k) {
        // Add first, so that the delete cannot fail if the table vanished meanwhile.
        b.add_table(id);
        b.del_table(id);
        b.add_table(id);
        build_table(b, id, t, set_id);
        stats.tables_built += 1;
        return;
    }
    // 1. Flush chains whose rules differ or that go away (their jumps and set references go
    //    with them, so that 2. can delete what they referred to).
    let mut rewrite = Vec::new();
    for (name, (_, krules)) in &k.chains {
        match t.chains.get(name) {
            None => b.flush_chain(id, name),
            Some(c) => {
                let same = krules.len() == c.rules.len()
                    && krules
                        .iter()
                        .zip(&c.rules)
                        .all(|(kr, r)| kr.comment.as_deref() == Some(&nft::tag_of(r)));
                if !same {
                    if !krules.is_empty() {
                        b.flush_chain(id, name);
                    }
                    rewrite.push(name.as_str());
                }
            }
        }
    }
    // 1b. Interface maps and elements no longer wanted (or jumping elsewhere now): their
    //     jumps hold the chains that 2. may delete.
    let mut map_adds: Vec<(&str, Vec<&String>)> = Vec::new();
    for (name, (_, have)) in &k.if_maps {
        match t.if_maps.get(name) {
            None => b.del_set(id, name),
            Some(m) => {
                let del: Vec<(&str, Option<&str>)> = have
                    .iter()
                    .filter(|(n, c)| m.elements.get(*n).is_none_or(|w| m.verdicts && w != *c))
                    .map(|(n, _)| (n.as_str(), None))
                    .collect();
                b.if_map_elems(id, name, &del, false);
                let add: Vec<&String> = m
                    .elements
                    .iter()
                    .filter(|(n, c)| have.get(*n).is_none_or(|h| m.verdicts && h != *c))
                    .map(|(n, _)| n)
                    .collect();
                stats.ranges_changed += del.len() + add.len();
                map_adds.push((name.as_str(), add));
            }
        }
    }
    // 2. Delete chains and sets no longer wanted.
    for name in k.chains.keys() {
        if !t.chains.contains_key(name) {
            b.del_chain(id, name);
            stats.chains_written += 1;
        }
    }
    for name in k.sets.keys() {
        if !t.sets.contains_key(name) {
            b.del_set(id, name);
        }
    }
    // 3. New sets and elements; element changes of existing sets (deletes first: the
    //    kernel's ranges must stay disjoint).
    for (name, s) in &t.sets {
        let want = s.ranges();
        match k.sets.get(name) {
            None => {
                *set_id += 1;
                b.add_set(id, name, s, *set_id);
                b.set_ranges(id, name, s.version, &want, true);
                stats.ranges_changed += want.len();
            }
            Some((_, have)) => {
                let del: Vec<Range> = have
                    .iter()
                    .filter(|r| want.binary_search(r).is_err())
                    .copied()
                    .collect();
                // Both sorted: `want` by construction, `have` as parse::ranges_of returns it.
                let add: Vec<Range> = want
                    .iter()
                    .filter(|r| have.binary_search(r).is_err())
                    .copied()
                    .collect();
                b.set_ranges(id, name, s.version, &del, false);
                b.set_ranges(id, name, s.version, &add, true);
                stats.ranges_changed += del.len() + add.len();
            }
        }
    }
    // 4. New chains, then map elements (new maps too) and the rules of new and changed
    //    chains (jump targets exist by then).
    for (name, c) in &t.chains {
        if !k.chains.contains_key(name) {
            b.add_chain(id, name, c);
            rewrite.push(name.as_str());
        }
    }
    for (name, add) in map_adds {
        if let Some(m) = t.if_maps.get(name) {
            b.if_map_elems(id, name, &if_elems(m, add.into_iter()), true);
        }
    }
    for (name, m) in &t.if_maps {
        if !k.if_maps.contains_key(name) {
            *set_id += 1;
            b.add_if_map(id, name, m.verdicts, *set_id);
            b.if_map_elems(id, name, &if_elems(m, m.elements.keys()), true);
            stats.ranges_changed += m.elements.len();
        }
    }
    for name in rewrite {
        if let Some(c) = t.chains.get(name) {
            for r in &c.rules {
                b.add_rule(id, name, r, true);
            }
            stats.chains_written += 1;
        }
    }
}

/// Adds to `b` what puts `rules` (tags in order) at the top of a foreign chain and removes
/// any other rule of Calyx's from it.
pub fn plan_insert(
    b: &mut Batch,
    id: &TableId,
    chain: &str,
    rules: &[super::model::Rule],
    kernel: &[KernelRule],
    stats: &mut PlanStats,
) {
    let tags: Vec<String> = rules.iter().map(nft::tag_of).collect();
    let ours = |r: &KernelRule| {
        r.comment
            .as_deref()
            .is_some_and(|c| c.starts_with(nft::COMMENT_PREFIX))
    };
    let top_ok = kernel.len() >= tags.len()
        && kernel
            .iter()
            .zip(&tags)
            .all(|(k, t)| k.comment.as_deref() == Some(t.as_str()));
    let extra = kernel.iter().skip(tags.len()).any(ours) || (!top_ok && kernel.iter().any(ours));
    if top_ok && !extra {
        return;
    }
    for r in kernel.iter().filter(|r| ours(r)) {
        b.del_rule(id, chain, r.handle);
    }
    // Inserted at the top one by one: the last first.
    for r in rules.iter().rev() {
        b.add_rule(id, chain, r, false);
    }
    stats.inserts_written += 1;
}

/// What the kernel holds of everything a sync looks at.
#[derive(Debug, Clone, Default)]
pub struct KernelView {
    /// Each desired table (in the desired ruleset's order); `None`: absent.
    pub tables: Vec<Option<KernelTable>>,
    /// The dropped tables that still exist.
    pub dropped_exist: Vec<TableId>,
    /// The rules of each desired insert's chain (in order); `None`: chain absent, or (in a
    /// view from the cache) known to be as desired.
    pub inserts: Vec<Option<Vec<KernelRule>>>,
    /// The rules of each dropped insert's chain.
    pub dropped_inserts: Vec<Option<Vec<KernelRule>>>,
}

/// Reads what a sync of `desired` looks at.
pub fn read_view(
    sock: &mut NfSocket,
    desired: &Ruleset,
    dropped: &[TableId],
    dropped_inserts: &[(TableId, String)],
) -> io::Result<KernelView> {
    let mut v = KernelView::default();
    for id in desired.tables.keys() {
        v.tables.push(read_table(sock, id)?);
    }
    for id in dropped {
        if read_table(sock, id)?.is_some() {
            v.dropped_exist.push(id.clone());
        }
    }
    for ins in &desired.inserts {
        v.inserts.push(read_chain(sock, &ins.table, &ins.chain)?);
    }
    for (t, c) in dropped_inserts {
        v.dropped_inserts.push(read_chain(sock, t, c)?);
    }
    Ok(v)
}

/// What the kernel holds of `t` right after `t` was written (rule handles unknown: only
/// foreign chains need them, and those are always read).
pub fn assumed(t: &Table) -> KernelTable {
    let mut k = KernelTable::default();
    for (name, c) in &t.chains {
        let rules = c
            .rules
            .iter()
            .map(|r| KernelRule {
                chain: name.clone(),
                handle: 0,
                comment: Some(nft::tag_of(r)),
            })
            .collect();
        let kc = KernelChain {
            name: name.clone(),
            base: c.base,
            unknown_base: false,
        };
        k.chains.insert(name.clone(), (kc, rules));
    }
    for (name, s) in &t.sets {
        let ks = KernelSet {
            name: name.clone(),
            flags: nft::SET_F_INTERVAL,
            key_len: s.version.addr_len() as u32,
        };
        k.sets.insert(name.clone(), (ks, s.ranges()));
    }
    for (name, m) in &t.if_maps {
        let ks = KernelSet {
            name: name.clone(),
            flags: if_map_flags(m),
            key_len: nft::IFNAME_LEN as u32,
        };
        let elems = m
            .elements
            .iter()
            .map(|(n, c)| {
                let c = if m.verdicts { c.clone() } else { String::new() };
                (n.clone(), c)
            })
            .collect();
        k.if_maps.insert(name.clone(), (ks, elems));
    }
    k
}

/// The transaction that makes the kernel, as `view` describes it, match `desired` (and
/// deletes what `view` lists as dropped).
pub fn plan_view(
    first_seq: u32,
    desired: &Ruleset,
    view: &KernelView,
    dropped_inserts: &[(TableId, String)],
) -> (Batch, PlanStats) {
    let mut b = Batch::new(first_seq);
    let mut stats = PlanStats::default();
    let mut set_id = 0;
    for ((id, t), k) in desired.tables.iter().zip(&view.tables) {
        plan_table(&mut b, id, t, k.as_ref(), &mut set_id, &mut stats);
    }
    for id in &view.dropped_exist {
        b.add_table(id);
        b.del_table(id);
        stats.tables_deleted += 1;
    }
    for (ins, k) in desired.inserts.iter().zip(&view.inserts) {
        if let Some(k) = k {
            plan_insert(&mut b, &ins.table, &ins.chain, &ins.rules, k, &mut stats);
        }
    }
    for ((t, c), k) in dropped_inserts.iter().zip(&view.dropped_inserts) {
        if let Some(k) = k {
            plan_insert(&mut b, t, c, &[], k, &mut stats);
        }
    }
    (b, stats)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::rules::calyx::{self, NatSettings};
    use crate::rules::model::Family;

    fn desired(pools: &[(&str, bool)]) -> (TableId, Table) {
        let s = NatSettings {
            pools: pools
                .iter()
                .map(|(c, n)| (c.parse().unwrap(), *n))
                .collect(),
            ..NatSettings::default()
        };
        let mut r = calyx::ruleset(&s);
        r.tables.pop_first().unwrap()
    }

    fn plan_of(t: &Table, id: &TableId, k: Option<&KernelTable>) -> (Vec<String>, PlanStats) {
        let mut b = Batch::new(100);
        let mut stats = PlanStats::default();
        plan_table(&mut b, id, t, k, &mut 0, &mut stats);
        (b.finish().1, stats)
    }

    #[test]
    fn equal_kernel_means_an_empty_transaction() {
        let (id, t) = desired(&[("10.65.0.0/16", true), ("10.66.0.0/16", false)]);
        let k = assumed(&t);
        let (ops, stats) = plan_of(&t, &id, Some(&k));
        assert!(ops.is_empty() && stats.is_empty(), "{ops:?}");
    }

    #[test]
    fn a_pool_change_is_one_element_request() {
        let (id, before) = desired(&[("10.65.0.0/16", false), ("10.66.0.0/16", false)]);
        let k = assumed(&before);
        let (_, after) = desired(&[("10.65.0.0/16", true), ("10.66.0.0/16", false)]);
        let (ops, stats) = plan_of(&after, &id, Some(&k));
        assert_eq!(
            ops,
            vec!["add 1 element(s) of set inet calyx masq-ipam-pools-v4"]
        );
        assert_eq!(stats.ranges_changed, 1);
    }

    #[test]
    fn a_changed_rule_rewrites_its_chain_only() {
        let (id, t) = desired(&[("10.65.0.0/16", true)]);
        let mut k = assumed(&t);
        // Someone replaced the first rule of the forward chain.
        k.chains.get_mut("forward").unwrap().1[0].comment = None;
        let (ops, stats) = plan_of(&t, &id, Some(&k));
        assert_eq!(ops[0], "flush chain inet calyx forward");
        assert_eq!(ops.len(), 1 + t.chains["forward"].rules.len(), "{ops:?}");
        assert!(ops[1..]
            .iter()
            .all(|o| o.starts_with("add rule inet calyx forward")));
        assert_eq!(stats.chains_written, 1);
    }

    #[test]
    fn missing_table_is_built_and_a_changed_hook_rebuilds() {
        let (id, t) = desired(&[("10.65.0.0/16", true)]);
        let (ops, stats) = plan_of(&t, &id, None);
        assert_eq!(ops[0], "add table inet calyx");
        assert_eq!(stats.tables_built, 1);
        let mut k = assumed(&t);
        if let Some(b) = k.chains.get_mut("forward").unwrap().0.base.as_mut() {
            b.priority = 0;
        }
        let (ops, _) = plan_of(&t, &id, Some(&k));
        assert_eq!(
            &ops[..3],
            [
                "add table inet calyx",
                "delete table inet calyx",
                "add table inet calyx"
            ]
        );
    }

    #[test]
    fn foreign_chain_rules_kept_first() {
        let id = TableId::new(Family::Ip, "filter");
        let rules = &calyx::ruleset(&NatSettings {
            accept_in_iptables_forward: true,
            ..NatSettings::default()
        })
        .inserts[0]
            .rules;
        let theirs = KernelRule {
            chain: "FORWARD".into(),
            handle: 99,
            comment: None,
        };
        let ours: Vec<KernelRule> = rules
            .iter()
            .enumerate()
            .map(|(i, r)| KernelRule {
                chain: "FORWARD".into(),
                handle: i as u64 + 1,
                comment: Some(nft::tag_of(r)),
            })
            .collect();
        let run = |k: &[KernelRule]| {
            let mut b = Batch::new(1);
            let mut stats = PlanStats::default();
            plan_insert(&mut b, &id, "FORWARD", rules, k, &mut stats);
            b.finish().1
        };
        // In place: nothing to do.
        let mut k = ours.clone();
        k.push(theirs.clone());
        assert!(run(&k).is_empty());
        // Someone inserted above ours: ours are deleted and inserted at the top again; theirs
        // is never deleted.
        let mut k = vec![theirs.clone()];
        k.extend(ours.clone());
        let ops = run(&k);
        assert_eq!(ops.len(), 2 * rules.len(), "{ops:?}");
        assert!(!ops.iter().any(|o| o.contains("handle 99")));
    }
}
