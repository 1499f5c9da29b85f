//! Real Redis servers: start with a password, refuse clients without it, stop.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use nodes::{RedisSpec, pid_alive, redis_ping, start_redis, stop_pid};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// One server's directory; kills the server (if any) before removing it.
struct RedisGuard {
    spec: RedisSpec,
    pid: Option<u32>,
    _dir: tempfile::TempDir,
}

impl RedisGuard {
    fn new(port: u16) -> RedisGuard {
        let dir = tempfile::Builder::new().prefix("nodes-redis-").tempdir().unwrap();
        let spec = RedisSpec::new(dir.path(), LOCALHOST, port, nodes::random_secret(24));
        RedisGuard { spec, pid: None, _dir: dir }
    }
}

impl Drop for RedisGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            let _ = stop_pid(pid, Duration::from_secs(5));
        }
    }
}

/// Sends one inline command and returns the first reply line.
fn raw(addr: SocketAddr, command: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(format!("{command}\r\n").as_bytes()).unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 256];
    while !reply.ends_with(b"\r\n") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed");
        reply.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&reply).trim().to_string()
}

#[test]
fn requires_the_password_and_stops() {
    let mut redis = RedisGuard::new(nodes::free_port(LOCALHOST).unwrap());
    let pid = start_redis(&redis.spec).unwrap();
    redis.pid = Some(pid);
    assert_eq!(std::fs::read_to_string(&redis.spec.pid_file).unwrap().trim(), pid.to_string());

    redis_ping(redis.spec.addr(), &redis.spec.password, Duration::from_secs(5)).unwrap();
    assert!(raw(redis.spec.addr(), "PING").starts_with("-NOAUTH"));
    assert!(raw(redis.spec.addr(), "AUTH wrong").starts_with("-WRONGPASS"));
    let err = redis_ping(redis.spec.addr(), "wrong", Duration::from_secs(5)).expect_err("wrong password");
    assert!(err.to_string().contains("WRONGPASS"), "{err}");
    assert!(raw(redis.spec.addr(), "CONFIG GET maxmemory-policy").starts_with("-NOAUTH"));

    stop_pid(pid, Duration::from_secs(10)).unwrap();
    assert!(!pid_alive(pid));
    // The port is free again.
    TcpListener::bind(redis.spec.addr()).unwrap();
}

#[test]
fn port_in_use_is_reported_with_the_log() {
    let taken = TcpListener::bind((LOCALHOST, 0)).unwrap();
    let redis = RedisGuard::new(taken.local_addr().unwrap().port());
    let err = start_redis(&redis.spec).expect_err("the port is taken");
    let msg = err.to_string();
    assert!(msg.contains(&redis.spec.addr().to_string()), "{msg}");
    assert!(msg.contains("Address already in use"), "{msg}");
}
