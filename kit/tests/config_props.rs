//! Property tests of the config parser: arbitrary text and
//! mutated valid configs never make `Config::parse` panic, and every
//! rejection names the file and the problem (the field, when there is one).
//!
//! Cases: `CGNAT_PROPTEST_CASES` per property (default 5000).
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

fn cases() -> u32 {
    std::env::var("CGNAT_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000)
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

/// Arbitrary text (random bytes as UTF-8, TOML-ish token soup) never
/// panics; a rejection names the file.
#[test]
fn arbitrary_text_never_panics() {
    let n = cases();
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
                check_error(&e)?;
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
    let n = cases();
    let keys = seed_keys();
    assert!(keys.len() > 30, "seed keys: {keys:?}");
    let (ok, rejected) = (AtomicU64::new(0), AtomicU64::new(0));
    let mut r = runner(n);
    r.run(
        &prop::collection::vec(mutation(keys.len()), 1..4),
        |muts| {
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
                    // which mutated key it is about: by name, or for
                    // cross-field checks, some configured field
                    let named = names.iter().any(|(t, k)| {
                        msg.contains(k.as_str()) || msg.contains(t.as_str())
                    });
                    let field = matches!(e, ConfigError::Invalid { .. });
                    prop_assert!(
                        named || field,
                        "rejection names none of the mutated keys {names:?}: {msg}\n--- config ---\n{text}"
                    );
                }
            }
            Ok(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "config_props mutated_config: {n} cases, {} accepted, {} rejected",
        ok.load(Ordering::Relaxed),
        rejected.load(Ordering::Relaxed)
    );
}
