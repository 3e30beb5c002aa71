//! Frames the data path holds for the daemon to re-run: later fragments
//! that came before their first one (`frag_stash`), packets whose next hop
//! is being resolved (`neigh_hold`, bpf/neigh.h). A re-run goes through
//! the program with BPF_PROG_TEST_RUN (its tables change as for any
//! packet) and the frame it returns is sent by `crate::inject`.

use std::net::Ipv4Addr;

use libbpf_rs::{MapCore, MapFlags};

use super::{bytes_of, from_bytes, map_err, types, BpfError, Datapath, Side};

impl Datapath {
    /// Re-runs the held later fragments of datagram `key`: their first
    /// fragment has arrived, so they are translated and sent now. Returns
    /// how many were released.
    pub fn release_fragments(&self, key: &types::cgnat_frag_key) -> Result<usize, BpfError> {
        let stash = &self.skel.maps.frag_stash;
        let mut released = 0;
        let keys: Vec<Vec<u8>> = stash.keys().collect();
        for kb in keys {
            let Some(k) = from_bytes::<types::cgnat_stash_key>(&kb) else {
                continue;
            };
            if bytes_of(&k.frag) != bytes_of(key) {
                continue;
            }
            let Ok(Some(vb)) = stash.lookup_and_delete(&kb) else {
                continue;
            };
            let Some(st) = from_bytes::<types::cgnat_stash>(&vb) else {
                continue;
            };
            self.rerun(&st)?;
            released += 1;
        }
        Ok(released)
    }

    /// Runs a held frame through the program of the side it arrived on
    /// (its tables change as for any packet) and sends what it makes of
    /// the frame out of the interface it chose (src/inject.rs).
    fn rerun(&self, st: &types::cgnat_stash) -> Result<(), BpfError> {
        use libbpf_sys::{XDP_REDIRECT, XDP_TX};
        let len = (st.len as usize).min(st.data.len());
        let side = if self.one_armed {
            Side::OneArmed
        } else if st.ifindex == self.internal_ifindex {
            Side::Internal
        } else {
            Side::External
        };
        let (action, frame) = self
            .test_run(side, &st.data[..len], st.ifindex)
            .map_err(map_err("test_run"))?;
        let frame = &frame[..];
        let egress = match action {
            XDP_TX => st.ifindex,
            XDP_REDIRECT => frame
                .get(6..12)
                .and_then(|m| self.ifindex_of_mac(m))
                .ok_or_else(|| BpfError::Inject {
                    ifindex: 0,
                    err: "the frame's source MAC is no NAT interface's".into(),
                })?,
            _ => return Ok(()), // dropped (and counted) or for the kernel
        };
        self.injector
            .send(egress, frame)
            .map_err(|e| BpfError::Inject {
                ifindex: egress,
                err: e.to_string(),
            })
    }

    /// The NAT interface whose MAC is `mac` (the source MAC forward()
    /// wrote: the egress interface's own).
    fn ifindex_of_mac(&self, mac: &[u8]) -> Option<u32> {
        [(0u32, self.internal_ifindex), (1, self.external_ifindex)]
            .into_iter()
            .find(|(slot, _)| {
                self.skel
                    .maps
                    .if_macs
                    .lookup(bytes_of(slot), MapFlags::ANY)
                    .ok()
                    .flatten()
                    .and_then(|v| from_bytes::<types::cgnat_if_mac>(&v))
                    .is_some_and(|m| m.set != 0 && m.addr[..] == *mac)
            })
            .map(|(_, idx)| idx)
    }

    /// The frames waiting for their next hop (map neigh_hold), for tests.
    pub fn neigh_hold_map(&self) -> &impl MapCore {
        &self.skel.maps.neigh_hold
    }

    /// Is the data path waiting for `nexthop` to resolve (it asked the
    /// daemon to resolve it, or holds frames for it)?
    pub fn awaits_neighbour(&self, nexthop: Ipv4Addr) -> bool {
        let k = u32::from(nexthop).to_be();
        self.skel
            .maps
            .neigh
            .lookup(bytes_of(&k), MapFlags::ANY)
            .ok()
            .flatten()
            .and_then(|v| from_bytes::<types::cgnat_neigh>(&v))
            .is_some_and(|n| n.reported_ns != 0 || n.held != 0)
    }

    /// `nexthop` resolved (`failed` false) or failed to: the frames held
    /// for it in neigh_hold are taken out and re-run through the program,
    /// which forwards them, or (failed) answers them with ICMP host
    /// unreachable (bpf/neigh.h). Returns how many were re-run.
    pub fn release_held(&self, nexthop: Ipv4Addr, failed: bool) -> Result<usize, BpfError> {
        let hold = &self.skel.maps.neigh_hold;
        let nh = u32::from(nexthop).to_be();
        let mut frames = Vec::new();
        let keys: Vec<Vec<u8>> = hold.keys().collect();
        for kb in keys {
            match from_bytes::<types::cgnat_hold_key>(&kb) {
                Some(k) if k.nexthop == nh => {}
                _ => continue,
            }
            if let Ok(Some(vb)) = hold.lookup_and_delete(&kb) {
                frames.extend(from_bytes::<types::cgnat_stash>(&vb));
            }
        }
        // The queue is empty now: its slots are free again, and a failure
        // is remembered for CGNAT_NEIGH_FAILED_MS (answered at once).
        let state = types::cgnat_neigh {
            failed_ns: if failed { crate::clock::coarse_ns() } else { 0 },
            ..Default::default()
        };
        self.skel
            .maps
            .neigh
            .update(bytes_of(&nh), bytes_of(&state), MapFlags::ANY)
            .map_err(map_err("neigh"))?;
        frames.sort_by_key(|st| st.created_ns);
        for st in &frames {
            self.rerun(st)?;
        }
        Ok(frames.len())
    }

    /// Next hops with a frame held longer than CGNAT_HOLD_MAX_MS: their
    /// resolution is taken as failed (the kernel's notification may have
    /// been lost).
    pub fn overdue_neighbours(&self, now_coarse_ns: u64) -> Vec<Ipv4Addr> {
        let max_ns = types::cgnat_hold_limit::CGNAT_HOLD_MAX_MS.0 as u64 * 1_000_000;
        let hold = &self.skel.maps.neigh_hold;
        let mut out: Vec<Ipv4Addr> = Vec::new();
        for kb in hold.keys() {
            let Some(k) = from_bytes::<types::cgnat_hold_key>(&kb) else {
                continue;
            };
            let old = hold
                .lookup(&kb, MapFlags::ANY)
                .ok()
                .flatten()
                .and_then(|v| from_bytes::<types::cgnat_stash>(&v))
                .is_some_and(|st| now_coarse_ns.saturating_sub(st.created_ns) > max_ns);
            let a = Ipv4Addr::from(u32::from_be(k.nexthop));
            if old && !out.contains(&a) {
                out.push(a);
            }
        }
        out
    }
}
