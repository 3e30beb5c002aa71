//! Every performance figure with a goal (and the no-regression bars) against
//! its goal: the last block of the printed table and `goals` in
//! summary.json, each with a `met` flag. A figure whose section did not
//! run is left out (not reported as met or missed).

use super::*;

/// The goals, each used by the Goals block and by the sections' own
/// verdicts in the table.
pub const GOAL_PATH_RATIO: f64 = 1.3;
pub const GOAL_SCALE_RATIO: f64 = 4.0;
pub const GOAL_SCALE_TABLE_SIZE_RATIO: f64 = 1.15;
pub const GOAL_BYTES_PER_SESSION: f64 = 200.0;
/// CPU seconds of a sweep over the large table that expires nothing.
pub const GOAL_SWEEP_NOOP_CPU_SECS: f64 = 1.0;
/// Seconds until every session of the large table is gone: the sweep that
/// marks them and the session pass of the sweep that deletes them.
pub const GOAL_EXPIRE_ALL_SECS: f64 = 5.0;
pub const GOAL_NEW_FLOWS_PER_SEC: f64 = 1_000_000.0;
pub const GOAL_E2E_VS_FLOOR: f64 = 0.9;
pub const GOAL_E2E_VS_NFT: f64 = 4.5;
pub const GOAL_E2E_VS_NFT_RATE: f64 = 6.0;
pub const GOAL_TCP_CONN_VS_NFT: f64 = 1.0;

/// One figure against its goal.
#[derive(Debug, Clone)]
pub struct Goal {
    pub name: &'static str,
    pub what: &'static str,
    pub measured: f64,
    pub goal: f64,
    /// The goal is an upper bound (else a lower bound).
    pub at_most: bool,
    /// What bounds the measurement here, when it is not what the goal
    /// is about (said next to the verdict, which stands as measured).
    pub bounded_by: Option<String>,
}

impl Goal {
    pub fn met(&self) -> bool {
        if self.at_most {
            self.measured <= self.goal
        } else {
            self.measured >= self.goal
        }
    }
}

fn at_most(name: &'static str, what: &'static str, measured: f64, goal: f64) -> Goal {
    Goal {
        name,
        what,
        measured,
        goal,
        at_most: true,
        bounded_by: None,
    }
}

fn at_least(name: &'static str, what: &'static str, measured: f64, goal: f64) -> Goal {
    Goal {
        name,
        what,
        measured,
        goal,
        at_most: false,
        bounded_by: None,
    }
}

impl Summary {
    /// The goals of the sections that ran.
    pub fn goals(&self) -> Vec<Goal> {
        let mut g = Vec::new();
        if let Some(s) = &self.scale {
            g.push(at_most(
                "scale_uniform_ratio",
                "established udp_out, large table with flows cycled uniformly / small table",
                s.ratio(),
                GOAL_SCALE_RATIO,
            ));
            g.push(at_most(
                "scale_table_size_ratio",
                "established udp_out, large table with only the small set active / small table",
                s.large_hot_ns.median() / s.small_ns.median(),
                GOAL_SCALE_TABLE_SIZE_RATIO,
            ));
            g.push(at_most(
                "bytes_per_session",
                "kernel memory per session (memlock of the session maps)",
                s.bytes_per_session(),
                GOAL_BYTES_PER_SESSION,
            ));
            if s.sweep_noop_cpu_secs > 0.0 {
                g.push(at_most(
                    "sweep_noop_cpu_secs",
                    "CPU seconds of a sweep over the large table that expires nothing",
                    s.sweep_noop_cpu_secs,
                    GOAL_SWEEP_NOOP_CPU_SECS,
                ));
            }
            if s.expired > 0 {
                g.push(at_most(
                    "expire_all_secs",
                    "seconds until every session of the large table is gone (its bindings follow)",
                    s.expire_sessions_secs(),
                    GOAL_EXPIRE_ALL_SECS,
                ));
            }
        }
        if let Some(n) = &self.new_flows {
            g.push(at_least(
                "new_flows_per_sec",
                "new sessions per second per core",
                n.flows_per_sec(),
                GOAL_NEW_FLOWS_PER_SEC,
            ));
        }
        if let Some(h) = self.paths.iter().find(|p| p.name == "hairpin") {
            g.push(at_most(
                "hairpin_ratio",
                "hairpin per packet / floor",
                h.ratio(),
                GOAL_PATH_RATIO,
            ));
        }
        let others = self.paths.iter().filter(|p| p.name != "hairpin");
        if let Some(worst) = others.map(|p| p.ratio()).reduce(f64::max) {
            g.push(at_most(
                "path_ratio_max",
                "worst per-path ratio to the floor, hairpin aside (no regression)",
                worst,
                GOAL_PATH_RATIO,
            ));
        }
        if let Some(e) = &self.e2e {
            let mut vs_floor = at_least(
                "e2e_vs_floor",
                "end to end, cgnat / floor by router CPU",
                e.vs_floor(),
                GOAL_E2E_VS_FLOOR,
            );
            let mut vs_nft = at_least(
                "e2e_vs_nft_cpu",
                "end to end, cgnat / nftables by router CPU (no regression)",
                e.vs_nft(),
                GOAL_E2E_VS_NFT,
            );
            if e.cgnat.unsaturated() {
                let why = format!(
                    "the loop's other stage: cgnat's router was busy {:.0}% at {:.2} Mpps, so its \
                     CPU per packet includes the wake-ups a saturated router saves",
                    e.cgnat.router_busy.median() * 100.0,
                    e.cgnat.mpps.median()
                );
                vs_floor.bounded_by = Some(why.clone());
                vs_nft.bounded_by = Some(why);
            } else {
                let line = e.line_vs_floor();
                if line < GOAL_E2E_VS_FLOOR {
                    vs_floor.bounded_by = Some(format!(
                        "the table's size: one lookup per packet in a table as large as cgnat's \
                         default tables costs floor+line/floor {line:.2} here; with tables fitted \
                         to the flows cgnat/floor is {:.2}",
                        e.fit_vs_floor()
                    ));
                }
            }
            let mut vs_nft_rate = at_least(
                "e2e_vs_nft_rate",
                "end to end, cgnat / nftables by received rate (no regression)",
                e.cgnat.mpps.median() / e.nft.mpps.median(),
                GOAL_E2E_VS_NFT_RATE,
            );
            let fit_rate = e.cgnat_fit.mpps.median() / e.nft.mpps.median();
            // with time to spare, cgnat forwarded all the loop gave it
            if e.cgnat.unsaturated() {
                vs_nft_rate.bounded_by = Some(format!(
                    "the loop's other stage: cgnat's router was busy {:.0}% at {:.2} Mpps",
                    e.cgnat.router_busy.median() * 100.0,
                    e.cgnat.mpps.median()
                ));
            } else if fit_rate >= GOAL_E2E_VS_NFT_RATE {
                vs_nft_rate.bounded_by = Some(format!(
                    "the table's size: with tables fitted to the flows cgnat/nftables is \
                     {fit_rate:.2} (see e2e_vs_floor)"
                ));
            }
            g.extend([vs_floor, vs_nft, vs_nft_rate]);
        }
        if let Some(t) = &self.tcp {
            if t.conn_nft.median() > 0.0 {
                g.push(at_least(
                    "tcp_connections_vs_nft",
                    "new TCP connections per second through the router, cgnat / nftables",
                    t.conn_cgnat.median() / t.conn_nft.median(),
                    GOAL_TCP_CONN_VS_NFT,
                ));
            }
        }
        g
    }

    /// The goals block of the printed table.
    pub(super) fn goals_table(&self, o: &mut String) {
        let goals = self.goals();
        if goals.is_empty() {
            return;
        }
        let _ = writeln!(o, "\nGoals:");
        for g in &goals {
            let _ = writeln!(
                o,
                "  {:<26} {:>14.3} {} {:<12} {:<6}  {}",
                g.name,
                g.measured,
                if g.at_most { "<=" } else { ">=" },
                g.goal,
                report::verdict(g.met()),
                g.what
            );
            if let Some(b) = &g.bounded_by {
                let _ = writeln!(o, "  {:<26} bounded by {b}", "");
            }
        }
    }

    /// The goals as JSON: one object per figure.
    pub(super) fn goals_json(&self) -> serde_json::Value {
        use report::J;
        use serde_json::Value;
        Value::Array(
            self.goals()
                .iter()
                .map(|g| {
                    J::o(vec![
                        ("name", J::s(g.name)),
                        ("what", J::s(g.what)),
                        ("measured", J::n(g.measured)),
                        ("goal", J::n(g.goal)),
                        (
                            "bound",
                            J::s(if g.at_most { "at_most" } else { "at_least" }),
                        ),
                        ("met", Value::Bool(g.met())),
                        (
                            "bounded_by",
                            g.bounded_by.as_deref().map(J::s).unwrap_or(Value::Null),
                        ),
                    ])
                })
                .collect(),
        )
    }
}
