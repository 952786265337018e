// Initialises the MongoDB replica set of the orders API and its application
// user. Run with `mongosh --nodb --file init-replica-set.js`; idempotent, so
// it may run on every deployment (the Job in infra/k8s, the mongo-init
// service in infra/compose).
//
// Environment:
//   MONGO_MEMBERS          host:port of every member, comma-separated; the first is preferred as primary
//   MONGO_REPLICA_SET      replica set name (default rs0)
//   MONGO_ROOT_USERNAME    root user created by the image's first start
//   MONGO_ROOT_PASSWORD
//   ORDERS_MONGO_DATABASE  the application's database (default orders_db)
//   ORDERS_MONGO_USERNAME  the application's user (default orders), readWrite on that database only
//   ORDERS_MONGO_PASSWORD  its password; changed in place when it differs

const env = process.env;
const required = (name) => {
  const value = env[name];
  if (!value) {
    throw new Error(`${name} is not set`);
  }
  return value;
};

const members = required("MONGO_MEMBERS").split(",").map((m) => m.trim()).filter((m) => m.length > 0);
const replicaSet = env.MONGO_REPLICA_SET || "rs0";
const rootUser = encodeURIComponent(required("MONGO_ROOT_USERNAME"));
const rootPassword = encodeURIComponent(required("MONGO_ROOT_PASSWORD"));
const database = env.ORDERS_MONGO_DATABASE || "orders_db";
const appUser = env.ORDERS_MONGO_USERNAME || "orders";
const appPassword = required("ORDERS_MONGO_PASSWORD");

// Retries `attempt` until it returns a value other than undefined.
function retry(what, attempt, tries = 90, pauseMs = 2000) {
  let lastError = null;
  for (let i = 1; i <= tries; i++) {
    try {
      const value = attempt();
      if (value !== undefined) {
        return value;
      }
      lastError = null;
    } catch (error) {
      lastError = error;
    }
    if (i % 5 === 1) {
      print(`waiting for ${what}${lastError ? `: ${lastError.message}` : ""}`);
    }
    sleep(pauseMs);
  }
  throw new Error(`gave up waiting for ${what}${lastError ? `: ${lastError.message}` : ""}`);
}

const first = retry(`${members[0]}`, () => {
  const admin = new Mongo(
    `mongodb://${rootUser}:${rootPassword}@${members[0]}/admin?authSource=admin&directConnection=true`).getDB("admin");
  return admin.runCommand({ ping: 1 }).ok === 1 ? admin : undefined;
});

const status = first.runCommand({ replSetGetStatus: 1 });
if (status.ok === 1) {
  print(`replica set ${status.set} already initialised (${status.members.length} members)`);
} else if (status.code === 94 /* NotYetInitialized */) {
  const config = {
    _id: replicaSet,
    members: members.map((host, index) => ({ _id: index, host, priority: index === 0 ? 2 : 1 })),
  };
  const result = first.runCommand({ replSetInitiate: config });
  if (result.ok !== 1) {
    throw new Error(`replSetInitiate failed: ${tojson(result)}`);
  }
  print(`replica set ${replicaSet} initiated with ${members.join(", ")}`);
} else {
  throw new Error(`replSetGetStatus failed: ${tojson(status)}`);
}

// Writes go to the primary, whichever member that is now.
const client = retry("a primary", () => {
  const connection = new Mongo(
    `mongodb://${rootUser}:${rootPassword}@${members.join(",")}/admin?authSource=admin&replicaSet=${replicaSet}`);
  const hello = connection.getDB("admin").runCommand({ hello: 1 });
  return hello.primary ? connection : undefined;
});

const app = client.getDB(database);
const roles = [{ role: "readWrite", db: database }];
if (app.getUser(appUser)) {
  app.updateUser(appUser, { pwd: appPassword, roles }, { w: "majority" });
  print(`user ${appUser} on ${database} up to date`);
} else {
  app.createUser({ user: appUser, pwd: appPassword, roles }, { w: "majority" });
  print(`user ${appUser} created with readWrite on ${database}`);
}
