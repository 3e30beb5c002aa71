//! External ports: collisions between subscribers sharing an address, and
//! the quarantine of an expired binding's port.

use super::*;

/// Paired pooling and port collisions: a second subscriber on the same
/// external address gets another port, in the same class (RFC 4787 REQ-3a).
#[test]
fn port_collisions() {
    table_test("port_collisions", "c", &config_text("", ""), collision_rows);
}

/// An outbound packet that must create a binding on `addr` (if given) with
/// a port satisfying `ok` (`what` says why otherwise).
fn bind_case(
    name: String,
    p: &Pkt,
    addr: Option<Ipv4Addr>,
    ok: impl Fn(u16) -> bool + 'static,
    what: &'static str,
) -> Case {
    let q = p.clone();
    Case::int(name, p.bytes())
        .verdict(XDP_REDIRECT, "fwd_out")
        .after(move |h| {
            let ext = h.external_of(&q)?;
            if let Some(a) = addr {
                ensure!(ext.0 == a, "external address {} (expected {a})", ext.0);
            }
            ensure!(ok(ext.1), "external port {}: {what}", ext.1);
            Ok(outbound(&q, ext))
        })
}

/// Keeps the binding of `p` as `name` if the row before passed.
fn keep_binding<'a>(name: String, p: &Pkt) -> Row<'a> {
    let p = p.clone();
    step(move |h, l| {
        if l.out.is_some() {
            if let Ok(e) = h.external_of(&p) {
                l.set_ep(name, e);
            }
        }
    })
}

/// A UDP datagram from `src:port` to 198.51.100.10:3478, from the MAC the
/// test gives each subscriber.
fn collide(src: Ipv4Addr, port: u16) -> Pkt {
    Pkt::udp((src, port), (R10, 3478), b"collide").macs(sub_mac(src), INT0_MAC)
}

fn sub_mac(src: Ipv4Addr) -> Mac {
    [0x02, 0x11, 0, 0, 0, src.octets()[3]]
}

/// The subscribers found to share .11's external address, in order.
fn colliders(l: &Learned) -> Vec<Ipv4Addr> {
    (0..l.num("colliders").unwrap_or(0))
        .map(|i| l.ep(&format!("collider {i}")).0)
        .collect()
}

fn collision_rows(ns: &NetNs) -> Vec<Row<'_>> {
    // .11 holds 5000, a few privileged ports and 1024, all kept.
    let mut rows = vec![
        bind_case(
            "100.64.0.11:5000 keeps its port".into(),
            &collide(H11, 5000),
            None,
            |p| p == 5000,
            "port not preserved without collision",
        )
        .into(),
        learn_ext("e11", &collide(H11, 5000)),
        step(|_, l| println!("  100.64.0.11 is mapped to {}", l.ep("e11").0)),
    ];
    for port in [53u16, 123, 1023, 1024] {
        rows.push(with(move |l| {
            bind_case(
                format!("100.64.0.11:{port} keeps its port"),
                &collide(H11, port),
                Some(l.ep("e11").0),
                move |p| p == port,
                "port not preserved without collision",
            )
        }));
    }
    rows.push(with(|l| {
        bind_case(
            "TCP 100.64.0.11:5000 keeps 5000 (bindings are per protocol)".into(),
            &from_sub(Pkt::tcp((H11, 5000), (R10, 80), TCP_SYN)),
            Some(l.ep("e11").0),
            |p| p == 5000,
            "TCP port collided with the UDP binding",
        )
    }));

    // Subscribers until two share .11's address (paired pooling picks the
    // address from a hash of the subscriber address).
    for x in 13u8..=120 {
        let s = Ipv4Addr::new(100, 64, 0, x);
        let port = 40000 + u16::from(x);
        rows.push(then(move |l| {
            if colliders(l).len() == 2 {
                return Vec::new();
            }
            let p = collide(s, port);
            vec![
                bind_case(
                    format!("probe {s}:{port}"),
                    &p,
                    None,
                    move |p| p == port,
                    "port not preserved without collision",
                )
                .into(),
                step(move |h, l| {
                    let a = l.ep("e11").0;
                    let shares = l.out.is_some() && h.external_of(&p).is_ok_and(|e| e.0 == a);
                    if shares {
                        println!("  {s} shares {a} with 100.64.0.11");
                        let n = l.num("colliders").unwrap_or(0);
                        l.set_ep(format!("collider {n}"), (s, 0));
                        l.set_num("colliders", n + 1);
                    }
                }),
            ]
        }));
    }
    rows.push(check(
        "found a subscriber sharing .11's external address",
        |_, l| {
            ensure!(
                !colliders(l).is_empty(),
                "no subscriber of 100.64.0.13-120 maps to {}",
                l.ep("e11").0
            );
            Ok(())
        },
    ));
    for i in 0..2 {
        rows.push(then(move |l| match colliders(l).get(i) {
            Some(&c) => collider_rows(ns, l.ep("e11").0, c),
            None => Vec::new(),
        }));
    }
    // RFC 7857 section 10: datagrams that may be fragmented from two
    // subscribers sharing an external address, with the same IP ID to the
    // same destination, must leave with different IDs (a keyed hash: equal
    // with probability 1/65536)
    rows.push(then(|l| {
        let Some(&c) = colliders(l).first() else {
            return Vec::new();
        };
        let mut rows = Vec::new();
        for (i, s) in [H11, c].into_iter().enumerate() {
            let mut p = collide(s, 5000).frag(0);
            p.id = 0x7777;
            rows.push(step(move |h, l| {
                let e = h
                    .binding_out(s, 5000, PROTO_UDP)
                    .map(|b| (addr_of(b.addr), u16::from_be(b.port)));
                if let Some(e) = e {
                    l.set_ep(format!("df {i}"), e);
                }
            }));
            rows.push(then(move |l| {
                let name = format!("df {i}");
                if !l.has_ep(&name) {
                    return Vec::new();
                }
                let exp = outbound(&p.clone().macs(p.src_mac, INT0_MAC), l.ep(&name));
                vec![
                    Case::int(
                        format!("{s}: DF clear, IP ID 0x7777 to 198.51.100.10"),
                        p.bytes(),
                    )
                    .verdict(XDP_REDIRECT, "fwd_out")
                    .output(move |_, out| with_out_id(exp, out, 14))
                    .into(),
                    keep_out(["id 0", "id 1"][i], |o| u64::from(ip_id(o, 14))),
                ]
            }));
        }
        rows.push(check(
            "subscribers sharing an address get different IP IDs",
            |_, l| match (l.num("id 0"), l.num("id 1")) {
                (Some(x), Some(y)) if x != y => Ok(()),
                (Some(x), Some(y)) => Err(format!("both left with IP ID {x:#06x} (and {y:#06x})")),
                _ => Err("a run failed".into()),
            },
        ));
        rows
    }));
    rows
}

/// The rows of one subscriber `c` that shares `.11`'s external address `a`.
fn collider_rows(ns: &NetNs, a: Ipv4Addr, c: Ipv4Addr) -> Vec<Row<'_>> {
    let mut rows = Vec::new();
    for port in [5000u16, 1024] {
        rows.push(
            bind_case(
                format!("{c}:{port} collides with .11: other port >= 1024"),
                &collide(c, port),
                Some(a),
                move |p| p != port && p >= 1024,
                "must differ and stay in 1024-65535",
            )
            .into(),
        );
    }
    for port in [53u16, 123, 1023] {
        let p = collide(c, port);
        let name = format!("{c}:{port}");
        rows.push(
            bind_case(
                format!("{c}:{port} collides with .11: other port < 1024"),
                &p,
                Some(a),
                move |p| p != port && (1..1024).contains(&p),
                "must differ and stay in 1-1023 (RFC 4787 REQ-3a)",
            )
            .into(),
        );
        rows.push(keep_binding(name.clone(), &p));
        // the randomised port translates back to the original one
        rows.push(then(move |l| {
            if !l.has_ep(&name) {
                return Vec::new();
            }
            let e = l.ep(&name);
            let mac = sub_mac(c);
            let p = from_net(Pkt::udp((R10, 3478), e, b"reply"));
            vec![
                step(move |_, _| ns.add_neigh(c, &mac, "int0")),
                Case::ext(
                    format!("reply to {}:{} reaches {c}:{port}", e.0, e.1),
                    p.bytes(),
                )
                .verdict(XDP_REDIRECT, "fwd_in")
                .frame(inbound_to(&p, (c, port), mac))
                .into(),
            ]
        }));
    }
    rows.push(
        bind_case(
            "ICMP id 77 of .11 kept".into(),
            &Pkt::icmp(H11, R10, 8, 77, 1).macs(mac_of(H11), INT0_MAC),
            Some(a),
            |p| p == 77,
            "id not preserved",
        )
        .into(),
    );
    rows.push(
        bind_case(
            format!("ICMP id 77 of {c} collides: other identifier"),
            &Pkt::icmp(c, R10, 8, 77, 1).macs(sub_mac(c), INT0_MAC),
            Some(a),
            |p| p != 77,
            "identifier must differ",
        )
        .into(),
    );
    rows
}

/// Expiry by the daemon's sweeper (src/expiry.rs) and the data path
/// together: an expired binding's port is quarantined (RFC 6888 REQ-8):
/// it receives nothing and is not handed out again until the quarantine
/// ends.
#[test]
fn quarantine() {
    table_test("quarantine", "x", &config_text("", ""), quarantine_rows);
}

/// Sweeps as the daemon runs them, from `start` on (expiry may take more
/// than one sweep: sessions are marked dying first); returns the sessions
/// expired, the ports quarantined and the ports freed.
fn sweep_until(h: &Harness, start: u64) -> Result<(u64, u64, u64), String> {
    let sweeper = cgnat::expiry::Sweeper {
        timeouts: h.cfg.timeouts.clone(),
        quarantine: h.cfg.port_quarantine,
        blocks: None,
        pool: h.cfg.pool_addrs.clone(),
    };
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
}

const HOUR_NS: u64 = 3600 * 1_000_000_000;

fn quarantine_rows(_: &NetNs) -> Vec<Row<'_>> {
    vec![
        open_binding("e11", H11, 5000),
        open_binding("e12", H12, 5000),
        step(|_, l| l.set_num("later", cgnat::expiry::monotonic_ns() + HOUR_NS)),
        check("sweep an hour later quarantines both bindings", |h, l| {
            let (e, q, _) = sweep_until(h, l.num("later").unwrap_or(0))?;
            ensure!(
                q == 2 && e == 2,
                "sessions expired {e}, ports quarantined {q} (2 and 2 expected)"
            );
            Ok(())
        }),
        with(|l| {
            let p = from_net(Pkt::udp((R10, 3478), l.ep("e11"), b"late reply"));
            Case::ext("inbound to a quarantined port", p.bytes())
                .verdict(XDP_DROP, "drop_no_binding")
        }),
        with(|l| {
            let p = from_sub(Pkt::udp((H12, 5000), l.ep("e11"), b"late hairpin"));
            Case::int("hairpin to a quarantined port", p.bytes())
                .verdict(XDP_DROP, "drop_no_binding")
                .after(move |h| {
                    // .12's binding was released too: nothing may be
                    // recreated for a packet that is dropped
                    ensure!(
                        h.binding_out(H12, 5000, PROTO_UDP).is_none(),
                        "a binding was created for a dropped hairpin packet"
                    );
                    Ok(p.bytes())
                })
        }),
        with(|l| {
            let e11 = l.ep("e11");
            let p = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"again"));
            let q = p.clone();
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
            })
        }),
        // past the quarantine, everything idle again: the port is free
        check("sweep after the quarantine frees the ports", |h, l| {
            let (_, _, f) = sweep_until(h, l.num("later").unwrap_or(0) + 2 * HOUR_NS)?;
            ensure!(f >= 2, "ports freed {f} (at least 2 expected)");
            Ok(())
        }),
        check("the quarantined port is gone from bind_in", |h, l| {
            let e11 = l.ep("e11");
            ensure!(
                h.binding_in(e11.0, e11.1, PROTO_UDP).is_none(),
                "bind_in still holds {}:{}",
                e11.0,
                e11.1
            );
            Ok(())
        }),
        with(|l| {
            let e11 = l.ep("e11");
            let p = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"fresh"));
            let q = p.clone();
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
            })
        }),
    ]
}
