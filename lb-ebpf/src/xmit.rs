//! Redirect drops the XDP program cannot see. After it returns XDP_REDIRECT the kernel queues
//! the frame for the target interface, which may refuse it there (an interface that cannot
//! transmit XDP frames now, such as a veth whose peer has no NAPI: `xdp:xdp_redirect_err`), or
//! drop it when it sends the queue (`ndo_xdp_xmit` failing, a full TX ring:
//! `xdp:xdp_devmap_xmit`). These two programs add such frames to `REDIRECT_DROPS` when the
//! target is one of the load balancer's interfaces (`EGRESS`). Tracepoints fire for every
//! network namespace: an interface of another namespace with the same index is counted too.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::maps::{EGRESS, REDIRECT_DROPS};

/// Offsets in the records (`/sys/kernel/tracing/events/xdp/<event>/format`).
const XMIT_TO_IFINDEX: usize = 16;
const XMIT_DROPS: usize = 20;
const REDIRECT_ERR_TO_IFINDEX: usize = 24;

/// `xdp:xdp_devmap_xmit`: a queue sent to an interface, with the frames it dropped.
#[tracepoint]
pub fn lb_xdp_xmit(ctx: TracePointContext) -> u32 {
    // SAFETY: reads of the tracepoint record at the offsets its format gives, through
    // bpf_probe_read_kernel.
    let (to, drops) = unsafe { (ctx.read_at::<i32>(XMIT_TO_IFINDEX), ctx.read_at::<i32>(XMIT_DROPS)) };
    if let (Ok(to), Ok(drops)) = (to, drops) {
        count(to, drops);
    }
    0
}

/// `xdp:xdp_redirect_err`: a redirected frame the target interface refused at once.
#[tracepoint]
pub fn lb_xdp_redirect_err(ctx: TracePointContext) -> u32 {
    // SAFETY: as above.
    if let Ok(to) = unsafe { ctx.read_at::<i32>(REDIRECT_ERR_TO_IFINDEX) } {
        count(to, 1);
    }
    0
}

/// Adds `drops` frames to `REDIRECT_DROPS` if interface `to` is one of ours.
#[inline(always)]
fn count(to: i32, drops: i32) {
    if drops <= 0 || EGRESS.get_ptr(&(to as u32)).is_none() {
        return;
    }
    if let Some(count) = REDIRECT_DROPS.get_ptr_mut(0) {
        // SAFETY: this CPU's slot of a per-CPU array; a tracepoint program is not preempted by
        // another on the same CPU.
        unsafe { *count += drops as u64 };
    }
}
