//! Socket options the standard library does not offer: TCP MD5 signatures (RFC 2385) and the
//! minimum TTL of GTSM (RFC 5082). The only `unsafe` code of the crate, kept to two
//! `setsockopt(2)` calls with plain-old-data arguments.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};

/// `struct tcp_md5sig` of `<linux/tcp.h>` (not in the `libc` crate).
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; 80],
}

/// Maximum key length (`TCP_MD5SIG_MAXKEYLEN`).
pub const MD5_MAX_KEY: usize = 80;

fn sockaddr_storage(addr: IpAddr) -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    #[allow(unsafe_code)]
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        IpAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in is smaller than sockaddr_storage and both are POD; the
            // storage is aligned for any sockaddr.
            #[allow(unsafe_code)]
            unsafe {
                std::ptr::write(
                    (&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>(),
                    sin,
                );
            }
        }
        IpAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: as above, for sockaddr_in6.
            #[allow(unsafe_code)]
            unsafe {
                std::ptr::write(
                    (&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>(),
                    sin6,
                );
            }
        }
    }
    ss
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<T>())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `value` points to a live, initialised `T` of `len` bytes for the duration of the
    // call; the kernel copies it and keeps no reference. An invalid fd only yields EBADF.
    #[allow(unsafe_code)]
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast::<libc::c_void>(),
            len,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Install (or with `None` remove) the TCP MD5 key for connections with `peer` on socket
/// `fd` (a listening socket, or a socket before `connect`).
pub fn set_md5(fd: RawFd, peer: IpAddr, key: Option<&str>) -> io::Result<()> {
    let k = key.unwrap_or("").as_bytes();
    if k.len() > MD5_MAX_KEY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "TCP MD5 key longer than 80 octets",
        ));
    }
    let mut sig = TcpMd5Sig {
        addr: sockaddr_storage(peer),
        flags: 0,
        prefixlen: 0,
        keylen: k.len() as u16,
        ifindex: 0,
        key: [0; 80],
    };
    if let Some(dst) = sig.key.get_mut(..k.len()) {
        dst.copy_from_slice(k);
    }
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_MD5SIG, &sig)
}

/// A listening socket on `addr`. On `[::]` it takes IPv4 connections too (as IPv4-mapped
/// addresses), whatever `net.ipv6.bindv6only` says, so that one listener serves a dual-stack
/// node's IPv4 and IPv6 sessions.
pub fn listen(addr: std::net::SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        let s = tokio::net::TcpSocket::new_v6()?;
        let off: libc::c_int = 0;
        setsockopt(s.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, &off)?;
        s
    };
    // As std's `TcpListener::bind`: a restarted speaker binds again while old connections
    // are in TIME_WAIT.
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(1024)
}

/// Set the TTL / hop limit of outgoing packets.
pub fn set_ttl(fd: RawFd, v6: bool, ttl: u8) -> io::Result<()> {
    let v = libc::c_int::from(ttl);
    if v6 {
        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, &v)
    } else {
        setsockopt(fd, libc::IPPROTO_IP, libc::IP_TTL, &v)
    }
}

/// GTSM (RFC 5082): send with TTL 255 and drop packets that arrive with less than
/// 256 - `hops`.
pub fn set_gtsm(fd: RawFd, v6: bool, hops: u8) -> io::Result<()> {
    set_ttl(fd, v6, 255)?;
    let min = 256 - libc::c_int::from(hops.max(1));
    if v6 {
        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT, &min)
    } else {
        setsockopt(fd, libc::IPPROTO_IP, libc::IP_MINTTL, &min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listener_on_the_ipv6_wildcard_takes_ipv4_connections() {
        let Ok(l) = listen("[::]:0".parse().expect("address")) else {
            eprintln!("SKIPPED a_listener_on_the_ipv6_wildcard_takes_ipv4_connections: no IPv6");
            return;
        };
        // Whatever the host's `net.ipv6.bindv6only`, the socket is not IPv6-only.
        let mut v6only: libc::c_int = -1;
        let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).expect("len");
        // SAFETY: `v6only` and `len` are live locals of the sizes the kernel is told.
        #[allow(unsafe_code)]
        let r = unsafe {
            libc::getsockopt(
                l.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_V6ONLY,
                (&mut v6only as *mut libc::c_int).cast::<libc::c_void>(),
                &mut len,
            )
        };
        assert_eq!((r, v6only), (0, 0));
        let port = l.local_addr().expect("bound").port();
        let client = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("IPv4 connection to [::]");
        let (_, from) = l.accept().await.expect("accepted");
        assert_eq!(from.ip().to_canonical(), IpAddr::from([127, 0, 0, 1]));
        drop(client);
    }

    #[test]
    fn options_apply_to_a_real_socket() {
        let Ok(l) = std::net::TcpListener::bind("127.0.0.1:0") else {
            return;
        };
        let fd = l.as_raw_fd();
        assert!(set_md5(fd, IpAddr::from([127, 0, 0, 2]), Some("secret")).is_ok());
        assert!(set_md5(fd, IpAddr::from([127, 0, 0, 2]), None).is_ok());
        assert!(set_gtsm(fd, false, 1).is_ok());
        assert!(set_md5(fd, IpAddr::from([127, 0, 0, 2]), Some(&"x".repeat(81))).is_err());
    }
}
