//! AS_PATH and AS4_PATH (RFC 4271 §4.3 / §5.1.2, RFC 5065 §3 confederation segments,
//! RFC 6793 §4 for the 2-/4-octet encodings and the merge of AS_PATH with AS4_PATH).

use bytes::{BufMut, BytesMut};

use crate::error::AttrErrorKind;
use crate::types::Asn;

/// Segment types (RFC 4271 §4.3, RFC 5065 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AsSegmentType {
    /// 1: AS_SET, an unordered set of ASes.
    Set,
    /// 2: AS_SEQUENCE, an ordered list of ASes.
    Sequence,
    /// 3: AS_CONFED_SEQUENCE (RFC 5065).
    ConfedSequence,
    /// 4: AS_CONFED_SET (RFC 5065).
    ConfedSet,
}

impl AsSegmentType {
    /// The wire value.
    pub fn code(self) -> u8 {
        match self {
            AsSegmentType::Set => 1,
            AsSegmentType::Sequence => 2,
            AsSegmentType::ConfedSequence => 3,
            AsSegmentType::ConfedSet => 4,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            1 => AsSegmentType::Set,
            2 => AsSegmentType::Sequence,
            3 => AsSegmentType::ConfedSequence,
            4 => AsSegmentType::ConfedSet,
            _ => return None,
        })
    }

    /// True for the confederation segment types (RFC 5065 §3).
    pub fn is_confed(self) -> bool {
        matches!(
            self,
            AsSegmentType::ConfedSequence | AsSegmentType::ConfedSet
        )
    }
}

/// One path segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AsSegment {
    /// The segment type.
    pub kind: AsSegmentType,
    /// The AS numbers; never empty on the wire (RFC 7606 §7.2).
    pub asns: Vec<Asn>,
}

/// An AS_PATH (or AS4_PATH) value: a list of segments (RFC 4271 §4.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AsPath {
    /// The segments in wire order.
    pub segments: Vec<AsSegment>,
}

/// Maximum AS numbers in one segment (its length field is one octet).
const MAX_SEGMENT_ASNS: usize = 255;

impl AsPath {
    /// A path made of one AS_SEQUENCE (empty if `asns` is empty).
    pub fn sequence(asns: impl IntoIterator<Item = Asn>) -> Self {
        let asns: Vec<Asn> = asns.into_iter().collect();
        if asns.is_empty() {
            return AsPath::default();
        }
        AsPath {
            segments: vec![AsSegment {
                kind: AsSegmentType::Sequence,
                asns,
            }],
        }
    }

    /// Path length for the decision process: an AS_SET counts 1, confederation segments 0
    /// (RFC 4271 §9.1.2.2 a, RFC 5065 §5.3).
    pub fn path_len(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s.kind {
                AsSegmentType::Sequence => s.asns.len(),
                AsSegmentType::Set => 1,
                _ => 0,
            })
            .sum()
    }

    /// The first AS of the path (the neighbour AS), if it starts with an AS_SEQUENCE.
    pub fn first_asn(&self) -> Option<Asn> {
        self.segments
            .iter()
            .find(|s| !s.kind.is_confed())
            .filter(|s| s.kind == AsSegmentType::Sequence)
            .and_then(|s| s.asns.first().copied())
    }

    /// Whether `asn` appears anywhere in the path (loop detection, RFC 4271 §9.1.2).
    pub fn contains(&self, asn: Asn) -> bool {
        self.segments.iter().any(|s| s.asns.contains(&asn))
    }

    /// True if any AS number does not fit 2 octets.
    pub fn has_4_octet(&self) -> bool {
        self.segments
            .iter()
            .any(|s| s.asns.iter().any(|a| !a.is_2_octet()))
    }

    /// Decode from an attribute value; `four_octet` selects the AS number size
    /// (RFC 6793 §4). Malformations per RFC 7606 §7.2.
    pub fn decode(mut i: &[u8], four_octet: bool) -> Result<Self, AttrErrorKind> {
        let width = if four_octet { 4 } else { 2 };
        let mut segments = Vec::new();
        while !i.is_empty() {
            let [ty, count, rest @ ..] = i else {
                return Err(AttrErrorKind::Value); // a single octet left: underrun
            };
            let kind = AsSegmentType::from_code(*ty).ok_or(AttrErrorKind::Value)?;
            let count = usize::from(*count);
            if count == 0 {
                return Err(AttrErrorKind::Value);
            }
            let (body, rest) = rest
                .split_at_checked(count * width)
                .ok_or(AttrErrorKind::Value)?;
            let asns = if four_octet {
                body.chunks_exact(4)
                    .map(|c| Asn(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                    .collect()
            } else {
                body.chunks_exact(2)
                    .map(|c| Asn(u32::from(u16::from_be_bytes([c[0], c[1]]))))
                    .collect()
            };
            segments.push(AsSegment { kind, asns });
            i = rest;
        }
        Ok(AsPath { segments })
    }

    /// Octets of the encoded value.
    pub fn wire_len(&self, four_octet: bool) -> usize {
        let width = if four_octet { 4 } else { 2 };
        self.segments
            .iter()
            .map(|s| s.asns.len() * width + 2 * s.asns.len().div_ceil(MAX_SEGMENT_ASNS))
            .sum()
    }

    /// Append the value. With `four_octet` false, AS numbers that do not fit become
    /// `AS_TRANS` (RFC 6793 §4.2.2). Segments of more than 255 ASes are split; empty segments,
    /// which RFC 7606 §7.2 calls malformed, are left out.
    pub fn encode(&self, four_octet: bool, out: &mut BytesMut) {
        for s in &self.segments {
            for chunk in s.asns.chunks(MAX_SEGMENT_ASNS) {
                out.put_u8(s.kind.code());
                out.put_u8(u8::try_from(chunk.len()).unwrap_or(u8::MAX));
                for a in chunk {
                    if four_octet {
                        out.put_u32(a.0);
                    } else {
                        out.put_u16(a.to_2_octet());
                    }
                }
            }
        }
    }

    /// The AS4_PATH to send alongside a 2-octet AS_PATH: the same path without confederation
    /// segments (RFC 6793 §4.2.2).
    pub fn to_as4_path(&self) -> AsPath {
        AsPath {
            segments: self
                .segments
                .iter()
                .filter(|s| !s.kind.is_confed())
                .cloned()
                .collect(),
        }
    }

    /// Rebuild the true path from a 2-octet AS_PATH and the AS4_PATH (RFC 6793 §4.2.3): if the
    /// AS_PATH is shorter than the AS4_PATH, the AS4_PATH is ignored; otherwise the leading ASes
    /// of the AS_PATH that the AS4_PATH does not cover are kept and the AS4_PATH appended.
    pub fn merge_as4(&self, as4: &AsPath) -> AsPath {
        let n = self.path_len();
        let n4 = as4.path_len();
        if n < n4 {
            return self.clone();
        }
        let mut keep = n - n4;
        let mut segments: Vec<AsSegment> = Vec::new();
        for s in &self.segments {
            if s.kind.is_confed() {
                // Confederation segments precede the AS4 part and count nothing.
                segments.push(s.clone());
                continue;
            }
            if keep == 0 {
                break;
            }
            match s.kind {
                AsSegmentType::Set => {
                    segments.push(s.clone());
                    keep -= 1;
                }
                _ => {
                    let take = keep.min(s.asns.len());
                    segments.push(AsSegment {
                        kind: s.kind,
                        asns: s.asns.iter().take(take).copied().collect(),
                    });
                    keep -= take;
                }
            }
        }
        for s in &as4.segments {
            match segments.last_mut() {
                Some(last)
                    if last.kind == AsSegmentType::Sequence
                        && s.kind == AsSegmentType::Sequence
                        && last.asns.len() + s.asns.len() <= MAX_SEGMENT_ASNS =>
                {
                    last.asns.extend_from_slice(&s.asns);
                }
                _ => segments.push(s.clone()),
            }
        }
        AsPath { segments }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_segments_are_split_and_path_len_counts_sets_once() {
        let p = AsPath::sequence((0..300).map(Asn));
        let mut b = BytesMut::new();
        p.encode(true, &mut b);
        assert_eq!(b.len(), p.wire_len(true));
        let back = AsPath::decode(&b, true).unwrap();
        assert_eq!(back.segments.len(), 2);
        assert_eq!(back.path_len(), 300);
        let s = AsPath {
            segments: vec![
                AsSegment {
                    kind: AsSegmentType::ConfedSequence,
                    asns: vec![Asn(1)],
                },
                AsSegment {
                    kind: AsSegmentType::Set,
                    asns: vec![Asn(2), Asn(3)],
                },
            ],
        };
        assert_eq!(s.path_len(), 1);
        assert_eq!(s.first_asn(), None);
        let empty = AsPath {
            segments: vec![AsSegment {
                kind: AsSegmentType::Set,
                asns: vec![],
            }],
        };
        let mut b = BytesMut::new();
        empty.encode(true, &mut b);
        assert!(b.is_empty() && empty.wire_len(true) == 0);
    }

    #[test]
    fn two_octet_encoding_uses_as_trans() {
        let p = AsPath::sequence([Asn(65001), Asn(4_200_000_000)]);
        let mut b = BytesMut::new();
        p.encode(false, &mut b);
        assert_eq!(&b[..], &[2, 2, 0xfd, 0xe9, 0x5b, 0xa0]);
        assert_eq!(
            AsPath::decode(&b, false).unwrap(),
            AsPath::sequence([Asn(65001), Asn::TRANS])
        );
        assert_eq!(
            AsPath::sequence([Asn(65001), Asn::TRANS])
                .merge_as4(&AsPath::sequence([Asn(4_200_000_000)])),
            p
        );
    }
}
