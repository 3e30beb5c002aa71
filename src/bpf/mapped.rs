//! Array maps read through memory: a BPF_F_MMAPABLE array mapped into the
//! daemon, so that reading all of it is a walk over memory instead of a
//! system call and a copy per entry.

use std::marker::PhantomData;
use std::num::NonZeroUsize;
use std::ptr::NonNull;

use nix::sys::mman::{mmap, munmap, MapFlags as MmapFlags, ProtFlags};

use super::*;

/// A read-only mapping of every value of an array map created with
/// BPF_F_MMAPABLE, whose values are `T`. The kernel lays the values out
/// one after another, each rounded up to 8 bytes.
#[derive(Debug)]
pub struct MappedArray<T: Pod> {
    base: NonNull<std::ffi::c_void>,
    len: usize,
    entries: usize,
    stride: usize,
    value: PhantomData<T>,
}

// SAFETY: the mapping is only read, and stays valid until drop; the
// kernel and BPF programs write it concurrently, which the readers
// tolerate (they copy values out with unaligned reads of plain data).
unsafe impl<T: Pod> Send for MappedArray<T> {}
unsafe impl<T: Pod> Sync for MappedArray<T> {}

impl<T: Pod> MappedArray<T> {
    /// Maps `map` (an array with BPF_F_MMAPABLE and values of `T`)
    /// read-only.
    pub fn new(map: &dyn MapCore, name: &'static str) -> Result<MappedArray<T>, BpfError> {
        let fail = |e: std::io::Error| BpfError::Map {
            map: name,
            err: libbpf_rs::Error::from(e),
        };
        let value_size = map.value_size() as usize;
        if value_size != std::mem::size_of::<T>() {
            return Err(fail(std::io::ErrorKind::InvalidData.into()));
        }
        let entries = map.max_entries() as usize;
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
            value: PhantomData,
        })
    }

    /// The map's entries.
    pub fn max_entries(&self) -> u32 {
        self.entries as u32
    }

    /// Every value, in index order, copied out.
    pub fn values(&self) -> impl Iterator<Item = T> + '_ {
        (0..self.entries).filter_map(move |i| self.get(i))
    }

    /// Value `i`, copied out; `None` past the end.
    pub fn get(&self, i: usize) -> Option<T> {
        if i >= self.entries {
            return None;
        }
        // SAFETY: i < entries and entries * stride <= len, so the value
        // lies inside the mapping; T is Pod, so any bytes are a T, and
        // read_unaligned needs no alignment.
        Some(unsafe {
            std::ptr::read_unaligned(
                self.base
                    .as_ptr()
                    .cast::<u8>()
                    .add(i * self.stride)
                    .cast::<T>(),
            )
        })
    }
}

impl<T: Pod> Drop for MappedArray<T> {
    fn drop(&mut self) {
        // SAFETY: base and len are the mapping made in new(), unmapped once.
        let _ = unsafe { munmap(self.base, self.len) };
    }
}
