//! The accept loop: bounded connections, a deadline on every request head.
//!
//! `axum::serve` accepts every connection and waits for a request head for
//! ever, so a client that opens connections and sends half a header holds a
//! file descriptor each until the process runs out and `/healthz` stops
//! answering. Here each connection must finish its head within
//! `api.header_timeout` (the same deadline closes keep-alive connections left
//! idle that long), at most `api.max_connections` are open at once, and one
//! client address (an IPv6 /64, since whoever has one address has the whole
//! /64) holds at most `api.max_connections_per_ip` of them. Over a limit, the
//! connection is closed at once and counted, so descriptors stay bounded
//! whatever arrives.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// How many connections, and how long a request head may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    pub max_connections: usize,
    /// 0: no limit per address.
    pub max_per_address: usize,
    pub header_timeout: Duration,
}

/// Why a connection was refused: label of `gatewatch_api_connections_refused_total`.
pub use crate::metrics::{REFUSED_PER_ADDRESS, REFUSED_TOTAL};

/// Open connections, in total and per client address.
struct Tracker {
    limits: ConnLimits,
    open: AtomicUsize,
    per_address: Mutex<HashMap<IpAddr, usize>>,
    metrics: Arc<Metrics>,
}

/// One admitted connection; gives its slot back when dropped.
struct Slot {
    tracker: Arc<Tracker>,
    address: IpAddr,
}

/// The address a per-address limit counts: IPv4 as is, IPv6 by its /64.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

impl Tracker {
    fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, &'static str> {
        let address = address_key(peer);
        let mut per = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        if self.open.load(Ordering::Relaxed) >= self.limits.max_connections {
            return Err(REFUSED_TOTAL);
        }
        let n = per.entry(address).or_insert(0);
        if self.limits.max_per_address > 0 && *n >= self.limits.max_per_address {
            return Err(REFUSED_PER_ADDRESS);
        }
        *n += 1;
        self.open.fetch_add(1, Ordering::Relaxed);
        self.metrics.api_connections.inc();
        Ok(Slot { tracker: self.clone(), address })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let t = &self.tracker;
        let mut per = t.per_address.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                per.remove(&self.address);
            }
        }
        t.open.fetch_sub(1, Ordering::Relaxed);
        t.metrics.api_connections.dec();
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets open
/// requests finish (up to `drain`) and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
    drain: Duration,
) {
    let tracker = Arc::new(Tracker { limits, open: AtomicUsize::new(0), per_address: Mutex::default(), metrics });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors (the limit is set below the process's
                    // own) or a connection reset before it was accepted: wait a
                    // moment rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slot = match tracker.admit(peer.ip()) {
            Ok(s) => s,
            Err(reason) => {
                tracker.metrics.api_connections_refused.with_label_values(&[reason]).inc();
                tracing::debug!(%peer, reason, "connection refused: limit reached");
                drop(socket);
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let mut stop = stop_rx.clone();
        // The guard `wait_for` returns is not Send: drop it inside.
        let stopping = async move {
            let _ = stop.wait_for(|s| *s).await.map(|_| ());
        };
        tokio::spawn(async move {
            let _slot = slot;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
            let conn = builder.serve_connection(TokioIo::new(socket), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = stopping => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    stop_tx.send_replace(true);
    let deadline = tokio::time::Instant::now() + drain;
    while tracker.open.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Raises the soft limit on open files to the hard one and returns the soft
/// limit now in force, so that the connection limit can be checked against it.
pub fn raise_open_files_limit() -> Option<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every target
    Some(lim.rlim_cur as u64)
}

/// Descriptors kept free of connections: the log, the store, sinks, models.
pub const RESERVED_FILES: u64 = 128;

/// The connection limits in force: as `api` configures them, fitted to
/// `open_files` (the process's limit on open files), the per-address default
/// a quarter of that.
pub fn conn_limits(api: &crate::config::ApiConfig, open_files: Option<u64>) -> ConnLimits {
    let mut l = effective(
        ConnLimits {
            max_connections: api.max_connections,
            max_per_address: api.max_connections_per_ip.unwrap_or(0),
            header_timeout: Duration::from_millis(api.header_timeout_ms.max(1) as u64),
        },
        open_files,
    );
    if api.max_connections_per_ip.is_none() {
        l.max_per_address = (l.max_connections / 4).max(1);
    }
    l
}

/// The connection limits in force: the configured ones, lowered to fit the
/// process's open-file limit (a connection past it would fail anyway, and
/// take the files the engine needs with it).
pub fn effective(configured: ConnLimits, open_files: Option<u64>) -> ConnLimits {
    let mut l = configured;
    if let Some(n) = open_files {
        let room = n.saturating_sub(RESERVED_FILES).max(16) as usize;
        if room < l.max_connections {
            tracing::warn!(
                configured = l.max_connections,
                open_files = n,
                effective = room,
                "api.max_connections lowered to fit the open-file limit"
            );
            l.max_connections = room;
        }
    }
    if l.max_per_address > l.max_connections {
        l.max_per_address = l.max_connections;
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(max: usize, per: usize) -> Arc<Tracker> {
        Arc::new(Tracker {
            limits: ConnLimits { max_connections: max, max_per_address: per, header_timeout: Duration::from_secs(1) },
            open: AtomicUsize::new(0),
            per_address: Mutex::default(),
            metrics: Arc::new(Metrics::new().expect("metrics")),
        })
    }

    #[test]
    fn limits_count_addresses_and_give_slots_back() {
        let t = tracker(5, 2);
        let a: IpAddr = "203.0.113.7".parse().unwrap();
        let b: IpAddr = "::ffff:203.0.113.7".parse().unwrap();
        let s1 = t.admit(a).unwrap();
        let _s2 = t.admit(b).unwrap();
        assert_eq!(t.admit(a).err(), Some(REFUSED_PER_ADDRESS), "the mapped spelling is the same address");
        // One /64 is one address.
        let _v1 = t.admit("2001:db8::1".parse().unwrap()).unwrap();
        let _v2 = t.admit("2001:db8::ffff:2".parse().unwrap()).unwrap();
        assert_eq!(t.admit("2001:db8::3".parse().unwrap()).err(), Some(REFUSED_PER_ADDRESS));
        let _w1 = t.admit("2001:db8:1::1".parse().unwrap()).unwrap();
        assert_eq!(t.admit("198.51.100.1".parse().unwrap()).err(), Some(REFUSED_TOTAL));
        drop(s1);
        let s3 = t.admit("198.51.100.1".parse().unwrap());
        assert!(s3.is_ok(), "a freed slot is usable");
        assert_eq!(t.admit("198.51.100.2".parse().unwrap()).err(), Some(REFUSED_TOTAL));
        assert_eq!(t.open.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn map_forgets_closed_addresses() {
        let t = tracker(1000, 0);
        for i in 0..500u32 {
            drop(t.admit(IpAddr::V4(i.into())).unwrap());
        }
        assert_eq!(t.open.load(Ordering::Relaxed), 0);
        assert!(t.per_address.lock().unwrap().is_empty());
    }

    #[test]
    fn connection_limit_fits_the_file_limit() {
        let c = ConnLimits { max_connections: 4096, max_per_address: 1024, header_timeout: Duration::from_secs(1) };
        let l = effective(c, Some(256));
        assert_eq!(l.max_connections, 128);
        assert_eq!(l.max_per_address, 128);
        assert_eq!(effective(c, Some(1 << 20)), c);
        assert_eq!(effective(c, None), c);
    }
}
