//! External ports: collisions between subscribers sharing an address, and
//! the quarantine of an expired binding's port.

use super::*;

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
