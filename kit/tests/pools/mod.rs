//! Helpers of `tests/e2e_pools.rs`: a test bed running cgnat with a
//! config of the test's own, many simulated subscribers (extra addresses
//! on s1 and s2, worked from several threads), UDP probes that tell a
//! refusal (ICMP 3/1) from silence, an ICMP capture that reads payloads,
//! and parsers of the `forward`, `reverse`, `subscribers --json` and
//! `sessions --json` outputs.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, ErrorKind};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
use nix::sys::time::TimeVal;

use cgnat_kit::testbed::{decode_reflection, Host, Testbed};

use crate::common::{bin, require_root};
pub use crate::common::{cut, Bed};

// ---------------------------------------------------------------------------
// Config text
// ---------------------------------------------------------------------------

/// The test bed's config, edited as text.
#[derive(Debug, Clone)]
pub struct Toml(pub String);

impl Toml {
    pub fn new(tb: &Testbed) -> Toml {
        Toml(tb.config_toml())
    }

    /// Sets `key = value` (value as TOML text) in `[table]`: replaces the
    /// key if the table has it, else adds it under the header; appends the
    /// table if the file has none.
    pub fn set(mut self, table: &str, key: &str, value: &str) -> Toml {
        self.0 = crate::common::toml_set(&self.0, table, key, value);
        self
    }

    /// Appends raw TOML (for `[[static]]` entries).
    pub fn raw(mut self, text: &str) -> Toml {
        self.0.push('\n');
        self.0.push_str(text);
        self.0.push('\n');
        self
    }

    /// Short timeouts for tests where expiry matters.
    pub fn fast_expiry(self) -> Toml {
        self.set("timeouts", "udp", "\"2s\"")
            .set("daemon", "sweep_interval", "\"200ms\"")
            .set("nat", "port_quarantine", "\"1s\"")
    }
}

// ---------------------------------------------------------------------------
// The daemon in a test bed
// ---------------------------------------------------------------------------

/// How long cgnat may take to load and attach (the verifier is slow on a
/// loaded machine).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A test bed, or `None` when the test cannot run here (see
/// [`require_root`]: under `CI=true` that panics instead).
pub fn testbed() -> Option<Testbed> {
    if !require_root() {
        return None;
    }
    Some(Testbed::new().unwrap_or_else(|e| panic!("building the test bed: {e}")))
}

/// `cgnat ARGS --config FILE` run directly (no namespace): the commands
/// that need only the config (check; forward/reverse in deterministic
/// mode). Returns (success, stdout + stderr).
pub fn cli_direct(args: &[&str], config: &Path) -> (bool, String) {
    let out = Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap_or_else(|e| panic!("running cgnat {args:?}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

impl Bed {
    /// `tb` with cgnat running on `toml` (validated with `cgnat check`
    /// first).
    pub fn pools(tb: Testbed, toml: Toml) -> Bed {
        let text = toml.0;
        let mut bed = Bed::on(tb);
        let config = bed
            .tb
            .write_config("cgnat.toml", &text)
            .expect("writing the config");
        let (ok, out) = cli_direct(&["check"], &config);
        assert!(
            ok,
            "cgnat check refused the test's config:\n{out}\n--- config ---\n{text}"
        );
        bed.start(&config);
        bed
    }

    /// `cgnat subscribers --json`, parsed.
    pub fn subscribers(&self) -> Vec<BTreeMap<String, String>> {
        let (ok, out) = self.cli(&["subscribers", "--json"]);
        assert!(ok, "cgnat subscribers --json failed: {out}");
        json_objects(&out)
    }

    /// `cgnat sessions --json`, parsed.
    pub fn sessions(&self) -> Vec<BTreeMap<String, String>> {
        let (ok, out) = self.cli(&["sessions", "--json"]);
        assert!(ok, "cgnat sessions --json failed: {out}");
        json_objects(&out)
    }

    /// `cgnat forward ADDR`: the placement, or the command's message.
    pub fn forward(&self, sub: Ipv4Addr) -> Result<Placement, String> {
        let (ok, out) = self.cli(&["forward", &sub.to_string()]);
        placement_result(ok, &out)
    }

    /// `cgnat reverse EP`: the placement, or the command's message.
    pub fn reverse(&self, ep: SocketAddrV4) -> Result<Placement, String> {
        let (ok, out) = self.cli(&["reverse", &ep.to_string()]);
        placement_result(ok, &out)
    }

    /// A diagnostic dump: forward of `subs`, subscribers, sessions (cut).
    pub fn report(&self, subs: &[Ipv4Addr]) -> String {
        let mut s = String::new();
        for a in subs {
            let (_, out) = self.cli(&["forward", &a.to_string()]);
            s.push_str(&format!("cgnat forward {a}: {}\n", out.trim_end()));
        }
        let (_, out) = self.cli(&["subscribers", "--json"]);
        s.push_str(&format!("cgnat subscribers --json: {}\n", cut(&out, 4000)));
        let (_, out) = self.cli(&["sessions", "--json"]);
        s.push_str(&format!("cgnat sessions --json: {}\n", cut(&out, 8000)));
        s
    }
}

/// Failed checks of a test that goes on after a failure to report all of
/// them (the later steps tell the lead more than the first failure alone).
#[derive(Default)]
pub struct Checks(pub Vec<String>);

impl Checks {
    pub fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) -> bool {
        if !ok {
            let m = msg();
            eprintln!("FAILED CHECK: {m}");
            self.0.push(m);
        }
        ok
    }

    pub fn finish(self) {
        if !self.0.is_empty() {
            panic!(
                "{} check(s) failed:\n- {}",
                self.0.len(),
                self.0.join("\n- ")
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Output parsers
// ---------------------------------------------------------------------------

/// A line of `cgnat forward` / `cgnat reverse`:
/// `SUB -> EXT [ports LO-HI]... (SOURCE)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub subscriber: Ipv4Addr,
    pub external: Ipv4Addr,
    pub ranges: Vec<(u16, u16)>,
    pub source: String,
}

impl Placement {
    pub fn contains(&self, ep: SocketAddrV4) -> bool {
        *ep.ip() == self.external
            && self
                .ranges
                .iter()
                .any(|&(lo, hi)| (lo..=hi).contains(&ep.port()))
    }
}

pub fn parse_placement(text: &str) -> Option<Placement> {
    let line = text.lines().find(|l| l.contains(" -> "))?;
    let w: Vec<&str> = line.split_whitespace().collect();
    if w.len() < 4 || w[1] != "->" {
        return None;
    }
    let subscriber = w[0].parse().ok()?;
    let external = w[2].parse().ok()?;
    let mut ranges = Vec::new();
    let mut i = 3;
    while i + 1 < w.len() && w[i] == "ports" {
        let (lo, hi) = w[i + 1].split_once('-')?;
        ranges.push((lo.parse().ok()?, hi.parse().ok()?));
        i += 2;
    }
    let source = w
        .get(i)?
        .trim_start_matches('(')
        .trim_end_matches(')')
        .to_owned();
    Some(Placement {
        subscriber,
        external,
        ranges,
        source,
    })
}

fn placement_result(ok: bool, out: &str) -> Result<Placement, String> {
    if !ok {
        return Err(out.trim().to_owned());
    }
    parse_placement(out).ok_or_else(|| format!("unparsable output {out:?}"))
}

/// The flat objects of a JSON array as `cgnat ... --json` prints them
/// (string, number and boolean values; no nesting).
pub fn json_objects(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let read_string = |chars: &mut std::iter::Peekable<std::str::Chars>| {
        let mut s = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => {
                    if let Some(e) = chars.next() {
                        s.push(e);
                    }
                }
                c => s.push(c),
            }
        }
        s
    };
    while let Some(c) = chars.next() {
        if c != '{' {
            continue;
        }
        let mut obj = BTreeMap::new();
        loop {
            // key
            let mut key = None;
            while let Some(&c) = chars.peek() {
                chars.next();
                if c == '"' {
                    key = Some(read_string(&mut chars));
                    break;
                }
                if c == '}' {
                    break;
                }
            }
            let Some(key) = key else { break };
            while let Some(&c) = chars.peek() {
                chars.next();
                if c == ':' {
                    break;
                }
            }
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            let value = if chars.peek() == Some(&'"') {
                chars.next();
                read_string(&mut chars)
            } else {
                let mut v = String::new();
                while let Some(&c) = chars.peek() {
                    if c == ',' || c == '}' {
                        break;
                    }
                    v.push(c);
                    chars.next();
                }
                v.trim().to_owned()
            };
            obj.insert(key, value);
            match chars.next() {
                Some(',') => continue,
                _ => break,
            }
        }
        out.push(obj);
    }
    out
}

// ---------------------------------------------------------------------------
// Simulated subscribers
// ---------------------------------------------------------------------------

/// `n` addresses `a.b.c.1`, `a.b.c.2`, ... (skipping nothing: /10 hosts).
pub fn addrs(base: [u8; 3], n: u8) -> Vec<Ipv4Addr> {
    (1..=n)
        .map(|i| Ipv4Addr::new(base[0], base[1], base[2], i))
        .collect()
}

/// splitmix64: a small seeded generator (a failure can be replayed).
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `n` distinct addresses drawn from 100.64.0.0/10 by a generator seeded
/// with `seed`, outside 100.64.0.0/24 (the router and the test bed's own
/// subscribers): subscribers as an access network scatters them. A run of
/// consecutive addresses is the best case of a multiplicative hash (it
/// spreads them almost evenly by itself), so it would not show what the
/// placement adds to the hash.
pub fn scattered_addrs(seed: u64, n: usize) -> Vec<Ipv4Addr> {
    let mut rng = SplitMix(seed);
    let mut out = std::collections::BTreeSet::new();
    while out.len() < n {
        let a = (100u32 << 24) | (64 << 16) | rng.below(1 << 22) as u32;
        if a >> 8 != (100 << 16 | 64 << 8) && a & 0xff != 0 && a & 0xff != 0xff {
            out.insert(Ipv4Addr::from(a));
        }
    }
    out.into_iter().collect()
}

/// Adds `addrs` (as /10) to `host`'s eth0, in one `ip -batch`.
pub fn add_addrs(tb: &Testbed, host: Host, addrs: &[Ipv4Addr]) {
    let text: String = addrs
        .iter()
        .map(|a| format!("addr add {a}/10 dev eth0\n"))
        .collect();
    let path = tb
        .write_config(&format!("addrs-{host}-{}.batch", addrs.len()), &text)
        .expect("writing the ip batch file");
    tb.ip(host, &["-batch", &path.display().to_string()])
        .unwrap_or_else(|e| panic!("adding {} addresses to {host}: {e}", addrs.len()));
}

/// Enters the network namespace at `path` (this thread only).
pub fn enter_ns(path: &Path) {
    let f = File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    nix::sched::setns(f.as_fd(), CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("setns {}: {e}", path.display()));
}

/// Runs `f` on every item, from `threads` threads that entered the
/// namespace at `ns` (`Testbed::ns_path`); results in the order of `items`.
pub fn par_in_ns<T, R, F>(ns: &Path, items: Vec<T>, threads: usize, f: F) -> Vec<R>
where
    T: Send,
    R: Send,
    F: Fn(T) -> R + Sync,
{
    let path = ns.to_owned();
    let threads = threads.max(1);
    let mut chunks: Vec<Vec<(usize, T)>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, t) in items.into_iter().enumerate() {
        chunks[i % threads].push((i, t));
    }
    let mut out: Vec<(usize, R)> = thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .filter(|c| !c.is_empty())
            .map(|chunk| {
                let path = &path;
                let f = &f;
                s.spawn(move || {
                    enter_ns(path);
                    chunk
                        .into_iter()
                        .map(|(i, t)| (i, f(t)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

// ---------------------------------------------------------------------------
// UDP
// ---------------------------------------------------------------------------

/// What a UDP flow to a reflector came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The reflector answered; it saw this source.
    Answered(SocketAddrV4),
    /// The socket reported an error (ICMP): EHOSTUNREACH for 3/1.
    Refused(Option<i32>, String),
    /// Nothing came back in time.
    Silent,
}

impl Probe {
    pub fn answered(&self) -> Option<SocketAddrV4> {
        match self {
            Probe::Answered(a) => Some(*a),
            _ => None,
        }
    }

    pub fn host_unreachable(&self) -> bool {
        matches!(self, Probe::Refused(Some(e), _) if *e == nix::libc::EHOSTUNREACH)
    }
}

/// A UDP socket bound to `local` and connected to `dst`, with IP_RECVERR,
/// so that ICMP errors about its datagrams surface as errors on it (Linux
/// reports host unreachable, a soft error, to connected sockets only with
/// IP_RECVERR). Call in the subscriber's namespace.
pub fn udp_flow(local: SocketAddrV4, dst: SocketAddrV4) -> UdpSocket {
    let s = UdpSocket::bind(local).unwrap_or_else(|e| panic!("binding UDP {local}: {e}"));
    socket::setsockopt(&s, sockopt::Ipv4RecvErr, &true)
        .unwrap_or_else(|e| panic!("IP_RECVERR on {local}: {e}"));
    s.connect(dst)
        .unwrap_or_else(|e| panic!("connecting UDP {local} to {dst}: {e}"));
    s
}

/// Sends `payload` on the connected socket every 200 ms until the
/// reflector's answer echoing it arrives, the socket reports an error, or
/// `timeout` passes. Other datagrams (keepalive answers) are skipped.
pub fn probe(sock: &UdpSocket, payload: &[u8], timeout: Duration) -> Probe {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 4096];
    let refused = |e: io::Error| Probe::Refused(e.raw_os_error(), e.to_string());
    while Instant::now() < deadline {
        if let Err(e) = sock.send(payload) {
            return refused(e);
        }
        let resend = (Instant::now() + Duration::from_millis(200)).min(deadline);
        loop {
            let left = resend.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let _ = sock.set_read_timeout(Some(left.max(Duration::from_millis(1))));
            match sock.recv(&mut buf) {
                Ok(n) => {
                    if let Some((observed, echoed)) = decode_reflection(&buf[..n]) {
                        if echoed == payload {
                            return Probe::Answered(observed);
                        }
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => return refused(e),
            }
        }
    }
    Probe::Silent
}

/// Sends a datagram on each socket every `every` until dropped, so that
/// their sessions stay alive (inbound answers do not refresh them).
pub struct Keepalive {
    socks: Arc<Mutex<Vec<UdpSocket>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Keepalive {
    pub fn start(every: Duration) -> Keepalive {
        let socks: Arc<Mutex<Vec<UdpSocket>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, stop2) = (Arc::clone(&socks), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                if let Ok(v) = s2.lock() {
                    for s in v.iter() {
                        let _ = s.send(b"keepalive");
                    }
                }
                let until = Instant::now() + every;
                while Instant::now() < until && !stop2.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(20));
                }
            }
        });
        Keepalive {
            socks,
            stop,
            thread: Some(thread),
        }
    }

    pub fn add(&self, s: &UdpSocket) {
        let c = s.try_clone().expect("try_clone");
        self.socks.lock().expect("keepalive lock").push(c);
    }
}

impl Drop for Keepalive {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// TCP and ping from a given source address (call in the namespace)
// ---------------------------------------------------------------------------

fn timeval(d: Duration) -> TimeVal {
    TimeVal::new(d.as_secs() as _, d.subsec_micros() as _)
}

/// A TCP connection from `local` (SO_REUSEADDR, so that several
/// connections may share a local port) to `dst`, within `timeout` (the
/// kernel retransmits a SYN the NAT dropped).
pub fn tcp_from(
    local: SocketAddrV4,
    dst: SocketAddrV4,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    socket::bind(fd.as_raw_fd(), &SockaddrIn::from(local))?;
    socket::setsockopt(&fd, sockopt::SendTimeout, &timeval(timeout))?;
    match socket::connect(fd.as_raw_fd(), &SockaddrIn::from(dst)) {
        Ok(()) => {}
        Err(nix::errno::Errno::EINPROGRESS) | Err(nix::errno::Errno::EAGAIN) => {
            return Err(io::Error::new(
                ErrorKind::TimedOut,
                format!("connect {local} -> {dst} timed out after {timeout:?}"),
            ))
        }
        Err(e) => return Err(e.into()),
    }
    let s = TcpStream::from(fd);
    s.set_write_timeout(None)?;
    Ok(s)
}

/// The 8 bytes a simulated subscriber's pings carry: a tag and its address.
pub fn ping_marker(a: Ipv4Addr) -> [u8; 8] {
    let o = a.octets();
    [0xc6, 0x47, 0xa7, 0x01, o[0], o[1], o[2], o[3]]
}

/// `ping -I src -p <marker> dst` until one answer (at most `deadline_s`
/// seconds): the number of answers. Call in the namespace.
pub fn ping_from(src: Ipv4Addr, dst: Ipv4Addr, deadline_s: u32) -> Result<u32, String> {
    let pattern: String = ping_marker(src)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let out = Command::new("ping")
        .args([
            "-n",
            "-c",
            "1",
            "-w",
            &deadline_s.to_string(),
            "-i",
            "0.2",
            "-I",
            &src.to_string(),
            "-p",
            &pattern,
            &dst.to_string(),
        ])
        .output()
        .map_err(|e| format!("running ping: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    cgnat_kit::testbed::parse_ping(&text)
        .map(|p| p.received)
        .ok_or_else(|| {
            format!(
                "ping output: {}{}",
                text.trim_end(),
                String::from_utf8_lossy(&out.stderr).trim_end()
            )
        })
}

// ---------------------------------------------------------------------------
// ICMP capture with payloads
// ---------------------------------------------------------------------------

pub use cgnat_kit::testbed::IcmpCapture;

/// True when `hay` contains `needle`.
pub fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Polls `f` every `every` until it returns `Some` or `timeout` passes.
pub fn wait_until<T>(
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_lines() {
        let p =
            parse_placement("100.64.0.11 -> 203.0.113.4 ports 1088-1151 ports 2048-2111 (live)\n")
                .unwrap();
        assert_eq!(p.subscriber, Ipv4Addr::new(100, 64, 0, 11));
        assert_eq!(p.external, Ipv4Addr::new(203, 0, 113, 4));
        assert_eq!(p.ranges, vec![(1088, 1151), (2048, 2111)]);
        assert_eq!(p.source, "live");
        assert!(p.contains("203.0.113.4:2100".parse().unwrap()));
        assert!(!p.contains("203.0.113.4:2112".parse().unwrap()));
        let p = parse_placement("100.64.0.12 -> 192.0.2.200 (live)").unwrap();
        assert!(p.ranges.is_empty());
        assert_eq!(
            parse_placement("cgnat: error: 100.64.0.11 holds nothing now"),
            None
        );
    }

    #[test]
    fn json() {
        let v = json_objects(
            r#"[{"subscriber":"100.64.0.11","external":"203.0.113.2","tcp":1,"udp":2,"icmp":0,"sessions":3},{"a":"x\"y","b":true}]"#,
        );
        assert_eq!(v.len(), 2);
        assert_eq!(v[0]["external"], "203.0.113.2");
        assert_eq!(v[0]["udp"], "2");
        assert_eq!(v[0]["sessions"], "3");
        assert_eq!(v[1]["a"], "x\"y");
        assert_eq!(v[1]["b"], "true");
        assert!(json_objects("[]").is_empty());
    }

    #[test]
    fn toml_edits() {
        let t = Toml("[nat]\na = 1\n\n[timeouts]\nudp = \"300s\"\n[timeouts.udp_ports]\n".into())
            .set("timeouts", "udp", "\"2s\"")
            .set("nat", "exempt", "[]")
            .set("pool", "mode", "\"port-block\"");
        assert_eq!(
            t.0,
            "[nat]\nexempt = []\na = 1\n\n[timeouts]\nudp = \"2s\"\n[timeouts.udp_ports]\n\n[pool]\nmode = \"port-block\"\n"
        );
    }
}
