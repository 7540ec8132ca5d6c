//! Flaky links without the kernel's help: this machine's kernel has no queueing
//! disciplines (`tc … netem` answers "Specified qdisc kind is unknown"), so loss and
//! delay are made by a relay in user space. A [`FlakyRelay`] listens on a loopback port
//! and forwards every connection to a target; while faults are set, each chunk it
//! forwards waits a random delay (jitter), some wait much longer (a lost segment waits
//! out TCP's retransmission timeout: the peer sees a stall, then the data), and a few
//! connections are cut (a reset). Order within a connection is kept, as TCP keeps it.
//!
//! Hubs are pointed at each other's relays (their `initial_members` name the relay's
//! address for a replica's Raft port), so every byte between replicas — replication,
//! votes, forwarded proposals — crosses one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What a relay does to the traffic it forwards; all zero forwards untouched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkFaults {
    /// Each chunk waits up to this long (uniformly).
    pub jitter_ms: u32,
    /// Per mille of chunks that stall, 200 ms to 1 s, as after a lost segment.
    pub stall_per_mille: u32,
    /// Per mille of chunks whose connection is cut instead.
    pub reset_per_mille: u32,
}

#[derive(Default)]
struct Settings {
    jitter_ms: AtomicU32,
    stall_per_mille: AtomicU32,
    reset_per_mille: AtomicU32,
}

impl Settings {
    fn get(&self) -> LinkFaults {
        LinkFaults {
            jitter_ms: self.jitter_ms.load(Ordering::Relaxed),
            stall_per_mille: self.stall_per_mille.load(Ordering::Relaxed),
            reset_per_mille: self.reset_per_mille.load(Ordering::Relaxed),
        }
    }
}

/// A TCP relay from a loopback port to a target, with faults that can be set and
/// cleared while it runs. Dropping it stops it and closes its connections.
pub struct FlakyRelay {
    addr: SocketAddr,
    settings: Arc<Settings>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl FlakyRelay {
    /// Starts relaying `127.0.0.1:<free port>` to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<FlakyRelay> {
        let listener = TcpListener::bind(("127.0.0.1", crate::process::free_port())).await?;
        let addr = listener.local_addr()?;
        let settings = Arc::new(Settings::default());
        let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
        let (accept_settings, accept_stop, accept_tasks) = (settings.clone(), stop.clone(), tasks.clone());
        tasks.spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = accept_stop.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((inbound, _)) = accepted else { continue };
                let (settings, stop) = (accept_settings.clone(), accept_stop.clone());
                accept_tasks.spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = relay(inbound, outbound, settings) => {}
                    }
                });
            }
        });
        Ok(FlakyRelay {
            addr,
            settings,
            stop,
            tasks,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the faults for the chunks forwarded from now on.
    pub fn set(&self, faults: LinkFaults) {
        self.settings.jitter_ms.store(faults.jitter_ms, Ordering::Relaxed);
        self.settings
            .stall_per_mille
            .store(faults.stall_per_mille, Ordering::Relaxed);
        self.settings
            .reset_per_mille
            .store(faults.reset_per_mille, Ordering::Relaxed);
    }

    pub fn heal(&self) {
        self.set(LinkFaults::default());
    }

    pub fn faults(&self) -> LinkFaults {
        self.settings.get()
    }
}

impl Drop for FlakyRelay {
    fn drop(&mut self) {
        self.stop.cancel();
        self.tasks.close();
    }
}

/// Both directions of one connection; ends when either side closes or a reset is drawn.
async fn relay(inbound: TcpStream, outbound: TcpStream, settings: Arc<Settings>) {
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    tokio::select! {
        () = forward(in_read, out_write, settings.clone()) => {}
        () = forward(out_read, in_write, settings) => {}
    }
}

async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    settings: Arc<Settings>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        let faults = settings.get();
        // Drawn before any await: the thread-local generator is not `Send`.
        let (reset, wait) = {
            let mut rng = rand::rng();
            let reset = faults.reset_per_mille > 0 && rng.random_range(0..1000) < faults.reset_per_mille;
            let stall = faults.stall_per_mille > 0 && rng.random_range(0..1000) < faults.stall_per_mille;
            let mut wait = if faults.jitter_ms > 0 {
                rng.random_range(0..=faults.jitter_ms)
            } else {
                0
            };
            if stall {
                wait += rng.random_range(200..1000);
            }
            (reset, wait)
        };
        if reset {
            return;
        }
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(u64::from(wait))).await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 1024];
                    while let Ok(read) = socket.read(&mut buffer).await {
                        if read == 0 || socket.write_all(&buffer[..read]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(addr: SocketAddr, message: &[u8]) -> std::io::Result<(Vec<u8>, Duration)> {
        let started = std::time::Instant::now();
        let mut socket = TcpStream::connect(addr).await?;
        socket.write_all(message).await?;
        let mut reply = vec![0u8; message.len()];
        socket.read_exact(&mut reply).await?;
        Ok((reply, started.elapsed()))
    }

    #[tokio::test]
    async fn relays_untouched_delays_when_told_and_cuts_connections() {
        let relay = FlakyRelay::start(echo_server().await).await.expect("relay");
        let (reply, _) = round_trip(relay.addr(), b"hello").await.expect("clean");
        assert_eq!(reply, b"hello");

        // Every chunk stalls at least 200 ms each way.
        relay.set(LinkFaults {
            stall_per_mille: 1000,
            ..LinkFaults::default()
        });
        let (reply, took) = round_trip(relay.addr(), b"slow").await.expect("stalled");
        assert_eq!(reply, b"slow");
        assert!(took >= Duration::from_millis(400), "{took:?}");

        relay.set(LinkFaults {
            reset_per_mille: 1000,
            ..LinkFaults::default()
        });
        assert!(round_trip(relay.addr(), b"cut").await.is_err());

        relay.heal();
        let (reply, _) = round_trip(relay.addr(), b"again").await.expect("healed");
        assert_eq!(reply, b"again");
    }
}
