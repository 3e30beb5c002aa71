//! Outbound, inbound and hairpin translation, ICMP errors about translated
//! packets, and the one-armed entry point.

use super::*;

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
