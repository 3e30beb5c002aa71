//! Translation with ports allocated in blocks (RFC 6888 REQ-14) and
//! deterministically (RFC 7422). Each allocation mode is its own program
//! (the rodata prunes the others' code), so each must load, on every
//! kernel the old_kernel test boots too.

use super::translation::{hairpin_rows, inbound_rows, out11, p1};
use super::*;

/// In each mode, a binding in the mode's range, a reply in, and a hairpin
/// both ways.
#[test]
fn pool_modes() {
    // the most blocks a subscriber may have: the verifier's work must not
    // grow with them
    let blocks = config_text(
        "",
        "[pool]\nmode = \"port-block\"\nblock_size = 64\nmax_blocks = 32",
    );
    table_test("pool_modes_port_block", "pb", &blocks, |_| pool_mode_rows());
    // 256 subscribers on the pool's 24 addresses: 11 per address
    let det = config_text("", "[pool]\nmode = \"deterministic\"").replace(
        "internal_prefixes = [\"100.64.0.0/10\"]",
        "internal_prefixes = [\"100.64.0.0/24\"]",
    );
    table_test("pool_modes_deterministic", "dt", &det, |_| pool_mode_rows());
}

/// Rows that hold in every allocation mode: no port is expected kept.
fn pool_mode_rows<'a>() -> Vec<Row<'a>> {
    let mut rows = vec![
        open_binding("e11", H11, 5000),
        open_binding("e12", H12, 5000),
        out11("next datagram of .11 leaves from the same endpoint", p1()),
    ];
    rows.extend(inbound_rows().into_iter().take(1));
    rows.extend(hairpin_rows().into_iter().take(3));
    rows
}
