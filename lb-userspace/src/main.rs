//! `lb`: the load balancer's agent and CLI.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("version") | Some("--version") => {
            println!("lb {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("check-program") => match lb_userspace::dataplane::Dataplane::load(&Default::default()) {
            Ok(_) => {
                println!("the XDP program loads and passes the verifier");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("usage: lb version | lb check-program");
            ExitCode::from(2)
        }
    }
}
