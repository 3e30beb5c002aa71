//! How the end-to-end generator's frames enter the network.
//!
//! `xdp_gen` writes every frame the router gets (source address and port
//! from its sequence, its pacing, its count). What runs it depends on the
//! kernel:
//! - **live frames**: BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES
//!   runs it on a buffer, and its XDP_TX sends the frame out of the
//!   generator's veth;
//! - **fed**, where the kernel refuses live frames: an AF_PACKET socket
//!   sends frames into one end of a veth pair in the generator namespace,
//!   `xdp_gen` is attached natively to the other end, rewrites each frame
//!   and redirects it out of the generator's veth.
//!
//! Either way the router receives XDP frames from a redirect into its
//! veth, through the same NAPI path. The socket, the skb and the copy into
//! an XDP buffer cost the generator's CPU only: the router's cost per
//! packet is the same, but the generator's top rate is lower, so the paced
//! figures of `rfc9693` can be bounded by the generator (it says so when
//! they are). The `e2e` section only seeds frames this way: they then go
//! round a closed loop (`e2e.rs`), whatever the source.

use std::io::IoSlice;
use std::os::fd::OwnedFd;

use nix::sys::socket::{
    sendmmsg, socket, AddressFamily, LinkAddr, MsgFlags, MultiHeaders, SockFlag, SockType,
};

use super::*;

/// Frames per sendmmsg call.
const BATCH: usize = 64;
/// Frames per `push` of a fed source: small enough that a paced trial
/// ends soon after its last frame.
const FED_CHUNK: u32 = 4096;

/// What `E2eNet` tells a generator thread: the kind and the interfaces.
#[derive(Clone, Debug)]
pub(super) struct SourceSpec {
    pub(super) live: bool,
    /// The generator's veth toward the router.
    pub(super) out: String,
    /// The fed pair: the socket's end, `xdp_gen`'s end.
    pub(super) feed: String,
    pub(super) gen_in: String,
}

impl SourceSpec {
    pub(super) fn describe(&self) -> &'static str {
        if self.live {
            "live frames (BPF_F_TEST_XDP_LIVE_FRAMES)"
        } else {
            "fed: AF_PACKET into a veth whose xdp_gen redirects (this kernel refuses live frames)"
        }
    }
}

/// A running source of `xdp_gen`'s frames; `fl` must stay loaded (and,
/// when fed, attached) while it is used.
pub(super) enum Source {
    Live {
        ifindex: u32,
        frame: Vec<u8>,
    },
    Fed {
        sock: OwnedFd,
        addr: LinkAddr,
        frame: Vec<u8>,
        headers: MultiHeaders<LinkAddr>,
    },
}

impl Source {
    /// Sets `fl` up as the spec says. Call it inside the generator
    /// namespace, on the thread that will push.
    pub(super) fn open(spec: &SourceSpec, fl: &mut Floor, frame: Vec<u8>) -> Result<Source> {
        let out = ifindex(&spec.out)?;
        if spec.live {
            fl.set_generator_redirect(0).ctx("generator")?;
            return Ok(Source::Live {
                ifindex: out,
                frame,
            });
        }
        fl.set_generator_redirect(out).ctx("generator")?;
        fl.attach(Prog::Gen, ifindex(&spec.gen_in)?)
            .ctx(format!("attaching xdp_gen to {}", spec.gen_in))?;
        let sock = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .ctx("AF_PACKET socket")?;
        Ok(Source::Fed {
            sock,
            addr: cgnat::inject::link_addr(ifindex(&spec.feed)?),
            frame,
            headers: MultiHeaders::preallocate(BATCH, None),
        })
    }

    /// Frames per `push` for a caller that would push `live` frames at a
    /// time in live-frames mode.
    pub(super) fn chunk(&self, live: u32) -> u32 {
        match self {
            Source::Live { .. } => live,
            Source::Fed { .. } => FED_CHUNK,
        }
    }

    /// Gives `xdp_gen` `n` frames to run on (it sends those that are due).
    pub(super) fn push(&mut self, fl: &Floor, n: u32) -> Result<()> {
        match self {
            Source::Live { ifindex, frame } => fl
                .generate(frame, *ifindex, n)
                .ctx("live-frames BPF_PROG_TEST_RUN"),
            Source::Fed {
                sock,
                addr,
                frame,
                headers,
            } => {
                let iov = [IoSlice::new(frame)];
                let slices = [iov; BATCH];
                let addrs = [Some(*addr); BATCH];
                let mut left = n as usize;
                while left > 0 {
                    let k = left.min(BATCH);
                    // A veth queues or drops, it never blocks: what was
                    // sent is what xdp_gen counts.
                    sendmmsg(
                        sock.as_raw_fd(),
                        headers,
                        &slices[..k],
                        &addrs[..k],
                        [],
                        MsgFlags::empty(),
                    )
                    .ctx("sendmmsg on the feed socket")?;
                    left -= k;
                }
                Ok(())
            }
        }
    }
}
