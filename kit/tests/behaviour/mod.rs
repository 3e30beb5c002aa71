//! Helpers of `tests/e2e_behaviour.rs`: [`Bed`] running cgnat with a
//! config edited per test, `cgnat sessions --json` parsed, TCP helpers
//! (listeners sharing a port, pattern streams with hashes), and a small
//! waiting primitive. Everything is built on the public Testbed API.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::thread;
use std::time::{Duration, Instant};

use cgnat_kit::testbed::{Fnv64, Host, Pattern, Testbed};
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};

use crate::common::bin;
pub use crate::common::Bed;

// ---------------------------------------------------------------------------
// Config text editing
// ---------------------------------------------------------------------------

/// The test bed's cgnat config, edited key by key (TOML forbids
/// duplicate keys, so keys are replaced in place).
#[derive(Debug, Clone)]
pub struct Conf {
    pub text: String,
}

impl Conf {
    /// Sets `key = value` (value as TOML text, e.g. `"\"3s\""`) in
    /// `[table]`, replacing an existing line, adding the table at the end
    /// if it is missing.
    pub fn set(&mut self, table: &str, key: &str, value: &str) -> &mut Self {
        self.text = crate::common::toml_set(&self.text, table, key, value);
        self
    }

    /// `set` with a quoted string value.
    pub fn set_str(&mut self, table: &str, key: &str, value: &str) -> &mut Self {
        self.set(table, key, &format!("\"{value}\""))
    }

    /// Short timers every test of this file wants: sweeps every 200 ms.
    pub fn fast_sweeps(&mut self) -> &mut Self {
        self.set_str("daemon", "sweep_interval", "200ms")
    }
}

// ---------------------------------------------------------------------------
// The test bed with cgnat running
// ---------------------------------------------------------------------------

impl Bed {
    /// A test bed with cgnat running on its config edited by `edit`
    /// (sweeps every 200 ms already set). `None` when the test cannot run
    /// here (not root, outside CI); under CI that panics.
    pub fn with_conf(edit: impl FnOnce(&mut Conf)) -> Option<Bed> {
        let mut bed = Bed::new()?;
        let mut conf = Conf {
            text: bed.tb.config_toml(),
        };
        conf.fast_sweeps();
        edit(&mut conf);
        bed.start_text("cgnat.toml", &conf.text);
        Some(bed)
    }

    /// `cgnat --config F sessions --json`, raw.
    pub fn sessions_text(&self) -> String {
        let b = bin().display().to_string();
        let c = self.config.display().to_string();
        self.tb
            .run(Host::Router, &[&b, "--config", &c, "sessions", "--json"])
            .unwrap_or_else(|e| panic!("cgnat sessions: {e}"))
    }

    /// Every session the daemon reports.
    pub fn sessions(&self) -> Vec<Session> {
        let text = self.sessions_text();
        parse_sessions(&text).unwrap_or_else(|e| panic!("cgnat sessions --json: {e}: {text}"))
    }

    /// Sessions of internal endpoint `internal` (and protocol).
    pub fn sessions_of(&self, proto: &str, internal: SocketAddrV4) -> Vec<Session> {
        self.sessions()
            .into_iter()
            .filter(|s| s.proto == proto && s.internal == internal)
            .collect()
    }

    /// The one session of `proto` between `internal` and `remote`, if any.
    pub fn session(
        &self,
        proto: &str,
        internal: SocketAddrV4,
        remote: SocketAddrV4,
    ) -> Option<Session> {
        let all = self.sessions();
        let found: Vec<&Session> = all
            .iter()
            .filter(|s| s.proto == proto && s.internal == internal && s.remote == remote)
            .collect();
        assert!(
            found.len() <= 1,
            "several {proto} sessions {internal} <-> {remote}: {all:#?}"
        );
        found.first().map(|s| (*s).clone())
    }

    /// One counter (packets); a missing name is a test failure.
    pub fn counter(&self, name: &str) -> u64 {
        let c = self.counters();
        *c.get(name)
            .unwrap_or_else(|| panic!("cgnat stats has no counter {name}: {c:?}"))
    }

    /// A failure report: the session table and the counters.
    pub fn evidence(&self) -> String {
        let stats = self
            .cgnat()
            .stats_text()
            .unwrap_or_else(|e| format!("(cgnat stats failed: {e})"));
        format!(
            "--- cgnat sessions --json ---\n{}\n--- cgnat stats ---\n{}",
            self.sessions_text().trim_end(),
            stats.trim_end()
        )
    }
}

/// True when every tool is on PATH. Otherwise: under CI=true it panics (a
/// test that cannot run must fail there), elsewhere it prints why and
/// returns false so that the caller returns early.
pub fn require_tools(tools: &[&str]) -> bool {
    let on_path = |t: &str| {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(t).is_file()))
            .unwrap_or(false)
    };
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !on_path(t)).collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!("test needs {}", missing.join(", "));
    cgnat_kit::testbed::cannot_run(&msg);
    false
}

// ---------------------------------------------------------------------------
// `cgnat sessions --json`
// ---------------------------------------------------------------------------

/// One entry of `cgnat sessions --json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub proto: String,
    pub internal: SocketAddrV4,
    pub external: SocketAddrV4,
    pub remote: SocketAddrV4,
    pub state: String,
    pub inbound: bool,
    pub hairpin: bool,
    pub idle_ms: u64,
    pub expires_in_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
enum Json {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

struct JsonParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl JsonParser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Result<(), String> {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected '{}' at byte {}", c as char, self.i))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        self.ws();
        match self.s.get(self.i) {
            Some(b'[') => {
                self.i += 1;
                let mut v = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Json::Arr(v));
                }
                loop {
                    v.push(self.value()?);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Arr(v));
                        }
                        _ => return Err(format!("bad array at byte {}", self.i)),
                    }
                }
            }
            Some(b'{') => {
                self.i += 1;
                let mut v = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(v));
                }
                loop {
                    self.ws();
                    let Json::Str(k) = self.value()? else {
                        return Err(format!("object key not a string at byte {}", self.i));
                    };
                    self.eat(b':')?;
                    let val = self.value()?;
                    v.push((k, val));
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Json::Obj(v));
                        }
                        _ => return Err(format!("bad object at byte {}", self.i)),
                    }
                }
            }
            Some(b'"') => {
                self.i += 1;
                let mut out = Vec::new();
                while let Some(&c) = self.s.get(self.i) {
                    self.i += 1;
                    match c {
                        b'"' => {
                            return String::from_utf8(out)
                                .map(Json::Str)
                                .map_err(|e| e.to_string())
                        }
                        b'\\' => {
                            let e = *self.s.get(self.i).ok_or("truncated escape")?;
                            self.i += 1;
                            out.push(match e {
                                b'n' => b'\n',
                                b't' => b'\t',
                                other => other,
                            });
                        }
                        _ => out.push(c),
                    }
                }
                Err("unterminated string".into())
            }
            Some(_) => {
                let start = self.i;
                while self.i < self.s.len() && !b",]} \n\t\r".contains(&self.s[self.i]) {
                    self.i += 1;
                }
                let w = std::str::from_utf8(&self.s[start..self.i]).map_err(|e| e.to_string())?;
                match w {
                    "true" => Ok(Json::Bool(true)),
                    "false" => Ok(Json::Bool(false)),
                    "null" => Ok(Json::Null),
                    _ => w
                        .parse()
                        .map(Json::Num)
                        .map_err(|_| format!("bad literal {w:?}")),
                }
            }
            None => Err("unexpected end".into()),
        }
    }
}

/// Parses the output of `cgnat sessions --json`.
pub fn parse_sessions(text: &str) -> Result<Vec<Session>, String> {
    let mut p = JsonParser {
        s: text.trim().as_bytes(),
        i: 0,
    };
    let Json::Arr(items) = p.value()? else {
        return Err("not a JSON array".into());
    };
    p.ws();
    if p.i != p.s.len() {
        return Err(format!("trailing data at byte {}", p.i));
    }
    items
        .into_iter()
        .map(|item| {
            let Json::Obj(fields) = item else {
                return Err("array item is not an object".to_owned());
            };
            let get = |k: &str| {
                fields
                    .iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| format!("no field {k}"))
            };
            let s = |k: &str| match get(k)? {
                Json::Str(s) => Ok(s),
                v => Err(format!("{k} is not a string: {v:?}")),
            };
            let a = |k: &str| {
                s(k)?
                    .parse::<SocketAddrV4>()
                    .map_err(|e| format!("{k}: {e}"))
            };
            let b = |k: &str| match get(k)? {
                Json::Bool(b) => Ok(b),
                v => Err(format!("{k} is not a bool: {v:?}")),
            };
            let n = |k: &str| match get(k)? {
                Json::Num(n) if n >= 0.0 => Ok(n as u64),
                v => Err(format!("{k} is not a count: {v:?}")),
            };
            Ok(Session {
                proto: s("proto")?,
                internal: a("internal")?,
                external: a("external")?,
                remote: a("remote")?,
                state: s("state")?,
                inbound: b("inbound")?,
                hairpin: b("hairpin")?,
                idle_ms: n("idle_ms")?,
                expires_in_ms: n("expires_in_ms")?,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------

/// Polls `cond` every `every` until it holds (true) or `timeout` passes
/// (false).
pub fn wait_until(timeout: Duration, every: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(every);
    }
}

// ---------------------------------------------------------------------------
// TCP
// ---------------------------------------------------------------------------

/// A TCP listener on `local` in `host`'s namespace, with SO_REUSEADDR
/// (so it may share its port with connected sockets made first).
pub fn tcp_listen(tb: &Testbed, host: Host, local: SocketAddrV4) -> TcpListener {
    tb.tcp_listen(host, local)
        .unwrap_or_else(|e| panic!("{host}: {e}"))
}

/// Accepts one connection within `timeout`.
pub fn accept_within(l: &TcpListener, timeout: Duration) -> (TcpStream, SocketAddrV4) {
    l.set_nonblocking(true).expect("O_NONBLOCK");
    let deadline = Instant::now() + timeout;
    loop {
        match l.accept() {
            Ok((s, SocketAddr::V4(peer))) => {
                s.set_nonblocking(false).expect("blocking");
                return (s, peer);
            }
            Ok((_, a)) => panic!("accepted an IPv6 peer {a}"),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "no connection accepted on {:?} within {timeout:?}",
                    l.local_addr()
                );
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Writes `bytes` bytes of pattern `seed` to `s` within `timeout`;
/// returns the FNV-1a hash of what was written.
pub fn send_pattern(s: &mut TcpStream, seed: u64, bytes: u64, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    let mut pat = Pattern::new(seed);
    let mut h = Fnv64::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        pat.fill(&mut buf[..n]);
        h.update(&buf[..n]);
        let mut data = &buf[..n];
        while !data.is_empty() {
            let rest = deadline.saturating_duration_since(Instant::now());
            assert!(
                !rest.is_zero(),
                "TCP send of {bytes} bytes did not finish within {timeout:?} ({left} left)"
            );
            s.set_write_timeout(Some(rest.min(Duration::from_secs(1))))
                .expect("SO_SNDTIMEO");
            match s.write(data) {
                Ok(0) => panic!("TCP connection closed while sending ({left} bytes left)"),
                Ok(k) => data = &data[k..],
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => panic!("TCP send ({left} bytes left): {e}"),
            }
        }
        left -= n as u64;
    }
    h.finish()
}

/// Reads from `s` until EOF, or until `limit` bytes when given, within
/// `timeout`; returns (bytes, FNV-1a hash).
pub fn recv_hash(s: &mut TcpStream, limit: Option<u64>, timeout: Duration) -> (u64, u64) {
    let deadline = Instant::now() + timeout;
    let mut h = Fnv64::new();
    let mut got = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let want = match limit {
            Some(l) if got >= l => break,
            Some(l) => (l - got).min(buf.len() as u64) as usize,
            None => buf.len(),
        };
        let rest = deadline.saturating_duration_since(Instant::now());
        assert!(
            !rest.is_zero(),
            "TCP receive: only {got} bytes (limit {limit:?}) within {timeout:?}"
        );
        s.set_read_timeout(Some(rest.min(Duration::from_secs(1))))
            .expect("SO_RCVTIMEO");
        match s.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(k) => {
                h.update(&buf[..k]);
                got += k as u64;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => panic!("TCP receive after {got} bytes: {e}"),
        }
    }
    (got, h.finish())
}

/// Expects EOF on `s` within `timeout` (and no data before it).
pub fn expect_eof(s: &mut TcpStream, timeout: Duration) {
    let (n, _) = recv_hash(s, None, timeout);
    assert_eq!(n, 0, "data arrived where only EOF was expected");
}

/// Sets SO_LINGER {on, 0}: close() then sends a RST.
pub fn set_linger_zero(s: &TcpStream) {
    socket::setsockopt(
        s,
        sockopt::Linger,
        &nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
    .expect("SO_LINGER");
}

/// Half-closes the sending side.
pub fn shut_write(s: &TcpStream) {
    s.shutdown(Shutdown::Write).expect("shutdown(Write)");
}

/// The IPv4 peer address of a stream.
pub fn peer_v4(s: &TcpStream) -> SocketAddrV4 {
    match s.peer_addr().expect("peer_addr") {
        SocketAddr::V4(a) => a,
        a => panic!("IPv6 peer {a}"),
    }
}

/// The IPv4 local address of a stream.
pub fn local_v4(s: &TcpStream) -> SocketAddrV4 {
    match s.local_addr().expect("local_addr") {
        SocketAddr::V4(a) => a,
        a => panic!("IPv6 local {a}"),
    }
}

/// True when `a` is in 100.64.0.0/10.
pub fn is_internal(a: Ipv4Addr) -> bool {
    cgnat_kit::testbed::in_internal(a)
}

// ---------------------------------------------------------------------------
// Sockets made in a namespace, used from any thread
// ---------------------------------------------------------------------------

/// A TCP socket in `host`'s namespace bound to `local` with SO_REUSEADDR
/// (not connected yet).
pub fn bound_tcp_socket(
    tb: &Testbed,
    host: Host,
    local: SocketAddrV4,
    nonblocking: bool,
) -> OwnedFd {
    tb.in_ns(host, move || -> Result<OwnedFd, nix::Error> {
        let mut flags = SockFlag::SOCK_CLOEXEC;
        if nonblocking {
            flags |= SockFlag::SOCK_NONBLOCK;
        }
        let fd = socket::socket(AddressFamily::Inet, SockType::Stream, flags, None)?;
        socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
        socket::bind(fd.as_raw_fd(), &SockaddrIn::from(local))?;
        Ok(fd)
    })
    .unwrap_or_else(|e| panic!("{host}: {e}"))
    .unwrap_or_else(|e| panic!("{host}: TCP bind {local}: {e}"))
}

/// Blocking connect of `fd` to `dst`, bounded by `timeout` (SO_SNDTIMEO);
/// the kernel retransmits SYNs meanwhile.
pub fn blocking_connect(
    fd: OwnedFd,
    dst: SocketAddrV4,
    timeout: Duration,
) -> Result<TcpStream, String> {
    let tv = nix::sys::time::TimeVal::new(timeout.as_secs() as _, timeout.subsec_micros() as _);
    socket::setsockopt(&fd, sockopt::SendTimeout, &tv).map_err(|e| format!("SO_SNDTIMEO: {e}"))?;
    match socket::connect(fd.as_raw_fd(), &SockaddrIn::from(dst)) {
        Ok(()) => {
            let s = TcpStream::from(fd);
            s.set_write_timeout(None).map_err(|e| e.to_string())?;
            s.set_nodelay(true).map_err(|e| e.to_string())?;
            Ok(s)
        }
        Err(nix::errno::Errno::EINPROGRESS) | Err(nix::errno::Errno::EAGAIN) => {
            Err(format!("connect to {dst}: no answer within {timeout:?}"))
        }
        Err(e) => Err(format!("connect to {dst}: {e}")),
    }
}

/// Starts a non-blocking connect from `local` to `dst` in `host`'s
/// namespace: the SYN leaves, nothing waits for the answer.
pub fn start_connect(tb: &Testbed, host: Host, local: SocketAddrV4, dst: SocketAddrV4) -> OwnedFd {
    let fd = bound_tcp_socket(tb, host, local, true);
    match socket::connect(fd.as_raw_fd(), &SockaddrIn::from(dst)) {
        Err(nix::errno::Errno::EINPROGRESS) => fd,
        other => panic!("non-blocking connect {local} -> {dst}: {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// nftables on an end host (never on the router)
// ---------------------------------------------------------------------------

/// On an end host: silently drop incoming bare SYNs to TCP port `port`
/// (counted), as a host whose SYN has not left yet would never see them.
pub fn nft_drop_syn(tb: &Testbed, host: Host, port: u16) {
    assert!(host != Host::Router, "no firewall rules on the router");
    let rules = format!(
        "table ip cgtest {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    \
         tcp dport {port} tcp flags & (syn | ack) == syn counter drop\n  }}\n}}\n"
    );
    let path = tb
        .write_config(&format!("nft-{}-{port}.nft", host.name()), &rules)
        .expect("writing nft rules");
    let p = path.display().to_string();
    tb.run(host, &["nft", "-f", &p])
        .unwrap_or_else(|e| panic!("nft on {host}: {e}"));
}

/// Packets dropped so far by the rule of [`nft_drop_syn`].
pub fn nft_dropped(tb: &Testbed, host: Host) -> u64 {
    let text = tb
        .run(host, &["nft", "list", "table", "ip", "cgtest"])
        .unwrap_or_else(|e| panic!("nft list on {host}: {e}"));
    let w: Vec<&str> = text.split_whitespace().collect();
    w.windows(2)
        .find(|p| p[0] == "packets")
        .and_then(|p| p[1].parse().ok())
        .unwrap_or_else(|| panic!("no counter in {text}"))
}

/// Removes the table of [`nft_drop_syn`].
pub fn nft_clear(tb: &Testbed, host: Host) {
    tb.run(host, &["nft", "delete", "table", "ip", "cgtest"])
        .unwrap_or_else(|e| panic!("nft delete on {host}: {e}"));
}

// ---------------------------------------------------------------------------
// STUN
// ---------------------------------------------------------------------------

/// True when a STUN server answers a Binding request at `server` (sent
/// from `sock`) within `timeout`.
pub fn stun_answers(sock: &std::net::UdpSocket, server: SocketAddrV4, timeout: Duration) -> bool {
    let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    req.extend_from_slice(b"cgnat-probe!");
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        let _ = sock.send_to(&req, server);
        let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            if from == SocketAddr::V4(server)
                && n >= 20
                && buf[..2] == [0x01, 0x01]
                && buf[8..20] == req[8..20]
            {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_json() {
        let t = r#"[{"proto":"tcp","internal":"100.64.0.11:5000","external":"203.0.113.7:5000","remote":"198.51.100.10:80","state":"established","inbound":false,"hairpin":false,"idle_ms":12,"expires_in_ms":7439988},
        {"proto":"udp","internal":"100.64.0.12:1","external":"203.0.113.8:2","remote":"203.0.113.7:5000","state":"active","inbound":true,"hairpin":true,"idle_ms":0,"expires_in_ms":3}]"#;
        let v = parse_sessions(t).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].internal, "100.64.0.11:5000".parse().unwrap());
        assert_eq!(v[0].state, "established");
        assert_eq!(v[0].expires_in_ms, 7439988);
        assert!(v[1].inbound && v[1].hairpin);
        assert_eq!(parse_sessions("[]").unwrap(), vec![]);
        assert!(parse_sessions("[{\"proto\":1}]").is_err());
        assert!(parse_sessions("nonsense").is_err());
    }

    #[test]
    fn conf_edit() {
        let mut c = Conf {
            text: "[nat]\na = 1\n\n[timeouts]\nudp = \"300s\"\ntcp = \"1s\"\n\n[daemon]\np = 2\n"
                .into(),
        };
        c.set_str("timeouts", "udp", "3s")
            .set_str("timeouts", "icmp", "9s")
            .set_str("timeouts.udp_ports", "53", "2s")
            .set_str("filtering", "udp", "address-dependent")
            .set("nat", "a", "5");
        let v: toml::Value = toml::from_str(&c.text).expect("valid TOML");
        assert_eq!(v["timeouts"]["udp"].as_str(), Some("3s"));
        assert_eq!(v["timeouts"]["icmp"].as_str(), Some("9s"));
        assert_eq!(v["timeouts"]["tcp"].as_str(), Some("1s"));
        assert_eq!(v["timeouts"]["udp_ports"]["53"].as_str(), Some("2s"));
        assert_eq!(v["filtering"]["udp"].as_str(), Some("address-dependent"));
        assert_eq!(v["nat"]["a"].as_integer(), Some(5));
        assert_eq!(v["daemon"]["p"].as_integer(), Some(2));
    }
}
