//! Checks the service's own OpenAPI document against the running service:
//! every documented operation answers with a documented status, and every
//! answer's body matches the documented schema and headers.

use reqwest::Method;
use serde_json::{Value, json};

use crate::checks::Checks;
use crate::contract::{Api, Answer, sample_order};

/// The documented response, following a `$ref` to `#/components/responses/…`.
fn response_doc<'a>(document: &'a Value, template: &str, method: &str, status: u16) -> &'a Value {
    let response = &document["paths"][template][method]["responses"][status.to_string()];
    match response["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/responses/")) {
        Some(name) => &document["components"]["responses"][name],
        None => response,
    }
}

fn schema_for(document: &Value, template: &str, method: &str, status: u16) -> Option<Value> {
    let response = response_doc(document, template, method, status);
    if response.is_null() {
        return None;
    }
    let schema = response["content"]["application/json"]["schema"].clone();
    Some(json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": document["components"].clone(),
        "allOf": [if schema.is_null() { json!(true) } else { schema }],
    }))
}

fn documented_headers(document: &Value, template: &str, method: &str, status: u16) -> Vec<String> {
    response_doc(document, template, method, status)["headers"]
        .as_object()
        .map(|headers| headers.keys().cloned().collect())
        .unwrap_or_default()
}

/// Where `body`, answered with `status` by `method template`, breaks the
/// document's schema for it (empty when it matches).
pub fn schema_errors(document: &Value, template: &str, method: &str, status: u16, body: &Value) -> Vec<String> {
    let Some(schema) = schema_for(document, template, method, status) else { return vec![format!("status {status} not documented")] };
    match jsonschema::validator_for(&schema) {
        Ok(validator) => validator.iter_errors(body).map(|e| e.to_string()).collect(),
        Err(error) => vec![format!("schema does not compile: {error}")],
    }
}

fn check_answer(c: &mut Checks, document: &Value, template: &str, method: &str, answer: &Answer) {
    let status = answer.status.as_u16();
    let name = format!("openapi {} {template} -> {status}", method.to_uppercase());
    let Some(schema) = schema_for(document, template, method, status) else {
        c.check(&format!("{name}: status documented"), false, &answer.body);
        return;
    };
    match jsonschema::validator_for(&schema) {
        Ok(validator) => {
            let errors: Vec<String> = validator.iter_errors(&answer.body).map(|e| e.to_string()).collect();
            c.check(&format!("{name}: body matches schema"), errors.is_empty(), errors);
        }
        Err(error) => c.check(&format!("{name}: schema compiles"), false, error.to_string()),
    }
    for header in documented_headers(document, template, method, status) {
        if header != "Retry-After" || status == 503 {
            c.check(&format!("{name}: header {header}"), answer.header(&header).is_some(), answer.headers.clone());
        }
    }
}

async fn queued_bundle(api: &Api) -> String {
    let queued = api.json(Method::POST, "/bundles", &json!({"urls": ["http://127.0.0.1:9/refused.png"]}), &[]).await;
    queued.body["id"].as_str().unwrap_or("000000000000000000000000").to_owned()
}

pub async fn check_against_service(api: &Api, c: &mut Checks) {
    let document = api.get("/openapi.json").await.body;
    let operations: Vec<(String, String)> = document["paths"]
        .as_object()
        .map(|paths| {
            paths
                .iter()
                .flat_map(|(path, item)| {
                    item.as_object()
                        .into_iter()
                        .flat_map(|ops| ops.keys())
                        .filter(|m| ["get", "put", "post", "delete"].contains(&m.as_str()))
                        .map(move |m| (path.clone(), m.clone()))
                })
                .collect()
        })
        .unwrap_or_default();
    c.check("openapi: documents operations", operations.len() >= 8, operations.len());

    let created = api.create(&sample_order("openapi")).await;
    let id = created.body["order"]["_id"].as_str().unwrap_or_default().to_owned();
    let item = format!("/orders/{id}");
    let mut exercised = 0;
    for (template, method) in &operations {
        let answers: Vec<Answer> = match (template.as_str(), method.as_str()) {
            ("/orders", "get") => vec![api.get("/orders?limit=3").await, api.get("/orders?limit=0").await],
            ("/orders", "post") => vec![
                api.create(&sample_order("openapi-post")).await,
                api.create(&json!({"quantity": 0})).await,
                api.send(Method::POST, "/orders", &[("content-type", "text/plain")], Some(b"x".to_vec())).await,
            ],
            ("/orders/{id}", "get") => vec![api.get(&item).await, api.get("/orders/0123456789abcdef01234567").await, api.get("/orders/bad").await],
            ("/orders/{id}", "put") => vec![
                api.json(Method::PUT, &item, &json!({"quantity": 2}), &[]).await,
                api.json(Method::PUT, &item, &json!({"quantity": 2}), &[("if-match", "\"999\"")]).await,
            ],
            ("/orders/{id}", "delete") => vec![api.send(Method::DELETE, &item, &[], None).await, api.send(Method::DELETE, &item, &[], None).await],
            // The worker refuses the loopback URL without sending anything.
            ("/bundles", "post") => vec![
                api.json(Method::POST, "/bundles", &json!({"urls": ["http://127.0.0.1:9/refused.png"]}), &[]).await,
                api.json(Method::POST, "/bundles", &json!({"urls": ["ftp://example.com/a"]}), &[]).await,
                api.send(Method::POST, "/bundles", &[("content-type", "text/plain")], Some(b"x".to_vec())).await,
            ],
            ("/bundles/{id}", "get") => {
                let bundle = queued_bundle(api).await;
                vec![api.get(&format!("/bundles/{bundle}")).await, api.get("/bundles/000000000000000000000000").await]
            }
            // The 200 stream is not JSON; tests/bundles.rs follows it.
            ("/bundles/{id}/events", "get") => {
                let bundle = queued_bundle(api).await;
                let events = format!("/bundles/{bundle}/events");
                vec![
                    api.get("/bundles/000000000000000000000000/events").await,
                    api.send(Method::GET, &events, &[("last-event-id", "not-an-event-id")], None).await,
                ]
            }
            ("/audit", "get") => vec![api.get("/audit?limit=5").await, api.get("/audit?limit=0").await],
            ("/downloads/{file}", "get") => vec![
                api.get("/downloads/bundle-000000000000000000000000.zip?md5=AAAAAAAAAAAAAAAAAAAAAA&expires=4102444800").await,
                api.get("/downloads/nothing-here.zip").await,
            ],
            (path, "get") => vec![api.get(path).await],
            (path, other) => {
                c.check(&format!("openapi {other} {path}: exercised by this suite"), false, "add it to openapi.rs");
                continue;
            }
        };
        for answer in &answers {
            check_answer(c, &document, template, method, answer);
        }
        exercised += 1;
    }
    c.eq("openapi: every operation exercised", exercised, operations.len());
    check_security(api, c, &document, &operations, &id).await;
}

/// The document names the bearer scheme and each operation's scope, documents
/// 401/403/429 wherever a credential is needed, and the service's 401s match it.
async fn check_security(api: &Api, c: &mut Checks, document: &Value, operations: &[(String, String)], id: &str) {
    let scheme = &document["components"]["securitySchemes"]["apiKey"];
    c.eq("openapi: bearer security scheme", (scheme["type"].as_str(), scheme["scheme"].as_str()), (Some("http"), Some("bearer")));
    let public = ["/healthz", "/readyz", "/openapi.json", "/downloads/{file}"];
    let scopes = ["orders:read", "orders:write", "orders:delete", "bundles", "admin"];
    let anonymous = api.anonymous();
    for (template, method) in operations {
        let operation = &document["paths"][template][method];
        let name = format!("openapi {} {template}", method.to_uppercase());
        let required: Vec<&str> = operation["security"]
            .as_array()
            .map(|list| list.iter().filter_map(|r| r["apiKey"].as_array()).flatten().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if public.contains(&template.as_str()) {
            c.eq(&format!("{name}: public (security: [])"), operation["security"].as_array().map(Vec::len), Some(0));
            continue;
        }
        c.check(&format!("{name}: names one scope"), required.len() == 1 && scopes.contains(&required[0]), &operation["security"]);
        c.eq(&format!("{name}: x-required-scope"), operation["x-required-scope"].as_str(), required.first().copied());
        for status in [401, 403, 429] {
            c.check(&format!("{name}: documents {status}"), !response_doc(document, template, method, status).is_null(), status);
        }
        let path = template.replace("{id}", id);
        if api.key.is_none() {
            continue; // the service runs with --auth off
        }
        // Valid bodies: a request that fails validation is refused before its credential is checked.
        let body = match (template.as_str(), method.as_str()) {
            ("/orders", "post") => Some(sample_order("anonymous")),
            ("/orders/{id}", "put") => Some(json!({"quantity": 4})),
            ("/bundles", "post") => Some(json!({"urls": ["https://example.com/a.png"]})),
            _ => None,
        }
        .map(|body| body.to_string().into_bytes());
        let verb = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap_or(Method::GET);
        let answer = anonymous.send(verb, &path, &[("content-type", "application/json")], body).await;
        c.eq(&format!("{name} without a credential: 401"), answer.status.as_u16(), 401);
        check_answer(c, document, template, method, &answer);
    }
}
