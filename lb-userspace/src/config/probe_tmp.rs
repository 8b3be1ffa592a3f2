#[test]
fn probe() {
    let base = "global:\n  interfaces: [eth0]\nvips:\n  - name: web\n    address: 10.0.0.1\n    port: 80\n    health_check:\n      interval: 2s\n    backends:\n      - { address: 10.1.0.1, port: 8080 }\n      - { address: 10.1.0.2, port: 8080 }\n";
    let cases: &[(&str, &str)] = &[
        ("interval: 2s", "interval: -1"),
        ("interval: 2s", "interval: 1.5"),
        ("interval: 2s", "expect_status: abc"),
        ("interval: 2s", "expect_status: [200, abc]"),
        ("interval: 2s", "expect_status: []"),
        ("interval: 2s", "rise: -1"),
        ("interval: 2s", "type: grpc"),
        ("interval: 2s", "interval: 0s"),
        ("interfaces: [eth0]", "interfaces: eth0"),
        ("interfaces: [eth0]", "interfaces: [eth0, eth0]"),
        ("interfaces: [eth0]", "interfaces: [\"..\"]"),
        ("interfaces: [eth0]", "interfaces: [eth0]\n  metrics_address: localhost:9100"),
        ("interfaces: [eth0]", "interfaces: [eth0]\n  ring_size: 0\n  vip_capacity: 0\n  conn_capacity: 1"),
        ("interfaces: [eth0]", "interfaces: [eth0]\n  forwarding: tunnel"),
        ("interfaces: [eth0]", "interfaces: [eth0]\n  xdp_mode: offload"),
        ("    address: 10.0.0.1\n", ""),
        ("port: 8080 }\n", "port: 8080, weight: 70000 }\n"),
        ("port: 8080 }\n      - { address: 10.1.0.2", "port: 8080 }\n      - { address: 10.1.0.1"),
        ("    port: 80\n", "    port: 80\n    port: 81\n"),
        ("global:\n  interfaces: [eth0]\n", "global:\n  interfaces: [eth0\n"),
        ("vips:", "vips: {}\nx:"),
    ];
    for (from, to) in cases {
        assert!(base.contains(from), "{from}");
        let t = base.replacen(from, to, 1);
        match super::parse("t.yaml", &t) { Ok(_) => println!("[{to}] => OK"), Err(e) => println!("[{to}] => {e}") }
    }
    for t in ["", "---\n", "global: 3\n", "- a\n"] {
        match super::parse("t.yaml", t) { Ok(_) => println!("[{t:?}] => OK"), Err(e) => println!("[{t:?}] => {e}") }
    }
}
