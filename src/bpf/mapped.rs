//! Array maps read through memory: a BPF_F_MMAPABLE array mapped into the
//! daemon, so that reading all of it is a walk over memory instead of a
//! system call and a copy per entry.

use std::num::NonZeroUsize;
use std::ptr::NonNull;

use nix::sys::mman::{mmap, munmap, MapFlags as MmapFlags, ProtFlags};

use super::*;

/// A read-only mapping of every value of an array map created with
/// BPF_F_MMAPABLE. The kernel lays the values out one after another, each
/// rounded up to 8 bytes.
#[derive(Debug)]
pub struct MappedArray {
    base: NonNull<std::ffi::c_void>,
    len: usize,
    entries: usize,
    stride: usize,
    value_size: usize,
}

// SAFETY: the mapping is only read, and stays valid until drop; the
// kernel and BPF programs write it concurrently, which the readers
// tolerate (they copy values out with unaligned reads of plain data).
unsafe impl Send for MappedArray {}
unsafe impl Sync for MappedArray {}

impl MappedArray {
    /// Maps `map` (an array with BPF_F_MMAPABLE) read-only.
    pub fn new(map: &dyn MapCore, name: &'static str) -> Result<MappedArray, BpfError> {
        let fail = |e: std::io::Error| BpfError::Map {
            map: name,
            err: libbpf_rs::Error::from(e),
        };
        let entries = map.max_entries() as usize;
        let value_size = map.value_size() as usize;
        let stride = value_size.next_multiple_of(8);
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .unwrap_or(4096) as usize;
        let len = (entries * stride).next_multiple_of(page);
        let size =
            NonZeroUsize::new(len).ok_or_else(|| fail(std::io::ErrorKind::InvalidInput.into()))?;
        // SAFETY: a fresh shared read-only mapping of the map's fd; the
        // kernel checks the length against the map and the flag.
        let base = unsafe {
            mmap(
                None,
                size,
                ProtFlags::PROT_READ,
                MmapFlags::MAP_SHARED,
                map.as_fd(),
                0,
            )
        }
        .map_err(|e| fail(e.into()))?;
        Ok(MappedArray {
            base,
            len,
            entries,
            stride,
            value_size,
        })
    }

    /// The map's entries.
    pub fn max_entries(&self) -> u32 {
        self.entries as u32
    }

    /// Every value, in index order, copied out as `T` (none if `T` is not
    /// the map's value size).
    pub fn values<T: Pod>(&self) -> impl Iterator<Item = T> + '_ {
        let n = if std::mem::size_of::<T>() == self.value_size {
            self.entries
        } else {
            0
        };
        (0..n).map(move |i| {
            // SAFETY: i < entries and entries * stride <= len, so the
            // value lies inside the mapping; T is Pod, so any bytes are
            // a T, and read_unaligned needs no alignment.
            unsafe {
                std::ptr::read_unaligned(
                    self.base
                        .as_ptr()
                        .cast::<u8>()
                        .add(i * self.stride)
                        .cast::<T>(),
                )
            }
        })
    }
}

impl Drop for MappedArray {
    fn drop(&mut self) {
        // SAFETY: base and len are the mapping made in new(), unmapped once.
        let _ = unsafe { munmap(self.base, self.len) };
    }
}
