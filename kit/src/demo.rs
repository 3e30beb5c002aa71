//! `cgnat demo`: builds the namespace test bed, runs cgnat in it and shows
//! real traffic crossing the NAT, as the far end saw it.
//!
//! Needs root. Everything it creates (namespaces, a private bpffs, a work
//! directory) is removed at the end, also when a step fails.

use std::path::Path;
use std::time::Duration;

use crate::testbed::{
    in_pool, udp_exchange, udp_send_until_received, Host, TcpServer, Testbed, TestbedError,
    UdpReflector, E1_SECOND, POOL, ROUTER_EXT, ROUTER_INT,
};

const T: Duration = Duration::from_secs(5);

/// Runs the demo with the cgnat binary `bin`. Prints what happens; returns
/// an error when the demo could not run or a step failed.
pub fn run_demo(bin: &Path) -> Result<(), TestbedError> {
    println!("cgnat demo: building a test bed of network namespaces ...");
    let tb = Testbed::new()?;
    println!(
        "  subscribers  s1 {}  s2 {}  (gateway {ROUTER_INT})",
        Host::S1.addr(),
        Host::S2.addr()
    );
    println!(
        "  router       int0 {ROUTER_INT}/10  ext0 {ROUTER_EXT}/24  (ip_forward=0, namespace {})",
        tb.ns(Host::Router)
    );
    println!(
        "  external     e1 {} + {E1_SECOND}  e2 {}  e3 {}",
        Host::E1.addr(),
        Host::E2.addr(),
        Host::E3.addr()
    );
    println!("  NAT pool     {}", POOL.join(", "));
    let config = tb.write_config("cgnat.toml", &tb.config_toml())?;
    let forw_before = tb.forw_datagrams()?;
    println!("starting {} --config {}", bin.display(), config.display());
    let cgnat = tb.start_cgnat(bin, &config, Duration::from_secs(30))?;
    println!("cgnat is running: {}\n", cgnat.attached_line().trim());

    let mut failed: Vec<String> = Vec::new();
    let mut step = |name: &str, r: Result<(), TestbedError>| {
        if let Err(e) = r {
            println!("  FAILED {name}: {e}");
            failed.push(name.to_owned());
        }
    };

    let refl = UdpReflector::start(&tb, Host::E1, Host::E1.sock(7000))?;
    let s1 = tb.udp_socket(Host::S1, Host::S1.sock(5000))?;
    let s2 = tb.udp_socket(Host::S2, Host::S2.sock(5000))?;
    let mut ext = [None, None];

    println!("UDP: both subscribers use source port 5000 toward e1");
    for (i, (h, sock)) in [(Host::S1, &s1), (Host::S2, &s2)].into_iter().enumerate() {
        step(
            "UDP",
            (|| {
                let r = udp_exchange(sock, refl.addr(), format!("hello from {h}").as_bytes(), T)?;
                println!(
                    "  {h} {} -> e1 {}   e1 saw {}{}, answer delivered",
                    h.sock(5000),
                    refl.addr(),
                    r.observed,
                    if in_pool(*r.observed.ip()) {
                        " (pool)"
                    } else {
                        " (NOT the pool!)"
                    }
                );
                if !in_pool(*r.observed.ip()) {
                    return Err(TestbedError::Protocol(format!(
                        "source {} is not in the pool",
                        r.observed
                    )));
                }
                ext[i] = Some(r.observed);
                Ok(())
            })(),
        );
    }

    println!("hairpinning: s1 sends to s2's external endpoint");
    step(
        "hairpin",
        (|| {
            let (Some(x1), Some(x2)) = (ext[0], ext[1]) else {
                return Err(TestbedError::Protocol(
                    "no mappings from the UDP step".into(),
                ));
            };
            let d = udp_send_until_received(&s1, x2, b"hairpin", &s2, T)?;
            println!(
                "  s1 -> {x2} (s2's external)   arrived at s2 from {}{}",
                d.from,
                if d.from == x1 {
                    " (s1's external)"
                } else {
                    " (expected s1's external!)"
                }
            );
            if d.from != x1 {
                return Err(TestbedError::Protocol(format!(
                    "s2 saw {} instead of {x1}",
                    d.from
                )));
            }
            Ok(())
        })(),
    );

    println!("endpoint-independent filtering: e3, never contacted, sends to s1's mapping");
    step(
        "filtering",
        (|| {
            let Some(x1) = ext[0] else {
                return Err(TestbedError::Protocol(
                    "no mapping from the UDP step".into(),
                ));
            };
            let e3 = tb.udp_socket(Host::E3, Host::E3.sock(9000))?;
            let d = udp_send_until_received(&e3, x1, b"hello from e3", &s1, T)?;
            println!(
                "  e3 {} -> {x1}   delivered to s1, source {}",
                Host::E3.sock(9000),
                d.from
            );
            Ok(())
        })(),
    );

    println!("ping");
    for (s, e) in [(Host::S1, Host::E1), (Host::S2, Host::E2)] {
        step(
            "ping",
            (|| {
                let p = tb.ping(s, e.addr(), 3)?;
                println!(
                    "  {s} -> {e} {}: {}/{} replies",
                    e.addr(),
                    p.received,
                    p.transmitted
                );
                if p.received == 0 {
                    return Err(TestbedError::Protocol("no reply".into()));
                }
                Ok(())
            })(),
        );
    }

    println!("TCP");
    step(
        "TCP",
        (|| {
            let srv = TcpServer::start(&tb, Host::E1, Host::E1.sock(8000))?;
            let bytes = 4u64 << 20;
            let up = tb.tcp_upload(
                Host::S1,
                None,
                srv.addr(),
                bytes,
                42,
                Duration::from_secs(60),
            )?;
            let ok = up.server_bytes == bytes && up.server_hash == up.sent_hash;
            println!(
                "  s1 {} -> e1 {}: {} MiB in {:.2} s, e1 saw {}, content {}",
                up.local,
                srv.addr(),
                bytes >> 20,
                up.elapsed.as_secs_f64(),
                up.server_saw,
                if ok { "intact" } else { "CORRUPTED" }
            );
            if !ok {
                return Err(TestbedError::Protocol(format!("{up:?}")));
            }
            Ok(())
        })(),
    );

    drop(refl);
    println!("\ncgnat stats:");
    match cgnat.stats_text() {
        Ok(s) => {
            for l in s.lines() {
                println!("  {l}");
            }
        }
        Err(e) => step("stats", Err(e)),
    }
    let forw_after = tb.forw_datagrams()?;
    println!(
        "router kernel ForwDatagrams: {forw_before} before, {forw_after} after{}",
        if forw_after == forw_before {
            " (the kernel forwarded nothing)"
        } else {
            ""
        }
    );
    if forw_after != forw_before {
        failed.push("kernel bypass".into());
    }
    print!("stopping cgnat ... ");
    match cgnat.stop() {
        Ok(s) if s.success() => println!("done ({s})"),
        Ok(s) => {
            println!("FAILED: {s}");
            failed.push("stop".into());
        }
        Err(e) => {
            println!("FAILED: {e}");
            failed.push("stop".into());
        }
    }
    drop(tb);
    println!("test bed removed");
    if failed.is_empty() {
        println!("demo finished: every step worked");
        Ok(())
    } else {
        Err(TestbedError::Protocol(format!(
            "demo steps failed: {}",
            failed.join(", ")
        )))
    }
}
