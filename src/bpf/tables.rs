//! Typed access to the pinned tables, for the daemon's sweeps and the
//! CLI, and the route cache's generation.

use super::*;

/// The maps the daemon and the CLI work on, as owned handles: taken from a
/// loaded program or opened from their pins.
#[derive(Debug)]
pub struct Tables {
    pub sessions: Sessions,
    pub bindings: Bindings,
    pub stats: MapHandle,
    pub frags: MapHandle,
    pub frag_stash: MapHandle,
    pub frag_pending: MapHandle,
    pub subscribers: MapHandle,
    pub pool_load: MapHandle,
    pub blocks: MapHandle,
    pub sub_blocks: MapHandle,
    pub event_lost: MapHandle,
    /// Only when a protocol uses address-dependent filtering.
    pub filter_addr: Option<MapHandle>,
    /// The in-kernel sweep, when these tables come from a loaded program
    /// (not from pins: the CLI never sweeps).
    pub sweep: Option<KernelSweep>,
}

/// The SEC("syscall") program that sweeps in the kernel (bpf/sweep.h),
/// with its scratch and output maps.
#[derive(Debug)]
pub struct KernelSweep {
    pub prog: OwnedFd,
    /// Per subscriber: sessions and bindings counted by the last run.
    pub subs: MappedArray<types::cgnat_sweep_sub>,
    /// Per port block: bindings counted by the last run.
    pub blocks: MapHandle,
    /// The bindings the last run released.
    pub out: MappedArray<types::cgnat_release>,
    /// Per external address: the ports the live sessions of the last run
    /// used.
    pub live: MapHandle,
}

impl KernelSweep {
    /// Runs the program once with BPF_PROG_TEST_RUN; the kernel writes
    /// the run's counters back into `ctx`.
    pub fn run(&self, ctx: &mut types::cgnat_sweep) -> Result<(), BpfError> {
        // SAFETY: zeroed is a valid bpf_test_run_opts; sz is set.
        let mut opts: libbpf_sys::bpf_test_run_opts = unsafe { std::mem::zeroed() };
        opts.sz = std::mem::size_of::<libbpf_sys::bpf_test_run_opts>() as _;
        opts.ctx_in = (ctx as *mut types::cgnat_sweep).cast();
        opts.ctx_size_in = std::mem::size_of::<types::cgnat_sweep>() as u32;
        // SAFETY: ctx_in points at a whole cgnat_sweep, which the kernel
        // reads and then overwrites with as many bytes (a syscall
        // program's context goes back where it came from).
        let ret = unsafe { libbpf_sys::bpf_prog_test_run_opts(self.prog.as_raw_fd(), &mut opts) };
        if ret < 0 {
            return Err(BpfError::SweepRun(std::io::Error::from_raw_os_error(-ret)));
        }
        Ok(())
    }

    /// The first `n` records of `sweep_out`.
    pub fn released(&self, n: u32) -> Vec<types::cgnat_release> {
        self.out.values().take(n as usize).collect()
    }
}

/// Map names the CLI opens under `daemon.pin_path`.
#[allow(dead_code)]
const PINNED: [&str; 10] = [
    "subscribers",
    "pool_load",
    "blocks",
    "sub_blocks",
    "sessions",
    "stats",
    "filter_addr",
    "frags",
    "frag_stash",
    "frag_pending",
];

impl Tables {
    /// Events the data path could not report (its ring buffer was full),
    /// per event type, summed over CPUs.
    pub fn events_lost(&self) -> Vec<(u32, u64)> {
        (1..EVENT_SLOTS)
            .map(|ty| {
                let total = self
                    .event_lost
                    .lookup_percpu(bytes_of(&ty), MapFlags::ANY)
                    .ok()
                    .flatten()
                    .map(|v| v.iter().filter_map(|b| from_bytes::<u64>(b)).sum())
                    .unwrap_or(0);
                (ty, total)
            })
            .collect()
    }

    /// Every subscriber holding state: its address (network order) and
    /// entry, read in batches. Not a snapshot.
    pub fn subscriber_list(&self) -> Result<Vec<(u32, types::cgnat_subscriber)>, BpfError> {
        dump_typed(&self.subscribers, "subscribers", 4096)
    }

    /// Opens the maps pinned by a running daemon.
    pub fn open_pinned(dir: &Path) -> Result<Tables, BpfError> {
        let open = |name: &'static str| {
            let path = dir.join(name);
            MapHandle::from_pinned_path(&path).map_err(|e| BpfError::Pin {
                path,
                err: format!("{e} (is cgnat running with this config?)"),
            })
        };
        let meta = super::pin::pinned_meta(dir).map_err(|err| BpfError::Pin {
            path: dir.join("meta"),
            err,
        })?;
        let slots = SlotTable::new(
            [
                open("sessions")?,
                open("session_locks")?,
                open("session_count")?,
            ],
            None,
            SessionTable::new(meta.max_sessions, meta.max_bindings, meta.session_seed),
        );
        Ok(Tables {
            sessions: Sessions::new(slots.clone()),
            bindings: Bindings::new(slots),
            stats: open("stats")?,
            frags: open("frags")?,
            frag_stash: open("frag_stash")?,
            frag_pending: open("frag_pending")?,
            subscribers: open("subscribers")?,
            pool_load: open("pool_load")?,
            blocks: open("blocks")?,
            sub_blocks: open("sub_blocks")?,
            event_lost: open("event_lost")?,
            filter_addr: None,
            sweep: None,
        })
    }
}

/// The one slot of `route_gen` (include/cgnat.h): the generation every
/// route cache entry must carry to be used, and the cache's on switch.
#[derive(Debug)]
pub struct RouteGen(pub(super) MapHandle);

impl RouteGen {
    /// The current value.
    pub fn get(&self) -> Result<types::cgnat_route_gen, BpfError> {
        let v = self
            .0
            .lookup(bytes_of(&0u32), MapFlags::ANY)
            .map_err(map_err("route_gen"))?;
        Ok(v.and_then(|b| from_bytes(&b)).unwrap_or_default())
    }

    /// Invalidates every cached route; `enabled` turns the cache on or off.
    pub fn bump(&self, enabled: bool) -> Result<(), BpfError> {
        let v = types::cgnat_route_gen {
            gen: self.get()?.gen.wrapping_add(1),
            enabled: u32::from(enabled),
        };
        self.0
            .update(bytes_of(&0u32), bytes_of(&v), MapFlags::ANY)
            .map_err(map_err("route_gen"))
    }
}
