//! Slow and silent clients against the real `herald serve` (issue 11,
//! finding 2): under a 1,024-file limit, 5,000 connections that send nothing
//! or half a request head on each listener (the admin port, the federation
//! port before and after its TLS handshake) leave both answering normal
//! requests with file descriptors to spare; a request head trickled one byte a
//! second is cut off after `header_read_timeout`, a silent TLS client after
//! `tls_handshake_timeout`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

const HERALD: &str = env!("CARGO_BIN_EXE_herald");

/// A running `herald serve`, killed on drop, with its standard error lines.
struct Herald {
    child: Child,
    probe: Probe,
    log: Arc<Mutex<Vec<String>>>,
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
    fn start(dir: &Path, toml: &str, open_files: Option<(u64, u64)>) -> Herald {
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
    fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    fn tls_connector(&self) -> tokio_rustls::TlsConnector {
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
struct Probe {
    admin: SocketAddr,
    federation: SocketAddr,
    cert_pem: String,
}

impl Probe {
    fn http_client(&self) -> reqwest::Client {
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
fn open_files_limits(pid: u32) -> (u64, u64) {
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
async fn normal_requests(herald: &Probe, client: &reqwest::Client) -> Vec<Duration> {
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
fn raise_own_open_files(needed: u64) {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap();
    assert!(
        limit >= needed,
        "this test opens {needed} sockets; the hard open-files limit is {limit}"
    );
}

/// How the slow clients behave once connected.
#[derive(Clone, Copy)]
enum Slow {
    /// Connects and sends nothing.
    Silent,
    /// Sends half a request head and no more.
    HalfHead,
    /// Finishes the TLS handshake, then sends nothing.
    TlsThenSilent,
}

/// A slow connection, held open by the test until dropped.
enum Held {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

async fn open_slow(addr: SocketAddr, how: Slow, tls: tokio_rustls::TlsConnector) -> Option<Held> {
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
async fn closed_by_server<S: AsyncRead + Unpin>(stream: &mut S) -> bool {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(Duration::from_millis(1), stream.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

const SLOW_PER_LISTENER: usize = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_slow_connections_per_listener_under_1024_files_leave_both_answering() {
    raise_own_open_files(2 * SLOW_PER_LISTENER as u64 + 512);
    let dir = tempfile::tempdir().unwrap();
    let herald = Herald::start(dir.path(), "", Some((1024, 1024)));
    let client = herald.http_client();
    let quiet = normal_requests(&herald, &client).await;
    let tls = herald.tls_connector();

    // Both listeners at once: silent clients and half request heads on the
    // admin port; silent TCP (no TLS hello) and silent clients past their
    // handshake on the federation port.
    // Normal requests all along, one pair at a time, while the slow
    // connections open.
    let flooding = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let during = {
        let flooding = flooding.clone();
        let (admin, federation, cert_pem) =
            (herald.admin, herald.federation, herald.cert_pem.clone());
        tokio::spawn(async move {
            let probe = Probe {
                admin,
                federation,
                cert_pem,
            };
            let client = probe.http_client();
            let mut took = Vec::new();
            for _ in 0..1_000 {
                if !flooding.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                took.extend(normal_requests(&probe, &client).await);
            }
            took
        })
    };
    let started = Instant::now();
    let plan: Vec<(SocketAddr, Slow)> = (0..SLOW_PER_LISTENER)
        .flat_map(|i| {
            let admin = if i % 2 == 0 {
                Slow::Silent
            } else {
                Slow::HalfHead
            };
            let federation = if i % 10 == 0 {
                Slow::TlsThenSilent
            } else {
                Slow::Silent
            };
            [(herald.admin, admin), (herald.federation, federation)]
        })
        .collect();
    let mut held = Vec::with_capacity(plan.len());
    let mut opened = futures_util::stream::iter(plan)
        .map(|(addr, how)| open_slow(addr, how, tls.clone()))
        .buffer_unordered(256);
    let mut most_files = 0;
    while let Some(connection) = opened.next().await {
        held.extend(connection);
        if held.len() % 500 == 0 {
            most_files = most_files.max(herald.open_files());
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "opening the slow connections took over 2 minutes ({} open)",
            held.len()
        );
    }
    drop(opened);
    let opened_in = started.elapsed();
    flooding.store(false, std::sync::atomic::Ordering::SeqCst);
    let during = during.await.unwrap();
    assert!(
        held.len() >= 2 * SLOW_PER_LISTENER * 9 / 10,
        "only {} of {} slow connections could be opened",
        held.len(),
        2 * SLOW_PER_LISTENER
    );

    // While the attackers hold on: normal requests on both listeners.
    let mut under_load = Vec::new();
    for _ in 0..5 {
        under_load.extend(normal_requests(&herald, &client).await);
        most_files = most_files.max(herald.open_files());
    }
    let mut still_open = 0;
    for connection in &mut held {
        let closed = match connection {
            Held::Tcp(s) => closed_by_server(s).await,
            Held::Tls(s) => closed_by_server(s).await,
        };
        still_open += usize::from(!closed);
    }
    let slowest = under_load
        .iter()
        .chain(&during)
        .max()
        .copied()
        .unwrap_or_default();
    let mut sorted = during.clone();
    sorted.sort();
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
    eprintln!(
        "{} slow connections opened in {:.1?} (5,000 per listener, under a 1,024-file limit); \
         normal requests before: {quiet:.1?}; while opening: {} with median {median:.1?}; \
         once open: {}; slowest of all {slowest:.1?}; {still_open} slow connections still \
         open on the server at the end; at most {most_files} files open in herald",
        held.len(),
        opened_in,
        during.len(),
        under_load.len(),
    );
    assert!(!during.is_empty(), "no normal request ran during the flood");
    assert!(
        slowest < Duration::from_secs(5),
        "a normal request took {slowest:?} under slow connections"
    );
    // Both listeners take at most half of the limit; the rest stays free for
    // outbound connections, DNS and the database.
    assert!(
        most_files <= 1024 * 3 / 4,
        "herald held {most_files} files open under a 1,024 limit"
    );
    let log = herald.log.lock().unwrap();
    assert!(
        !log.iter().any(|l| l.contains("Too many open files")),
        "herald ran out of file descriptors: {log:?}"
    );
}

/// Sends `head` one byte a second until the server closes the connection;
/// returns how long that took (`None`: still open after the whole head).
async fn trickle<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    head: &[u8],
) -> Option<Duration> {
    let started = Instant::now();
    for byte in head {
        if stream.write_all(std::slice::from_ref(byte)).await.is_err() {
            return Some(started.elapsed());
        }
        let _ = stream.flush().await;
        // Waits the second for the server's close (an event), not a fixed sleep.
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => return Some(started.elapsed()),
            Err(_) => {}
        }
    }
    None
}

/// Waits up to `within` for the server to close a connection that sends
/// nothing; how long it took.
async fn silent_until_closed<S: AsyncRead + Unpin>(
    stream: &mut S,
    within: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 64];
    match tokio::time::timeout(within, stream.read(&mut buf)).await {
        Ok(_) => Some(started.elapsed()),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_heads_and_silent_clients_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let herald = Herald::start(
        dir.path(),
        "[connections]\nheader_read_timeout = \"2s\"\ntls_handshake_timeout = \"2s\"\n\
         idle_timeout = \"3s\"\n",
        None,
    );
    let head = b"GET /_matrix/client/versions HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                 X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let within = |took: Option<Duration>, what: &str| {
        let took = took.unwrap_or_else(|| panic!("{what}: still open after {} s", head.len()));
        assert!(
            took >= Duration::from_millis(1500) && took <= Duration::from_secs(6),
            "{what}: closed after {took:?}, not about 2 s"
        );
        took
    };

    // The admin port, one byte a second.
    let mut admin = TcpStream::connect(herald.admin).await.unwrap();
    let admin_took = within(trickle(&mut admin, head).await, "admin, trickled head");

    // The federation port, one byte a second after a prompt TLS handshake.
    let tcp = TcpStream::connect(herald.federation).await.unwrap();
    let name = ServerName::IpAddress(herald.federation.ip().into());
    let mut tls = herald.tls_connector().connect(name, tcp).await.unwrap();
    let federation_took = within(trickle(&mut tls, head).await, "federation, trickled head");

    // Silent clients: no request on the admin port, no TLS hello on the
    // federation port.
    let mut admin = TcpStream::connect(herald.admin).await.unwrap();
    within(
        silent_until_closed(&mut admin, Duration::from_secs(20)).await,
        "admin, silent",
    );
    let mut federation = TcpStream::connect(herald.federation).await.unwrap();
    within(
        silent_until_closed(&mut federation, Duration::from_secs(20)).await,
        "federation, no TLS hello",
    );
    // A kept-alive connection left idle after its answer.
    let mut admin = TcpStream::connect(herald.admin).await.unwrap();
    admin
        .write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let answered = loop {
        let n = tokio::time::timeout(Duration::from_secs(10), admin.read(&mut buf))
            .await
            .expect("no answer")
            .unwrap();
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
        if answer.ends_with(b"}") {
            break Instant::now();
        }
    };
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let idle = silent_until_closed(&mut admin, Duration::from_secs(20)).await;
    assert!(idle.is_some(), "an idle kept-alive connection stayed open");
    assert!(
        answered.elapsed() <= Duration::from_secs(6),
        "idle for {:?}",
        answered.elapsed()
    );

    eprintln!(
        "trickled heads cut off after {admin_took:.1?} (admin) and {federation_took:.1?} (federation)"
    );

    // A normal request still answers with these timeouts.
    let took = normal_requests(&herald, &herald.http_client()).await;
    assert_eq!(took.len(), 2);
}

#[tokio::test]
async fn start_up_raises_the_soft_open_files_limit_to_the_hard_one() {
    let dir = tempfile::tempdir().unwrap();
    let herald = Herald::start(dir.path(), "", Some((256, 2048)));
    assert_eq!(open_files_limits(herald.child.id()), (2048, 2048));
    // And the caps follow: a quarter of 2,048 per listener.
    let log = herald.log.lock().unwrap();
    assert!(
        log.iter()
            .any(|l| l.contains("connection limits per listener")
                && l.contains("max_connections=512")),
        "{log:?}"
    );
}
