//! The socket calls neither the standard library nor `socket2` offers, for RFC 5881 §5
//! (GTSM): the TTL of every received datagram (`IP_RECVTTL` /
//! `IPV6_RECVHOPLIMIT` with `recvmsg(2)`), since the kernel's `IP_MINTTL` filters TCP only
//! (checked on this kernel: a UDP socket with `IP_MINTTL` 255 still receives TTL 64). The
//! only `unsafe` code of the crate: one `setsockopt(2)` and one `recvmsg(2)` with buffers
//! owned by the caller.

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::RawFd;

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `v` is a live c_int for the duration of the call and its size is passed; the
    // kernel copies it. A bad fd only yields EBADF.
    #[allow(unsafe_code)]
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const libc::c_int).cast::<libc::c_void>(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Ask for the TTL (hop limit) of every received datagram as ancillary data.
pub fn set_recv_ttl(fd: RawFd, v6: bool) -> io::Result<()> {
    if v6 {
        setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1)
    } else {
        setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_RECVTTL, 1)
    }
}

/// One datagram: its length, its source, and its TTL / hop limit when the kernel said.
pub fn recv_with_ttl(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<u8>)> {
    // Room for one IP_TTL or IPV6_HOPLIMIT control message (an int), 8-aligned.
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast::<libc::c_void>(),
        iov_len: buf.len(),
    };
    // SAFETY: all-zero is a valid sockaddr_storage and msghdr (plain old data).
    #[allow(unsafe_code)]
    let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    #[allow(unsafe_code)]
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut from as *mut libc::sockaddr_storage).cast::<libc::c_void>();
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast::<libc::c_void>();
    msg.msg_controllen = size_of::<[u64; 8]>();
    // SAFETY: every pointer in `msg` points to a buffer owned by this frame (`from`, `iov`
    // over `buf`, `control`) with its true length; they outlive the call.
    #[allow(unsafe_code)]
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let len = usize::try_from(n).unwrap_or(0);
    let addr = sockaddr(&from)?;
    let mut ttl = None;
    // SAFETY: the CMSG_* helpers walk the control buffer the kernel filled, bounded by
    // msg_controllen, which the kernel set to at most the buffer's size; the data of an
    // IP_TTL / IPV6_HOPLIMIT message is one c_int, read unaligned.
    #[allow(unsafe_code)]
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let h = &*c;
            let is_ttl = (h.cmsg_level == libc::IPPROTO_IP && h.cmsg_type == libc::IP_TTL)
                || (h.cmsg_level == libc::IPPROTO_IPV6 && h.cmsg_type == libc::IPV6_HOPLIMIT);
            if is_ttl
                && h.cmsg_len as usize >= libc::CMSG_LEN(size_of::<libc::c_int>() as u32) as usize
            {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                ttl = u8::try_from(v).ok();
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((len, addr, ttl))
}

fn sockaddr(ss: &libc::sockaddr_storage) -> io::Result<SocketAddr> {
    match libc::c_int::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which is smaller and
            // less aligned than sockaddr_storage.
            #[allow(unsafe_code)]
            let sin =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Ok(SocketAddr::new(IpAddr::V4(ip), u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            #[allow(unsafe_code)]
            let sin6 =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Ok(SocketAddr::new(
                IpAddr::V6(ip),
                u16::from_be(sin6.sin6_port),
            ))
        }
        f => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected address family {f}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// The kernel reports the TTL each datagram arrived with (loopback: no hop decrements).
    #[test]
    fn reads_the_ttl_of_each_datagram() {
        let Ok(r) = std::net::UdpSocket::bind("127.0.0.1:0") else {
            return;
        };
        let Ok(s) = std::net::UdpSocket::bind("127.0.0.1:0") else {
            return;
        };
        assert!(set_recv_ttl(r.as_raw_fd(), false).is_ok());
        let to = r.local_addr().unwrap_or_else(|e| panic!("{e}"));
        for ttl in [64u32, 255] {
            s.set_ttl(ttl).unwrap_or_else(|e| panic!("{e}"));
            s.send_to(b"abc", to).unwrap_or_else(|e| panic!("{e}"));
            let mut buf = [0u8; 64];
            let mut got = None;
            for _ in 0..200 {
                match recv_with_ttl(r.as_raw_fd(), &mut buf) {
                    Ok(x) => {
                        got = Some(x);
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(std::time::Duration::from_millis(10))
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            let (n, from, t) = got.unwrap_or_else(|| panic!("nothing received"));
            assert_eq!(n, 3);
            assert_eq!(from, s.local_addr().unwrap_or_else(|e| panic!("{e}")));
            assert_eq!(t, Some(ttl as u8));
        }
    }
}
