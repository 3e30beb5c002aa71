//! Where a running daemon can be found by the CLI.
//!
//! The tables are pinned under `daemon.pin_path`, normally on the host's
//! bpffs at `/sys/fs/bpf`. A daemon started with `ip netns exec NS cgnat`
//! runs in a private mount namespace with a fresh `/sys`: the bpffs it
//! pins into is visible to it alone. So each daemon registers itself in
//! `/run/cgnat/` (which `ip netns exec` leaves shared): a file named after
//! its pid that holds its pin path. The CLI looks for a live daemon
//! registered with that pin path in its own network namespace and reads
//! the pins through `/proc/PID/root`, i.e. as that daemon sees them (two
//! daemons in two network namespaces may both use the default pin path,
//! each on its own bpffs); without one, it reads the pin path as it is.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The directory of registrations.
pub const RUN_DIR: &str = "/run/cgnat";

/// This daemon's registration; removed on drop.
#[derive(Debug)]
pub struct Registration {
    path: PathBuf,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Registers this process as the daemon pinning at `pin_path`.
pub fn register(pin_path: &Path) -> io::Result<Registration> {
    register_in(Path::new(RUN_DIR), pin_path)
}

fn register_in(dir: &Path, pin_path: &Path) -> io::Result<Registration> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(std::process::id().to_string());
    std::fs::write(&path, format!("{}\n", pin_path.display()))?;
    Ok(Registration { path })
}

/// Where this daemon's cluster status goes.
fn status_path(dir: &Path, pid: u32) -> PathBuf {
    dir.join(format!("{pid}.cluster.json"))
}

/// Writes this daemon's cluster status (JSON) next to its registration.
pub fn write_status<T: serde::Serialize>(status: &T) -> io::Result<()> {
    let dir = Path::new(RUN_DIR);
    let path = status_path(dir, std::process::id());
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_string_pretty(status).map_err(io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, path)
}

pub fn remove_status() {
    let _ = std::fs::remove_file(status_path(Path::new(RUN_DIR), std::process::id()));
}

/// The pid of the live daemon registered with `pin_path` in this network
/// namespace.
pub fn daemon_pid(pin_path: &Path) -> Option<u32> {
    daemons_in(Path::new(RUN_DIR), pin_path).next()
}

/// The cluster status the daemon of `pin_path` wrote last.
pub fn read_status(pin_path: &Path) -> Option<String> {
    let pid = daemon_pid(pin_path)?;
    std::fs::read_to_string(status_path(Path::new(RUN_DIR), pid)).ok()
}

/// Live daemons of this network namespace registered with `pin_path`.
fn daemons_in<'a>(dir: &Path, pin_path: &'a Path) -> impl Iterator<Item = u32> + 'a {
    let here = netns_of("self");
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(move |e| {
            let pid = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            if netns_of(&pid.to_string()) != here {
                return None;
            }
            let text = std::fs::read_to_string(e.path()).ok()?;
            (Path::new(text.trim_end()) == pin_path).then_some(pid)
        })
}

/// The network namespace of `pid` ("self" for this process): (dev, inode).
fn netns_of(pid: &str) -> Option<(u64, u64)> {
    let m = std::fs::metadata(format!("/proc/{pid}/ns/net")).ok()?;
    Some((m.dev(), m.ino()))
}

/// Where the CLI reads the tables pinned at `pin_path`: the same path in
/// the mount namespace of a live daemon of this network namespace
/// registered with it, else `pin_path` itself (whose absence the caller
/// reports).
pub fn locate_pins(pin_path: &Path) -> PathBuf {
    locate_in(Path::new(RUN_DIR), pin_path)
}

fn locate_in(dir: &Path, pin_path: &Path) -> PathBuf {
    let rel = pin_path.strip_prefix("/").unwrap_or(pin_path);
    daemons_in(dir, pin_path)
        .map(|pid| {
            Path::new("/proc")
                .join(pid.to_string())
                .join("root")
                .join(rel)
        })
        .find(|there| there.join("meta").exists())
        .unwrap_or_else(|| pin_path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_names_the_pin_path_and_goes_on_drop() {
        let dir = std::env::temp_dir().join(format!("cgnat-instance-{}", std::process::id()));
        let reg = register_in(&dir, Path::new("/sys/fs/bpf/x")).expect("register");
        let file = dir.join(std::process::id().to_string());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "/sys/fs/bpf/x\n");
        drop(reg);
        assert!(!file.exists());
        let _ = std::fs::remove_dir(&dir);
    }

    #[test]
    fn a_registered_daemon_is_read_through_its_root() {
        // This process plays the daemon: registered, in this network
        // namespace, with pins that exist.
        let dir = std::env::temp_dir().join(format!("cgnat-locate-{}", std::process::id()));
        let (run, pins) = (dir.join("run"), dir.join("pins"));
        std::fs::create_dir_all(&pins).unwrap();
        // no registration: the configured path as it is
        assert_eq!(locate_in(&run, &pins), pins);
        std::fs::write(pins.join("meta"), b"").unwrap();
        let reg = register_in(&run, &pins).unwrap();
        let rel = pins.strip_prefix("/").unwrap();
        let via_root = Path::new("/proc")
            .join(std::process::id().to_string())
            .join("root")
            .join(rel);
        assert_eq!(locate_in(&run, &pins), via_root);
        // registered for another pin path: not this daemon
        assert_eq!(locate_in(&run, &dir.join("other")), dir.join("other"));
        drop(reg);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
