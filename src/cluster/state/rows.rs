//! What was sent of one kind of table entry (bindings or sessions), kept
//! in the order of the table's slots, so that a diff goes through a
//! snapshot and these rows side by side, without a lookup per entry.
//!
//! A live entry keeps its slot until it is deleted, so a slot and a key
//! that match name the same entry in two reads. A key the rows have at
//! another slot (deleted and made again meanwhile, or seen twice in one
//! read) is found through `index`, which names the slot of each key's
//! current row; its older row is marked dead and dropped at the end of the
//! merge. Keys a merge no longer found wait in `gone` until the peers are
//! told ([`Rows::take_gone`]); one that comes back before is taken up again
//! with what was sent for it.

use std::hash::Hash;

use super::HashMap;

#[derive(Debug, Clone, Copy)]
struct Row<K, V> {
    slot: u32,
    key: K,
    val: V,
    /// Not current: its key has a newer row at another slot, or its slot
    /// no longer holds it. The merge that marks it drops it.
    dead: bool,
}

#[derive(Debug)]
pub(super) struct Rows<K, V> {
    /// Ascending slots.
    rows: Vec<Row<K, V>>,
    /// Key -> slot of its current row.
    index: HashMap<K, u32>,
    /// Keys gone from the tables, not yet removed, and what was sent.
    gone: HashMap<K, V>,
}

impl<K, V> Default for Rows<K, V> {
    fn default() -> Self {
        Rows {
            rows: Vec::new(),
            index: HashMap::default(),
            gone: HashMap::default(),
        }
    }
}

impl<K: Copy + Eq + Hash, V: Copy> Rows<K, V> {
    /// What was sent for `k`.
    pub(super) fn get(&self, k: &K) -> Option<&V> {
        match self.index.get(k) {
            Some(&slot) => find(&self.rows, slot, k).map(|i| &self.rows[i].val),
            None => self.gone.get(k),
        }
    }

    /// Every key and what was sent for it.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.rows
            .iter()
            .map(|r| (&r.key, &r.val))
            .chain(self.gone.iter())
    }

    /// Keeps only the keys `keep` accepts.
    pub(super) fn retain(&mut self, keep: impl Fn(&K) -> bool) {
        self.rows.retain(|r| keep(&r.key));
        self.index.retain(|k, _| keep(k));
        self.gone.retain(|k, _| keep(k));
    }

    /// At most `n` of the keys gone from the tables, and what was sent for
    /// them; forgotten here (the peers are told they are gone).
    pub(super) fn take_gone(&mut self, n: usize) -> Vec<(K, V)> {
        let keys: Vec<K> = self.gone.keys().take(n).copied().collect();
        keys.into_iter()
            .filter_map(|k| self.gone.remove(&k).map(|v| (k, v)))
            .collect()
    }

    /// Row `i`, whose slot no longer holds its key: gone, unless it was
    /// not current already.
    fn forget(&mut self, i: usize) {
        let r = &mut self.rows[i];
        if !r.dead {
            r.dead = true;
            self.index.remove(&r.key);
            self.gone.insert(r.key, r.val);
        }
    }

    /// Goes through `snap` (slot, key, entry; ascending slots) beside the
    /// rows. For each entry, `f(key, entry, sent)` gets what was last sent
    /// for its key (`None`: nothing, a key the rows do not have) and
    /// returns what to keep for it, or `None` to stop there: the entries
    /// from there on are left for the next merge, and the rows it did not
    /// reach stay as they were. Returns whether it went through every
    /// entry: only then is every key it did not find gone (rows it passed
    /// without a match wait in `gone` either way, and come back if a later
    /// merge finds their key).
    ///
    /// An entry at the slot and with the key of a row is updated in place,
    /// without a lookup; only keys new at their slot are looked up, and
    /// only then do the rows move.
    pub(super) fn merge<S>(
        &mut self,
        snap: &[(u32, K, S)],
        mut f: impl FnMut(&K, &S, Option<V>) -> Option<V>,
    ) -> bool {
        // rows for keys new at their slot (ascending), merged in at the end;
        // a read larger than the rows has at least that many new keys
        let grown = snap.len().saturating_sub(self.rows.len());
        let mut added: Vec<Row<K, V>> = Vec::with_capacity(grown);
        self.index.reserve(grown);
        let mut complete = true;
        let mut i = 0;
        for (slot, key, e) in snap {
            while i < self.rows.len() && self.rows[i].slot < *slot {
                self.forget(i);
                i += 1;
            }
            let here = (i < self.rows.len() && self.rows[i].slot == *slot).then_some(i);
            if let Some(h) = here.filter(|&h| !self.rows[h].dead && self.rows[h].key == *key) {
                match f(key, e, Some(self.rows[h].val)) {
                    Some(val) => self.rows[h].val = val,
                    None => {
                        complete = false;
                        break;
                    }
                }
                i += 1;
                continue;
            }
            // a key new at this slot: new, moved, or back
            let before = self.index.get(key).copied();
            let sent = match before {
                Some(at) => match find(&added, at, key) {
                    Some(j) => Some(added[j].val),
                    None => find(&self.rows, at, key).map(|j| self.rows[j].val),
                },
                None => self.gone.get(key).copied(),
            };
            let Some(val) = f(key, e, sent) else {
                complete = false;
                break;
            };
            if let Some(h) = here {
                self.forget(h);
                i += 1;
            }
            if let Some(at) = before {
                if let Some(j) = find(&added, at, key) {
                    added[j].dead = true;
                } else if let Some(j) = find(&self.rows, at, key) {
                    self.rows[j].dead = true;
                }
            }
            self.gone.remove(key);
            self.index.insert(*key, *slot);
            added.push(Row {
                slot: *slot,
                key: *key,
                val,
                dead: false,
            });
        }
        if complete {
            for j in i..self.rows.len() {
                self.forget(j);
            }
        }
        if added.iter().any(|r| r.dead) {
            added.retain(|r| !r.dead);
        }
        if self.rows.iter().any(|r| r.dead) {
            self.rows.retain(|r| !r.dead);
        }
        merge_sorted(&mut self.rows, &added);
        complete
    }
}

/// Where the current row of `key` at `slot` is in `rows` (ascending slots).
fn find<K: Eq, V>(rows: &[Row<K, V>], slot: u32, key: &K) -> Option<usize> {
    let i = rows.binary_search_by_key(&slot, |r| r.slot).ok()?;
    (rows[i].key == *key && !rows[i].dead).then_some(i)
}

/// Merges `b` into `a` (both in ascending slots, no slot in both), in
/// place: from the back, into `a` grown by `b`'s length.
fn merge_sorted<K: Copy, V: Copy>(a: &mut Vec<Row<K, V>>, b: &[Row<K, V>]) {
    let Some(&fill) = b.first() else {
        return;
    };
    let n = a.len();
    a.resize(n + b.len(), fill);
    let (mut i, mut j, mut w) = (n, b.len(), n + b.len());
    while j > 0 {
        w -= 1;
        if i > 0 && a[i - 1].slot > b[j - 1].slot {
            a[w] = a[i - 1];
            i -= 1;
        } else {
            a[w] = b[j - 1];
            j -= 1;
        }
    }
}
