//! A private network namespace per test: two veth pairs, fixed MACs,
//! addresses, routes and permanent neighbour entries, so bpf_fib_lookup
//! answers deterministically. Removed on drop.

use std::fs::File;
use std::net::Ipv4Addr;
use std::process::Command;

use nix::sched::CloneFlags;

use super::frame::{Mac, Pkt};

pub const INT0_MAC: Mac = [0x02, 0, 0, 0, 0x01, 0x01];
pub const EXT0_MAC: Mac = [0x02, 0, 0, 0, 0x02, 0x02];
pub const ROUTER_INT: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
pub const ROUTER_EXT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

/// Hosts with permanent neighbour entries: (address, MAC, interface).
pub const NEIGHBOURS: &[(Ipv4Addr, Mac, &str)] = &[
    (
        Ipv4Addr::new(100, 64, 0, 11),
        [0x02, 0x11, 0, 0, 0, 0x11],
        "int0",
    ),
    (
        Ipv4Addr::new(100, 64, 0, 12),
        [0x02, 0x11, 0, 0, 0, 0x12],
        "int0",
    ),
    (
        Ipv4Addr::new(198, 51, 100, 10),
        [0x02, 0x22, 0, 0, 0, 0x10],
        "ext0",
    ),
    (
        Ipv4Addr::new(198, 51, 100, 20),
        [0x02, 0x22, 0, 0, 0, 0x20],
        "ext0",
    ),
];

/// The MAC of a host in `NEIGHBOURS`.
pub fn mac_of(addr: Ipv4Addr) -> Mac {
    NEIGHBOURS
        .iter()
        .find(|(a, _, _)| *a == addr)
        .map(|(_, m, _)| *m)
        .unwrap_or_else(|| panic!("{addr} has no neighbour entry in the fixture"))
}

fn mac_str(m: &Mac) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// True when the suite can run (root, `ip` available). Otherwise fails
/// under CI and skips with a message elsewhere.
pub fn privileged(test: &str) -> bool {
    let mut why = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        why.push("not running as root");
    }
    let has_ip = Command::new("ip")
        .arg("-V")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !has_ip {
        why.push("the `ip` command (iproute2) is missing");
    }
    if why.is_empty() {
        return true;
    }
    let msg = format!(
        "{test}: BPF_PROG_TEST_RUN suite needs root and iproute2 ({})",
        why.join(", ")
    );
    cgnat_kit::testbed::cannot_run(&msg);
    false
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// A named network namespace with the test topology; deleted on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    /// Creates `cgpt<pid><tag>` and sets it up.
    pub fn create(tag: &str) -> NetNs {
        let name = format!("cgpt{}{tag}", std::process::id());
        // a leftover of a crashed run with the same pid
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&["ip", "netns", "add", &name]);
        let ns = NetNs { name };
        ns.setup();
        ns
    }

    pub fn ip(&self, args: &str) {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend(args.split_whitespace());
        run(&v);
    }

    fn setup(&self) {
        self.ip("link set lo up");
        self.ip("link add int0 type veth peer name int0p");
        self.ip("link add ext0 type veth peer name ext0p");
        self.ip(&format!("link set int0 address {}", mac_str(&INT0_MAC)));
        self.ip(&format!("link set ext0 address {}", mac_str(&EXT0_MAC)));
        self.ip(&format!("addr add {ROUTER_INT}/10 dev int0"));
        self.ip(&format!("addr add {ROUTER_EXT}/24 dev ext0"));
        for dev in ["int0p", "ext0p", "int0", "ext0"] {
            self.ip(&format!("link set {dev} up"));
        }
        // ip_forward first: writing it resets every device's forwarding,
        // lo included. The program looks routes up as if from lo.
        run(&[
            "ip",
            "netns",
            "exec",
            &self.name,
            "sh",
            "-c",
            "echo 0 > /proc/sys/net/ipv4/ip_forward && \
             echo 1 > /proc/sys/net/ipv4/conf/lo/forwarding",
        ]);
        for (addr, mac, dev) in NEIGHBOURS {
            self.add_neigh(*addr, mac, dev);
        }
    }

    /// Adds a permanent neighbour entry (for hosts found during a test).
    pub fn add_neigh(&self, addr: Ipv4Addr, mac: &Mac, dev: &str) {
        self.ip(&format!(
            "neigh replace {addr} lladdr {} dev {dev} nud permanent",
            mac_str(mac)
        ));
    }

    /// Runs `f` on a new thread that has entered this namespace and returns
    /// its result (panics propagate).
    pub fn enter<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(move || {
                let fd = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                nix::sched::setns(&fd, CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns {path}: {e}"));
                let fwd = std::fs::read_to_string("/proc/sys/net/ipv4/conf/lo/forwarding")
                    .unwrap_or_default();
                assert_eq!(
                    fwd.trim(),
                    "1",
                    "lo forwarding is off in the test namespace"
                );
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A frame from a subscriber to the router's int0 MAC.
pub fn from_sub(p: Pkt) -> Pkt {
    let m = mac_of(p.src);
    p.macs(m, INT0_MAC)
}

/// A frame from an internet host to the router's ext0 MAC.
pub fn from_net(p: Pkt) -> Pkt {
    let m = mac_of(p.src);
    p.macs(m, EXT0_MAC)
}

/// The ICMP error the router itself sends about `orig` (RFC 792 quote of
/// header + 8 bytes), from `router` (the address of the receiving
/// interface) back out of that interface: MACs swapped, TTL 64, ID 0, DS
/// field copied (RFC 5508 REQ-10d).
pub fn generated_error(orig: &Pkt, router: Ipv4Addr, ty: u8, code: u8, mtu: u16) -> Vec<u8> {
    let mut e = Pkt::icmp_msg(router, orig.src, ty, code, (0, mtu), &orig.quote());
    e.id = 0;
    e.frag = 0;
    e.ttl = 64;
    e.tos = orig.tos;
    e.macs(orig.dst_mac, orig.src_mac).bytes()
}
