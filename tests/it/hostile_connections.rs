//! Clients that try to hold the gateway's connections: heads sent a byte at a time (HTTP/1 and
//! `PRI `-prefixed), HTTP/2 prefaces with nothing after, answers never read, floods past the
//! connection cap and past the descriptor limit. Each test checks the bound and that a
//! well-behaved client is served throughout.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use corsgate::config::Config;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const HEADER_READ: Duration = Duration::from_millis(500);
const SEND: Duration = Duration::from_secs(1);
const IDLE: Duration = Duration::from_secs(10);

/// The watchdog notices a deadline within 1.25 times it; the rest is the test's own scheduling
/// on a busy machine.
fn cut_within(deadline: Duration) -> Duration {
    deadline * 3 / 2
}

/// A configuration with the short deadlines these tests measure.
fn hostile_config(origin_url: &str) -> Config {
    let mut config = config(vec![route_to(
        origin_url,
        corsgate::rules::RulesSource::None,
    )]);
    let timeouts = &mut config.server.timeouts;
    timeouts.header_read = HEADER_READ;
    timeouts.send = SEND;
    timeouts.idle = IDLE;
    config
}

/// How a dribbling client's connection ended.
#[derive(Debug)]
enum Ended {
    /// The gateway closed it (EOF or reset) after this long.
    Closed(Duration),
    /// The gateway answered something: the head was taken as complete or bad.
    Answered(String),
}

/// Connects, sends `prefix` a byte every `every`, then `filler` over and over (a head that
/// never ends), and reports how the connection ended.
async fn dribble(addr: SocketAddr, prefix: &[u8], filler: &[u8], every: Duration) -> Ended {
    let start = Instant::now();
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let bytes: Vec<u8> = prefix.to_vec();
    let filler = filler.to_vec();
    let write = async move {
        for byte in bytes.iter().chain(filler.iter().cycle()) {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    };
    let read = async move {
        let mut buf = [0u8; 1024];
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        }
    };
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::select! {
            answer = read => answer,
            () = write => None,
        }
    })
    .await
    .expect("the gateway ends a dribbling connection within 10 s");
    match ended {
        None => Ended::Closed(start.elapsed()),
        Some(answer) => Ended::Answered(answer),
    }
}

/// Runs `clients` dribbling connections while a normal request is sent; checks that each was
/// closed at `header_read` and that the normal request got its answer.
async fn slowloris(addr: SocketAddr, clients: usize, prefix: &'static [u8]) {
    let attack: Vec<_> = (0..clients)
        .map(|_| {
            tokio::spawn(dribble(
                addr,
                prefix,
                b"x-slow: 1\r\n",
                Duration::from_millis(100),
            ))
        })
        .collect();
    let normal = send(addr, "GET", "/", &[]).await;
    assert_eq!(
        normal.status,
        StatusCode::OK,
        "a normal client during the attack"
    );
    for client in attack {
        match client.await.expect("dribbling client") {
            Ended::Closed(after) => assert!(
                after >= HEADER_READ && after <= cut_within(HEADER_READ),
                "closed after {after:?}, header_read {HEADER_READ:?}"
            ),
            Ended::Answered(answer) => panic!("the gateway answered a slow head: {answer:?}"),
        }
    }
}

#[tokio::test]
async fn heads_sent_a_byte_at_a_time_are_cut_at_header_read_while_others_are_served() {
    let origin = Origin::start(Reply::default()).await;
    let gw = start(hostile_config(&origin.url())).await;
    slowloris(gw.addr(), 8, b"GET / HTTP/1.1\r\nHost: a\r\n").await;
}

#[tokio::test]
async fn the_wait_for_the_first_byte_counts_against_header_read() {
    let origin = Origin::start(Reply::default()).await;
    let gw = start(hostile_config(&origin.url())).await;
    // The first byte comes after most of `header_read`, then the head dribbles: the deadline
    // still counts from the connection's start, not from its first byte.
    let start = Instant::now();
    let stream = TcpStream::connect(gw.addr()).await.expect("connect");
    tokio::time::sleep(HEADER_READ * 3 / 5).await;
    let (mut reader, mut writer) = stream.into_split();
    let write = async move {
        for byte in b"GET / HTTP/1.1\r\nHost: a\r\n"
            .iter()
            .chain(b"x-slow: 1\r\n".iter().cycle())
        {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let read = async move {
        let mut buf = [0u8; 1024];
        matches!(reader.read(&mut buf).await, Ok(0) | Err(_))
    };
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::select! {
            closed = read => closed,
            () = write => false,
        }
    })
    .await
    .expect("the gateway ends the connection within 10 s");
    let after = start.elapsed();
    assert!(closed, "the gateway answered a slow head");
    assert!(
        after >= HEADER_READ && after <= cut_within(HEADER_READ),
        "closed after {after:?}, header_read {HEADER_READ:?}"
    );
}

#[tokio::test]
async fn a_head_that_begins_like_the_http2_preface_is_cut_at_header_read_too() {
    let origin = Origin::start(Reply::default()).await;
    let gw = start(hostile_config(&origin.url())).await;
    slowloris(gw.addr(), 4, b"PRI / HTTP/1.1\r\nHost: a\r\n").await;
}

#[tokio::test]
async fn an_http2_preface_with_nothing_after_it_is_dropped_at_header_read() {
    let origin = Origin::start(Reply::default()).await;
    let gw = start(hostile_config(&origin.url())).await;
    for dribbled in [false, true] {
        let start = Instant::now();
        let mut stream = TcpStream::connect(gw.addr()).await.expect("connect");
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        if dribbled {
            for byte in preface {
                stream.write_all(&[*byte]).await.expect("preface byte");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        } else {
            stream.write_all(preface).await.expect("preface");
        }
        // The server's own SETTINGS may come; then the connection must close.
        let mut buf = [0u8; 1024];
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return start.elapsed(),
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("the gateway closes a silent HTTP/2 connection");
        assert!(
            closed >= HEADER_READ && closed <= cut_within(HEADER_READ),
            "dribbled: {dribbled}: closed after {closed:?}"
        );
    }
    let answer = send_with(&h2c_client(), gw.addr(), "GET", "/", &[]).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "an HTTP/2 client that sends requests"
    );
}

#[tokio::test]
async fn the_admin_and_demo_listeners_cut_slow_heads_at_header_read() {
    let origin = Origin::start(Reply::default()).await;
    let root = std::env::temp_dir().join(format!("corsgate-demo-{}", std::process::id()));
    std::fs::create_dir_all(&root).expect("demo root");
    std::fs::write(root.join("hello.txt"), "hello").expect("demo file");
    let mut config = hostile_config(&origin.url());
    config.admin.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.demo_origin = Some(corsgate::config::DemoOriginConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        root,
    });
    let gw = start(config).await;
    let admin_addr = gw.admin.expect("admin listener");
    let demo = gw.demo_origin.expect("demo origin");

    let slow_admin = tokio::spawn(dribble(
        admin_addr,
        b"GET /healthz HTTP/1.1\r\n",
        b"x-slow: 1\r\n",
        Duration::from_millis(100),
    ));
    let slow_demo = tokio::spawn(dribble(
        demo,
        b"GET /hello.txt HTTP/1.1\r\n",
        b"x-slow: 1\r\n",
        Duration::from_millis(100),
    ));
    let (status, _) = admin(admin_addr, "GET", "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    let file = send(demo, "GET", "/hello.txt", &[]).await;
    assert_eq!(file.body, Bytes::from_static(b"hello"));
    for (listener, slow) in [("admin", slow_admin), ("demo", slow_demo)] {
        match slow.await.expect("dribbling client") {
            Ended::Closed(after) => assert!(
                after >= HEADER_READ && after <= cut_within(HEADER_READ),
                "{listener}: closed after {after:?}"
            ),
            Ended::Answered(answer) => panic!("{listener} answered a slow head: {answer:?}"),
        }
    }
}

/// Large enough that no socket buffer on the way holds it.
const LARGE: u64 = 64 * 1024 * 1024;

#[tokio::test]
async fn a_client_that_reads_nothing_is_cut_at_send_and_the_origin_connection_released() {
    let origin = StreamingOrigin::start(LARGE).await;
    let gw = start(hostile_config(&origin.url())).await;
    let mut stalled = TcpStream::connect(gw.addr()).await.expect("connect");
    stalled
        .write_all(b"GET /large HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("request");
    let asked = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), || async { origin.open() == 1 }).await,
        "the request reaches the origin"
    );

    let normal = send(gw.addr(), "GET", "/small", &[]).await;
    assert_eq!(
        normal.body,
        Bytes::from_static(SMALL_BODY),
        "served meanwhile"
    );
    // The stalled answer's origin connection, and the one that served the normal request, now
    // idle in the gateway's pool.
    let open = origin.open();

    let released = eventually(Duration::from_secs(10), || async {
        origin.cut_short() == 1 && origin.open() < open
    })
    .await;
    let after = asked.elapsed();
    assert!(
        released,
        "the origin's body is dropped ({}) and its connection closed ({} of {open} open)",
        origin.cut_short(),
        origin.open()
    );
    assert!(
        after <= SEND + cut_within(SEND),
        "released {after:?} after the request, send {SEND:?}"
    );
    // What the sockets held on the way, then the end: the answer was cut, not completed.
    let mut received = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stalled.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received += n as u64,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the client's connection is closed");
    assert!(
        received < LARGE,
        "the whole answer went out: {received} bytes"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            gw.open_connections() == 0
        })
        .await,
        "{} connections still counted open",
        gw.open_connections()
    );
}

#[tokio::test]
async fn an_http2_stream_left_unread_is_reset_at_send_while_the_connection_serves_others() {
    let origin = StreamingOrigin::start(LARGE).await;
    let gw = start(hostile_config(&origin.url())).await;
    let tcp = TcpStream::connect(gw.addr()).await.expect("connect");
    // A small window per stream, a large one for the connection: one stalled stream must not
    // stall the others by the connection's window.
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(64 * 1024)
        .initial_connection_window_size(256 * 1024 * 1024)
        .handshake::<_, Bytes>(tcp)
        .await
        .expect("h2 handshake");
    tokio::spawn(connection);
    let get = |path: &str| {
        http::Request::get(format!("http://gateway{path}"))
            .body(())
            .expect("request")
    };

    let mut client = client.ready().await.expect("h2 ready");
    let (large, _) = client
        .send_request(get("/large"), true)
        .expect("send /large");
    let large = large.await.expect("response head");
    let asked = Instant::now();
    assert_eq!(large.status(), StatusCode::OK);
    let mut large = large.into_body();

    async fn small(client: &h2::client::SendRequest<Bytes>, req: http::Request<()>) -> Bytes {
        let mut client = client.clone().ready().await.expect("h2 ready");
        let (answer, _) = client.send_request(req, true).expect("send");
        let mut body = answer.await.expect("answer").into_body();
        let mut all = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.expect("chunk");
            let _ = body.flow_control().release_capacity(chunk.len());
            all.extend_from_slice(&chunk);
        }
        Bytes::from(all)
    }
    assert_eq!(
        small(&client, get("/small")).await,
        SMALL_BODY,
        "served meanwhile"
    );

    let released = eventually(Duration::from_secs(10), || async {
        origin.cut_short() == 1
    })
    .await;
    let after = asked.elapsed();
    assert!(released, "the stalled stream's origin body is dropped");
    assert!(
        after <= SEND + cut_within(SEND),
        "released {after:?} after the answer began, send {SEND:?}"
    );
    // Read what the window let through: then the reset.
    let mut received = 0usize;
    let reset = loop {
        match large.data().await {
            Some(Ok(chunk)) => received += chunk.len(),
            Some(Err(err)) => break err,
            None => panic!("the stalled stream ended without a reset after {received} bytes"),
        }
    };
    assert_eq!(reset.reason(), Some(h2::Reason::CANCEL), "{reset}");
    assert!((received as u64) < LARGE);
    assert_eq!(
        small(&client, get("/small")).await,
        SMALL_BODY,
        "the connection still serves after the reset"
    );
    assert!(
        eventually(Duration::from_secs(5), || async { origin.open() <= 1 }).await,
        "the stalled stream's origin connection is closed, {} open",
        origin.open()
    );
}

#[tokio::test]
async fn a_flood_past_max_connections_waits_in_the_backlog_and_is_served_after() {
    let origin = Origin::start(Reply::default()).await;
    let cap = 20;
    let path = config_file(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\
         [server.timeouts]\nheader_read = \"5s\"\n\
         [server.limits]\nmax_connections = {cap}\n\
         [[route]]\nhosts = [\"*\"]\norigin = \"{}\"\n",
        origin.url()
    ));
    let (binary, addr) = Binary::start(
        &["serve", "--config", path.to_str().expect("utf-8 path")],
        env!("CARGO_MANIFEST_DIR"),
    );
    let before = binary.open_descriptors();
    let lines_before = binary.log_lines("").len();

    let mut flood = Vec::new();
    for _ in 0..60 {
        flood.push(
            TcpStream::connect(addr)
                .await
                .expect("the backlog takes it"),
        );
    }
    assert!(
        eventually(Duration::from_secs(5), || async {
            binary.open_descriptors() >= before + cap
        })
        .await,
        "the gateway fills its cap ({} descriptors, {before} before)",
        binary.open_descriptors()
    );
    let mut most = 0;
    let sampling = Instant::now();
    while sampling.elapsed() < Duration::from_secs(1) {
        most = most.max(binary.open_descriptors());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        most <= before + cap,
        "{most} descriptors open with {before} before the flood and a cap of {cap}"
    );

    drop(flood);
    let answer = send(addr, "GET", "/", &[]).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "served once the flood closed"
    );
    let flood_lines = binary.log_lines("").len() - lines_before;
    let full = binary.log_lines("new connections wait in the listen backlog");
    assert_eq!(full.len(), 1, "{full:?}");
    assert!(flood_lines <= 3, "{flood_lines} log lines for one flood");
}

#[tokio::test]
async fn out_of_descriptors_the_gateway_caps_itself_at_half_and_backs_off_without_spinning() {
    let origin = Origin::start(Reply {
        delay: Duration::from_secs(3),
        // Origin connections close with their answer, so their descriptors come back.
        headers: vec![("connection", "close")],
        ..Reply::default()
    })
    .await;
    let nofile = 64;
    let (binary, addr) = Binary::start_with_nofile(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--origin",
            &origin.url(),
        ],
        nofile,
    );
    let lowered = binary.log_lines("max_connections lowered from 10000 to 32");
    assert_eq!(lowered.len(), 1, "{:?}", binary.log_lines(""));

    // Requests held at the origin take two descriptors each (client and origin side): enough of
    // them leave fewer descriptors than the cap has room for, so `accept` itself fails.
    let baseline = binary.open_descriptors();
    let held = (62 - baseline) / 2;
    let extra = 64 - (baseline + 2 * held) + 2;
    assert!(
        held + extra < 32,
        "baseline {baseline}: no room to test below the cap"
    );
    let requests: Vec<_> = (0..held)
        .map(|_| {
            tokio::spawn(raw(
                addr,
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            ))
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(5), || async { origin.count() == held }).await,
        "{} of {held} requests reached the origin",
        origin.count()
    );
    let mut waiting = Vec::new();
    for _ in 0..extra {
        waiting.push(
            TcpStream::connect(addr)
                .await
                .expect("the backlog takes it"),
        );
    }
    assert!(
        eventually(Duration::from_secs(2), || async {
            !binary.log_lines("cannot accept connections").is_empty()
        })
        .await,
        "accept fails for want of descriptors"
    );
    let cpu_before = binary.cpu_time();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let busy = binary.cpu_time() - cpu_before;
    assert!(
        busy < Duration::from_millis(300),
        "{busy:?} of CPU in one second of failing accepts"
    );

    for request in requests {
        let head = request.await.expect("request task");
        assert!(head.starts_with("HTTP/1.1 200"), "{head:?}");
    }
    drop(waiting);
    let answer = send(addr, "GET", "/", &[]).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "served once descriptors came back"
    );
    let failures = binary.log_lines("cannot accept connections");
    assert!(failures.len() <= 2, "{failures:?}");
    assert!(
        failures[0].contains("out of file descriptors"),
        "{failures:?}"
    );
}

#[tokio::test]
async fn http2_clients_are_told_the_configured_stream_limit() {
    let origin = Origin::start(Reply::default()).await;
    let mut config = hostile_config(&origin.url());
    config.server.limits.max_concurrent_streams = 7;
    let gw = start(config).await;
    let tcp = TcpStream::connect(gw.addr()).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("h2 ready");
    // The server's SETTINGS are in once a first answer is.
    let request = http::Request::get("http://gateway/")
        .body(())
        .expect("request");
    let (answer, _) = client.send_request(request, true).expect("send");
    assert_eq!(answer.await.expect("answer").status(), StatusCode::OK);
    assert_eq!(client.current_max_send_streams(), 7);
}
