//! Rule expressions: the contents of `NFTA_RULE_EXPRESSIONS` for each [`Match`] and
//! [`Action`] of the model (`meta`, `cmp`, `range`, `payload`, `lookup`, `ct`, `bitwise`,
//! `immediate`, `log`, `masq`, `nat`).

use super::*;

fn expr(buf: &mut Vec<u8>, name: &str, body: impl FnOnce(&mut Vec<u8>)) {
    let e = nest(buf, LIST_ELEM);
    put_str(buf, EXPR_NAME, name);
    let d = nest(buf, EXPR_DATA);
    body(buf);
    nest_end(buf, d);
    nest_end(buf, e);
}

fn meta_load(buf: &mut Vec<u8>, key: u32) {
    expr(buf, "meta", |b| {
        put_be32(b, 2, key); // NFTA_META_KEY
        put_be32(b, 1, REG_1); // NFTA_META_DREG
    });
}

fn cmp_eq(buf: &mut Vec<u8>, data: &[u8]) {
    cmp(buf, CMP_EQ, data);
}

fn cmp(buf: &mut Vec<u8>, op: u32, data: &[u8]) {
    expr(buf, "cmp", |b| {
        put_be32(b, 1, REG_1); // NFTA_CMP_SREG
        put_be32(b, 2, op); // NFTA_CMP_OP
        let d = nest(b, 3); // NFTA_CMP_DATA
        put_attr(b, DATA_VALUE, data);
        nest_end(b, d);
    });
}

fn payload_transport(buf: &mut Vec<u8>, offset: u32, len: u32) {
    expr(buf, "payload", |b| {
        put_be32(b, 1, REG_1); // NFTA_PAYLOAD_DREG
        put_be32(b, 2, PAYLOAD_TRANSPORT); // NFTA_PAYLOAD_BASE
        put_be32(b, 3, offset); // NFTA_PAYLOAD_OFFSET
        put_be32(b, 4, len); // NFTA_PAYLOAD_LEN
    });
}

/// `ct state & mask != 0` (`== 0` when negated). The state register is in host byte order.
fn ct_state(buf: &mut Vec<u8>, mask: u32, negate: bool) {
    expr(buf, "ct", |b| {
        put_be32(b, 1, REG_1); // NFTA_CT_DREG
        put_be32(b, 2, CT_STATE); // NFTA_CT_KEY
    });
    expr(buf, "bitwise", |b| {
        put_be32(b, 1, REG_1); // NFTA_BITWISE_SREG
        put_be32(b, 2, REG_1); // NFTA_BITWISE_DREG
        put_be32(b, 3, 4); // NFTA_BITWISE_LEN
        let m = nest(b, 4); // NFTA_BITWISE_MASK
        put_attr(b, DATA_VALUE, &mask.to_ne_bytes());
        nest_end(b, m);
        let x = nest(b, 5); // NFTA_BITWISE_XOR
        put_attr(b, DATA_VALUE, &[0u8; 4]);
        nest_end(b, x);
    });
    cmp(buf, if negate { CMP_EQ } else { CMP_NEQ }, &[0u8; 4]);
}

/// `th dport first-last` (or `!=`): a `cmp` for one port, a `range` for more.
fn port(buf: &mut Vec<u8>, dst: bool, first: u16, last: u16, negate: bool) {
    payload_transport(buf, if dst { 2 } else { 0 }, 2);
    if first == last {
        cmp(
            buf,
            if negate { CMP_NEQ } else { CMP_EQ },
            &first.to_be_bytes(),
        );
    } else {
        expr(buf, "range", |b| {
            put_be32(b, 1, REG_1); // NFTA_RANGE_SREG
            put_be32(b, 2, u32::from(negate)); // NFTA_RANGE_OP: EQ 0, NEQ 1
            let f = nest(b, 3); // NFTA_RANGE_FROM_DATA
            put_attr(b, DATA_VALUE, &first.to_be_bytes());
            nest_end(b, f);
            let t = nest(b, 4); // NFTA_RANGE_TO_DATA
            put_attr(b, DATA_VALUE, &last.to_be_bytes());
            nest_end(b, t);
        });
    }
}

fn ifname(buf: &mut Vec<u8>, key: u32, name: &IfName) {
    meta_load(buf, key);
    match name {
        // The kernel compares the register with the data's length: without the trailing
        // NUL, "cali" matches every name that starts with it.
        IfName::Prefix(p) => cmp_eq(buf, p.as_bytes()),
        IfName::Exact(n) => {
            let mut v = [0u8; 16];
            let len = n.len().min(15);
            v[..len].copy_from_slice(&n.as_bytes()[..len]);
            cmp_eq(buf, &v);
        }
    }
}

fn payload_addr(buf: &mut Vec<u8>, v: IpVersion, src: bool) {
    let (offset, len) = match (v, src) {
        (IpVersion::V4, true) => (12, 4),
        (IpVersion::V4, false) => (16, 4),
        (IpVersion::V6, true) => (8, 16),
        (IpVersion::V6, false) => (24, 16),
    };
    expr(buf, "payload", |b| {
        put_be32(b, 1, REG_1); // NFTA_PAYLOAD_DREG
        put_be32(b, 2, PAYLOAD_NETWORK); // NFTA_PAYLOAD_BASE
        put_be32(b, 3, offset); // NFTA_PAYLOAD_OFFSET
        put_be32(b, 4, len); // NFTA_PAYLOAD_LEN
    });
}

fn lookup(buf: &mut Vec<u8>, set: &str, negate: bool) {
    expr(buf, "lookup", |b| {
        put_str(b, 1, set); // NFTA_LOOKUP_SET
        put_be32(b, 2, REG_1); // NFTA_LOOKUP_SREG
        put_be32(b, 5, if negate { LOOKUP_F_INV } else { 0 }); // NFTA_LOOKUP_FLAGS
    });
}

fn verdict(buf: &mut Vec<u8>, code: i32, chain: Option<&str>) {
    expr(buf, "immediate", |b| {
        put_be32(b, 1, REG_VERDICT); // NFTA_IMMEDIATE_DREG
        let d = nest(b, 2); // NFTA_IMMEDIATE_DATA
        let v = nest(b, DATA_VERDICT);
        put_be32(b, VERDICT_CODE, code as u32);
        if let Some(c) = chain {
            put_str(b, VERDICT_CHAIN, c);
        }
        nest_end(b, v);
        nest_end(b, d);
    });
}

fn immediate_data(buf: &mut Vec<u8>, reg: u32, data: &[u8]) {
    expr(buf, "immediate", |b| {
        put_be32(b, 1, reg);
        let d = nest(b, 2);
        put_attr(b, DATA_VALUE, data);
        nest_end(b, d);
    });
}

fn port_regs(buf: &mut Vec<u8>, ports: Option<(u16, u16)>) -> bool {
    if let Some((lo, hi)) = ports {
        immediate_data(buf, REG_2, &lo.to_be_bytes());
        immediate_data(buf, REG_3, &hi.to_be_bytes());
        true
    } else {
        false
    }
}

/// Encodes a rule's expressions (the contents of `NFTA_RULE_EXPRESSIONS`).
pub fn encode_exprs(rule: &Rule) -> Vec<u8> {
    let mut b = Vec::with_capacity(256);
    for m in &rule.matches {
        match m {
            Match::Protocol(v) => {
                meta_load(&mut b, META_NFPROTO);
                cmp_eq(&mut b, &[if *v == IpVersion::V4 { 2 } else { 10 }]);
            }
            Match::Iifname(n) => ifname(&mut b, META_IIFNAME, n),
            Match::Oifname(n) => ifname(&mut b, META_OIFNAME, n),
            Match::SaddrInSet {
                version,
                set,
                negate,
            } => {
                payload_addr(&mut b, *version, true);
                lookup(&mut b, set, *negate);
            }
            Match::DaddrInSet {
                version,
                set,
                negate,
            } => {
                payload_addr(&mut b, *version, false);
                lookup(&mut b, set, *negate);
            }
            Match::L4proto(p) => {
                meta_load(&mut b, META_L4PROTO);
                cmp_eq(&mut b, &[*p]);
            }
            Match::IfnameInSet { oif, set, negate } => {
                meta_load(&mut b, if *oif { META_OIFNAME } else { META_IIFNAME });
                lookup(&mut b, set, *negate);
            }
            Match::NotL4proto(p) => {
                meta_load(&mut b, META_L4PROTO);
                cmp(&mut b, CMP_NEQ, &[*p]);
            }
            Match::CtState { mask, negate } => ct_state(&mut b, *mask, *negate),
            Match::Port {
                dst,
                first,
                last,
                negate,
            } => port(&mut b, *dst, *first, *last, *negate),
            Match::Icmp { ty, code, negate } => {
                let op = if *negate { CMP_NEQ } else { CMP_EQ };
                match code {
                    Some(c) => {
                        payload_transport(&mut b, 0, 2);
                        cmp(&mut b, op, &[*ty, *c]);
                    }
                    None => {
                        payload_transport(&mut b, 0, 1);
                        cmp(&mut b, op, &[*ty]);
                    }
                }
            }
        }
    }
    match &rule.action {
        Action::Accept => verdict(&mut b, NF_ACCEPT, None),
        Action::Drop => verdict(&mut b, NF_DROP, None),
        Action::Return => verdict(&mut b, NFT_RETURN, None),
        Action::Jump(c) => verdict(&mut b, NFT_JUMP, Some(c)),
        Action::Goto(c) => verdict(&mut b, NFT_GOTO, Some(c)),
        Action::Vmap { oif, map } => {
            meta_load(&mut b, if *oif { META_OIFNAME } else { META_IIFNAME });
            expr(&mut b, "lookup", |x| {
                put_str(x, 1, map); // NFTA_LOOKUP_SET
                put_be32(x, 2, REG_1); // NFTA_LOOKUP_SREG
                put_be32(x, 3, REG_VERDICT); // NFTA_LOOKUP_DREG
            });
        }
        Action::Log(prefix) => expr(&mut b, "log", |x| {
            put_str(x, 2, prefix); // NFTA_LOG_PREFIX
        }),
        Action::Masquerade {
            ports,
            fully_random,
        } => {
            let has_ports = port_regs(&mut b, *ports);
            expr(&mut b, "masq", |x| {
                let mut flags = 0;
                if *fully_random {
                    flags |= NAT_RANGE_PROTO_RANDOM_FULLY;
                }
                if has_ports {
                    flags |= NAT_RANGE_PROTO_SPECIFIED;
                }
                if flags != 0 {
                    put_be32(x, 1, flags); // NFTA_MASQ_FLAGS
                }
                if has_ports {
                    put_be32(x, 2, REG_2); // NFTA_MASQ_REG_PROTO_MIN
                    put_be32(x, 3, REG_3); // NFTA_MASQ_REG_PROTO_MAX
                }
            });
        }
        Action::Snat {
            addr,
            ports,
            fully_random,
        } => {
            let (data, nfproto) = match addr {
                std::net::IpAddr::V4(a) => (a.octets().to_vec(), 2u32),
                std::net::IpAddr::V6(a) => (a.octets().to_vec(), 10u32),
            };
            immediate_data(&mut b, REG_1, &data);
            let has_ports = port_regs(&mut b, *ports);
            expr(&mut b, "nat", |x| {
                put_be32(x, 1, NFT_NAT_SNAT); // NFTA_NAT_TYPE
                put_be32(x, 2, nfproto); // NFTA_NAT_FAMILY
                put_be32(x, 3, REG_1); // NFTA_NAT_REG_ADDR_MIN
                put_be32(x, 4, REG_1); // NFTA_NAT_REG_ADDR_MAX
                let mut flags = NAT_RANGE_MAP_IPS;
                if has_ports {
                    put_be32(x, 5, REG_2); // NFTA_NAT_REG_PROTO_MIN
                    put_be32(x, 6, REG_3); // NFTA_NAT_REG_PROTO_MAX
                    flags |= NAT_RANGE_PROTO_SPECIFIED;
                }
                if *fully_random {
                    flags |= NAT_RANGE_PROTO_RANDOM_FULLY;
                }
                put_be32(x, 7, flags); // NFTA_NAT_FLAGS
            });
        }
    }
    b
}
