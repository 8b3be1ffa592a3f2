//! The per-CPU counters the data path keeps: one for every verdict reason.

/// Why the data path gave a packet the verdict it gave. The discriminant is the index in the
/// `REASONS` per-CPU array.
/// Why the data path gave a packet the verdict it gave (or, for the last [`Reason::EVENTS`], an
/// event it counted beside a verdict). The discriminant is the index in the `REASONS` per-CPU
/// array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Client packet for a VIP sent to its backend.
    ForwardToBackend = 0,
    /// Backend reply rewritten to the VIP and sent towards the client.
    ReplyToClient,
    /// Not IPv4 or IPv6 (ARP, LLDP, ...): passed to the kernel.
    PassNotIp,
    /// IPv4/IPv6 but neither TCP nor UDP, nor an ICMP error of a VIP flow (echo, neighbour
    /// discovery, ...): passed.
    PassNotTcpUdp,
    /// TCP/UDP to no VIP and not from a backend endpoint (or from one, to this host): passed.
    PassNotVip,
    /// IPv4 fragment (MF set or non-zero offset) not addressed to a VIP address: passed.
    PassFragment,
    /// IPv4 header with options, not addressed to a VIP address: passed.
    PassIpv4Options,
    /// IPv6 with an extension header before TCP/UDP: passed.
    PassIpv6ExtHeader,
    /// Frame ends inside a header: passed (the kernel drops it).
    PassTruncated,
    /// IPv4 IHL below 5 or wrong IP version field: passed (the kernel drops it).
    PassMalformed,
    /// More than one VLAN tag: passed.
    PassVlanStacked,
    /// Rewritten, but no next hop known and the FIB had none either: handed to the kernel,
    /// which forwards it and resolves the neighbour.
    PassToKernelRoute,
    /// Rewritten, but its next hop leaves through an interface the program does not run on
    /// (a management NIC, a bond or bridge, a VLAN of another interface): XDP cannot be trusted
    /// to send there, so the kernel forwards it.
    PassNotXdpEgress,
    /// A VIP's every backend is down or draining for a new flow: dropped.
    DropNoBackend,
    /// Ring or backend map lookup failed (agent still filling the maps): dropped.
    DropMapMiss,
    /// IPv4 fragment addressed to a VIP address: dropped (the host would answer it with a
    /// reset or an ICMP error).
    DropFragment,
    /// IPv4 header with options addressed to a VIP address: dropped (not balanced).
    DropIpv4Options,
    /// IPv4 header checksum wrong, for a VIP or from a backend: dropped.
    DropBadChecksum,
    /// IP length field does not fit the frame (or is below the headers), for a VIP or from
    /// a backend: dropped.
    DropBadLength,
    /// TCP data offset below 5 words: dropped (one reaching past the IP length is `DropBadLength`).
    DropBadTcpHeader,
    /// New flow from a martian source (broadcast, multicast, loopback, unspecified, a VIP
    /// address), or a reply to a martian destination: dropped, nothing inserted.
    DropMartian,
    /// ICMP or ICMPv6 error about a VIP flow, sent on to the flow's backend.
    IcmpToBackend,
    /// A backend's ICMP or ICMPv6 error about a client's packet, rewritten to the VIP and sent
    /// towards the client.
    IcmpToClient,
    /// A packet for a direct server return backend without a path the program can use: no
    /// next hop resolved yet (the agent resolves it within a second of the neighbour being
    /// known), no tunnel source address yet, or a frame that could not grow: dropped (handed to
    /// the kernel, it would be answered by this host, which holds the VIP).
    DropDsrNoPath,
    /// A packet that would exceed the tunnel MTU once encapsulated, answered with an ICMP
    /// "fragmentation needed" or ICMPv6 "packet too big" carrying the MTU left for it (sent
    /// back out of the interface it came in by).
    IcmpTooBig,
    /// A packet that would exceed the tunnel MTU once encapsulated and got no ICMP error: an
    /// IPv4 packet without DF (XDP cannot fragment it), or over this CPU's budget of
    /// [`crate::limits::TOO_BIG_PER_CPU_PER_SEC`] errors a second: dropped.
    DropTooBig,
    /// Event, not a verdict: a connection-table insert failed (the packet is still forwarded).
    ConnInsertFailed,
    /// Event, not a verdict: a tracked flow's backend went down; the flow was given a new backend.
    Rescheduled,
    /// Event, not a verdict: a TCP packet other than a SYN found no entry and follows no SYN
    /// of this node (the entry was evicted or expired, or the flow moved here from another
    /// node). Maglev gives it the same backend while the backend set is unchanged.
    FlowResumedWithoutEntry,
    /// Event, not a verdict: the MSS option of a client's SYN to a tunnel or GUE VIP with
    /// `mss_clamp` was lowered to fit the tunnel MTU.
    MssClamped,
    /// Event, not a verdict: a client packet for a Maglev VIP whose ring slot has not moved,
    /// sent by the live ring alone: no connection-table lookup, no insert.
    Stateless,
    /// Event, not a verdict: a client packet for a Maglev VIP whose ring slot moved in a recent
    /// change (or holds flows older than one), decided with the connection table.
    MovedSlot,
    /// Event, not a verdict: a packet in a moved slot without an entry and without a SYN, taken
    /// as a flow older than the change: sent by the VIP's retained ring and recorded.
    RetainedRing,
    /// Event, not a verdict: a flow sync record (a connection that started in a moved slot)
    /// found the `FLOW_SYNC` ring buffer full and was dropped: the agent reads it too slowly.
    FlowSyncDropped,
}

impl Reason {
    /// Number of reasons (size of the `REASONS` map).
    pub const COUNT: u32 = Reason::FlowSyncDropped as u32 + 1;

    /// How many of the last reasons are events counted beside a verdict, not verdicts.
    pub const EVENTS: u32 = 8;

    /// Every reason, in index order.
    pub const ALL: [Reason; Reason::COUNT as usize] = [
        Reason::ForwardToBackend,
        Reason::ReplyToClient,
        Reason::PassNotIp,
        Reason::PassNotTcpUdp,
        Reason::PassNotVip,
        Reason::PassFragment,
        Reason::PassIpv4Options,
        Reason::PassIpv6ExtHeader,
        Reason::PassTruncated,
        Reason::PassMalformed,
        Reason::PassVlanStacked,
        Reason::PassToKernelRoute,
        Reason::PassNotXdpEgress,
        Reason::DropNoBackend,
        Reason::DropMapMiss,
        Reason::DropFragment,
        Reason::DropIpv4Options,
        Reason::DropBadChecksum,
        Reason::DropBadLength,
        Reason::DropBadTcpHeader,
        Reason::DropMartian,
        Reason::IcmpToBackend,
        Reason::IcmpToClient,
        Reason::DropDsrNoPath,
        Reason::IcmpTooBig,
        Reason::DropTooBig,
        Reason::ConnInsertFailed,
        Reason::Rescheduled,
        Reason::FlowResumedWithoutEntry,
        Reason::MssClamped,
        Reason::Stateless,
        Reason::MovedSlot,
        Reason::RetainedRing,
        Reason::FlowSyncDropped,
    ];

    /// Stable snake_case name, used in metrics and the CLI.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::ForwardToBackend => "forward_to_backend",
            Reason::ReplyToClient => "reply_to_client",
            Reason::PassNotIp => "pass_not_ip",
            Reason::PassNotTcpUdp => "pass_not_tcp_udp",
            Reason::PassNotVip => "pass_not_vip",
            Reason::PassFragment => "pass_fragment",
            Reason::PassIpv4Options => "pass_ipv4_options",
            Reason::PassIpv6ExtHeader => "pass_ipv6_ext_header",
            Reason::PassTruncated => "pass_truncated",
            Reason::PassMalformed => "pass_malformed",
            Reason::PassVlanStacked => "pass_vlan_stacked",
            Reason::PassToKernelRoute => "pass_to_kernel_route",
            Reason::PassNotXdpEgress => "pass_not_xdp_egress",
            Reason::DropNoBackend => "drop_no_backend",
            Reason::DropMapMiss => "drop_map_miss",
            Reason::DropFragment => "drop_fragment",
            Reason::DropIpv4Options => "drop_ipv4_options",
            Reason::DropBadChecksum => "drop_bad_checksum",
            Reason::DropBadLength => "drop_bad_length",
            Reason::DropBadTcpHeader => "drop_bad_tcp_header",
            Reason::DropMartian => "drop_martian",
            Reason::IcmpToBackend => "icmp_to_backend",
            Reason::IcmpToClient => "icmp_to_client",
            Reason::ConnInsertFailed => "conn_insert_failed",
            Reason::Rescheduled => "rescheduled",
            Reason::FlowResumedWithoutEntry => "flow_resumed_without_entry",
            Reason::DropDsrNoPath => "drop_dsr_no_path",
            Reason::IcmpTooBig => "icmp_too_big",
            Reason::DropTooBig => "drop_too_big",
            Reason::MssClamped => "mss_clamped",
            Reason::Stateless => "stateless",
            Reason::MovedSlot => "moved_slot",
            Reason::RetainedRing => "retained_ring",
            Reason::FlowSyncDropped => "flow_sync_dropped",
        }
    }

    /// Whether this is an event counted beside a verdict rather than a packet's verdict.
    pub const fn is_event(self) -> bool {
        self as u32 >= Reason::COUNT - Reason::EVENTS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_index_order() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{}", r.name());
        }
        let mut events = Reason::ALL.iter().filter(|r| r.is_event());
        assert_eq!(events.next(), Some(&Reason::ConnInsertFailed));
        assert_eq!(events.next(), Some(&Reason::Rescheduled));
        assert_eq!(events.next(), Some(&Reason::FlowResumedWithoutEntry));
        assert_eq!(events.next(), Some(&Reason::MssClamped));
        assert_eq!(events.next(), Some(&Reason::Stateless));
        assert_eq!(events.next(), Some(&Reason::MovedSlot));
        assert_eq!(events.next(), Some(&Reason::RetainedRing));
        assert_eq!(events.next(), Some(&Reason::FlowSyncDropped));
        assert_eq!(events.next(), None);
    }
}
