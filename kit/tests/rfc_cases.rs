//! Packet cases written from the RFC requirement texts (RFC 4787, 5382,
//! 5508, 6888, 7857, 6598 and the RFC 1812 router rules), one table row per
//! requirement clause, each citing its checklist id (docs/conformance.md).
//! The expectations come from what the RFC text demands, not from the data
//! path's order of checks: where an RFC leaves a choice (which external
//! port, which ID), the row checks only what the RFC fixes (same endpoint,
//! another port, the port class, a changed ID).
//!
//! Rows run in order on one loaded program per configuration, through the
//! prog_run harness: every row asserts the verdict, the one counter that
//! grows, and the exact output frame (independently built, checksums
//! verified). Endpoints the NAT chose are learned from the output and used
//! by later rows.
//!
//! Needs root and iproute2 (skips, or fails under CI).
//!
//! Run: cargo test --release --test rfc_cases -- --nocapture

#[allow(dead_code)]
#[path = "prog_run/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "prog_run/netns.rs"]
mod netns;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::rc::Rc;

use cgnat_kit::frame;
use frame::*;
use harness::*;
use netns::*;

const H11: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 11);
const H12: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 12);
const R10: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const R20: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);

type Ep = (Ipv4Addr, u16);

/// External endpoints learned so far, by (internal address, port or ICMP
/// identifier, protocol).
#[derive(Default)]
struct Learned(BTreeMap<(Ipv4Addr, u16, u8), Ep>);

impl Learned {
    fn ext(&self, int: Ipv4Addr, port: u16, proto: u8) -> Ep {
        *self.0.get(&(int, port, proto)).unwrap_or_else(|| {
            panic!("row order: {int}:{port}/{proto} has no external endpoint yet")
        })
    }
}

/// Where the translated source of an outbound packet must come from.
#[derive(Clone, Copy)]
enum Src {
    /// Any pool endpoint (RFC leaves the choice).
    Any,
    /// The external endpoint already learned for this internal one.
    Same(Ipv4Addr, u16, u8),
    /// The external address of this binding, any port (paired pooling).
    SameAddr(Ipv4Addr, u16, u8),
    /// An endpoint other than this binding's (no port overloading).
    Not(Ipv4Addr, u16, u8),
    /// A port in 0-1023 (RFC 4787 REQ-3a).
    LowClass,
    /// A port in 1024-65535, on the same address as this binding.
    HighClassOn(Ipv4Addr, u16, u8),
}

/// Builds an expected frame from what was learned and the input.
type Frame = Box<dyn Fn(&Learned, &Pkt) -> Vec<u8>>;

/// What a row demands.
enum Want {
    /// Translated toward the internet (source rewritten, TTL - 1).
    Out(Src),
    /// Like `Out`, with the IP ID replaced (RFC 7857 section 10).
    OutNewId(Src),
    /// Delivered to this internal endpoint (destination rewritten, TTL - 1).
    In(Ep),
    /// Hairpinned: source the sender's external endpoint, destination the
    /// target's internal one.
    Hairpin { from: (Ipv4Addr, u16, u8), to: Ep },
    /// Exactly this frame, verdict and counter (ICMP errors).
    Exact(u32, &'static str, Frame),
    /// Dropped untouched, counted under this reason.
    Drop(&'static str),
}

/// One row: requirement, what it checks, side, input, expectation.
struct Row {
    req: &'static str,
    what: &'static str,
    port: Port,
    input: Box<dyn Fn(&Learned) -> Pkt>,
    raw: Option<fn(&mut Vec<u8>, usize)>,
    want: Want,
}

fn row(
    req: &'static str,
    what: &'static str,
    port: Port,
    input: impl Fn(&Learned) -> Pkt + 'static,
    want: Want,
) -> Row {
    Row {
        req,
        what,
        port,
        input: Box::new(input),
        raw: None,
        want,
    }
}

/// A row whose serialised frame is damaged after building (`f(frame,
/// ip_offset)`).
fn damaged(mut r: Row, f: fn(&mut Vec<u8>, usize)) -> Row {
    r.raw = Some(f);
    r
}

/// The external endpoint a row fixes in advance, if any.
fn known(l: &Learned, src: Src) -> Option<Ep> {
    match src {
        Src::Same(a, p, pr) => Some(l.ext(a, p, pr)),
        _ => None,
    }
}

/// Checks a chosen external endpoint against what the RFC fixes.
fn check_src(h: &Harness, l: &Learned, src: Src, ext: Ep) -> Result<(), String> {
    ensure!(
        h.cfg.pool_addrs.contains(&ext.0),
        "source {}:{} is not a pool address",
        ext.0,
        ext.1
    );
    match src {
        Src::Any => {}
        Src::Same(a, p, pr) => {
            let e = l.ext(a, p, pr);
            ensure!(
                ext == e,
                "external endpoint {ext:?}, the binding's is {e:?}"
            );
        }
        Src::SameAddr(a, p, pr) => {
            let e = l.ext(a, p, pr);
            ensure!(
                ext.0 == e.0,
                "external address {}, paired with {}",
                ext.0,
                e.0
            );
        }
        Src::Not(a, p, pr) => {
            let e = l.ext(a, p, pr);
            ensure!(ext != e, "external endpoint {ext:?} is already {a}:{p}'s");
        }
        Src::LowClass => ensure!(ext.1 < 1024, "port {} is not in 0-1023", ext.1),
        Src::HighClassOn(a, p, pr) => {
            let e = l.ext(a, p, pr);
            ensure!(ext.1 >= 1024, "port {} is not in 1024-65535", ext.1);
            ensure!(
                ext.0 == e.0,
                "external address {}, paired with {}",
                ext.0,
                e.0
            );
        }
    }
    Ok(())
}

/// The source endpoint of an output frame (ICMP: the identifier).
fn src_of(out: &[u8], ip: usize) -> Option<Ep> {
    let b = out.get(ip..)?;
    let ihl = usize::from(b.first()? & 0x0f) * 4;
    let a = Ipv4Addr::new(*b.get(12)?, b[13], b[14], b[15]);
    let l4 = b.get(ihl..)?;
    let port = if b[9] == PROTO_ICMP {
        u16::from_be_bytes([*l4.get(4)?, *l4.get(5)?])
    } else {
        u16::from_be_bytes([*l4.first()?, *l4.get(1)?])
    };
    Some((a, port))
}

fn run_table(h: &mut Harness, rows: Vec<Row>) {
    let learned = Rc::new(RefCell::new(Learned::default()));
    for r in rows {
        let p = (r.input)(&learned.borrow());
        let ip = p.ip_offset();
        let mut bytes = p.bytes();
        if let Some(f) = r.raw {
            f(&mut bytes, ip);
        }
        let name = format!("[{}] {}", r.req, r.what);
        let case = match r.port {
            Port::Int0 => Case::int(name, bytes),
            Port::Ext0 => Case::ext(name, bytes),
        };
        let l = learned.clone();
        let case = match r.want {
            Want::Drop(c) => case.verdict(XDP_DROP, c),
            Want::In(int) => {
                let exp = p
                    .clone()
                    .with_dst(int.0, int.1)
                    .ttl(p.ttl - 1)
                    .macs(INT0_MAC, mac_of(int.0))
                    .bytes();
                case.verdict(XDP_REDIRECT, "fwd_in").frame(exp)
            }
            Want::Hairpin { from, to } => {
                let e = l.borrow().ext(from.0, from.1, from.2);
                let exp = p
                    .clone()
                    .with_src(e.0, e.1)
                    .with_dst(to.0, to.1)
                    .ttl(p.ttl - 1)
                    .macs(INT0_MAC, mac_of(to.0))
                    .bytes();
                case.verdict(XDP_TX, "fwd_hairpin").frame(exp)
            }
            Want::Exact(v, c, f) => {
                let exp = f(&l.borrow(), &p);
                case.verdict(v, c).frame(exp)
            }
            Want::Out(src) | Want::OutNewId(src) => {
                let new_id = matches!(r.want, Want::OutNewId(_));
                let q = p.clone();
                case.verdict(XDP_REDIRECT, "fwd_out").output(move |h, o| {
                    let fixed = known(&l.borrow(), src);
                    let ext = match fixed {
                        Some(e) => e,
                        None => src_of(o, ip).ok_or("no source in the output")?,
                    };
                    check_src(h, &l.borrow(), src, ext)?;
                    let mut exp = q
                        .clone()
                        .with_src(ext.0, ext.1)
                        .ttl(q.ttl - 1)
                        .macs(EXT0_MAC, mac_of(q.dst))
                        .bytes();
                    if new_id {
                        let id = ip_id(o, ip);
                        ensure!(
                            id != q.id,
                            "IP ID {:#06x} kept on a datagram without DF",
                            q.id
                        );
                        set_ip_id(&mut exp, ip, id);
                    }
                    l.borrow_mut().0.insert((q.src, q.sport(), q.proto()), ext);
                    Ok(exp)
                })
            }
        };
        h.run(case);
    }
}

fn config(extra: &str) -> String {
    format!(
        r#"
[interfaces]
internal = "int0"
external = "ext0"
send_back = "xdp_tx"
[nat]
internal_prefixes = ["100.64.0.0/10"]
external_pool = ["203.0.113.1/32"]
max_sessions = 512
max_bindings = 512
[daemon]
pin_path = "/sys/fs/bpf/cgnat-rfc-cases-unused"
{extra}
"#
    )
}

fn run(test: &'static str, ns: &str, extra: &str, rows: fn() -> Vec<Row>) {
    if !privileged(test) {
        return;
    }
    let ns = NetNs::create(ns);
    let extra = extra.to_owned();
    ns.enter(move || {
        let mut h = Harness::load_text(test, &config(&extra));
        run_table(&mut h, rows());
        h.finish();
    });
}

const UDP: u8 = PROTO_UDP;
const TCP: u8 = PROTO_TCP;
const ICMP: u8 = PROTO_ICMP;

fn udp(src: Ep, dst: Ep) -> Pkt {
    Pkt::udp(src, dst, b"rfc case")
}

/// Default configuration: endpoint-independent filtering for every
/// protocol (RFC 6888 REQ-7), ICMP errors on.
fn default_rows() -> Vec<Row> {
    use Port::{Ext0, Int0};
    vec![
        row(
            "4787-REQ-1",
            "UDP out: a binding in the pool",
            Int0,
            |_| from_sub(udp((H11, 5000), (R10, 3478))),
            Want::Out(Src::Any),
        ),
        row(
            "4787-REQ-1",
            "same internal endpoint, another remote: the same external endpoint",
            Int0,
            |_| from_sub(udp((H11, 5000), (R20, 3478))),
            Want::Out(Src::Same(H11, 5000, UDP)),
        ),
        row(
            "4787-REQ-2",
            "TCP from the same subscriber: the same external address",
            Int0,
            |_| from_sub(Pkt::tcp((H11, 40000), (R10, 80), TCP_SYN)),
            Want::Out(Src::HighClassOn(H11, 5000, UDP)),
        ),
        row(
            "5382-REQ-1",
            "the TCP endpoint to another remote: the same external endpoint",
            Int0,
            |_| from_sub(Pkt::tcp((H11, 40000), (R20, 80), TCP_SYN)),
            Want::Out(Src::Same(H11, 40000, TCP)),
        ),
        row(
            "4787-REQ-3",
            "another subscriber, same source port: another external endpoint",
            Int0,
            |_| from_sub(udp((H12, 5000), (R10, 3478))),
            Want::Out(Src::Not(H11, 5000, UDP)),
        ),
        row(
            "4787-REQ-3a",
            "source port 700: an external port in 0-1023",
            Int0,
            |_| from_sub(udp((H11, 700), (R10, 3478))),
            Want::Out(Src::LowClass),
        ),
        row(
            "4787-REQ-3a",
            "port 700 of another subscriber: also 0-1023",
            Int0,
            |_| from_sub(udp((H12, 700), (R10, 3478))),
            Want::Out(Src::LowClass),
        ),
        row(
            "4787-REQ-3",
            "... and that port is not the first subscriber's",
            Int0,
            |_| from_sub(udp((H12, 700), (R20, 3478))),
            Want::Out(Src::Not(H11, 700, UDP)),
        ),
        row(
            "4787-REQ-8 / 6888-REQ-7",
            "EIF: a new remote reaches the UDP binding",
            Ext0,
            |l| from_net(udp((R20, 9999), l.ext(H11, 5000, UDP))),
            Want::In((H11, 5000)),
        ),
        row(
            "5382-REQ-3",
            "EIF for TCP: a SYN from a new remote is admitted",
            Ext0,
            |l| from_net(Pkt::tcp((R20, 443), l.ext(H11, 40000, TCP), TCP_SYN)),
            Want::In((H11, 40000)),
        ),
        row(
            "7857-§5 / §6",
            "UDP to the TCP binding's endpoint: no UDP binding there",
            Ext0,
            |l| from_net(udp((R10, 3478), l.ext(H11, 40000, TCP))),
            Want::Drop("drop_no_binding"),
        ),
        row(
            "5508-REQ-1",
            "echo request out: translated",
            Int0,
            |_| from_sub(Pkt::icmp(H11, R10, 8, 0x4242, 1)),
            Want::Out(Src::SameAddr(H11, 5000, UDP)),
        ),
        row(
            "5508-REQ-1a",
            "the same identifier to another remote: the same external identifier",
            Int0,
            |_| from_sub(Pkt::icmp(H11, R20, 8, 0x4242, 2)),
            Want::Out(Src::Same(H11, 0x4242, ICMP)),
        ),
        row(
            "5508-REQ-1",
            "the echo reply reaches the subscriber, identifier restored",
            Ext0,
            |l| {
                let e = l.ext(H11, 0x4242, ICMP);
                from_net(Pkt::icmp(R20, e.0, 0, e.1, 2))
            },
            Want::In((H11, 0x4242)),
        ),
        row(
            "4787-REQ-9 / 9a",
            "hairpin: from the sender's external endpoint to the target",
            Int0,
            |l| from_sub(udp((H12, 5000), l.ext(H11, 5000, UDP))),
            Want::Hairpin {
                from: (H12, 5000, UDP),
                to: (H11, 5000),
            },
        ),
        row(
            "5508-REQ-4 / 4787-REQ-12a",
            "3/3 from an off-path host: embedded headers restored, type and code kept",
            Ext0,
            |l| {
                let seen = Pkt::udp(l.ext(H11, 5000, UDP), (R10, 3478), b"rfc case").ttl(63);
                from_net(Pkt::icmp_msg(R20, seen.src, 3, 3, (0, 0), &seen.quote()))
            },
            Want::Exact(
                XDP_REDIRECT,
                "fwd_in",
                Box::new(|l, p| {
                    let seen = Pkt::udp(l.ext(H11, 5000, UDP), (R10, 3478), b"rfc case").ttl(63);
                    Pkt::icmp_msg(p.src, H11, 3, 3, (0, 0), &seen.with_src(H11, 5000).quote())
                        .ttl(p.ttl - 1)
                        .macs(INT0_MAC, mac_of(H11))
                        .bytes()
                }),
            ),
        ),
        row(
            "5508-REQ-4",
            "an error about no mapping is dropped",
            Ext0,
            |l| {
                let e = l.ext(H11, 5000, UDP);
                let seen = Pkt::udp((e.0, 6001), (R10, 3478), b"x").ttl(63);
                from_net(Pkt::icmp_msg(R10, e.0, 3, 3, (0, 0), &seen.quote()))
            },
            Want::Drop("drop_no_binding"),
        ),
        damaged(
            row(
                "5508-REQ-3",
                "an error with a bad ICMP checksum is dropped",
                Ext0,
                |l| {
                    let seen = Pkt::udp(l.ext(H11, 5000, UDP), (R10, 3478), b"rfc case").ttl(63);
                    from_net(Pkt::icmp_msg(R10, seen.src, 3, 3, (0, 0), &seen.quote()))
                },
                Want::Drop("drop_icmp_csum"),
            ),
            |f, ip| f[ip + 22] ^= 0x01,
        ),
        row(
            "5508-REQ-3a",
            "an error with a bad embedded IP checksum is dropped",
            Ext0,
            |l| {
                let seen = Pkt::udp(l.ext(H11, 5000, UDP), (R10, 3478), b"rfc case").ttl(63);
                let mut q = seen.quote();
                q[10] ^= 0xff;
                from_net(Pkt::icmp_msg(R10, seen.src, 3, 3, (0, 0), &q))
            },
            Want::Drop("drop_icmp_csum"),
        ),
        damaged(
            row(
                "1812-5.2.2",
                "UDP with a wrong IP header checksum is not forwarded",
                Int0,
                |_| from_sub(udp((H11, 5000), (R10, 3478))),
                Want::Drop("drop_ip_checksum"),
            ),
            |f, ip| f[ip + 10] ^= 0x5a,
        ),
        damaged(
            row(
                "1812-5.2.2",
                "TCP with a wrong IP header checksum is not forwarded",
                Int0,
                |_| from_sub(Pkt::tcp((H11, 40000), (R10, 80), TCP_ACK)),
                Want::Drop("drop_ip_checksum"),
            ),
            |f, ip| f[ip + 10] ^= 0x5a,
        ),
        damaged(
            row(
                "1812-5.2.2",
                "an echo with a wrong IP header checksum is not forwarded",
                Int0,
                |_| from_sub(Pkt::icmp(H11, R10, 8, 0x4242, 3)),
                Want::Drop("drop_ip_checksum"),
            ),
            |f, ip| f[ip + 10] ^= 0x5a,
        ),
        damaged(
            row(
                "1812-5.2.2",
                "inbound TCP with a wrong IP header checksum is not forwarded",
                Ext0,
                |l| from_net(Pkt::tcp((R10, 80), l.ext(H11, 40000, TCP), TCP_ACK)),
                Want::Drop("drop_ip_checksum"),
            ),
            |f, ip| f[ip + 10] ^= 0x5a,
        ),
        damaged(
            row(
                "1812-5.2.2",
                "a hairpinned datagram with a wrong IP header checksum is not forwarded",
                Int0,
                |l| from_sub(udp((H12, 5000), l.ext(H11, 5000, UDP))),
                Want::Drop("drop_ip_checksum"),
            ),
            |f, ip| f[ip + 10] ^= 0x5a,
        ),
        row(
            "5508-REQ-10a / 1812-5.3.1",
            "TTL 1: time exceeded (11/0) from the router",
            Int0,
            |_| from_sub(udp((H11, 5000), (R10, 3478)).ttl(1)),
            Want::Exact(
                XDP_TX,
                "icmp_time_exceeded",
                Box::new(|_, p| generated_error(p, ROUTER_INT, 11, 0, 0)),
            ),
        ),
        row(
            "5508-REQ-10e / 1812-4.3.2.7",
            "TTL 1 on a later fragment: no ICMP error",
            Int0,
            |_| {
                let mut p = from_sub(udp((H11, 5000), (R10, 3478))).ttl(1).frag(3);
                p.l4 = L4::Raw {
                    proto: PROTO_UDP,
                    bytes: vec![7; 16],
                };
                p
            },
            Want::Drop("drop_ttl"),
        ),
        row(
            "7857-§10",
            "DF clear: a new IP ID",
            Int0,
            |_| from_sub(udp((H11, 5000), (R10, 3478))).frag(0),
            Want::OutNewId(Src::Same(H11, 5000, UDP)),
        ),
        row(
            "6888-REQ-1",
            "GRE is not forwarded untranslated",
            Int0,
            |_| from_sub(Pkt::raw(H11, R10, PROTO_GRE, &[0; 8])),
            Want::Drop("drop_proto"),
        ),
        row(
            "6598",
            "from outside to a subscriber's address directly: dropped",
            Ext0,
            |_| from_net(udp((R10, 3478), (H11, 5000))),
            Want::Drop("drop_to_internal"),
        ),
        row(
            "6598",
            "from outside with a subscriber's source to the pool: dropped",
            Ext0,
            |l| from_net(udp((H12, 5000), l.ext(H11, 5000, UDP))),
            Want::Drop("drop_spoofed"),
        ),
    ]
}

/// Address-dependent filtering for UDP, address-and-port-dependent for
/// TCP: each set apart (RFC 4787 REQ-8a, RFC 5382 REQ-3a/3b).
fn filtering_rows() -> Vec<Row> {
    use Port::{Ext0, Int0};
    vec![
        row(
            "4787-REQ-1",
            "UDP out",
            Int0,
            |_| from_sub(udp((H11, 5000), (R10, 3478))),
            Want::Out(Src::Any),
        ),
        row(
            "4787-REQ-8",
            "ADF: another address is filtered",
            Ext0,
            |l| from_net(udp((R20, 3478), l.ext(H11, 5000, UDP))),
            Want::Drop("drop_filtered"),
        ),
        row(
            "4787-REQ-8",
            "ADF: the same address from another port is admitted",
            Ext0,
            |l| from_net(udp((R10, 9999), l.ext(H11, 5000, UDP))),
            Want::In((H11, 5000)),
        ),
        row(
            "5382-REQ-1",
            "TCP SYN out",
            Int0,
            |_| from_sub(Pkt::tcp((H11, 40000), (R10, 80), TCP_SYN)),
            Want::Out(Src::Any),
        ),
        row(
            "5382-REQ-3 / 5382-REQ-4a",
            "APDF: a SYN from another port of that address is dropped silently",
            Ext0,
            |l| from_net(Pkt::tcp((R10, 81), l.ext(H11, 40000, TCP), TCP_SYN)),
            Want::Drop("drop_filtered"),
        ),
        row(
            "5382-REQ-2",
            "the remote's SYN-ACK completes the handshake",
            Ext0,
            |l| {
                from_net(Pkt::tcp(
                    (R10, 80),
                    l.ext(H11, 40000, TCP),
                    TCP_SYN | TCP_ACK,
                ))
            },
            Want::In((H11, 40000)),
        ),
        row(
            "7857-§2.2",
            "an RST matching the session is translated",
            Ext0,
            |l| from_net(Pkt::tcp((R10, 80), l.ext(H11, 40000, TCP), TCP_RST)),
            Want::In((H11, 40000)),
        ),
    ]
}

/// One port per subscriber and protocol (RFC 6888 REQ-4).
fn limit_rows() -> Vec<Row> {
    use Port::Int0;
    vec![
        row(
            "6888-REQ-4",
            "the first UDP binding",
            Int0,
            |_| from_sub(udp((H11, 5000), (R10, 3478))),
            Want::Out(Src::Any),
        ),
        row(
            "6888-REQ-11a/b / 5508-REQ-8",
            "no mapping possible: dropped, host unreachable (3/1) sent",
            Int0,
            |_| from_sub(udp((H11, 5001), (R10, 3478))),
            Want::Exact(
                XDP_TX,
                "icmp_host_unreach",
                Box::new(|_, p| generated_error(p, ROUTER_INT, 3, 1, 0)),
            ),
        ),
        row(
            "6888-REQ-11d",
            "the existing mapping is kept",
            Int0,
            |_| from_sub(udp((H11, 5000), (R20, 3478))),
            Want::Out(Src::Same(H11, 5000, UDP)),
        ),
        row(
            "6888-REQ-4b",
            "the limit is per protocol: TCP still gets a binding",
            Int0,
            |_| from_sub(Pkt::tcp((H11, 5001), (R10, 80), TCP_SYN)),
            Want::Out(Src::SameAddr(H11, 5000, UDP)),
        ),
    ]
}

#[test]
fn rfc_default_configuration() {
    run("rfc_default_configuration", "rd", "", default_rows);
}

#[test]
fn rfc_filtering_configuration() {
    run(
        "rfc_filtering_configuration",
        "rf",
        "[filtering]\nudp = \"address-dependent\"\ntcp = \"address-and-port-dependent\"",
        filtering_rows,
    );
}

#[test]
fn rfc_limit_configuration() {
    run(
        "rfc_limit_configuration",
        "rl",
        "[limits]\nports = 1",
        limit_rows,
    );
}
