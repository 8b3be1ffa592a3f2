//! Reads the connection tables in batches (`BPF_MAP_LOOKUP_BATCH`: thousands of entries per
//! system call instead of two calls per entry), on a thread of its own: the counts of live flows
//! per backend that least-conn, `lb status` and the metrics use are recounted there once a
//! second, and the agent's loop only receives the result.

use std::{
    collections::{BTreeSet, HashMap},
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use lb_common::{
    flow::{FLOW_IDLE, FLOW_OPEN, Flow, clock_secs},
    maps::FlowKey,
};

use super::ring_history::MovedCheck;

/// Entries asked for per system call.
const BATCH: usize = 4096;
/// `BPF_MAP_LOOKUP_BATCH` (linux/bpf.h).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// `union bpf_attr`'s `batch` member.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Calls `f` with every entry of the hash map `fd` whose keys are `FlowKey`s and values `Flow`s
/// (the connection table and the half-open table). Entries the data path adds or evicts during
/// the walk may be seen or missed. Returns the number of entries seen.
pub fn walk(fd: BorrowedFd<'_>, mut f: impl FnMut(&FlowKey, &Flow)) -> std::io::Result<usize> {
    let mut keys = vec![FlowKey::default(); BATCH];
    let mut values = vec![Flow::default(); BATCH];
    // Hash maps use a bucket index as the batch token.
    let (mut token_in, mut token_out) = (0u32, 0u32);
    let mut first = true;
    let mut seen = 0;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { &raw mut token_in as u64 },
            out_batch: &raw mut token_out as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: BATCH as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` points at buffers of `count` keys and values of the map's key and value
        // sizes (FlowKey and Flow, checked when the maps were adopted or created) and at two
        // u32 batch tokens, all alive for the call; the kernel writes only within them.
        let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_LOOKUP_BATCH, &raw mut attr, size_of::<BatchAttr>()) };
        let error = (rc < 0).then(std::io::Error::last_os_error);
        let filled = (attr.count as usize).min(BATCH);
        for (k, v) in keys[..filled].iter().zip(&values[..filled]) {
            f(k, v);
        }
        seen += filled;
        match error {
            None => {}
            // The last batch.
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(seen),
            Some(e) => return Err(e),
        }
        token_in = token_out;
        first = false;
    }
}

/// The kernel's coarse monotonic clock in the data path's whole seconds.
pub fn now_secs() -> u32 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    clock_secs(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// Whether an entry is a live flow at `now`: TCP open (no FIN or RST seen) or UDP not expired.
pub fn is_live(flow: &Flow, now: u32) -> bool {
    (flow.state == FLOW_OPEN || flow.state == FLOW_IDLE) && !flow.expired(now)
}

/// One count of both tables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableCounts {
    /// Live flows per backend slot, from the connection table. Half-open entries (a SYN and
    /// nothing since) are not flows yet: the data path counts a least-conn SYN when it chooses
    /// its backend, and a flood of SYNs must not weigh on the next recount.
    pub live: HashMap<u32, u64>,
    /// Entries in the connection table, live or not.
    pub entries: u64,
    /// Entries in the connection table by the CPU that created them (whose LRU list holds
    /// them), by CPU index.
    pub per_cpu: Vec<u64>,
    /// Entries in the half-open table.
    pub half_open: u64,
    /// For each [`MovedCheck`] given to the walk: the VIP id, its ring version, and the moved
    /// slots that hold live entries whose backend differs from the live ring's.
    pub moved: Vec<(u32, u64, BTreeSet<u32>)>,
    /// How long the count took.
    pub took: Duration,
}

/// Counts both tables, and answers `checks` (with the flow hash `seed`).
pub fn count(conns: BorrowedFd<'_>, half_open: BorrowedFd<'_>, checks: &[MovedCheck], seed: u32) -> std::io::Result<TableCounts> {
    let started = Instant::now();
    let now = now_secs();
    let mut counts = TableCounts::default();
    let mut live = HashMap::new();
    let mut per_cpu = Vec::new();
    let mut needed: Vec<BTreeSet<u32>> = vec![BTreeSet::new(); checks.len()];
    counts.entries = walk(conns, |key, flow| {
        for (check, needed) in checks.iter().zip(needed.iter_mut()) {
            check.note(key, flow, now, seed, needed);
        }
        let cpu = usize::from(flow.cpu);
        if per_cpu.len() <= cpu {
            per_cpu.resize(cpu + 1, 0);
        }
        per_cpu[cpu] += 1;
        if is_live(flow, now) {
            *live.entry(flow.backend_id).or_insert(0) += 1;
        }
    })? as u64;
    counts.live = live;
    counts.per_cpu = per_cpu;
    counts.moved = checks.iter().zip(needed).map(|(c, n)| (c.vip_id, c.version, n)).collect();
    counts.half_open = walk(half_open, |_, _| {})? as u64;
    counts.took = started.elapsed();
    Ok(counts)
}

/// What the agent asks of each walk besides the counts: the moved slots to check, and the
/// flow hash seed.
pub type Checks = Arc<Mutex<(Vec<MovedCheck>, u32)>>;

/// Recounts the tables `(conns, half_open)` (from [`super::Maps::table_fds`]) every `every`
/// until `stop`, answering the `checks` current at each walk's start, and sends each count to
/// `out` (a failed count is logged and skipped).
pub fn spawn_counter(
    (conns, half_open): (OwnedFd, OwnedFd),
    every: Duration,
    stop: Arc<AtomicBool>,
    checks: Checks,
    out: tokio::sync::mpsc::UnboundedSender<TableCounts>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("table-count".into()).spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let (checks, seed) = checks.lock().map(|c| c.clone()).unwrap_or_default();
            match count(conns.as_fd(), half_open.as_fd(), &checks, seed) {
                Ok(counts) => {
                    if out.send(counts).is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "counting the connection table failed"),
            }
            std::thread::sleep(every.saturating_sub(started.elapsed()));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::flow::{FLOW_CLOSING, FLOW_RESET};

    #[test]
    fn live_flows_are_open_tcp_and_unexpired_udp() {
        let flow = |state, deadline| Flow { backend_id: 1, state, deadline, ..Flow::default() };
        assert!(is_live(&flow(FLOW_OPEN, 0), 100));
        assert!(is_live(&flow(FLOW_IDLE, 100), 100));
        assert!(!is_live(&flow(FLOW_IDLE, 99), 100), "expired");
        assert!(!is_live(&flow(FLOW_CLOSING, 130), 100), "a FIN ends it");
        assert!(!is_live(&flow(FLOW_RESET, 102), 100), "an RST ends it");
    }

    #[test]
    fn the_batch_attribute_has_the_kernels_layout() {
        use std::mem::offset_of;
        // linux/bpf.h: four __aligned_u64, then __u32 count, __u32 map_fd, __u64 elem_flags,
        // __u64 flags.
        let offsets = [offset_of!(BatchAttr, count), offset_of!(BatchAttr, map_fd), offset_of!(BatchAttr, elem_flags), offset_of!(BatchAttr, flags)];
        assert_eq!((offsets, size_of::<BatchAttr>()), ([32, 36, 40, 48], 56));
    }
}
