//! Full binding and session tables.

use super::*;

/// A full binding table refuses (ICMP host unreachable) and evicts
/// nothing (RFC 6888 REQ-11).
#[test]
fn bindings_full() {
    let config = config_text("max_sessions = 64\nmax_bindings = 16", "");
    table_test("bindings_full", "b", &config, bindings_full_rows);
}

fn bindings_full_rows(_: &NetNs) -> Vec<Row<'_>> {
    let mut rows: Vec<Row> = (0..16u16)
        .map(|i| open_binding(format!("e{i}"), H11, 6000 + i))
        .collect();
    let p = from_sub(Pkt::udp((H11, 6016), (R10, 3478), b"one too many"));
    let q = p.clone();
    rows.extend([
        Case::int("17th binding: ICMP host unreachable (3/1)", p.bytes())
            .verdict(XDP_TX, "icmp_host_unreach")
            .after(move |h| {
                let (i, o) = (h.bindings_in(), h.bindings_out());
                ensure!(
                    i == 16 && o == 16,
                    "bind_in {i} / outbound halves {o}, expected 16 / 16"
                );
                Ok(generated_error(&q, ROUTER_INT, 3, 1, 0))
            })
            .into(),
        with(|l| {
            let p = from_sub(Pkt::udp((H11, 6000), (R10, 3478), b"still here"));
            Case::int("existing binding still forwards (no eviction)", p.bytes())
                .verdict(XDP_REDIRECT, "fwd_out")
                .frame(outbound(&p, l.ep("e0")))
        }),
        with(|l| {
            let p = from_net(Pkt::udp((R10, 3478), l.ep("e0"), b"reply"));
            Case::ext("inbound to an existing binding still works", p.bytes())
                .verdict(XDP_REDIRECT, "fwd_in")
                .frame(inbound(&p, (H11, 6000)))
        }),
    ]);
    rows
}

/// A full session table refuses new sessions both ways and keeps the old.
#[test]
fn sessions_full() {
    let config = config_text("max_sessions = 16\nmax_bindings = 64", "");
    table_test("sessions_full", "s", &config, sessions_full_rows);
}

fn sessions_full_rows(_: &NetNs) -> Vec<Row<'_>> {
    let mut rows = vec![open_binding("e", H11, 7000)];
    rows.extend((1..16u16).map(|port| {
        with(move |l| {
            let p = from_sub(Pkt::udp((H11, 7000), (R10, port), b"session"));
            Case::int(
                format!("session {} to 198.51.100.10:{port}", port + 1),
                p.bytes(),
            )
            .verdict(XDP_REDIRECT, "fwd_out")
            .frame(outbound(&p, l.ep("e")))
        })
    }));
    let p = from_sub(Pkt::udp((H11, 7000), (R10, 16), b"one too many"));
    rows.extend([
        Case::int("17th session: ICMP host unreachable (3/1)", p.bytes())
            .verdict(XDP_TX, "icmp_host_unreach")
            .frame(generated_error(&p, ROUTER_INT, 3, 1, 0))
            .into(),
        with(|l| {
            let p = from_net(Pkt::udp((R20, 1), l.ep("e"), b"unsolicited"));
            Case::ext("inbound new session on a full table: dropped", p.bytes())
                .verdict(XDP_DROP, "drop_table_full")
        }),
        with(|l| {
            let p = from_sub(Pkt::udp((H11, 7000), (R10, 1), b"old session"));
            Case::int("an existing session still forwards", p.bytes())
                .verdict(XDP_REDIRECT, "fwd_out")
                .frame(outbound(&p, l.ep("e")))
        }),
        check("16 sessions, none evicted", |h, _| {
            let n = h.tables.sessions.count().expect("counting sessions");
            ensure!(n == 16, "{n} sessions");
            Ok(())
        }),
    ]);
    rows
}
