//! rtnetlink plumbing shared by the daemon's netlink users (`neigh`,
//! `routes`): the socket, message and attribute walkers, the constants of
//! `<linux/rtnetlink.h>` and `<linux/neighbour.h>` they need, and the link
//! and policy-rule queries.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    bind, recv, send, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
    SockType,
};

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_CREATE: u16 = 0x400;

pub const RTM_NEWLINK: u16 = 16;
pub const RTM_GETLINK: u16 = 18;
pub const RTM_NEWNEIGH: u16 = 28;
pub const RTM_DELNEIGH: u16 = 29;
pub const RTM_NEWRULE: u16 = 32;
pub const RTM_DELRULE: u16 = 33;
pub const RTM_GETRULE: u16 = 34;

pub const AF_INET: u8 = 2;

/// RTMGRP_* multicast groups.
pub const RTMGRP_LINK: u32 = 0x1;
pub const RTMGRP_NEIGH: u32 = 0x4;
pub const RTMGRP_IPV4_IFADDR: u32 = 0x10;
pub const RTMGRP_IPV4_ROUTE: u32 = 0x40;
pub const RTMGRP_IPV4_RULE: u32 = 0x80;

/// Neighbour attributes and states.
pub const NDA_DST: u16 = 1;
pub const NDA_LLADDR: u16 = 2;
pub const NUD_FAILED: u16 = 0x20;
/// NUD_PERMANENT | NOARP | REACHABLE | PROBE | STALE | DELAY
pub const NUD_VALID: u16 = 0x80 | 0x40 | 0x02 | 0x10 | 0x04 | 0x08;
/// Size of struct ndmsg.
pub const NDMSG_LEN: usize = 12;

const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
/// Size of struct ifinfomsg.
const IFINFOMSG_LEN: usize = 16;

/// An rtnetlink socket in this network namespace, joined to the multicast
/// `groups` (RTMGRP_* bits; 0: requests only).
pub fn route_socket(groups: u32) -> nix::Result<OwnedFd> {
    let sock = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    bind(sock.as_raw_fd(), &NetlinkAddr::new(0, groups))?;
    Ok(sock)
}

/// A netlink request: nlmsghdr (type `ty`, `flags`, `seq`, pid 0) and
/// `body` (the family header and attributes).
pub fn message(ty: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let len = (16 + body.len()) as u32;
    let mut m = Vec::with_capacity(len as usize);
    m.extend_from_slice(&len.to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    m.extend_from_slice(body);
    m
}

/// The messages of a netlink datagram: (type, payload after the 16-byte
/// header).
pub fn messages(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        if off + 16 > buf.len() {
            return None;
        }
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().ok()?) as usize;
        let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        if len < 16 || off + len > buf.len() {
            return None;
        }
        let body = &buf[off + 16..off + len];
        off += (len + 3) & !3;
        Some((ty, body))
    })
}

/// The attributes (type, value) after a fixed header of `hdr` bytes.
pub fn attributes(body: &[u8], hdr: usize) -> impl Iterator<Item = (u16, &[u8])> {
    let mut off = hdr;
    std::iter::from_fn(move || {
        if off + 4 > body.len() {
            return None;
        }
        let len = u16::from_ne_bytes([body[off], body[off + 1]]) as usize;
        let ty = u16::from_ne_bytes([body[off + 2], body[off + 3]]) & 0x3fff;
        if len < 4 || off + len > body.len() {
            return None;
        }
        let val = &body[off + 4..off + len];
        off += (len + 3) & !3;
        Some((ty, val))
    })
}

pub fn u32_of(v: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(v.get(..4)?.try_into().ok()?))
}

/// The error of an NLMSG_ERROR payload (0: an ack).
pub fn error_of(body: &[u8]) -> io::Result<()> {
    match u32_of(body).map(|e| e as i32).unwrap_or(-5) {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(-e)),
    }
}

/// An RTM_NEWNEIGH / RTM_DELNEIGH payload (IPv4 only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub ifindex: i32,
    /// NUD_* bits
    pub state: u16,
    pub dst: Vec<u8>,
    pub lladdr: Vec<u8>,
}

impl Neighbour {
    /// Parses struct ndmsg (family, pad, pad, ifindex i32, state u16,
    /// flags, type) and its NDA_DST / NDA_LLADDR; None for other families.
    pub fn parse(body: &[u8]) -> Option<Neighbour> {
        if body.len() < NDMSG_LEN || body[0] != AF_INET {
            return None;
        }
        let mut n = Neighbour {
            ifindex: i32::from_ne_bytes([body[4], body[5], body[6], body[7]]),
            state: u16::from_ne_bytes([body[8], body[9]]),
            dst: Vec::new(),
            lladdr: Vec::new(),
        };
        for (t, val) in attributes(body, NDMSG_LEN) {
            match t {
                NDA_DST => n.dst = val.to_vec(),
                NDA_LLADDR => n.lladdr = val.to_vec(),
                _ => {}
            }
        }
        Some(n)
    }

    /// The neighbour's IPv4 address.
    pub fn addr(&self) -> Option<std::net::Ipv4Addr> {
        let o: [u8; 4] = self.dst.as_slice().try_into().ok()?;
        Some(std::net::Ipv4Addr::from(o))
    }
}

/// The kind of link `ifindex` (`IFLA_INFO_KIND`: "veth", "bridge",
/// "vlan" ...; None for a physical device, which has no link info).
pub fn link_kind(ifindex: u32) -> io::Result<Option<String>> {
    let sock = route_socket(0)?;
    // struct ifinfomsg: family AF_UNSPEC, pad, type, index, flags, change
    let mut ifi = [0u8; IFINFOMSG_LEN];
    ifi[4..8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
    let req = message(RTM_GETLINK, NLM_F_REQUEST, 1, &ifi);
    send(sock.as_raw_fd(), &req, MsgFlags::empty())?;
    let mut buf = vec![0u8; 65536];
    let n = recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty())?;
    for (ty, body) in messages(&buf[..n]) {
        match ty {
            NLMSG_ERROR => error_of(body)?,
            RTM_NEWLINK => return Ok(kind_of(body)),
            _ => {}
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "no RTM_NEWLINK answer",
    ))
}

/// IFLA_LINKINFO / IFLA_INFO_KIND of an RTM_NEWLINK payload.
fn kind_of(body: &[u8]) -> Option<String> {
    let (_, info) = attributes(body, IFINFOMSG_LEN).find(|(ty, _)| *ty == IFLA_LINKINFO)?;
    let (_, kind) = attributes(info, 0).find(|(ty, _)| *ty == IFLA_INFO_KIND)?;
    let kind = kind.split(|b| *b == 0).next()?;
    Some(String::from_utf8_lossy(kind).into_owned())
}

// fib rule attributes that the three default rules carry
pub(crate) const FRA_PRIORITY: u16 = 6;
pub(crate) const FRA_SUPPRESS_PREFIXLEN: u16 = 14;
pub(crate) const FRA_TABLE: u16 = 15;
pub(crate) const FRA_PROTOCOL: u16 = 21;
pub(crate) const FR_ACT_TO_TBL: u8 = 1;

/// Is this RTM_NEWRULE payload one of the kernel's three default IPv4
/// rules (`0: from all lookup local`, `32766: ... main`, `32767: ...
/// default`) with no selector at all?
pub(crate) fn is_default_rule(body: &[u8]) -> bool {
    // struct fib_rule_hdr: family, dst_len, src_len, tos, table, res1,
    // res2, action, flags (u32)
    if body.len() < 12 {
        return false;
    }
    let flags = u32::from_ne_bytes([body[8], body[9], body[10], body[11]]);
    if body[1] != 0 || body[2] != 0 || body[3] != 0 || body[7] != FR_ACT_TO_TBL || flags != 0 {
        return false;
    }
    let (mut prio, mut table) = (0u32, u32::from(body[4]));
    for (ty, v) in attributes(body, 12) {
        match ty {
            FRA_PRIORITY => prio = u32_of(v).unwrap_or(u32::MAX),
            FRA_TABLE => table = u32_of(v).unwrap_or(0),
            FRA_SUPPRESS_PREFIXLEN if u32_of(v) == Some(u32::MAX) => {}
            FRA_PROTOCOL => {}
            _ => return false, // a selector or action the default lacks
        }
    }
    matches!((prio, table), (0, 255) | (32766, 254) | (32767, 253))
}

/// True when the kernel's IPv4 rules are exactly the three defaults, i.e.
/// a route lookup depends on the destination (and TOS) only.
pub fn only_default_rules() -> io::Result<bool> {
    let sock = route_socket(0)?;
    // struct fib_rule_hdr, family AF_INET
    let mut hdr = [0u8; 12];
    hdr[0] = AF_INET;
    let req = message(RTM_GETRULE, NLM_F_REQUEST | NLM_F_DUMP, 1, &hdr);
    send(sock.as_raw_fd(), &req, MsgFlags::empty())?;
    let mut buf = vec![0u8; 32768];
    let (mut rules, mut all_default) = (0usize, true);
    loop {
        let n = recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty())?;
        for (ty, body) in messages(&buf[..n]) {
            match ty {
                NLMSG_DONE => return Ok(all_default && rules == 3),
                NLMSG_ERROR => error_of(body)?,
                RTM_NEWRULE => {
                    rules += 1;
                    all_default &= is_default_rule(body);
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, val: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + val.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(val);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    #[test]
    fn link_kind_from_nested_linkinfo() {
        let mut body = vec![0u8; IFINFOMSG_LEN];
        body.extend(attr(3, b"int0\0")); // IFLA_IFNAME
        body.extend(attr(IFLA_LINKINFO, &attr(IFLA_INFO_KIND, b"veth\0")));
        assert_eq!(kind_of(&body).as_deref(), Some("veth"));
        let plain = vec![0u8; IFINFOMSG_LEN];
        assert_eq!(kind_of(&plain), None);
    }
}
