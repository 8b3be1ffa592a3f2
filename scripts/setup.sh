#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine: installs only what is missing.
#   - LLVM 22 development files (bpf-linker links against the same LLVM major as rustc)
#   - bpf-linker built against LLVM 22
#   - the nightly toolchain's rust-src (the eBPF object is built with -Z build-std=core), and
#     clippy for both toolchains (the full `cargo xtask test` lints the host and eBPF crates)
#   - runtime tools used by the tests and the lab (iproute2, ethtool, ping, hping3 for the
#     SYN flood test, bird2 and keepalived for the high-availability lab, prometheus for the
#     dashboard test, which runs the binary itself in a lab namespace: the package's own
#     service is not needed)
#   - what `cargo xtask package` and its test use: dpkg-dev (dpkg-shlibdeps), binutils (strip),
#     lintian, and systemd for `systemd-analyze verify` (the test installs nothing on the host)
#   - what `cargo xtask profile` uses: linux-perf, bpftool and python3
# Safe to run any number of times; prints what it does.
set -euo pipefail

log() { printf '[setup] %s\n' "$*"; }

need_apt=()
for pkg in llvm-22-dev libpolly-22-dev zlib1g-dev libzstd-dev iproute2 ethtool iputils-ping hping3 bird2 keepalived prometheus dpkg-dev binutils lintian systemd linux-perf bpftool python3; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
  log "installing Debian packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
else
  log "Debian packages present"
fi

if ! rustup toolchain list | grep -q '^nightly'; then
  log "installing the nightly toolchain"
  rustup toolchain install nightly --profile minimal
fi
if ! rustup component list --toolchain nightly --installed | grep -q '^rust-src'; then
  log "adding rust-src to nightly"
  rustup component add rust-src --toolchain nightly
else
  log "nightly rust-src present"
fi
# Clippy for the host crates (default toolchain) and for the eBPF crate (nightly): the full
# `cargo xtask test` lints both.
for toolchain in "" nightly; do
  if ! rustup component list ${toolchain:+--toolchain $toolchain} --installed | grep -q '^clippy'; then
    log "adding clippy${toolchain:+ to $toolchain}"
    rustup component add clippy ${toolchain:+--toolchain $toolchain}
  fi
done

if ! command -v bpf-linker >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/bpf-linker" ]; then
  log "building bpf-linker against LLVM 22 (about 80 s)"
  # llvm-sys finds LLVM through LLVM_SYS_221_PREFIX, bpf-linker's build script through
  # LLVM_PREFIX (otherwise the first llvm-config on PATH, which may be another major).
  LLVM_SYS_221_PREFIX=/usr/lib/llvm-22 LLVM_PREFIX=/usr/lib/llvm-22 \
    cargo install --locked bpf-linker \
    --no-default-features --features llvm-22
else
  log "bpf-linker present"
fi

if ! mountpoint -q /sys/fs/bpf 2>/dev/null; then
  log "mounting bpffs on /sys/fs/bpf"
  mount -t bpf bpf /sys/fs/bpf || log "could not mount bpffs (pinning will be unavailable)"
fi
log "done"
