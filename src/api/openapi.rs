//! The OpenAPI document served at `/openapi.json`: `openapi.json` with the
//! parts the pipeline configures filled in — the headers `/v1/authz` reads the
//! client from — so a generated client or a contract test (schemathesis runs
//! in CI) sees the API this process serves, not the default one.

use serde_json::{Value, json};

use crate::config::{ApiConfig, ClientIpFrom};

/// Every route, as `openapi.json` describes it before configuration.
pub const TEMPLATE: &str = include_str!("openapi.json");

/// One IPv4 address as a regular expression (dotted quad, no leading zeros,
/// as Rust's parser takes it).
const IPV4: &str = r"(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}";

/// The document for `api`, as JSON text.
pub fn document(api: &ApiConfig) -> Result<String, serde_json::Error> {
    let mut doc: Value = serde_json::from_str(TEMPLATE)?;
    let mut params = vec![client_header(api)];
    for (name, key, what) in [
        (&api.user_header, "user_header", "the signed-in user"),
        (&api.api_key_header, "api_key_header", "the API key id"),
        (&api.device_header, "device_header", "the device id"),
        (&api.session_header, "session_header", "the session id"),
    ] {
        params.push(json!({
            "name": name, "in": "header", "required": false,
            "description": format!("{what} (api.{key}); a value over 512 bytes, not UTF-8, or `-` names nothing"),
            "schema": { "type": "string" },
        }));
    }
    params.push(json!({
        "name": "User-Agent", "in": "header", "required": false,
        "description": "matched against the allowlist's crawlers (first 512 bytes)",
        "schema": { "type": "string" },
    }));
    if let Some(op) = doc.pointer_mut("/paths/~1v1~1authz/get").and_then(Value::as_object_mut) {
        op.insert("parameters".into(), Value::Array(params));
    }
    // Envoy's ext_authz asks with the original request's method: the same
    // operation under each method a request to the API may have.
    if let Some(path) = doc.pointer_mut("/paths/~1v1~1authz").and_then(Value::as_object_mut)
        && let Some(get) = path.get("get").cloned()
    {
        for m in crate::api::AUTHZ_METHODS.iter().filter(|m| **m != "get") {
            path.insert((*m).to_string(), get.clone());
        }
    }
    let max_wait = api.max_wait_ms / 1000;
    if let Some(ps) = doc.pointer_mut("/paths/~1v1~1decisions~1stream/get/parameters").and_then(Value::as_array_mut) {
        for p in ps.iter_mut().filter(|p| p["name"] == "wait") {
            p["schema"] = json!({ "type": "integer", "minimum": 0, "maximum": max_wait });
            p["description"] = json!(format!(
                "long-poll: seconds to wait for a change, at most {max_wait} (api.max_wait); a duration such as 30s is taken too"
            ));
        }
    }
    serde_json::to_string_pretty(&doc)
}

/// The header that names the client's address, as `api.client_ip` and
/// `api.trusted_hops` say it is read.
fn client_header(api: &ApiConfig) -> Value {
    let address = json!({ "$ref": "#/components/schemas/Address" });
    match api.client_ip {
        ClientIpFrom::XRealIp => json!({
            "name": "X-Real-IP", "in": "header", "required": true,
            "description": "the client's address (api.client_ip = \"x-real-ip\")",
            "schema": address,
        }),
        ClientIpFrom::XForwardedFor => {
            let hops = api.trusted_hops.max(1);
            let schema = if hops == 1 {
                address
            } else {
                // The address judged is the hops-th from the right; the
                // schema shows the shortest list that has one (IPv4 for brevity).
                json!({ "type": "string", "pattern": format!("^{IPV4}(, ?{IPV4}){{{}}}$", hops - 1) })
            };
            json!({
                "name": "X-Forwarded-For", "in": "header", "required": true,
                "description": format!(
                    "comma-separated addresses, over one or more header lines; the client is the {hops}-th from \
                     the right (api.trusted_hops = {hops}), and the entries left of it are not read"
                ),
                "schema": schema,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authz_declares_the_configured_headers() {
        let mut api = ApiConfig { user_header: "X-Who".into(), ..ApiConfig::default() };
        let doc: Value = serde_json::from_str(&document(&api).expect("document")).expect("JSON");
        let names: Vec<&str> = doc["paths"]["/v1/authz"]["get"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(names[0], "X-Forwarded-For");
        assert!(names.contains(&"X-Who"), "{names:?}");
        api.client_ip = ClientIpFrom::XRealIp;
        let doc: Value = serde_json::from_str(&document(&api).expect("document")).expect("JSON");
        assert_eq!(doc["paths"]["/v1/authz"]["get"]["parameters"][0]["name"], "X-Real-IP");
        assert_eq!(doc["paths"]["/v1/authz"]["post"], doc["paths"]["/v1/authz"]["get"], "Envoy asks with POST too");
    }
}
