//! The ClickHouse tables and the DDL that creates them (`gatewatch
//! clickhouse init`).
//!
//! Each table is MergeTree, partitioned by day (so retention drops whole
//! partitions) and ordered for the investigation queries: events by client
//! address then time ("what else did that address do?"), features and
//! decisions by entity then time ("why was this key blocked?"). The DDL
//! stays within ClickHouse 18.16; a `TTL` for retention is added only when
//! the server is new enough to know it (19.6 and later).

use datafusion::arrow::datatypes::SchemaRef;

use super::rowbinary::{self, Column, Unmapped};

/// One table gatewatch writes.
#[derive(Debug, Clone)]
pub struct Table {
    pub name: &'static str,
    /// The Arrow schema of the rows the engine hands the sink.
    pub schema: SchemaRef,
    /// Sorting key (also the primary index).
    pub order_by: &'static str,
}

impl Table {
    /// Its ClickHouse columns.
    pub fn columns(&self) -> Result<Vec<Column>, Unmapped> {
        rowbinary::columns(&self.schema)
    }
}

/// Every table, in the order `init` creates them.
pub fn tables() -> Vec<Table> {
    vec![
        Table { name: "events", schema: crate::event::schema(), order_by: "(client_ip, ts)" },
        Table { name: "features", schema: crate::features::table_schema(), order_by: "(entity_type, entity, ts)" },
        Table {
            name: "decisions",
            schema: crate::sink::parquet::decisions_schema(),
            order_by: "(entity_type, entity, ts)",
        },
        Table { name: "dead_letters", schema: dead_letters_schema(), order_by: "(ts)" },
        // What shadow rules and models would have decided: the decisions' own
        // columns, so a query compares the two tables row for row.
        Table {
            name: "shadow_decisions",
            schema: crate::sink::parquet::decisions_schema(),
            order_by: "(entity_type, entity, ts)",
        },
    ]
}

/// The table called `name`.
pub fn table(name: &str) -> Option<Table> {
    tables().into_iter().find(|t| t.name == name)
}

/// The dead letters' table, as the Parquet sink writes it.
pub use crate::sink::deadletter::schema as dead_letters_schema;

/// A name in backquotes, as ClickHouse quotes identifiers.
pub fn ident(name: &str) -> String {
    format!("`{}`", name.replace('\\', "\\\\").replace('`', "\\`"))
}

/// `CREATE TABLE IF NOT EXISTS` for `t` in `database`; `ttl_days` adds a
/// retention TTL (servers from 19.6 only).
pub fn create_table(database: &str, t: &Table, ttl_days: Option<u32>) -> Result<String, Unmapped> {
    let cols: Vec<String> = t.columns()?.iter().map(|c| format!("    {} {}", ident(&c.name), c.ty)).collect();
    let ttl = ttl_days.map(|d| format!("\nTTL ts + INTERVAL {d} DAY")).unwrap_or_default();
    Ok(format!(
        "CREATE TABLE IF NOT EXISTS {}.{} (\n{}\n) ENGINE = MergeTree()\nPARTITION BY toDate(ts)\nORDER BY {}{}",
        ident(database),
        ident(t.name),
        cols.join(",\n"),
        t.order_by,
        ttl
    ))
}

/// The view `event_entities` in `database`: each event once per entity it
/// belongs to, as the DataFusion view of the same name has it
/// ([`crate::analytics::EVENT_ENTITIES`]), so that the investigations read
/// alike in both. (Rebuilt by `init`: a view's `*` is fixed when it is made.)
pub fn event_entities(database: &str) -> String {
    let events = format!("{}.{}", ident(database), ident("events"));
    let by = |ty: &str, col: &str| {
        format!("SELECT '{ty}' AS entity_type, assumeNotNull({col}) AS entity, * FROM {events} WHERE {col} IS NOT NULL")
    };
    format!(
        "CREATE VIEW {}.{} AS\n    SELECT 'ip' AS entity_type, client_ip AS entity, * FROM {events}\n    UNION ALL SELECT 'cidr', \
         if(position(client_ip, ':') = 0, replaceRegexpOne(client_ip, '\\\\.[0-9]+$', '.0/24'), \
         concat(cutIPv6(IPv6StringToNum(client_ip), 8, 0), '/64')), * FROM {events}\n    UNION ALL SELECT 'cidr', \
         concat(cutIPv6(IPv6StringToNum(client_ip), 10, 0), '/48'), * FROM {events} WHERE position(client_ip, ':') > 0\n    \
         UNION ALL SELECT 'cidr', \
         concat(cutIPv6(IPv6StringToNum(client_ip), 9, 0), '/56'), * FROM {events} WHERE position(client_ip, ':') > 0\n    \
         UNION ALL {}\n    \
         UNION ALL {}\n    UNION ALL {}\n    UNION ALL {}",
        ident(database),
        ident("event_entities"),
        by("user", "user_id"),
        by("api_key", "api_key_id"),
        by("device", "device_id"),
        by("session", "session_id"),
    )
}

/// Whether a server of version `version` (`SELECT version()`) knows table TTLs.
pub fn supports_ttl(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (19, 6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_partitions_by_day_and_orders_for_investigations() {
        let ddl = create_table("gw", &table("events").expect("events"), None).expect("ddl");
        assert!(ddl.starts_with("CREATE TABLE IF NOT EXISTS `gw`.`events` (\n    `ts` DateTime,\n    `ts_ms` Int64,"));
        assert!(ddl.contains("PARTITION BY toDate(ts)\nORDER BY (client_ip, ts)"), "{ddl}");
        assert!(!ddl.contains("TTL"));
        let ddl = create_table("gw", &table("decisions").expect("decisions"), Some(30)).expect("ddl");
        assert!(ddl.ends_with("TTL ts + INTERVAL 30 DAY"), "{ddl}");
        for t in tables() {
            create_table("gw", &t, None).expect("every table maps");
        }
    }

    #[test]
    fn ttl_needs_19_6() {
        assert!(!supports_ttl("18.16.1"));
        assert!(!supports_ttl("19.5.3.8"));
        assert!(supports_ttl("19.6.2.11"));
        assert!(supports_ttl("24.8.1"));
        assert!(!supports_ttl("garbage"));
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(ident("a`b"), "`a\\`b`");
    }
}
