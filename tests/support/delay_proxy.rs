//! A TCP proxy in front of a real service that can hold the service's replies back: the
//! slow link that turns an answer into a client's timeout after its request went out
//! (what chaos seed 1005 did with a paused issuer).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// How the proxy treats replies now; shared with every connection it carries.
#[derive(Default)]
struct Link {
    /// Milliseconds each chunk of reply is held before it is passed on.
    delay_ms: AtomicU64,
    /// Chunks of reply being held right now.
    held: AtomicUsize,
}

/// Listens on 127.0.0.1; stops (with every connection) when dropped.
pub struct DelayProxy {
    address: SocketAddr,
    link: Arc<Link>,
    accepting: JoinHandle<()>,
}

impl DelayProxy {
    /// A proxy to `upstream`, passing everything on at once until told otherwise.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding");
        let address = listener.local_addr().expect("the proxy's address");
        let link = Arc::new(Link::default());
        let accepting = tokio::spawn(accept(listener, upstream, Arc::clone(&link)));
        Self {
            address,
            link,
            accepting,
        }
    }

    /// A proxy to the Redis at `url` (`redis://host:port[/db]`, host an IP address).
    pub async fn in_front_of_redis(url: &str) -> Self {
        let rest = url.strip_prefix("redis://").expect("a redis:// URL");
        let address = rest.split('/').next().unwrap_or(rest);
        Self::start(address.parse().expect("Redis at an IP address and port")).await
    }

    /// The Redis URL of the Redis behind a proxy made by [`Self::in_front_of_redis`].
    pub fn redis_url(&self) -> String {
        format!("redis://{}", self.address)
    }

    /// Holds each reply read from now on for `delay` before passing it on (zero: none).
    /// Requests always pass at once: the service gets them and acts on them.
    pub fn delay_replies(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.link.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// How many chunks of reply are being held back right now.
    pub fn held(&self) -> usize {
        self.link.held.load(Ordering::SeqCst)
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// Accepts clients; each connection's tasks live in a set dropped (aborted) with this one.
async fn accept(listener: TcpListener, upstream: SocketAddr, link: Arc<Link>) {
    let mut connections = JoinSet::new();
    while let Ok((client, _)) = listener.accept().await {
        let Ok(service) = TcpStream::connect(upstream).await else {
            continue; // the client sees its connection closed, as with the service down
        };
        let (client_read, client_write) = client.into_split();
        let (service_read, mut service_write) = service.into_split();
        connections.spawn(async move {
            let mut client_read = client_read;
            let _ = tokio::io::copy(&mut client_read, &mut service_write).await;
        });
        connections.spawn(replies(service_read, client_write, Arc::clone(&link)));
    }
}

/// Passes the service's replies to the client, in order, each held as long as the link
/// says when it is read.
async fn replies(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    link: Arc<Link>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        let delay = Duration::from_millis(link.delay_ms.load(Ordering::SeqCst));
        link.held.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(delay).await;
        let written = to.write_all(&buffer[..read]).await;
        link.held.fetch_sub(1, Ordering::SeqCst);
        if written.is_err() {
            return;
        }
    }
}
