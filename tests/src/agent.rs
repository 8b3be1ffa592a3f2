//! Running the real agent (`lb run`) in a lab's load balancer namespace, and its CLI.

use std::{
    path::PathBuf,
    process::{Child, Command, Output},
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

/// A running agent: its configuration file and admin socket. Its data path is the instance
/// named after the lab's load balancer namespace; dropping the agent stops it and removes that
/// data path (`lb teardown`).
pub struct Agent {
    /// The configuration file (rewrite it and `reload` to change it).
    pub config: PathBuf,
    /// The admin socket.
    pub socket: PathBuf,
    /// The bpffs directory of its data path.
    pub pin_dir: PathBuf,
    dir: PathBuf,
    netns: String,
    process: Option<Child>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop(libc::SIGTERM);
        let _ = self.in_netns(&["teardown", "--config", &self.config.display().to_string()]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `nsenter --net=... ARGS...`: a command in namespace `ns` that keeps this mount namespace
/// (`ip netns exec` mounts a private /sys, which hides /sys/fs/bpf and so the pinned data path).
pub fn in_netns(ns: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/var/run/netns/{ns}")).arg("--").args(args);
    cmd
}

impl Agent {
    /// Writes `yaml` (with `{socket}` replaced by a private socket path, and `global.instance`
    /// set to the lab's load balancer namespace unless given) and starts `lb run` with it in
    /// that namespace; waits (at most 20 s) until the admin socket answers.
    pub fn start(lab: &Lab, yaml: &str) -> anyhow::Result<Agent> {
        Agent::start_in(&lab.lb_ns, &lab.lb_ns, yaml)
    }

    /// As [`Agent::start`], in network namespace `netns` with `global.instance` set to
    /// `instance` (unless `yaml` names one): several agents, one per namespace, each with its
    /// own data path, configuration directory and admin socket.
    pub fn start_in(netns: &str, instance: &str, yaml: &str) -> anyhow::Result<Agent> {
        let mut agent = Agent::prepare(netns, instance, yaml)?;
        agent.spawn()?;
        Ok(agent)
    }

    /// As [`Agent::start`], for an agent expected to refuse to start: runs `lb run` and waits
    /// (at most `limit`) until it exits. Returns the agent (its log and files; dropping it runs
    /// `lb teardown` as usual) with its exit status, or an error, once it is stopped, if it
    /// still ran after `limit`.
    pub fn start_expecting_exit(lab: &Lab, yaml: &str, limit: Duration) -> anyhow::Result<(Agent, std::process::ExitStatus)> {
        let mut agent = Agent::prepare(&lab.lb_ns, &lab.lb_ns, yaml)?;
        agent.process = Some(agent.launch(&[])?);
        let deadline = Instant::now() + limit;
        loop {
            if let Some(Ok(Some(status))) = agent.process.as_mut().map(Child::try_wait) {
                agent.process = None;
                return Ok((agent, status));
            }
            if Instant::now() > deadline {
                let log = agent.log();
                drop(agent);
                bail!("the agent still ran after {limit:?}: {log}");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Writes the configuration (see [`Agent::start_in`]) without starting the agent.
    fn prepare(netns: &str, instance: &str, yaml: &str) -> anyhow::Result<Agent> {
        let dir = std::env::temp_dir().join(format!("{instance}-agent"));
        std::fs::create_dir_all(&dir)?;
        let socket = dir.join("lb.sock");
        let config = dir.join("lb.yaml");
        let mut yaml = yaml.replace("{socket}", &socket.display().to_string());
        if !yaml.contains("instance:") {
            yaml = yaml.replacen("global:\n", &format!("global:\n  instance: {instance}\n"), 1);
        }
        std::fs::write(&config, yaml)?;
        let pin_dir = std::path::Path::new(crate::topology::BPFFS_ROOT).join(instance);
        Ok(Agent { config, socket, pin_dir, dir, netns: netns.to_owned(), process: None })
    }

    /// The running agent's process id (`None` after [`Agent::stop`]).
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Child::id)
    }

    fn in_netns(&self, args: &[&str]) -> std::io::Result<Output> {
        in_netns(&self.netns, &[&lb_binary().display().to_string()]).args(args).output()
    }

    /// Starts `lb run` (after [`Agent::stop`]) and waits (at most 20 s) until it answers.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        self.spawn_with(&[])
    }

    /// As [`Agent::spawn`], with more arguments for `lb run`.
    pub fn spawn_with(&mut self, extra: &[&str]) -> anyhow::Result<()> {
        anyhow::ensure!(self.process.is_none(), "the agent runs already");
        self.process = Some(self.launch(extra)?);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.cli(&["status", "--json"]).status.success() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.process.as_mut().map(Child::try_wait) {
                bail!("the agent exited with {status}: {}", self.log());
            }
            thread::sleep(Duration::from_millis(50));
        }
        bail!("the agent did not answer on {} within 20 s: {}", self.socket.display(), self.log())
    }

    /// Starts `lb run` with `extra` arguments, logging to the agent's log.
    fn launch(&self, extra: &[&str]) -> anyhow::Result<Child> {
        let lb = lb_binary().display().to_string();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("agent.log"))?;
        let config = self.config.display().to_string();
        let mut args = vec![lb.as_str(), "run", "--config", config.as_str()];
        args.extend_from_slice(extra);
        in_netns(&self.netns, &args).stdout(log.try_clone()?).stderr(log).spawn().context("starting lb run")
    }

    /// Sends `signal` to the agent and waits (at most 5 s, then SIGKILL) until it exits.
    pub fn stop(&mut self, signal: i32) {
        let Some(mut child) = self.process.take() else {
            return;
        };
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// What the agent logged (every run of it).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// Runs `lb teardown --config CONFIG` in the agent's namespace.
    pub fn teardown(&self) -> Output {
        self.in_netns(&["teardown", "--config", &self.config.display().to_string()]).expect("running lb teardown")
    }

    /// Replaces the configuration file with `yaml`, with `{socket}` and `global.instance` filled
    /// in as at the start (`lb reload` applies it).
    pub fn rewrite_config(&self, yaml: &str) -> std::io::Result<()> {
        let current = std::fs::read_to_string(&self.config)?;
        let instance = current.lines().find_map(|l| l.trim().strip_prefix("instance:")).map_or("default", str::trim).to_owned();
        let mut yaml = yaml.replace("{socket}", &self.socket.display().to_string());
        if !yaml.contains("instance:") {
            yaml = yaml.replacen("global:\n", &format!("global:\n  instance: {instance}\n"), 1);
        }
        std::fs::write(&self.config, yaml)
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

/// A lab with `backends` backend servers (`backend_bin`) and an agent running `yaml`, once every
/// backend of VIP `vip` is up (at most 15 s). Bind it as `let (lab, agent)`: the agent is then
/// dropped first and removes its data path while the lab's namespaces still exist.
pub fn lab_with_agent(backend_bin: &std::path::Path, backends: usize, yaml: &str, vip: &str) -> anyhow::Result<(Lab, Agent)> {
    let mut lab = Lab::create(backends, backend_bin)?;
    for k in 0..backends {
        lab.start_backend(k)?;
    }
    let agent = Agent::start(&lab, yaml)?;
    agent.wait_status(Duration::from_secs(15), |s| all_in_state(s, vip, "up"))?;
    Ok((lab, agent))
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
