//! The clocks the data path stamps with, read from user space.

/// CLOCK_MONOTONIC in nanoseconds: the clock of bpf_ktime_get_coarse_ns,
/// read precisely (it may be up to a tick ahead of the coarse reading).
pub fn monotonic_ns() -> u64 {
    read(nix::time::ClockId::CLOCK_MONOTONIC)
}

/// CLOCK_MONOTONIC_COARSE in nanoseconds: exactly what
/// bpf_ktime_get_coarse_ns returns at this moment, for stamps the data
/// path compares with its own.
pub fn coarse_ns() -> u64 {
    read(nix::time::ClockId::CLOCK_MONOTONIC_COARSE)
}

/// CPU time of the calling thread in nanoseconds, user and system: a
/// sweep's own cost, including what the kernel spends in its system calls.
pub fn thread_cpu_ns() -> u64 {
    read(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
}

fn read(clock: nix::time::ClockId) -> u64 {
    match nix::time::clock_gettime(clock) {
        Ok(ts) => ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64,
        Err(_) => 0,
    }
}
