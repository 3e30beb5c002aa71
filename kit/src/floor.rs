//! The kit's XDP object (kit/bpf/floor.bpf.c), not part of the data path:
//! the floor forwarder `xdp_floor` and the instruments of `make bench`
//! (`xdp_feed`, `xdp_empty`, `xdp_gen`, `xdp_sink`), and `xdp_pass` for
//! the far end of the test bed's veth links.

use std::mem::MaybeUninit;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use cgnat::bpf::{
    attach_xdp, bytes_of, from_bytes, ifname, run_xdp, xdp_ctx, BpfError, Datapath, Side,
};
use cgnat::config::XdpMode;

use crate::frame::PROTO_UDP;

#[allow(clippy::all, clippy::pedantic, unsafe_op_in_unsafe_fn)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/floor.skel.rs"));
}
use skel::{FloorSkel, FloorSkelBuilder};

/// Largest frame `xdp_feed` restores (BENCH_FRAME_MAX).
pub const FRAME_MAX: usize = 256;
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
const BATCH: usize = 4096;

/// What can go wrong with the kit's object.
#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    #[error("the kit's XDP object needs root")]
    NotRoot,
    #[error("opening the kit's XDP object: {0}")]
    Open(libbpf_rs::Error),
    #[error("loading the kit's XDP object: {0}")]
    Load(libbpf_rs::Error),
    #[error("the kit's object has no {0} section")]
    Section(&'static str),
    #[error("map {map}: {err}")]
    Map {
        map: &'static str,
        err: libbpf_rs::Error,
    },
    #[error("{0}")]
    Frames(&'static str),
    #[error("probe_lines: {0}")]
    Lines(&'static str),
    #[error(transparent)]
    Attach(#[from] BpfError),
}

fn map_err(map: &'static str) -> impl Fn(libbpf_rs::Error) -> FloorError {
    move |err| FloorError::Map { map, err }
}

/// The programs of the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prog {
    /// The floor forwarder.
    Floor,
    /// The floor plus cgnat's two fast-path hash lookups.
    Probe,
    /// The floor plus one lookup in a table of cache lines.
    ProbeLine,
    /// Restores a pristine frame, then tail-calls the target.
    Feed,
    /// Does nothing (returns XDP_DROP): the feeder's own cost.
    Empty,
    /// Returns XDP_PASS: lets a veth deliver frames sent to it by XDP_TX.
    Pass,
    /// Live-frames traffic generator (XDP_TX with a new source).
    Gen,
    /// Counts and drops.
    Sink,
}

/// What `xdp_feed` tail-calls.
pub enum Target<'a> {
    Floor,
    Probe,
    ProbeLine,
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
    /// cgnat's bindings and sessions; `xdp_probe_line`'s table has twice
    /// as many slots as sessions (a power of two).
    pub fn load(
        fib_ifindex: u32,
        max_frames: u32,
        probe_entries: (u32, u32),
    ) -> Result<Floor, FloorError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(FloorError::NotRoot);
        }
        let obj: &'static mut MaybeUninit<libbpf_rs::OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let mut open = FloorSkelBuilder::default()
            .open(obj)
            .map_err(FloorError::Open)?;
        let ro = open
            .maps
            .rodata_data
            .as_deref_mut()
            .ok_or(FloorError::Section(".rodata"))?;
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
        let lines = probe_entries.1.max(1).next_power_of_two().saturating_mul(2);
        open.maps
            .probe_lines
            .set_max_entries(lines)
            .map_err(map_err("probe_lines"))?;
        let skel = open.load().map_err(FloorError::Load)?;
        let mut floor = Floor {
            skel,
            links: Vec::new(),
            frame_len: 0,
        };
        floor.bss()?.probe_lines_mask = lines - 1;
        Ok(floor)
    }

    fn prog(&self, p: Prog) -> &libbpf_rs::ProgramMut<'static> {
        let g = &self.skel.progs;
        match p {
            Prog::Floor => &g.xdp_floor,
            Prog::Probe => &g.xdp_probe,
            Prog::ProbeLine => &g.xdp_probe_line,
            Prog::Feed => &g.xdp_feed,
            Prog::Empty => &g.xdp_empty,
            Prog::Pass => &g.xdp_pass,
            Prog::Gen => &g.xdp_gen,
            Prog::Sink => &g.xdp_sink,
        }
    }

    /// Lets `xdp_floor` redirect to `ifindex` (current namespace).
    pub fn add_tx_port(&self, ifindex: u32) -> Result<(), FloorError> {
        self.skel
            .maps
            .tx_ports
            .update(bytes_of(&ifindex), bytes_of(&ifindex), MapFlags::ANY)
            .map_err(map_err("tx_ports"))
    }

    /// The frames `xdp_feed` cycles through, all of one length.
    pub fn set_frames(&mut self, frames: &[Vec<u8>]) -> Result<(), FloorError> {
        let bad = FloorError::Frames;
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
        let data = self
            .skel
            .maps
            .data_data
            .as_deref_mut()
            .ok_or(FloorError::Section("data_data"))?;
        data.feed_frames = frames.len() as u32;
        self.frame_len = len;
        Ok(())
    }

    /// Chooses the program `xdp_feed` tail-calls.
    pub fn set_target(&self, t: Target<'_>) -> Result<(), FloorError> {
        let fd = match t {
            Target::Floor => self.prog(Prog::Floor).as_fd().as_raw_fd(),
            Target::Probe => self.prog(Prog::Probe).as_fd().as_raw_fd(),
            Target::ProbeLine => self.prog(Prog::ProbeLine).as_fd().as_raw_fd(),
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
        run_xdp(self.prog(p), frame, ingress_ifindex, repeat, 0).map(|r| (r.action, r.mean_ns))
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
    ) -> Result<(), FloorError> {
        if !(42..=FRAME_MAX).contains(&frame.len()) {
            return Err(FloorError::Frames("generator frame of 42..=256 bytes"));
        }
        let data = self
            .skel
            .maps
            .data_data
            .as_deref_mut()
            .ok_or(FloorError::Section("data_data"))?;
        data.gen_subs = subs.max(1);
        data.gen_port_base = u32::from(port_base);
        data.gen_ports = ports.max(1);
        let bss = self.bss()?;
        bss.gen_src_base = u32::from(src_base);
        bss.gen_frame[..frame.len()].copy_from_slice(frame);
        bss.gen_len = frame.len() as u32;
        Ok(())
    }

    /// The object's .bss (the generator's state), writable.
    fn bss(&mut self) -> Result<&mut skel::types::bss, FloorError> {
        self.skel
            .maps
            .bss_data
            .as_deref_mut()
            .ok_or(FloorError::Section("bss_data"))
    }

    /// Where `xdp_gen` goes on: frame `seq` of the cycle (0 restarts it).
    pub fn set_generator_seq(&mut self, seq: u64) -> Result<(), FloorError> {
        let bss = self.bss()?;
        bss.gen_seq = seq;
        Ok(())
    }

    /// Paces `xdp_gen` (0, 0: unpaced): at most `limit` frames from now
    /// on, one every `gap_ns`.
    pub fn set_pacing(&mut self, limit: u64, gap_ns: u64) -> Result<(), FloorError> {
        let bss = self.bss()?;
        bss.gen_limit = limit;
        bss.gen_gap_ns = gap_ns;
        bss.gen_next_ns = 0;
        bss.gen_sent = 0;
        Ok(())
    }

    /// Where `xdp_gen` sends the frames it writes: 0 for XDP_TX (live
    /// frames), else a redirect to `ifindex` (attached to a veth that a
    /// socket feeds).
    pub fn set_generator_redirect(&mut self, ifindex: u32) -> Result<(), FloorError> {
        self.bss()?.gen_redirect_ifindex = ifindex;
        Ok(())
    }

    /// Frames `xdp_gen` has sent since `set_pacing`.
    pub fn generator_sent(&self) -> u64 {
        self.bss_value(|b| b.gen_sent)
    }

    /// Does this kernel run programs in live-frames mode? Some refuse
    /// it with EPERM for every program: `xdp_empty` (which drops what
    /// it is given) is tried once on a minimal frame.
    pub fn live_frames_allowed(&self) -> bool {
        let frame = [0u8; 64];
        let input = libbpf_rs::ProgramInput {
            data_in: Some(&frame),
            flags: BPF_F_TEST_XDP_LIVE_FRAMES,
            repeat: 1,
            ..Default::default()
        };
        self.prog(Prog::Empty).test_run(input).is_ok()
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
    pub fn attach(&mut self, p: Prog, ifindex: u32) -> Result<(), FloorError> {
        let fd = self.prog(p).as_fd().as_raw_fd();
        let link = attach_xdp(fd, ifindex, XdpMode::Native, &ifname(ifindex))?;
        self.links.push(link);
        Ok(())
    }

    /// Detaches every program this instance attached.
    pub fn detach_all(&mut self) {
        self.links.clear();
    }

    /// The maps of `xdp_probe`: bindings (cgnat_endpoint ->
    /// cgnat_binding) and sessions, as cgnat's bindings and sessions.
    pub fn probe_maps(&self) -> Result<(MapHandle, MapHandle), FloorError> {
        Ok((
            MapHandle::try_from(&self.skel.maps.probe_bind).map_err(map_err("probe_bind"))?,
            MapHandle::try_from(&self.skel.maps.probe_sess).map_err(map_err("probe_sess"))?,
        ))
    }

    /// Puts UDP flows (source, destination) into `xdp_probe_line`'s
    /// table, at the slots its lookup tries. `taken` remembers the slots
    /// used by earlier calls (empty before the first).
    pub fn fill_lines(
        &self,
        flows: &[(std::net::SocketAddrV4, std::net::SocketAddrV4)],
        taken: &mut Vec<bool>,
    ) -> Result<(), FloorError> {
        let m = &self.skel.maps.probe_lines;
        let slots = m.max_entries() as usize;
        taken.resize(slots, false);
        let (mut keys, mut vals) = (Vec::new(), Vec::new());
        for (src, dst) in flows {
            let (sa, da) = (src.ip().octets(), dst.ip().octets());
            let (sp, dp) = (src.port().to_be_bytes(), dst.port().to_be_bytes());
            let mut i = line_hash(
                u32::from_ne_bytes(sa),
                u32::from_ne_bytes(da),
                u16::from_ne_bytes(sp),
                u16::from_ne_bytes(dp),
                PROTO_UDP,
            ) as usize
                & (slots - 1);
            let mut tries = 0;
            while taken[i] {
                tries += 1;
                if tries >= LINE_TRIES {
                    return Err(FloorError::Lines("a probe run is too long"));
                }
                i = (i + 1) & (slots - 1);
            }
            taken[i] = true;
            keys.extend_from_slice(&(i as u32).to_ne_bytes());
            let mut v = [0u8; 64];
            v[0..4].copy_from_slice(&sa);
            v[4..8].copy_from_slice(&da);
            v[8..10].copy_from_slice(&sp);
            v[10..12].copy_from_slice(&dp);
            v[12] = PROTO_UDP;
            v[13] = 1;
            vals.extend_from_slice(&v);
            if keys.len() / 4 == BATCH {
                update_lines(m, &mut keys, &mut vals)?;
            }
        }
        update_lines(m, &mut keys, &mut vals)
    }

    /// Flows `xdp_probe_line` found so far.
    pub fn line_hits(&self) -> u64 {
        self.bss_value(|b| b.probe_line_hits)
    }

    /// Sessions `xdp_probe` found so far.
    pub fn probe_hits(&self) -> u64 {
        self.bss_value(|b| b.probe_hits)
    }

    /// A counter of the object's .bss (0 without the section).
    fn bss_value(&self, f: impl Fn(&skel::types::bss) -> u64) -> u64 {
        self.skel.maps.bss_data.as_deref().map_or(0, f)
    }

    /// Makes `xdp_sink` the reflector: every frame it counts goes back
    /// round through `ifindex` as the generator's next frame (the
    /// generator's state: `set_generator`). Call it in the namespace of
    /// `ifindex`; `reflect_stop` ends it.
    pub fn reflect_to(&mut self, ifindex: u32) -> Result<(), FloorError> {
        self.skel
            .maps
            .reflect_port
            .update(bytes_of(&0u32), bytes_of(&ifindex), MapFlags::ANY)
            .map_err(map_err("reflect_port"))?;
        let bss = self.bss()?;
        bss.gen_sent = 0;
        bss.sink_reflect = 1;
        Ok(())
    }

    /// `xdp_sink` drops what it counts again: the frames going round
    /// the loop are gone once each has come back.
    pub fn reflect_stop(&mut self) -> Result<(), FloorError> {
        self.bss()?.sink_reflect = 0;
        Ok(())
    }

    /// Packets `xdp_sink` counted, summed over CPUs.
    pub fn sink_packets(&self) -> Result<u64, FloorError> {
        let v = self
            .skel
            .maps
            .sink_count
            .lookup_percpu(bytes_of(&0u32), MapFlags::ANY)
            .map_err(map_err("sink_count"))?
            .unwrap_or_default();
        Ok(v.iter().filter_map(|b| from_bytes::<u64>(b)).sum())
    }
}

/// An `xdp_pass` program attached to an interface (detached on drop).
pub struct PassLink {
    _floor: Floor,
}

/// Attaches `xdp_pass` (returns XDP_PASS) in native mode to `ifindex` in
/// the current network namespace. Test beds put it on the far end of veth
/// links so that frames sent there by XDP_TX are delivered at once.
pub fn attach_pass_program(ifindex: u32) -> Result<PassLink, FloorError> {
    let mut floor = Floor::load(0, 1, (1, 1))?;
    floor.attach(Prog::Pass, ifindex)?;
    Ok(PassLink { _floor: floor })
}

/// PROBE_LINE_TRIES of floor.bpf.c.
const LINE_TRIES: usize = 64;

/// probe_line_hash() of floor.bpf.c.
fn line_hash(saddr: u32, daddr: u32, sport: u16, dport: u16, proto: u8) -> u32 {
    let b = (u64::from(sport) << 24) | (u64::from(dport) << 8) | u64::from(proto);
    let mut h =
        ((u64::from(saddr) << 32) | u64::from(daddr)) ^ b.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h as u32
}

fn update_lines(
    m: &libbpf_rs::Map<'_>,
    keys: &mut Vec<u8>,
    vals: &mut Vec<u8>,
) -> Result<(), FloorError> {
    let n = (keys.len() / 4) as u32;
    if n > 0 {
        m.update_batch(keys, vals, n, MapFlags::ANY, MapFlags::ANY)
            .map_err(map_err("probe_lines"))?;
    }
    keys.clear();
    vals.clear();
    Ok(())
}
