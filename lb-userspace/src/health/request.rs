//! The HTTP request of a health probe, and the rules for the `path` and `host` that go into
//! it. `lb config check` applies the same rules ([`path_problem`], [`host_problem`]), so that a
//! health check that could not be sent is refused in the file instead of failing every probe.

use std::net::{Ipv6Addr, SocketAddr};

/// Why `path` cannot be the request target of a probe (RFC 9112 origin-form: an absolute path
/// and an optional query, made of RFC 3986 characters), if it cannot.
pub fn path_problem(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return Some(format!("{path:?} must start with '/'"));
    }
    let (path_part, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    if let Some(problem) = chars_problem(path_part, 0, "path", |c| is_pchar(c) || c == '/') {
        return Some(format!("{path:?}: {problem}"));
    }
    if let Some(q) = query
        && let Some(problem) = chars_problem(q, path_part.len() + 1, "query", |c| is_pchar(c) || c == '/' || c == '?')
    {
        return Some(format!("{path:?}: {problem}"));
    }
    None
}

/// Why `host` cannot be the `Host` header of a probe (RFC 9110: a host name, an IPv4
/// address or a bracketed IPv6 address, with an optional port), if it cannot.
pub fn host_problem(host: &str) -> Option<String> {
    if host.is_empty() {
        return Some("the Host header cannot be empty: leave `host` out to send the backend's address".to_owned());
    }
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let Some((literal, after)) = rest.split_once(']') else {
            return Some(format!("{host:?}: an IPv6 address needs its closing ']'"));
        };
        if literal.parse::<Ipv6Addr>().is_err() {
            return Some(format!("{host:?}: {literal:?} is not an IPv6 address"));
        }
        match after {
            "" => (None, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return Some(format!("{host:?}: only \":port\" may follow ']'")),
            },
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (Some(name), Some(port)),
            None => (Some(host), None),
        }
    };
    if let Some(name) = name {
        if name.is_empty() {
            return Some(format!("{host:?}: the host name is empty"));
        }
        let reg_name = |c: char| is_unreserved(c) || is_sub_delim(c);
        if let Some(problem) = chars_problem(name, 0, "host name", reg_name) {
            return Some(format!("{host:?}: {problem}"));
        }
    }
    if let Some(port) = port
        && !(port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok_and(|p| p > 0))
    {
        return Some(format!("{host:?}: {port:?} is not a port (1-65535)"));
    }
    None
}

/// The first character of `text` (a `what` at byte `offset` of the value) that is neither
/// `allowed` nor part of a percent-encoded octet, described with its remedy.
fn chars_problem(text: &str, offset: usize, what: &str, allowed: impl Fn(char) -> bool) -> Option<String> {
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        let i = at + offset;
        if c == '%' {
            let hex = text.get(at + 1..at + 3).filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
            if hex.is_none() {
                return Some(format!("'%' at byte {i} of the {what} starts no percent-encoded octet (such as %20)"));
            }
            chars.nth(1);
            continue;
        }
        if allowed(c) {
            continue;
        }
        let shown = c.escape_debug();
        return Some(if c.is_ascii_control() {
            format!("control character '{shown}' at byte {i} of the {what}: it cannot be sent in a request")
        } else if c == ' ' {
            format!("space at byte {i} of the {what}: percent-encode it as %20")
        } else if !c.is_ascii() {
            let remedy = if what == "host name" { "write the name in its ASCII (xn--) form" } else { "percent-encode its UTF-8 bytes" };
            format!("non-ASCII character '{shown}' at byte {i} of the {what}: {remedy}")
        } else {
            format!("'{shown}' at byte {i} is not allowed in the {what}: percent-encode it")
        });
    }
    None
}

/// RFC 3986 `unreserved`.
fn is_unreserved(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~".contains(c)
}

/// RFC 3986 `sub-delims`.
fn is_sub_delim(c: char) -> bool {
    "!$&'()*+,;=".contains(c)
}

/// RFC 3986 `pchar`, less `pct-encoded` (checked apart).
fn is_pchar(c: char) -> bool {
    is_unreserved(c) || is_sub_delim(c) || c == ':' || c == '@'
}

/// The probe's request: `method path HTTP/1.1` with `Host` (the target's address when
/// `host` is `None`), `User-Agent: lb-health` and `Connection: close`. `Err` when the path or
/// host cannot be sent (refused by `lb config check` already; never the backend's fault).
pub fn build_request(target: SocketAddr, method: &str, path: &str, host: Option<&str>) -> Result<String, String> {
    let host = match host {
        Some(h) => h.to_owned(),
        None => default_host(target),
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!("invalid HTTP method {method:?}"));
    }
    if let Some(problem) = path_problem(path) {
        return Err(format!("invalid HTTP path: {problem}"));
    }
    if let Some(problem) = host_problem(&host) {
        return Err(format!("invalid Host header: {problem}"));
    }
    Ok(format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: lb-health\r\nConnection: close\r\n\r\n"))
}

/// The target's address as a `Host` value: IPv6 in brackets, the port unless it is 80.
pub fn default_host(target: SocketAddr) -> String {
    let ip = match target {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    };
    if target.port() == 80 { ip } else { format!("{ip}:{}", target.port()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_host_header() {
        assert_eq!(default_host("10.0.0.1:80".parse().unwrap()), "10.0.0.1");
        assert_eq!(default_host("10.0.0.1:8080".parse().unwrap()), "10.0.0.1:8080");
        assert_eq!(default_host("[fd00::1]:80".parse().unwrap()), "[fd00::1]");
        assert_eq!(default_host("[fd00::1]:8080".parse().unwrap()), "[fd00::1]:8080");
        for target in ["10.0.0.1:80", "10.0.0.1:8080", "[fd00::1]:80", "[fd00::1]:8080"] {
            assert_eq!(host_problem(&default_host(target.parse().unwrap())), None, "{target}");
        }
    }

    #[test]
    fn request_rejects_header_injection() {
        let target = "10.0.0.1:80".parse().unwrap();
        assert!(build_request(target, "GET", "/health\r\nX: y", None).is_err());
        assert!(build_request(target, "GET", "/a b", None).is_err());
        assert!(build_request(target, "GET", "/", Some("h\r\nX: y")).is_err());
        assert!(build_request(target, "", "/", None).is_err());
        assert!(build_request(target, "GE T", "/", None).is_err());
        assert_eq!(
            build_request(target, "GET", "/health", None).unwrap(),
            "GET /health HTTP/1.1\r\nHost: 10.0.0.1\r\nUser-Agent: lb-health\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn paths_that_can_be_sent() {
        for ok in ["/", "/health", "/a/b/c.json", "/health?full=1&x=%20y", "/~user/-_.!$&'()*+,;=:@", "/q?a=/b?c", "/%41%4a"] {
            assert_eq!(path_problem(ok), None, "{ok:?}");
        }
    }

    #[test]
    fn paths_that_cannot_be_sent() {
        let cases = [
            ("health", "\"health\" must start with '/'"),
            ("", "\"\" must start with '/'"),
            ("http://h/x", "\"http://h/x\" must start with '/'"),
            ("/a b", "\"/a b\": space at byte 2 of the path: percent-encode it as %20"),
            ("/h\r\nX-Injected: 1", "\"/h\\r\\nX-Injected: 1\": control character '\\r' at byte 2 of the path: it cannot be sent in a request"),
            ("/h\n", "\"/h\\n\": control character '\\n' at byte 2 of the path: it cannot be sent in a request"),
            ("/h\u{7f}", "\"/h\\u{7f}\": control character '\\u{7f}' at byte 2 of the path: it cannot be sent in a request"),
            ("/tab\there", "\"/tab\\there\": control character '\\t' at byte 4 of the path: it cannot be sent in a request"),
            ("/gesundheit/ä", "\"/gesundheit/ä\": non-ASCII character 'ä' at byte 12 of the path: percent-encode its UTF-8 bytes"),
            ("/h#frag", "\"/h#frag\": '#' at byte 2 is not allowed in the path: percent-encode it"),
            ("/h?q=\"x\"", "\"/h?q=\\\"x\\\"\": '\\\"' at byte 5 is not allowed in the query: percent-encode it"),
            ("/100%", "\"/100%\": '%' at byte 4 of the path starts no percent-encoded octet (such as %20)"),
            ("/%zz", "\"/%zz\": '%' at byte 1 of the path starts no percent-encoded octet (such as %20)"),
            ("/a\\b", "\"/a\\\\b\": '\\\\' at byte 2 is not allowed in the path: percent-encode it"),
        ];
        for (path, want) in cases {
            assert_eq!(path_problem(path).as_deref(), Some(want), "{path:?}");
        }
    }

    #[test]
    fn hosts() {
        for ok in ["health.example", "health.example:8080", "10.0.0.1", "10.0.0.1:80", "[fd00::1]", "[fd00::1]:8443", "xn--gesundheit-q9a.example", "a_b.local"] {
            assert_eq!(host_problem(ok), None, "{ok:?}");
        }
        let cases = [
            ("", "the Host header cannot be empty: leave `host` out to send the backend's address"),
            ("h\r\nX: y", "\"h\\r\\nX: y\": control character '\\r' at byte 1 of the host name: it cannot be sent in a request"),
            ("health example", "\"health example\": space at byte 6 of the host name: percent-encode it as %20"),
            ("gesundheit.bücher", "\"gesundheit.bücher\": non-ASCII character 'ü' at byte 12 of the host name: write the name in its ASCII (xn--) form"),
            ("h/x", "\"h/x\": '/' at byte 1 is not allowed in the host name: percent-encode it"),
            ("h:http", "\"h:http\": \"http\" is not a port (1-65535)"),
            ("h:70000", "\"h:70000\": \"70000\" is not a port (1-65535)"),
            ("h:", "\"h:\": \"\" is not a port (1-65535)"),
            (":80", "\":80\": the host name is empty"),
            ("fd00::1", "\"fd00::1\": ':' at byte 4 is not allowed in the host name: percent-encode it"),
            ("[fd00::1", "\"[fd00::1\": an IPv6 address needs its closing ']'"),
            ("[fd00::zz]", "\"[fd00::zz]\": \"fd00::zz\" is not an IPv6 address"),
            ("[fd00::1]x", "\"[fd00::1]x\": only \":port\" may follow ']'"),
        ];
        for (host, want) in cases {
            assert_eq!(host_problem(host).as_deref(), Some(want), "{host:?}");
        }
    }
}
