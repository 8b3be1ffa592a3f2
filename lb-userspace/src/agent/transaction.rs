//! Changing what the data path serves, all or nothing. Every change (reload, a CLI operation,
//! a health transition, a new next hop) is made on a copy of the running [`Runtime`]; the
//! maps are written from the copy, and the copy becomes the running runtime only once every
//! write succeeded. When a write fails midway, the running runtime is written back over what
//! was written ([`Runtime::rollback`]) and the error is returned: the running runtime, and so
//! what the operator and `lb status` see, never describes maps that were not written.

use std::time::{Duration, Instant};

use lb_common::maps::Backend;

use super::state::{Changes, Runtime};
use crate::dataplane::Maps;

/// A change whose map writes failed; `undo` is what was written back (the agent restarts the
/// probes it names).
#[derive(Debug)]
pub struct Failed {
    /// The write that failed.
    pub error: anyhow::Error,
    /// The changes that wrote the running runtime back.
    pub undo: Changes,
}

/// The VIP and backend slots `next` uses that `running` does not use the same way (a new
/// slot, or a slot taken again by another VIP or backend): their counters start from zero.
pub fn fresh_slots(running: &Runtime, next: &Runtime) -> (Vec<u32>, Vec<u32>) {
    let vips = next
        .vips
        .iter()
        .filter(|v| running.vip_by_id(v.id).is_none_or(|r| r.key() != v.key()))
        .map(|v| v.id)
        .collect();
    let backends = next
        .vips
        .iter()
        .flat_map(|v| &v.backends)
        .filter(|b| running.backend_by_id(b.id).is_none_or(|(_, r)| r.generation != b.generation))
        .map(|b| b.id)
        .collect();
    (vips, backends)
}

/// Writes `changes` to the maps for runtime `rt`: removed VIPs and backend slots first, then
/// the counters of fresh slots, then each changed VIP's service. Returns how long the last
/// service write took.
pub fn write_maps(maps: &mut Maps, rt: &Runtime, changes: &Changes) -> anyhow::Result<Option<Duration>> {
    for (key, _, backends) in &changes.removed_vips {
        maps.remove_vip(key)?;
        for &id in backends {
            maps.set_backend(id, &Backend::default())?;
        }
    }
    for &id in &changes.removed_backends {
        maps.set_backend(id, &Backend::default())?;
    }
    for &id in &changes.fresh_vips {
        maps.reset_traffic(true, id)?;
    }
    for &id in &changes.fresh_backends {
        maps.reset_traffic(false, id)?;
    }
    let mut took = None;
    for vip in changes.vips.iter().filter_map(|&id| rt.vip_by_id(id)) {
        let started = Instant::now();
        maps.apply_service(&vip.service())?;
        took = Some(started.elapsed());
    }
    Ok(took)
}

/// Makes `next` the running runtime if the maps take every write of `changes` (from
/// `running` to `next`); returns the changes written and the last service write's duration.
/// Otherwise `running` stays, is written back, and [`Failed`] says why; should writing back
/// fail too, that is logged, and the maps may differ from `running` until its VIPs are
/// written again.
pub fn commit(maps: &mut Maps, running: &mut Runtime, next: Runtime, mut changes: Changes) -> Result<(Changes, Option<Duration>), Box<Failed>> {
    (changes.fresh_vips, changes.fresh_backends) = fresh_slots(running, &next);
    match write_maps(maps, &next, &changes) {
        Ok(took) => {
            *running = next;
            Ok((changes, took))
        }
        Err(error) => {
            let undo = running.rollback(&next, &changes);
            if let Err(e) = write_maps(maps, running, &undo) {
                tracing::error!(error = %format!("{e:#}"), "writing the running configuration back to the maps failed; they may differ from it");
            }
            Err(Box::new(Failed { error, undo }))
        }
    }
}

#[cfg(test)]
mod tests {
    //! Against the real maps of a loaded program (root and BPF needed), with a write failure
    //! injected after every possible number of writes.

    use std::collections::HashMap;

    use lb_common::maps::VipKey;

    use super::*;
    use crate::{
        config::{self, AdminState, BackendConfig, Config},
        dataplane::{Dataplane, Sizing},
        health::Health,
    };

    const YAML: &str = "\
global:
  interfaces: [eth0]
  ring_size: 1009
vips:
  - name: web
    address: 10.0.0.1
    port: 80
    health_check:
      type: none
    backends:
      - address: 10.1.0.1
      - address: 10.1.0.2
      - address: 10.1.0.3
  - name: dns
    address: 2001:db8::53
    port: 53
    protocol: udp
    health_check:
      type: none
    backends:
      - address: 2001:db8:1::1
      - address: 2001:db8:1::2
";

    fn config(yaml: &str) -> Config {
        config::parse("t", yaml).unwrap()
    }

    fn load(config: &Config) -> Dataplane {
        let sizing = Sizing { conn_capacity: 4096, vip_capacity: 8, backend_capacity: 64, ..config.sizing() };
        Dataplane::load(&sizing).expect("loading the program (root and BPF needed)")
    }

    /// What the maps serve, by endpoint rather than slot: each VIP's live ring as the
    /// endpoints and states of its slots' backends, and the endpoint of every slot in use.
    fn served(maps: &Maps) -> Served {
        let state = maps.pinned_state().unwrap();
        let mut rings = HashMap::new();
        for (key, meta) in &state.vips {
            let ring: Vec<(Backend, u32)> = (0..maps.ring_size())
                .map(|slot| {
                    let id = maps.ring_slot(meta, slot).unwrap();
                    let b = maps.backend(id).unwrap();
                    (Backend { generation: 0, ..b }, b.generation)
                })
                .collect();
            rings.insert(*key, ring);
        }
        let backends = state.backends.iter().map(|b| (b.id, b.backend)).collect();
        (rings, backends)
    }

    type Served = (HashMap<VipKey, Vec<(Backend, u32)>>, Vec<(u32, Backend)>);

    /// How `found` differs from `expected`, in a few words (empty: not at all).
    fn differences(found: &Served, expected: &Served) -> String {
        let mut out = String::new();
        for (key, ring) in &expected.0 {
            match found.0.get(key) {
                None => out += &format!("VIP {key:?} missing; "),
                Some(r) => {
                    let differ = r.iter().zip(ring).filter(|(a, b)| a != b).count();
                    if differ > 0 {
                        out += &format!("VIP port {}: {differ} ring slots differ; ", key.port);
                    }
                }
            }
        }
        for key in found.0.keys().filter(|k| !expected.0.contains_key(k)) {
            out += &format!("VIP port {} left over; ", key.port);
        }
        let endpoints = |s: &Served| s.1.iter().map(|(_, b)| (b.addr, b.port, b.state)).collect::<Vec<_>>();
        if endpoints(found) != endpoints(expected) {
            out += &format!("backend slots {:?} instead of {:?}", endpoints(found), endpoints(expected));
        }
        out
    }

    /// The maps a fresh data path gets for `rt`.
    fn served_fresh(cfg: &Config, rt: &Runtime) -> Served {
        let mut dp = load(cfg);
        let all = Changes { vips: rt.vips.iter().map(|v| v.id).collect(), ..Changes::default() };
        write_maps(&mut dp.maps, rt, &all).unwrap();
        served(&dp.maps)
    }

    #[test]
    fn a_failed_write_at_any_point_leaves_the_real_maps_serving_the_running_runtime() {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "this test loads the XDP program and must run as root");
        let cfg = config(YAML);
        let mut dp = load(&cfg);
        let (mut running, changes) = Runtime::new(&cfg).unwrap();
        write_maps(&mut dp.maps, &running, &changes).unwrap();
        for id in running.vips.iter().flat_map(|v| v.backends.iter().map(|b| b.id)).collect::<Vec<_>>() {
            running.set_health(id, running.backend_by_id(id).unwrap().1.generation, Health::Up, &mut Changes::default());
        }
        let all = Changes { vips: running.vips.iter().map(|v| v.id).collect(), ..Changes::default() };
        write_maps(&mut dp.maps, &running, &all).unwrap();
        assert_eq!(differences(&served(&dp.maps), &served_fresh(&cfg, &running)), "");

        // Operations as the CLI and the health checker make them, and a reload.
        type Op = Box<dyn Fn(&mut Runtime, &mut Changes)>;
        let add: Op = Box::new(|rt, ch| {
            let b = BackendConfig { address: "10.1.0.9".parse().unwrap(), port: 80, weight: 2, state: AdminState::Up };
            rt.add_backend("web", &b, ch).unwrap();
        });
        let remove: Op = Box::new(|rt, ch| {
            rt.remove_backend("web", "10.1.0.2:80".parse().unwrap(), true, ch).unwrap();
        });
        let down: Op = Box::new(|rt, ch| {
            let (id, generation) = rt.vip("dns").map(|v| (v.backends[0].id, v.backends[0].generation)).unwrap();
            rt.set_health(id, generation, Health::Down, ch);
        });
        let reload: Op = Box::new(|rt, ch| {
            let new = config(&YAML.replace("10.1.0.3", "10.1.0.7").replace("2001:db8::53", "2001:db8::54"));
            let (next, changes) = rt.reconfigured(&new).unwrap();
            *rt = next;
            *ch = changes;
        });
        let mut failures = 0;
        for (name, op) in [("add a backend", &add), ("remove a backend", &remove), ("a health transition", &down), ("reload", &reload)] {
            let expected = served_fresh(&cfg, &running);
            for budget in 0.. {
                let mut next = running.clone();
                let mut changes = Changes::default();
                op(&mut next, &mut changes);
                dp.maps.fail_writes_after(Some(budget));
                let result = commit(&mut dp.maps, &mut running, next.clone(), changes);
                dp.maps.fail_writes_after(None);
                match result {
                    Err(f) => {
                        failures += 1;
                        assert!(f.error.to_string().contains("injected"), "{name}: {:#}", f.error);
                        assert_ne!(running.vips, next.vips, "{name}, failing after {budget} writes: the runtime moved on");
                        let found = differences(&served(&dp.maps), &expected);
                        assert_eq!(found, "", "{name}, failing after {budget} writes: the maps do not serve the running runtime");
                    }
                    Ok(_) => {
                        assert_eq!(differences(&served(&dp.maps), &served_fresh(&cfg, &running)), "", "{name}: the maps do not serve the new runtime");
                        // Back to the start for the next operation.
                        let (back, undo) = running.reconfigured(&cfg).unwrap();
                        let mut restore = back.clone();
                        for v in &mut restore.vips {
                            for b in &mut v.backends {
                                b.health = Health::Up;
                            }
                        }
                        let undo = Changes { vips: restore.vips.iter().map(|v| v.id).collect(), ..undo };
                        commit(&mut dp.maps, &mut running, restore, undo).unwrap();
                        break;
                    }
                }
                assert!(budget < 200, "{name} never succeeded");
            }
        }
        assert!(failures >= 8, "only {failures} injected failures: the operations wrote too little to test");
    }

    #[test]
    fn a_slot_taken_again_counts_from_zero() {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "this test loads the XDP program and must run as root");
        let cfg = config(YAML);
        let mut dp = load(&cfg);
        let (mut running, changes) = Runtime::new(&cfg).unwrap();
        commit(&mut dp.maps, &mut Runtime::new(&config("global:\n  interfaces: [eth0]\n  ring_size: 1009\nvips: []\n")).unwrap().0, running.clone(), changes)
            .unwrap();
        let removed = running.vip("web").unwrap().backends[1].id;
        // Counters as the data path would have left them.
        let cpus = aya::util::nr_cpus().unwrap();
        let used = lb_common::maps::Traffic { packets: 7, bytes: 700, new_flows: 1, dropped: 0 };
        dp.maps.backend_stats_for_tests(removed, &vec![used; cpus]);
        assert_eq!(dp.maps.backend_traffic(removed).unwrap().packets, 7 * cpus as u64);

        let mut next = running.clone();
        let mut ch = Changes::default();
        next.remove_backend("web", "10.1.0.2:80".parse().unwrap(), true, &mut ch).unwrap();
        commit(&mut dp.maps, &mut running, next, ch).unwrap();
        let kept = running.vip("web").unwrap().backends[0].id;
        dp.maps.backend_stats_for_tests(kept, &vec![used; cpus]);
        let mut next = running.clone();
        let mut ch = Changes::default();
        let b = BackendConfig { address: "10.1.0.9".parse().unwrap(), port: 80, weight: 1, state: AdminState::Up };
        let id = next.add_backend("web", &b, &mut ch).unwrap();
        assert_eq!(id, removed, "the freed slot is taken again");
        let (applied, _) = commit(&mut dp.maps, &mut running, next, ch).unwrap();
        assert_eq!(applied.fresh_backends, vec![id]);
        assert_eq!(dp.maps.backend_traffic(id).unwrap(), lb_common::maps::Traffic::default(), "the new backend inherited counters");
        assert_eq!(dp.maps.backend_traffic(kept).unwrap().packets, 7 * cpus as u64, "a kept backend's counters were zeroed");
    }
}
