//! The per-CPU counters the data path keeps: one for every verdict reason.

/// Why the data path gave a packet the verdict it gave. The discriminant is the index in the
/// `REASONS` per-CPU array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Client packet for a VIP sent to its backend.
    ForwardToBackend = 0,
    /// Backend reply rewritten to the VIP and sent towards the client.
    ReplyToClient,
    /// Not IPv4 or IPv6 (ARP, LLDP, ...): passed to the kernel.
    PassNotIp,
    /// IPv4/IPv6 but neither TCP nor UDP (ICMP, neighbour discovery, ...): passed.
    PassNotTcpUdp,
    /// TCP/UDP to no VIP and not a reply of a tracked flow: passed.
    PassNotVip,
    /// IPv4 header with options (IHL > 5): passed (handled by the kernel).
    PassIpv4Options,
    /// IPv4 fragment (MF set or non-zero offset): passed.
    PassFragment,
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
    /// A VIP's every backend is down or draining for a new flow: dropped.
    DropNoBackend,
    /// Ring or backend map lookup failed (agent still filling the maps): dropped.
    DropMapMiss,
    /// Connection table full and the insert failed: the packet is still forwarded.
    ConnInsertFailed,
    /// A tracked flow's backend went down; the flow was given a new backend.
    Rescheduled,
}

impl Reason {
    /// Number of reasons (size of the `REASONS` map).
    pub const COUNT: u32 = Reason::Rescheduled as u32 + 1;

    /// Every reason, in index order.
    pub const ALL: [Reason; Reason::COUNT as usize] = [
        Reason::ForwardToBackend,
        Reason::ReplyToClient,
        Reason::PassNotIp,
        Reason::PassNotTcpUdp,
        Reason::PassNotVip,
        Reason::PassIpv4Options,
        Reason::PassFragment,
        Reason::PassIpv6ExtHeader,
        Reason::PassTruncated,
        Reason::PassMalformed,
        Reason::PassVlanStacked,
        Reason::PassToKernelRoute,
        Reason::DropNoBackend,
        Reason::DropMapMiss,
        Reason::ConnInsertFailed,
        Reason::Rescheduled,
    ];

    /// Stable snake_case name, used in metrics and the CLI.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::ForwardToBackend => "forward_to_backend",
            Reason::ReplyToClient => "reply_to_client",
            Reason::PassNotIp => "pass_not_ip",
            Reason::PassNotTcpUdp => "pass_not_tcp_udp",
            Reason::PassNotVip => "pass_not_vip",
            Reason::PassIpv4Options => "pass_ipv4_options",
            Reason::PassFragment => "pass_fragment",
            Reason::PassIpv6ExtHeader => "pass_ipv6_ext_header",
            Reason::PassTruncated => "pass_truncated",
            Reason::PassMalformed => "pass_malformed",
            Reason::PassVlanStacked => "pass_vlan_stacked",
            Reason::PassToKernelRoute => "pass_to_kernel_route",
            Reason::DropNoBackend => "drop_no_backend",
            Reason::DropMapMiss => "drop_map_miss",
            Reason::ConnInsertFailed => "conn_insert_failed",
            Reason::Rescheduled => "rescheduled",
        }
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
    }
}
