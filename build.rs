//! Compiles the XDP data path (bpf/cgnat.bpf.c) into a libbpf-rs skeleton
//! in OUT_DIR. The kit's own object is built by kit/build.rs.
use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

/// (source, generated skeleton) pairs, all compiled with the same flags.
const OBJECTS: [(&str, &str); 1] = [("bpf/cgnat.bpf.c", "cgnat.skel.rs")];

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("CARGO_CFG_TARGET_ARCH is set by cargo");
    let multiarch = format!("-I/usr/include/{arch}-linux-gnu");

    for (src, skel) in OBJECTS {
        SkeletonBuilder::new()
            .source(src)
            .clang_args([
                "-Iinclude",
                "-Ibpf",
                multiarch.as_str(),
                "-Wall",
                "-Werror",
                "-Wimplicit-fallthrough",
                "-Werror=pass-failed",
                "-mcpu=v3",
            ])
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
