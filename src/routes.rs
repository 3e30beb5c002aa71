//! Freshness of the data path's route cache.
//!
//! The XDP program keeps what `bpf_fib_lookup` answered per destination in
//! the direct-mapped array `routes` (include/cgnat.h, `struct
//! cgnat_route`) and trusts an entry for at most `interfaces.route_cache`
//! and only while it carries the current generation of `route_gen`. This
//! module owns that generation: a thread listens to rtnetlink and bumps it
//! whenever a route, address, link or rule changes, or a neighbour's
//! link-layer address changes or becomes invalid, so the next packet to an
//! affected destination asks the FIB again. It also turns the cache off while the kernel has policy
//! routing rules other than the three default ones: a lookup then depends
//! on more than the destination (source, marks, ports, input device).
//!
//! If the daemon is not running (it exited and left the program attached),
//! entries still expire after `interfaces.route_cache`.

use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::thread;

use nix::sys::socket::{recv, MsgFlags};

use crate::bpf::RouteGen;
use crate::netlink::{
    messages, only_default_rules, route_socket, Neighbour, NLMSG_DONE, NLMSG_ERROR, NUD_VALID,
    RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE, RTMGRP_IPV4_RULE, RTMGRP_LINK, RTMGRP_NEIGH,
    RTM_DELNEIGH, RTM_DELRULE, RTM_NEWNEIGH, RTM_NEWRULE,
};

const GROUPS: u32 =
    RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV4_RULE;

/// What a batch of rtnetlink notifications asks of the cache.
#[derive(Debug, Default, PartialEq, Eq)]
struct Verdict {
    bump: bool,
    recheck_rules: bool,
}

/// Neighbours as last heard of: (ifindex, address) -> link-layer address
/// while valid.
type Neighbours = HashMap<(i32, Vec<u8>), Vec<u8>>;

fn judge(buf: &[u8], neigh: &mut Neighbours) -> Verdict {
    let mut v = Verdict::default();
    for (ty, body) in messages(buf) {
        match ty {
            RTM_NEWNEIGH | RTM_DELNEIGH => {
                let Some(n) = Neighbour::parse(body) else {
                    continue;
                };
                let (state, ll) = (n.state, n.lladdr);
                let key = (n.ifindex, n.dst);
                // Only a valid neighbour whose MAC is the one we knew is no
                // news (reachable <-> stale <-> delay: every few seconds
                // per neighbour); anything else may make a cached MAC wrong.
                if ty == RTM_NEWNEIGH && state & NUD_VALID != 0 {
                    if neigh.get(&key) != Some(&ll) {
                        neigh.insert(key, ll);
                        v.bump = true;
                    }
                } else {
                    neigh.remove(&key);
                    v.bump = true;
                }
            }
            RTM_NEWRULE | RTM_DELRULE => v.recheck_rules = true,
            NLMSG_ERROR | NLMSG_DONE => {}
            // links, addresses, routes
            _ => v.bump = true,
        }
    }
    v
}

/// Bumps the generation now, and on every change rtnetlink reports from
/// now on (a thread; it lives as long as the daemon).
pub fn watch(gen: RouteGen) -> io::Result<()> {
    let sock = route_socket(GROUPS)?;
    let publish = |gen: &RouteGen, enabled: bool| {
        if let Err(e) = gen.bump(enabled) {
            eprintln!("cgnat: warning: route cache: {e}");
        }
    };
    let mut enabled = only_default_rules().unwrap_or(false);
    publish(&gen, enabled);
    if !enabled {
        eprintln!(
            "cgnat: route cache off: the kernel has policy routing rules (ip rule) beyond \
             the defaults, so every packet asks the FIB"
        );
    }
    thread::Builder::new()
        .name("cgnat-routes".into())
        .spawn(move || {
            let mut neigh = Neighbours::new();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let v = match recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                    Ok(n) => judge(&buf[..n], &mut neigh),
                    // ENOBUFS: notifications were lost; assume the worst
                    Err(_) => Verdict {
                        bump: true,
                        recheck_rules: true,
                    },
                };
                if v.recheck_rules {
                    let now = only_default_rules().unwrap_or(false);
                    if now != enabled {
                        eprintln!(
                            "cgnat: route cache {}",
                            if now {
                                "on: only the default routing rules remain"
                            } else {
                                "off: policy routing rules (ip rule) appeared"
                            }
                        );
                    }
                    enabled = now;
                }
                if v.bump || v.recheck_rules {
                    publish(&gen, enabled);
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{
        is_default_rule, AF_INET, FRA_PRIORITY, FRA_PROTOCOL, FRA_SUPPRESS_PREFIXLEN, FRA_TABLE,
        FR_ACT_TO_TBL, NDA_DST, NDA_LLADDR,
    };

    fn msg(ty: u16, body: &[u8]) -> Vec<u8> {
        let len = 16 + body.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&[0u8; 10]);
        m.extend_from_slice(body);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    fn attr(ty: u16, v: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(v);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    fn rule(prio: u32, table: u32, extra: &[u8]) -> Vec<u8> {
        let mut b = vec![AF_INET, 0, 0, 0, table.min(255) as u8, 0, 0, FR_ACT_TO_TBL];
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend(attr(FRA_TABLE, &table.to_ne_bytes()));
        b.extend(attr(FRA_SUPPRESS_PREFIXLEN, &u32::MAX.to_ne_bytes()));
        b.extend(attr(FRA_PROTOCOL, &[2]));
        if prio != 0 {
            b.extend(attr(FRA_PRIORITY, &prio.to_ne_bytes()));
        }
        b.extend_from_slice(extra);
        b
    }

    fn neigh_msg(ty: u16, ifindex: i32, state: u16, ip: [u8; 4], mac: [u8; 6]) -> Vec<u8> {
        let mut b = vec![AF_INET, 0, 0, 0];
        b.extend_from_slice(&ifindex.to_ne_bytes());
        b.extend_from_slice(&state.to_ne_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend(attr(NDA_DST, &ip));
        b.extend(attr(NDA_LLADDR, &mac));
        msg(ty, &b)
    }

    #[test]
    fn default_rules_are_recognised() {
        assert!(is_default_rule(&rule(0, 255, &[])));
        assert!(is_default_rule(&rule(32766, 254, &[])));
        assert!(is_default_rule(&rule(32767, 253, &[])));
        // a source selector, another table, another priority
        let mut from = rule(32766, 254, &[]);
        from[2] = 24;
        assert!(!is_default_rule(&from));
        assert!(!is_default_rule(&rule(100, 254, &[])));
        assert!(!is_default_rule(&rule(32766, 100, &[])));
        // fwmark (FRA_FWMARK = 10)
        assert!(!is_default_rule(&rule(
            32766,
            254,
            &attr(10, &1u32.to_ne_bytes())
        )));
    }

    #[test]
    fn neighbour_changes_bump_only_when_the_mac_changes_or_goes() {
        let mut n = Neighbours::new();
        let a = [198, 51, 100, 10];
        let m1 = [2, 0, 0, 0, 0, 1];
        let m2 = [2, 0, 0, 0, 0, 2];
        let reachable = 0x02;
        let stale = 0x04;
        let failed = 0x20;
        // first sight: bump (the cache may hold an older MAC)
        assert!(judge(&neigh_msg(RTM_NEWNEIGH, 3, reachable, a, m1), &mut n).bump);
        // reachable -> stale, same MAC: nothing to do
        assert!(!judge(&neigh_msg(RTM_NEWNEIGH, 3, stale, a, m1), &mut n).bump);
        // new MAC
        assert!(judge(&neigh_msg(RTM_NEWNEIGH, 3, reachable, a, m2), &mut n).bump);
        // failed
        assert!(judge(&neigh_msg(RTM_NEWNEIGH, 3, failed, a, m2), &mut n).bump);
        // deleted
        assert!(judge(&neigh_msg(RTM_DELNEIGH, 3, 0, a, m2), &mut n).bump);
    }

    #[test]
    fn routes_links_addresses_bump_and_rules_recheck() {
        let mut n = Neighbours::new();
        let route = msg(24, &[AF_INET, 32, 0, 0, 254, 3, 0, 1, 0, 0, 0, 0]);
        assert_eq!(
            judge(&route, &mut n),
            Verdict {
                bump: true,
                recheck_rules: false
            }
        );
        let r = msg(RTM_NEWRULE, &rule(100, 254, &[]));
        assert!(judge(&r, &mut n).recheck_rules);
        // two messages in one datagram
        let mut both = neigh_msg(RTM_NEWNEIGH, 3, 0x02, [10, 0, 0, 1], [2; 6]);
        both.extend(r);
        let v = judge(&both, &mut n);
        assert!(v.bump && v.recheck_rules);
    }

    #[test]
    fn truncated_input_is_ignored() {
        let mut n = Neighbours::new();
        assert_eq!(judge(&[1, 2, 3], &mut n), Verdict::default());
        let mut m = neigh_msg(RTM_NEWNEIGH, 3, 0x02, [10, 0, 0, 1], [2; 6]);
        m[0] = 200; // length beyond the buffer
        assert_eq!(judge(&m, &mut n), Verdict::default());
    }
}
