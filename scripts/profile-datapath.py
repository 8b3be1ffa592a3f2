#!/usr/bin/env python3
"""Where an established packet's time goes in the XDP program: a sampled profile.

Runs the data-path benchmark's `tcp_established` path (one hot flow of a Maglev VIP with stable
backends, BPF_PROG_TEST_RUN) in a loop, samples the benchmark process with `perf record`
(cpu-clock: these virtual machines have no hardware counters), and maps every sample that falls
in the load balancer's program to the source line of its BPF instruction: the program's
`jited_line_info` (read with the bpf(2) system call) gives the JIT address of each line-info
record, and `bpftool prog dump xlated linum` gives the record's file and line. Samples in
kernel functions the program calls (a hash map's lookup) count for the calling line. Lines of
library code (aya, core) count for the nearest line of the project before them.

Usage (root; `perf` and `bpftool`, which `scripts/setup.sh` installs):
    scripts/profile-datapath.py LB_BENCH OUT.md [SECONDS]
`cargo xtask profile` runs it on the release build and writes bench/results/profile.md.

Tooling, not product: glue between perf, bpftool and the bpf(2) system call, which no crate
offers; it runs nothing in the data path.
"""

import bisect
import collections
import ctypes
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time

SYS_BPF = 321
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
INFO_LEN = 256

LIBC = ctypes.CDLL(None, use_errno=True)


def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(bytes(attr), len(attr))
    rc = LIBC.syscall(SYS_BPF, cmd, buf, len(attr))
    if rc < 0:
        raise OSError(ctypes.get_errno(), f"bpf({cmd})")
    return rc


def prog_info(prog_id):
    """The program's JIT function addresses and lengths and its JIT line info addresses."""
    fd = bpf(BPF_PROG_GET_FD_BY_ID, struct.pack("<I", prog_id) + b"\0" * 124)
    try:
        def get(info):
            out = ctypes.create_string_buffer(bytes(info), len(info))
            bpf(BPF_OBJ_GET_INFO_BY_FD, struct.pack("<IIQ", fd, len(info), ctypes.addressof(out)) + b"\0" * 112)
            return out.raw

        raw = get(b"\0" * INFO_LEN)
        nr_ksyms, nr_lens = struct.unpack_from("<II", raw, 104)
        nr_line, = struct.unpack_from("<I", raw, 148)
        nr_jline, line_rec, jline_rec = struct.unpack_from("<III", raw, 168)
        ksyms = ctypes.create_string_buffer(8 * nr_ksyms)
        lens = ctypes.create_string_buffer(4 * nr_lens)
        lines = ctypes.create_string_buffer(line_rec * nr_line)
        jlines = ctypes.create_string_buffer(jline_rec * nr_jline)
        info = bytearray(INFO_LEN)
        struct.pack_into("<II", info, 104, nr_ksyms, nr_lens)
        struct.pack_into("<QQ", info, 112, ctypes.addressof(ksyms), ctypes.addressof(lens))
        struct.pack_into("<I", info, 148, nr_line)
        struct.pack_into("<QQ", info, 152, ctypes.addressof(lines), ctypes.addressof(jlines))
        struct.pack_into("<III", info, 168, nr_jline, line_rec, jline_rec)
        get(bytes(info))
        return {
            "ksyms": struct.unpack(f"<{nr_ksyms}Q", ksyms.raw),
            "lens": struct.unpack(f"<{nr_lens}I", lens.raw),
            "jlines": struct.unpack(f"<{nr_jline}Q", jlines.raw),
        }
    finally:
        os.close(fd)


def lb_programs():
    out = subprocess.run(["bpftool", "prog", "show"], capture_output=True, text=True, check=True).stdout
    return {int(m.group(1)) for m in re.finditer(r"^(\d+): xdp\s+name lb_xdp ", out, re.M)}


def line_records(prog_id):
    """Per line-info record, in order: (project file:line or None, function, source text)."""
    out = subprocess.run(["bpftool", "prog", "dump", "xlated", "id", str(prog_id), "linum"], capture_output=True, text=True, check=True).stdout
    records, function = [], None
    for line in out.splitlines():
        if re.match(r"^\S.*\(.*\):$", line):
            function = line.split("(")[0].split()[-1]
        elif line.startswith("; "):
            m = re.search(r"\[file:(\S+) line_num:(\d+)", line)
            text = line[2:line.rfind("[file:")].strip()
            path = m.group(1) if m else ""
            own = "/lb-ebpf/src/" in path or "/lb-common/src/" in path
            where = f"{path.split('/src/')[-1]}:{m.group(2)}" if m and own else None
            records.append((where, function, text))
    # Library lines count for the project's line before them (the call they are inlined into),
    # in their own BPF function (a library function of its own, such as `memset`, keeps its name).
    resolved, last = [], ("?", "")
    for where, function, text in records:
        if where:
            last = (where, text)
        resolved.append((last[0], function, last[1]))
    return resolved


# Steps of the path, in the order the program runs them; the first rule that matches a line
# names its step.
STEPS = [
    ("memset: a BPF function zeroing memory a byte a round", lambda f, fn, t: fn == "memset"),
    ("program entry and exit (prologue, stack frame, verdict return)", lambda f, fn, t: f == "xdp.rs:35"),
    ("parse: Ethernet, IP and TCP headers", lambda f, fn, t: f.startswith("parse.rs") and "frame_len" not in t),
    ("frame length (bpf_xdp_get_buff_len helper call)", lambda f, fn, t: "frame_len" in t),
    ("sanity: IPv4 header checksum, lengths", lambda f, fn, t: f.startswith("sanity.rs") and "martian" not in t and "vip_address" not in t),
    ("hashing: endpoint-filter bit, VIP index slot, flow hash", lambda f, fn, t: f.startswith("hash.rs")),
    ("endpoint filter (ENDPOINT_FILTER)", lambda f, fn, t: "maybe_endpoint" in t or "ENDPOINT_FILTER" in t or "Some(word) =>" in t),
    ("VIP lookup (its map lookups, key comparison, copy)", lambda f, fn, t: fn == "to_vip" or "VIP_INDEX" in t or "VIP_ENTRIES" in t or "find_vip" in t or "entry.key" in t or "vip.write" in t or "index ==" in t or "let word = |x" in t or "word(a" in t),
    ("calls between BPF functions (to_vip, maglev)", lambda f, fn, t: f.startswith("xdp.rs") and ("to_vip(" in t or "match action" in t or "fn maglev" in t or t == "}")),
    ("ring slot: hash modulo the ring size", lambda f, fn, t: "% size" in t or "slot_of" in t or "size == 0" in t),
    ("MOVED bit", lambda f, fn, t: "MOVED" in t or "moved_bit" in t or "is_moved" in t or "moved_words" in t),
    ("source check (martian, VIP address)", lambda f, fn, t: "martian" in t or "client_source_ok" in t or "vip_address" in t or f.startswith("martian.rs")),
    ("counters (verdict, event, VIP and backend traffic)", lambda f, fn, t: f.startswith("stats.rs") or "count" in t),
    ("ring and backend (RING, BACKENDS, schedule::follow)", lambda f, fn, t: f.startswith(("choose.rs", "limits.rs", "schedule.rs")) or "BACKENDS" in t or "follow" in t or "LiveRing" in t),
    ("NAT: destination and checksums", lambda f, fn, t: f.startswith(("nat.rs", "csum.rs")) or fn == "rewrite" or "nat::rewrite" in t),
    ("forward: next hop, MACs, XDP_TX", lambda f, fn, t: f.startswith("forward.rs") or fn == "emit" or "forward" in t),
]


def step_of(where, function, text):
    for name, rule in STEPS:
        if rule(where, function, text):
            return name
    return "other"


def main():
    bench, out_path = sys.argv[1], sys.argv[2]
    seconds = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    before = lb_programs()
    env = dict(os.environ, LB_BENCH_ONLY="tcp_established")
    proc = subprocess.Popen([bench, "datapath", "--sets", "99", "--runs", "200000", "--no-write"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (lb_programs() - before) and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(8)  # past set-up and warm-up, into the timed runs
        ours = sorted(lb_programs() - before)
        if not ours:
            sys.exit("the benchmark loaded no lb_xdp program")
        infos = {i: prog_info(i) for i in ours}
        records = {i: line_records(i) for i in ours}
        data = out_path + ".perf.data"
        subprocess.run(["perf", "record", "-q", "-g", "-F", "20000", "-p", str(proc.pid), "-o", data, "--", "sleep", str(seconds)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        script = subprocess.run(["perf", "script", "-i", data, "-F", "ip,sym"], capture_output=True, text=True).stdout
        os.unlink(data)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait()

    frames = []
    for sample in script.split("\n\n"):
        calls = [l.strip().split(None, 1) for l in sample.strip().splitlines() if l.strip()]
        # The first frame in a BPF program: the sample itself, or the call into a kernel function.
        first = next((c for c in calls if len(c) > 1 and c[1].startswith("bpf_prog_")), None)
        if first and "floor" not in first[1]:
            frames.append(int(first[0], 16))
    # The loaded instance that holds the samples.
    def inside(i):
        ks, ls = infos[i]["ksyms"], infos[i]["lens"]
        return sum(any(k <= a < k + l for k, l in zip(ks, ls)) for a in frames[:20000])
    prog = max(ours, key=inside)
    jl = infos[prog]["jlines"]
    order = sorted(range(len(jl)), key=lambda r: jl[r])
    addrs = [jl[r] for r in order]
    ks, ls = infos[prog]["ksyms"], infos[prog]["lens"]
    steps, lines, total = collections.Counter(), collections.Counter(), 0
    for a in frames:
        if not any(k <= a < k + l for k, l in zip(ks, ls)):
            continue
        r = order[bisect.bisect_right(addrs, a) - 1]
        where, function, text = records[prog][r]
        total += 1
        steps[step_of(where, function, text)] += 1
        lines[(where, text)] += 1
    if total < 1000:
        sys.exit(f"only {total} samples in the program")

    # The measured build is the tree the script runs in; the script may be another commit's.
    def commit_of(tree, paths):
        head = subprocess.run(["git", "-C", tree, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", tree, "status", "--porcelain", "--untracked-files=no", "--", *paths], capture_output=True, text=True).stdout.strip()
        return head, bool(dirty)
    commit, dirty = commit_of(".", ["lb-common", "lb-ebpf", "lb-userspace", "tests", "Cargo.toml", "Cargo.lock"])
    script_commit, script_dirty = commit_of(os.path.dirname(os.path.abspath(__file__)), [os.path.abspath(__file__)])
    dirty = dirty or script_dirty
    rows = [f"| {100 * n / total:5.1f} % | {name} |" for name, n in steps.most_common()]
    top = [f"| {100 * n / total:4.1f} % | `{w}` | `{t[:90]}` |" for (w, t), n in lines.most_common(15)]
    text = "\n".join([
        "# Where an established packet's time goes (sampled profile)",
        "",
        f"The program of commit {commit}{' (dirty: not for publishing)' if dirty else ''}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"profiled by `scripts/profile-datapath.py` of commit {script_commit} (`cargo xtask profile`): the benchmark's `tcp_established` path "
        f"(one hot flow of a Maglev VIP with stable backends: stateless), sampled {seconds} s with perf (cpu-clock, 20 kHz); "
        f"{total} samples in the program, each counted for the source line of its BPF instruction "
        "(kernel functions the program calls count for the calling line, library code for the project's line it is inlined into).",
        "",
        "| share | step |",
        "|---:|---|",
        *rows,
        "",
        "Hottest source lines:",
        "",
        "| share | line | source |",
        "|---:|---|---|",
        *top,
        "",
    ])
    with open(out_path, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
