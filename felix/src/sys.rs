//! The only places where this crate calls libc directly.
//!
//! Everything else goes through `netlink-sys` and `std`. Each function is a tiny wrapper around
//! one system call, with arguments whose validity is checked by the types.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Sets an integer socket option (used for `SO_RCVBUFFORCE`, which `netlink-sys` lacks).
#[allow(unsafe_code)]
pub(crate) fn setsockopt_int(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the pointer refers to a live `c_int` on this stack frame and the length passed is
    // exactly its size; the kernel only reads from it. An invalid fd only yields EBADF.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast::<libc::c_void>(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets `SO_RCVTIMEO`, so that a blocking receive gives up after `d` (`EAGAIN`).
#[allow(unsafe_code)]
pub(crate) fn set_recv_timeout(fd: &impl AsRawFd, d: std::time::Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: the pointer refers to a live `timeval` on this stack frame and the length passed
    // is exactly its size; the kernel only reads from it. An invalid fd only yields EBADF.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast::<libc::c_void>(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Moves the calling thread into the network namespace referred to by `ns`.
#[allow(unsafe_code)]
fn setns_net(ns: &File) -> io::Result<()> {
    // SAFETY: `setns` takes a file descriptor that `ns` keeps open for the duration of the call
    // and a constant flag; it has no memory-safety preconditions.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Runs `f` on a new thread that has first joined the network namespace at `path`
/// (e.g. `/run/netns/NAME`), and returns its result.
///
/// Netlink sockets belong to the namespace they were opened in, so a [`crate::Reconciler`]
/// created inside `f` manages that namespace from whichever thread it is later used on, while
/// the calling thread (say, a shared tokio worker) never changes namespace.
pub fn run_in_netns<T, F>(path: impl AsRef<Path>, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let ns = File::open(path.as_ref())?;
    let handle = std::thread::Builder::new()
        .name("felix-netns".into())
        .spawn(move || -> io::Result<T> {
            setns_net(&ns)?;
            Ok(f())
        })?;
    handle
        .join()
        .map_err(|_| io::Error::other("thread inside the namespace panicked"))?
}

/// Moves the calling thread into a new, empty network namespace of its own.
#[allow(unsafe_code)]
fn unshare_net() -> io::Result<()> {
    // SAFETY: `unshare` takes a constant flag and no pointers; it only changes the calling
    // thread's namespace membership.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Runs `f` on a new thread inside a new, empty network namespace (needs CAP_SYS_ADMIN), and
/// returns its result. Used to try kernel features (create a VXLAN link, an nftables request)
/// without touching the host: the namespace belongs to that thread alone, so when the thread
/// ends the kernel removes it with everything created in it, even if the process is killed.
/// Fails with the `unshare` error when no namespace can be made.
pub fn run_in_new_netns<T, F>(f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let handle = std::thread::Builder::new()
        .name("felix-probe-ns".into())
        .spawn(move || -> io::Result<T> {
            unshare_net()?;
            Ok(f())
        })?;
    handle
        .join()
        .map_err(|_| io::Error::other("thread inside the namespace panicked"))?
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn new_netns_is_private_to_its_thread() {
        let ns_link = || std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        let outside = ns_link();
        match run_in_new_netns(ns_link) {
            Ok(inside) => {
                assert_ne!(inside, outside);
                // The caller's thread never moved.
                assert_eq!(ns_link(), outside);
            }
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                eprintln!("SKIPPED new_netns_is_private_to_its_thread: needs CAP_SYS_ADMIN");
            }
            Err(e) => panic!("unshare: {e}"),
        }
    }
}
