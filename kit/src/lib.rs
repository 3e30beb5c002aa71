//! cgnat-kit: the tooling around cgnat, never installed. The
//! network-namespace test bed every end-to-end test and the demo use, the
//! benchmark (`make bench`) with its own XDP object, and where to find the
//! `cgnat` binary under test. [`frame`] builds and checks the frames of the
//! packet-level tests and of the benchmark. [`cluster_bed`] is the
//! namespace bed of a two-node cluster whose routing BIRD does (BGP + BFD).

pub mod bench;
pub mod cluster_bed;
pub mod demo;
pub mod floor;
pub mod frame;
pub mod rng;
pub mod testbed;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The fewest cases a property or differential test may run: fewer would
/// let a run pass on almost nothing.
pub const MIN_CASES: u32 = 16;

/// The number of cases of a property test: `CGNAT_PROPTEST_CASES`, or
/// `default`. Panics when it is not a number or below [`MIN_CASES`] (a
/// run that checks (almost) nothing must not pass). Used by
/// `tests/differential.rs`, `tests/garbage.rs` and `tests/config_props.rs`.
pub fn cases(default: u32) -> u32 {
    let n = std::env::var("CGNAT_PROPTEST_CASES")
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("CGNAT_PROPTEST_CASES={v:?} is not a number"))
        })
        .unwrap_or(default);
    assert!(
        n >= MIN_CASES,
        "CGNAT_PROPTEST_CASES={n} is below the floor of {MIN_CASES}: \
         a run that checks (almost) nothing must not pass"
    );
    n
}

/// The repository's top directory (the workspace root).
pub fn repo_root() -> PathBuf {
    let kit = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    kit.parent().map(PathBuf::from).unwrap_or(kit)
}

/// The `cgnat` binary of this build profile: beside the running test or
/// benchmark executable (target/<profile>/deps/..) or beside the kit's own
/// binary (target/<profile>/). `CGNAT_BIN` overrides it. Panics with the
/// command to run when it is missing: cargo builds a package's binaries
/// for that package's tests only, and the tests live in the kit.
pub fn cgnat_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(find_cgnat_binary)
}

fn find_cgnat_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("CGNAT_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let found = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join("cgnat"))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "no cgnat binary beside {}: build it first (`cargo build --release --bin cgnat`, \
             which `make test` does) or set CGNAT_BIN",
            exe.display()
        )
    })
}
