//! The router's part: MSS clamping, ICMP rate limit, route cache, held
//! frames toward unresolved next hops, TTL before the next hop.

use super::*;

/// TCP MSS clamping (nat.mss_clamp) in both directions, the option at an
/// even and at an odd offset (the checksum update differs). The option loop
/// is live code only with mss_clamp != 0, so this test is also the one
/// that makes the verifier walk it.
#[test]
fn mss_clamping() {
    let config = config_text(
        "max_sessions = 512\nmax_bindings = 512\nmss_clamp = 1452",
        "",
    );
    table_test("mss_clamping", "q", &config, mss_rows);
}

/// TCP options holding an MSS option of `v` at an even offset.
fn mss_even(v: u16) -> Vec<u8> {
    let [hi, lo] = v.to_be_bytes();
    vec![2, 4, hi, lo, 1, 3, 3, 7] // MSS, NOP, window scale 7
}

/// TCP options holding an MSS option of `v` at an odd offset.
fn mss_odd(v: u16) -> Vec<u8> {
    let [hi, lo] = v.to_be_bytes();
    vec![1, 2, 4, hi, lo, 1, 1, 0] // NOP, MSS, NOP, NOP, EOL
}

fn mss_rows(_: &NetNs) -> Vec<Row<'_>> {
    let syn = |opts: Vec<u8>| from_sub(Pkt::tcp((H11, 40000), (R10, 80), TCP_SYN).tcp_opts(&opts));
    let p = syn(mss_even(1460));
    let q = p.clone();
    vec![
        Case::int(
            "outbound SYN, MSS 1460 at an even offset: clamped to 1452",
            p.bytes(),
        )
        .verdict(XDP_REDIRECT, "fwd_out")
        .after(move |h| {
            let ext = h.external_of(&q)?;
            Ok(outbound(&q.clone().tcp_opts(&mss_even(1452)), ext))
        })
        .into(),
        learn_ext("et", &p),
        with(move |l| {
            let p = syn(mss_odd(1460));
            Case::int(
                "outbound SYN, MSS 1460 at an odd offset: clamped to 1452",
                p.bytes(),
            )
            .verdict(XDP_REDIRECT, "fwd_out")
            .frame(outbound(&p.clone().tcp_opts(&mss_odd(1452)), l.ep("et")))
        }),
        with(move |l| {
            let p = syn(mss_odd(1400));
            Case::int(
                "outbound SYN, MSS 1400: below the clamp, untouched",
                p.bytes(),
            )
            .verdict(XDP_REDIRECT, "fwd_out")
            .frame(outbound(&p, l.ep("et")))
        }),
        with(|l| {
            let p = from_sub(Pkt::tcp((H11, 40000), (R10, 80), TCP_ACK).tcp_opts(&mss_even(1460)));
            Case::int(
                "outbound ACK carrying an MSS option: not a SYN, untouched",
                p.bytes(),
            )
            .verdict(XDP_REDIRECT, "fwd_out")
            .frame(outbound(&p, l.ep("et")))
        }),
        with(|l| {
            let p = from_net(
                Pkt::tcp((R10, 80), l.ep("et"), TCP_SYN | TCP_ACK).tcp_opts(&mss_odd(8960)),
            );
            Case::ext(
                "inbound SYN-ACK, MSS 8960 at an odd offset: clamped",
                p.bytes(),
            )
            .verdict(XDP_REDIRECT, "fwd_in")
            .frame(inbound(&p.clone().tcp_opts(&mss_odd(1452)), (H11, 40000)))
        }),
    ]
}

/// Generated ICMP errors are rate-limited per CPU ([icmp] rate_limit is
/// also the burst); the excess is dropped and counted by its reason.
#[test]
fn icmp_rate_limit() {
    let config = config_text("", "[icmp]\nrate_limit = 2");
    table_test("icmp_rate_limit", "r", &config, |_| {
        let p = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"ttl 1").ttl(1));
        vec![
            // one CPU, one token bucket
            step(|_, _| {
                let mut set = nix::sched::CpuSet::new();
                set.set(0).expect("cpu 0");
                nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
                    .expect("sched_setaffinity");
            }),
            Case::int("TTL 1 #1: within the burst, ICMP sent", p.bytes())
                .verdict(XDP_TX, "icmp_time_exceeded")
                .frame(generated_error(&p, ROUTER_INT, 11, 0, 0))
                .into(),
            Case::int("TTL 1 #2: within the burst, ICMP sent", p.bytes())
                .verdict(XDP_TX, "icmp_time_exceeded")
                .frame(generated_error(&p, ROUTER_INT, 11, 0, 0))
                .into(),
            Case::int("TTL 1 #3: over the limit, dropped", p.bytes())
                .verdict(XDP_DROP, "drop_ttl")
                .into(),
        ]
    });
}

/// A neighbour MAC the tables switch R10 to behind the cache's back.
const NEW_MAC: Mac = [0x02, 0x77, 0, 0, 0, 0x10];

/// Tells the program that routing changed (what the daemon's rtnetlink
/// watcher does on any change), with the cache on or off.
fn bump(h: &Harness, enabled: bool) {
    h.dp.route_gen()
        .expect("route_gen")
        .bump(enabled)
        .expect("bump");
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
    let ns = NetNs::create("rc");
    ns.enter(|| {
        // a long lifetime: only a bump can refresh an entry here
        let text = config_text_iface("route_cache = \"30s\"", "", "");
        let mut h = Harness::load_text("route_cache", &text);
        run_table(&mut h, route_cache_rows(&ns));
        h.finish();

        // A short lifetime: the entry ages out without any bump.
        let text = config_text_iface("route_cache = \"200ms\"", "", "");
        let mut h = Harness::load_text("route_cache_ttl", &text);
        run_table(&mut h, route_cache_ttl_rows(&ns));
        h.finish();

        // A policy routing rule turns the cache off at load.
        ns.ip("rule add from 192.0.2.99 lookup 100 priority 100");
        let mut h = Harness::load_text("route_cache_rules", &config_text("", ""));
        let rows = vec![
            check(
                "with an ip rule beyond the defaults the cache is off",
                |h, _| {
                    let g = h.dp.route_gen().expect("route_gen").get().expect("value");
                    ensure!(g.enabled == 0, "route_gen.enabled is 1");
                    Ok(())
                },
            ),
            step(|_, _| ns.ip("rule del from 192.0.2.99 lookup 100 priority 100")),
        ];
        run_table(&mut h, rows);
        h.finish();
    });
}

fn route_cache_rows(ns: &NetNs) -> Vec<Row<'_>> {
    let udp = |payload: &[u8]| from_sub(Pkt::udp((H11, 5000), (R10, 3478), payload));
    // a packet of the flow, sent to the next hop whose MAC is `mac`
    let to = move |name: &'static str, payload: &'static [u8], mac: Mac| {
        with(move |l| {
            let p = udp(payload);
            Case::int(name, p.bytes())
                .verdict(XDP_REDIRECT, "fwd_out")
                .frame(outbound_to(&p, l.ep("ext"), mac))
        })
    };
    let big = udp(&[0x5a; 1400]);
    vec![
        check("the cache is on under the default routing rules", |h, _| {
            let g =
                h.dp.route_gen()
                    .expect("route_gen")
                    .get()
                    .expect("route_gen value");
            ensure!(
                g.enabled == 1,
                "route_gen {{ gen: {}, enabled: {} }}",
                g.gen,
                g.enabled
            );
            Ok(())
        }),
        bind_row("first packet: FIB lookup, cached", udp(b"first"), "ext"),
        check("one session", |h, _| {
            let t = h.dp.tables().expect("tables");
            let n = t.sessions.count().expect("counting sessions");
            ensure!(n == 1, "{n} sessions");
            Ok(())
        }),
        // The neighbour's MAC changes behind the cache's back: the cached
        // answer is still used (this is what makes it a cache) ...
        step(|_, _| ns.add_neigh(R10, &NEW_MAC, "ext0")),
        to(
            "neighbour changed, no bump: the cached MAC",
            b"cached",
            mac_of(R10),
        ),
        // ... until the generation moves.
        step(|h, _| bump(h, true)),
        to("after a bump: the new MAC", b"after bump", NEW_MAC),
        // A blackhole route: dropped as no route once the change is known,
        // forwarded again once it is gone.
        step(|h, _| {
            ns.ip(&format!("route add blackhole {R10}/32"));
            bump(h, true);
        }),
        Case::int("blackhole route: no route", udp(b"blackholed").bytes())
            .verdict(XDP_DROP, "drop_no_route")
            .into(),
        Case::int(
            "blackhole route, again (failures are never cached)",
            udp(b"blackholed").bytes(),
        )
        .verdict(XDP_DROP, "drop_no_route")
        .into(),
        step(|h, _| {
            ns.ip(&format!("route del blackhole {R10}/32"));
            bump(h, true);
        }),
        to("blackhole removed: forwarded", b"route back", NEW_MAC),
        // The path MTU is cached with the route: a lower MTU on ext0 is
        // learned at the next lookup and enforced from the cache.
        step(|h, _| {
            ns.ip("link set ext0 mtu 1400");
            bump(h, true);
        }),
        to("MTU 1400: small packet, new lookup", b"mtu 1400", NEW_MAC),
        Case::int(
            "1428-byte DF datagram over the cached MTU 1400: 3/4",
            big.bytes(),
        )
        .verdict(XDP_TX, "icmp_frag_needed")
        .frame(generated_error(&big, ROUTER_INT, 3, 4, 1400))
        .into(),
        // Switched off: every packet asks the FIB, so a change shows at once.
        step(|h, _| {
            ns.ip("link set ext0 mtu 1500");
            bump(h, true);
            bump(h, false);
            ns.add_neigh(R10, &mac_of(R10), "ext0");
        }),
        to(
            "cache off: the FIB's current MAC",
            b"cache off",
            mac_of(R10),
        ),
    ]
}

fn route_cache_ttl_rows(ns: &NetNs) -> Vec<Row<'_>> {
    vec![
        bind_row(
            "warm the cache",
            from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"warm")),
            "ext",
        ),
        step(|_, _| {
            ns.add_neigh(R10, &NEW_MAC, "ext0");
            std::thread::sleep(std::time::Duration::from_millis(400));
        }),
        with(|l| {
            let p = from_sub(Pkt::udp((H11, 5000), (R10, 3478), b"aged out"));
            Case::int("400 ms later (lifetime 200 ms): the new MAC", p.bytes())
                .verdict(XDP_REDIRECT, "fwd_out")
                .frame(outbound_to(&p, l.ep("ext"), NEW_MAC))
        }),
        step(|_, _| ns.add_neigh(R10, &mac_of(R10), "ext0")),
    ]
}

/// A next hop on ext0's link without a neighbour entry.
const DARK: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 77);

/// The frames the hold queue keeps, with their keys.
fn held_frames(h: &Harness) -> Vec<(types::cgnat_hold_key, Vec<u8>)> {
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
}

/// Packets a failed next hop was answered with: 3/1 or a counted drop.
fn answered(h: &Harness) -> u64 {
    h.counters()
        .iter()
        .filter(|c| c.0 == "icmp_host_unreach" || c.0 == "drop_neigh_failed")
        .map(|c| c.1)
        .sum()
}

/// RFC 1812 4.3.3.1 (bpf/neigh.h): a packet toward a next hop without a
/// neighbour entry is held as it arrived, at most CGNAT_HOLD_PER_HOP per
/// next hop, and nothing is created for it; once resolution has failed,
/// packets toward that next hop are answered with ICMP host unreachable;
/// once the neighbour exists, packets are forwarded.
#[test]
fn neighbour_hold() {
    table_test("neighbour_hold", "nh", &config_text("", ""), neighbour_rows);
}

fn neighbour_rows(ns: &NetNs) -> Vec<Row<'_>> {
    let per_hop = types::cgnat_hold_limit::CGNAT_HOLD_PER_HOP.0 as usize;
    let held: Vec<Pkt> = (0..per_hop)
        .map(|i| from_sub(Pkt::udp((H11, 6000 + i as u16), (DARK, 53), b"held")))
        .collect();
    let sent: Vec<Vec<u8>> = held.iter().map(Pkt::bytes).collect();
    let mut rows: Vec<Row> = held
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let q = p.clone();
            Case::int(format!("unresolved next hop: held ({i})"), p.bytes())
                .verdict(XDP_DROP, "neigh_held")
                .after(move |h| {
                    ensure!(
                        h.binding_out(q.src, q.sport(), PROTO_UDP).is_none(),
                        "a binding was created for a held packet"
                    );
                    Ok(q.bytes())
                })
                .into()
        })
        .collect();
    let failed = from_sub(Pkt::udp((H11, 6200), (DARK, 53), b"after failure"));
    let resolved = from_sub(Pkt::udp((H11, 6300), (DARK, 53), b"resolved"));
    let q = resolved.clone();
    rows.extend([
        check(
            "the queue holds each frame byte for byte, under its next hop",
            move |h, _| {
                let held = held_frames(h);
                ensure!(
                    held.len() == per_hop
                        && held
                            .iter()
                            .all(|(k, f)| k.nexthop == u32::from(DARK).to_be() && sent.contains(f)),
                    "{} frames held",
                    held.len()
                );
                Ok(())
            },
        ),
        Case::int(
            "the next hop's queue is full: counted",
            from_sub(Pkt::udp((H11, 6100), (DARK, 53), b"one too many")).bytes(),
        )
        .verdict(XDP_DROP, "drop_no_neigh")
        .into(),
        // resolution failed: the held frames are re-run and the next
        // packets answered at once with 3/1 from int0's address
        step(|h, l| {
            l.set_num("answered before", answered(h));
            let n = h.dp.release_held(DARK, true).expect("release");
            // the re-runs are program runs too (for the accounting check)
            h.runs += n as u64;
            l.set_num("re-run", n as u64);
        }),
        check(
            "every held frame re-run and answered (3/1 or a counted drop)",
            move |h, l| {
                let n = l.num("re-run").unwrap_or(0);
                let answered = answered(h) - l.num("answered before").unwrap_or(0);
                let still = held_frames(h).len();
                ensure!(
                    n == per_hop as u64 && still == 0 && answered == n,
                    "{n} re-run, {still} still held, {answered} answered"
                );
                Ok(())
            },
        ),
        Case::int("next hop failed: ICMP host unreachable", failed.bytes())
            .verdict(XDP_TX, "icmp_host_unreach")
            .frame(generated_error(&failed, ROUTER_INT, 3, 1, 0))
            .into(),
        // the neighbour appears: forwarded
        step(|_, _| ns.add_neigh(DARK, &mac_of(R10), "ext0")),
        Case::int("neighbour resolved: forwarded", resolved.bytes())
            .verdict(XDP_REDIRECT, "fwd_out")
            .after(move |h| Ok(outbound_to(&q, h.external_of(&q)?, mac_of(R10))))
            .into(),
    ]);
    rows
}

/// RFC 1812 5.3.1: TTL is looked at before the next hop, so a TTL 1
/// packet toward an unresolved next hop is answered with time exceeded
/// (traceroute's first hop), outbound and inbound.
#[test]
fn ttl_before_next_hop() {
    table_test("ttl_before_next_hop", "tn", &config_text("", ""), |_| {
        const DARK: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 78);
        let probe = from_sub(Pkt::udp((H11, 7000), (DARK, 33434), b"probe").ttl(1));
        vec![
            Case::int(
                "TTL 1 toward an unresolved next hop: time exceeded",
                probe.bytes(),
            )
            .verdict(XDP_TX, "icmp_time_exceeded")
            .frame(generated_error(&probe, ROUTER_INT, 11, 0, 0))
            .into(),
            Case::int(
                "TTL 2 toward it: held",
                from_sub(Pkt::udp((H11, 7000), (DARK, 33435), b"probe").ttl(2)).bytes(),
            )
            .verdict(XDP_DROP, "neigh_held")
            .into(),
        ]
    });
}
