//! Mutation and garbage frames through the XDP program.
//!
//! Valid seed frames (outbound, inbound, hairpin, ICMP errors both ways,
//! fragments, a static mapping, VLAN-tagged, non-IPv4) are mutated:
//! truncated at every length, random bytes flipped (checksums left as they
//! are, or fixed), IHL / total length / UDP length set to bad values, IP
//! options inserted, every TCP flag combination, fragment offsets and MF
//! (first, later, overlapping), ICMP errors nesting ICMP errors, one and
//! two VLAN tags, other EtherTypes. Every frame runs through
//! BPF_PROG_TEST_RUN on the program loaded as the daemon loads it, and
//! every output is checked:
//!
//! - the verdict is DROP, PASS, TX or REDIRECT (never ABORTED), and exactly
//!   one counter grew, by one packet and the frame's bytes; at the end the
//!   counters sum to the number of runs;
//! - a dropped or passed frame comes back untouched;
//! - nothing with an internal source (100.64.0.0/10) leaves on the
//!   external side, nor inside a quoted packet of an ICMP error;
//! - no frame with a wrong IPv4 header checksum is translated (RFC 1812
//!   5.2.2); a translated frame has valid IP/L4/ICMP checksums if the input
//!   had (and an invalid L4 checksum stays invalid: the NAT does not launder
//!   corruption); an ICMP error cgnat generates is entirely valid, and
//!   never about a link-layer broadcast or multicast (RFC 1812 4.3.2.7);
//! - nothing reaches a subscriber without a matching mapping: the
//!   destination endpoint of a frame sent out of int0 (or the quoted source
//!   of an ICMP error) is the key of a binding's outbound half (dynamic or static); and
//!   nothing from outside with a subscriber's source reaches a subscriber
//!   (RFC 6598 section 4).
//!
//! `CGNAT_PROPTEST_CASES` scales the random flips per seed (default 1000
//! → 150 per seed; below 16 the test fails rather than check nothing);
//! `CGNAT_GARBAGE_SEED` changes the random seed. Needs root and iproute2
//! (skips, or fails under CI=true).
//!
//! Run: cargo test --release --test garbage -- --nocapture

#[allow(dead_code)]
#[path = "prog_run/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "prog_run/netns.rs"]
mod netns;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Instant;

use cgnat::bpf::Side;

use cgnat_kit::frame;
use frame::*;
use harness::*;
use netns::*;

const H11: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 11);
const H12: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 12);
const R10: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const R20: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
const STATIC_EXT: (Ipv4Addr, u16) = (Ipv4Addr::new(203, 0, 113, 9), 7000);

fn internal(a: Ipv4Addr) -> bool {
    u32::from(a) & 0xffc0_0000 == 0x6440_0000
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Offset of the IPv4 header after Ethernet and at most one tag, if the
/// frame claims to be IPv4.
fn ip_off(f: &[u8]) -> Option<usize> {
    let mut off = 12;
    let mut et = u16::from_be_bytes([*f.get(off)?, *f.get(off + 1)?]);
    if et == ETH_P_8021Q || et == 0x88a8 {
        off += 4;
        et = u16::from_be_bytes([*f.get(off)?, *f.get(off + 1)?]);
    }
    (et == ETH_P_IP).then_some(off + 2)
}

/// Checksum state of an IPv4 frame: (IP header valid, L4 valid or None
/// when it cannot be told: fragment, truncated, unknown protocol, UDP 0).
fn csum_state(f: &[u8]) -> Option<(bool, Option<bool>)> {
    let o = ip_off(f)?;
    let ip = f.get(o..)?;
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(ip[0] & 15) * 4;
    let tot = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ihl < 20 || tot < ihl || tot > ip.len() {
        return None;
    }
    let ip_ok = fold(sum_words(&ip[..ihl])) == 0xffff;
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        return Some((ip_ok, None));
    }
    let seg = &ip[ihl..tot];
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let l4 = match ip[9] {
        PROTO_UDP if seg.len() >= 8 && seg[6..8] != [0, 0] => {
            let ph = pseudo_header(src, dst, PROTO_UDP, seg.len());
            Some(fold(sum_words(&ph) + sum_words(seg)) == 0xffff)
        }
        PROTO_TCP if seg.len() >= 20 => {
            let ph = pseudo_header(src, dst, PROTO_TCP, seg.len());
            Some(fold(sum_words(&ph) + sum_words(seg)) == 0xffff)
        }
        PROTO_ICMP if seg.len() >= 8 => Some(fold(sum_words(seg)) == 0xffff),
        _ => None,
    };
    Some((ip_ok, l4))
}

/// Recomputes the L4 checksum of a non-fragment IPv4 frame in place.
fn fix_l4(f: &mut [u8]) {
    let Some(o) = ip_off(f) else { return };
    if f.len() < o + 20 {
        return;
    }
    let ihl = usize::from(f[o] & 15) * 4;
    let tot = usize::from(u16::from_be_bytes([f[o + 2], f[o + 3]]));
    if ihl < 20 || tot < ihl || o + tot > f.len() {
        return;
    }
    let src = Ipv4Addr::new(f[o + 12], f[o + 13], f[o + 14], f[o + 15]);
    let dst = Ipv4Addr::new(f[o + 16], f[o + 17], f[o + 18], f[o + 19]);
    let proto = f[o + 9];
    let s = o + ihl;
    let seg_len = tot - ihl;
    let field = match proto {
        PROTO_UDP if seg_len >= 8 => 6,
        PROTO_TCP if seg_len >= 20 => 16,
        PROTO_ICMP if seg_len >= 4 => 2,
        _ => return,
    };
    f[s + field] = 0;
    f[s + field + 1] = 0;
    let seg = &f[s..s + seg_len];
    let c = if proto == PROTO_ICMP {
        internet_checksum(&[seg])
    } else {
        let ph = pseudo_header(src, dst, proto, seg_len);
        let c = internet_checksum(&[&ph, seg]);
        if c == 0 && proto == PROTO_UDP {
            0xffff
        } else {
            c
        }
    };
    f[s + field..s + field + 2].copy_from_slice(&c.to_be_bytes());
}

fn fix_all(f: &mut [u8]) {
    if let Some(o) = ip_off(f) {
        if f.len() >= o + 20 {
            fix_l4(f);
            fix_ip_csum(f, o);
        }
    }
}

/// (address, port, proto) of the IPv4 packet starting at `ip` (ports 0
/// when it has none); for ICMP the echo identifier.
/// (source, destination, protocol, IP header length)
type Endpoints = ((Ipv4Addr, u16), (Ipv4Addr, u16), u8, usize);

fn endpoints(ip: &[u8]) -> Option<Endpoints> {
    if ip.len() < 20 {
        return None;
    }
    let ihl = usize::from(ip[0] & 15) * 4;
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let l4 = ip.get(ihl..).unwrap_or(&[]);
    let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0;
    let (sp, dp) = match ip[9] {
        PROTO_TCP | PROTO_UDP if l4.len() >= 4 && !frag => (
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
        ),
        PROTO_ICMP if l4.len() >= 8 && !frag => {
            let id = u16::from_be_bytes([l4[4], l4[5]]);
            (id, id)
        }
        _ => (0, 0),
    };
    Some(((src, sp), (dst, dp), ip[9], ihl))
}

struct Run {
    frames: u64,
    by_counter: BTreeMap<&'static str, u64>,
    by_verdict: BTreeMap<String, u64>,
    /// Observations that are no invariant violation, counted.
    notes: BTreeMap<&'static str, u64>,
    failures: Vec<String>,
}

fn outbound_keys(h: &Harness) -> BTreeSet<(Ipv4Addr, u16, u8)> {
    h.tables
        .bindings
        .dump_out()
        .expect("reading the bindings")
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

/// Runs one frame and checks every invariant on its output.
fn run(h: &mut Harness, r: &mut Run, what: &str, port: Port, input: &[u8]) -> Option<Vec<u8>> {
    let side = if port == Port::Int0 {
        Side::Internal
    } else {
        Side::External
    };
    let before = h.counters();
    let (verdict, out) = match h.test_run(side, port, input) {
        Ok(v) => v,
        Err(e) => {
            r.failures.push(format!("{what}: {e}"));
            return None;
        }
    };
    let after = h.counters();
    r.frames += 1;
    let mut msgs = Vec::new();
    let deltas: Vec<(&'static str, u64, u64)> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| a.1 != b.1 || a.2 != b.2)
        .map(|(b, a)| (a.0, a.1 - b.1, a.2 - b.2))
        .collect();
    let counter = match deltas.as_slice() {
        [(name, 1, bytes)] if *bytes == input.len() as u64 => *name,
        _ => {
            msgs.push(format!(
                "counter deltas {deltas:?}: not one packet of {} bytes",
                input.len()
            ));
            "?"
        }
    };
    *r.by_counter.entry(counter).or_default() += 1;
    *r.by_verdict.entry(verdict_name(verdict)).or_default() += 1;
    match verdict {
        XDP_DROP | XDP_PASS => {
            if out != input {
                msgs.push(format!(
                    "{} frame was modified:\n{}",
                    verdict_name(verdict),
                    diff(input, &out)
                ));
            }
        }
        XDP_TX | XDP_REDIRECT => {
            msgs.extend(check_forwarded(h, port, input, &out, counter));
            if !counter.starts_with("icmp_") {
                // RFC 1812 5.2.2: a header whose checksum is wrong is not
                // trusted, so never translated (drop_ip_checksum)
                if let Some((false, _)) = csum_state(input) {
                    msgs.push(
                        "translated although its IPv4 header checksum is wrong \
                         (RFC 1812 5.2.2: drop_ip_checksum)"
                            .into(),
                    );
                }
                if let Some((_, Some(false))) = csum_state(input) {
                    *r.notes
                        .entry("translated with a bad L4 checksum (kept bad)")
                        .or_default() += 1;
                }
                let src = ip_off(input)
                    .and_then(|o| endpoints(&input[o..]))
                    .map(|e| e.0 .0);
                if port == Port::Ext0
                    && src.is_some_and(internal)
                    && out.get(6..12) == Some(&INT0_MAC[..])
                {
                    msgs.push(
                        "a packet from outside with a subscriber's source reached a subscriber \
                         (RFC 6598 section 4: filtered on ingress links)"
                            .into(),
                    );
                }
            }
        }
        v => msgs.push(format!("verdict {}", verdict_name(v))),
    }
    if msgs.is_empty() {
        Some(out)
    } else {
        r.failures.push(format!(
            "{what} ({:?}, {} bytes: {}) -> {} [{counter}] {}:\n    {}",
            port,
            input.len(),
            describe(input),
            verdict_name(verdict),
            describe(&out),
            msgs.join("\n    ")
        ));
        None
    }
}

fn check_forwarded(
    h: &Harness,
    port: Port,
    input: &[u8],
    out: &[u8],
    counter: &str,
) -> Vec<String> {
    let mut msgs = Vec::new();
    let Some(o) = ip_off(out) else {
        return vec!["forwarded frame is not IPv4".into()];
    };
    let ip = &out[o..];
    let generated = counter.starts_with("icmp_");
    // a generated error goes back out of the ingress interface, MACs
    // swapped (whatever they were)
    let (egress_ext, egress_int) = if generated {
        (port == Port::Ext0, port == Port::Int0)
    } else {
        (
            out.get(6..12) == Some(&EXT0_MAC[..]),
            out.get(6..12) == Some(&INT0_MAC[..]),
        )
    };
    if !egress_ext && !egress_int {
        msgs.push(format!(
            "source MAC {:02x?} is neither int0 nor ext0",
            &out[6..12]
        ));
    }
    // checksums
    if generated {
        // RFC 1812 4.3.2.7: not about a link-layer broadcast or multicast
        if input.first().is_some_and(|b| b & 1 == 1) || out.get(6).is_some_and(|b| b & 1 == 1) {
            msgs.push("ICMP error generated about a link-layer broadcast/multicast frame".into());
        }
        if let Err(e) = verify_checksums(out).and_then(|_| verify_with_etherparse(out)) {
            msgs.push(format!("generated ICMP error: {e}"));
        }
    } else {
        match (csum_state(input), csum_state(out)) {
            (Some((ip_in, l4_in)), Some((ip_out, l4_out))) => {
                if ip_in && !ip_out {
                    msgs.push("IP header checksum broken by translation".into());
                }
                if l4_in.is_some() && l4_in != l4_out {
                    msgs.push(format!(
                        "L4 checksum valid {l4_in:?} on input, {l4_out:?} on output"
                    ));
                }
            }
            (Some(_), None) => msgs.push("output is not a consistent IPv4 packet".into()),
            _ => {}
        }
    }
    let Some((src, dst, proto, ihl)) = endpoints(ip) else {
        msgs.push("output IPv4 header truncated".into());
        return msgs;
    };
    // the quoted packet of an ICMP error
    // (not in a later fragment: its bytes are no header; not in an error
    // cgnat generated: it quotes what came in on that same side)
    let later = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0;
    let inner = (proto == PROTO_ICMP
        && !later
        && !generated
        && ip.len() >= ihl + 8
        && [3, 11, 12].contains(&ip[ihl]))
    .then(|| endpoints(&ip[ihl + 8..]))
    .flatten();
    if egress_ext {
        if internal(src.0) {
            msgs.push(format!(
                "internal source {} leaves on the external side",
                src.0
            ));
        }
        if let Some((isrc, idst, _, _)) = inner {
            if internal(isrc.0) || internal(idst.0) {
                msgs.push(format!(
                    "ICMP error leaving on the external side quotes internal address {} -> {}",
                    isrc.0, idst.0
                ));
            }
        }
    }
    if egress_int && !generated && internal(dst.0) {
        let keys = outbound_keys(h);
        let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0;
        let ok = if let Some((isrc, _, iproto, _)) = inner {
            keys.contains(&(isrc.0, isrc.1, iproto)) && isrc.0 == dst.0
        } else if frag || ![PROTO_TCP, PROTO_UDP, PROTO_ICMP].contains(&proto) {
            keys.iter().any(|k| k.0 == dst.0)
        } else {
            keys.contains(&(dst.0, dst.1, proto))
        };
        if !ok {
            msgs.push(format!(
                "reaches subscriber {}:{} /{proto} without a mapping{}",
                dst.0,
                dst.1,
                inner.map_or(String::new(), |i| format!(
                    " (quoted source {}:{})",
                    i.0 .0, i.0 .1
                ))
            ));
        }
    }
    msgs
}

/// The source endpoint of a forwarded output frame.
fn out_src(out: &[u8]) -> (Ipv4Addr, u16) {
    let o = ip_off(out).expect("IPv4 output");
    endpoints(&out[o..]).expect("endpoints").0
}

/// Seeds: (name, ingress, frame). Creates the bindings they need by
/// running outbound packets first.
fn seeds(h: &mut Harness, r: &mut Run) -> Vec<(String, Port, Vec<u8>)> {
    let mut s: Vec<(String, Port, Vec<u8>)> = Vec::new();
    let learn = |h: &mut Harness, r: &mut Run, name: &str, p: &Pkt| -> (Ipv4Addr, u16) {
        let out = run(h, r, name, Port::Int0, &p.bytes())
            .unwrap_or_else(|| panic!("seed {name} failed: {:?}", r.failures));
        out_src(&out)
    };
    let u1 = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"seed udp payload"));
    let t1 = from_sub(Pkt::tcp((H11, 40000), (R10, 80), TCP_SYN).tcp_opts(&[2, 4, 5, 0xb4]));
    let i1 = from_sub(Pkt::icmp(H11, R10, 8, 0x4242, 7));
    let u2 = from_sub(Pkt::udp((H12, 6000), (R20, 53), b"dns?"));
    let e1 = learn(h, r, "setup udp", &u1);
    let e2 = learn(h, r, "setup tcp", &t1);
    let e3 = learn(h, r, "setup icmp", &i1);
    let e4 = learn(h, r, "setup udp2", &u2);
    let u1_out = u1.clone().with_src(e1.0, e1.1).ttl(63);

    let mut int = |n: &str, p: Pkt| s.push((n.to_string(), Port::Int0, p.bytes()));
    int("udp out", u1.clone());
    int("tcp syn out", t1.clone());
    int(
        "tcp ack out",
        from_sub(Pkt::tcp((H11, 40000), (R10, 80), TCP_ACK)),
    );
    int("echo out", i1.clone());
    int("udp out 2", u2.clone());
    int(
        "udp out options",
        u1.clone().options(&[7, 7, 4, 0, 1, 1, 1, 0]),
    );
    int("udp out vlan", u1.clone().vlan(100));
    int("udp out ttl 1", u1.clone().ttl(1));
    int(
        "udp out ttl 1 broadcast",
        u1.clone().ttl(1).macs(mac_of(H11), [0xff; 6]),
    );
    int("udp out no csum", u1.clone().no_udp_csum());
    int("udp out DF clear", u1.clone().frag(0));
    int(
        "hairpin udp",
        from_sub(Pkt::udp((H12, 6001), e1, b"hairpin")),
    );
    int(
        "hairpin to static",
        from_sub(Pkt::udp((H11, 5001), STATIC_EXT, b"to static")),
    );
    int(
        "spoofed",
        Pkt::udp((Ipv4Addr::new(10, 1, 1, 1), 1), (R10, 2), b"x")
            .macs([2, 9, 9, 9, 9, 9], INT0_MAC),
    );
    int("to router", from_sub(Pkt::icmp(H11, ROUTER_INT, 8, 1, 1)));
    int("gre out", from_sub(Pkt::raw(H11, R10, PROTO_GRE, &[0; 24])));
    // the reply H11 got, and its port-unreachable about it
    let delivered = Pkt::udp((R10, 3478), (H11, 5000), b"reply").ttl(63);
    int(
        "icmp error out",
        from_sub(Pkt::icmp_msg(
            H11,
            R10,
            3,
            3,
            (0, 0),
            &delivered.quote_len(13),
        )),
    );
    let nested = Pkt::icmp_msg(R10, H11, 3, 3, (0, 0), &delivered.quote());
    int(
        "icmp error out quoting an error",
        from_sub(Pkt::icmp_msg(H11, R10, 3, 3, (0, 0), &nested.quote_len(36))),
    );
    // fragments
    let big = from_sub(
        Pkt::udp((H11, 5000), (R10, 3478), &[0x5a; 64])
            .frag(0)
            .options(&[]),
    );
    let mut b = big.clone();
    b.id = 0x7777;
    let frag = |bytes: Vec<u8>, m: Mac, dst: Mac| {
        let mut f = bytes;
        f[0..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&m);
        f
    };
    s.push((
        "first fragment out".into(),
        Port::Int0,
        b.fragment(0, 24, true),
    ));
    s.push((
        "later fragment out".into(),
        Port::Int0,
        b.fragment(24, 48, true),
    ));
    s.push((
        "last fragment out".into(),
        Port::Int0,
        b.fragment(48, 72, false),
    ));

    let mut ext = |n: &str, p: Pkt| s.push((n.to_string(), Port::Ext0, p.bytes()));
    ext(
        "udp in",
        from_net(Pkt::udp((R10, 3478), e1, b"reply payload")),
    );
    ext(
        "udp in other remote",
        from_net(Pkt::udp((R20, 9), e4, b"eif?")),
    );
    ext(
        "tcp syn-ack in",
        from_net(Pkt::tcp((R10, 80), e2, TCP_SYN | TCP_ACK)),
    );
    ext("tcp syn in", from_net(Pkt::tcp((R20, 80), e2, TCP_SYN)));
    ext("echo reply in", from_net(Pkt::icmp(R10, e3.0, 0, e3.1, 7)));
    ext(
        "echo request to pool",
        from_net(Pkt::icmp(R10, e3.0, 8, e3.1, 7)),
    );
    ext(
        "udp to static",
        from_net(Pkt::udp((R20, 1234), STATIC_EXT, b"port forward")),
    );
    ext(
        "udp to unbound",
        from_net(Pkt::udp((R10, 1), (e1.0, 1), b"nobody")),
    );
    ext(
        "udp to subscriber",
        from_net(Pkt::udp((R10, 1), (H11, 5000), b"direct")),
    );
    ext(
        "udp in vlan",
        from_net(Pkt::udp((R10, 3478), e1, b"tagged")).vlan(7),
    );
    ext(
        "udp in ttl 1",
        from_net(Pkt::udp((R10, 3478), e1, b"ttl")).ttl(1),
    );
    ext(
        "icmp error in",
        from_net(Pkt::icmp_msg(
            R20,
            e1.0,
            11,
            0,
            (0, 0),
            &u1_out.quote_len(24),
        )),
    );
    ext(
        "icmp frag needed in",
        from_net(Pkt::icmp_msg(R10, e1.0, 3, 4, (0, 1400), &u1_out.quote())),
    );
    let t1_out = t1.clone().with_src(e2.0, e2.1).ttl(63);
    ext(
        "icmp error in about tcp",
        from_net(Pkt::icmp_msg(
            R10,
            e2.0,
            3,
            3,
            (0, 0),
            &t1_out.quote_len(40),
        )),
    );
    let i1_out = i1.clone().with_src(e3.0, e3.1).ttl(63);
    ext(
        "icmp error in about echo",
        from_net(Pkt::icmp_msg(
            R10,
            e3.0,
            3,
            1,
            (0, 0),
            &i1_out.quote_len(16),
        )),
    );
    let err_out = Pkt::icmp_msg(e1.0, R10, 3, 3, (0, 0), &u1_out.quote());
    ext(
        "icmp error in quoting an error",
        from_net(Pkt::icmp_msg(
            R10,
            e1.0,
            3,
            3,
            (0, 0),
            &err_out.quote_len(36),
        )),
    );
    ext(
        "icmp error in nested three deep",
        from_net(Pkt::icmp_msg(
            R10,
            e1.0,
            12,
            0,
            (0, 0),
            &Pkt::icmp_msg(e1.0, R10, 11, 0, (0, 0), &err_out.quote_len(60)).quote_len(90),
        )),
    );
    let inb = from_net(Pkt::udp((R10, 3478), e1, &[0xa5; 64]).frag(0));
    let mut inb = inb.clone();
    inb.id = 0x4444;
    s.push((
        "later fragment in first".into(),
        Port::Ext0,
        frag(inb.fragment(24, 48, true), mac_of(R10), EXT0_MAC),
    ));
    s.push((
        "first fragment in".into(),
        Port::Ext0,
        frag(inb.fragment(0, 24, true), mac_of(R10), EXT0_MAC),
    ));
    s.push((
        "overlapping fragment in".into(),
        Port::Ext0,
        frag(inb.fragment(16, 40, true), mac_of(R10), EXT0_MAC),
    ));
    s.push((
        "last fragment in".into(),
        Port::Ext0,
        frag(inb.fragment(48, 72, false), mac_of(R10), EXT0_MAC),
    ));
    // not IPv4
    s.push((
        "arp".into(),
        Port::Ext0,
        eth(INT0_MAC, mac_of(R10), None, ETH_P_ARP, &[0; 28]),
    ));
    s.push((
        "ipv6".into(),
        Port::Int0,
        eth(INT0_MAC, mac_of(H11), None, ETH_P_IPV6, &[0x60; 48]),
    ));
    s
}

/// Wraps an Ethernet frame's payload in one more 802.1Q/802.1ad tag.
fn add_tag(f: &[u8], tpid: u16, tci: u16) -> Vec<u8> {
    let mut v = f[..12].to_vec();
    v.extend_from_slice(&tpid.to_be_bytes());
    v.extend_from_slice(&tci.to_be_bytes());
    v.extend_from_slice(&f[12..]);
    v
}

/// Every mutation of one seed.
fn mutations(seed: &[u8], rng: &mut Rng, flips: usize) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = Vec::new();
    // (BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header)
    for n in 14..seed.len() {
        v.push((format!("truncated to {n}"), seed[..n].to_vec()));
    }
    for i in 0..flips {
        let mut f = seed.to_vec();
        let k = 1 + rng.below(3);
        for _ in 0..k {
            let at = rng.below(f.len());
            f[at] ^= 1 << rng.below(8);
        }
        if i % 2 == 1 {
            fix_all(&mut f); // checksums right: the defect is semantic
        }
        v.push((
            format!(
                "flip #{i}{}",
                if i % 2 == 1 { " (checksums fixed)" } else { "" }
            ),
            f,
        ));
    }
    v.push(("one more 802.1Q tag".into(), add_tag(seed, ETH_P_8021Q, 42)));
    v.push((
        "802.1ad + 802.1Q".into(),
        add_tag(&add_tag(seed, ETH_P_8021Q, 42), 0x88a8, 7),
    ));
    for et in [ETH_P_IPV6, ETH_P_ARP, 0x88cc, 0x0000, 0x05dc, 0xffff] {
        let mut f = seed.to_vec();
        if f.len() >= 14 {
            f[12..14].copy_from_slice(&et.to_be_bytes());
            v.push((format!("EtherType {et:#06x}"), f));
        }
    }
    let Some(o) = ip_off(seed) else { return v };
    if seed.len() < o + 20 {
        return v;
    }
    let ihl = usize::from(seed[o] & 15) * 4;
    let tot = usize::from(u16::from_be_bytes([seed[o + 2], seed[o + 3]]));
    for x in 0..16u8 {
        let mut f = seed.to_vec();
        f[o] = 0x40 | x;
        fix_ip_csum(&mut f, o);
        v.push((format!("IHL {x}"), f));
    }
    for ver in [0u8, 6, 15] {
        let mut f = seed.to_vec();
        f[o] = (ver << 4) | (f[o] & 15);
        fix_ip_csum(&mut f, o);
        v.push((format!("IP version {ver}"), f));
    }
    for t in [
        0,
        1,
        19,
        20,
        ihl,
        ihl + 7,
        tot - 1,
        tot + 1,
        tot + 100,
        0xffff,
        rng.below(0x10000),
    ] {
        let mut f = seed.to_vec();
        f[o + 2..o + 4].copy_from_slice(&(t as u16).to_be_bytes());
        fix_ip_csum(&mut f, o);
        v.push((format!("total length {t}"), f));
    }
    let proto = seed[o + 9];
    let l4 = o + ihl;
    if proto == PROTO_UDP && seed.len() >= l4 + 8 {
        let ul = tot - ihl;
        for u in [0, 7, 8, ul - 1, ul + 1, ul + 8, 0xffff] {
            let mut f = seed.to_vec();
            f[l4 + 4..l4 + 6].copy_from_slice(&(u as u16).to_be_bytes());
            v.push((format!("UDP length {u}"), f));
        }
    }
    if proto == PROTO_TCP && seed.len() >= l4 + 20 {
        for flags in 0..=255u8 {
            let mut f = seed.to_vec();
            f[l4 + 13] = flags;
            fix_l4(&mut f);
            v.push((format!("TCP flags {flags:#04x}"), f));
        }
        for doff in [0u8, 4, 6, 15] {
            let mut f = seed.to_vec();
            f[l4 + 12] = doff << 4;
            fix_l4(&mut f);
            v.push((format!("TCP data offset {doff}"), f));
        }
    }
    for flags in [
        0x2000u16,
        0x2001,
        0x0001,
        0x00b9,
        0x1fff,
        0x4000 | 0x2000,
        0x8000,
        0x2000 | 3,
    ] {
        let mut f = seed.to_vec();
        f[o + 6..o + 8].copy_from_slice(&flags.to_be_bytes());
        fix_ip_csum(&mut f, o);
        v.push((format!("fragment field {flags:#06x}"), f));
    }
    // IP options inserted (NOPs, record route, LSRR, junk, 40 bytes)
    for opts in [
        vec![1, 1, 1, 0],
        vec![7, 7, 4, 0, 0, 0, 0, 0],
        vec![131, 7, 4, 198, 51, 100, 20, 0],
        vec![0xff, 2, 0xaa, 0x55],
        vec![1; 40],
    ] {
        let mut f = seed[..l4].to_vec();
        f.extend_from_slice(&opts);
        f.extend_from_slice(&seed[l4..]);
        let nihl = (ihl + opts.len()) / 4;
        if nihl <= 15 {
            f[o] = 0x40 | nihl as u8;
            f[o + 2..o + 4].copy_from_slice(&((tot + opts.len()) as u16).to_be_bytes());
            fix_ip_csum(&mut f, o);
            v.push((format!("IP options {opts:02x?}"), f));
        }
    }
    v
}

#[test]
fn garbage() {
    if !privileged("garbage") {
        return;
    }
    let ns = NetNs::create("g");
    ns.enter(|| {
        let start = Instant::now();
        let text = config_text(
            "max_sessions = 8192\nmax_bindings = 8192",
            "[icmp]\nrate_limit = 10000\n\
             [[static]]\nproto = \"udp\"\ninternal = \"100.64.0.12:7000\"\nexternal = \"203.0.113.9:7000\"\n",
        );
        let mut h = Harness::load_text("garbage", &text);
        let seed: u64 = std::env::var("CGNAT_GARBAGE_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0x5eed_cafe_f00d_1234);
        let mut rng = Rng(seed | 1);
        let flips = (cgnat_kit::cases(1000) as usize * 3 / 20).max(10);
        let mut r = Run {
            frames: 0,
            by_counter: BTreeMap::new(),
            by_verdict: BTreeMap::new(),
            notes: BTreeMap::new(),
            failures: Vec::new(),
        };
        let seeds = seeds(&mut h, &mut r);
        let nseeds = seeds.len();
        for (name, port, frame) in &seeds {
            run(&mut h, &mut r, &format!("seed {name}"), *port, frame);
            for (m, f) in mutations(frame, &mut rng, flips) {
                run(&mut h, &mut r, &format!("{name}: {m}"), *port, &f);
                // the same garbage arriving on the other side
                if m.starts_with("flip") || m.starts_with("IHL") {
                    let other = if *port == Port::Int0 { Port::Ext0 } else { Port::Int0 };
                    run(&mut h, &mut r, &format!("{name}: {m} (other side)"), other, &f);
                }
            }
        }
        let sum: u64 = h.counters().iter().map(|c| c.1).sum();
        if sum != h.runs {
            r.failures.push(format!("counters sum to {sum} packets after {} runs", h.runs));
        }
        println!(
            "garbage: {} frames from {nseeds} seeds ({flips} random flips each, seed {seed:#x}) in {:.1} s\n  verdicts {:?}\n  counters {:?}\n  notes {:?}",
            r.frames,
            start.elapsed().as_secs_f64(),
            r.by_verdict,
            r.by_counter,
            r.notes
        );
        if !r.failures.is_empty() {
            let n = r.failures.len();
            r.failures.truncate(60);
            panic!("garbage: {n} invariant violations (first 30):\n{}", r.failures.join("\n"));
        }
    });
}
