//! Neighbour resolution on behalf of the data path.
//!
//! When `bpf_fib_lookup` finds a route but no neighbour entry, the XDP
//! program holds the packet in `neigh_hold` and reports the next hop
//! (bpf/neigh.h); the kernel's own forwarding path, which would have
//! queued the packet and resolved the address, is never used. Here the
//! daemon asks the kernel to resolve the next hop with RTM_NEWNEIGH +
//! NTF_USE (the call the kernel offers for exactly this: "use" the entry,
//! creating it and sending an ARP request), and a [`Listener`] hears the
//! outcome: a valid entry or a failed one, upon which the held frames are
//! re-run through the program (`Datapath::release_held`).

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::sys::socket::{recv, sendto, MsgFlags, NetlinkAddr};

use crate::netlink::{
    message, messages, route_socket, Neighbour, AF_INET, NDA_DST, NLMSG_ERROR, NLM_F_ACK,
    NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST, NUD_FAILED, NUD_VALID, RTMGRP_NEIGH, RTM_NEWNEIGH,
};

const NTF_USE: u8 = 0x01;

/// A rtnetlink socket for neighbour requests.
pub struct Resolver {
    sock: OwnedFd,
    seq: u32,
}

impl Resolver {
    pub fn new() -> nix::Result<Resolver> {
        Ok(Resolver {
            sock: route_socket(0)?,
            seq: 0,
        })
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

/// What became of a next hop the kernel was resolving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A usable link-layer address (reachable, stale, permanent ...).
    Valid(Ipv4Addr),
    /// Resolution failed (NUD_FAILED).
    Failed(Ipv4Addr),
}

/// Neighbour notifications (RTMGRP_NEIGH), read without blocking.
pub struct Listener {
    sock: OwnedFd,
    buf: Vec<u8>,
}

impl Listener {
    pub fn new() -> nix::Result<Listener> {
        let sock = route_socket(RTMGRP_NEIGH)?;
        nix::fcntl::fcntl(
            sock.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )?;
        Ok(Listener {
            sock,
            buf: vec![0u8; 1 << 16],
        })
    }

    /// For poll(2).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// Every outcome notified since the last call. `overrun` is set when
    /// the kernel dropped notifications (ENOBUFS): the caller should
    /// re-check what it waits for.
    pub fn drain(&mut self) -> (Vec<Outcome>, bool) {
        let (mut out, mut overrun) = (Vec::new(), false);
        loop {
            match recv(self.sock.as_raw_fd(), &mut self.buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => break,
                Ok(n) => out.extend(outcomes(&self.buf[..n])),
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => {
                    overrun = true;
                    break;
                }
            }
        }
        (out, overrun)
    }
}

/// Re-runs what the data path holds for the next hops in `outcomes`
/// (those it waits for; the kernel reports every neighbour).
pub fn settle(dp: &crate::bpf::Datapath, outcomes: &[Outcome]) {
    for o in outcomes {
        let (addr, failed) = match *o {
            Outcome::Valid(a) => (a, false),
            Outcome::Failed(a) => (a, true),
        };
        if !dp.awaits_neighbour(addr) {
            continue;
        }
        match dp.release_held(addr, failed) {
            Ok(n) if failed => eprintln!(
                "cgnat: next hop {addr} did not resolve: {n} held packets answered with \
                 ICMP host unreachable"
            ),
            Ok(_) => {}
            Err(e) => eprintln!("cgnat: warning: releasing packets held for {addr}: {e}"),
        }
    }
}

/// Next hops whose frames wait longer than CGNAT_HOLD_MAX_MS are taken
/// as failed.
pub fn settle_overdue(dp: &crate::bpf::Datapath) {
    let failed: Vec<Outcome> = dp
        .overdue_neighbours(crate::clock::coarse_ns())
        .into_iter()
        .map(Outcome::Failed)
        .collect();
    settle(dp, &failed);
}

/// The outcomes in a datagram of neighbour notifications.
fn outcomes(buf: &[u8]) -> impl Iterator<Item = Outcome> + '_ {
    messages(buf).filter_map(|(ty, body)| {
        if ty != RTM_NEWNEIGH {
            return None;
        }
        let n = Neighbour::parse(body)?;
        let addr = n.addr()?;
        if n.state & NUD_VALID != 0 {
            Some(Outcome::Valid(addr))
        } else if n.state & NUD_FAILED != 0 {
            Some(Outcome::Failed(addr))
        } else {
            None
        }
    })
}

/// The RTM_NEWNEIGH request: nlmsghdr, ndmsg, NDA_DST.
fn request(seq: u32, ifindex: u32, addr: Ipv4Addr) -> Vec<u8> {
    // struct ndmsg: family, pad, ifindex, state NUD_NONE, flags, type
    let mut body = Vec::with_capacity(12 + 8);
    body.push(AF_INET);
    body.extend_from_slice(&[0, 0, 0]);
    body.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    body.extend_from_slice(&0u16.to_ne_bytes());
    body.push(NTF_USE);
    body.push(0);
    // NDA_DST
    body.extend_from_slice(&8u16.to_ne_bytes());
    body.extend_from_slice(&NDA_DST.to_ne_bytes());
    body.extend_from_slice(&addr.octets());
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
    message(RTM_NEWNEIGH, flags, seq, &body)
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
