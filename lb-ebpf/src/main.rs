//! The load balancer's XDP program. Each packet goes top to bottom through:
//! parse → sanity → VIP lookup → connection table → scheduler → NAT rewrite, or for a direct
//! server return VIP the outer header → forward.
//! Replies from backends are translated back to the VIP from the `REPLIES` map (no per-flow
//! state); ICMP errors follow their flow.
#![cfg_attr(
    target_arch = "bpf",
    expect(
        clippy::needless_borrows_for_generic_args,
        reason = "map keys and values go to aya's `impl Borrow` arguments by reference, so that no copy of them is made on the 512-byte BPF stack"
    )
)]
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod choose;
#[cfg(target_arch = "bpf")]
mod conntrack;
#[cfg(target_arch = "bpf")]
mod dsr;
#[cfg(target_arch = "bpf")]
mod forward;
#[cfg(target_arch = "bpf")]
mod icmp;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod mss;
#[cfg(target_arch = "bpf")]
mod nat;
#[cfg(target_arch = "bpf")]
mod parse;
#[cfg(target_arch = "bpf")]
mod sanity;
#[cfg(target_arch = "bpf")]
mod stats;
#[cfg(target_arch = "bpf")]
mod sync;
#[cfg(target_arch = "bpf")]
mod too_big;
#[cfg(target_arch = "bpf")]
mod xdp;
#[cfg(target_arch = "bpf")]
mod xmit;

/// The crate only means something for the BPF target; on the host it is an empty binary
/// so that workspace-wide commands still build.
#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach here; nothing calls it at run time.
    loop {}
}

/// Some helpers (bpf_fib_lookup) are GPL-only.
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
