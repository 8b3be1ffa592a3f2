use std::time::Duration;

use super::*;

const GOOD: &str = "\
global:
  interfaces: [eth0]
vips:
  - name: web
    address: 10.0.0.1
    port: 80
    backends:
      - address: 10.1.0.1
        port: 8080
      - address: 10.1.0.2
        port: 8080
";

/// The error text for `text`, which must be invalid.
fn error(text: &str) -> String {
    parse("t.yaml", text).expect_err("the file must be rejected").to_string()
}

/// `GOOD` with `from` replaced by `to` (which must occur).
fn with(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "{from:?}");
    GOOD.replacen(from, to, 1)
}

#[test]
fn good_file_has_defaults() {
    let c = parse("t.yaml", GOOD).unwrap();
    assert_eq!(c.global.ring_size, 65537);
    assert_eq!(c.global.xdp_mode, XdpMode::Auto);
    assert_eq!((c.global.instance.as_str(), &c.global.forwarding), ("default", &Forwarding::Nat));
    let v = &c.vips[0];
    assert_eq!((v.protocol, v.scheduler, v.source_affinity), (Protocol::Tcp, Scheduler::Maglev, false));
    let h = &v.health_check;
    assert_eq!(
        h.kind,
        CheckKind::Http { method: HttpMethod::Get, path: "/health".into(), expect_status: vec![200], host: None }
    );
    assert_eq!((h.interval, h.timeout, h.rise, h.fall), (Duration::from_secs(2), Duration::from_secs(1), 2, 3));
    assert_eq!(v.backends[1].port, 8080);
    assert_eq!((v.backends[0].weight, v.backends[0].state), (1, AdminState::Up));
}

/// Health checks whose request could not be sent are refused where they are written: the
/// probe would fail against every backend of the VIP.
#[test]
fn health_checks_that_cannot_be_sent_are_refused_with_file_line() {
    let check = |lines: &str| with("    port: 80\n", &format!("    port: 80\n    health_check:\n      type: http\n{lines}"));
    let cases = [
        ("      path: /a b\n", "t.yaml:9: vips[0].health_check.path: \"/a b\": space at byte 2 of the path: percent-encode it as %20"),
        ("      path: \"/health\\r\\nX-Injected: 1\"\n", "t.yaml:9: vips[0].health_check.path: \"/health\\r\\nX-Injected: 1\": control character '\\r' at byte 7 of the path: it cannot be sent in a request"),
        ("      path: /gesundheit/ä\n", "t.yaml:9: vips[0].health_check.path: \"/gesundheit/ä\": non-ASCII character 'ä' at byte 12 of the path: percent-encode its UTF-8 bytes"),
        ("      path: /100%\n", "t.yaml:9: vips[0].health_check.path: \"/100%\": '%' at byte 4 of the path starts no percent-encoded octet (such as %20)"),
        ("      path: health\n", "t.yaml:9: vips[0].health_check.path: \"health\" must start with '/'"),
        ("      host: health example\n", "t.yaml:9: vips[0].health_check.host: \"health example\": space at byte 6 of the host name: percent-encode it as %20"),
        ("      path: /health\n      host: \"h\\nX: y\"\n", "t.yaml:10: vips[0].health_check.host: \"h\\nX: y\": control character '\\n' at byte 1 of the host name: it cannot be sent in a request"),
        ("      host: bücher.example\n", "t.yaml:9: vips[0].health_check.host: \"bücher.example\": non-ASCII character 'ü' at byte 1 of the host name: write the name in its ASCII (xn--) form"),
        ("      host: \"\"\n", "t.yaml:9: vips[0].health_check.host: the Host header cannot be empty: leave `host` out to send the backend's address"),
    ];
    for (lines, want) in cases {
        assert_eq!(error(&check(lines)), want, "{lines:?}");
    }
    let fine = check("      path: /health?full=1&x=%20y\n      host: health.example:8080\n");
    let h = parse("t.yaml", &fine).unwrap().vips[0].health_check.clone();
    assert_eq!(
        h.kind,
        CheckKind::Http { method: HttpMethod::Get, path: "/health?full=1&x=%20y".into(), expect_status: vec![200], host: Some("health.example:8080".into()) }
    );
}

#[test]
fn bad_files_are_rejected_with_file_line_and_field() {
    let cases: Vec<(String, &str)> = vec![
        (format!("{GOOD}extra: 1\n"), "t.yaml:12: unknown field `extra`, expected `global` or `vips`"),
        (with("    port: 80\n", "    port: 80\n    colour: red\n"), "t.yaml:7: vips[0]: unknown field `colour`, expected one of `name`, `address`, `port`, `protocol`, `scheduler`, `source_affinity`, `udp_idle_timeout`, `forwarding`, `tunnel_source`, `gue_port`, `mss_clamp`, `tunnel_mtu`, `health_check`, `backends`"),
        (with("        port: 8080\n      - address: 10.1.0.2", "        prot: 8080\n      - address: 10.1.0.2"), "t.yaml:9: vips[0].backends[0]: unknown field `prot`, expected one of `address`, `port`, `weight`, `state`"),
        (with("address: 10.0.0.1", "address: 10.0.0.300"), "t.yaml:5: vips[0].address: invalid IP address syntax: write an IPv4 or IPv6 address such as 10.0.0.1 or 2001:db8::1"),
        (with("    port: 80", "    port: 0"), "t.yaml:6: vips[0].port: 0 is not a port: use 1-65535"),
        (with("    port: 80", "    port: 70000"), "t.yaml:6: vips[0].port: 70000 is not a port: use 1-65535"),
        (with("    port: 80\n", "    port: 80\n    protocol: sctp\n"), "t.yaml:7: vips[0].protocol: unknown variant `sctp`, expected `tcp` or `udp`"),
        (with("    port: 80\n", "    port: 80\n    scheduler: random\n"), "t.yaml:7: vips[0].scheduler: unknown variant `random`, expected one of `maglev`, `round-robin`, `least-conn`"),
        (with("        port: 8080\n      - address: 10.1.0.2", "        port: 8080\n        weight: 70000\n      - address: 10.1.0.2"), "t.yaml:10: vips[0].backends[0].weight: 70000 is above the maximum weight 65535"),
        (format!("{GOOD}  - name: web2\n    address: 10.0.0.1\n    port: 80\n"), "t.yaml:13: vips[1].address: 10.0.0.1:80/tcp is already vips[0] (\"web\")"),
        (format!("{GOOD}  - name: web\n    address: 10.0.0.2\n    port: 80\n"), "t.yaml:12: vips[1].name: \"web\" is already the name of vips[0]"),
        (with("10.1.0.2", "10.1.0.1"), "t.yaml:10: vips[0].backends[1].address: 10.1.0.1:8080 is listed twice (also backends[0])"),
        (with("10.1.0.2", "2001:db8::2"), "t.yaml:10: vips[0].backends[1].address: 2001:db8::2 is IPv6 but the VIP 10.0.0.1 is IPv4 (an IPv4 VIP reaches IPv6 backends in the tunnel and gue modes only)"),
        (with("  interfaces: [eth0]\n", "  interfaces: [eth0]\n  ring_size: 65536\n"), "t.yaml:3: global.ring_size: ring size 65536 must be a prime between 7 and 1048573: use 65537"),
        (with("  interfaces: [eth0]\n", "  interfaces: [eth0]\n  ring_size: 101\n"), "t.yaml:8: vips[0].backends: VIP \"web\" has 2 backends, which need a ring of at least 200 slots (100 per backend) but global.ring_size is 101: set global.ring_size to a prime such as 211"),
        (with("  interfaces: [eth0]\n", "  interfaces: [eth0]\n  vip_capacity: 1\n")
            + "  - name: web2\n    address: 10.0.0.2\n    port: 80\n", "t.yaml:4: vips: 2 VIPs exceed global.vip_capacity 1: raise it or remove VIPs"),
        (with("  interfaces: [eth0]\n", "  interfaces: [eth0]\n  backend_capacity: 2\n"), "t.yaml:4: vips: 2 backends in all exceed global.backend_capacity 2 (slot 0 is reserved: at most 1): raise it to at least 3"),
        (with("    port: 80\n", "    port: 80\n    health_check:\n      interval: 1s\n      timeout: 3s\n"), "t.yaml:9: vips[0].health_check.timeout: 3s is longer than the interval 1s"),
        (with("    port: 80\n", "    port: 80\n    health_check:\n      rise: 0\n"), "t.yaml:8: vips[0].health_check.rise: 0 is out of range 1-100"),
        (with("    port: 80\n", "    port: 80\n    health_check:\n      interval: 2 parsecs\n"), "t.yaml:8: vips[0].health_check.interval: \"2 parsecs\" is not a duration: write it like 500ms, 2s or 1m"),
        (with("    port: 80\n", "    port: 80\n    health_check:\n      expect_status: [200, 700]\n"), "t.yaml:8: vips[0].health_check.expect_status: 700 is not an HTTP status (100-599)"),
        (with("    port: 80\n", "    port: 80\n    health_check:\n      path: health\n"), "t.yaml:8: vips[0].health_check.path: \"health\" must start with '/'"),
        (with("    port: 80\n", "    port: 80\n    health_check:\n      type: tcp\n      path: /health\n"), "t.yaml:9: vips[0].health_check.path: only used by type http"),
        (with("  interfaces: [eth0]\n", "  interfaces: [eth0]\n  forwarding: dsr\n"), "t.yaml:3: global.forwarding: \"dsr\" names no single mode: direct server return is \"tunnel\" (IPIP), \"gue\" (IPIP in UDP) or \"direct\" (L2)"),
        (with("  interfaces: [eth0]", "  interfaces: []"), "t.yaml:2: global.interfaces: at least one interface is required"),
        (with("  interfaces: [eth0]", "  interfaces: [eth0, \"bad/name\"]"), "t.yaml:2: global.interfaces[1]: \"bad/name\" is not a valid interface name: use 1-15 characters without '/', ':' or spaces (see `ip link`)"),
        (with("    port: 80", "\tport: 80"), "t.yaml:6: found a tab character that violates indentation at line 6 column 1, while scanning a plain scalar: indent with spaces, YAML does not allow tabs"),
        (with("    port: 80", "    port: eighty"), "t.yaml:6: vips[0].port: invalid type: string \"eighty\", expected a port number (1-65535)"),
        ("vips: []\n".to_owned(), "t.yaml:1: missing field `global`"),
        (with("name: web", "name: \"we b\""), "t.yaml:4: vips[0].name: \"we b\" must be 1-63 letters, digits, '_', '.' or '-'"),
        (with("        port: 8080\n      - address: 10.1.0.2", "        port: 80800\n      - address: 10.1.0.2"), "t.yaml:9: vips[0].backends[0].port: 80800 is not a port: use 1-65535"),
        (with("    port: 80\n", "    port: 80\n    health_check:\n      type: tcp\n      port: 0\n")
            , "t.yaml:9: vips[0].health_check.port: 0 is not a port: use 1-65535"),
        (with("    port: 80\n", "    port: 80\n    health_check:\n      interval: -1\n"), "t.yaml:8: vips[0].health_check.interval: -1 is not a duration: write it like 500ms, 2s or 1m"),
        (with("    port: 80\n", "    port: 80\n    health_check:\n      interval: 0ms\n"), "t.yaml:8: vips[0].health_check.interval: must be above zero"),
        (with("    port: 80\n", "    port: 80\n    health_check:\n      expect_status: [200, ok]\n"), "t.yaml:8: vips[0].health_check.expect_status[1]: invalid type: string \"ok\", expected an HTTP status (100-599)"),
        (with("    port: 80\n", "    port: 80\n    health_check:\n      type: grpc\n"), "t.yaml:8: vips[0].health_check.type: unknown variant `grpc`, expected one of `http`, `tcp`, `none`"),
        (with("    port: 80\n", "    port: 80\n    health_check:\n      method: POST\n"), "t.yaml:8: vips[0].health_check.method: unknown variant `POST`, expected `GET` or `HEAD`"),
        (with("  interfaces: [eth0]", "  interfaces: [eth0, eth0]"), "t.yaml:2: global.interfaces[1]: interface eth0 is listed twice"),
        (with("  interfaces: [eth0]", "  interfaces: [eth0:1]"), "t.yaml:2: global.interfaces[0]: \"eth0:1\" is not a valid interface name: use 1-15 characters without '/', ':' or spaces (see `ip link`)"),
        (with("  interfaces: [eth0]\n", "  interfaces: [eth0]\n  xdp_mode: offload\n"), "t.yaml:3: global.xdp_mode: unknown variant `offload`, expected one of `auto`, `driver`, `generic`"),
        (with("  interfaces: [eth0]\n", "  interfaces: [eth0]\n  instance: ../other\n"), "t.yaml:3: global.instance: \"../other\" is not a valid instance name: use 1-64 letters, digits, '-' or '_' (it names a directory in bpffs)"),
        (with("  interfaces: [eth0]\n", "  interfaces: [eth0]\n  forwarding: ipvs\n"), "t.yaml:3: global.forwarding: \"ipvs\" is not a forwarding mode: use one of nat, tunnel, gue, direct"),
        (with("  interfaces: [eth0]\n", "  interfaces: [eth0]\n  metrics_address: localhost:9100\n"), "t.yaml:3: global.metrics_address: invalid socket address syntax: write IP:PORT such as 127.0.0.1:9100 or [::1]:9100"),
        (with("  interfaces: [eth0]\n", "  interfaces: [eth0]\n  conn_capacity: 1\n"), "t.yaml:3: global.conn_capacity: connection table capacity 1 must be between 2 and 16777216"),
        (with("    address: 10.0.0.1\n", ""), "t.yaml:4: vips[0]: missing field `address`"),
        (with("  interfaces: [eth0]\n", ""), "t.yaml:1: global: missing field `interfaces`"),
        (with("    port: 80\n", "    port: 80\n    port: 81\n"), "t.yaml:4: vips[0]: duplicate field `port`"),
    ];
    assert!(cases.len() >= 22);
    for (text, want) in &cases {
        assert_eq!(error(text), *want, "for the file\n{text}");
    }
}

#[test]
fn reports_every_problem_at_once() {
    let text = with("    port: 80", "    port: 0").replace("10.1.0.2", "2001:db8::2");
    let e = parse("t.yaml", &text).unwrap_err();
    assert_eq!(e.0.len(), 2, "{e}");
}

#[test]
fn reports_every_bad_size_without_follow_on_errors() {
    let text = with("  interfaces: [eth0]\n", "  interfaces: [eth0]\n  ring_size: 0\n  vip_capacity: 0\n  backend_capacity: 1\n");
    assert_eq!(
        error(&text),
        "t.yaml:3: global.ring_size: ring size 0 must be a prime between 7 and 1048573\n\
         t.yaml:4: global.vip_capacity: VIP capacity 0 must be between 1 and 4096\n\
         t.yaml:5: global.backend_capacity: backend capacity 1 must be between 2 and 65536"
    );
}

#[test]
fn a_pool_too_big_for_any_ring_is_told_to_split() {
    let mut text = GOOD.replace("  interfaces: [eth0]\n", "  interfaces: [eth0]\n  backend_capacity: 20000\n");
    for i in 0..10_486u32 {
        text.push_str(&format!("      - address: 10.2.{}.{}\n", i / 256, i % 256));
    }
    assert_eq!(
        error(&text),
        "t.yaml:8: vips[0].backends: VIP \"web\" has 10488 backends, which need a ring of at least 1048800 slots (100 per backend) \
         but global.ring_size is 65537: the largest ring size is 1048573: split the pool over several VIPs"
    );
}

/// `GOOD` with a second VIP (`img`, tcp on 10.0.0.2:80 unless changed by `vip`) whose pool is
/// `backends`.
fn with_img(vip: &str, backends: &str) -> String {
    format!("{GOOD}  - name: img\n    address: 10.0.0.2\n    port: 80\n{vip}    backends:\n{backends}")
}

#[test]
fn a_backend_endpoint_serves_one_vip() {
    let v6 = "\
global:
  interfaces: [eth0]
vips:
  - name: web6
    address: 2001:db8::1
    port: 443
    backends:
      - address: 2001:db8::10
  - name: api6
    address: 2001:db8::2
    port: 443
    backends:
      - { address: 2001:db8::11 }
      - { address: 2001:db8::10, port: 443 }
";
    let cases: Vec<(String, &str)> = vec![
        (with_img("", "      - address: 10.1.0.2\n        port: 8080\n"),
         "t.yaml:16: vips[1].backends[0]: backend 10.1.0.2:8080/tcp already serves VIP \"web\" (vips[0]); replies from one backend endpoint must map to one VIP"),
        (with_img("    port: 8080\n", "      - address: 10.1.0.3\n      - address: 10.1.0.1\n").replacen("    port: 80\n    port: 8080\n", "    port: 8080\n", 1),
         "t.yaml:17: vips[1].backends[1]: backend 10.1.0.1:8080/tcp already serves VIP \"web\" (vips[0]); replies from one backend endpoint must map to one VIP"),
        (v6.to_owned(),
         "t.yaml:14: vips[1].backends[1]: backend [2001:db8::10]:443/tcp already serves VIP \"web6\" (vips[0]); replies from one backend endpoint must map to one VIP"),
        (with_img("    protocol: udp\n", "      - address: 10.1.0.1\n        port: 8080\n")
            + "  - name: dns\n    address: 10.0.0.3\n    port: 53\n    protocol: udp\n    backends:\n      - address: 10.1.0.1\n        port: 8080\n",
         "t.yaml:24: vips[2].backends[0]: backend 10.1.0.1:8080/udp already serves VIP \"img\" (vips[1]); replies from one backend endpoint must map to one VIP"),
    ];
    for (text, want) in &cases {
        assert_eq!(error(text), *want, "for the file\n{text}");
    }
}

#[test]
fn shared_backend_endpoints_are_reported_with_every_other_problem() {
    let text = with_img("", "      - address: 10.1.0.1\n        port: 8080\n        weight: 70000\n      - address: 10.1.0.2\n        port: 8080\n");
    assert_eq!(
        error(&text),
        "t.yaml:18: vips[1].backends[0].weight: 70000 is above the maximum weight 65535\n\
         t.yaml:16: vips[1].backends[0]: backend 10.1.0.1:8080/tcp already serves VIP \"web\" (vips[0]); replies from one backend endpoint must map to one VIP\n\
         t.yaml:19: vips[1].backends[1]: backend 10.1.0.2:8080/tcp already serves VIP \"web\" (vips[0]); replies from one backend endpoint must map to one VIP"
    );
    let repeated = with("10.1.0.2", "10.1.0.1");
    assert_eq!(error(&repeated), "t.yaml:10: vips[0].backends[1].address: 10.1.0.1:8080 is listed twice (also backends[0])", "one VIP: reported once");
}

#[test]
fn a_backend_address_may_serve_other_protocols_and_ports() {
    for text in [
        with_img("    protocol: udp\n", "      - address: 10.1.0.1\n        port: 8080\n"),
        with_img("", "      - address: 10.1.0.1\n        port: 8081\n"),
        with_img("", "      - address: 10.1.0.1\n"),
        with_img("    address: 2001:db8::1\n", "      - address: 2001:db8::10\n        port: 8080\n").replacen("    address: 10.0.0.2\n", "", 1),
    ] {
        let c = parse("t.yaml", &text).unwrap_or_else(|e| panic!("{e}\nfor the file\n{text}"));
        assert_eq!(c.vips.len(), 2);
    }
}

#[test]
fn scalar_forms_are_accepted() {
    let text = with("    port: 80\n", "    port: 80\n    health_check:\n      interval: 3\n      timeout: 1500ms\n      expect_status: 204\n");
    let h = parse("t.yaml", &text).unwrap().vips[0].health_check.clone();
    assert_eq!((h.interval, h.timeout), (Duration::from_secs(3), Duration::from_millis(1500)));
    assert!(matches!(h.kind, CheckKind::Http { expect_status, .. } if expect_status == vec![204]));
}

#[test]
fn round_trips_through_yaml() {
    let text = "\
global:
  interfaces: [eth0, eth1]
  instance: edge-2
  xdp_mode: generic
  hash_seed: 99
  metrics_address: 127.0.0.1:9100
  log_format: json
vips:
  - name: web
    address: 2001:db8::1
    port: 443
    scheduler: least-conn
    source_affinity: true
    health_check:
      type: http
      method: HEAD
      path: /ready
      expect_status: [200, 204]
      host: example.org
      interval: 1500ms
      timeout: 1s
      rise: 3
      fall: 4
    backends:
      - address: 2001:db8::10
        weight: 3
        state: draining
  - name: dns
    address: 10.0.0.53
    port: 53
    protocol: udp
    scheduler: round-robin
    health_check:
      type: tcp
      port: 5353
    backends: []
";
    let c = parse("t.yaml", text).unwrap();
    let again = serde_yaml::to_string(&c).unwrap();
    assert_eq!(parse("again.yaml", &again).unwrap(), c, "{again}");
    assert_eq!(c.vips[0].backends[0].port, 443);
    assert_eq!(c.vips[1].health_check.kind, CheckKind::Tcp);
}

#[test]
fn diff_names_what_changed() {
    let old = parse("a", GOOD).unwrap();
    assert!(diff(&old, &old).is_empty());
    let new = parse("b", &with("port: 8080\n      - address: 10.1.0.2", "port: 8080\n        weight: 5\n      - address: 10.1.0.2")).unwrap();
    let d = diff(&old, &new);
    assert_eq!((d.vips_changed.clone(), d.needs_program_reload()), (vec!["web".to_owned()], false));
    let new = parse("c", &(with("interfaces: [eth0]", "interfaces: [eth0]\n  hash_seed: 5") + "  - name: img\n    address: 10.0.0.2\n    port: 80\n")).unwrap();
    let d = diff(&old, &new);
    assert_eq!(d.global_changed, vec!["hash_seed".to_owned()]);
    assert!(d.needs_program_reload());
    assert_eq!(d.vips_added, vec!["img".to_owned()]);
    let d = diff(&new, &old);
    assert_eq!(d.vips_removed, vec!["img".to_owned()]);
    let new = parse("d", &with("interfaces: [eth0]", "interfaces: [eth0]\n  log_format: json")).unwrap();
    assert!(!diff(&old, &new).needs_program_reload());
}

#[test]
fn shipped_examples_are_valid() {
    for (name, text) in [("lab.yaml", include_str!("../../../examples/lab.yaml")), ("edge.yaml", include_str!("../../../examples/edge.yaml"))] {
        parse(name, text).unwrap_or_else(|e| panic!("{e}"));
    }
    // The DSR lab's, in every mode `cargo xtask lab --dsr` runs it in.
    let dsr = include_str!("../../../examples/lab-dsr.yaml");
    for mode in ["tunnel", "gue", "direct"] {
        let config = parse("lab-dsr.yaml", &dsr.replace("forwarding: tunnel", &format!("forwarding: {mode}"))).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.vips[0].forwarding.to_string(), mode);
    }
}

#[test]
fn udp_idle_timeout_is_whole_seconds_for_udp_vips_only() {
    let udp = with("    port: 80\n", "    port: 80\n    protocol: udp\n    udp_idle_timeout: 2m\n");
    let config = parse("t.yaml", &udp).expect("valid");
    assert_eq!(config.vips[0].udp_idle_timeout, Duration::from_secs(120));
    let default = parse("t.yaml", GOOD).expect("valid");
    assert_eq!(default.vips[0].udp_idle_timeout, Duration::from_secs(lb_common::limits::DEFAULT_UDP_IDLE_SECS.into()));
    for (text, want) in [
        (
            with("    port: 80\n", "    port: 80\n    udp_idle_timeout: 10s\n"),
            "t.yaml:7: vips[0].udp_idle_timeout: applies to UDP VIPs only",
        ),
        (
            with("    port: 80\n", "    port: 80\n    protocol: udp\n    udp_idle_timeout: 1500ms\n"),
            "t.yaml:8: vips[0].udp_idle_timeout: must be whole seconds from 1s to 65535s",
        ),
        (
            with("    port: 80\n", "    port: 80\n    protocol: udp\n    udp_idle_timeout: 70000s\n"),
            "t.yaml:8: vips[0].udp_idle_timeout: must be whole seconds from 1s to 65535s",
        ),
    ] {
        assert_eq!(error(&text), want);
    }
}

/// Found by the configuration fuzzer (`tests/tests/config_fuzz.rs`, seed 0x1bc0f16f22, case
/// 13): with a byte order mark, serde_yaml read a file of several keys as several documents
/// and refused a valid file with "more than one document".
#[test]
fn a_byte_order_mark_is_ignored() {
    assert_eq!(parse("t.yaml", &format!("\u{feff}{GOOD}")), parse("t.yaml", GOOD));
    assert_eq!(parse("t.yaml", &format!("\u{feff}{}", GOOD.replace('\n', "\r\n"))), parse("t.yaml", GOOD));
}

/// Errors the configuration fuzzer found without a line, or with a Rust type name, or
/// reprinting a whole value: each now names its line (or field) and says what is wrong.
#[test]
fn fuzzer_found_errors_name_their_line_and_what_is_wrong() {
    let long = "x".repeat(5000);
    let cases: Vec<(String, String)> = vec![
        (
            format!("{GOOD}---\n{GOOD}"),
            "t.yaml:12: deserializing from YAML containing more than one document is not supported: the file holds a second YAML document (after `---` or `...`, or where a line is indented less than the first key, or a byte order mark): keep one, its top-level keys at the same indentation".into(),
        ),
        (
            format!("%YAML 1.2\n---\n\u{feff}{GOOD}"),
            "t.yaml:3: deserializing from YAML containing more than one document is not supported: the file holds a second YAML document (after `---` or `...`, or where a line is indented less than the first key, or a byte order mark): keep one, its top-level keys at the same indentation".into(),
        ),
        (
            // Found with seed 0x7, case 76: line ends of `\r\r\n`.
            format!("---\n{GOOD}---\n{GOOD}").replace('\n', "\r\r\n"),
            "t.yaml:13: deserializing from YAML containing more than one document is not supported: the file holds a second YAML document (after `---` or `...`, or where a line is indented less than the first key, or a byte order mark): keep one, its top-level keys at the same indentation".into(),
        ),
        (
            GOOD.replacen("global:", " global:", 1),
            "t.yaml:3: deserializing from YAML containing more than one document is not supported: the file holds a second YAML document (after `---` or `...`, or where a line is indented less than the first key, or a byte order mark): keep one, its top-level keys at the same indentation".into(),
        ),
        (
            with("    port: 80\n", "    port: 80\n    protocol: *proto\n"),
            "t.yaml:7: unknown anchor: an alias (`*name`) refers to no anchor (`&name`) written before it".into(),
        ),
        ("global: [eth0]\nvips: []\n".into(), "t.yaml:1: global: invalid type: sequence, expected the mapping of the `global` settings (`key: value` lines)".into()),
        (
            with("    backends:\n", "    health_check: tcp\n    backends:\n"),
            "t.yaml:7: vips[0].health_check: invalid type: string \"tcp\", expected the mapping of a health check (`type:`, `path:`, ...)".into(),
        ),
        (
            with("      - address: 10.1.0.2\n        port: 8080\n", "      - 10.1.0.2:8080\n"),
            "t.yaml:10: vips[0].backends[1]: invalid type: string \"10.1.0.2:8080\", expected the mapping of one backend (`address:`, `port:`, ...)".into(),
        ),
        (
            with("  - name: web\n", &format!("  - name: {long}\n")),
            format!("t.yaml:4: vips[0].name: \"{}…\" must be 1-63 letters, digits, '_', '.' or '-'", &long[..40]),
        ),
        (
            with("    port: 80\n", &format!("    port: 80\n    protocol: {long}\n")),
            format!("t.yaml:7: vips[0].protocol: unknown variant `{}…`, expected `tcp` or `udp`", &long[..40]),
        ),
    ];
    for (text, want) in cases {
        assert_eq!(error(&text), want);
    }
}

/// A file that is not UTF-8 is refused with the line of its first bad byte.
#[test]
fn a_file_that_is_not_utf8_is_refused_with_its_line() {
    let dir = std::env::temp_dir().join(format!("lb-config-utf8-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("t.yaml");
    let mut bytes = GOOD.as_bytes().to_vec();
    let at = GOOD.find("web").unwrap() + 1;
    bytes.insert(at, 0xff);
    std::fs::write(&path, &bytes).unwrap();
    let got = load(&path).expect_err("not UTF-8").to_string();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(got, format!("{}:4: byte 0xff is not UTF-8 (byte 12 of the line): save the file as UTF-8", path.display()));
}

/// Found by the configuration fuzzer (seed 0x1bc0f16f22, case 27246): a backtick inside a
/// long value ended the quote early and the error reprinted the rest of the value.
#[test]
fn an_error_never_reprints_a_long_value() {
    let long = "x".repeat(100_000);
    let got = error(&with("    port: 80\n", &format!("    port: 80\n    protocol: a`{long}\n")));
    assert!(got.starts_with("t.yaml:7: vips[0].protocol: unknown variant `a`"), "{got}");
    assert!(got.chars().count() < 500, "{} characters", got.chars().count());
}

/// A TCP VIP on port 80 in mode `forwarding` with `extra` VIP lines and backends `backends`
/// (address lines, port 80).
fn dsr_file(forwarding: &str, extra: &str, backends: &[&str]) -> String {
    let mut text = format!("global:\n  interfaces: [eth0]\nvips:\n  - name: web\n    address: 10.0.0.1\n    port: 80\n    forwarding: {forwarding}\n{extra}    backends:\n");
    for b in backends {
        text.push_str(&format!("      - address: {b}\n"));
    }
    text
}

#[test]
fn direct_server_return_vips_are_checked_for_what_their_mode_cannot_do() {
    let tcp = "    health_check:\n      type: tcp\n";
    let cases: Vec<(String, &str)> = vec![
        (dsr_file("tunnel", "", &["10.1.0.1"]), "t.yaml:1: vips[0].health_check.type: a probe through the VIP (the default of direct server return VIPs) is a TCP handshake with the VIP on the backend: use type tcp, or target address for HTTP probes to the backend's own address (which do not show whether it serves the VIP)"),
        (dsr_file("gue", &format!("{tcp}      port: 8080\n"), &["10.1.0.1"]), "t.yaml:1: vips[0].health_check.port: a probe through the VIP goes to the VIP's port: leave port out, or use target address"),
        (dsr_file("nat", "    health_check:\n      type: tcp\n      target: vip\n", &["10.1.0.1"]), "t.yaml:1: vips[0].health_check.target: vip applies to direct server return VIPs (tunnel, gue, direct): a NAT VIP's backends are probed at their address"),
        (dsr_file("direct", tcp, &["10.1.0.1"]).replace("10.1.0.1\n", "10.1.0.1\n        port: 8080\n"), "t.yaml:1: vips[0].backends[0].port: 8080 differs from the VIP's port 80: in direct mode the backend serves the VIP itself, so no port is translated"),
        (dsr_file("direct", tcp, &["2001:db8::1"]), "t.yaml:1: vips[0].backends[0].address: 2001:db8::1 is IPv6 but the VIP 10.0.0.1 is IPv4 (an IPv4 VIP reaches IPv6 backends in the tunnel and gue modes only)"),
        (dsr_file("nat", "    tunnel_source: 10.9.0.0/28\n", &["10.1.0.1"]), "t.yaml:1: vips[0].tunnel_source: applies to the tunnel and gue modes only (this VIP's is nat)"),
        (dsr_file("tunnel", &format!("    tunnel_source: 10.0.0.0/8\n{tcp}"), &["10.1.0.1"]), "t.yaml:1: vips[0].tunnel_source: 10.0.0.0/8 has 24 host bits; at most 16 are used: write a prefix of at least /16"),
        (dsr_file("tunnel", &format!("    tunnel_source: 10.9.0.1/28\n{tcp}"), &["10.1.0.1"]), "t.yaml:1: vips[0].tunnel_source: 10.9.0.1/28 has bits set beyond its length /28: write the prefix's first address"),
        (dsr_file("tunnel", &format!("    tunnel_source: 10.9.0/28\n{tcp}"), &["10.1.0.1"]), "t.yaml:1: vips[0].tunnel_source: \"10.9.0/28\" is not a prefix such as 192.0.2.0/28 or 2001:db8::/120"),
        (dsr_file("gue", &format!("    tunnel_source: 10.9.0.0/28\n{tcp}      target: address\n"), &["2001:db8::1"]), "t.yaml:1: vips[0].tunnel_source: 10.9.0.0/28 is not of the family of backend 2001:db8::1 (outer headers are of the backend's family)"),
        (dsr_file("tunnel", &format!("    gue_port: 7000\n{tcp}"), &["10.1.0.1"]), "t.yaml:1: vips[0].gue_port: applies to the gue mode only (this VIP's is tunnel)"),
        (dsr_file("direct", &format!("    mss_clamp: true\n{tcp}"), &["10.1.0.1"]), "t.yaml:1: vips[0].mss_clamp: applies to the tunnel and gue modes only (this VIP's is direct)"),
        (dsr_file("tunnel", tcp, &["2001:db8::1"]), "t.yaml:1: vips[0].health_check.target: a probe through the VIP 10.0.0.1 needs a source of the VIP's family towards backend 2001:db8::1, which an IPv4-in-IPv6 backend has not: set target address"),
        (dsr_file("direct", &format!("    tunnel_mtu: 1400\n{tcp}"), &["10.1.0.1"]), "t.yaml:1: vips[0].tunnel_mtu: applies to the tunnel and gue modes only (this VIP's is direct)"),
        (dsr_file("tunnel", &format!("    tunnel_mtu: 1300\n{tcp}"), &["10.1.0.1"]), "t.yaml:1: vips[0].tunnel_mtu: 1300 is out of range 1328-65535"),
        (dsr_file("bridge", tcp, &["10.1.0.1"]), "t.yaml:1: vips[0].forwarding: \"bridge\" is not a forwarding mode: use one of nat, tunnel, gue, direct"),
    ];
    for (text, want) in &cases {
        let got = error(text);
        // Problems found after parsing carry the line of the document's start.
        let got = got.split_once(": ").map(|(_, rest)| format!("t.yaml:1: {rest}")).unwrap_or(got);
        assert_eq!(got, *want, "for the file\n{text}");
    }
}

#[test]
fn direct_server_return_vips_take_their_mode_options_and_default_to_probes_through_the_vip() {
    let text = dsr_file("gue", "    tunnel_source: 2001:db8:5::/120\n    gue_port: 7000\n    mss_clamp: true\n    tunnel_mtu: 1400\n    health_check:\n      type: tcp\n", &["2001:db8::1", "2001:db8::2"]).replace("10.0.0.1", "2001:db8:10::1");
    let config = parse("t.yaml", &text).unwrap();
    let v = &config.vips[0];
    assert_eq!(v.forwarding, Forwarding::Gue);
    assert_eq!(v.dsr, DsrOptions { tunnel_source: Some(("2001:db8:5::".parse().unwrap(), 120)), gue_port: 7000, mss_clamp: true, tunnel_mtu: Some(1400) });
    assert_eq!(v.health_check.target, ProbeTarget::Vip);
    assert_eq!(v.backends[0].port, 80);
    // The written form reads back the same.
    let again = parse("t.yaml", &serde_yaml::to_string(&config).unwrap()).unwrap();
    assert_eq!(again, config);
    // The global mode is every VIP's default; a VIP's own mode wins.
    let global = GOOD.replace("  interfaces: [eth0]\n", "  interfaces: [eth0]\n  forwarding: direct\n").replace("port: 8080", "port: 80");
    let global = global.replace("    port: 80\n    backends:", "    port: 80\n    health_check:\n      type: http\n      target: address\n    backends:");
    let c = parse("t.yaml", &global).unwrap();
    assert_eq!((c.vips[0].forwarding.clone(), c.vips[0].health_check.target), (Forwarding::Direct, ProbeTarget::Address));
    let nat = parse("t.yaml", GOOD).unwrap();
    assert_eq!((nat.vips[0].forwarding.clone(), nat.vips[0].health_check.target, nat.vips[0].dsr.gue_port), (Forwarding::Nat, ProbeTarget::Address, 6080));
}

#[test]
fn a_backend_endpoint_may_serve_several_dsr_vips() {
    let two = |mode: &str| {
        let one = dsr_file(mode, "    health_check:\n      type: tcp\n", &["10.1.0.1"]);
        let other = one.split("vips:\n").nth(1).unwrap().replace("name: web", "name: img").replace("10.0.0.1", "10.0.0.2");
        format!("{one}{other}")
    };
    let config = parse("t.yaml", &two("tunnel")).unwrap();
    assert_eq!(config.vips[1].backends[0].endpoint(), config.vips[0].backends[0].endpoint());
    // NAT VIPs still may not share one: its replies would be ambiguous.
    let nat = two("nat").replace("      type: tcp\n", "      type: tcp\n      target: address\n");
    assert!(error(&nat).contains("backend 10.1.0.1:80/tcp already serves VIP \"web\" (vips[0])"), "{}", error(&nat));
}

#[test]
fn flow_sync_is_off_by_default_and_its_fields_are_checked_by_name() {
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(parse("t.yaml", GOOD).unwrap().global.flow_sync, None);
    let dir = std::env::temp_dir().join(format!("lb-config-flow-sync-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let sync = |listen: &str, peers: &str, key: &std::path::Path| {
        with(
            "  interfaces: [eth0]\n",
            &format!("  interfaces: [eth0]\n  flow_sync:\n    listen: {listen}\n    peers: [{peers}]\n    key_file: {}\n", key.display()),
        )
    };
    let good = parse("t.yaml", &sync("192.0.2.1:7000", "192.0.2.2:7000, 192.0.2.3:7000", &key)).unwrap();
    let f = good.global.flow_sync.expect("flow sync on");
    assert_eq!((f.listen.to_string(), f.peers.len(), f.key_file), ("192.0.2.1:7000".to_owned(), 2, key.clone()));

    let cases = [
        (sync("192.0.2.1:7000", "", &key), "global.flow_sync.peers: 0 peers: list between 1 and 32"),
        (sync("192.0.2.1:7000", "192.0.2.1:7000", &key), "global.flow_sync.peers[0]: 192.0.2.1:7000 is this node's own listen address"),
        (sync("192.0.2.1:7000", "192.0.2.2:7000, 192.0.2.2:7000", &key), "global.flow_sync.peers[1]: 192.0.2.2:7000 is listed twice"),
        (sync("192.0.2.1:0", "192.0.2.2:7000", &key), "global.flow_sync.listen: port 0: name the port the peers send to"),
        (sync("192.0.2.1:7000", "192.0.2.2:7000", &dir.join("missing")), "global.flow_sync.key_file: "),
    ];
    for (text, want) in &cases {
        let e = error(text);
        assert!(e.contains(want), "{e}\nwants {want}");
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = error(&sync("192.0.2.1:7000", "192.0.2.2:7000", &key));
    assert!(e.contains("global.flow_sync.key_file: ") && e.contains("is open to other users (mode 644)"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
