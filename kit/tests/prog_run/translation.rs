//! Outbound, inbound and hairpin translation (with the ICMP errors of
//! icmp_errors.rs), and the one-armed entry point.

use super::*;

/// Outbound, inbound and hairpin translation on one Datapath.
#[test]
fn translation() {
    table_test("translation", "t", &config_text("", ""), |_| {
        let mut rows = outbound_rows();
        rows.extend(inbound_rows());
        rows.extend(icmp_errors::icmp_error_rows());
        rows.extend(hairpin_rows());
        rows
    });
}

/// .11's first datagram (its binding is learned as `e11`).
pub(super) fn p1() -> Pkt {
    from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"stun binding request"))
}

/// A datagram from .11:5000 to 198.51.100.10:3478, which must leave from
/// `e11`.
pub(super) fn out11<'a>(name: &'static str, p: Pkt) -> Row<'a> {
    with(move |l| {
        Case::int(name, p.bytes())
            .verdict(XDP_REDIRECT, "fwd_out")
            .frame(outbound(&p, l.ep("e11")))
    })
}

/// A packet from outside that must reach `int`; `p(l)` builds it from
/// what was learned.
fn in_to<'a>(name: &'static str, p: impl FnOnce(&Learned) -> Pkt + 'a, int: Ep) -> Row<'a> {
    with(move |l| {
        let p = p(l);
        Case::ext(name, p.bytes())
            .verdict(XDP_REDIRECT, "fwd_in")
            .frame(inbound(&p, int))
    })
}

/// A packet from outside built from what was learned, dropped as `counter`.
fn ext_drop<'a>(
    name: &'static str,
    p: impl FnOnce(&Learned) -> Pkt + 'a,
    counter: &'static str,
) -> Row<'a> {
    with(move |l| Case::ext(name, p(l).bytes()).verdict(XDP_DROP, counter))
}

/// A session check row (`session_check`) on endpoints learned as `ext` and
/// remote endpoint `rem`.
pub(super) fn session_row<'a>(
    name: &'static str,
    ext: &'static str,
    rem: Ep,
    proto: u8,
    int: Ep,
    flags: u8,
    tcp_bits: u32,
) -> Row<'a> {
    check(name, move |h, l| {
        session_check(h, l.ep(ext), rem, proto, int, flags, tcp_bits)
    })
}

fn outbound_rows<'a>() -> Vec<Row<'a>> {
    let p1 = p1();
    let q1 = p1.clone();
    let pt = from_sub(Pkt::tcp((H11, 40000), (R10, 80), TCP_SYN));
    let qt = pt.clone();
    let pi = from_sub(Pkt::icmp(H11, R10, 8, 0x4242, 1));
    let qi = pi.clone();
    let p12 = from_sub(Pkt::udp((H12, 5000), (R10, 3478), b"subscriber 12"));
    let q12 = p12.clone();
    let ttl1_new = from_sub(Pkt::udp((H11, 5003), (R10, 3478), b"ttl 1").ttl(1));
    let q_ttl1 = ttl1_new.clone();
    let ttl1_old = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"ttl 1").ttl(1));
    let ttl1_opts = from_sub(
        Pkt::icmp(H11, R10, 8, 0x4242, 2)
            .ttl(1)
            .options(&[1, 1, 1, 0]),
    );
    let big = from_sub(Pkt::udp((H11, 5000), (R10, 3478), &[0xab; 1572]));
    let loose = from_sub(Pkt::tcp((H11, 40002), (R10, 80), TCP_ACK));
    let mut rows = vec![
        Case::int(
            "outbound UDP 100.64.0.11:5000 -> 198.51.100.10:3478",
            p1.bytes(),
        )
        .verdict(XDP_REDIRECT, "fwd_out")
        .after(move |h| {
            let ext = h.external_of(&q1)?;
            ensure!(
                ext.1 == 5000,
                "external port {} (5000 not preserved)",
                ext.1
            );
            Ok(outbound(&q1, ext))
        })
        .into(),
        learn_ext("e11", &p1),
        step(|_, l| {
            let e11 = l.ep("e11");
            println!("  100.64.0.11:5000/udp is mapped to {}:{}", e11.0, e11.1);
        }),
        session_row(
            "outbound UDP created its session",
            "e11",
            (R10, 3478),
            PROTO_UDP,
            (H11, 5000),
            0,
            0,
        ),
        step(|h, l| {
            let n = h.bindings_out();
            l.set_num("bindings", n);
        }),
        out11(
            "same socket to 198.51.100.20: same external endpoint (EIM)",
            from_sub(Pkt::udp((H11, 5000), (R20, 3478), b"second remote")),
        ),
        check("EIM: no new binding for a new remote", |h, l| {
            let nb = l.num("bindings").unwrap_or(0);
            let n = h.bindings_out();
            ensure!(n == nb, "outbound halves grew from {nb} to {n}");
            Ok(())
        }),
        with(|l| {
            let e11 = l.ep("e11");
            let p = from_sub(Pkt::udp((H11, 5001), (R10, 3478), b"no checksum").no_udp_csum());
            let q = p.clone();
            Case::int("UDP with checksum 0 keeps checksum 0", p.bytes())
                .verdict(XDP_REDIRECT, "fwd_out")
                .after(move |h| {
                    let ext = h.external_of(&q)?;
                    ensure!(ext.0 == e11.0, "paired pooling: {} != {}", ext.0, e11.0);
                    Ok(outbound(&q, ext))
                })
        }),
        // A payload chosen so that the translated UDP checksum computes to
        // 0, which must be sent as 0xffff (RFC 768).
        then(|l| {
            let e11 = l.ep("e11");
            let mut t = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"\0\0zero-sum"))
                .with_src(e11.0, e11.1)
                .no_udp_csum();
            let seg = t.l4_bytes();
            let s = fold(
                sum_words(&pseudo_header(t.src, t.dst, PROTO_UDP, seg.len())) + sum_words(&seg),
            );
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
            let setup = if exp[off..off + 2] == [0xff, 0xff] {
                Ok(())
            } else {
                Err(format!(
                    "setup: expected checksum {:02x?}",
                    &exp[off..off + 2]
                ))
            };
            vec![
                check("setup: translated UDP checksum computes to 0", |_, _| setup),
                Case::int("UDP checksum that becomes 0 is sent as 0xffff", p.bytes())
                    .verdict(XDP_REDIRECT, "fwd_out")
                    .frame(exp)
                    .into(),
            ]
        }),
        out11(
            "IP options (IHL 6, NOPs) preserved",
            from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"with options").options(&[1, 1, 1, 1])),
        ),
        out11(
            "802.1Q-tagged UDP translated, tag kept",
            from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"tagged").vlan(0x2064)),
        ),
        with(move |l| {
            let e11 = l.ep("e11");
            Case::int("outbound TCP SYN", pt.bytes())
                .verdict(XDP_REDIRECT, "fwd_out")
                .after(move |h| {
                    let ext = h.external_of(&qt)?;
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
                    Ok(outbound(&qt, ext))
                })
        }),
        learn_ext("et", &from_sub(Pkt::tcp((H11, 40000), (R10, 80), TCP_SYN))),
        session_row(
            "TCP SYN session has SYN_OUT",
            "et",
            (R10, 80),
            PROTO_TCP,
            (H11, 40000),
            0,
            SYN_OUT,
        ),
        with(move |l| {
            let e11 = l.ep("e11");
            Case::int(
                "outbound ICMP echo request keeps its identifier",
                pi.bytes(),
            )
            .verdict(XDP_REDIRECT, "fwd_out")
            .after(move |h| {
                let ext = h.external_of(&qi)?;
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
                Ok(outbound(&qi, ext))
            })
        }),
        learn_ext("ei", &from_sub(Pkt::icmp(H11, R10, 8, 0x4242, 1))),
        session_row(
            "ICMP session with remote port 0",
            "ei",
            (R10, 0),
            PROTO_ICMP,
            (H11, 0x4242),
            0,
            0,
        ),
        with(move |l| {
            let e11 = l.ep("e11");
            Case::int("second subscriber 100.64.0.12:5000", p12.bytes())
                .verdict(XDP_REDIRECT, "fwd_out")
                .after(move |h| {
                    let ext = h.external_of(&q12)?;
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
                    Ok(outbound(&q12, ext))
                })
        }),
        learn_ext(
            "e12",
            &from_sub(Pkt::udp((H12, 5000), (R10, 3478), b"subscriber 12")),
        ),
        step(|_, l| {
            let e12 = l.ep("e12");
            println!("  100.64.0.12:5000/udp is mapped to {}:{}", e12.0, e12.1);
        }),
        // TTL 1: answered with ICMP time exceeded (11/0) from int0's
        // address (the default [icmp] rate_limit lets it out), nothing
        // created.
        Case::int(
            "TTL 1 outbound (new socket): ICMP time exceeded",
            ttl1_new.bytes(),
        )
        .verdict(XDP_TX, "icmp_time_exceeded")
        .after(move |h| {
            ensure!(
                h.binding_out(q_ttl1.src, q_ttl1.sport(), PROTO_UDP)
                    .is_none(),
                "a binding was created for an expired packet"
            );
            Ok(generated_error(&q_ttl1, ROUTER_INT, 11, 0, 0))
        })
        .into(),
        Case::int(
            "TTL 1 outbound (existing session): ICMP time exceeded",
            ttl1_old.bytes(),
        )
        .verdict(XDP_TX, "icmp_time_exceeded")
        .frame(generated_error(&ttl1_old, ROUTER_INT, 11, 0, 0))
        .into(),
        Case::int(
            "TTL 1 echo with IP options: quote keeps the options",
            ttl1_opts.bytes(),
        )
        .verdict(XDP_TX, "icmp_time_exceeded")
        .frame(generated_error(&ttl1_opts, ROUTER_INT, 11, 0, 0))
        .into(),
        Case::int(
            "TTL 1 tagged frame: dropped, no ICMP on VLANs",
            from_sub(
                Pkt::udp((H11, 5000), (R10, 3478), b"ttl 1")
                    .ttl(1)
                    .vlan(100),
            )
            .bytes(),
        )
        .verdict(XDP_DROP, "drop_ttl")
        .into(),
    ];
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
        rows.extend([
            Case::int(
                format!("TTL 1 sent to {what}: not for us, no ICMP"),
                Pkt::udp((H11, 5000), (R10, 3478), b"ttl 1")
                    .ttl(1)
                    .macs(mac_of(H11), mac)
                    .bytes(),
            )
            .verdict(XDP_PASS, "pass_not_for_us")
            .into(),
            Case::int(
                format!("outbound sent to {what}: not translated"),
                Pkt::udp((H11, 5000), (R10, 3478), b"not for us")
                    .macs(mac_of(H11), mac)
                    .bytes(),
            )
            .verdict(XDP_PASS, "pass_not_for_us")
            .into(),
            Case::ext(
                format!("inbound sent to {what}: not translated"),
                Pkt::udp((R10, 3478), (H11, 5000), b"not for us")
                    .macs(mac_of(R10), mac)
                    .bytes(),
            )
            .verdict(XDP_PASS, "pass_not_for_us")
            .into(),
        ]);
    }
    let q = loose.clone();
    rows.extend([
        // Larger than ext0's MTU (1500): DF set -> fragmentation needed
        // (3/4) carrying the MTU; without DF dropped (XDP cannot fragment).
        Case::int(
            "1600-byte datagram with DF: ICMP fragmentation needed, MTU 1500",
            big.bytes(),
        )
        .verdict(XDP_TX, "icmp_frag_needed")
        .frame(generated_error(&big, ROUTER_INT, 3, 4, 1500))
        .into(),
        Case::int(
            "1600-byte datagram without DF: dropped",
            big.frag(0).bytes(),
        )
        .verdict(XDP_DROP, "drop_frag_needed")
        .into(),
        out11(
            "1500-byte datagram (exactly the MTU) is forwarded",
            from_sub(Pkt::udp((H11, 5000), (R10, 3478), &[0xcd; 1472])),
        ),
        out11(
            "Ethernet padding after the datagram is carried along",
            from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"x")).pad_to(60),
        ),
        Case::int(
            "outbound TCP ACK without session: picked up (loose)",
            loose.bytes(),
        )
        .verdict(XDP_REDIRECT, "fwd_out")
        .after(move |h| {
            let ext = h.external_of(&q)?;
            session_check(h, ext, (R10, 80), PROTO_TCP, (H11, 40002), 0, TCP_LOOSE)?;
            Ok(outbound(&q, ext))
        })
        .into(),
    ]);
    rows
}

pub(super) fn inbound_rows<'a>() -> Vec<Row<'a>> {
    vec![
        in_to(
            "inbound reply 198.51.100.10:3478 -> .11's external endpoint",
            |l| from_net(Pkt::udp((R10, 3478), l.ep("e11"), b"stun binding response")),
            (H11, 5000),
        ),
        in_to(
            "inbound from never-contacted 198.51.100.20:9999 (EIF)",
            |l| from_net(Pkt::udp((R20, 9999), l.ep("e11"), b"unsolicited")),
            (H11, 5000),
        ),
        session_row(
            "EIF created an inbound session",
            "e11",
            (R20, 9999),
            PROTO_UDP,
            (H11, 5000),
            SESS_INBOUND,
            0,
        ),
        with(|l| {
            let p = from_net(Pkt::udp((R20, 9999), l.ep("e11"), b"ttl 1").ttl(1));
            Case::ext(
                "TTL 1 inbound: ICMP time exceeded from ext0's address",
                p.bytes(),
            )
            .verdict(XDP_TX, "icmp_time_exceeded")
            .frame(generated_error(&p, ROUTER_EXT, 11, 0, 0))
        }),
        // a port of .11's address that nothing holds, and a pool address
        // without bindings
        learn("a free port and an unused pool address", |h, l| {
            let (e11, e12) = (l.ep("e11"), l.ep("e12"));
            let free = (1..1024u16)
                .find(|&port| h.binding_in(e11.0, port, PROTO_UDP).is_none())
                .ok_or("no free port")?;
            l.set_ep("free", (e11.0, free));
            let other = *h
                .cfg
                .pool_addrs
                .iter()
                .rev()
                .find(|a| **a != e11.0 && **a != e12.0)
                .ok_or("no pool address without bindings")?;
            l.set_ep("other", (other, 5000));
            Ok(())
        }),
        with(|l| {
            let free = l.ep("free");
            let p = from_net(Pkt::udp((R10, 3478), free, b"nobody"));
            Case::ext(
                format!("inbound to unbound {}:{}", free.0, free.1),
                p.bytes(),
            )
            .verdict(XDP_DROP, "drop_no_binding")
        }),
        with(|l| {
            let other = l.ep("other");
            let p = from_net(Pkt::udp((R10, 3478), other, b"nobody"));
            Case::ext(
                format!("inbound to unused pool address {}:5000", other.0),
                p.bytes(),
            )
            .verdict(XDP_DROP, "drop_no_binding")
        }),
        in_to(
            "inbound ICMP echo reply with the mapped identifier",
            |l| {
                let ei = l.ep("ei");
                from_net(Pkt::icmp(R10, ei.0, 0, ei.1, 1))
            },
            (H11, 0x4242),
        ),
        in_to(
            "inbound TCP SYN-ACK on the SYN's session",
            |l| from_net(Pkt::tcp((R10, 80), l.ep("et"), TCP_SYN | TCP_ACK)),
            (H11, 40000),
        ),
        session_row(
            "TCP session has SYN_OUT | SYN_IN",
            "et",
            (R10, 80),
            PROTO_TCP,
            (H11, 40000),
            0,
            SYN_OUT | SYN_IN,
        ),
        with(|l| {
            let et = l.ep("et");
            let p = from_net(Pkt::tcp((R20, 80), et, TCP_ACK));
            Case::ext("inbound TCP ACK to a binding without session", p.bytes())
                .verdict(XDP_DROP, "drop_tcp_no_session")
                .after(move |h| {
                    ensure!(
                        h.session(et, (R20, 80), PROTO_TCP).is_none(),
                        "a session was created"
                    );
                    Ok(p.bytes())
                })
        }),
        in_to(
            "inbound bare TCP SYN from a new remote (EIF)",
            |l| from_net(Pkt::tcp((R20, 81), l.ep("et"), TCP_SYN)),
            (H11, 40000),
        ),
        session_row(
            "inbound SYN session is INBOUND with SYN_IN",
            "et",
            (R20, 81),
            PROTO_TCP,
            (H11, 40000),
            SESS_INBOUND,
            SYN_IN,
        ),
        Case::ext(
            "inbound straight to a subscriber address",
            from_net(Pkt::udp((R10, 3478), (H11, 5000), b"direct")).bytes(),
        )
        .verdict(XDP_DROP, "drop_to_internal")
        .into(),
        Case::ext(
            "inbound to the router's external address",
            from_net(Pkt::udp((R10, 3478), (ROUTER_EXT, 53), b"router")).bytes(),
        )
        .verdict(XDP_PASS, "pass_not_nat")
        .into(),
        // RFC 6598 section 4: shared (internal) addresses are filtered on
        // ingress links. A packet from outside claiming a subscriber's
        // address must not reach another subscriber through its mapping
        // (found by tests/garbage.rs: it was forwarded, fwd_in).
        ext_drop(
            "inbound from an internal source to a live mapping (spoofed)",
            |l| from_net(Pkt::udp((H12, 5000), l.ep("e11"), b"spoofed neighbour")),
            "drop_spoofed",
        ),
        ext_drop(
            "inbound ICMP error from an internal source (spoofed)",
            |l| {
                let e11 = l.ep("e11");
                from_net(Pkt::icmp_msg(H12, e11.0, 3, 3, (0, 0), &sent(l).quote()))
            },
            "drop_spoofed",
        ),
    ]
}

/// .11's first datagram as it left (from `e11`).
pub(super) fn sent(l: &Learned) -> Pkt {
    let (p1, e11) = (p1(), l.ep("e11"));
    p1.clone().with_src(e11.0, e11.1).ttl(p1.ttl - 1)
}

pub(super) fn hairpin_rows<'a>() -> Vec<Row<'a>> {
    vec![
        with(|l| {
            let p = from_sub(Pkt::udp((H12, 5000), l.ep("e11"), b"hairpin"));
            Case::int(".12 -> .11's external endpoint (hairpin)", p.bytes())
                .verdict(XDP_TX, "fwd_hairpin")
                .frame(hairpin(&p, l.ep("e12"), (H11, 5000)))
        }),
        // each side's session holds the other side's internal endpoint,
        // where its owner's packets go (include/cgnat.h)
        check("hairpin created both sessions", |h, l| {
            let (e11, e12) = (l.ep("e11"), l.ep("e12"));
            session_check(h, e12, e11, PROTO_UDP, (H11, 5000), SESS_HAIRPIN, 0)?;
            session_check(
                h,
                e11,
                e12,
                PROTO_UDP,
                (H12, 5000),
                SESS_HAIRPIN | SESS_INBOUND,
                0,
            )
        }),
        with(|l| {
            let p = from_sub(Pkt::udp((H11, 5000), l.ep("e12"), b"hairpin reply"));
            Case::int(
                ".11 replies to .12's external endpoint (hairpin)",
                p.bytes(),
            )
            .verdict(XDP_TX, "fwd_hairpin")
            .frame(hairpin(&p, l.ep("e11"), (H12, 5000)))
        }),
        // .12 answers the hairpinned datagram from e11 with an error: both
        // translations apply (RFC 5508 REQ-7)
        with(|l| {
            let (e11, e12) = (l.ep("e11"), l.ep("e12"));
            let got = Pkt::udp(e11, (H12, 5000), b"hairpin").ttl(63);
            let p = from_sub(Pkt::icmp_msg(H12, e11.0, 3, 3, (0, 0), &got.quote()));
            let inner = got.clone().with_dst(e12.0, e12.1).with_src(H11, 5000);
            let exp = Pkt::icmp_msg(e12.0, H11, 3, 3, (0, 0), &inner.quote())
                .ttl(p.ttl - 1)
                .macs(INT0_MAC, mac_of(H11))
                .bytes();
            Case::int("hairpinned ICMP error: both translations", p.bytes())
                .verdict(XDP_TX, "fwd_hairpin")
                .frame(exp)
        }),
        // The sweep ended .11's side of the flow and marked .12's one-sided
        // (here with a stale target, as if e11 had changed hands since):
        // .12's packets look .11's side up, and take the target from
        // e11's binding once that side exists again.
        check(
            "the sweep ends .11's side of the hairpinned flow",
            |h, l| {
                let (e11, e12) = (l.ep("e11"), l.ep("e12"));
                h.put_session(e11, e12, PROTO_UDP, None)?;
                let mut s = h
                    .session(e12, e11, PROTO_UDP)
                    .ok_or("no session of .12's side")?;
                s.flags |= SESS_ONE_SIDED;
                s.int_port = 9999u16.to_be();
                h.put_session(e12, e11, PROTO_UDP, Some(s))
            },
        ),
        with(|l| {
            let p = from_sub(Pkt::udp((H12, 5000), l.ep("e11"), b"other side gone"));
            Case::int(
                "one-sided hairpin session, the other side gone: dropped",
                p.bytes(),
            )
            .verdict(XDP_DROP, "drop_no_binding")
        }),
        with(|l| {
            let p = from_sub(Pkt::udp((H11, 5000), l.ep("e12"), b"opens again"));
            Case::int(
                ".11 -> .12's external endpoint opens its side again",
                p.bytes(),
            )
            .verdict(XDP_TX, "fwd_hairpin")
            .frame(hairpin(&p, l.ep("e11"), (H12, 5000)))
        }),
        with(|l| {
            let p = from_sub(Pkt::udp((H12, 5000), l.ep("e11"), b"via the binding"));
            Case::int(
                "one-sided hairpin session: the target comes from the binding",
                p.bytes(),
            )
            .verdict(XDP_TX, "fwd_hairpin")
            .frame(hairpin(&p, l.ep("e12"), (H11, 5000)))
        }),
        // our own external endpoints never send from outside: such a
        // packet neither uses a hairpin session nor opens a session
        with(|l| {
            let p = Pkt::udp(l.ep("e12"), l.ep("e11"), b"spoofed").macs(mac_of(R10), EXT0_MAC);
            Case::ext(
                "from outside, source e12 (a hairpin session's remote): dropped",
                p.bytes(),
            )
            .verdict(XDP_DROP, "drop_pool_source")
        }),
        with(|l| {
            let p = Pkt::udp((l.ep("e12").0, 7777), l.ep("e11"), b"spoofed")
                .macs(mac_of(R10), EXT0_MAC);
            Case::ext(
                "from outside, source a pool address, no session: dropped",
                p.bytes(),
            )
            .verdict(XDP_DROP, "drop_pool_source")
        }),
        // the one-armed entry point on the same maps: direction by address
        with(|l| {
            let p = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"one-armed out"));
            Case::new(
                "one-armed: subscriber -> internet",
                Side::OneArmed,
                Port::Int0,
                p.bytes(),
            )
            .verdict(XDP_REDIRECT, "fwd_out")
            .frame(outbound(&p, l.ep("e11")))
        }),
        with(|l| {
            let p = from_net(Pkt::udp((R10, 3478), l.ep("e11"), b"one-armed in"));
            Case::new(
                "one-armed: internet -> subscriber",
                Side::OneArmed,
                Port::Ext0,
                p.bytes(),
            )
            .verdict(XDP_REDIRECT, "fwd_in")
            .frame(inbound(&p, (H11, 5000)))
        }),
        Case::new(
            "one-armed: neither side's address",
            Side::OneArmed,
            Port::Ext0,
            from_net(Pkt::udp((R10, 3478), (R20, 53), b"transit")).bytes(),
        )
        .verdict(XDP_PASS, "pass_not_nat")
        .into(),
    ]
}
