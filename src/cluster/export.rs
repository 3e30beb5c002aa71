//! The routes a node wants announced, written into a kernel routing table
//! of their own (`cluster.route_table`) for BIRD or FRR to import and
//! announce by BGP: one `unreachable` route per pool prefix of every
//! slice, with `route_metric` where this node serves the slice now and
//! twice that where it only backs it up. cgnat speaks no BGP itself.

use std::io;
use std::os::fd::AsRawFd;

use ipnetwork::Ipv4Network;
use nix::sys::socket::{recv, send, MsgFlags};

use crate::netlink::{self, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST};

const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const NLMSG_ERROR: u16 = 2;
const RTA_DST: u16 = 1;
const RTA_PRIORITY: u16 = 6;
const RTA_TABLE: u16 = 15;
const RTN_UNREACHABLE: u8 = 7;
/// Routes written by an administrator or a daemon other than the kernel:
/// what BIRD's `learn` and FRR's `import-table` pick up.
const RTPROT_STATIC: u8 = 4;

/// The routes this node announces now: (prefix, metric).
pub type Announced = Vec<(Ipv4Network, u32)>;

/// Writes and withdraws the routes of one table.
#[derive(Debug)]
pub struct Export {
    table: u32,
    current: Announced,
}

impl Export {
    pub fn new(table: u32) -> Export {
        Export {
            table,
            current: Vec::new(),
        }
    }

    /// Makes the table hold exactly `want` (of the prefixes this node ever
    /// announces): new routes first, then the stale ones, so a prefix whose
    /// metric changes is never missing.
    pub fn apply(&mut self, want: &Announced) -> io::Result<()> {
        if self.table == 0 || *want == self.current {
            return Ok(());
        }
        for r in want {
            if !self.current.contains(r) {
                route(RTM_NEWROUTE, self.table, r.0, r.1)?;
            }
        }
        for r in &self.current {
            if !want.contains(r) {
                remove(self.table, r.0, r.1)?;
            }
        }
        self.current = want.clone();
        Ok(())
    }

    /// Removes `prefix` at every metric this node may have used, whatever
    /// an earlier run left behind.
    pub fn clear(&mut self, prefixes: &[Ipv4Network], metrics: &[u32]) -> io::Result<()> {
        if self.table == 0 {
            return Ok(());
        }
        for p in prefixes {
            for m in metrics {
                remove(self.table, *p, *m)?;
            }
        }
        self.current.clear();
        Ok(())
    }

    /// Withdraws everything (the daemon stops).
    pub fn withdraw(&mut self) -> io::Result<()> {
        self.apply(&Vec::new())
    }
}

fn remove(table: u32, prefix: Ipv4Network, metric: u32) -> io::Result<()> {
    match route(RTM_DELROUTE, table, prefix, metric) {
        Err(e) if e.raw_os_error() == Some(nix::libc::ESRCH) => Ok(()),
        other => other,
    }
}

/// One RTM_NEWROUTE / RTM_DELROUTE for an unreachable route, acknowledged.
fn route(ty: u16, table: u32, prefix: Ipv4Network, metric: u32) -> io::Result<()> {
    let sock = netlink::route_socket(0)?;
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope,
    // type, flags
    let mut body = vec![
        nix::libc::AF_INET as u8,
        prefix.prefix(),
        0,
        0,
        if table < 256 { table as u8 } else { 252 },
        RTPROT_STATIC,
        0, // RT_SCOPE_UNIVERSE
        RTN_UNREACHABLE,
        0,
        0,
        0,
        0,
    ];
    attr(&mut body, RTA_DST, &prefix.network().octets());
    attr(&mut body, RTA_PRIORITY, &metric.to_ne_bytes());
    attr(&mut body, RTA_TABLE, &table.to_ne_bytes());
    let flags = if ty == RTM_NEWROUTE {
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
    } else {
        NLM_F_REQUEST | NLM_F_ACK
    };
    let req = netlink::message(ty, flags, 1, &body);
    send(sock.as_raw_fd(), &req, MsgFlags::empty())?;
    let mut buf = vec![0u8; 8192];
    let n = recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty())?;
    for (t, body) in netlink::messages(&buf[..n]) {
        if t == NLMSG_ERROR {
            return netlink::error_of(body);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "no netlink acknowledgement",
    ))
}

fn attr(buf: &mut Vec<u8>, ty: u16, val: &[u8]) {
    let len = (4 + val.len()) as u16;
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(val);
    while buf.len() % 4 != 0 {
        buf.push(0);
    }
}
