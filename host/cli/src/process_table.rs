//! What `orders cluster` runs, for people and tools: `<data-dir>/cluster.json`
//! lists every process (role, name, pid, address, restarts), and
//! `<data-dir>/cluster.prom` counts the restarts in Prometheus' text format
//! (for node_exporter's textfile collector: the cluster has no port of its
//! own). Both are rewritten after every restart, each by a rename, so a
//! reader never sees half a file.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct ProcessEntry {
    pub role: &'static str,
    pub name: String,
    pub pid: u32,
    pub address: String,
    pub restarts: u64,
}

pub struct ProcessTable {
    json: PathBuf,
    prom: PathBuf,
    entries: Mutex<Vec<ProcessEntry>>,
}

impl ProcessTable {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            json: data_dir.join("cluster.json"),
            prom: data_dir.join("cluster.prom"),
            entries: Mutex::new(Vec::new()),
        }
    }

    /// Adds a process; returns its slot.
    pub fn add(&self, entry: ProcessEntry) -> usize {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.push(entry);
        entries.len() - 1
    }

    pub fn restarted(&self, slot: usize, pid: u32, restarts: u64) -> Result<()> {
        {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(entry) = entries.get_mut(slot) {
                entry.pid = pid;
                entry.restarts = restarts;
            }
        }
        self.write()
    }

    pub fn write(&self) -> Result<()> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        replace(&self.json, &serde_json::to_vec_pretty(&entries)?)?;
        replace(&self.prom, restarts_metric(&entries).as_bytes())
    }

    pub fn remove_files(&self) {
        let _ = std::fs::remove_file(&self.json);
        let _ = std::fs::remove_file(&self.prom);
    }
}

fn restarts_metric(entries: &[ProcessEntry]) -> String {
    let mut text = String::from(
        "# HELP orders_cluster_restarts_total Restarts of a cluster process after it exited unexpectedly.\n\
         # TYPE orders_cluster_restarts_total counter\n",
    );
    for entry in entries {
        text.push_str(&format!(
            "orders_cluster_restarts_total{{role=\"{}\",process=\"{}\"}} {}\n",
            entry.role, entry.name, entry.restarts
        ));
    }
    text
}

fn replace(path: &Path, bytes: &[u8]) -> Result<()> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, bytes)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("cannot replace {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_rewrites_the_pid_and_counts_it() {
        let dir = tempfile::tempdir().unwrap();
        let table = ProcessTable::new(dir.path());
        let slot = table.add(ProcessEntry {
            role: "sidecar",
            name: "sidecar-0".into(),
            pid: 10,
            address: "127.0.0.1:7071".into(),
            restarts: 0,
        });
        table.write().unwrap();
        table.restarted(slot, 11, 1).unwrap();
        let listed: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("cluster.json")).unwrap())
                .unwrap();
        assert_eq!(
            (listed[0]["pid"].as_u64(), listed[0]["restarts"].as_u64()),
            (Some(11), Some(1))
        );
        let metric = std::fs::read_to_string(dir.path().join("cluster.prom")).unwrap();
        assert!(
            metric.contains(
                "orders_cluster_restarts_total{role=\"sidecar\",process=\"sidecar-0\"} 1\n"
            ),
            "{metric}"
        );
    }
}
