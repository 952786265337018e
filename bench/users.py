#!/usr/bin/env python3
"""The user model of the old Locust load test, as a small asyncio generator.

Each simulated user holds its own keep-alive connection (as a Locust
HttpUser does) and loops: GET /orders, wait 1-3 s, POST /orders, wait 1-3 s.
Requests go through a minimal HTTP/1.1 client on asyncio streams (uvloop
when installed), so that the generator spends little CPU per request.
Users are started at a fixed spawn rate up to --users. The load is spread
over --processes worker processes (user g goes to worker g mod P and starts
at g / spawn-rate seconds), so the generator can use more than one core.

Modes:
  fixed users        --users N --spawn-rate S --duration D
  peak concurrency   --spawn-rate S --duration D --stop-on-failure
                     (users = S x D unless --users caps it); the result is
                     the number of users running in the last whole second
                     before the first failure was seen (as Locust's charts
                     show it: a timeout counts when it expires).
  target rate        --target-rps R: users = 2.04 R (each user sends two
                     requests per ~4 s cycle), for the "40,000 requests per
                     minute" question.

Each user's socket is one open file and, towards a loopback target, one
ephemeral port: the generator raises its own open-files limit to the hard
limit, and spreads users over source addresses 127.0.0.2, .3, ... when one
address has too few ports for them (--source-addresses, normally worked out).

A failure is a status outside 2xx, a connection error, or no answer within
--timeout seconds. A request whose kept-alive connection the server had
closed is sent once more on a new connection and counted as `retried`.
The last line of the output is `USERS_RESULT {json}`.
"""

import argparse
import array
import asyncio
import json
import ipaddress
import math
import multiprocessing
import os
import random
import resource
import sys
import time
import urllib.parse

PRODUCTS = ["Spring sale banner 728x90", "Newsletter header", "Instagram story set", "YouTube thumbnail"]
NAMES = ["Ada Lovelace", "Grace Hopper", "Alan Turing", "Radia Perlman"]
ADDRESSES = ["12 Main St, Springfield 01234", "5 Rue de la Paix, Lyon 69002", "7 Calle Mayor, Madrid 28013"]


def order_body():
    return json.dumps({
        "product": random.choice(PRODUCTS),
        "quantity": random.randint(1, 500),
        "customer_name": random.choice(NAMES),
        "customer_address": random.choice(ADDRESSES),
    }).encode()


# The system's API key (ORDERS_API_KEY), sent by every user like a real client.
AUTHORIZATION = f"Authorization: Bearer {os.environ['ORDERS_API_KEY']}\r\n" if os.environ.get("ORDERS_API_KEY") else ""


class Connection:
    """One user's keep-alive HTTP/1.1 connection: just enough client for
    JSON over loopback (Content-Length or chunked bodies), cheap per request."""

    def __init__(self, host, port, source=None):
        self.host, self.port = host, port
        # (address, 0) to connect from another loopback address, or None.
        self.source = source
        self.reader = self.writer = None

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def exchange(self, method, path, body=b""):
        """Sends one request; returns (status, whether an idle kept-alive connection was found closed)."""
        reused = self.writer is not None
        if not reused:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, local_addr=self.source)
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nAccept: application/json\r\n{AUTHORIZATION}"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        status_line = await self.reader.readline()
        if not status_line:
            self.close()
            raise ConnectionResetError("the server closed the connection before answering")
        status = int(status_line.split()[1])
        length, chunked, close = None, False, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value
            elif name == b"connection":
                close = b"close" in value
        if chunked:
            while True:
                size = int((await self.reader.readline()).split(b";")[0], 16)
                if size == 0:
                    while (await self.reader.readline()) not in (b"\r\n", b""):
                        pass
                    break
                await self.reader.readexactly(size + 2)
        elif length is not None:
            await self.reader.readexactly(length)
        else:
            await self.reader.read()
            close = True
        if close:
            self.close()
        return status


class Worker:
    """One process's share of the users and what they measured."""

    def __init__(self, index, args, start, stop_event):
        self.index, self.args, self.start, self.stop_event = index, args, start, stop_event
        self.latency = {"list": array.array("f"), "create": array.array("f")}
        self.done_at = array.array("f")  # completion time of every request, s since start
        self.failures = []  # (seen at, sent at, kind, reason)
        self.spawned_at = array.array("f")  # start time of every user, s since start
        self.stopping = False
        self.retried = 0
        address = urllib.parse.urlsplit(args.url)
        self.host, self.port = address.hostname, address.port or 80
        self.path = address.path.rstrip("/") + "/orders"

    async def request(self, connection, kind, method, body=b""):
        sent = time.monotonic()
        for attempt in (1, 2):
            reused = connection.writer is not None
            try:
                status = await asyncio.wait_for(connection.exchange(method, self.path, body), self.args.timeout)
                ok = 200 <= status < 300
                reason = None if ok else f"status {status}"
                break
            except asyncio.CancelledError:
                connection.close()
                raise
            except asyncio.TimeoutError:
                connection.close()
                ok, reason = False, "timeout"
                break
            except (ConnectionError, asyncio.IncompleteReadError, OSError, ValueError, IndexError) as error:
                connection.close()
                ok, reason = False, f"{type(error).__name__}: {error}"[:120]
                # A kept-alive connection the server closed while this user
                # was thinking: send once more on a new one, as browsers do.
                if attempt == 1 and reused and time.monotonic() - sent < 1.0:
                    self.retried += 1
                    continue
                break
        finished = time.monotonic()
        if self.stopping:
            return
        self.done_at.append(finished - self.start)
        if ok:
            self.latency[kind].append((finished - sent) * 1000.0)
        else:
            self.failures.append((finished - self.start, sent - self.start, kind, reason))
            if self.args.stop_on_failure:
                self.stop_event.set()

    async def user(self, global_index):
        source = None
        if self.args.source_addresses > 1:
            source = (f"127.0.0.{2 + global_index % self.args.source_addresses}", 0)
        connection = Connection(self.host, self.port, source)
        try:
            while True:
                await self.request(connection, "list", "GET")
                await asyncio.sleep(random.uniform(self.args.wait_min, self.args.wait_max))
                await self.request(connection, "create", "POST", order_body())
                await asyncio.sleep(random.uniform(self.args.wait_min, self.args.wait_max))
        finally:
            connection.close()

    async def run(self):
        args = self.args
        deadline = self.start + args.duration
        users = []
        global_index = self.index
        cpu_before = time.process_time()
        while not self.stop_event.is_set():
            now = time.monotonic()
            if now >= deadline:
                break
            start_at = self.start + global_index / args.spawn_rate
            while global_index < args.users and start_at <= now:
                users.append(asyncio.ensure_future(self.user(global_index)))
                self.spawned_at.append(now - self.start)
                global_index += args.processes
                start_at = self.start + global_index / args.spawn_rate
            await asyncio.sleep(min(0.05, max(0.0, deadline - now)))
        self.stopping = True
        wall = time.monotonic() - self.start
        for task in users:
            task.cancel()
        if users:
            # Closing thousands of connections must not hold up the result.
            await asyncio.wait(users, timeout=5)
        return {
            "spawned_at": self.spawned_at.tobytes(),
            "latency": {kind: values.tobytes() for kind, values in self.latency.items()},
            "done_at": self.done_at.tobytes(),
            "failures": self.failures,
            "retried": self.retried,
            "cpu_seconds": time.process_time() - cpu_before,
            "wall_seconds": wall,
        }


def worker_main(index, args, start, stop_event, results):
    try:
        import uvloop  # optional: a faster event loop when installed
        uvloop.install()
    except ImportError:
        pass
    random.seed(os.getpid() ^ int(time.time() * 1000))
    worker = Worker(index, args, start, stop_event)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    results.put((index, loop.run_until_complete(worker.run())))
    results.close()
    results.join_thread()
    # The result is delivered; leave without waiting for leftover sockets.
    os._exit(0)


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    rank = max(0, min(len(sorted_values) - 1, math.ceil(q / 100.0 * len(sorted_values)) - 1))
    return round(sorted_values[rank], 3)


def summarize(args, parts):
    latency = {"list": array.array("f"), "create": array.array("f")}
    done_at = array.array("f")
    spawned_at = array.array("f")
    failures = []
    for part in parts:
        spawned_at.frombytes(part["spawned_at"])
        for kind, raw in part["latency"].items():
            latency[kind].frombytes(raw)
        done_at.frombytes(part["done_at"])
        failures.extend(part["failures"])
    failures.sort()
    everything = sorted(list(latency["list"]) + list(latency["create"]))
    elapsed = max(part["wall_seconds"] for part in parts)
    ramp_seconds = min(args.users / args.spawn_rate, elapsed)
    steady = [t for t in done_at if t >= ramp_seconds]
    steady_seconds = max(0.0, elapsed - ramp_seconds)
    per_second = [0] * (int(elapsed) + 1)
    for t in done_at:
        per_second[min(int(t), len(per_second) - 1)] += 1
    result = {
        "url": args.url,
        "users_target": args.users,
        "spawn_rate": args.spawn_rate,
        "processes": args.processes,
        "spawned": len(spawned_at),
        "seconds": round(elapsed, 3),
        "requests": len(done_at),
        "ok": len(everything),
        "failures": len(failures),
        "retried": sum(part["retried"] for part in parts),
        "rps": round(len(done_at) / elapsed, 1) if elapsed else 0.0,
        "steady_rps": round(len(steady) / steady_seconds, 1) if steady_seconds >= 1 else None,
        "p50_ms": percentile(everything, 50),
        "p99_ms": percentile(everything, 99),
        "p999_ms": percentile(everything, 99.9),
        "by_kind": {
            kind: {"ok": len(values), "p50_ms": percentile(sorted(values), 50), "p99_ms": percentile(sorted(values), 99)}
            for kind, values in latency.items()
        },
        "first_failures": [{"at_s": round(seen, 3), "sent_at_s": round(sent, 3), "kind": kind, "reason": reason}
                           for seen, sent, kind, reason in failures[:5]],
        "rps_per_second": per_second,
        "generator_cpu_percent": [round(100.0 * part["cpu_seconds"] / part["wall_seconds"], 1) for part in parts],
        "open_files_limit": args.open_files_limit,
        "source_addresses": args.source_addresses,
    }
    if failures:
        first = failures[0][0]
        result["first_failure_s"] = round(first, 3)
        # As Locust's charts show it: users running at the end of the last
        # whole second before a failure was seen (a timeout is seen when it
        # expires, not when its request was sent).
        result["peak_users_ok"] = sum(1 for t in spawned_at if t <= math.floor(first))
    else:
        result["peak_users_ok"] = result["spawned"]
    return result


def raise_open_files(needed):
    """Raises this process's soft limit on open files to the hard one (the
    workers inherit it); returns the limit in force. Past it, connect()
    fails with EMFILE: a failure of the generator, not of the system."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return soft


def ephemeral_ports():
    """How many local ports connect() may pick from (net.ipv4.ip_local_port_range)."""
    try:
        low, high = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
        return high - low + 1
    except (OSError, ValueError):
        return 28_232  # Linux's default range, 32768-60999


def source_addresses_needed(users, host):
    """Loopback source addresses so that no address needs more than half its
    ephemeral ports for one target (the rest: connections closed and waiting
    in TIME_WAIT, and everything else on the machine). A target outside
    127.0.0.0/8 cannot be reached from those addresses: one source then."""
    try:
        if not ipaddress.ip_address(host).is_loopback or ipaddress.ip_address(host).version != 4:
            return 1
    except ValueError:
        return 1
    return max(1, min(250, math.ceil(users / (ephemeral_ports() // 2))))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--users", type=int)
    parser.add_argument("--spawn-rate", type=float, default=25.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--target-rps", type=float)
    parser.add_argument("--stop-on-failure", action="store_true")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--wait-min", type=float, default=1.0)
    parser.add_argument("--wait-max", type=float, default=3.0)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--source-addresses", type=int,
                        help="connect from 127.0.0.2..N+1 in turn (default: as many as the ephemeral port range needs)")
    parser.add_argument("--out", help="also write the result JSON here")
    args = parser.parse_args()
    if args.target_rps:
        # Two requests per cycle of two waits (mean 2 s each with 1-3 s),
        # plus 2% for the time the requests themselves take.
        cycle = args.wait_min + args.wait_max
        args.users = args.users or int(math.ceil(args.target_rps * cycle / 2.0 * 1.02))
    if not args.users:
        args.users = int(args.spawn_rate * args.duration)
    args.processes = max(1, min(args.processes, args.users))
    host = urllib.parse.urlsplit(args.url).hostname
    if args.source_addresses is None:
        args.source_addresses = source_addresses_needed(args.users, host)
    # A worker holds its users' sockets, the event loop's and a few more.
    needed = math.ceil(args.users / args.processes) + 64
    args.open_files_limit = raise_open_files(needed)
    if args.open_files_limit < needed:
        sys.exit(f"users.py: each process needs {needed} open files but the limit is {args.open_files_limit}; "
                 f"raise the hard limit (ulimit -Hn) or use more --processes")

    context = multiprocessing.get_context("fork")
    stop_event = context.Event()
    results = context.Queue()
    start = time.monotonic() + 0.2
    workers = [context.Process(target=worker_main, args=(i, args, start, stop_event, results)) for i in range(args.processes)]
    for process in workers:
        process.start()
    parts = {}
    deadline = start + args.duration + 30
    while len(parts) < len(workers):
        try:
            index, part = results.get(timeout=max(0.1, deadline - time.monotonic()))
        except Exception:
            print(f"only {len(parts)} of {len(workers)} workers reported in time", file=sys.stderr)
            break
        parts[index] = part
    for process in workers:
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
    if not parts:
        sys.exit("no worker reported a result")
    result = summarize(args, list(parts.values()))
    result["workers_reported"] = f"{len(parts)}/{len(workers)}"
    line = json.dumps(result)
    if args.out:
        with open(args.out, "w") as out:
            out.write(line + "\n")
    summary = {k: v for k, v in result.items() if k not in ("rps_per_second",)}
    print("USERS_RESULT " + json.dumps(summary))


if __name__ == "__main__":
    main()
