//! Outbound encoding of what the RIB hands a session: route batches into packed UPDATEs.
//!
//! The RIB asks [`fits`] before it marks a prefix as advertised to a peer, with the same
//! encoder the session uses afterwards ([`encode_batch`]), so an announcement that cannot be
//! encoded for that peer (an attribute set longer than the peer's maximum message, RFC 4271
//! §4.1 / RFC 8654) is never assumed sent: it is counted, logged and left out, and tried again
//! when its best path changes.

use std::net::IpAddr;

use bytes::BytesMut;
use calyx_proto::pack::UpdatePacker;
use calyx_proto::{EncodeError, Ipv4Prefix, Ipv6Prefix, MpNextHop, Nlri, ParseContext};

use crate::attrs::Attrs;
use crate::rib::OutBatch;

/// An announcement [`encode_batch`] could not encode, and withdrew instead.
#[derive(Debug)]
pub(crate) struct Unencoded {
    /// How many prefixes it carried.
    pub prefixes: usize,
    /// Why.
    pub error: EncodeError,
}

/// Encode one batch into `b`: withdrawals first, then announcements packed per attribute set.
///
/// An announcement that cannot be encoded is not dropped silently: its prefixes are withdrawn
/// instead (the peer may hold an older, encodable version of the route, which must not stay),
/// and it is returned so that the caller logs and counts it. The RIB checks every set with
/// [`fits`] first, so this only happens if the two disagree.
pub(crate) fn encode_batch(
    packer: &mut UpdatePacker,
    batch: OutBatch,
    b: &mut BytesMut,
) -> Vec<Unencoded> {
    let mut failed = Vec::new();
    let mut withdraw_v4 = batch.withdraw_v4;
    let mut withdraw_v6 = batch.withdraw_v6;
    // Announcements are encoded into their own buffer, so that withdrawals of failed ones can
    // still go first.
    let mut ann = BytesMut::new();
    for (a, ps) in batch.v4 {
        if let Err(error) = announce_v4(packer, &a, &ps, &mut ann) {
            failed.push(Unencoded {
                prefixes: ps.len(),
                error,
            });
            withdraw_v4.extend(ps);
        }
    }
    for (a, ps) in batch.v6 {
        if let Err(error) = announce_v6(packer, &a, &ps, &mut ann) {
            failed.push(Unencoded {
                prefixes: ps.len(),
                error,
            });
            withdraw_v6.extend(ps);
        }
    }
    if !withdraw_v4.is_empty() {
        let w: Vec<Nlri<_>> = withdraw_v4.into_iter().map(Nlri::new).collect();
        // Withdrawals carry no attributes: they always fit (the packer splits them).
        if let Err(error) = packer.withdraw_ipv4(&w, b) {
            failed.push(Unencoded {
                prefixes: w.len(),
                error,
            });
        }
    }
    if !withdraw_v6.is_empty() {
        let w: Vec<Nlri<_>> = withdraw_v6.into_iter().map(Nlri::new).collect();
        if let Err(error) = packer.withdraw_mp(&w, b) {
            failed.push(Unencoded {
                prefixes: w.len(),
                error,
            });
        }
    }
    b.extend_from_slice(&ann);
    failed
}

fn announce_v4(
    packer: &mut UpdatePacker,
    a: &Attrs,
    ps: &[Ipv4Prefix],
    b: &mut BytesMut,
) -> Result<usize, EncodeError> {
    let n: Vec<Nlri<_>> = ps.iter().copied().map(Nlri::new).collect();
    match a.next_hop {
        IpAddr::V4(nh) => {
            let mut attrs = a.attrs.clone();
            attrs.next_hop = Some(nh);
            packer.announce_ipv4(&attrs, &n, b)
        }
        IpAddr::V6(global) => {
            let nh = MpNextHop::V6 {
                global,
                link_local: a.link_local,
            };
            packer.announce_mp(&a.attrs, &nh, &n, b)
        }
    }
}

fn announce_v6(
    packer: &mut UpdatePacker,
    a: &Attrs,
    ps: &[Ipv6Prefix],
    b: &mut BytesMut,
) -> Result<usize, EncodeError> {
    let n: Vec<Nlri<_>> = ps.iter().copied().map(Nlri::new).collect();
    let nh = match a.next_hop {
        IpAddr::V6(global) => MpNextHop::V6 {
            global,
            link_local: a.link_local,
        },
        IpAddr::V4(v4) => MpNextHop::V6 {
            global: v4.to_ipv6_mapped(),
            link_local: None,
        },
    };
    packer.announce_mp(&a.attrs, &nh, &n, b)
}

/// Whether an announcement with the exported set `a` can be encoded for a session with
/// context `ctx`: the same code as [`encode_batch`], on one prefix of the family (`v6`).
pub(crate) fn fits(a: &Attrs, v6: bool, ctx: &ParseContext) -> Result<(), EncodeError> {
    let mut packer = UpdatePacker::new(*ctx);
    let mut b = BytesMut::new();
    let r = if v6 {
        announce_v6(&mut packer, a, &[Ipv6Prefix::default()], &mut b)
    } else {
        announce_v4(&mut packer, a, &[Ipv4Prefix::default()], &mut b)
    };
    r.map(|_| ())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::attrs::RouteAttrs;
    use calyx_proto::message::decode_stream;
    use calyx_proto::{Community, Message, PathAttributes};
    use std::sync::Arc;

    fn set(communities: usize) -> Attrs {
        Arc::new(RouteAttrs {
            attrs: PathAttributes {
                origin: Some(calyx_proto::Origin::Igp),
                as_path: Some(calyx_proto::AsPath::default()),
                communities: (0..communities as u32).map(Community).collect(),
                ..Default::default()
            },
            next_hop: IpAddr::from([10, 0, 0, 1]),
            link_local: None,
        })
    }

    fn p(s: &str) -> Ipv4Prefix {
        match crate::attrs::Prefix::from_net(s.parse().unwrap()) {
            crate::attrs::Prefix::V4(p) => p,
            crate::attrs::Prefix::V6(_) => unreachable!(),
        }
    }

    #[test]
    fn an_attribute_set_longer_than_a_message_does_not_fit_and_is_withdrawn_instead() {
        let ctx = ParseContext::new();
        // 4 octets a community: 1100 of them exceed a 4096-octet message.
        let big = set(1100);
        let small = set(2);
        assert!(fits(&big, false, &ctx).is_err());
        assert!(fits(&small, false, &ctx).is_ok());
        // With extended messages (RFC 8654) the same set fits.
        let ext = ParseContext {
            extended_message: true,
            ..ctx
        };
        assert!(fits(&big, false, &ext).is_ok());

        let batch = OutBatch {
            v4: vec![
                (big, vec![p("10.1.0.0/24"), p("10.2.0.0/24")]),
                (small, vec![p("10.3.0.0/24")]),
            ],
            ..Default::default()
        };
        let mut packer = UpdatePacker::new(ctx);
        let mut b = BytesMut::new();
        let failed = encode_batch(&mut packer, batch, &mut b);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].prefixes, 2);
        let mut msgs = Vec::new();
        while let Some((m, len)) = decode_stream(&b, &ctx).unwrap() {
            let _ = b.split_to(len);
            msgs.push(m);
        }
        // The withdrawal of the two that did not fit, then the one that did.
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        let Message::Update(w) = &msgs[0] else {
            panic!("{msgs:?}")
        };
        assert_eq!(w.withdrawn.len(), 2);
        assert!(w.nlri.is_empty());
        let Message::Update(a) = &msgs[1] else {
            panic!("{msgs:?}")
        };
        assert_eq!(a.nlri.len(), 1);
        assert!(a.withdrawn.is_empty());
    }
}
