//! Full binding and session tables.

use super::*;

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
