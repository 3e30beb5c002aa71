//! Compiles the XDP data path (bpf/cgnat.bpf.c) into a libbpf-rs skeleton
//! in OUT_DIR, after checking that every header of the data path
//! (bpf/*.h) compiles on its own. The kit's own object is built by
//! kit/build.rs.
use std::env;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use libbpf_cargo::SkeletonBuilder;

/// (source, generated skeleton) pairs, all compiled with the same flags.
const OBJECTS: [(&str, &str); 1] = [("bpf/cgnat.bpf.c", "cgnat.skel.rs")];

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("CARGO_CFG_TARGET_ARCH is set by cargo");
    let multiarch = format!("-I/usr/include/{arch}-linux-gnu");
    let flags = [
        "-Iinclude",
        "-Ibpf",
        multiarch.as_str(),
        "-Wall",
        "-Werror",
        "-Wimplicit-fallthrough",
        "-Werror=pass-failed",
        "-mcpu=v3",
    ];

    check_headers(&flags, &arch);
    for (src, skel) in OBJECTS {
        SkeletonBuilder::new()
            .source(src)
            .clang_args(flags)
            .build_and_generate(out_dir.join(skel))
            .unwrap_or_else(|e| panic!("compiling {src} failed (see the clang errors above): {e}"));
    }
    // The ABI of pinned state: a restarted daemon adopts pinned tables only
    // if they were made from the same shared header and map definitions.
    let mut abi: u64 = 0xcbf2_9ce4_8422_2325;
    for f in ["include/cgnat.h", "bpf/maps.h"] {
        let text = std::fs::read(f).unwrap_or_else(|e| panic!("{f}: {e}"));
        for b in text {
            abi = (abi ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    println!("cargo:rustc-env=CGNAT_ABI={abi:016x}");
    println!("cargo:rerun-if-changed=bpf");
    println!("cargo:rerun-if-changed=include");
}

/// Each bpf/*.h must compile as the only line of a translation unit, with
/// the flags of the objects (and libbpf's headers, as libbpf-cargo adds
/// them): a header includes what it uses. All are checked at once; the
/// build fails naming every header that does not.
fn check_headers(flags: &[&str], arch: &str) {
    let libbpf = env::var("DEP_BPF_INCLUDE")
        .expect("libbpf-sys reports its headers' directory (DEP_BPF_INCLUDE)");
    let target_arch = match arch {
        "x86_64" => "x86",
        "aarch64" => "arm64",
        "powerpc64" => "powerpc",
        "riscv64" => "riscv",
        other => other,
    };
    let mut headers: Vec<PathBuf> = std::fs::read_dir("bpf")
        .expect("bpf/ is readable")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "h"))
        .collect();
    headers.sort();
    let runs: Vec<_> = headers
        .iter()
        .map(|h| {
            let name = h.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let mut child = Command::new("clang")
                .args(["-fsyntax-only", "-g", "-O2", "-target", "bpf"])
                .args(flags)
                .arg(format!("-I{libbpf}"))
                .args([
                    "-fno-stack-protector",
                    &format!("-D__TARGET_ARCH_{target_arch}"),
                ])
                .args(["-x", "c", "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("running clang for {}: {e}", h.display()));
            let mut stdin = child.stdin.take().expect("clang's stdin is piped");
            writeln!(stdin, "#include \"{name}\"").expect("writing to clang");
            drop(stdin);
            (h, child)
        })
        .collect();
    let mut failed = Vec::new();
    for (h, child) in runs {
        let out = child.wait_with_output().expect("waiting for clang");
        if !out.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
            failed.push(h.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "these headers do not compile on their own (each must include what it uses; clang's errors above): {}",
        failed.join(", ")
    );
}
