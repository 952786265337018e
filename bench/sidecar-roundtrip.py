#!/usr/bin/env python3
"""Sidecar round trip on loopback, cached and uncached single-order reads.

Starts `orders sidecar` on the embedded store (or --mongo-uri), creates N
orders through its API, then reads each once (every read a cache miss) and
once more (every read a hit), timing each request on one keep-alive
connection. Prints p50/p99 for both. Usage:
    bench/sidecar-roundtrip.py [--orders PATH_TO_BINARY] [-n 2000] [--mongo-uri URI]
"""
import argparse, http.client, json, os, secrets, signal, subprocess, tempfile, time


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main():
    parser = argparse.ArgumentParser()
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/orders-target"))
    parser.add_argument("--orders", default=os.path.join(target, "release", "orders"))
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--mongo-uri")
    args = parser.parse_args()
    token = secrets.token_hex(16)
    data_dir = tempfile.mkdtemp()
    env = dict(os.environ, ORDERS_SIDECAR_TOKEN=token, ORDERS_LOG="warn")
    command = [args.orders, "sidecar", "--listen", "127.0.0.1:0", "--data-dir", data_dir]
    if args.mongo_uri:
        command += ["--mongo-uri", args.mongo_uri, "--mongo-database", "roundtrip"]
    sidecar = subprocess.Popen(command, stdout=subprocess.PIPE, env=env, text=True)
    try:
        line = sidecar.stdout.readline()
        host, port = line.split("http://")[1].split()[0].split(":")
        connection = http.client.HTTPConnection(host, int(port))
        headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}

        def call(method, path, body=None):
            started = time.perf_counter()
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            return time.perf_counter() - started, response.status, payload

        ids = []
        for n in range(args.n):
            fields = {"product": f"p{n}", "quantity": 1, "customer_name": "a", "customer_address": "b"}
            _, status, payload = call("POST", "/v1/docs/orders", json.dumps({"fields": fields}))
            assert status == 201, payload
            ids.append(json.loads(payload)["doc"]["_id"])
        results = {}
        for label in ("uncached", "cached"):
            times = []
            for order_id in ids:
                elapsed, status, _ = call("GET", f"/v1/docs/orders/{order_id}")
                assert status == 200
                times.append(elapsed * 1e6)
            results[label] = times
        backend = "mongodb" if args.mongo_uri else "sqlite"
        print(f"sidecar round trip on loopback, {args.n} single-order reads each, store {backend}, one keep-alive connection")
        print(f"{'read':<10} {'p50 µs':>8} {'p99 µs':>8}")
        for label, times in results.items():
            print(f"{label:<10} {percentile(times, 0.5):>8.0f} {percentile(times, 0.99):>8.0f}")
    finally:
        sidecar.send_signal(signal.SIGTERM)
        sidecar.wait(timeout=15)


if __name__ == "__main__":
    main()
