//! Slow and stalling clients against the real `herald serve` (issue 11,
//! finding 2): a request head trickled one byte a second is cut off after
//! `header_read_timeout`, a silent TLS client after `tls_handshake_timeout`;
//! an idle kept-alive HTTP/1.1 connection closes after the header timeout,
//! an HTTP/2 one only after `idle_timeout`; at a small `max_connections`,
//! request bodies that never finish (or trickle in a byte within each
//! `body_timeout`) and HTTP/2 clients that open no window hold the listener
//! at most about `body_timeout`, a request under way survives,
//! the longest-quiet connection is the one closed; SIGTERM with an answer
//! stalled exits within `drain_timeout`, with a TLS handshake waiting at
//! once. The 5,000-connection flood is in `connection_flood.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod listener;

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;

use listener::{
    h2_get_request, normal_requests, open_files_limits, read_answer, until_closed, Herald,
};

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
         idle_timeout = \"30s\"\n",
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
    // hyper times the wait for every HTTP/1.1 head: the header timeout
    // (2 s), not the idle timeout (30 s), closes it.
    let idle = silent_until_closed(&mut admin, Duration::from_secs(20)).await;
    assert!(idle.is_some(), "an idle kept-alive connection stayed open");
    assert!(
        answered.elapsed() <= Duration::from_secs(6),
        "idle for {:?}",
        answered.elapsed()
    );
    // An HTTP/2 connection after its answer: the idle timeout (30 s) holds
    // it, not the header timeout.
    let mut h2 = h2_get_request(herald.admin, "/_matrix/client/versions", 65_535).await;
    let closed = until_closed(&mut h2, Duration::from_secs(5)).await;
    assert!(
        closed.is_none(),
        "an idle HTTP/2 connection closed after {closed:?}, before its 30 s idle timeout"
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

/// A `POST /login` that announces 100 bytes and sends one: returns once
/// the server asked for the body (`100 Continue`: its head is parsed and the
/// handler reads the body).
async fn login_with_an_unfinished_body(addr: std::net::SocketAddr) -> TcpStream {
    login_announcing(addr, 100).await
}

/// A `POST /login` that announces `length` bytes and sends one, once the
/// server answered `100 Continue`.
async fn login_announcing(addr: std::net::SocketAddr, length: usize) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /_matrix/client/v3/login HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\
         Expect: 100-continue\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let go_on = read_answer(&mut tcp, Duration::from_secs(10)).await;
    assert!(
        go_on
            .as_deref()
            .is_some_and(|a| a.starts_with("HTTP/1.1 100")),
        "{go_on:?}"
    );
    tcp.write_all(b"{").await.unwrap();
    tcp
}

const SMALL_CAP: &str = "[connections]\nmax_connections = 4\nbody_timeout = \"2s\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_request_bodies_do_not_pin_a_listener_at_its_cap() {
    let dir = tempfile::tempdir().unwrap();
    let herald = Herald::start(dir.path(), SMALL_CAP, None);
    let mut slow = Vec::new();
    for _ in 0..4 {
        slow.push(login_with_an_unfinished_body(herald.admin).await);
    }
    // Every slot has a request under way; a normal request still gets in.
    let started = Instant::now();
    let client = herald.http_client();
    let took = normal_requests(&herald, &client).await;
    assert!(
        took[0] < Duration::from_secs(8),
        "admin request took {took:?}"
    );
    // Each unfinished body got its Matrix error.
    for tcp in &mut slow {
        let answer = read_answer(tcp, Duration::from_secs(10)).await;
        let answer = answer.expect("no answer to an unfinished body");
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("\"errcode\":\"M_NOT_JSON\""), "{answer}");
    }
    eprintln!(
        "4 unfinished bodies at max_connections = 4: a normal request answered in {:.1?}",
        took[0]
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// Sends the rest of a body a byte every half second (each byte well within
/// the 2 s body timeout) until the server answers, for at most 20 s; how
/// long the answer took and the answer.
async fn trickle_body(tcp: TcpStream) -> (Duration, Option<String>) {
    let started = Instant::now();
    let (mut read, mut write) = tcp.into_split();
    let writer = async {
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if write.write_all(b" ").await.is_err() {
                break;
            }
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        answer = read_answer(&mut read, Duration::from_secs(20)) => (started.elapsed(), answer),
        () = writer => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_trickled_within_the_body_timeout_do_not_pin_a_listener_at_its_cap() {
    let dir = tempfile::tempdir().unwrap();
    let herald = Herald::start(dir.path(), SMALL_CAP, None);
    let mut tricklers = Vec::new();
    for _ in 0..4 {
        let tcp = login_announcing(herald.admin, 2_000_000).await;
        tricklers.push(tokio::spawn(trickle_body(tcp)));
    }
    // Every slot has a request under way whose body keeps coming; a normal
    // request still gets in once they fall below the rate floor.
    let client = herald.http_client();
    let took = normal_requests(&herald, &client).await;
    assert!(
        took[0] < Duration::from_secs(8),
        "admin request took {took:?}"
    );
    // Each trickled body was cut off soon after the body timeout (2 s),
    // with its Matrix error.
    let mut slowest = Duration::ZERO;
    for trickler in tricklers {
        let (after, answer) = trickler.await.unwrap();
        slowest = slowest.max(after);
        let answer = answer.expect("a trickled body was never cut off");
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("\"errcode\":\"M_NOT_JSON\""), "{answer}");
        assert!(after < Duration::from_secs(6), "cut off after {after:?}");
    }
    eprintln!(
        "4 trickled bodies at max_connections = 4: a normal request answered in {:.1?}, \
         the last body cut off after {slowest:.1?}",
        took[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_that_open_no_window_do_not_pin_a_listener_at_its_cap() {
    let dir = tempfile::tempdir().unwrap();
    let herald = Herald::start(dir.path(), SMALL_CAP, None);
    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(h2_get_request(herald.admin, "/_matrix/client/versions", 0).await);
    }
    let client = herald.http_client();
    let took = normal_requests(&herald, &client).await;
    assert!(
        took[0] < Duration::from_secs(8),
        "admin request took {took:?}"
    );
    // The stalled ones are closed once the body timeout (2 s) has passed.
    for tcp in &mut stalled {
        let closed = until_closed(tcp, Duration::from_secs(10)).await;
        assert!(
            closed.is_some(),
            "a stalled HTTP/2 answer kept its connection"
        );
    }
    eprintln!(
        "4 zero-window HTTP/2 clients at max_connections = 4: a normal request answered in {:.1?}",
        took[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_under_way_survives_at_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let herald = Herald::start(
        dir.path(),
        "[connections]\nmax_connections = 2\nbody_timeout = \"10s\"\n",
        None,
    );
    let mut busy = login_with_an_unfinished_body(herald.admin).await;
    let body = br#""type":"m.login.password","user":"nobody","password":"wrong"}"#;
    let client = herald.http_client();
    // Normal requests and silent connections take the other slot in turn
    // while the body comes, a byte at a time within the body timeout.
    let mut silent = Vec::new();
    for chunk in body.chunks(body.len().div_ceil(4)) {
        silent.push(TcpStream::connect(herald.admin).await.unwrap());
        normal_requests(&herald, &client).await;
        busy.write_all(chunk).await.unwrap();
    }
    busy.write_all(&vec![b' '; 100 - 1 - body.len()])
        .await
        .unwrap();
    let answer = read_answer(&mut busy, Duration::from_secs(10)).await;
    let answer = answer.expect("the request under way was cut off");
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("M_FORBIDDEN"), "{answer}");
}

/// `GET /versions` on a kept-alive HTTP/1.1 connection, answered.
async fn versions(tcp: &mut TcpStream) {
    tcp.write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let answer = read_answer(tcp, Duration::from_secs(10)).await;
    assert!(
        answer
            .as_deref()
            .is_some_and(|a| a.starts_with("HTTP/1.1 200")),
        "{answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_closes_the_longest_quiet_connection_not_the_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let herald = Herald::start(
        dir.path(),
        "[connections]\nmax_connections = 2\nheader_read_timeout = \"60s\"\n\
         idle_timeout = \"60s\"\n",
        None,
    );
    // `first` opened first but answered last: `second` has been quiet
    // longest.
    let mut first = TcpStream::connect(herald.admin).await.unwrap();
    versions(&mut first).await;
    let mut second = TcpStream::connect(herald.admin).await.unwrap();
    versions(&mut second).await;
    versions(&mut first).await;
    let mut third = TcpStream::connect(herald.admin).await.unwrap();
    versions(&mut third).await;
    let closed = until_closed(&mut second, Duration::from_secs(10)).await;
    assert!(closed.is_some(), "the longest-quiet connection stayed open");
    // `first` is still served.
    versions(&mut first).await;
}

/// Sends SIGTERM to `herald`; how long it took to exit (successfully),
/// failing past `within`.
async fn terminate(herald: &mut Herald, within: Duration) -> Duration {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &herald.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let exited = loop {
        if let Some(exit) = herald.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            started.elapsed() < within,
            "herald still running {within:?} after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exited.success(), "{exited}");
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_an_unfinished_tls_handshake_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut herald = Herald::start(
        dir.path(),
        "[connections]\ntls_handshake_timeout = \"600s\"\ndrain_timeout = \"600s\"\n",
        None,
    );
    // A client that sends no TLS hello, once herald has accepted it (one
    // more file open).
    let files = herald.open_files();
    let _silent = TcpStream::connect(herald.federation).await.unwrap();
    let started = Instant::now();
    while herald.open_files() <= files {
        assert!(started.elapsed() < Duration::from_secs(10), "not accepted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = terminate(&mut herald, Duration::from_secs(10)).await;
    eprintln!("exited {took:.1?} after SIGTERM with a TLS handshake waiting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_stalled_answer_exits_within_the_drain_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut herald = Herald::start(
        dir.path(),
        "[connections]\nbody_timeout = \"600s\"\ndrain_timeout = \"2s\"\n",
        None,
    );
    let _stalled = h2_get_request(herald.admin, "/_matrix/client/versions", 0).await;
    let took = terminate(&mut herald, Duration::from_secs(15)).await;
    eprintln!("exited {took:.1?} after SIGTERM with a stalled answer (drain_timeout 2 s)");
    assert!(took >= Duration::from_millis(1500), "{took:?}");
}
