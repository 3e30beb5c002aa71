//! Fragments and the IP ID of datagrams that may be fragmented.

use super::*;

/// First fragments are translated as datagrams, later ones follow them
/// (RFC 4787 REQ-14, RFC 7857 section 10 IP IDs).
#[test]
fn fragments() {
    table_test("fragments", "f", &config_text("", ""), fragment_rows);
}

/// Where the IP header starts in these frames (no VLAN tag).
const IP: usize = 14;

/// Keeps the IP ID of the row before's output as `name`.
fn keep_id<'a>(name: &'static str) -> Row<'a> {
    keep_out(name, |out| u64::from(ip_id(out, IP)))
}

/// `exp` with the IP ID the program chose, which must be `earlier` (the ID
/// another fragment of the datagram got, if its row passed).
fn same_id(exp: Vec<u8>, out: &[u8], earlier: Option<u64>, other: &str) -> Result<Vec<u8>, String> {
    let e = with_out_id(exp, out, IP)?;
    if let Some(first) = earlier {
        let id = ip_id(out, IP);
        ensure!(
            u64::from(id) == first,
            "IP ID {id:#06x}, {other} got {first:#06x}"
        );
    }
    Ok(e)
}

/// A datagram of 40 payload bytes (48 with the UDP header), cut into two
/// fragments of 24 bytes by `Pkt::fragment`.
fn datagram(p: Pkt, id: u16) -> Pkt {
    let mut p = p;
    p.id = id;
    p
}

fn fragment_rows(_: &NetNs) -> Vec<Row<'_>> {
    // what .11's and .12's datagrams to R10 become, and what R10's reply
    // to e11 becomes (IP ID set per row)
    let out11 = |l: &Learned, d: &Pkt| {
        let e11 = l.ep("e11");
        d.clone()
            .with_src(e11.0, e11.1)
            .ttl(63)
            .macs(EXT0_MAC, mac_of(R10))
    };
    let in11 = |r: &Pkt| {
        r.clone()
            .with_dst(H11, 5000)
            .ttl(63)
            .macs(INT0_MAC, mac_of(H11))
    };
    let hair = |l: &Learned, d: &Pkt| {
        let e12 = l.ep("e12");
        d.clone()
            .with_src(e12.0, e12.1)
            .with_dst(H11, 5000)
            .ttl(63)
            .macs(INT0_MAC, mac_of(H11))
    };
    let d = datagram(
        from_sub(Pkt::udp((H11, 5000), (R10, 3478), &[0x5a; 40])),
        0x1111,
    );
    let d2 = datagram(d.clone(), 0x2222);
    let reply = |l: &Learned, id| {
        datagram(
            from_net(Pkt::udp((R10, 3478), l.ep("e11"), &[0xa5; 40])),
            id,
        )
    };
    let hp = |l: &Learned, id| {
        datagram(
            from_sub(Pkt::udp((H12, 5000), l.ep("e11"), &[0x77; 40])),
            id,
        )
    };
    let may_fragment = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"may fragment")).frag(0);
    vec![
        open_binding("e11", H11, 5000),
        open_binding("e12", H12, 5000),
        // DF clear: the IP ID is replaced by a keyed hash of the header's
        // (ID, source, destination, protocol) before translation (RFC 7857
        // section 10, bpf/frag.h). The key is random per load, so the value
        // cannot be predicted; the rule's properties can: the ID changes (a
        // hash maps an ID to itself with probability 2^-16), the same header
        // always gets the same ID (no per-datagram state), and every other
        // byte is the exact translated frame.
        with({
            let p = may_fragment.clone();
            move |l| {
                let exp = outbound(&p, l.ep("e11"));
                let in_id = p.id;
                Case::int("DF clear: translated, IP ID replaced", p.bytes())
                    .verdict(XDP_REDIRECT, "fwd_out")
                    .output(move |_, out| {
                        let exp = with_out_id(exp, out, IP)?;
                        ensure!(
                            ip_id(out, IP) != in_id,
                            "IP ID {in_id:#06x} left as it was on a datagram without DF"
                        );
                        Ok(exp)
                    })
            }
        }),
        keep_id("df clear"),
        with(move |l| {
            let p = may_fragment;
            let c = Case::int(
                "DF clear, the same datagram again: the same new IP ID",
                p.bytes(),
            )
            .verdict(XDP_REDIRECT, "fwd_out");
            match l.num("df clear") {
                Some(id) => {
                    let mut exp = outbound(&p, l.ep("e11"));
                    set_ip_id(&mut exp, IP, id as u16);
                    c.frame(exp)
                }
                None => c.output(|_, _| Err("the first run of the datagram failed".into())),
            }
        }),
        with(|l| {
            let p = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"must not fragment"));
            Case::int("DF set: the IP ID is kept", p.bytes())
                .verdict(XDP_REDIRECT, "fwd_out")
                .frame(outbound(&p, l.ep("e11")))
        }),
        // a 48-byte UDP segment in two fragments of 24 bytes
        with({
            let d = d.clone();
            move |l| {
                let exp = out11(l, &d).fragment(0, 24, true);
                Case::int(
                    "outbound first fragment: translated, checksum of the whole datagram",
                    d.fragment(0, 24, true),
                )
                .verdict(XDP_REDIRECT, "fwd_out")
                .output(move |_, out| with_out_id(exp, out, IP))
            }
        }),
        keep_id("id1"),
        with({
            let d = d.clone();
            move |l| {
                let (exp, id1) = (out11(l, &d).fragment(24, 48, false), l.num("id1"));
                Case::int(
                    "outbound later fragment: same source and IP ID as its first",
                    d.fragment(24, 48, false),
                )
                .verdict(XDP_REDIRECT, "fwd_out")
                .output(move |_, out| same_id(exp, out, id1, "its first fragment"))
            }
        }),
        // out of order: the later fragment first (stateless outbound)
        with({
            let d2 = d2.clone();
            move |l| {
                let exp = out11(l, &d2).fragment(24, 48, false);
                Case::int(
                    "outbound later fragment before its first: translated anyway",
                    d2.fragment(24, 48, false),
                )
                .verdict(XDP_REDIRECT, "fwd_out")
                .output(move |_, out| with_out_id(exp, out, IP))
            }
        }),
        keep_id("id2"),
        with(move |l| {
            let (exp, id2) = (out11(l, &d2).fragment(0, 24, true), l.num("id2"));
            Case::int(
                "... then its first fragment: the same IP ID",
                d2.fragment(0, 24, true),
            )
            .verdict(XDP_REDIRECT, "fwd_out")
            .output(move |_, out| same_id(exp, out, id2, "the later fragment"))
        }),
        Case::int(
            "later fragment with TTL 1: dropped, no ICMP",
            datagram(
                from_sub(Pkt::udp((H11, 5000), (R10, 3478), &[1; 40])),
                0x2323,
            )
            .ttl(1)
            .fragment(24, 48, false),
        )
        .verdict(XDP_DROP, "drop_ttl")
        .into(),
        Case::int(
            "later fragment to the router itself",
            datagram(
                from_sub(Pkt::udp((H11, 5000), (ROUTER_INT, 53), &[1; 40])),
                0x2424,
            )
            .fragment(24, 48, false),
        )
        .verdict(XDP_PASS, "pass_local")
        .into(),
        // inbound: the first fragment's translation is remembered
        with(move |l| {
            let r = reply(l, 0x3333);
            Case::ext("inbound first fragment", r.fragment(0, 24, true))
                .verdict(XDP_REDIRECT, "fwd_in")
                .frame(in11(&r).fragment(0, 24, true))
        }),
        with(move |l| {
            let r = reply(l, 0x3333);
            Case::ext(
                "inbound later fragment follows its first",
                r.fragment(24, 48, false),
            )
            .verdict(XDP_REDIRECT, "fwd_in")
            .frame(in11(&r).fragment(24, 48, false))
        }),
        // out of order inbound: held until the first fragment has created
        // the state; the daemon then re-runs it (replayed here the same way)
        with(move |l| {
            Case::ext(
                "inbound later fragment before its first: held",
                reply(l, 0x4444).fragment(24, 48, false),
            )
            .verdict(XDP_DROP, "frag_held")
        }),
        with(move |l| {
            let r = reply(l, 0x4444);
            Case::ext("... its first fragment", r.fragment(0, 24, true))
                .verdict(XDP_REDIRECT, "fwd_in")
                .frame(in11(&r).fragment(0, 24, true))
        }),
        with(move |l| {
            let r = reply(l, 0x4444);
            Case::ext(
                "... the held fragment re-run follows it",
                r.fragment(24, 48, false),
            )
            .verdict(XDP_REDIRECT, "fwd_in")
            .frame(in11(&r).fragment(24, 48, false))
        }),
        // hairpin: .12 -> e11 in fragments
        with(move |l| {
            let d = hp(l, 0x5555);
            let exp = hair(l, &d).fragment(0, 24, true);
            Case::int("hairpinned first fragment", d.fragment(0, 24, true))
                .verdict(XDP_TX, "fwd_hairpin")
                .output(move |_, out| with_out_id(exp, out, IP))
        }),
        keep_id("id3"),
        with(move |l| {
            let d = hp(l, 0x5555);
            let (exp, id3) = (hair(l, &d).fragment(24, 48, false), l.num("id3"));
            Case::int(
                "hairpinned later fragment follows its first",
                d.fragment(24, 48, false),
            )
            .verdict(XDP_TX, "fwd_hairpin")
            .output(move |_, out| same_id(exp, out, id3, "its first fragment"))
        }),
        // the same datagram's later fragment arriving from outside (a
        // subscriber's source spoofed, RFC 6598 section 4) must not follow
        // the hairpin translation (found by tests/garbage.rs)
        with(move |l| {
            let mut spoofed = hp(l, 0x5555).fragment(16, 40, false);
            spoofed[0..6].copy_from_slice(&EXT0_MAC);
            spoofed[6..12].copy_from_slice(&mac_of(R10));
            Case::ext(
                "later fragment of a hairpinned datagram from outside (spoofed)",
                spoofed,
            )
            .verdict(XDP_DROP, "drop_spoofed")
        }),
        with(move |l| {
            Case::int(
                "hairpinned later fragment before its first: held",
                hp(l, 0x6666).fragment(24, 48, false),
            )
            .verdict(XDP_DROP, "frag_held")
        }),
        with(move |l| {
            let d = hp(l, 0x6666);
            let exp = hair(l, &d).fragment(0, 24, true);
            Case::int("... its first fragment", d.fragment(0, 24, true))
                .verdict(XDP_TX, "fwd_hairpin")
                .output(move |_, out| with_out_id(exp, out, IP))
        }),
        keep_id("id4"),
        with(move |l| {
            let d = hp(l, 0x6666);
            let (exp, id4) = (hair(l, &d).fragment(24, 48, false), l.num("id4"));
            Case::int(
                "... the held fragment re-run follows it",
                d.fragment(24, 48, false),
            )
            .verdict(XDP_TX, "fwd_hairpin")
            .output(move |_, out| same_id(exp, out, id4, "its first fragment"))
        }),
    ]
}
