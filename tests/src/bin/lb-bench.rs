//! `cargo xtask bench`: the load balancer's benchmarks (issue 5). See BENCHMARKS.md.
//!
//! ```text
//! lb-bench [PART...] [OPTIONS]
//!   PART     datapath | control | throughput | proxy   (default: all four, in that order)
//!            pktgen --dev IFACE --dst VIP[:PORT] [--dst-mac MAC] [--count N] [--flows N]
//!                   [--threads N] [--seconds S]   kernel pktgen on a real host (see
//!                   BENCHMARKS.md); falls back to the built-in generator without pktgen
//!   --quick           fewer sets and shorter runs (a smoke test, not for publishing)
//!   --sets N          data path: repeated sets (default 15)
//!   --runs N          data path: single runs per path and set (default 10000)
//!   --seconds S       throughput: seconds per measurement (default 3); proxy: per load run
//!   --no-agent        control plane: skip probe-to-swap (needs the `lb` binary)
//!   --no-write        print only; leave bench/results and BENCHMARKS.md alone
//! ```
//! Needs root (BPF, network namespaces). Never fails on timing: only on a wrong verdict,
//! wrong bytes or a set-up error.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use lb_tests::bench::{self, Machine, control, datapath, proxy, report::Report, throughput};

const USAGE: &str = "usage: lb-bench [datapath|control|throughput|proxy|pktgen --dev IFACE --dst VIP] [--quick] [--sets N] [--runs N] [--seconds S] [--no-agent] [--no-write]";

struct Args {
    parts: Vec<String>,
    datapath: datapath::Options,
    control: control::Options,
    throughput: throughput::Options,
    proxy: proxy::Options,
    pktgen: Option<throughput::Pktgen>,
    write: bool,
}

fn value<T: std::str::FromStr>(it: &mut std::slice::Iter<'_, String>, flag: &str) -> anyhow::Result<T> {
    let v = it.next().with_context(|| format!("{flag} needs a value"))?;
    v.parse().map_err(|_| anyhow::anyhow!("{flag}: cannot parse {v:?}"))
}

fn parse(raw: &[String]) -> anyhow::Result<Args> {
    let mut a = Args {
        parts: Vec::new(),
        datapath: datapath::Options::default(),
        control: control::Options::default(),
        throughput: throughput::Options::default(),
        proxy: proxy::Options::default(),
        pktgen: None,
        write: true,
    };
    let mut quick = false;
    let (mut sets, mut runs, mut seconds) = (None, None, None);
    let mut it = raw.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "datapath" | "control" | "throughput" | "proxy" => a.parts.push(arg.clone()),
            "all" => a.parts.extend(["datapath", "control", "throughput", "proxy"].map(String::from)),
            "pktgen" => {
                a.parts.push("pktgen".into());
                a.pktgen.get_or_insert_with(throughput::Pktgen::default);
            }
            "--dev" => a.pktgen.get_or_insert_with(Default::default).dev = value(&mut it, arg)?,
            "--dst" => a.pktgen.get_or_insert_with(Default::default).dst = value(&mut it, arg)?,
            "--dst-mac" => a.pktgen.get_or_insert_with(Default::default).dst_mac = value(&mut it, arg)?,
            "--count" => a.pktgen.get_or_insert_with(Default::default).count = value(&mut it, arg)?,
            "--flows" => a.pktgen.get_or_insert_with(Default::default).flows = value(&mut it, arg)?,
            "--threads" => a.pktgen.get_or_insert_with(Default::default).threads = value(&mut it, arg)?,
            "--quick" => quick = true,
            "--sets" => sets = Some(value(&mut it, arg)?),
            "--runs" => runs = Some(value(&mut it, arg)?),
            "--seconds" => seconds = Some(value::<f64>(&mut it, arg)?),
            "--no-agent" => a.control.agent = false,
            "--no-write" => a.write = false,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if quick {
        a.datapath.sets = 5;
        a.datapath.runs = 2_000;
        a.datapath.warmup = 1_000;
        a.control.builds = 7;
        a.control.swaps = 4;
        a.throughput.seconds = 1.0;
        a.throughput.repeats = 1;
        a.proxy.seconds = 3.0;
        a.proxy.repeats = 1;
    }
    if let Some(s) = sets {
        a.datapath.sets = s;
    }
    if let Some(r) = runs {
        a.datapath.runs = r;
    }
    if let Some(s) = seconds {
        a.throughput.seconds = s;
        a.proxy.seconds = s;
    }
    if let Some(p) = &mut a.pktgen {
        p.seconds = a.throughput.seconds;
    }
    if a.parts.is_empty() {
        a.parts.extend(["datapath", "control", "throughput", "proxy"].map(String::from));
    }
    Ok(a)
}

/// `lb-bench serve ADDR`: the HTTP server of the proxy benchmark's backends. Every request
/// gets `200 ok` in one write on a TCP_NODELAY socket (a response written in pieces meets
/// Nagle's algorithm and delayed ACKs: 40 ms per keep-alive request); `Connection: close` is
/// honoured. One thread per connection; runs until killed.
fn serve(addr: &str) -> ExitCode {
    use std::io::{BufRead as _, BufReader, Write as _};
    let listener = match std::net::TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("lb-bench serve: binding {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n";
    const OK_CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || -> std::io::Result<()> {
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
            let mut writer = stream.try_clone()?;
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 {
                    return Ok(());
                }
                let mut close = false;
                loop {
                    line.clear();
                    if reader.read_line(&mut line)? == 0 {
                        return Ok(());
                    }
                    if line.trim().is_empty() {
                        break;
                    }
                    close |= line.to_ascii_lowercase().starts_with("connection: close");
                }
                writer.write_all(if close { OK_CLOSE } else { OK })?;
                if close {
                    return Ok(());
                }
            }
        });
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if raw.first().map(String::as_str) == Some("serve") {
        return serve(raw.get(1).map(String::as_str).unwrap_or("0.0.0.0:8080"));
    }
    if std::env::var_os("RUST_LOG").is_none() {
        // SAFETY: no other thread exists yet. The agent that part 4 starts inherits it: its
        // info logs would interleave with the tables.
        unsafe { std::env::set_var("RUST_LOG", "warn") };
    }
    let args = match parse(&raw) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("lb-bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("lb-bench: needs root (BPF programs, network namespaces)");
        return ExitCode::FAILURE;
    }
    let machine = Machine::detect();
    println!("lb benchmarks on {}", machine.describe());
    let mut report = Report::new(machine, raw.clone());
    let mut failed = Vec::new();
    for part in &args.parts {
        let started = std::time::Instant::now();
        println!("\n-- running {part} ...");
        let result = match part.as_str() {
            "datapath" => datapath::run(&args.datapath, &mut report),
            "control" => control::run(&args.control, &mut report),
            "throughput" => throughput::run(&args.throughput, &mut report),
            "pktgen" => throughput::run_pktgen(args.pktgen.as_ref().expect("set with the part"), &args.throughput, &mut report),
            "proxy" => proxy::run(&args.proxy, &mut report),
            _ => unreachable!("parsed"),
        };
        match result {
            Ok(()) => println!("-- {part} done in {:.0} s", started.elapsed().as_secs_f64()),
            Err(e) => {
                eprintln!("-- {part} FAILED: {e:#}");
                failed.push(format!("{part}: {e:#}"));
            }
        }
    }
    let targets = report.targets_table();
    print!("{}", targets.text());
    if args.write && report.json.is_empty() {
        eprintln!("\nno part produced results: bench/results and the generated tables are left as they are");
    } else if args.write {
        match report.write(&bench::root()) {
            Ok(()) => println!("\nwrote bench/results/latest.json, latest.md, latest.svg and the results section of BENCHMARKS.md"),
            Err(e) => {
                eprintln!("writing the results: {e:#}");
                failed.push(format!("writing results: {e:#}"));
            }
        }
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("\nlb-bench: {} part(s) failed:\n  {}", failed.len(), failed.join("\n  "));
        ExitCode::FAILURE
    }
}
