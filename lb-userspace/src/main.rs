//! `lb`: the load balancer's agent (`lb run`) and the CLI that manages it.

use std::process::ExitCode;

use clap::Parser as _;
use lb_userspace::{
    agent,
    cli::{self, Cli, Command, EXIT_REFUSED},
    config::{self, LogFormat},
};

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Command::Run { config: path, xdp_mode, program } = &cli.command else {
        return cli::execute(&cli);
    };
    let mut config = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_REFUSED);
        }
    };
    // The global flags mean the same for the agent: its socket, and JSON output (its logs).
    if let Some(socket) = &cli.socket {
        config.global.admin_socket = socket.clone();
    }
    if cli.json {
        config.global.log_format = LogFormat::Json;
    }
    init_logging(config.global.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let options = agent::Options { config_path: path.clone(), mode: xdp_mode.map(Into::into), program: program.clone() };
    match runtime.block_on(agent::run(config, options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
