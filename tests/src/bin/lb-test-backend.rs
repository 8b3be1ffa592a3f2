//! A backend server for the lab and the end-to-end tests: HTTP/1.1 (keep-alive) answering
//! `/` with its name and `/health` with 200 (or 500 after `/fail`, 200 again after `/recover`),
//! `/bytes/N` with a body of N bytes (at most 64 MiB; byte i is `b'a' + i % 26`, for large
//! downloads), and a UDP echo that prefixes replies with its name.
//!
//! Usage: lb-test-backend NAME TCP_LISTEN [UDP_LISTEN]   e.g. `b1 0.0.0.0:8080 0.0.0.0:5353`

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

/// Longest a connection may stay idle before the server closes it.
const IDLE: Duration = Duration::from_secs(120);

/// Largest body `/bytes/N` serves.
const MAX_BYTES: usize = 64 << 20;

/// Byte `i` of a `/bytes/N` body.
fn body_byte(i: usize) -> u8 {
    b'a' + (i % 26) as u8
}

/// Answers `/bytes/N`: N bytes of [`body_byte`], written in chunks of about 64 KiB.
fn respond_bytes(stream: &mut TcpStream, n: usize) -> std::io::Result<()> {
    write!(stream, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\n\r\n")?;
    let chunk: Vec<u8> = (0..64 * 26 * 40).map(body_byte).collect();
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk.len());
        // Every chunk starts at a multiple of 26, so the pattern runs on across chunks.
        stream.write_all(&chunk[..k])?;
        left -= k;
    }
    Ok(())
}

fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn serve(stream: TcpStream, name: &str, healthy: &AtomicBool) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IDLE))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request)? == 0 {
            return Ok(());
        }
        let mut close = false;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 {
                return Ok(());
            }
            if header.trim().is_empty() {
                break;
            }
            close |= header.to_ascii_lowercase().starts_with("connection: close");
        }
        let path = request.split_whitespace().nth(1).unwrap_or("/");
        let bytes = path.strip_prefix("/bytes/").and_then(|n| n.parse::<usize>().ok()).filter(|&n| n <= MAX_BYTES);
        match (bytes, path) {
            (Some(n), _) => respond_bytes(&mut writer, n)?,
            (None, "/health") if healthy.load(Ordering::Relaxed) => respond(&mut writer, "200 OK", "ok\n")?,
            (None, "/health") => respond(&mut writer, "500 Internal Server Error", "failing\n")?,
            (None, "/fail") => {
                healthy.store(false, Ordering::Relaxed);
                respond(&mut writer, "200 OK", "health now fails\n")?
            }
            (None, "/recover") => {
                healthy.store(true, Ordering::Relaxed);
                respond(&mut writer, "200 OK", "health now passes\n")?
            }
            _ => respond(&mut writer, "200 OK", &format!("{name}\n"))?,
        }
        if close {
            return Ok(());
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(name), Some(tcp)) = (args.first(), args.get(1)) else {
        eprintln!("usage: lb-test-backend NAME TCP_LISTEN [UDP_LISTEN]");
        std::process::exit(2);
    };
    let name: Arc<str> = name.as_str().into();
    if let Some(udp) = args.get(2) {
        let socket = UdpSocket::bind(udp).unwrap_or_else(|e| panic!("binding UDP {udp}: {e}"));
        let name = name.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, peer)) = socket.recv_from(&mut buf) {
                let mut reply = format!("{name}:").into_bytes();
                reply.extend_from_slice(&buf[..n]);
                let _ = socket.send_to(&reply, peer);
            }
        });
    }
    let listener = TcpListener::bind(tcp).unwrap_or_else(|e| panic!("binding TCP {tcp}: {e}"));
    let healthy = Arc::new(AtomicBool::new(true));
    for stream in listener.incoming().flatten() {
        let (name, healthy) = (name.clone(), healthy.clone());
        thread::spawn(move || {
            let _ = serve(stream, &name, &healthy);
        });
    }
}
