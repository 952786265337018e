"""The old orders service, rebuilt from its description for the benchmarks.

Flask + flask_pymongo in one module, five routes, the JSON shapes its clients
knew, and its known faults kept on purpose: GET /orders returns every order
in one response, POST answers 200 with no validation (a missing field is a
500), PUT overwrites the fields it was not sent with null and answers 200 for
an unknown id, and a malformed id is a 500. Production ran it as
`gunicorn -w 2 --threads 4 app:app`.

MONGO_URI names the server and the database, e.g. mongodb://127.0.0.1:27017/orders_db.
"""

import os

from bson.objectid import ObjectId
from flask import Flask, jsonify, request
from flask_pymongo import PyMongo

app = Flask(__name__)
app.config["MONGO_URI"] = os.environ.get("MONGO_URI", "mongodb://127.0.0.1:27017/orders_db")
mongo = PyMongo(app)


def serialize(order):
    order["_id"] = str(order["_id"])
    return order


@app.route("/orders", methods=["GET"])
def get_orders():
    orders = [serialize(order) for order in mongo.db.orders.find()]
    return jsonify({"orders": orders})


@app.route("/orders/<order_id>", methods=["GET"])
def get_order(order_id):
    order = mongo.db.orders.find_one({"_id": ObjectId(order_id)})
    if order is None:
        return jsonify({"message": "Order not found"}), 404
    return jsonify({"order": serialize(order)})


@app.route("/orders", methods=["POST"])
def create_order():
    data = request.get_json()
    order = {
        "product": data["product"],
        "quantity": data["quantity"],
        "customer_name": data["customer_name"],
        "customer_address": data["customer_address"],
    }
    result = mongo.db.orders.insert_one(order)
    order["_id"] = str(result.inserted_id)
    return jsonify({"message": "Order created successfully", "order": order})


@app.route("/orders/<order_id>", methods=["PUT"])
def update_order(order_id):
    data = request.get_json()
    mongo.db.orders.update_one(
        {"_id": ObjectId(order_id)},
        {
            "$set": {
                "product": data.get("product"),
                "quantity": data.get("quantity"),
                "customer_name": data.get("customer_name"),
                "customer_address": data.get("customer_address"),
            }
        },
    )
    return jsonify({"message": "Order updated successfully"})


@app.route("/orders/<order_id>", methods=["DELETE"])
def delete_order(order_id):
    result = mongo.db.orders.delete_one({"_id": ObjectId(order_id)})
    if result.deleted_count == 0:
        return jsonify({"message": "Order not found"}), 404
    return jsonify({"message": "Order deleted successfully"})
