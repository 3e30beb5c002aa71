//! Compiles the kit's XDP object (kit/bpf/floor.bpf.c: the benchmark's
//! floor and instruments, and the test bed's `xdp_pass`) into a
//! libbpf-rs skeleton in OUT_DIR, with the data path's flags.
use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("CARGO_CFG_TARGET_ARCH is set by cargo");
    let multiarch = format!("-I/usr/include/{arch}-linux-gnu");
    let src = "bpf/floor.bpf.c";
    SkeletonBuilder::new()
        .source(src)
        .clang_args([
            "-I../include",
            multiarch.as_str(),
            "-Wall",
            "-Werror",
            "-Wimplicit-fallthrough",
            "-Werror=pass-failed",
            "-mcpu=v3",
        ])
        .build_and_generate(out_dir.join("floor.skel.rs"))
        .unwrap_or_else(|e| panic!("compiling {src} failed (see the clang errors above): {e}"));
    println!("cargo:rerun-if-changed=bpf");
    println!("cargo:rerun-if-changed=../include");
}
