//! Fragments and the IP ID of datagrams that may be fragmented.

use super::*;

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
