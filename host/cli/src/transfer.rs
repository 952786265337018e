//! `orders export` and `orders import`: the orders as JSON lines of MongoDB
//! Extended JSON (relaxed), the format `mongoexport` writes, so a business
//! moves between its old MongoDB, the embedded store and a new cluster in
//! either direction. Import is idempotent by `_id`: a document already
//! there with the same content is left alone, one with other content is
//! kept and reported, never overwritten.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use bson::{Bson, Document};
use clap::Args;
use futures::StreamExt;
use orders_sidecar::store::{Doc, ImportOutcome};
use serde_json::{Map, Value, json};

use crate::config::StoreOptions;
use crate::store_tools::{self, ORDERS};

/// Imports in flight at once: enough to hide MongoDB's round trips.
const IMPORTS_IN_FLIGHT: usize = 16;
const EXPORT_PAGE: u32 = 1000;
/// Lines quoted in the summary per kind of problem.
const EXAMPLES: usize = 5;

#[derive(Args)]
pub struct ExportArgs {
    /// File to write (mode 0600: it holds customer data); standard output when absent.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreOptions,
}

#[derive(Args)]
pub struct ImportArgs {
    /// JSON lines of Extended JSON documents, e.g. `mongoexport --collection orders` output.
    pub file: PathBuf,
    #[command(flatten)]
    pub store: StoreOptions,
}

pub async fn export(args: ExportArgs) -> Result<()> {
    let opened = store_tools::open(&args.store).await?;
    let total = opened.store.count(ORDERS).await?;
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(BufWriter::new(private_file(path)?)),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let bar = store_tools::progress(total, "orders")?;
    let (mut after, mut written) = (None::<String>, 0u64);
    loop {
        let page = opened
            .store
            .list(ORDERS, after.as_deref(), EXPORT_PAGE)
            .await?;
        let Some(last) = page.last() else { break };
        after = last.get("_id").and_then(Value::as_str).map(str::to_owned);
        for doc in page {
            serde_json::to_writer(&mut out, &as_extended_json(doc))?;
            out.write_all(b"\n")?;
            written += 1;
            bar.inc(1);
        }
    }
    out.flush()?;
    bar.finish_and_clear();
    let skipped = total.saturating_sub(written);
    eprintln!(
        "exported {written} orders from {}{}",
        opened.description,
        if skipped > 0 {
            format!(
                "; {skipped} documents whose _id is not an ObjectId were not exported (see orders migrate)"
            )
        } else {
            String::new()
        }
    );
    Ok(())
}

/// A stored document as `mongoexport` writes it: `_id` as `{"$oid": …}`.
fn as_extended_json(mut doc: Doc) -> Value {
    let mut line = Map::with_capacity(doc.len());
    if let Some(id) = doc.remove("_id") {
        line.insert("_id".into(), json!({ "$oid": id }));
    }
    line.extend(doc);
    Value::Object(line)
}

/// Creates (or truncates) a file only its owner can read.
fn private_file(path: &std::path::Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    // An existing file keeps its mode on open; customer data must not.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(file)
}

/// One line of the file as a document to import: Extended JSON (relaxed or
/// canonical) read as BSON and written back relaxed, so both stores keep the
/// same form; its `_id` must be an ObjectId, the only ids the API serves.
pub fn parse_line(line: &str) -> Result<Doc, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let document: Document = match Bson::try_from(value) {
        Ok(Bson::Document(document)) => document,
        Ok(_) => return Err("not a JSON object".into()),
        Err(e) => return Err(format!("not Extended JSON: {e}")),
    };
    let mut doc = Map::with_capacity(document.len());
    for (name, value) in document {
        match (name.as_str(), value) {
            ("_id", Bson::ObjectId(id)) => {
                doc.insert(name, Value::String(id.to_hex()));
            }
            // Some tools write the id as its bare hex string.
            ("_id", Bson::String(hex)) if orders_contract::object_id::normalise(&hex).is_some() => {
                doc.insert(name, Value::String(hex.to_ascii_lowercase()));
            }
            ("_id", other) => {
                return Err(format!(
                    "_id {} is not an ObjectId",
                    other.into_relaxed_extjson()
                ));
            }
            (_, value) => {
                doc.insert(name, value.into_relaxed_extjson());
            }
        }
    }
    if !doc.contains_key("_id") {
        return Err("no _id".into());
    }
    Ok(doc)
}

#[derive(Default)]
struct ImportSummary {
    inserted: u64,
    unchanged: u64,
    differs: Vec<String>,
    invalid: Vec<String>,
    invalid_count: u64,
}

pub async fn import(args: ImportArgs) -> Result<()> {
    let opened = store_tools::open(&args.store).await?;
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let lines = BufReader::new(file)
        .lines()
        .collect::<std::io::Result<Vec<String>>>()
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let bar = store_tools::progress(lines.len() as u64, "lines")?;
    let mut summary = ImportSummary::default();
    let store = opened.store.clone();
    let mut results = futures::stream::iter(lines.into_iter().enumerate())
        .filter(|(_, line)| std::future::ready(!line.trim().is_empty()))
        .map(|(index, line)| {
            let store = store.clone();
            async move {
                let outcome = match parse_line(&line) {
                    Ok(doc) => {
                        let id = doc
                            .get("_id")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned();
                        Ok((id, store.import(ORDERS, doc).await))
                    }
                    Err(problem) => Err(problem),
                };
                (index + 1, outcome)
            }
        })
        .buffer_unordered(IMPORTS_IN_FLIGHT);
    while let Some((line_number, outcome)) = results.next().await {
        bar.inc(1);
        match outcome {
            Ok((_, Ok(ImportOutcome::Inserted))) => summary.inserted += 1,
            Ok((_, Ok(ImportOutcome::Unchanged))) => summary.unchanged += 1,
            Ok((id, Ok(ImportOutcome::Differs))) => summary.differs.push(id),
            Ok((_, Err(orders_sidecar::store::StoreError::Invalid(problem)))) | Err(problem) => {
                summary.invalid_count += 1;
                if summary.invalid.len() < EXAMPLES {
                    summary
                        .invalid
                        .push(format!("line {line_number}: {problem}"));
                }
            }
            Ok((_, Err(error))) => bail!(
                "the store failed during the import (run it again: it is idempotent): {error}"
            ),
        }
    }
    bar.finish_and_clear();
    summary.differs.sort();
    println!(
        "imported {} into {}: {} new, {} already there unchanged, {} already there with other content (kept), {} lines skipped",
        args.file.display(),
        opened.description,
        summary.inserted,
        summary.unchanged,
        summary.differs.len(),
        summary.invalid_count
    );
    if !summary.differs.is_empty() {
        let shown: Vec<&str> = summary
            .differs
            .iter()
            .take(EXAMPLES)
            .map(String::as_str)
            .collect();
        println!("  kept, differing from the file: {}", shown.join(", "));
    }
    for problem in &summary.invalid {
        println!("  skipped {problem}");
    }
    if opened.description.starts_with("the embedded store") {
        println!(
            "  (a running `orders up` on this data directory may serve cached pages for up to --cache-ttl-secs)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mongoexport_lines_keep_their_types_in_relaxed_form() {
        let doc = parse_line(r#"{"_id":{"$oid":"65A1B2C3D4E5F60718293A4B"},"quantity":{"$numberInt":"7"},"price":{"$numberDouble":"2.5"},"when":{"$date":"2024-01-12T21:17:23Z"}}"#).unwrap();
        assert_eq!(doc["_id"], "65a1b2c3d4e5f60718293a4b");
        assert_eq!(doc["quantity"], 7);
        assert_eq!(doc["price"], 2.5);
        assert_eq!(doc["when"], json!({"$date": "2024-01-12T21:17:23Z"}));
    }

    #[test]
    fn lines_without_an_object_id_are_refused() {
        assert!(
            parse_line(r#"{"_id":"order-1","product":"x"}"#)
                .unwrap_err()
                .contains("not an ObjectId")
        );
        assert!(
            parse_line(r#"{"product":"x"}"#)
                .unwrap_err()
                .contains("no _id")
        );
        assert!(parse_line("[1]").is_err());
        assert!(parse_line("{").unwrap_err().starts_with("not JSON"));
    }

    #[test]
    fn export_writes_the_id_as_an_oid() {
        let doc: Doc =
            serde_json::from_value(json!({"_id": "65a1b2c3d4e5f60718293a4b", "quantity": 7}))
                .unwrap();
        assert_eq!(
            as_extended_json(doc),
            json!({"_id": {"$oid": "65a1b2c3d4e5f60718293a4b"}, "quantity": 7})
        );
    }
}
