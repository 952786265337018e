//! A TCP proxy that injects network faults between two parts of the product,
//! playing toxiproxy's part on a kernel without `netem`: added latency on
//! the answers, connections reset at random, and a black hole (a partition:
//! nothing passes either way until it heals, as TCP retransmits would
//! deliver it after a short partition; connections opened meanwhile are
//! held, then forwarded).
//!
//! Loopback only: it listens on 127.0.0.1 and forwards to one address. It
//! keeps the first bytes clients sent, for tests that check what went on
//! the wire rather than how long a server took.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Bytes pass as they come.
    Pass,
    /// Each chunk of the answer (upstream to client) waits this long.
    Latency(Duration),
    /// Each chunk, either way, ends its connection with a reset at this
    /// chance (per thousand).
    ResetRandomly { per_mille: u32 },
    /// Nothing passes, either way, until the fault changes.
    BlackHole,
}

pub struct FaultProxy {
    pub address: SocketAddr,
    fault: watch::Sender<Fault>,
    tally: Arc<Tally>,
    accepting: tokio::task::JoinHandle<()>,
}

/// The bytes clients sent that a test may look at, at most.
const KEPT_SENT_BYTES: usize = 4 << 20;

/// What the proxy counted and kept, over every connection.
#[derive(Default)]
struct Tally {
    resets: AtomicU64,
    /// What clients sent upstream, in arrival order, up to `KEPT_SENT_BYTES`.
    sent: Mutex<Vec<u8>>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (fault, watching) = watch::channel(Fault::Pass);
        let tally = Arc::new(Tally::default());
        let counted = tally.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (watching, tally) = (watching.clone(), counted.clone());
                tokio::spawn(async move {
                    let _ = relay(client, upstream, watching, tally).await;
                });
            }
        });
        Ok(Self {
            address,
            fault,
            tally,
            accepting,
        })
    }

    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// Connections this proxy has reset so far.
    pub fn resets(&self) -> u64 {
        self.tally.resets.load(Ordering::Relaxed)
    }

    /// How often `needle` occurs in what clients sent so far (a chunk
    /// boundary may split one occurrence: give the needle room to be whole,
    /// e.g. a BSON key, which a client writes in one message).
    pub fn sent_count(&self, needle: &[u8]) -> usize {
        let sent = self.tally.sent.lock().expect("tally lock");
        sent.windows(needle.len()).filter(|window| *window == needle).count()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// Waits while the fault is a black hole.
async fn pass_the_black_hole(watching: &mut watch::Receiver<Fault>) -> Fault {
    loop {
        let fault = *watching.borrow_and_update();
        if fault != Fault::BlackHole {
            return fault;
        }
        if watching.changed().await.is_err() {
            return Fault::Pass;
        }
    }
}

/// A cheap per-connection random source (xorshift), seeded from the clock.
struct Dice(u64);

impl Dice {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Self(nanos | 1)
    }

    fn per_mille(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % 1000) as u32
    }
}

/// Which way a chunk goes.
#[derive(Clone, Copy, PartialEq)]
enum Way {
    ToUpstream,
    ToClient,
}

async fn relay(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut watching: watch::Receiver<Fault>,
    tally: Arc<Tally>,
) -> Result<()> {
    pass_the_black_hole(&mut watching).await;
    let mut server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let mut dice = Dice::new();
    let (mut from_client, mut from_server) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    loop {
        let (way, read) = tokio::select! {
            read = client.read(&mut from_client) => (Way::ToUpstream, read?),
            read = server.read(&mut from_server) => (Way::ToClient, read?),
        };
        if read == 0 {
            return Ok(());
        }
        match pass_the_black_hole(&mut watching).await {
            Fault::Latency(delay) if way == Way::ToClient => tokio::time::sleep(delay).await,
            Fault::ResetRandomly { per_mille } if dice.per_mille() < per_mille => {
                tally.resets.fetch_add(1, Ordering::Relaxed);
                reset(client);
                reset(server);
                return Ok(());
            }
            _ => {}
        }
        match way {
            Way::ToUpstream => {
                let chunk = &from_client[..read];
                {
                    let mut sent = tally.sent.lock().expect("tally lock");
                    let room = KEPT_SENT_BYTES.saturating_sub(sent.len());
                    sent.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                server.write_all(chunk).await?
            }
            Way::ToClient => client.write_all(&from_server[..read]).await?,
        }
    }
}

/// Closes with RST rather than FIN, as a cut connection is seen.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 1024];
                    while let Ok(read) = socket.read(&mut buffer).await {
                        if read == 0 || socket.write_all(&buffer[..read]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        address
    }

    async fn round_trip(proxy: SocketAddr) -> std::io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect(proxy).await?;
        stream.write_all(b"ping").await?;
        let mut answer = vec![0u8; 4];
        stream.read_exact(&mut answer).await?;
        Ok(answer)
    }

    #[tokio::test]
    async fn passes_bytes_both_ways() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        assert_eq!(round_trip(proxy.address).await.unwrap(), b"ping");
    }

    #[tokio::test]
    async fn a_black_hole_holds_everything_until_it_heals() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        proxy.set(Fault::BlackHole);
        let held =
            tokio::time::timeout(Duration::from_millis(300), round_trip(proxy.address)).await;
        assert!(held.is_err(), "an answer crossed the black hole");
        let waiting = tokio::spawn(round_trip(proxy.address));
        tokio::time::sleep(Duration::from_millis(100)).await;
        proxy.set(Fault::Pass);
        assert_eq!(
            waiting.await.unwrap().unwrap(),
            b"ping",
            "a connection held in the black hole passes once it heals"
        );
    }

    #[tokio::test]
    async fn certain_resets_cut_every_connection() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        proxy.set(Fault::ResetRandomly { per_mille: 1000 });
        assert!(round_trip(proxy.address).await.is_err());
        assert_eq!(proxy.resets(), 1);
    }
}
