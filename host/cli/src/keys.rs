//! `orders keys create|list|revoke` and `orders audit`: API keys and the audit
//! trail, straight in the product's store, so they work while the product
//! runs on the same data directory or database (a revoked key is refused by
//! every sidecar within the key cache's bound, 2 s). Also the first `admin`
//! key that `orders up` and `orders cluster` make on a fresh data directory.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use orders_access::Scope;
use orders_sidecar::auth::api_key::{check_name, create_key};
use orders_sidecar::auth::clock::{now_ms, parse_since, rfc3339};
use orders_sidecar::auth::http::audit_json;
use orders_sidecar::store::keys::mongo::MongoKeys;
use orders_sidecar::store::keys::sqlite::SqliteKeys;
use orders_sidecar::store::keys::{AuditEntry, KeyStore, Revoked};
use orders_sidecar::store::mongo::MongoStore;

use crate::config::StoreLocation;
use crate::private_file::create_private;
use crate::settings::values::{ReadPreference, WriteConcern};

/// The file `orders up` and `orders cluster` keep the first admin key in.
pub const ADMIN_KEY_FILE: &str = "admin-key";
/// Who the audit trail names for changes made with this command.
const CLI_ACTOR: &str = "cli";

/// The key store of the product's store (`<data-dir>/store/auth.sqlite3`, or
/// MongoDB's database when a URI is set).
pub async fn open_keys(location: &StoreLocation) -> Result<Arc<dyn KeyStore>> {
    let Some(settings) = location.mongo_settings(2, WriteConcern::Majority, ReadPreference::Primary, Default::default()) else {
        return Ok(Arc::new(SqliteKeys::open(&location.dir.embedded_store_dir())?));
    };
    let store = MongoStore::connect(&settings).await?;
    Ok(Arc::new(MongoKeys::open(store.database().clone()).await?))
}

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key; its text is the last line of the output, shown this once.
    Create(CreateArgs),
    /// List the keys (never their text).
    List(ListArgs),
    /// Revoke a key by id or name; every instance refuses it within 2 s.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// A name to recognise and revoke the key by (unique among active keys).
    #[arg(long)]
    name: String,
    /// Comma-separated: orders:read, orders:write, orders:delete, bundles, admin.
    #[arg(long, value_delimiter = ',', required = true, value_parser = parse_scope)]
    scopes: Vec<Scope>,
    /// The key's own rate limit, e.g. 50/s (default: the product's --default-rate-limit).
    #[arg(long, value_parser = parse_rate)]
    rate_limit: Option<u32>,
    #[command(flatten)]
    store: StoreLocation,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreLocation,
}

#[derive(Debug, Args)]
struct RevokeArgs {
    /// The key's id (key_…) or its name.
    id_or_name: String,
    #[command(flatten)]
    store: StoreLocation,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only entries from this time on: RFC 3339 (2026-12-01T20:00:00Z) or a duration back (15m, 2h, 7d).
    #[arg(long, value_parser = parse_since)]
    since: Option<i64>,
    /// At most this many entries.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    limit: u32,
    /// Print JSON lines instead of columns.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreLocation,
}

fn parse_scope(text: &str) -> Result<Scope, String> {
    let names: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
    Scope::parse(text.trim())
        .ok_or_else(|| format!("{text:?} is not a scope; use {}", names.join(", ")))
}

/// `50/s` or `50`: requests per second.
pub fn parse_rate(text: &str) -> Result<u32, String> {
    let number = text.trim().strip_suffix("/s").unwrap_or(text.trim());
    match number.parse::<u32>() {
        Ok(rate) if rate >= 1 => Ok(rate),
        _ => Err(format!(
            "rate limit {text:?} must be a whole number of requests per second >= 1, like 50/s"
        )),
    }
}

pub async fn run(args: KeysArgs) -> Result<()> {
    match args.command {
        KeysCommand::Create(args) => {
            check_name(&args.name).map_err(anyhow::Error::msg)?;
            let keys = open_keys(&args.store).await?;
            let created = create_key(&*keys, &args.name, args.scopes, args.rate_limit, CLI_ACTOR)
                .await
                .with_context(|| format!("cannot create key {:?}", args.name))?;
            let record = &created.record;
            let scopes: Vec<&str> = record.scopes.iter().map(|s| s.as_str()).collect();
            println!(
                "created key {} ({}) with scopes {}; it is shown only now, keep it secret:",
                record.id,
                record.name,
                scopes.join(",")
            );
            println!("{}", created.text);
        }
        KeysCommand::List(args) => {
            let keys = open_keys(&args.store).await?.list_keys().await?;
            if args.json {
                for key in &keys {
                    println!("{}", serde_json::to_string(key)?);
                }
                return Ok(());
            }
            println!("{:<21} {:<20} {:<40} {:>6} {:<24} {:<24} REVOKED", "ID", "NAME", "SCOPES", "RATE/S", "CREATED", "LAST USED");
            for key in &keys {
                let scopes: Vec<&str> = key.scopes.iter().map(|s| s.as_str()).collect();
                let optional = |ms: Option<i64>| ms.map(rfc3339).unwrap_or_else(|| "-".into());
                let rate = key
                    .rate_limit
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:<21} {:<20} {:<40} {:>6} {:<24} {:<24} {}",
                    key.id,
                    key.name,
                    scopes.join(","),
                    rate,
                    rfc3339(key.created_ms),
                    optional(key.last_used_ms),
                    optional(key.revoked_ms)
                );
            }
        }
        KeysCommand::Revoke(args) => {
            let keys = open_keys(&args.store).await?;
            match keys.revoke_key(&args.id_or_name, now_ms()).await? {
                Revoked::Done(key) => {
                    keys.append_audit(&[AuditEntry {
                        at_ms: now_ms(),
                        actor: CLI_ACTOR.into(),
                        operation: "key.revoke".into(),
                        target: Some(key.id.clone()),
                        status: 200,
                        request_id: None,
                    }])
                    .await?;
                    println!(
                        "revoked key {} ({}); every instance refuses it within 2 s",
                        key.id, key.name
                    );
                }
                Revoked::NotFound => bail!(
                    "no key has the id or name {:?}; see `orders keys list`",
                    args.id_or_name
                ),
                Revoked::Ambiguous(ids) => bail!(
                    "several keys are named {:?} ({}); revoke one by id",
                    args.id_or_name,
                    ids.join(", ")
                ),
            }
        }
    }
    Ok(())
}

pub async fn audit(args: AuditArgs) -> Result<()> {
    let entries = open_keys(&args.store)
        .await?
        .audit_since(args.since.unwrap_or(0), args.limit)
        .await?;
    for entry in &entries {
        if args.json {
            println!("{}", audit_json(entry));
        } else {
            println!(
                "{}  {:<22} {:<14} {:<26} {}  {}",
                rfc3339(entry.at_ms),
                entry.actor,
                entry.operation,
                entry.target.as_deref().unwrap_or("-"),
                entry.status,
                entry.request_id.as_deref().unwrap_or("-")
            );
        }
    }
    Ok(())
}

/// On a data directory without `admin-key`: creates an `admin` key and
/// writes it there (mode 0600). Returns the key's text when it made one.
pub async fn bootstrap_admin_key(keys: &dyn KeyStore, data_dir: &Path) -> Result<Option<String>> {
    let path = data_dir.join(ADMIN_KEY_FILE);
    if path.exists() {
        return Ok(None);
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    // A database shared by several data directories may have an `admin` already.
    let taken = keys
        .list_keys()
        .await?
        .iter()
        .any(|k| k.name == "admin" && !k.is_revoked());
    let name = if taken {
        format!("admin-{}", hex::encode(rand::random::<[u8; 3]>()))
    } else {
        "admin".to_owned()
    };
    let created = create_key(keys, &name, vec![Scope::Admin], None, "bootstrap")
        .await
        .context("cannot create the first admin key")?;
    match create_private(&path, format!("{}\n", created.text).as_bytes()) {
        Ok(()) => Ok(Some(created.text)),
        Err(error) => {
            // Another process wrote the file first (or it cannot be written): this key must not linger unseen.
            keys.revoke_key(&created.record.id, now_ms()).await?;
            if error.kind() == std::io::ErrorKind::AlreadyExists {
                Ok(None)
            } else {
                Err(error).with_context(|| format!("cannot write {}", path.display()))
            }
        }
    }
}

/// The line `up` and `cluster` print under their URL.
pub fn announce_admin_key(key: &str, data_dir: &Path) {
    println!(
        "admin API key (shown once; also in {}): {key}",
        data_dir.join(ADMIN_KEY_FILE).display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_scopes_parse() {
        assert_eq!(parse_rate("50/s"), Ok(50));
        assert_eq!(parse_rate("7"), Ok(7));
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("fast").is_err());
        assert_eq!(parse_scope("orders:read"), Ok(Scope::OrdersRead));
        assert!(parse_scope("orders").is_err());
    }
}
