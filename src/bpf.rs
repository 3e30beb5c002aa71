//! The BPF loader: the generated skeleton, rodata and map sizing from the
//! config, load and attachment, and byte views of the shared ABI types.
//! Beside it: `fill` (the configuration maps), `pin` (bpffs, adoption,
//! links, detach), `tables` (typed access to the pinned maps), `sessions`
//! (the session table), `bindings` (the binding table), `held` (re-running
//! held frames).
//!
//! The crate's `unsafe` lives in this module and its children (the
//! skeleton `include!`s, the `Pod` marker for generated types, the raw
//! `bpf_link_create` call), and in `inject` (one sockaddr_ll).

use std::ffi::CString;
use std::mem::MaybeUninit;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::config::{
    Config, FibLookup, Filtering, PoolMode, XdpMode, MAX_POOL_ADDRS, MAX_PREFIXES,
};

#[allow(clippy::all, clippy::pedantic, unsafe_op_in_unsafe_fn)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/cgnat.skel.rs"));
}
pub use skel::types;
use skel::{CgnatSkel, CgnatSkelBuilder};

/// Types that are plain bytes: any bit pattern is valid, no padding is
/// left uninitialised (include/cgnat.h names every padding byte).
///
/// # Safety
/// Only for `#[repr(C)]` types generated from include/cgnat.h and for
/// primitive integers.
pub unsafe trait Pod: Copy + Default + 'static {}
unsafe impl Pod for types::cgnat_endpoint {}
unsafe impl Pod for types::cgnat_binding {}
unsafe impl Pod for types::cgnat_session_key {}
unsafe impl Pod for types::cgnat_session {}
unsafe impl Pod for types::cgnat_session_slot {}
unsafe impl Pod for types::cgnat_bind_out {}
unsafe impl Pod for types::cgnat_first_octets {}
unsafe impl Pod for types::cgnat_session_seg {}
unsafe impl Pod for types::cgnat_counter {}
unsafe impl Pod for types::cgnat_event {}
unsafe impl Pod for types::cgnat_lpm_key {}
unsafe impl Pod for types::cgnat_lpm_port_key {}
unsafe impl Pod for types::cgnat_prefix_info {}
unsafe impl Pod for types::cgnat_subscriber {}
unsafe impl Pod for types::cgnat_block_key {}
unsafe impl Pod for types::cgnat_block {}
unsafe impl Pod for types::cgnat_sub_block_key {}
unsafe impl Pod for types::cgnat_meta {}
unsafe impl Pod for types::cgnat_filter_key {}
unsafe impl Pod for types::cgnat_frag_key {}
unsafe impl Pod for types::cgnat_frag {}
unsafe impl Pod for types::cgnat_stash_key {}
unsafe impl Pod for types::cgnat_stash {}
unsafe impl Pod for types::cgnat_hold_key {}
unsafe impl Pod for types::cgnat_neigh {}
unsafe impl Pod for types::cgnat_route_gen {}
unsafe impl Pod for types::cgnat_route {}
unsafe impl Pod for types::cgnat_if_mac {}
unsafe impl Pod for types::xdp_md {}
unsafe impl Pod for types::cgnat_sweep {}
unsafe impl Pod for types::cgnat_sweep_sub {}
unsafe impl Pod for types::cgnat_release {}
unsafe impl Pod for u8 {}
unsafe impl Pod for u32 {}
unsafe impl Pod for u64 {}

/// The bytes of a value, as a map key or value.
pub fn bytes_of<T: Pod>(v: &T) -> &[u8] {
    // SAFETY: T is Pod: fully initialised, no interior references.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

/// A value read back from map bytes; None if the length is wrong.
pub fn from_bytes<T: Pod>(b: &[u8]) -> Option<T> {
    if b.len() != std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: length checked; T is Pod so any bytes are a valid T.
    Some(unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<T>()) })
}

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("cgnat must run as root (it loads XDP programs and BPF maps)")]
    NotRoot,
    #[error("sending a held packet out of interface {ifindex}: {err}")]
    Inject { ifindex: u32, err: String },
    #[error("interface {name:?} ({field}) does not exist")]
    NoInterface { name: String, field: &'static str },
    #[error("cannot open the BPF object: {0}")]
    Open(libbpf_rs::Error),
    #[error(
        "the kernel refused the XDP program ({0}); cgnat needs Linux 6.1 or later with BTF, \
         ring buffers and bpf_fib_lookup (the verifier log is printed above)"
    )]
    Load(libbpf_rs::Error),
    #[error("interface {iface:?} already has an XDP program; remove it first (ip link set dev {iface} xdp off)")]
    Busy { iface: String },
    #[error(
        "interface {iface:?} does not support native XDP; set interfaces.xdp_mode = \"generic\" \
         to run in the slow generic mode"
    )]
    NoNative { iface: String },
    #[error("cannot attach XDP ({mode}) to {iface:?}: {err}")]
    Attach {
        iface: String,
        mode: XdpMode,
        err: std::io::Error,
    },
    #[error("map {map}: {err}")]
    Map {
        map: &'static str,
        err: libbpf_rs::Error,
    },
    #[error("{path}: {err}")]
    Pin { path: PathBuf, err: String },
    #[error("{path}: {err}")]
    Sysctl { path: String, err: std::io::Error },
    #[error(
        "cannot adopt the state pinned in {dir}: {why}; `cgnat stop --detach` removes it \
         (dropping all sessions)"
    )]
    Adopt { dir: PathBuf, why: String },
    #[error(
        "forwarding is off on {iface:?}: interfaces.fib_lookup = \"ingress\" needs \
         net.ipv4.conf.{iface}.forwarding=1 (or use the default fib_lookup = \"loopback\")"
    )]
    ForwardingOff { iface: String },
    #[error("running the in-kernel sweep (BPF_PROG_TEST_RUN): {0}")]
    SweepRun(std::io::Error),
}

/// Which entry point a packet enters (one per interface role).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Internal,
    External,
    OneArmed,
}

impl Side {
    fn prog_name(self) -> &'static str {
        match self {
            Side::Internal => "xdp_internal",
            Side::External => "xdp_external",
            Side::OneArmed => "xdp_one_armed",
        }
    }
}

pub use abi::EVENT_SLOTS;

/// The ABI of pinned state (a hash of include/cgnat.h and bpf/maps.h).
pub fn abi() -> u64 {
    u64::from_str_radix(env!("CGNAT_ABI"), 16).unwrap_or(0)
}

/// Table sizes, fixed for the life of pinned state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    pub sessions: u32,
    pub bindings: u32,
    pub subscribers: u32,
    pub fragments: u32,
    pub blocks: u32,
}

impl Sizes {
    pub fn of(cfg: &Config) -> Sizes {
        Sizes {
            sessions: cfg.max_sessions,
            bindings: cfg.max_bindings,
            subscribers: cfg.max_subscribers,
            fragments: cfg.max_fragments,
            blocks: (u64::from(cfg.max_subscribers) * u64::from(crate::pool::MAX_BLOCKS_CAP))
                .min(1 << 24) as u32,
        }
    }
}

/// What `Datapath::load` does beyond loading.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Attach to the configured interfaces.
    pub attach: bool,
    /// Pin the maps under `daemon.pin_path`.
    pub pin: bool,
}

/// A loaded (and usually attached) data path. Dropping it detaches the
/// programs and removes the pins.
pub struct Datapath {
    skel: CgnatSkel<'static>,
    links: Vec<OwnedFd>,
    pin_dir: Option<PathBuf>,
    /// The pinned tables of a previous daemon were taken over.
    pub adopted: bool,
    link_pins: Vec<String>,
    address_dependent: bool,
    one_armed: bool,
    internal_ifindex: u32,
    external_ifindex: u32,
    /// The session table's geometry.
    table: SessionTable,
    /// Sends the frames of held packets once re-run.
    injector: crate::inject::Injector,
    /// What was attached where, for the start-up log.
    pub attached: Vec<String>,
}

fn ifindex(name: &str, field: &'static str) -> Result<u32, BpfError> {
    nix::net::if_::if_nametoindex(name).map_err(|_| BpfError::NoInterface {
        name: name.to_owned(),
        field,
    })
}

fn map_err(map: &'static str) -> impl Fn(libbpf_rs::Error) -> BpfError {
    move |err| BpfError::Map { map, err }
}

fn read_sysctl(path: &str) -> Result<String, BpfError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|err| BpfError::Sysctl {
            path: path.into(),
            err,
        })
}

/// bpf_fib_lookup answers only for a device with forwarding on. Returns the
/// ifindex to look up from (0 = the ingress interface).
fn prepare_fib(cfg: &Config) -> Result<(u32, Option<String>), BpfError> {
    match cfg.fib_lookup {
        FibLookup::Loopback => {
            let lo = ifindex("lo", "fib_lookup")?;
            let path = "/proc/sys/net/ipv4/conf/lo/forwarding";
            let mut note = None;
            if read_sysctl(path)? != "1" {
                std::fs::write(path, "1").map_err(|err| BpfError::Sysctl {
                    path: path.into(),
                    err,
                })?;
                note = Some("enabled net.ipv4.conf.lo.forwarding for bpf_fib_lookup".into());
            }
            Ok((lo, note))
        }
        FibLookup::Ingress => {
            for iface in [&cfg.internal_if, &cfg.external_if] {
                let path = format!("/proc/sys/net/ipv4/conf/{iface}/forwarding");
                if read_sysctl(&path)? != "1" {
                    return Err(BpfError::ForwardingOff {
                        iface: iface.clone(),
                    });
                }
            }
            Ok((0, None))
        }
    }
}

/// The program's configuration constants (rodata), set before load.
fn set_rodata(ro: &mut types::rodata, cfg: &Config, fib_ifindex: u32, sessions: &SessionTable) {
    ro.FIB_IFINDEX = fib_ifindex;
    ro.ROUTE_CACHE_NS = cfg.route_cache.as_nanos() as u64;
    ro.TX_REDIRECT = u8::from(crate::veth::redirect_back(cfg));
    ro.POOL_LEN = cfg.pool_addrs.len() as u32;
    ro.INBOUND_REFRESH = u8::from(cfg.inbound_refresh);
    ro.PRESERVE_PARITY = u8::from(cfg.preserve_parity);
    ro.ICMP_RATE = cfg.icmp.rate_limit;
    ro.MSS_CLAMP = cfg.mss_clamp;
    ro.ALLOC_MODE = match cfg.mode {
        PoolMode::Dynamic => types::cgnat_alloc_mode::CGNAT_ALLOC_DYNAMIC.0 as u8,
        PoolMode::PortBlock => types::cgnat_alloc_mode::CGNAT_ALLOC_PBA.0 as u8,
        PoolMode::Deterministic => types::cgnat_alloc_mode::CGNAT_ALLOC_DET.0 as u8,
    };
    ro.BLOCK_SIZE = cfg.blocks.block_size;
    ro.MAX_BLOCKS = cfg.blocks.max_blocks;
    ro.BLOCKS_PER_ADDR = cfg.blocks.per_addr;
    if let Some(d) = &cfg.deterministic {
        ro.DET_HOSTS = d.hosts_per_addr;
        ro.DET_PORTS = d.ports_per_host;
    }
    ro.LIMIT_PORTS = cfg.limits.ports;
    ro.LIMIT_SESSIONS = cfg.limits.sessions;
    ro.RATE_NEW = cfg.limits.new_mappings_per_second;
    ro.HAS_EXEMPT = u8::from(!cfg.exempt.is_empty());
    ro.ID_SECRET = random_u32();
    ro.SESSION_SEED = sessions.seed;
    ro.SWEEP_SUBS_SLOTS = sweep_subs_slots(&Sizes::of(cfg));
    for kind in [
        types::cgnat_slot_kind::CGNAT_KIND_SESSION,
        types::cgnat_slot_kind::CGNAT_KIND_BIND_OUT,
        types::cgnat_slot_kind::CGNAT_KIND_BIND_IN,
    ] {
        let (i, r) = (kind.0 as usize, sessions.region(kind));
        ro.REGION_FIRST[i] = r.start;
        ro.REGION_SEGS[i] = r.end - r.start;
        ro.SLOT_LIMIT[i] = u64::from(sessions.limit(kind));
    }
    // the fourth index repeats the sessions' (bpf/config.h)
    ro.REGION_FIRST[3] = ro.REGION_FIRST[0];
    ro.REGION_SEGS[3] = ro.REGION_SEGS[0];
    ro.SLOT_LIMIT[3] = ro.SLOT_LIMIT[0];
    let mode = |f: Filtering| match f {
        Filtering::EndpointIndependent => types::cgnat_filtering::CGNAT_FILTER_EIF.0 as u8,
        Filtering::AddressDependent => types::cgnat_filtering::CGNAT_FILTER_ADF.0 as u8,
        Filtering::AddressAndPortDependent => types::cgnat_filtering::CGNAT_FILTER_APDF.0 as u8,
    };
    ro.FILTER_UDP = mode(cfg.filtering.udp);
    ro.FILTER_TCP = mode(cfg.filtering.tcp);
    ro.FILTER_ICMP = mode(cfg.filtering.icmp);
}

/// Room in `sweep_subs` beyond the subscribers: the internal hosts of
/// static mappings count there too.
const SWEEP_SUBS_SLACK: u32 = 4096;

/// The slots of `sweep_subs`, an open-addressing table (bpf/sweep.h):
/// twice the subscribers it may count, so that probes stay short.
fn sweep_subs_slots(sizes: &Sizes) -> u32 {
    sizes
        .subscribers
        .saturating_add(SWEEP_SUBS_SLACK)
        .saturating_mul(2)
        .min(1 << 26)
}

/// Release records one in-kernel sweep run can report (16 bytes each,
/// 8 per binding slot): half the bindings, so releasing every binding at
/// once takes one more run (a walk of the inbound halves).
pub fn sweep_out_size(bindings: u32) -> u32 {
    (bindings / 2).clamp(1024, 1 << 21)
}

/// External addresses whose used ports the in-kernel sweep marks in
/// `sweep_live` (24 KiB each, see `expiry::live_ranges`); the bindings of
/// any further address are marked in their inbound halves, one lookup per
/// live session.
pub const SWEEP_LIVE_ADDRS: u32 = 1024;

/// `sweep_live` and `sweep_zero` are one sweep's scratch, sized by the
/// pool (which a restarted daemon may change while it adopts the tables):
/// never pinned.
const UNPINNED: [&str; 2] = ["sweep_live", "sweep_zero"];

/// Sizes the maps from the configuration before load.
fn size_maps(
    m: &mut skel::OpenCgnatMaps<'_>,
    sizes: &Sizes,
    table: &SessionTable,
    pool: &[std::net::Ipv4Addr],
) -> Result<(), BpfError> {
    for (map, name, n) in [
        (&mut m.pool_addrs, "pool_addrs", MAX_POOL_ADDRS as u32),
        (&mut m.pool_load, "pool_load", MAX_POOL_ADDRS as u32),
        (
            &mut m.internal_prefixes,
            "internal_prefixes",
            MAX_PREFIXES as u32,
        ),
        (&mut m.pool_prefixes, "pool_prefixes", MAX_PREFIXES as u32),
        (&mut m.exempt_any, "exempt_any", MAX_PREFIXES as u32),
        (&mut m.exempt_port, "exempt_port", MAX_PREFIXES as u32),
        (&mut m.sessions, "sessions", table.total_segments()),
        (
            &mut m.session_locks,
            "session_locks",
            table.total_segments(),
        ),
        (&mut m.filter_addr, "filter_addr", sizes.sessions),
        (&mut m.subscribers, "subscribers", sizes.subscribers),
        (&mut m.blocks, "blocks", sizes.blocks),
        (&mut m.sub_blocks, "sub_blocks", sizes.blocks),
        (&mut m.frags, "frags", sizes.fragments),
        (&mut m.sweep_subs, "sweep_subs", sweep_subs_slots(sizes)),
        (&mut m.sweep_blocks, "sweep_blocks", sizes.blocks),
        (
            &mut m.sweep_live,
            "sweep_live",
            crate::expiry::live_ranges(pool, SWEEP_LIVE_ADDRS)
                .iter()
                .map(|r| r.1)
                .sum::<u32>()
                .max(1),
        ),
        (
            &mut m.sweep_out,
            "sweep_out",
            sweep_out_size(sizes.bindings),
        ),
    ] {
        map.set_max_entries(n).map_err(map_err(name))?;
    }
    Ok(())
}

/// Makes the pin directory (on a bpffs) and points every shared map at its
/// pin; with `adopting`, checks first that the pinned tables fit.
fn prepare_pins(
    open: &mut skel::OpenCgnatSkel<'_>,
    cfg: &Config,
    sizes: &Sizes,
    adopting: bool,
) -> Result<(), BpfError> {
    ensure_bpffs(&cfg.pin_path)?;
    if adopting {
        check_adoptable(&cfg.pin_path, sizes)?;
    }
    std::fs::create_dir_all(&cfg.pin_path).map_err(|e| BpfError::Pin {
        path: cfg.pin_path.clone(),
        err: e.to_string(),
    })?;
    for mut map in open.open_object_mut().maps_mut() {
        let name = map.name().to_string_lossy().into_owned();
        if name.contains('.') || UNPINNED.contains(&name.as_str()) {
            continue; // .rodata, .bss and UNPINNED: never shared
        }
        let path = cfg.pin_path.join(&name);
        map.set_pin_path(&path).map_err(|e| BpfError::Pin {
            path,
            err: e.to_string(),
        })?;
    }
    Ok(())
}

impl Datapath {
    /// Opens the skeleton, sets rodata and map sizes from `cfg`, loads it,
    /// fills the configuration maps, then attaches and pins as asked.
    pub fn load(cfg: &Config, opts: LoadOptions) -> Result<Datapath, BpfError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(BpfError::NotRoot);
        }
        let int_idx = ifindex(&cfg.internal_if, "interfaces.internal");
        let ext_idx = ifindex(&cfg.external_if, "interfaces.external");
        let (int_idx, ext_idx) = if opts.attach {
            (int_idx?, ext_idx?)
        } else {
            (int_idx.unwrap_or(0), ext_idx.unwrap_or(0))
        };
        let (fib_ifindex, fib_note) = if opts.attach {
            prepare_fib(cfg)?
        } else {
            (ifindex("lo", "fib_lookup").unwrap_or(1), None)
        };

        // The skeleton borrows its object for the daemon's lifetime.
        let obj: &'static mut MaybeUninit<libbpf_rs::OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let mut open = CgnatSkelBuilder::default()
            .open(obj)
            .map_err(BpfError::Open)?;
        let ro =
            open.maps.rodata_data.as_deref_mut().ok_or_else(|| {
                BpfError::Open(libbpf_rs::Error::from_raw_os_error(libc_enoent()))
            })?;
        let sizes = Sizes::of(cfg);
        // Pinned state: adopt what a previous daemon left (same ABI and
        // sizes), else create it; libbpf reuses a map pinned at its path.
        // An adopted session table keeps the hash key it was filled with.
        let adopting = opts.pin && cfg.pin_path.join("meta").exists();
        let seed = match adopting {
            true => {
                pinned_meta(&cfg.pin_path)
                    .map_err(|why| BpfError::Adopt {
                        dir: cfg.pin_path.clone(),
                        why,
                    })?
                    .session_seed
            }
            false => u64::from(random_u32()) << 32 | u64::from(random_u32()),
        };
        let table = SessionTable::new(sizes.sessions, sizes.bindings, seed);
        set_rodata(ro, cfg, fib_ifindex, &table);
        size_maps(&mut open.maps, &sizes, &table, &cfg.pool_addrs)?;

        if opts.pin {
            prepare_pins(&mut open, cfg, &sizes, adopting)?;
        }

        let skel = open.load().map_err(|e| {
            if adopting {
                BpfError::Adopt {
                    dir: cfg.pin_path.clone(),
                    why: format!("libbpf could not reuse the pinned maps: {e}"),
                }
            } else {
                BpfError::Load(e)
            }
        })?;
        let mut dp = Datapath {
            skel,
            links: Vec::new(),
            pin_dir: opts.pin.then(|| cfg.pin_path.clone()),
            address_dependent: cfg.filtering.any_address_dependent(),
            one_armed: cfg.one_armed(),
            internal_ifindex: int_idx,
            external_ifindex: ext_idx,
            injector: crate::inject::Injector::new().map_err(|e| BpfError::Inject {
                ifindex: 0,
                err: format!("AF_PACKET socket: {e}"),
            })?,
            attached: Vec::new(),
            adopted: adopting,
            link_pins: Vec::new(),
            table,
        };
        if let Some(n) = fib_note {
            dp.attached.push(n);
        }
        if opts.attach {
            dp.attached.extend(crate::veth::warnings(cfg));
        }
        dp.fill_config_maps(cfg, &[int_idx, ext_idx])?;
        // The route cache starts on only where routing depends on the
        // destination alone (src/routes.rs keeps this up to date).
        dp.route_gen()?
            .bump(crate::netlink::only_default_rules().unwrap_or(false))?;
        if opts.pin {
            dp.write_meta(&sizes, seed, [int_idx, ext_idx])?;
        }
        if opts.attach {
            dp.attach_all(cfg, int_idx, ext_idx)?;
        }
        Ok(dp)
    }

    /// Records what the pinned tables were made for, so that a later
    /// daemon adopts them only if it can use them (`pin::check_adoptable`).
    fn write_meta(
        &self,
        sizes: &Sizes,
        session_seed: u64,
        [int_idx, ext_idx]: [u32; 2],
    ) -> Result<(), BpfError> {
        let meta = types::cgnat_meta {
            abi: abi(),
            internal_ifindex: int_idx,
            external_ifindex: ext_idx,
            max_sessions: sizes.sessions,
            max_bindings: sizes.bindings,
            max_subscribers: sizes.subscribers,
            max_fragments: sizes.fragments,
            session_seed,
        };
        self.skel
            .maps
            .meta
            .update(bytes_of(&0u32), bytes_of(&meta), MapFlags::ANY)
            .map_err(map_err("meta"))
    }

    /// Attaches the entry points the interface roles need, then drops the
    /// links of a previous configuration that no role took over.
    fn attach_all(&mut self, cfg: &Config, int_idx: u32, ext_idx: u32) -> Result<(), BpfError> {
        if cfg.one_armed() {
            self.attach(Side::OneArmed, &cfg.internal_if, int_idx, cfg.xdp_mode)?;
        } else {
            self.attach(Side::Internal, &cfg.internal_if, int_idx, cfg.xdp_mode)?;
            self.attach(Side::External, &cfg.external_if, ext_idx, cfg.xdp_mode)?;
        }
        self.drop_stale_links();
        Ok(())
    }

    /// The program of an entry point (for a program that tail-calls it).
    pub fn prog_fd(&self, side: Side) -> std::os::fd::BorrowedFd<'_> {
        self.prog(side).as_fd()
    }

    fn prog(&self, side: Side) -> &libbpf_rs::ProgramMut<'static> {
        match side {
            Side::Internal => &self.skel.progs.xdp_internal,
            Side::External => &self.skel.progs.xdp_external,
            Side::OneArmed => &self.skel.progs.xdp_one_armed,
        }
    }

    /// Attaches one entry point through a bpf_link in the requested mode.
    /// With pinned state, a link pinned by a previous daemon is taken over
    /// and switched to this program atomically (bpf_link_update): traffic
    /// never stops; a new link is pinned so that it outlives this process.
    fn attach(&mut self, side: Side, iface: &str, idx: u32, mode: XdpMode) -> Result<(), BpfError> {
        let prog = side.prog_name();
        let prog_fd = self.prog(side).as_fd().as_raw_fd();
        let pin_name = format!("link_{prog}_{idx}");
        self.link_pins.push(pin_name.clone());
        let pin = self.pin_dir.as_ref().map(|d| d.join(&pin_name));
        if let Some(path) = pin.as_ref().filter(|p| p.exists()) {
            let fd = obj_get(path)?;
            // SAFETY: valid link and program fds; NULL opts are allowed.
            let r =
                unsafe { libbpf_sys::bpf_link_update(fd.as_raw_fd(), prog_fd, std::ptr::null()) };
            if r < 0 {
                return Err(BpfError::Pin {
                    path: path.clone(),
                    err: format!(
                        "cannot switch the pinned XDP link to the new program: {}",
                        std::io::Error::from_raw_os_error(-r)
                    ),
                });
            }
            self.links.push(fd);
            self.attached.push(format!(
                "{prog} took over the XDP link on {iface} (ifindex {idx}); traffic kept flowing"
            ));
            return Ok(());
        }
        let fd = attach_xdp(prog_fd, idx, mode, iface)?;
        if let Some(path) = &pin {
            obj_pin(&fd, path)?;
        }
        self.links.push(fd);
        self.attached.push(format!(
            "{prog} attached to {iface} (ifindex {idx}, {mode} mode)"
        ));
        Ok(())
    }

    /// Unpins links of a previous configuration (other interfaces or
    /// roles) that this daemon did not take over: they detach.
    fn drop_stale_links(&mut self) {
        let Some(dir) = &self.pin_dir else { return };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("link_")
                && !self.link_pins.contains(&name)
                && std::fs::remove_file(e.path()).is_ok()
            {
                self.attached
                    .push(format!("detached the stale link {name}"));
            }
        }
    }

    /// The route cache's generation slot.
    pub fn route_gen(&self) -> Result<RouteGen, BpfError> {
        MapHandle::try_from(&self.skel.maps.route_gen)
            .map(RouteGen)
            .map_err(map_err("route_gen"))
    }

    /// The session table's slots of either kind (sessions, bindings'
    /// outbound halves).
    fn slot_table(&self) -> Result<std::sync::Arc<SlotTable>, BpfError> {
        let m = &self.skel.maps;
        let h = |map: &libbpf_rs::Map<'_>, name: &'static str| {
            MapHandle::try_from(map).map_err(map_err(name))
        };
        let ops = self.skel.progs.session_ops.as_fd().try_clone_to_owned();
        Ok(SlotTable::new(
            [
                h(&m.sessions, "sessions")?,
                h(&m.session_locks, "session_locks")?,
                h(&m.session_count, "session_count")?,
            ],
            Some(ops.map_err(|e| map_err("sessions")(e.into()))?),
            self.table,
        ))
    }

    /// The binding table of the loaded program.
    fn bindings(&self) -> Result<Bindings, BpfError> {
        Ok(Bindings::new(self.slot_table()?))
    }

    /// Owned handles on the tables, for expiry and statistics.
    pub fn tables(&self) -> Result<Tables, BpfError> {
        let m = &self.skel.maps;
        let h = |map: &libbpf_rs::Map<'_>, name: &'static str| {
            MapHandle::try_from(map).map_err(map_err(name))
        };
        let slots = self.slot_table()?;
        Ok(Tables {
            sessions: Sessions::new(slots.clone()),
            bindings: Bindings::new(slots),
            stats: h(&m.stats, "stats")?,
            frags: h(&m.frags, "frags")?,
            frag_stash: h(&m.frag_stash, "frag_stash")?,
            frag_pending: h(&m.frag_pending, "frag_pending")?,
            subscribers: h(&m.subscribers, "subscribers")?,
            pool_load: h(&m.pool_load, "pool_load")?,
            blocks: h(&m.blocks, "blocks")?,
            sub_blocks: h(&m.sub_blocks, "sub_blocks")?,
            event_lost: h(&m.event_lost, "event_lost")?,
            filter_addr: if self.address_dependent {
                Some(h(&m.filter_addr, "filter_addr")?)
            } else {
                None
            },
            sweep: Some(KernelSweep {
                prog: self
                    .skel
                    .progs
                    .sweep_tables
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(BpfError::SweepRun)?,
                subs: MappedArray::new(&m.sweep_subs, "sweep_subs")?,
                blocks: h(&m.sweep_blocks, "sweep_blocks")?,
                out: MappedArray::new(&m.sweep_out, "sweep_out")?,
                live: h(&m.sweep_live, "sweep_live")?,
            }),
        })
    }

    /// The event ring buffer.
    pub fn events(&self) -> &libbpf_rs::Map<'static> {
        &self.skel.maps.events
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        // Unpinned links close with their fds (detaching the programs);
        // pinned ones, and the pinned maps, outlive the daemon on purpose.
        self.links.clear();
    }
}

/// A random key (for the IP ID hash); falls back to the clock.
fn random_u32() -> u32 {
    use std::io::Read;
    let mut b = [0u8; 4];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)) {
        Ok(()) => u32::from_ne_bytes(b),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0x9e37_79b9),
    }
}

fn libc_enoent() -> i32 {
    nix::errno::Errno::ENOENT as i32
}

/// The epoll fd of a ring buffer, readable when records wait (for poll(2)
/// beside other fds).
pub fn ring_fd<'a>(rb: &'a libbpf_rs::RingBuffer<'_>) -> std::os::fd::BorrowedFd<'a> {
    // SAFETY: libbpf owns the epoll fd for as long as the ring buffer
    // lives, and the borrow cannot outlive `rb`.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(rb.epoll_fd()) }
}

/// The first IPv4 address of an interface: the source of the ICMP errors
/// cgnat sends there.
pub fn interface_addr(name: &str) -> Option<std::net::Ipv4Addr> {
    nix::ifaddrs::getifaddrs().ok()?.find_map(|ifa| {
        if ifa.interface_name != name {
            return None;
        }
        ifa.address
            .as_ref()
            .and_then(|a| a.as_sockaddr_in())
            .map(|sin| sin.ip())
    })
}

/// The Ethernet address of interface `name` in this network namespace.
pub fn interface_mac(name: &str) -> Option<[u8; 6]> {
    nix::ifaddrs::getifaddrs().ok()?.find_map(|ifa| {
        if ifa.interface_name != name {
            return None;
        }
        ifa.address
            .as_ref()
            .and_then(|a| a.as_link_addr())
            .and_then(|l| l.addr())
            .filter(|m| m.iter().any(|b| *b != 0))
    })
}

/// Name of an interface index, for messages.
pub fn ifname(idx: u32) -> String {
    nix::net::if_::if_indextoname(idx)
        .ok()
        .and_then(|c: CString| c.into_string().ok())
        .unwrap_or_else(|| format!("ifindex {idx}"))
}

pub mod abi;
mod batch;
mod bindings;
mod fill;
mod held;
mod mapped;
mod pin;
mod run;
mod selfcheck;
mod sessions;
mod tables;

pub use batch::{
    delete_keys, dump_array_range, dump_typed, lookup_all, scan_array_range, KeyValue,
};
pub use bindings::Bindings;
pub use mapped::MappedArray;
pub use pin::attach_xdp;
pub use pin::detach;
use pin::{check_adoptable, ensure_bpffs, obj_get, obj_pin, pinned_meta};
pub use run::{run_xdp, xdp_ctx, XdpRun};
pub use sessions::{SessionTable, Sessions, SlotTable};
pub use tables::{KernelSweep, RouteGen, Tables};
