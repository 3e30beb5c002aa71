//! Property tests of the config parser: arbitrary text and
//! mutated valid configs never make `Config::parse` panic, and every
//! rejection names the file and the problem: a validation error names the
//! mutated field (or the field a cross-field check compares it with), a
//! TOML or type error gives the line of the mutated key.
//!
//! Cases: `CGNAT_PROPTEST_CASES` per property (default 5000, at least 16).
//!
//! Run: cargo test --release --test config_props -- --nocapture

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use cgnat::config::{Config, ConfigError};
use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestCaseError, TestRunner};

const FILE: &str = "props.toml";

/// The shipped example config: every key, with its default.
const SEED: &str = include_str!("../../configs/cgnat.toml");

/// Fields a validation error may name when the mutated key is another
/// one: checks that compare two settings report the one they compare
/// against (the pool is checked against the internal prefixes, a static
/// mapping against both, deterministic mode against both, a log file
/// against the log output).
const CROSS_FIELD: &[(&str, &[&str])] = &[
    ("nat.external_pool", &["nat.internal_prefixes"]),
    ("static.internal", &["nat.internal_prefixes"]),
    ("static.external", &["nat.external_pool"]),
    ("pool.mode", &["nat.internal_prefixes", "nat.external_pool"]),
    ("log.file", &["log.output"]),
    ("log.syslog", &["log.output"]),
];

/// The 1-based line of `key = ...` in `[table]` of `text`.
fn key_line(text: &str, table: &str, key: &str) -> Option<usize> {
    let header = format!("[{table}]");
    let lines: Vec<&str> = text.lines().collect();
    let h = lines.iter().position(|l| l.trim() == header)?;
    lines[h + 1..]
        .iter()
        .take_while(|l| !l.trim_start().starts_with('['))
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with('='))
        })
        .map(|i| h + 2 + i)
}

/// The 1-based lines of every `[[static]]` block (header and keys).
fn static_lines(text: &str) -> Vec<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if l.trim() == "[[static]]" {
            out.extend((i + 1..).take(4));
        }
    }
    out
}

/// A TOML or type error: the line toml reports ("at line N, column M").
fn reported_line(msg: &str) -> Option<usize> {
    let rest = &msg[msg.find(" at line ")? + " at line ".len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Every `key = value` line of the seed, with the table it is in.
fn seed_keys() -> Vec<(String, String)> {
    let mut table = String::new();
    let mut keys = Vec::new();
    for l in SEED.lines() {
        let l = l.trim();
        if l.starts_with('#') || l.is_empty() {
            continue;
        }
        if l.starts_with('[') {
            table = l.trim_matches(|c| c == '[' || c == ']').to_owned();
            continue;
        }
        if let Some((k, _)) = l.split_once('=') {
            keys.push((table.clone(), k.trim().to_owned()));
        }
    }
    keys
}

/// Values of every shape and many wrong ones, as TOML text.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        prop::sample::select(vec![
            "0",
            "-1",
            "1",
            "65535",
            "65536",
            "4294967295",
            "4294967296",
            "1e3",
            "nan",
            "inf",
            "true",
            "false",
            "[]",
            "{}",
            "\"\"",
            "\"0s\"",
            "\"-1s\"",
            "\"1\"",
            "\"1x\"",
            "\"99999999999999999999h\"",
            "\"18446744073709551615s\"",
            "\"1h1h\"",
            "\"5 s\"",
            "\"300.1.2.3/8\"",
            "\"1.2.3.4/33\"",
            "\"0.0.0.0/0\"",
            "\"100.64.0.0/10\"",
            "[\"100.64.0.0/10\"]",
            "[\"203.0.113.0/28\"]",
            "[\"1.2.3.4/33\"]",
            "[1, 2]",
            "[\"a\", 1]",
            "{ a = 1 }",
            "\"native\"",
            "\"generic\"",
            "\"port-block\"",
            "\"deterministic\"",
            "\"address-dependent\"",
            "\"file\"",
            "\"syslog\"",
            "\"udp:1.2.3.4:99999\"",
            "\"eth0\"",
            "\"lo\"",
            "\"a/b\"",
            "\"0123456789abcdef\"",
            "\"127.0.0.1:0\"",
            "\"[::1]:80\"",
            "\"not an address\"",
            "1979-05-27T07:32:00Z",
            "\"1.2.3.4:80\"",
            "[\"10.0.0.0/8:53\"]",
            "[\"10.0.0.0/8:x\"]",
        ])
        .prop_map(str::to_owned),
        "\"[ !#-~]{0,24}\"".prop_map(|s| s.replace('\\', "\\\\")),
    ]
}

/// One mutation of the seed: a known key set to a random value, an
/// unknown key added, or a static mapping added.
#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, String),
    Unknown(usize, String, String),
    Static(String, String, String),
}

fn mutation(nkeys: usize) -> impl Strategy<Value = Mutation> {
    prop_oneof![
        6 => (0..nkeys, value()).prop_map(|(k, v)| Mutation::Set(k, v)),
        1 => (0..nkeys, "[a-z_]{1,12}", value()).prop_map(|(k, u, v)| Mutation::Unknown(k, u, v)),
        1 => (value(), value(), value()).prop_map(|(a, b, c)| Mutation::Static(a, b, c)),
    ]
}

/// The rejection names the file and says something; Invalid names a
/// field. Returns the message.
fn check_error(e: &ConfigError) -> Result<String, TestCaseError> {
    let msg = e.to_string();
    prop_assert!(
        msg.starts_with(&format!("{FILE}: ")),
        "message does not name the file: {msg}"
    );
    match e {
        ConfigError::Invalid { field, reason, .. } => {
            prop_assert!(!field.is_empty(), "no field: {msg}");
            prop_assert!(!reason.trim().is_empty(), "no reason: {msg}");
        }
        ConfigError::Parse { message, .. } => {
            prop_assert!(!message.trim().is_empty(), "no reason: {msg}");
        }
        ConfigError::Read { .. } => prop_assert!(false, "parse reported a read error: {msg}"),
    }
    Ok(msg)
}

fn runner(n: u32) -> TestRunner {
    TestRunner::new(PtConfig {
        cases: n,
        failure_persistence: None,
        ..PtConfig::default()
    })
}

#[test]
fn seed_is_valid() {
    Config::parse(SEED, Path::new(FILE)).expect("the shipped config parses");
}

/// Without a [metrics] section the Prometheus endpoint listens on
/// 127.0.0.1:9469 (README, docs/robustness.md): loopback only.
#[test]
fn metrics_listen_defaults_to_loopback_9469() {
    let text = "[interfaces]\ninternal = \"eth1\"\nexternal = \"eth0\"\n\
                [nat]\ninternal_prefixes = [\"100.64.0.0/10\"]\n\
                external_pool = [\"203.0.113.0/28\"]\n";
    let cfg = Config::parse(text, Path::new(FILE)).expect("a minimal config parses");
    assert_eq!(
        cfg.metrics_listen,
        Some("127.0.0.1:9469".parse().unwrap()),
        "metrics.listen default"
    );
    let seed = Config::parse(SEED, Path::new(FILE)).expect("the shipped config parses");
    assert_eq!(
        seed.metrics_listen, cfg.metrics_listen,
        "the shipped config"
    );
}

/// Arbitrary text (random bytes as UTF-8, TOML-ish token soup) never
/// panics; a rejection names the file.
#[test]
fn arbitrary_text_never_panics() {
    let n = cgnat_kit::cases(5000);
    let rejected = AtomicU64::new(0);
    let tokens = prop::collection::vec(
        prop_oneof![
            prop::sample::select(vec![
                "[",
                "]",
                "[[",
                "]]",
                "=",
                "\"",
                "'",
                "\n",
                " ",
                ",",
                "{",
                "}",
                "#",
                ".",
                "nat",
                "interfaces",
                "static",
                "internal",
                "external",
                "proto",
                "timeouts",
                "udp",
                "max_sessions",
                "true",
                "1",
                "-",
                "\"100.64.0.0/10\"",
                "\\",
                "\"\"\"",
                "\r\n",
            ])
            .prop_map(str::to_owned),
            any::<String>(),
        ],
        0..40,
    )
    .prop_map(|v| v.concat());
    let mut r = runner(n);
    r.run(&prop_oneof![any::<String>(), tokens], |text| {
        match Config::parse(&text, Path::new(FILE)) {
            Ok(_) => {}
            Err(e) => {
                let msg = check_error(&e)?;
                if matches!(e, ConfigError::Parse { .. }) {
                    prop_assert!(
                        reported_line(&msg).is_some(),
                        "a TOML error without its line: {msg}"
                    );
                }
                rejected.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "config_props arbitrary_text: {n} cases, {} rejected",
        rejected.load(Ordering::Relaxed)
    );
}

/// A valid config with 1-3 keys set to random (mostly wrong) values, an
/// unknown key, or a random static mapping: never panics; a rejection
/// names the file, and the key it is about (the field of a validation
/// error, the offending line of a TOML/type error).
#[test]
fn mutated_config_never_panics_and_names_the_field() {
    let n = cgnat_kit::cases(5000);
    let keys = seed_keys();
    assert!(keys.len() > 30, "seed keys: {keys:?}");
    let (ok, rejected) = (AtomicU64::new(0), AtomicU64::new(0));
    let mut r = runner(n);
    r.run(&prop::collection::vec(mutation(keys.len()), 1..4), |muts| {
        let mut text = SEED.to_owned();
        let mut names = Vec::new();
        for m in &muts {
            match m {
                Mutation::Set(k, v) => {
                    let (t, key) = &keys[*k];
                    text = common::toml_set(&text, t, key, v);
                    names.push((t.clone(), key.clone()));
                }
                Mutation::Unknown(k, u, v) => {
                    let t = &keys[*k].0;
                    let u = format!("x_{u}");
                    text = common::toml_set(&text, t, &u, v);
                    names.push((t.clone(), u));
                }
                Mutation::Static(p, i, e) => {
                    text.push_str(&format!(
                        "\n[[static]]\nproto = {p}\ninternal = {i}\nexternal = {e}\n"
                    ));
                    for k in ["proto", "internal", "external"] {
                        names.push(("static".into(), k.into()));
                    }
                }
            }
        }
        match Config::parse(&text, Path::new(FILE)) {
            Ok(_) => {
                ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                rejected.fetch_add(1, Ordering::Relaxed);
                let msg = check_error(&e)?;
                let mutated: Vec<String> = names.iter().map(|(t, k)| format!("{t}.{k}")).collect();
                match &e {
                    // a validation error names the mutated key itself,
                    // or the key a cross-field check compares it with
                    ConfigError::Invalid { field, .. } => {
                        let cross = CROSS_FIELD.iter().find(|(f, _)| f == field).is_some_and(
                            |(_, from)| from.iter().any(|k| mutated.iter().any(|m| m == k)),
                        );
                        prop_assert!(
                            mutated.iter().any(|m| m == field) || cross,
                            "rejection names field {field}, but the mutated keys are \
                                 {mutated:?}: {msg}\n--- config ---\n{text}"
                        );
                    }
                    // a TOML or type error gives the line of a mutated
                    // key (README: "names the file, the field and the
                    // reason"; docs/robustness.md: "the field or the
                    // offending TOML line")
                    _ => {
                        let mut lines: Vec<usize> = names
                            .iter()
                            .filter(|(t, _)| t != "static")
                            .filter_map(|(t, k)| key_line(&text, t, k))
                            .collect();
                        lines.extend(static_lines(&text));
                        let line = reported_line(&msg);
                        prop_assert!(
                            line.is_some_and(|l| lines.contains(&l)),
                            "rejection reports line {line:?}, but the mutated keys {mutated:?} \
                                 are on lines {lines:?}: {msg}\n--- config ---\n{text}"
                        );
                    }
                }
            }
        }
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "config_props mutated_config: {n} cases, {} accepted, {} rejected",
        ok.load(Ordering::Relaxed),
        rejected.load(Ordering::Relaxed)
    );
}
