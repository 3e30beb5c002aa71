//! Filtering of inbound packets, also through the hairpin.

use super::*;

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
