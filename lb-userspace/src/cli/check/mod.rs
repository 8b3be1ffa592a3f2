//! `lb check`: whether this node serves each VIP, for a VRRP track script. The agent answers
//! when it can; with the configuration file, the pinned data path answers while the agent does
//! not (restarting, upgraded, stuck), for as long as the agent's last heartbeat is within
//! [`CHECK_GRACE_MS`](lb_common::limits::CHECK_GRACE_MS).

mod verdict;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use lb_common::limits::CHECK_AGENT_TIMEOUT_MS;

use crate::{
    agent::state::vip_key,
    api::{
        DEFAULT_ADMIN_SOCKET,
        client::{Client, ClientError},
    },
    config::{self, Config},
    dataplane::{Pins, heartbeat, pinned_serving},
};
use verdict::Report;

/// Exit code: the agent could not be reached and no configuration was given to read the data
/// path with.
const EXIT_UNREACHABLE: u8 = super::EXIT_UNREACHABLE;

/// Runs `lb check` for the VIPs `names` (all if empty): asks the agent at `socket` (else the
/// configuration's `admin_socket`, else the default) and, when it does not answer within
/// [`CHECK_AGENT_TIMEOUT_MS`] and `config_path` is given, reads the pinned data path of the
/// configuration's instance. Exit 0 when every VIP is served, 1 when not, 3 when the agent did
/// not answer and there was no configuration to fall back on.
pub fn run(socket: Option<&Path>, config_path: Option<&Path>, names: &[String], json: bool) -> ExitCode {
    let config = config_path.and_then(|path| match config::load(path) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("warning: {e}\nlb check asks the agent only: without a valid configuration it cannot read the data path");
            None
        }
    });
    let socket: PathBuf = match (socket, &config) {
        (Some(s), _) => s.to_owned(),
        (None, Some(c)) => c.global.admin_socket.clone(),
        (None, None) => PathBuf::from(DEFAULT_ADMIN_SOCKET),
    };
    let timeout = Duration::from_millis(CHECK_AGENT_TIMEOUT_MS);
    let report = match Client::with_timeout(&socket, timeout).get("/v1/status") {
        Ok(status) => verdict::from_agent(&status, &socket.display().to_string(), names),
        Err(e) => match (&config, config_path) {
            (Some(config), Some(path)) => from_data_path(config, path, &agent_error(&e, timeout), names),
            _ => {
                eprintln!("error: {e}");
                if config_path.is_none() {
                    eprintln!("(with --config FILE, lb check answers from the pinned data path while the agent does not)");
                }
                return ExitCode::from(EXIT_UNREACHABLE);
            }
        },
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        report.lines().iter().for_each(|l| println!("{l}"));
    }
    if report.ok { ExitCode::SUCCESS } else { ExitCode::from(super::EXIT_REFUSED) }
}

/// Why the agent did not answer, in a few words.
fn agent_error(e: &ClientError, timeout: Duration) -> String {
    match e {
        ClientError::Unreachable(_, io) if matches!(io.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            format!("no answer within {} ms", timeout.as_millis())
        }
        ClientError::Unreachable(socket, io) => format!("{}: {io}", socket.display()),
        other => other.to_string(),
    }
}

/// The verdicts read from the pinned data path of `config`'s instance.
fn from_data_path(config: &Config, path: &Path, agent_error: &str, names: &[String]) -> Report {
    let pins = Pins::of_instance(&config.global.instance);
    let keys: Vec<_> = config.vips.iter().map(vip_key).collect();
    let pinned = pinned_serving::read(&pins, &config.global.interfaces, &keys, heartbeat::now_ms()).map_err(|e| format!("{e:#}"));
    let configured: Vec<String> = config.vips.iter().map(|v| v.name.clone()).collect();
    verdict::from_data_path(&pinned, &pins.dir().display().to_string(), agent_error, &configured, names, &path.display().to_string())
}
