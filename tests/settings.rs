//! The settings as the README documents them: every flag of its
//! configuration table exists with the environment variable and the default
//! the table gives, every flag is a key the settings file accepts, and the
//! sources apply in the documented order (flag, environment, file, default).

use std::process::{Command, Output};

use orders_testkit::repo_root;

const ORDERS: &str = env!("CARGO_BIN_EXE_orders");
/// The commands whose flags the table documents.
const COMMANDS: &[&str] = &["up", "sidecar", "serve", "cluster"];

struct Row {
    flags: Vec<String>,
    envs: Vec<String>,
    default: Option<String>,
}

/// The rows of the README's configuration table (`| flag | env | default | meaning |`).
fn documented() -> Vec<Row> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let section = readme.split("## Configuration").nth(1).expect("a Configuration section");
    let code = |cell: &str| -> Vec<String> {
        cell.split('`').skip(1).step_by(2).map(|quoted| quoted.split_whitespace().next().unwrap_or("").to_owned()).collect()
    };
    section
        .lines()
        .take_while(|line| !line.starts_with("## "))
        .filter(|line| line.starts_with("| `--"))
        .map(|line| {
            let cells: Vec<&str> = line.split(" | ").collect();
            let defaults = code(cells[2]);
            Row {
                flags: code(cells[0]),
                envs: code(cells[1]).into_iter().filter(|env| !env.ends_with('…')).collect(),
                // A plain default, not prose ("half of …", "random for …").
                default: (defaults.len() == 1 && cells[2].trim().starts_with('`') && cells[2].trim().ends_with('`'))
                    .then(|| defaults[0].clone()),
            }
        })
        .collect()
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(ORDERS);
    command.current_dir(repo_root()).args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ORDERS_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied()).output().expect("run orders")
}

/// The help of each command, split into one entry per flag.
fn flag_help() -> Vec<(String, String)> {
    let mut entries = Vec::new();
    for command in COMMANDS {
        let help = String::from_utf8(run(&[command, "--help"], &[]).stdout).expect("utf-8");
        let mut current: Option<(String, String)> = None;
        for line in help.lines() {
            let trimmed = line.trim_start();
            if trimmed.starts_with("--") || (trimmed.starts_with('-') && trimmed.contains(", --")) {
                entries.extend(current.take());
                let flag = trimmed.split(|c: char| c == ' ' || c == '=').find(|w| w.starts_with("--")).unwrap_or("").to_owned();
                current = Some((flag, line.to_owned()));
            } else if let Some((_, text)) = current.as_mut() {
                text.push(' ');
                text.push_str(trimmed);
            }
        }
        entries.extend(current);
    }
    entries
}

#[test]
fn every_documented_flag_has_its_environment_variable_and_default() {
    let rows = documented();
    assert!(rows.len() >= 38, "the configuration table lost rows: {}", rows.len());
    let help = flag_help();
    for row in &rows {
        for (index, flag) in row.flags.iter().enumerate() {
            let entries: Vec<&String> = help.iter().filter(|(f, _)| f == flag).map(|(_, text)| text).collect();
            assert!(!entries.is_empty(), "{flag} is documented but no command has it");
            if let Some(env) = row.envs.get(index) {
                // `[env: NAME=]`, or `[env: NAME]` for a secret whose value help hides.
                let shown = |text: &&String| text.contains(&format!("[env: {env}=")) || text.contains(&format!("[env: {env}]"));
                assert!(entries.iter().any(shown), "{flag}: no [env: {env}] in {entries:?}");
            }
            if let Some(default) = &row.default {
                assert!(
                    entries.iter().any(|text| text.contains(&format!("[default: {default}]"))),
                    "{flag}: the README says the default is {default}: {entries:?}"
                );
            }
        }
    }
}

#[test]
fn every_documented_flag_is_a_settings_file_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("orders.toml");
    std::fs::write(&file, "no_such_key = 1\n").expect("write");
    let output = run(&["up", "--no-build", "--config", &file.display().to_string()], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("\"no_such_key\""), "{stderr}");
    let known = stderr.split("known keys: ").nth(1).expect("the known keys");
    let known: Vec<&str> = known.trim().split(", ").collect();
    for row in documented() {
        for flag in row.flags {
            let key = flag.trim_start_matches("--").replace('-', "_");
            assert!(known.contains(&key.as_str()), "{flag}: the file key {key} is not accepted ({known:?})");
        }
    }
}

#[test]
fn flags_beat_environment_beats_file_beats_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("orders.toml");
    // Out of range, so a run that reads it fails naming the key and the file.
    std::fs::write(&file, "mongo_timeout_ms = 5\n").expect("write");
    let config = file.display().to_string();
    let data = dir.path().join("data").display().to_string();
    let unreachable = ("ORDERS_MONGO_URI", "mongodb://127.0.0.1:1");
    let base = ["up", "--no-build", "--listen", "127.0.0.1:0", "--data-dir", &data, "--config", &config];

    let from_file = run(&base, &[unreachable]);
    let stderr = String::from_utf8_lossy(&from_file.stderr);
    assert!(stderr.contains("mongo_timeout_ms") && stderr.contains(&config), "the file's value was not read: {stderr}");

    // The environment's (valid) value wins over the file's: the start gets as
    // far as the store, which does not answer.
    let from_env = run(&base, &[unreachable, ("ORDERS_MONGO_TIMEOUT_MS", "300")]);
    let stderr = String::from_utf8_lossy(&from_env.stderr);
    assert!(!stderr.contains("mongo_timeout_ms") && stderr.contains("127.0.0.1:1"), "{stderr}");

    // A flag wins over both.
    let mut with_flag = base.to_vec();
    with_flag.extend(["--mongo-timeout-ms", "7"]);
    let from_flag = run(&with_flag, &[unreachable, ("ORDERS_MONGO_TIMEOUT_MS", "300")]);
    let stderr = String::from_utf8_lossy(&from_flag.stderr);
    assert!(stderr.contains("'7'") && stderr.contains("--mongo-timeout-ms"), "the flag did not win: {stderr}");
}

#[test]
fn secrets_are_checked_without_being_printed() {
    let secret = "short-but-secret";
    let output = run(&["sidecar", "--listen", "127.0.0.1:0", "--sidecar-token", &secret[..10]], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("--sidecar-token / ORDERS_SIDECAR_TOKEN"), "{stderr}");
    assert!(!stderr.contains(&secret[..10]), "the token was printed: {stderr}");
    let output = run(&["up", "--no-build", "--listen", "127.0.0.1:0"], &[("ORDERS_MONGO_URI", "postgres://u:hunter2@db")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ORDERS_MONGO_URI") && !stderr.contains("hunter2"), "{stderr}");
}
