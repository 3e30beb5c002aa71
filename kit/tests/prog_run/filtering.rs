//! Filtering of inbound packets, also through the hairpin.

use super::*;

/// Address-dependent (UDP) and address-and-port-dependent (TCP) filtering.
#[test]
fn filtering() {
    let config = config_text(
        "",
        "[filtering]\nudp = \"address-dependent\"\ntcp = \"address-and-port-dependent\"",
    );
    table_test("filtering", "a", &config, filtering_rows);
}

fn filtering_rows(_: &NetNs) -> Vec<Row<'_>> {
    let pt = from_sub(Pkt::tcp((H11, 40000), (R10, 80), TCP_SYN));
    vec![
        open_binding("e11", H11, 5000),
        with(|l| {
            let p = from_net(Pkt::udp((R10, 9999), l.ep("e11"), b"other port"));
            Case::ext(
                "ADF: another port of a contacted address is admitted",
                p.bytes(),
            )
            .verdict(XDP_REDIRECT, "fwd_in")
            .frame(inbound(&p, (H11, 5000)))
        }),
        with(|l| {
            let e11 = l.ep("e11");
            let p = from_net(Pkt::udp((R20, 3478), e11, b"stranger"));
            Case::ext("ADF: an address never contacted is filtered", p.bytes())
                .verdict(XDP_DROP, "drop_filtered")
                .after(move |h| {
                    ensure!(
                        h.session(e11, (R20, 3478), PROTO_UDP).is_none(),
                        "a refused packet created a session"
                    );
                    Ok(p.bytes())
                })
        }),
        with(|l| {
            let p = from_sub(Pkt::udp((H11, 5000), (R20, 1), b"hello 20"));
            Case::int("the subscriber sends to 198.51.100.20", p.bytes())
                .verdict(XDP_REDIRECT, "fwd_out")
                .frame(outbound(&p, l.ep("e11")))
        }),
        with(|l| {
            let p = from_net(Pkt::udp((R20, 3478), l.ep("e11"), b"now known"));
            Case::ext(
                "ADF: ... then 198.51.100.20 is admitted on any port",
                p.bytes(),
            )
            .verdict(XDP_REDIRECT, "fwd_in")
            .frame(inbound(&p, (H11, 5000)))
        }),
        bind_row("TCP SYN out", pt, "et"),
        with(|l| {
            let p = from_net(Pkt::tcp((R10, 80), l.ep("et"), TCP_SYN | TCP_ACK));
            Case::ext("APDF: the SYN-ACK of the session is admitted", p.bytes())
                .verdict(XDP_REDIRECT, "fwd_in")
                .frame(inbound(&p, (H11, 40000)))
        }),
        with(|l| {
            let p = from_net(Pkt::tcp((R10, 81), l.ep("et"), TCP_SYN));
            Case::ext(
                "APDF: a SYN from another port of the same address is filtered",
                p.bytes(),
            )
            .verdict(XDP_DROP, "drop_filtered")
        }),
    ]
}

/// Hole punching between two subscribers through the hairpin under
/// address-dependent filtering (RFC 4787 REQ-9 with REQ-8). A hairpinned
/// packet leaves through the sender's mapping and then meets the target's
/// filter. When the target's filter refuses it, the sender's mapping has
/// still "sent to" the target's address, so the target's own attempt in
/// the other direction is admitted.
#[test]
fn adf_hairpin_hole_punching() {
    let config = config_text("", "[filtering]\nudp = \"address-dependent\"");
    table_test("adf_hairpin_hole_punching", "h", &config, |_| {
        vec![
            open_binding("e11", H11, 5000),
            open_binding("e12", H12, 5000),
            with(|l| {
                let p = from_sub(Pkt::udp((H12, 5000), l.ep("e11"), b"punch"));
                Case::int(
                    ".12 -> e11 first: filtered by .11's mapping (correct)",
                    p.bytes(),
                )
                .verdict(XDP_DROP, "drop_filtered")
            }),
            with(|l| {
                let p = from_sub(Pkt::udp((H11, 5000), l.ep("e12"), b"punch back"));
                Case::int(
                    ".11 -> e12: admitted, .12 has sent to e11's address",
                    p.bytes(),
                )
                .verdict(XDP_TX, "fwd_hairpin")
                .frame(hairpin(&p, l.ep("e11"), (H12, 5000)))
            }),
        ]
    });
}

/// A hairpinned TCP segment is filtered as if it came from outside: only a
/// bare SYN opens a session on the target's binding (RFC 5382), so an ACK
/// without a session is dropped from either side alike.
#[test]
fn hairpin_tcp_needs_syn() {
    table_test("hairpin_tcp_needs_syn", "k", &config_text("", ""), |_| {
        let pt = from_sub(Pkt::tcp((H11, 40000), (R10, 80), TCP_SYN));
        vec![
            bind_row("TCP SYN out: binding for 100.64.0.11:40000", pt, "et"),
            with(|l| {
                let p = from_net(Pkt::tcp((R20, 80), l.ep("et"), TCP_ACK));
                Case::ext(
                    "from outside: ACK to the binding without session is dropped",
                    p.bytes(),
                )
                .verdict(XDP_DROP, "drop_tcp_no_session")
            }),
            with(|l| {
                let p = from_sub(Pkt::tcp((H12, 41000), l.ep("et"), TCP_ACK));
                Case::int(
                    "hairpinned: the same ACK from .12 is dropped too",
                    p.bytes(),
                )
                .verdict(XDP_DROP, "drop_tcp_no_session")
                .after(move |h| {
                    let n = h.tables.sessions.count().expect("counting sessions");
                    ensure!(n == 1, "{n} sessions (only the SYN's expected)");
                    Ok(p.bytes())
                })
            }),
        ]
    });
}

/// A subscriber sending to its own external endpoint (RFC 4787 REQ-9 with
/// sender and target the same binding) holds one session, which serves both
/// sides and counts once against `limits.sessions`. With a limit of 2, the
/// self-hairpin fits beside one ordinary session, and a third session is
/// refused, which shows that the limit is in force.
#[test]
fn self_hairpin_counts_one_session() {
    let config = config_text("", "[limits]\nsessions = 2\n[icmp]\nrate_limit = 0");
    table_test(
        "self_hairpin_counts_one_session",
        "s",
        &config,
        self_hairpin_rows,
    );
}

/// The session count the subscribers map holds for `sub`.
fn sub_sessions(h: &Harness, sub: Ipv4Addr) -> Result<u32, String> {
    let subs = cgnat::lookup::subscribers(&h.tables).map_err(|e| e.to_string())?;
    subs.iter()
        .find(|s| s.subscriber == sub)
        .map(|s| s.sessions)
        .ok_or_else(|| format!("{sub} is not in the subscribers map"))
}

fn self_hairpin_rows(_: &NetNs) -> Vec<Row<'_>> {
    vec![
        open_binding("e11", H11, 5000),
        check("one flow: one session counted", |h, _| {
            let n = sub_sessions(h, H11)?;
            ensure!(n == 1, "{n} sessions after one flow");
            Ok(())
        }),
        step(|h, l| {
            let n = h.tables.sessions.count().expect("counting sessions");
            l.set_num("sessions before", n);
        }),
        with(|l| {
            let p = from_sub(Pkt::udp((H11, 5000), l.ep("e11"), b"to myself"));
            Case::int(
                "100.64.0.11:5000 -> its own external endpoint: hairpinned back",
                p.bytes(),
            )
            .verdict(XDP_TX, "fwd_hairpin")
            .frame(hairpin(&p, l.ep("e11"), (H11, 5000)))
        }),
        check("self-hairpin: one session, counted once", |h, l| {
            let e11 = l.ep("e11");
            session_check(h, e11, e11, PROTO_UDP, (H11, 5000), SESS_HAIRPIN, 0)?;
            let before = l.num("sessions before").unwrap_or(0);
            let n = h.tables.sessions.count().expect("counting sessions");
            ensure!(
                n == before + 1,
                "{} sessions added (one serves both sides)",
                n - before
            );
            let c = sub_sessions(h, H11)?;
            ensure!(c == 2, "{c} sessions counted for 100.64.0.11 (2 expected)");
            Ok(())
        }),
        with(|l| {
            let p = from_sub(Pkt::udp((H11, 5000), l.ep("e11"), b"to myself again"));
            Case::int("self-hairpin again: the same session", p.bytes())
                .verdict(XDP_TX, "fwd_hairpin")
                .frame(hairpin(&p, l.ep("e11"), (H11, 5000)))
        }),
        Case::int(
            "a third session: over limits.sessions = 2",
            from_sub(Pkt::udp((H11, 5000), (R20, 3478), b"third session")).bytes(),
        )
        .verdict(XDP_DROP, "drop_subscriber_limit")
        .into(),
        check("the limit holds at 2", |h, _| {
            let c = sub_sessions(h, H11)?;
            ensure!(c == 2, "{c} sessions counted for 100.64.0.11 (2 expected)");
            Ok(())
        }),
    ]
}
