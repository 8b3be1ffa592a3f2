//! The flow sync task: this node's records from `FLOW_SYNC` to its peers, and its peers'
//! datagrams into its connection table, on one UDP socket.

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use lb_common::{limits::FLOW_SYNC_MAX_RECORDS, maps::SyncRecord};
use tokio::{io::unix::AsyncFd, net::UdpSocket, task::JoinHandle};

use super::{
    Applied, LocalMaps, Stats,
    message::{self, MAX_DATAGRAM, SyncedFlow},
};
use crate::config::FlowSync;

/// What a data path loaded with flow sync gives the task: its ring buffer and maps.
pub struct Source {
    /// `FLOW_SYNC`.
    pub ring: RingBuf<MapData>,
    /// Its `VIPS`, `BACKENDS` and `CONNS`.
    pub maps: LocalMaps,
}

/// Binds `config.listen` and starts the task, which counts into `stats` and runs until aborted.
pub fn spawn(config: &FlowSync, key: Vec<u8>, source: Source, stats: Arc<Stats>) -> anyhow::Result<JoinHandle<()>> {
    let socket = std::net::UdpSocket::bind(config.listen).with_context(|| format!("global.flow_sync.listen: binding {}", config.listen))?;
    spawn_on(socket, config.peers.clone(), key, source, stats)
}

/// As [`spawn`], on a bound `socket`, sending to `peers`.
pub fn spawn_on(
    socket: std::net::UdpSocket,
    peers: Vec<SocketAddr>,
    key: Vec<u8>,
    source: Source,
    stats: Arc<Stats>,
) -> anyhow::Result<JoinHandle<()>> {
    socket.set_nonblocking(true)?;
    let socket = UdpSocket::from_std(socket)?;
    // SAFETY: the ring buffer owns its descriptor for as long as the `AsyncFd` holds it.
    let ring = unsafe { AsyncFd::register_with_interest(source.ring, tokio::io::Interest::READABLE) }
        .map_err(std::io::Error::from)
        .context("polling the FLOW_SYNC ring buffer")?;
    let task = Task { socket, peers, key, maps: source.maps, stats };
    Ok(tokio::spawn(task.run(ring)))
}

struct Task {
    socket: UdpSocket,
    peers: Vec<SocketAddr>,
    key: Vec<u8>,
    maps: LocalMaps,
    stats: Arc<Stats>,
}

impl Task {
    async fn run(mut self, mut ring: AsyncFd<RingBuf<MapData>>) {
        // One byte more than the largest datagram: a longer one is seen as such, not cut.
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        loop {
            tokio::select! {
                ready = ring.readable_mut() => {
                    let mut guard = match ready {
                        Ok(guard) => guard,
                        Err(e) => {
                            tracing::error!(error = %e, "flow sync: the ring buffer cannot be polled; flows are no longer sent");
                            return;
                        }
                    };
                    let flows = self.drain(guard.get_inner_mut());
                    guard.clear_ready();
                    self.send(&flows).await;
                }
                got = self.socket.recv_from(&mut buf) => match got {
                    Ok((len, _)) => self.receive(&buf[..len]),
                    // An ICMP error about an earlier datagram to a peer that was down.
                    Err(_) => { self.stats.send_errors.fetch_add(1, Ordering::Relaxed); }
                },
            }
        }
    }

    /// Every record waiting in the ring buffer, as sent to the peers.
    fn drain(&self, ring: &mut RingBuf<MapData>) -> Vec<SyncedFlow> {
        let mut flows = Vec::new();
        while let Some(item) = ring.next() {
            if item.len() != size_of::<SyncRecord>() {
                continue;
            }
            // SAFETY: the data path writes whole `SyncRecord`s (plain integers, any bit pattern
            // valid); the length was checked and the read makes no alignment assumption.
            let record = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<SyncRecord>()) };
            match self.maps.outgoing(&record) {
                Some(flow) => flows.push(flow),
                None => {
                    self.stats.unsendable.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        flows
    }

    async fn send(&self, flows: &[SyncedFlow]) {
        for chunk in flows.chunks(FLOW_SYNC_MAX_RECORDS) {
            let datagram = message::encode(chunk, now_ms(), &self.key);
            for peer in &self.peers {
                if self.socket.send_to(&datagram, peer).await.is_err() {
                    self.stats.send_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            self.stats.sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
    }

    fn receive(&mut self, datagram: &[u8]) {
        let flows = match message::decode(datagram, now_ms(), &self.key) {
            Ok(flows) => flows,
            Err(refused) => return self.stats.reject(refused.into()),
        };
        self.stats.received.fetch_add(flows.len() as u64, Ordering::Relaxed);
        for flow in &flows {
            match self.maps.apply(flow) {
                Ok(Applied::Inserted) => self.stats.inserted.fetch_add(1, Ordering::Relaxed),
                Ok(Applied::Existing) => self.stats.existing.fetch_add(1, Ordering::Relaxed),
                Ok(Applied::Rejected(reason)) => {
                    self.stats.reject(reason);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "flow sync: a peer's flow was not recorded");
                    continue;
                }
            };
        }
    }
}

/// The wall clock in milliseconds since the Unix epoch (the peers compare their clocks).
fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
