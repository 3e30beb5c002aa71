//! BPF_PROG_TEST_RUN of the XDP entry points: the held-frame re-runs, the
//! packet tests and the benchmark all go through [`run_xdp`].

use super::*;

impl Datapath {
    /// Runs one frame through an entry point with BPF_PROG_TEST_RUN, as if
    /// received on `ingress_ifindex` (in the caller's network namespace).
    /// Returns the XDP action and the frame as the program left it.
    pub fn test_run(
        &self,
        side: Side,
        frame: &[u8],
        ingress_ifindex: u32,
    ) -> Result<(u32, Vec<u8>), libbpf_rs::Error> {
        let r = run_xdp(self.prog(side), frame, ingress_ifindex, 1, 0)?;
        Ok((r.action, r.frame))
    }

    /// Runs an entry point `repeat` times on one buffer (each run sees
    /// what the previous one left); see [`run_xdp`].
    pub fn run(
        &self,
        side: Side,
        frame: &[u8],
        ingress_ifindex: u32,
        repeat: u32,
    ) -> Result<XdpRun, libbpf_rs::Error> {
        run_xdp(self.prog(side), frame, ingress_ifindex, repeat, 0)
    }
}

/// What one BPF_PROG_TEST_RUN of an XDP program returned.
#[derive(Debug, Clone)]
pub struct XdpRun {
    /// The XDP action of the last run.
    pub action: u32,
    /// The frame as the last run left it.
    pub frame: Vec<u8>,
    /// The kernel's mean time per run (ns).
    pub mean_ns: u64,
}

/// Runs an XDP program `repeat` times on `frame` as if received on
/// `ingress_ifindex` (in the caller's network namespace), with the
/// BPF_PROG_TEST_RUN `flags` given.
pub fn run_xdp(
    prog: &libbpf_rs::ProgramMut<'_>,
    frame: &[u8],
    ingress_ifindex: u32,
    repeat: u32,
    flags: u32,
) -> Result<XdpRun, libbpf_rs::Error> {
    let mut ctx_bytes = xdp_ctx(frame.len(), ingress_ifindex);
    let mut out = vec![0u8; frame.len() + 256];
    let input = libbpf_rs::ProgramInput {
        context_in: Some(&mut ctx_bytes),
        data_in: Some(frame),
        data_out: Some(&mut out),
        repeat,
        flags,
        ..Default::default()
    };
    let res = prog.test_run(input)?;
    let len = res.data.map(|d| d.len()).unwrap_or(0);
    let (action, mean_ns) = (res.return_value, res.duration.as_nanos() as u64);
    out.truncate(len);
    Ok(XdpRun {
        action,
        frame: out,
        mean_ns,
    })
}

/// A BPF_PROG_TEST_RUN context: a frame of `len` bytes received on
/// `ingress_ifindex` (in the caller's network namespace).
pub fn xdp_ctx(len: usize, ingress_ifindex: u32) -> Vec<u8> {
    let ctx = types::xdp_md {
        data: 0,
        data_end: len as u32,
        ingress_ifindex,
        ..Default::default()
    };
    bytes_of(&ctx).to_vec()
}
