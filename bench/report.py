"""Turns the records of one benchmark run into docs/benchmarks.json,
docs/benchmarks.md and docs/benchmarks.svg (plain SVG, no plotting library).

Run on its own with a run's result.json to write the documents again.
"""

import json
import math
from pathlib import Path

PEERS = ("axum", "flask", "spin")
SYSTEM_NAMES = {
    "ours": "ours (orders up: runner + sidecar, MongoDB + Redis)",
    "axum": "axum reference (native, MongoDB driver)",
    "flask": "old service (Flask + gunicorn 2x4)",
    "spin": "Spin (spin up + orders sidecar)",
}
COLOURS = {"ours": "#2b6cb0", "axum": "#dd6b20", "flask": "#718096", "spin": "#38a169"}
CHART_SCENARIOS = ["get-by-id", "get-by-id-cold", "list", "update", "create", "mixed"]
RECORD_KEYS = ("scenario", "system", "rps", "p50_ms", "p99_ms", "p999_ms", "errors", "peak_rss_mib")


def fmt(value, digits=1):
    if value is None:
        return "–"
    if isinstance(value, float):
        if value >= 100:
            return f"{value:,.0f}"
        if value >= 10:
            return f"{value:.1f}"
        return f"{value:.{max(digits, 2)}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def find(records, scenario, system="ours"):
    return next((r for r in records if r["scenario"] == scenario and r["system"] == system), None)


def ratio(a, b):
    if not a or not b or a.get("rps") in (None, 0) or b.get("rps") in (None, 0):
        return None
    return a["rps"] / b["rps"]


# --------------------------------------------------------------------------- tables

def table(records):
    """The console table: one line per measured load run."""
    rows = [r for r in records if r.get("rps") is not None]
    header = f"{'scenario':<30} {'system':<6} {'rps':>9} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} {'errors':>7} {'RSS MiB':>8}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['scenario']:<30} {r['system']:<6} {fmt(r['rps']):>9} {fmt(r['p50_ms']):>8} {fmt(r['p99_ms']):>8} "
                     f"{fmt(r['p999_ms']):>9} {fmt(r['errors']):>7} {fmt(r['peak_rss_mib']):>8}")
    for r in records:
        if r["scenario"] == "instantiation":
            lines.append(f"instantiation p50 (ours): {fmt(r.get('p50_us'))} µs, p99 {fmt(r.get('p99_us'))} µs")
        if r["scenario"] == "sidecar-hop":
            lines.append(f"sidecar hop overhead (ours, mean): {fmt(r.get('hop_overhead_mean_us'))} µs")
        if r["scenario"] == "auth-cost":
            lines.append(f"access control (ours, cached get-by-id): {fmt(r.get('cpu_us_with_auth'))} CPU-µs per request with "
                         f"an API key, {fmt(r.get('cpu_us_without_auth'))} with --auth off")
        if r["scenario"].startswith("start-to-first-200"):
            lines.append(f"{r['scenario']} (ours): {fmt(r.get('ready_s'))} s")
        if r["scenario"].startswith("peak-concurrency"):
            lines.append(f"{r['scenario']} ({r['system']}): {fmt(r.get('peak_users'))} users with 0 failures; "
                         f"generator CPU {generator_cpu(r)}")
        if r["scenario"].startswith("locust-cross-check"):
            lo, us = r.get("locust") or {}, r.get("users_py") or {}
            lines.append(f"{r['scenario']}: req/s users.py {fmt(us.get('rps'))} / Locust {fmt(lo.get('rps'))} = "
                         f"{fmt(r.get('rps_ratio'))}x; p50 ms {fmt(us.get('p50_ms'))} / {fmt(lo.get('p50_ms'))} = "
                         f"{fmt(r.get('p50_ratio'))}x; failures {fmt(us.get('failures'))} / {fmt(lo.get('failures'))}; "
                         f"generator CPU {fmt(us.get('generator_cpu_percent'))}% / {fmt(lo.get('generator_cpu_percent'))}%")
    return "\n".join(lines)


def generator_cpu(record):
    """The generator's CPU, each process (100% = one core), then all of them with their parent."""
    each = record.get("generator_cpu_percent") or []
    total = (record.get("cpu_percent") or {}).get("generator")
    text = "/".join(f"{v:.0f}%" for v in each) or "–"
    return text + (f" (total {total:.0f}%)" if total is not None else "")


def markdown_results(records):
    rows = [r for r in records if r.get("rps") is not None]
    out = ["| scenario | system | req/s | p50 ms | p99 ms | p99.9 ms | errors | peak RSS MiB | notes |",
           "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        notes = []
        if r.get("connections"):
            notes.append(f"{r['connections']} connections")
        if r.get("users"):
            notes.append(f"{r['users']:,} users")
        if r.get("target_rps"):
            notes.append(f"paced at {fmt(r['target_rps'])} req/s")
        if r.get("cache_hit_ratio") is not None:
            notes.append(f"cache hit ratio {r['cache_hit_ratio']:.0%}")
        if r.get("peak_users") is not None:
            notes.append(f"peak {r['peak_users']:,} users at 0 failures")
        if r.get("store"):
            notes.append(r["store"])
        if r.get("cpu_us_per_request"):
            notes.append(f"{r['cpu_us_per_request']:,} CPU-µs/request")
        if r.get("cpu_percent"):
            notes.append("CPU " + ", ".join(f"{k} {v:.0f}%" for k, v in r["cpu_percent"].items() if v is not None))
        if r.get("retried"):
            notes.append(f"{r['retried']} resent after a closed keep-alive")
        failure = (r.get("first_failures") or [None])[0]
        if failure:
            notes.append(f"first failure {failure['reason']} at {failure['at_s']} s")
        if r.get("generator_cpu_percent"):
            notes.append("generator CPU " + "/".join(f"{v:.0f}%" for v in r["generator_cpu_percent"]))
        out.append(f"| {r['scenario']} | {r['system']} | {fmt(r['rps'])} | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} | "
                   f"{fmt(r['p999_ms'])} | {fmt(r['errors'])} | {fmt(r['peak_rss_mib'])} | {'; '.join(notes)} |")
    return "\n".join(out)


def markdown_ratios(records):
    scenarios = [s for s in CHART_SCENARIOS + ["get-by-id-half-max"] if find(records, s)]
    peers = [p for p in PEERS if any(r["system"] == p for r in records)]
    if not peers:
        return "_No peer was measured in this run._"
    out = ["| scenario | " + " | ".join(f"ours ÷ {p}" for p in peers) + " |", "|---|" + "---:|" * len(peers)]
    for scenario in scenarios:
        cells = []
        for peer in peers:
            value = ratio(find(records, scenario), find(records, scenario, peer))
            cells.append(f"{value:.2f}×" if value is not None else "–")
        out.append(f"| {scenario} | " + " | ".join(cells) + " |")
    return "\n".join(out)


# --------------------------------------------------------------------------- targets

def cpu_text(record):
    shares = (record or {}).get("cpu_percent") or {}
    if not shares:
        return ""
    return "CPU (100% = one core of 2): " + ", ".join(f"{k} {v:.0f}%" for k, v in shares.items() if v is not None)


def generator_text(record):
    values = (record or {}).get("generator_cpu_percent") or []
    if not values:
        return ""
    text = f"generator processes at {'/'.join(f'{v:.0f}%' for v in values)} of a core each"
    if max(values) >= 85:
        text += " — the generator was near its own limit"
    return text


def per_request(record):
    value = (record or {}).get("cpu_us_per_request")
    return f"{value:,} CPU-µs per request" if value else "CPU per request not measured"


# How list pages meet inserts, for reading the cache counts of a mixed run.
LIST_PAGES_AND_INSERTS = ("List pages: a full page stays cached through inserts, and one read while inserts landed is "
                          "still kept when it ends at or below the newest id its lookup knew; the collection's last "
                          "page is read anew after every insert (docs/adr/0015)")


def auth_rounds_text(auth):
    rounds = len((auth.get("rounds") or {}).get("on") or []) or 1
    return f"{rounds} alternating rounds of each at {fmt(auth.get('connections'))} connections" if rounds > 1 \
        else "one run of each, one after the other"


def rounds_cpu(auth, side):
    return " / ".join(fmt(r.get("cpu_us")) for r in (auth.get("rounds") or {}).get(side) or []) or "–"


def cache_hits(cache):
    """Reads answered from the cache: fresh, or past the TTL while re-read."""
    return int(cache.get("hit", 0) + cache.get("stale", 0))


def cache_text(record):
    cache = ((record or {}).get("product_metrics") or {}).get("cache") or {}
    if not cache:
        return ""
    return f"cache hits / misses {cache_hits(cache):,} / {int(cache.get('miss', 0)):,}"


def store_text(record):
    metrics = (record or {}).get("product_metrics") or {}
    ops = metrics.get("store_by_operation")
    return f"store time per operation (mean ms): {ops_text(ops)}" if ops else ""


def targets(records, facts):
    quick = facts.get("mode") == "quick"
    baseline = facts.get("store_baseline") or {}
    rows = []

    def add(figure, target, measured, met, why=""):
        if measured is None:
            rows.append((figure, target, "not measured in this run", "–", why))
        else:
            rows.append((figure, target, measured, "met" if met else "**not met**", "" if met else why))

    # Peak concurrency.
    peak = find(records, "peak-concurrency-100-to-10k") or find(records, "peak-concurrency-100")
    figure = "peak concurrency, mixed, spawn rate 100, 2 instances behind nginx"
    if peak:
        failures = peak.get("first_failures") or []
        parts = []
        if failures:
            parts.append(f"first failure: {failures[0]['reason']} at {failures[0]['at_s']} s with "
                         f"{peak.get('spawned', 0):,} users started")
        else:
            parts.append(f"no request failed; the ramp stopped at {peak.get('spawned', 0):,} users "
                         f"({peak.get('spawn_rate')} users/s for {fmt(peak.get('seconds'))} s)")
        parts.append(f"{fmt(peak.get('rps'))} req/s, p50 {fmt(peak.get('p50_ms'))} ms, p99 {fmt(peak.get('p99_ms'))} ms")
        trouble = peak.get("nginx") or {}
        if trouble.get("no_live_upstreams"):
            parts.append(f"nginx logged {trouble['upstream_disabled']:,} 'upstream server temporarily disabled' and "
                         f"{trouble['no_live_upstreams']:,} 'no live upstreams': the template counts a 503 (the store "
                         "timing out) as an instance failure (`max_fails=3 fail_timeout=5s`, `proxy_next_upstream "
                         "http_503`), so slow storage takes every instance out and clients get 502")
        if trouble.get("worker_connections_exhausted"):
            parts.append(f"nginx ran out of worker_connections {trouble['worker_connections_exhausted']:,} times")
        parts += [cpu_text(peak), generator_text(peak), store_text(peak), cache_text(peak)]
        why = "; ".join(p for p in parts if p) + ". "
        why += ("Note that 100 users/s for 60 s starts only 6,000 users, so the target needs a longer ramp "
                "(the `-to-10k` run ramps on to 10,000). Each user sends a list page and a create every ~4 s, so "
                "10,000 users are ~5,000 req/s on this 2-core machine, which also runs SecantusDB, Redis, nginx and "
                "the generator")
        if baseline:
            why += f" (the database alone: {baseline.get('inserts_per_s_16_threads', 0):,} inserts/s from 16 threads)"
        why += ". " + LIST_PAGES_AND_INSERTS
        why += (". Connection limits no longer stop the ramp (docs/capacity.md, \"Room for 10,000 users\"). What "
                "would move it: the database on its own machine (or one that commits in groups), and more cores.")
        add(figure, "≥ 10,000 users", f"{peak.get('peak_users') or 0:,} users ({peak['scenario']})",
            (peak.get("peak_users") or 0) >= 10_000, why)
    else:
        add(figure, "≥ 10,000 users", None, False)

    def ratio_target(figure, target_value, scenario, peer, explain):
        ours, other = find(records, scenario), find(records, scenario, peer)
        value = ratio(ours, other)
        if value is None:
            add(figure, f"≥ {target_value}×", None, False)
            return
        measured = f"{value:.2f}× ({fmt(ours['rps'])} vs {fmt(other['rps'])} req/s)"
        add(figure, f"≥ {target_value}×", measured, value >= target_value, explain(ours, other))

    def get_explain(peer_name):
        def explain(ours, other):
            return (f"ours {per_request(ours)} vs {peer_name} {per_request(other)}; ours: {cpu_text(ours)}. "
                    + get_by_id_bottleneck(ours))
        return explain

    def get_by_id_bottleneck(ours):
        metrics = ours.get("product_metrics") or {}
        inst = (metrics.get("instantiation") or {}).get("mean_us")
        outbound = (metrics.get("outbound_to_sidecar") or {}).get("mean_us")
        text = ("With the cache warm ours does not touch the database, so its ceiling is its own CPU per request on "
                "the cores it shares with wrk, Redis and the database: one component instantiation per request (the "
                "runner routes by method")
        if inst:
            text += f"; {fmt(inst)} µs mean"
        text += "), the guest's HTTP handling through wasmtime-wasi-http's resources, and the sidecar call"
        if outbound:
            text += f" ({fmt(outbound)} µs mean, with its Redis round trip)"
        text += (". The profile of `orders up` (docs/request-path.md, docs/images/flame-after.svg) has no frame "
                 "above 3%: wasmtime about a quarter (the instance, the canonical ABI, resource tables), guest code "
                 "about a fifth, glibc malloc/free and copies a seventh, the kernel's sockets a ninth; page faults and "
                 "TLB shoot-downs are gone. The host already answers the sidecar call in-process, with no socket or "
                 "HTTP encoding; on the embedded store (cache in memory) the same request costs about 75 CPU-µs less "
                 "than with Redis (docs/request-path.md, \"With MongoDB and Redis, on a quiet machine\"), the Redis "
                 "exchange's socket writes, wake-ups and the redis crate's multiplexer. What would move it: a copy of "
                 "hot documents in the sidecar's memory, which needs invalidation that provably reaches every "
                 "sidecar before a write is acknowledged (not built, see there), fewer `wasi:http` calls per "
                 "request in the guest (its request and response resources are the interface Spin runs), and "
                 "cores of its own.")
        return text

    cached = find(records, "get-by-id")
    figure = "CPU-µs per cached get-by-id in `orders up` (our process only)"
    if cached and cached.get("cpu_us_per_request"):
        embedded = find(records, "get-by-id-embedded")
        measured = f"{cached['cpu_us_per_request']:,} (MongoDB + Redis)"
        if embedded and embedded.get("cpu_us_per_request"):
            measured += f", {embedded['cpu_us_per_request']:,} (embedded store)"
        add(figure, "≤ 150", measured, cached["cpu_us_per_request"] <= 150, get_by_id_bottleneck(cached))
    else:
        add(figure, "≤ 150", None, False)

    ratio_target("max RPS get-by-id (cache warm) vs the native Rust reference", 1.0, "get-by-id", "axum",
                 get_explain("the axum reference"))
    ratio_target("max RPS get-by-id (cache warm) vs the old service", 5, "get-by-id", "flask", get_explain("the old service"))

    def create_explain(ours, other):
        text = f"ours: {per_request(ours)}; {cpu_text(ours)}; {store_text(ours)}. "
        axum = find(records, "create", "axum")
        if axum:
            text += (f"The axum reference, on the same database with the same write concern, made "
                     f"{fmt(axum['rps'])} creates/s at {per_request(axum)}, so the database is not what stops ours: "
                     "ours spends its own CPU per create on the two cores the database, Redis and wrk also need. ")
        if baseline:
            text += (f"(The database alone: {baseline.get('inserts_per_s_16_threads', 0):,} inserts/s from 16 threads, "
                     "majority + journal.) ")
        text += ("Where that CPU goes (docs/request-path.md, \"Where a create's CPU goes\"): wasmtime about a "
                 "quarter (the instance, the component's host calls), the kernel's sockets a fifth, malloc/free and "
                 "the MongoDB driver about a sixth each, hyper, the guest and wasi-http about a tenth each; the audit "
                 "trail's own work is under 1%, and switching it off did not change the rate (\"Several appends at "
                 "once\"). What would move it: fewer allocations and host calls per create in the component and the "
                 "sidecar, the database on its own cores, and a store that commits in groups.")
        return text

    ratio_target("max RPS create vs the old service, same write concern", 2, "create", "flask", create_explain)

    def list_explain(ours, other):
        return (f"ours {per_request(ours)} vs the axum reference {per_request(other)}; ours: {cpu_text(ours)}; "
                f"{store_text(ours)}. Pages come from the cache (they survive inserts, docs/adr/0015) and orders "
                "that meet the contract are served as stored (docs/request-path.md).")

    ratio_target("max RPS list (page of 100) vs the native Rust reference", 5, "list", "axum", list_explain)

    half = find(records, "get-by-id-half-max")
    if half:
        peers = [find(records, "get-by-id-half-max", p) for p in PEERS]
        peer_text = ", ".join(f"{p['system']} {fmt(p['p99_ms'])} ms" for p in peers if p)
        why = (f"{cpu_text(half)}. p50 {fmt(half['p50_ms'])} ms but a long tail; at their own half rates the peers' p99 "
               f"were {peer_text or 'not measured'}: on this shared 2-core machine the tail comes from processes "
               "waiting for a core (wrk, SecantusDB, Redis, the system and other users' jobs). What would move it: "
               "fewer runnable threads per request (the Redis round trip), and dedicated cores.")
        add("p99 latency at half of max RPS, get-by-id", "≤ 10 ms", f"{fmt(half['p99_ms'])} ms at {fmt(half['rps'])} req/s",
            half["p99_ms"] is not None and half["p99_ms"] <= 10, why)
    else:
        add("p99 latency at half of max RPS, get-by-id", "≤ 10 ms", None, False)

    for scenario, label in (("mixed-40k-per-min-1-core", "MongoDB + Redis"),
                            ("mixed-40k-per-min-1-core-embedded", "embedded store")):
        figure = f"mixed at 40,000 req/min for 5 min on 1 core ({label})"
        budget = find(records, scenario)
        if not budget:
            if scenario.endswith("embedded") and not quick:
                add(figure, "0 errors, p99 ≤ 50 ms", None, False)
            elif not scenario.endswith("embedded"):
                add(figure, "0 errors, p99 ≤ 50 ms", None, False)
            continue
        rpm = budget.get("requests_per_minute") or 0
        held = budget.get("held_seconds") or 0
        ok = (budget["errors"] == 0 and budget["p99_ms"] is not None and budget["p99_ms"] <= 50
              and rpm >= 0.97 * 40_000 and held >= 300)
        measured = f"{rpm:,} req/min for {held} s, {budget['errors']} errors, p99 {fmt(budget['p99_ms'])} ms"
        why = ""
        if held < 300:
            why += f"Held {held} s only (quick run), not 5 minutes. "
        if rpm < 0.97 * 40_000:
            why += (f"{budget.get('users', 0):,} users were running, but the model is closed-loop: each user waits for "
                    f"its answer (p50 {fmt(budget['p50_ms'])} ms) before thinking again, so slow answers lowered the "
                    "rate. ")
        why += "; ".join(p for p in (cpu_text(budget), generator_text(budget), store_text(budget), cache_text(budget)) if p) + ". "
        if scenario.endswith("embedded"):
            why += ("Runner, sidecar and SQLite share the one core; what would move it: less CPU per request.")
        else:
            failures = budget.get("first_failures") or []
            if failures:
                kinds = sorted({f["kind"] for f in failures})
                why += (f"The first failures ({', '.join(kinds)}): {failures[0]['reason']} at {failures[0]['at_s']} s, "
                        f"sent at {failures[0].get('sent_at_s')} s. ")
                if failures[0]["at_s"] >= 300:
                    why += ("That is just past the cache TTL (300 s), when the first page, filled at the start, "
                            "turns stale: one reader re-reads it while the others are served the stale copy, and a "
                            "failed re-read pauses the next (ADR 0015); the query carries the store timeout to the "
                            "server (maxTimeMS). On SecantusDB that page query scans the collection (some 100,000 "
                            "orders by then; see the database's own figures above), where a MongoDB server walks "
                            "the `_id` index. ")
            why += ("The pinned process (runner + sidecar) is not the limit when the store time dominates. "
                    + LIST_PAGES_AND_INSERTS + ". What would move it: a store that commits writes in groups, on "
                    "cores of its own.")
        add(figure, "0 errors, p99 ≤ 50 ms", measured, ok, why)

    rss_values = []
    for r in records:
        if r["system"] != "ours":
            continue
        pss = r.get("peak_pss_mib")
        if r["scenario"] == "peak-rss" and r.get("peak_rss_mib"):
            rss_values.append((r["peak_rss_mib"], "orders up: runner + sidecar in one process", pss))
        if r.get("max_instance_rss_mib"):
            rss_values.append((r["max_instance_rss_mib"], f"runner instance, {r['scenario']}", None))
        # Every run of `orders up` under load counts (the max-throughput runs at
        # 128 connections hold the most instances at once), not the cluster
        # runs, whose figure is the whole tree's (their instances count above).
        clustered = r["scenario"].startswith(("peak-concurrency", "get-by-id-nginx"))
        if r["scenario"] != "peak-rss" and not clustered and r.get("peak_rss_mib"):
            rss_values.append((r["peak_rss_mib"], f"orders up, {r['scenario']}", pss))
    if rss_values:
        worst = max(rss_values, key=lambda value: value[0])
        physical = f"; {fmt(worst[2])} MiB proportional (PSS, sampled under load)" if worst[2] else ""
        add("peak RSS per instance under load", "≤ 100 MiB", f"{fmt(worst[0])} MiB ({worst[1]}){physical}", worst[0] <= 100,
            "A start that compiled the components used to keep the compiler's memory in the server (about 60 MiB); "
            "it compiles in a child process now (docs/request-path.md, \"Compiling outside the server\"). What "
            "remains grows with the instances alive at once (slow store answers keep more alive, up to "
            "--max-instances 256): each pooling slot once used keeps the pages its instance dirtied (up to "
            "linear_memory_keep_resident, 4 MiB, set to spare the page faults) and maps the pages of its "
            "component's memory image it read, which the kernel counts in RSS once per slot though every slot "
            "shares them; PSS counts each page once, so it is nearer what the process takes from the machine. What would "
            "move RSS: fewer live instances (a lower --max-instances), or a smaller keep-resident size, measured "
            "against the page faults it brings back.")
    else:
        add("peak RSS per instance under load", "≤ 100 MiB", None, False)

    inst = find(records, "instantiation")
    if inst and inst.get("p50_us") is not None:
        add("per-request component instantiation, p50", "≤ 20 µs", f"{fmt(inst['p50_us'])} µs (p99 {fmt(inst.get('p99_us'))} µs)",
            inst["p50_us"] <= 20, "The figure times `instantiate_async` alone (the WASI and HTTP context is built "
            "before it): a warm pooling-allocator slot (docs/request-path.md), the component's memory image and its "
            "imports filled in. It is read from `orders up` after the max-throughput runs, so it includes waits for "
            "a core shared with wrk, Redis and the database, and the p50 is interpolated within the histogram's "
            "buckets (5 µs apart up to 25 µs). On an idle machine (3,000 cached gets one after another, "
            "docs/request-path.md) 90% took 10–25 µs and none under 10, so the wait for a core is what puts "
            "it over. What would move it: dedicated cores, and fewer imports per component "
            "(beside wasi:http, an endpoint component imports the wasi:cli stdio, terminal, environment and exit "
            "interfaces that Rust's standard library brings).")
    else:
        add("per-request component instantiation, p50", "≤ 20 µs", None, False)

    start = find(records, "start-to-first-200")
    if start and start.get("ready_s") is not None:
        add("runner start to first 200, precompiled components", "≤ 1 s", f"{fmt(start['ready_s'])} s",
            start["ready_s"] <= 1.0, "Start includes connecting to MongoDB and Redis and loading the compiled components.")
    else:
        add("runner start to first 200, precompiled components", "≤ 1 s", None, False)

    auth = find(records, "auth-cost")
    if auth and auth.get("cpu_us_per_check") is not None:
        # A negative difference is drift between the two measurements, not a check that saves CPU.
        add("cost of access control (key check) per request", "≤ 10 CPU-µs", f"{fmt(auth['cpu_us_per_check'])} CPU-µs",
            0 <= auth["cpu_us_per_check"] <= 10,
            f"With the key {fmt(auth.get('cpu_us_with_auth'))} vs `--auth off` {fmt(auth.get('cpu_us_without_auth'))} "
            f"CPU-µs per request: the medians of {auth_rounds_text(auth)}. In the flame graph "
            "(docs/images/flame-after.svg) the check itself (`check_access`) is under 1% of a request.")
    else:
        add("cost of access control (key check) per request", "≤ 10 CPU-µs", None, False)

    out = ["| figure | target | measured | status | bottleneck measured, and what would move it |", "|---|---|---|---|---|"]
    for figure, target, measured, status, why in rows:
        if quick and status != "–":
            status += " (quick run: indicative only)"
        out.append(f"| {figure} | {target} | {measured} | {status} | {why} |")
    return "\n".join(out)


# --------------------------------------------------------------------------- costs

def markdown_costs(records):
    out = []
    inst = find(records, "instantiation")
    if inst and inst.get("by_function"):
        out += ["**Component instantiation per request** (`orders_component_instantiation_seconds`, p50/p99 interpolated "
                "within the histogram's buckets; the runner routes by method, so an API request instantiates one endpoint component):", "",
                "| function | instantiations | mean µs | p50 µs | p99 µs |", "|---|---:|---:|---:|---:|"]
        for function, summary in sorted(inst["by_function"].items()):
            if summary:
                out.append(f"| {function} | {summary['count']:,} | {fmt(summary['mean_us'])} | {fmt(summary['p50_us'])} | {fmt(summary['p99_us'])} |")
        out.append(f"| all | {inst.get('count') or 0:,} | {fmt(inst.get('mean_us'))} | {fmt(inst.get('p50_us'))} | {fmt(inst.get('p99_us'))} |")
        out.append("")
    hop = find(records, "sidecar-hop")
    if hop:
        o, s, st = hop.get("outbound_to_sidecar") or {}, hop.get("sidecar_operation") or {}, hop.get("store_operation") or {}
        out += ["**The sidecar hop** (in `orders up` the sidecar is in the same process and the call does not cross a socket):", "",
                "| measured | count | mean µs | p50 µs | p99 µs |", "|---|---:|---:|---:|---:|",
                f"| component → sidecar → component (outbound call) | {fmt(o.get('count'))} | {fmt(o.get('mean_us'))} | {fmt(o.get('p50_us'))} | {fmt(o.get('p99_us'))} |",
                f"| inside the sidecar (cache + store) | {fmt(s.get('count'))} | {fmt(s.get('mean_us'))} | {fmt(s.get('p50_us'))} | {fmt(s.get('p99_us'))} |",
                f"| the store alone (MongoDB) | {fmt(st.get('count'))} | {fmt(st.get('mean_us'))} | {fmt(st.get('p50_us'))} | {fmt(st.get('p99_us'))} |",
                "", f"The hop itself (outbound mean minus sidecar mean): **{fmt(hop.get('hop_overhead_mean_us'))} µs**.", ""]
    for r in records:
        if r["scenario"].startswith("get-by-id-nginx-") and r.get("outbound_to_sidecar") and r.get("sidecar_operation"):
            o, s = r["outbound_to_sidecar"], r["sidecar_operation"]
            out.append(f"Through nginx with {r.get('instances')} instance(s) the sidecar is a separate process: outbound "
                       f"call mean {fmt(o.get('mean_us'))} µs (instance 0) vs {fmt(s.get('mean_us'))} µs inside the sidecar.")
            break
    auth = find(records, "auth-cost")
    if auth:
        out += ["**What access control costs** (`orders up`, embedded store, cached `GET /orders/{id}`, the same data "
                f"directory copied and started twice; process CPU time over each wrk run divided by the requests served, "
                f"{auth_rounds_text(auth)}):", "",
                "| | CPU-µs per request (median) | each round | requests/s (median) |", "|---|---:|---|---:|",
                f"| admin API key, checked by the sidecar | {fmt(auth.get('cpu_us_with_auth'))} | {rounds_cpu(auth, 'on')} | "
                f"{fmt(auth.get('rps_with_auth'))} |",
                f"| `--auth off` | {fmt(auth.get('cpu_us_without_auth'))} | {rounds_cpu(auth, 'off')} | "
                f"{fmt(auth.get('rps_without_auth'))} |",
                f"| the check | {fmt(auth.get('cpu_us_per_check'))} | | |", ""]
    rss_rows = []
    for r in records:
        if r["scenario"] == "peak-rss":
            for p in r.get("processes") or []:
                rss_rows.append((r["system"], "process", p["pid"], p["peak_rss_mib"]))
        if r["scenario"].startswith("get-by-id-nginx-"):
            for p in r.get("processes") or []:
                rss_rows.append((f"ours, nginx + {r.get('instances')}", p["role"], p["pid"], p["peak_rss_mib"]))
    if rss_rows:
        out += ["", "**Peak RSS per process** (VmHWM from /proc, read after the load runs):", "",
                "| system | role | peak RSS MiB |", "|---|---|---:|"]
        for system, role, _pid, mib in rss_rows:
            out.append(f"| {system} | {role} | {fmt(mib)} |")
    for name in ("start-to-first-200", "start-to-first-200-compiling"):
        r = find(records, name)
        if r:
            out.append(f"\n`{name}`: **{fmt(r.get('ready_s'))} s** — {r.get('note', '')}.")
    return "\n".join(out)


def ops_text(by_operation):
    if not by_operation:
        return "–"
    return ", ".join(f"{op} {fmt(v['mean_us'] / 1000)}" for op, v in sorted(by_operation.items()) if v)


def markdown_explain(records):
    """The product's own counters during each run: where a request's time went."""
    rows = [r for r in records if r["system"] == "ours" and r.get("product_metrics")]
    if not rows:
        return "_No counters were read in this run._"
    out = ["Read from the product's `/metrics` before and after each run (means; ms). The store column is the database "
           "time the sidecar measured, the sidecar column adds the cache; the difference between a request's latency "
           "and these is queueing and the work of the runner and components.", "",
           "| scenario | req/s | p50 ms | instantiation µs (mean) | component → sidecar call | sidecar, by operation | store, by operation | cache hits / misses |",
           "|---|---:|---:|---:|---:|---|---|---|"]
    for r in rows:
        m = r["product_metrics"]
        inst = (m.get("instantiation") or {}).get("mean_us")
        outbound = (m.get("outbound_to_sidecar") or {}).get("mean_us")
        cache = m.get("cache") or {}
        out.append(f"| {r['scenario']} | {fmt(r['rps'])} | {fmt(r['p50_ms'])} | {fmt(inst)} | "
                   f"{fmt(outbound / 1000) if outbound is not None else '–'} | {ops_text(m.get('sidecar_by_operation'))} | "
                   f"{ops_text(m.get('store_by_operation'))} | {fmt(cache_hits(cache))} / {fmt(int(cache.get('miss', 0)))} |")
    return "\n".join(out)


def markdown_baseline(facts):
    b = facts.get("store_baseline")
    if not b:
        return ""
    extra = ""
    if b.get("inserts_per_s_16_threads_w1"):
        extra += f"; {b['inserts_per_s_16_threads_w1']:,} inserts/s from 16 threads with w:1"
    if b.get("find_one_and_update_ms") is not None:
        extra += (f"; update_one {b['update_one_ms']} ms vs find_one_and_update {b['find_one_and_update_ms']} ms "
                  "(ours and the axum reference return the updated order, so they use the latter; the old service "
                  "uses update_one)")
    text = (f"- The database alone (pymongo, write concern majority + journal, {b['documents']:,} orders): insert "
            f"{b['insert_ms']} ms one at a time and {b['inserts_per_s_16_threads']:,}/s from 16 threads; find by id "
            f"{b['find_by_id_ms']} ms; the first page of 100 sorted by `_id` {b['first_page_of_100_ms']} ms")
    if b.get("first_page_of_100_ms_small") is not None:
        text += f" ({b['first_page_of_100_ms_small']} ms with {b['small_documents']:,} orders"
        if b["first_page_of_100_ms"] > 3 * b["first_page_of_100_ms_small"]:
            text += ": the server scans and sorts the collection instead of walking the `_id` index"
        text += ")"
    return text + extra + ". Writes and list pages that miss the cache cannot go faster than this for any system."


def markdown_peak(records):
    rows = [r for r in records if r["scenario"].startswith("peak-concurrency")]
    if not rows:
        return "_Not measured in this run._"
    out = ["| run | system | peak users at 0 failures | users started | req/s | first failure | CPU (100% = one core) | "
           "generator CPU per process |", "|---|---|---:|---:|---:|---|---|---|"]
    for r in rows:
        failure = (r.get("first_failures") or [{}])[0]
        text = f"{failure.get('reason')} at {failure.get('at_s')} s" if failure else "none"
        shares = ", ".join(f"{k} {v:.0f}%" for k, v in (r.get("cpu_percent") or {}).items() if v is not None)
        out.append(f"| {r['scenario']} | {r['system']} | {fmt(r.get('peak_users'))} | {fmt(r.get('spawned'))} | {fmt(r['rps'])} | "
                   f"{text} | {shares or '–'} | {generator_cpu(r)} |")
    return "\n".join(out)


def markdown_locust(records):
    """users.py beside Locust itself: same users, spawn rate and duration, one process each."""
    rows = [r for r in records if r["scenario"].startswith("locust-cross-check")]
    if not rows:
        return "_Not measured in this run (`bench/run.sh locust-cross-check`)._"
    out = ["Both against `ours` set up as for `mixed`, a fresh database for each run; Locust runs bench/locustfile.py "
           "(an `HttpUser`, `between(1, 3)`, GET and POST /orders), users.py the same model in one process. A ratio "
           "near 1.00× means users.py generates the load Locust would; req/s below Locust's, or a p50 above it, would "
           "be the generator's own doing. CPU is each generator's process time over the run (100% = one core).", "",
           "| users (spawn/s, s) | req/s users.py / Locust | ratio | p50 ms users.py / Locust | ratio | "
           "p99 ms users.py / Locust | failures users.py / Locust | generator CPU users.py / Locust | system CPU users.py / Locust run |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lo, us = r.get("locust") or {}, r.get("users_py") or {}

        def pair(key, suffix=""):
            return f"{fmt(us.get(key))}{suffix} / {fmt(lo.get(key))}{suffix}"

        def ratio_cell(value):
            return f"**{value:.2f}×**" if value is not None else "–"

        system = " / ".join(f"{((x.get('cpu_percent') or {}).get('system') or 0):.0f}%" for x in (us, lo))
        warned = f" (Locust warned of its CPU {lo['cpu_warnings']} times)" if lo.get("cpu_warnings") else ""
        out.append(f"| {fmt(r.get('users'))} ({r.get('spawn_rate')}/s, {r.get('seconds')} s) | {pair('rps')} | "
                   f"{ratio_cell(r.get('rps_ratio'))} | {pair('p50_ms')} | {ratio_cell(r.get('p50_ratio'))} | {pair('p99_ms')} | "
                   f"{pair('failures')} | {pair('generator_cpu_percent', '%')}{warned} | {system} |")
    return "\n".join(out)


# --------------------------------------------------------------------------- chart

def svg_chart(records):
    systems = [s for s in ("ours", "axum", "flask", "spin") if any(r["system"] == s for r in records)]
    scenarios = [s for s in CHART_SCENARIOS if any(find(records, s, sys) for sys in systems)]
    scaling = sorted((r.get("instances"), r["rps"]) for r in records if r["scenario"].startswith("get-by-id-nginx-") and r.get("rps"))
    width, height = 900, 420
    left, top, bottom = 70, 50, 330
    panel_w = 560 if scaling else 800
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             'font-family="sans-serif" font-size="12">', '<rect width="100%" height="100%" fill="white"/>',
             '<text x="20" y="24" font-size="16" font-weight="bold">Orders API — requests per second (log scale), same machine, same run</text>']
    values = [r["rps"] for r in records if r.get("rps") and r["scenario"] in scenarios]
    if scenarios and values:
        low = 10 ** math.floor(math.log10(max(1.0, min(values))))
        high = 10 ** math.ceil(math.log10(max(values)))
        span = math.log10(high) - math.log10(low) or 1

        def y(value):
            return bottom - (math.log10(max(value, low)) - math.log10(low)) / span * (bottom - top)

        tick = low
        while tick <= high:
            parts.append(f'<line x1="{left}" x2="{left + panel_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#e2e8f0"/>')
            parts.append(f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:,.0f}</text>')
            tick *= 10
        group_w = panel_w / len(scenarios)
        bar_w = min(28, (group_w - 16) / max(1, len(systems)))
        for i, scenario in enumerate(scenarios):
            x0 = left + i * group_w + (group_w - bar_w * len(systems)) / 2
            for j, system in enumerate(systems):
                r = find(records, scenario, system)
                if not r or not r.get("rps"):
                    continue
                x = x0 + j * bar_w
                parts.append(f'<rect x="{x:.1f}" y="{y(r["rps"]):.1f}" width="{bar_w - 2:.1f}" height="{bottom - y(r["rps"]):.1f}" '
                             f'fill="{COLOURS[system]}"><title>{scenario} {system}: {r["rps"]:,.0f} req/s</title></rect>')
            parts.append(f'<text x="{left + i * group_w + group_w / 2:.1f}" y="{bottom + 16}" text-anchor="middle">{scenario}</text>')
        parts.append(f'<line x1="{left}" x2="{left + panel_w}" y1="{bottom}" y2="{bottom}" stroke="#4a5568"/>')
        for j, system in enumerate(systems):
            lx = left + j * 200
            parts.append(f'<rect x="{lx}" y="{bottom + 34}" width="12" height="12" fill="{COLOURS[system]}"/>')
            parts.append(f'<text x="{lx + 16}" y="{bottom + 44}">{SYSTEM_NAMES[system].split(" (")[0]}</text>')
    if scaling:
        sx, sw = left + panel_w + 60, 200
        peak = max(v for _, v in scaling) * 1.15
        parts.append(f'<text x="{sx}" y="{top - 8}" font-weight="bold">get-by-id through nginx</text>')
        parts.append(f'<line x1="{sx}" x2="{sx}" y1="{top}" y2="{bottom}" stroke="#4a5568"/>')
        parts.append(f'<line x1="{sx}" x2="{sx + sw}" y1="{bottom}" y2="{bottom}" stroke="#4a5568"/>')
        points = []
        for index, (instances, rps) in enumerate(scaling):
            px = sx + 20 + index * (sw - 40) / max(1, len(scaling) - 1)
            py = bottom - rps / peak * (bottom - top)
            points.append(f"{px:.1f},{py:.1f}")
            parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4" fill="{COLOURS["ours"]}"/>')
            parts.append(f'<text x="{px:.1f}" y="{py - 8:.1f}" text-anchor="middle">{rps:,.0f}</text>')
            parts.append(f'<text x="{px:.1f}" y="{bottom + 16}" text-anchor="middle">{instances}</text>')
        parts.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="{COLOURS["ours"]}" stroke-width="2"/>')
        parts.append(f'<text x="{sx + sw / 2}" y="{bottom + 32}" text-anchor="middle">instances (req/s)</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- files

def merge(previous, records, date):
    """A one-scenario run replaces its own records and keeps the others."""
    for r in records:
        r.setdefault("date", date)
    keys = {(r["scenario"], r["system"]) for r in records}
    return [r for r in previous if (r["scenario"], r["system"]) not in keys] + records


def write(records, facts, notes, docs, scenario):
    docs.mkdir(parents=True, exist_ok=True)
    json_path = docs / "benchmarks.json"
    date = facts.get("date")
    for r in records:
        r["date"] = date
        r["mode"] = facts.get("mode")
    if scenario != "all" and json_path.exists():
        try:
            records = merge(json.loads(json_path.read_text()), records, date)
        except ValueError:
            pass
    ordered = [{**{k: r.get(k) for k in RECORD_KEYS}, **{k: v for k, v in r.items() if k not in RECORD_KEYS}} for r in records]
    json_path.write_text(json.dumps(ordered, indent=1) + "\n")
    (docs / "benchmarks.svg").write_text(svg_chart(records))
    (docs / "benchmarks.md").write_text(markdown(records, facts, notes, scenario))


FLAME_GRAPHS = Path(__file__).resolve().parent.parent / "docs" / "images"


def markdown_flame_graphs():
    """Where a cached get-by-id's CPU goes, before and after the request-path work (bench/flamegraph.sh)."""
    if not all((FLAME_GRAPHS / f"flame-{when}.svg").exists() for when in ("before", "after")):
        return ""
    return "\n".join([
        "## Where a cached get-by-id's CPU goes",
        "",
        "`bench/flamegraph.sh` (perf with DWARF stacks, rendered by inferno) on `orders up`, embedded store, cached "
        "`GET /orders/{id}` with `wrk -t1 -c16`. Guest code shows as `[perf-*.map]` (wasmtime's JIT code, no "
        "symbols); host calls made from it start there. Before: the request path as the first full run measured it "
        "(router component chained to the endpoint, default pooling allocator, hand-written metrics). After: this "
        "commit. The numbers and each change's own measurement are in docs/request-path.md.",
        "",
        "| before | after |",
        "|---|---|",
        "| ![before](images/flame-before.svg) | ![after](images/flame-after.svg) |",
        "",
    ])


def markdown(records, facts, notes, scenario):
    quick = facts.get("mode") == "quick"
    versions = facts.get("versions", {})
    settings = facts.get("settings", {})
    label = ("**Quick run (`bench/run.sh --quick`): a smoke test of the harness with small data and 2-second runs. "
             "Its numbers show that every scenario runs, not how fast the system is.**" if quick else
             "Full run (`bench/run.sh all`).")
    if scenario != "all":
        label += f" This run re-measured `{scenario}` only; other records keep the date of the run that measured them."
    lines = [
        "# Benchmarks",
        "",
        "_Written by `bench/run.sh`; do not edit by hand — rerun it._",
        "",
        label,
        "",
        f"- Date: {facts.get('date')} (took {facts.get('duration_s')} s)",
        f"- Machine: {facts.get('cores')} cores ({facts.get('cpu_model')}), {facts.get('memory_gib')} GiB memory, Linux {facts.get('kernel')}; "
        f"load average before the run {', '.join(f'{v:.2f}' for v in facts.get('load_before', []))}, after it "
        f"{', '.join(f'{v:.2f}' for v in facts.get('load_after', []))}. The machine is shared: "
        "absolute numbers drift between runs, the ratios measured within one run hold better.",
        f"- Code: commit {facts.get('commit')}",
        "- Versions: " + ", ".join(f"{k} `{v}`" for k, v in versions.items()),
        "",
        "![requests per second by scenario and system](benchmarks.svg)",
        "",
        "## How it was measured",
        "",
        f"- One SecantusDB (MongoDB wire protocol, `--sync-on-commit`) and one Redis serve every system; before each "
        f"system's runs the same {settings.get('seed_count', 0):,} orders (the product's document shape) are inserted "
        "straight into that system's own database with pymongo, and Redis is flushed.",
        "- **ours** is `orders up --mongo-uri … --redis-url …` (the runner with its sidecar in the same process, "
        "Redis as the cache). The **old service** is `bench/peers/flask/app.py` under `gunicorn -w 2 --threads 4`: "
        "its `GET /orders` returns every order and it ignores `limit`; it writes with the same write concern as ours "
        "(majority, journaled, through its `MONGO_URI`) instead of its deployment's default w:1. The **axum reference** "
        "(`bench/peers/axum-reference`) serves the same routes and shapes, with pagination, from one native "
        "process with the same driver, pool size and write concern as ours, and no cache.",
        *(["- **spin** is `spin up --from spin.toml` (the same components, unmodified) beside an `orders sidecar` on "
           "the same MongoDB + Redis. No `spin` binary installs on this machine: the one measured is Spin's own HTTP "
           "trigger and factors built from Spin's source (`minispin`; its version is in Versions above), which "
           "serves a manifest the way `spin up` does, a fresh instance per request."]
          if any(r["system"] == "spin" for r in records) else []),
        f"- Max throughput: `wrk -t2 --latency` for {settings.get('wrk_seconds')} s at "
        f"{', '.join(str(c) for c in settings.get('connections', []))} connections; the best run with no errors is "
        "kept (p99.9 from a `done()` hook, bench/wrk/*.lua). Cache warm: every seeded id read once first; cache cold: "
        "ours restarted with a 1 s cache TTL and the ids walked in order, so no id repeats within a pass "
        "(the measured hit ratio is shown). `get-by-id-half-max` paces wrk at half the best get-by-id rate.",
        f"- User model (`bench/users.py`, asyncio streams + uvloop, {settings.get('user_processes')} processes): each user "
        "has its own connection and loops GET /orders, wait 1–3 s, POST /orders, wait 1–3 s. `mixed`: "
        f"{settings.get('mixed', {}).get('users', 0):,} users started at {settings.get('mixed', {}).get('spawn_rate')}/s, "
        f"{settings.get('mixed', {}).get('duration')} s. Peak concurrency: users start at 25/50/100 per s for "
        f"{settings.get('peak_seconds')} s; the result is the number of users running in the last whole second before "
        "the first failure (a status outside 2xx, an error, or no answer in 10 s). Ours runs as `orders cluster "
        "--instances 2 --max-connections 12288` (nginx + 2 runners + 1 sidecar) for it; nginx has 2 workers of "
        "16,384 connections each (a busy user holds two), the generator raises its own open-files limit, and the "
        "`-to-10k` run ramps on at 100 users/s to 10,000 (docs/capacity.md, \"Room for 10,000 users\").",
        "- Scaling: `orders cluster --instances 1, 2, 4`, get-by-id with wrk through nginx.",
        f"- On a budget: `orders up` pinned to CPU 0 (`taskset -c 0`), the generator pinned to CPU 1, "
        f"{settings.get('budget_rpm', 0):,} requests/minute of the user model (2.04 users per req/s) held for "
        f"{settings.get('budget_seconds')} s; with MongoDB + Redis (both unpinned) and, in full runs, with the "
        "embedded store (all on the one core).",
        "- CPU shares in the notes are CPU time over wall time from /proc (100% = one core); wrk and the database "
        "share the same two cores as the system under test. CPU-µs/request is the system's own CPU time divided by "
        "the requests it answered.",
        "- Access control's cost: two `orders up` over copies of the embedded store, one with `--auth off`, "
        "cached get-by-id loaded in turn (rounds of each at the connection count of the keyed run's best), "
        "the medians compared.",
        markdown_baseline(facts),
        "",
        "## Targets",
        "",
        targets(records, facts),
        "",
        markdown_flame_graphs(),
        "## Every number",
        "",
        markdown_results(records),
        "",
        "## Ours against each peer (ratio of requests per second)",
        "",
        markdown_ratios(records),
        "",
        "## What the product's counters say",
        "",
        markdown_explain(records),
        "",
        "## Peak concurrency (user model)",
        "",
        markdown_peak(records),
        "",
        "## Locust cross-check (users.py beside Locust)",
        "",
        markdown_locust(records),
        "",
        "## Cost of the architecture",
        "",
        markdown_costs(records),
        "",
    ]
    if notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    lines += ["Raw records, with CPU shares and connection sweeps: [benchmarks.json](benchmarks.json).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python3 bench/report.py RUN_DIR/result.json   (writes docs/benchmarks.* again)")
    saved = json.loads(Path(sys.argv[1]).read_text())
    docs = Path(__file__).resolve().parent.parent / "docs"
    write(saved["records"], saved["facts"], saved["notes"], docs, saved["scenario"])
    print(table(saved["records"]))
