//! The canonical access-log event: its Arrow schema, the borrowed form parsers
//! produce, and the builder that collects events into `RecordBatch`es.
//!
//! Every input shape (canonical JSON, nginx `combined`, mapped gateway JSON)
//! is parsed into [`EventRef`]; everything downstream reads only the Arrow batch,
//! so features, sinks and analysts see one schema whatever the gateway.

pub mod batch;
pub mod json;
pub mod mapping;
pub mod nginx;
pub mod time;

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

pub use batch::EventBatchBuilder;

/// Why a line could not become an event. The text is written to the dead-letter sink.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl ParseError {
    pub fn new(msg: impl Into<String>) -> Self {
        ParseError(msg.into())
    }
}

impl From<time::TimeError> for ParseError {
    fn from(e: time::TimeError) -> Self {
        ParseError(e.to_string())
    }
}

macro_rules! closed_enum {
    ($(#[$m:meta])* $name:ident { $($var:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($var),+ }

        impl $name {
            /// All accepted spellings, for error messages.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$var => $text),+ }
            }

            /// Parses the contract's spelling (case-insensitive).
            pub fn parse(field: &str, s: &str) -> Result<Self, ParseError> {
                $(if s.eq_ignore_ascii_case($text) { return Ok($name::$var); })+
                Err(ParseError(format!(
                    "{field}: unknown value '{}' (expected one of {})",
                    time::truncate_for_error(s),
                    Self::NAMES.join(", ")
                )))
            }
        }
    };
}

closed_enum!(
    /// OAuth2 grant presented at the token endpoint.
    GrantType { Password => "password", AuthorizationCode => "authorization_code", RefreshToken => "refresh_token", ClientCredentials => "client_credentials" }
);
closed_enum!(
    /// Outcome of authentication at the gateway.
    AuthResult { Ok => "ok", InvalidCredentials => "invalid_credentials", InvalidToken => "invalid_token", ExpiredToken => "expired_token", InvalidClient => "invalid_client", Missing => "missing" }
);
closed_enum!(
    /// Mobile app-attestation check.
    Attestation { Valid => "valid", Invalid => "invalid", Missing => "missing" }
);
closed_enum!(
    /// HMAC request-signature check.
    Signature { Valid => "valid", Invalid => "invalid", Stale => "stale", Replayed => "replayed", Missing => "missing" }
);

/// One parsed, validated request, borrowing from the line it came from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventRef<'a> {
    pub ts_ms: i64,
    /// Canonical text of the client address (IPv6 compressed, lower case).
    pub client_ip: Cow<'a, str>,
    pub method: Cow<'a, str>,
    pub path: Cow<'a, str>,
    pub query: Option<Cow<'a, str>>,
    pub status: u16,
    pub bytes_sent: Option<u64>,
    pub latency_ms: Option<f64>,
    pub user_agent: Option<Cow<'a, str>>,
    pub referer: Option<Cow<'a, str>>,
    pub host: Option<Cow<'a, str>>,
    pub request_id: Option<Cow<'a, str>>,
    pub user_id: Option<Cow<'a, str>>,
    pub api_key_id: Option<Cow<'a, str>>,
    pub session_id: Option<Cow<'a, str>>,
    pub device_id: Option<Cow<'a, str>>,
    pub grant_type: Option<GrantType>,
    pub auth_result: Option<AuthResult>,
    pub attestation: Option<Attestation>,
    pub signature: Option<Signature>,
    pub country: Option<Cow<'a, str>>,
    pub asn: Option<u32>,
}

/// Validates an address and returns its canonical text, borrowing when it already is.
pub fn canonical_ip(s: Cow<'_, str>) -> Result<Cow<'_, str>, ParseError> {
    let ip: IpAddr = s.parse().map_err(|_| {
        ParseError(format!("client_ip: '{}' is not an IPv4 or IPv6 address", time::truncate_for_error(&s)))
    })?;
    match ip {
        IpAddr::V4(_) => Ok(s),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Ok(Cow::Owned(v4.to_string())),
            None => {
                let canon = v6.to_string();
                if canon == s { Ok(s) } else { Ok(Cow::Owned(canon)) }
            }
        },
    }
}

/// Validates the fields every line must carry and that the contract constrains.
pub fn validate_required(method: &str, path: &str, status: u16) -> Result<(), ParseError> {
    if method.is_empty() || method.len() > 16 || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(ParseError(format!("method: '{}' is not an HTTP method", time::truncate_for_error(method))));
    }
    if path.is_empty() {
        return Err(ParseError::new("path: empty"));
    }
    if !(100..=599).contains(&status) {
        return Err(ParseError(format!("status: {status} is not an HTTP status (100-599)")));
    }
    Ok(())
}

/// Normalises a country code to upper-case ISO 3166 alpha-2, dropping values that are not.
pub fn normalize_country(c: Option<Cow<'_, str>>) -> Result<Option<Cow<'_, str>>, ParseError> {
    match c {
        None => Ok(None),
        Some(c) if c.is_empty() || c == "-" => Ok(None),
        Some(c) if c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()) => {
            if c.bytes().all(|b| b.is_ascii_uppercase()) {
                Ok(Some(c))
            } else {
                Ok(Some(Cow::Owned(c.to_ascii_uppercase())))
            }
        }
        Some(c) => {
            Err(ParseError(format!("country: '{}' is not an ISO 3166 alpha-2 code", time::truncate_for_error(&c))))
        }
    }
}

/// The Arrow schema of the `events` table.
pub fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let s = |n: &str, nullable: bool| Field::new(n, DataType::Utf8, nullable);
            Arc::new(Schema::new(vec![
                Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
                s("client_ip", false),
                s("method", false),
                s("path", false),
                s("query", true),
                Field::new("status", DataType::UInt16, false),
                Field::new("bytes_sent", DataType::UInt64, true),
                Field::new("latency_ms", DataType::Float64, true),
                s("user_agent", true),
                s("referer", true),
                s("host", true),
                s("request_id", true),
                s("user_id", true),
                s("api_key_id", true),
                s("session_id", true),
                s("device_id", true),
                s("grant_type", true),
                s("auth_result", true),
                s("attestation", true),
                s("signature", true),
                s("country", true),
                Field::new("asn", DataType::UInt32, true),
            ]))
        })
        .clone()
}

/// Column positions in [`schema`], so readers index without name lookups.
pub mod col {
    pub const TS: usize = 0;
    pub const CLIENT_IP: usize = 1;
    pub const METHOD: usize = 2;
    pub const PATH: usize = 3;
    pub const QUERY: usize = 4;
    pub const STATUS: usize = 5;
    pub const BYTES_SENT: usize = 6;
    pub const LATENCY_MS: usize = 7;
    pub const USER_AGENT: usize = 8;
    pub const REFERER: usize = 9;
    pub const HOST: usize = 10;
    pub const REQUEST_ID: usize = 11;
    pub const USER_ID: usize = 12;
    pub const API_KEY_ID: usize = 13;
    pub const SESSION_ID: usize = 14;
    pub const DEVICE_ID: usize = 15;
    pub const GRANT_TYPE: usize = 16;
    pub const AUTH_RESULT: usize = 17;
    pub const ATTESTATION: usize = 18;
    pub const SIGNATURE: usize = 19;
    pub const COUNTRY: usize = 20;
    pub const ASN: usize = 21;
}

/// The input shapes a line may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Canonical JSON lines.
    Json,
    /// nginx `combined`, optionally followed by `key=value` extras.
    Nginx,
    /// Another gateway's JSON, translated by the pipeline's `[input.mapping]`.
    Mapped,
    /// Per line: JSON (mapped if a mapping is configured) when it starts with `{`, else nginx.
    Auto,
}

/// Parses one line in the given format. `mapping` is used by `Mapped` and `Auto`.
pub fn parse_line<'a>(
    line: &'a str,
    format: Format,
    mapping: Option<&mapping::Mapping>,
) -> Result<EventRef<'a>, ParseError> {
    let trimmed = line.trim_end_matches(['\r', '\n']);
    if trimmed.trim().is_empty() {
        return Err(ParseError::new("empty line"));
    }
    match format {
        Format::Json => json::parse(trimmed),
        Format::Nginx => nginx::parse(trimmed),
        Format::Mapped => match mapping {
            Some(m) => m.parse(trimmed),
            None => Err(ParseError::new("format 'mapped' needs an [input.mapping] table in the pipeline")),
        },
        Format::Auto => {
            if trimmed.trim_start().starts_with('{') {
                match mapping {
                    Some(m) => m.parse(trimmed),
                    None => json::parse(trimmed),
                }
            } else {
                nginx::parse(trimmed)
            }
        }
    }
}
