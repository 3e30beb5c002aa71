//! Routing of the two-node cluster, BIRD only (no cgnat yet): each node's
//! cgnat is emulated by writing its kernel table 200 with `ip route`, and
//! the test checks what the routers and the nodes make of it with the
//! shipped configs of `configs/bird/`.
//!
//! 1. Each node owns its slice (metric 100) and backs up the other's
//!    (metric 200): `upr` routes each pool slice to its owner, `acc` sends
//!    each slice's subscribers (tables 101/102) to its owner, the nodes learn
//!    the subscriber and external networks and never a pool route.
//! 2. Node 1 dies (power loss): within 1 s both routers move slice 1 to
//!    node 2, detected by BFD alone (the routers' links stay up).
//! 3. Node 1 comes back and writes its table 200 again: slice 1 returns.
//! 4. Node 1's sync link goes down: nothing changes (no BGP there).

use std::thread;
use std::time::{Duration, Instant};

use cgnat_kit::cluster_bed::{
    missing_requirements, node_ext, node_int, node_name, ClusterBed, ACC_UP, CGNAT_TABLE,
    EXTERNAL_NET, MAIN_TABLE, METRIC_BACKUP, METRIC_OWNER, POOL_SLICES, SLICE_TABLES, SUBSCRIBERS,
    UPR_DN,
};
use cgnat_kit::testbed::cannot_run;

/// Failover budget: BFD detects in 300 ms (100 ms x 3).
const FAILOVER: Duration = Duration::from_secs(1);
/// Bound for routes to appear after a table-200 write or a session start.
const SETTLE: Duration = Duration::from_secs(10);

/// What node `n`'s cgnat would write: its own slice as owner, the other
/// one as backup.
fn write_cgnat_table(bed: &ClusterBed, n: usize) {
    let node = node_name(n);
    // Unchecked: flushing a table that was never created fails.
    ok(
        "flushing table 200",
        bed.exec(
            node,
            &["ip", "route", "flush", "table", &CGNAT_TABLE.to_string()],
        ),
    );
    for (i, slice) in POOL_SLICES.iter().enumerate() {
        let metric = if i + 1 == n {
            METRIC_OWNER
        } else {
            METRIC_BACKUP
        };
        bed.run(
            node,
            &[
                "ip",
                "route",
                "add",
                "unreachable",
                slice,
                "table",
                &CGNAT_TABLE.to_string(),
                "metric",
                &metric.to_string(),
            ],
        )
        .unwrap_or_else(|e| panic!("writing {slice} into table 200 of {node}: {e}"));
    }
}

fn ok<T>(what: &str, r: Result<T, cgnat_kit::cluster_bed::ClusterError>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Both routers route each slice to its owner.
fn assert_slices_at_owners(bed: &ClusterBed) -> Vec<(String, Duration)> {
    let mut times = Vec::new();
    for n in [1, 2] {
        let slice = POOL_SLICES[n - 1];
        let t = ok(
            &format!("upr: {slice} via node {n}"),
            bed.wait_route("upr", MAIN_TABLE, slice, node_ext(n), SETTLE),
        );
        times.push((format!("upr {slice} -> n{n}"), t));
        let table = SLICE_TABLES[n - 1];
        let t = ok(
            &format!("acc: table {table} default via node {n}"),
            bed.wait_route("acc", table, "0.0.0.0/0", node_int(n), SETTLE),
        );
        times.push((format!("acc table {table} -> n{n}"), t));
    }
    times
}

/// A node's main table: the routers' networks via the routers, no pool.
fn assert_node_tables(bed: &ClusterBed, n: usize) {
    let node = node_name(n);
    for subs in SUBSCRIBERS {
        ok(
            &format!("{node}: {subs} via acc"),
            bed.wait_route(node, MAIN_TABLE, subs, ACC_UP, SETTLE),
        );
    }
    ok(
        &format!("{node}: {EXTERNAL_NET} via upr"),
        bed.wait_route(node, MAIN_TABLE, EXTERNAL_NET, UPR_DN, SETTLE),
    );
    let main = ok("routes", bed.routes(node, MAIN_TABLE));
    assert!(
        !main.contains("203.0.113."),
        "{node}'s main table holds a pool route:\n{main}\n{}",
        bed.dump()
    );
}

fn ping(bed: &ClusterBed, from: &str, to: &str) {
    let out = ok(
        "ping",
        bed.exec(from, &["ping", "-c", "3", "-i", "0.2", "-W", "2", to]),
    );
    assert!(
        out.status.success(),
        "ping from {from} to {to} failed:\n{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        bed.dump()
    );
}

/// Snapshot of every route BIRD installed where the test looks (the
/// kernel's own connected routes are left out: `sync0` losing its carrier
/// marks its route `linkdown`).
fn snapshot(bed: &ClusterBed) -> String {
    let mut s = String::new();
    for (host, table) in [
        ("upr", MAIN_TABLE),
        ("acc", MAIN_TABLE),
        ("acc", SLICE_TABLES[0]),
        ("acc", SLICE_TABLES[1]),
        ("n1", MAIN_TABLE),
        ("n2", MAIN_TABLE),
    ] {
        let routes = ok("routes", bed.routes(host, table));
        s.push_str(&format!("{host} table {table}:\n"));
        for l in routes.lines().filter(|l| l.contains("proto bird")) {
            s.push_str(l);
            s.push('\n');
        }
    }
    s
}

#[test]
fn cluster_routing() {
    if let Some(why) = missing_requirements() {
        cannot_run(&why);
        return;
    }
    let begin = Instant::now();
    let mut bed = ok("building the cluster bed", ClusterBed::new());
    println!(
        "cluster bed {} up, all sessions established in {:?}",
        bed.id(),
        begin.elapsed()
    );

    // 1. Each node owns its slice.
    for n in [1, 2] {
        write_cgnat_table(&bed, n);
    }
    for (what, t) in assert_slices_at_owners(&bed) {
        println!("start: {what} after {t:?}");
    }
    for n in [1, 2] {
        assert_node_tables(&bed, n);
    }
    ping(&bed, "s1", &node_int(1).to_string());
    ping(&bed, "ext", &node_ext(1).to_string());

    // 2. Node 1 dies; both routers move slice 1 to node 2, by BFD.
    let cut = ok("kill_node(1)", bed.kill_node(1));
    let (t_upr, t_acc) = thread::scope(|s| {
        let upr = s.spawn(|| {
            bed.wait_route_since(
                cut,
                "upr",
                MAIN_TABLE,
                POOL_SLICES[0],
                node_ext(2),
                Duration::from_secs(5),
            )
        });
        let acc = s.spawn(|| {
            bed.wait_route_since(
                cut,
                "acc",
                SLICE_TABLES[0],
                "0.0.0.0/0",
                node_int(2),
                Duration::from_secs(5),
            )
        });
        (
            ok("upr failover", upr.join().expect("upr thread")),
            ok("acc failover", acc.join().expect("acc thread")),
        )
    });
    println!("failover after node 1's death: upr {t_upr:?}, acc {t_acc:?}");
    assert!(
        t_upr <= FAILOVER && t_acc <= FAILOVER,
        "failover too slow: upr {t_upr:?}, acc {t_acc:?} (budget {FAILOVER:?})\n{}",
        bed.dump()
    );
    // Detected by BFD (the routers' links never went down).
    for router in ["upr", "acc"] {
        let proto = ok("birdc", bed.birdc(router, "show protocols all node1"));
        assert!(
            proto.contains("BFD session down"),
            "{router} did not lose node 1 by BFD:\n{proto}\n{}",
            bed.dump()
        );
    }
    // Slice 2 stays where it was.
    assert_eq!(
        ok("route", bed.route_via("upr", MAIN_TABLE, POOL_SLICES[1])),
        Some(node_ext(2))
    );
    assert_eq!(
        ok("route", bed.route_via("acc", SLICE_TABLES[1], "0.0.0.0/0")),
        Some(node_int(2))
    );

    // 3. Node 1 comes back and writes its table 200: slice 1 returns.
    let t = ok("revive_node(1)", bed.revive_node(1));
    println!("node 1 revived: sessions up after {t:?}");
    write_cgnat_table(&bed, 1);
    for (what, t) in assert_slices_at_owners(&bed) {
        println!("after revival: {what} after {t:?}");
    }
    assert_node_tables(&bed, 1);

    // 4. Node 1's sync link goes down: no routing change (BFD would have
    //    noticed within 300 ms; wait three times that).
    let before = snapshot(&bed);
    ok("sync_link(1, false)", bed.sync_link(1, false));
    thread::sleep(Duration::from_secs(1));
    ok(
        "sessions after the sync link went down",
        bed.wait_established(Duration::from_secs(1)),
    );
    let after = snapshot(&bed);
    assert_eq!(
        before,
        after,
        "routes changed with the sync link down\n{}",
        bed.dump()
    );
    ok("sync_link(1, true)", bed.sync_link(1, true));
    println!("cluster_routing done in {:?}", begin.elapsed());
}
