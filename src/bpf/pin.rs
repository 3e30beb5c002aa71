//! Pinning: the bpffs, adopting what a previous daemon pinned, the XDP
//! links (bpf_link_create), and removing it all (`cgnat stop --detach`).

use super::*;

/// What the daemon that pinned `dir` recorded (struct cgnat_meta).
pub(super) fn pinned_meta(dir: &Path) -> Result<types::cgnat_meta, String> {
    let h = MapHandle::from_pinned_path(dir.join("meta")).map_err(|e| format!("meta: {e}"))?;
    h.lookup(bytes_of(&0u32), MapFlags::ANY)
        .ok()
        .flatten()
        .and_then(|v| from_bytes::<types::cgnat_meta>(&v))
        .ok_or_else(|| "no metadata".to_string())
}

/// Can the state pinned in `dir` be adopted with these sizes?
pub(super) fn check_adoptable(dir: &Path, sizes: &Sizes) -> Result<(), BpfError> {
    let adopt = |why: String| BpfError::Adopt {
        dir: dir.to_owned(),
        why,
    };
    let meta = pinned_meta(dir).map_err(adopt)?;
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

pub(super) fn obj_get(path: &Path) -> Result<OwnedFd, BpfError> {
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

pub(super) fn obj_pin(fd: &OwnedFd, path: &Path) -> Result<(), BpfError> {
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

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Makes sure `dir`'s parent is a bpffs, mounting one at /sys/fs/bpf if
/// that is where it should be and nothing is mounted.
pub(super) fn ensure_bpffs(dir: &Path) -> Result<(), BpfError> {
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
        if n.starts_with("link_") {
            detach_link(&path)?;
        }
        std::fs::remove_file(&path).map_err(|e| BpfError::Pin {
            path: path.clone(),
            err: e.to_string(),
        })?;
        removed.push(n);
    }
    let _ = std::fs::remove_dir(dir);
    Ok(removed)
}

/// Detaches the XDP program of the link pinned at `path` now
/// (BPF_LINK_DETACH). Removing the pin alone leaves the link's release to a
/// kernel work item: the program would still be attached for a moment
/// after `cgnat stop --detach` returned.
fn detach_link(path: &Path) -> Result<(), BpfError> {
    let fd = obj_get(path)?;
    // SAFETY: fd is a valid bpf_link descriptor.
    let r = unsafe { libbpf_sys::bpf_link_detach(fd.as_raw_fd()) };
    if r < 0 {
        return Err(BpfError::Pin {
            path: path.to_owned(),
            err: format!(
                "detaching the link: {}",
                std::io::Error::from_raw_os_error(-r)
            ),
        });
    }
    Ok(())
}

/// Creates an XDP bpf_link of `prog_fd` on `idx` in the given mode.
pub fn attach_xdp(prog_fd: i32, idx: u32, mode: XdpMode, iface: &str) -> Result<OwnedFd, BpfError> {
    use libbpf_sys::{XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE};
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
