//! Unit tests of `[cluster]`: what every operator mistake is told.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::cluster::Failback;
use super::*;

/// A key file of `len` bytes with `mode`, unique per test.
fn key_file(name: &str, len: usize, mode: u32) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cgnat-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, vec![b'k'; len]).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

fn config(key: &Path, mode: &str, nodes: &str) -> String {
    format!(
        r#"
[interfaces]
internal = "eth1"
external = "eth0"
[nat]
internal_prefixes = ["100.64.0.0/23"]
external_pool = ["203.0.113.8/29", "203.0.113.16/29"]
[pool]
mode = "{mode}"
[cluster]
id = 2
key_file = "{}"
{nodes}
"#,
        key.display()
    )
}

const TWO: &str = r#"
[[cluster.nodes]]
id = 1
address = "10.0.3.11"
subscribers = ["100.64.0.0/24"]
pool = ["203.0.113.8/29"]
[[cluster.nodes]]
id = 2
address = "10.0.3.12"
subscribers = ["100.64.1.0/24"]
pool = ["203.0.113.16/29"]
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/cgnat.toml"))
}

fn err(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn a_two_node_cluster_splits_prefixes_and_pool() {
    let key = key_file("good", 32, 0o600);
    let c = parse(&config(&key, "dynamic", TWO)).unwrap();
    let cl = c.cluster.as_ref().unwrap();
    assert_eq!(cl.id, 2);
    assert_eq!(cl.me().address, Ipv4Addr::new(10, 0, 3, 12));
    assert_eq!(cl.peers().map(|n| n.id).collect::<Vec<_>>(), vec![1]);
    assert_eq!(cl.failback, Failback::Immediate);
    assert_eq!(cl.route_table, 200);
    let slices = c.prefix_slices();
    assert_eq!(slices.len(), 2);
    // node 1's subscribers get the first 8 pool addresses, node 2's the next
    assert_eq!(
        (slices[0].owner, slices[0].pool_first, slices[0].pool_count),
        (1, 0, 8)
    );
    assert_eq!(
        (slices[1].owner, slices[1].pool_first, slices[1].pool_count),
        (2, 8, 8)
    );
    assert!(c.pool_addrs[..8]
        .iter()
        .all(|a| cl.node(1).unwrap().serves_external(*a)));
    // deterministic numbering continues across the cut
    assert_eq!((slices[0].offset, slices[1].offset), (0, 256));
}

#[test]
fn the_pool_is_grouped_by_slice_whatever_the_config_order() {
    let key = key_file("order", 32, 0o600);
    let text = config(&key, "port-block", TWO).replace(
        r#"external_pool = ["203.0.113.8/29", "203.0.113.16/29"]"#,
        r#"external_pool = ["203.0.113.16/29", "203.0.113.8/29"]"#,
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.pool_addrs[0], Ipv4Addr::new(203, 0, 113, 8));
    assert_eq!(c.pool_addrs[8], Ipv4Addr::new(203, 0, 113, 16));
}

#[test]
fn overlapping_slices_are_refused() {
    let key = key_file("overlap", 32, 0o600);
    let e = err(&config(
        &key,
        "dynamic",
        &TWO.replace("100.64.1.0/24", "100.64.0.128/25"),
    ));
    assert!(e.contains("cluster.nodes.subscribers"), "{e}");
    assert!(e.contains("overlaps"), "{e}");
    let e = err(&config(
        &key,
        "dynamic",
        &TWO.replace("203.0.113.16/29", "203.0.113.8/30"),
    ));
    assert!(e.contains("cluster.nodes.pool"), "{e}");
}

#[test]
fn an_address_without_owner_is_refused() {
    let key = key_file("hole", 32, 0o600);
    let e = err(&config(
        &key,
        "dynamic",
        &TWO.replace("100.64.1.0/24", "100.64.1.0/25"),
    ));
    assert!(e.contains("cluster.nodes.subscribers"), "{e}");
    assert!(
        e.contains("100.64.1.128") && e.contains("no node's slice"),
        "{e}"
    );
    let e = err(&config(
        &key,
        "dynamic",
        &TWO.replace("203.0.113.16/29", "203.0.113.16/30"),
    ));
    assert!(
        e.contains("203.0.113.20") && e.contains("no node's slice"),
        "{e}"
    );
    let e = err(&config(
        &key,
        "dynamic",
        &TWO.replace("203.0.113.16/29", "198.51.100.0/29"),
    ));
    assert!(e.contains("not inside nat.external_pool"), "{e}");
}

#[test]
fn a_key_others_can_read_is_refused() {
    let key = key_file("open", 32, 0o644);
    let e = err(&config(&key, "dynamic", TWO));
    assert!(e.contains("cluster.key_file"), "{e}");
    assert!(e.contains("chmod 600"), "{e}");
    let short = key_file("short", 8, 0o600);
    let e = err(&config(&short, "dynamic", TWO));
    assert!(e.contains("at least 16"), "{e}");
    let e = err(&config(Path::new("/nonexistent/key"), "dynamic", TWO));
    assert!(
        e.contains("cluster.key_file") && e.contains("/nonexistent/key"),
        "{e}"
    );
}

#[test]
fn deterministic_slices_must_follow_the_mapping() {
    let key = key_file("det", 32, 0o600);
    // 512 subscribers over 16 addresses: 32 per address, in order, so
    // 100.64.0.0/24 maps to the first 8 addresses: a fitting split
    assert!(parse(&config(&key, "deterministic", TWO)).is_ok());
    // the same split with the pool halves swapped does not fit
    let swapped = TWO
        .replace("pool = [\"203.0.113.8/29\"]", "pool = [\"X\"]")
        .replace(
            "pool = [\"203.0.113.16/29\"]",
            "pool = [\"203.0.113.8/29\"]",
        )
        .replace("pool = [\"X\"]", "pool = [\"203.0.113.16/29\"]");
    let e = err(&config(&key, "deterministic", &swapped));
    assert!(
        e.contains("deterministic mode maps node 1's subscriber 100.64.0.0"),
        "{e}"
    );
}

#[test]
fn ids_and_this_node_are_checked() {
    let key = key_file("ids", 32, 0o600);
    let e = err(&config(
        &key,
        "dynamic",
        &TWO.replace("id = 2\naddress", "id = 1\naddress"),
    ));
    assert!(e.contains("cluster.nodes.id") && e.contains("twice"), "{e}");
    let text = config(&key, "dynamic", TWO).replace("id = 2\nkey_file", "id = 3\nkey_file");
    let e = err(&text);
    assert!(e.contains("cluster.id"), "{e}");
    let one = &TWO[..TWO.find("[[cluster.nodes]]\nid = 2").unwrap()];
    let e = err(&config(&key, "dynamic", one));
    assert!(e.contains("at least two"), "{e}");
}

#[test]
fn a_static_mapping_stays_in_its_slice() {
    let key = key_file("static", 32, 0o600);
    let text = config(&key, "dynamic", TWO).replace(
        "[cluster]",
        "[[static]]\nproto = \"tcp\"\ninternal = \"100.64.0.5:22\"\nexternal = \"203.0.113.17:2222\"\n[cluster]",
    );
    let e = err(&text);
    assert!(e.contains("static.external") && e.contains("node 1"), "{e}");
}
