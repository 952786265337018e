"""The old service's Locust load test, rebuilt from its description
(docs of the old deployment: "users wait 1-3 s between a GET /orders and a
POST /orders"), to cross-check bench/users.py against Locust itself:

    locust -f bench/locustfile.py --headless -u 200 -r 50 -t 60s --host http://127.0.0.1:PORT

An HttpUser (one requests session, so one kept-alive connection, per user)
with two tasks of equal weight and `between(1, 3)` between them. Locust
picks each task at random where users.py alternates them; both send half
lists and half creates on average, one request per 2 s per user.

The old service had no access control; ours wants an API key, which is read
from ORDERS_API_KEY (as users.py does) and sent as `Authorization: Bearer`.
ORDERS_BENCH_TIMEOUT (seconds), when set, makes a slower answer a failure,
as users.py's --timeout does; Locust itself waits for ever.
"""

import os
import random

from locust import HttpUser, between, task

TIMEOUT = float(os.environ["ORDERS_BENCH_TIMEOUT"]) if os.environ.get("ORDERS_BENCH_TIMEOUT") else None

# The same orders as bench/users.py sends.
PRODUCTS = ["Spring sale banner 728x90", "Newsletter header", "Instagram story set", "YouTube thumbnail"]
NAMES = ["Ada Lovelace", "Grace Hopper", "Alan Turing", "Radia Perlman"]
ADDRESSES = ["12 Main St, Springfield 01234", "5 Rue de la Paix, Lyon 69002", "7 Calle Mayor, Madrid 28013"]


class OrdersUser(HttpUser):
    wait_time = between(1, 3)

    def on_start(self):
        key = os.environ.get("ORDERS_API_KEY")
        if key:
            self.client.headers["Authorization"] = f"Bearer {key}"
        self.client.headers["Accept"] = "application/json"

    @task
    def list_orders(self):
        self.client.get("/orders", timeout=TIMEOUT)

    @task
    def create_order(self):
        self.client.post("/orders", json={
            "product": random.choice(PRODUCTS),
            "quantity": random.randint(1, 500),
            "customer_name": random.choice(NAMES),
            "customer_address": random.choice(ADDRESSES),
        }, timeout=TIMEOUT)
