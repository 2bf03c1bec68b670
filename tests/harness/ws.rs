//! A WebSocket upstream that records what it saw: each request head (upgrade or not) and each
//! message; it answers an upgrade by hand (so that a request without one is seen too) and then
//! echoes every text and binary message through `tungstenite`.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tungstenite::protocol::Role;
use tungstenite::{Message, WebSocket};

/// What the upstream saw.
#[derive(Debug, Clone, PartialEq)]
pub enum WsSeen {
    /// A request head: its first line and headers (names lower-cased).
    Request {
        line: String,
        headers: Vec<(String, String)>,
    },
    /// A message from the gateway: text or binary payload.
    Text(String),
    Binary(Vec<u8>),
    /// A close frame, with its code.
    Close(Option<u16>),
}

pub struct WsUpstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<WsSeen>>>,
}

impl WsUpstream {
    pub fn start() -> WsUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let kept = kept.clone();
                std::thread::spawn(move || serve(stream, &kept));
            }
        });
        WsUpstream { addr, seen }
    }

    pub fn seen(&self) -> Vec<WsSeen> {
        self.seen.lock().unwrap().clone()
    }

    /// The request heads seen.
    pub fn requests(&self) -> Vec<(String, Vec<(String, String)>)> {
        self.seen()
            .into_iter()
            .filter_map(|s| match s {
                WsSeen::Request { line, headers } => Some((line, headers)),
                _ => None,
            })
            .collect()
    }

    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

fn serve(stream: TcpStream, seen: &Mutex<Vec<WsSeen>>) {
    stream.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let upgrade = get("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    let key = get("sec-websocket-key");
    seen.lock().unwrap().push(WsSeen::Request {
        line: line.trim().to_string(),
        headers: headers.clone(),
    });
    let mut stream = stream;
    let (true, Some(key)) = (upgrade, key) else {
        let _ = stream.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\nplain-get",
        );
        return;
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let _ = write!(
        stream,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    let mut ws = WebSocket::from_raw_socket(stream, Role::Server, None);
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => {
                seen.lock().unwrap().push(WsSeen::Text(t.to_string()));
                if ws.send(Message::Text(t)).is_err() {
                    return;
                }
            }
            Ok(Message::Binary(b)) => {
                seen.lock().unwrap().push(WsSeen::Binary(b.to_vec()));
                if ws.send(Message::Binary(b)).is_err() {
                    return;
                }
            }
            Ok(Message::Close(frame)) => {
                seen.lock()
                    .unwrap()
                    .push(WsSeen::Close(frame.map(|f| u16::from(f.code))));
                let _ = ws.flush();
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}
