//! `cgnat top`: a live view of the running daemon's tables, refreshed every
//! interval. Four views (keys 1-4 or Tab): traffic by verdict, drops by
//! reason, the pool by external address, the subscribers with the most
//! sessions; `s` changes the order, `q` (or Esc, Ctrl-C) quits and restores
//! the terminal. `--batch` prints the same views as text, `--iterations`
//! times, for scripts and logs.
//!
//! Rates are differences of the data path's per-CPU counters between two
//! samples. Sessions and bindings are counted by walking the session
//! table through memory: a sample takes about a quarter of a second at
//! 4M sessions (docs/performance.md).

use std::io::Write;

use std::time::{Duration, Instant};

use ratatui::backend::{Backend, TestBackend};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table};
use ratatui::{Frame, Terminal};

use crate::bpf::abi::{proto_idx, PROTOCOLS};
use crate::bpf::Tables;
use crate::config::Config;
use crate::lookup::{self, LookupError, PoolRow, SubscriberView};
use crate::stats::{self, Counter};

const PROTO_NAMES: [&str; PROTOCOLS] = ["tcp", "udp", "icmp"];

/// Everything one refresh reads from the tables.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    pub counters: Vec<Counter>,
    /// Sessions by protocol index (tcp, udp, icmp).
    pub sessions: [u64; PROTOCOLS],
    pub pool: Vec<PoolRow>,
    pub subscribers: Vec<SubscriberView>,
    pub max_sessions: u32,
}

impl Sample {
    /// Reads the running daemon's tables.
    pub fn read(cfg: &Config, t: &Tables) -> Result<Sample, LookupError> {
        let mut sessions = [0u64; PROTOCOLS];
        t.sessions.scan(|k, _| sessions[proto_idx(k.proto)] += 1)?;
        Ok(Sample {
            at: Instant::now(),
            counters: stats::read(&t.stats)?,
            sessions,
            pool: lookup::pool(cfg, t)?,
            subscribers: lookup::subscribers(t)?,
            max_sessions: cfg.max_sessions,
        })
    }

    fn total_sessions(&self) -> u64 {
        self.sessions.iter().sum()
    }
}

/// The views, in key order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Traffic,
    Drops,
    Pool,
    Subscribers,
}

impl View {
    const ALL: [View; 4] = [View::Traffic, View::Drops, View::Pool, View::Subscribers];

    fn title(self) -> &'static str {
        match self {
            View::Traffic => "1 traffic",
            View::Drops => "2 drops",
            View::Pool => "3 pool",
            View::Subscribers => "4 subscribers",
        }
    }
}

/// The orders `s` cycles through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    /// By rate (traffic, drops) or by use (pool, subscribers), highest first.
    Busiest,
    /// By name or address.
    Name,
}

/// What the screen shows; changed by keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct App {
    pub view: View,
    pub sort: Sort,
    pub quit: bool,
}

impl Default for App {
    fn default() -> Self {
        App {
            view: View::Traffic,
            sort: Sort::Busiest,
            quit: false,
        }
    }
}

impl App {
    /// Applies one key.
    pub fn on_key(&mut self, code: KeyCode, mods: KeyModifiers) {
        match code {
            KeyCode::Char('q') | KeyCode::Esc => self.quit = true,
            KeyCode::Char('c') if mods.contains(KeyModifiers::CONTROL) => self.quit = true,
            KeyCode::Char(c @ '1'..='4') => {
                self.view = View::ALL[(c as u8 - b'1') as usize];
            }
            KeyCode::Tab => {
                let i = View::ALL.iter().position(|v| *v == self.view).unwrap_or(0);
                self.view = View::ALL[(i + 1) % View::ALL.len()];
            }
            KeyCode::Char('s') => {
                self.sort = match self.sort {
                    Sort::Busiest => Sort::Name,
                    Sort::Name => Sort::Busiest,
                }
            }
            _ => {}
        }
    }
}

/// Per-second rate of a counter between two samples.
fn rate(prev: &Sample, now: &Sample, f: impl Fn(&Counter) -> u64, name: &str) -> f64 {
    let secs = now.at.saturating_duration_since(prev.at).as_secs_f64();
    let get = |s: &Sample| s.counters.iter().find(|c| c.name == name).map(&f);
    match (get(prev), get(now)) {
        (Some(a), Some(b)) if secs > 0.0 => b.saturating_sub(a) as f64 / secs,
        _ => 0.0,
    }
}

/// 1234567 -> "1.23M".
fn human(v: f64) -> String {
    match v {
        v if v >= 1e9 => format!("{:.2}G", v / 1e9),
        v if v >= 1e6 => format!("{:.2}M", v / 1e6),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

/// Draws the whole screen for `app` from two samples.
pub fn draw(f: &mut Frame<'_>, app: &App, prev: &Sample, now: &Sample) {
    let [head, body] =
        Layout::vertical([Constraint::Length(3), Constraint::Min(3)]).areas(f.area());
    let tabs: Vec<String> = View::ALL
        .iter()
        .map(|v| {
            if *v == app.view {
                format!("[{}]", v.title())
            } else {
                format!(" {} ", v.title())
            }
        })
        .collect();
    let sessions = now.total_sessions();
    let net = now.total_sessions() as f64 - prev.total_sessions() as f64;
    let secs = now
        .at
        .saturating_duration_since(prev.at)
        .as_secs_f64()
        .max(1e-9);
    let summary = format!(
        "sessions {} of {} ({}: tcp {} udp {} icmp {}), net {:+.0}/s; subscribers {}",
        sessions,
        now.max_sessions,
        if now.max_sessions > 0 {
            format!(
                "{:.1}%",
                100.0 * sessions as f64 / f64::from(now.max_sessions)
            )
        } else {
            "-".into()
        },
        now.sessions[0],
        now.sessions[1],
        now.sessions[2],
        net / secs,
        now.subscribers.len()
    );
    let header = Paragraph::new(vec![
        Line::from(format!(
            "cgnat top   {}   s: order ({})   q: quit",
            tabs.join(" "),
            match app.sort {
                Sort::Busiest => "busiest",
                Sort::Name => "name",
            }
        )),
        Line::from(summary),
    ])
    .block(Block::default().borders(Borders::BOTTOM));
    f.render_widget(header, head);
    match app.view {
        View::Traffic => draw_counters(f, body, app, prev, now, |n| !n.starts_with("drop_")),
        View::Drops => draw_counters(f, body, app, prev, now, |n| n.starts_with("drop_")),
        View::Pool => draw_pool(f, body, app, now),
        View::Subscribers => draw_subscribers(f, body, app, now),
    }
}

fn bold() -> Style {
    Style::default().add_modifier(Modifier::BOLD)
}

fn draw_counters(
    f: &mut Frame<'_>,
    area: Rect,
    app: &App,
    prev: &Sample,
    now: &Sample,
    keep: impl Fn(&str) -> bool,
) {
    let mut rows: Vec<(&str, f64, f64, u64)> = now
        .counters
        .iter()
        .filter(|c| keep(c.name))
        .map(|c| {
            (
                c.name,
                rate(prev, now, |c| c.packets, c.name),
                rate(prev, now, |c| c.bytes, c.name) * 8.0,
                c.packets,
            )
        })
        .collect();
    match app.sort {
        Sort::Busiest => rows.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.3.cmp(&a.3))),
        Sort::Name => rows.sort_by(|a, b| a.0.cmp(b.0)),
    }
    let table = Table::new(
        rows.iter().map(|(n, pps, bps, total)| {
            Row::new(vec![
                n.to_string(),
                human(*pps),
                human(*bps),
                total.to_string(),
            ])
        }),
        [
            Constraint::Length(24),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(16),
        ],
    )
    .header(Row::new(vec!["REASON", "PKT/S", "BIT/S", "PACKETS"]).style(bold()));
    f.render_widget(table, area);
}

fn draw_pool(f: &mut Frame<'_>, area: Rect, app: &App, now: &Sample) {
    let mut rows: Vec<&PoolRow> = now.pool.iter().collect();
    let used = |r: &PoolRow| r.bindings.iter().sum::<u32>();
    match app.sort {
        Sort::Busiest => rows.sort_by(|a, b| used(b).cmp(&used(a)).then(a.address.cmp(&b.address))),
        Sort::Name => rows.sort_by_key(|r| r.address),
    }
    let table = Table::new(
        rows.iter().map(|r| {
            Row::new(vec![
                r.address.to_string(),
                r.subscribers.to_string(),
                r.bindings[0].to_string(),
                r.bindings[1].to_string(),
                r.bindings[2].to_string(),
                r.quarantined.to_string(),
            ])
        }),
        [
            Constraint::Length(16),
            Constraint::Length(12),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(12),
        ],
    )
    .header(
        Row::new(vec![
            "ADDRESS",
            "SUBSCRIBERS",
            PROTO_NAMES[0],
            PROTO_NAMES[1],
            PROTO_NAMES[2],
            "QUARANTINED",
        ])
        .style(bold()),
    );
    f.render_widget(table, area);
}

fn draw_subscribers(f: &mut Frame<'_>, area: Rect, app: &App, now: &Sample) {
    let mut rows: Vec<&SubscriberView> = now.subscribers.iter().collect();
    match app.sort {
        Sort::Busiest => rows.sort_by(|a, b| {
            b.sessions
                .cmp(&a.sessions)
                .then(a.subscriber.cmp(&b.subscriber))
        }),
        Sort::Name => rows.sort_by_key(|s| s.subscriber),
    }
    let table = Table::new(
        rows.iter().map(|s| {
            Row::new(vec![
                s.subscriber.to_string(),
                s.external.to_string(),
                s.sessions.to_string(),
                s.ports[0].to_string(),
                s.ports[1].to_string(),
                s.ports[2].to_string(),
            ])
        }),
        [
            Constraint::Length(16),
            Constraint::Length(16),
            Constraint::Length(10),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(8),
        ],
    )
    .header(
        Row::new(vec![
            "SUBSCRIBER",
            "EXTERNAL",
            "SESSIONS",
            "TCP",
            "UDP",
            "ICMP",
        ])
        .style(bold()),
    );
    f.render_widget(table, area);
}

/// The lines of one screen drawn at `width` x `height`, trailing blanks
/// trimmed (batch mode and tests).
pub fn screen_text(app: &App, prev: &Sample, now: &Sample, width: u16, height: u16) -> String {
    let mut term = match Terminal::new(TestBackend::new(width, height)) {
        Ok(t) => t,
        Err(e) => return format!("cgnat top: {e}\n"),
    };
    if let Err(e) = term.draw(|f| draw(f, app, prev, now)) {
        return format!("cgnat top: {e}\n");
    }
    let buf = term.backend().buffer();
    let mut out = String::new();
    for y in 0..buf.area.height {
        let line: String = (0..buf.area.width)
            .map(|x| buf[(x, y)].symbol().to_string())
            .collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.trim_end_matches('\n').to_owned() + "\n"
}

/// `--batch`: every view as text, `iterations` times, one interval apart.
pub fn run_batch(
    cfg: &Config,
    t: &Tables,
    interval: Duration,
    iterations: u32,
) -> Result<(), LookupError> {
    let mut prev = Sample::read(cfg, t)?;
    for i in 0..iterations.max(1) {
        std::thread::sleep(interval);
        let now = Sample::read(cfg, t)?;
        let mut out = std::io::stdout().lock();
        for view in View::ALL {
            let app = App {
                view,
                ..App::default()
            };
            let rows = match view {
                View::Traffic | View::Drops => now.counters.len(),
                View::Pool => now.pool.len(),
                View::Subscribers => now.subscribers.len(),
            };
            let text = screen_text(&app, &prev, &now, 120, (rows + 8).min(500) as u16);
            if writeln!(out, "{text}").is_err() {
                return Ok(()); // a closed pipe ends the output quietly
            }
        }
        if i + 1 < iterations && writeln!(out, "----").is_err() {
            return Ok(());
        }
        prev = now;
    }
    Ok(())
}

/// Why the interactive view stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum TopError {
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error("terminal: {0}")]
    Terminal(#[from] std::io::Error),
}

/// The interactive view, until `q`.
pub fn run_interactive(cfg: &Config, t: &Tables, interval: Duration) -> Result<(), TopError> {
    let mut term = ratatui::init();
    let result = interactive_loop(&mut term, cfg, t, interval);
    ratatui::restore();
    result
}

fn interactive_loop<B: Backend>(
    term: &mut Terminal<B>,
    cfg: &Config,
    t: &Tables,
    interval: Duration,
) -> Result<(), TopError> {
    let mut app = App::default();
    let mut prev = Sample::read(cfg, t)?;
    let mut now = prev.clone();
    let mut next = Instant::now() + interval;
    loop {
        term.draw(|f| draw(f, &app, &prev, &now))?;
        let wait = next.saturating_duration_since(Instant::now());
        if event::poll(wait)? {
            if let Event::Key(k) = event::read()? {
                if k.kind == KeyEventKind::Press {
                    app.on_key(k.code, k.modifiers);
                }
            }
            if app.quit {
                return Ok(());
            }
        }
        if Instant::now() >= next {
            prev = std::mem::replace(&mut now, Sample::read(cfg, t)?);
            next = Instant::now() + interval;
        }
    }
}

/// A subscriber row for tests.
#[cfg(test)]
fn sub(a: [u8; 4], sessions: u32) -> SubscriberView {
    use std::net::Ipv4Addr;
    SubscriberView {
        subscriber: Ipv4Addr::from(a),
        external: Ipv4Addr::new(203, 0, 113, 1),
        ports: [1, sessions, 0],
        sessions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: Instant, fwd_out: u64, drops: u64, subs: Vec<SubscriberView>) -> Sample {
        Sample {
            at,
            counters: vec![
                Counter {
                    name: "fwd_out",
                    packets: fwd_out,
                    bytes: fwd_out * 100,
                },
                Counter {
                    name: "fwd_in",
                    packets: 0,
                    bytes: 0,
                },
                Counter {
                    name: "drop_filtered",
                    packets: drops,
                    bytes: drops * 60,
                },
            ],
            sessions: [2, 5, 0],
            pool: vec![PoolRow {
                address: std::net::Ipv4Addr::new(203, 0, 113, 1),
                subscribers: 2,
                bindings: [1, 4, 0],
                quarantined: 3,
            }],
            subscribers: subs,
            max_sessions: 1000,
        }
    }

    #[test]
    fn rates_are_differences_over_the_interval() {
        let t0 = Instant::now();
        let a = sample(t0, 1000, 0, vec![]);
        let b = sample(t0 + Duration::from_secs(2), 5000, 10, vec![]);
        assert_eq!(rate(&a, &b, |c| c.packets, "fwd_out"), 2000.0);
        assert_eq!(rate(&a, &b, |c| c.bytes, "fwd_out"), 200_000.0);
        assert_eq!(rate(&a, &b, |c| c.packets, "drop_filtered"), 5.0);
        assert_eq!(rate(&a, &a, |c| c.packets, "fwd_out"), 0.0);
    }

    #[test]
    fn views_show_rates_drops_pool_and_busiest_subscribers_first() {
        let t0 = Instant::now();
        let subs = vec![sub([100, 64, 0, 1], 3), sub([100, 64, 0, 2], 40)];
        let a = sample(t0, 0, 0, subs.clone());
        let b = sample(t0 + Duration::from_secs(1), 1500, 7, subs);
        let mut app = App::default();
        let text = screen_text(&app, &a, &b, 100, 12);
        assert!(text.contains("[1 traffic]"), "{text}");
        assert!(
            text.contains("sessions 7 of 1000 (0.7%: tcp 2 udp 5 icmp 0)"),
            "{text}"
        );
        let line = text
            .lines()
            .find(|l| l.starts_with("fwd_out"))
            .expect(&text);
        assert!(line.contains("1.5k") && line.contains("1.20M"), "{line}");
        assert!(!text.contains("drop_filtered"), "{text}");

        app.on_key(KeyCode::Char('2'), KeyModifiers::NONE);
        let text = screen_text(&app, &a, &b, 100, 12);
        let line = text
            .lines()
            .find(|l| l.starts_with("drop_filtered"))
            .expect(&text);
        assert!(line.contains(" 7 "), "{line}");
        assert!(!text.contains("fwd_out"), "{text}");

        app.on_key(KeyCode::Char('3'), KeyModifiers::NONE);
        let text = screen_text(&app, &a, &b, 100, 12);
        assert!(text.contains("203.0.113.1"), "{text}");

        app.on_key(KeyCode::Tab, KeyModifiers::NONE);
        assert_eq!(app.view, View::Subscribers);
        let text = screen_text(&app, &a, &b, 100, 12);
        let first = text
            .lines()
            .position(|l| l.contains("100.64.0.2"))
            .expect(&text);
        let second = text
            .lines()
            .position(|l| l.contains("100.64.0.1"))
            .expect(&text);
        assert!(first < second, "busiest first:\n{text}");
        app.on_key(KeyCode::Char('s'), KeyModifiers::NONE);
        let text = screen_text(&app, &a, &b, 100, 12);
        let first = text
            .lines()
            .position(|l| l.contains("100.64.0.1"))
            .expect(&text);
        let second = text
            .lines()
            .position(|l| l.contains("100.64.0.2"))
            .expect(&text);
        assert!(first < second, "by address:\n{text}");
    }

    #[test]
    fn q_esc_and_ctrl_c_quit() {
        for (code, mods) in [
            (KeyCode::Char('q'), KeyModifiers::NONE),
            (KeyCode::Esc, KeyModifiers::NONE),
            (KeyCode::Char('c'), KeyModifiers::CONTROL),
        ] {
            let mut app = App::default();
            app.on_key(code, mods);
            assert!(app.quit, "{code:?} {mods:?}");
        }
        let mut app = App::default();
        app.on_key(KeyCode::Char('c'), KeyModifiers::NONE);
        assert!(!app.quit);
    }
}
