//! Paths.

use super::*;

pub(super) struct PathCase {
    name: &'static str,
    what: &'static str,
    side: Side,
    ingress: u32,
    frame: Vec<u8>,
    reason: &'static str,
    action: u32,
    /// Measure xdp_probe too (outbound TCP/UDP: binding, then session).
    probe: bool,
}

pub(super) fn bench_paths(p: &Params, ns: &Ns) -> Result<Vec<PathResult>> {
    in_ns(ns, || {
        let cfg = prog_config(1 << 20, 1 << 18, 65_536)?;
        let dp = load_dp(&cfg, false)?;
        let t = dp.tables().ctx("tables")?;
        let (int0, ext0, lo) = (ifindex("int0")?, ifindex("ext0")?, ifindex("lo")?);
        let mut fl = Floor::load(lo, 1, (1 << 18, 1 << 20)).ctx("loading the floor")?;
        fl.add_tx_port(int0).ctx("floor tx_ports")?;
        fl.add_tx_port(ext0).ctx("floor tx_ports")?;
        let cases = path_cases(&dp, &t, int0, ext0)?;
        // xdp_probe looks up what cgnat has
        let probe = fl.probe_maps()?;
        for (k, v) in t.bindings.dump_out().ctx("reading cgnat's maps")? {
            probe
                .0
                .update(bytes_of(&k), bytes_of(&v), MapFlags::ANY)
                .ctx("filling xdp_probe's maps")?;
        }
        for (k, v) in t.sessions.dump().ctx("reading cgnat's maps")? {
            probe
                .1
                .update(bytes_of(&k), bytes_of(&v), MapFlags::ANY)
                .ctx("filling xdp_probe's maps")?;
        }
        let mut out = Vec::new();
        for c in cases {
            if !p.paths.is_empty() && !p.paths.iter().any(|n| n == c.name) {
                continue;
            }
            fl.set_frames(std::slice::from_ref(&c.frame))
                .ctx("feeder frames")?;
            let (fa, _) = fl
                .run(Prog::Floor, &c.frame, c.ingress, 1)
                .ctx("floor run")?;
            if fa != c.action {
                return fail(format!(
                    "{}: the floor returned action {fa}, cgnat {}",
                    c.name, c.action
                ));
            }
            let (mut cg, mut flr, mut emp, mut prb) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for _ in 0..p.runs {
                let (_, e) = feed(&fl, Target::Empty, c.ingress, p.repeat)?;
                let (fa, f) = feed(&fl, Target::Floor, c.ingress, p.repeat)?;
                if fa != c.action {
                    return fail(format!("{}: floor action {fa} under the feeder", c.name));
                }
                let g = feed_cgnat(&fl, &dp, &t, c.side, c.ingress, p.repeat, c.reason)?;
                if c.probe {
                    let hits = fl.probe_hits();
                    let (_, x) = feed(&fl, Target::Probe, c.ingress, p.repeat)?;
                    if fl.probe_hits() - hits != u64::from(p.repeat) {
                        return fail(format!("{}: xdp_probe missed the session", c.name));
                    }
                    prb.push(x - e);
                }
                emp.push(e);
                flr.push(f - e);
                cg.push(g - e);
            }
            let n = p.single_calls;
            let se = single_median(n, || fl.run(Prog::Empty, &c.frame, c.ingress, 1))?;
            let sf = single_median(n, || fl.run(Prog::Floor, &c.frame, c.ingress, 1))?;
            let sc = single_median(n, || {
                dp.run(c.side, &c.frame, c.ingress, 1)
                    .map(|r| (r.action, r.mean_ns))
            })?;
            let r = PathResult {
                name: c.name,
                what: c.what,
                cgnat_ns: Stat::of(cg),
                floor_ns: Stat::of(flr),
                feeder_ns: Stat::of(emp),
                probe_ns: (!prb.is_empty()).then(|| Stat::of(prb)),
                single_cgnat_ns: sc - se,
                single_floor_ns: sf - se,
            };
            eprintln!(
                "bench:   {:<14} cgnat {:6.1} ns  floor {:6.1} ns  ratio {:.2}",
                r.name,
                r.cgnat_ns.median(),
                r.floor_ns.median(),
                r.ratio()
            );
            out.push(r);
        }
        Ok(out)
    })
}

/// Establishes the sessions with first packets and returns the frames to
/// measure, each with its side, verdict counter and action.
pub(super) fn path_cases(dp: &Datapath, t: &Tables, int0: u32, ext0: u32) -> Result<Vec<PathCase>> {
    let (i, e) = (Side::Internal, Side::External);
    let from_sub = |p: Pkt| eth(INT0_MAC, SUB_MAC, p);
    let from_net = |p: Pkt| eth(EXT0_MAC, REM_MAC, p);

    // UDP
    let (h11, r10) = (sock(H11, 5000), sock(R10, 3478));
    let udp_out = udp_frame(INT0_MAC, SUB_MAC, h11, r10);
    run_once(dp, i, &udp_out, int0, XDP_REDIRECT)?;
    let e11 = external_of(t, h11, PROTO_UDP)?;
    let udp_in = udp_frame(EXT0_MAC, REM_MAC, r10, e11);
    run_once(dp, e, &udp_in, ext0, XDP_REDIRECT)?;

    // TCP: SYN out, SYN-ACK in, then ACKs both ways
    let (h11t, r80) = (sock(H11, 40000), sock(R10, 80));
    run_once(
        dp,
        i,
        &from_sub(tcp(h11t, r80, 0x02, 1000, 0)),
        int0,
        XDP_REDIRECT,
    )?;
    let et = external_of(t, h11t, PROTO_TCP)?;
    run_once(
        dp,
        e,
        &from_net(tcp(r80, et, 0x12, 5000, 1001)),
        ext0,
        XDP_REDIRECT,
    )?;
    let tcp_out = from_sub(tcp(h11t, r80, 0x10, 1001, 5001));
    run_once(dp, i, &tcp_out, int0, XDP_REDIRECT)?;
    let tcp_in = from_net(tcp(r80, et, 0x10, 5001, 1001));
    run_once(dp, e, &tcp_in, ext0, XDP_REDIRECT)?;

    // Hairpin: .12 to .11's external endpoint
    let hair = udp_frame(INT0_MAC, [0x02, 0x11, 0, 0, 0, 0x12], sock(H12, 5000), e11);
    run_once(dp, i, &hair, int0, XDP_TX)?;

    // ICMP echo request out (identifier 0x4242)
    let echo = from_sub(icmp(H11, R10, 8, 0, (0x4242, 1), PAYLOAD));
    run_once(dp, i, &echo, int0, XDP_REDIRECT)?;

    // ICMP port unreachable from the remote about .11's translated UDP
    // packet (RFC 792 quote: IP header + 8 bytes)
    let sent = udp(e11, r10).ttl(63);
    let err = from_net(icmp(R10, *e11.ip(), 3, 3, (0, 0), &sent.quote()));
    run_once(dp, e, &err, ext0, XDP_REDIRECT)?;

    let case = |name, what, side, ingress, frame, reason, action| PathCase {
        name,
        what,
        side,
        ingress,
        frame,
        reason,
        action,
        probe: reason == "fwd_out" && side == Side::Internal && name != "icmp_echo_out",
    };
    Ok(vec![
        case(
            "udp_out",
            "UDP outbound, established",
            i,
            int0,
            udp_out,
            "fwd_out",
            XDP_REDIRECT,
        ),
        case(
            "udp_in",
            "UDP inbound, established",
            e,
            ext0,
            udp_in,
            "fwd_in",
            XDP_REDIRECT,
        ),
        case(
            "tcp_out",
            "TCP ACK outbound, established",
            i,
            int0,
            tcp_out,
            "fwd_out",
            XDP_REDIRECT,
        ),
        case(
            "tcp_in",
            "TCP ACK inbound, established",
            e,
            ext0,
            tcp_in,
            "fwd_in",
            XDP_REDIRECT,
        ),
        case(
            "hairpin",
            "UDP subscriber to subscriber via the pool",
            i,
            int0,
            hair,
            "fwd_hairpin",
            XDP_TX,
        ),
        case(
            "icmp_echo_out",
            "ICMP echo request outbound",
            i,
            int0,
            echo,
            "fwd_out",
            XDP_REDIRECT,
        ),
        case(
            "icmp_err_in",
            "ICMP error inbound (3/3 quoting UDP)",
            e,
            ext0,
            err,
            "fwd_in",
            XDP_REDIRECT,
        ),
    ])
}
