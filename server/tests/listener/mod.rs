//! What the connection tests share: a real `herald serve` child process
//! with both listeners on loopback, normal requests to it, slow clients, and
//! a hand-written HTTP/2 client (prior knowledge, cleartext) that can open
//! no flow-control window, which no client library offers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

pub const HERALD: &str = env!("CARGO_BIN_EXE_herald");

/// A running `herald serve`, killed on drop, with its standard error lines.
pub struct Herald {
    pub child: Child,
    pub probe: Probe,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Herald {
    /// `herald serve` with both listeners on loopback and `toml` appended to
    /// its config; with `open_files` (soft, hard), started under that
    /// `RLIMIT_NOFILE` by `prlimit`.
    pub fn start(dir: &Path, toml: &str, open_files: Option<(u64, u64)>) -> Herald {
        let certified =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("certificate");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
        let config = dir.join("herald.toml");
        std::fs::write(
            &config,
            format!(
                "server_name = \"slow.test\"\ndatabase = {:?}\nlisten = \"127.0.0.1:0\"\n\
                 federation_listen = \"127.0.0.1:0\"\ntls_certificate_path = {cert:?}\n\
                 tls_private_key_path = {key:?}\n{toml}",
                dir.join("herald.db"),
            ),
        )
        .unwrap();
        let mut command = match open_files {
            Some((soft, hard)) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={soft}:{hard}")).arg(HERALD);
                c
            }
            None => Command::new(HERALD),
        };
        let mut child = command
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn herald (and prlimit, from util-linux)");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                for key in ["federation=", "address="] {
                    if let Some(i) = line.find(key) {
                        let addr = line[i + key.len()..].split_whitespace().next();
                        if let Some(addr) = addr.and_then(|a| a.parse::<SocketAddr>().ok()) {
                            let _ = tx.send((key, addr));
                        }
                    }
                }
                lines.lock().unwrap().push(line);
            }
        });
        let (mut admin, mut federation) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(60);
        while admin.is_none() || federation.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(("federation=", addr)) => federation = Some(addr),
                Ok((_, addr)) => admin = Some(addr),
                Err(e) => panic!("herald did not start listening ({e}): {:?}", log.lock()),
            }
        }
        Herald {
            child,
            probe: Probe {
                admin: admin.unwrap(),
                federation: federation.unwrap(),
                cert_pem: certified.cert.pem(),
            },
            log,
        }
    }

    /// File descriptors the server holds open now.
    pub fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    pub fn tls_connector(&self) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(self.cert_pem.as_bytes())
            .map(|c: CertificateDer<'static>| c)
            .unwrap();
        roots.add(der).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

/// Where to send normal requests, and the certificate to trust.
pub struct Probe {
    pub admin: SocketAddr,
    pub federation: SocketAddr,
    pub cert_pem: String,
}

impl Probe {
    pub fn http_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.cert_pem.as_bytes()).unwrap())
            // A new connection for every request: each must get through.
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap()
    }
}

impl std::ops::Deref for Herald {
    type Target = Probe;
    fn deref(&self) -> &Probe {
        &self.probe
    }
}

/// The soft and hard `Max open files` of a process, from /proc.
pub fn open_files_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

/// One normal request to each listener, timed.
pub async fn normal_requests(herald: &Probe, client: &reqwest::Client) -> Vec<Duration> {
    let mut took = Vec::new();
    for url in [
        format!("http://{}/_matrix/client/versions", herald.admin),
        format!("https://{}/_matrix/key/v2/server", herald.federation),
    ] {
        let started = Instant::now();
        let response = client.get(&url).send().await;
        let status = response.as_ref().map(|r| r.status().as_u16());
        assert_eq!(
            status.as_ref().ok(),
            Some(&200),
            "{url} while slow connections are open: {response:?}"
        );
        took.push(started.elapsed());
    }
    took
}

/// Raises this process's soft open-files limit to the hard one; the slow
/// connections' client ends live here.
pub fn raise_own_open_files(needed: u64) {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap();
    assert!(
        limit >= needed,
        "this test opens {needed} sockets; the hard open-files limit is {limit}"
    );
}

/// How the slow clients behave once connected.
#[derive(Clone, Copy)]
pub enum Slow {
    /// Connects and sends nothing.
    Silent,
    /// Sends half a request head and no more.
    HalfHead,
    /// Finishes the TLS handshake, then sends nothing.
    TlsThenSilent,
    /// Opens HTTP/2 (preface and SETTINGS), then sends no request.
    H2Silent,
}

/// A slow connection, held open by the test until dropped.
pub enum Held {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

pub async fn open_slow(
    addr: SocketAddr,
    how: Slow,
    tls: tokio_rustls::TlsConnector,
) -> Option<Held> {
    let connect = async {
        let mut tcp = TcpStream::connect(addr).await.ok()?;
        match how {
            Slow::Silent => Some(Held::Tcp(tcp)),
            Slow::HalfHead => {
                tcp.write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                    .await
                    .ok()?;
                Some(Held::Tcp(tcp))
            }
            Slow::H2Silent => {
                tcp.write_all(&h2_opening(65_535)).await.ok()?;
                Some(Held::Tcp(tcp))
            }
            Slow::TlsThenSilent => {
                let name = ServerName::IpAddress(addr.ip().into());
                let stream = tls.connect(name, tcp).await.ok()?;
                Some(Held::Tls(Box::new(stream)))
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), connect)
        .await
        .ok()
        .flatten()
}

/// Whether the server closed `stream`: a read that ends or fails (never
/// blocking: a connection with nothing to read is open).
pub async fn closed_by_server<S: AsyncRead + Unpin>(stream: &mut S) -> bool {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(Duration::from_millis(1), stream.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

/// The HTTP/2 client preface and a SETTINGS frame with
/// `SETTINGS_INITIAL_WINDOW_SIZE` = `window`.
pub fn h2_opening(window: u32) -> Vec<u8> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 6, 0x4, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&[0, 0x4]);
    out.extend_from_slice(&window.to_be_bytes());
    out
}

/// A HEADERS frame (END_STREAM, END_HEADERS) for `GET path` on stream 1,
/// in HPACK literals without Huffman coding.
pub fn h2_get(authority: &str, path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86]; // :method GET, :scheme http
    for (name_index, value) in [(0x44u8, path), (0x41, authority)] {
        assert!(value.len() < 127);
        block.push(name_index);
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    let len = block.len() as u32;
    let mut frame = len.to_be_bytes()[1..].to_vec();
    frame.extend_from_slice(&[0x1, 0x5, 0, 0, 0, 1]);
    frame.extend_from_slice(&block);
    frame
}

/// An HTTP/2 client that asks `GET path` with a stream window of `window`
/// (0: the answer's body can never be sent); returns once the answer's
/// HEADERS came (the request is under way on the server).
pub async fn h2_get_request(addr: SocketAddr, path: &str, window: u32) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut opening = h2_opening(window);
    opening.extend(h2_get(&addr.to_string(), path));
    tcp.write_all(&opening).await.unwrap();
    let headers = async {
        loop {
            let mut head = [0u8; 9];
            tcp.read_exact(&mut head).await.unwrap();
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            tcp.read_exact(&mut payload).await.unwrap();
            match (head[3], head[4]) {
                // The server's SETTINGS: acknowledge them.
                (0x4, 0) => tcp
                    .write_all(&[0, 0, 0, 0x4, 0x1, 0, 0, 0, 0])
                    .await
                    .unwrap(),
                (0x1, _) => return,
                (0x0, _) if window == 0 => panic!("DATA sent into a zero window"),
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), headers)
        .await
        .expect("no HEADERS answer within 10 s");
    tcp
}

/// Reads (and drops) whatever the server sends until it closes the
/// connection, for at most `within`; how long that took.
pub async fn until_closed<S: AsyncRead + Unpin>(
    stream: &mut S,
    within: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    let drain = async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::time::timeout(within, drain)
        .await
        .ok()
        .map(|()| started.elapsed())
}

/// Reads an HTTP/1.1 answer (head and a `Content-Length` body) from
/// `stream`, for at most `within`; the whole text (`None`: closed first or
/// too slow).
pub async fn read_answer<S: AsyncRead + Unpin>(stream: &mut S, within: Duration) -> Option<String> {
    let read = async {
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&answer).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())
                            .flatten()
                    })
                    .unwrap_or(0);
                if answer.len() >= end + 4 + length {
                    return Some(text);
                }
            }
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            answer.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(within, read).await.ok().flatten()
}
