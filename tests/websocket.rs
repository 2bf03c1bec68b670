//! WebSocket (issue 35): upgrades on routes with `websocket` pass every check, then the
//! connection is tunnelled with a message-size limit (1009), idle and lifetime limits (1001),
//! and closed with 1001 when the process upgrades. A real client (`tungstenite`) on one side,
//! a real upstream (`harness::ws`) on the other.

mod harness;

use harness::*;
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

const KEY: &str = "k-websocket-test-key-0123456789abcdef";

fn config(up: &WsUpstream, chat_extra: &str) -> String {
    format!(
        r#"
[[upstreams]]
name = "ws"
targets = ["{up}"]

[[consumers]]
id = "chatter"
api_keys = ["{hash}"]

[[routes]]
name = "chat"
path_prefix = "/chat"
upstream = "ws"
auth = ["api_key"]
allow = {{ consumers = ["chatter"] }}
{chat_extra}

[[routes]]
name = "browser"
path_prefix = "/browser"
upstream = "ws"
public = true
websocket = true
cors = {{ origins = ["https://app.example.com"] }}

[[routes]]
name = "plain"
path_prefix = "/plain"
upstream = "ws"
public = true
"#,
        up = up.addr,
        hash = portcullis::keys::config_hash(KEY),
    )
}

fn start(up: &WsUpstream, chat_extra: &str) -> Gateway {
    Gateway::start(&config(up, chat_extra))
}

type Client = WebSocket<TcpStream>;

/// Open a WebSocket to `path` with these extra headers; the refusal's status and body if the
/// gateway (or the upstream) said no.
fn connect(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Result<Client, (u16, String)> {
    let mut request = format!("ws://127.0.0.1:{}{path}", gw.port)
        .into_client_request()
        .unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let stream = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    match tungstenite::client(request, stream) {
        Ok((ws, response)) => {
            assert_eq!(response.status(), 101);
            Ok(ws)
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            let body = response.body().clone().unwrap_or_default();
            Err((
                response.status().as_u16(),
                String::from_utf8_lossy(&body).into_owned(),
            ))
        }
        Err(e) => panic!("handshake failed: {e}"),
    }
}

/// Read until a close frame comes (answering pings); its code and how long it took.
fn await_close(ws: &mut Client) -> (Option<CloseCode>, Duration) {
    let started = Instant::now();
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => return (frame.map(|f| f.code), started.elapsed()),
            Ok(_) => continue,
            Err(e) => panic!("no close frame, but {e} after {:?}", started.elapsed()),
        }
    }
}

#[test]
fn an_authenticated_upgrade_tunnels_text_and_binary_both_ways() {
    let up = WsUpstream::start();
    let gw = start(&up, "websocket = true");
    let mut ws = connect(&gw, "/chat/room-1", &[("X-API-Key", KEY)]).expect("upgrade");
    ws.send(Message::text("hello through the gate")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("hello through the gate"));
    let bytes: Vec<u8> = (0..=255).collect();
    ws.send(Message::binary(bytes.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(bytes.clone()));
    // A message the size of the default limit passes (the route's max_body_bytes, 1 MiB by
    // default, does not count tunnel bytes).
    let big = vec![7u8; 1 << 20];
    ws.send(Message::binary(big.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(big));
    assert_eq!(
        gw.wait_metric("portcullis_websocket_tunnels", &[("route", "chat")], 1.0),
        1.0
    );

    let requests = up.requests();
    assert_eq!(requests.len(), 1);
    let (line, headers) = &requests[0];
    assert_eq!(line, "GET /chat/room-1 HTTP/1.1");
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("x-consumer-id"), Some("chatter"));
    assert_eq!(
        get("x-api-key"),
        None,
        "the credential stays at the gateway"
    );
    assert_eq!(get("upgrade"), Some("websocket"));
    assert!(get("x-request-id").is_some());
    assert!(up
        .seen()
        .contains(&WsSeen::Text("hello through the gate".into())));
    assert!(up.seen().contains(&WsSeen::Binary(bytes)));

    ws.close(None).unwrap();
    let _ = await_close(&mut ws);
    assert_eq!(
        gw.wait_metric(
            "portcullis_websocket_closed_total",
            &[("route", "chat"), ("reason", "client")],
            1.0
        ),
        1.0
    );
    assert!(wait_until(Duration::from_secs(5), || gw
        .metric("portcullis_websocket_tunnels", &[("route", "chat")])
        == Some(0.0)));
    let log = gw.access_log();
    let line: serde_json::Value = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|l: &serde_json::Value| l["route"] == "chat")
        .unwrap_or_else(|| panic!("no access line: {log}"));
    assert_eq!(line["status"], 101);
    assert_eq!(line["consumer"], "chatter");
    assert_eq!(line["websocket_close"], "client");
}

#[test]
fn refused_upgrades_never_reach_the_upstream() {
    let up = WsUpstream::start();
    let gw = start(
        &up,
        "websocket = true\nrate_limit = { requests = 3, per = \"1m\" }",
    );
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], u16);
    let cases: [Case; 4] = [
        ("/chat", &[], 401),
        (
            "/chat",
            &[("X-API-Key", "k-wrong-key-0123456789abcdef0123")],
            401,
        ),
        (
            "/chat",
            &[("X-API-Key", KEY), ("Origin", "https://evil.example")],
            403,
        ),
        ("/browser", &[("Origin", "https://evil.example")], 403),
    ];
    for (path, headers, status) in cases {
        let (got, body) = connect(&gw, path, headers).expect_err("refused");
        assert_eq!(got, status, "{path} {headers:?}: {body}");
        let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(problem["status"], status);
    }
    assert!(up.requests().is_empty(), "{:?}", up.seen());

    // A malformed handshake, and another version.
    for (headers, status) in [
        (
            "Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n",
            400,
        ),
        (
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n",
            426,
        ),
    ] {
        let r = gw.raw(&format!(
            "GET /browser HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{headers}Connection: close\r\n\r\n"
        ));
        r.assert_problem(status);
    }
    // Frames sent before the handshake's answer cannot be followed: refused.
    let r = gw.raw(
        "GET /browser HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n\u{81}\u{05}early",
    );
    let problem = r.assert_problem(400);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("before the handshake"),
        "{problem}"
    );
    assert!(up.requests().is_empty(), "{:?}", up.seen());

    // The allowed origin, and a rate limit that counts upgrades.
    assert!(connect(&gw, "/browser", &[("Origin", "https://app.example.com")]).is_ok());
    for _ in 0..3 {
        assert!(connect(&gw, "/chat", &[("X-API-Key", KEY)]).is_ok());
    }
    let (status, _) = connect(&gw, "/chat", &[("X-API-Key", KEY)]).expect_err("limited");
    assert_eq!(status, 429);
    assert_eq!(up.requests().len(), 4);
}

#[test]
fn routes_without_websocket_serve_the_upgrade_as_plain_http() {
    let up = WsUpstream::start();
    let gw = start(&up, "websocket = true");
    for (path, upgrade) in [("/plain/x", "websocket"), ("/chat/x", "h2c")] {
        let r = gw.raw(&format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nUpgrade: {upgrade}\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ));
        assert_eq!((r.status, r.text().as_str()), (200, "plain-get"), "{path}");
    }
    for (_, headers) in up.requests() {
        assert!(headers.iter().all(|(k, _)| k != "upgrade"), "{headers:?}");
    }
}

#[test]
fn an_oversized_message_closes_with_1009_before_it_reaches_the_upstream() {
    let up = WsUpstream::start();
    let gw = start(&up, "websocket = { max_message_bytes = \"1KiB\" }");
    let mut ws = connect(&gw, "/chat", &[("X-API-Key", KEY)]).unwrap();
    ws.send(Message::binary(vec![1u8; 1024])).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(vec![1u8; 1024]));
    ws.send(Message::binary(vec![2u8; 1025])).unwrap();
    let (code, _) = await_close(&mut ws);
    assert_eq!(code, Some(CloseCode::Size));
    assert!(wait_until(Duration::from_secs(5), || up
        .seen()
        .contains(&WsSeen::Close(Some(1009)))));
    assert!(
        !up.seen()
            .iter()
            .any(|s| matches!(s, WsSeen::Binary(b) if b.len() > 1024)),
        "the upstream got the oversized message"
    );
    assert_eq!(
        gw.wait_metric(
            "portcullis_websocket_closed_total",
            &[("route", "chat"), ("reason", "message_too_big")],
            1.0
        ),
        1.0
    );

    // Fragments count together: three frames of 400 bytes are one message of 1,200.
    let mut ws = connect(&gw, "/chat", &[("X-API-Key", KEY)]).unwrap();
    use tungstenite::protocol::frame::coding::{Data, OpCode};
    use tungstenite::protocol::frame::Frame;
    for (i, opcode) in [
        OpCode::Data(Data::Text),
        OpCode::Data(Data::Continue),
        OpCode::Data(Data::Continue),
    ]
    .into_iter()
    .enumerate()
    {
        let frame = Frame::message(vec![b'a'; 400], opcode, i == 2);
        if ws.write(Message::Frame(frame)).is_err() {
            break;
        }
        let _ = ws.flush();
    }
    let (code, _) = await_close(&mut ws);
    assert_eq!(code, Some(CloseCode::Size));
    assert!(!up
        .seen()
        .iter()
        .any(|s| matches!(s, WsSeen::Text(t) if t.len() >= 1200)));
}

#[test]
fn a_quiet_client_is_not_cut_by_the_body_read_timeout() {
    let up = WsUpstream::start();
    let body = format!(
        "[limits]\nbody_read_timeout = \"1s\"\n{}",
        config(&up, "websocket = { idle_timeout = \"20s\" }")
    );
    let gw = Gateway::start(&body);
    let mut ws = connect(&gw, "/chat", &[("X-API-Key", KEY)]).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    ws.send(Message::text("after a pause")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("after a pause"));
}

#[test]
fn idle_and_old_tunnels_are_closed_with_1001() {
    let up = WsUpstream::start();
    let gw = start(
        &up,
        "websocket = { idle_timeout = \"1s\", max_lifetime = \"3s\" }",
    );
    let mut idle = connect(&gw, "/chat", &[("X-API-Key", KEY)]).unwrap();
    let (code, after) = await_close(&mut idle);
    assert_eq!(code, Some(CloseCode::Away));
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(4),
        "{after:?}"
    );

    // Busy, but older than its lifetime.
    let mut busy = connect(&gw, "/chat", &[("X-API-Key", KEY)]).unwrap();
    busy.get_mut()
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let started = Instant::now();
    let code = loop {
        assert!(started.elapsed() < Duration::from_secs(10), "never closed");
        let _ = busy.send(Message::text("still here"));
        match busy.read() {
            Ok(Message::Close(frame)) => break frame.map(|f| f.code),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(code, Some(CloseCode::Away));
    assert!(
        started.elapsed() >= Duration::from_millis(2800),
        "{:?}",
        started.elapsed()
    );
    for reason in ["idle", "lifetime"] {
        assert_eq!(
            gw.wait_metric(
                "portcullis_websocket_closed_total",
                &[("route", "chat"), ("reason", reason)],
                1.0
            ),
            1.0,
            "{reason}"
        );
    }
}

#[test]
fn a_graceful_upgrade_closes_open_tunnels_with_1001_and_new_ones_reach_the_new_process() {
    let up = WsUpstream::start();
    let body = config(&up, "websocket = true");
    let mut gw = Gateway::start(&body);
    let mut ws = connect(&gw, "/chat", &[("X-API-Key", KEY)]).unwrap();
    ws.send(Message::text("before")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("before"));
    let old = gw.pid();
    gw.upgrade(&body);
    let (code, after) = await_close(&mut ws);
    assert_eq!(code, Some(CloseCode::Away));
    assert!(after < Duration::from_secs(12), "{after:?}");
    assert!(wait_until(Duration::from_secs(10), || owns_listener(
        gw.pid(),
        gw.port
    )));
    let mut again =
        connect(&gw, "/chat", &[("X-API-Key", KEY)]).expect("a tunnel after the upgrade");
    again.send(Message::text("after")).unwrap();
    assert_eq!(again.read().unwrap(), Message::text("after"));
    assert_ne!(gw.pid(), old);
}
