//! The `lb` command line: the agent (`lb run`) and the verbs that manage it through the admin
//! socket. Exit codes: 0 done, 1 refused or invalid, 2 usage error, 3 agent unreachable.

mod check;
pub mod docs;
mod render;
mod table;
pub mod top;
pub mod units;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value;

use crate::{
    api::{
        DEFAULT_ADMIN_SOCKET, Request,
        client::{Client, ClientError},
    },
    config::{self, XdpMode},
};

/// Exit code: the agent refused the request, or a file is invalid.
pub const EXIT_REFUSED: u8 = 1;
/// Exit code: the agent could not be reached.
pub const EXIT_UNREACHABLE: u8 = 3;

/// `lb --version`: the crate's version and the commit it was built from.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("LB_COMMIT"), ")");

/// An XDP layer-4 load balancer.
#[derive(Parser, Debug)]
#[command(name = "lb", version = VERSION, propagate_version = true, about)]
pub struct Cli {
    /// The agent's admin socket [default: /run/lb/lb.sock; for `run`: global.admin_socket].
    #[arg(long, global = true, env = "LB_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Print JSON instead of tables (read commands); for `run`, log in JSON.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// The command-line definition, from which the manual pages and completions are generated.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// XDP attach mode on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ModeArg {
    /// Driver mode, generic if the driver lacks XDP.
    Auto,
    /// Driver (native) mode only.
    Driver,
    /// Generic mode only.
    Generic,
}

/// A transport protocol on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ProtoArg {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// The verbs.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the agent in the foreground.
    Run {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Override global.xdp_mode.
        #[arg(long, value_enum)]
        xdp_mode: Option<ModeArg>,
        /// Run this XDP object (a build of lb-ebpf with the same map layout) instead of the one
        /// built into lb.
        #[arg(long)]
        program: Option<PathBuf>,
    },
    /// VIPs and backends: state, health, weight, connections, packets/s.
    Status,
    /// Counters: verdict reasons, health checks, table swaps.
    Stats {
        /// Print again every second (with --json: one JSON object per line).
        #[arg(long)]
        watch: bool,
        /// Per-second rates over one second instead of absolute counts (every second with
        /// --watch).
        #[arg(long)]
        rate: bool,
        /// Stop after this many outputs (with --watch).
        #[arg(long, requires = "watch")]
        count: Option<u64>,
    },
    /// A live view refreshed every second: packets/s, bits/s, new flows/s and share per VIP and
    /// backend, drops/s per reason, the connection table, probe-to-swap. Keys: q quits, s
    /// cycles the sort column, v switches views. Plain blocks when stdout is not a terminal.
    Top {
        /// Plain blocks, one per second, even on a terminal.
        #[arg(long)]
        plain: bool,
        /// Stop after this many refreshes.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Manage a VIP's backends.
    #[command(subcommand)]
    Backend(BackendCommand),
    /// Add or remove VIPs.
    #[command(subcommand)]
    Vip(VipCommand),
    /// Which backend a flow goes to, and why (from the data path's own maps).
    Explain {
        /// Client address and port, e.g. 192.0.2.10:40000.
        src: SocketAddr,
        /// VIP address and port, e.g. 10.0.0.10:80.
        dst: SocketAddr,
        /// tcp or udp.
        proto: ProtoArg,
    },
    /// Configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Re-read the configuration file and apply the difference (same as SIGHUP).
    Reload,
    /// Exit 0 if this node serves every VIP named (all VIPs if none): its program runs on every
    /// interface and each VIP has a backend of its own taking new flows; 1 if not. The agent
    /// answers; with --config, the pinned data path answers while the agent does not (it
    /// restarts, is upgraded or takes more than 400 ms), for 10 s after the agent's last
    /// heartbeat. Without --config, exit 3 if the agent does not answer. Prints what answered.
    /// For a VRRP track script (keepalived `vrrp_script`): `lb check --config FILE`.
    Check {
        /// VIP names.
        vips: Vec<String>,
        /// The agent's configuration file: its admin socket (unless --socket), and its instance,
        /// interfaces and VIPs to read the pinned data path with while the agent does not answer.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Remove the data path: detach the program, unpin its maps (every tracked connection is
    /// dropped), remove the VIP addresses and stop the agent if it runs. Stopping the agent
    /// alone leaves the data path forwarding.
    Teardown {
        /// The configuration file of the instance to remove.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// On a backend host (not the load balancer): prepare it for direct server return.
    ///
    /// Adds each VIP as a /32 or /128 on lo; `direct` sets arp_ignore=1 and arp_announce=2 (all and
    /// the interface) so the host neither answers ARP for the VIPs nor announces them;
    /// `tunnel`/`gue` set rp_filter loose (2) where it is strict and print the path MTU and TCP
    /// MSS the outer headers leave. Prints every change and records it, with the value it
    /// replaced, in the state file; a second run changes nothing; --undo puts back exactly what
    /// was changed (an address that was on lo before is never removed). Decapsulation is not
    /// attached by this version.
    BackendSetup {
        /// How the load balancer sends this backend the VIPs' packets.
        #[arg(long, value_enum, required_unless_present_any = ["undo", "status"])]
        mode: Option<crate::backend_setup::plan::Mode>,
        /// A VIP this backend serves (IPv4 or IPv6); repeat for more.
        #[arg(long = "vip", value_name = "ADDRESS", required_unless_present_any = ["undo", "status"])]
        vips: Vec<std::net::IpAddr>,
        /// The interface the load balancer's packets arrive on [default: the default route's].
        #[arg(long, value_name = "IF")]
        interface: Option<String>,
        /// Print the changes without making them.
        #[arg(long, conflicts_with = "status")]
        dry_run: bool,
        /// Put back what the state file records, and remove it.
        #[arg(long, conflicts_with_all = ["mode", "vips", "interface", "status"])]
        undo: bool,
        /// Show what the state file records and whether it is still in place.
        #[arg(long, conflicts_with_all = ["mode", "vips", "interface"])]
        status: bool,
        /// The state file.
        #[arg(long, value_name = "FILE", env = "LB_BACKEND_SETUP_STATE", default_value = crate::backend_setup::state::DEFAULT_STATE_FILE)]
        state: PathBuf,
    },
}

/// `lb backend ...`
#[derive(Subcommand, Debug)]
pub enum BackendCommand {
    /// Add a backend (health-checked backends take traffic once their checks pass).
    Add {
        /// VIP name.
        vip: String,
        /// Backend address and port.
        backend: SocketAddr,
        /// Weight.
        #[arg(long, default_value_t = 1)]
        weight: u32,
    },
    /// Remove a backend; its flows move to the other backends (drain first to keep them).
    Remove {
        /// VIP name.
        vip: String,
        /// Backend address and port.
        backend: SocketAddr,
        /// Do it even if it leaves the VIP without a backend taking new flows.
        #[arg(long)]
        force: bool,
    },
    /// Stop sending new flows to a backend; its flows stay.
    Drain {
        /// VIP name.
        vip: String,
        /// Backend address and port.
        backend: SocketAddr,
        /// Do it even if it leaves the VIP without a backend taking new flows.
        #[arg(long)]
        force: bool,
    },
    /// Send new flows to a drained backend again.
    Undrain {
        /// VIP name.
        vip: String,
        /// Backend address and port.
        backend: SocketAddr,
    },
    /// Set a backend's weight (0 takes no new flows).
    Weight {
        /// VIP name.
        vip: String,
        /// Backend address and port.
        backend: SocketAddr,
        /// New weight.
        weight: u32,
        /// Do it even if it leaves the VIP without a backend taking new flows.
        #[arg(long)]
        force: bool,
    },
}

/// `lb vip ...`
#[derive(Subcommand, Debug)]
pub enum VipCommand {
    /// Add a VIP from a YAML file holding one `vips:` entry, or from options.
    Add {
        /// VIP name.
        name: Option<String>,
        /// VIP address and port.
        address: Option<SocketAddr>,
        /// tcp or udp.
        #[arg(long, default_value = "tcp")]
        protocol: String,
        /// maglev, round-robin or least-conn.
        #[arg(long, default_value = "maglev")]
        scheduler: String,
        /// Health check: http, tcp or none.
        #[arg(long, default_value = "http")]
        check: String,
        /// Backend as ADDRESS:PORT or ADDRESS:PORT*WEIGHT; repeat for more.
        #[arg(long = "backend")]
        backends: Vec<String>,
        /// YAML file with the VIP instead of the options above.
        #[arg(long, conflicts_with_all = ["name", "address"])]
        file: Option<PathBuf>,
    },
    /// Remove a VIP: its traffic goes to the kernel again.
    Remove {
        /// VIP name.
        name: String,
    },
}

/// `lb config ...`
#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate a configuration file without touching anything.
    Check {
        /// The file.
        file: PathBuf,
    },
    /// Show the running configuration.
    Show,
}

impl From<ModeArg> for XdpMode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Auto => XdpMode::Auto,
            ModeArg::Driver => XdpMode::Driver,
            ModeArg::Generic => XdpMode::Generic,
        }
    }
}

/// Builds the YAML of one VIP from `lb vip add` options.
fn vip_yaml(name: &str, address: SocketAddr, protocol: &str, scheduler: &str, check: &str, backends: &[String]) -> Result<String, String> {
    let mut y = format!(
        "name: {name}\naddress: {}\nport: {}\nprotocol: {protocol}\nscheduler: {scheduler}\nhealth_check:\n  type: {check}\nbackends:\n",
        address.ip(),
        address.port()
    );
    if backends.is_empty() {
        y = y.replace("backends:\n", "backends: []\n");
    }
    for b in backends {
        let (endpoint, weight) = b.split_once('*').unwrap_or((b, "1"));
        let endpoint: SocketAddr = endpoint.parse().map_err(|_| format!("backend {b:?}: expected ADDRESS:PORT or ADDRESS:PORT*WEIGHT"))?;
        let weight: u32 = weight.parse().map_err(|_| format!("backend {b:?}: weight must be a whole number"))?;
        y += &format!("  - address: {}\n    port: {}\n    weight: {weight}\n", endpoint.ip(), endpoint.port());
    }
    Ok(y)
}

/// Runs a client verb; `run` is handled by the caller.
pub fn execute(cli: &Cli) -> ExitCode {
    let client = Client::new(cli.socket.as_deref().unwrap_or(std::path::Path::new(DEFAULT_ADMIN_SOCKET)));
    let result: Result<Option<Value>, ClientError> = match &cli.command {
        Command::Run { .. } => unreachable!("lb run is handled by main"),
        Command::Config(ConfigCommand::Check { file }) => {
            return match config::load(file) {
                Ok(c) => {
                    println!("{}: valid ({} VIPs, {} backends)", file.display(), c.vips.len(), c.vips.iter().map(|v| v.backends.len()).sum::<usize>());
                    check_routes(&c)
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(EXIT_REFUSED)
                }
            };
        }
        Command::Config(ConfigCommand::Show) => match client.get("/v1/config") {
            Ok(value) if !cli.json => {
                print!("{}", serde_yaml::to_string(&value).unwrap_or_default());
                return ExitCode::SUCCESS;
            }
            other => other.map(Some),
        },
        Command::Status => client.get("/v1/status").map(Some),
        Command::Stats { watch: false, rate: false, .. } => client.get("/v1/stats").map(Some),
        Command::Stats { watch, rate, count } => return top::stats_watch(&client, cli.json, *watch, *rate, *count),
        Command::Top { .. } if cli.json => {
            eprintln!("error: lb top has no JSON output; for scripts use lb stats --watch --rate --json");
            return ExitCode::from(2);
        }
        Command::Top { plain, count } => return top::top(&client, *plain, *count),
        Command::Explain { src, dst, proto } => client
            .command(&Request::Explain { src: *src, dst: *dst, protocol: format!("{proto:?}").to_lowercase() })
            .map(Some),
        Command::Reload => match client.command(&Request::Reload) {
            Ok(answer) if !cli.json => {
                println!("{}", reload_summary(&answer));
                return ExitCode::SUCCESS;
            }
            other => other.map(Some),
        },
        Command::Teardown { config } => return teardown(config),
        Command::BackendSetup { mode, vips, interface, dry_run, undo, status, state } => {
            use crate::backend_setup::Action;
            let action = match (mode, undo, status) {
                (_, true, _) => Action::Undo { dry_run: *dry_run },
                (_, _, true) => Action::Status,
                (Some(mode), ..) => {
                    Action::Setup { mode: *mode, vips: vips.iter().copied().collect(), interface: interface.clone(), dry_run: *dry_run }
                }
                (None, ..) => unreachable!("clap requires --mode without --undo or --status"),
            };
            return match crate::backend_setup::run(&action, state) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(EXIT_REFUSED)
                }
            };
        }
        Command::Check { vips, config } => return check::run(cli.socket.as_deref(), config.as_deref(), vips, cli.json),
        Command::Backend(b) => {
            let request = match b {
                BackendCommand::Add { vip, backend, weight } => Request::BackendAdd { vip: vip.clone(), backend: *backend, weight: *weight },
                BackendCommand::Remove { vip, backend, force } => Request::BackendRemove { vip: vip.clone(), backend: *backend, force: *force },
                BackendCommand::Drain { vip, backend, force } => {
                    Request::BackendState { vip: vip.clone(), backend: *backend, state: "draining".into(), force: *force }
                }
                BackendCommand::Undrain { vip, backend } => {
                    Request::BackendState { vip: vip.clone(), backend: *backend, state: "up".into(), force: false }
                }
                BackendCommand::Weight { vip, backend, weight, force } => {
                    Request::BackendWeight { vip: vip.clone(), backend: *backend, weight: *weight, force: *force }
                }
            };
            client.command(&request).map(|_| None)
        }
        Command::Vip(VipCommand::Remove { name }) => client.command(&Request::VipRemove { name: name.clone() }).map(|_| None),
        Command::Vip(VipCommand::Add { name, address, protocol, scheduler, check, backends, file }) => {
            let yaml = match (file, name, address) {
                (Some(f), _, _) => std::fs::read_to_string(f).map_err(|e| format!("reading {}: {e}", f.display())),
                (None, Some(n), Some(a)) => vip_yaml(n, *a, protocol, scheduler, check, backends),
                _ => Err("give NAME and ADDRESS:PORT, or --file".to_owned()),
            };
            match yaml {
                Ok(yaml) => client.command(&Request::VipAdd { yaml }).map(|_| None),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    match result {
        Ok(None) => {
            if cli.json {
                println!("{{\"ok\":true}}");
            } else {
                println!("ok");
            }
            ExitCode::SUCCESS
        }
        Ok(Some(value)) => {
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
            } else {
                print!("{}", render::human(&cli.command, &value));
            }
            ExitCode::SUCCESS
        }
        Err(e) => failed(e),
    }
}

/// `lb config check` on the load balancer's host: every backend's route must leave by an
/// interface the program runs on. Elsewhere (the interfaces are not on this host) the check is
/// skipped, and says so.
fn check_routes(config: &config::Config) -> ExitCode {
    let checked = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(anyhow::Error::from).and_then(|rt| {
        rt.block_on(async {
            let netlink = crate::netlink::Netlink::open()?;
            crate::egress::backends_behind_other_interfaces(&netlink.handle(), config).await
        })
    });
    match checked {
        Ok(problems) if problems.is_empty() => ExitCode::SUCCESS,
        Ok(problems) => {
            problems.iter().for_each(|p| eprintln!("{p}"));
            ExitCode::from(EXIT_REFUSED)
        }
        Err(e) => {
            println!("backend routes not checked: {e:#}");
            ExitCode::SUCCESS
        }
    }
}

/// Prints a failed request's error; its exit code tells an agent that could not be reached
/// from one that refused.
fn failed(e: ClientError) -> ExitCode {
    eprintln!("error: {e}");
    match e {
        ClientError::Unreachable(..) => ExitCode::from(EXIT_UNREACHABLE),
        _ => ExitCode::from(EXIT_REFUSED),
    }
}

/// What a reload changed, in words.
fn reload_summary(answer: &Value) -> String {
    let list = |key: &str| -> Vec<String> {
        answer[key].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect()
    };
    let parts: Vec<String> = [("added", list("added")), ("removed", list("removed")), ("changed", list("changed"))]
        .into_iter()
        .filter(|(_, names)| !names.is_empty())
        .map(|(what, names)| format!("{what} {}", names.join(", ")))
        .collect();
    if parts.is_empty() { "reloaded: nothing changed".to_owned() } else { format!("reloaded: {}", parts.join("; ")) }
}

/// `lb teardown`: through the agent that holds the configuration's instance (it removes
/// everything and stops); without one, directly, holding the instance's lock. An agent that
/// holds the lock but does not answer is not bypassed: the command refuses.
fn teardown(path: &std::path::Path) -> ExitCode {
    let config = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_REFUSED);
        }
    };
    let instance = crate::instance::InstanceDir::of_instance(&config.global.instance);
    let lock = match instance.try_lock() {
        Ok(mut lock) => {
            // Held by this command now, without an admin socket.
            if let Err(e) = lock.record_holder(std::path::Path::new("")) {
                eprintln!("error: {e:#}");
                return ExitCode::from(EXIT_REFUSED);
            }
            lock
        }
        Err(crate::instance::LockError::Held { holder, .. }) => {
            let socket = if holder.admin_socket.as_os_str().is_empty() { config.global.admin_socket.clone() } else { holder.admin_socket };
            return match Client::new(&socket).command(&Request::Teardown) {
                Ok(answer) => {
                    println!("the agent removed the data path at {} and stopped", answer["pin_dir"].as_str().unwrap_or("?"));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!(
                        "error: instance {:?} is held by process {}, which did not tear it down through {}: {e}. \
                         Nothing was removed; stop that agent, then run lb teardown again",
                        config.global.instance,
                        holder.pid,
                        socket.display()
                    );
                    ExitCode::from(EXIT_REFUSED)
                }
            };
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_REFUSED);
        }
    };
    match crate::agent::teardown(&config, lock) {
        Ok(removed) => {
            let detached = if removed.detached.is_empty() { "no interface".to_owned() } else { removed.detached.join(", ") };
            let host = if removed.host.is_empty() { "nothing".to_owned() } else { removed.host.join(", ") };
            println!("removed the data path at {} (detached from {detached}); removed from the host: {host}", removed.pin_dir);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_REFUSED)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vip_yaml_from_options() {
        let y = vip_yaml("web", "10.0.0.1:80".parse().unwrap(), "tcp", "maglev", "none", &["10.1.0.1:8080*3".into()]).unwrap();
        assert_eq!(
            y,
            "name: web\naddress: 10.0.0.1\nport: 80\nprotocol: tcp\nscheduler: maglev\nhealth_check:\n  type: none\nbackends:\n  - address: 10.1.0.1\n    port: 8080\n    weight: 3\n"
        );
        assert!(vip_yaml("web", "10.0.0.1:80".parse().unwrap(), "tcp", "maglev", "none", &["nope".into()]).is_err());
    }

    #[test]
    fn parses_every_verb() {
        for args in [
            &["lb", "status", "--json"][..],
            &["lb", "backend", "drain", "web", "10.1.0.1:80"],
            &["lb", "backend", "weight", "web", "10.1.0.1:80", "5"],
            &["lb", "vip", "add", "web", "10.0.0.1:80", "--backend", "10.1.0.1:80"],
            &["lb", "explain", "192.0.2.1:1234", "10.0.0.1:80", "tcp"],
            &["lb", "config", "check", "x.yaml"],
            &["lb", "run", "--config", "x.yaml", "--xdp-mode", "generic"],
            &["lb", "teardown", "--config", "x.yaml"],
            &["lb", "check", "web", "dns"],
            &["lb", "check", "--config", "x.yaml", "web"],
            &["lb", "backend", "remove", "web", "10.1.0.1:80", "--force"],
            &["lb", "backend-setup", "--mode", "gue", "--vip", "10.0.0.10", "--vip", "2001:db8::10", "--interface", "eth0"],
            &["lb", "backend-setup", "--mode", "direct", "--vip", "10.0.0.10", "--dry-run"],
            &["lb", "backend-setup", "--undo", "--state", "/tmp/x.json"],
            &["lb", "backend-setup", "--status"],
        ] {
            Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
        assert!(Cli::try_parse_from(["lb", "backend", "drain", "web", "not-an-address"]).is_err());
        for args in [
            &["lb", "backend-setup", "--vip", "10.0.0.10"][..],
            &["lb", "backend-setup", "--mode", "direct"],
            &["lb", "backend-setup", "--mode", "nat", "--vip", "10.0.0.10"],
            &["lb", "backend-setup", "--undo", "--mode", "direct"],
            &["lb", "backend-setup", "--status", "--dry-run"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?} is refused");
        }
        let icmp = Cli::try_parse_from(["lb", "explain", "192.0.2.1:1234", "10.0.0.1:80", "icmp"]).unwrap_err();
        assert_eq!(icmp.exit_code(), 2, "a usage error");
    }

    #[test]
    fn lb_check_states_the_timeout_and_grace_period_it_uses() {
        use clap::CommandFactory as _;
        let cli = Cli::command();
        let about = cli.find_subcommand("check").and_then(|c| c.get_about()).map(|a| a.to_string()).unwrap_or_default();
        let (timeout, grace) = (lb_common::limits::CHECK_AGENT_TIMEOUT_MS, lb_common::limits::CHECK_GRACE_MS);
        assert!(about.contains(&format!("takes more than {timeout} ms")), "{about}");
        assert!(about.contains(&format!("for {} s after the agent's last heartbeat", grace / 1000)), "{about}");
    }

    #[test]
    fn reload_says_what_changed() {
        let answer = serde_json::json!({ "ok": true, "added": ["web2"], "removed": [], "changed": ["web", "dns"] });
        assert_eq!(reload_summary(&answer), "reloaded: added web2; changed web, dns");
        assert_eq!(reload_summary(&serde_json::json!({ "ok": true, "added": [], "removed": [], "changed": [] })), "reloaded: nothing changed");
    }
}
