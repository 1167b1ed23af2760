//! The nfnetlink sockets of the rules engine: a blocking request socket that sends whole
//! transactions and dumps, and a notification socket subscribed to nf_tables changes.

use std::io;
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use super::nft::{self, Batch};
use crate::nl::NlFailure;
use crate::sys::setsockopt_int;
use crate::wire::{self, NLMSG_DONE, NLMSG_ERROR};

/// `NFNLGRP_NFTABLES`: every nf_tables change of the namespace.
const NFNLGRP_NFTABLES: u32 = 7;
/// `NLM_F_DUMP_INTR`: the ruleset changed during the dump; its result may be inconsistent.
const NLM_F_DUMP_INTR: u16 = 0x10;
/// How long a reply may take before the request is given up (never hang on a confused kernel).
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a transaction failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchFailure {
    /// The first failed request: what it was and the kernel's answer.
    pub what: String,
    /// The kernel's answer.
    pub failure: NlFailure,
}

/// A blocking nfnetlink request socket.
pub struct NfSocket {
    sock: Socket,
    seq: u32,
    inb: Vec<u8>,
    port_id: u32,
    /// Bytes of socket buffers asked for (send and receive), grown for large transactions.
    buf_size: usize,
}

/// Socket buffer size at open.
const INITIAL_BUF: usize = 8 << 20;
/// Receive-buffer room per request of a transaction: every request is acknowledged in an
/// skb of its own, and the kernel counts each one's whole size (about 1 KiB) against the
/// buffer; without room for all of them it drops acknowledgements (`ENOBUFS`).
const ACK_ROOM: usize = 2048;

impl NfSocket {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> io::Result<NfSocket> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        let _ = sock.set_cap_ack(true);
        let _ = sock.set_ext_ack(true);
        // Large transactions (thousands of set elements) go out in one datagram.
        if setsockopt_int(&sock, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 8 << 20).is_err() {
            let _ = setsockopt_int(&sock, libc::SOL_SOCKET, libc::SO_SNDBUF, 8 << 20);
        }
        if setsockopt_int(&sock, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 8 << 20).is_err() {
            let _ = sock.set_rx_buf_sz(8 << 20);
        }
        set_timeout(&sock, REPLY_TIMEOUT)?;
        let mut addr = SocketAddr::new(0, 0);
        sock.get_address(&mut addr)?;
        Ok(NfSocket {
            sock,
            seq: 1,
            inb: vec![0u8; 256 * 1024],
            port_id: addr.port_number(),
            buf_size: INITIAL_BUF,
        })
    }

    /// Grows both socket buffers to at least `want` bytes (a transaction of tens of thousands
    /// of requests: network policy on a node with a thousand workloads).
    fn ensure_buffers(&mut self, want: usize) {
        if want <= self.buf_size {
            return;
        }
        let size = want.min(i32::MAX as usize) as i32;
        if setsockopt_int(&self.sock, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, size).is_err() {
            let _ = setsockopt_int(&self.sock, libc::SOL_SOCKET, libc::SO_SNDBUF, size);
        }
        if setsockopt_int(&self.sock, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, size).is_err() {
            let _ = self.sock.set_rx_buf_sz(size as usize);
        }
        self.buf_size = want;
    }

    /// The socket's netlink port id (the kernel's notifications of this socket's changes
    /// carry it as their `nlmsg_pid`).
    pub fn port_id(&self) -> u32 {
        self.port_id
    }

    /// A fresh sequence number range of `n` numbers; returns the first.
    pub fn reserve(&mut self, n: u32) -> u32 {
        if self.seq > u32::MAX / 2 {
            self.seq = 1;
        }
        let first = self.seq + 1; // the batch-begin message takes `first - 1`
        self.seq = self.seq.wrapping_add(n + 2);
        first
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

    /// Sends one transaction and waits for the acknowledgement of every request. The kernel
    /// applies all of it or, when one request fails, none of it.
    pub fn transact(&mut self, batch: Batch) -> io::Result<Result<(), BatchFailure>> {
        let first = batch.first_seq;
        let n = batch.requests;
        let (buf, what) = batch.finish();
        if n == 0 {
            return Ok(Ok(()));
        }
        self.ensure_buffers((n * ACK_ROOM).max(buf.len() * 2));
        self.sock.send(&buf, 0)?;
        let mut seen = vec![false; n];
        let mut remaining = n;
        let mut failure: Option<BatchFailure> = None;
        while remaining > 0 {
            let got = self.recv()?;
            for m in wire::messages(&self.inb[..got]) {
                if m.ty != NLMSG_ERROR {
                    continue;
                }
                let Some((code, text)) = wire::parse_error(m.payload) else {
                    continue;
                };
                if m.seq == first.wrapping_sub(1) && code != 0 {
                    // The commit itself failed (reported against the batch-begin message).
                    failure.get_or_insert(BatchFailure {
                        what: "commit".into(),
                        failure: NlFailure { errno: -code, text },
                    });
                    continue;
                }
                let off = m.seq.wrapping_sub(first) as usize;
                if off >= n || seen[off] {
                    continue; // a stale reply of an earlier exchange
                }
                seen[off] = true;
                remaining -= 1;
                if code != 0 && failure.is_none() {
                    failure = Some(BatchFailure {
                        what: what.get(off).cloned().unwrap_or_default(),
                        failure: NlFailure { errno: -code, text },
                    });
                }
            }
        }
        Ok(match failure {
            Some(f) => Err(f),
            None => Ok(()),
        })
    }

    /// Dumps objects of type `m` (filtered by table, and by chain or set when given) and hands
    /// each reply's payload to `each`. A table or set that does not exist is an empty dump
    /// (`Ok(false)`); `Ok(true)` otherwise. A dump the kernel marks as interrupted by a
    /// concurrent change is redone.
    pub fn dump(
        &mut self,
        m: u16,
        family: super::model::Family,
        table: Option<&str>,
        second: Option<&str>,
        mut each: impl FnMut(&[u8]),
    ) -> io::Result<bool> {
        let mut items: Vec<Vec<u8>> = Vec::new();
        for _attempt in 0..5 {
            items.clear();
            let seq = self.reserve(1);
            let mut out = Vec::with_capacity(128);
            nft::dump_request(&mut out, seq, m, family, table, second);
            self.sock.send(&out, 0)?;
            let mut interrupted = false;
            let exists = 'recv: loop {
                let got = self.recv()?;
                for msg in wire::messages(&self.inb[..got]) {
                    if msg.seq != seq {
                        continue;
                    }
                    if msg.flags & NLM_F_DUMP_INTR != 0 {
                        interrupted = true;
                    }
                    match msg.ty {
                        NLMSG_DONE => break 'recv true,
                        NLMSG_ERROR => {
                            let (code, text) =
                                wire::parse_error(msg.payload).unwrap_or((-libc::EIO, None));
                            if code == 0 {
                                break 'recv true;
                            }
                            if code == -libc::ENOENT {
                                break 'recv false;
                            }
                            return Err(io::Error::other(
                                NlFailure { errno: -code, text }.describe(),
                            ));
                        }
                        _ => items.push(msg.payload.to_vec()),
                    }
                }
            };
            if !interrupted {
                for i in &items {
                    each(i);
                }
                return Ok(exists);
            }
        }
        Err(io::Error::other(
            "nf_tables dump interrupted by concurrent changes 5 times",
        ))
    }
}

fn set_timeout(sock: &Socket, d: Duration) -> io::Result<()> {
    crate::sys::set_recv_timeout(sock, d)
}

/// Opens a non-blocking socket subscribed to nf_tables change notifications.
pub fn open_notifications() -> io::Result<Socket> {
    let mut sock = Socket::new(NETLINK_NETFILTER)?;
    sock.bind_auto()?;
    if setsockopt_int(&sock, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 4 << 20).is_err() {
        let _ = sock.set_rx_buf_sz(4 << 20);
    }
    sock.add_membership(NFNLGRP_NFTABLES)?;
    sock.set_non_blocking(true)?;
    Ok(sock)
}
