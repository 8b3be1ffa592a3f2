//! Programs for the benchmarks (`cargo xtask bench`), not part of the load balancer:
//!
//! - `floor_pass`: returns XDP_PASS — the floor of the paths that hand a packet to the kernel;
//! - `floor_tx`: swaps the MAC addresses and returns XDP_TX — the floor of the paths that send
//!   a rewritten packet on;
//! - `floor_redirect`: redirects every frame to the interface `FLOOR_IFINDEX` — the bare
//!   forwarder, the ceiling of the throughput benchmark;
//! - `gen_frames`: the packet generator run in live-frames mode (BPF_F_TEST_XDP_LIVE_FRAMES):
//!   writes the template frame of `GEN_TEMPLATE` over every frame (live-frames mode does not
//!   restore frame contents, and a forwarder's rewrites come back through zero-copy veth
//!   redirect), gives it one of `GEN_FLOW_MASK + 1` UDP source ports and sends it out of the
//!   ingress interface;
//! - `rx_count`: counts and drops every frame — the receiver on the backends' side.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

/// The crate only means something for the BPF target; on the host it is an empty binary.
#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        bindings::xdp_action,
        helpers::bpf_redirect,
        macros::{map, xdp},
        maps::{Array, PerCpuArray},
        programs::XdpContext,
    };

    /// Length of the generator's template frame (a minimum-size Ethernet frame without FCS).
    pub const GEN_FRAME_LEN: usize = 64;
    /// Offset of the UDP source port in the template (Ethernet, IPv4 without options, UDP).
    const GEN_SPORT_OFFSET: usize = 14 + 20;

    /// Egress interface of `floor_redirect`; set at load time.
    #[unsafe(no_mangle)]
    static FLOOR_IFINDEX: u32 = 0;

    /// Source ports of the generated flows: `GEN_SPORT_BASE + (n & GEN_FLOW_MASK)`.
    #[unsafe(no_mangle)]
    static GEN_FLOW_MASK: u32 = 0;
    #[unsafe(no_mangle)]
    static GEN_SPORT_BASE: u32 = 10000;

    /// The frame `gen_frames` sends (index 0), written by the benchmark.
    #[map]
    static GEN_TEMPLATE: Array<[u64; GEN_FRAME_LEN / 8]> = Array::with_max_entries(1, 0);

    /// Frames generated per CPU (index 0).
    #[map]
    static GEN_SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

    /// Frames received per CPU (index 0).
    #[map]
    static RX_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

    #[inline(always)]
    fn global(v: &u32) -> u32 {
        // SAFETY: a read of a read-only global the loader may rewrite; volatile keeps the
        // compiler from folding the default value in.
        unsafe { core::ptr::read_volatile(v) }
    }

    #[xdp]
    pub fn floor_pass(_ctx: XdpContext) -> u32 {
        xdp_action::XDP_PASS
    }

    #[xdp]
    pub fn floor_tx(ctx: XdpContext) -> u32 {
        let (start, end) = (ctx.data(), ctx.data_end());
        if start + 12 > end {
            return xdp_action::XDP_PASS;
        }
        let eth = start as *mut [u8; 6];
        // SAFETY: the first 12 bytes are inside the frame (checked above).
        unsafe {
            let dst = *eth;
            *eth = *eth.add(1);
            *eth.add(1) = dst;
        }
        xdp_action::XDP_TX
    }

    #[xdp]
    pub fn floor_redirect(_ctx: XdpContext) -> u32 {
        // SAFETY: a helper call with plain integer arguments.
        unsafe { bpf_redirect(global(&FLOOR_IFINDEX), 0) as u32 }
    }

    #[xdp]
    pub fn gen_frames(ctx: XdpContext) -> u32 {
        let (start, end) = (ctx.data(), ctx.data_end());
        if start + GEN_FRAME_LEN > end {
            return xdp_action::XDP_ABORTED;
        }
        let Some(template) = GEN_TEMPLATE.get(0) else {
            return xdp_action::XDP_ABORTED;
        };
        let Some(seq) = GEN_SEQ.get_ptr_mut(0) else {
            return xdp_action::XDP_ABORTED;
        };
        // SAFETY: per-CPU slot; no concurrent writer.
        let n = unsafe {
            let n = *seq;
            *seq = n + 1;
            n
        };
        let frame = start as *mut u64;
        // SAFETY: `GEN_FRAME_LEN` bytes are inside the frame (checked above); XDP frame data
        // is at least 2-byte aligned and BPF allows unaligned 8-byte stores to packet data on
        // the architectures the benchmark runs on.
        unsafe {
            for (i, word) in template.iter().enumerate() {
                core::ptr::write_unaligned(frame.add(i), *word);
            }
            let sport = (global(&GEN_SPORT_BASE) + (n as u32 & global(&GEN_FLOW_MASK))) as u16;
            let p = (start + GEN_SPORT_OFFSET) as *mut [u8; 2];
            *p = sport.to_be_bytes();
        }
        xdp_action::XDP_TX
    }

    #[xdp]
    pub fn rx_count(_ctx: XdpContext) -> u32 {
        if let Some(c) = RX_COUNT.get_ptr_mut(0) {
            // SAFETY: per-CPU slot; no concurrent writer.
            unsafe { *c += 1 };
        }
        xdp_action::XDP_DROP
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach here; nothing calls it at run time.
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
