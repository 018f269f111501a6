//! `gatewatch query --clickhouse URL`: the same questions asked of the
//! history a ClickHouse sink keeps, with the answer in the same shapes
//! (table, CSV, JSON lines) as a local query's.
//!
//! Queries run with `readonly=2` (no writes, no DDL). ClickHouse 18.16 has
//! no server-side query parameters, so `$name` placeholders are replaced
//! client-side by string literals escaped as ClickHouse reads them
//! (backslash and quote escaped); placeholders inside string literals,
//! quoted identifiers and comments are left alone.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Builder, Int64Builder, RecordBatch, StringBuilder, UInt64Builder};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use crate::sink::clickhouse::{self as ch, ClickHouseError};

/// What can go wrong asking ClickHouse.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(transparent)]
    ClickHouse(#[from] ClickHouseError),
    #[error("the query uses ${0}, which no --param gives")]
    Unbound(String),
    #[error("clickhouse answered what is not JSONCompact: {0}")]
    Answer(String),
    #[error("building the result: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
}

/// A ClickHouse string literal holding `v`.
pub fn literal(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('\'');
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// `sql` with every `$name` outside literals, quoted names and comments
/// replaced by the literal of its parameter.
pub fn bind(sql: &str, params: &[(String, String)]) -> Result<String, RemoteError> {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let skip_to = match c {
            b'\'' | b'"' | b'`' => {
                // A quoted run, with backslash escapes, up to its closing quote.
                let mut j = i + 1;
                while j < b.len() && b[j] != c {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                Some((j + 1).min(b.len()))
            }
            b'-' if b.get(i + 1) == Some(&b'-') => Some(sql[i..].find('\n').map_or(b.len(), |n| i + n)),
            _ => None,
        };
        if let Some(j) = skip_to {
            out.push_str(&sql[i..j]);
            i = j;
            continue;
        }
        if c == b'$' {
            let end =
                sql[i + 1..].find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_')).map_or(b.len(), |n| i + 1 + n);
            if end > i + 1 {
                let name = &sql[i + 1..end];
                let v = params.iter().find(|(k, _)| k == name).ok_or_else(|| RemoteError::Unbound(name.into()))?;
                out.push_str(&literal(&v.1));
                i = end;
                continue;
            }
        }
        let n = sql[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&sql[i..i + n]);
        i += n;
    }
    Ok(out)
}

/// Runs `sql` (with `params`) in `database` on the server at `url`.
pub fn query(
    url: &str,
    database: &str,
    sql: &str,
    params: &[(String, String)],
) -> Result<Vec<RecordBatch>, RemoteError> {
    let sql = bind(sql, params)?;
    let sql = sql.trim().trim_end_matches(';');
    let rt = ch::runtime()?;
    let client = clickhouse::Client::default()
        .with_url(url)
        .with_validation(false)
        .with_database(database)
        .with_setting("readonly", "2");
    let body = ch::block_on(&rt, url, std::time::Duration::from_secs(300), async {
        let mut cursor = client.query_raw(sql).fetch_bytes("JSONCompact")?;
        let mut all = Vec::new();
        while let Some(chunk) = cursor.next().await? {
            all.extend_from_slice(&chunk);
        }
        Ok(all)
    })?;
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| RemoteError::Answer(e.to_string()))?;
    to_batch(&v).map(|b| vec![b])
}

/// A column's Arrow type for a ClickHouse type (numbers as numbers, the rest as text).
fn arrow_type(ty: &str) -> DataType {
    let inner = ty.strip_prefix("Nullable(").and_then(|t| t.strip_suffix(')')).unwrap_or(ty);
    match inner {
        "Int8" | "Int16" | "Int32" | "Int64" | "UInt8" | "UInt16" | "UInt32" => DataType::Int64,
        "UInt64" => DataType::UInt64,
        "Float32" | "Float64" => DataType::Float64,
        _ => DataType::Utf8,
    }
}

/// A JSONCompact answer (`meta` names and types, `data` rows) as one batch.
fn to_batch(v: &serde_json::Value) -> Result<RecordBatch, RemoteError> {
    let meta = v["meta"].as_array().ok_or_else(|| RemoteError::Answer("no meta".into()))?;
    let rows = v["data"].as_array().ok_or_else(|| RemoteError::Answer("no data".into()))?;
    let mut fields = Vec::with_capacity(meta.len());
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(meta.len());
    for (j, m) in meta.iter().enumerate() {
        let name = m["name"].as_str().unwrap_or_default();
        let ty = arrow_type(m["type"].as_str().unwrap_or_default());
        let cell = |r: &serde_json::Value| r.get(j).cloned().unwrap_or(serde_json::Value::Null);
        // 64-bit integers arrive quoted (JSON numbers lose precision past 2^53).
        let num = |c: &serde_json::Value| c.as_str().map(str::to_string).unwrap_or_else(|| c.to_string());
        let col: ArrayRef = match ty {
            DataType::Int64 => {
                let mut b = Int64Builder::with_capacity(rows.len());
                rows.iter().for_each(|r| b.append_option(num(&cell(r)).parse().ok()));
                Arc::new(b.finish())
            }
            DataType::UInt64 => {
                let mut b = UInt64Builder::with_capacity(rows.len());
                rows.iter().for_each(|r| b.append_option(num(&cell(r)).parse().ok()));
                Arc::new(b.finish())
            }
            DataType::Float64 => {
                let mut b = Float64Builder::with_capacity(rows.len());
                rows.iter().for_each(|r| b.append_option(num(&cell(r)).parse().ok()));
                Arc::new(b.finish())
            }
            _ => {
                let mut b = StringBuilder::new();
                for r in rows {
                    match cell(r) {
                        serde_json::Value::Null => b.append_null(),
                        serde_json::Value::String(s) => b.append_value(s),
                        other => b.append_value(other.to_string()),
                    }
                }
                Arc::new(b.finish())
            }
        };
        fields.push(Field::new(name, col.data_type().clone(), true));
        cols.push(col);
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(k: &str, v: &str) -> (String, String) {
        (k.into(), v.into())
    }

    #[test]
    fn parameters_become_escaped_literals_outside_quotes_and_comments() {
        let sql = "SELECT '$ip', `$ip` -- $ip\nFROM t WHERE a = $ip AND b = $ip2 AND r = '\\\\.[0-9]+$'";
        let got = bind(sql, &[p("ip", "1.2.3.4"), p("ip2", "x' OR 1=1 --\\")]).expect("binds");
        assert_eq!(
            got,
            "SELECT '$ip', `$ip` -- $ip\nFROM t WHERE a = '1.2.3.4' AND b = 'x\\' OR 1=1 --\\\\' AND r = '\\\\.[0-9]+$'"
        );
        assert!(matches!(bind("SELECT $missing", &[]), Err(RemoteError::Unbound(n)) if n == "missing"));
    }

    #[test]
    fn answers_keep_numbers_as_numbers() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"meta":[{"name":"n","type":"UInt64"},{"name":"s","type":"Nullable(String)"},{"name":"f","type":"Float64"},{"name":"t","type":"DateTime"}],
                "data":[["18446744073709551615",null,0.5,"2026-11-02 06:00:00"],["1","x",1,"2026-11-02 06:00:01"]],"rows":2}"#,
        )
        .expect("json");
        let b = to_batch(&v).expect("batch");
        assert_eq!(b.schema().field(0).data_type(), &DataType::UInt64);
        assert_eq!(b.schema().field(2).data_type(), &DataType::Float64);
        assert_eq!(b.schema().field(3).data_type(), &DataType::Utf8);
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.column(1).null_count(), 1);
    }
}
