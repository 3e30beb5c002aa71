//! The in-kernel sweep: the parameters of bpf/sweep.h's program for one
//! run, the run, and what it hands back (counts, released bindings,
//! per-subscriber and per-block holdings), turned into a [`SweepReport`].

use std::net::Ipv4Addr;
use std::time::Duration;

use super::{
    addr, dump, BindingRelease, Holdings, SweepReport, Sweeper, BINDING_GRACE, REFRESH_SLACK,
    TIME_SHIFT,
};
use crate::bpf::abi::PROTOCOLS;
use libbpf_rs::MapCore;

use crate::bpf::{types, BpfError, KernelSweep, Tables};

const RANGES: usize = types::cgnat_sweep_limits::CGNAT_SWEEP_RANGES.0 as usize;

/// The runs of consecutive addresses of `pool` that get `sweep_live`
/// slots (struct cgnat_sweep_range: first address in host order, count,
/// first slot): at most CGNAT_SWEEP_RANGES runs and `slots` addresses,
/// the lowest first.
pub fn live_ranges(pool: &[Ipv4Addr], slots: u32) -> Vec<(u32, u32, u32)> {
    let mut addrs: Vec<u32> = pool.iter().map(|&a| u32::from(a)).collect();
    addrs.sort_unstable();
    addrs.dedup();
    let mut runs: Vec<(u32, u32, u32)> = Vec::new();
    for (used, a) in (0..slots).zip(addrs) {
        let full = runs.len() == RANGES;
        match runs.last_mut() {
            Some((first, count, _)) if a.wrapping_sub(*first) == *count => *count += 1,
            _ if full => break,
            _ => runs.push((a, 1, used)),
        }
    }
    runs
}

/// `d` in compact time units, rounded down: an age in units is greater
/// than `d` exactly when the age in nanoseconds is.
fn units_floor(d: Duration) -> u32 {
    (d.as_nanos() >> TIME_SHIFT).min(u128::from(u32::MAX)) as u32
}

/// `d` in compact time units, rounded up: an age in units is at least
/// `d` exactly when the age in nanoseconds is.
fn units_ceil(d: Duration) -> u32 {
    d.as_nanos()
        .div_ceil(1 << TIME_SHIFT)
        .min(u128::from(u32::MAX)) as u32
}

impl Sweeper {
    /// The sweep program's parameters for a sweep at `now`.
    fn kernel_params(&self, t: &Tables, k: &KernelSweep, now: u64) -> types::cgnat_sweep {
        let limit = |d: Duration| units_floor(d + REFRESH_SLACK);
        let to = &self.timeouts;
        let mut c = types::cgnat_sweep {
            now_ns: now,
            filter_grace_ns: BINDING_GRACE.as_nanos() as u64,
            quarantine: units_ceil(self.quarantine),
            mode: types::cgnat_sweep_mode::CGNAT_SWEEP_FULL.0,
            out_cap: k.out.max_entries(),
            ..Default::default()
        };
        let class = |c: types::cgnat_sweep_class| c.0 as usize;
        type C = types::cgnat_sweep_class;
        c.limit[class(C::CGNAT_SC_TCP_EST)] = limit(to.tcp_established);
        c.limit[class(C::CGNAT_SC_TCP_OPENING)] = limit(to.tcp_opening);
        c.limit[class(C::CGNAT_SC_TCP_CLOSING)] = limit(to.tcp_closing);
        c.limit[class(C::CGNAT_SC_UDP)] = limit(to.udp);
        c.limit[class(C::CGNAT_SC_OTHER)] = limit(to.icmp);
        for (slot, (port, d)) in c.udp.iter_mut().zip(&to.udp_ports) {
            slot.port = *port;
            slot.limit = limit(*d);
            c.udp_ports += 1;
        }
        for (r, (first, count, slot)) in c
            .range
            .iter_mut()
            .zip(live_ranges(&self.pool, k.live.max_entries()))
        {
            (r.first, r.count, r.slot) = (first, count, slot);
            c.ranges += 1;
        }
        if t.filter_addr.is_some() {
            c.flags |= types::cgnat_sweep_flags::CGNAT_SWEEP_FILTER.0;
        }
        if let Some(g) = self.blocks {
            c.flags |= types::cgnat_sweep_flags::CGNAT_SWEEP_BLOCKS.0;
            c.block_size = g.block_size;
            c.blocks_per_addr = g.per_addr;
        }
        c
    }

    /// The sweep of bpf/sweep.h: sessions, bindings and filter_addr in the
    /// kernel, which hands back counts and the released bindings; then
    /// subscribers, port blocks and fragments here.
    pub(super) fn sweep_in_kernel(
        &self,
        t: &Tables,
        k: &KernelSweep,
        now: u64,
    ) -> Result<SweepReport, BpfError> {
        let mut c = self.kernel_params(t, k, now);
        k.run(&mut c)?;
        let mut rep = SweepReport {
            sessions_live: c.sessions_live,
            sessions_dying: c.sessions_dying,
            sessions_expired: c.sessions_expired,
            bindings_live: c.bindings_live,
            ports_freed: c.ports_freed,
            session_pass: Duration::from_nanos(c.session_pass_ns),
            ..Default::default()
        };
        let holdings = (c.scratch_full == 0)
            .then(|| self.kernel_holdings(k))
            .transpose()?;
        let mut released = k.released(c.out);
        rep.bindings_released = c.bindings_released;
        rep.ports_quarantined = c.ports_quarantined;
        // sweep_out was full: release runs report the rest
        while c.pending > 0 {
            c.mode = types::cgnat_sweep_mode::CGNAT_SWEEP_RELEASE.0;
            k.run(&mut c)?;
            if c.out == 0 {
                break;
            }
            released.extend(k.released(c.out));
            rep.bindings_released += c.bindings_released;
            rep.ports_quarantined += c.ports_quarantined;
            rep.ports_freed += c.ports_freed;
        }
        rep.released = released
            .iter()
            .map(|r| BindingRelease {
                proto: r.proto,
                internal: (addr(r.int_addr), u16::from_be(r.int_port)),
                external: (addr(r.ext_addr), u16::from_be(r.ext_port)),
            })
            .collect();
        // Without complete counts (a scratch map was full) nothing is
        // recounted: the data path's counts stay, nobody is deleted.
        if let Some(h) = holdings {
            self.sweep_subscribers(t, now, &h, &mut rep)?;
        }
        self.sweep_frags(t, now)?;
        Ok(rep)
    }

    /// The per-subscriber and per-block counts of the last full run.
    fn kernel_holdings(&self, k: &KernelSweep) -> Result<Holdings, BpfError> {
        let mut h = Holdings::default();
        // the slots with a subscriber (bpf/sweep.h)
        for c in k.subs.values().filter(|c| c.addr != 0) {
            if c.sessions != 0 {
                h.sessions.insert(c.addr, c.sessions);
            }
            if c.ports != [0; PROTOCOLS] {
                h.ports.insert(c.addr, c.ports);
            }
        }
        if self.blocks.is_some() {
            let blocks: Vec<(types::cgnat_block_key, u32)> = dump(&k.blocks, "sweep_blocks")?;
            h.blocks = blocks
                .into_iter()
                .map(|(b, n)| ((b.ext_addr, b.block), n))
                .collect();
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_ranges_are_runs_of_the_pool_within_the_slots() {
        let a = |d: u8| Ipv4Addr::new(203, 0, 113, d);
        let h = |d: u8| u32::from(a(d));
        // unsorted, with a duplicate: two runs
        let pool = [a(5), a(1), a(2), a(3), a(6), a(2)];
        assert_eq!(live_ranges(&pool, 64), [(h(1), 3, 0), (h(5), 2, 3)]);
        // the slots run out inside the second run
        assert_eq!(live_ranges(&pool, 4), [(h(1), 3, 0), (h(5), 1, 3)]);
        // at most RANGES runs
        let gaps: Vec<Ipv4Addr> = (0..20).map(|i| a(i * 2)).collect();
        let r = live_ranges(&gaps, 64);
        assert_eq!(r.len(), RANGES);
        assert_eq!(
            r[RANGES - 1],
            (h(2 * (RANGES as u8 - 1)), 1, RANGES as u32 - 1)
        );
        assert!(live_ranges(&[], 64).is_empty());
    }
}
