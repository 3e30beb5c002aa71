//! The BPF loader: the generated skeleton, rodata and map sizing from the
//! config, load, attachment through bpf_links, pinning, and byte views of
//! the shared ABI types.
//!
//! All `unsafe` of the crate lives here: the skeleton `include!`, the
//! `Pod` marker for generated types, and the raw `bpf_link_create` call;
//! also the loader of the benchmark's own object ([`floor`]).

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
unsafe impl Pod for types::cgnat_route_key {}
unsafe impl Pod for types::cgnat_route {}
unsafe impl Pod for types::cgnat_if_mac {}
unsafe impl Pod for types::xdp_md {}
unsafe impl Pod for u8 {}
unsafe impl Pod for u32 {}
unsafe impl Pod for u64 {}

/// A map entry as bytes: (key, value).
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// Every (key, value) of a map, read with BPF_MAP_LOOKUP_BATCH, `batch`
/// entries per call (not for per-CPU maps).
///
/// The kernel returns whole hash buckets only, so a batch is often shorter
/// than asked although more entries follow; libbpf-rs 0.27's batch
/// iterator takes the first short batch for the last one and ends a dump of
/// a large map early (after a few thousand entries). This reads until the
/// kernel says ENOENT.
pub fn lookup_all(map: &dyn MapCore, batch: u32) -> Result<Vec<KeyValue>, libbpf_rs::Error> {
    const ENOENT: i32 = nix::errno::Errno::ENOENT as i32;
    const ENOSPC: i32 = nix::errno::Errno::ENOSPC as i32;
    const EINTR: i32 = nix::errno::Errno::EINTR as i32;
    let (ks, vs) = (map.key_size() as usize, map.value_size() as usize);
    let fd = map.as_fd().as_raw_fd();
    let mut batch = batch.max(1);
    let mut out = Vec::new();
    // the position token: a u32 bucket index for hash maps, a key for others
    let mut token = vec![0u8; ks.max(8)];
    let mut started = false;
    loop {
        let mut keys = vec![0u8; ks * batch as usize];
        let mut vals = vec![0u8; vs * batch as usize];
        let mut next = vec![0u8; token.len()];
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
        let n = (count as usize).min(batch as usize);
        out.extend(
            keys.chunks_exact(ks)
                .zip(vals.chunks_exact(vs))
                .take(n)
                .map(|(k, v)| (k.to_vec(), v.to_vec())),
        );
        if err == ENOENT {
            return Ok(out);
        }
        token = next;
        started = true;
    }
}

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
    #[error("benchmark: {0}")]
    Bench(String),
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

/// Slots of the event_lost map (enum cgnat_event_type values).
pub const EVENT_SLOTS: u32 = 8;

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

/// Can the state pinned in `dir` be adopted with these sizes?
fn check_adoptable(dir: &Path, sizes: &Sizes) -> Result<(), BpfError> {
    let adopt = |why: String| BpfError::Adopt {
        dir: dir.to_owned(),
        why,
    };
    let h =
        MapHandle::from_pinned_path(dir.join("meta")).map_err(|e| adopt(format!("meta: {e}")))?;
    let meta = h
        .lookup(bytes_of(&0u32), MapFlags::ANY)
        .ok()
        .flatten()
        .and_then(|v| from_bytes::<types::cgnat_meta>(&v))
        .ok_or_else(|| adopt("no metadata".into()))?;
    if meta.abi != abi() {
        return Err(adopt(format!(
            "it was made by a cgnat with another table layout (ABI {:016x}, this one is {:016x})",
            meta.abi,
            abi()
        )));
    }
    for (field, was, now) in [
        ("nat.max_sessions", meta.max_sessions, sizes.sessions),
        ("nat.max_bindings", meta.max_bindings, sizes.bindings),
        (
            "pool.max_subscribers",
            meta.max_subscribers,
            sizes.subscribers,
        ),
        ("nat.max_fragments", meta.max_fragments, sizes.fragments),
    ] {
        if was != now {
            return Err(adopt(format!(
                "{field} changed from {was} to {now}, and tables cannot be resized in place"
            )));
        }
    }
    Ok(())
}

fn obj_get(path: &Path) -> Result<OwnedFd, BpfError> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| BpfError::Pin {
        path: path.to_owned(),
        err: e.to_string(),
    })?;
    // SAFETY: c is a valid C string; the returned fd is owned.
    let fd = unsafe { libbpf_sys::bpf_obj_get(c.as_ptr()) };
    if fd < 0 {
        return Err(BpfError::Pin {
            path: path.to_owned(),
            err: std::io::Error::from_raw_os_error(-fd).to_string(),
        });
    }
    // SAFETY: fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn obj_pin(fd: &OwnedFd, path: &Path) -> Result<(), BpfError> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| BpfError::Pin {
        path: path.to_owned(),
        err: e.to_string(),
    })?;
    // SAFETY: valid fd and C string.
    let r = unsafe { libbpf_sys::bpf_obj_pin(fd.as_raw_fd(), c.as_ptr()) };
    if r < 0 {
        return Err(BpfError::Pin {
            path: path.to_owned(),
            err: std::io::Error::from_raw_os_error(-r).to_string(),
        });
    }
    Ok(())
}

/// What `Datapath::load` does beyond loading.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Attach to the configured interfaces.
    pub attach: bool,
    /// Pin the maps under `daemon.pin_path`.
    pub pin: bool,
}

/// The maps the daemon and the CLI work on, as owned handles: taken from a
/// loaded program or opened from their pins.
#[derive(Debug)]
pub struct Tables {
    pub sessions: MapHandle,
    pub bind_in: MapHandle,
    pub bind_out: MapHandle,
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
}

/// Map names the CLI opens under `daemon.pin_path`.
#[allow(dead_code)]
const PINNED: [&str; 12] = [
    "subscribers",
    "pool_load",
    "blocks",
    "sub_blocks",
    "sessions",
    "bind_in",
    "bind_out",
    "stats",
    "filter_addr",
    "frags",
    "frag_stash",
    "frag_pending",
];

impl Tables {
    /// Opens the maps pinned by a running daemon.
    pub fn open_pinned(dir: &Path) -> Result<Tables, BpfError> {
        let open = |name: &'static str| {
            let path = dir.join(name);
            MapHandle::from_pinned_path(&path).map_err(|e| BpfError::Pin {
                path,
                err: format!("{e} (is cgnat running with this config?)"),
            })
        };
        Ok(Tables {
            sessions: open("sessions")?,
            bind_in: open("bind_in")?,
            bind_out: open("bind_out")?,
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
        })
    }
}

/// The one slot of `route_gen` (include/cgnat.h): the generation every
/// route cache entry must carry to be used, and the cache's on switch.
#[derive(Debug)]
pub struct RouteGen(MapHandle);

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

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Makes sure `dir`'s parent is a bpffs, mounting one at /sys/fs/bpf if
/// that is where it should be and nothing is mounted.
fn ensure_bpffs(dir: &Path) -> Result<(), BpfError> {
    let parent = dir.parent().unwrap_or(Path::new("/"));
    let pin_err = |err: String| BpfError::Pin {
        path: dir.to_owned(),
        err,
    };
    let is_bpffs = |p: &Path| {
        nix::sys::statfs::statfs(p)
            .map(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
            .unwrap_or(false)
    };
    if is_bpffs(parent) {
        return Ok(());
    }
    if parent == Path::new("/sys/fs/bpf") {
        std::fs::create_dir_all(parent).map_err(|e| pin_err(e.to_string()))?;
        nix::mount::mount(
            Some("bpf"),
            parent,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| pin_err(format!("cannot mount bpffs on /sys/fs/bpf: {e}")))?;
        return Ok(());
    }
    Err(pin_err(format!(
        "{} is not a bpf filesystem (mount -t bpf bpf {})",
        parent.display(),
        parent.display()
    )))
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
        let mode = |f: Filtering| match f {
            Filtering::EndpointIndependent => types::cgnat_filtering::CGNAT_FILTER_EIF.0 as u8,
            Filtering::AddressDependent => types::cgnat_filtering::CGNAT_FILTER_ADF.0 as u8,
            Filtering::AddressAndPortDependent => types::cgnat_filtering::CGNAT_FILTER_APDF.0 as u8,
        };
        ro.FILTER_UDP = mode(cfg.filtering.udp);
        ro.FILTER_TCP = mode(cfg.filtering.tcp);
        ro.FILTER_ICMP = mode(cfg.filtering.icmp);

        let sizes = Sizes::of(cfg);
        let m = &mut open.maps;
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
            (&mut m.sessions, "sessions", sizes.sessions),
            (&mut m.filter_addr, "filter_addr", sizes.sessions),
            (&mut m.bind_out, "bind_out", sizes.bindings),
            (&mut m.bind_in, "bind_in", sizes.bindings),
            (&mut m.subscribers, "subscribers", sizes.subscribers),
            (&mut m.blocks, "blocks", sizes.blocks),
            (&mut m.sub_blocks, "sub_blocks", sizes.blocks),
            (&mut m.frags, "frags", sizes.fragments),
        ] {
            map.set_max_entries(n).map_err(map_err(name))?;
        }

        // Pinned state: adopt what a previous daemon left (same ABI and
        // sizes), else create it; libbpf reuses a map pinned at its path.
        let adopting = opts.pin && cfg.pin_path.join("meta").exists();
        if opts.pin {
            ensure_bpffs(&cfg.pin_path)?;
            if adopting {
                check_adoptable(&cfg.pin_path, &sizes)?;
            }
            std::fs::create_dir_all(&cfg.pin_path).map_err(|e| BpfError::Pin {
                path: cfg.pin_path.clone(),
                err: e.to_string(),
            })?;
            for mut map in open.open_object_mut().maps_mut() {
                let name = map.name().to_string_lossy().into_owned();
                if name.contains('.') {
                    continue; // .rodata, .bss: per program, never shared
                }
                let path = cfg.pin_path.join(&name);
                map.set_pin_path(&path).map_err(|e| BpfError::Pin {
                    path,
                    err: e.to_string(),
                })?;
            }
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
            .bump(crate::routes::only_default_rules().unwrap_or(false))?;
        if opts.pin {
            let meta = types::cgnat_meta {
                abi: abi(),
                internal_ifindex: int_idx,
                external_ifindex: ext_idx,
                max_sessions: sizes.sessions,
                max_bindings: sizes.bindings,
                max_subscribers: sizes.subscribers,
                max_fragments: sizes.fragments,
            };
            dp.skel
                .maps
                .meta
                .update(bytes_of(&0u32), bytes_of(&meta), MapFlags::ANY)
                .map_err(map_err("meta"))?;
        }
        if opts.attach {
            if cfg.one_armed() {
                dp.attach(Side::OneArmed, &cfg.internal_if, int_idx, cfg.xdp_mode)?;
            } else {
                dp.attach(Side::Internal, &cfg.internal_if, int_idx, cfg.xdp_mode)?;
                dp.attach(Side::External, &cfg.external_if, ext_idx, cfg.xdp_mode)?;
            }
            dp.drop_stale_links();
        }
        Ok(dp)
    }

    fn fill_config_maps(&self, cfg: &Config, ifindexes: &[u32]) -> Result<(), BpfError> {
        let m = &self.skel.maps;
        for (i, a) in cfg.pool_addrs.iter().enumerate() {
            let v: u32 = u32::from(*a).to_be();
            m.pool_addrs
                .update(bytes_of(&(i as u32)), bytes_of(&v), MapFlags::ANY)
                .map_err(map_err("pool_addrs"))?;
        }
        let one = 1u8;
        let lpm = |p: &ipnetwork::Ipv4Network| types::cgnat_lpm_key {
            prefixlen: u32::from(p.prefix()),
            addr: u32::from(p.network()).to_be(),
        };
        // Adopted or reloaded tables hold the previous config: new entries
        // are written first, stale ones removed after, so no lookup ever
        // misses in between.
        let stale = |map: &libbpf_rs::Map<'_>, keep: &[Vec<u8>]| -> Vec<Vec<u8>> {
            map.keys().filter(|k| !keep.contains(k)).collect()
        };
        let keep_internal: Vec<Vec<u8>> = cfg
            .internal_prefixes
            .iter()
            .map(|p| bytes_of(&lpm(p)).to_vec())
            .collect();
        // A pool prefix removed from the config drains: it stays while any
        // binding uses it (new subscribers never get its addresses).
        let in_use: Vec<Ipv4Addr> = m
            .bind_in
            .keys()
            .filter_map(|k| from_bytes::<types::cgnat_endpoint>(&k))
            .map(|k| Ipv4Addr::from(u32::from_be(k.addr)))
            .collect();
        let keep_pool: Vec<Vec<u8>> = m
            .pool_prefixes
            .keys()
            .filter(|k| {
                from_bytes::<types::cgnat_lpm_key>(k).is_some_and(|lk| {
                    ipnetwork::Ipv4Network::new(
                        Ipv4Addr::from(u32::from_be(lk.addr)),
                        lk.prefixlen as u8,
                    )
                    .is_ok_and(|n| in_use.iter().any(|a| n.contains(*a)))
                })
            })
            .chain(cfg.pool_prefixes.iter().map(|p| bytes_of(&lpm(p)).to_vec()))
            .collect();
        for (p, offset) in crate::pool::Deterministic::prefix_offsets(&cfg.internal_prefixes) {
            let v = types::cgnat_prefix_info {
                network: u32::from(p.network()).to_be(),
                offset,
            };
            m.internal_prefixes
                .update(bytes_of(&lpm(&p)), bytes_of(&v), MapFlags::ANY)
                .map_err(map_err("internal_prefixes"))?;
        }
        for p in &cfg.pool_prefixes {
            m.pool_prefixes
                .update(bytes_of(&lpm(p)), bytes_of(&one), MapFlags::ANY)
                .map_err(map_err("pool_prefixes"))?;
        }
        for (map, name, keep) in [
            (&m.internal_prefixes, "internal_prefixes", &keep_internal),
            (&m.pool_prefixes, "pool_prefixes", &keep_pool),
        ] {
            for k in stale(map, keep) {
                map.delete(&k).map_err(map_err(name))?;
            }
        }
        let mut keep_any = Vec::new();
        let mut keep_port = Vec::new();
        for e in &cfg.exempt {
            match e.port {
                None => {
                    let k = lpm(&e.prefix);
                    m.exempt_any
                        .update(bytes_of(&k), bytes_of(&one), MapFlags::ANY)
                        .map_err(map_err("exempt_any"))?;
                    keep_any.push(bytes_of(&k).to_vec());
                }
                Some(port) => {
                    let k = types::cgnat_lpm_port_key {
                        prefixlen: 16 + u32::from(e.prefix.prefix()),
                        port: port.to_be(),
                        addr: e.prefix.network().octets(),
                        _pad: [0; 2],
                    };
                    m.exempt_port
                        .update(bytes_of(&k), bytes_of(&one), MapFlags::ANY)
                        .map_err(map_err("exempt_port"))?;
                    keep_port.push(bytes_of(&k).to_vec());
                }
            }
        }
        for (map, name, keep) in [
            (&m.exempt_any, "exempt_any", &keep_any),
            (&m.exempt_port, "exempt_port", &keep_port),
        ] {
            for k in stale(map, keep) {
                map.delete(&k).map_err(map_err(name))?;
            }
        }

        let static_flag = types::cgnat_binding_flag::CGNAT_BIND_STATIC.0 as u8;
        // static mappings no longer configured go
        let old_statics: Vec<(types::cgnat_endpoint, types::cgnat_binding)> = m
            .bind_in
            .keys()
            .filter_map(|k| {
                let v = m.bind_in.lookup(&k, MapFlags::ANY).ok().flatten()?;
                Some((from_bytes(&k)?, from_bytes(&v)?))
            })
            .collect();
        for (ek, b) in old_statics {
            if b.flags & static_flag == 0 {
                continue;
            }
            let still = cfg.statics.iter().any(|st| {
                st.proto == ek.proto
                    && u32::from(*st.external.ip()).to_be() == ek.addr
                    && st.external.port().to_be() == ek.port
                    && u32::from(*st.internal.ip()).to_be() == b.addr
                    && st.internal.port().to_be() == b.port
            });
            if !still {
                let ik = types::cgnat_endpoint {
                    addr: b.addr,
                    port: b.port,
                    proto: ek.proto,
                    _pad: 0,
                };
                let _ = m.bind_out.delete(bytes_of(&ik));
                let _ = m.bind_in.delete(bytes_of(&ek));
            }
        }
        for st in &cfg.statics {
            let ik = types::cgnat_endpoint {
                addr: u32::from(*st.internal.ip()).to_be(),
                port: st.internal.port().to_be(),
                proto: st.proto,
                _pad: 0,
            };
            let ek = types::cgnat_endpoint {
                addr: u32::from(*st.external.ip()).to_be(),
                port: st.external.port().to_be(),
                proto: st.proto,
                _pad: 0,
            };
            let to_ext = types::cgnat_binding {
                addr: ek.addr,
                port: ek.port,
                flags: static_flag,
                ..Default::default()
            };
            let to_int = types::cgnat_binding {
                addr: ik.addr,
                port: ik.port,
                flags: static_flag,
                ..Default::default()
            };
            m.bind_in
                .update(bytes_of(&ek), bytes_of(&to_int), MapFlags::ANY)
                .map_err(map_err("bind_in"))?;
            m.bind_out
                .update(bytes_of(&ik), bytes_of(&to_ext), MapFlags::ANY)
                .map_err(map_err("bind_out"))?;
        }
        for idx in ifindexes.iter().filter(|i| **i != 0) {
            m.tx_ports
                .update(bytes_of(idx), bytes_of(idx), MapFlags::ANY)
                .map_err(map_err("tx_ports"))?;
        }
        for (name, idx) in [&cfg.internal_if, &cfg.external_if].iter().zip(ifindexes) {
            if let Some(a) = interface_addr(name) {
                let v = u32::from(a).to_be();
                m.if_addrs
                    .update(bytes_of(idx), bytes_of(&v), MapFlags::ANY)
                    .map_err(map_err("if_addrs"))?;
            }
        }
        for name in [&cfg.internal_if, &cfg.external_if] {
            self.set_interface_mac(cfg, name, interface_mac(name))?;
        }
        Ok(())
    }

    /// Sets the MAC frames to interface `name` must carry to be translated
    /// (map `if_macs`, by side; `None`: no check). At load, and when the
    /// interface's MAC changes under the daemon (`src/watch.rs`).
    pub fn set_interface_mac(
        &self,
        cfg: &Config,
        name: &str,
        mac: Option<[u8; 6]>,
    ) -> Result<(), BpfError> {
        let v = types::cgnat_if_mac {
            addr: mac.unwrap_or_default(),
            set: u8::from(mac.is_some()),
            _pad: 0,
        };
        // slot 0: internal (and one-armed), slot 1: external
        let slots = [
            (0u32, cfg.internal_if == name),
            (1u32, cfg.external_if == name),
        ];
        for (slot, _) in slots.iter().filter(|(_, is)| *is) {
            self.skel
                .maps
                .if_macs
                .update(bytes_of(slot), bytes_of(&v), MapFlags::ANY)
                .map_err(map_err("if_macs"))?;
        }
        Ok(())
    }

    /// Sets the address the ICMP errors generated on interface `ifindex`
    /// come from (map `if_addrs`, filled at load), or removes it (`None`:
    /// no error is generated there then). The daemon calls it when an
    /// interface's address changes under it (`src/watch.rs`).
    pub fn set_interface_addr(
        &self,
        ifindex: u32,
        addr: Option<std::net::Ipv4Addr>,
    ) -> Result<(), BpfError> {
        let m = &self.skel.maps.if_addrs;
        match addr {
            Some(a) => m
                .update(
                    bytes_of(&ifindex),
                    bytes_of(&u32::from(a).to_be()),
                    MapFlags::ANY,
                )
                .map_err(map_err("if_addrs")),
            // absent already is fine
            None => {
                let _ = m.delete(bytes_of(&ifindex));
                Ok(())
            }
        }
    }

    /// The program of an entry point (for the benchmark's feeder, which
    /// tail-calls it).
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
        let fd = link_xdp(prog_fd, idx, mode, iface)?;
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

    /// Owned handles on the tables, for expiry and statistics.
    pub fn tables(&self) -> Result<Tables, BpfError> {
        let m = &self.skel.maps;
        let h = |map: &libbpf_rs::Map<'_>, name: &'static str| {
            MapHandle::try_from(map).map_err(map_err(name))
        };
        Ok(Tables {
            sessions: h(&m.sessions, "sessions")?,
            bind_in: h(&m.bind_in, "bind_in")?,
            bind_out: h(&m.bind_out, "bind_out")?,
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
        })
    }

    /// The event ring buffer.
    pub fn events(&self) -> &libbpf_rs::Map<'static> {
        &self.skel.maps.events
    }

    /// Runs one frame through an entry point with BPF_PROG_TEST_RUN, as if
    /// received on `ingress_ifindex` (in the caller's network namespace).
    /// Returns the XDP action and the frame as the program left it.
    pub fn test_run(
        &self,
        side: Side,
        frame: &[u8],
        ingress_ifindex: u32,
    ) -> Result<(u32, Vec<u8>), libbpf_rs::Error> {
        let mut ctx_bytes = xdp_ctx(frame.len(), ingress_ifindex);
        let mut out = vec![0u8; frame.len() + 256];
        let input = libbpf_rs::ProgramInput {
            context_in: Some(&mut ctx_bytes),
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        };
        let res = self.prog(side).test_run(input)?;
        let ret = res.return_value;
        let len = res.data.map(|d| d.len()).unwrap_or(0);
        out.truncate(len);
        Ok((ret, out))
    }

    /// Re-runs the held later fragments of datagram `key` through the
    /// program of the interface each was received on, with live frames:
    /// their first fragment has arrived, so they are translated and sent
    /// by XDP now. Returns how many were released.
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
        const XDP_TX: u32 = 3;
        const XDP_REDIRECT: u32 = 4;
        let len = (st.len as usize).min(st.data.len());
        let side = if self.one_armed {
            Side::OneArmed
        } else if st.ifindex == self.internal_ifindex {
            Side::Internal
        } else {
            Side::External
        };
        let mut ctx_bytes = xdp_ctx(len, st.ifindex);
        // an ICMP error built from the frame may be longer than it
        let mut out = vec![0u8; len + 256];
        let input = libbpf_rs::ProgramInput {
            context_in: Some(&mut ctx_bytes),
            data_in: Some(&st.data[..len]),
            data_out: Some(&mut out),
            repeat: 1,
            ..Default::default()
        };
        let res = self
            .prog(side)
            .test_run(input)
            .map_err(map_err("test_run"))?;
        let frame = res.data.unwrap_or_default();
        let egress = match res.return_value {
            XDP_TX => st.ifindex,
            XDP_REDIRECT => match frame.get(6..12).and_then(|m| self.ifindex_of_mac(m)) {
                Some(i) => i,
                None => return Ok(()),
            },
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

    /// Runs a frame `repeat` times (on the same buffer: each run sees what
    /// the previous one left) and returns the last XDP action and the
    /// kernel's mean time per run (ns).
    pub fn bench_run(
        &self,
        side: Side,
        frame: &[u8],
        ingress_ifindex: u32,
        repeat: u32,
    ) -> Result<(u32, u64), libbpf_rs::Error> {
        let mut ctx_bytes = xdp_ctx(frame.len(), ingress_ifindex);
        let input = libbpf_rs::ProgramInput {
            context_in: Some(&mut ctx_bytes),
            data_in: Some(frame),
            repeat,
            ..Default::default()
        };
        let res = self.prog(side).test_run(input)?;
        Ok((res.return_value, res.duration.as_nanos() as u64))
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        // Unpinned links close with their fds (detaching the programs);
        // pinned ones, and the pinned maps, outlive the daemon on purpose.
        self.links.clear();
    }
}

/// Removes everything a daemon pinned under `dir`: its XDP links (the
/// programs detach as soon as no process holds them) and its tables (all
/// sessions are dropped). Returns what was removed.
pub fn detach(dir: &Path) -> Result<Vec<String>, BpfError> {
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => {
            return Err(BpfError::Pin {
                path: dir.to_owned(),
                err: e.to_string(),
            })
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    // links first, so the programs stop before their maps go
    names.sort_by_key(|n| !n.starts_with("link_"));
    for n in names {
        let path = dir.join(&n);
        std::fs::remove_file(&path).map_err(|e| BpfError::Pin {
            path: path.clone(),
            err: e.to_string(),
        })?;
        removed.push(n);
    }
    let _ = std::fs::remove_dir(dir);
    Ok(removed)
}

/// Creates an XDP bpf_link of `prog_fd` on `idx` in the given mode.
fn link_xdp(prog_fd: i32, idx: u32, mode: XdpMode, iface: &str) -> Result<OwnedFd, BpfError> {
    const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
    const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
    // SAFETY: zeroed is a valid bpf_link_create_opts; sz is set below.
    let mut lopts: libbpf_sys::bpf_link_create_opts = unsafe { std::mem::zeroed() };
    lopts.sz = std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as _;
    lopts.flags = match mode {
        XdpMode::Native => XDP_FLAGS_DRV_MODE,
        XdpMode::Generic => XDP_FLAGS_SKB_MODE,
    };
    // SAFETY: valid prog fd, ifindex and opts; the returned fd is owned.
    let fd =
        unsafe { libbpf_sys::bpf_link_create(prog_fd, idx as i32, libbpf_sys::BPF_XDP, &lopts) };
    if fd < 0 {
        let err = std::io::Error::from_raw_os_error(-fd);
        return Err(match -fd {
            16 => BpfError::Busy {
                iface: iface.into(),
            },
            95 if mode == XdpMode::Native => BpfError::NoNative {
                iface: iface.into(),
            },
            _ => BpfError::Attach {
                iface: iface.into(),
                mode,
                err,
            },
        });
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
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

/// An `xdp_pass` program attached to an interface (detached on drop).
pub struct PassLink {
    _dp: Datapath,
    _link: OwnedFd,
}

/// Attaches the object's `xdp_pass` program (returns XDP_PASS) in native
/// mode to `ifindex` in the current network namespace. Test beds put it on
/// the far end of veth links so that frames sent by XDP_TX are delivered.
pub fn attach_pass_program(ifindex: u32) -> Result<PassLink, BpfError> {
    let cfg = Config::parse(
        "[interfaces]\ninternal = \"lo\"\nexternal = \"lo\"\n[nat]\n\
         internal_prefixes = [\"10.255.255.0/24\"]\nexternal_pool = [\"192.0.2.1/32\"]\n\
         max_sessions = 16\nmax_bindings = 16\n",
        Path::new("(xdp_pass)"),
    )
    .map_err(|e| BpfError::Pin {
        path: PathBuf::from("(xdp_pass)"),
        err: e.to_string(),
    })?;
    let dp = Datapath::load(
        &cfg,
        LoadOptions {
            attach: false,
            pin: false,
        },
    )?;
    let fd = link_xdp(
        dp.skel.progs.xdp_pass.as_fd().as_raw_fd(),
        ifindex,
        XdpMode::Native,
        &ifname(ifindex),
    )?;
    Ok(PassLink { _dp: dp, _link: fd })
}

/// The epoll fd of a ring buffer, readable when records wait (for poll(2)
/// beside other fds).
pub fn ring_fd<'a>(rb: &'a libbpf_rs::RingBuffer<'_>) -> std::os::fd::BorrowedFd<'a> {
    // SAFETY: libbpf owns the epoll fd for as long as the ring buffer
    // lives, and the borrow cannot outlive `rb`.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(rb.epoll_fd()) }
}

/// A BPF_PROG_TEST_RUN context: a frame of `len` bytes received on
/// `ingress_ifindex` (in the caller's network namespace).
fn xdp_ctx(len: usize, ingress_ifindex: u32) -> Vec<u8> {
    let ctx = types::xdp_md {
        data: 0,
        data_end: len as u32,
        ingress_ifindex,
        ..Default::default()
    };
    bytes_of(&ctx).to_vec()
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

/// The benchmark's XDP object (bpf/bench/floor.bpf.c), not part of the
/// data path: the floor forwarder `xdp_floor` and the instruments of
/// `make bench` (`xdp_feed`, `xdp_empty`, `xdp_gen`, `xdp_sink`).
pub mod floor {
    use std::mem::MaybeUninit;
    use std::net::Ipv4Addr;
    use std::os::fd::{AsFd, AsRawFd, OwnedFd};

    use libbpf_rs::skel::{OpenSkel, SkelBuilder};
    use libbpf_rs::{MapCore, MapFlags, MapHandle};

    use super::{bytes_of, libc_enoent, link_xdp, map_err, xdp_ctx, BpfError, Datapath, Side};
    use crate::config::XdpMode;

    #[allow(clippy::all, clippy::pedantic, unsafe_op_in_unsafe_fn)]
    mod skel {
        include!(concat!(env!("OUT_DIR"), "/floor.skel.rs"));
    }
    use skel::{FloorSkel, FloorSkelBuilder};

    /// Largest frame `xdp_feed` restores (BENCH_FRAME_MAX).
    pub const FRAME_MAX: usize = 256;
    const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
    const BATCH: usize = 4096;

    /// The programs of the object.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Prog {
        /// The floor forwarder.
        Floor,
        /// The floor plus cgnat's two fast-path hash lookups.
        Probe,
        /// Restores a pristine frame, then tail-calls the target.
        Feed,
        /// Does nothing (returns XDP_DROP): the feeder's own cost.
        Empty,
        /// Live-frames traffic generator (XDP_TX with a new source).
        Gen,
        /// Counts and drops.
        Sink,
    }

    /// What `xdp_feed` tail-calls.
    pub enum Target<'a> {
        Floor,
        Probe,
        Empty,
        Cgnat(&'a Datapath, Side),
    }

    /// A loaded instance of the object; dropping it detaches its links.
    pub struct Floor {
        skel: FloorSkel<'static>,
        links: Vec<OwnedFd>,
        frame_len: usize,
    }

    impl Floor {
        /// Loads the object; bpf_fib_lookup is made from `fib_ifindex` (0:
        /// the ingress interface), `frames` holds up to `max_frames` and
        /// the maps of `xdp_probe` are sized (bindings, sessions) as
        /// cgnat's bind_out and sessions.
        pub fn load(
            fib_ifindex: u32,
            max_frames: u32,
            probe_entries: (u32, u32),
        ) -> Result<Floor, BpfError> {
            if !nix::unistd::geteuid().is_root() {
                return Err(BpfError::NotRoot);
            }
            let obj: &'static mut MaybeUninit<libbpf_rs::OpenObject> =
                Box::leak(Box::new(MaybeUninit::uninit()));
            let mut open = FloorSkelBuilder::default()
                .open(obj)
                .map_err(BpfError::Open)?;
            let ro = open.maps.rodata_data.as_deref_mut().ok_or_else(|| {
                BpfError::Open(libbpf_rs::Error::from_raw_os_error(libc_enoent()))
            })?;
            ro.FIB_IFINDEX = fib_ifindex;
            open.maps
                .frames
                .set_max_entries(max_frames.max(1))
                .map_err(map_err("frames"))?;
            for (map, name, n) in [
                (&mut open.maps.probe_bind, "probe_bind", probe_entries.0),
                (&mut open.maps.probe_sess, "probe_sess", probe_entries.1),
            ] {
                map.set_max_entries(n.max(1)).map_err(map_err(name))?;
            }
            let skel = open.load().map_err(BpfError::Load)?;
            Ok(Floor {
                skel,
                links: Vec::new(),
                frame_len: 0,
            })
        }

        fn prog(&self, p: Prog) -> &libbpf_rs::ProgramMut<'static> {
            let g = &self.skel.progs;
            match p {
                Prog::Floor => &g.xdp_floor,
                Prog::Probe => &g.xdp_probe,
                Prog::Feed => &g.xdp_feed,
                Prog::Empty => &g.xdp_empty,
                Prog::Gen => &g.xdp_gen,
                Prog::Sink => &g.xdp_sink,
            }
        }

        /// Lets `xdp_floor` redirect to `ifindex` (current namespace).
        pub fn add_tx_port(&self, ifindex: u32) -> Result<(), BpfError> {
            self.skel
                .maps
                .tx_ports
                .update(bytes_of(&ifindex), bytes_of(&ifindex), MapFlags::ANY)
                .map_err(map_err("tx_ports"))
        }

        /// The frames `xdp_feed` cycles through, all of one length.
        pub fn set_frames(&mut self, frames: &[Vec<u8>]) -> Result<(), BpfError> {
            let bad = |why: &str| BpfError::Bench(why.into());
            let len = frames
                .first()
                .map(Vec::len)
                .ok_or_else(|| bad("no frames"))?;
            if !(14..=FRAME_MAX).contains(&len) || frames.iter().any(|f| f.len() != len) {
                return Err(bad("frames must share one length of 14..=256 bytes"));
            }
            let m = &self.skel.maps.frames;
            for (c, chunk) in frames.chunks(BATCH).enumerate() {
                let mut keys = Vec::with_capacity(chunk.len() * 4);
                let mut vals = Vec::with_capacity(chunk.len() * (8 + FRAME_MAX));
                for (i, f) in chunk.iter().enumerate() {
                    keys.extend_from_slice(&((c * BATCH + i) as u32).to_ne_bytes());
                    vals.extend_from_slice(&(len as u32).to_ne_bytes());
                    vals.extend_from_slice(&[0; 4]);
                    vals.extend_from_slice(f);
                    vals.resize(vals.len() + FRAME_MAX - len, 0);
                }
                m.update_batch(
                    &keys,
                    &vals,
                    chunk.len() as u32,
                    MapFlags::ANY,
                    MapFlags::ANY,
                )
                .map_err(map_err("frames"))?;
            }
            let ncpu = libbpf_rs::num_possible_cpus().map_err(map_err("feed_cursor"))?;
            self.skel
                .maps
                .feed_cursor
                .update_percpu(
                    &0u32.to_ne_bytes(),
                    &vec![vec![0u8; 4]; ncpu],
                    MapFlags::ANY,
                )
                .map_err(map_err("feed_cursor"))?;
            let data = self.skel.maps.data_data.as_deref_mut().ok_or_else(|| {
                BpfError::Open(libbpf_rs::Error::from_raw_os_error(libc_enoent()))
            })?;
            data.feed_frames = frames.len() as u32;
            self.frame_len = len;
            Ok(())
        }

        /// Chooses the program `xdp_feed` tail-calls.
        pub fn set_target(&self, t: Target<'_>) -> Result<(), BpfError> {
            let fd = match t {
                Target::Floor => self.prog(Prog::Floor).as_fd().as_raw_fd(),
                Target::Probe => self.prog(Prog::Probe).as_fd().as_raw_fd(),
                Target::Empty => self.prog(Prog::Empty).as_fd().as_raw_fd(),
                Target::Cgnat(dp, side) => dp.prog_fd(side).as_raw_fd(),
            };
            self.skel
                .maps
                .feed_target
                .update(bytes_of(&0u32), &fd.to_ne_bytes(), MapFlags::ANY)
                .map_err(map_err("feed_target"))
        }

        /// Runs `xdp_feed` `repeat` times as if received on
        /// `ingress_ifindex`. Returns the last XDP action and the kernel's
        /// mean time per run (ns).
        pub fn feed_run(
            &self,
            ingress_ifindex: u32,
            repeat: u32,
        ) -> Result<(u32, u64), libbpf_rs::Error> {
            let frame = vec![0u8; self.frame_len];
            self.run(Prog::Feed, &frame, ingress_ifindex, repeat)
        }

        /// Runs a program of the object on `frame` (BPF_PROG_TEST_RUN).
        /// Returns the last XDP action and the mean time per run (ns).
        pub fn run(
            &self,
            p: Prog,
            frame: &[u8],
            ingress_ifindex: u32,
            repeat: u32,
        ) -> Result<(u32, u64), libbpf_rs::Error> {
            let mut ctx_bytes = xdp_ctx(frame.len(), ingress_ifindex);
            let input = libbpf_rs::ProgramInput {
                context_in: Some(&mut ctx_bytes),
                data_in: Some(frame),
                repeat,
                ..Default::default()
            };
            let res = self.prog(p).test_run(input)?;
            Ok((res.return_value, res.duration.as_nanos() as u64))
        }

        /// Sets what `xdp_gen` sends: `frame` (Ethernet, IPv4 without
        /// options, UDP) with sources `src_base` + 0..subs, ports
        /// `port_base` + 0..ports.
        pub fn set_generator(
            &mut self,
            frame: &[u8],
            src_base: Ipv4Addr,
            subs: u32,
            port_base: u16,
            ports: u32,
        ) -> Result<(), BpfError> {
            if !(42..=FRAME_MAX).contains(&frame.len()) {
                return Err(BpfError::Bench("generator frame of 42..=256 bytes".into()));
            }
            let data = self.skel.maps.data_data.as_deref_mut().ok_or_else(|| {
                BpfError::Open(libbpf_rs::Error::from_raw_os_error(libc_enoent()))
            })?;
            data.gen_subs = subs.max(1);
            data.gen_port_base = u32::from(port_base);
            data.gen_ports = ports.max(1);
            let bss = self.skel.maps.bss_data.as_deref_mut().ok_or_else(|| {
                BpfError::Open(libbpf_rs::Error::from_raw_os_error(libc_enoent()))
            })?;
            bss.gen_src_base = u32::from(src_base);
            bss.gen_frame[..frame.len()].copy_from_slice(frame);
            bss.gen_len = frame.len() as u32;
            Ok(())
        }

        /// Runs `xdp_gen` in live-frames mode: `repeat` copies of `frame`
        /// (each with its new source) leave through `ifindex`.
        pub fn generate(
            &self,
            frame: &[u8],
            ifindex: u32,
            repeat: u32,
        ) -> Result<(), libbpf_rs::Error> {
            let mut ctx_bytes = xdp_ctx(frame.len(), ifindex);
            let input = libbpf_rs::ProgramInput {
                context_in: Some(&mut ctx_bytes),
                data_in: Some(frame),
                flags: BPF_F_TEST_XDP_LIVE_FRAMES,
                repeat,
                ..Default::default()
            };
            self.prog(Prog::Gen).test_run(input).map(|_| ())
        }

        /// Attaches a program natively (driver mode) to `ifindex`; it stays
        /// until `detach_all` or drop.
        pub fn attach(&mut self, p: Prog, ifindex: u32) -> Result<(), BpfError> {
            let fd = self.prog(p).as_fd().as_raw_fd();
            let link = link_xdp(fd, ifindex, XdpMode::Native, &super::ifname(ifindex))?;
            self.links.push(link);
            Ok(())
        }

        /// Detaches every program this instance attached.
        pub fn detach_all(&mut self) {
            self.links.clear();
        }

        /// The maps of `xdp_probe`: bindings (cgnat_endpoint ->
        /// cgnat_binding) and sessions, as cgnat's bind_out and sessions.
        pub fn probe_maps(&self) -> Result<(MapHandle, MapHandle), BpfError> {
            Ok((
                MapHandle::try_from(&self.skel.maps.probe_bind).map_err(map_err("probe_bind"))?,
                MapHandle::try_from(&self.skel.maps.probe_sess).map_err(map_err("probe_sess"))?,
            ))
        }

        /// Sessions `xdp_probe` found so far.
        pub fn probe_hits(&self) -> u64 {
            self.skel
                .maps
                .bss_data
                .as_deref()
                .map(|b| b.probe_hits)
                .unwrap_or(0)
        }

        /// Packets `xdp_sink` counted, summed over CPUs.
        pub fn sink_packets(&self) -> Result<u64, BpfError> {
            let v = self
                .skel
                .maps
                .sink_count
                .lookup_percpu(bytes_of(&0u32), MapFlags::ANY)
                .map_err(map_err("sink_count"))?
                .unwrap_or_default();
            Ok(v.iter().filter_map(|b| super::from_bytes::<u64>(b)).sum())
        }
    }
}
