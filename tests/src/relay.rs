//! [`TcpRelay`]: a TCP relay in front of kinesis-mock that sees which Kinesis operations go
//! through it and can cut connections mid-stream.
//!
//! The fault proxy buffers whole responses, which an event stream never finishes; this relay
//! copies bytes both ways as they come, so a SubscribeToShard subscription streams through it,
//! and [`TcpRelay::drop_subscriptions`] resets the connections that carry one (what a network
//! failure in the middle of a subscription looks like to the client).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const TARGET_PREFIX: &[u8] = b"Kinesis_20131202.";

#[derive(Default)]
struct Shared {
    /// Requests per operation (from the `X-Amz-Target` header).
    requests: HashMap<String, u64>,
    /// Live connections: their kill switch and whether one carried SubscribeToShard.
    connections: HashMap<u64, (watch::Sender<bool>, bool)>,
    next_id: u64,
    dropped: u64,
}

/// A relay from a local port to an upstream address (see the [module docs](self)).
pub struct TcpRelay {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl TcpRelay {
    /// Starts a relay to `upstream` (`http://host:port`, as in `AWS_ENDPOINT_URL_KINESIS`).
    pub async fn start(upstream: &str) -> Self {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|error| panic!("relay: cannot bind a local port: {error}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("relay: no local address: {error}"));
        let shared = Arc::new(Mutex::new(Shared::default()));
        let accept = tokio::spawn(accept_loop(listener, upstream, shared.clone()));
        Self {
            addr,
            shared,
            accept,
        }
    }

    /// The endpoint URL clients should use.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests of `operation` (e.g. `SubscribeToShard`) went through.
    pub fn requests(&self, operation: &str) -> u64 {
        self.lock().requests.get(operation).copied().unwrap_or(0)
    }

    /// Resets every live connection that carried a SubscribeToShard; returns how many.
    pub fn drop_subscriptions(&self) -> usize {
        let mut shared = self.lock();
        let doomed: Vec<u64> = shared
            .connections
            .iter()
            .filter(|(_, (_, subscribed))| *subscribed)
            .map(|(id, _)| *id)
            .collect();
        for id in &doomed {
            if let Some((kill, _)) = shared.connections.remove(id) {
                let _ = kill.send(true);
            }
        }
        shared.dropped += doomed.len() as u64;
        doomed.len()
    }

    /// Connections reset by [`drop_subscriptions`](Self::drop_subscriptions) so far.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

async fn accept_loop(listener: TcpListener, upstream: String, shared: Arc<Mutex<Shared>>) {
    while let Ok((client, _)) = listener.accept().await {
        let (kill_tx, kill_rx) = watch::channel(false);
        let id = {
            let mut state = shared.lock().unwrap_or_else(|p| p.into_inner());
            state.next_id += 1;
            let id = state.next_id;
            state.connections.insert(id, (kill_tx, false));
            id
        };
        let (upstream, shared) = (upstream.clone(), shared.clone());
        tokio::spawn(async move {
            if let Ok(server) = TcpStream::connect(&upstream).await {
                relay(id, client, server, kill_rx, &shared).await;
            }
            shared
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .connections
                .remove(&id);
        });
    }
}

/// Copies both ways until either side closes or the connection is killed (then both sockets
/// are dropped: the client sees a reset in the middle of whatever it was reading).
async fn relay(
    id: u64,
    client: TcpStream,
    server: TcpStream,
    mut kill: watch::Receiver<bool>,
    shared: &Mutex<Shared>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            note_targets(id, &buffer[..n], shared);
            if server_write.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    };
    let downstream = async {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if client_write.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
        _ = kill.wait_for(|killed| *killed) => {}
    }
}

/// Counts the `X-Amz-Target` operations in a chunk of request bytes.
fn note_targets(id: u64, bytes: &[u8], shared: &Mutex<Shared>) {
    let mut state = shared.lock().unwrap_or_else(|p| p.into_inner());
    let mut rest = bytes;
    while let Some(at) = find(rest, TARGET_PREFIX) {
        let tail = &rest[at + TARGET_PREFIX.len()..];
        let len = tail
            .iter()
            .position(|b| !b.is_ascii_alphanumeric())
            .unwrap_or(tail.len());
        let operation = String::from_utf8_lossy(&tail[..len]).into_owned();
        if operation == "SubscribeToShard"
            && let Some(connection) = state.connections.get_mut(&id)
        {
            connection.1 = true;
        }
        *state.requests.entry(operation).or_default() += 1;
        rest = &tail[len..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
