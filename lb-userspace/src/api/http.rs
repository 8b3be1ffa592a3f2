//! Just enough HTTP/1.1 for the admin API and the metrics endpoint: one request per
//! connection, bodies framed by Content-Length.

use std::io::{self, Read, Write};

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, BufReader};

/// Largest request or response body accepted.
pub const MAX_BODY: usize = 4 << 20;
const MAX_HEADER_LINES: usize = 64;

/// A parsed request.
#[derive(Debug, PartialEq, Eq)]
pub struct HttpRequest {
    /// Method (`GET`, `POST`).
    pub method: String,
    /// Path with query.
    pub path: String,
    /// Body.
    pub body: Vec<u8>,
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

/// Reads one request.
pub async fn read_request<R: tokio::io::AsyncRead + Unpin>(r: R) -> io::Result<HttpRequest> {
    let mut r = BufReader::new(r);
    let mut line = String::new();
    r.read_line(&mut line).await?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return Err(invalid("malformed request line"));
    };
    let (method, path) = (method.to_owned(), path.to_owned());
    let mut length = 0usize;
    for _ in 0..MAX_HEADER_LINES {
        line.clear();
        r.read_line(&mut line).await?;
        let header = line.trim_end();
        if header.is_empty() {
            let mut body = vec![0u8; length];
            r.read_exact(&mut body).await?;
            return Ok(HttpRequest { method, path, body });
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().map_err(|_| invalid("bad Content-Length"))?;
            if length > MAX_BODY {
                return Err(invalid("body too large"));
            }
        }
    }
    Err(invalid("too many header lines"))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        _ => "Internal Server Error",
    }
}

/// Writes a complete response and closes the write side.
pub async fn write_response<W: AsyncWrite + Unpin>(
    mut w: W,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len()
    );
    w.write_all(head.as_bytes()).await?;
    w.write_all(body).await?;
    w.shutdown().await
}

/// Sends one request on a blocking stream and returns the status and body.
pub fn exchange<S: Read + Write>(stream: &mut S, method: &str, path: &str, body: &[u8]) -> io::Result<(u16, Vec<u8>)> {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: lb\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.take(MAX_BODY as u64 + 4096).read_to_end(&mut response)?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid("response without a header end"))?;
    let head = std::str::from_utf8(&response[..split]).map_err(|_| invalid("non-UTF-8 header"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("malformed status line"))?;
    Ok((status, response[split + 4..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn request_round_trip() {
        let (a, b) = tokio::io::duplex(4096);
        let writer = tokio::spawn(async move {
            let mut b = b;
            b.write_all(b"POST /v1/command HTTP/1.1\r\nHost: x\r\ncontent-length: 5\r\n\r\nhello").await.unwrap();
            b
        });
        let req = read_request(a).await.unwrap();
        writer.await.unwrap();
        assert_eq!(req, HttpRequest { method: "POST".into(), path: "/v1/command".into(), body: b"hello".to_vec() });
    }

    #[tokio::test]
    async fn rejects_garbage_and_huge_bodies() {
        let (a, mut b) = tokio::io::duplex(4096);
        b.write_all(b"\r\n").await.unwrap();
        drop(b);
        assert!(read_request(a).await.is_err());
        let (a, mut b) = tokio::io::duplex(4096);
        b.write_all(format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1).as_bytes()).await.unwrap();
        assert!(read_request(a).await.is_err());
    }

    #[test]
    fn exchange_parses_status_and_body() {
        struct Fake(std::io::Cursor<Vec<u8>>, Vec<u8>);
        impl Read for Fake {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                Read::read(&mut self.0, buf)
            }
        }
        impl Write for Fake {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                Write::write(&mut self.1, buf)
            }
            fn flush(&mut self) -> io::Result<()> { Ok(()) }
        }
        let mut s = Fake(std::io::Cursor::new(b"HTTP/1.1 409 Conflict\r\nContent-Length: 2\r\n\r\n{}".to_vec()), Vec::new());
        let (status, body) = exchange(&mut s, "GET", "/v1/status", b"").unwrap();
        assert_eq!((status, body.as_slice()), (409, &b"{}"[..]));
        assert!(String::from_utf8(s.1).unwrap().starts_with("GET /v1/status HTTP/1.1\r\n"));
    }
}
