//! A real Prometheus server (the `prometheus` binary on PATH) run in a lab namespace: it scrapes
//! the given targets every second, keeps its configuration and TSDB in a fresh temporary
//! directory, and answers queries over its HTTP API. Dropping it stops the server and removes
//! the directory, also on panic.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::PathBuf,
    process::{Child, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::{agent::in_netns, topology::in_namespace};

/// Longest the server may take to answer `/-/ready`.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest one HTTP request to the server may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

static SERVERS: AtomicU32 = AtomicU32::new(0);

/// A running `prometheus` in a network namespace, listening on 127.0.0.1 there.
pub struct PrometheusServer {
    /// The address it listens on, inside its namespace.
    pub address: std::net::SocketAddr,
    /// When it started (seconds since the epoch), the earliest time its data can cover.
    pub started: f64,
    netns: String,
    dir: PathBuf,
    process: Option<Child>,
}

/// Seconds since the epoch.
pub fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl PrometheusServer {
    /// Starts `prometheus` in namespace `netns`, scraping `targets` (`host:port`, job `lb`,
    /// path `/metrics`) every second, on a free port of 127.0.0.1 there; waits (at most 20 s)
    /// until it is ready.
    pub fn start(netns: &str, targets: &[&str]) -> anyhow::Result<PrometheusServer> {
        let n = SERVERS.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("lb-prometheus-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let port = in_namespace(netns, || std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()))??.port();
        let mut server = PrometheusServer {
            address: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            started: unix_now(),
            netns: netns.to_owned(),
            dir,
            process: None,
        };
        let quoted: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = server.dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: lb\n    static_configs:\n      - targets: [{}]\n",
                quoted.join(", ")
            ),
        )?;
        let log = std::fs::File::create(server.dir.join("prometheus.log"))?;
        let args = [
            "prometheus".to_owned(),
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", server.dir.join("data").display()),
            format!("--web.listen-address={}", server.address),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = in_netns(netns, &args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting prometheus (scripts/setup.sh installs it)")?;
        server.process = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if matches!(server.get("/-/ready"), Ok((200, _))) {
                return Ok(server);
            }
            if let Some(Ok(Some(status))) = server.process.as_mut().map(Child::try_wait) {
                bail!("prometheus exited with {status}: {}", server.log());
            }
            thread::sleep(Duration::from_millis(100));
        }
        bail!("prometheus was not ready within {START_TIMEOUT:?}: {}", server.log())
    }

    /// Its base URL, for other processes in its namespace.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// One HTTP/1.0 GET of `path_and_query` from inside its namespace: status code and body.
    pub fn get(&self, path_and_query: &str) -> anyhow::Result<(u16, String)> {
        let address = self.address;
        let request = format!("GET {path_and_query} HTTP/1.0\r\nHost: {address}\r\n\r\n");
        let response = in_namespace(&self.netns, move || -> std::io::Result<String> {
            let mut stream = TcpStream::connect_timeout(&address, REQUEST_TIMEOUT)?;
            stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
            stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
            stream.write_all(request.as_bytes())?;
            let mut text = String::new();
            stream.read_to_string(&mut text)?;
            Ok(text)
        })??;
        let (head, body) = response.split_once("\r\n\r\n").context("an HTTP response without a header end")?;
        let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).with_context(|| format!("bad status line in {head:?}"))?;
        Ok((status, body.to_owned()))
    }

    /// GETs an API path and returns its `data`, failing unless the answer says `success`.
    pub fn api(&self, path_and_query: &str) -> anyhow::Result<Value> {
        let (code, body) = self.get(path_and_query)?;
        let answer: Value = serde_json::from_str(&body).with_context(|| format!("HTTP {code} for {path_and_query}: {body}"))?;
        if answer["status"] != "success" {
            bail!("{path_and_query}: HTTP {code}: {answer}");
        }
        Ok(answer["data"].clone())
    }

    /// Evaluates `expr` now (`/api/v1/query`): the result's series (or scalar) as a list.
    pub fn query(&self, expr: &str) -> anyhow::Result<Vec<Value>> {
        let data = self.api(&format!("/api/v1/query?query={}", url_encode(expr)))?;
        match data["resultType"].as_str() {
            Some("vector" | "matrix") => Ok(data["result"].as_array().cloned().unwrap_or_default()),
            Some("scalar" | "string") => Ok(vec![data["result"].clone()]),
            other => bail!("{expr}: unexpected result type {other:?}"),
        }
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.process.take() {
            // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
