//! What the tests and benches that run the real `herald` binary share: a
//! free loopback port to give it, and the child process, killed (SIGKILL)
//! and reaped when dropped so that a failing test leaves nothing running.

// Each test or bench that includes this module uses what it needs of it.
#![allow(dead_code)]

use std::process::Child;

/// A free port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running `herald` child, killed and reaped on drop.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
