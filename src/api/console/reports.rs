//! The console's reports: what fired today (rules, models, shadow beside
//! enforced) and the shipped investigation queries for its SQL box.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::analytics::Investigation;
use crate::api::{AppState, now_ms};

/// The shipped investigations (`queries/*.sql`), embedded so the console
/// offers exactly what the binary was built with.
pub const INVESTIGATIONS: [(&str, &str); 6] = [
    ("address-timeline.sql", include_str!("../../../queries/address-timeline.sql")),
    ("after-expiry.sql", include_str!("../../../queries/after-expiry.sql")),
    ("blocked-by-collateral.sql", include_str!("../../../queries/blocked-by-collateral.sql")),
    ("keys-from-hosting-networks.sql", include_str!("../../../queries/keys-from-hosting-networks.sql")),
    ("rules-fired-today.sql", include_str!("../../../queries/rules-fired-today.sql")),
    ("users-two-countries.sql", include_str!("../../../queries/users-two-countries.sql")),
];

/// `GET /ui/api/investigations`: name, question, parameters and SQL of each.
pub(super) async fn investigations() -> Json<Value> {
    let list: Vec<Value> = INVESTIGATIONS
        .iter()
        .map(|(file, sql)| {
            let inv = Investigation::parse(sql);
            json!({ "file": file, "name": inv.name, "question": inv.question, "params": inv.params, "sql": inv.sql })
        })
        .collect();
    Json(json!({ "investigations": list }))
}

/// `GET /ui/api/fired`: today's decisions by source and action, enforced
/// and shadow; each model's score histogram; the rules and models in force.
pub(super) async fn fired(State(state): State<Arc<AppState>>) -> Json<Value> {
    let day = state.metrics.fired.snapshot(now_ms());
    let admin = state.admin.lock().await;
    let rules: Vec<Value> = admin
        .pipeline
        .rules
        .iter()
        .map(|r| json!({ "source": format!("rule:{}", r.name), "entity": r.entity, "action": r.action, "shadow": r.shadow }))
        .collect();
    let models: Vec<Value> = admin
        .pipeline
        .models
        .iter()
        .map(|m| {
            json!({ "source": format!("model:{}", m.model.id()), "entity": m.entity, "shadow": m.shadow,
                    "challenge_at": m.challenge_at, "deny_at": m.deny_at })
        })
        .collect();
    Json(
        json!({ "day": day.day, "counts": day.counts, "histograms": day.histograms, "rules": rules, "models": models }),
    )
}

#[cfg(test)]
mod tests {
    /// Every shipped investigation is embedded, and nothing that is not shipped.
    #[test]
    fn every_shipped_query_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("queries");
        let mut shipped: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        shipped.retain(|f| f.ends_with(".sql"));
        shipped.sort();
        let embedded: Vec<String> = super::INVESTIGATIONS.iter().map(|(f, _)| f.to_string()).collect();
        assert_eq!(shipped, embedded);
    }
}
