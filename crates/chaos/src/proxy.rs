//! A user-space TCP proxy between the services and the brokers: `tc netem` needs the kernel's
//! `sch_netem`, which this machine lacks ("Specified qdisc kind is unknown"), so slow and lossy
//! links are made here. Each broker advertises the proxy's port on its FAULTY listener
//! (deploy/local/kafka.sh), so every connection a client opens after bootstrapping goes through
//! it, the transaction coordinator's included.

use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the link does to the bytes that cross it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkMode {
    Clear,
    /// Each chunk is held this long before it is passed on (both directions).
    Delay(Duration),
    /// Nothing passes; connections stay open, as behind a dead router: calls time out.
    Blackhole,
}

#[derive(Debug, Clone, Copy)]
struct LinkState {
    mode: LinkMode,
    /// Bumped to close every open connection (a cut).
    generation: u64,
}

/// The proxy; dropped, it stops accepting (open connections end with their peers).
pub struct Proxy {
    state: watch::Sender<LinkState>,
    acceptors: Vec<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    /// Listens on each `(listen, target)` port pair of 127.0.0.1.
    pub async fn start(routes: &[(u16, u16)]) -> anyhow::Result<Self> {
        let (state, _) = watch::channel(LinkState { mode: LinkMode::Clear, generation: 0 });
        let mut acceptors = Vec::new();
        for &(listen, target) in routes {
            let listener = TcpListener::bind(("127.0.0.1", listen))
                .await
                .with_context(|| format!("the proxy cannot listen on 127.0.0.1:{listen}"))?;
            let state = state.subscribe();
            acceptors.push(tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(forward(client, target, state.clone()));
                }
            }));
        }
        Ok(Self { state, acceptors })
    }

    pub fn set(&self, mode: LinkMode) {
        self.state.send_modify(|state| state.mode = mode);
    }

    /// Closes every open connection: clients see a reset and reconnect.
    pub fn cut(&self) {
        self.state.send_modify(|state| state.generation += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for acceptor in &self.acceptors {
            acceptor.abort();
        }
    }
}

async fn forward(client: TcpStream, target: u16, state: watch::Receiver<LinkState>) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else { return };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let generation = state.borrow().generation;
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Either direction ending (a peer closed, a cut) ends both.
    tokio::select! {
        () = pump(client_read, server_write, state.clone(), generation) => {}
        () = pump(server_read, client_write, state, generation) => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut state: watch::Receiver<LinkState>,
    generation: u64,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = cut(&mut state, generation) => return,
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Held while the link is black, delayed while it is slow; a cut ends it either way.
        loop {
            let mode = state.borrow().mode;
            match mode {
                LinkMode::Clear => break,
                LinkMode::Delay(delay) => {
                    tokio::select! {
                        () = tokio::time::sleep(delay) => break,
                        _ = cut(&mut state, generation) => return,
                    }
                }
                LinkMode::Blackhole => {
                    if state.changed().await.is_err() || state.borrow().generation != generation {
                        return;
                    }
                }
            }
        }
        tokio::select! {
            written = to.write_all(&buffer[..n]) => if written.is_err() { return },
            _ = cut(&mut state, generation) => return,
        }
    }
}

/// Resolves when the link is cut after `generation` (or the proxy is gone).
async fn cut(state: &mut watch::Receiver<LinkState>, generation: u64) {
    let _ = state.wait_for(|s| s.generation != generation).await;
}
