//! The settings file (`--config FILE` / `ORDERS_CONFIG`): the layer under
//! flags and environment variables. Its keys are the flags' long names with
//! `_` for `-`, so the file needs no key list of its own: each key is given
//! to clap as the flag it names, when neither the command line nor the
//! environment set that flag, and goes through the flag's own parser.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};

/// What the file added to the command line: the flags it set, by key, so a
/// value clap rejects is reported as the file's.
pub struct FileLayer {
    pub path: Option<PathBuf>,
    pub keys: Vec<(String, String)>,
}

impl FileLayer {
    /// The key of the file that set `flag` (as clap names it, `--flag <VALUE>`).
    pub fn key_for(&self, flag: &str) -> Option<&str> {
        let long = flag.split_whitespace().next()?;
        self.keys.iter().find(|(_, f)| f == long).map(|(key, _)| key.as_str())
    }

    /// Ends the process on clap's error, first naming the file's key when
    /// the value clap rejected came from the file.
    pub fn exit(&self, error: clap::Error) -> ! {
        use clap::error::{ContextKind, ContextValue};
        if let (Some(path), Some(ContextValue::String(arg))) = (&self.path, error.get(ContextKind::InvalidArg)) {
            if let Some(key) = self.key_for(arg) {
                eprintln!("error: config file {}: the value of key {key:?} is invalid:", path.display());
            }
        }
        error.exit()
    }
}

/// `argv` with the file's settings appended as flags.
pub fn layer(command: Command, argv: Vec<String>) -> Result<(Vec<String>, FileLayer)> {
    let mut command = command;
    command.build();
    // A first reading only finds the file and what is set already; errors
    // (and --help) are left to the real parse.
    let Ok(matches) = command.clone().ignore_errors(true).try_get_matches_from(&argv) else {
        return Ok((argv, FileLayer { path: None, keys: Vec::new() }));
    };
    let Some(path) = matches.get_one::<PathBuf>("config").cloned() else {
        return Ok((argv, FileLayer { path: None, keys: Vec::new() }));
    };
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read config file {shown}"))?;
    let table: toml::Table = toml::from_str(&text).with_context(|| format!("config file {shown} is not valid TOML"))?;

    let (innermost, set) = innermost(&command, &matches);
    let mut argv = argv;
    let mut keys = Vec::new();
    for (key, value) in table {
        let long = key.replace('_', "-");
        let Some(arg) = innermost.get_arguments().find(|a| a.get_long() == Some(long.as_str())) else {
            if long == "config" || !known_anywhere(&command, &long) {
                bail!("config file {shown}: unknown key {key:?}; known keys: {}", known_keys(&command).join(", "));
            }
            continue; // a key of another command, as in a file shared by `up` and `cluster`
        };
        if long == "config" {
            bail!("config file {shown}: key \"config\" cannot be set in a config file");
        }
        if matches!(set.value_source(arg.get_id().as_str()), Some(ValueSource::CommandLine | ValueSource::EnvVariable)) {
            continue;
        }
        let flag = format!("--{long}");
        match arg.get_action() {
            ArgAction::SetTrue => match value {
                toml::Value::Boolean(true) => argv.push(flag.clone()),
                toml::Value::Boolean(false) => {}
                _ => bail!("config file {shown}: key {key:?} must be true or false"),
            },
            _ => {
                for item in scalars(&key, value).with_context(|| format!("config file {shown}"))? {
                    argv.push(format!("{flag}={item}"));
                }
            }
        }
        keys.push((key, flag));
    }
    Ok((argv, FileLayer { path: Some(path), keys }))
}

/// The subcommand that runs, and its matches.
fn innermost<'a>(command: &'a Command, matches: &'a ArgMatches) -> (&'a Command, &'a ArgMatches) {
    match matches.subcommand() {
        Some((name, sub_matches)) => match command.find_subcommand(name) {
            Some(sub) => innermost(sub, sub_matches),
            None => (command, matches),
        },
        None => (command, matches),
    }
}

fn scalars(key: &str, value: toml::Value) -> Result<Vec<String>> {
    Ok(match value {
        toml::Value::String(text) => vec![text],
        toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) | toml::Value::Datetime(_) => {
            vec![value.to_string()]
        }
        toml::Value::Array(items) => {
            let mut out = Vec::new();
            for item in items {
                if matches!(item, toml::Value::Array(_) | toml::Value::Table(_)) {
                    bail!("key {key:?} must be a list of plain values");
                }
                out.extend(scalars(key, item)?);
            }
            out
        }
        toml::Value::Table(_) => bail!("key {key:?} must be a value, not a table"),
    })
}

/// The long flags of `command` and of all its subcommands.
fn all_longs(command: &Command) -> Vec<String> {
    let mut longs: Vec<String> = command.get_arguments().filter_map(|a| a.get_long()).map(str::to_owned).collect();
    longs.extend(command.get_subcommands().flat_map(all_longs));
    longs
}

fn known_anywhere(command: &Command, long: &str) -> bool {
    all_longs(command).iter().any(|l| l == long)
}

/// Every key a file may hold: the long flags of every command.
pub fn known_keys(command: &Command) -> Vec<String> {
    let mut keys: Vec<String> = all_longs(command)
        .into_iter()
        .filter(|l| !matches!(l.as_str(), "help" | "version" | "config"))
        .map(|l| l.replace('-', "_"))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, value_parser};

    fn command() -> Command {
        Command::new("orders")
            .arg(Arg::new("config").long("config").global(true).value_parser(value_parser!(PathBuf)))
            .arg(Arg::new("log").long("log").global(true).default_value("info"))
            .subcommand(
                Command::new("up")
                    .arg(Arg::new("max_instances").long("max-instances").default_value("256"))
                    .arg(Arg::new("listen").long("listen").default_value("127.0.0.1:3000"))
                    .arg(Arg::new("no_build").long("no-build").action(ArgAction::SetTrue))
                    .arg(Arg::new("fetch_allow").long("fetch-allow").action(ArgAction::Append)),
            )
            .subcommand(Command::new("cluster").arg(Arg::new("instances").long("instances")))
    }

    fn file(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orders.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path.display().to_string())
    }

    fn parsed(argv: &[&str]) -> Result<ArgMatches> {
        let (argv, _) = layer(command(), argv.iter().map(|a| a.to_string()).collect())?;
        let matches = command().try_get_matches_from(argv)?;
        Ok(matches.subcommand_matches("up").unwrap().clone())
    }

    #[test]
    fn a_flag_beats_the_file_and_the_file_beats_the_default() {
        let (_dir, path) =
            file("max_instances = 64\nlisten = \"127.0.0.1:9\"\nno_build = true\nfetch_allow = [\"a:1\", \"b\"]\nlog = \"warn\"\n");
        let up = parsed(&["orders", "--config", &path, "up", "--listen", "127.0.0.1:5"]).unwrap();
        assert_eq!(up.get_one::<String>("listen").unwrap(), "127.0.0.1:5");
        assert_eq!(up.get_one::<String>("max_instances").unwrap(), "64");
        assert!(up.get_flag("no_build"));
        assert_eq!(up.get_many::<String>("fetch_allow").unwrap().collect::<Vec<_>>(), ["a:1", "b"]);
        assert_eq!(up.get_one::<String>("log").unwrap(), "warn", "a global flag");
    }

    #[test]
    fn keys_of_other_commands_are_ignored_and_unknown_keys_named() {
        let (_dir, path) = file("instances = 3\n");
        assert!(parsed(&["orders", "up", "--config", &path]).is_ok());
        let (_dir, path) = file("mongo_url = \"x\"\n");
        let error = parsed(&["orders", "up", "--config", &path]).unwrap_err().to_string();
        assert!(error.contains("\"mongo_url\"") && error.contains("max_instances"), "{error}");
    }

    #[test]
    fn a_value_of_the_wrong_kind_is_named() {
        let (_dir, path) = file("no_build = \"yes\"\n");
        let error = parsed(&["orders", "up", "--config", &path]).unwrap_err().to_string();
        assert!(error.contains("no_build"), "{error}");
    }
}
