//! Netlink sockets: a request socket with pipelined batches and dumps, and a notification
//! socket subscribed to route, neighbour, link and address events.

use std::io;

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::sys::setsockopt_int;
use crate::wire::{self, RawMsg, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK, NLM_F_REQUEST};

/// Bytes of requests sent per `sendmsg`; below the default socket send buffer (208 KiB).
const CHUNK_BYTES: usize = 96 * 1024;
/// Requests per `sendmsg` at most, so that even if every one fails the error replies fit in
/// the receive buffer.
const CHUNK_MSGS: usize = 2048;
/// Receive buffer asked for (needs CAP_NET_ADMIN for the forced size).
const RCVBUF: libc::c_int = 64 * 1024 * 1024;

/// Outcome of a request that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NlFailure {
    /// Positive errno.
    pub errno: i32,
    /// Extended-ack text, if the kernel gave one.
    pub text: Option<String>,
}

impl NlFailure {
    /// Human-readable form: `"<strerror>: <ext-ack text>"`.
    pub fn describe(&self) -> String {
        let base = io::Error::from_raw_os_error(self.errno).to_string();
        match &self.text {
            Some(t) => format!("{base}: {t}"),
            None => base,
        }
    }
}

/// Result of a batch: the failed requests by index, and whether replies were lost (receive
/// buffer overrun), in which case the caller must verify with a dump.
#[derive(Debug, Default)]
pub struct BatchResult {
    /// `(index, failure)` of each failed request.
    pub failed: Vec<(usize, NlFailure)>,
    /// Some replies were dropped by the kernel.
    pub lost_replies: bool,
}

/// A route-netlink request socket, blocking, with pipelined batches.
pub struct NlSocket {
    sock: Socket,
    seq: u32,
    out: Vec<u8>,
    inb: Vec<u8>,
}

fn open_socket() -> io::Result<Socket> {
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind_auto()?;
    // Best effort: a larger buffer where permitted, the default otherwise.
    if setsockopt_int(&sock, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, RCVBUF).is_err() {
        let _ = sock.set_rx_buf_sz(RCVBUF as usize);
    }
    Ok(sock)
}

impl NlSocket {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> io::Result<NlSocket> {
        let sock = open_socket()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        let _ = sock.set_cap_ack(true);
        let _ = sock.set_ext_ack(true);
        sock.set_netlink_get_strict_chk(true)?;
        Ok(NlSocket {
            sock,
            seq: 1,
            out: Vec::with_capacity(CHUNK_BYTES + 4096),
            inb: vec![0u8; 256 * 1024],
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn recv(&mut self) -> io::Result<usize> {
        let mut buf = &mut self.inb[..];
        loop {
            match self.sock.recv(&mut buf, 0) {
                Ok(n) => return Ok(n.min(self.inb.len())),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends a dump request built by `build` and hands every reply message to `each`.
    /// `ENOENT` (a table that does not exist yet) ends the dump with no error.
    pub fn dump(
        &mut self,
        build: impl FnOnce(&mut Vec<u8>, u32),
        mut each: impl FnMut(RawMsg<'_>),
    ) -> io::Result<()> {
        let seq = self.next_seq();
        self.out.clear();
        build(&mut self.out, seq);
        self.sock.send(&self.out, 0)?;
        loop {
            let n = self.recv()?;
            for m in wire::messages(&self.inb[..n]) {
                if m.seq != seq {
                    continue;
                }
                match m.ty {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let (code, text) =
                            wire::parse_error(m.payload).unwrap_or((-libc::EIO, None));
                        if code == 0 || code == -libc::ENOENT {
                            return Ok(());
                        }
                        return Err(io::Error::other(
                            NlFailure { errno: -code, text }.describe(),
                        ));
                    }
                    _ => each(m),
                }
            }
        }
    }

    /// Dumps with a message built by netlink-packet-route.
    pub fn dump_msg(
        &mut self,
        msg: RouteNetlinkMessage,
        each: impl FnMut(RawMsg<'_>),
    ) -> io::Result<()> {
        self.dump(
            |buf, seq| emit(buf, msg, NLM_F_REQUEST | wire::NLM_F_DUMP, seq),
            each,
        )
    }

    /// Sends one request and waits for its acknowledgement.
    pub fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<(), NlFailure> {
        let mut msg = Some(msg);
        let r = self.batch(1, |_, buf, seq, ack| {
            if let Some(m) = msg.take() {
                let f = NLM_F_REQUEST | flags | if ack { NLM_F_ACK } else { 0 };
                emit(buf, m, f, seq);
            }
        });
        match r {
            Ok(mut r) => match r.failed.pop() {
                Some((_, f)) => Err(f),
                None => Ok(()),
            },
            Err(e) => Err(NlFailure {
                errno: e.raw_os_error().unwrap_or(libc::EIO),
                text: None,
            }),
        }
    }

    /// Sends `n` requests built by `encode(index, buf, seq, ack)`, pipelined: they go out in
    /// chunks of up to 96 KiB in one `sendmsg` each; only the last request of a chunk asks
    /// for an acknowledgement (errors are always reported, by sequence number), so one
    /// acknowledgement per chunk proves every earlier request of it was processed.
    pub fn batch(
        &mut self,
        n: usize,
        mut encode: impl FnMut(usize, &mut Vec<u8>, u32, bool),
    ) -> io::Result<BatchResult> {
        let mut result = BatchResult::default();
        let mut i = 0;
        while i < n {
            self.out.clear();
            if self.seq > u32::MAX - 2 * CHUNK_MSGS as u32 {
                self.seq = 0; // keep the sequence numbers of one chunk contiguous
            }
            let first_idx = i;
            let first_seq = self.seq.wrapping_add(1);
            let mut last_seq = first_seq;
            while i < n {
                let seq = self.next_seq();
                last_seq = seq;
                let last =
                    i + 1 == n || i + 1 - first_idx >= CHUNK_MSGS || self.out.len() >= CHUNK_BYTES;
                encode(i, &mut self.out, seq, last);
                i += 1;
                if last {
                    break;
                }
            }
            self.sock.send(&self.out, 0)?;
            // Collect replies until the acknowledgement of the chunk's last request.
            'recv: loop {
                let got = match self.recv() {
                    Ok(n) => n,
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        result.lost_replies = true;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                for m in wire::messages(&self.inb[..got]) {
                    if m.ty != NLMSG_ERROR {
                        continue;
                    }
                    let Some((code, text)) = wire::parse_error(m.payload) else {
                        continue;
                    };
                    let off = m.seq.wrapping_sub(first_seq) as usize;
                    if off >= i - first_idx {
                        continue; // stale reply of an earlier exchange
                    }
                    if code != 0 {
                        result
                            .failed
                            .push((first_idx + off, NlFailure { errno: -code, text }));
                    }
                    if m.seq == last_seq {
                        break 'recv;
                    }
                }
            }
        }
        Ok(result)
    }
}

/// Serialises a netlink-packet-route message with the given flags and sequence number.
pub fn emit(buf: &mut Vec<u8>, msg: RouteNetlinkMessage, flags: u16, seq: u32) {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
    nl.finalize();
    let start = buf.len();
    buf.resize(start + nl.buffer_len(), 0);
    nl.serialize(&mut buf[start..]);
    buf.resize(wire::align4(buf.len()), 0);
}

/// Parses a whole message with netlink-packet-route.
pub fn decode(m: &RawMsg<'_>) -> Option<RouteNetlinkMessage> {
    match NetlinkMessage::<RouteNetlinkMessage>::deserialize(m.whole)
        .ok()?
        .payload
    {
        NetlinkPayload::InnerMessage(x) => Some(x),
        _ => None,
    }
}

const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_NEIGH: u32 = 3;
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV4_ROUTE: u32 = 7;
const RTNLGRP_IPV6_IFADDR: u32 = 9;
const RTNLGRP_IPV6_ROUTE: u32 = 11;

/// Opens a non-blocking socket subscribed to link, neighbour, address and route events.
pub fn open_notifications() -> io::Result<Socket> {
    let sock = open_socket()?;
    for g in [
        RTNLGRP_LINK,
        RTNLGRP_NEIGH,
        RTNLGRP_IPV4_IFADDR,
        RTNLGRP_IPV4_ROUTE,
        RTNLGRP_IPV6_IFADDR,
        RTNLGRP_IPV6_ROUTE,
    ] {
        sock.add_membership(g)?;
    }
    sock.set_non_blocking(true)?;
    Ok(sock)
}
