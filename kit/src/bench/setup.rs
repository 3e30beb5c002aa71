//! Setup shared by the sections: network namespaces, the packet-level
//! topology (as `tests/prog_run/netns.rs`), the configuration and loading
//! of the data path, and the frames sent through it.

use super::*;

pub(super) const CMD_TIMEOUT: Duration = Duration::from_secs(30);
pub(super) const NS_PREFIX: &str = "cgb";

pub(super) fn cmd(argv: &[&str]) -> Result<String> {
    let out = run_command(argv, CMD_TIMEOUT).ctx(argv.join(" "))?;
    check_output(&argv.join(" "))(out).ctx("command failed")
}

/// A named network namespace, deleted on drop.
pub struct Ns {
    pub name: String,
}

impl Ns {
    pub(super) fn create(tag: &str) -> Result<Ns> {
        let name = format!("{NS_PREFIX}{}{tag}", std::process::id());
        let _ = run_command(&["ip", "netns", "del", &name], CMD_TIMEOUT);
        cmd(&["ip", "netns", "add", &name])?;
        let ns = Ns { name };
        ns.ip("link set lo up")?;
        Ok(ns)
    }

    pub(super) fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// `ip -n NAME args` (split on whitespace).
    pub(super) fn ip(&self, args: &str) -> Result<String> {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend(args.split_whitespace());
        cmd(&v)
    }

    /// `sh -c script` inside the namespace (sysfs and proc of its own).
    pub(super) fn sh(&self, script: &str) -> Result<String> {
        cmd(&["ip", "netns", "exec", &self.name, "sh", "-c", script])
    }

    pub(super) fn argv<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        v
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = run_command(&["ip", "netns", "del", &self.name], CMD_TIMEOUT);
    }
}

/// Deletes namespaces of bench processes that no longer run.
pub(super) fn cleanup_stale() {
    let Ok(out) = cmd(&["ip", "netns", "list"]) else {
        return;
    };
    for line in out.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if digits.is_empty() || digits.len() == rest.len() {
            continue;
        }
        if !Path::new(&format!("/proc/{digits}")).exists() {
            let _ = run_command(&["ip", "netns", "del", name], CMD_TIMEOUT);
        }
    }
}

/// Runs `f` with this thread inside `ns`, then returns it to the namespace
/// it was in.
pub(super) fn in_ns<T>(ns: &Ns, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let orig = File::open("/proc/thread-self/ns/net").ctx("opening this thread's netns")?;
    let target = File::open(ns.path()).ctx(format!("opening {}", ns.path().display()))?;
    nix::sched::setns(target.as_fd(), CloneFlags::CLONE_NEWNET).ctx("setns")?;
    let r = f();
    nix::sched::setns(orig.as_fd(), CloneFlags::CLONE_NEWNET).ctx("setns back")?;
    r
}

/// Moves this thread into `path` for good (threads of their own).
pub(super) fn enter(path: &Path) -> Result<()> {
    let f = File::open(path).ctx(format!("opening {}", path.display()))?;
    nix::sched::setns(f.as_fd(), CloneFlags::CLONE_NEWNET).ctx("setns")
}

pub(super) fn ifindex(name: &str) -> Result<u32> {
    nix::net::if_::if_nametoindex(name).ctx(format!("interface {name}"))
}

pub(super) fn mac_str(m: &Mac) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

// The packet-level topology (as tests/prog_run/netns.rs).
pub(super) const INT0_MAC: Mac = [0x02, 0, 0, 0, 0x01, 0x01];
pub(super) const EXT0_MAC: Mac = [0x02, 0, 0, 0, 0x02, 0x02];
pub(super) const SUB_MAC: Mac = [0x02, 0x11, 0, 0, 0, 0x11];
pub(super) const REM_MAC: Mac = [0x02, 0x22, 0, 0, 0, 0x10];
pub(super) const H11: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 11);
pub(super) const H12: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 12);
pub(super) const R10: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
pub(super) const POOL: &str = "203.0.113.0/26";
pub(super) const POOL_BASE: u32 = 0xcb00_7100; // 203.0.113.0
pub(super) const POOL_SIZE: u32 = 64;

pub(super) fn prog_ns() -> Result<Ns> {
    let ns = Ns::create("p")?;
    ns.ip("link add int0 type veth peer name int0p")?;
    ns.ip("link add ext0 type veth peer name ext0p")?;
    ns.ip(&format!("link set int0 address {}", mac_str(&INT0_MAC)))?;
    ns.ip(&format!("link set ext0 address {}", mac_str(&EXT0_MAC)))?;
    ns.ip("addr add 100.64.0.1/10 dev int0")?;
    ns.ip("addr add 198.51.100.1/24 dev ext0")?;
    for dev in ["int0p", "ext0p", "int0", "ext0"] {
        ns.ip(&format!("link set {dev} up"))?;
    }
    // ip_forward first: writing it resets every device's forwarding
    ns.sh("echo 0 > /proc/sys/net/ipv4/ip_forward && \
         echo 1 > /proc/sys/net/ipv4/conf/lo/forwarding")?;
    for (a, m, dev) in [
        (H11, SUB_MAC, "int0"),
        (H12, [0x02, 0x11, 0, 0, 0, 0x12], "int0"),
        (R10, REM_MAC, "ext0"),
    ] {
        ns.ip(&format!(
            "neigh replace {a} lladdr {} dev {dev} nud permanent",
            mac_str(&m)
        ))?;
    }
    // For the floor, which does not translate: a plain router sends
    // packets for the pool where cgnat sends them after translation (to
    // the subscriber behind int0). cgnat never looks this route up.
    ns.ip(&format!("route add {POOL} via {H11} dev int0"))?;
    Ok(ns)
}

pub(super) fn prog_config(sessions: u32, bindings: u32, subscribers: u32) -> Result<Config> {
    let text = format!(
        r#"
[interfaces]
internal = "int0"
external = "ext0"
# what a real NIC uses (the veths here would get "redirect" by default)
send_back = "xdp_tx"
[nat]
internal_prefixes = ["100.64.0.0/10"]
external_pool = ["{POOL}"]
max_sessions = {sessions}
max_bindings = {bindings}
[pool]
max_subscribers = {subscribers}
[daemon]
pin_path = "/sys/fs/bpf/cgnat-bench-unused"
"#
    );
    Config::parse(&text, Path::new("(bench)")).ctx("bench config")
}

pub(super) fn load_dp(cfg: &Config, attach: bool) -> Result<Datapath> {
    Datapath::load(cfg, LoadOptions { attach, pin: false }).ctx("loading cgnat")
}

// Frames

pub(super) const XDP_TX: u32 = 3;
pub(super) const XDP_REDIRECT: u32 = 4;
/// 18 bytes of UDP payload make a 60-byte frame (64 on the wire with FCS).
pub(super) const PAYLOAD: &[u8; 18] = b"cgnat-bench-frame!";

/// `p` as the bench sends it: IP identification 0 (DF, TTL 64, no
/// options, as `Pkt` builds it).
pub(super) fn bench_pkt(p: Pkt) -> Pkt {
    Pkt { id: 0, ..p }
}

pub(super) fn ep(a: SocketAddrV4) -> (Ipv4Addr, u16) {
    (*a.ip(), a.port())
}

/// A UDP datagram carrying [`PAYLOAD`].
pub(super) fn udp(src: SocketAddrV4, dst: SocketAddrV4) -> Pkt {
    bench_pkt(Pkt::udp(ep(src), ep(dst), PAYLOAD))
}

/// A TCP segment without options or payload (window 64240).
pub(super) fn tcp(src: SocketAddrV4, dst: SocketAddrV4, flags: u8, seq: u32, ack: u32) -> Pkt {
    let mut p = bench_pkt(Pkt::tcp(ep(src), ep(dst), flags));
    if let L4::Tcp { seq: s, ack: a, .. } = &mut p.l4 {
        (*s, *a) = (seq, ack);
    }
    p
}

/// An ICMP message with a 4-byte rest-of-header.
pub(super) fn icmp(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ty: u8,
    code: u8,
    rest: (u16, u16),
    body: &[u8],
) -> Pkt {
    bench_pkt(Pkt::icmp_msg(src, dst, ty, code, rest, body))
}

/// The Ethernet frame of `p` from `src` to `dst`.
pub(super) fn eth(dst: Mac, src: Mac, p: Pkt) -> Vec<u8> {
    p.macs(src, dst).bytes()
}

pub(super) fn udp_frame(dmac: Mac, smac: Mac, src: SocketAddrV4, dst: SocketAddrV4) -> Vec<u8> {
    eth(dmac, smac, udp(src, dst))
}

pub(super) fn sock(a: Ipv4Addr, p: u16) -> SocketAddrV4 {
    SocketAddrV4::new(a, p)
}
