//! Child processes owned by a test: started with piped stdout so the test
//! can read their "listening on" line, and stopped by PID when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

pub struct OwnedProcess {
    pub child: Child,
    pub name: String,
}

impl OwnedProcess {
    /// Starts `command` and waits until a stdout line contains `marker`;
    /// returns the process and that line.
    pub fn start(name: &str, mut command: Command, marker: &str, timeout: Duration) -> Result<(Self, String)> {
        let mut child = command
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {name}: {command:?}"))?;
        let stdout = child.stdout.take().context("stdout")?;
        let (sender, receiver) = mpsc::channel();
        let wanted = marker.to_owned();
        std::thread::spawn(move || {
            let mut found = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !found && line.contains(&wanted) {
                    found = true;
                    let _ = sender.send(line);
                }
            }
        });
        let mut process = Self { child, name: name.to_owned() };
        match receiver.recv_timeout(timeout) {
            Ok(line) => Ok((process, line)),
            Err(_) => {
                let status = process.child.try_wait()?;
                process.stop();
                bail!("{name} did not print {marker:?} within {timeout:?} (exit status: {status:?})")
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        signal(self.pid(), libc::SIGTERM);
        for _ in 0..100 {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGKILL now, as a crash would.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnedProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn signal(pid: u32, signal: i32) {
    // SAFETY: sending a signal to a PID this test started.
    unsafe { libc::kill(pid as i32, signal) };
}

/// Signals every process of the group `pgid` (a process started in a group
/// of its own has its pid as the group's id).
pub fn signal_group(pgid: u32, signal: i32) {
    // SAFETY: sending a signal to a process group this test's processes started.
    unsafe { libc::killpg(pgid as i32, signal) };
}

/// The first `http://host:port` in a line.
pub fn url_in(line: &str) -> Option<String> {
    let start = line.find("http://")?;
    let url: String = line[start..].chars().take_while(|c| !c.is_whitespace() && *c != ')' && *c != ',').collect();
    Some(url)
}

/// A port that was free a moment ago (for servers that cannot bind port 0).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

pub fn find_binary(name: &str, extra_dirs: &[std::path::PathBuf]) -> Option<std::path::PathBuf> {
    let path_dirs = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default();
    path_dirs.iter().chain(extra_dirs).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}
