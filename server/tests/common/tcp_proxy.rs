//! A loopback TCP proxy a test controls, to cut a link without closing it:
//! [`TcpProxy::cut`] stops forwarding in both directions (the sockets stay
//! open, what is sent waits, as behind a dead router), [`TcpProxy::restore`]
//! forwards again. Used between a Herald instance and PostgreSQL.
#![allow(dead_code)]

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct TcpProxy {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
}

impl TcpProxy {
    /// Listens on a free port of 127.0.0.1, forwarding each connection to
    /// `upstream`; runs until the runtime stops.
    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, _) = watch::channel(false);
        let cuts = cut.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pump(client_read, server_write, cuts.subscribe()));
                tokio::spawn(pump(server_read, client_write, cuts.subscribe()));
            }
        });
        TcpProxy { addr, cut }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops forwarding (nothing is closed).
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Forwards again, what waited first.
    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

/// Copies `from` to `to` while the link is up; while it is cut, reads
/// nothing and holds what was read.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut cut: watch::Receiver<bool>) {
    let mut buf = vec![0_u8; 64 * 1024];
    loop {
        while *cut.borrow_and_update() {
            if cut.changed().await.is_err() {
                return;
            }
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => n,
            },
            _ = cut.changed() => continue,
        };
        while *cut.borrow_and_update() {
            if cut.changed().await.is_err() {
                return;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
