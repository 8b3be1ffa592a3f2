//! Running the real agent (`lb run`) in a lab's load balancer namespace, and its CLI.

use std::{
    path::PathBuf,
    process::{Command, Output},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::topology::Lab;

/// The `lb` binary built next to the running executable (an xtask in `target/debug`, or a
/// test in `target/debug/deps`).
pub fn lb_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let dir = exe.parent().expect("executable directory");
    [dir, dir.parent().unwrap_or(dir)]
        .iter()
        .map(|d| d.join("lb"))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no `lb` binary next to {}: build it first (`cargo build`)", exe.display()))
}

/// A running agent: its configuration file and admin socket.
pub struct Agent {
    /// The configuration file (rewrite it and `reload` to change it).
    pub config: PathBuf,
    /// The admin socket.
    pub socket: PathBuf,
    dir: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Agent {
    /// Writes `yaml` (with `{socket}` replaced by a private socket path) and starts
    /// `lb run` with it in the lab's load balancer namespace; waits (at most 20 s) until the
    /// admin socket answers.
    pub fn start(lab: &mut Lab, yaml: &str) -> anyhow::Result<Agent> {
        let dir = std::env::temp_dir().join(format!("{}-agent", lab.lb_ns));
        std::fs::create_dir_all(&dir)?;
        let socket = dir.join("lb.sock");
        let config = dir.join("lb.yaml");
        std::fs::write(&config, yaml.replace("{socket}", &socket.display().to_string()))?;
        let agent = Agent { config, socket, dir };
        let lb = lb_binary().display().to_string();
        let lb_ns = lab.lb_ns.clone();
        lab.spawn(&lb_ns, &[&lb, "run", "--config", &agent.config.display().to_string()])?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if agent.cli(&["status", "--json"]).status.success() {
                return Ok(agent);
            }
            thread::sleep(Duration::from_millis(100));
        }
        bail!("the agent did not answer on {} within 20 s", agent.socket.display())
    }

    /// Runs `lb --socket SOCKET ARGS...`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(lb_binary())
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("running lb")
    }

    /// Runs a read command with `--json` and parses its output; fails unless it succeeds.
    pub fn json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.cli(&all);
        if !out.status.success() {
            bail!("lb {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        serde_json::from_slice(&out.stdout).with_context(|| format!("parsing the output of lb {args:?}"))
    }

    /// Polls `lb status --json` until `pred` holds (at most `limit`).
    pub fn wait_status(&self, limit: Duration, pred: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let status = self.json(&["status"])?;
            if pred(&status) {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("status did not reach the expected state within {limit:?}: {status:#}");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The backends of VIP `vip` in a status report.
pub fn backends<'a>(status: &'a Value, vip: &str) -> Vec<&'a Value> {
    status["vips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["name"] == vip)
        .flat_map(|v| v["backends"].as_array().into_iter().flatten())
        .collect()
}

/// Whether every backend of `vip` is in `state`.
pub fn all_in_state(status: &Value, vip: &str, state: &str) -> bool {
    let b = backends(status, vip);
    !b.is_empty() && b.iter().all(|b| b["state"] == state)
}
