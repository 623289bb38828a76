//! A Redis of the load generator's own for a cluster of uprtcd nodes: Debian's
//! `redis-server` on a free loopback port, nothing saved to disk, pinned to the load
//! generator's cores, stopped by its PID (SIGTERM, then SIGKILL) when dropped, and by a
//! parent-death signal should the load generator itself die.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::LoadError;
use crate::sys;

const READY_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A running `redis-server`.
#[derive(Debug)]
pub struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    /// Starts `binary` on a free port of 127.0.0.1, pinned to `cores`, and waits until it
    /// accepts connections.
    pub fn start(binary: &Path, cores: &[usize]) -> Result<Self, LoadError> {
        // The port is free now; nothing else on this machine races for it during a run.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(LoadError::io("a free port for Redis"))?
            .port();
        let mut command = Command::new(binary);
        sys::prepare_child(&mut command, cores)?;
        let child = command
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no", "--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(LoadError::io(format!("start {} (Debian's redis-server package)", binary.display())))?;
        let mut redis = Self { child, port };
        let deadline = Instant::now() + READY_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() >= deadline || matches!(redis.child.try_wait(), Ok(Some(_))) {
                return Err(LoadError::Setup(format!("redis-server did not listen on port {port}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(redis)
    }

    /// The `redis_url` nodes are configured with.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        sys::stop(&mut self.child, STOP_TIMEOUT);
    }
}
