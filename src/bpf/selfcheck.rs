//! The data path's self-check: is each entry point still the program
//! attached to its interface? A cluster node withdraws its routes while
//! the answer is no, so the routers send its traffic to a peer.

use super::*;

impl Datapath {
    /// Ok when every interface of `cfg` runs this data path's program in
    /// the configured XDP mode; otherwise what is wrong.
    pub fn self_check(&self, cfg: &Config) -> Result<(), String> {
        let sides: &[(Side, &str)] = if cfg.one_armed() {
            &[(Side::OneArmed, &cfg.internal_if)]
        } else {
            &[
                (Side::Internal, &cfg.internal_if),
                (Side::External, &cfg.external_if),
            ]
        };
        for (side, iface) in sides {
            let want = prog_id(self.prog_fd(*side))
                .ok_or_else(|| format!("cannot read the id of {}", side.prog_name()))?;
            let ifindex = nix::net::if_::if_nametoindex(*iface)
                .map_err(|e| format!("interface {iface}: {e}"))?;
            let flags = match cfg.xdp_mode {
                XdpMode::Native => XDP_FLAGS_DRV_MODE,
                XdpMode::Generic => XDP_FLAGS_SKB_MODE,
            };
            let mut id = 0u32;
            // SAFETY: id outlives the call.
            let rc = unsafe { libbpf_sys::bpf_xdp_query_id(ifindex as i32, flags, &mut id) };
            if rc != 0 {
                return Err(format!("querying XDP on {iface}: error {rc}"));
            }
            if id != want {
                return Err(format!(
                    "{iface} runs XDP program {id}, not {} ({want})",
                    side.prog_name()
                ));
            }
        }
        Ok(())
    }
}

const XDP_FLAGS_SKB_MODE: i32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: i32 = 1 << 2;

/// The kernel's id of the program behind `fd`.
fn prog_id(fd: std::os::fd::BorrowedFd<'_>) -> Option<u32> {
    let mut info = libbpf_sys::bpf_prog_info::default();
    let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: info is a bpf_prog_info of `len` bytes.
    let rc = unsafe {
        libbpf_sys::bpf_prog_get_info_by_fd(
            fd.as_raw_fd(),
            &mut info as *mut libbpf_sys::bpf_prog_info,
            &mut len,
        )
    };
    (rc == 0).then_some(info.id)
}
