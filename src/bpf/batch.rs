//! Batched reads and deletes of maps (BPF_MAP_LOOKUP_BATCH,
//! BPF_MAP_DELETE_BATCH), for the tables' typed access.

use super::*;

/// A map entry as bytes: (key, value).
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// Every (key, value) of map `name`, typed, read in batches of `batch`
/// (`lookup_all`); entries of the wrong size are skipped.
pub fn dump_typed<K: Pod, V: Pod>(
    map: &dyn MapCore,
    name: &'static str,
    batch: u32,
) -> Result<Vec<(K, V)>, BpfError> {
    let mut out = Vec::new();
    scan_from(map, batch, None, usize::MAX, push_typed(&mut out)).map_err(map_err(name))?;
    Ok(out)
}

/// Entries `range` of array map `name`, typed, as [`dump_typed`] reads
/// a whole map.
pub fn dump_array_range<V: Pod>(
    map: &dyn MapCore,
    name: &'static str,
    batch: u32,
    range: std::ops::Range<u32>,
) -> Result<Vec<(u32, V)>, BpfError> {
    let mut out = Vec::with_capacity(range.len());
    scan_array_range(map, batch, range, push_typed(&mut out)).map_err(map_err(name))?;
    Ok(out)
}

/// A visitor that decodes each entry and pushes it to `out` (entries of
/// the wrong size are skipped).
fn push_typed<K: Pod, V: Pod>(out: &mut Vec<(K, V)>) -> impl FnMut(&[u8], &[u8]) + '_ {
    move |k, v| {
        if let (Some(k), Some(v)) = (from_bytes(k), from_bytes(v)) {
            out.push((k, v));
        }
    }
}

/// Deletes `keys` from `map` in batches of `batch`. Reports no error: a
/// batch the kernel refuses (it stops at a key that vanished meanwhile)
/// is retried key by key, and what still fails stays in the map.
pub fn delete_keys<K: Pod>(map: &dyn MapCore, keys: &[K], batch: u32) {
    for chunk in keys.chunks(batch.max(1) as usize) {
        let mut buf = Vec::with_capacity(std::mem::size_of_val(chunk));
        for k in chunk {
            buf.extend_from_slice(bytes_of(k));
        }
        if map
            .delete_batch(&buf, chunk.len() as u32, MapFlags::ANY, MapFlags::ANY)
            .is_err()
        {
            for k in chunk {
                let _ = map.delete(bytes_of(k));
            }
        }
    }
}

/// Every (key, value) of a map, read with BPF_MAP_LOOKUP_BATCH, `batch`
/// entries per call (not for per-CPU maps).
///
/// The kernel returns whole hash buckets only, so a batch is often shorter
/// than asked although more entries follow; libbpf-rs 0.27's batch
/// iterator takes the first short batch for the last one and ends a dump of
/// a large map early (after a few thousand entries). This reads until the
/// kernel says ENOENT.
pub fn lookup_all(map: &dyn MapCore, batch: u32) -> Result<Vec<KeyValue>, libbpf_rs::Error> {
    let mut out = Vec::new();
    scan_from(map, batch, None, usize::MAX, |k, v| {
        out.push((k.to_vec(), v.to_vec()))
    })?;
    Ok(out)
}

/// Visits entries `range` of an array map (its keys are u32 indexes),
/// read as [`lookup_all`] reads a whole map: `visit(key, value)` sees
/// the bytes in the kernel's batch buffers, without a copy of its own.
pub fn scan_array_range(
    map: &dyn MapCore,
    batch: u32,
    range: std::ops::Range<u32>,
    visit: impl FnMut(&[u8], &[u8]),
) -> Result<(), libbpf_rs::Error> {
    // the kernel goes on after the key in the token
    let after = range.start.checked_sub(1).map(|k| k.to_ne_bytes().to_vec());
    scan_from(
        map,
        batch.min(range.len() as u32),
        after,
        range.len(),
        visit,
    )
}

/// Bytes of keys and values one batch call may return.
const BUFFER: usize = 256 << 10;

/// Visits the entries after key `after` (from the first without one), at
/// most `limit` of them.
fn scan_from(
    map: &dyn MapCore,
    batch: u32,
    after: Option<Vec<u8>>,
    limit: usize,
    mut visit: impl FnMut(&[u8], &[u8]),
) -> Result<(), libbpf_rs::Error> {
    const ENOENT: i32 = nix::errno::Errno::ENOENT as i32;
    const ENOSPC: i32 = nix::errno::Errno::ENOSPC as i32;
    const EINTR: i32 = nix::errno::Errno::EINTR as i32;
    let (ks, vs) = (map.key_size() as usize, map.value_size() as usize);
    let fd = map.as_fd().as_raw_fd();
    // at most BUFFER bytes of keys and values per call: a map of large
    // values (held frames) would otherwise zero megabytes per read
    let mut batch = batch.min((BUFFER / (ks + vs).max(1)) as u32).max(1);
    let mut seen = 0usize;
    // the position token: a u32 bucket index for hash maps, a key for others
    let mut token = vec![0u8; ks.max(8)];
    let mut next = vec![0u8; token.len()];
    let mut started = after.is_some();
    if let Some(a) = after {
        token[..a.len()].copy_from_slice(&a);
    }
    let (mut keys, mut vals) = (Vec::new(), Vec::new());
    while seen < limit {
        keys.resize(ks * batch as usize, 0);
        vals.resize(vs * batch as usize, 0);
        let mut count = batch;
        // SAFETY: zeroed is a valid bpf_map_batch_opts; sz is set.
        let mut opts: libbpf_sys::bpf_map_batch_opts = unsafe { std::mem::zeroed() };
        opts.sz = std::mem::size_of::<libbpf_sys::bpf_map_batch_opts>() as _;
        let in_batch = if started {
            token.as_mut_ptr().cast()
        } else {
            std::ptr::null_mut()
        };
        // SAFETY: the buffers hold `count` keys and values and a token;
        // the kernel writes no more.
        let ret = unsafe {
            libbpf_sys::bpf_map_lookup_batch(
                fd,
                in_batch,
                next.as_mut_ptr().cast(),
                keys.as_mut_ptr().cast(),
                vals.as_mut_ptr().cast(),
                &mut count,
                &opts,
            )
        };
        let err = if ret < 0 { -ret } else { 0 };
        if err == EINTR {
            continue;
        }
        if err == ENOSPC && count == 0 {
            batch *= 2; // one bucket holds more than a batch
            continue;
        }
        if err != 0 && err != ENOENT {
            return Err(libbpf_rs::Error::from_raw_os_error(err));
        }
        let n = (count as usize).min(batch as usize).min(limit - seen);
        for (k, v) in keys.chunks_exact(ks).zip(vals.chunks_exact(vs)).take(n) {
            visit(k, v);
        }
        seen += n;
        if err == ENOENT {
            break;
        }
        std::mem::swap(&mut token, &mut next);
        started = true;
    }
    Ok(())
}
