//! Campaigns: frame `index` of seed `seed` is built and mutated by its own generator
//! (ChaCha8 seeded with `seed`, stream `index`), so any frame is reproducible on its own; each
//! runs through the program and is checked. Failures keep their seed, index, input and output.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng as _;

use super::{
    invariants::{self, Violation},
    model::Model,
    mutate, pcap,
    seeds::{self, KINDS, below},
    wire::hex,
};
use crate::harness::{Lb, Run};

/// One generated input.
#[derive(Clone, Debug)]
pub struct Input {
    /// Index of its seed kind in [`KINDS`].
    pub kind: usize,
    /// The mutations applied, in order (none: the seed itself).
    pub mutations: Vec<&'static str>,
    /// The frame.
    pub bytes: Vec<u8>,
}

/// Frame `index` of campaign `seed`.
pub fn input(model: &Model, seed: u64, index: u64) -> Input {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index);
    let kind = below(&mut rng, KINDS.len());
    let mut bytes = seeds::build(model, kind, &mut rng);
    let mutations = mutate::mutate(model, &mut bytes, &mut rng);
    Input { kind, mutations, bytes }
}

/// Runs `frame` once and checks every invariant on the run (the connection table is read
/// before and after for an input that must create no entry).
pub fn run_one(model: &Model, lb: &Lb, frame: &[u8]) -> (Run, Vec<Violation>) {
    let key = invariants::guarded_key(model, frame);
    let present = |k| {
        lb.dp.maps.conn(k).expect("reading the connection table").is_some()
            || lb.dp.maps.half_open(k).expect("reading the half-open table").is_some()
    };
    let before = key.as_ref().is_some_and(present);
    let run = lb.run(frame);
    let new_entry = key.as_ref().is_some_and(|k| !before && present(k));
    let violations = invariants::check(model, frame, &run, new_entry);
    (run, violations)
}

/// A frame that broke an invariant.
#[derive(Clone, Debug)]
pub struct Failure {
    /// Campaign seed.
    pub seed: u64,
    /// Frame index.
    pub index: u64,
    /// Seed kind.
    pub kind: &'static str,
    /// Mutations applied.
    pub mutations: Vec<&'static str>,
    /// The input frame.
    pub input: Vec<u8>,
    /// The verdict.
    pub action: u32,
    /// The frame as the program left it.
    pub output: Vec<u8>,
    /// What it broke.
    pub violations: Vec<Violation>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "seed {} index {} ({}, mutations {:?}) verdict {}:", self.seed, self.index, self.kind, self.mutations, self.action)?;
        for v in &self.violations {
            writeln!(f, "  {}: {}", v.invariant, v.detail)?;
        }
        writeln!(f, "  input  {}", hex(&self.input))?;
        write!(f, "  output {}", hex(&self.output))
    }
}

/// The class a violation belongs to: its invariant and what it says before any detail.
pub fn class(v: &Violation) -> String {
    format!("{}: {}", v.invariant, v.detail.split([':', ',']).next().unwrap_or(""))
}

/// How a campaign is bounded and what it keeps.
#[derive(Clone, Debug)]
pub struct Options {
    /// Campaign seed.
    pub seed: u64,
    /// Frames to run (indices `0..frames`).
    pub frames: u64,
    /// Stop after this long even if frames remain.
    pub time_limit: Duration,
    /// Failures kept in full (the first ones).
    pub keep: usize,
    /// Where each kept failure's input is written as `<seed>-<index>.pcap`, if anywhere.
    pub pcap_dir: Option<PathBuf>,
    /// Print a progress line every this many frames (0: never).
    pub progress_every: u64,
}

/// What a campaign did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Frames run.
    pub frames: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Frames per seed kind (in [`KINDS`] order).
    pub per_kind: Vec<u64>,
    /// Frames per verdict (XDP action 0..=4).
    pub verdicts: [u64; 5],
    /// Frames that broke at least one invariant.
    pub failed_frames: u64,
    /// Per violation class: count, seed kinds it was seen with, and the first frame index.
    pub classes: BTreeMap<String, (u64, BTreeMap<&'static str, u64>, u64)>,
    /// The first failures, in full.
    pub failures: Vec<Failure>,
    /// Pcap files written.
    pub pcaps: Vec<PathBuf>,
    /// Whether the time limit stopped it before its frame count.
    pub timed_out: bool,
}

/// Runs a campaign on `lb` (set up by `model.start()`).
pub fn run(model: &Model, lb: &Lb, opts: &Options) -> anyhow::Result<Report> {
    let start = Instant::now();
    let mut report = Report { per_kind: vec![0; KINDS.len()], ..Report::default() };
    for index in 0..opts.frames {
        if start.elapsed() > opts.time_limit {
            report.timed_out = true;
            break;
        }
        let inp = input(model, opts.seed, index);
        let (run, violations) = run_one(model, lb, &inp.bytes);
        report.frames += 1;
        report.per_kind[inp.kind] += 1;
        report.verdicts[(run.action as usize).min(4)] += 1;
        if opts.progress_every != 0 && (index + 1) % opts.progress_every == 0 {
            let secs = start.elapsed().as_secs_f64();
            println!("{} frames, {} failed, {:.0} frames/s", index + 1, report.failed_frames, (index + 1) as f64 / secs);
        }
        if violations.is_empty() {
            continue;
        }
        report.failed_frames += 1;
        for v in &violations {
            let e = report.classes.entry(class(v)).or_insert((0, BTreeMap::new(), index));
            e.0 += 1;
            *e.1.entry(KINDS[inp.kind]).or_default() += 1;
        }
        if report.failures.len() < opts.keep {
            if let Some(dir) = &opts.pcap_dir {
                let path = dir.join(format!("{}-{}.pcap", opts.seed, index));
                pcap::write(&path, &[&inp.bytes])?;
                report.pcaps.push(path);
            }
            report.failures.push(Failure {
                seed: opts.seed,
                index,
                kind: KINDS[inp.kind],
                mutations: inp.mutations,
                input: inp.bytes,
                action: run.action,
                output: run.out,
                violations,
            });
        }
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

/// One replayed frame.
#[derive(Debug)]
pub struct Replayed {
    /// The frame.
    pub input: Vec<u8>,
    /// The program's run on it.
    pub run: Run,
    /// What it broke.
    pub violations: Vec<Violation>,
}

/// Replays every frame of the pcap file at `path` on `lb`, checking the invariants.
pub fn replay_file(model: &Model, lb: &Lb, path: &Path) -> anyhow::Result<Vec<Replayed>> {
    Ok(pcap::read(path)?
        .into_iter()
        .map(|input| {
            let (run, violations) = run_one(model, lb, &input);
            Replayed { input, run, violations }
        })
        .collect())
}

/// The `.pcap` files of `dir`, sorted by name.
pub fn pcaps_in(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "pcap"));
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_reproducible_from_its_seed_and_index_alone() {
        let model = Model::standard();
        let a = input(&model, 7, 123_456);
        let b = input(&model, 7, 123_456);
        assert_eq!((a.kind, &a.mutations, &a.bytes), (b.kind, &b.mutations, &b.bytes));
        let kinds: std::collections::BTreeSet<usize> = (0..2000).map(|i| input(&model, 7, i).kind).collect();
        assert_eq!(kinds.len(), KINDS.len(), "every seed kind is drawn");
        assert!((0..50).any(|i| input(&model, 7, i).bytes != input(&model, 8, i).bytes), "seeds differ");
    }
}
