//! New flows.

use super::*;

/// Subscribers new flows cycle over (100.65.0.0 + n).
pub(super) const NEW_FLOW_SUBS: u32 = 4096;

pub(super) fn bench_new_flows(p: &Params, ns: &Ns) -> Result<NewFlowResult> {
    in_ns(ns, || {
        let total = u64::from(p.new_flows) * p.runs as u64;
        let size = (total + 4096).next_power_of_two().max(1024) as u32;
        let cfg = prog_config(size, size, 65_536)?;
        let dp = load_dp(&cfg, false)?;
        let t = dp.tables().ctx("tables")?;
        let int0 = ifindex("int0")?;
        let fl = Floor::load(0, 1, (1, 1)).ctx("loading the floor")?;
        let r10 = sock(R10, 3478);
        let est = udp_frame(INT0_MAC, SUB_MAC, sock(H11, 5000), r10);
        run_once(&dp, Side::Internal, &est, int0, XDP_REDIRECT)?;

        // The daemon drains the event ring (binding log records); so do we.
        let events = std::cell::Cell::new(0u64);
        let mut rb = libbpf_rs::RingBufferBuilder::new();
        rb.add(dp.events(), |_| {
            events.set(events.get() + 1);
            0
        })
        .ctx("ring buffer")?;
        let rb = rb.build().ctx("ring buffer")?;

        let base = u32::from(Ipv4Addr::new(100, 65, 0, 0));
        let n = p.new_flows as usize;
        let mut r = NewFlowResult {
            flows_per_run: p.new_flows,
            subscribers: NEW_FLOW_SUBS,
            new_ns: Stat::default(),
            new_mean_ns: Stat::default(),
            est_ns: Stat::default(),
            est_mean_ns: Stat::default(),
            overhead_ns: Stat::default(),
        };
        for run in 0..p.runs {
            let frames: Vec<Vec<u8>> = (0..n)
                .map(|k| {
                    let g = (run * n + k) as u32;
                    let src = Ipv4Addr::from(base + g % NEW_FLOW_SUBS);
                    let port = 1024 + (g / NEW_FLOW_SUBS) as u16;
                    udp_frame(INT0_MAC, SUB_MAC, sock(src, port), r10)
                })
                .collect();
            let before = counter(&t, "fwd_out")?;
            let mut new = Vec::with_capacity(n);
            for (k, f) in frames.iter().enumerate() {
                let (act, ns) = dp
                    .run(Side::Internal, f, int0, 1)
                    .map(|r| (r.action, r.mean_ns))
                    .ctx("BPF_PROG_TEST_RUN")?;
                if act != XDP_REDIRECT {
                    return fail(format!("new flow {k} got XDP action {act}"));
                }
                new.push(ns as f64);
                if k % 256 == 255 {
                    let _ = rb.consume();
                }
            }
            let _ = rb.consume();
            let got = counter(&t, "fwd_out")? - before;
            if got != n as u64 {
                return fail(format!("{got} of {n} new flows forwarded"));
            }
            let mut estv = Vec::with_capacity(n);
            let mut emp = Vec::with_capacity(n);
            for _ in 0..n {
                let (_, ns) = dp
                    .run(Side::Internal, &est, int0, 1)
                    .map(|r| (r.action, r.mean_ns))
                    .ctx("BPF_PROG_TEST_RUN")?;
                estv.push(ns as f64);
                let (_, ns) = fl
                    .run(Prog::Empty, &est, int0, 1)
                    .ctx("BPF_PROG_TEST_RUN")?;
                emp.push(ns as f64);
            }
            let o = median(&emp);
            r.overhead_ns.runs.push(o);
            r.new_ns.runs.push(median(&new) - o);
            r.new_mean_ns.runs.push(mean(&new) - o);
            r.est_ns.runs.push(median(&estv) - o);
            r.est_mean_ns.runs.push(mean(&estv) - o);
        }
        let _ = events.get();
        eprintln!(
            "bench:   new flow {:.0} ns, established {:.0} ns, {:.0} flows/s",
            r.new_ns.median(),
            r.est_ns.median(),
            r.flows_per_sec()
        );
        Ok(r)
    })
}
