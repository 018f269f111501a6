//! Canonical JSON lines (`access-log-schema.md` §1).
//!
//! Deserialises into a borrowed struct so that a line without escapes costs no
//! string allocation. Numbers are accepted as JSON numbers or numeric strings
//! (several gateways quote them); anything else is refused with the field named.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::time::{check_range, parse_rfc3339, truncate_for_error};
use super::{
    Attestation, AuthResult, EventRef, GrantType, ParseError, Signature, canonical_ip, normalize_country,
    validate_required,
};

/// Event time as written: RFC 3339 text or epoch milliseconds, resolved to ms.
#[derive(Debug, Clone, Copy)]
pub struct Ts(pub i64);

impl<'de> Deserialize<'de> for Ts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Ts;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an RFC 3339 string or integer epoch milliseconds")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Ts, E> {
                parse_rfc3339(s).map(Ts).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Ts, E> {
                check_range(v).map(Ts).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Ts, E> {
                check_range(i64::try_from(v).unwrap_or(i64::MAX)).map(Ts).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Ts, E> {
                if v.is_finite() && v.fract() == 0.0 && v.abs() < 9.0e15 {
                    check_range(v as i64).map(Ts).map_err(E::custom)
                } else {
                    Err(E::custom(format!("timestamp {v} is not whole epoch milliseconds")))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A number that may arrive quoted.
#[derive(Debug, Clone, Copy)]
pub struct Num(pub f64);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Num;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
                Ok(Num(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
                Ok(Num(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Num, E> {
                Ok(Num(v))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Num, E> {
                s.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .map(Num)
                    .ok_or_else(|| E::custom(format!("'{}' is not a number", truncate_for_error(s))))
            }
        }
        d.deserialize_any(V)
    }
}

/// A string borrowed from the line when it has no escapes. (serde's own
/// `#[serde(borrow)]` does not borrow through `Option<Cow<str>>`.)
#[derive(Debug)]
pub struct Text<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s.to_string())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// The canonical line as it arrives, before validation. Field mappings build this too.
#[derive(Debug, Deserialize)]
pub struct RawEvent<'a> {
    pub ts: Option<Ts>,
    #[serde(borrow)]
    pub client_ip: Option<Text<'a>>,
    #[serde(borrow)]
    pub method: Option<Text<'a>>,
    #[serde(borrow)]
    pub path: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub query: Option<Text<'a>>,
    pub status: Option<Num>,
    #[serde(default)]
    pub bytes_sent: Option<Num>,
    #[serde(default)]
    pub latency_ms: Option<Num>,
    #[serde(borrow, default)]
    pub user_agent: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub referer: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub host: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub request_id: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub user_id: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub api_key_id: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub session_id: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub device_id: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub grant_type: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub auth_result: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub attestation: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub signature: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub country: Option<Text<'a>>,
    #[serde(default)]
    pub asn: Option<Num>,
}

fn whole<T: TryFrom<u64>>(field: &str, n: Num) -> Result<T, ParseError> {
    let v = n.0;
    if v.fract() != 0.0 || v < 0.0 || v > u64::MAX as f64 {
        return Err(ParseError(format!("{field}: {v} is not a non-negative integer")));
    }
    T::try_from(v as u64).map_err(|_| ParseError(format!("{field}: {v} is out of range")))
}

fn opt_str(v: Option<Text<'_>>) -> Option<Cow<'_, str>> {
    v.map(|t| t.0).filter(|s| !s.is_empty() && s != "-")
}

impl<'a> RawEvent<'a> {
    /// Checks required fields and closed vocabularies, producing a canonical event.
    pub fn validate(self) -> Result<EventRef<'a>, ParseError> {
        let ts = self.ts.ok_or_else(|| ParseError::new("ts: missing (required)"))?.0;
        let ip = self.client_ip.ok_or_else(|| ParseError::new("client_ip: missing (required)"))?.0;
        let method = self.method.ok_or_else(|| ParseError::new("method: missing (required)"))?.0;
        let path = self.path.ok_or_else(|| ParseError::new("path: missing (required)"))?.0;
        let status: u16 = whole("status", self.status.ok_or_else(|| ParseError::new("status: missing (required)"))?)?;
        validate_required(&method, &path, status)?;
        let method = if method.bytes().all(|b| b.is_ascii_uppercase()) {
            method
        } else {
            Cow::Owned(method.to_ascii_uppercase())
        };
        let latency_ms = match self.latency_ms {
            Some(Num(v)) if v < 0.0 => {
                return Err(ParseError(format!("latency_ms: {v} is negative")));
            }
            Some(Num(v)) => Some(v),
            None => None,
        };
        let mut notes = super::Notes::default();
        let grant_type = opt_str(self.grant_type).map(|s| GrantType::parse("grant_type", &s, &mut notes));
        let auth_result = opt_str(self.auth_result).map(|s| AuthResult::parse("auth_result", &s, &mut notes));
        let attestation = opt_str(self.attestation).map(|s| Attestation::parse("attestation", &s, &mut notes));
        let signature = opt_str(self.signature).map(|s| Signature::parse("signature", &s, &mut notes));
        Ok(EventRef {
            ts_ms: ts,
            client_ip: canonical_ip(ip)?,
            method,
            path,
            query: opt_str(self.query),
            status,
            bytes_sent: self.bytes_sent.map(|n| whole("bytes_sent", n)).transpose()?,
            latency_ms,
            user_agent: opt_str(self.user_agent),
            referer: opt_str(self.referer),
            host: opt_str(self.host),
            request_id: opt_str(self.request_id),
            user_id: opt_str(self.user_id),
            api_key_id: opt_str(self.api_key_id),
            session_id: opt_str(self.session_id),
            device_id: opt_str(self.device_id),
            grant_type,
            auth_result,
            attestation,
            signature,
            country: normalize_country(self.country.map(|t| t.0))?,
            asn: self.asn.map(|n| whole("asn", n)).transpose()?,
            notes,
        })
    }
}

/// Parses one canonical JSON line.
pub fn parse(line: &str) -> Result<EventRef<'_>, ParseError> {
    if !line.trim_start().starts_with('{') {
        return Err(ParseError::new("invalid JSON: a line must be one JSON object"));
    }
    match serde_json::from_str::<RawEvent<'_>>(line) {
        Ok(raw) => raw.validate(),
        Err(_) => Err(explain(line)),
    }
}

/// Re-reads a line that failed, only to say which field was wrong: the fast path
/// above does not track the path, and failures are rare enough to pay twice.
fn explain(line: &str) -> ParseError {
    let mut de = serde_json::Deserializer::from_str(line);
    match serde_path_to_error::deserialize::<_, RawEvent<'_>>(&mut de) {
        Ok(_) => match de.end() {
            Ok(()) => ParseError::new("not a JSON object"),
            Err(e) => ParseError(format!("invalid JSON: {e}")),
        },
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            // Errors re-raised through the path tracker may lose their category; the text keeps it.
            if inner.is_eof() || inner.to_string().starts_with("EOF while parsing") {
                ParseError(format!("truncated JSON: {inner}"))
            } else if inner.is_syntax() || path.is_empty() || path == "." || path == "?" {
                ParseError(format!("invalid JSON: {inner}"))
            } else {
                ParseError(format!("{path}: {inner}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"ts":"2026-11-28T10:15:02.113Z","client_ip":"198.51.100.23","method":"POST","path":"/oauth/token","status":401,"bytes_sent":84,"latency_ms":31.2,"user_agent":"okhttp/4.12.0","user_id":"alice@example.com","api_key_id":"mobile-ios","grant_type":"password","auth_result":"invalid_credentials","attestation":"valid","signature":"valid","device_id":"d-93f1"}"#;

    #[test]
    fn contract_example() {
        let e = parse(LINE).unwrap();
        assert_eq!(e.ts_ms, 1_795_860_902_113);
        assert_eq!(e.client_ip, "198.51.100.23");
        assert_eq!(e.status, 401);
        assert_eq!(e.bytes_sent, Some(84));
        assert_eq!(e.grant_type, Some(GrantType::Password));
        assert_eq!(e.auth_result, Some(AuthResult::InvalidCredentials));
        assert_eq!(e.device_id.as_deref(), Some("d-93f1"));
        assert!(matches!(e.path, Cow::Borrowed(_)), "no allocation for plain strings");
    }

    #[test]
    fn epoch_ms_ipv6_nulls_and_quoted_numbers() {
        let e = parse(r#"{"ts":1795860902113,"client_ip":"2001:DB8:0:0::1","method":"get","path":"/x","status":"200","user_id":null,"asn":"64500","extra":{"a":1}}"#).unwrap();
        assert_eq!(e.ts_ms, 1_795_860_902_113);
        assert_eq!(e.client_ip, "2001:db8::1");
        assert_eq!(e.method, "GET");
        assert_eq!(e.status, 200);
        assert_eq!(e.user_id, None);
        assert_eq!(e.asn, Some(64500));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                r#"{"ts":"2026-11-28T10:15:02Z","client_ip":"1.2.3.4","method":"GET","path":"/","status":"abc"}"#,
                "status",
            ),
            (r#"{"ts":"2026-11-28T10:15:02Z","client_ip":"1.2.3.4","method":"GET","path":"/","status":{}}"#, "status"),
            (
                r#"{"ts":"2026-11-28T10:15:02Z","client_ip":"1.2.3.999","method":"GET","path":"/","status":200}"#,
                "client_ip",
            ),
            (r#"{"ts":"2026-11-28T10:15:02Z","method":"GET","path":"/","status":200}"#, "client_ip: missing"),
            (r#"{"ts":17958609,"client_ip":"1.2.3.4","method":"GET","path":"/","status":200}"#, "ts"),
            (r#"{"ts":1795860902,"client_ip":"1.2.3.4","method":"GET","path":"/","status":200}"#, "epoch seconds"),
            (
                r#"{"ts":"2026-11-28T10:15:02Z","client_ip":"1.2.3.4","method":"GET","path":"/","status":200,"bytes_sent":-5}"#,
                "bytes_sent",
            ),
            (r#"{"ts":"2026-11-28T10:15:02Z","client_ip":"1.2.3.4","method":"GET","path":"/","status":99}"#, "status"),
            (r#"{"ts":"2026-11-28T10:15:02Z","client_ip":"1.2.3.4","meth"#, "truncated"),
            (r#"[1,2,3]"#, "invalid JSON"),
        ];
        for (line, want) in cases {
            let err = parse(line).unwrap_err().to_string();
            assert!(err.contains(want), "{line}\n  -> {err}\n  wanted '{want}'");
        }
    }
}

/// Writes row `row` of an events batch ([`super::schema`]) as one canonical
/// JSON line (without its newline) that [`super::parse_line`] reads back to
/// the same event: the form in which instances hand events to one another
/// (repartition topics, `docs/SCALING.md`). Null fields and the `notes`
/// column are left out; time is written as epoch milliseconds.
pub fn write_row(batch: &datafusion::arrow::record_batch::RecordBatch, row: usize, out: &mut Vec<u8>) {
    use std::io::Write as _;

    use datafusion::arrow::array::{
        Array, Float64Array, StringArray, TimestampMillisecondArray, UInt16Array, UInt32Array, UInt64Array,
    };
    out.push(b'{');
    let schema = batch.schema();
    let mut first = true;
    for (i, field) in schema.fields().iter().enumerate() {
        let col = batch.column(i);
        if i == super::col::NOTES || col.is_null(row) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.push(b'"');
        out.extend_from_slice(field.name().as_bytes());
        out.extend_from_slice(b"\":");
        let any = col.as_any();
        // Writing to a Vec cannot fail.
        let _ = if let Some(a) = any.downcast_ref::<StringArray>() {
            serde_json::to_writer(&mut *out, a.value(row)).map_err(std::io::Error::other)
        } else if let Some(a) = any.downcast_ref::<TimestampMillisecondArray>() {
            write!(out, "{}", a.value(row))
        } else if let Some(a) = any.downcast_ref::<UInt16Array>() {
            write!(out, "{}", a.value(row))
        } else if let Some(a) = any.downcast_ref::<UInt32Array>() {
            write!(out, "{}", a.value(row))
        } else if let Some(a) = any.downcast_ref::<UInt64Array>() {
            write!(out, "{}", a.value(row))
        } else if let Some(a) = any.downcast_ref::<Float64Array>() {
            serde_json::to_writer(&mut *out, &a.value(row)).map_err(std::io::Error::other)
        } else {
            write!(out, "null")
        };
    }
    out.push(b'}');
}

#[cfg(test)]
mod row_tests {
    use super::*;
    use crate::event::{EventBatchBuilder, Format, parse_line};

    /// Every field a canonical line can carry, escapes and all, comes back
    /// from the written row as the same event.
    #[test]
    fn a_written_row_parses_back_to_the_same_event() {
        let lines = [
            r#"{"ts":"2026-03-01T10:00:00.123Z","client_ip":"2001:db8::1","method":"post","path":"/v1/login","query":"a=\"b\"&c=\u00e9","status":401,"bytes_sent":"12","latency_ms":3.25,"user_agent":"okhttp/4.9 \\ x","referer":"https://e.example/","host":"api.example","request_id":"r-1","user_id":"u1","api_key_id":"k1","session_id":"s1","device_id":"d1","grant_type":"password","auth_result":"invalid_grant","attestation":"valid","signature":"stale","country":"de","asn":64500}"#,
            r#"{"ts":1772359200000,"client_ip":"10.0.0.1","method":"GET","path":"/","status":200}"#,
        ];
        for line in lines {
            let ev = parse_line(line, Format::Json, None).expect("parses");
            let mut b = EventBatchBuilder::with_capacity(1);
            b.append(&ev);
            let batch = b.finish().expect("batch");
            let mut out = Vec::new();
            write_row(&batch, 0, &mut out);
            let text = std::str::from_utf8(&out).expect("utf-8");
            let again = parse_line(text, Format::Json, None).expect("written row parses");
            let mut b2 = EventBatchBuilder::with_capacity(1);
            b2.append(&again);
            let batch2 = b2.finish().expect("batch");
            for c in 0..crate::event::col::NOTES {
                assert_eq!(batch.column(c).to_data(), batch2.column(c).to_data(), "column {c} of {text}");
            }
        }
    }
}
