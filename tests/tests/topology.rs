//! The lab topology on its own: plain kernel routing between client and backends, before any
//! XDP program is attached. Needs root.

use std::{net::SocketAddr, time::Duration};

use lb_tests::topology::{Lab, http_get, in_namespace};

#[test]
fn client_reaches_every_backend_through_kernel_routing() {
    let mut lab = Lab::create(3, env!("CARGO_BIN_EXE_lb-test-backend").as_ref()).expect("lab");
    for k in 0..3 {
        lab.start_backend(k).expect("backend");
    }
    for b in &lab.backends {
        let addr = SocketAddr::new(b.v4.into(), 8080);
        let name = b.name.clone();
        let (status, body) = in_namespace(&lab.client_ns, move || http_get(addr, "/", Duration::from_secs(5)))
            .unwrap()
            .unwrap_or_else(|e| panic!("GET {addr}: {e}"));
        assert_eq!((status, body.trim()), (200, name.as_str()));
        let addr6 = SocketAddr::new(b.v6.into(), 8080);
        let (status, _) = in_namespace(&lab.client_ns, move || http_get(addr6, "/health", Duration::from_secs(5)))
            .unwrap()
            .unwrap_or_else(|e| panic!("GET {addr6}: {e}"));
        assert_eq!(status, 200);
    }
    lab.kill_backend(1);
    let addr = SocketAddr::new(lab.backends[1].v4.into(), 8080);
    let down = in_namespace(&lab.client_ns, move || http_get(addr, "/", Duration::from_secs(2))).unwrap();
    assert!(down.is_err(), "a killed backend refuses connections");
}
