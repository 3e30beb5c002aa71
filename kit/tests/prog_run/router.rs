//! The router's part: MSS clamping, ICMP rate limit, route cache, held
//! frames toward unresolved next hops, TTL before the next hop.

use super::*;

/// TCP MSS clamping (nat.mss_clamp) in both directions, the option at an
/// even and at an odd offset (the checksum update differs). The option loop
/// is live code only with mss_clamp != 0, so this test is also the one
/// that makes the verifier walk it.
#[test]
fn mss_clamping() {
    if !privileged("mss_clamping") {
        return;
    }
    let ns = NetNs::create("q");
    ns.enter(|| {
        let mut h = Harness::load_with(
            "mss_clamping",
            "max_sessions = 512\nmax_bindings = 512\nmss_clamp = 1452",
            "",
        );
        mss_cases(&mut h);
        h.finish();
    });
}

fn mss_cases(h: &mut Harness) {
    fn mss(v: u16) -> [u8; 4] {
        [2u8, 4, (v >> 8) as u8, v as u8]
    }
    let even = |v: u16| {
        let m = mss(v);
        vec![m[0], m[1], m[2], m[3], 1, 3, 3, 7] // MSS, NOP, window scale 7
    };
    let odd = |v: u16| {
        let m = mss(v);
        vec![1, m[0], m[1], m[2], m[3], 1, 1, 0] // NOP, MSS, NOP, NOP, EOL
    };
    let p = from_sub(Pkt::tcp((H11, 40000), (R10, 80), TCP_SYN).tcp_opts(&even(1460)));
    let q = p.clone();
    h.run(
        Case::int(
            "outbound SYN, MSS 1460 at an even offset: clamped to 1452",
            p.bytes(),
        )
        .verdict(XDP_REDIRECT, "fwd_out")
        .after(move |h| {
            let ext = h.external_of(&q)?;
            Ok(outbound(&q.clone().tcp_opts(&even(1452)), ext))
        }),
    );
    let Some(et) = learned(h, "TCP binding", h.external_of(&p)) else {
        return;
    };
    let p = from_sub(Pkt::tcp((H11, 40000), (R10, 80), TCP_SYN).tcp_opts(&odd(1460)));
    h.run(
        Case::int(
            "outbound SYN, MSS 1460 at an odd offset: clamped to 1452",
            p.bytes(),
        )
        .verdict(XDP_REDIRECT, "fwd_out")
        .frame(outbound(&p.clone().tcp_opts(&odd(1452)), et)),
    );
    let p = from_sub(Pkt::tcp((H11, 40000), (R10, 80), TCP_SYN).tcp_opts(&odd(1400)));
    h.run(
        Case::int(
            "outbound SYN, MSS 1400: below the clamp, untouched",
            p.bytes(),
        )
        .verdict(XDP_REDIRECT, "fwd_out")
        .frame(outbound(&p, et)),
    );
    let p = from_sub(Pkt::tcp((H11, 40000), (R10, 80), TCP_ACK).tcp_opts(&even(1460)));
    h.run(
        Case::int(
            "outbound ACK carrying an MSS option: not a SYN, untouched",
            p.bytes(),
        )
        .verdict(XDP_REDIRECT, "fwd_out")
        .frame(outbound(&p, et)),
    );
    let p = from_net(Pkt::tcp((R10, 80), et, TCP_SYN | TCP_ACK).tcp_opts(&odd(8960)));
    h.run(
        Case::ext(
            "inbound SYN-ACK, MSS 8960 at an odd offset: clamped",
            p.bytes(),
        )
        .verdict(XDP_REDIRECT, "fwd_in")
        .frame(inbound(&p.clone().tcp_opts(&odd(1452)), (H11, 40000))),
    );
}

/// Generated ICMP errors are rate-limited per CPU ([icmp] rate_limit is
/// also the burst); the excess is dropped and counted by its reason.
#[test]
fn icmp_rate_limit() {
    if !privileged("icmp_rate_limit") {
        return;
    }
    let ns = NetNs::create("r");
    ns.enter(|| {
        // one CPU, one token bucket
        let mut set = nix::sched::CpuSet::new();
        set.set(0).expect("cpu 0");
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
            .expect("sched_setaffinity");
        let mut h = Harness::load_with("icmp_rate_limit", "", "[icmp]\nrate_limit = 2");
        for i in 0..3 {
            let p = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"ttl 1").ttl(1));
            let c = if i < 2 {
                Case::int(
                    format!("TTL 1 #{}: within the burst, ICMP sent", i + 1),
                    p.bytes(),
                )
                .verdict(XDP_TX, "icmp_time_exceeded")
                .frame(generated_error(&p, ROUTER_INT, 11, 0, 0))
            } else {
                Case::int("TTL 1 #3: over the limit, dropped", p.bytes())
                    .verdict(XDP_DROP, "drop_ttl")
            };
            h.run(c);
        }
        h.finish();
    });
}

/// The route cache (include/cgnat.h `struct cgnat_route`): an established
/// flow's next packets reuse the FIB's answer; a generation bump (what the
/// daemon's rtnetlink watcher does on any routing change), the entry's age
/// and policy routing rules all send the next packet back to the FIB.
#[test]
fn route_cache() {
    if !privileged("route_cache") {
        return;
    }
    const NEW_MAC: Mac = [0x02, 0x77, 0, 0, 0, 0x10];
    let ns = NetNs::create("rc");
    ns.enter(|| {
        // a long lifetime: only a bump can refresh an entry here
        let text = config_text_iface("route_cache = \"30s\"", "", "");
        let mut h = Harness::load_text("route_cache", &text);
        let gen = h.dp.route_gen().expect("route_gen");
        let g = gen.get().expect("route_gen value");
        h.check(
            "the cache is on under the default routing rules",
            if g.enabled == 1 {
                Ok(())
            } else {
                Err(format!(
                    "route_gen {{ gen: {}, enabled: {} }}",
                    g.gen, g.enabled
                ))
            },
        );
        let p = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"first"));
        let q = p.clone();
        h.run(
            Case::int("first packet: FIB lookup, cached", p.bytes())
                .verdict(XDP_REDIRECT, "fwd_out")
                .after(move |h| Ok(outbound(&q, h.external_of(&q)?))),
        );
        let r = h.external_of(&p);
        let Some(ext) = learned(&mut h, "binding", r) else {
            h.finish();
            return;
        };
        let entries = Harness::count_entries(&h.dp.tables().expect("tables").sessions);
        h.check(
            "one session",
            if entries == 1 {
                Ok(())
            } else {
                Err(format!("{entries} sessions"))
            },
        );
        let to = |p: &Pkt, mac: Mac| outbound_to(p, ext, mac);

        // The neighbour's MAC changes behind the cache's back: the cached
        // answer is still used (this is what makes it a cache) ...
        ns.add_neigh(R10, &NEW_MAC, "ext0");
        let p = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"cached"));
        h.run(
            Case::int("neighbour changed, no bump: the cached MAC", p.bytes())
                .verdict(XDP_REDIRECT, "fwd_out")
                .frame(to(&p, mac_of(R10))),
        );
        // ... until the generation moves.
        gen.bump(true).expect("bump");
        let p = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"after bump"));
        h.run(
            Case::int("after a bump: the new MAC", p.bytes())
                .verdict(XDP_REDIRECT, "fwd_out")
                .frame(to(&p, NEW_MAC)),
        );

        // A blackhole route: dropped as no route once the change is known,
        // forwarded again once it is gone.
        ns.ip(&format!("route add blackhole {R10}/32"));
        gen.bump(true).expect("bump");
        let p = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"blackholed"));
        h.run(Case::int("blackhole route: no route", p.bytes()).verdict(XDP_DROP, "drop_no_route"));
        h.run(
            Case::int(
                "blackhole route, again (failures are never cached)",
                p.bytes(),
            )
            .verdict(XDP_DROP, "drop_no_route"),
        );
        ns.ip(&format!("route del blackhole {R10}/32"));
        gen.bump(true).expect("bump");
        let p = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"route back"));
        h.run(
            Case::int("blackhole removed: forwarded", p.bytes())
                .verdict(XDP_REDIRECT, "fwd_out")
                .frame(to(&p, NEW_MAC)),
        );

        // The path MTU is cached with the route: a lower MTU on ext0 is
        // learned at the next lookup and enforced from the cache.
        ns.ip("link set ext0 mtu 1400");
        gen.bump(true).expect("bump");
        let small = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"mtu 1400"));
        h.run(
            Case::int("MTU 1400: small packet, new lookup", small.bytes())
                .verdict(XDP_REDIRECT, "fwd_out")
                .frame(to(&small, NEW_MAC)),
        );
        let big = from_sub(Pkt::udp((H11, 5000), (R10, 3478), &[0x5a; 1400]));
        h.run(
            Case::int(
                "1428-byte DF datagram over the cached MTU 1400: 3/4",
                big.bytes(),
            )
            .verdict(XDP_TX, "icmp_frag_needed")
            .frame(generated_error(&big, ROUTER_INT, 3, 4, 1400)),
        );
        ns.ip("link set ext0 mtu 1500");
        gen.bump(true).expect("bump");

        // Switched off: every packet asks the FIB, so a change shows at once.
        gen.bump(false).expect("bump");
        ns.add_neigh(R10, &mac_of(R10), "ext0");
        let p = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"cache off"));
        h.run(
            Case::int("cache off: the FIB's current MAC", p.bytes())
                .verdict(XDP_REDIRECT, "fwd_out")
                .frame(to(&p, mac_of(R10))),
        );
        h.finish();

        // A short lifetime: the entry ages out without any bump.
        let text = config_text_iface("route_cache = \"200ms\"", "", "");
        let mut h = Harness::load_text("route_cache_ttl", &text);
        let p = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"warm"));
        let q = p.clone();
        h.run(
            Case::int("warm the cache", p.bytes())
                .verdict(XDP_REDIRECT, "fwd_out")
                .after(move |h| Ok(outbound(&q, h.external_of(&q)?))),
        );
        ns.add_neigh(R10, &NEW_MAC, "ext0");
        std::thread::sleep(std::time::Duration::from_millis(400));
        match h.external_of(&p) {
            Ok(ext) => {
                let p = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"aged out"));
                let exp = p
                    .clone()
                    .with_src(ext.0, ext.1)
                    .ttl(p.ttl - 1)
                    .macs(EXT0_MAC, NEW_MAC)
                    .bytes();
                h.run(
                    Case::int("400 ms later (lifetime 200 ms): the new MAC", p.bytes())
                        .verdict(XDP_REDIRECT, "fwd_out")
                        .frame(exp),
                );
            }
            Err(e) => h.check("binding of the warm-up packet", Err(e)),
        }
        ns.add_neigh(R10, &mac_of(R10), "ext0");
        h.finish();

        // A policy routing rule turns the cache off at load.
        ns.ip("rule add from 192.0.2.99 lookup 100 priority 100");
        let h = Harness::load_text("route_cache_rules", &config_text("", ""));
        let g = h.dp.route_gen().expect("route_gen").get().expect("value");
        ns.ip("rule del from 192.0.2.99 lookup 100 priority 100");
        let mut h = h;
        h.check(
            "with an ip rule beyond the defaults the cache is off",
            if g.enabled == 0 {
                Ok(())
            } else {
                Err("route_gen.enabled is 1".into())
            },
        );
        h.finish();
    });
}

/// RFC 1812 4.3.3.1 (bpf/neigh.h): a packet toward a next hop without a
/// neighbour entry is held as it arrived, at most CGNAT_HOLD_PER_HOP per
/// next hop, and nothing is created for it; once resolution has failed,
/// packets toward that next hop are answered with ICMP host unreachable;
/// once the neighbour exists, packets are forwarded.
#[test]
fn neighbour_hold() {
    if !privileged("neighbour_hold") {
        return;
    }
    // on ext0's link, without a neighbour entry
    const DARK: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 77);
    let per_hop = types::cgnat_hold_limit::CGNAT_HOLD_PER_HOP.0 as usize;
    let ns = NetNs::create("nh");
    ns.enter(|| {
        let mut h = Harness::load("neighbour_hold");
        let hold = |h: &Harness| -> Vec<(types::cgnat_hold_key, Vec<u8>)> {
            use libbpf_rs::MapCore;
            let m = h.dp.neigh_hold_map();
            m.keys()
                .filter_map(|k| {
                    let key = cgnat::bpf::from_bytes::<types::cgnat_hold_key>(&k)?;
                    let v = m.lookup(&k, libbpf_rs::MapFlags::ANY).ok()??;
                    let st = cgnat::bpf::from_bytes::<types::cgnat_stash>(&v)?;
                    Some((key, st.data[..st.len as usize].to_vec()))
                })
                .collect()
        };
        let mut sent = Vec::new();
        for i in 0..per_hop {
            let p = from_sub(Pkt::udp((H11, 6000 + i as u16), (DARK, 53), b"held"));
            sent.push(p.bytes());
            let q = p.clone();
            h.run(
                Case::int(format!("unresolved next hop: held ({i})"), p.bytes())
                    .verdict(XDP_DROP, "neigh_held")
                    .after(move |h| {
                        ensure!(
                            h.bind_out(q.src, q.sport(), PROTO_UDP).is_none(),
                            "a binding was created for a held packet"
                        );
                        Ok(q.bytes())
                    }),
            );
        }
        let held = hold(&h);
        h.check(
            "the queue holds each frame byte for byte, under its next hop",
            if held.len() == per_hop
                && held
                    .iter()
                    .all(|(k, f)| k.nexthop == u32::from(DARK).to_be() && sent.contains(f))
            {
                Ok(())
            } else {
                Err(format!("{} frames held", held.len()))
            },
        );
        let p = from_sub(Pkt::udp((H11, 6100), (DARK, 53), b"one too many"));
        h.run(
            Case::int("the next hop's queue is full: counted", p.bytes())
                .verdict(XDP_DROP, "drop_no_neigh"),
        );

        // resolution failed: the held frames are re-run and the next
        // packets answered at once with 3/1 from int0's address
        let answered = |h: &Harness| -> u64 {
            h.counters()
                .iter()
                .filter(|c| c.0 == "icmp_host_unreach" || c.0 == "drop_neigh_failed")
                .map(|c| c.1)
                .sum()
        };
        let before = answered(&h);
        let n = h.dp.release_held(DARK, true).expect("release");
        // the re-runs are program runs too (for the accounting check)
        h.runs += n as u64;
        let after = answered(&h);
        h.check(
            "every held frame re-run and answered (3/1 or a counted drop)",
            if n == per_hop && hold(&h).is_empty() && after - before == n as u64 {
                Ok(())
            } else {
                Err(format!(
                    "{n} re-run, {} still held, {} answered",
                    hold(&h).len(),
                    after - before
                ))
            },
        );
        let p = from_sub(Pkt::udp((H11, 6200), (DARK, 53), b"after failure"));
        let q = p.clone();
        h.run(
            Case::int("next hop failed: ICMP host unreachable", p.bytes())
                .verdict(XDP_TX, "icmp_host_unreach")
                .frame(generated_error(&q, ROUTER_INT, 3, 1, 0)),
        );

        // the neighbour appears: forwarded
        ns.add_neigh(DARK, &mac_of(R10), "ext0");
        let p = from_sub(Pkt::udp((H11, 6300), (DARK, 53), b"resolved"));
        let q = p.clone();
        h.run(
            Case::int("neighbour resolved: forwarded", p.bytes())
                .verdict(XDP_REDIRECT, "fwd_out")
                .after(move |h| Ok(outbound_to(&q, h.external_of(&q)?, mac_of(R10)))),
        );
        h.finish();
    });
}

/// RFC 1812 5.3.1: TTL is looked at before the next hop, so a TTL 1
/// packet toward an unresolved next hop is answered with time exceeded
/// (traceroute's first hop), outbound and inbound.
#[test]
fn ttl_before_next_hop() {
    if !privileged("ttl_before_next_hop") {
        return;
    }
    const DARK: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 78);
    let ns = NetNs::create("tn");
    ns.enter(|| {
        let mut h = Harness::load("ttl_before_next_hop");
        let p = from_sub(Pkt::udp((H11, 7000), (DARK, 33434), b"probe").ttl(1));
        let q = p.clone();
        h.run(
            Case::int(
                "TTL 1 toward an unresolved next hop: time exceeded",
                p.bytes(),
            )
            .verdict(XDP_TX, "icmp_time_exceeded")
            .frame(generated_error(&q, ROUTER_INT, 11, 0, 0)),
        );
        let p = from_sub(Pkt::udp((H11, 7000), (DARK, 33435), b"probe").ttl(2));
        h.run(Case::int("TTL 2 toward it: held", p.bytes()).verdict(XDP_DROP, "neigh_held"));
        h.finish();
    });
}
