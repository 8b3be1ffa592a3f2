//! `lb check`'s verdicts, per VIP, from either source: the agent's status, or the maps of the
//! pinned data path while the agent does not answer. Pure: the caller reads both.

use lb_common::{limits::CHECK_GRACE_MS, serving::Heartbeat};
use serde::Serialize;
use serde_json::Value;

use crate::dataplane::pinned_serving::PinnedServing;

/// One VIP's verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VipVerdict {
    /// The VIP's name.
    pub name: String,
    /// Whether this node serves it.
    pub serving: bool,
    /// Why (or why not), in words.
    pub reason: String,
}

/// What answered `lb check`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The agent, from its model and self-check.
    Agent,
    /// The pinned data path's maps: the agent did not answer.
    DataPath,
}

/// The answer of `lb check`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Exit 0: every VIP asked about (at least one) is served.
    pub ok: bool,
    /// What answered.
    pub source: Source,
    /// Where it was read, and for the data path why the agent did not answer and its heartbeat.
    pub detail: String,
    /// Milliseconds since the agent's last heartbeat (data path only, when there is one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_age_ms: Option<u64>,
    /// The VIPs asked about (every VIP when none was named).
    pub vips: Vec<VipVerdict>,
}

impl Report {
    fn new(source: Source, detail: String, heartbeat_age_ms: Option<u64>, vips: Vec<VipVerdict>) -> Report {
        Report { ok: !vips.is_empty() && vips.iter().all(|v| v.serving), source, detail, heartbeat_age_ms, vips }
    }

    /// The report in lines: the source, then one line per VIP.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![self.detail.clone()];
        if self.vips.is_empty() {
            lines.push("no VIP configured".to_owned());
        }
        for v in &self.vips {
            lines.push(format!("{}: {} ({})", v.name, if v.serving { "serving" } else { "NOT serving" }, v.reason));
        }
        lines
    }
}

fn unknown(name: &str, whose: &str) -> VipVerdict {
    VipVerdict { name: name.to_owned(), serving: false, reason: format!("no such VIP {whose}") }
}

/// The verdicts from the agent's `/v1/status` (`socket`: where it answered) for the VIPs named
/// `names`, all of them if empty.
pub fn from_agent(status: &Value, socket: &str, names: &[String]) -> Report {
    let vips: Vec<&Value> = status["vips"].as_array().map(|v| v.iter().collect()).unwrap_or_default();
    let verdict = |v: &Value| {
        // An agent older than this lb has no `serving_reason`.
        let reason = v["serving_reason"].as_str().or(v["announce_reason"].as_str()).unwrap_or("");
        VipVerdict { name: v["name"].as_str().unwrap_or("?").to_owned(), serving: v["serving"].as_bool().unwrap_or(false), reason: reason.to_owned() }
    };
    let verdicts = if names.is_empty() {
        vips.iter().map(|v| verdict(v)).collect()
    } else {
        names
            .iter()
            .map(|name| vips.iter().find(|v| v["name"] == name.as_str()).map_or_else(|| unknown(name, "on the agent"), |v| verdict(v)))
            .collect()
    };
    Report::new(Source::Agent, format!("answered by the agent at {socket}"), None, verdicts)
}

fn seconds(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// What `heartbeat` says, and whether it lets the data path answer.
fn heartbeat_words(heartbeat: Heartbeat) -> (String, Result<(), String>) {
    let grace = seconds(CHECK_GRACE_MS);
    match heartbeat {
        Heartbeat::Fresh { age_ms } => (format!("the agent's last heartbeat was {} ago, trusted for {grace}", seconds(age_ms)), Ok(())),
        Heartbeat::Stale { age_ms } => {
            let words = format!("the agent's last heartbeat was {} ago, beyond the {grace} grace period", seconds(age_ms));
            (words, Err(format!("no agent for {}: health unchecked beyond the {grace} grace period", seconds(age_ms))))
        }
        Heartbeat::Never => {
            let words = "no agent ever wrote a heartbeat to it (made by an lb older than this one?)".to_owned();
            (words, Err("no agent heartbeat".to_owned()))
        }
        Heartbeat::Ahead => {
            let words = "the agent's heartbeat is ahead of this clock (another time namespace?)".to_owned();
            (words, Err("agent heartbeat not readable here".to_owned()))
        }
    }
}

/// The verdicts from the pinned data path at `pin_dir` when the agent did not answer
/// (`agent_error` says how). `configured` names the configuration's VIPs in the order their
/// keys were read into `pinned` (`Err`: the data path could not be read at all); `names` are
/// the VIPs asked about; `config` is the file's name.
///
/// With no names, the VIPs asked about are those of the file that the maps hold, as the agent
/// answers for the VIPs it runs: a VIP added to the file since the agent last ran is not in the
/// maps until the agent starts again, and a restart must not fail the check. It is listed, not
/// counted. A VIP named but not in the maps fails.
pub fn from_data_path(
    pinned: &Result<PinnedServing, String>,
    pin_dir: &str,
    agent_error: &str,
    configured: &[String],
    names: &[String],
    config: &str,
) -> Report {
    let selected: Vec<&String> = if names.is_empty() { configured.iter().collect() } else { names.iter().collect() };
    let head = format!("answered by the data path at {pin_dir}: the agent did not ({agent_error})");
    let pinned = match pinned {
        Ok(p) => p,
        Err(why) => {
            let verdicts = selected.iter().map(|n| VipVerdict { name: (*n).clone(), serving: false, reason: why.clone() }).collect();
            return Report::new(Source::DataPath, format!("{head}; {why}"), None, verdicts);
        }
    };
    let (words, trusted) = heartbeat_words(pinned.heartbeat);
    let age = match pinned.heartbeat {
        Heartbeat::Fresh { age_ms } | Heartbeat::Stale { age_ms } => Some(age_ms),
        Heartbeat::Never | Heartbeat::Ahead => None,
    };
    let attached = if pinned.unattached.is_empty() { Ok(()) } else { Err(pinned.unattached.join("; ")) };
    let in_maps = |name: &String| configured.iter().position(|c| c == name).and_then(|i| pinned.vips.get(i).copied().flatten()).is_some();
    let (selected, not_counted): (Vec<&String>, Vec<&String>) = if names.is_empty() {
        selected.into_iter().partition(|name| in_maps(name))
    } else {
        (selected, Vec::new())
    };
    let verdicts = selected
        .iter()
        .map(|name| {
            let Some(i) = configured.iter().position(|c| c == *name) else {
                return unknown(name, &format!("in {config}"));
            };
            let (serving, reason) = match (&trusted, &attached, pinned.vips.get(i).copied().flatten()) {
                (Err(why), _, _) | (Ok(()), Err(why), _) => (false, why.clone()),
                (Ok(()), Ok(()), None) => (false, "not in the data path's maps".to_owned()),
                (Ok(()), Ok(()), Some(0)) => (false, "no backend takes new flows".to_owned()),
                (Ok(()), Ok(()), Some(1)) => (true, "1 backend takes new flows".to_owned()),
                (Ok(()), Ok(()), Some(n)) => (true, format!("{n} backends take new flows")),
            };
            VipVerdict { name: (*name).clone(), serving, reason }
        })
        .collect();
    let mut detail = format!("{head}; {words}");
    if !not_counted.is_empty() {
        let list: Vec<&str> = not_counted.iter().map(|n| n.as_str()).collect();
        detail += &format!("; not in its maps, not counted (added to {config} since the agent last ran?): {}", list.join(", "));
    }
    Report::new(Source::DataPath, detail, age, verdicts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_agent_answers_per_vip() {
        let status = serde_json::json!({ "vips": [
            { "name": "web", "serving": true, "serving_reason": "2 backends take new flows", "announce_reason": "announced: 3 backends take new flows" },
            { "name": "web-tls", "serving": false, "serving_reason": "no backend takes new flows", "announce_reason": "announced: 3 backends take new flows" },
        ]});
        let web = from_agent(&status, "/run/lb/lb.sock", &names(&["web"]));
        assert!(web.ok);
        assert_eq!(web.lines(), ["answered by the agent at /run/lb/lb.sock", "web: serving (2 backends take new flows)"]);
        let all = from_agent(&status, "s", &[]);
        assert!(!all.ok, "web-tls shares web's announced address but has no backend of its own");
        assert_eq!(all.lines()[2], "web-tls: NOT serving (no backend takes new flows)");
        let nope = from_agent(&status, "s", &names(&["web", "nope"]));
        assert!(!nope.ok);
        assert_eq!(nope.vips[1], VipVerdict { name: "nope".into(), serving: false, reason: "no such VIP on the agent".into() });
        assert!(!from_agent(&serde_json::json!({ "vips": [] }), "s", &[]).ok, "no VIP: nothing served");
        let older = serde_json::json!({ "vips": [{ "name": "web", "serving": true, "announce_reason": "announced: 1 backend takes new flows" }] });
        assert_eq!(from_agent(&older, "s", &[]).vips[0].reason, "announced: 1 backend takes new flows", "an older agent's reason");
    }

    fn pinned(heartbeat: Heartbeat, unattached: &[&str], vips: Vec<Option<u32>>) -> Result<PinnedServing, String> {
        Ok(PinnedServing { heartbeat, unattached: unattached.iter().map(|s| (*s).to_owned()).collect(), vips })
    }

    #[test]
    fn the_data_path_answers_within_the_grace_period() {
        let configured = names(&["web", "dns", "gone", "empty"]);
        let fresh = pinned(Heartbeat::Fresh { age_ms: 2_300 }, &[], vec![Some(3), Some(1), None, Some(0)]);
        let r = from_data_path(&fresh, "/sys/fs/bpf/lb/edge", "timed out", &configured, &names(&["web", "dns"]), "lb.yaml");
        assert!(r.ok);
        assert_eq!((r.source.clone(), r.heartbeat_age_ms), (Source::DataPath, Some(2_300)));
        assert_eq!(
            r.lines(),
            [
                "answered by the data path at /sys/fs/bpf/lb/edge: the agent did not (timed out); the agent's last heartbeat was 2.3 s ago, trusted for 10.0 s",
                "web: serving (3 backends take new flows)",
                "dns: serving (1 backend takes new flows)",
            ]
        );
        let all = from_data_path(&fresh, "d", "e", &configured, &[], "lb.yaml");
        assert!(!all.ok, "empty has no backend taking new flows");
        assert_eq!(all.vips.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["web", "dns", "empty"]);
        assert_eq!(all.vips[2].reason, "no backend takes new flows");
        assert!(all.detail.ends_with("; not in its maps, not counted (added to lb.yaml since the agent last ran?): gone"), "{}", all.detail);
        let named = from_data_path(&fresh, "d", "e", &configured, &names(&["gone"]), "lb.yaml");
        assert_eq!((named.ok, named.vips[0].reason.as_str()), (false, "not in the data path's maps"));
        let only_new = pinned(Heartbeat::Fresh { age_ms: 1 }, &[], vec![None]);
        let only_new = from_data_path(&only_new, "d", "e", &names(&["new"]), &[], "lb.yaml");
        assert!(!only_new.ok && only_new.vips.is_empty(), "no VIP of the file in the maps: nothing served");
        let unknown = from_data_path(&fresh, "d", "e", &configured, &names(&["nope"]), "lb.yaml");
        assert_eq!((unknown.ok, unknown.vips[0].reason.as_str()), (false, "no such VIP in lb.yaml"));
    }

    #[test]
    fn the_data_path_fails_when_stale_detached_or_gone() {
        let configured = names(&["web"]);
        let web = names(&["web"]);
        let stale = from_data_path(&pinned(Heartbeat::Stale { age_ms: 12_000 }, &[], vec![Some(3)]), "d", "e", &configured, &web, "f");
        assert!(!stale.ok);
        assert_eq!(stale.vips[0].reason, "no agent for 12.0 s: health unchecked beyond the 10.0 s grace period");
        assert_eq!(stale.heartbeat_age_ms, Some(12_000));
        for h in [Heartbeat::Never, Heartbeat::Ahead] {
            assert!(!from_data_path(&pinned(h, &[], vec![Some(3)]), "d", "e", &configured, &web, "f").ok, "{h:?}");
        }
        let detached = from_data_path(&pinned(Heartbeat::Fresh { age_ms: 1 }, &["no pinned link on eth1"], vec![Some(3)]), "d", "e", &configured, &web, "f");
        assert_eq!((detached.ok, detached.vips[0].reason.as_str()), (false, "no pinned link on eth1"));
        let gone = from_data_path(&Err("no data path is pinned at d".into()), "d", "refused", &configured, &[], "f");
        assert!(!gone.ok);
        assert_eq!(gone.lines(), ["answered by the data path at d: the agent did not (refused); no data path is pinned at d", "web: NOT serving (no data path is pinned at d)"]);
    }
}
