//! `orders seed N`: realistic fake orders, created through the API (so it
//! works against any deployment) with bounded concurrency and a progress bar.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

#[derive(Debug, Args)]
pub struct SeedArgs {
    /// How many orders to create.
    pub count: u64,
    /// Base URL of the API.
    #[arg(long, env = "ORDERS_URL", default_value = "http://127.0.0.1:3000")]
    pub url: String,
    /// Requests in flight at once.
    #[arg(long, env = "ORDERS_SEED_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=512))]
    pub concurrency: u32,
    /// API key with the orders:write scope (an admin key: `<data-dir>/admin-key`).
    #[arg(long, env = "ORDERS_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

const PRODUCTS: &[&str] = &[
    "Spring sale banner 728x90", "Product photo pack (12 images)", "Newsletter header", "Instagram story set",
    "Landing page hero image", "Google Ads responsive display set", "Facebook carousel (5 cards)", "YouTube thumbnail",
    "Email footer badge", "Black Friday countdown GIF", "LinkedIn sponsored post image", "Brand style guide PDF",
];
const FIRST_NAMES: &[&str] = &["Ada", "Grace", "Alan", "Linus", "Margaret", "Dennis", "Barbara", "Ken", "Radia", "Edsger", "Frances", "Tim"];
const LAST_NAMES: &[&str] = &["Lovelace", "Hopper", "Turing", "Torvalds", "Hamilton", "Ritchie", "Liskov", "Thompson", "Perlman", "Dijkstra", "Allen", "Berners-Lee"];
const STREETS: &[&str] = &["Main St", "Market St", "Elm Avenue", "Harbour Road", "King's Way", "Rue de la Paix", "Calle Mayor", "Hauptstraße"];
const CITIES: &[&str] = &["Springfield", "Lyon", "Madrid", "Berlin", "Toronto", "Melbourne", "Osaka", "Nairobi"];

fn fake_order(rng: &mut impl Rng) -> Value {
    let pick = |rng: &mut _, list: &[&str]| list.choose(rng).copied().unwrap_or_default().to_owned();
    json!({
        "product": pick(rng, PRODUCTS),
        "quantity": rng.random_range(1..=500),
        "customer_name": format!("{} {}", pick(rng, FIRST_NAMES), pick(rng, LAST_NAMES)),
        "customer_address": format!("{} {}, {} {:05}", rng.random_range(1..=999), pick(rng, STREETS), pick(rng, CITIES), rng.random_range(1000..99999)),
    })
}

pub async fn run(args: SeedArgs) -> Result<()> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = &args.api_key {
        let value = format!("Bearer {}", key.trim()).parse().context("--api-key is not a valid header value")?;
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let client = reqwest::Client::builder().default_headers(headers).build()?;
    let endpoint = format!("{}/orders", args.url.trim_end_matches('/'));
    let bar = ProgressBar::new(args.count).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} orders [{elapsed} / ~{eta}] {per_sec}")?,
    );
    let permits = Arc::new(Semaphore::new(args.concurrency as usize));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..args.count {
        let permit = permits.clone().acquire_owned().await?;
        let (client, endpoint, bar) = (client.clone(), endpoint.clone(), bar.clone());
        let order = fake_order(&mut rand::rng());
        tasks.spawn(async move {
            let _permit = permit;
            // A key per order makes a retried request safe.
            let key = format!("seed-{}-{index}", std::process::id());
            let response = client.post(&endpoint).header("idempotency-key", key).json(&order).send().await
                .with_context(|| format!("cannot reach {endpoint}"))?;
            if response.status().as_u16() != 201 {
                bail!("creating order {index} answered {}: {}", response.status(), response.text().await.unwrap_or_default());
            }
            bar.inc(1);
            Ok(())
        });
        while let Some(done) = tasks.try_join_next() {
            done??;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    bar.finish_and_clear();
    println!("seeded {} orders into {} in {:.1} s", args.count, args.url, started.elapsed().as_secs_f64());
    Ok(())
}
