//! Export: what each peer is sent for a best path (RFC 4271 §9.2 split horizon, RFC 4456
//! reflection, Calico's default export, per-peer policy), and how its attributes are
//! rewritten (next hop, AS_PATH, LOCAL_PREF, MED, ORIGINATOR_ID/CLUSTER_LIST).

use std::net::IpAddr;
use std::sync::Arc;

use calyx_proto::{AsPath, AsSegment, AsSegmentType, Asn, Community};

use super::select::Peers;
use super::table::Path;
use super::{PeerId, RibGlobal, RibPeer, UpInfo, LOCAL};
use crate::attrs::{Attrs, FastMap, Prefix, RouteAttrs};
use crate::policy::{DefaultAction, PeerType, Verdict};

/// (source attribute set, source peer, destination peer, export rule).
type CacheKey = (usize, PeerId, PeerId, u32);

/// Exported attribute sets, computed once per (source set, peer, rule) while sending. Kept
/// only for one flush: what was sent is not stored (the Adj-RIB-Out is a mark per prefix),
/// so exported sets live only as long as the batches that carry them.
#[derive(Debug, Default)]
pub(crate) struct ExportCache {
    map: FastMap<CacheKey, (Attrs, Option<Attrs>)>,
    /// The last answer: prefixes sharing a set arrive together.
    last: Option<(CacheKey, Option<Attrs>)>,
}

impl ExportCache {
    fn get_or_insert(
        &mut self,
        key: CacheKey,
        src: &Attrs,
        make: impl FnOnce() -> Option<Attrs>,
    ) -> Option<Attrs> {
        if let Some((k, out)) = &self.last {
            if *k == key {
                return out.clone();
            }
        }
        let out = match self.map.get(&key) {
            Some((_, out)) => out.clone(),
            None => {
                let out = make();
                // The source set is held so that its address is not reused while cached.
                self.map.insert(key, (src.clone(), out.clone()));
                out
            }
        };
        self.last = Some((key, out.clone()));
        out
    }

    /// Forget everything (end of a flush).
    pub fn clear(&mut self) {
        self.map.clear();
        self.last = None;
    }
}

/// What to advertise to peer `qid` for `prefix` whose best path is `best` (None: nothing, or
/// withdraw what was advertised).
pub(crate) fn export(
    qid: PeerId,
    q: &RibPeer,
    prefix: Prefix,
    best: Option<&Path>,
    peers: &Peers,
    g: &RibGlobal,
    cache: &mut ExportCache,
) -> Option<Attrs> {
    let up = q.up.as_ref()?;
    if !up.families.contains(&prefix.family()) {
        return None;
    }
    let best = best?;
    if best.peer == qid {
        return None;
    }
    let src = if best.peer == LOCAL {
        None
    } else {
        Some(peers.get(&best.peer)?)
    };
    let src_type = src.map(|s| s.peer_type()).unwrap_or(PeerType::Local);
    let a = &best.attrs.attrs;
    if a.has_community(Community::NO_ADVERTISE) {
        return None;
    }
    if !q.ibgp
        && (a.has_community(Community::NO_EXPORT)
            || a.has_community(Community::NO_EXPORT_SUBCONFED))
    {
        return None;
    }
    let reflecting = src_type == PeerType::Ibgp && q.ibgp;
    if reflecting
        && !(src.is_some_and(|s| s.cfg.route_reflector_client) || q.cfg.route_reflector_client)
    {
        // iBGP split horizon (RFC 4271 §9.2), relaxed by route reflection (RFC 4456 §6).
        return None;
    }
    let calico_default = src_type == PeerType::Local || reflecting;
    let rule = match &q.cfg.export {
        None => {
            if !calico_default {
                return None;
            }
            u32::MAX
        }
        Some(pol) => match pol.evaluate(&prefix.to_net(), a, src_type) {
            Verdict::Reject | Verdict::Default(DefaultAction::Reject) => return None,
            Verdict::Default(DefaultAction::Accept) => u32::MAX,
            Verdict::Default(DefaultAction::Calico) => {
                if !calico_default {
                    return None;
                }
                u32::MAX
            }
            Verdict::Rule(i) => u32::try_from(i).unwrap_or(u32::MAX - 1),
        },
    };
    let key: CacheKey = (Arc::as_ptr(&best.attrs) as usize, best.peer, qid, rule);
    cache.get_or_insert(key, &best.attrs, || {
        transform(q, up, &best.attrs, best.peer, src, prefix, rule, g).map(Arc::new)
    })
}

/// The attributes of `src_attrs` as sent to `q`: next hop, AS_PATH, LOCAL_PREF, MED,
/// reflection attributes, then the export rule's actions.
#[allow(clippy::too_many_arguments)]
fn transform(
    q: &RibPeer,
    up: &UpInfo,
    src_attrs: &RouteAttrs,
    src_id: PeerId,
    src: Option<&RibPeer>,
    prefix: Prefix,
    rule: u32,
    g: &RibGlobal,
) -> Option<RouteAttrs> {
    let mut ra = src_attrs.clone();
    let local = src_id == LOCAL;
    let mut self_nh = local;
    if q.ibgp {
        if ra.attrs.local_pref.is_none() {
            ra.attrs.local_pref = Some(100);
        }
        if q.cfg.next_hop_self {
            self_nh = true;
        }
        if let Some(s) = src.filter(|s| s.ibgp) {
            // Reflection (RFC 4456 §8).
            if ra.attrs.originator_id.is_none() {
                ra.attrs.originator_id = Some(s.router_id);
            }
            ra.attrs.cluster_list.insert(0, g.cluster_id);
        }
    } else {
        let path = ra.attrs.as_path.take().unwrap_or_default();
        // The AS this peer sees us as: its `local as` when it has one (Calico's
        // `localASNumber`).
        let own = q.cfg.local_as.map_or(g.local_as, Asn);
        ra.attrs.as_path = Some(prepend(path, own));
        ra.attrs.local_pref = None;
        if src.is_some_and(|s| !s.ibgp) {
            ra.attrs.med = None;
        }
        ra.attrs.originator_id = None;
        ra.attrs.cluster_list.clear();
        self_nh = true;
    }
    if q.cfg.keep_original_next_hop && !local {
        self_nh = false;
    }
    if self_nh || ra.next_hop.is_unspecified() {
        ra.link_local = None;
        ra.next_hop = match (prefix, up.local_addr) {
            (Prefix::V4(_), IpAddr::V4(a)) => IpAddr::V4(a),
            (Prefix::V4(_), IpAddr::V6(_)) => IpAddr::V4(g.next_hop_v4.unwrap_or(g.router_id)),
            (Prefix::V6(_), IpAddr::V6(a)) => IpAddr::V6(a),
            (Prefix::V6(_), IpAddr::V4(a)) => {
                IpAddr::V6(g.next_hop_v6.unwrap_or_else(|| a.to_ipv6_mapped()))
            }
        };
    }
    if let Some(r) = q
        .cfg
        .export
        .as_ref()
        .and_then(|p| p.rules.get(rule as usize))
    {
        r.apply(&mut ra.attrs);
    }
    Some(ra)
}

fn prepend(mut path: AsPath, asn: Asn) -> AsPath {
    match path.segments.first_mut() {
        Some(s) if s.kind == AsSegmentType::Sequence && s.asns.len() < 255 => s.asns.insert(0, asn),
        _ => path.segments.insert(
            0,
            AsSegment {
                kind: AsSegmentType::Sequence,
                asns: vec![asn],
            },
        ),
    }
    path
}
