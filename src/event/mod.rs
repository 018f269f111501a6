//! The canonical access-log event: its Arrow schema, the borrowed form parsers
//! produce, and the builder that collects events into `RecordBatch`es.
//!
//! Every input shape (canonical JSON, nginx `combined`, mapped gateway JSON)
//! is parsed into [`EventRef`]; everything downstream reads only the Arrow batch,
//! so features, sinks and analysts see one schema whatever the gateway.

pub mod batch;
pub mod clock;
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

/// What a parser kept but could not read fully: values outside a closed
/// vocabulary and quoted fields cut off at the end of the line. The request is
/// kept (losing a failed login because a gateway spells its outcome its own
/// way would blind the features); the note goes to the `notes` column and the
/// engine counts it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Notes {
    /// `field=value unknown; field truncated`, or `None` for a clean line.
    pub text: Option<String>,
    /// Values outside a closed vocabulary, read as `unknown`.
    pub unknown: u8,
    /// Quoted fields cut off at the end of the line, kept as far as they go.
    pub truncated: u8,
}

impl Notes {
    fn push(&mut self, note: std::fmt::Arguments<'_>) {
        use std::fmt::Write as _;
        let t = self.text.get_or_insert_with(String::new);
        if !t.is_empty() {
            t.push_str("; ");
        }
        let _ = t.write_fmt(note);
    }

    /// Records a value outside `field`'s vocabulary.
    pub fn unknown(&mut self, field: &str, value: &str) {
        self.unknown = self.unknown.saturating_add(1);
        self.push(format_args!("{field}={} unknown", time::truncate_for_error(value)));
    }

    /// Records that `field` was cut off at the end of the line.
    pub fn truncated(&mut self, field: &str) {
        self.truncated = self.truncated.saturating_add(1);
        self.push(format_args!("{field} truncated"));
    }

    /// Records a note of the engine's own (a clamped timestamp).
    pub fn push_owned(&mut self, note: String) {
        self.push(format_args!("{note}"));
    }

    /// Records a value read as another one (`auth_result=invalid_grant read as invalid_credentials`).
    pub fn mapped(&mut self, field: &str, from: &str, to: &str) {
        self.push(format_args!("{field}={from} read as {to}"));
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_none()
    }
}

macro_rules! closed_enum {
    ($(#[$m:meta])* $name:ident { $($var:ident => $text:literal $(| $alias:literal)*),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($var,)+
            /// A value outside the vocabulary; the raw value is in the event's notes.
            Unknown,
        }

        impl $name {
            /// The contract's spellings.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$var => $text,)+ $name::Unknown => "unknown" }
            }

            /// Parses the contract's spelling or a common alias (case-insensitive);
            /// anything else is `Unknown`, noted in `notes`.
            pub fn parse(field: &str, s: &str, notes: &mut Notes) -> Self {
                $(if s.eq_ignore_ascii_case($text) $(|| s.eq_ignore_ascii_case($alias))* { return $name::$var; })+
                notes.unknown(field, s);
                $name::Unknown
            }
        }
    };
}

closed_enum!(
    /// OAuth2 grant presented at the token endpoint (RFC 6749 §4; the URN
    /// forms of the device and JWT grants are outside the vocabulary).
    GrantType {
        Password => "password",
        AuthorizationCode => "authorization_code",
        RefreshToken => "refresh_token",
        ClientCredentials => "client_credentials",
    }
);
closed_enum!(
    /// Outcome of authentication at the gateway. Besides the contract's values,
    /// the error codes of RFC 6749 §5.2 and RFC 6750 §3.1 are read as what they
    /// mean: `unauthorized_client` is a client failure; `invalid_grant` (a wrong
    /// password, or a bad refresh token or code) is resolved by the grant type
    /// once the whole line is read (see [`EventRef::normalize`]).
    AuthResult {
        Ok => "ok" | "success" | "succeeded" | "authenticated" | "pass",
        InvalidCredentials => "invalid_credentials" | "bad_credentials" | "wrong_password",
        InvalidToken => "invalid_token",
        ExpiredToken => "expired_token" | "token_expired",
        InvalidClient => "invalid_client" | "unauthorized_client",
        Missing => "missing" | "none" | "anonymous",
        InvalidGrant => "invalid_grant",
    }
);
closed_enum!(
    /// Mobile app-attestation check.
    Attestation { Valid => "valid" | "ok" | "pass", Invalid => "invalid" | "fail" | "failed", Missing => "missing" | "none" | "absent" }
);
closed_enum!(
    /// HMAC request-signature check.
    Signature {
        Valid => "valid" | "ok",
        Invalid => "invalid" | "bad" | "mismatch",
        Stale => "stale" | "expired",
        Replayed => "replayed" | "replay",
        Missing => "missing" | "none" | "absent",
    }
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
    /// What was kept but not read fully (unknown values, truncated fields).
    pub notes: Notes,
}

impl EventRef<'_> {
    /// Resolves what depends on more than one field, once the whole line is read:
    /// RFC 6749's `invalid_grant` is a failed login on a password grant (or with
    /// no grant named) and a bad token on a refresh-token or code grant.
    pub fn normalize(&mut self) {
        if self.auth_result == Some(AuthResult::InvalidGrant) {
            let to = match self.grant_type {
                Some(GrantType::RefreshToken | GrantType::AuthorizationCode) => AuthResult::InvalidToken,
                _ => AuthResult::InvalidCredentials,
            };
            self.notes.mapped("auth_result", "invalid_grant", to.as_str());
            self.auth_result = Some(to);
        }
    }
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
                s("notes", true),
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
    pub const NOTES: usize = 22;
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
    let mut ev = match format {
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
    }?;
    ev.normalize();
    Ok(ev)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(fields: &str) -> EventRef<'static> {
        let line = format!(
            r#"{{"ts":"2026-11-28T10:15:02Z","client_ip":"198.51.100.23","method":"POST","path":"/oauth/token","status":400{fields}}}"#
        );
        let line: &'static str = Box::leak(line.into_boxed_str());
        parse_line(line, Format::Json, None).unwrap()
    }

    #[test]
    fn rfc6749_error_codes_keep_the_request() {
        // A wrong password, logged with the code RFC 6749 defines for it.
        let e = json(r#","grant_type":"password","auth_result":"invalid_grant""#);
        assert_eq!(e.auth_result, Some(AuthResult::InvalidCredentials));
        assert_eq!(e.notes.text.as_deref(), Some("auth_result=invalid_grant read as invalid_credentials"));
        // The same code on a refresh: the token was bad, not a password.
        let e = json(r#","auth_result":"invalid_grant","grant_type":"refresh_token""#);
        assert_eq!(e.auth_result, Some(AuthResult::InvalidToken));
        let e = json(r#","grant_type":"password","auth_result":"unauthorized_client""#);
        assert_eq!(e.auth_result, Some(AuthResult::InvalidClient));
        assert!(e.notes.is_empty(), "an alias is not worth a note");
        // Codes that say nothing about credentials are kept, marked unknown.
        let e = json(r#","grant_type":"urn:ietf:params:oauth:grant-type:device_code","auth_result":"invalid_scope""#);
        assert_eq!((e.grant_type, e.auth_result), (Some(GrantType::Unknown), Some(AuthResult::Unknown)));
        assert_eq!(e.notes.unknown, 2);
        assert_eq!(e.auth_result.map(AuthResult::as_str), Some("unknown"));
    }
}
