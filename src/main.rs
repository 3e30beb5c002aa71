//! The `cgnat` command: the daemon (`cgnat::daemon`) and its tools
//! (`cgnat::commands`).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cgnat::commands::{self, CmdError, SessionFilter};

const DEFAULT_CONFIG: &str = "/etc/cgnat.toml";

/// Carrier-grade NAT44 (RFC 6888) with an XDP data path.
///
/// Without a subcommand, runs the daemon in the foreground: loads the XDP
/// program, attaches it to the configured interfaces, expires sessions,
/// and detaches on SIGINT or SIGTERM.
#[derive(Parser, Debug)]
#[command(name = "cgnat", version, about, long_about)]
struct Cli {
    /// Configuration file (TOML; see configs/cgnat.toml).
    #[arg(short, long, global = true, default_value = DEFAULT_CONFIG)]
    config: PathBuf,

    /// Enter this network namespace (/run/netns/NAME) first.
    #[arg(long, global = true, value_name = "NAME")]
    netns: Option<String>,

    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the daemon in the foreground (the default).
    Run,
    /// Validate the configuration and exit: 0 if valid, 1 with the reason.
    Check,
    /// Print the data path's counters from the running daemon's pinned maps.
    Stats {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List the sessions of the running daemon with state and remaining time.
    Sessions {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Only this subscriber's sessions.
        #[arg(long, value_name = "IP")]
        subscriber: Option<Ipv4Addr>,
        /// Only sessions of this external endpoint (IP or IP:PORT).
        #[arg(long, value_name = "IP[:PORT]")]
        external: Option<String>,
        /// Only this protocol (tcp, udp, icmp).
        #[arg(long)]
        proto: Option<String>,
    },
    /// Whether the data path is in place, where, and how full its tables are.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Per external address: subscribers and bindings in use.
    Pool {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Which external address and ports a subscriber uses: computed from the
    /// config in deterministic mode, else read from the running daemon.
    Forward {
        /// The subscriber's internal address.
        addr: Ipv4Addr,
    },
    /// Which subscriber an external ip:port belongs to (abuse and legal
    /// requests): computed from the config in deterministic mode, else read
    /// from the running daemon (port blocks and bindings).
    Reverse {
        /// External address and port, e.g. 203.0.113.7:40123.
        endpoint: std::net::SocketAddrV4,
    },
    /// Stop forwarding: remove the XDP links and tables a daemon left pinned
    /// (run it after stopping the daemon; all sessions are dropped).
    Stop {
        /// Required: detach the programs and delete all state.
        #[arg(long)]
        detach: bool,
    },
    /// A live view of the running daemon: traffic and drops with rates, the
    /// pool, the busiest subscribers (keys 1-4/Tab switch views, s orders,
    /// q quits).
    Top {
        /// Refresh interval.
        #[arg(long, default_value = "1s")]
        interval: String,
        /// Print every view as text instead of the interactive screen.
        #[arg(long)]
        batch: bool,
        /// With --batch: how many refreshes to print.
        #[arg(long, default_value_t = 1)]
        iterations: u32,
    },
    /// List subscribers of the running daemon: external address, ports per
    /// protocol, sessions.
    Subscribers {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Cluster status of this node: its slices, peers and sync counters;
    /// `cgnat cluster failback` takes this node's slice back from the peer
    /// serving it (with `cluster.failback = "manual"`).
    Cluster {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// "failback": request the failback.
        action: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cgnat: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), CmdError> {
    if let Some(ns) = &cli.netns {
        commands::enter_netns(ns)?;
    }
    let path = cli.config.as_path();
    match cli.cmd.unwrap_or(Cmd::Run) {
        Cmd::Run => Ok(cgnat::daemon::run(path)?),
        Cmd::Check => commands::check(path),
        Cmd::Stats { json } => commands::stats(path, json),
        Cmd::Sessions {
            json,
            subscriber,
            external,
            proto,
        } => {
            let filter = SessionFilter {
                subscriber,
                external,
                proto,
            };
            commands::sessions(path, &filter, json)
        }
        Cmd::Status { json } => commands::status(path, json),
        Cmd::Pool { json } => commands::pool(path, json),
        Cmd::Stop { detach } => commands::stop(path, detach),
        Cmd::Forward { addr } => commands::forward(path, addr),
        Cmd::Reverse { endpoint } => commands::reverse(path, endpoint),
        Cmd::Subscribers { json } => commands::subscribers(path, json),
        Cmd::Cluster { json, action } => commands::cluster(path, json, action.as_deref()),
        Cmd::Top {
            interval,
            batch,
            iterations,
        } => commands::top(path, &interval, batch, iterations),
    }
}
