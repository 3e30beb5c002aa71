//! Differential property test: random packet sequences run
//! through the real XDP program (BPF_PROG_TEST_RUN, loaded as the daemon
//! loads it) and through a pure-Rust reference model
//! (`differential/model.rs`). Every packet must get the same verdict, the
//! same counter (exactly one, by one packet) and a byte-identical output
//! frame; after every packet the binding tables hold exactly the model's
//! endpoints, and after every sequence the sessions (with their raw TCP
//! event bits, inbound and hairpin flags) and the per-subscriber counts
//! equal the model's, and the TCP state `cgnat sessions` shows for each
//! equals the model's own decoding of its bits.
//!
//! Universe: subscribers 100.64.0.11 and .12 plus a spoofed 10.9.9.9,
//! remotes 198.51.100.10 and .20, three source ports (one below 1024), two
//! remote ports; UDP, TCP with random flags, ICMP echo and echo reply;
//! outbound, inbound (to learned external endpoints, unbound pool
//! endpoints, subscribers directly, non-NAT addresses), hairpin to learned
//! endpoints, ICMP errors from the internet quoting translated packets and
//! from subscribers quoting delivered ones (some with a broken checksum),
//! TTL 1. Three configurations (see `CONFIGS`). State is reset between
//! sequences by deleting every map entry.
//!
//! Cases: `CGNAT_PROPTEST_CASES` sequences per configuration (default
//! 1000, at least 16). Needs root and iproute2 (skips, or fails under CI=true).
//!
//! Run: cargo test --release --test differential -- --nocapture

#[allow(dead_code)]
#[path = "prog_run/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "differential/model.rs"]
mod model;
#[allow(dead_code)]
#[path = "prog_run/netns.rs"]
mod netns;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Instant;

use cgnat::bpf::types::{cgnat_binding as Binding, cgnat_endpoint as Endpoint};
use cgnat::bpf::{BpfError, Side};
use cgnat::config::Filtering;
use libbpf_rs::{MapCore, MapFlags};
use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestCaseError, TestRunner};

use cgnat_kit::frame;
use frame::*;
use harness::*;
use model::*;
use netns::*;

const H11: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 11);
const H12: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 12);
const SPOOF: Ipv4Addr = Ipv4Addr::new(10, 9, 9, 9);
const R10: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const R20: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
const NOT_NAT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const SPOOF_MAC: Mac = [0x02, 0x33, 0, 0, 0, 0x09];

const SUBS: [Ipv4Addr; 3] = [H11, H12, SPOOF];
const SPORTS: [u16; 3] = [5000, 5001, 700];
const REMS: [Ipv4Addr; 2] = [R10, R20];
/// Sources of inbound packets: the remotes, and a subscriber's address
/// spoofed from outside.
const IN_SRCS: [Ipv4Addr; 3] = [R10, R20, H12];
const RPORTS: [u16; 2] = [3478, 53];

/// (name, config text, model config)
struct Setup {
    name: &'static str,
    text: String,
    filt: (Filtering, Filtering, Filtering),
    limit_ports: u32,
    limit_sessions: u32,
    parity: bool,
    icmp_errors: bool,
    /// [[static]] mappings: (proto, internal, external)
    statics: Vec<(u8, Ep, Ep)>,
}

/// The [[static]] sections of `statics`.
fn statics_text(statics: &[(u8, Ep, Ep)]) -> String {
    statics
        .iter()
        .map(|(p, i, e)| {
            format!(
                "[[static]]\nproto = \"{}\"\ninternal = \"{}:{}\"\nexternal = \"{}:{}\"\n",
                if *p == PROTO_TCP { "tcp" } else { "udp" },
                i.0,
                i.1,
                e.0,
                e.1
            )
        })
        .collect()
}

/// Port forwards on pool address `a`: UDP to 100.64.0.12:5001 and TCP to
/// 100.64.0.11:5001 (a port the sequences use, so outbound traffic from it
/// takes the static mapping).
fn statics_on(a: Ipv4Addr) -> Vec<(u8, Ep, Ep)> {
    vec![
        (PROTO_UDP, (H12, 5001), (a, 7000)),
        (PROTO_TCP, (H11, 5001), (a, 7001)),
    ]
}

fn config(pool: &str, extra: &str) -> String {
    format!(
        r#"
[interfaces]
internal = "int0"
external = "ext0"
[nat]
internal_prefixes = ["100.64.0.0/10"]
external_pool = [{pool}]
max_sessions = 1024
max_bindings = 1024
{extra}
[daemon]
pin_path = "/sys/fs/bpf/cgnat-differential-unused"
"#
    )
}

fn setups() -> Vec<Setup> {
    use Filtering::*;
    vec![
        Setup {
            name: "eif",
            text: config(
                r#""203.0.113.0/28", "192.0.2.200/29""#,
                "[icmp]\nrate_limit = 10000",
            ),
            filt: (
                EndpointIndependent,
                EndpointIndependent,
                EndpointIndependent,
            ),
            limit_ports: 0,
            limit_sessions: 0,
            parity: false,
            icmp_errors: true,
            statics: statics_on(Ipv4Addr::new(203, 0, 113, 9)),
        },
        Setup {
            name: "adf-udp+apdf-tcp+sessions",
            text: config(
                r#""203.0.113.0/28", "192.0.2.200/29""#,
                "[limits]\nsessions = 6\n\
                 [filtering]\nudp = \"address-dependent\"\ntcp = \"address-and-port-dependent\"\n\
                 icmp = \"address-dependent\"\n[icmp]\nrate_limit = 10000",
            ),
            filt: (AddressAndPortDependent, AddressDependent, AddressDependent),
            limit_ports: 0,
            limit_sessions: 6,
            parity: false,
            icmp_errors: true,
            statics: statics_on(Ipv4Addr::new(203, 0, 113, 9)),
        },
        Setup {
            name: "one-address+limits+parity",
            text: config(
                r#""203.0.113.5/32""#,
                "preserve_parity = true\n[limits]\nports = 2\nsessions = 4\n\
                 [filtering]\nudp = \"address-dependent\"\n[icmp]\nrate_limit = 0",
            ),
            filt: (EndpointIndependent, AddressDependent, EndpointIndependent),
            limit_ports: 2,
            limit_sessions: 4,
            parity: true,
            icmp_errors: false,
            statics: statics_on(Ipv4Addr::new(203, 0, 113, 5)),
        },
    ]
}

/// What a packet carries, resolved against the target's protocol.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Udp,
    Tcp(u8),
    Echo,
    EchoReply,
}

#[derive(Debug, Clone)]
enum Op {
    Out {
        sub: usize,
        sport: usize,
        rem: usize,
        rport: usize,
        kind: Kind,
        plen: usize,
        ttl1: bool,
    },
    In {
        rem: usize,
        rport: usize,
        target: usize,
        kind: Kind,
        plen: usize,
        ttl1: bool,
    },
    Hairpin {
        sub: usize,
        sport: usize,
        target: usize,
        kind: Kind,
        ttl1: bool,
    },
    ErrIn {
        idx: usize,
        other_src: bool,
        err: usize,
        qlen: usize,
        bad: bool,
        ttl1: bool,
    },
    ErrOut {
        idx: usize,
        err: usize,
        qlen: usize,
        bad: bool,
        ttl1: bool,
    },
}

fn kind() -> impl Strategy<Value = Kind> {
    let flags = prop_oneof![
        prop::sample::select(vec![
            TCP_SYN,
            TCP_SYN | TCP_ACK,
            TCP_ACK,
            TCP_FIN | TCP_ACK,
            TCP_RST,
            TCP_RST | TCP_ACK,
            0x18, // PSH ACK
            TCP_SYN | TCP_FIN,
            TCP_SYN | TCP_RST,
            TCP_FIN,
            0,
        ]),
        any::<u8>(),
    ];
    prop_oneof![
        3 => Just(Kind::Udp),
        4 => flags.prop_map(Kind::Tcp),
        2 => Just(Kind::Echo),
        1 => Just(Kind::EchoReply),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let ttl1 = || prop::bool::weighted(0.08);
    prop_oneof![
        5 => (0..3usize, 0..3usize, 0..2usize, 0..2usize, kind(), 0..40usize, ttl1()).prop_map(
            |(sub, sport, rem, rport, kind, plen, ttl1)| Op::Out { sub, sport, rem, rport, kind, plen, ttl1 }
        ),
        4 => (prop_oneof![9 => 0..2usize, 1 => Just(2usize)], 0..2usize, any::<usize>(), kind(), 0..40usize, ttl1()).prop_map(
            |(rem, rport, target, kind, plen, ttl1)| Op::In { rem, rport, target, kind, plen, ttl1 }
        ),
        2 => (0..3usize, 0..3usize, any::<usize>(), kind(), ttl1()).prop_map(
            |(sub, sport, target, kind, ttl1)| Op::Hairpin { sub, sport, target, kind, ttl1 }
        ),
        1 => (any::<usize>(), any::<bool>(), 0..4usize, 0..4usize, prop::bool::weighted(0.15), ttl1()).prop_map(
            |(idx, other_src, err, qlen, bad, ttl1)| Op::ErrIn { idx, other_src, err, qlen, bad, ttl1 }
        ),
        1 => (any::<usize>(), 0..4usize, 0..4usize, prop::bool::weighted(0.15), ttl1()).prop_map(
            |(idx, err, qlen, bad, ttl1)| Op::ErrOut { idx, err, qlen, bad, ttl1 }
        ),
    ]
}

/// Outer-header variations applied to any op's frame: an 802.1Q tag (kept
/// on translation), IP options (kept, and quoted in generated errors), the
/// DS field (copied into generated errors, RFC 5508 REQ-10d).
#[derive(Debug, Clone, Copy)]
struct Hdr {
    vlan: Option<u16>,
    opts: bool,
    tos: u8,
}

fn hdr() -> impl Strategy<Value = Hdr> {
    (
        prop::option::weighted(0.1, 1..4095u16),
        prop::bool::weighted(0.1),
        prop::sample::select(vec![0u8, 0, 0, 0xb8, 0x03]),
    )
        .prop_map(|(vlan, opts, tos)| Hdr { vlan, opts, tos })
}

fn apply(mut p: Pkt, h: Hdr) -> Pkt {
    p.vlan = h.vlan;
    p.tos = h.tos;
    if h.opts {
        p = p.options(&[1, 1, 1, 0]); // NOP NOP NOP EOL
    }
    p
}

fn sub_mac(a: Ipv4Addr) -> Mac {
    if a == SPOOF {
        SPOOF_MAC
    } else {
        mac_of(a)
    }
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + 3) as u8).collect()
}

/// A packet of `kind` on the wire (TCP/UDP ports, or the ICMP id = sport).
fn packet(kind: Kind, src: Ep, dst: Ep, plen: usize, inbound: bool) -> Pkt {
    match kind {
        Kind::Udp => Pkt::udp(src, dst, &payload(plen)),
        Kind::Tcp(f) => Pkt::tcp(src, dst, f),
        Kind::Echo => Pkt::icmp(src.0, dst.0, 8, if inbound { dst.1 } else { src.1 }, 1),
        Kind::EchoReply => Pkt::icmp(src.0, dst.0, 0, if inbound { dst.1 } else { src.1 }, 1),
    }
}

/// The kind to send to an endpoint of protocol `proto`.
fn kind_for(kind: Kind, proto: u8, reply_ok: bool) -> Kind {
    match (proto, kind) {
        (PROTO_TCP, Kind::Tcp(f)) => Kind::Tcp(f),
        (PROTO_TCP, _) => Kind::Tcp(TCP_SYN),
        (PROTO_UDP, _) => Kind::Udp,
        (_, Kind::Echo) => Kind::Echo,
        _ if reply_ok => Kind::EchoReply,
        _ => Kind::Echo,
    }
}

const ERRS_IN: [(u8, u8, (u16, u16)); 4] = [
    (3, 3, (0, 0)),
    (11, 0, (0, 0)),
    (3, 4, (0, 1400)),
    (12, 0, (0x0800, 0)),
];
const ERRS_OUT: [(u8, u8, (u16, u16)); 4] = [
    (3, 3, (0, 0)),
    (3, 10, (0, 0)),
    (12, 0, (0x0800, 0)),
    (3, 4, (0, 1280)),
];
const QLENS: [usize; 4] = [8, 12, 20, 1000];

/// An ICMP error quoting `q` (its first `qlen` bytes after the IP header).
fn error(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    e: (u8, u8, (u16, u16)),
    q: &Pkt,
    qlen: usize,
    bad: bool,
) -> (Pkt, Quote) {
    let len = qlen.min(q.l4_bytes().len());
    let p = Pkt::icmp_msg(src, dst, e.0, e.1, e.2, &q.quote_len(len));
    (
        p,
        Quote {
            pkt: q.clone(),
            len,
            bad_csum: bad,
        },
    )
}

/// Builds the frame of an op against the model's state: (from a
/// subscriber?, packet, quote of an error).
fn build(op: &Op, m: &Model, pool_last: Ipv4Addr) -> (bool, Pkt, Option<Quote>, bool) {
    let ttl = |t: bool| if t { 1 } else { 64 };
    let fake = Pkt::udp((pool_last, 40000), (R10, 3478), b"fake");
    match op.clone() {
        Op::Out {
            sub,
            sport,
            rem,
            rport,
            kind,
            plen,
            ttl1,
        } => {
            let s = SUBS[sub];
            let p = packet(
                kind,
                (s, SPORTS[sport]),
                (REMS[rem], RPORTS[rport]),
                plen,
                false,
            )
            .ttl(ttl(ttl1));
            (true, p.macs(sub_mac(s), INT0_MAC), None, false)
        }
        Op::In {
            rem,
            rport,
            target,
            kind,
            plen,
            ttl1,
        } => {
            let n = m.ext_order.len();
            let r = (IN_SRCS[rem], RPORTS[rport]);
            let i = target % (n + 3);
            let p = if i < n {
                let (a, port, proto) = m.ext_order[i];
                packet(kind_for(kind, proto, true), r, (a, port), plen, true)
            } else {
                let dst = [(pool_last, 40000), (H11, 5000), (NOT_NAT, 80)][i - n];
                packet(kind, r, dst, plen, true)
            };
            (
                false,
                p.ttl(ttl(ttl1)).macs(mac_of(r.0), EXT0_MAC),
                None,
                false,
            )
        }
        Op::Hairpin {
            sub,
            sport,
            target,
            kind,
            ttl1,
        } => {
            let s = SUBS[sub];
            let n = m.ext_order.len();
            let i = target % (n + 1);
            let p = if i < n {
                let (a, port, proto) = m.ext_order[i];
                packet(
                    kind_for(kind, proto, false),
                    (s, SPORTS[sport]),
                    (a, port),
                    16,
                    false,
                )
            } else {
                packet(kind, (s, SPORTS[sport]), (pool_last, 40000), 16, false)
            };
            (
                true,
                p.ttl(ttl(ttl1)).macs(sub_mac(s), INT0_MAC),
                None,
                false,
            )
        }
        Op::ErrIn {
            idx,
            other_src,
            err,
            qlen,
            bad,
            ttl1,
        } => {
            let q = if m.sent.is_empty() {
                fake
            } else {
                m.sent[idx % m.sent.len()].clone()
            };
            let src = if other_src {
                if q.dst == R20 {
                    R10
                } else {
                    R20
                }
            } else {
                q.dst
            };
            let (p, quote) = error(src, q.src, ERRS_IN[err], &q, QLENS[qlen], bad);
            (
                false,
                p.ttl(ttl(ttl1)).macs(mac_of(src), EXT0_MAC),
                Some(quote),
                bad,
            )
        }
        Op::ErrOut {
            idx,
            err,
            qlen,
            bad,
            ttl1,
        } => {
            let q = if m.delivered.is_empty() {
                Pkt::udp((R10, 3478), (H11, 5000), b"fake")
            } else {
                m.delivered[idx % m.delivered.len()].clone()
            };
            let (p, quote) = error(q.dst, q.src, ERRS_OUT[err], &q, QLENS[qlen], bad);
            (
                true,
                p.ttl(ttl(ttl1)).macs(mac_of(q.dst), INT0_MAC),
                Some(quote),
                bad,
            )
        }
    }
}

fn endpoint_keys(rows: Result<Vec<(Endpoint, Binding)>, BpfError>) -> BTreeSet<Key> {
    rows.expect("reading the bindings")
        .iter()
        .map(|(k, _)| {
            (
                Ipv4Addr::from(u32::from_be(k.addr)),
                u16::from_be(k.port),
                k.proto,
            )
        })
        .collect()
}

fn clear(m: &libbpf_rs::MapHandle) {
    let keys: Vec<Vec<u8>> = m.keys().collect();
    for k in keys {
        let _ = m.delete(&k);
    }
}

/// The binding table right after loading (the static mappings), both
/// halves: restored after every reset.
struct Snapshot {
    inbound: Vec<(Endpoint, Binding)>,
    outbound: Vec<(Endpoint, Binding)>,
}

impl Snapshot {
    fn take(h: &Harness) -> Snapshot {
        let b = &h.tables.bindings;
        Snapshot {
            inbound: b.dump().expect("reading the bindings"),
            outbound: b.dump_out().expect("reading the bindings"),
        }
    }

    fn restore(&self, h: &Harness) {
        let b = &h.tables.bindings;
        for (k, v) in &self.inbound {
            b.upsert_in(k, v).expect("restoring a static mapping");
        }
        for (k, v) in &self.outbound {
            b.upsert_out(k, v).expect("restoring a static mapping");
        }
    }
}

/// Deletes every entry the data path may have created.
fn reset(h: &Harness) {
    let t = &h.tables;
    let sessions: Vec<cgnat::bpf::types::cgnat_session_key> = t
        .sessions
        .dump()
        .expect("reading sessions")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    t.sessions.delete_all(&sessions).expect("deleting sessions");
    t.bindings.clear().expect("deleting bindings");
    for m in [
        &t.subscribers,
        &t.frags,
        &t.frag_stash,
        &t.frag_pending,
        &t.blocks,
        &t.sub_blocks,
    ] {
        clear(m);
    }
    if let Some(f) = &t.filter_addr {
        clear(f);
    }
    for i in 0..h.cfg.pool_addrs.len() as u32 {
        let _ = t
            .pool_load
            .update(&i.to_ne_bytes(), &0u32.to_ne_bytes(), MapFlags::ANY);
    }
}

struct Stats {
    sequences: u64,
    packets: u64,
    counters: std::collections::BTreeMap<&'static str, u64>,
}

/// Runs one sequence; Err describes the first disagreement.
fn run_sequence(
    h: &mut Harness,
    snap: &Snapshot,
    mcfg: &ModelCfg,
    ops: &[(Op, Hdr)],
    st: &mut Stats,
) -> Result<(), String> {
    reset(h);
    snap.restore(h);
    let mut m = Model::new(mcfg.clone());
    let pool_last = *h.cfg.pool_addrs.last().expect("pool");
    let mut log = Vec::new();
    for (n, (op, hd)) in ops.iter().enumerate() {
        let (int, p, quote, bad) = build(op, &m, pool_last);
        let p = apply(p, *hd);
        let mut input = p.bytes();
        if bad {
            let c = p.ip_offset() + 20 + p.options.len() + 2;
            input[c] ^= 0x5a;
        }
        let before_keys = endpoint_keys(h.tables.bindings.dump());
        let before = h.counters();
        let (side, port) = if int {
            (Side::Internal, Port::Int0)
        } else {
            (Side::External, Port::Ext0)
        };
        let (verdict, out) = h.test_run(side, port, &input)?;
        let after = h.counters();
        let after_keys = endpoint_keys(h.tables.bindings.dump());
        let new: Vec<Key> = after_keys.difference(&before_keys).copied().collect();
        log.push(format!(
            "  #{n} {op:?} {hd:?}\n     {}{} -> {} {:?}",
            if int { "int0 " } else { "ext0 " },
            describe(&input),
            verdict_name(verdict),
            describe(&out)
        ));
        let fail = |msg: String, log: &[String]| {
            Err(format!("{msg}\nsequence so far:\n{}", log.join("\n")))
        };
        if new.len() > 1 {
            return fail(
                format!("one packet created {} bindings: {new:?}", new.len()),
                &log,
            );
        }
        let want = match m.step(int, &p, quote.as_ref(), new.first().copied()) {
            Ok(w) => w,
            Err(e) => return fail(e, &log),
        };
        let deltas: Vec<(&'static str, u64)> = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| a.1 != b.1)
            .map(|(_, a)| {
                (
                    a.0,
                    a.1 - before.iter().find(|b| b.0 == a.0).map_or(0, |b| b.1),
                )
            })
            .collect();
        let mut msgs = Vec::new();
        if verdict != want.verdict {
            msgs.push(format!(
                "verdict {} (model: {})",
                verdict_name(verdict),
                verdict_name(want.verdict)
            ));
        }
        if deltas != vec![(want.counter, 1)] {
            msgs.push(format!("counters {deltas:?} (model: {})", want.counter));
        }
        let want_frame = if matches!(want.verdict, XDP_DROP | XDP_PASS) {
            input.clone()
        } else {
            want.frame.clone()
        };
        if out != want_frame {
            msgs.push(format!(
                "output frame differs from the model's:\n{}",
                diff(&want_frame, &out)
            ));
        }
        if matches!(verdict, XDP_TX | XDP_REDIRECT) {
            if let Err(e) = verify_checksums(&out).and_then(|_| verify_with_etherparse(&out)) {
                msgs.push(format!("output checksum: {e}"));
            }
        }
        let bin: BTreeSet<Key> = m.bind_in.keys().copied().collect();
        if after_keys != bin {
            msgs.push(format!("bind_in holds {after_keys:?}, model {bin:?}"));
        }
        let bout = endpoint_keys(h.tables.bindings.dump_out());
        let mout: BTreeSet<Key> = m.bind_out.keys().copied().collect();
        if bout != mout {
            msgs.push(format!("bind_out holds {bout:?}, model {mout:?}"));
        }
        if !msgs.is_empty() {
            return fail(
                format!("packet #{n} disagrees:\n  {}", msgs.join("\n  ")),
                &log,
            );
        }
        *st.counters.entry(want.counter).or_default() += 1;
        st.packets += 1;
    }
    // sessions as the program stored them: raw TCP event bits and flags
    let mut got = raw_sessions(h)?;
    got.sort();
    let want = m.session_rows();
    if got != want {
        return Err(format!(
            "sessions differ after the sequence (internal, external, remote, proto, \
             tcp event bits, inbound, hairpin):\n  program: {got:?}\n  model:   {want:?}\nsequence:\n{}",
            log.join("\n")
        ));
    }
    // ... and as `cgnat sessions` shows them: cgnat's decoder of the bits
    // against the model's own
    let now = cgnat::expiry::monotonic_ns();
    let views =
        cgnat::expiry::list_sessions(&h.tables, &h.cfg.timeouts, now).map_err(|e| e.to_string())?;
    let mut shown: Vec<_> = views
        .iter()
        .map(|v| (v.internal, v.external, v.remote, v.state.to_string()))
        .collect();
    shown.sort();
    let mut decoded: Vec<_> = want
        .iter()
        .map(|(i, e, r, proto, tcp, _, _)| {
            let state = if *proto == PROTO_TCP {
                model::tcp_state_name(*tcp)
            } else {
                "active"
            };
            (*i, *e, *r, state.to_string())
        })
        .collect();
    decoded.sort();
    if shown != decoded {
        return Err(format!(
            "session states differ:\n  cgnat shows: {shown:?}\n  model:       {decoded:?}\nsequence:\n{}",
            log.join("\n")
        ));
    }
    let subs = cgnat::lookup::subscribers(&h.tables).map_err(|e| e.to_string())?;
    let got: Vec<_> = subs
        .iter()
        .map(|s| (s.subscriber, s.ports, s.sessions))
        .collect();
    let want: Vec<_> = m
        .subs
        .iter()
        .map(|(a, s)| (*a, s.ports, s.sessions))
        .collect();
    if got != want {
        return Err(format!(
            "subscribers differ: program {got:?}, model {want:?}\nsequence:\n{}",
            log.join("\n")
        ));
    }
    for s in &subs {
        if let Some(e) = m.subs.get(&s.subscriber).and_then(|x| x.ext) {
            if e != s.external {
                return Err(format!(
                    "subscriber {} paired with {}, model {e}",
                    s.subscriber, s.external
                ));
            }
        }
    }
    st.sequences += 1;
    Ok(())
}

/// Every session of the program's table, as the model lists them.
type SessionRow = (Ep, Ep, Ep, u8, u32, bool, bool);

fn raw_sessions(h: &Harness) -> Result<Vec<SessionRow>, String> {
    use cgnat::bpf::types;
    let inbound = types::cgnat_session_flag::CGNAT_SESS_INBOUND.0 as u8;
    let hairpin = types::cgnat_session_flag::CGNAT_SESS_HAIRPIN.0 as u8;
    // a hairpin session holds its target's internal endpoint and belongs
    // to the binding of its external endpoint (include/cgnat.h): listed
    // with its owner's, as the model lists it
    let mut owners = std::collections::HashMap::new();
    for (e, b) in h.tables.bindings.dump().map_err(|e| e.to_string())? {
        owners.insert((e.addr, e.port, e.proto), (b.addr, b.port));
    }
    let mut rows = Vec::new();
    for (k, s) in h.tables.sessions.dump().map_err(|e| e.to_string())? {
        let (int_addr, int_port) = if s.flags & hairpin != 0 {
            *owners
                .get(&(k.ext_addr, k.ext_port, k.proto))
                .ok_or("a hairpin session without its binding")?
        } else {
            (s.int_addr, s.int_port)
        };
        rows.push((
            (addr_of(int_addr), u16::from_be(int_port)),
            (addr_of(k.ext_addr), u16::from_be(k.ext_port)),
            (addr_of(k.rem_addr), u16::from_be(k.rem_port)),
            k.proto,
            s.tcp,
            s.flags & inbound != 0,
            s.flags & hairpin != 0,
        ));
    }
    Ok(rows)
}

/// The model's event bits are the program's (include/cgnat.h), so raw
/// bits compare.
#[test]
fn model_tcp_event_bits_are_the_programs() {
    use cgnat::bpf::types::cgnat_tcp_event as E;
    assert_eq!(
        [SYN_OUT, SYN_IN, FIN_OUT, FIN_IN, RST, LOOSE],
        [
            E::CGNAT_TCP_SYN_OUT.0,
            E::CGNAT_TCP_SYN_IN.0,
            E::CGNAT_TCP_FIN_OUT.0,
            E::CGNAT_TCP_FIN_IN.0,
            E::CGNAT_TCP_RST.0,
            E::CGNAT_TCP_LOOSE.0,
        ]
    );
}

#[test]
fn differential() {
    if !privileged("differential") {
        return;
    }
    let ns = NetNs::create("d");
    ns.enter(|| {
        let start = Instant::now();
        let n = cgnat_kit::cases(1000);
        let mut total = Stats {
            sequences: 0,
            packets: 0,
            counters: Default::default(),
        };
        let mut names = Vec::new();
        for s in setups() {
            let text = format!("{}{}", s.text, statics_text(&s.statics));
            let h = RefCell::new(Harness::load_text("differential", &text));
            let snapshot = Snapshot::take(&h.borrow());
            let mcfg = {
                let hh = h.borrow();
                ModelCfg {
                    filt_tcp: s.filt.0,
                    filt_udp: s.filt.1,
                    filt_icmp: s.filt.2,
                    limit_ports: s.limit_ports,
                    limit_sessions: s.limit_sessions,
                    parity: s.parity,
                    icmp_errors: s.icmp_errors,
                    pool_prefixes: hh
                        .cfg
                        .pool_prefixes
                        .iter()
                        .map(|p| (p.network(), p.prefix()))
                        .collect(),
                    pool_addrs: hh.cfg.pool_addrs.clone(),
                    routed: vec![
                        (Ipv4Addr::new(100, 64, 0, 0), 10),
                        (Ipv4Addr::new(198, 51, 100, 0), 24),
                    ],
                    statics: s.statics.clone(),
                    internal_prefixes: hh
                        .cfg
                        .internal_prefixes
                        .iter()
                        .map(|p| (p.network(), p.prefix()))
                        .collect(),
                }
            };
            assert_eq!(
                hh_filt(&h.borrow()),
                s.filt,
                "{}: config and model disagree",
                s.name
            );
            let st = RefCell::new(Stats {
                sequences: 0,
                packets: 0,
                counters: Default::default(),
            });
            let mut runner = TestRunner::new(PtConfig {
                cases: n,
                failure_persistence: None,
                max_shrink_iters: 2000,
                ..PtConfig::default()
            });
            let res = runner.run(&prop::collection::vec((op(), hdr()), 5..30), |ops| {
                run_sequence(
                    &mut h.borrow_mut(),
                    &snapshot,
                    &mcfg,
                    &ops,
                    &mut st.borrow_mut(),
                )
                .map_err(TestCaseError::fail)
            });
            let st = st.into_inner();
            println!(
                "differential [{}]: {} sequences, {} packets, counters {:?}",
                s.name, st.sequences, st.packets, st.counters
            );
            if let Err(e) = res {
                panic!("differential [{}]: program and model disagree: {e}", s.name);
            }
            total.sequences += st.sequences;
            total.packets += st.packets;
            for (k, v) in st.counters {
                *total.counters.entry(k).or_default() += v;
            }
            names.push(s.name);
            let h = h.into_inner();
            let sum: u64 = h.counters().iter().map(|c| c.1).sum();
            assert_eq!(
                sum, h.runs,
                "{}: counters sum to {sum} after {} runs",
                s.name, h.runs
            );
        }
        println!(
            "differential: {} sequences, {} packets, configs: {} ({:.1} s)",
            total.sequences,
            total.packets,
            names.join(", "),
            start.elapsed().as_secs_f64()
        );
    });
}

fn hh_filt(h: &Harness) -> (Filtering, Filtering, Filtering) {
    let f = h.cfg.filtering;
    (f.tcp, f.udp, f.icmp)
}
