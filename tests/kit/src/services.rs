//! Real backing services on loopback, started by the tests themselves.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::process::{OwnedProcess, find_binary, free_port};

/// A MongoDB-wire server: a real `mongod` when one is on PATH, otherwise
/// SecantusDB (see ../shared/MONGO.md for where it differs from MongoDB).
pub struct MongoServer {
    pub uri: String,
    pub port: u16,
    process: OwnedProcess,
    data_dir: tempfile::TempDir,
    pub flavour: &'static str,
}

struct Started {
    uri: String,
    port: u16,
    process: OwnedProcess,
    flavour: &'static str,
}

fn secantus_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(home) = std::env::var_os("HOME") {
        let home = PathBuf::from(home);
        dirs.push(home.join(".cache/orders-ci/secantus/bin"));
        dirs.push(home.join(".cargo/bin"));
    }
    dirs
}

impl MongoServer {
    pub fn start() -> Result<Self> {
        let data_dir = tempfile::tempdir()?;
        let Started { uri, port, process, flavour } = Self::start_in(data_dir.path(), None)?;
        Ok(Self { uri, port, process, data_dir, flavour })
    }

    fn start_in(data_dir: &std::path::Path, port: Option<u16>) -> Result<Started> {
        if let Some(mongod) = find_binary("mongod", &[]) {
            let port = port.unwrap_or_else(free_port);
            let mut command = Command::new(mongod);
            command.args(["--bind_ip", "127.0.0.1", "--port", &port.to_string(), "--dbpath"]).arg(data_dir);
            let (process, _) = OwnedProcess::start("mongod", command, "Waiting for connections", Duration::from_secs(30))?;
            return Ok(Started { uri: format!("mongodb://127.0.0.1:{port}"), port, process, flavour: "mongod" });
        }
        let binary = std::env::var_os("SECANTUSD").map(PathBuf::from).or_else(|| find_binary("secantusd-rs", &secantus_dirs()));
        let Some(binary) = binary else {
            bail!("no MongoDB-wire server found: install SecantusDB (.ci/run does) or put mongod on PATH");
        };
        let mut command = Command::new(binary);
        command
            .args(["--host", "127.0.0.1", "--port", &port.unwrap_or(0).to_string(), "--storage-path"])
            .arg(data_dir)
            // Without it the last writes are lost on kill -9 of the server.
            .args(["--sync-on-commit", "--log-file-max", "16MB"]);
        let (process, line) = OwnedProcess::start("secantusd-rs", command, "listening on", Duration::from_secs(30))?;
        let address = line.rsplit(' ').next().context("listening line")?.trim().to_owned();
        let port = address.rsplit(':').next().and_then(|p| p.parse().ok()).context("port in listening line")?;
        Ok(Started { uri: format!("mongodb://{address}"), port, process, flavour: "secantus" })
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Stops the server; it answers nothing until `start_again`.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Starts it again on the same port and data.
    pub fn start_again(&mut self) -> Result<()> {
        self.process = Self::start_in(self.data_dir.path(), Some(self.port))?.process;
        Ok(())
    }

    /// Stops the server and starts it again on the same port and data.
    pub fn restart(&mut self) -> Result<()> {
        self.process.stop();
        self.process = Self::start_in(self.data_dir.path(), Some(self.port))?.process;
        Ok(())
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        self.process.stop();
    }
}

/// A throwaway Redis server, durable as the shipped deployments run it
/// (append-only file, fsync every second): it holds the bundle queue, event
/// logs and one-time marks, so a restart keeps what it had acknowledged.
pub struct RedisServer {
    pub url: String,
    pub port: u16,
    process: Option<OwnedProcess>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> Result<Self> {
        let port = free_port();
        let mut server = Self { url: format!("redis://127.0.0.1:{port}"), port, process: None, dir: tempfile::tempdir()? };
        server.resume()?;
        Ok(server)
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(OwnedProcess::pid)
    }

    /// Stops the server (the URL stays the same).
    pub fn pause(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop();
        }
    }

    /// Starts it again on the same port and data.
    pub fn resume(&mut self) -> Result<()> {
        let binary = find_binary("redis-server", &[PathBuf::from("/usr/bin")]).context("redis-server is not installed")?;
        let mut command = Command::new(binary);
        command.args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--daemonize", "no", "--save", ""]);
        command.args(["--appendonly", "yes", "--appendfsync", "everysec", "--dir"]).arg(self.dir.path());
        let (process, _) = OwnedProcess::start("redis-server", command, "Ready to accept connections", Duration::from_secs(15))?;
        self.process = Some(process);
        Ok(())
    }
}
