//! Tables: rows run in order by one runner on one loaded program.
//!
//! A row is a packet case (input frame, side, expected verdict, counter and
//! output frame: [`Case`]), a check of the maps, a value learned from the
//! maps or from an output frame for later rows (an external endpoint or an
//! IP ID the program chose), or a step that changes the world between rows
//! (a neighbour, a route, the sweeper's clock). A row that depends on what
//! an earlier row learned is a closure of [`Learned`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::frame::Pkt;
use super::harness::{Case, Harness};
use super::netns::NetNs;

/// An address and port (or ICMP identifier).
pub type Ep = (Ipv4Addr, u16);

/// What earlier rows learned, by name.
#[derive(Default)]
pub struct Learned {
    eps: BTreeMap<String, Ep>,
    nums: BTreeMap<String, u64>,
    /// The output frame of the last packet row, if it passed.
    pub out: Option<Vec<u8>>,
}

impl Learned {
    /// An endpoint a `learn` row stored; rows after a failed `learn` do
    /// not run, so a missing name is a mistake in the table's order.
    pub fn ep(&self, name: &str) -> Ep {
        *self
            .eps
            .get(name)
            .unwrap_or_else(|| panic!("table order: no endpoint learned as {name:?}"))
    }

    pub fn has_ep(&self, name: &str) -> bool {
        self.eps.contains_key(name)
    }

    pub fn set_ep(&mut self, name: impl Into<String>, ep: Ep) {
        self.eps.insert(name.into(), ep);
    }

    /// A number an earlier row stored, if that row got to store it.
    pub fn num(&self, name: &str) -> Option<u64> {
        self.nums.get(name).copied()
    }

    pub fn set_num(&mut self, name: impl Into<String>, v: u64) {
        self.nums.insert(name.into(), v);
    }
}

type CaseFn<'a> = Box<dyn FnOnce(&Learned) -> Case + 'a>;
type CheckFn<'a> = Box<dyn FnOnce(&Harness, &Learned) -> Result<(), String> + 'a>;
type LearnFn<'a> = Box<dyn FnOnce(&Harness, &mut Learned) -> Result<(), String> + 'a>;
type StepFn<'a> = Box<dyn FnOnce(&mut Harness, &mut Learned) + 'a>;
type ThenFn<'a> = Box<dyn FnOnce(&Learned) -> Vec<Row<'a>> + 'a>;

/// One row of a table.
pub enum Row<'a> {
    /// A packet case, built from what earlier rows learned.
    Case(CaseFn<'a>),
    /// A check of the maps or of what was learned; counted as a case.
    Check(String, CheckFn<'a>),
    /// Learns what later rows need; if it cannot, the rest of the table
    /// is skipped and the test fails.
    Learn(String, LearnFn<'a>),
    /// Changes the world between rows; not a case.
    Step(StepFn<'a>),
    /// Rows run in order where this one stands.
    Rows(Vec<Row<'a>>),
    /// Rows that depend on what earlier rows learned (how many subscribers
    /// share an address), run where this one stands.
    Then(ThenFn<'a>),
}

impl<'a> From<Vec<Row<'a>>> for Row<'a> {
    fn from(rows: Vec<Row<'a>>) -> Self {
        Row::Rows(rows)
    }
}

impl From<Case> for Row<'_> {
    fn from(c: Case) -> Self {
        Row::Case(Box::new(move |_| c))
    }
}

/// A packet row built from what earlier rows learned.
pub fn with<'a>(f: impl FnOnce(&Learned) -> Case + 'a) -> Row<'a> {
    Row::Case(Box::new(f))
}

/// A check row.
pub fn check<'a>(
    name: impl Into<String>,
    f: impl FnOnce(&Harness, &Learned) -> Result<(), String> + 'a,
) -> Row<'a> {
    Row::Check(name.into(), Box::new(f))
}

/// A row that learns something later rows need.
pub fn learn<'a>(
    what: impl Into<String>,
    f: impl FnOnce(&Harness, &mut Learned) -> Result<(), String> + 'a,
) -> Row<'a> {
    Row::Learn(what.into(), Box::new(f))
}

/// Learns the external endpoint the program bound `p`'s source to, as
/// `name` (checked for consistency by `Harness::external_of`).
pub fn learn_ext<'a>(name: impl Into<String>, p: &Pkt) -> Row<'a> {
    let (name, p) = (name.into(), p.clone());
    learn(
        format!("binding of {}:{}/{}", p.src, p.sport(), p.proto()),
        move |h, l| {
            let e = h.external_of(&p)?;
            l.set_ep(name, e);
            Ok(())
        },
    )
}

/// Keeps `f(output)` of the row before as `name`, if that row passed (rows
/// that compare with it then do so; without it, that row has failed).
pub fn keep_out<'a>(name: &'static str, f: impl FnOnce(&[u8]) -> u64 + 'a) -> Row<'a> {
    step(move |_, l| {
        if let Some(v) = l.out.as_deref().map(f) {
            l.set_num(name, v);
        }
    })
}

/// Rows made from what earlier rows learned.
pub fn then<'a>(f: impl FnOnce(&Learned) -> Vec<Row<'a>> + 'a) -> Row<'a> {
    Row::Then(Box::new(f))
}

/// A step row.
pub fn step<'a>(f: impl FnOnce(&mut Harness, &mut Learned) + 'a) -> Row<'a> {
    Row::Step(Box::new(f))
}

/// Runs the rows in order; a failed row is recorded and the next one
/// runs, except after a failed `learn` row.
pub fn run_table(h: &mut Harness, rows: Vec<Row<'_>>) {
    run_rows(h, &mut Learned::default(), rows);
}

/// False once a `learn` row has failed.
fn run_rows(h: &mut Harness, l: &mut Learned, rows: Vec<Row<'_>>) -> bool {
    for row in rows {
        match row {
            Row::Case(f) => {
                let c = f(l);
                l.out = h.run(c);
            }
            Row::Check(name, f) => {
                let r = f(h, l);
                h.check(&name, r);
            }
            Row::Learn(what, f) => {
                if let Err(e) = f(h, l) {
                    h.failures.push(format!("{what}: {e} (later rows skipped)"));
                    return false;
                }
            }
            Row::Step(f) => f(h, l),
            Row::Rows(rows) => {
                if !run_rows(h, l, rows) {
                    return false;
                }
            }
            Row::Then(f) => {
                let rows = f(l);
                if !run_rows(h, l, rows) {
                    return false;
                }
            }
        }
    }
    true
}

/// A test of one table: a fresh namespace, the program loaded with the
/// configuration `config`, the rows `rows(ns)`, the summary.
pub fn table_test(
    test: &'static str,
    ns_tag: &str,
    config: &str,
    rows: fn(&NetNs) -> Vec<Row<'_>>,
) {
    if !super::netns::privileged(test) {
        return;
    }
    let ns = NetNs::create(ns_tag);
    ns.enter(|| {
        let mut h = Harness::load_text(test, config);
        run_table(&mut h, rows(&ns));
        h.finish();
    });
}
