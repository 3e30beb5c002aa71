//! The NAT interfaces under a running daemon.
//!
//! XDP programs are attached by interface index. Going down and up changes
//! nothing for them (they stay attached; routes and neighbours are the
//! kernel's and come back with the link), but two changes need the
//! daemon:
//!
//! - **Deleted** (or deleted and re-created: same name, new index): the
//!   kernel detached the program with the device, so nothing translates
//!   any more while the daemon would go on sweeping as if all was well.
//!   The daemon stops with one message naming the interface instead; the
//!   tables stay pinned (unless `daemon.detach_on_exit`), and the next
//!   start, once the interface is back, adopts them with every session.
//! - **MAC changed**: frames are translated only when sent to the
//!   interface's own MAC (map `if_macs`, filled at load); the daemon
//!   updates it.
//! - **Address changed**: the address of each NAT interface is the source
//!   of the ICMP errors cgnat generates there (map `if_addrs`, filled at
//!   load). The daemon updates it, or removes it while the interface has
//!   no address (no ICMP error is generated then rather than one from an
//!   address the router no longer has).
//!
//! Polled once a second from the daemon's loop (`getifaddrs` and
//! `if_nametoindex`: cheap); no netlink subscription is needed for a
//! reaction time of a second.

use std::fmt;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::bpf::{interface_addr, interface_mac};

/// How often the interfaces are looked at.
pub const PERIOD: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Iface {
    name: String,
    ifindex: u32,
    addr: Option<Ipv4Addr>,
    mac: Option<[u8; 6]>,
}

/// A change seen on a NAT interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// No interface of that name any more.
    Gone { name: String, ifindex: u32 },
    /// An interface of that name exists again, but it is another one.
    Replaced { name: String, was: u32, now: u32 },
    /// Its MAC address changed.
    Mac { name: String, now: Option<[u8; 6]> },
    /// Its (first) IPv4 address changed.
    Address {
        name: String,
        ifindex: u32,
        was: Option<Ipv4Addr>,
        now: Option<Ipv4Addr>,
    },
}

impl Change {
    /// The daemon cannot go on: its program is not on the interface.
    pub fn fatal(&self) -> bool {
        !matches!(self, Change::Address { .. } | Change::Mac { .. })
    }
}

fn show(a: &Option<Ipv4Addr>) -> String {
    a.map(|a| a.to_string()).unwrap_or_else(|| "none".into())
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Gone { name, ifindex } => write!(
                f,
                "interface {name} (ifindex {ifindex}) was deleted and its XDP program with it: \
                 nothing is translated any more"
            ),
            Change::Replaced { name, was, now } => write!(
                f,
                "interface {name} was deleted and re-created (ifindex {was} -> {now}): \
                 the new one has no XDP program"
            ),
            Change::Mac { name, now } => match now {
                Some(m) => write!(
                    f,
                    "MAC of {name} is now {}: frames to it are translated",
                    m.iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(":")
                ),
                None => write!(
                    f,
                    "{name} has no MAC now: frames are translated whatever their destination MAC"
                ),
            },
            Change::Address { name, was, now, .. } => write!(
                f,
                "address of {name} changed from {} to {}: ICMP errors cgnat sends there now \
                 come from {}",
                show(was),
                show(now),
                match now {
                    Some(a) => a.to_string(),
                    None => "nowhere (none are sent until it has an address)".into(),
                }
            ),
        }
    }
}

/// The state of the NAT interfaces as last seen.
#[derive(Debug, Clone)]
pub struct Watch {
    ifaces: Vec<Iface>,
    next: Instant,
}

fn index_of(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok()
}

impl Watch {
    /// Records the interfaces `names` (duplicates once) as they are now.
    pub fn new(names: &[&str]) -> Watch {
        let mut ifaces: Vec<Iface> = Vec::new();
        for n in names {
            if ifaces.iter().any(|i| i.name == *n) {
                continue;
            }
            ifaces.push(Iface {
                name: (*n).to_owned(),
                ifindex: index_of(n).unwrap_or(0),
                addr: interface_addr(n),
                mac: interface_mac(n),
            });
        }
        Watch {
            ifaces,
            next: Instant::now() + PERIOD,
        }
    }

    /// The changes since the last look, if a look is due at `now`.
    pub fn poll(&mut self, now: Instant) -> Vec<Change> {
        if now < self.next {
            return Vec::new();
        }
        self.next = now + PERIOD;
        let mut out = Vec::new();
        for i in &mut self.ifaces {
            match index_of(&i.name) {
                None => {
                    out.push(Change::Gone {
                        name: i.name.clone(),
                        ifindex: i.ifindex,
                    });
                    continue;
                }
                Some(idx) if idx != i.ifindex => {
                    out.push(Change::Replaced {
                        name: i.name.clone(),
                        was: i.ifindex,
                        now: idx,
                    });
                    continue;
                }
                Some(_) => {}
            }
            let mac = interface_mac(&i.name);
            if mac != i.mac {
                out.push(Change::Mac {
                    name: i.name.clone(),
                    now: mac,
                });
                i.mac = mac;
            }
            let addr = interface_addr(&i.name);
            if addr != i.addr {
                out.push(Change::Address {
                    name: i.name.clone(),
                    ifindex: i.ifindex,
                    was: i.addr,
                    now: addr,
                });
                i.addr = addr;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_stable_and_a_missing_interface_is_gone() {
        let mut w = Watch::new(&["lo", "lo", "cgnat-no-such0"]);
        assert_eq!(w.ifaces.len(), 2);
        assert!(w.poll(Instant::now()).is_empty(), "not due yet");
        let ch = w.poll(Instant::now() + PERIOD);
        assert_eq!(
            ch,
            vec![Change::Gone {
                name: "cgnat-no-such0".into(),
                ifindex: 0
            }]
        );
        assert!(ch[0].fatal());
        assert!(ch[0].to_string().contains("cgnat-no-such0"));
    }

    #[test]
    fn address_change_is_not_fatal() {
        let c = Change::Address {
            name: "ext0".into(),
            ifindex: 3,
            was: Some(Ipv4Addr::new(198, 51, 100, 1)),
            now: None,
        };
        assert!(!c.fatal());
        assert!(c.to_string().contains("198.51.100.1 to none"), "{c}");
    }

    #[test]
    fn mac_change_is_not_fatal() {
        let c = Change::Mac {
            name: "int0".into(),
            now: Some([0x02, 0, 0, 0, 0x01, 0xab]),
        };
        assert!(!c.fatal());
        assert!(c.to_string().contains("02:00:00:00:01:ab"), "{c}");
        let c = Change::Mac {
            name: "int0".into(),
            now: None,
        };
        assert!(c.to_string().contains("no MAC"), "{c}");
    }
}
