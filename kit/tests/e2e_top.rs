//! `cgnat top` against a running daemon in the namespace test bed: the
//! batch view shows the traffic a subscriber sends while it samples (a
//! rate, the totals, the subscriber and its pool address), and the
//! interactive view on a terminal quits on `q` and gives the terminal back
//! (it leaves the alternate screen it entered).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cgnat_kit::testbed::{cannot_run, udp_exchange, Host, Testbed, UdpReflector};

const T: Duration = Duration::from_secs(5);

#[test]
fn top_shows_live_traffic_and_quits_on_q() {
    if !nix::unistd::geteuid().is_root() {
        cannot_run("e2e_top: needs root (network namespaces)");
        return;
    }
    let tb = Testbed::new().expect("test bed");
    let config = tb
        .write_config("top.toml", &tb.config_toml())
        .expect("config");
    let bin = cgnat_kit::cgnat_binary();
    let _cgnat = tb
        .start_cgnat(bin, &config, Duration::from_secs(30))
        .expect("cgnat starts");
    let refl = UdpReflector::start(&tb, Host::E1, Host::E1.sock(7000)).expect("reflector");
    let s1 = tb
        .udp_socket(Host::S1, Host::S1.sock(5000))
        .expect("s1 socket");
    let first = udp_exchange(&s1, refl.addr(), b"first", T).expect("s1 -> e1");

    // Traffic while top samples: one exchange every 20 ms.
    let stop = AtomicBool::new(false);
    let (bin_s, cfg_s) = (bin.display().to_string(), config.display().to_string());
    let text = std::thread::scope(|s| {
        let sender = s.spawn(|| {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                udp_exchange(&s1, refl.addr(), b"during top", T).expect("s1 -> e1");
                n += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            n
        });
        let out = tb.run(
            Host::Router,
            &[
                &bin_s,
                "--config",
                &cfg_s,
                "top",
                "--batch",
                "--interval",
                "1s",
            ],
        );
        stop.store(true, Ordering::Relaxed);
        let n = sender.join().expect("sender");
        assert!(n >= 10, "only {n} exchanges while top sampled");
        out.expect("cgnat top --batch")
    });
    println!("{text}");
    let fwd_out = text
        .lines()
        .find(|l| l.starts_with("fwd_out"))
        .unwrap_or_else(|| panic!("no fwd_out row:\n{text}"));
    let cols: Vec<&str> = fwd_out.split_whitespace().collect();
    let rate: f64 = cols[1].trim_end_matches('k').parse().expect("pkt/s");
    assert!(rate > 0.0, "no packet rate while traffic flowed: {fwd_out}");
    let total: u64 = cols[3].parse().expect("packets");
    assert!(total >= 11, "fwd_out total {total}: {fwd_out}");
    assert!(
        text.contains("sessions 1 of "),
        "one session (s1 -> e1):\n{text}"
    );
    let sub = text
        .lines()
        .find(|l| l.starts_with(&Host::S1.addr().to_string()))
        .unwrap_or_else(|| panic!("no row for s1:\n{text}"));
    assert!(
        sub.contains(&first.observed.ip().to_string()),
        "s1's external address {} missing: {sub}",
        first.observed.ip()
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with(&first.observed.ip().to_string())),
        "no pool row for {}:\n{text}",
        first.observed.ip()
    );

    // Interactive, on a pseudo-terminal (script(1)): the subscribers view
    // (key 4) after a refresh, then `q`.
    let mut child = Command::new("ip")
        .args(["netns", "exec", tb.ns(Host::Router), "script", "-qfec"])
        // a pseudo-terminal without a caller's terminal has no size
        .arg(format!(
            "stty cols 120 rows 40; {bin_s} --config {cfg_s} top --interval 200ms"
        ))
        .arg("/dev/null")
        .env("TERM", "xterm")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script(1)");
    std::thread::sleep(Duration::from_millis(800));
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"4").expect("sending 4");
    stdin.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(600));
    stdin.write_all(b"q").expect("sending q");
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if started.elapsed() > Duration::from_secs(5) {
            let _ = child.kill();
            panic!("cgnat top did not quit within 5 s of q");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(stdin);
    let mut screen = Vec::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut screen)
        .expect("reading the screen");
    let screen = String::from_utf8_lossy(&screen);
    assert!(
        status.success(),
        "cgnat top exited with {status}:\n{screen}"
    );
    let enter = screen
        .find("\x1b[?1049h")
        .expect("entered the alternate screen");
    let leave = screen
        .rfind("\x1b[?1049l")
        .expect("left the alternate screen");
    assert!(enter < leave, "the terminal is restored last");
    assert!(screen.contains("fwd_out"), "the traffic view was drawn");
    // the screen is drawn as changed cells: look for whole words
    let row = format!("{}^[5;18H{}", Host::S1.addr(), first.observed.ip());
    assert!(
        screen.contains("SESSIONS") && screen.replace('\x1b', "^").contains(&row),
        "no subscribers view with s1 after 4:\n{:?}",
        screen.replace('\x1b', "^")
    );
}
