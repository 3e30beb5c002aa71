//! Map and program-run helpers: counters, bindings, map memory, single
//! and fed BPF_PROG_TEST_RUN calls.

use super::*;

pub(super) fn be(a: Ipv4Addr) -> u32 {
    u32::from(a).to_be()
}

pub(super) fn counter(t: &Tables, reason: &str) -> Result<u64> {
    let c = cgnat::stats::read(&t.stats).ctx("reading stats")?;
    Ok(cgnat::stats::get(&c, reason))
}

/// The external endpoint of an internal one (its binding's outbound half).
pub(super) fn external_of(t: &Tables, int: SocketAddrV4, proto: u8) -> Result<SocketAddrV4> {
    let k = types::cgnat_endpoint {
        addr: be(*int.ip()),
        port: int.port().to_be(),
        proto,
        _pad: 0,
    };
    match t.bindings.get_out(&k)? {
        Some(b) => Ok(sock(
            Ipv4Addr::from(u32::from_be(b.addr)),
            u16::from_be(b.port),
        )),
        None => fail(format!("no binding for {int}/{proto}")),
    }
}

/// `memlock:` and `max_entries:` of a map, from /proc/self/fdinfo.
pub(super) fn map_mem(name: &'static str, m: &MapHandle) -> Result<MapMem> {
    let path = format!("/proc/self/fdinfo/{}", m.as_fd().as_raw_fd());
    let text = std::fs::read_to_string(&path).ctx(&path)?;
    let field = |f: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(f))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    Ok(MapMem {
        name,
        max_entries: field("max_entries:"),
        memlock: field("memlock:"),
    })
}

pub(super) fn run_once(
    dp: &Datapath,
    side: Side,
    frame: &[u8],
    ingress: u32,
    want: u32,
) -> Result<()> {
    let (act, _) = dp.test_run(side, frame, ingress).ctx("BPF_PROG_TEST_RUN")?;
    if act != want {
        return fail(format!(
            "setup packet got XDP action {act}, expected {want} (frame {} bytes)",
            frame.len()
        ));
    }
    Ok(())
}

/// One run of the feeder with `target`: (last action, ns per run).
pub(super) fn feed(
    fl: &Floor,
    target: Target<'_>,
    ingress: u32,
    repeat: u32,
) -> Result<(u32, f64)> {
    fl.set_target(target)?;
    let (act, ns) = fl
        .feed_run(ingress, repeat)
        .ctx("BPF_PROG_TEST_RUN of xdp_feed")?;
    Ok((act, ns as f64))
}

/// One feeder run of cgnat whose every repetition must be counted under
/// `reason`; returns its ns per run.
pub(super) fn feed_cgnat(
    fl: &Floor,
    dp: &Datapath,
    t: &Tables,
    side: Side,
    ingress: u32,
    repeat: u32,
    reason: &str,
) -> Result<f64> {
    let before = counter(t, reason)?;
    let (act, ns) = feed(fl, Target::Cgnat(dp, side), ingress, repeat)?;
    let n = counter(t, reason)? - before;
    if n != u64::from(repeat) || !(act == XDP_TX || act == XDP_REDIRECT) {
        return fail(format!(
            "{n} of {repeat} repetitions counted as {reason} (last action {act}): \
             the runs did not all take the measured path"
        ));
    }
    Ok(ns)
}

/// Median kernel time of `n` single BPF_PROG_TEST_RUN calls.
pub(super) fn single_median(
    n: u32,
    mut f: impl FnMut() -> std::result::Result<(u32, u64), libbpf_rs::Error>,
) -> Result<f64> {
    let mut v = Vec::with_capacity(n as usize);
    for _ in 0..n {
        v.push(f().ctx("BPF_PROG_TEST_RUN")?.1 as f64);
    }
    Ok(median(&v))
}
