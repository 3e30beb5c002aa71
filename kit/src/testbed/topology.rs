//! The test bed's topology: addresses, interfaces and the pool
//! ([`ROUTER_INT`], [`POOL`], ...), its hosts ([`Host`]), the names of its
//! namespaces ([`testbed_id`]) and the cgnat configuration for it
//! ([`config_toml`]). Re-exported from [`crate::testbed`].

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

/// The router's address on `int0` (the subscribers' gateway).
pub const ROUTER_INT: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
/// The router's address on `ext0` (the external hosts' route to the pool).
pub const ROUTER_EXT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The second address of e1.
pub const E1_SECOND: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
/// The subscribers' prefix.
pub const INTERNAL_PREFIX: &str = "100.64.0.0/10";
/// The external pool of the NAT.
pub const POOL: [&str; 2] = ["203.0.113.0/28", "192.0.2.200/29"];
/// The router's interface toward the subscribers.
pub const INTERNAL_IF: &str = "int0";
/// The router's interface toward the outside.
pub const EXTERNAL_IF: &str = "ext0";

/// True when `a` lies in [`POOL`].
pub fn in_pool(a: Ipv4Addr) -> bool {
    POOL.iter().any(|p| {
        p.parse::<ipnetwork::Ipv4Network>()
            .map(|n| n.contains(a))
            .unwrap_or(false)
    })
}

/// Every address of [`POOL`].
pub fn pool_addrs() -> Vec<Ipv4Addr> {
    POOL.iter()
        .filter_map(|p| p.parse::<ipnetwork::Ipv4Network>().ok())
        .flat_map(|n| n.iter())
        .collect()
}

/// True when `a` lies in [`INTERNAL_PREFIX`].
pub fn in_internal(a: Ipv4Addr) -> bool {
    a.octets()[0] == 100 && (a.octets()[1] & 0xc0) == 64
}

/// A namespace of the test bed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    S1,
    S2,
    Router,
    E1,
    E2,
    E3,
    /// The bridge between the subscribers and `int0`.
    SwitchInt,
    /// The bridge between `ext0` and the external hosts.
    SwitchExt,
}

impl Host {
    pub const ALL: [Host; 8] = [
        Host::S1,
        Host::S2,
        Host::Router,
        Host::E1,
        Host::E2,
        Host::E3,
        Host::SwitchInt,
        Host::SwitchExt,
    ];
    pub const SUBSCRIBERS: [Host; 2] = [Host::S1, Host::S2];
    pub const EXTERNALS: [Host; 3] = [Host::E1, Host::E2, Host::E3];

    /// Short name, used as namespace suffix and as name of the switch port
    /// leading to the host (`r` for the router).
    pub fn name(self) -> &'static str {
        match self {
            Host::S1 => "s1",
            Host::S2 => "s2",
            Host::Router => "r",
            Host::E1 => "e1",
            Host::E2 => "e2",
            Host::E3 => "e3",
            Host::SwitchInt => "si",
            Host::SwitchExt => "se",
        }
    }

    /// The host's (first) address: for the router its `int0` address, for
    /// the switches, which have none, 0.0.0.0.
    pub fn addr(self) -> Ipv4Addr {
        match self {
            Host::S1 => Ipv4Addr::new(100, 64, 0, 11),
            Host::S2 => Ipv4Addr::new(100, 64, 0, 12),
            Host::Router => ROUTER_INT,
            Host::E1 => Ipv4Addr::new(198, 51, 100, 10),
            Host::E2 => Ipv4Addr::new(198, 51, 100, 20),
            Host::E3 => Ipv4Addr::new(198, 51, 100, 30),
            Host::SwitchInt | Host::SwitchExt => Ipv4Addr::UNSPECIFIED,
        }
    }

    /// The socket address `addr():port`.
    pub fn sock(self, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(self.addr(), port)
    }

    pub fn is_subscriber(self) -> bool {
        matches!(self, Host::S1 | Host::S2)
    }

    pub fn is_external(self) -> bool {
        matches!(self, Host::E1 | Host::E2 | Host::E3)
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh [`testbed_id`] for this process: every test bed of the kit
/// (this one and [`crate::cluster_bed`]) draws from the same counter, so
/// their namespaces never collide.
pub(crate) fn next_testbed_id() -> String {
    testbed_id(std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst))
}

/// The prefix of every namespace and directory of the test bed number `n`
/// of process `pid`: `cg<pid>x<n>` (at most 2 + 10 + 1 + 10 characters).
pub fn testbed_id(pid: u32, n: u32) -> String {
    format!("cg{pid}x{n}")
}

/// The pid in a name made by [`testbed_id`] (optionally followed by `-...`).
pub fn id_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("cg")?;
    let (pid, rest) = rest.split_once('x')?;
    let n_end = rest.find('-').unwrap_or(rest.len());
    let n = &rest[..n_end];
    if pid.is_empty()
        || n.is_empty()
        || !pid.bytes().all(|b| b.is_ascii_digit())
        || !n.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    pid.parse().ok()
}

/// The cgnat configuration for this topology: interfaces `int0`/`ext0` in
/// native mode, [`INTERNAL_PREFIX`], [`POOL`], the RFC default timeouts and
/// `pin_path`.
pub fn config_toml(pin_path: &Path) -> String {
    format!(
        r#"# cgnat configuration for the test bed topology
[interfaces]
internal = "{INTERNAL_IF}"
external = "{EXTERNAL_IF}"
xdp_mode = "native"

[nat]
internal_prefixes = ["{INTERNAL_PREFIX}"]
external_pool = ["{p0}", "{p1}"]
max_sessions = 65536
max_bindings = 65536

[timeouts]
udp = "300s"
tcp_established = "2h4m"
tcp_transitory = "4m"
icmp = "60s"

[daemon]
pin_path = "{pin}"
# each test starts from clean tables (the default keeps them pinned)
detach_on_exit = true
"#,
        p0 = POOL[0],
        p1 = POOL[1],
        pin = pin_path.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let id = testbed_id(123456, 7);
        assert_eq!(id, "cg123456x7");
        assert_eq!(id_pid(&id), Some(123456));
        assert_eq!(id_pid("cg123456x7-s1"), Some(123456));
        assert_eq!(id_pid("cg4194304x4294967295-se"), Some(4194304));
        assert_eq!(id_pid("cgx7-s1"), None);
        assert_eq!(id_pid("cg12x-s1"), None);
        assert_eq!(id_pid("cg1a2x3"), None);
        assert_eq!(id_pid("other"), None);
        // The longest namespace name still fits comfortably; interface
        // names never carry the prefix.
        assert!(format!("{}-{}", testbed_id(u32::MAX, u32::MAX), "se").len() < 64);
        for h in Host::ALL {
            assert!(h.name().len() <= 15);
        }
    }

    #[test]
    fn pool_membership() {
        assert!(in_pool(Ipv4Addr::new(203, 0, 113, 0)));
        assert!(in_pool(Ipv4Addr::new(203, 0, 113, 15)));
        assert!(!in_pool(Ipv4Addr::new(203, 0, 113, 16)));
        assert!(in_pool(Ipv4Addr::new(192, 0, 2, 207)));
        assert!(!in_pool(Ipv4Addr::new(192, 0, 2, 199)));
        assert_eq!(pool_addrs().len(), 24);
        assert!(in_internal(Host::S1.addr()));
        assert!(in_internal(Ipv4Addr::new(100, 127, 255, 255)));
        assert!(!in_internal(Ipv4Addr::new(100, 128, 0, 0)));
        assert!(!in_internal(Host::E1.addr()));
    }
}
