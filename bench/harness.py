#!/usr/bin/env python3
"""The benchmark runs behind bench/run.sh: starts SecantusDB, Redis and each
system in turn on loopback ports, seeds the same orders into each, drives the
scenarios with wrk (max throughput) and users.py (the Locust user model),
reads the processes' own counters, stops everything by PID, and writes
docs/benchmarks.json + docs/benchmarks.md + docs/benchmarks.svg.

Every process it starts is listed in --pidfile while it runs, so that
run.sh's EXIT trap can stop whatever a crash of this script leaves behind.
"""

import argparse
import concurrent.futures
import csv
import datetime
import http.client
import importlib.metadata
import json
import math
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import report

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# What `bench/run.sh SCENARIO` accepts; `all` runs every one.
SCENARIOS = ("get-by-id", "get-by-id-cold", "list", "create", "update", "half-rate", "mixed", "peak", "scaling",
             "budget", "costs", "embedded", "peak-10k", "locust-cross-check")
# Run on their own only: `peak-10k` is the last ramp of `peak` alone, and
# the Locust cross-check (about 5 minutes) checks the generator, not the system.
NOT_IN_ALL = ("peak-10k", "locust-cross-check")
# Rounds of each side when the key check's cost is measured (see measure_auth_cost).
AUTH_ROUNDS = 3


# --------------------------------------------------------------------------- settings

class Settings:
    def __init__(self, quick):
        self.quick = quick
        self.seed_count = 1_000 if quick else 10_000
        self.wrk_seconds = 2 if quick else 15
        self.warmup_seconds = 1 if quick else 3
        self.connections = [32] if quick else [32, 128]
        self.wrk_threads = 2
        # Below the database's saturation, so that the systems' latencies compare;
        # the peak runs find where each one breaks.
        self.mixed = dict(users=100, spawn_rate=50, duration=6) if quick else dict(users=200, spawn_rate=50, duration=60)
        self.peak_rates = [100] if quick else [25, 50, 100]
        self.peak_systems = ("ours",) if quick else ("ours", "axum", "flask")
        self.peak_seconds = 8 if quick else 60
        # The target (10,000 users at spawn rate 100) cannot be reached in 60 s
        # (100 x 60 = 6,000), so the full run also ramps on to 10,000 users.
        self.peak_extended_users = None if quick else 10_000
        # Locust itself against users.py, same users, spawn rate and duration,
        # at loads one Locust process (one core) can generate here.
        self.locust_users = [50] if quick else [200, 500]
        self.locust_spawn_rate = 50
        self.locust_seconds = 8 if quick else 60
        self.budget_rpm = 40_000
        self.budget_seconds = 30 if quick else 300
        self.scaling_instances = [1, 2, 4]
        self.user_processes = 2


# --------------------------------------------------------------------------- processes

class Pids:
    """The PIDs this run has alive, mirrored to a file for run.sh's trap."""

    def __init__(self, path):
        self.path = Path(path)
        self.alive = {}
        self.lock = threading.Lock()
        self._write()

    def add(self, pid, name):
        with self.lock:
            self.alive[pid] = name
            self._write()

    def remove(self, pid):
        with self.lock:
            self.alive.pop(pid, None)
            self._write()

    def _write(self):
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(f"{pid} {name}\n" for pid, name in self.alive.items()))
        tmp.replace(self.path)


PIDS = None
LOG_DIR = None
SERVICES = []


class Service:
    """A long-running process: started, waited for, stopped by its PID."""

    started = 0  # numbers the log files, one per start

    def __init__(self, name, argv, log_dir, env=None, ready=None, ready_timeout=120.0, cwd=None):
        self.name, self.argv, self.env, self.cwd = name, argv, env, cwd
        self.ready_pattern = re.compile(ready) if ready else None
        self.ready_timeout = ready_timeout
        Service.started += 1
        self.log_path = Path(log_dir) / f"{Service.started:02d}-{name}.log"
        self.process = None
        self.started_at = None
        self.match = None

    def start(self):
        log = open(self.log_path, "ab")
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=self.env, cwd=self.cwd)
        log.close()
        PIDS.add(self.process.pid, self.name)
        SERVICES.append(self)
        if self.ready_pattern:
            self.match = self.wait_for_log(self.ready_pattern, self.ready_timeout)
        return self

    def wait_for_log(self, pattern, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            match = pattern.search(text)
            if match:
                return match
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.process.returncode}) during start:\n{tail(self.log_path)}")
            time.sleep(0.02)
        raise RuntimeError(f"{self.name} did not print {pattern.pattern!r} within {timeout:.0f} s:\n{tail(self.log_path)}")

    @property
    def pid(self):
        return self.process.pid

    def stop(self, grace=15.0):
        if self.process is None or self.process.returncode is not None:
            return
        # The processes it started too: gunicorn's workers outlived a master
        # killed after the grace, orphaned and still busy, and took CPU from
        # every phase after (found in the full run of 2026-12-07 15:11).
        started_by_it = [pid for pid in process_tree(self.process.pid) if pid != self.process.pid]
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        for pid in started_by_it:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        PIDS.remove(self.process.pid)
        if self in SERVICES:
            SERVICES.remove(self)


def nginx_trouble(error_log):
    """How often nginx took an instance out, or had none left (it turns those into 502)."""
    try:
        text = Path(error_log).read_text(errors="replace")
    except OSError:
        return None
    return {"upstream_disabled": text.count("upstream server temporarily disabled"),
            "no_live_upstreams": text.count("no live upstreams"),
            "worker_connections_exhausted": text.count("worker_connections are not enough")}


def reuse_compiled(source_dir, data_dir):
    """Copies components compiled by an earlier start, so a start is a warm start."""
    data_dir.mkdir(parents=True, exist_ok=True)
    compiled = source_dir / "compiled"
    if compiled.is_dir() and not (data_dir / "compiled").exists():
        shutil.copytree(compiled, data_dir / "compiled")


def stop_everything():
    for service in reversed(list(SERVICES)):
        try:
            service.stop()
        except Exception as error:  # keep stopping the others
            print(f"could not stop {service.name}: {error}", file=sys.stderr)


def tail(path, lines=30):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORDERS_", "SPIN_VARIABLE_", "MONGO_"))}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def package_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_bounded(name, argv, timeout, env=None):
    """Runs a load generator to completion; returns (stdout, wall seconds, CPU % of one core it used)."""
    cpu_before = children_cpu()
    started = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
    PIDS.add(process.pid, name)
    killer = threading.Timer(timeout, lambda: process.poll() is None and process.kill())
    killer.start()
    try:
        out, err = process.communicate()
    finally:
        killer.cancel()
        PIDS.remove(process.pid)
    wall = time.monotonic() - started
    if err.strip() and LOG_DIR:
        Service.started += 1
        (LOG_DIR / f"{Service.started:02d}-{name}.stderr").write_bytes(err)
    if process.returncode != 0:
        raise RuntimeError(f"{name} failed ({process.returncode}): {err.decode(errors='replace')[-2000:]}")
    return out.decode(errors="replace"), wall, round(100.0 * (children_cpu() - cpu_before) / wall, 1)


# --------------------------------------------------------------------------- /proc

def cpu_us_per_request(result):
    """The system's CPU time over a watched wrk run, per request served."""
    system_cpu = result["cpu_percent"].get("system")
    return round(system_cpu / 100.0 / result["rps"] * 1e6) if system_cpu and result["rps"] else None


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def children_of():
    tree = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            tree.setdefault(ppid, []).append(int(entry))
    return tree


def process_tree(root):
    tree, found, queue = children_of(), [], [root]
    while queue:
        pid = queue.pop()
        found.append(pid)
        queue.extend(tree.get(pid, []))
    return found


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError):
            pass
    return total / CLOCK_TICKS


def vm_kib(pid, field="VmHWM"):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kib(pid):
    """Proportional set size: each page counted once however many mappings share it.
    VmRSS counts a page once per mapping, and every pooling slot maps the
    pages of its component's memory image it read, so RSS counts those
    shared, clean pages once per slot."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class PssWatch:
    """The largest PSS each process reached while a run went on (sampled twice a second)."""

    peaks = {}

    def __init__(self, pids):
        self.pids = list(pids)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self):
        while True:
            for pid in self.pids:
                PssWatch.peaks[pid] = max(PssWatch.peaks.get(pid, 0), pss_kib(pid))
            if self.stop.wait(0.5):
                return

    def done(self):
        self.stop.set()
        self.thread.join()

    @staticmethod
    def peak_mib(pids):
        return round(sum(PssWatch.peaks.get(pid, 0) for pid in pids) / 1024, 1)


class CpuWatch:
    """CPU seconds used by named groups of processes over one run."""

    def __init__(self, groups):
        self.groups = {name: list(pids) for name, pids in groups.items() if pids}
        self.before = {name: cpu_seconds(pids) for name, pids in self.groups.items()}
        self.started = time.monotonic()

    def shares(self):
        wall = max(1e-6, time.monotonic() - self.started)
        return {name: round(100.0 * (cpu_seconds(pids) - self.before[name]) / wall, 1) for name, pids in self.groups.items()}


# --------------------------------------------------------------------------- HTTP and metrics

def auth_headers():
    """The API key of the system under test (ORDERS_API_KEY, set by start_system; the peers ignore it)."""
    key = os.environ.get("ORDERS_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def http_get(base, path, timeout=5.0):
    host, port = base.replace("http://", "").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request("GET", path, headers=auth_headers())
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_for_200(base, path, timeout=120.0, process=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, _ = http_get(base, path, timeout=2.0)
            if status == 200:
                return time.monotonic()
        except OSError:
            pass
        if process is not None and process.poll() is not None:
            raise RuntimeError("the process exited before answering")
        time.sleep(0.01)
    raise RuntimeError(f"{base}{path} did not answer 200 within {timeout:.0f} s")


def warm_reads(base, ids, concurrency=16):
    """Reads every seeded id once so that the product's cache holds them."""
    host, port = base.replace("http://", "").split(":")
    chunks = [ids[i::concurrency] for i in range(concurrency)]

    def read_all(chunk):
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        failures = 0
        for order_id in chunk:
            try:
                connection.request("GET", f"/orders/{order_id}", headers=auth_headers())
                response = connection.getresponse()
                response.read()
                failures += response.status != 200
            except (OSError, http.client.HTTPException):
                failures += 1
                connection.close()
                connection = http.client.HTTPConnection(host, int(port), timeout=10)
        connection.close()
        return failures

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        return sum(pool.map(read_all, chunks))


def parse_metrics(text):
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$", line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        try:
            samples.append((match.group(1), labels, float(match.group(3))))
        except ValueError:
            pass
    return samples


def histogram(samples, name, **where):
    """Buckets (le -> cumulative count), summed over the label sets that match `where`."""
    buckets, total, count = {}, 0.0, 0.0
    for sample_name, labels, value in samples:
        if any(labels.get(k) != v for k, v in where.items()):
            continue
        if sample_name == name + "_bucket":
            le = math.inf if labels["le"] == "+Inf" else float(labels["le"])
            buckets[le] = buckets.get(le, 0.0) + value
        elif sample_name == name + "_sum":
            total += value
        elif sample_name == name + "_count":
            count += value
    return sorted(buckets.items()), total, count


def histogram_quantile(buckets, q):
    """Prometheus-style estimate: linear within the bucket that holds quantile q."""
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(bound):
                return lower_bound
            span = cumulative - lower_count
            return lower_bound + (bound - lower_bound) * ((rank - lower_count) / span if span else 1.0)
        lower_bound, lower_count = bound, cumulative
    return None


def metrics_samples(base):
    try:
        status, body = http_get(base, "/metrics")
    except OSError:
        return []
    return parse_metrics(body.decode(errors="replace")) if status == 200 else []


def subtract(after, before):
    """Counters and histograms of `after` minus those of `before` (gauges kept as they are)."""
    earlier = {(name, tuple(sorted(labels.items()))): value for name, labels, value in before or []}
    result = []
    for name, labels, value in after:
        if name.startswith("process_"):
            result.append((name, labels, value))
        else:
            result.append((name, labels, value - earlier.get((name, tuple(sorted(labels.items()))), 0.0)))
    return result


def summarize_metrics(samples):
    def summary(name, **where):
        buckets, total, count = histogram(samples, name, **where)
        if not count:
            return None
        return {"count": int(count), "mean_us": round(1e6 * total / count, 1),
                "p50_us": round(1e6 * (histogram_quantile(buckets, 0.5) or 0), 1),
                "p99_us": round(1e6 * (histogram_quantile(buckets, 0.99) or 0), 1)}

    def label_values(name, label):
        return sorted({labels[label] for sample, labels, _ in samples if sample == name + "_count" and label in labels})

    cache = {labels.get("result"): value for name, labels, value in samples if name == "orders_cache_requests_total" and value}
    result = {
        "instantiation": summary("orders_component_instantiation_seconds"),
        "instantiation_by_function": {fn: summary("orders_component_instantiation_seconds", function=fn)
                                      for fn in label_values("orders_component_instantiation_seconds", "function")},
        "outbound_to_sidecar": summary("orders_outbound_request_duration_seconds", destination="sidecar"),
        "sidecar_operation": summary("orders_sidecar_operation_duration_seconds"),
        "sidecar_by_operation": {op: summary("orders_sidecar_operation_duration_seconds", operation=op)
                                 for op in label_values("orders_sidecar_operation_duration_seconds", "operation")},
        "store_operation": summary("orders_store_operation_duration_seconds"),
        "store_by_operation": {op: summary("orders_store_operation_duration_seconds", operation=op)
                               for op in label_values("orders_store_operation_duration_seconds", "operation")},
        "http_request": summary("orders_http_request_duration_seconds"),
        "cache": cache,
    }
    result = {k: v for k, v in result.items() if v}
    for name, labels, value in samples:
        if name == "process_resident_memory_peak_bytes":
            result["peak_rss_mib"] = round(value / 2**20, 1)
    return result


def metrics_summary(base, before=None):
    samples = metrics_samples(base)
    return summarize_metrics(subtract(samples, before) if before is not None else samples)


class MetricsWatch:
    """The product's own counters over one run, from every process that exports them."""

    def __init__(self, urls):
        self.urls = list(urls or [])
        self.before = {url: metrics_samples(url) for url in self.urls}

    def summary(self):
        merged = []
        for url in self.urls:
            merged += subtract(metrics_samples(url), self.before[url])
        if not merged:
            return {}
        summary = summarize_metrics(merged)
        summary.pop("peak_rss_mib", None)
        keep = ("instantiation", "outbound_to_sidecar", "sidecar_by_operation", "store_by_operation", "cache")
        return {k: v for k, v in summary.items() if k in keep}


# --------------------------------------------------------------------------- data

PRODUCTS = ["Spring sale banner 728x90", "Product photo pack (12 images)", "Newsletter header", "Instagram story set",
            "Landing page hero image", "Facebook carousel (5 cards)", "YouTube thumbnail", "Brand style guide PDF"]
FIRST = ["Ada", "Grace", "Alan", "Linus", "Margaret", "Dennis", "Barbara", "Ken"]
LAST = ["Lovelace", "Hopper", "Turing", "Torvalds", "Hamilton", "Ritchie", "Liskov", "Thompson"]
STREETS = ["Main St", "Market St", "Elm Avenue", "Harbour Road", "Rue de la Paix", "Calle Mayor"]
CITIES = ["Springfield", "Lyon", "Madrid", "Berlin", "Toronto", "Osaka"]


class Mongo:
    def __init__(self, port):
        import pymongo
        self.port = port
        self.uri = f"mongodb://127.0.0.1:{port}"
        self.client = pymongo.MongoClient(self.uri, directConnection=True, serverSelectionTimeoutMS=5000)

    def seed(self, database, count, id_file):
        """The same N orders, in the product's document shape, straight into `database`."""
        from bson import Int64, ObjectId
        try:
            self.client.drop_database(database)
        except Exception:
            self.client[database].drop_collection("orders")
        collection = self.client[database]["orders"]
        rng = random.Random(20240601)
        ids = []
        batch = []
        base = datetime.datetime(2024, 6, 1, tzinfo=datetime.timezone.utc)
        for index in range(count):
            order_id = ObjectId()
            stamp = (base + datetime.timedelta(seconds=index * 37)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
            batch.append({
                "_id": order_id,
                "product": rng.choice(PRODUCTS),
                "quantity": rng.randint(1, 500),
                "customer_name": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
                "customer_address": f"{rng.randint(1, 999)} {rng.choice(STREETS)}, {rng.choice(CITIES)} {rng.randint(1000, 99999):05d}",
                "created_at": stamp,
                "updated_at": stamp,
                "version": Int64(1),
            })
            ids.append(str(order_id))
            if len(batch) == 1000:
                collection.insert_many(batch, ordered=False)
                batch = []
        if batch:
            collection.insert_many(batch, ordered=False)
        Path(id_file).write_text("\n".join(ids) + "\n")
        return ids

    def baseline(self, count, seconds):
        """What the database alone does from Python, with the product's write concern: the floor under every system."""
        from pymongo.write_concern import WriteConcern
        def timed(operation, repeat):
            started = time.perf_counter()
            for index in range(repeat):
                operation(index)
            return round((time.perf_counter() - started) / repeat * 1000, 3)

        orders = self.client["bench_baseline"].get_collection("orders", write_concern=WriteConcern(w="majority", j=True))
        # The first page at two sizes shows whether the server walks the
        # _id index or scans and sorts the collection.
        small = min(1000, count)
        self.seed("bench_baseline", small, "/dev/null")
        page_small = timed(lambda i: list(orders.find({}).sort("_id", 1).limit(100)), 20)
        self.seed("bench_baseline", count, "/dev/null")
        ids = [doc["_id"] for doc in orders.find({}, {"_id": 1}).limit(1000)]
        result = {
            "first_page_of_100_ms_small": page_small,
            "small_documents": small,
            "insert_ms": timed(lambda i: orders.insert_one({"product": "baseline", "quantity": i}), 100),
            "find_by_id_ms": timed(lambda i: orders.find_one({"_id": ids[i % len(ids)]}), 300),
            "first_page_of_100_ms": timed(lambda i: list(orders.find({}).sort("_id", 1).limit(100)), 20),
        }
        deadline = time.monotonic() + seconds

        def insert_until_deadline(_):
            done = 0
            while time.monotonic() < deadline:
                orders.insert_one({"product": "baseline", "quantity": done})
                done += 1
            return done

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            inserted = sum(pool.map(insert_until_deadline, range(16)))
        result["inserts_per_s_16_threads"] = round(inserted / seconds)
        # The old service's write concern (the driver's default, w:1).
        orders = self.client["bench_baseline"].get_collection("orders", write_concern=WriteConcern(w=1))
        deadline = time.monotonic() + seconds
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            inserted = sum(pool.map(insert_until_deadline, range(16)))
        result["inserts_per_s_16_threads_w1"] = round(inserted / seconds)
        result["update_one_ms"] = timed(lambda i: orders.update_one({"_id": ids[i % len(ids)]}, {"$set": {"quantity": i}}), 100)
        result["find_one_and_update_ms"] = timed(
            lambda i: orders.find_one_and_update({"_id": ids[i % len(ids)]}, {"$set": {"quantity": i}, "$inc": {"version": 1}}), 100)
        result["documents"] = count
        self.client.drop_database("bench_baseline")
        return result


def flush_redis(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"*1\r\n$8\r\nFLUSHALL\r\n")
        sock.recv(64)


# --------------------------------------------------------------------------- the systems

class Bench:
    def __init__(self, args):
        self.args = args
        self.settings = Settings(args.quick)
        self.run_dir = Path(args.run_dir)
        self.records = []
        self.notes = []
        self.failed_phases = []
        self.facts = {}
        self.orders_bin = Path(args.orders_bin)
        self.axum_bin = Path(args.axum_bin)
        self.venv = Path(args.venv)
        self.mongo = None
        self.redis_port = None
        self.spin = shutil.which("spin")
        self.metrics_urls = []
        self.probe_id = "0" * 24

    # ---- infrastructure

    def start_stores(self):
        storage = self.run_dir / "secantus"
        storage.mkdir(parents=True, exist_ok=True)
        config = self.run_dir / "secantusd.toml"
        config.write_text("# empty: no auto-discovered configuration\n")
        secantus = Service("secantusd", [self.args.secantus, "--config", str(config), "--host", "127.0.0.1", "--port", "0",
                                         "--storage-path", str(storage), "--sync-on-commit", "--log-file-max", "16MB",
                                         "--log-level", "WARNING"],
                           self.run_dir, ready=r"listening on 127\.0\.0\.1:(\d+)", ready_timeout=60).start()
        self.secantus = secantus
        self.mongo = Mongo(int(secantus.match.group(1)))
        self.mongo.client.admin.command("ping")
        self.redis_port = free_port()
        self.redis = Service("redis", ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                                       "--save", "", "--appendonly", "no", "--dir", str(self.run_dir)],
                             self.run_dir, ready=r"Ready to accept connections").start()

    def store_pids(self):
        return {"mongodb": [self.secantus.pid], "redis": [self.redis.pid]}

    # ---- one system

    def seed(self, system, tag=""):
        database = f"bench_{system}{tag}"
        id_file = self.run_dir / f"ids-{database}.txt"
        started = time.monotonic()
        ids = self.mongo.seed(database, self.settings.seed_count, id_file)
        flush_redis(self.redis_port)
        print(f"  seeded {len(ids)} orders into {database} in {time.monotonic() - started:.1f} s", flush=True)
        return database, ids, id_file

    def start_system(self, system, database, ids, cache_ttl=None, instances=None, pin=None, data_dir=None):
        """Starts one system; returns (services, base URL, pids to watch, seconds to first 200)."""
        mongo_uri = self.mongo.uri
        redis_url = f"redis://127.0.0.1:{self.redis_port}"
        log_dir = self.run_dir
        taskset = ["taskset", "-c", str(pin)] if pin is not None else []
        services = []
        if system == "ours" and instances:
            port = free_port()
            data_dir = self.run_dir / f"cluster-{instances}"
            reuse_compiled(self.run_dir / "ours-data", data_dir)
            # One nginx error log per start, so that it speaks of this run only.
            (data_dir / "nginx" / "error.log").unlink(missing_ok=True)
            # Each instance may hold every user's request (when nginx has taken
            # the other out), plus nginx's idle upstream connections: 10,000 +
            # 2 workers x 384, rounded up. The runner raises its open-files
            # limit to this + 1,024, within the hard limit of 20,000 here.
            argv = [str(self.orders_bin), "cluster", "--instances", str(instances), "--listen", f"127.0.0.1:{port}",
                    "--data-dir", str(data_dir), "--manifest", str(ROOT / "spin.toml"), "--no-build",
                    "--mongo-uri", mongo_uri, "--mongo-database", database, "--redis-url", redis_url,
                    "--max-connections", "12288"]
            service = Service(f"ours-cluster-{instances}", taskset + argv, log_dir, env=clean_env(ORDERS_LOG="warn"),
                              ready=r"orders cluster is serving on (http://\S+)", ready_timeout=180)
        elif system in ("ours", "ours-embedded"):
            data_dir = data_dir or (self.run_dir / "ours-data")
            argv = [str(self.orders_bin), "up", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir),
                    "--manifest", str(ROOT / "spin.toml"), "--no-build"]
            if system == "ours":
                argv += ["--mongo-uri", mongo_uri, "--mongo-database", database, "--redis-url", redis_url]
            if cache_ttl:
                argv += ["--cache-ttl-secs", str(cache_ttl)]
            service = Service(system, taskset + argv, log_dir, env=clean_env(ORDERS_LOG="warn"),
                              ready=r"orders is serving on (http://\S+)", ready_timeout=180)
        elif system == "axum":
            service = Service("axum", taskset + [str(self.axum_bin)], log_dir,
                              env=clean_env(MONGO_URI=mongo_uri, MONGO_DATABASE=database, LISTEN="127.0.0.1:0"),
                              ready=r"listening on (http://\S+)")
        elif system == "flask":
            port = free_port()
            argv = [str(self.venv / "bin" / "gunicorn"), "-w", "2", "--threads", "4", "-b", f"127.0.0.1:{port}",
                    "--chdir", str(BENCH / "peers" / "flask"), "--log-level", "warning", "app:app"]
            # The same write concern as ours and the axum reference (majority,
            # journaled), so that creates and updates compare like for like;
            # the old deployment used the driver's default (w:1), whose cost
            # the store baseline measures separately.
            service = Service("flask", taskset + argv, log_dir,
                              env=clean_env(MONGO_URI=f"{mongo_uri}/{database}?directConnection=true&w=majority&journal=true"))
            service.base = f"http://127.0.0.1:{port}"
        elif system == "spin":
            token = "bench-" + os.urandom(12).hex()
            sidecar_port, spin_port = free_port(), free_port()
            sidecar = Service("spin-sidecar", taskset + [str(self.orders_bin), "sidecar", "--listen", f"127.0.0.1:{sidecar_port}",
                                                         "--data-dir", str(self.run_dir / "spin-data"),
                                                         "--mongo-uri", mongo_uri, "--mongo-database", database,
                                                         "--redis-url", redis_url]
                              + (["--cache-ttl-secs", str(cache_ttl)] if cache_ttl else []),
                              log_dir, env=clean_env(ORDERS_LOG="warn", ORDERS_SIDECAR_TOKEN=token),
                              ready=r"listening on (http://\S+)").start()
            services.append(sidecar)
            service = Service("spin", taskset + [self.spin, "up", "--listen", f"127.0.0.1:{spin_port}", "--from", str(ROOT / "spin.toml")],
                              log_dir, env=clean_env(SPIN_VARIABLE_SIDECAR_TOKEN=token,
                                                     SPIN_VARIABLE_SIDECAR_URL=f"http://127.0.0.1:{sidecar_port}",
                                                     # Required by the manifest; Spin refuses to start without it.
                                                     SPIN_VARIABLE_DOWNLOAD_SECRET="bench-" + os.urandom(16).hex()),
                              cwd=str(self.run_dir))
            service.base = f"http://127.0.0.1:{spin_port}"
        else:
            raise ValueError(system)
        service.start()
        services.append(service)
        # Our systems need an API key (issue 12); wrk, users.py and the probes send it.
        os.environ.pop("ORDERS_API_KEY", None)
        if system in ("ours", "ours-embedded", "spin"):
            store = ["--data-dir", str(data_dir if system != "spin" else self.run_dir / "spin-data")]
            if system != "ours-embedded":
                store += ["--mongo-uri", mongo_uri, "--mongo-database", database]
            os.environ["ORDERS_API_KEY"] = self.create_key(store)
        base = service.match.group(1) if service.match else service.base
        self.probe_id = ids[0]
        first_200 = wait_for_200(base, f"/orders/{ids[0]}", timeout=60, process=service.process)
        ready_s = first_200 - service.started_at
        # Where the product's own counters are (the peers have none).
        if system in ("ours", "ours-embedded") and instances:
            listing = json.loads((data_dir / "cluster.json").read_text())
            self.metrics_urls = ["http://" + e["address"] for e in listing if e["role"] in ("instance", "sidecar")]
        elif system in ("ours", "ours-embedded"):
            self.metrics_urls = [base]
        elif system == "spin":
            self.metrics_urls = [services[0].match.group(1)]
        else:
            self.metrics_urls = []
        pids = []
        for svc in services:
            pids.extend(process_tree(svc.pid))
        return services, base, sorted(set(pids)), ready_s

    def create_key(self, store_args):
        """An admin key in the store of the system just started (`orders keys create`, last line)."""
        name = "bench-" + os.urandom(4).hex()
        out = subprocess.run([str(self.orders_bin), "keys", "create", "--name", name, "--scopes", "admin"] + store_args,
                             check=True, capture_output=True, text=True, env=clean_env(ORDERS_LOG="warn"), timeout=60).stdout
        return out.strip().splitlines()[-1]

    def stop_services(self, services):
        for service in reversed(services):
            service.stop()

    # ---- load generators

    def wrk(self, base, script, id_file, connections, seconds, rate=None, cold_stride=None):
        threads = min(self.settings.wrk_threads, connections)
        argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", "5s", "--latency",
                "-s", str(BENCH / "wrk" / f"{script}.lua"), base, "--", str(id_file)]
        if rate:
            argv += [str(rate), str(threads)]
        elif cold_stride:
            argv += ["0", str(threads)]
        out, _, cpu = run_bounded("wrk", argv, timeout=seconds + 60)
        self.settle(base)
        line = next((l for l in out.splitlines() if l.startswith("WRK_RESULT ")), None)
        if not line:
            raise RuntimeError(f"wrk printed no result:\n{out[-2000:]}")
        result = json.loads(line[len("WRK_RESULT "):])
        result["errors_total"] = sum(result["errors"].values())
        result["wrk_cpu_percent"] = cpu
        return result

    def settle(self, base, limit=30.0):
        """Waits until the system answers promptly again: requests queued by
        one run (the old service's unbounded lists) must not count against the next."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                http_get(base, f"/orders/{self.probe_id}", timeout=5.0)
                if time.monotonic() - started < 0.1:
                    return
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.2)

    def users(self, base, extra, timeout, pin=None, processes=None):
        argv = (["taskset", "-c", str(pin)] if pin is not None else []) + [
            str(self.venv / "bin" / "python"), str(BENCH / "users.py"), "--url", base,
            "--processes", str(processes or self.settings.user_processes)] + [str(a) for a in extra]
        out, _, cpu = run_bounded("users", argv, timeout=timeout)
        line = next((l for l in out.splitlines() if l.startswith("USERS_RESULT ")), None)
        if not line:
            raise RuntimeError(f"users.py printed no result:\n{out[-2000:]}")
        result = json.loads(line[len("USERS_RESULT "):])
        result["generator_total_cpu_percent"] = cpu
        return result

    def record(self, scenario, system, rps=None, p50_ms=None, p99_ms=None, p999_ms=None, errors=0, peak_rss_mib=None, **extra):
        entry = {"scenario": scenario, "system": system, "rps": rps, "p50_ms": p50_ms, "p99_ms": p99_ms,
                 "p999_ms": p999_ms, "errors": errors, "peak_rss_mib": peak_rss_mib}
        entry.update({k: v for k, v in extra.items() if v is not None})
        self.records.append(entry)
        shown = {k: v for k, v in entry.items() if v is not None and k not in ("scenario", "system")}
        print(f"  {scenario:<28} {system:<6} {json.dumps(shown)[:300]}", flush=True)
        return entry

    def peak_rss(self, pids):
        return round(sum(vm_kib(pid) for pid in pids) / 1024, 1)

    def watched_wrk(self, base, script, id_file, connections, pids, cold_stride=None):
        """One wrk run, with the CPU of the system (and the stores) and the product's metrics over it."""
        watch = CpuWatch({"system": pids, **self.store_pids()})
        product = MetricsWatch(self.metrics_urls)
        memory = PssWatch(pids)
        result = self.wrk(base, script, id_file, connections, self.settings.wrk_seconds, cold_stride=cold_stride)
        memory.done()
        result["connections"] = connections
        result["cpu_percent"] = {**watch.shares(), "wrk": result["wrk_cpu_percent"]}
        result["product_metrics"] = product.summary()
        return result

    def max_throughput(self, system, scenario, base, id_file, pids, script=None, extra=None):
        """wrk at each connection count; the best with no errors (or the fewest errors)."""
        best = None
        runs = []
        for connections in self.settings.connections:
            result = self.watched_wrk(base, script or scenario, id_file, connections, pids,
                                      cold_stride=(scenario == "get-by-id-cold"))
            # Mostly error statuses (401, 404, 422…) is a harness that talks to
            # the system wrongly, not a measurement: the phase fails.
            if result["errors"]["status"] * 2 > max(1, result["requests"]):
                raise RuntimeError(f"{scenario} ({system}): {result['errors']['status']} of {result['requests']} "
                                   "answers had an error status; check the key and the request the script sends")
            runs.append(result)
            key = (result["errors_total"] == 0, result["rps"] if result["errors_total"] == 0 else -result["errors_total"])
            if best is None or key > best[0]:
                best = (key, result)
        result = best[1]
        if result["wrk_cpu_percent"] >= 85 * min(self.settings.wrk_threads, result["connections"]):
            self.notes.append(f"{scenario} ({system}): wrk used {result['wrk_cpu_percent']:.0f}% CPU; the load "
                              "generator, not only the system, was near its limit")
        cpu_us = cpu_us_per_request(result)
        return self.record(
            scenario, system, rps=round(result["rps"], 1), p50_ms=result["p50_us"] / 1000, p99_ms=result["p99_us"] / 1000,
            p999_ms=result["p999_us"] / 1000, errors=result["errors_total"], peak_rss_mib=self.peak_rss(pids),
            peak_pss_mib=PssWatch.peak_mib(pids), connections=result["connections"], cpu_percent=result["cpu_percent"],
            product_metrics=result["product_metrics"] or None, cpu_us_per_request=cpu_us,
            sweep=[{"connections": r["connections"], "rps": round(r["rps"], 1), "errors": r["errors_total"]} for r in runs],
            **(extra or {}))

    # ---- phases

    def phase_reads_and_writes(self, system, wanted):
        s = self.settings
        database, ids, id_file = self.seed(system)
        label = system

        # Cold reads: the product restarted with a 1 s cache TTL, the ids walked so
        # that none repeats within a pass. The peers have no cache to restart.
        cached = system in ("ours", "spin")
        if cached and wanted & {"get-by-id-cold", "costs"}:
            services, base, pids, ready_s = self.start_system(system, database, ids, cache_ttl=1)
            if system == "ours":
                self.record("start-to-first-200-compiling", label, ready_s=round(ready_s, 3),
                            note="first start in a fresh data dir: components compiled, then cached")
            if "get-by-id-cold" in wanted:
                entry = self.max_throughput(label, "get-by-id-cold", base, id_file, pids)
                metrics = metrics_summary(base) if system == "ours" else {}
                if metrics.get("cache"):
                    hits, total = report.cache_hits(metrics["cache"]), sum(metrics["cache"].values())
                    entry["cache_hit_ratio"] = round(hits / total, 3) if total else None
            self.stop_services(services)

        if not wanted & {"get-by-id", "list", "create", "update", "half-rate", "costs"}:
            return
        compiled_already = cached and bool(wanted & {"get-by-id-cold", "costs"})
        services, base, pids, ready_s = self.start_system(system, database, ids)
        # Only after the start above compiled the components is this one
        # precompiled (a run of `create` alone compiles here).
        if system == "ours" and compiled_already:
            self.record("start-to-first-200", label, ready_s=round(ready_s, 3),
                        note="orders up with precompiled components, to the first 200 on GET /orders/{id}")
        if not cached and "get-by-id-cold" in wanted:
            self.wrk(base, "get-by-id", id_file, 32, s.warmup_seconds)
            self.max_throughput(label, "get-by-id-cold", base, id_file, pids)
        if cached:
            # Only the product caches; the peers read MongoDB every time.
            failures = warm_reads(base, ids)
            if failures:
                self.notes.append(f"{system}: {failures} of {len(ids)} cache warm-up reads failed")
        self.wrk(base, "get-by-id", id_file, 32, s.warmup_seconds)
        best_get = None
        for scenario in ("get-by-id", "list"):
            if scenario in wanted:
                entry = self.max_throughput(label, scenario, base, id_file, pids)
                if scenario == "get-by-id":
                    best_get = entry
        if "half-rate" in wanted and best_get and best_get["rps"]:
            rate = max(1, int(best_get["rps"] / 2))
            watch = CpuWatch({"system": pids, **self.store_pids()})
            result = self.wrk(base, "get-by-id", id_file, 32, s.wrk_seconds, rate=rate)
            self.record("get-by-id-half-max", label, rps=round(result["rps"], 1), p50_ms=result["p50_us"] / 1000,
                        p99_ms=result["p99_us"] / 1000, p999_ms=result["p999_us"] / 1000, errors=result["errors_total"],
                        peak_rss_mib=self.peak_rss(pids), target_rps=rate, connections=32,
                        cpu_percent={**watch.shares(), "wrk": result["wrk_cpu_percent"]})
        for scenario in ("update", "create"):
            if scenario in wanted:
                self.max_throughput(label, scenario, base, id_file, pids)
        if system == "ours":
            metrics = metrics_summary(base)
            self.record_costs(label, metrics, pids, "orders up (runner + in-process sidecar), after the runs above")
        else:
            self.record("peak-rss", label, peak_rss_mib=self.peak_rss(pids),
                        processes=[{"pid": pid, "peak_rss_mib": round(vm_kib(pid) / 1024, 1)} for pid in pids])
        self.stop_services(services)

    def record_costs(self, label, metrics, pids, where):
        inst = metrics.get("instantiation") or {}
        self.record("instantiation", label, p50_ms=inst.get("p50_us") and inst["p50_us"] / 1000,
                    p99_ms=inst.get("p99_us") and inst["p99_us"] / 1000, p50_us=inst.get("p50_us"), p99_us=inst.get("p99_us"),
                    mean_us=inst.get("mean_us"), count=inst.get("count"), by_function=metrics.get("instantiation_by_function"),
                    source="orders_component_instantiation_seconds (histogram; p50 interpolated within its bucket)")
        outbound, sidecar, store = metrics.get("outbound_to_sidecar") or {}, metrics.get("sidecar_operation") or {}, metrics.get("store_operation") or {}
        hop = None
        if outbound.get("mean_us") is not None and sidecar.get("mean_us") is not None:
            hop = round(outbound["mean_us"] - sidecar["mean_us"], 1)
        self.record("sidecar-hop", label, p50_ms=outbound.get("p50_us") and outbound["p50_us"] / 1000,
                    p99_ms=outbound.get("p99_us") and outbound["p99_us"] / 1000,
                    hop_overhead_mean_us=hop, outbound_to_sidecar=outbound, sidecar_operation=sidecar, store_operation=store,
                    where=where,
                    source="orders_outbound_request_duration_seconds{destination=sidecar} minus orders_sidecar_operation_duration_seconds (means)")
        self.record("peak-rss", label, peak_rss_mib=self.peak_rss(pids), peak_pss_mib=PssWatch.peak_mib(pids), where=where,
                    processes=[{"pid": pid, "peak_rss_mib": round(vm_kib(pid) / 1024, 1)} for pid in pids])

    def user_model(self, scenario, system, base, pids, args, timeout, pin=None, **fields):
        """One users.py run, recorded with who used the CPU and what the product's counters saw."""
        watch = CpuWatch({"system": pids, **self.store_pids()})
        product = MetricsWatch(self.metrics_urls)
        memory = PssWatch(pids)
        result = self.users(base, args, timeout=timeout, pin=pin)
        memory.done()
        cpu = {**watch.shares(), "generator": result["generator_total_cpu_percent"]}
        rps = result["steady_rps"] if fields.pop("steady", False) and result["steady_rps"] else result["rps"]
        return self.record(
            scenario, system, rps=rps, p50_ms=result["p50_ms"], p99_ms=result["p99_ms"], p999_ms=result["p999_ms"],
            errors=result["failures"], peak_rss_mib=self.peak_rss(pids), peak_pss_mib=PssWatch.peak_mib(pids),
            users=result["users_target"],
            spawned=result["spawned"], spawn_rate=result["spawn_rate"], seconds=result["seconds"],
            steady_rps=result["steady_rps"], peak_users=result["peak_users_ok"] if "--stop-on-failure" in args else None,
            retried=result.get("retried"), by_kind=result.get("by_kind"), first_failures=result["first_failures"],
            generator_cpu_percent=result["generator_cpu_percent"], cpu_percent=cpu,
            generator_open_files=result.get("open_files_limit"), source_addresses=result.get("source_addresses"),
            product_metrics=product.summary() or None, **fields)

    def phase_mixed(self, system):
        m = self.settings.mixed
        database, ids, _ = self.seed(system, "_mixed")
        services, base, pids, _ = self.start_system(system, database, ids)
        self.user_model("mixed", system, base, pids,
                        ["--users", m["users"], "--spawn-rate", m["spawn_rate"], "--duration", m["duration"]],
                        timeout=m["duration"] + 90)
        self.stop_services(services)

    def phase_peak(self, system, rates, seconds, users=None, scenario_suffix=""):
        instances = 2 if system == "ours" else None
        for rate in rates:
            database, ids, _ = self.seed(system, "_peak")
            services, base, pids, _ = self.start_system(system, database, ids, instances=instances)
            if instances:
                pids = self.cluster_pids(services[-1], instances)
            args = ["--spawn-rate", rate, "--duration", seconds, "--stop-on-failure"]
            if users:
                args += ["--users", users]
            entry = self.user_model(f"peak-concurrency-{rate}{scenario_suffix}", system, base, pids, args,
                                    timeout=seconds + 90, instances=instances)
            if instances:
                entry["nginx"] = nginx_trouble(self.run_dir / f"cluster-{instances}" / "nginx" / "error.log")
            self.stop_services(services)

    def phase_locust_cross_check(self):
        """Locust itself and users.py, one after the other, against `ours` set
        up as for `mixed`: the same users, spawn rate and duration, one process
        each, a fresh database and Redis for each run."""
        s = self.settings
        for users in s.locust_users:
            runs = {}
            for generator in ("locust", "users.py"):
                database, ids, _ = self.seed("ours", "_locust")
                services, base, pids, _ = self.start_system("ours", database, ids)
                try:
                    watch = CpuWatch({"system": pids, **self.store_pids()})
                    if generator == "locust":
                        runs[generator] = self.locust(base, users, s.locust_spawn_rate, s.locust_seconds)
                    else:
                        result = self.users(base, ["--users", users, "--spawn-rate", s.locust_spawn_rate,
                                                   "--duration", s.locust_seconds], timeout=s.locust_seconds + 90, processes=1)
                        runs[generator] = {
                            "rps": result["rps"], "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"],
                            "requests": result["requests"], "failures": result["failures"],
                            "generator_cpu_percent": result["generator_total_cpu_percent"],
                        }
                    runs[generator]["cpu_percent"] = watch.shares()
                finally:
                    self.stop_services(services)
            locust, ours = runs["locust"], runs["users.py"]

            def ratio_of(key):
                return round(ours[key] / locust[key], 2) if ours.get(key) and locust.get(key) else None

            self.record(f"locust-cross-check-{users}", "ours", users=users, spawn_rate=s.locust_spawn_rate,
                        seconds=s.locust_seconds, locust=locust, users_py=ours, rps_ratio=ratio_of("rps"),
                        p50_ratio=ratio_of("p50_ms"), p99_ratio=ratio_of("p99_ms"),
                        locust_version=package_version("locust"))

    def locust(self, base, users, spawn_rate, seconds):
        """One headless Locust run of bench/locustfile.py; its aggregated stats and its CPU."""
        prefix = self.run_dir / f"locust-{users}"
        log = self.run_dir / f"locust-{users}.log"
        argv = [str(self.venv / "bin" / "locust"), "-f", str(BENCH / "locustfile.py"), "--headless", "-u", str(users),
                "-r", str(spawn_rate), "-t", f"{seconds}s", "--host", base, "--csv", str(prefix), "--only-summary",
                "--logfile", str(log), "--loglevel", "WARNING",
                # Failures are measured, not a reason to fail the run.
                "--exit-code-on-error", "0"]
        # The same failure rule as users.py's: no answer within 10 s.
        _, _, cpu = run_bounded("locust", argv, timeout=seconds + 90, env={**os.environ, "ORDERS_BENCH_TIMEOUT": "10"})
        rows = {}
        with open(f"{prefix}_stats.csv", newline="") as stats:
            for row in csv.DictReader(stats):
                rows[row["Name"]] = row
        total = rows["Aggregated"]

        def number(key):
            value = total.get(key)
            return None if value in (None, "", "N/A") else float(value)

        log_text = log.read_text(errors="replace") if log.exists() else ""
        return {"rps": round(number("Requests/s"), 1), "p50_ms": number("50%"), "p99_ms": number("99%"),
                "requests": int(number("Request Count")), "failures": int(number("Failure Count")),
                "generator_cpu_percent": cpu,
                # Locust says so itself when its process is short of CPU.
                "cpu_warnings": log_text.count("CPU usage above")}

    def cluster_pids(self, service, instances):
        listing = self.run_dir / f"cluster-{instances}" / "cluster.json"
        pids = [service.pid]
        try:
            pids += [entry["pid"] for entry in json.loads(listing.read_text())]
        except (OSError, ValueError):
            pass
        return pids

    def phase_scaling(self):
        database, ids, id_file = self.seed("ours", "_scaling")
        for instances in self.settings.scaling_instances:
            services, base, _, ready_s = self.start_system("ours", database, ids, instances=instances)
            listing = json.loads((self.run_dir / f"cluster-{instances}" / "cluster.json").read_text())
            pids = [services[-1].pid] + [entry["pid"] for entry in listing]
            warm_reads(base, ids)
            self.wrk(base, "get-by-id", id_file, 32, self.settings.warmup_seconds)
            entry = self.max_throughput("ours", f"get-by-id-nginx-{instances}", base, id_file, pids, script="get-by-id",
                                        extra={"instances": instances})
            per_process = [{"role": e["role"], "pid": e["pid"], "peak_rss_mib": round(vm_kib(e["pid"]) / 1024, 1)} for e in listing]
            entry["processes"] = per_process
            entry["peak_rss_mib"] = round(sum(p["peak_rss_mib"] for p in per_process), 1)
            entry["max_instance_rss_mib"] = max((p["peak_rss_mib"] for p in per_process if p["role"] == "instance"), default=None)
            for e in listing:
                if e["role"] == "sidecar":
                    entry["sidecar_operation"] = metrics_summary("http://" + e["address"]).get("sidecar_operation")
                if e["role"] == "instance" and "outbound_to_sidecar" not in entry:
                    metrics = metrics_summary("http://" + e["address"])
                    entry["instantiation"] = metrics.get("instantiation")
                    entry["outbound_to_sidecar"] = metrics.get("outbound_to_sidecar")
            self.stop_services(services)

    def phase_budget(self, embedded=False):
        s = self.settings
        target_rps = s.budget_rpm / 60.0
        if embedded:
            services, base, pids, _ = self.start_embedded(self.run_dir / "ours-embedded-budget", pin=0)
            self.seed_through_api(base, s.seed_count)
        else:
            database, ids, _ = self.seed("ours", "_budget")
            services, base, pids, _ = self.start_system("ours", database, ids, pin=0)
        spawn_rate = 200
        users = int(math.ceil(target_rps * 2 * 1.02))
        duration = s.budget_seconds + users / spawn_rate
        entry = self.user_model(
            "mixed-40k-per-min-1-core" + ("-embedded" if embedded else ""), "ours", base, pids,
            ["--target-rps", round(target_rps, 1), "--spawn-rate", spawn_rate, "--duration", round(duration, 1)],
            timeout=duration + 120, pin=1, steady=True, target_rps=round(target_rps, 1), held_seconds=s.budget_seconds,
            store="embedded (SQLite + in-process cache)" if embedded else None,
            pinned="orders up on CPU 0 (taskset -c 0); generator on CPU 1" + ("" if embedded else "; SecantusDB and Redis unpinned"))
        entry["requests_per_minute"] = round(60 * (entry["rps"] or 0))
        self.stop_services(services)

    def phase_embedded(self, wanted):
        data_dir = self.run_dir / "ours-embedded"
        shutil.rmtree(data_dir, ignore_errors=True)
        # Seeding through the API is the only way into the embedded store.
        count = self.settings.seed_count
        services, base, pids, _ = self.start_embedded(data_dir)
        self.seed_through_api(base, count)
        ids = []
        after = None
        while True:
            status, body = http_get(base, "/orders?limit=1000" + (f"&after={after}" if after else ""))
            page = json.loads(body)
            ids += [order["_id"] for order in page["orders"]]
            after = page.get("next")
            if not after:
                break
        self.probe_id = ids[0]
        id_file = self.run_dir / "ids-embedded.txt"
        id_file.write_text("\n".join(ids) + "\n")
        warm_reads(base, ids)
        store = {"store": "embedded (SQLite + in-process cache)"}
        for scenario in ("get-by-id", "list", "update", "create"):
            if scenario in wanted:
                entry = self.max_throughput("ours", scenario, base, id_file, pids, extra=store)
                entry["scenario"] = f"{scenario}-embedded"
        self.stop_services(services)
        if "get-by-id" in wanted:
            self.measure_auth_cost(data_dir, ids, id_file, store)

    def measure_auth_cost(self, data_dir, ids, id_file, store):
        """What the key check costs per cached get-by-id: two `orders up` on copies of one embedded store,
        one with `--auth off`, loaded in turn for AUTH_ROUNDS rounds each at the same connection count (so
        drift on a shared machine falls on both alike); the medians are compared."""
        with_auth = report.find(self.records, "get-by-id-embedded")
        connections = with_auth["connections"] if with_auth else self.settings.connections[0]
        off_dir = self.run_dir / "ours-embedded-auth-off"
        shutil.rmtree(off_dir, ignore_errors=True)
        shutil.copytree(data_dir, off_dir)
        instances = {}
        try:
            for auth, directory in (("on", data_dir), ("off", off_dir)):
                services, base, pids, _ = self.start_embedded(directory, keep_store=True, auth=auth == "on")
                instances[auth] = (services, base, pids, os.environ.get("ORDERS_API_KEY"))
                warm_reads(base, ids)
            rounds = {"on": [], "off": []}
            for number in range(1, AUTH_ROUNDS + 1):
                for auth, (_, base, pids, key) in instances.items():
                    os.environ.pop("ORDERS_API_KEY", None)
                    if key:
                        os.environ["ORDERS_API_KEY"] = key
                    self.metrics_urls = [base]
                    result = self.watched_wrk(base, "get-by-id", id_file, connections, pids)
                    if result["errors_total"]:
                        raise RuntimeError(f"auth cost, auth {auth}, round {number}: {result['errors_total']} errors")
                    rounds[auth].append({"cpu_us": cpu_us_per_request(result), "rps": round(result["rps"], 1)})
                    print(f"   auth {auth}, round {number}/{AUTH_ROUNDS}: {rounds[auth][-1]}", flush=True)
        finally:
            for services, *_ in instances.values():
                self.stop_services(services)
        median = {auth: statistics.median(r["cpu_us"] for r in runs) for auth, runs in rounds.items()}
        self.record("auth-cost", "ours", cpu_us_with_auth=median["on"], cpu_us_without_auth=median["off"],
                    cpu_us_per_check=median["on"] - median["off"], rounds=rounds, connections=connections,
                    rps_with_auth=statistics.median(r["rps"] for r in rounds["on"]),
                    rps_without_auth=statistics.median(r["rps"] for r in rounds["off"]),
                    where="orders up, embedded store, cached GET /orders/{id}: an admin API key vs --auth off",
                    source=f"process CPU time over each wrk run divided by the requests served; {AUTH_ROUNDS} "
                           "alternating rounds of each, medians")

    def seed_through_api(self, base, count):
        run_bounded("orders-seed", [str(self.orders_bin), "seed", str(count), "--url", base, "--concurrency", "32"],
                    timeout=600, env=clean_env(ORDERS_LOG="warn", ORDERS_API_KEY=os.environ.get("ORDERS_API_KEY", "")))

    def start_embedded(self, data_dir, pin=None, keep_store=False, auth=True):
        if not keep_store:
            shutil.rmtree(data_dir / "store", ignore_errors=True)
            (data_dir / "admin-key").unlink(missing_ok=True)  # the store it opened is gone
        reuse_compiled(self.run_dir / "ours-data", data_dir)
        argv = [str(self.orders_bin), "up", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir),
                "--manifest", str(ROOT / "spin.toml"), "--no-build"] + ([] if auth else ["--auth", "off"])
        if pin is not None:
            argv = ["taskset", "-c", str(pin)] + argv
        service = Service("ours-embedded", argv, self.run_dir, env=clean_env(ORDERS_LOG="warn"),
                          ready=r"orders is serving on (http://\S+)", ready_timeout=180).start()
        base = service.match.group(1)
        wait_for_200(base, "/healthz", process=service.process)
        # `orders up` made the data directory's first admin key; without auth no key is sent.
        os.environ.pop("ORDERS_API_KEY", None)
        if auth:
            os.environ["ORDERS_API_KEY"] = (data_dir / "admin-key").read_text().strip()
        self.metrics_urls = [base]
        return [service], base, process_tree(service.pid), None

    # ---- everything

    def systems(self):
        systems = ["ours", "axum", "flask"]
        if self.spin:
            systems.append("spin")
        else:
            print("spin not found on PATH: skipping the spin peer", flush=True)
            self.notes.append("spin not found on PATH: the Spin peer was skipped")
        return systems

    def run(self, scenario):
        wanted = set(SCENARIOS) - set(NOT_IN_ALL) if scenario == "all" else {scenario}
        if scenario == "half-rate":
            wanted.add("get-by-id")
        started = self.started = time.monotonic()
        self.collect_facts()
        self.start_stores()
        try:
            self.facts["store_baseline"] = self.mongo.baseline(self.settings.seed_count, 2 if self.settings.quick else 5)
            print(f"== SecantusDB alone (pymongo): {self.facts['store_baseline']}", flush=True)
        except Exception as error:
            self.notes.append(f"the database baseline failed: {error}")
        systems = self.systems()
        if wanted & {"get-by-id", "get-by-id-cold", "list", "create", "update", "half-rate", "costs"}:
            for system in systems:
                print(f"== {system}: reads and writes", flush=True)
                self.guarded(self.phase_reads_and_writes, system, wanted)
        if "embedded" in wanted:
            print("== ours (embedded store): reads and writes", flush=True)
            embedded = {"get-by-id", "create"} if self.settings.quick else {"get-by-id", "list", "update", "create"}
            self.guarded(self.phase_embedded, embedded if scenario in ("all", "embedded") else wanted)
        if "mixed" in wanted:
            for system in systems:
                print(f"== {system}: mixed user model", flush=True)
                self.guarded(self.phase_mixed, system)
        if "scaling" in wanted:
            print("== ours: nginx + 1, 2, 4 instances", flush=True)
            self.guarded(self.phase_scaling)
        if "budget" in wanted:
            print("== ours: 40,000 requests/minute on one core", flush=True)
            self.guarded(self.phase_budget)
            if not self.settings.quick:
                print("== ours (embedded store): 40,000 requests/minute on one core", flush=True)
                self.guarded(self.phase_budget, True)
        if "peak" in wanted:
            for system in [s for s in systems if s in self.settings.peak_systems]:
                print(f"== {system}: peak concurrency", flush=True)
                self.guarded(self.phase_peak, system, self.settings.peak_rates, self.settings.peak_seconds)
        if wanted & {"peak", "peak-10k"} and self.settings.peak_extended_users:
            users = self.settings.peak_extended_users
            print(f"== ours: ramp at 100 users/s on to {users} users", flush=True)
            self.guarded(self.phase_peak, "ours", [100], users / 100 + 5, users, "-to-10k")
        if "locust-cross-check" in wanted:
            print("== ours: Locust and users.py, side by side", flush=True)
            self.guarded(self.phase_locust_cross_check)
        self.facts["duration_s"] = round(time.monotonic() - started, 1)
        self.facts["load_after"] = os.getloadavg()
        stop_everything()

    def guarded(self, phase, *args):
        print(f"   (at {time.monotonic() - self.started:.0f} s)", flush=True)
        try:
            phase(*args)
        except Exception as error:
            message = f"{phase.__name__}{tuple(a for a in args if isinstance(a, str))}: {error}"
            print("  FAILED: " + message, file=sys.stderr, flush=True)
            self.notes.append("failed: " + message.splitlines()[0][:400])
            self.failed_phases.append(phase.__name__)
            for service in reversed(list(SERVICES)):
                if service not in (getattr(self, "secantus", None), getattr(self, "redis", None)):
                    service.stop()

    def collect_facts(self):
        def version(argv):
            try:
                return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
            except Exception:
                return "unknown"

        cpu_model = "unknown"
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
        mem_kib = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "host", "functions", "Cargo.toml"],
                               capture_output=True, text=True).stdout.strip()
        import pymongo
        self.facts.update({
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "mode": "quick" if self.settings.quick else "full",
            "cores": os.cpu_count(),
            "memory_gib": round(mem_kib / 2**20, 1),
            "cpu_model": cpu_model,
            "kernel": platform.release(),
            "load_before": os.getloadavg(),
            "commit": git + (" (with uncommitted changes in host/, functions/ or Cargo.toml)" if dirty else ""),
            "versions": {
                "orders": version([str(self.orders_bin), "--version"]),
                "rustc": version(["rustc", "--version"]),
                "secantusd-rs": version([self.args.secantus, "--version"]),
                "redis": version(["redis-server", "--version"]),
                "nginx": version(["sh", "-c", "nginx -v 2>&1"]),
                "wrk": version(["sh", "-c", "wrk --version 2>&1 | head -1"]),
                "python": platform.python_version(),
                "flask": package_version("flask"),
                "flask-pymongo": package_version("flask-pymongo"),
                "pymongo": pymongo.version,
                "gunicorn": version([str(self.venv / "bin" / "gunicorn"), "--version"]),
                "uvloop": package_version("uvloop"),
                "locust": package_version("locust"),
                "spin": version([self.spin, "--version"]) if self.spin else "not installed",
            },
            "settings": {k: v for k, v in vars(self.settings).items()},
        })


def main():
    global PIDS, LOG_DIR
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", nargs="?", default="all", choices=["all", *SCENARIOS])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--pidfile", required=True)
    parser.add_argument("--orders-bin", required=True)
    parser.add_argument("--axum-bin", required=True)
    parser.add_argument("--secantus", required=True)
    parser.add_argument("--venv", required=True)
    parser.add_argument("--docs", default=str(ROOT / "docs"))
    args = parser.parse_args()
    PIDS = Pids(args.pidfile)
    LOG_DIR = Path(args.run_dir)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    bench = Bench(args)
    try:
        bench.run(args.scenario)
    finally:
        stop_everything()
    # Everything the report is made from, so that it can be written again
    # (python3 bench/report.py RUN_DIR/result.json) without measuring again.
    (Path(args.run_dir) / "result.json").write_text(json.dumps(
        {"records": bench.records, "facts": bench.facts, "notes": bench.notes, "scenario": args.scenario}, default=str))
    report.write(bench.records, bench.facts, bench.notes, Path(args.docs), args.scenario)
    print()
    print(report.table(bench.records))
    for note in bench.notes:
        print("note: " + note)
    # The report keeps what was measured; the status says whether all of it was.
    if bench.failed_phases:
        print(f"FAILED phases: {', '.join(bench.failed_phases)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
