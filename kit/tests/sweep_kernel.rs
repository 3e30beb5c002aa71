//! The in-kernel sweep (bpf/sweep.h) against the user-space one
//! (`Sweeper::sweep_user`): the same random tables in two loaded
//! programs, swept at the same times, must give the same reports and
//! leave the same tables, in dynamic mode with address-dependent
//! filtering and per-port UDP timeouts, and in port-block mode without
//! quarantine. More bindings are released at once than `sweep_out` holds,
//! so the release runs are covered too.

use std::collections::BTreeMap;
use std::path::Path;

use cgnat::bpf::{bytes_of, lookup_all, types, Datapath, KeyValue, LoadOptions, Tables};
use cgnat::config::{Config, PoolMode};
use cgnat::expiry::{compact_time, monotonic_ns, SweepReport, Sweeper};
use cgnat_kit::rng::Rng;
use libbpf_rs::{MapCore, MapFlags};

const SEC: u64 = 1_000_000_000;

/// The external addresses the tables use: 203.0.113.1 to .14.
const EXT_ADDRS: u32 = 14;

fn config(pool: &str, extra: &str) -> Config {
    let text = format!(
        r#"
[interfaces]
internal = "int0"
external = "ext0"
[nat]
internal_prefixes = ["100.64.0.0/10"]
external_pool = ["{pool}"]
max_sessions = 16384
max_bindings = 4096
{extra}
[daemon]
pin_path = "/sys/fs/bpf/cgnat-sweep-test-unused"
"#
    );
    Config::parse(&text, Path::new("(sweep test)")).expect("test config")
}

fn put<K: cgnat::bpf::Pod, V: cgnat::bpf::Pod>(m: &dyn MapCore, k: &K, v: &V) {
    m.update(bytes_of(k), bytes_of(v), MapFlags::ANY)
        .expect("map update");
}

/// Random sessions, bindings (some bare, idle, static or quarantined),
/// subscribers, filter entries and port blocks, written to `ts`.
fn fill(ts: &[&Tables], cfg: &Config, base: u64, seed: u64) {
    let mut r = Rng(seed);
    let block = cfg.mode == PoolMode::PortBlock;
    let mut subs: BTreeMap<u32, u32> = BTreeMap::new();
    let mut blocks: BTreeMap<(u32, u32), u32> = BTreeMap::new();
    let mut hairpin_ends = Vec::new();
    for i in 0..4000u32 {
        // 200 subscribers with 20 sessions each, 10 more with one each
        let host = if i < 3990 { i % 200 } else { 200 + i - 3990 };
        let sub = u32::from_be_bytes([100, 64, 0, host as u8]).to_be();
        let ext_addr = u32::from_be_bytes([203, 0, 113, (i % EXT_ADDRS + 1) as u8]).to_be();
        let proto = [6u8, 17, 17, 1][r.below(4) as usize];
        let ext_port = (1024 + i / EXT_ADDRS * 3 + r.below(3) as u32) as u16;
        let ek = types::cgnat_endpoint {
            addr: ext_addr,
            port: ext_port.to_be(),
            proto,
            _pad: 0,
        };
        let ik = types::cgnat_endpoint {
            addr: sub,
            port: (20000 + i as u16).to_be(),
            proto,
            _pad: 0,
        };
        let kind = if i == 7 { 5 } else { r.below(20) };
        let mut flags = 0u8;
        let mut rev = types::cgnat_binding {
            addr: ik.addr,
            port: ik.port,
            ..Default::default()
        };
        match kind {
            0 => flags = types::cgnat_binding_flag::CGNAT_BIND_STATIC.0 as u8,
            1 => flags = types::cgnat_binding_flag::CGNAT_BIND_IDLE.0 as u8,
            2 => {
                flags = types::cgnat_binding_flag::CGNAT_BIND_QUARANTINE.0 as u8;
                rev.addr = compact_time(base.saturating_sub(r.below(300) * SEC));
            }
            _ => {}
        }
        rev.flags = flags;
        let fwd = types::cgnat_binding {
            addr: ek.addr,
            port: ek.port,
            ..Default::default()
        };
        for t in ts {
            t.bindings.upsert_in(&ek, &rev).expect("map update");
            if kind != 2 {
                t.bindings.upsert_out(&ik, &fwd).expect("map update");
            }
        }
        if kind != 2 && proto != 1 && i % 10 == 0 {
            hairpin_ends.push((ek, ik));
        }
        if kind > 3 && i % 50 == 4 {
            // a bare binding of another protocol on the same external
            // port, already idle: released at the first sweep, whatever
            // the sessions of its twin do
            let twin = types::cgnat_endpoint {
                proto: if proto == 17 { 6 } else { 17 },
                ..ek
            };
            let twin_int = types::cgnat_endpoint {
                port: (40000 + i as u16).to_be(),
                proto: twin.proto,
                ..ik
            };
            let idle = types::cgnat_binding {
                addr: twin_int.addr,
                port: twin_int.port,
                flags: types::cgnat_binding_flag::CGNAT_BIND_IDLE.0 as u8,
                ..Default::default()
            };
            for t in ts {
                t.bindings.upsert_in(&twin, &idle).expect("map update");
                t.bindings.upsert_out(&twin_int, &fwd).expect("map update");
            }
            *subs.entry(sub).or_default() += 1;
        }
        if kind != 2 {
            *subs.entry(sub).or_default() += 1;
            if block {
                if let Some(b) = cfg.blocks.block_of(ext_port) {
                    blocks.entry((ext_addr, b)).or_insert(sub);
                }
            }
        }
        // 1..3 sessions on most, of various ages and states
        // (one binding has more sessions than the kernel sweep counts on
        // a binding: 255)
        let crowd = i == 7;
        let n = match kind {
            3 => 0,
            _ if crowd => 300,
            _ => 1 + r.below(3),
        };
        for j in 0..n {
            let mut rem_port: u16 = [53u16, 3478, 80, 443][r.below(4) as usize];
            let mut rem_addr = u32::from_be_bytes([198, 51, 100, (j + 1) as u8]).to_be();
            if crowd {
                (rem_addr, rem_port) = (
                    u32::from_be_bytes([198, 51, 100, 1]).to_be(),
                    1000 + j as u16,
                );
            }
            // now and then a session whose internal address is not its
            // binding's (a port reused while an old session lingers)
            let int_addr = if r.below(25) == 0 {
                u32::from_be_bytes([100, 64, 1, (j % 200) as u8]).to_be()
            } else {
                sub
            };
            let key = types::cgnat_session_key {
                ext_addr,
                rem_addr,
                ext_port: ek.port,
                rem_port: if proto == 1 { 0 } else { rem_port.to_be() },
                proto,
                ..Default::default()
            };
            let age = [0, 0, 0, 0, 0, 10, 70, 250, 310, 7500][r.below(10) as usize] * SEC;
            let s = types::cgnat_session {
                int_addr,
                int_port: ik.port,
                flags: if r.below(3) == 0 {
                    types::cgnat_session_flag::CGNAT_SESS_DYING.0 as u8
                } else {
                    0
                },
                _pad0: 0,
                tcp: r.below(64) as u32,
                last_seen: compact_time(base.saturating_sub(age)),
            };
            let fk = types::cgnat_filter_key {
                ext_addr,
                rem_addr,
                ext_port: ek.port,
                proto,
                _pad: 0,
            };
            let created = base.saturating_sub(r.below(4) * SEC);
            for t in ts {
                t.sessions.upsert(&key, &s).expect("map update");
                if let Some(fa) = &t.filter_addr {
                    put(fa, &fk, &created);
                }
            }
        }
    }
    // hairpinned flows between two bindings of the same protocol: each
    // side's session holds the other's internal endpoint, their ages
    // differ, so sweeps end one side before the other
    let hairpin = types::cgnat_session_flag::CGNAT_SESS_HAIRPIN.0 as u8;
    let inbound = types::cgnat_session_flag::CGNAT_SESS_INBOUND.0 as u8;
    for (a, b) in hairpin_ends.iter().zip(hairpin_ends.iter().skip(1)) {
        let ((ea, ia), (eb, ib)) = (a, b);
        if ea.proto != eb.proto {
            continue;
        }
        for (from, to, target, flags) in [(ea, eb, ib, hairpin), (eb, ea, ia, hairpin | inbound)] {
            let key = types::cgnat_session_key {
                ext_addr: from.addr,
                rem_addr: to.addr,
                ext_port: from.port,
                rem_port: to.port,
                proto: from.proto,
                ..Default::default()
            };
            let age = [0, 10, 70, 250, 310, 7500][r.below(6) as usize] * SEC;
            let s = types::cgnat_session {
                int_addr: target.addr,
                int_port: target.port,
                flags,
                _pad0: 0,
                tcp: 0,
                last_seen: compact_time(base.saturating_sub(age)),
            };
            for t in ts {
                t.sessions.upsert(&key, &s).expect("map update");
            }
        }
    }
    // filter entries of remotes no session talks to
    for i in 0..300u32 {
        let fk = types::cgnat_filter_key {
            ext_addr: u32::from_be_bytes([203, 0, 113, 1]).to_be(),
            rem_addr: u32::from_be_bytes([192, 0, 2, (i % 250) as u8]).to_be(),
            ext_port: (1024 + i as u16).to_be(),
            proto: 17,
            _pad: 0,
        };
        let created = base.saturating_sub(r.below(5) * SEC);
        for t in ts {
            if let Some(fa) = &t.filter_addr {
                put(fa, &fk, &created);
            }
        }
    }
    for (sub, n) in &subs {
        let s = types::cgnat_subscriber {
            ext_addr: u32::from_be_bytes([203, 0, 113, 1]).to_be(),
            ports: [*n, *n, 0],
            sessions: *n * 2,
            last_alloc_ns: base.saturating_sub(r.below(20) * SEC),
            ..Default::default()
        };
        for t in ts {
            put(&t.subscribers, sub, &s);
        }
    }
    for (slot, ((ext, b), owner)) in blocks.iter().enumerate() {
        let k = types::cgnat_block_key {
            ext_addr: *ext,
            block: *b,
        };
        let v = types::cgnat_block {
            owner: *owner,
            slot: slot as u32,
            created_ns: base.saturating_sub(r.below(4) * SEC),
            full: (r.below(2)) as u32,
            _pad: 0,
        };
        let sk = types::cgnat_sub_block_key {
            sub: *owner,
            slot: slot as u32,
        };
        for t in ts {
            put(&t.blocks, &k, &v);
            put(&t.sub_blocks, &sk, b);
        }
    }
}

/// Every map a sweep writes, as sorted (key, value) bytes.
fn snapshot(t: &Tables) -> Vec<(&'static str, Vec<KeyValue>)> {
    let mut sessions: Vec<KeyValue> = t
        .sessions
        .dump()
        .expect("dump")
        .iter()
        .map(|(k, v)| (bytes_of(k).to_vec(), bytes_of(v).to_vec()))
        .collect();
    sessions.sort();
    let typed = |rows: Vec<(types::cgnat_endpoint, types::cgnat_binding)>| {
        let mut kv: Vec<KeyValue> = rows
            .iter()
            .map(|(k, v)| (bytes_of(k).to_vec(), bytes_of(v).to_vec()))
            .collect();
        kv.sort();
        kv
    };
    let bindings = [
        ("bind_in", typed(t.bindings.dump().expect("dump"))),
        (
            "outbound halves",
            typed(t.bindings.dump_out().expect("dump")),
        ),
    ];
    let mut maps: Vec<(&'static str, &dyn MapCore)> = vec![
        ("subscribers", &t.subscribers),
        ("pool_load", &t.pool_load),
        ("blocks", &t.blocks),
        ("sub_blocks", &t.sub_blocks),
    ];
    if let Some(fa) = &t.filter_addr {
        maps.push(("filter_addr", fa));
    }
    let rest = maps.into_iter().map(|(name, m)| {
        let mut kv = lookup_all(m, 1024).expect("dump");
        kv.sort();
        (name, kv)
    });
    std::iter::once(("sessions", sessions))
        .chain(bindings)
        .chain(rest)
        .collect()
}

fn normalized(mut r: SweepReport) -> SweepReport {
    r.released
        .sort_by_key(|b| (b.proto, b.internal, b.external));
    r.blocks_released
        .sort_by_key(|b| (b.subscriber, b.external, b.block));
    // a measurement, not a decision
    r.session_pass = std::time::Duration::ZERO;
    r
}

fn compare(pool: &str, extra: &str, seed: u64) {
    let cfg = config(pool, extra);
    let load = || {
        Datapath::load(
            &cfg,
            LoadOptions {
                attach: false,
                pin: false,
            },
        )
    };
    let (kdp, udp) = (load().expect("load"), load().expect("load"));
    let kt = kdp.tables().expect("tables");
    let mut ut = udp.tables().expect("tables");
    assert!(kt.sweep.is_some(), "a loaded program has the sweep program");
    ut.sweep = None;
    let base = monotonic_ns() + 10_000 * SEC;
    fill(&[&kt, &ut], &cfg, base, seed);
    let sweeper = Sweeper {
        timeouts: cfg.timeouts.clone(),
        quarantine: cfg.port_quarantine,
        blocks: (cfg.mode == PoolMode::PortBlock).then_some(cfg.blocks),
        pool: cfg.pool_addrs.clone(),
    };
    let mut released = 0;
    let mut one_sided = 0;
    for (i, dt) in [0u64, 1, 30, 31, 7600, 7601, 7602, 7603, 7800]
        .iter()
        .enumerate()
    {
        let now = base + dt * SEC;
        let k = normalized(sweeper.sweep(&kt, now).expect("kernel sweep"));
        let u = normalized(sweeper.sweep(&ut, now).expect("user sweep"));
        assert_eq!(k, u, "sweep {i} (+{dt} s): reports differ");
        if i == 0 {
            // every address has live sessions in the first sweep: those
            // of the pool have port bits, the others are marked in bind_in
            let live = &kt.sweep.as_ref().expect("kernel sweep").live;
            let marked = (0..live.max_entries())
                .filter(|slot| {
                    live.lookup(&slot.to_ne_bytes(), MapFlags::ANY)
                        .expect("sweep_live")
                        .is_some_and(|bits| bits.iter().any(|&b| b != 0))
                })
                .count();
            let in_pool = cfg
                .pool_addrs
                .iter()
                .filter(|a| (1..=EXT_ADDRS).contains(&u32::from(a.octets()[3])))
                .count();
            assert_eq!(
                marked, in_pool,
                "sweep_live slots marked in the first sweep"
            );
        }
        for ((name, a), (_, b)) in snapshot(&kt).into_iter().zip(snapshot(&ut)) {
            assert!(
                a == b,
                "sweep {i} (+{dt} s): {name} differs ({} vs {} entries)",
                a.len(),
                b.len()
            );
        }
        released = released.max(k.bindings_released);
        one_sided = one_sided.max(hairpin_mirrors_hold(&kt, i));
    }
    assert!(
        one_sided > 0,
        "no sweep ended one side of a hairpinned flow before the other"
    );
    let cap = kt.sweep.as_ref().map_or(0, |k| k.out.max_entries());
    assert!(
        released > u64::from(cap),
        "one sweep released {released} bindings: more than sweep_out's {cap} expected"
    );
}

/// Every hairpin session has the other side of its flow, or is marked
/// one-sided (include/cgnat.h). Returns how many are one-sided.
fn hairpin_mirrors_hold(t: &Tables, sweep: usize) -> usize {
    let hairpin = types::cgnat_session_flag::CGNAT_SESS_HAIRPIN.0 as u8;
    let one_sided = types::cgnat_session_flag::CGNAT_SESS_ONE_SIDED.0 as u8;
    let rows = t.sessions.dump().expect("sessions");
    let keys: std::collections::HashSet<Vec<u8>> =
        rows.iter().map(|(k, _)| bytes_of(k).to_vec()).collect();
    let mut n = 0;
    for (k, s) in &rows {
        if s.flags & hairpin == 0 {
            continue;
        }
        if s.flags & one_sided != 0 {
            n += 1;
            continue;
        }
        let m = types::cgnat_session_key {
            ext_addr: k.rem_addr,
            ext_port: k.rem_port,
            rem_addr: k.ext_addr,
            rem_port: k.ext_port,
            ..*k
        };
        assert!(
            keys.contains(bytes_of(&m)),
            "sweep {sweep}: hairpin session {k:?} lost its other side without being marked one-sided"
        );
    }
    n
}

fn privileged() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    cgnat_kit::testbed::cannot_run("sweep_kernel needs root (it loads the BPF object)");
    false
}

#[test]
fn dynamic_with_address_dependent_filtering() {
    if !privileged() {
        return;
    }
    compare(
        "203.0.113.0/28",
        "port_quarantine = \"120s\"\n[filtering]\nudp = \"address-dependent\"\n\
         [timeouts]\nudp = \"300s\"\ntcp_transitory = \"4m\"\n\
         [timeouts.udp_ports]\n53 = \"20s\"\n",
        0x1234_5678_9abc_def1,
    );
}

#[test]
fn port_blocks_without_quarantine() {
    if !privileged() {
        return;
    }
    compare(
        "203.0.113.0/28",
        "port_quarantine = \"0s\"\n[pool]\nmode = \"port-block\"\n",
        0x0fed_cba9_8765_4321,
    );
}

/// sweep_live has slots for the pool's addresses: the tables here use 14
/// addresses against a pool of 4, so the bindings of 11 of them are marked
/// in bind_in, and the sweep still agrees with the user-space one.
#[test]
fn more_addresses_than_port_bits() {
    if !privileged() {
        return;
    }
    compare(
        "203.0.113.0/30",
        "port_quarantine = \"60s\"\n",
        0x5555_aaaa_1234_0f0f,
    );
}
