//! `orders migrate`: judges every stored order by the contract and, with
//! `--apply`, writes the repairs that lose nothing (timestamps from the
//! ObjectId, version 1, `"7"` → 7, BSON dates → RFC 3339). What only a
//! person can settle (`2.5`, `null`, unknown fields) is reported with
//! example ids and left exactly as stored. Each repair is a compare-and-set
//! at the version the document was judged at, so a write through the API in
//! the meantime wins and the next run picks the document up again: running
//! it twice, or again after an interruption, gives the same result.

use std::collections::BTreeMap;

use anyhow::Result;
use clap::Args;
use orders_contract::StoredOrder;
use serde::Serialize;

use crate::config::StoreOptions;
use crate::store_tools::{self, ORDERS};

#[derive(Args)]
pub struct MigrateArgs {
    /// Write the lossless repairs; without it nothing is written (a dry run).
    #[arg(long)]
    pub apply: bool,
    /// Documents read per batch.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub batch_size: u32,
    /// Example ids shown per finding.
    #[arg(long, default_value_t = 5)]
    pub examples: usize,
    /// Print the report as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub store: StoreOptions,
}

/// What the scan found, in the report's words.
#[derive(Debug, Default, Serialize)]
struct Report {
    store: String,
    applied: bool,
    /// Documents in the collection, whatever their `_id`.
    total: u64,
    /// Documents whose `_id` is an ObjectId, the ones the API serves.
    scanned: u64,
    meet_contract: u64,
    need_backfill: Category,
    need_a_person: Category,
    /// Documents whose `_id` the API cannot name; only a person can move them.
    foreign_ids: u64,
    findings: Vec<FindingCount>,
    /// Repairs written by this run (with `--apply`).
    repaired: u64,
    /// Repairs not written because the document changed meanwhile.
    changed_meanwhile: u64,
    /// Which of the product's indexes exist (created on connect when missing).
    indexes: Vec<&'static str>,
}

#[derive(Debug, Default, Serialize)]
struct Category {
    count: u64,
    examples: Vec<String>,
}

#[derive(Debug, Serialize)]
struct FindingCount {
    field: String,
    problem: String,
    fixable: bool,
    count: u64,
    examples: Vec<String>,
}

impl Category {
    fn add(&mut self, id: &str, examples: usize) {
        self.count += 1;
        if self.examples.len() < examples {
            self.examples.push(id.to_owned());
        }
    }
}

pub async fn run(args: MigrateArgs) -> Result<()> {
    let opened = store_tools::open(&args.store).await?;
    let store = opened.store;
    let cache = if args.apply {
        store_tools::shared_cache(&args.store).await?
    } else {
        None
    };
    let mut report = Report {
        store: opened.description,
        applied: args.apply,
        ..Report::default()
    };
    report.total = store.count(ORDERS).await?;
    report.indexes = match args.store.location.mongo_uri {
        Some(_) => vec![
            "idempotency_keys.idempotency_ttl (TTL on created_at)",
            "orders._id (unique, MongoDB's own)",
        ],
        None => vec![
            "documents (collection, id) primary key",
            "idempotency_keys (collection, key) primary key",
        ],
    };
    let bar = store_tools::progress(report.total, "orders")?;
    let mut findings: BTreeMap<(String, String, bool), (u64, Vec<String>)> = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list(ORDERS, after.as_deref(), args.batch_size)
            .await?;
        let Some(last) = page.last() else { break };
        after = last
            .get("_id")
            .and_then(|id| id.as_str())
            .map(str::to_owned);
        let mut rewritten = Vec::new();
        for doc in page {
            let order = StoredOrder::from_stored(doc);
            report.scanned += 1;
            bar.inc(1);
            if order.findings().is_empty() {
                report.meet_contract += 1;
                continue;
            }
            if order.needs_a_person() {
                report.need_a_person.add(order.id(), args.examples);
            } else {
                report.need_backfill.add(order.id(), args.examples);
            }
            for finding in order.findings() {
                let entry = findings
                    .entry((
                        finding.field.clone(),
                        finding.problem.clone(),
                        finding.fix.is_some(),
                    ))
                    .or_default();
                entry.0 += 1;
                if entry.1.len() < args.examples {
                    entry.1.push(order.id().to_owned());
                }
            }
            let Some(repair) = order.repair().filter(|_| args.apply) else {
                continue;
            };
            let changes_what_clients_see = repair.version != order.version();
            if store
                .backfill(
                    ORDERS,
                    order.id(),
                    order.stored_version(),
                    repair.set,
                    repair.version,
                )
                .await?
            {
                report.repaired += 1;
                if changes_what_clients_see {
                    rewritten.push(order.id().to_owned());
                }
            } else {
                report.changed_meanwhile += 1;
            }
        }
        store_tools::invalidate(cache.as_ref(), &rewritten).await?;
    }
    bar.finish_and_clear();
    report.foreign_ids = report.total.saturating_sub(report.scanned);
    report.findings = findings
        .into_iter()
        .map(
            |((field, problem, fixable), (count, examples))| FindingCount {
                field,
                problem,
                fixable,
                count,
                examples,
            },
        )
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(())
}

fn print_text(report: &Report) {
    let examples = |ids: &[String]| {
        if ids.is_empty() {
            String::new()
        } else {
            format!("   e.g. {}", ids.join(", "))
        }
    };
    println!(
        "{} orders in {} ({} with an ObjectId _id, scanned)",
        report.total, report.store, report.scanned
    );
    println!(
        "  meet the contract               {:>8}",
        report.meet_contract
    );
    println!(
        "  need a lossless backfill only   {:>8}{}",
        report.need_backfill.count,
        examples(&report.need_backfill.examples)
    );
    println!(
        "  need a person for some field    {:>8}{}",
        report.need_a_person.count,
        examples(&report.need_a_person.examples)
    );
    println!(
        "  _id is not an ObjectId (person) {:>8}",
        report.foreign_ids
    );
    if !report.findings.is_empty() {
        println!("\nFindings (a document may have several):");
        for finding in &report.findings {
            let remedy = if finding.fixable {
                "backfill"
            } else {
                "a person"
            };
            println!(
                "  {:<18} {:<70} {:>8}  {remedy}{}",
                finding.field,
                finding.problem,
                finding.count,
                examples(&finding.examples)
            );
        }
    }
    println!("\nIndexes in place: {}", report.indexes.join("; "));
    let backfills = report.findings.iter().any(|finding| finding.fixable);
    if report.applied {
        println!(
            "Applied {} repairs; {} documents changed meanwhile and were left for the next run.",
            report.repaired, report.changed_meanwhile
        );
    } else if backfills {
        println!(
            "Dry run: nothing was written. Run again with --apply to write the lossless backfills."
        );
    } else {
        println!("Dry run: nothing to backfill.");
    }
}
