//! Drift test for docs/conformance.md (no privilege, std only).
//!
//! Every backticked test reference in the page, `tests/FILE.rs::NAME` or
//! `src/FILE.rs::NAME`, must name a file that exists and holds a
//! `#[test]` function `fn NAME(`. Every requirement of the RFC checklist
//! must keep its row: the rows' IDs are counted per RFC against the
//! checklist's numbers, so a deleted row fails, and each row must cite a
//! test or say "not tested: ..." / "not applicable: ...".
//!
//! The test suite defines its tests as plain `#[test] fn name()` (no
//! macro-generated tests), so that is the one form accepted.

use std::collections::BTreeMap;
use std::fs;

const DOC: &str = "docs/conformance.md";

/// Requirement IDs of the RFC checklist, per ID prefix: RFC 4787 REQ-1..14
/// with 3a; RFC 5382 REQ-1..10; RFC 5508 REQ-1..11; RFC 7857 sections 2,
/// 2.1, 2.2, 3-7, 7.1, 8-12; RFC 6888 REQ-1..15 with sections 4 and 7;
/// RFC 6598. 68 in all.
const CHECKLIST: [(&str, usize); 6] = [
    ("4787-", 15),
    ("5382-", 10),
    ("5508-", 11),
    ("7857-", 14),
    ("6888-", 17),
    ("6598", 1),
];
/// Rows of the RFC 1812 (router) section.
const ROUTER: (&str, usize) = ("1812-", 7);
/// Fewer distinct references than this means the page's format changed
/// under the scanner, not that the tests went away.
const MIN_REFS: usize = 40;

/// A backticked reference found in the page.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Ref {
    file: String,
    name: String,
}

/// The backticked spans of one line (an unclosed one is ignored; code
/// spans in this page never cross lines).
fn spans(line: &str) -> Vec<&str> {
    let parts: Vec<&str> = line.split('`').collect();
    (1..parts.len().saturating_sub(1))
        .step_by(2)
        .map(|i| parts[i])
        .collect()
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A span that looks like a test reference: Some(Ok) if well formed,
/// Some(Err) if it starts like one but is not, None otherwise.
fn parse_ref(span: &str) -> Option<Result<Ref, String>> {
    let span = span.trim();
    if !(span.starts_with("kit/tests/") || span.starts_with("src/")) || !span.contains("::") {
        return None;
    }
    let (file, name) = span.split_once("::").expect("contains ::");
    let path_ok = file.ends_with(".rs")
        && !file.contains("..")
        && file
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/' | '.'));
    if !path_ok || !is_ident(name) {
        return Some(Err(format!(
            "`{span}` is not a reference of the form `kit/tests/FILE.rs::NAME`"
        )));
    }
    Some(Ok(Ref {
        file: file.to_owned(),
        name: name.to_owned(),
    }))
}

/// Whether `text` defines `#[test] fn name(`: the `fn` line, with the
/// attributes and comments just above it, must include `#[test]`.
fn has_test_fn(text: &str, name: &str) -> bool {
    let lines: Vec<&str> = text.lines().collect();
    let needle = format!("fn {name}(");
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        let Some(at) = t.find(&needle) else { continue };
        // `fn name(` itself, not `fn other_name(` or a call
        let before = &t[..at];
        let prefix_ok = before
            .split_whitespace()
            .all(|w| matches!(w, "pub" | "pub(crate)" | "async" | "unsafe") || w.starts_with("#["));
        if !prefix_ok {
            continue;
        }
        if before.contains("#[test]") {
            return true;
        }
        for prev in lines[..i].iter().rev() {
            let p = prev.trim();
            if p.starts_with("#[test]") {
                return true;
            }
            if !(p.starts_with("#[") || p.starts_with("//")) {
                break;
            }
        }
    }
    false
}

/// The cells of a table row, without the outer pipes.
fn cells(line: &str) -> Option<Vec<&str>> {
    let t = line.trim();
    if !t.starts_with('|') {
        return None;
    }
    let inner = t.strip_prefix('|')?;
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    Some(inner.split('|').map(str::trim).collect())
}

#[test]
fn conformance_doc_cites_existing_tests_for_every_requirement() {
    let root = cgnat_kit::repo_root();
    let root = root.as_path();
    let doc = fs::read_to_string(root.join(DOC))
        .unwrap_or_else(|e| panic!("{DOC}: {e} (the conformance page is gone)"));

    let mut failures: Vec<String> = Vec::new();
    let mut refs: BTreeMap<Ref, Vec<usize>> = BTreeMap::new();
    for (n, line) in doc.lines().enumerate() {
        let n = n + 1;
        for span in spans(line) {
            match parse_ref(span) {
                Some(Ok(r)) => refs.entry(r).or_default().push(n),
                Some(Err(e)) => failures.push(format!("{DOC}:{n}: {e}")),
                None => {}
            }
        }
    }

    // Every reference: the file exists and holds the #[test] fn.
    let mut texts: BTreeMap<String, Option<String>> = BTreeMap::new();
    for (r, lines) in &refs {
        let text = texts
            .entry(r.file.clone())
            .or_insert_with(|| fs::read_to_string(root.join(&r.file)).ok());
        let at = lines
            .iter()
            .map(|l| format!("{DOC}:{l}"))
            .collect::<Vec<_>>()
            .join(", ");
        match text {
            None => failures.push(format!(
                "{at}: `{}::{}`: the file {} does not exist",
                r.file, r.name, r.file
            )),
            Some(t) if !has_test_fn(t, &r.name) => failures.push(format!(
                "{at}: `{}::{}`: {} has no #[test] fn {}(",
                r.file, r.name, r.file, r.name
            )),
            Some(_) => {}
        }
    }

    // Every requirement row: its ID, counted per RFC, and a citation or a
    // stated reason in its last cell.
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    for (n, line) in doc.lines().enumerate() {
        let n = n + 1;
        let Some(c) = cells(line) else { continue };
        let id = c[0].trim_matches(|ch| ch == '`' || ch == '*').trim();
        let known = CHECKLIST.iter().chain([&ROUTER]).any(|(p, _)| {
            if p.ends_with('-') {
                id.starts_with(p)
            } else {
                id == *p
            }
        });
        if !known {
            continue;
        }
        if c.len() != 5 {
            failures.push(format!(
                "{DOC}:{n}: row {id} has {} cells, expected 5 (ID, level, requirement, how, proved by)",
                c.len()
            ));
            continue;
        }
        if let Some(first) = ids.insert(id.to_owned(), n) {
            failures.push(format!(
                "{DOC}:{n}: requirement {id} appears twice (first on line {first})"
            ));
        }
        let proved_by = c[4];
        let cites = spans(proved_by)
            .into_iter()
            .any(|s| matches!(parse_ref(s), Some(Ok(_))));
        let reason = proved_by.contains("not tested:") || proved_by.contains("not applicable:");
        if !cites && !reason {
            failures.push(format!(
                "{DOC}:{n}: requirement {id} cites no test and gives no \
                 \"not tested: ...\" or \"not applicable: ...\" reason"
            ));
        }
    }
    let mut total = 0;
    for (prefix, want) in CHECKLIST.iter().chain([&ROUTER]) {
        let got: Vec<&String> = ids
            .keys()
            .filter(|id| {
                if prefix.ends_with('-') {
                    id.starts_with(prefix)
                } else {
                    id.as_str() == *prefix
                }
            })
            .collect();
        if got.len() < *want {
            failures.push(format!(
                "{DOC}: {} rows with IDs {prefix}*, the checklist has {want} (a row was \
                 deleted?): {got:?}",
                got.len()
            ));
        }
        total += got.len();
    }

    let distinct = refs.len();
    if distinct < MIN_REFS {
        failures.push(format!(
            "{DOC}: only {distinct} distinct test references found (at least {MIN_REFS} \
             expected): did the citation format change?"
        ));
    }
    println!(
        "{DOC}: {} requirement rows, {distinct} distinct test references in {} files",
        total,
        texts.len()
    );
    assert!(
        failures.is_empty(),
        "{DOC} is out of date ({} problems):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn scanner_recognises_references_and_test_functions() {
    assert_eq!(
        spans("a `kit/tests/e2e.rs::x`, `b` and `open"),
        vec!["kit/tests/e2e.rs::x", "b"]
    );
    assert_eq!(
        parse_ref("kit/tests/e2e.rs::hairpin_between_subscribers"),
        Some(Ok(Ref {
            file: "kit/tests/e2e.rs".into(),
            name: "hairpin_between_subscribers".into()
        }))
    );
    assert_eq!(parse_ref("cgnat sessions"), None);
    assert_eq!(parse_ref("kit/tests/e2e.rs"), None);
    assert!(matches!(
        parse_ref("kit/tests/e2e.rs::not a name"),
        Some(Err(_))
    ));
    assert!(matches!(parse_ref("kit/tests/e2e::x"), Some(Err(_))));

    let text = "#[test]\nfn plain() {}\n\n    #[test]\n    #[should_panic]\n    // why\n    fn in_mod() {}\n\nfn helper() {}\n#[test]\nfn plain_two() {}\n";
    assert!(has_test_fn(text, "plain"));
    assert!(has_test_fn(text, "in_mod"));
    assert!(!has_test_fn(text, "helper"), "a helper is no test");
    assert!(
        !has_test_fn(text, "plain_t"),
        "a prefix of a name is no match"
    );
    assert!(!has_test_fn(text, "missing"));
    assert!(!has_test_fn("// fn plain() is gone\n", "plain"));
}
