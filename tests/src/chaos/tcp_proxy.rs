//! A TCP proxy between one worker and one emulator that can slow, hold or reset connections.
//!
//! HTTP clients keep connections alive, so faults have to act on connections already open,
//! not only on new ones: every connection task watches the proxy's mode and its reset
//! generation.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with the bytes it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward at once.
    Pass,
    /// Forward each chunk after this long (in both directions).
    Latency(Duration),
    /// Accept connections and read nothing, forward nothing, answer nothing: the peer is
    /// unreachable but connections do not fail. Leaving this mode resets every connection
    /// that was held (they are dead to the client anyway).
    Hold,
}

/// Counts of what the proxy did.
#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    reset: AtomicU64,
}

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    mode: watch::Sender<ProxyMode>,
    reset: watch::Sender<u64>,
    counters: Arc<Counters>,
    accept: JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream` (`host:port`).
    ///
    /// # Panics
    ///
    /// When no port can be bound.
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("binding a TCP proxy: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("TCP proxy address: {e}"));
        let (mode, _) = watch::channel(ProxyMode::Pass);
        let (reset, _) = watch::channel(0u64);
        let counters = Arc::new(Counters::default());
        let accept = tokio::spawn({
            let upstream = upstream.to_owned();
            let mode = mode.clone();
            let reset = reset.clone();
            let counters = counters.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    counters.accepted.fetch_add(1, Relaxed);
                    let _ = client.set_nodelay(true);
                    tokio::spawn(connection(
                        client,
                        upstream.clone(),
                        mode.subscribe(),
                        reset.subscribe(),
                        counters.clone(),
                    ));
                }
            }
        });
        Self {
            addr,
            mode,
            reset,
            counters,
            accept,
        }
    }

    /// `http://127.0.0.1:<port>`, for an `AWS_ENDPOINT_URL_*` variable.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes the mode for open and new connections.
    pub fn set_mode(&self, mode: ProxyMode) {
        self.mode.send_replace(mode);
    }

    /// Resets (TCP RST) every open connection once.
    pub fn reset_all(&self) {
        self.reset.send_modify(|generation| *generation += 1);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.counters.accepted.load(Relaxed)
    }

    /// Connections reset so far (by [`reset_all`](Self::reset_all) or at the end of a hold).
    pub fn resets(&self) -> u64 {
        self.counters.reset.load(Relaxed)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Closes both sockets with RST.
fn reset(client: TcpStream, upstream: Option<TcpStream>, counters: &Counters) {
    counters.reset.fetch_add(1, Relaxed);
    let _ = client.set_zero_linger();
    if let Some(upstream) = &upstream {
        let _ = upstream.set_zero_linger();
    }
}

/// Waits while the mode is [`ProxyMode::Hold`]; returns whether it held at all.
async fn hold_while_held(mode: &mut watch::Receiver<ProxyMode>) -> bool {
    if *mode.borrow_and_update() != ProxyMode::Hold {
        return false;
    }
    while *mode.borrow_and_update() == ProxyMode::Hold {
        if mode.changed().await.is_err() {
            break;
        }
    }
    true
}

async fn connection(
    mut client: TcpStream,
    upstream: String,
    mut mode: watch::Receiver<ProxyMode>,
    mut resets: watch::Receiver<u64>,
    counters: Arc<Counters>,
) {
    resets.borrow_and_update();
    // Unreachable at connect time: hold, then reset.
    let at_connect = *mode.borrow();
    if at_connect == ProxyMode::Hold {
        tokio::select! {
            _ = hold_while_held(&mut mode) => {}
            _ = resets.changed() => {}
        }
        return reset(client, None, &counters);
    }
    let Ok(mut server) = TcpStream::connect(upstream.as_str()).await else {
        return reset(client, None, &counters);
    };
    let _ = server.set_nodelay(true);
    let mut from_client = vec![0u8; 64 * 1024];
    let mut from_server = vec![0u8; 64 * 1024];
    loop {
        // Which side has bytes (or a mode change / reset to act on).
        let (read, to_server) = tokio::select! {
            read = client.read(&mut from_client) => (read, true),
            read = server.read(&mut from_server) => (read, false),
            _ = resets.changed() => return reset(client, Some(server), &counters),
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = *mode.borrow();
                if now == ProxyMode::Hold {
                    tokio::select! {
                        _ = hold_while_held(&mut mode) => {}
                        _ = resets.changed() => {}
                    }
                    return reset(client, Some(server), &counters);
                }
                continue;
            }
        };
        let n = match read {
            Ok(0) | Err(_) => {
                // One side closed: close the other, normally.
                let _ = client.shutdown().await;
                let _ = server.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        // Bytes read just before a hold began are held too.
        if hold_while_held(&mut mode).await {
            return reset(client, Some(server), &counters);
        }
        let current = *mode.borrow();
        if let ProxyMode::Latency(delay) = current {
            tokio::time::sleep(delay).await;
        }
        let written = if to_server {
            server.write_all(&from_client[..n]).await
        } else {
            client.write_all(&from_server[..n]).await
        };
        if written.is_err() {
            return reset(client, Some(server), &counters);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An echo server: what it reads it writes back.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 || socket.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(socket: &mut TcpStream) -> std::io::Result<()> {
        socket.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        socket.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ping");
        Ok(())
    }

    async fn connect(proxy: &TcpProxy) -> TcpStream {
        TcpStream::connect(proxy.addr).await.expect("connect")
    }

    #[tokio::test]
    async fn passes_delays_holds_and_resets() {
        let proxy = TcpProxy::start(&echo().await.to_string()).await;
        let mut socket = connect(&proxy).await;
        round_trip(&mut socket).await.expect("pass");

        proxy.set_mode(ProxyMode::Latency(Duration::from_millis(100)));
        let started = Instant::now();
        round_trip(&mut socket).await.expect("latency");
        assert!(started.elapsed() >= Duration::from_millis(200), "both ways");

        proxy.set_mode(ProxyMode::Hold);
        let held = tokio::time::timeout(Duration::from_millis(300), round_trip(&mut socket)).await;
        assert!(held.is_err(), "no answer while held");
        let mut fresh = connect(&proxy).await;
        let fresh_held =
            tokio::time::timeout(Duration::from_millis(300), round_trip(&mut fresh)).await;
        assert!(fresh_held.is_err(), "new connections are held too");
        proxy.set_mode(ProxyMode::Pass);
        // Held connections are reset when the hold ends; new ones pass.
        let mut buf = [0u8; 4];
        assert!(
            socket.read(&mut buf).await.is_err()
                || socket.read(&mut buf).await.is_ok_and(|n| n == 0)
        );
        let mut after = connect(&proxy).await;
        round_trip(&mut after).await.expect("passes after the hold");

        let before = proxy.resets();
        proxy.reset_all();
        let read = after.read(&mut buf).await;
        assert!(
            matches!(read, Err(ref e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "{read:?}"
        );
        assert!(proxy.resets() > before);
        let mut again = connect(&proxy).await;
        round_trip(&mut again)
            .await
            .expect("new connections pass after a reset");
    }
}
