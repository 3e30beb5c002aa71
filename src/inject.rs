//! Sending frames the data path produced for a held packet.
//!
//! A held frame (a later fragment waiting for its first, a packet waiting
//! for its next hop) is re-run through the XDP program by the daemon with
//! BPF_PROG_TEST_RUN. The program translates it and updates its tables as
//! for any packet, and returns the frame and its verdict; the frame is
//! then sent here, through an AF_PACKET socket on the interface the
//! program chose. (Kernels that allow BPF_F_TEST_XDP_LIVE_FRAMES could let
//! the program send it itself; some refuse that flag with EPERM, so the
//! daemon does not depend on it.) Only these rare frames take this way;
//! the kernel's IP stack, forwarding and netfilter are never involved.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{sendto, socket, AddressFamily, LinkAddr, MsgFlags, SockFlag, SockType};

/// A packet socket that only sends (protocol 0: it receives nothing).
#[derive(Debug)]
pub struct Injector {
    sock: OwnedFd,
}

impl Injector {
    pub fn new() -> io::Result<Injector> {
        let sock = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        Ok(Injector { sock })
    }

    /// Sends the Ethernet frame `frame` (headers included) out of
    /// `ifindex` as it is.
    pub fn send(&self, ifindex: u32, frame: &[u8]) -> io::Result<()> {
        let addr = link_addr(ifindex);
        sendto(self.sock.as_raw_fd(), frame, &addr, MsgFlags::empty())?;
        Ok(())
    }
}

/// sockaddr_ll naming `ifindex` (the frame carries its own MACs), for
/// sending on a packet socket.
pub fn link_addr(ifindex: u32) -> LinkAddr {
    use nix::libc;
    use nix::sys::socket::SockaddrLike;
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut ll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    ll.sll_family = libc::AF_PACKET as u16;
    ll.sll_ifindex = ifindex as i32;
    ll.sll_halen = 6;
    // SAFETY: `ll` is a complete sockaddr_ll and the length is its size.
    unsafe {
        LinkAddr::from_raw(
            (&ll as *const libc::sockaddr_ll).cast(),
            Some(std::mem::size_of::<libc::sockaddr_ll>() as u32),
        )
    }
    .expect("a sockaddr_ll is a link address")
}
