//! Who serves which slice: the decision each node takes from what it
//! knows of itself and its peers, every turn of the engine.
//!
//! A node serves its own slice once it has resynced from its live peers
//! and no live peer serves it (after an outage it asks the peer that took
//! over for it back: at once with `failback = "immediate"`, after `cgnat
//! cluster failback` with "manual"). A peer's slice is served by the live
//! node of lowest id when its owner has not been heard from for
//! `dead_after`, and handed back when the owner, alive and resynced, wants
//! it; a peer that was never seen down (it started later than this node:
//! the cluster's start) gets its slice back as soon as it holds the state,
//! whatever the failback mode. A node whose data path fails its
//! self-check serves nothing.

/// Bit of node `id` in slice masks (ids 1 to 64).
pub fn bit(id: u16) -> u64 {
    1u64 << (id - 1)
}

/// The node ids of a slice mask.
pub fn ids(mask: u64) -> Vec<u16> {
    (1..=64u16).filter(|i| mask & bit(*i) != 0).collect()
}

/// What the slice decision looks at.
#[derive(Debug, Clone)]
pub struct View {
    pub me: u16,
    pub nodes: Vec<u16>,
    pub active: u64,
    pub resynced: bool,
    /// The data path's self-check passes.
    pub healthy: bool,
    pub peers: Vec<PeerView>,
}

#[derive(Debug, Clone, Copy)]
pub struct PeerView {
    pub id: u16,
    pub alive: bool,
    pub active: u64,
    pub want: u64,
    pub resynced: bool,
    /// It went down at least once since this node started.
    pub lost_once: bool,
}

/// The slices this node serves next (bit id-1); see the module docs.
pub fn decide(v: &View) -> u64 {
    if !v.healthy {
        return 0;
    }
    if !v.resynced {
        return v.active;
    }
    let alive: Vec<&PeerView> = v.peers.iter().filter(|p| p.alive).collect();
    let served_elsewhere = |slice: u16| alive.iter().any(|p| p.active & bit(slice) != 0);
    let mut next = 0u64;
    for &slice in &v.nodes {
        let b = bit(slice);
        let held = v.active & b != 0;
        let keep = if slice == v.me {
            // after an outage the peer serving it hands it back once this
            // node wants it (failback), and only then is it free
            held || !served_elsewhere(slice)
        } else {
            match alive.iter().find(|p| p.id == slice) {
                // the owner is alive: hand its slice back once it wants it
                // (failback), or, if it was never seen down (it started
                // after this node), once it holds the state
                Some(owner) => held && owner.want & b == 0 && (owner.lost_once || !owner.resynced),
                // the owner is dead: the live node of lowest id serves it
                None => {
                    let lowest = alive
                        .iter()
                        .map(|p| p.id)
                        .filter(|id| *id != slice)
                        .chain(std::iter::once(v.me))
                        .min();
                    lowest == Some(v.me) && (held || !served_elsewhere(slice))
                }
            }
        };
        if keep {
            next |= b;
        }
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(me: u16, active: u64, peers: &[(u16, bool, u64, u64)]) -> View {
        View {
            me,
            nodes: vec![1, 2],
            active,
            resynced: true,
            healthy: true,
            peers: peers
                .iter()
                .map(|&(id, alive, active, want)| PeerView {
                    id,
                    alive,
                    active,
                    want,
                    resynced: true,
                    lost_once: true,
                })
                .collect(),
        }
    }

    #[test]
    fn each_node_serves_its_own_slice_when_both_are_up() {
        assert_eq!(decide(&view(1, 0, &[(2, true, 0b10, 0b10)])), 0b01);
        assert_eq!(decide(&view(2, 0, &[(1, true, 0b01, 0b01)])), 0b10);
    }

    #[test]
    fn a_dead_owners_slice_is_taken_over_and_handed_back_when_wanted() {
        // node 1 dead: node 2 serves both
        assert_eq!(decide(&view(2, 0b10, &[(1, false, 0, 0)])), 0b11);
        // node 1 back, resynced but not wanting yet: node 2 keeps it
        assert_eq!(decide(&view(2, 0b11, &[(1, true, 0, 0)])), 0b11);
        // node 1 wants it: node 2 lets go
        assert_eq!(decide(&view(2, 0b11, &[(1, true, 0, 0b01)])), 0b10);
        // node 1 takes it only once node 2 no longer serves it
        assert_eq!(decide(&view(1, 0, &[(2, true, 0b11, 0b10)])), 0);
        assert_eq!(decide(&view(1, 0, &[(2, true, 0b10, 0b10)])), 0b01);
    }

    #[test]
    fn an_owner_takes_its_slice_only_when_nobody_serves_it() {
        assert_eq!(decide(&view(1, 0, &[(2, true, 0b11, 0b10)])), 0);
        // nobody serves it (cluster start): an owner takes its own slice
        assert_eq!(decide(&view(1, 0, &[(2, true, 0b10, 0b10)])), 0b01);
    }

    #[test]
    fn a_peer_never_seen_down_gets_its_slice_once_resynced() {
        // node 1 started alone and serves both; node 2 starts (manual
        // failback: it does not "want"), resyncs: node 1 lets slice 2 go
        let mut v = view(1, 0b11, &[(2, true, 0, 0)]);
        v.peers[0].lost_once = false;
        v.peers[0].resynced = false;
        assert_eq!(decide(&v), 0b11);
        v.peers[0].resynced = true;
        assert_eq!(decide(&v), 0b01);
        // after an outage the same peer must ask (failback)
        v.peers[0].lost_once = true;
        assert_eq!(decide(&v), 0b11);
    }

    #[test]
    fn a_node_failing_its_self_check_serves_nothing() {
        let mut v = view(1, 0b01, &[(2, true, 0b10, 0b10)]);
        v.healthy = false;
        assert_eq!(decide(&v), 0);
    }

    #[test]
    fn nothing_changes_before_the_resync() {
        let mut v = view(2, 0b10, &[(1, false, 0, 0)]);
        v.resynced = false;
        assert_eq!(decide(&v), 0b10);
    }

    #[test]
    fn split_brain_heals_toward_the_owner() {
        // the sync link was down: both served slice 1; node 1 (owner,
        // wanting it) keeps it, node 2 lets go
        assert_eq!(decide(&view(1, 0b11, &[(2, true, 0b11, 0b10)])), 0b01);
        assert_eq!(decide(&view(2, 0b11, &[(1, true, 0b11, 0b01)])), 0b10);
    }
}
