//! The container image (`make image`: packaging/build-image.sh and
//! packaging/Containerfile): built with no registry, a static binary on an
//! empty base, then run as the test bed's NAT with host networking. What
//! the far end receives must be translated, and a restart of the container
//! must keep the sessions: the tables are pinned on a bpffs of the host
//! (here the test bed's own, mounted into the container) and the new
//! container adopts them.
//!
//! The container runs with `--runtime runc` and lowered rlimits: crun
//! refuses this kind of host's hybrid cgroup layout and raising
//! RLIMIT_NOFILE is not permitted here (packaging/README.md says what a
//! stock host needs).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cgnat_kit::testbed::{cannot_run, in_pool, udp_exchange, Host, Testbed, UdpReflector};

/// What `make image` tags besides cgnat:<version>.
const TAG: &str = "localhost/cgnat:latest";
const T: Duration = Duration::from_secs(5);

fn output(argv: &[&str]) -> (bool, String) {
    match Command::new(argv[0]).args(&argv[1..]).output() {
        Ok(o) => (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        ),
        Err(e) => (false, format!("{}: {e}", argv[0])),
    }
}

/// Removes the test's container if a failed step left it running.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = output(&["podman", "rm", "-f", "-t", "0", &self.0]);
    }
}

#[test]
fn image_builds_without_a_registry_translates_and_keeps_sessions_across_restarts() {
    if !nix::unistd::geteuid().is_root() {
        cannot_run("image: needs root (podman, network namespaces)");
        return;
    }
    if !output(&["podman", "--version"]).0 {
        cannot_run("image: needs podman and runc (`make deps`)");
        return;
    }
    let script = cgnat_kit::repo_root().join("packaging/build-image.sh");
    let script = script.to_string_lossy();
    let built = Command::new("sh")
        .args([&script[..], "--tag", TAG])
        .output()
        .expect("running build-image.sh");
    let stdout = String::from_utf8_lossy(&built.stdout);
    assert!(
        built.status.success(),
        "build-image.sh failed:\n{stdout}{}",
        String::from_utf8_lossy(&built.stderr)
    );
    assert_eq!(
        stdout.lines().last(),
        Some(TAG),
        "last line names the image"
    );

    // An empty base: the binary and the config, nothing else to speak of.
    let (ok, size) = output(&["podman", "image", "inspect", "--format", "{{.Size}}", TAG]);
    assert!(ok, "podman image inspect: {size}");
    let size: u64 = size.trim().parse().expect("image size");
    assert!(
        size < 16 << 20,
        "image of {size} bytes: more than the binary"
    );
    let run = [
        "podman",
        "run",
        "--rm",
        "--runtime",
        "runc",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    ];
    let (ok, version) = output(&[&run[..], &[TAG, "--version"]].concat());
    assert!(ok, "cgnat --version in the image: {version}");
    assert_eq!(
        version.trim(),
        format!("cgnat {}", env!("CARGO_PKG_VERSION")),
        "the image's binary"
    );

    let tb = Testbed::new().expect("test bed");
    let text = tb
        .config_toml()
        .replace("detach_on_exit = true", "detach_on_exit = false");
    assert!(text.contains("detach_on_exit = false"), "config: {text}");
    let config = tb.write_config("image.toml", &text).expect("config");
    // The test bed's work directory holds the config and the bpffs of the
    // pins; the container sees it at the same path.
    let dir = tb.dir().display().to_string();
    let name = format!("cgnat-kit-test-{}", std::process::id());
    let container = Container(name.clone());
    let wrapper = tb.dir().join("cgnat-in-container");
    let volume = format!("{dir}:{dir}");
    let argv = [
        &run[..],
        &[
            "--name",
            &name,
            "--network",
            "host",
            "--privileged",
            "-v",
            &volume,
            TAG,
        ],
    ]
    .concat();
    // The test bed starts the daemon with `ip netns exec`, which mounts a
    // fresh /sys without the cgroup hierarchy runc needs: the wrapper goes
    // back to this process's mount namespace and keeps the router's
    // network namespace (`--network host` is the caller's).
    let mnt = format!("--mount=/proc/{}/ns/mnt", std::process::id());
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec nsenter {mnt} -- {} \"$@\"\n",
            argv.join(" ")
        ),
    )
    .expect("writing the wrapper");
    set_executable(&wrapper);

    let cgnat = tb
        .start_cgnat(&wrapper, &config, Duration::from_secs(60))
        .expect("cgnat starts in its container");
    let refl = UdpReflector::start(&tb, Host::E1, Host::E1.sock(7000)).expect("reflector");
    let s1 = tb
        .udp_socket(Host::S1, Host::S1.sock(5000))
        .expect("s1 socket");
    let first = udp_exchange(&s1, refl.addr(), b"before the restart", T)
        .expect("s1 -> e1 through the container");
    assert!(
        in_pool(*first.observed.ip()),
        "e1 saw {}: not translated into the pool",
        first.observed
    );
    let status = cgnat.stop().expect("the container stops on SIGTERM");
    assert!(status.success(), "the container exited with {status}");

    let cgnat = tb
        .start_cgnat(&wrapper, &config, Duration::from_secs(60))
        .expect("cgnat starts again in a new container");
    assert!(
        cgnat.attached_line().contains("adopted"),
        "the new container did not adopt the pinned tables: {}",
        cgnat.attached_line()
    );
    let again = udp_exchange(&s1, refl.addr(), b"after the restart", T)
        .expect("s1 -> e1 after the restart");
    assert_eq!(
        again.observed, first.observed,
        "the binding did not survive the restart"
    );
    let status = cgnat.stop().expect("the container stops on SIGTERM");
    assert!(status.success(), "the container exited with {status}");
    let cfg = config.display().to_string();
    let bin = cgnat_kit::cgnat_binary().display().to_string();
    tb.run(Host::Router, &[&bin, "--config", &cfg, "stop", "--detach"])
        .expect("cgnat stop --detach");
    drop(container);
}

fn set_executable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut perm = std::fs::metadata(p).expect("wrapper").permissions();
    perm.set_mode(0o755);
    std::fs::set_permissions(p, perm).expect("chmod the wrapper");
}
