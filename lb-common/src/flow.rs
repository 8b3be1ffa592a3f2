//! One connection-table entry per flow (client → VIP) and its lifecycle.
//!
//! The data path applies [`Flow::after_packet`] to every packet of a tracked flow; the agent and
//! the tests read entries with the same type. Replies (backend → client) have no entry: they
//! are translated from the `REPLIES` map, which the agent writes from the configuration.
//!
//! Times are whole seconds of the kernel's coarse monotonic clock (`bpf_ktime_get_coarse_ns`).

use crate::limits::{TCP_CLOSING_IDLE_SECS, TCP_RESET_LINGER_SECS};

/// TCP after its handshake: lives until the LRU evicts it.
pub const FLOW_OPEN: u8 = 0;
/// TCP after a FIN from the client: expires after [`TCP_CLOSING_IDLE_SECS`] without packets.
pub const FLOW_CLOSING: u8 = 1;
/// TCP after an RST from the client: expires [`TCP_RESET_LINGER_SECS`] later.
pub const FLOW_RESET: u8 = 2;
/// UDP: expires after its VIP's idle timeout without packets.
pub const FLOW_IDLE: u8 = 3;

/// TCP flag FIN.
pub const TCP_FIN: u8 = 0x01;
/// TCP flag SYN.
pub const TCP_SYN: u8 = 0x02;
/// TCP flag RST.
pub const TCP_RST: u8 = 0x04;
/// TCP flag ACK.
pub const TCP_ACK: u8 = 0x10;

/// The connection table's value: which backend a flow was given, and until when it holds.
/// 16 bytes, copied out of the map whole (never read in place: the kernel recycles LRU nodes).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    /// The flow's backend slot.
    pub backend_id: u32,
    /// The low 16 bits of the backend slot's generation when the flow was assigned: a slot
    /// given to another backend no longer matches.
    pub backend_gen: u16,
    /// The flow's VIP id.
    pub vip_id: u16,
    /// Last second the entry is valid (0: no deadline).
    pub deadline: u32,
    /// Idle timeout in seconds for [`FLOW_CLOSING`] and [`FLOW_IDLE`] entries.
    pub idle_secs: u16,
    /// `FLOW_*` state.
    pub state: u8,
    /// The CPU that inserted the entry (its index mod 256): the connection table keeps one LRU
    /// list per CPU, and the entry lives in this CPU's ([`crate::limits::MIN_CONNS_PER_CPU`]).
    pub cpu: u8,
}

/// A new deadline and state for an entry, to be written back by the data path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowUpdate {
    /// New `FLOW_*` state.
    pub state: u8,
    /// New deadline.
    pub deadline: u32,
}

impl Flow {
    /// An entry for a new flow assigned to backend `backend_id` (generation `generation`) of
    /// VIP `vip_id`, inserted by CPU `cpu`: TCP flows are open, UDP flows idle out after
    /// `udp_idle_secs`.
    #[inline(always)]
    pub fn new(backend_id: u32, generation: u32, vip_id: u32, udp: bool, udp_idle_secs: u16, now: u32, cpu: u32) -> Flow {
        let (state, idle_secs, deadline) =
            if udp { (FLOW_IDLE, udp_idle_secs, now.saturating_add(udp_idle_secs as u32)) } else { (FLOW_OPEN, 0, 0) };
        Flow {
            backend_id,
            backend_gen: generation as u16,
            vip_id: vip_id as u16,
            deadline,
            idle_secs,
            state,
            cpu: cpu as u8,
        }
    }

    /// Whether `backend`, found in the entry's backend slot, still takes this flow: the same
    /// generation (not a slot freed and reused since), in a state that keeps flows in the
    /// entry's state. The data path follows only such an entry; the others are rescheduled.
    #[inline(always)]
    pub fn kept_by(&self, backend: &crate::maps::Backend) -> bool {
        backend.generation as u16 == self.backend_gen && crate::maps::BackendState::from_u8(backend.state).keeps_flow(self.state)
    }

    /// Whether the entry has expired at second `now`.
    #[inline(always)]
    pub fn expired(&self, now: u32) -> bool {
        self.deadline != 0 && now > self.deadline
    }

    /// Whether handling a packet of this flow needs the clock (a deadline to check or set).
    #[inline(always)]
    pub fn needs_clock(&self, tcp_flags: u8) -> bool {
        self.deadline != 0 || tcp_flags & (TCP_FIN | TCP_RST) != 0
    }

    /// What a packet with `tcp_flags` (0 for UDP) seen at second `now` does to the entry:
    /// RST starts a short linger, FIN an idle timeout, and a packet of an idling flow pushes
    /// its deadline on (at most once a second, so an entry is written rarely). `None`: no
    /// change.
    #[inline(always)]
    pub fn after_packet(&self, tcp_flags: u8, now: u32) -> Option<FlowUpdate> {
        if tcp_flags & TCP_RST != 0 {
            return (self.state != FLOW_RESET)
                .then_some(FlowUpdate { state: FLOW_RESET, deadline: now.saturating_add(TCP_RESET_LINGER_SECS) });
        }
        let (state, idle) = match self.state {
            FLOW_OPEN if tcp_flags & TCP_FIN != 0 => (FLOW_CLOSING, TCP_CLOSING_IDLE_SECS),
            FLOW_CLOSING => (FLOW_CLOSING, TCP_CLOSING_IDLE_SECS),
            FLOW_IDLE => (FLOW_IDLE, self.idle_secs as u32),
            _ => return None,
        };
        let deadline = now.saturating_add(idle);
        (state != self.state || deadline > self.deadline.saturating_add(1)).then_some(FlowUpdate { state, deadline })
    }
}

/// Seconds of the coarse monotonic clock from its nanoseconds.
#[inline(always)]
pub const fn clock_secs(ns: u64) -> u32 {
    (ns / 1_000_000_000) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u32 = 1000;

    #[test]
    fn new_tcp_flows_are_open_without_deadline_and_udp_flows_idle() {
        let tcp = Flow::new(7, 0x1_0003, 2, false, 30, NOW, 257);
        assert_eq!((tcp.state, tcp.deadline, tcp.backend_gen, tcp.vip_id, tcp.cpu), (FLOW_OPEN, 0, 3, 2, 1));
        assert!(!tcp.expired(u32::MAX));
        let udp = Flow::new(7, 1, 2, true, 30, NOW, 0);
        assert_eq!((udp.state, udp.deadline, udp.idle_secs), (FLOW_IDLE, NOW + 30, 30));
        assert!(!udp.expired(NOW + 30));
        assert!(udp.expired(NOW + 31));
    }

    #[test]
    fn open_tcp_flow_is_written_only_on_fin_or_rst() {
        let open = Flow::new(1, 1, 1, false, 0, NOW, 0);
        assert!(!open.needs_clock(TCP_ACK));
        assert_eq!(open.after_packet(TCP_ACK, NOW), None);
        assert!(open.needs_clock(TCP_ACK | TCP_FIN));
        assert_eq!(
            open.after_packet(TCP_ACK | TCP_FIN, NOW),
            Some(FlowUpdate { state: FLOW_CLOSING, deadline: NOW + TCP_CLOSING_IDLE_SECS })
        );
        assert_eq!(
            open.after_packet(TCP_RST, NOW),
            Some(FlowUpdate { state: FLOW_RESET, deadline: NOW + TCP_RESET_LINGER_SECS })
        );
    }

    #[test]
    fn closing_flow_idles_out_and_reset_flow_lingers_without_extension() {
        let mut f = Flow::new(1, 1, 1, false, 0, NOW, 0);
        let u = f.after_packet(TCP_FIN | TCP_ACK, NOW).unwrap();
        (f.state, f.deadline) = (u.state, u.deadline);
        // Within the same second nothing is written; later packets push the deadline on.
        assert_eq!(f.after_packet(TCP_ACK, NOW + 1), None);
        let later = f.after_packet(TCP_ACK, NOW + 5).unwrap();
        assert_eq!(later, FlowUpdate { state: FLOW_CLOSING, deadline: NOW + 5 + TCP_CLOSING_IDLE_SECS });
        let u = f.after_packet(TCP_RST, NOW + 6).unwrap();
        (f.state, f.deadline) = (u.state, u.deadline);
        assert_eq!(f.after_packet(TCP_ACK, NOW + 7), None, "an RST's linger is not extended");
        assert_eq!(f.after_packet(TCP_RST, NOW + 7), None);
        assert!(f.expired(NOW + 6 + TCP_RESET_LINGER_SECS + 1));
    }

    #[test]
    fn udp_deadline_moves_at_most_once_a_second() {
        let f = Flow::new(1, 1, 1, true, 30, NOW, 0);
        assert_eq!(f.after_packet(0, NOW), None);
        assert_eq!(f.after_packet(0, NOW + 1), None);
        assert_eq!(f.after_packet(0, NOW + 2), Some(FlowUpdate { state: FLOW_IDLE, deadline: NOW + 32 }));
    }

    #[test]
    fn clock_is_whole_seconds() {
        assert_eq!(clock_secs(2_999_999_999), 2);
        assert_eq!(clock_secs(3_000_000_000), 3);
    }
}
