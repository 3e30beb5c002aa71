//! Packet-level tests of the XDP data path through BPF_PROG_TEST_RUN.
//!
//! Each test creates its own network namespace (veth pairs int0/ext0 with
//! fixed MACs, addresses and permanent neighbours, lo forwarding on), loads
//! the program there exactly as the daemon does (`Datapath::load`, not
//! attached), and runs a table of cases. Every case asserts the XDP verdict,
//! that exactly its counter grew by one packet, and the exact output frame
//! (built here from scratch, checksums recomputed independently; frames that
//! are passed or dropped must come back untouched). Finally all counters
//! must sum to the number of runs.
//!
//! Needs root and iproute2: without them the tests print a message and
//! return, except under CI=true where they fail.
//!
//! Run: cargo test --test prog_run -- --nocapture

#[path = "prog_run/frame.rs"]
mod frame;
#[path = "prog_run/harness.rs"]
mod harness;
#[path = "prog_run/netns.rs"]
mod netns;

use std::net::Ipv4Addr;

use cgnat::bpf::{types, Side};

use frame::*;
use harness::*;
use netns::*;

const H11: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 11);
const H12: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 12);
const R10: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const R20: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);

const SYN_OUT: u32 = types::cgnat_tcp_event::CGNAT_TCP_SYN_OUT.0;
const SYN_IN: u32 = types::cgnat_tcp_event::CGNAT_TCP_SYN_IN.0;
const TCP_LOOSE: u32 = types::cgnat_tcp_event::CGNAT_TCP_LOOSE.0;
const FIN_OUT: u32 = types::cgnat_tcp_event::CGNAT_TCP_FIN_OUT.0;
const SESS_INBOUND: u8 = types::cgnat_session_flag::CGNAT_SESS_INBOUND.0 as u8;
const SESS_HAIRPIN: u8 = types::cgnat_session_flag::CGNAT_SESS_HAIRPIN.0 as u8;

/// What an outbound packet must become: source = `ext`, TTL - 1, out of
/// ext0 to the destination's neighbour MAC.
fn outbound(p: &Pkt, ext: (Ipv4Addr, u16)) -> Vec<u8> {
    outbound_to(p, ext, mac_of(p.dst))
}

/// [`outbound`] toward a next hop whose MAC is `mac`.
fn outbound_to(p: &Pkt, ext: (Ipv4Addr, u16), mac: Mac) -> Vec<u8> {
    p.clone()
        .with_src(ext.0, ext.1)
        .ttl(p.ttl - 1)
        .macs(EXT0_MAC, mac)
        .bytes()
}

/// What an inbound packet must become: destination = `int` (whose MAC is
/// `mac`), TTL - 1, out of int0.
fn inbound_to(p: &Pkt, int: (Ipv4Addr, u16), mac: Mac) -> Vec<u8> {
    p.clone()
        .with_dst(int.0, int.1)
        .ttl(p.ttl - 1)
        .macs(INT0_MAC, mac)
        .bytes()
}

fn inbound(p: &Pkt, int: (Ipv4Addr, u16)) -> Vec<u8> {
    inbound_to(p, int, mac_of(int.0))
}

fn session_check(
    h: &Harness,
    ext: (Ipv4Addr, u16),
    rem: (Ipv4Addr, u16),
    proto: u8,
    int: (Ipv4Addr, u16),
    flags: u8,
    tcp_bits: u32,
) -> Result<(), String> {
    let s = h.session(ext, rem, proto).ok_or_else(|| {
        format!(
            "no session {}:{} <-> {}:{} /{proto}",
            ext.0, ext.1, rem.0, rem.1
        )
    })?;
    ensure!(
        addr_of(s.int_addr) == int.0 && u16::from_be(s.int_port) == int.1,
        "session points to {}:{}, expected {}:{}",
        addr_of(s.int_addr),
        u16::from_be(s.int_port),
        int.0,
        int.1
    );
    ensure!(
        s.flags == flags,
        "session flags {:#x}, expected {flags:#x}",
        s.flags
    );
    ensure!(
        s.tcp & tcp_bits == tcp_bits,
        "session tcp events {:#x} lack {tcp_bits:#x}",
        s.tcp
    );
    let age = cgnat::expiry::idle_ns(cgnat::expiry::monotonic_ns(), s.last_seen);
    ensure!(
        age < 10_000_000_000,
        "session last_seen {} is {age} ns old",
        s.last_seen
    );
    Ok(())
}

/// A learned value the rest of the table depends on: without it, the test
/// stops here with everything recorded so far.
fn learned<T>(h: &mut Harness, what: &str, r: Result<T, String>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            h.failures
                .push(format!("{what}: {e} (later cases skipped)"));
            None
        }
    }
}

/// Outbound, inbound and hairpin translation on one Datapath.
#[test]
fn translation() {
    if !privileged("translation") {
        return;
    }
    let ns = NetNs::create("t");
    ns.enter(|| {
        let mut h = Harness::load("translation");
        translation_cases(&mut h);
        h.finish();
    });
}

fn translation_cases(h: &mut Harness) {
    // ---- outbound ----
    let p1 = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"stun binding request"));
    let q = p1.clone();
    h.run(
        Case::int(
            "outbound UDP 100.64.0.11:5000 -> 198.51.100.10:3478",
            p1.bytes(),
        )
        .verdict(XDP_REDIRECT, "fwd_out")
        .after(move |h| {
            let ext = h.external_of(&q)?;
            ensure!(
                ext.1 == 5000,
                "external port {} (5000 not preserved)",
                ext.1
            );
            Ok(outbound(&q, ext))
        }),
    );
    let Some(e11) = learned(h, "binding of 100.64.0.11:5000", h.external_of(&p1)) else {
        return;
    };
    println!("  100.64.0.11:5000/udp is mapped to {}:{}", e11.0, e11.1);
    let r = session_check(h, e11, (R10, 3478), PROTO_UDP, (H11, 5000), 0, 0);
    h.check("outbound UDP created its session", r);

    let nb = Harness::count_entries(&h.tables.bind_out);
    let p = from_sub(Pkt::udp((H11, 5000), (R20, 3478), b"second remote"));
    h.run(
        Case::int(
            "same socket to 198.51.100.20: same external endpoint (EIM)",
            p.bytes(),
        )
        .verdict(XDP_REDIRECT, "fwd_out")
        .frame(outbound(&p, e11)),
    );
    let n = Harness::count_entries(&h.tables.bind_out);
    h.check(
        "EIM: no new binding for a new remote",
        if n == nb {
            Ok(())
        } else {
            Err(format!("bind_out grew from {nb} to {n}"))
        },
    );

    let p = from_sub(Pkt::udp((H11, 5001), (R10, 3478), b"no checksum").no_udp_csum());
    let q = p.clone();
    h.run(
        Case::int("UDP with checksum 0 keeps checksum 0", p.bytes())
            .verdict(XDP_REDIRECT, "fwd_out")
            .after(move |h| {
                let ext = h.external_of(&q)?;
                ensure!(ext.0 == e11.0, "paired pooling: {} != {}", ext.0, e11.0);
                Ok(outbound(&q, ext))
            }),
    );

    // A payload chosen so that the translated UDP checksum computes to 0,
    // which must be sent as 0xffff (RFC 768).
    let mut t = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"\0\0zero-sum"))
        .with_src(e11.0, e11.1)
        .no_udp_csum();
    let seg = t.l4_bytes();
    let s = fold(sum_words(&pseudo_header(t.src, t.dst, PROTO_UDP, seg.len())) + sum_words(&seg));
    if let L4::Udp {
        payload, no_csum, ..
    } = &mut t.l4
    {
        payload[0..2].copy_from_slice(&(!s).to_be_bytes());
        *no_csum = false;
    }
    let p = t.clone().with_src(H11, 5000);
    let exp = outbound(&p, e11);
    let off = p.l4_offset() + 6;
    let r = if exp[off..off + 2] == [0xff, 0xff] {
        Ok(())
    } else {
        Err(format!(
            "setup: expected checksum {:02x?}",
            &exp[off..off + 2]
        ))
    };
    h.check("setup: translated UDP checksum computes to 0", r);
    h.run(
        Case::int("UDP checksum that becomes 0 is sent as 0xffff", p.bytes())
            .verdict(XDP_REDIRECT, "fwd_out")
            .frame(exp),
    );

    let p = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"with options").options(&[1, 1, 1, 1]));
    h.run(
        Case::int("IP options (IHL 6, NOPs) preserved", p.bytes())
            .verdict(XDP_REDIRECT, "fwd_out")
            .frame(outbound(&p, e11)),
    );

    let p = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"tagged").vlan(0x2064));
    h.run(
        Case::int("802.1Q-tagged UDP translated, tag kept", p.bytes())
            .verdict(XDP_REDIRECT, "fwd_out")
            .frame(outbound(&p, e11)),
    );

    let pt = from_sub(Pkt::tcp((H11, 40000), (R10, 80), TCP_SYN));
    let q = pt.clone();
    h.run(
        Case::int("outbound TCP SYN", pt.bytes())
            .verdict(XDP_REDIRECT, "fwd_out")
            .after(move |h| {
                let ext = h.external_of(&q)?;
                ensure!(
                    ext.0 == e11.0,
                    "paired pooling: TCP on {}, UDP on {}",
                    ext.0,
                    e11.0
                );
                ensure!(
                    ext.1 == 40000,
                    "external port {} (40000 not preserved)",
                    ext.1
                );
                Ok(outbound(&q, ext))
            }),
    );
    let Some(et) = learned(h, "binding of 100.64.0.11:40000/tcp", h.external_of(&pt)) else {
        return;
    };
    let r = session_check(h, et, (R10, 80), PROTO_TCP, (H11, 40000), 0, SYN_OUT);
    h.check("TCP SYN session has SYN_OUT", r);

    let pi = from_sub(Pkt::icmp(H11, R10, 8, 0x4242, 1));
    let q = pi.clone();
    h.run(
        Case::int(
            "outbound ICMP echo request keeps its identifier",
            pi.bytes(),
        )
        .verdict(XDP_REDIRECT, "fwd_out")
        .after(move |h| {
            let ext = h.external_of(&q)?;
            ensure!(
                ext.0 == e11.0,
                "paired pooling: ICMP on {}, UDP on {}",
                ext.0,
                e11.0
            );
            ensure!(
                ext.1 == 0x4242,
                "identifier {:#x} (0x4242 not preserved)",
                ext.1
            );
            Ok(outbound(&q, ext))
        }),
    );
    let Some(ei) = learned(h, "binding of ICMP id 0x4242", h.external_of(&pi)) else {
        return;
    };
    let r = session_check(h, ei, (R10, 0), PROTO_ICMP, (H11, 0x4242), 0, 0);
    h.check("ICMP session with remote port 0", r);

    let p12 = from_sub(Pkt::udp((H12, 5000), (R10, 3478), b"subscriber 12"));
    let q = p12.clone();
    h.run(
        Case::int("second subscriber 100.64.0.12:5000", p12.bytes())
            .verdict(XDP_REDIRECT, "fwd_out")
            .after(move |h| {
                let ext = h.external_of(&q)?;
                if ext.0 == e11.0 {
                    ensure!(
                        ext.1 != e11.1 && ext.1 >= 1024,
                        "shares {} with .11 but got port {}",
                        ext.0,
                        ext.1
                    );
                } else {
                    ensure!(
                        ext.1 == 5000,
                        "own address {} but port {} != 5000",
                        ext.0,
                        ext.1
                    );
                }
                Ok(outbound(&q, ext))
            }),
    );
    let Some(e12) = learned(h, "binding of 100.64.0.12:5000", h.external_of(&p12)) else {
        return;
    };
    println!("  100.64.0.12:5000/udp is mapped to {}:{}", e12.0, e12.1);

    // TTL 1: answered with ICMP time exceeded (11/0) from int0's address
    // (the default [icmp] rate_limit lets it out), nothing created.
    let p = from_sub(Pkt::udp((H11, 5003), (R10, 3478), b"ttl 1").ttl(1));
    let q = p.clone();
    h.run(
        Case::int("TTL 1 outbound (new socket): ICMP time exceeded", p.bytes())
            .verdict(XDP_TX, "icmp_time_exceeded")
            .after(move |h| {
                ensure!(
                    h.bind_out(q.src, q.sport(), PROTO_UDP).is_none(),
                    "a binding was created for an expired packet"
                );
                Ok(generated_error(&q, ROUTER_INT, 11, 0, 0))
            }),
    );
    let p = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"ttl 1").ttl(1));
    h.run(
        Case::int(
            "TTL 1 outbound (existing session): ICMP time exceeded",
            p.bytes(),
        )
        .verdict(XDP_TX, "icmp_time_exceeded")
        .frame(generated_error(&p, ROUTER_INT, 11, 0, 0)),
    );
    let p = from_sub(
        Pkt::icmp(H11, R10, 8, 0x4242, 2)
            .ttl(1)
            .options(&[1, 1, 1, 0]),
    );
    h.run(
        Case::int(
            "TTL 1 echo with IP options: quote keeps the options",
            p.bytes(),
        )
        .verdict(XDP_TX, "icmp_time_exceeded")
        .frame(generated_error(&p, ROUTER_INT, 11, 0, 0)),
    );
    let p = from_sub(
        Pkt::udp((H11, 5000), (R10, 3478), b"ttl 1")
            .ttl(1)
            .vlan(100),
    );
    h.run(
        Case::int("TTL 1 tagged frame: dropped, no ICMP on VLANs", p.bytes())
            .verdict(XDP_DROP, "drop_ttl"),
    );
    // A router forwards only frames sent to its own MAC (RFC 1812 5.3.4):
    // link-layer broadcasts, multicasts and frames for another host (seen
    // in promiscuous mode) go to the kernel untouched, untranslated, and
    // get no ICMP error (4.3.2.7; the error would also leave with the group
    // address as its source MAC, which tests/garbage.rs found).
    for (what, mac) in [
        ("broadcast", [0xff; 6]),
        ("multicast", [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01]),
        ("another host's MAC", [0x02, 0x55, 0, 0, 0, 0x01]),
    ] {
        let p = Pkt::udp((H11, 5000), (R10, 3478), b"ttl 1")
            .ttl(1)
            .macs(mac_of(H11), mac);
        h.run(
            Case::int(
                format!("TTL 1 sent to {what}: not for us, no ICMP"),
                p.bytes(),
            )
            .verdict(XDP_PASS, "pass_not_for_us"),
        );
        let p = Pkt::udp((H11, 5000), (R10, 3478), b"not for us").macs(mac_of(H11), mac);
        h.run(
            Case::int(
                format!("outbound sent to {what}: not translated"),
                p.bytes(),
            )
            .verdict(XDP_PASS, "pass_not_for_us"),
        );
        let p = Pkt::udp((R10, 3478), (H11, 5000), b"not for us").macs(mac_of(R10), mac);
        h.run(
            Case::ext(format!("inbound sent to {what}: not translated"), p.bytes())
                .verdict(XDP_PASS, "pass_not_for_us"),
        );
    }

    // Larger than ext0's MTU (1500): DF set -> fragmentation needed (3/4)
    // carrying the MTU; without DF dropped (XDP cannot fragment).
    let big = from_sub(Pkt::udp((H11, 5000), (R10, 3478), &[0xab; 1572]));
    h.run(
        Case::int(
            "1600-byte datagram with DF: ICMP fragmentation needed, MTU 1500",
            big.bytes(),
        )
        .verdict(XDP_TX, "icmp_frag_needed")
        .frame(generated_error(&big, ROUTER_INT, 3, 4, 1500)),
    );
    let big = big.frag(0);
    h.run(
        Case::int("1600-byte datagram without DF: dropped", big.bytes())
            .verdict(XDP_DROP, "drop_frag_needed"),
    );
    let p = from_sub(Pkt::udp((H11, 5000), (R10, 3478), &[0xcd; 1472]));
    h.run(
        Case::int(
            "1500-byte datagram (exactly the MTU) is forwarded",
            p.bytes(),
        )
        .verdict(XDP_REDIRECT, "fwd_out")
        .frame(outbound(&p, e11)),
    );
    let p = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"x")).pad_to(60);
    h.run(
        Case::int(
            "Ethernet padding after the datagram is carried along",
            p.bytes(),
        )
        .verdict(XDP_REDIRECT, "fwd_out")
        .frame(outbound(&p, e11)),
    );
    let p = from_sub(Pkt::tcp((H11, 40002), (R10, 80), TCP_ACK));
    let q = p.clone();
    h.run(
        Case::int(
            "outbound TCP ACK without session: picked up (loose)",
            p.bytes(),
        )
        .verdict(XDP_REDIRECT, "fwd_out")
        .after(move |h| {
            let ext = h.external_of(&q)?;
            session_check(h, ext, (R10, 80), PROTO_TCP, (H11, 40002), 0, TCP_LOOSE)?;
            Ok(outbound(&q, ext))
        }),
    );

    // ---- inbound ----
    let p = from_net(Pkt::udp((R10, 3478), e11, b"stun binding response"));
    h.run(
        Case::ext(
            "inbound reply 198.51.100.10:3478 -> .11's external endpoint",
            p.bytes(),
        )
        .verdict(XDP_REDIRECT, "fwd_in")
        .frame(inbound(&p, (H11, 5000))),
    );

    let p = from_net(Pkt::udp((R20, 9999), e11, b"unsolicited"));
    h.run(
        Case::ext(
            "inbound from never-contacted 198.51.100.20:9999 (EIF)",
            p.bytes(),
        )
        .verdict(XDP_REDIRECT, "fwd_in")
        .frame(inbound(&p, (H11, 5000))),
    );
    let r = session_check(h, e11, (R20, 9999), PROTO_UDP, (H11, 5000), SESS_INBOUND, 0);
    h.check("EIF created an inbound session", r);

    let p = from_net(Pkt::udp((R20, 9999), e11, b"ttl 1").ttl(1));
    h.run(
        Case::ext(
            "TTL 1 inbound: ICMP time exceeded from ext0's address",
            p.bytes(),
        )
        .verdict(XDP_TX, "icmp_time_exceeded")
        .frame(generated_error(&p, ROUTER_EXT, 11, 0, 0)),
    );

    // a port of .11's address that nothing holds
    let free = (1..1024u16)
        .find(|&port| h.bind_in(e11.0, port, PROTO_UDP).is_none())
        .expect("a free port");
    let p = from_net(Pkt::udp((R10, 3478), (e11.0, free), b"nobody"));
    h.run(
        Case::ext(format!("inbound to unbound {}:{free}", e11.0), p.bytes())
            .verdict(XDP_DROP, "drop_no_binding"),
    );
    let other = *h
        .cfg
        .pool_addrs
        .iter()
        .rev()
        .find(|a| **a != e11.0 && **a != e12.0)
        .expect("a pool address without bindings");
    let p = from_net(Pkt::udp((R10, 3478), (other, 5000), b"nobody"));
    h.run(
        Case::ext(
            format!("inbound to unused pool address {other}:5000"),
            p.bytes(),
        )
        .verdict(XDP_DROP, "drop_no_binding"),
    );

    let p = from_net(Pkt::icmp(R10, ei.0, 0, ei.1, 1));
    h.run(
        Case::ext(
            "inbound ICMP echo reply with the mapped identifier",
            p.bytes(),
        )
        .verdict(XDP_REDIRECT, "fwd_in")
        .frame(inbound(&p, (H11, 0x4242))),
    );

    let p = from_net(Pkt::tcp((R10, 80), et, TCP_SYN | TCP_ACK));
    h.run(
        Case::ext("inbound TCP SYN-ACK on the SYN's session", p.bytes())
            .verdict(XDP_REDIRECT, "fwd_in")
            .frame(inbound(&p, (H11, 40000))),
    );
    let r = session_check(
        h,
        et,
        (R10, 80),
        PROTO_TCP,
        (H11, 40000),
        0,
        SYN_OUT | SYN_IN,
    );
    h.check("TCP session has SYN_OUT | SYN_IN", r);

    let p = from_net(Pkt::tcp((R20, 80), et, TCP_ACK));
    let q = p.clone();
    h.run(
        Case::ext("inbound TCP ACK to a binding without session", p.bytes())
            .verdict(XDP_DROP, "drop_tcp_no_session")
            .after(move |h| {
                ensure!(
                    h.session(et, (R20, 80), PROTO_TCP).is_none(),
                    "a session was created"
                );
                Ok(q.bytes())
            }),
    );

    let p = from_net(Pkt::tcp((R20, 81), et, TCP_SYN));
    h.run(
        Case::ext("inbound bare TCP SYN from a new remote (EIF)", p.bytes())
            .verdict(XDP_REDIRECT, "fwd_in")
            .frame(inbound(&p, (H11, 40000))),
    );
    let r = session_check(
        h,
        et,
        (R20, 81),
        PROTO_TCP,
        (H11, 40000),
        SESS_INBOUND,
        SYN_IN,
    );
    h.check("inbound SYN session is INBOUND with SYN_IN", r);

    let p = from_net(Pkt::udp((R10, 3478), (H11, 5000), b"direct"));
    h.run(
        Case::ext("inbound straight to a subscriber address", p.bytes())
            .verdict(XDP_DROP, "drop_to_internal"),
    );

    let p = from_net(Pkt::udp((R10, 3478), (ROUTER_EXT, 53), b"router"));
    h.run(
        Case::ext("inbound to the router's external address", p.bytes())
            .verdict(XDP_PASS, "pass_not_nat"),
    );

    // RFC 6598 section 4: shared (internal) addresses are filtered on
    // ingress links. A packet from outside claiming a subscriber's
    // address must not reach another subscriber through its mapping
    // (found by tests/garbage.rs: it was forwarded, fwd_in).
    let p = from_net(Pkt::udp((H12, 5000), e11, b"spoofed neighbour"));
    h.run(
        Case::ext(
            "inbound from an internal source to a live mapping (spoofed)",
            p.bytes(),
        )
        .verdict(XDP_DROP, "drop_spoofed"),
    );
    let sent = p1.clone().with_src(e11.0, e11.1).ttl(p1.ttl - 1);
    let p = from_net(Pkt::icmp_msg(H12, e11.0, 3, 3, (0, 0), &sent.quote()));
    h.run(
        Case::ext(
            "inbound ICMP error from an internal source (spoofed)",
            p.bytes(),
        )
        .verdict(XDP_DROP, "drop_spoofed"),
    );

    // ---- ICMP errors (RFC 5508) ----
    // port unreachable from 198.51.100.10 about .11's translated datagram
    let p = from_net(Pkt::icmp_msg(R10, e11.0, 3, 3, (0, 0), &sent.quote()));
    let exp = Pkt::icmp_msg(
        R10,
        H11,
        3,
        3,
        (0, 0),
        &sent.clone().with_src(H11, 5000).quote(),
    )
    .ttl(p.ttl - 1)
    .macs(INT0_MAC, mac_of(H11))
    .bytes();
    h.run(
        Case::ext(
            "inbound ICMP port unreachable: outer dst and quoted source restored",
            p.bytes(),
        )
        .verdict(XDP_REDIRECT, "fwd_in")
        .frame(exp),
    );
    let stray = Pkt::udp((e11.0, free), (R10, 3478), b"?").ttl(63);
    let p = from_net(Pkt::icmp_msg(R10, e11.0, 3, 3, (0, 0), &stray.quote()));
    h.run(
        Case::ext("inbound ICMP error quoting an unbound port", p.bytes())
            .verdict(XDP_DROP, "drop_no_binding"),
    );
    // RFC 5508 REQ-3: errors with a bad ICMP checksum or a bad embedded IP
    // header checksum are dropped; an odd-length message is summed right
    let mut bad = from_net(Pkt::icmp_msg(R10, e11.0, 3, 3, (0, 0), &sent.quote())).bytes();
    let last = bad.len() - 1;
    bad[last] ^= 0x01;
    h.run(
        Case::ext("inbound ICMP error with a bad ICMP checksum", bad)
            .verdict(XDP_DROP, "drop_icmp_csum"),
    );
    let mut q = sent.quote();
    q[10] ^= 0xff; // embedded IP header checksum
    let p = from_net(Pkt::icmp_msg(R10, e11.0, 3, 3, (0, 0), &q));
    h.run(
        Case::ext(
            "inbound ICMP error with a bad embedded IP checksum",
            p.bytes(),
        )
        .verdict(XDP_DROP, "drop_icmp_csum"),
    );
    let p = from_net(Pkt::icmp_msg(R10, e11.0, 3, 3, (0, 0), &sent.quote_len(13)));
    let exp = Pkt::icmp_msg(
        R10,
        H11,
        3,
        3,
        (0, 0),
        &sent.clone().with_src(H11, 5000).quote_len(13),
    )
    .ttl(p.ttl - 1)
    .macs(INT0_MAC, mac_of(H11))
    .bytes();
    h.run(
        Case::ext(
            "inbound ICMP error of odd length (13-byte L4 quote)",
            p.bytes(),
        )
        .verdict(XDP_REDIRECT, "fwd_in")
        .frame(exp),
    );
    // .11 answers the datagram it got from 198.51.100.20:9999 with an error
    let got = Pkt::udp((R20, 9999), (H11, 5000), b"unsolicited").ttl(63);
    let p = from_sub(Pkt::icmp_msg(H11, R20, 3, 3, (0, 0), &got.quote()));
    let exp = Pkt::icmp_msg(
        e11.0,
        R20,
        3,
        3,
        (0, 0),
        &got.clone().with_dst(e11.0, e11.1).quote(),
    )
    .ttl(p.ttl - 1)
    .macs(EXT0_MAC, mac_of(R20))
    .bytes();
    h.run(
        Case::int(
            "outbound ICMP port unreachable: outer src and quoted dst translated",
            p.bytes(),
        )
        .verdict(XDP_REDIRECT, "fwd_out")
        .frame(exp),
    );
    // time exceeded from a router on the path about .11's echo request
    // (traceroute with ping): the quoted ICMP identifier and checksum
    let echo = Pkt::icmp(e11.0, R10, 8, ei.1, 1).ttl(1);
    let p = from_net(Pkt::icmp_msg(R10, e11.0, 11, 0, (0, 0), &echo.quote()));
    let back = echo.clone().with_src(H11, 0x4242);
    let exp = Pkt::icmp_msg(R10, H11, 11, 0, (0, 0), &back.quote())
        .ttl(p.ttl - 1)
        .macs(INT0_MAC, mac_of(H11))
        .bytes();
    h.run(
        Case::ext(
            "inbound time exceeded about an echo request: identifier restored",
            p.bytes(),
        )
        .verdict(XDP_REDIRECT, "fwd_in")
        .frame(exp),
    );
    // about .11's TCP SYN: 8 quoted bytes (no TCP checksum in the quote),
    // then a longer quote that holds the checksum, which must follow
    let syn = Pkt::tcp(et, (R10, 80), TCP_SYN).ttl(63);
    for n in [8usize, 20] {
        let p = from_net(Pkt::icmp_msg(R10, et.0, 3, 1, (0, 0), &syn.quote_len(n)));
        let back = syn.clone().with_src(H11, 40000);
        let exp = Pkt::icmp_msg(R10, H11, 3, 1, (0, 0), &back.quote_len(n))
            .ttl(p.ttl - 1)
            .macs(INT0_MAC, mac_of(H11))
            .bytes();
        h.run(
            Case::ext(
                format!("inbound host unreachable about a TCP SYN, {n}-byte L4 quote"),
                p.bytes(),
            )
            .verdict(XDP_REDIRECT, "fwd_in")
            .frame(exp),
        );
    }
    // about a UDP datagram sent without checksum: the quoted 0 stays 0
    let q5001 = Pkt::udp((H11, 5001), (R10, 3478), b"no checksum").no_udp_csum();
    let r = h.external_of(&q5001);
    if let Some(e5001) = learned(h, "binding of 100.64.0.11:5001", r) {
        let sent = q5001.clone().with_src(e5001.0, e5001.1).ttl(63);
        let p = from_net(Pkt::icmp_msg(R10, e5001.0, 3, 3, (0, 0), &sent.quote()));
        let exp = Pkt::icmp_msg(R10, H11, 3, 3, (0, 0), &q5001.clone().ttl(63).quote())
            .ttl(p.ttl - 1)
            .macs(INT0_MAC, mac_of(H11))
            .bytes();
        h.run(
            Case::ext(
                "inbound port unreachable about a checksum-less UDP datagram",
                p.bytes(),
            )
            .verdict(XDP_REDIRECT, "fwd_in")
            .frame(exp),
        );
    }
    // too big for int0 (MTU 1500) on the way in, DF set
    let p = from_net(Pkt::udp((R10, 3478), e11, &[0x42; 1572]));
    h.run(
        Case::ext(
            "inbound 1600 bytes with DF: fragmentation needed from ext0's address",
            p.bytes(),
        )
        .verdict(XDP_TX, "icmp_frag_needed")
        .frame(generated_error(&p, ROUTER_EXT, 3, 4, 1500)),
    );
    // FIN from the subscriber is recorded on the TCP session
    let p = from_sub(Pkt::tcp((H11, 40000), (R10, 80), TCP_FIN | TCP_ACK));
    h.run(
        Case::int("outbound FIN on the TCP session", p.bytes())
            .verdict(XDP_REDIRECT, "fwd_out")
            .frame(outbound(&p, et)),
    );
    let r = session_check(
        h,
        et,
        (R10, 80),
        PROTO_TCP,
        (H11, 40000),
        0,
        SYN_OUT | SYN_IN | FIN_OUT,
    );
    h.check("TCP session has FIN_OUT", r);

    // ---- hairpin ----
    let p = from_sub(Pkt::udp((H12, 5000), e11, b"hairpin"));
    let exp = p
        .clone()
        .with_src(e12.0, e12.1)
        .with_dst(H11, 5000)
        .ttl(p.ttl - 1)
        .macs(INT0_MAC, mac_of(H11))
        .bytes();
    h.run(
        Case::int(".12 -> .11's external endpoint (hairpin)", p.bytes())
            .verdict(XDP_TX, "fwd_hairpin")
            .frame(exp),
    );
    let r = session_check(h, e12, e11, PROTO_UDP, (H12, 5000), SESS_HAIRPIN, 0).and_then(|_| {
        session_check(
            h,
            e11,
            e12,
            PROTO_UDP,
            (H11, 5000),
            SESS_HAIRPIN | SESS_INBOUND,
            0,
        )
    });
    h.check("hairpin created both sessions", r);

    let p = from_sub(Pkt::udp((H11, 5000), e12, b"hairpin reply"));
    let exp = p
        .clone()
        .with_src(e11.0, e11.1)
        .with_dst(H12, 5000)
        .ttl(p.ttl - 1)
        .macs(INT0_MAC, mac_of(H12))
        .bytes();
    h.run(
        Case::int(
            ".11 replies to .12's external endpoint (hairpin)",
            p.bytes(),
        )
        .verdict(XDP_TX, "fwd_hairpin")
        .frame(exp),
    );
    // .12 answers the hairpinned datagram from e11 with an error: both
    // translations apply (RFC 5508 REQ-7)
    let got = Pkt::udp(e11, (H12, 5000), b"hairpin").ttl(63);
    let p = from_sub(Pkt::icmp_msg(H12, e11.0, 3, 3, (0, 0), &got.quote()));
    let inner = got.clone().with_dst(e12.0, e12.1).with_src(H11, 5000);
    let exp = Pkt::icmp_msg(e12.0, H11, 3, 3, (0, 0), &inner.quote())
        .ttl(p.ttl - 1)
        .macs(INT0_MAC, mac_of(H11))
        .bytes();
    h.run(
        Case::int("hairpinned ICMP error: both translations", p.bytes())
            .verdict(XDP_TX, "fwd_hairpin")
            .frame(exp),
    );
    // ---- the one-armed entry point on the same maps: direction by address ----
    let p = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"one-armed out"));
    h.run(
        Case::new(
            "one-armed: subscriber -> internet",
            Side::OneArmed,
            Port::Int0,
            p.bytes(),
        )
        .verdict(XDP_REDIRECT, "fwd_out")
        .frame(outbound(&p, e11)),
    );
    let p = from_net(Pkt::udp((R10, 3478), e11, b"one-armed in"));
    h.run(
        Case::new(
            "one-armed: internet -> subscriber",
            Side::OneArmed,
            Port::Ext0,
            p.bytes(),
        )
        .verdict(XDP_REDIRECT, "fwd_in")
        .frame(inbound(&p, (H11, 5000))),
    );
    let p = from_net(Pkt::udp((R10, 3478), (R20, 53), b"transit"));
    h.run(
        Case::new(
            "one-armed: neither side's address",
            Side::OneArmed,
            Port::Ext0,
            p.bytes(),
        )
        .verdict(XDP_PASS, "pass_not_nat"),
    );
}

/// Frames that must not be translated: exact verdicts and counters.
#[test]
fn malformed_and_other() {
    if !privileged("malformed_and_other") {
        return;
    }
    let ns = NetNs::create("m");
    ns.enter(|| {
        // ICMP generation off: expired or oversized packets are dropped
        let mut h = Harness::load_with("malformed_and_other", "", "[icmp]\nrate_limit = 0");
        malformed_cases(&mut h);
        h.finish();
    });
}

fn set16(f: &mut [u8], off: usize, v: u16) {
    f[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

fn malformed_cases(h: &mut Harness) {
    let udp = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"payload!"));
    let good = udp.bytes();
    let ip = udp.ip_offset();
    let l4 = udp.l4_offset();
    let tcp = from_sub(Pkt::tcp((H11, 40000), (R10, 80), TCP_SYN));
    let tcp_good = tcp.bytes();

    // A wrong IPv4 header checksum: never translated (RFC 1812 5.2.2), with
    // and without options, from either side.
    let mut f = good.clone();
    f[ip + 12] ^= 0x01; // a source address bit flipped in transit
    h.run(
        Case::int("IPv4 header checksum wrong (source bit flipped)", f)
            .verdict(XDP_DROP, "drop_ip_checksum"),
    );
    let opt = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"opts").options(&[1, 1, 1, 0]));
    let mut f = opt.bytes();
    f[ip + 21] ^= 0x80; // inside the options
    h.run(
        Case::int("IPv4 header checksum wrong in the options", f)
            .verdict(XDP_DROP, "drop_ip_checksum"),
    );
    let mut f = from_net(Pkt::udp((R10, 3478), (ROUTER_EXT, 5000), b"in")).bytes();
    f[ip + 10] ^= 0xff;
    h.run(
        Case::ext("inbound, IPv4 header checksum wrong", f).verdict(XDP_DROP, "drop_ip_checksum"),
    );

    // BPF_PROG_TEST_RUN refuses an XDP frame shorter than an Ethernet
    // header with EINVAL before the program runs: the run must fail exactly
    // so, and no counter may move (a frame the program saw is counted).
    let short = good[..10].to_vec();
    let before = h.counters();
    let r = match h.test_run(Side::Internal, Port::Int0, &short) {
        Err(e) if e.contains("os error 22") => {
            let after = h.counters();
            if after == before {
                Ok(())
            } else {
                Err(format!(
                    "counters moved for a refused frame: {before:?} -> {after:?}"
                ))
            }
        }
        Err(e) => Err(format!("10-byte frame: {e} (expected EINVAL)")),
        Ok((v, _)) => Err(format!(
            "10-byte frame reached the program: {} (the kernel must refuse it with EINVAL)",
            verdict_name(v)
        )),
    };
    h.check("10-byte frame refused with EINVAL, nothing counted", r);

    let mut table: Vec<Case> = Vec::new();

    let mut f = good[..14].to_vec();
    set16(&mut f, 12, ETH_P_8021Q); // tag announced, frame ends
    table.push(
        Case::int("truncated Ethernet: 802.1Q tag cut off", f).verdict(XDP_DROP, "drop_malformed"),
    );
    let mut f = good[..14].to_vec();
    set16(&mut f, 12, ETH_P_8021Q);
    f.extend_from_slice(&[0x00, 0x64]); // TCI only, no inner EtherType
    table.push(
        Case::int("truncated Ethernet: VLAN header half there", f)
            .verdict(XDP_DROP, "drop_malformed"),
    );
    table.push(
        Case::int("EtherType IPv4 without IP header", good[..14].to_vec())
            .verdict(XDP_DROP, "drop_malformed"),
    );
    table.push(
        Case::int(
            "IPv4 header truncated (12 of 20 bytes)",
            good[..ip + 12].to_vec(),
        )
        .verdict(XDP_DROP, "drop_malformed"),
    );

    let mut f = good.clone();
    f[ip] = 0x44;
    fix_ip_csum(&mut f, ip);
    table.push(Case::int("IHL 4", f).verdict(XDP_DROP, "drop_malformed"));
    let mut f = good.clone();
    f[ip] = 0x65;
    fix_ip_csum(&mut f, ip);
    table.push(
        Case::int("IP version 6 under EtherType IPv4", f).verdict(XDP_DROP, "drop_malformed"),
    );
    let mut f = good.clone();
    f[ip] = 0x46; // a 24-byte header in a 22-byte datagram
    set16(&mut f, ip + 2, 22);
    fix_ip_csum(&mut f, ip);
    table.push(
        Case::int("tot_len smaller than the IHL header", f).verdict(XDP_DROP, "drop_malformed"),
    );
    let mut f = good.clone();
    let tot = (good.len() - ip) as u16;
    set16(&mut f, ip + 2, tot + 1);
    fix_ip_csum(&mut f, ip);
    table.push(
        Case::int("tot_len one byte larger than the frame", f).verdict(XDP_DROP, "drop_malformed"),
    );
    let mut f = good.clone();
    let ulen = (good.len() - l4) as u16;
    set16(&mut f, l4 + 4, ulen + 1);
    table.push(
        Case::int("UDP length larger than the IP payload", f).verdict(XDP_DROP, "drop_malformed"),
    );
    let mut f = good.clone();
    set16(&mut f, l4 + 4, 7);
    table.push(Case::int("UDP length 7", f).verdict(XDP_DROP, "drop_malformed"));
    let mut f = good.clone();
    set16(&mut f, ip + 2, 20 + 6); // UDP header cut by tot_len (frame longer)
    fix_ip_csum(&mut f, ip);
    table.push(
        Case::int("UDP header beyond tot_len (padding after)", f)
            .verdict(XDP_DROP, "drop_malformed"),
    );

    let tl4 = tcp.l4_offset();
    let mut f = tcp_good.clone();
    f[tl4 + 12] = 4 << 4;
    table.push(Case::int("TCP doff 4", f).verdict(XDP_DROP, "drop_malformed"));
    let mut f = tcp_good.clone();
    f[tl4 + 12] = 6 << 4; // options claimed, segment has 20 bytes
    table.push(Case::int("TCP doff 6 past the segment", f).verdict(XDP_DROP, "drop_malformed"));
    let mut f = tcp_good.clone();
    set16(&mut f, ip + 2, 20 + 12);
    fix_ip_csum(&mut f, ip);
    table.push(
        Case::int("TCP header beyond tot_len (padding after)", f)
            .verdict(XDP_DROP, "drop_malformed"),
    );
    let icmp = from_sub(Pkt::icmp(H11, R10, 8, 7, 1));
    let mut f = icmp.bytes();
    f.truncate(icmp.l4_offset() + 6);
    set16(&mut f, ip + 2, 26);
    fix_ip_csum(&mut f, ip);
    table.push(
        Case::int("ICMP header truncated (6 of 8 bytes)", f).verdict(XDP_DROP, "drop_malformed"),
    );

    // (translated fragments are in the `fragments` test)
    let later = Pkt::udp(
        (Ipv4Addr::new(10, 1, 2, 3), 5000),
        (R10, 3478),
        b"later fragment",
    )
    .macs(mac_of(H11), INT0_MAC)
    .frag(185);
    table.push(
        Case::int("later fragment from a non-subscriber source", later.bytes())
            .verdict(XDP_DROP, "drop_spoofed"),
    );
    let later = from_net(Pkt::udp(
        (R10, 3478),
        (Ipv4Addr::new(203, 0, 113, 1), 5000),
        b"frag",
    ))
    .frag(185);
    table.push(
        Case::ext(
            "later fragment from the internet, first never seen: held",
            later.bytes(),
        )
        .verdict(XDP_DROP, "frag_held"),
    );
    let first = from_net(Pkt::udp(
        (R10, 3478),
        (Ipv4Addr::new(203, 0, 113, 1), 5000),
        b"frag",
    ))
    .frag(IP_MF);
    table.push(
        Case::ext(
            "first fragment from the internet to an unbound port",
            first.bytes(),
        )
        .verdict(XDP_DROP, "drop_no_binding"),
    );

    let spoof = Pkt::udp((Ipv4Addr::new(10, 1, 2, 3), 5000), (R10, 3478), b"spoofed")
        .macs(mac_of(H11), INT0_MAC);
    table.push(
        Case::int(
            "spoofed source 10.1.2.3 on the internal side",
            spoof.bytes(),
        )
        .verdict(XDP_DROP, "drop_spoofed"),
    );
    let spoof_local = Pkt::udp(
        (Ipv4Addr::new(10, 1, 2, 3), 5000),
        (ROUTER_INT, 53),
        b"to router",
    )
    .macs(mac_of(H11), INT0_MAC);
    table.push(
        Case::int(
            "non-subscriber source to the router itself",
            spoof_local.bytes(),
        )
        .verdict(XDP_PASS, "pass_local"),
    );

    let mut arp = Vec::new();
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&mac_of(H11));
    arp.extend_from_slice(&H11.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&ROUTER_INT.octets());
    table.push(
        Case::int(
            "ARP request",
            eth([0xff; 6], mac_of(H11), None, ETH_P_ARP, &arp),
        )
        .verdict(XDP_PASS, "pass_not_ipv4"),
    );
    table.push(
        Case::int(
            "802.1Q-tagged ARP",
            eth([0xff; 6], mac_of(H11), Some(100), ETH_P_ARP, &arp),
        )
        .verdict(XDP_PASS, "pass_not_ipv4"),
    );
    let mut v6 = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
    v6.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11]);
    v6.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01]);
    v6.extend_from_slice(&[0x13, 0x88, 0x0d, 0x96, 0, 8, 0, 0]);
    table.push(
        Case::int(
            "IPv6 UDP",
            eth(INT0_MAC, mac_of(H11), None, ETH_P_IPV6, &v6),
        )
        .verdict(XDP_PASS, "pass_not_ipv4"),
    );
    table.push(
        Case::ext(
            "IPv6 on the external side",
            eth(EXT0_MAC, mac_of(R10), None, ETH_P_IPV6, &v6),
        )
        .verdict(XDP_PASS, "pass_not_ipv4"),
    );

    let local = from_sub(Pkt::udp((H11, 6000), (ROUTER_INT, 53), b"dns query"));
    let q = local.clone();
    table.push(
        Case::int(
            "UDP from a subscriber to the router 100.64.0.1",
            local.bytes(),
        )
        .verdict(XDP_PASS, "pass_local")
        .after(move |h| {
            ensure!(
                h.bind_out(q.src, q.sport(), PROTO_UDP).is_none(),
                "a binding was created for a packet to the router"
            );
            Ok(q.bytes())
        }),
    );
    let ping_local = from_sub(Pkt::icmp(H11, ROUTER_INT, 8, 9, 1));
    let q = ping_local.clone();
    table.push(
        Case::int(
            "ICMP echo from a subscriber to the router",
            ping_local.bytes(),
        )
        .verdict(XDP_PASS, "pass_local")
        .after(move |h| {
            ensure!(
                h.bind_out(q.src, 9, PROTO_ICMP).is_none(),
                "a binding was created for a ping to the router"
            );
            Ok(q.bytes())
        }),
    );
    let gre = [0u8, 0, 0x08, 0, 0x45, 0, 0, 20];
    table.push(
        Case::int(
            "GRE from a subscriber to the router",
            from_sub(Pkt::raw(H11, ROUTER_INT, PROTO_GRE, &gre)).bytes(),
        )
        .verdict(XDP_PASS, "pass_local"),
    );
    table.push(
        Case::int(
            "GRE (proto 47) from a subscriber to outside",
            from_sub(Pkt::raw(H11, R10, PROTO_GRE, &gre)).bytes(),
        )
        .verdict(XDP_DROP, "drop_proto"),
    );
    table.push(
        Case::ext(
            "GRE from outside to a pool address",
            from_net(Pkt::raw(
                R10,
                Ipv4Addr::new(203, 0, 113, 1),
                PROTO_GRE,
                &gre,
            ))
            .bytes(),
        )
        .verdict(XDP_DROP, "drop_proto"),
    );
    table.push(
        Case::int(
            "ICMP timestamp (type 13) from a subscriber",
            from_sub(Pkt::icmp(H11, R10, 13, 1, 1)).bytes(),
        )
        .verdict(XDP_DROP, "drop_icmp_type"),
    );
    table.push(
        Case::int(
            "ICMP echo reply from a subscriber",
            from_sub(Pkt::icmp(H11, R10, 0, 1, 1)).bytes(),
        )
        .verdict(XDP_DROP, "drop_icmp_type"),
    );
    table.push(
        Case::ext(
            "ICMP echo request from outside to a pool address",
            from_net(Pkt::icmp(R10, Ipv4Addr::new(203, 0, 113, 1), 8, 1, 1)).bytes(),
        )
        .verdict(XDP_DROP, "drop_no_binding"),
    );
    table.push(
        Case::int(
            "TCP RST from a subscriber without session",
            from_sub(Pkt::tcp((H11, 40001), (R10, 80), TCP_RST | TCP_ACK)).bytes(),
        )
        .verdict(XDP_DROP, "drop_tcp_no_session"),
    );
    table.push(
        Case::ext("inbound malformed (IHL 4)", {
            let mut f = from_net(Pkt::udp(
                (R10, 3478),
                (Ipv4Addr::new(203, 0, 113, 1), 5000),
                b"x",
            ))
            .bytes();
            f[14] = 0x44;
            fix_ip_csum(&mut f, 14);
            f
        })
        .verdict(XDP_DROP, "drop_malformed"),
    );
    table.push(
        Case::int(
            "TTL 1 outbound, ICMP generation off",
            from_sub(Pkt::udp((H11, 5003), (R10, 3478), b"ttl 1"))
                .ttl(1)
                .bytes(),
        )
        .verdict(XDP_DROP, "drop_ttl"),
    );
    table.push(
        Case::int(
            "TTL 0 outbound, ICMP generation off",
            from_sub(Pkt::udp((H11, 5003), (R10, 3478), b"ttl 0"))
                .ttl(0)
                .bytes(),
        )
        .verdict(XDP_DROP, "drop_ttl"),
    );
    table.push(
        Case::int(
            "1600 bytes with DF, ICMP generation off",
            from_sub(Pkt::udp((H11, 5004), (R10, 3478), &[1; 1572])).bytes(),
        )
        .verdict(XDP_DROP, "drop_frag_needed"),
    );
    table.push(
        Case::ext(
            "inbound to an address outside every prefix",
            from_net(Pkt::udp(
                (R10, 3478),
                (Ipv4Addr::new(8, 8, 8, 8), 53),
                b"transit",
            ))
            .bytes(),
        )
        .verdict(XDP_PASS, "pass_not_nat"),
    );

    for case in table {
        h.run(case);
    }
    let n = Harness::count_entries(&h.tables.bind_out);
    h.check(
        "no packet of this table created a binding",
        if n == 0 {
            Ok(())
        } else {
            Err(format!("bind_out has {n} entries"))
        },
    );
}

/// Paired pooling and port collisions: a second subscriber on the same
/// external address gets another port, in the same class (RFC 4787 REQ-3a).
#[test]
fn port_collisions() {
    if !privileged("port_collisions") {
        return;
    }
    let ns = NetNs::create("c");
    ns.enter(|| {
        let mut h = Harness::load("port_collisions");
        collision_cases(&mut h, &ns);
        h.finish();
    });
}

/// Runs an outbound packet that must create a binding on `addr` (if given)
/// with a port satisfying `ok`; returns the binding.
fn bind_case(
    h: &mut Harness,
    name: String,
    p: Pkt,
    addr: Option<Ipv4Addr>,
    ok: impl Fn(u16) -> bool + 'static,
    what: &'static str,
) -> Option<(Ipv4Addr, u16)> {
    let q = p.clone();
    let out = h.run(
        Case::int(name.clone(), p.bytes())
            .verdict(XDP_REDIRECT, "fwd_out")
            .after(move |h| {
                let ext = h.external_of(&q)?;
                if let Some(a) = addr {
                    ensure!(ext.0 == a, "external address {} (expected {a})", ext.0);
                }
                ensure!(ok(ext.1), "external port {}: {what}", ext.1);
                Ok(outbound(&q, ext))
            }),
    );
    out.and_then(|_| h.external_of(&p).ok())
}

fn collision_cases(h: &mut Harness, ns: &NetNs) {
    let dst = (R10, 3478);
    let base = |src: Ipv4Addr, port: u16| {
        Pkt::udp((src, port), dst, b"collide")
            .macs([0x02, 0x11, 0, 0, 0, src.octets()[3]], INT0_MAC)
    };
    // .11 holds 5000, a few privileged ports and 1024, all kept.
    let mut e11 = None;
    for port in [5000u16, 53, 123, 1023, 1024] {
        e11 = bind_case(
            h,
            format!("100.64.0.11:{port} keeps its port"),
            base(H11, port),
            e11.map(|e: (Ipv4Addr, u16)| e.0),
            move |p| p == port,
            "port not preserved without collision",
        )
        .or(e11);
    }
    let Some(e11) = e11 else {
        h.failures
            .push("no binding for 100.64.0.11 (later cases skipped)".into());
        return;
    };
    let a = e11.0;
    println!("  100.64.0.11 is mapped to {a}");
    let p = from_sub(Pkt::tcp((H11, 5000), (R10, 80), TCP_SYN));
    bind_case(
        h,
        "TCP 100.64.0.11:5000 keeps 5000 (bindings are per protocol)".into(),
        p,
        Some(a),
        |p| p == 5000,
        "TCP port collided with the UDP binding",
    );

    // Subscribers until two share .11's address (paired pooling picks the
    // address from a hash of the subscriber address).
    let mut colliders = Vec::new();
    for x in 13u8..=120 {
        let s = Ipv4Addr::new(100, 64, 0, x);
        let port = 40000 + u16::from(x);
        let Some(e) = bind_case(
            h,
            format!("probe {s}:{port}"),
            base(s, port),
            None,
            move |p| p == port,
            "port not preserved without collision",
        ) else {
            continue;
        };
        if e.0 == a {
            println!("  {s} shares {a} with 100.64.0.11");
            colliders.push(s);
            if colliders.len() == 2 {
                break;
            }
        }
    }
    let r = if colliders.is_empty() {
        Err(format!("no subscriber of 100.64.0.13-120 maps to {a}"))
    } else {
        Ok(())
    };
    h.check("found a subscriber sharing .11's external address", r);

    for &c in &colliders {
        for port in [5000u16, 1024] {
            bind_case(
                h,
                format!("{c}:{port} collides with .11: other port >= 1024"),
                base(c, port),
                Some(a),
                move |p| p != port && p >= 1024,
                "must differ and stay in 1024-65535",
            );
        }
        for port in [53u16, 123, 1023] {
            let e = bind_case(
                h,
                format!("{c}:{port} collides with .11: other port < 1024"),
                base(c, port),
                Some(a),
                move |p| p != port && (1..1024).contains(&p),
                "must differ and stay in 1-1023 (RFC 4787 REQ-3a)",
            );
            // the randomised port translates back to the original one
            if let Some(e) = e {
                let mac = [0x02, 0x11, 0, 0, 0, c.octets()[3]];
                ns.add_neigh(c, &mac, "int0");
                let p = from_net(Pkt::udp(dst, e, b"reply"));
                h.run(
                    Case::ext(
                        format!("reply to {}:{} reaches {c}:{port}", e.0, e.1),
                        p.bytes(),
                    )
                    .verdict(XDP_REDIRECT, "fwd_in")
                    .frame(inbound_to(&p, (c, port), mac)),
                );
            }
        }
        let ping = Pkt::icmp(H11, R10, 8, 77, 1).macs(mac_of(H11), INT0_MAC);
        bind_case(
            h,
            "ICMP id 77 of .11 kept".into(),
            ping,
            Some(a),
            |p| p == 77,
            "id not preserved",
        );
        let ping = Pkt::icmp(c, R10, 8, 77, 1).macs([0x02, 0x11, 0, 0, 0, c.octets()[3]], INT0_MAC);
        bind_case(
            h,
            format!("ICMP id 77 of {c} collides: other identifier"),
            ping,
            Some(a),
            |p| p != 77,
            "identifier must differ",
        );
    }
    // RFC 7857 section 10: datagrams that may be fragmented from two
    // subscribers sharing an external address, with the same IP ID to the
    // same destination, must leave with different IDs (a keyed hash: equal
    // with probability 1/65536)
    if let Some(&c) = colliders.first() {
        let mut ids = Vec::new();
        for s in [H11, c] {
            let mut p = base(s, 5000).frag(0);
            p.id = 0x7777;
            let e = h
                .bind_out(s, 5000, PROTO_UDP)
                .map(|b| (addr_of(b.addr), u16::from_be(b.port)));
            let Some(e) = e else { continue };
            let exp = outbound(&p.clone().macs(p.src_mac, INT0_MAC), e);
            let out = h.run(
                Case::int(
                    format!("{s}: DF clear, IP ID 0x7777 to 198.51.100.10"),
                    p.bytes(),
                )
                .verdict(XDP_REDIRECT, "fwd_out")
                .output(move |_, out| with_out_id(exp, out, 14)),
            );
            ids.extend(out.map(|o| ip_id(&o, 14)));
        }
        let r = match ids[..] {
            [x, y] if x != y => Ok(()),
            [x, y] => Err(format!("both left with IP ID {x:#06x} (and {y:#06x})")),
            _ => Err("a run failed".into()),
        };
        h.check("subscribers sharing an address get different IP IDs", r);
    }
}

/// The expected frame with the IP ID the program chose (a keyed hash the
/// test cannot predict).
fn with_out_id(mut exp: Vec<u8>, out: &[u8], ip_off: usize) -> Result<Vec<u8>, String> {
    ensure!(
        out.len() >= ip_off + 20,
        "output of {} bytes has no IP header",
        out.len()
    );
    set_ip_id(&mut exp, ip_off, ip_id(out, ip_off));
    Ok(exp)
}

/// First fragments are translated as datagrams, later ones follow them
/// (RFC 4787 REQ-14, RFC 7857 section 10 IP IDs).
#[test]
fn fragments() {
    if !privileged("fragments") {
        return;
    }
    let ns = NetNs::create("f");
    ns.enter(|| {
        let mut h = Harness::load("fragments");
        fragment_cases(&mut h);
        h.finish();
    });
}

fn open_binding(h: &mut Harness, src: Ipv4Addr, port: u16) -> Option<(Ipv4Addr, u16)> {
    let p = from_sub(Pkt::udp((src, port), (R10, 3478), b"open"));
    let q = p.clone();
    h.run(
        Case::int(format!("binding for {src}:{port}"), p.bytes())
            .verdict(XDP_REDIRECT, "fwd_out")
            .after(move |h| Ok(outbound(&q, h.external_of(&q)?))),
    );
    learned(h, &format!("binding of {src}:{port}"), h.external_of(&p))
}

fn fragment_cases(h: &mut Harness) {
    const IP: usize = 14;
    let Some(e11) = open_binding(h, H11, 5000) else {
        return;
    };
    let Some(e12) = open_binding(h, H12, 5000) else {
        return;
    };

    // DF clear: the IP ID is replaced by a keyed hash of the header's (ID,
    // source, destination, protocol) before translation (RFC 7857 section
    // 10, bpf/frag.h). The key is random per load, so the value cannot be
    // predicted; the rule's properties can: the ID changes (a hash maps an
    // ID to itself with probability 2^-16), the same header always gets the
    // same ID (no per-datagram state), and every other byte is the exact
    // translated frame.
    let p = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"may fragment")).frag(0);
    let exp = outbound(&p, e11);
    let in_id = p.id;
    let first = h.run(
        Case::int("DF clear: translated, IP ID replaced", p.bytes())
            .verdict(XDP_REDIRECT, "fwd_out")
            .output(move |_, out| {
                let exp = with_out_id(exp, out, IP)?;
                ensure!(
                    ip_id(out, IP) != in_id,
                    "IP ID {in_id:#06x} left as it was on a datagram without DF"
                );
                Ok(exp)
            }),
    );
    if let Some(id) = first.map(|o| ip_id(&o, IP)) {
        let mut exp = outbound(&p, e11);
        set_ip_id(&mut exp, IP, id);
        h.run(
            Case::int(
                "DF clear, the same datagram again: the same new IP ID",
                p.bytes(),
            )
            .verdict(XDP_REDIRECT, "fwd_out")
            .frame(exp),
        );
    }
    let p = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"must not fragment"));
    h.run(
        Case::int("DF set: the IP ID is kept", p.bytes())
            .verdict(XDP_REDIRECT, "fwd_out")
            .frame(outbound(&p, e11)),
    );

    // a 48-byte UDP segment in two fragments of 24 bytes
    let mut d = from_sub(Pkt::udp((H11, 5000), (R10, 3478), &[0x5a; 40]));
    d.id = 0x1111;
    let t = d
        .clone()
        .with_src(e11.0, e11.1)
        .ttl(63)
        .macs(EXT0_MAC, mac_of(R10));
    let exp = t.fragment(0, 24, true);
    let out = h.run(
        Case::int(
            "outbound first fragment: translated, checksum of the whole datagram",
            d.fragment(0, 24, true),
        )
        .verdict(XDP_REDIRECT, "fwd_out")
        .output(move |_, out| with_out_id(exp, out, IP)),
    );
    let id1 = out.map(|o| ip_id(&o, IP));
    let exp = t.fragment(24, 48, false);
    h.run(
        Case::int(
            "outbound later fragment: same source and IP ID as its first",
            d.fragment(24, 48, false),
        )
        .verdict(XDP_REDIRECT, "fwd_out")
        .output(move |_, out| {
            let e = with_out_id(exp, out, IP)?;
            if let Some(id1) = id1 {
                let id = ip_id(out, IP);
                ensure!(
                    id == id1,
                    "IP ID {id:#06x}, its first fragment got {id1:#06x}"
                );
            }
            Ok(e)
        }),
    );

    // out of order: the later fragment first (stateless outbound)
    let mut d2 = d.clone();
    d2.id = 0x2222;
    let t2 = t.clone();
    let mut t2 = t2;
    t2.id = 0x2222;
    let exp = t2.fragment(24, 48, false);
    let out = h.run(
        Case::int(
            "outbound later fragment before its first: translated anyway",
            d2.fragment(24, 48, false),
        )
        .verdict(XDP_REDIRECT, "fwd_out")
        .output(move |_, out| with_out_id(exp, out, IP)),
    );
    let id2 = out.map(|o| ip_id(&o, IP));
    let exp = t2.fragment(0, 24, true);
    h.run(
        Case::int(
            "... then its first fragment: the same IP ID",
            d2.fragment(0, 24, true),
        )
        .verdict(XDP_REDIRECT, "fwd_out")
        .output(move |_, out| {
            let e = with_out_id(exp, out, IP)?;
            if let Some(id2) = id2 {
                let id = ip_id(out, IP);
                ensure!(
                    id == id2,
                    "IP ID {id:#06x}, the later fragment got {id2:#06x}"
                );
            }
            Ok(e)
        }),
    );
    let mut f = from_sub(Pkt::udp((H11, 5000), (R10, 3478), &[1; 40]));
    f.id = 0x2323;
    let f = f.ttl(1);
    h.run(
        Case::int(
            "later fragment with TTL 1: dropped, no ICMP",
            f.fragment(24, 48, false),
        )
        .verdict(XDP_DROP, "drop_ttl"),
    );
    let mut f = from_sub(Pkt::udp((H11, 5000), (ROUTER_INT, 53), &[1; 40]));
    f.id = 0x2424;
    h.run(
        Case::int(
            "later fragment to the router itself",
            f.fragment(24, 48, false),
        )
        .verdict(XDP_PASS, "pass_local"),
    );

    // inbound: the first fragment's translation is remembered
    let mut r = from_net(Pkt::udp((R10, 3478), e11, &[0xa5; 40]));
    r.id = 0x3333;
    let ti = r
        .clone()
        .with_dst(H11, 5000)
        .ttl(63)
        .macs(INT0_MAC, mac_of(H11));
    h.run(
        Case::ext("inbound first fragment", r.fragment(0, 24, true))
            .verdict(XDP_REDIRECT, "fwd_in")
            .frame(ti.fragment(0, 24, true)),
    );
    h.run(
        Case::ext(
            "inbound later fragment follows its first",
            r.fragment(24, 48, false),
        )
        .verdict(XDP_REDIRECT, "fwd_in")
        .frame(ti.fragment(24, 48, false)),
    );
    // out of order inbound: held until the first fragment has created the
    // state; the daemon then re-runs it (replayed here the same way)
    let mut r2 = r.clone();
    r2.id = 0x4444;
    let ti2 = r2
        .clone()
        .with_dst(H11, 5000)
        .ttl(63)
        .macs(INT0_MAC, mac_of(H11));
    h.run(
        Case::ext(
            "inbound later fragment before its first: held",
            r2.fragment(24, 48, false),
        )
        .verdict(XDP_DROP, "frag_held"),
    );
    h.run(
        Case::ext("... its first fragment", r2.fragment(0, 24, true))
            .verdict(XDP_REDIRECT, "fwd_in")
            .frame(ti2.fragment(0, 24, true)),
    );
    h.run(
        Case::ext(
            "... the held fragment re-run follows it",
            r2.fragment(24, 48, false),
        )
        .verdict(XDP_REDIRECT, "fwd_in")
        .frame(ti2.fragment(24, 48, false)),
    );

    // hairpin: .12 -> e11 in fragments
    let mut hp = from_sub(Pkt::udp((H12, 5000), e11, &[0x77; 40]));
    hp.id = 0x5555;
    let th = hp
        .clone()
        .with_src(e12.0, e12.1)
        .with_dst(H11, 5000)
        .ttl(63)
        .macs(INT0_MAC, mac_of(H11));
    let exp = th.fragment(0, 24, true);
    let out = h.run(
        Case::int("hairpinned first fragment", hp.fragment(0, 24, true))
            .verdict(XDP_TX, "fwd_hairpin")
            .output(move |_, out| with_out_id(exp, out, IP)),
    );
    let id3 = out.map(|o| ip_id(&o, IP));
    let exp = th.fragment(24, 48, false);
    h.run(
        Case::int(
            "hairpinned later fragment follows its first",
            hp.fragment(24, 48, false),
        )
        .verdict(XDP_TX, "fwd_hairpin")
        .output(move |_, out| {
            let e = with_out_id(exp, out, IP)?;
            if let Some(id3) = id3 {
                let id = ip_id(out, IP);
                ensure!(
                    id == id3,
                    "IP ID {id:#06x}, its first fragment got {id3:#06x}"
                );
            }
            Ok(e)
        }),
    );
    // the same datagram's later fragment arriving from outside (a
    // subscriber's source spoofed, RFC 6598 section 4) must not follow
    // the hairpin translation (found by tests/garbage.rs)
    let mut spoofed = hp.fragment(16, 40, false);
    spoofed[0..6].copy_from_slice(&EXT0_MAC);
    spoofed[6..12].copy_from_slice(&mac_of(R10));
    h.run(
        Case::ext(
            "later fragment of a hairpinned datagram from outside (spoofed)",
            spoofed,
        )
        .verdict(XDP_DROP, "drop_spoofed"),
    );
    let mut hp2 = hp.clone();
    hp2.id = 0x6666;
    let mut th2 = th.clone();
    th2.id = 0x6666;
    h.run(
        Case::int(
            "hairpinned later fragment before its first: held",
            hp2.fragment(24, 48, false),
        )
        .verdict(XDP_DROP, "frag_held"),
    );
    let exp = th2.fragment(0, 24, true);
    let out = h.run(
        Case::int("... its first fragment", hp2.fragment(0, 24, true))
            .verdict(XDP_TX, "fwd_hairpin")
            .output(move |_, out| with_out_id(exp, out, IP)),
    );
    let id4 = out.map(|o| ip_id(&o, IP));
    let exp = th2.fragment(24, 48, false);
    h.run(
        Case::int(
            "... the held fragment re-run follows it",
            hp2.fragment(24, 48, false),
        )
        .verdict(XDP_TX, "fwd_hairpin")
        .output(move |_, out| {
            let e = with_out_id(exp, out, IP)?;
            if let Some(id4) = id4 {
                let id = ip_id(out, IP);
                ensure!(
                    id == id4,
                    "IP ID {id:#06x}, its first fragment got {id4:#06x}"
                );
            }
            Ok(e)
        }),
    );
}

/// A full binding table refuses (ICMP host unreachable) and evicts
/// nothing (RFC 6888 REQ-11).
#[test]
fn bindings_full() {
    if !privileged("bindings_full") {
        return;
    }
    let ns = NetNs::create("b");
    ns.enter(|| {
        let mut h = Harness::load_with("bindings_full", "max_sessions = 64\nmax_bindings = 16", "");
        let mut first = None;
        for i in 0..16u16 {
            let port = 6000 + i;
            let e = open_binding(&mut h, H11, port);
            first = first.or(e);
        }
        let p = from_sub(Pkt::udp((H11, 6016), (R10, 3478), b"one too many"));
        let q = p.clone();
        h.run(
            Case::int("17th binding: ICMP host unreachable (3/1)", p.bytes())
                .verdict(XDP_TX, "icmp_host_unreach")
                .after(move |h| {
                    let (i, o) = (
                        Harness::count_entries(&h.tables.bind_in),
                        Harness::count_entries(&h.tables.bind_out),
                    );
                    ensure!(
                        i == 16 && o == 16,
                        "bind_in {i} / bind_out {o} entries, expected 16 / 16"
                    );
                    Ok(generated_error(&q, ROUTER_INT, 3, 1, 0))
                }),
        );
        let p = from_sub(Pkt::udp((H11, 6000), (R10, 3478), b"still here"));
        if let Some(e) = first {
            h.run(
                Case::int("existing binding still forwards (no eviction)", p.bytes())
                    .verdict(XDP_REDIRECT, "fwd_out")
                    .frame(outbound(&p, e)),
            );
            let p = from_net(Pkt::udp((R10, 3478), e, b"reply"));
            h.run(
                Case::ext("inbound to an existing binding still works", p.bytes())
                    .verdict(XDP_REDIRECT, "fwd_in")
                    .frame(inbound(&p, (H11, 6000))),
            );
        }
        h.finish();
    });
}

/// A full session table refuses new sessions both ways and keeps the old.
#[test]
fn sessions_full() {
    if !privileged("sessions_full") {
        return;
    }
    let ns = NetNs::create("s");
    ns.enter(|| {
        let mut h = Harness::load_with("sessions_full", "max_sessions = 16\nmax_bindings = 64", "");
        let Some(e) = open_binding(&mut h, H11, 7000) else {
            h.finish();
            return;
        };
        for port in 1..16u16 {
            let p = from_sub(Pkt::udp((H11, 7000), (R10, port), b"session"));
            h.run(
                Case::int(
                    format!("session {} to 198.51.100.10:{port}", port + 1),
                    p.bytes(),
                )
                .verdict(XDP_REDIRECT, "fwd_out")
                .frame(outbound(&p, e)),
            );
        }
        let p = from_sub(Pkt::udp((H11, 7000), (R10, 16), b"one too many"));
        h.run(
            Case::int("17th session: ICMP host unreachable (3/1)", p.bytes())
                .verdict(XDP_TX, "icmp_host_unreach")
                .frame(generated_error(&p, ROUTER_INT, 3, 1, 0)),
        );
        let p = from_net(Pkt::udp((R20, 1), e, b"unsolicited"));
        h.run(
            Case::ext("inbound new session on a full table: dropped", p.bytes())
                .verdict(XDP_DROP, "drop_table_full"),
        );
        let p = from_sub(Pkt::udp((H11, 7000), (R10, 1), b"old session"));
        h.run(
            Case::int("an existing session still forwards", p.bytes())
                .verdict(XDP_REDIRECT, "fwd_out")
                .frame(outbound(&p, e)),
        );
        let n = Harness::count_entries(&h.tables.sessions);
        h.check(
            "16 sessions, none evicted",
            if n == 16 {
                Ok(())
            } else {
                Err(format!("{n} sessions"))
            },
        );
        h.finish();
    });
}

/// Address-dependent (UDP) and address-and-port-dependent (TCP) filtering.
#[test]
fn filtering() {
    if !privileged("filtering") {
        return;
    }
    let ns = NetNs::create("a");
    ns.enter(|| {
        let mut h = Harness::load_with(
            "filtering",
            "",
            "[filtering]\nudp = \"address-dependent\"\ntcp = \"address-and-port-dependent\"",
        );
        filtering_cases(&mut h);
        h.finish();
    });
}

fn filtering_cases(h: &mut Harness) {
    let Some(e11) = open_binding(h, H11, 5000) else {
        return;
    };
    let p = from_net(Pkt::udp((R10, 9999), e11, b"other port"));
    h.run(
        Case::ext(
            "ADF: another port of a contacted address is admitted",
            p.bytes(),
        )
        .verdict(XDP_REDIRECT, "fwd_in")
        .frame(inbound(&p, (H11, 5000))),
    );
    let p = from_net(Pkt::udp((R20, 3478), e11, b"stranger"));
    h.run(
        Case::ext("ADF: an address never contacted is filtered", p.bytes())
            .verdict(XDP_DROP, "drop_filtered")
            .after(move |h| {
                ensure!(
                    h.session(e11, (R20, 3478), PROTO_UDP).is_none(),
                    "a refused packet created a session"
                );
                Ok(p.bytes())
            }),
    );
    let p = from_sub(Pkt::udp((H11, 5000), (R20, 1), b"hello 20"));
    h.run(
        Case::int("the subscriber sends to 198.51.100.20", p.bytes())
            .verdict(XDP_REDIRECT, "fwd_out")
            .frame(outbound(&p, e11)),
    );
    let p = from_net(Pkt::udp((R20, 3478), e11, b"now known"));
    h.run(
        Case::ext(
            "ADF: ... then 198.51.100.20 is admitted on any port",
            p.bytes(),
        )
        .verdict(XDP_REDIRECT, "fwd_in")
        .frame(inbound(&p, (H11, 5000))),
    );

    let pt = from_sub(Pkt::tcp((H11, 40000), (R10, 80), TCP_SYN));
    let q = pt.clone();
    h.run(
        Case::int("TCP SYN out", pt.bytes())
            .verdict(XDP_REDIRECT, "fwd_out")
            .after(move |h| Ok(outbound(&q, h.external_of(&q)?))),
    );
    let Some(et) = learned(h, "TCP binding", h.external_of(&pt)) else {
        return;
    };
    let p = from_net(Pkt::tcp((R10, 80), et, TCP_SYN | TCP_ACK));
    h.run(
        Case::ext("APDF: the SYN-ACK of the session is admitted", p.bytes())
            .verdict(XDP_REDIRECT, "fwd_in")
            .frame(inbound(&p, (H11, 40000))),
    );
    let p = from_net(Pkt::tcp((R10, 81), et, TCP_SYN));
    h.run(
        Case::ext(
            "APDF: a SYN from another port of the same address is filtered",
            p.bytes(),
        )
        .verdict(XDP_DROP, "drop_filtered"),
    );
}

/// Hole punching between two subscribers through the hairpin under
/// address-dependent filtering (RFC 4787 REQ-9 with REQ-8). A hairpinned
/// packet leaves through the sender's mapping and then meets the target's
/// filter. When the target's filter refuses it, the sender's mapping has
/// still "sent to" the target's address, so the target's own attempt in
/// the other direction is admitted.
#[test]
fn adf_hairpin_hole_punching() {
    if !privileged("adf_hairpin_hole_punching") {
        return;
    }
    let ns = NetNs::create("h");
    ns.enter(|| {
        let mut h = Harness::load_with(
            "adf_hairpin_hole_punching",
            "",
            "[filtering]\nudp = \"address-dependent\"",
        );
        let (Some(e11), Some(e12)) = (
            open_binding(&mut h, H11, 5000),
            open_binding(&mut h, H12, 5000),
        ) else {
            h.finish();
            return;
        };
        let p = from_sub(Pkt::udp((H12, 5000), e11, b"punch"));
        h.run(
            Case::int(
                ".12 -> e11 first: filtered by .11's mapping (correct)",
                p.bytes(),
            )
            .verdict(XDP_DROP, "drop_filtered"),
        );
        let p = from_sub(Pkt::udp((H11, 5000), e12, b"punch back"));
        let exp = p
            .clone()
            .with_src(e11.0, e11.1)
            .with_dst(H12, 5000)
            .ttl(p.ttl - 1)
            .macs(INT0_MAC, mac_of(H12))
            .bytes();
        h.run(
            Case::int(
                ".11 -> e12: admitted, .12 has sent to e11's address",
                p.bytes(),
            )
            .verdict(XDP_TX, "fwd_hairpin")
            .frame(exp),
        );
        h.finish();
    });
}

/// A hairpinned TCP segment is filtered as if it came from outside: only a
/// bare SYN opens a session on the target's binding (RFC 5382), so an ACK
/// without a session is dropped from either side alike.
#[test]
fn hairpin_tcp_needs_syn() {
    if !privileged("hairpin_tcp_needs_syn") {
        return;
    }
    let ns = NetNs::create("k");
    ns.enter(|| {
        let mut h = Harness::load("hairpin_tcp_needs_syn");
        let pt = from_sub(Pkt::tcp((H11, 40000), (R10, 80), TCP_SYN));
        let q = pt.clone();
        h.run(
            Case::int("TCP SYN out: binding for 100.64.0.11:40000", pt.bytes())
                .verdict(XDP_REDIRECT, "fwd_out")
                .after(move |h| Ok(outbound(&q, h.external_of(&q)?))),
        );
        let r = h.external_of(&pt);
        let Some(et) = learned(&mut h, "TCP binding", r) else {
            h.finish();
            return;
        };
        let p = from_net(Pkt::tcp((R20, 80), et, TCP_ACK));
        h.run(
            Case::ext(
                "from outside: ACK to the binding without session is dropped",
                p.bytes(),
            )
            .verdict(XDP_DROP, "drop_tcp_no_session"),
        );
        let p = from_sub(Pkt::tcp((H12, 41000), et, TCP_ACK));
        h.run(
            Case::int(
                "hairpinned: the same ACK from .12 is dropped too",
                p.bytes(),
            )
            .verdict(XDP_DROP, "drop_tcp_no_session")
            .after(move |h| {
                let n = Harness::count_entries(&h.tables.sessions);
                ensure!(n == 1, "{n} sessions (only the SYN's expected)");
                Ok(p.bytes())
            }),
        );
        h.finish();
    });
}

/// A subscriber sending to its own external endpoint (RFC 4787 REQ-9 with
/// sender and target the same binding) holds one session, which serves both
/// sides and counts once against `limits.sessions`. With a limit of 2, the
/// self-hairpin fits beside one ordinary session, and a third session is
/// refused, which shows that the limit is in force.
#[test]
fn self_hairpin_counts_one_session() {
    if !privileged("self_hairpin_counts_one_session") {
        return;
    }
    let ns = NetNs::create("s");
    ns.enter(|| {
        let mut h = Harness::load_with(
            "self_hairpin_counts_one_session",
            "",
            "[limits]\nsessions = 2\n[icmp]\nrate_limit = 0",
        );
        self_hairpin_cases(&mut h);
        h.finish();
    });
}

/// The session count the subscribers map holds for `sub`.
fn sub_sessions(h: &Harness, sub: Ipv4Addr) -> Result<u32, String> {
    let subs = cgnat::lookup::subscribers(&h.tables).map_err(|e| e.to_string())?;
    subs.iter()
        .find(|s| s.subscriber == sub)
        .map(|s| s.sessions)
        .ok_or_else(|| format!("{sub} is not in the subscribers map"))
}

fn self_hairpin_cases(h: &mut Harness) {
    let Some(e11) = open_binding(h, H11, 5000) else {
        return;
    };
    let r = sub_sessions(h, H11).and_then(|n| {
        ensure!(n == 1, "{n} sessions after one flow");
        Ok(())
    });
    h.check("one flow: one session counted", r);

    let p = from_sub(Pkt::udp((H11, 5000), e11, b"to myself"));
    let exp = p
        .clone()
        .with_src(e11.0, e11.1)
        .with_dst(H11, 5000)
        .ttl(p.ttl - 1)
        .macs(INT0_MAC, mac_of(H11))
        .bytes();
    let before = Harness::count_entries(&h.tables.sessions);
    h.run(
        Case::int(
            "100.64.0.11:5000 -> its own external endpoint: hairpinned back",
            p.bytes(),
        )
        .verdict(XDP_TX, "fwd_hairpin")
        .frame(exp),
    );
    let r = session_check(h, e11, e11, PROTO_UDP, (H11, 5000), SESS_HAIRPIN, 0).and_then(|_| {
        let n = Harness::count_entries(&h.tables.sessions);
        ensure!(
            n == before + 1,
            "{} sessions added (one serves both sides)",
            n - before
        );
        let c = sub_sessions(h, H11)?;
        ensure!(c == 2, "{c} sessions counted for 100.64.0.11 (2 expected)");
        Ok(())
    });
    h.check("self-hairpin: one session, counted once", r);

    let p = from_sub(Pkt::udp((H11, 5000), e11, b"to myself again"));
    let exp = p
        .clone()
        .with_src(e11.0, e11.1)
        .with_dst(H11, 5000)
        .ttl(p.ttl - 1)
        .macs(INT0_MAC, mac_of(H11))
        .bytes();
    h.run(
        Case::int("self-hairpin again: the same session", p.bytes())
            .verdict(XDP_TX, "fwd_hairpin")
            .frame(exp),
    );
    let p = from_sub(Pkt::udp((H11, 5000), (R20, 3478), b"third session"));
    h.run(
        Case::int("a third session: over limits.sessions = 2", p.bytes())
            .verdict(XDP_DROP, "drop_subscriber_limit"),
    );
    let r = sub_sessions(h, H11).and_then(|c| {
        ensure!(c == 2, "{c} sessions counted for 100.64.0.11 (2 expected)");
        Ok(())
    });
    h.check("the limit holds at 2", r);
}

/// TCP MSS clamping (nat.mss_clamp) in both directions, the option at an
/// even and at an odd offset (the checksum update differs). The option loop
/// is live code only with mss_clamp != 0, so this test is also the one
/// that makes the verifier walk it.
#[test]
fn mss_clamping() {
    if !privileged("mss_clamping") {
        return;
    }
    let ns = NetNs::create("q");
    ns.enter(|| {
        let mut h = Harness::load_with(
            "mss_clamping",
            "max_sessions = 512\nmax_bindings = 512\nmss_clamp = 1452",
            "",
        );
        mss_cases(&mut h);
        h.finish();
    });
}

fn mss_cases(h: &mut Harness) {
    fn mss(v: u16) -> [u8; 4] {
        [2u8, 4, (v >> 8) as u8, v as u8]
    }
    let even = |v: u16| {
        let m = mss(v);
        vec![m[0], m[1], m[2], m[3], 1, 3, 3, 7] // MSS, NOP, window scale 7
    };
    let odd = |v: u16| {
        let m = mss(v);
        vec![1, m[0], m[1], m[2], m[3], 1, 1, 0] // NOP, MSS, NOP, NOP, EOL
    };
    let p = from_sub(Pkt::tcp((H11, 40000), (R10, 80), TCP_SYN).tcp_opts(&even(1460)));
    let q = p.clone();
    h.run(
        Case::int(
            "outbound SYN, MSS 1460 at an even offset: clamped to 1452",
            p.bytes(),
        )
        .verdict(XDP_REDIRECT, "fwd_out")
        .after(move |h| {
            let ext = h.external_of(&q)?;
            Ok(outbound(&q.clone().tcp_opts(&even(1452)), ext))
        }),
    );
    let Some(et) = learned(h, "TCP binding", h.external_of(&p)) else {
        return;
    };
    let p = from_sub(Pkt::tcp((H11, 40000), (R10, 80), TCP_SYN).tcp_opts(&odd(1460)));
    h.run(
        Case::int(
            "outbound SYN, MSS 1460 at an odd offset: clamped to 1452",
            p.bytes(),
        )
        .verdict(XDP_REDIRECT, "fwd_out")
        .frame(outbound(&p.clone().tcp_opts(&odd(1452)), et)),
    );
    let p = from_sub(Pkt::tcp((H11, 40000), (R10, 80), TCP_SYN).tcp_opts(&odd(1400)));
    h.run(
        Case::int(
            "outbound SYN, MSS 1400: below the clamp, untouched",
            p.bytes(),
        )
        .verdict(XDP_REDIRECT, "fwd_out")
        .frame(outbound(&p, et)),
    );
    let p = from_sub(Pkt::tcp((H11, 40000), (R10, 80), TCP_ACK).tcp_opts(&even(1460)));
    h.run(
        Case::int(
            "outbound ACK carrying an MSS option: not a SYN, untouched",
            p.bytes(),
        )
        .verdict(XDP_REDIRECT, "fwd_out")
        .frame(outbound(&p, et)),
    );
    let p = from_net(Pkt::tcp((R10, 80), et, TCP_SYN | TCP_ACK).tcp_opts(&odd(8960)));
    h.run(
        Case::ext(
            "inbound SYN-ACK, MSS 8960 at an odd offset: clamped",
            p.bytes(),
        )
        .verdict(XDP_REDIRECT, "fwd_in")
        .frame(inbound(&p.clone().tcp_opts(&odd(1452)), (H11, 40000))),
    );
}

/// Generated ICMP errors are rate-limited per CPU ([icmp] rate_limit is
/// also the burst); the excess is dropped and counted by its reason.
#[test]
fn icmp_rate_limit() {
    if !privileged("icmp_rate_limit") {
        return;
    }
    let ns = NetNs::create("r");
    ns.enter(|| {
        // one CPU, one token bucket
        let mut set = nix::sched::CpuSet::new();
        set.set(0).expect("cpu 0");
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
            .expect("sched_setaffinity");
        let mut h = Harness::load_with("icmp_rate_limit", "", "[icmp]\nrate_limit = 2");
        for i in 0..3 {
            let p = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"ttl 1").ttl(1));
            let c = if i < 2 {
                Case::int(
                    format!("TTL 1 #{}: within the burst, ICMP sent", i + 1),
                    p.bytes(),
                )
                .verdict(XDP_TX, "icmp_time_exceeded")
                .frame(generated_error(&p, ROUTER_INT, 11, 0, 0))
            } else {
                Case::int("TTL 1 #3: over the limit, dropped", p.bytes())
                    .verdict(XDP_DROP, "drop_ttl")
            };
            h.run(c);
        }
        h.finish();
    });
}

/// Expiry by the daemon's sweeper (src/expiry.rs) and the data path
/// together: an expired binding's port is quarantined (RFC 6888 REQ-8):
/// it receives nothing and is not handed out again until the quarantine
/// ends.
#[test]
fn quarantine() {
    if !privileged("quarantine") {
        return;
    }
    let ns = NetNs::create("x");
    ns.enter(|| {
        let mut h = Harness::load("quarantine");
        quarantine_cases(&mut h);
        h.finish();
    });
}

fn quarantine_cases(h: &mut Harness) {
    let Some(e11) = open_binding(h, H11, 5000) else {
        return;
    };
    let Some(_) = open_binding(h, H12, 5000) else {
        return;
    };
    let sweeper = cgnat::expiry::Sweeper {
        timeouts: h.cfg.timeouts.clone(),
        quarantine: h.cfg.port_quarantine,
        blocks: None,
        pool: h.cfg.pool_addrs.clone(),
    };
    // Sweeps as the daemon runs them, an hour later (expiry may take more
    // than one sweep: sessions are marked dying first)
    let sweep_until = |h: &Harness, start: u64| -> Result<(u64, u64, u64), String> {
        let (mut expired, mut quarantined, mut freed) = (0, 0, 0);
        for i in 0..4u64 {
            let rep = sweeper
                .sweep(&h.tables, start + i * 1_000_000_000)
                .map_err(|e| e.to_string())?;
            expired += rep.sessions_expired;
            quarantined += rep.ports_quarantined;
            freed += rep.ports_freed;
        }
        Ok((expired, quarantined, freed))
    };
    let later = cgnat::expiry::monotonic_ns() + 3600 * 1_000_000_000;
    let r = sweep_until(h, later).and_then(|(e, q, _)| {
        ensure!(
            q == 2 && e == 2,
            "sessions expired {e}, ports quarantined {q} (2 and 2 expected)"
        );
        Ok(())
    });
    h.check("sweep an hour later quarantines both bindings", r);

    let p = from_net(Pkt::udp((R10, 3478), e11, b"late reply"));
    h.run(
        Case::ext("inbound to a quarantined port", p.bytes()).verdict(XDP_DROP, "drop_no_binding"),
    );
    let p = from_sub(Pkt::udp((H12, 5000), e11, b"late hairpin"));
    h.run(
        Case::int("hairpin to a quarantined port", p.bytes())
            .verdict(XDP_DROP, "drop_no_binding")
            .after(move |h| {
                // .12's binding was released too: nothing may be recreated
                // for a packet that is dropped
                ensure!(
                    h.bind_out(H12, 5000, PROTO_UDP).is_none(),
                    "a binding was created for a dropped hairpin packet"
                );
                Ok(p.bytes())
            }),
    );
    let p = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"again"));
    let q = p.clone();
    h.run(
        Case::int(
            "the same socket again: another port, 5000 stays quarantined",
            p.bytes(),
        )
        .verdict(XDP_REDIRECT, "fwd_out")
        .after(move |h| {
            let ext = h.external_of(&q)?;
            ensure!(
                ext.0 == e11.0 && ext.1 != 5000 && ext.1 >= 1024,
                "got {}:{} (same address, another port >= 1024 expected)",
                ext.0,
                ext.1
            );
            Ok(outbound(&q, ext))
        }),
    );
    // past the quarantine, everything idle again: the port is free
    let much_later = later + 2 * 3600 * 1_000_000_000;
    let r = sweep_until(h, much_later).and_then(|(_, _, f)| {
        ensure!(f >= 2, "ports freed {f} (at least 2 expected)");
        Ok(())
    });
    h.check("sweep after the quarantine frees the ports", r);
    let r = if h.bind_in(e11.0, e11.1, PROTO_UDP).is_none() {
        Ok(())
    } else {
        Err(format!("bind_in still holds {}:{}", e11.0, e11.1))
    };
    h.check("the quarantined port is gone from bind_in", r);
    let p = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"fresh"));
    let q = p.clone();
    h.run(
        Case::int(
            "after the quarantine the socket gets port 5000 back",
            p.bytes(),
        )
        .verdict(XDP_REDIRECT, "fwd_out")
        .after(move |h| {
            let ext = h.external_of(&q)?;
            ensure!(
                ext == e11,
                "got {}:{}, expected {}:{}",
                ext.0,
                ext.1,
                e11.0,
                e11.1
            );
            Ok(outbound(&q, ext))
        }),
    );
}

/// The route cache (include/cgnat.h `struct cgnat_route`): an established
/// flow's next packets reuse the FIB's answer; a generation bump (what the
/// daemon's rtnetlink watcher does on any routing change), the entry's age
/// and policy routing rules all send the next packet back to the FIB.
#[test]
fn route_cache() {
    if !privileged("route_cache") {
        return;
    }
    const NEW_MAC: Mac = [0x02, 0x77, 0, 0, 0, 0x10];
    let ns = NetNs::create("rc");
    ns.enter(|| {
        // a long lifetime: only a bump can refresh an entry here
        let text = config_text_iface("route_cache = \"30s\"", "", "");
        let mut h = Harness::load_text("route_cache", &text);
        let gen = h.dp.route_gen().expect("route_gen");
        let g = gen.get().expect("route_gen value");
        h.check(
            "the cache is on under the default routing rules",
            if g.enabled == 1 {
                Ok(())
            } else {
                Err(format!(
                    "route_gen {{ gen: {}, enabled: {} }}",
                    g.gen, g.enabled
                ))
            },
        );
        let p = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"first"));
        let q = p.clone();
        h.run(
            Case::int("first packet: FIB lookup, cached", p.bytes())
                .verdict(XDP_REDIRECT, "fwd_out")
                .after(move |h| Ok(outbound(&q, h.external_of(&q)?))),
        );
        let r = h.external_of(&p);
        let Some(ext) = learned(&mut h, "binding", r) else {
            h.finish();
            return;
        };
        let entries = Harness::count_entries(&h.dp.tables().expect("tables").sessions);
        h.check(
            "one session",
            if entries == 1 {
                Ok(())
            } else {
                Err(format!("{entries} sessions"))
            },
        );
        let to = |p: &Pkt, mac: Mac| outbound_to(p, ext, mac);

        // The neighbour's MAC changes behind the cache's back: the cached
        // answer is still used (this is what makes it a cache) ...
        ns.add_neigh(R10, &NEW_MAC, "ext0");
        let p = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"cached"));
        h.run(
            Case::int("neighbour changed, no bump: the cached MAC", p.bytes())
                .verdict(XDP_REDIRECT, "fwd_out")
                .frame(to(&p, mac_of(R10))),
        );
        // ... until the generation moves.
        gen.bump(true).expect("bump");
        let p = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"after bump"));
        h.run(
            Case::int("after a bump: the new MAC", p.bytes())
                .verdict(XDP_REDIRECT, "fwd_out")
                .frame(to(&p, NEW_MAC)),
        );

        // A blackhole route: dropped as no route once the change is known,
        // forwarded again once it is gone.
        ns.ip(&format!("route add blackhole {R10}/32"));
        gen.bump(true).expect("bump");
        let p = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"blackholed"));
        h.run(Case::int("blackhole route: no route", p.bytes()).verdict(XDP_DROP, "drop_no_route"));
        h.run(
            Case::int(
                "blackhole route, again (failures are never cached)",
                p.bytes(),
            )
            .verdict(XDP_DROP, "drop_no_route"),
        );
        ns.ip(&format!("route del blackhole {R10}/32"));
        gen.bump(true).expect("bump");
        let p = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"route back"));
        h.run(
            Case::int("blackhole removed: forwarded", p.bytes())
                .verdict(XDP_REDIRECT, "fwd_out")
                .frame(to(&p, NEW_MAC)),
        );

        // The path MTU is cached with the route: a lower MTU on ext0 is
        // learned at the next lookup and enforced from the cache.
        ns.ip("link set ext0 mtu 1400");
        gen.bump(true).expect("bump");
        let small = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"mtu 1400"));
        h.run(
            Case::int("MTU 1400: small packet, new lookup", small.bytes())
                .verdict(XDP_REDIRECT, "fwd_out")
                .frame(to(&small, NEW_MAC)),
        );
        let big = from_sub(Pkt::udp((H11, 5000), (R10, 3478), &[0x5a; 1400]));
        h.run(
            Case::int(
                "1428-byte DF datagram over the cached MTU 1400: 3/4",
                big.bytes(),
            )
            .verdict(XDP_TX, "icmp_frag_needed")
            .frame(generated_error(&big, ROUTER_INT, 3, 4, 1400)),
        );
        ns.ip("link set ext0 mtu 1500");
        gen.bump(true).expect("bump");

        // Switched off: every packet asks the FIB, so a change shows at once.
        gen.bump(false).expect("bump");
        ns.add_neigh(R10, &mac_of(R10), "ext0");
        let p = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"cache off"));
        h.run(
            Case::int("cache off: the FIB's current MAC", p.bytes())
                .verdict(XDP_REDIRECT, "fwd_out")
                .frame(to(&p, mac_of(R10))),
        );
        h.finish();

        // A short lifetime: the entry ages out without any bump.
        let text = config_text_iface("route_cache = \"200ms\"", "", "");
        let mut h = Harness::load_text("route_cache_ttl", &text);
        let p = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"warm"));
        let q = p.clone();
        h.run(
            Case::int("warm the cache", p.bytes())
                .verdict(XDP_REDIRECT, "fwd_out")
                .after(move |h| Ok(outbound(&q, h.external_of(&q)?))),
        );
        ns.add_neigh(R10, &NEW_MAC, "ext0");
        std::thread::sleep(std::time::Duration::from_millis(400));
        match h.external_of(&p) {
            Ok(ext) => {
                let p = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"aged out"));
                let exp = p
                    .clone()
                    .with_src(ext.0, ext.1)
                    .ttl(p.ttl - 1)
                    .macs(EXT0_MAC, NEW_MAC)
                    .bytes();
                h.run(
                    Case::int("400 ms later (lifetime 200 ms): the new MAC", p.bytes())
                        .verdict(XDP_REDIRECT, "fwd_out")
                        .frame(exp),
                );
            }
            Err(e) => h.check("binding of the warm-up packet", Err(e)),
        }
        ns.add_neigh(R10, &mac_of(R10), "ext0");
        h.finish();

        // A policy routing rule turns the cache off at load.
        ns.ip("rule add from 192.0.2.99 lookup 100 priority 100");
        let h = Harness::load_text("route_cache_rules", &config_text("", ""));
        let g = h.dp.route_gen().expect("route_gen").get().expect("value");
        ns.ip("rule del from 192.0.2.99 lookup 100 priority 100");
        let mut h = h;
        h.check(
            "with an ip rule beyond the defaults the cache is off",
            if g.enabled == 0 {
                Ok(())
            } else {
                Err("route_gen.enabled is 1".into())
            },
        );
        h.finish();
    });
}

/// RFC 1812 4.3.3.1 (bpf/neigh.h): a packet toward a next hop without a
/// neighbour entry is held as it arrived, at most CGNAT_HOLD_PER_HOP per
/// next hop, and nothing is created for it; once resolution has failed,
/// packets toward that next hop are answered with ICMP host unreachable;
/// once the neighbour exists, packets are forwarded.
#[test]
fn neighbour_hold() {
    if !privileged("neighbour_hold") {
        return;
    }
    // on ext0's link, without a neighbour entry
    const DARK: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 77);
    let per_hop = types::cgnat_hold_limit::CGNAT_HOLD_PER_HOP.0 as usize;
    let ns = NetNs::create("nh");
    ns.enter(|| {
        let mut h = Harness::load("neighbour_hold");
        let hold = |h: &Harness| -> Vec<(types::cgnat_hold_key, Vec<u8>)> {
            use libbpf_rs::MapCore;
            let m = h.dp.neigh_hold_map();
            m.keys()
                .filter_map(|k| {
                    let key = cgnat::bpf::from_bytes::<types::cgnat_hold_key>(&k)?;
                    let v = m.lookup(&k, libbpf_rs::MapFlags::ANY).ok()??;
                    let st = cgnat::bpf::from_bytes::<types::cgnat_stash>(&v)?;
                    Some((key, st.data[..st.len as usize].to_vec()))
                })
                .collect()
        };
        let mut sent = Vec::new();
        for i in 0..per_hop {
            let p = from_sub(Pkt::udp((H11, 6000 + i as u16), (DARK, 53), b"held"));
            sent.push(p.bytes());
            let q = p.clone();
            h.run(
                Case::int(format!("unresolved next hop: held ({i})"), p.bytes())
                    .verdict(XDP_DROP, "neigh_held")
                    .after(move |h| {
                        ensure!(
                            h.bind_out(q.src, q.sport(), PROTO_UDP).is_none(),
                            "a binding was created for a held packet"
                        );
                        Ok(q.bytes())
                    }),
            );
        }
        let held = hold(&h);
        h.check(
            "the queue holds each frame byte for byte, under its next hop",
            if held.len() == per_hop
                && held
                    .iter()
                    .all(|(k, f)| k.nexthop == u32::from(DARK).to_be() && sent.contains(f))
            {
                Ok(())
            } else {
                Err(format!("{} frames held", held.len()))
            },
        );
        let p = from_sub(Pkt::udp((H11, 6100), (DARK, 53), b"one too many"));
        h.run(
            Case::int("the next hop's queue is full: counted", p.bytes())
                .verdict(XDP_DROP, "drop_no_neigh"),
        );

        // resolution failed: the held frames are re-run and the next
        // packets answered at once with 3/1 from int0's address
        let answered = |h: &Harness| -> u64 {
            h.counters()
                .iter()
                .filter(|c| c.0 == "icmp_host_unreach" || c.0 == "drop_neigh_failed")
                .map(|c| c.1)
                .sum()
        };
        let before = answered(&h);
        let n = h.dp.release_held(DARK, true).expect("release");
        // the re-runs are program runs too (for the accounting check)
        h.runs += n as u64;
        let after = answered(&h);
        h.check(
            "every held frame re-run and answered (3/1 or a counted drop)",
            if n == per_hop && hold(&h).is_empty() && after - before == n as u64 {
                Ok(())
            } else {
                Err(format!(
                    "{n} re-run, {} still held, {} answered",
                    hold(&h).len(),
                    after - before
                ))
            },
        );
        let p = from_sub(Pkt::udp((H11, 6200), (DARK, 53), b"after failure"));
        let q = p.clone();
        h.run(
            Case::int("next hop failed: ICMP host unreachable", p.bytes())
                .verdict(XDP_TX, "icmp_host_unreach")
                .frame(generated_error(&q, ROUTER_INT, 3, 1, 0)),
        );

        // the neighbour appears: forwarded
        ns.add_neigh(DARK, &mac_of(R10), "ext0");
        let p = from_sub(Pkt::udp((H11, 6300), (DARK, 53), b"resolved"));
        let q = p.clone();
        h.run(
            Case::int("neighbour resolved: forwarded", p.bytes())
                .verdict(XDP_REDIRECT, "fwd_out")
                .after(move |h| Ok(outbound_to(&q, h.external_of(&q)?, mac_of(R10)))),
        );
        h.finish();
    });
}

/// RFC 1812 5.3.1: TTL is looked at before the next hop, so a TTL 1
/// packet toward an unresolved next hop is answered with time exceeded
/// (traceroute's first hop), outbound and inbound.
#[test]
fn ttl_before_next_hop() {
    if !privileged("ttl_before_next_hop") {
        return;
    }
    const DARK: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 78);
    let ns = NetNs::create("tn");
    ns.enter(|| {
        let mut h = Harness::load("ttl_before_next_hop");
        let p = from_sub(Pkt::udp((H11, 7000), (DARK, 33434), b"probe").ttl(1));
        let q = p.clone();
        h.run(
            Case::int(
                "TTL 1 toward an unresolved next hop: time exceeded",
                p.bytes(),
            )
            .verdict(XDP_TX, "icmp_time_exceeded")
            .frame(generated_error(&q, ROUTER_INT, 11, 0, 0)),
        );
        let p = from_sub(Pkt::udp((H11, 7000), (DARK, 33435), b"probe").ttl(2));
        h.run(Case::int("TTL 2 toward it: held", p.bytes()).verdict(XDP_DROP, "neigh_held"));
        h.finish();
    });
}
