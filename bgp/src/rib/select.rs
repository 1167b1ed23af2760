//! The decision process (RFC 4271 §9.1): path order, best-path change detection and the next
//! hops exposed to subscribers (several with multipath).

use std::cmp::Ordering;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use super::table::{Dest, Path};
use super::{PeerId, RibGlobal, RibPeer, LOCAL};
use crate::attrs::{FastMap, Small};

/// What the rest of the RIB needs to see of the peers to rank paths.
pub(crate) type Peers = FastMap<PeerId, RibPeer>;

/// Identity of the best path (peer, attribute set) and, when tracked, its next hops: a change
/// of this is a best-path change.
pub(crate) type BestKey = Option<(PeerId, usize, Vec<IpAddr>)>;

/// The best path's identity before a change.
pub(crate) fn best_key<K>(d: &Dest<K>, track: bool, peers: &Peers, g: &RibGlobal) -> BestKey {
    let b = d.best()?;
    let nh = if track {
        next_hops(d, peers, g)
    } else {
        Vec::new()
    };
    Some((b.peer, Arc::as_ptr(&b.attrs) as usize, nh))
}

/// Put the best path first (the rest in preference order).
pub(crate) fn sort_paths<K>(d: &mut Dest<K>, peers: &Peers) {
    if let Small::Many(v) = &mut d.paths {
        v.sort_by(|a, b| compare(a, b, peers));
    }
}

/// The configured address of a peer.
pub(crate) fn peer_addr(peers: &Peers, id: PeerId) -> IpAddr {
    peers
        .get(&id)
        .map(|p| p.cfg.address)
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// The RFC 4271 §9.1.2.2 tie-breakers in order, `Less` meaning `a` is preferred.
pub(crate) fn compare(a: &Path, b: &Path, peers: &Peers) -> Ordering {
    let pre = compare_multipath(a, b, peers);
    if pre != Ordering::Equal {
        return pre;
    }
    let rid = |p: &Path| {
        p.attrs.attrs.originator_id.unwrap_or_else(|| {
            peers
                .get(&p.peer)
                .map(|x| x.router_id)
                .unwrap_or(Ipv4Addr::UNSPECIFIED)
        })
    };
    u32::from(rid(a))
        .cmp(&u32::from(rid(b)))
        .then_with(|| {
            a.attrs
                .attrs
                .cluster_list
                .len()
                .cmp(&b.attrs.attrs.cluster_list.len())
        })
        .then_with(|| peer_addr(peers, a.peer).cmp(&peer_addr(peers, b.peer)))
}

/// The steps up to (and including) eBGP over iBGP: paths equal here are ECMP candidates.
fn compare_multipath(a: &Path, b: &Path, peers: &Peers) -> Ordering {
    // Our own routes first (like a weight).
    let local = (b.peer == LOCAL).cmp(&(a.peer == LOCAL));
    if local != Ordering::Equal {
        return local;
    }
    let (x, y) = (&a.attrs.attrs, &b.attrs.attrs);
    let lp = y
        .local_pref
        .unwrap_or(100)
        .cmp(&x.local_pref.unwrap_or(100));
    if lp != Ordering::Equal {
        return lp;
    }
    let len =
        |p: &calyx_proto::PathAttributes| p.as_path.as_ref().map(|a| a.path_len()).unwrap_or(0);
    let l = len(x).cmp(&len(y));
    if l != Ordering::Equal {
        return l;
    }
    let o = x.origin.cmp(&y.origin);
    if o != Ordering::Equal {
        return o;
    }
    let first = |p: &calyx_proto::PathAttributes| p.as_path.as_ref().and_then(|a| a.first_asn());
    if first(x) == first(y) {
        let m = x.med.unwrap_or(0).cmp(&y.med.unwrap_or(0));
        if m != Ordering::Equal {
            return m;
        }
    }
    let ibgp = |p: &Path| peers.get(&p.peer).is_some_and(|x| x.ibgp);
    ibgp(a).cmp(&ibgp(b))
}

/// Next hops of the best route as a subscriber sees them: empty for our own routes, several
/// with multipath (paths equal up to eBGP-over-iBGP).
pub(crate) fn next_hops<K>(d: &Dest<K>, peers: &Peers, g: &RibGlobal) -> Vec<IpAddr> {
    let paths = d.paths.as_slice();
    let Some(best) = paths.first() else {
        return Vec::new();
    };
    if best.peer == LOCAL {
        return Vec::new();
    }
    let nh = |p: &Path| {
        if p.attrs.next_hop.is_unspecified() {
            peer_addr(peers, p.peer)
        } else {
            p.attrs.next_hop
        }
    };
    if !g.multipath {
        return vec![nh(best)];
    }
    let mut v: Vec<IpAddr> = paths
        .iter()
        .take_while(|p| compare_multipath(p, best, peers) == Ordering::Equal)
        .map(nh)
        .collect();
    v.sort();
    v.dedup();
    v
}
