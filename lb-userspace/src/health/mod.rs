//! Health checks: the rise/fall state machine and the HTTP/TCP probes.
