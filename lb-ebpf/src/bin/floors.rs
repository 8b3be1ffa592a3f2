//! Programs for the benchmarks (`cargo xtask bench`), not part of the load balancer:
//!
//! - `floor_pass`: returns XDP_PASS — the floor of the paths that hand a packet to the kernel;
//! - `floor_tx`: swaps the MAC addresses and returns XDP_TX — the floor of the paths that send
//!   a rewritten packet on;
//! - `floor_insert`: builds the connection table's key (`FlowKey`, 40 bytes) from the IPv4
//!   addresses, ports and protocol of the frame, inserts it with a constant `Flow` (16 bytes)
//!   into `FLOOR_CONNS`, an LRU hash the loader sizes like the `CONNS` it is compared with, swaps
//!   the MACs and returns XDP_TX (XDP_ABORTED if the insert fails) — one LRU insert, the least
//!   any connection table can cost per new flow;
//! - `floor_insert_percpu`: the same into `FLOOR_CONNS_PERCPU`, an LRU hash with per-CPU LRU
//!   lists (BPF_F_NO_COMMON_LRU) — the per-CPU table measured against the shared one;
//! - `floor_encap`: moves the Ethernet header 20 bytes forward (bpf_xdp_adjust_head) with its
//!   MACs swapped and its EtherType copied, writes a fixed outer IPv4 header (IPIP from
//!   `FLOOR_OUTER_SRC` to `FLOOR_OUTER_DST`, TTL 64, DF, its total length from the frame and
//!   its checksum) in front of the IP packet and returns XDP_TX — the least a `tunnel` forward
//!   can cost, the encapsulation floor;
//! - `floor_encap_gue`: the same with a fixed UDP header (from port 49152 to the default GUE
//!   port, no checksum) behind the IPv4 header, 28 bytes pushed — the floor of a `gue` forward;
//! - `floor_redirect`: redirects every frame to the interface `FLOOR_IFINDEX` — the bare
//!   forwarder, the ceiling of the throughput benchmark;
//! - `gen_frames`: the packet generator run in live-frames mode (BPF_F_TEST_XDP_LIVE_FRAMES):
//!   writes the template frame of `GEN_TEMPLATE` over every frame (live-frames mode does not
//!   restore frame contents, and a forwarder's rewrites come back through zero-copy veth
//!   redirect), gives it one of `GEN_FLOW_MASK + 1` UDP source ports and sends it out of the
//!   ingress interface;
//! - `rx_count`: counts and drops every frame — the receiver on the backends' side.
#![cfg_attr(
    target_arch = "bpf",
    expect(
        clippy::needless_borrows_for_generic_args,
        reason = "map keys and values go to aya's `impl Borrow` arguments by reference, so that no copy of them is made on the 512-byte BPF stack"
    )
)]
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

/// The crate only means something for the BPF target; on the host it is an empty binary.
#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        bindings::{BPF_F_NO_COMMON_LRU, xdp_action},
        helpers::{bpf_redirect, generated::bpf_xdp_adjust_head},
        macros::{map, xdp},
        maps::{Array, LruHashMap, PerCpuArray},
        programs::XdpContext,
    };
    use lb_common::{
        encap::{DEFAULT_GUE_PORT, ETH_HLEN, IPPROTO_IPIP, IPPROTO_UDP, IPV4_HLEN, UDP_HLEN, ipv4_outer_header},
        maps::{FAMILY_V4, Flow, FlowKey},
    };

    /// Outer source address of the encapsulation floors.
    pub const FLOOR_OUTER_SRC: [u8; 4] = [10, 9, 0, 1];
    /// Outer destination address of the encapsulation floors.
    pub const FLOOR_OUTER_DST: [u8; 4] = [10, 0, 11, 2];
    /// UDP source port of `floor_encap_gue`.
    pub const FLOOR_GUE_SPORT: u16 = 49152;

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

    /// The connection table of `floor_insert`: the key and value of the data path's `CONNS`,
    /// resized at load time to the capacity of the `CONNS` it is compared with (small by
    /// default: the other users of this object do not pay for a preallocated table).
    #[map]
    static FLOOR_CONNS: LruHashMap<FlowKey, Flow> = LruHashMap::with_max_entries(FLOOR_CONNS_DEFAULT, 0);

    /// The connection table of `floor_insert_percpu`: `FLOOR_CONNS` with per-CPU LRU lists
    /// (BPF_F_NO_COMMON_LRU) instead of one shared list. The kernel splits the preallocated
    /// entries evenly between the possible CPUs' free lists, and an insert takes from and
    /// evicts within its own CPU's list only, so one CPU holds at most capacity / CPUs entries
    /// (the kernel rounds the capacity up to a multiple of the CPUs). Resized like
    /// `FLOOR_CONNS`.
    #[map]
    static FLOOR_CONNS_PERCPU: LruHashMap<FlowKey, Flow> =
        LruHashMap::with_max_entries(FLOOR_CONNS_DEFAULT, BPF_F_NO_COMMON_LRU);

    /// Entries of `FLOOR_CONNS` and `FLOOR_CONNS_PERCPU` unless the loader sets another size.
    const FLOOR_CONNS_DEFAULT: u32 = 1024;

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

    /// One LRU insert into the shared table `FLOOR_CONNS` (one LRU list for all CPUs), then
    /// the MAC swap and XDP_TX; XDP_ABORTED if the insert fails.
    #[xdp]
    pub fn floor_insert(ctx: XdpContext) -> u32 {
        insert_flow(&ctx, &FLOOR_CONNS)
    }

    /// One LRU insert into `FLOOR_CONNS_PERCPU` (per-CPU LRU lists), then the MAC swap and
    /// XDP_TX; XDP_ABORTED if the insert fails. Otherwise the same program as `floor_insert`.
    #[xdp]
    pub fn floor_insert_percpu(ctx: XdpContext) -> u32 {
        insert_flow(&ctx, &FLOOR_CONNS_PERCPU)
    }

    /// The body of the insert floors: builds the `FlowKey` of the frame's IPv4 addresses,
    /// ports and protocol, inserts it with a constant `Flow` into `conns`, swaps the MACs and
    /// returns XDP_TX (XDP_ABORTED if the insert fails, XDP_PASS for a frame too short).
    #[inline(always)]
    fn insert_flow(ctx: &XdpContext, conns: &LruHashMap<FlowKey, Flow>) -> u32 {
        // Ethernet (14), IPv4 without options (20), the ports (4).
        const IP: usize = 14;
        const L4: usize = IP + 20;
        let (start, end) = (ctx.data(), ctx.data_end());
        if start + L4 + 4 > end {
            return xdp_action::XDP_PASS;
        }
        let p = start as *mut u8;
        // SAFETY: every byte read or written is below `L4 + 4`, inside the frame (checked
        // above); the reads are byte-wise, so alignment does not matter.
        unsafe {
            let at = |i: usize| *p.add(i);
            let v4 = |i: usize| [at(i), at(i + 1), at(i + 2), at(i + 3), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            let key = FlowKey {
                src: v4(IP + 12),
                dst: v4(IP + 16),
                sport: u16::from_be_bytes([at(L4), at(L4 + 1)]),
                dport: u16::from_be_bytes([at(L4 + 2), at(L4 + 3)]),
                proto: at(IP + 9),
                family: FAMILY_V4,
                pad: [0; 2],
            };
            let flow = Flow { backend_id: 1, backend_gen: 1, vip_id: 1, deadline: 0, idle_secs: 0, state: 0, cpu: 0 };
            if conns.insert(&key, &flow, 0).is_err() {
                return xdp_action::XDP_ABORTED;
            }
            let eth = p as *mut [u8; 6];
            let dst = *eth;
            *eth = *eth.add(1);
            *eth.add(1) = dst;
        }
        xdp_action::XDP_TX
    }

    /// Pushes a fixed outer IPv4 header (IPIP) and returns XDP_TX.
    #[xdp]
    pub fn floor_encap(ctx: XdpContext) -> u32 {
        push_outer::<false>(&ctx)
    }

    /// Pushes a fixed outer IPv4 and UDP header (GUE) and returns XDP_TX.
    #[xdp]
    pub fn floor_encap_gue(ctx: XdpContext) -> u32 {
        push_outer::<true>(&ctx)
    }

    /// The body of the encapsulation floors: grows the frame at its start by the outer
    /// header, moves the Ethernet header there (MACs swapped, EtherType copied), writes the
    /// fixed outer IPv4 header of the IPv4 packet behind it (and, with `GUE`, the fixed UDP
    /// header) and returns XDP_TX (XDP_ABORTED if the frame cannot grow or is too short).
    #[inline(always)]
    fn push_outer<const GUE: bool>(ctx: &XdpContext) -> u32 {
        let outer = IPV4_HLEN + if GUE { UDP_HLEN } else { 0 };
        // SAFETY: a helper call on this program's context; every packet pointer is derived
        // from the context afterwards.
        if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(outer as i32)) } != 0 {
            return xdp_action::XDP_ABORTED;
        }
        let (start, end) = (ctx.data(), ctx.data_end());
        if start + outer + ETH_HLEN > end {
            return xdp_action::XDP_ABORTED;
        }
        let inner_len = end - start - outer - ETH_HLEN;
        let p = start as *mut u8;
        // SAFETY: every byte read or written is below `outer + ETH_HLEN`, inside the frame
        // (checked above); the old Ethernet header (from `outer`) and the new one (below 14)
        // do not overlap, and every access is of byte arrays, so alignment does not matter.
        unsafe {
            let old = p.add(outer) as *const [u8; 6];
            let (dst, src) = (*old, *old.add(1));
            *(p as *mut [u8; 6]) = src;
            *(p.add(6) as *mut [u8; 6]) = dst;
            *(p.add(12) as *mut [u8; 2]) = *(p.add(outer + 12) as *const [u8; 2]);
            let proto = if GUE { IPPROTO_UDP } else { IPPROTO_IPIP };
            *(p.add(ETH_HLEN) as *mut [u8; IPV4_HLEN]) =
                ipv4_outer_header(&FLOOR_OUTER_SRC, &FLOOR_OUTER_DST, (outer + inner_len) as u16, 0, 64, proto);
            if GUE {
                let (s, d, l) = (FLOOR_GUE_SPORT.to_be_bytes(), DEFAULT_GUE_PORT.to_be_bytes(), ((UDP_HLEN + inner_len) as u16).to_be_bytes());
                *(p.add(ETH_HLEN + IPV4_HLEN) as *mut [u8; UDP_HLEN]) = [s[0], s[1], d[0], d[1], l[0], l[1], 0, 0];
            }
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
