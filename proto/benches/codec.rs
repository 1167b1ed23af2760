//! Throughput of the UPDATE codec over a realistic stream: 1,000,000 IPv4 prefixes in attribute
//! sets of 10–20 prefixes, AS paths of 2–6 hops, some communities and MEDs, packed into UPDATE
//! messages of at most 4096 octets. Criterion reports prefixes per second ("elem/s").
//!
//! Run with `cargo bench -p calyx-proto`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::Ipv4Addr;

use bytes::BytesMut;
use calyx_proto::message::decode_stream;
use calyx_proto::pack::UpdatePacker;
use calyx_proto::{
    AsPath, Asn, Community, Ipv4Prefix, Message, Nlri, Origin, ParseContext, PathAttributes,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const PREFIXES: usize = 1_000_000;

/// A small deterministic generator (xorshift), so that every run sees the same stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn workload() -> Vec<(PathAttributes, Vec<Nlri<Ipv4Prefix>>)> {
    let mut rng = Rng(0x5eed_1234_abcd_9876);
    let mut groups = Vec::new();
    let mut n = 0usize;
    while n < PREFIXES {
        let size = (rng.range(10, 20) as usize).min(PREFIXES - n);
        let hops = rng.range(2, 6);
        let path =
            AsPath::sequence((0..hops).map(|_| Asn(rng.range(64_512, 4_200_000_000) as u32)));
        let mut attrs = PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(path),
            next_hop: Some(Ipv4Addr::new(10, 0, (rng.next() % 250) as u8, 1)),
            ..Default::default()
        };
        if rng.next() % 3 == 0 {
            attrs.med = Some(rng.range(0, 1000) as u32);
        }
        if rng.next() % 2 == 0 {
            let k = rng.range(1, 4);
            attrs.communities = (0..k).map(|_| Community(rng.next() as u32)).collect();
        }
        let prefixes = (0..size)
            .map(|i| {
                // Mostly /24s, some /22 and /23, spread over the address space.
                let idx = (n + i) as u32;
                let len = match rng.next() % 10 {
                    0 => 22,
                    1 => 23,
                    _ => 24,
                };
                let addr = Ipv4Addr::from(0x0100_0000u32.wrapping_add(idx << 8));
                Nlri::new(Ipv4Prefix::new(addr, len).unwrap())
            })
            .collect();
        groups.push((attrs, prefixes));
        n += size;
    }
    groups
}

fn encode_all(
    groups: &[(PathAttributes, Vec<Nlri<Ipv4Prefix>>)],
    packer: &mut UpdatePacker,
    out: &mut BytesMut,
) {
    for (attrs, nlri) in groups {
        packer.announce_ipv4(attrs, nlri, out).unwrap();
    }
}

fn bench(c: &mut Criterion) {
    let ctx = ParseContext::modern();
    let groups = workload();
    let mut packer = UpdatePacker::new(ctx);
    let mut stream = BytesMut::with_capacity(16 << 20);
    encode_all(&groups, &mut packer, &mut stream);
    let stream = stream.freeze();

    // Sanity check: the stream decodes to exactly the prefixes we put in.
    let mut count = 0;
    let mut messages = 0;
    let mut off = 0;
    while let Some((Message::Update(u), len)) = decode_stream(&stream[off..], &ctx).unwrap() {
        assert!(u.errors.is_empty());
        count += u.nlri.len();
        messages += 1;
        off += len;
    }
    assert_eq!(count, PREFIXES);
    eprintln!(
        "stream: {PREFIXES} prefixes, {} attribute sets, {messages} UPDATEs, {} octets",
        groups.len(),
        stream.len()
    );

    let mut g = c.benchmark_group("update");
    g.throughput(Throughput::Elements(PREFIXES as u64));
    g.sample_size(20);
    g.bench_function("decode_1M_prefixes", |b| {
        b.iter(|| {
            let mut off = 0;
            let mut n = 0;
            while let Ok(Some((Message::Update(u), len))) = decode_stream(&stream[off..], &ctx) {
                n += u.nlri.len();
                off += len;
            }
            black_box(n)
        })
    });
    g.bench_function("decode_into_reused_1M_prefixes", |b| {
        let mut u = calyx_proto::UpdateMessage::default();
        b.iter(|| {
            let mut off = 0;
            let mut n = 0;
            while let Ok(Some(len)) = calyx_proto::frame_length(&stream[off..], &ctx) {
                let Some(m) = stream.get(off..off + len) else {
                    break;
                };
                if let Ok(true) = calyx_proto::decode_update_into(m, &ctx, &mut u) {
                    n += u.nlri.len();
                }
                off += len;
            }
            black_box(n)
        })
    });
    let mut out = BytesMut::with_capacity(stream.len() + 4096);
    g.bench_function("encode_1M_prefixes", |b| {
        b.iter(|| {
            out.clear();
            encode_all(&groups, &mut packer, &mut out);
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
