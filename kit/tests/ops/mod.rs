//! Helpers of `tests/e2e_ops.rs` (and of the hostile and fault tests):
//! configs of the test's own for [`Bed`], waiting on the daemon's log and
//! on XDP attachments, a small JSON parser (for
//! `--json` outputs and NAT log lines), a Prometheus text parser and
//! scraper, a TCP echo server with a client that pumps a known byte stream
//! through it, and NAT log file readers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use cgnat_kit::testbed::{Fnv64, Host, Pattern, Testbed};

pub use crate::common::Bed;

// ---------------------------------------------------------------------------
// Config text
// ---------------------------------------------------------------------------

/// A config, edited as TOML text.
#[derive(Debug, Clone)]
pub struct Toml(pub String);

/// `s` as a TOML basic string.
pub fn q(s: impl std::fmt::Display) -> String {
    format!("{:?}", s.to_string())
}

impl Toml {
    /// Sets `key = value` (value as TOML text) in `[table]`: replaces the
    /// key if the table has it, else adds it under the header; appends the
    /// table if the text has none.
    pub fn set(mut self, table: &str, key: &str, value: &str) -> Toml {
        self.0 = crate::common::toml_set(&self.0, table, key, value);
        self
    }

    /// The value text of `key` in `[table]`, if set.
    pub fn get(&self, table: &str, key: &str) -> Option<String> {
        let header = format!("[{table}]");
        let mut inside = false;
        for l in self.0.lines() {
            let t = l.trim();
            if t.starts_with('[') {
                inside = t == header;
                continue;
            }
            if inside {
                if let Some(r) = t.strip_prefix(key) {
                    if let Some(v) = r.trim_start().strip_prefix('=') {
                        return Some(v.trim().to_owned());
                    }
                }
            }
        }
        None
    }
}

// ---------------------------------------------------------------------------
// The test bed and its daemon
// ---------------------------------------------------------------------------

impl Bed {
    /// The test bed's config with this test bed's pin path and an explicit
    /// `daemon.detach_on_exit`.
    pub fn toml(&self, detach_on_exit: bool) -> Toml {
        Toml(self.tb.config_toml())
            .set("daemon", "pin_path", &q(self.tb.pin_path().display()))
            .set("daemon", "detach_on_exit", &detach_on_exit.to_string())
    }

    pub fn write(&self, name: &str, t: &Toml) -> PathBuf {
        self.tb
            .write_config(name, &t.0)
            .unwrap_or_else(|e| panic!("writing {name}: {e}"))
    }

    /// Waits until at least `n` lines of the running daemon's log satisfy
    /// `pred`; returns the `n`-th.
    pub fn wait_log(
        &self,
        pred: impl Fn(&str) -> bool,
        n: usize,
        timeout: Duration,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            let hits: Vec<&str> = log.lines().filter(|l| pred(l)).collect();
            if hits.len() >= n {
                return Ok(hits[n - 1].to_owned());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} matching lines after {timeout:?} (wanted {n}); log:\n{log}",
                    hits.len()
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `cgnat sessions --json`, parsed.
    pub fn sessions(&self, config: &Path) -> Vec<SessionRow> {
        let text = self.cli_ok(config, &["sessions", "--json"]);
        let j = Json::parse(&text).unwrap_or_else(|e| panic!("sessions --json: {e}:\n{text}"));
        j.arr()
            .unwrap_or_else(|| panic!("sessions --json is not an array: {text}"))
            .iter()
            .map(|s| SessionRow::from_json(s).unwrap_or_else(|e| panic!("{e} in {text}")))
            .collect()
    }

    /// Waits until `ifname`'s XDP attachment is `want` (detaching may take a
    /// moment after the last reference goes).
    pub fn wait_xdp(&self, ifname: &str, want: Option<&str>, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let mode = self
                .tb
                .xdp_mode(ifname)
                .unwrap_or_else(|e| panic!("ip link show {ifname}: {e}"));
            if mode.as_deref() == want || Instant::now() >= deadline {
                return mode;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

// ---------------------------------------------------------------------------
// `cgnat sessions --json`
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub proto: String,
    pub internal: SocketAddrV4,
    pub external: SocketAddrV4,
    pub remote: SocketAddrV4,
    pub state: String,
    pub idle_ms: u64,
    pub expires_in_ms: u64,
}

impl SessionRow {
    fn from_json(j: &Json) -> Result<SessionRow, String> {
        let s = |k: &str| {
            j.get(k)
                .and_then(Json::str)
                .map(str::to_owned)
                .ok_or_else(|| format!("session without string {k:?}"))
        };
        let a = |k: &str| -> Result<SocketAddrV4, String> {
            let v = s(k)?;
            v.parse().map_err(|_| format!("{k}: {v:?} is not ip:port"))
        };
        let n = |k: &str| {
            j.get(k)
                .and_then(Json::u64)
                .ok_or_else(|| format!("session without number {k:?}"))
        };
        Ok(SessionRow {
            proto: s("proto")?,
            internal: a("internal")?,
            external: a("external")?,
            remote: a("remote")?,
            state: s("state")?,
            idle_ms: n("idle_ms")?,
            expires_in_ms: n("expires_in_ms")?,
        })
    }
}

// ---------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------

/// A parsed JSON value; numbers are kept as their text.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// Parses one JSON document (surrounding white space allowed).
    pub fn parse(text: &str) -> Result<Json, String> {
        let mut p = JsonParser {
            b: text.as_bytes(),
            i: 0,
        };
        let v = p.value(0)?;
        p.ws();
        if p.i != p.b.len() {
            return Err(format!("trailing data at byte {}", p.i));
        }
        Ok(v)
    }

    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn u64(&self) -> Option<u64> {
        match self {
            Json::Num(n) => n.parse().ok(),
            _ => None,
        }
    }

    pub fn arr(&self) -> Option<&[Json]> {
        match self {
            Json::Arr(v) => Some(v),
            _ => None,
        }
    }

    pub fn keys(&self) -> Vec<&str> {
        match self {
            Json::Obj(m) => m.iter().map(|(k, _)| k.as_str()).collect(),
            _ => Vec::new(),
        }
    }
}

struct JsonParser<'a> {
    b: &'a [u8],
    i: usize,
}

impl JsonParser<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("JSON: {what} at byte {}", self.i))
    }

    fn eat(&mut self, c: u8) -> Result<(), String> {
        self.ws();
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            self.err(&format!("expected {:?}", c as char))
        }
    }

    fn value(&mut self, depth: u32) -> Result<Json, String> {
        if depth > 64 {
            return self.err("nesting too deep");
        }
        self.ws();
        match self.b.get(self.i) {
            None => self.err("unexpected end"),
            Some(b'{') => {
                self.i += 1;
                let mut m = Vec::new();
                self.ws();
                if self.b.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(m));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    if m.iter().any(|(x, _)| *x == k) {
                        return self.err(&format!("duplicate key {k:?}"));
                    }
                    self.eat(b':')?;
                    let v = self.value(depth + 1)?;
                    m.push((k, v));
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Json::Obj(m));
                        }
                        _ => return self.err("expected ',' or '}'"),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut v = Vec::new();
                self.ws();
                if self.b.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Json::Arr(v));
                }
                loop {
                    v.push(self.value(depth + 1)?);
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Arr(v));
                        }
                        _ => return self.err("expected ',' or ']'"),
                    }
                }
            }
            Some(b'"') => Ok(Json::Str(self.string()?)),
            Some(b't') => self.lit("true", Json::Bool(true)),
            Some(b'f') => self.lit("false", Json::Bool(false)),
            Some(b'n') => self.lit("null", Json::Null),
            Some(c) if *c == b'-' || c.is_ascii_digit() => {
                let start = self.i;
                self.i += 1;
                while self.i < self.b.len()
                    && matches!(
                        self.b[self.i],
                        b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-'
                    )
                {
                    self.i += 1;
                }
                let t = std::str::from_utf8(&self.b[start..self.i]).unwrap_or("");
                if t.parse::<f64>().is_err() {
                    return self.err(&format!("bad number {t:?}"));
                }
                Ok(Json::Num(t.to_owned()))
            }
            Some(_) => self.err("unexpected character"),
        }
    }

    fn lit(&mut self, word: &str, v: Json) -> Result<Json, String> {
        if self.b[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(v)
        } else {
            self.err("bad literal")
        }
    }

    fn string(&mut self) -> Result<String, String> {
        if self.b.get(self.i) != Some(&b'"') {
            return self.err("expected a string");
        }
        self.i += 1;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(&c) = self.b.get(self.i) else {
                return self.err("unterminated string");
            };
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let Some(&e) = self.b.get(self.i) else {
                        return self.err("unterminated escape");
                    };
                    self.i += 1;
                    match e {
                        b'"' | b'\\' | b'/' => out.push(e),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let hex = self
                                .b
                                .get(self.i..self.i + 4)
                                .and_then(|h| std::str::from_utf8(h).ok())
                                .and_then(|h| u32::from_str_radix(h, 16).ok());
                            let Some(cp) = hex.and_then(char::from_u32) else {
                                return self.err("bad \\u escape");
                            };
                            self.i += 4;
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(cp.encode_utf8(&mut buf).as_bytes());
                        }
                        _ => return self.err("bad escape"),
                    }
                }
                c if c < 0x20 => return self.err("control character in string"),
                c => out.push(c),
            }
        }
        String::from_utf8(out).or_else(|_| self.err("string is not UTF-8"))
    }
}

// ---------------------------------------------------------------------------
// Prometheus text
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the Prometheus / OpenMetrics text format (comments skipped).
pub fn parse_metrics(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || format!("bad metrics line {line:?}");
        let (name, labels, rest) = match line.find('{') {
            Some(b) => {
                let e = line.rfind('}').ok_or_else(bad)?;
                (
                    &line[..b],
                    parse_labels(&line[b + 1..e]).ok_or_else(bad)?,
                    &line[e + 1..],
                )
            }
            None => {
                let (n, r) = line.split_once(' ').ok_or_else(bad)?;
                (n, BTreeMap::new(), r)
            }
        };
        let value = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(bad)?;
        out.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok(out)
}

fn parse_labels(s: &str) -> Option<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let eq = s[i..].find('=')? + i;
        let key = s[i..eq].trim().trim_start_matches(',').trim().to_owned();
        if b.get(eq + 1) != Some(&b'"') {
            return None;
        }
        let mut j = eq + 2;
        let mut val = String::new();
        while j < b.len() && b[j] != b'"' {
            if b[j] == b'\\' && j + 1 < b.len() {
                j += 1;
            }
            val.push(b[j] as char);
            j += 1;
        }
        if j >= b.len() {
            return None;
        }
        m.insert(key, val);
        i = j + 1;
        while i < b.len() && (b[i] == b',' || b[i] == b' ') {
            i += 1;
        }
    }
    Some(m)
}

/// The value of the sample `name` whose labels are exactly `labels`.
pub fn metric(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples
        .iter()
        .find(|s| s.name == name && s.labels == want)
        .map(|s| s.value)
}

/// `GET /metrics` over HTTP from the router's namespace; returns the body
/// of a 200 answer.
pub fn scrape(tb: &Testbed, addr: SocketAddrV4) -> Result<String, String> {
    tb.in_ns(Host::Router, move || -> Result<String, String> {
        let mut s = TcpStream::connect_timeout(&SocketAddr::V4(addr), Duration::from_secs(5))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: cgnat\r\nConnection: close\r\n\r\n")
            .map_err(|e| format!("send request: {e}"))?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .map_err(|e| format!("read answer: {e}"))?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("no HTTP header end in {text:?}"))?;
        let status = head.lines().next().unwrap_or("");
        if !status.contains(" 200 ") {
            return Err(format!("HTTP status {status:?}: {body}"));
        }
        Ok(body.to_owned())
    })
    .map_err(|e| e.to_string())?
}

// ---------------------------------------------------------------------------
// TCP echo
// ---------------------------------------------------------------------------

/// One connection of an [`EchoServer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoConn {
    /// The peer the server saw (the NAT's external endpoint).
    pub peer: SocketAddrV4,
    /// Bytes received (and echoed), and their FNV-1a 64.
    pub bytes: u64,
    pub hash: u64,
    /// The client closed its side.
    pub eof: bool,
    pub error: Option<String>,
}

/// A TCP server that echoes every byte back and keeps a record (peer,
/// count, hash) of each connection.
pub struct EchoServer {
    addr: SocketAddrV4,
    conns: Arc<Mutex<Vec<EchoConn>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    pub fn start(tb: &Testbed, host: Host, bind: SocketAddrV4) -> EchoServer {
        let listener = tb
            .in_ns(host, move || TcpListener::bind(bind))
            .unwrap_or_else(|e| panic!("echo server in {host}: {e}"))
            .unwrap_or_else(|e| panic!("echo server on {bind} in {host}: {e}"));
        listener.set_nonblocking(true).expect("O_NONBLOCK");
        let conns = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (conns2, stop2) = (Arc::clone(&conns), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, SocketAddr::V4(peer))) => {
                        let idx = {
                            let mut v = conns2.lock().unwrap();
                            v.push(EchoConn {
                                peer,
                                bytes: 0,
                                hash: Fnv64::new().finish(),
                                eof: false,
                                error: None,
                            });
                            v.len() - 1
                        };
                        let (conns, stop) = (Arc::clone(&conns2), Arc::clone(&stop2));
                        thread::spawn(move || echo(s, idx, &conns, &stop));
                    }
                    Ok(_) => {}
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        EchoServer {
            addr: bind,
            conns,
            stop,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddrV4 {
        self.addr
    }

    pub fn conns(&self) -> Vec<EchoConn> {
        self.conns.lock().unwrap().clone()
    }

    /// Waits for connection `idx` to see the client's EOF.
    pub fn wait_eof(&self, idx: usize, timeout: Duration) -> Option<EchoConn> {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.conns().get(idx).cloned();
            if c.as_ref().is_some_and(|c| c.eof || c.error.is_some()) || Instant::now() >= deadline
            {
                return c;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn echo(mut s: TcpStream, idx: usize, conns: &Mutex<Vec<EchoConn>>, stop: &AtomicBool) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(30)));
    let mut h = Fnv64::new();
    let mut buf = vec![0u8; 64 * 1024];
    let set = |f: &dyn Fn(&mut EchoConn)| {
        if let Some(c) = conns.lock().unwrap().get_mut(idx) {
            f(c)
        }
    };
    while !stop.load(Ordering::Relaxed) {
        match s.read(&mut buf) {
            Ok(0) => {
                let _ = s.shutdown(Shutdown::Write);
                set(&|c| c.eof = true);
                return;
            }
            Ok(n) => {
                h.update(&buf[..n]);
                let hash = h.finish();
                set(&|c| {
                    c.bytes += n as u64;
                    c.hash = hash;
                });
                if let Err(e) = s.write_all(&buf[..n]) {
                    set(&|c| c.error = Some(format!("echo write: {e}")));
                    return;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                set(&|c| c.error = Some(format!("echo read: {e}")));
                return;
            }
        }
    }
}

/// What a [`Pump`] did.
#[derive(Debug)]
pub struct PumpResult {
    pub stream: TcpStream,
    pub sent_bytes: u64,
    pub sent_hash: u64,
    /// The longest wait for one piece's echo.
    pub max_stall: Duration,
    pub error: Option<String>,
}

/// A client thread that keeps sending pieces of a known byte stream through
/// an [`EchoServer`] and checks each echo, until stopped.
pub struct Pump {
    stop: Arc<AtomicBool>,
    echoed: Arc<AtomicU64>,
    failed: Arc<Mutex<Option<String>>>,
    handle: Option<JoinHandle<PumpResult>>,
}

const PIECE: usize = 4096;
const ECHO_LIMIT: Duration = Duration::from_secs(20);

impl Pump {
    pub fn start(stream: TcpStream, seed: u64) -> Pump {
        let stop = Arc::new(AtomicBool::new(false));
        let echoed = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(Mutex::new(None));
        let (stop2, echoed2, failed2) =
            (Arc::clone(&stop), Arc::clone(&echoed), Arc::clone(&failed));
        let handle = thread::spawn(move || {
            let mut s = stream;
            let mut pat = Pattern::new(seed);
            let mut h = Fnv64::new();
            let mut sent = 0u64;
            let mut max_stall = Duration::ZERO;
            let mut error = None;
            let mut piece = vec![0u8; PIECE];
            let mut back = vec![0u8; PIECE];
            while !stop2.load(Ordering::Relaxed) {
                pat.fill(&mut piece);
                let t0 = Instant::now();
                let r = s
                    .set_write_timeout(Some(ECHO_LIMIT))
                    .and_then(|_| s.write_all(&piece))
                    .map_err(|e| format!("write after {sent} bytes: {e}"))
                    .and_then(|_| {
                        s.set_read_timeout(Some(ECHO_LIMIT))
                            .and_then(|_| s.read_exact(&mut back))
                            .map_err(|e| format!("echo after {sent} bytes: {e}"))
                    })
                    .and_then(|_| {
                        if back == piece {
                            Ok(())
                        } else {
                            Err(format!("echo of bytes {sent}.. differs from what was sent"))
                        }
                    });
                // Counted as sent once written, echoed or not.
                h.update(&piece);
                sent += PIECE as u64;
                if let Err(e) = r {
                    *failed2.lock().unwrap() = Some(e.clone());
                    error = Some(e);
                    break;
                }
                max_stall = max_stall.max(t0.elapsed());
                echoed2.fetch_add(PIECE as u64, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(5));
            }
            PumpResult {
                stream: s,
                sent_bytes: sent,
                sent_hash: h.finish(),
                max_stall,
                error,
            }
        });
        Pump {
            stop,
            echoed,
            failed,
            handle: Some(handle),
        }
    }

    pub fn echoed(&self) -> u64 {
        self.echoed.load(Ordering::Relaxed)
    }

    /// Waits until `bytes` more bytes have made the round trip.
    pub fn progress(&self, bytes: u64, timeout: Duration) -> Result<(), String> {
        let start = self.echoed();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.failed.lock().unwrap().clone() {
                return Err(format!("the TCP stream failed: {e}"));
            }
            let now = self.echoed();
            if now >= start + bytes {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "only {} of {bytes} bytes echoed within {timeout:?}",
                    now - start
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn finish(mut self) -> PumpResult {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .expect("pump thread")
            .join()
            .expect("pump thread panicked")
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

// ---------------------------------------------------------------------------
// NAT log files
// ---------------------------------------------------------------------------

/// The complete JSON lines of a NAT log file (a line still being written,
/// without its newline, is left out).
pub fn log_records(path: &Path) -> Vec<Json> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            Json::parse(l)
                .unwrap_or_else(|e| panic!("{}: not a JSON line: {e}: {l:?}", path.display()))
        })
        .collect()
}

/// Waits for a record of `path` satisfying `pred`.
pub fn wait_record(
    path: &Path,
    pred: impl Fn(&Json) -> bool,
    timeout: Duration,
) -> Result<Json, String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(r) = log_records(path).into_iter().find(|r| pred(r)) {
            return Ok(r);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no such record in {} within {timeout:?}; it holds:\n{}",
                path.display(),
                std::fs::read_to_string(path).unwrap_or_else(|e| format!("({e})"))
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// `event` of a record.
pub fn event(r: &Json) -> &str {
    r.get("event").and_then(Json::str).unwrap_or("")
}

/// A mapping record (`mapping-create`/`mapping-release`) of this
/// subscriber endpoint?
pub fn is_mapping(r: &Json, ev: &str, proto: &str, sub: SocketAddrV4) -> bool {
    event(r) == ev
        && r.get("proto").and_then(Json::str) == Some(proto)
        && r.get("subscriber").and_then(Json::str) == Some(&sub.ip().to_string())
        && r.get("subscriber_port").and_then(Json::u64) == Some(u64::from(sub.port()))
}

/// Does a record name a destination of the test traffic (an external
/// host's address, or the reflectors' port 7000)? RFC 6888 REQ-12 forbids
/// logging destinations.
pub fn names_destination(r: &Json) -> bool {
    match r {
        Json::Str(s) => s.starts_with("198.51.100."),
        Json::Num(n) => n == "7000",
        Json::Arr(v) => v.iter().any(names_destination),
        Json::Obj(m) => m.iter().any(|(_, v)| names_destination(v)),
        _ => false,
    }
}

/// The external endpoint a mapping record names.
pub fn record_external(r: &Json) -> Option<SocketAddrV4> {
    let ip = r.get("external")?.str()?.parse().ok()?;
    let port = u16::try_from(r.get("external_port")?.u64()?).ok()?;
    Some(SocketAddrV4::new(ip, port))
}
