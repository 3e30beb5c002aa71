//! The case runner: one loaded Datapath in the test namespace, cases of
//! {description, side, ingress, input frame, expected verdict, expected
//! counter, expected output}, and map readers.

use std::net::Ipv4Addr;
use std::path::Path;

use cgnat::bpf::{types, Datapath, LoadOptions, Side, Tables};
use cgnat::config::Config;

use super::frame::{self, Pkt};

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

pub fn verdict_name(v: u32) -> String {
    match v {
        XDP_ABORTED => "XDP_ABORTED".into(),
        XDP_DROP => "XDP_DROP".into(),
        XDP_PASS => "XDP_PASS".into(),
        XDP_TX => "XDP_TX".into(),
        XDP_REDIRECT => "XDP_REDIRECT".into(),
        v => format!("action {v}"),
    }
}

/// The test configuration: `nat` lines go into [nat] (table sizes by
/// default), `extra` adds whole sections ([icmp], [filtering] ...).
pub fn config_text(nat: &str, extra: &str) -> String {
    config_text_iface("", nat, extra)
}

/// `config_text` with more `[interfaces]` keys.
pub fn config_text_iface(iface: &str, nat: &str, extra: &str) -> String {
    let nat = if nat.is_empty() {
        "max_sessions = 512\nmax_bindings = 512"
    } else {
        nat
    };

    format!(
        r#"
[interfaces]
internal = "int0"
external = "ext0"
{iface}
[nat]
internal_prefixes = ["100.64.0.0/10"]
external_pool = ["203.0.113.0/28", "192.0.2.200/29"]
{nat}
[daemon]
pin_path = "/sys/fs/bpf/cgnat-prog-run-unused"
{extra}
"#
    )
}

/// Which interface a frame arrives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Int0,
    Ext0,
}

/// Computes an expected frame from the maps after the run.
pub type AfterFn = Box<dyn FnOnce(&Harness) -> Result<Vec<u8>, String>>;
/// Computes an expected frame from the maps and the actual output.
pub type OutputFn = Box<dyn FnOnce(&Harness, &[u8]) -> Result<Vec<u8>, String>>;

/// What the output frame must be.
pub enum Expect {
    /// Byte-identical to the input (pass and drop verdicts: the program
    /// must not touch what it does not forward).
    Unchanged,
    /// Exactly these bytes, checksums verified independently.
    Frame(Vec<u8>),
    /// Computed after the run from the maps (e.g. the binding the packet
    /// created); Err fails the case.
    After(AfterFn),
    /// Like `After`, also given the output: for fields the test cannot
    /// predict (the keyed-hash IP ID), which the closure checks for
    /// consistency and copies into the expected frame.
    Output(OutputFn),
}

/// One row of a table.
pub struct Case {
    pub name: String,
    pub side: Side,
    pub port: Port,
    pub input: Vec<u8>,
    pub verdict: u32,
    /// The counter that must grow by exactly this packet (and no other).
    pub counter: &'static str,
    pub expect: Expect,
}

impl Case {
    pub fn new(name: impl Into<String>, side: Side, port: Port, input: Vec<u8>) -> Case {
        Case {
            name: name.into(),
            side,
            port,
            input,
            verdict: XDP_DROP,
            counter: "",
            expect: Expect::Unchanged,
        }
    }

    /// Subscriber side, frame received on int0.
    pub fn int(name: impl Into<String>, input: Vec<u8>) -> Case {
        Case::new(name, Side::Internal, Port::Int0, input)
    }

    /// Internet side, frame received on ext0.
    pub fn ext(name: impl Into<String>, input: Vec<u8>) -> Case {
        Case::new(name, Side::External, Port::Ext0, input)
    }

    pub fn verdict(mut self, v: u32, counter: &'static str) -> Case {
        self.verdict = v;
        self.counter = counter;
        self
    }

    pub fn frame(mut self, f: Vec<u8>) -> Case {
        self.expect = Expect::Frame(f);
        self
    }

    pub fn after(mut self, f: impl FnOnce(&Harness) -> Result<Vec<u8>, String> + 'static) -> Case {
        self.expect = Expect::After(Box::new(f));
        self
    }

    pub fn output(
        mut self,
        f: impl FnOnce(&Harness, &[u8]) -> Result<Vec<u8>, String> + 'static,
    ) -> Case {
        self.expect = Expect::Output(Box::new(f));
        self
    }
}

/// Map an ensure-style condition to a case error.
#[macro_export]
macro_rules! ensure {
    ($c:expr, $($fmt:tt)+) => {
        if !$c {
            return Err(format!($($fmt)+));
        }
    };
}

pub struct Harness {
    pub test: &'static str,
    pub cfg: Config,
    pub dp: Datapath,
    pub tables: Tables,
    pub int0: u32,
    pub ext0: u32,
    /// Successful test_run calls on this Datapath.
    pub runs: u64,
    pub cases: usize,
    pub failures: Vec<String>,
}

pub fn be32(a: Ipv4Addr) -> u32 {
    u32::from(a).to_be()
}

pub fn addr_of(be: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from_be(be))
}

impl Harness {
    /// Loads the program as the daemon does (without attaching) with a
    /// whole configuration text (interfaces int0/ext0, see `config_text`);
    /// must run inside the test namespace.
    pub fn load_text(test: &'static str, text: &str) -> Harness {
        // int0 and ext0 are veths: "auto" would redirect what goes back out
        // of its ingress; the tables expect XDP_TX unless a config asks
        let text = if text.contains("send_back") {
            text.to_owned()
        } else {
            text.replacen(
                "[interfaces]\n",
                "[interfaces]\nsend_back = \"xdp_tx\"\n",
                1,
            )
        };
        let text = text.as_str();
        let cfg = Config::parse(text, Path::new("test.toml"))
            .unwrap_or_else(|e| panic!("test config: {e}\n{text}"));
        let dp = Datapath::load(
            &cfg,
            LoadOptions {
                attach: false,
                pin: false,
            },
        )
        .unwrap_or_else(|e| panic!("loading the data path: {e}"));
        let tables = dp.tables().expect("tables");
        let idx = |n: &str| nix::net::if_::if_nametoindex(n).unwrap_or_else(|e| panic!("{n}: {e}"));
        Harness {
            test,
            int0: idx("int0"),
            ext0: idx("ext0"),
            cfg,
            dp,
            tables,
            runs: 0,
            cases: 0,
            failures: Vec::new(),
        }
    }

    pub fn ifindex(&self, p: Port) -> u32 {
        match p {
            Port::Int0 => self.int0,
            Port::Ext0 => self.ext0,
        }
    }

    /// Summed packets and bytes of every counter, by name.
    pub fn counters(&self) -> Vec<(&'static str, u64, u64)> {
        cgnat::stats::read(&self.tables.stats)
            .expect("reading stats")
            .into_iter()
            .map(|c| (c.name, c.packets, c.bytes))
            .collect()
    }

    /// Runs a frame and counts the run; Err if the kernel refused it.
    pub fn test_run(
        &mut self,
        side: Side,
        port: Port,
        frame: &[u8],
    ) -> Result<(u32, Vec<u8>), String> {
        let r = self
            .dp
            .test_run(side, frame, self.ifindex(port))
            .map_err(|e| format!("BPF_PROG_TEST_RUN failed: {e}"));
        if r.is_ok() {
            self.runs += 1;
        }
        r
    }

    /// Runs one case; records a failure instead of panicking so the rest of
    /// the table still runs. Returns the output frame if the case passed.
    pub fn run(&mut self, case: Case) -> Option<Vec<u8>> {
        self.cases += 1;
        let name = case.name.clone();
        match self.run_inner(case) {
            Ok(out) => {
                println!("  ok   {}: {name}", self.test);
                Some(out)
            }
            Err(e) => {
                println!("  FAIL {}: {name}\n{e}", self.test);
                self.failures.push(format!("{name}: {e}"));
                None
            }
        }
    }

    fn run_inner(&mut self, case: Case) -> Result<Vec<u8>, String> {
        let before = self.counters();
        let (verdict, out) = self.test_run(case.side, case.port, &case.input)?;
        let after = self.counters();

        let mut deltas = Vec::new();
        for (b, a) in before.iter().zip(&after) {
            if a.1 != b.1 || a.2 != b.2 {
                deltas.push((a.0, a.1 - b.1, a.2 - b.2));
            }
        }
        let want = vec![(case.counter, 1u64, case.input.len() as u64)];
        let mut msgs = Vec::new();
        if verdict != case.verdict {
            msgs.push(format!(
                "verdict {} (expected {})",
                verdict_name(verdict),
                verdict_name(case.verdict)
            ));
        }
        if deltas != want {
            msgs.push(format!(
                "counter deltas {deltas:?} (expected {want:?}: one packet of {} bytes)",
                case.input.len()
            ));
        }
        let expected = match case.expect {
            Expect::Unchanged => Ok(case.input.clone()),
            Expect::Frame(f) => Ok(f),
            Expect::After(f) => f(self),
            Expect::Output(f) => f(self, &out),
        };
        match expected {
            Err(e) => msgs.push(e),
            Ok(exp) => {
                if matches!(verdict, XDP_TX | XDP_REDIRECT) || exp != case.input {
                    if let Err(e) = frame::verify_checksums(&out) {
                        msgs.push(format!("output checksum: {e}"));
                    }
                    if let Err(e) = frame::verify_with_etherparse(&out) {
                        msgs.push(format!("output checksum: {e}"));
                    }
                }
                if out != exp {
                    msgs.push(format!(
                        "output frame differs:\n{}",
                        frame::diff(&exp, &out)
                    ));
                }
            }
        }
        if msgs.is_empty() {
            Ok(out)
        } else {
            Err(format!(
                "    input: {}\n    {}",
                frame::describe(&case.input),
                msgs.join("\n    ")
            ))
        }
    }

    /// Records a failed non-frame check (e.g. on the maps).
    pub fn check(&mut self, name: &str, r: Result<(), String>) {
        self.cases += 1;
        match r {
            Ok(()) => println!("  ok   {}: {name}", self.test),
            Err(e) => {
                println!("  FAIL {}: {name}\n    {e}", self.test);
                self.failures.push(format!("{name}: {e}"));
            }
        }
    }

    /// The outbound half of the binding of internal endpoint (addr,
    /// port, proto).
    pub fn binding_out(
        &self,
        addr: Ipv4Addr,
        port: u16,
        proto: u8,
    ) -> Option<types::cgnat_binding> {
        let k = types::cgnat_endpoint {
            addr: be32(addr),
            port: port.to_be(),
            proto,
            _pad: 0,
        };
        self.tables.bindings.get_out(&k).expect("map lookup")
    }

    /// The inbound half of the binding of external endpoint (addr, port,
    /// proto).
    pub fn binding_in(&self, addr: Ipv4Addr, port: u16, proto: u8) -> Option<types::cgnat_binding> {
        let k = types::cgnat_endpoint {
            addr: be32(addr),
            port: port.to_be(),
            proto,
            _pad: 0,
        };
        self.tables.bindings.get_in(&k).expect("map lookup")
    }

    pub fn session(
        &self,
        ext: (Ipv4Addr, u16),
        rem: (Ipv4Addr, u16),
        proto: u8,
    ) -> Option<types::cgnat_session> {
        let k = session_key(ext, rem, proto);
        self.tables.sessions.get(&k).expect("map lookup")
    }

    /// Writes (or, with None, deletes) the session of (ext, rem, proto),
    /// as a sweep or a peer would.
    pub fn put_session(
        &self,
        ext: (Ipv4Addr, u16),
        rem: (Ipv4Addr, u16),
        proto: u8,
        v: Option<types::cgnat_session>,
    ) -> Result<(), String> {
        let k = session_key(ext, rem, proto);
        let s = &self.tables.sessions;
        match v {
            Some(v) => s.upsert(&k, &v).map_err(|e| e.to_string()),
            None => match s.delete(&k) {
                Ok(true) => Ok(()),
                Ok(false) => Err("sessions: no session to delete".to_string()),
                Err(e) => Err(e.to_string()),
            },
        }
    }

    /// How many bindings there are (inbound halves).
    pub fn bindings_in(&self) -> u64 {
        self.tables.bindings.count().expect("counting bindings")
    }

    /// How many outbound halves of bindings there are.
    pub fn bindings_out(&self) -> u64 {
        self.tables.bindings.count_out().expect("counting bindings")
    }

    /// The external endpoint of an internal one, checked for consistency:
    /// in the pool, not quarantined, and the reverse entry points back.
    pub fn external_of(&self, p: &Pkt) -> Result<(Ipv4Addr, u16), String> {
        let (a, port, proto) = (p.src, p.sport(), p.proto());
        let b = self
            .binding_out(a, port, proto)
            .ok_or_else(|| format!("no outbound half for {a}:{port}/{proto}"))?;
        let ext = (addr_of(b.addr), u16::from_be(b.port));
        ensure!(
            self.cfg.pool_addrs.contains(&ext.0),
            "outbound half {a}:{port}/{proto} -> {}:{} which is not a pool address",
            ext.0,
            ext.1
        );
        ensure!(
            b.flags == 0,
            "outbound half {a}:{port} has flags {:#x}",
            b.flags
        );
        let r = self
            .binding_in(ext.0, ext.1, proto)
            .ok_or_else(|| format!("bind_in has no entry for {}:{}/{proto}", ext.0, ext.1))?;
        ensure!(
            addr_of(r.addr) == a && u16::from_be(r.port) == port,
            "bind_in {}:{} -> {}:{}, expected {a}:{port}",
            ext.0,
            ext.1,
            addr_of(r.addr),
            u16::from_be(r.port)
        );
        Ok(ext)
    }

    /// Every packet counted exactly once: the packets of all counters sum
    /// to the number of runs.
    pub fn check_accounting(&mut self) {
        let total: u64 = self.counters().iter().map(|c| c.1).sum();
        let runs = self.runs;
        let counters: Vec<_> = self
            .counters()
            .into_iter()
            .filter(|c| c.1 > 0)
            .map(|c| format!("{}={}", c.0, c.1))
            .collect();
        println!("  counters: {}", counters.join(" "));
        self.check(
            &format!("accounting: sum of counters == {runs} test runs"),
            if total == runs {
                Ok(())
            } else {
                Err(format!("counters sum to {total} packets after {runs} runs"))
            },
        );
    }

    /// Prints the summary line and fails the test if any case failed.
    pub fn finish(mut self) {
        self.check_accounting();
        println!(
            "prog_run {}: {} table cases ran, {} failed, {} BPF_PROG_TEST_RUN calls",
            self.test,
            self.cases,
            self.failures.len(),
            self.runs
        );
        if !self.failures.is_empty() {
            panic!(
                "{}: {} of {} cases failed:\n  {}",
                self.test,
                self.failures.len(),
                self.cases,
                self.failures.join("\n  ")
            );
        }
    }
}

/// The session key of (ext, rem, proto).
fn session_key(ext: (Ipv4Addr, u16), rem: (Ipv4Addr, u16), proto: u8) -> types::cgnat_session_key {
    types::cgnat_session_key {
        ext_addr: be32(ext.0),
        rem_addr: be32(rem.0),
        ext_port: ext.1.to_be(),
        rem_port: rem.1.to_be(),
        proto,
        ..Default::default()
    }
}
