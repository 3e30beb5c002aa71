//! Neighbour resolution on behalf of the data path.
//!
//! When `bpf_fib_lookup` finds a route but no neighbour entry, the XDP
//! program drops the packet and reports the next hop; the kernel's own
//! forwarding path, which would have queued the packet and resolved the
//! address, is never used. Here the daemon asks the kernel to resolve the
//! next hop with RTM_NEWNEIGH + NTF_USE (the call the kernel offers for
//! exactly this: "use" the entry, creating it and sending an ARP request).
//! The sender's next packet or retransmission then finds the entry.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    bind, recv, sendto, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
    SockType,
};

const RTM_NEWNEIGH: u16 = 28;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const NDA_DST: u16 = 1;
const NTF_USE: u8 = 0x01;
const AF_INET: u8 = 2;

/// A rtnetlink socket for neighbour requests.
pub struct Resolver {
    sock: OwnedFd,
    seq: u32,
}

impl Resolver {
    pub fn new() -> nix::Result<Resolver> {
        let sock = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        bind(sock.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        Ok(Resolver { sock, seq: 0 })
    }

    /// Asks the kernel to resolve `addr` on interface `ifindex`.
    pub fn resolve(&mut self, ifindex: u32, addr: Ipv4Addr) -> nix::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let msg = request(self.seq, ifindex, addr);
        sendto(
            self.sock.as_raw_fd(),
            &msg,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )?;
        let mut buf = [0u8; 512];
        let n = recv(self.sock.as_raw_fd(), &mut buf, MsgFlags::empty())?;
        match ack_error(&buf[..n]) {
            0 => Ok(()),
            e => Err(nix::errno::Errno::from_raw(-e)),
        }
    }
}

/// The RTM_NEWNEIGH request: nlmsghdr, ndmsg, NDA_DST.
fn request(seq: u32, ifindex: u32, addr: Ipv4Addr) -> Vec<u8> {
    let len: u32 = 16 + 12 + 8;
    let mut m = Vec::with_capacity(len as usize);
    m.extend_from_slice(&len.to_ne_bytes());
    m.extend_from_slice(&RTM_NEWNEIGH.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // pid
                                              // struct ndmsg
    m.push(AF_INET);
    m.extend_from_slice(&[0, 0, 0]);
    m.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    m.extend_from_slice(&0u16.to_ne_bytes()); // state: NUD_NONE
    m.push(NTF_USE);
    m.push(0); // type
               // NDA_DST
    m.extend_from_slice(&8u16.to_ne_bytes());
    m.extend_from_slice(&NDA_DST.to_ne_bytes());
    m.extend_from_slice(&addr.octets());
    m
}

/// The error code of a netlink ack (0 = success; negative errno).
fn ack_error(buf: &[u8]) -> i32 {
    if buf.len() < 20 {
        return -(nix::errno::Errno::EIO as i32);
    }
    let ty = u16::from_ne_bytes([buf[4], buf[5]]);
    if ty != NLMSG_ERROR {
        return 0;
    }
    i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout() {
        let m = request(7, 3, Ipv4Addr::new(198, 51, 100, 10));
        assert_eq!(m.len(), 36);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 36);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), RTM_NEWNEIGH);
        assert_eq!(m[16], AF_INET);
        assert_eq!(i32::from_ne_bytes(m[20..24].try_into().unwrap()), 3);
        assert_eq!(m[26], NTF_USE);
        assert_eq!(&m[32..36], &[198, 51, 100, 10]);
    }

    #[test]
    fn acks() {
        let mut ok = vec![0u8; 36];
        ok[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert_eq!(ack_error(&ok), 0);
        ok[16..20].copy_from_slice(&(-22i32).to_ne_bytes());
        assert_eq!(ack_error(&ok), -22);
    }
}
