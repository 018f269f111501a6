//! nginx `combined`, optionally followed by `key=value` / `key="quoted"` extras
//! (`access-log-schema.md` §2).
//!
//! A small hand-written scanner: the layout is fixed, and a generic regex would
//! cost more than the rest of the pipeline per line.

use std::borrow::Cow;

use super::time::{parse_nginx_time, truncate_for_error};
use super::{
    Attestation, AuthResult, EventRef, GrantType, ParseError, Signature, canonical_ip, normalize_country,
    validate_required,
};

struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    fn expect(&mut self, lit: &str, what: &str) -> Result<(), ParseError> {
        if self.rest().starts_with(lit) {
            self.pos += lit.len();
            Ok(())
        } else {
            Err(ParseError(format!("nginx: expected {what} at byte {}", self.pos)))
        }
    }

    /// A token up to the next space (or end).
    fn token(&mut self, what: &str) -> Result<&'a str, ParseError> {
        let rest = self.rest();
        let end = memchr::memchr(b' ', rest.as_bytes()).unwrap_or(rest.len());
        if end == 0 {
            return Err(ParseError(format!("nginx: missing {what} at byte {}", self.pos)));
        }
        self.pos += end;
        Ok(&rest[..end])
    }

    /// A `"…"` string; nginx escapes `"` as `\x22`, but `\"` is accepted too.
    /// A string that runs to the end of the line without its closing quote (a
    /// line cut off by the writer) is returned as far as it goes, flagged `true`.
    ///
    /// The error message is only formatted on error, and the closing quote is
    /// found with `memchr2`: this runs three times per `combined` line, and an
    /// allocation per call plus a byte-by-byte loop over user agents were a
    /// tenth of that mix's instructions.
    fn quoted(&mut self, what: &str) -> Result<(Cow<'a, str>, bool), ParseError> {
        if !self.rest().starts_with('"') {
            return Err(ParseError(format!("nginx: expected opening quote of {what} at byte {}", self.pos)));
        }
        self.pos += 1;
        let rest = self.rest();
        let b = rest.as_bytes();
        let mut i = 0;
        let mut escaped = false;
        while let Some(at) = b.get(i..).and_then(|tail| memchr::memchr2(b'"', b'\\', tail)) {
            i += at;
            if b[i] == b'\\' {
                escaped = true;
                i += 2;
                continue;
            }
            self.pos += i + 1;
            let raw = &rest[..i];
            return Ok((if escaped { Cow::Owned(unescape(raw)) } else { Cow::Borrowed(raw) }, false));
        }
        self.pos = self.s.len();
        Ok((if escaped { Cow::Owned(unescape(rest)) } else { Cow::Borrowed(rest) }, true))
    }

    /// Like [`Self::quoted`], for a field that must be whole.
    fn quoted_whole(&mut self, what: &str) -> Result<Cow<'a, str>, ParseError> {
        match self.quoted(what)? {
            (v, false) => Ok(v),
            (_, true) => Err(ParseError(format!("nginx: unterminated quoted {what} (truncated line?)"))),
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }
}

/// Undoes nginx's `\xHH` and backslash escapes. Works on bytes: what follows
/// a backslash in a hostile line may be any character (a multi-byte one is
/// kept whole, with its backslash), and a `\x` without two hex digits after
/// it loses only the backslash.
fn unescape(s: &str) -> String {
    fn hex(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    let mut out: Vec<u8> = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() && b[i + 1].is_ascii() {
            if b[i + 1] == b'x'
                && i + 3 < b.len()
                && let (Some(hi), Some(lo)) = (hex(b[i + 2]), hex(b[i + 3]))
            {
                out.push((hi << 4) | lo);
                i += 4;
                continue;
            }
            out.push(b[i + 1]);
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn dash(v: Cow<'_, str>) -> Option<Cow<'_, str>> {
    if v.is_empty() || v == "-" { None } else { Some(v) }
}

fn num<T: std::str::FromStr>(field: &str, v: &str) -> Result<T, ParseError> {
    v.parse().map_err(|_| ParseError(format!("{field}: '{}' is not a valid number", truncate_for_error(v))))
}

/// Parses one nginx line.
pub fn parse(line: &str) -> Result<EventRef<'_>, ParseError> {
    let mut c = Cursor { s: line, pos: 0 };
    let ip = c.token("$remote_addr")?;
    c.expect(" ", "space after $remote_addr")?;
    let _ident = c.token("ident ('-')")?;
    c.expect(" ", "space after ident")?;
    let remote_user = c.token("$remote_user")?;
    c.expect(" [", "'[' opening $time_local")?;
    let rest = c.rest();
    let close =
        memchr::memchr(b']', rest.as_bytes()).ok_or_else(|| ParseError::new("nginx: unterminated [$time_local]"))?;
    let ts_ms = parse_nginx_time(&rest[..close])?;
    c.pos += close + 1;
    c.expect(" ", "space after $time_local")?;
    let request = c.quoted_whole("$request")?;
    c.expect(" ", "space after $request")?;
    let status_s = c.token("$status")?;
    let status: u16 = num("status", status_s)?;
    c.expect(" ", "space after $status")?;
    let bytes_s = c.token("$body_bytes_sent")?;
    let bytes_sent = if bytes_s == "-" { None } else { Some(num::<u64>("bytes_sent", bytes_s)?) };
    // The last quoted fields are the ones a cut-off line loses: keep what is there.
    let mut notes = super::Notes::default();
    let mut referer = None;
    let mut user_agent = None;
    if !c.at_end() {
        c.expect(" ", "space after $body_bytes_sent")?;
        let (r, cut) = c.quoted("$http_referer")?;
        referer = dash(r);
        if cut {
            notes.truncated("referer");
        } else if !c.at_end() {
            c.expect(" ", "space after $http_referer")?;
            let (ua, cut) = c.quoted("$http_user_agent")?;
            user_agent = dash(ua);
            if cut {
                notes.truncated("user_agent");
            }
        }
    }

    let (method, target) = split_request(request)?;
    let (path, query) = split_target(target);
    validate_required(&method, &path, status)?;

    let mut ev = EventRef {
        ts_ms,
        client_ip: canonical_ip(Cow::Borrowed(ip))?,
        method,
        path,
        query,
        status,
        bytes_sent,
        referer,
        user_agent,
        user_id: dash(Cow::Borrowed(remote_user)),
        notes,
        ..Default::default()
    };
    parse_extras(&mut c, &mut ev)?;
    Ok(ev)
}

fn split_request(request: Cow<'_, str>) -> Result<(Cow<'_, str>, Cow<'_, str>), ParseError> {
    let bad =
        || ParseError(format!("nginx: request '{}' is not 'METHOD TARGET PROTOCOL'", truncate_for_error(&request)));
    let mut parts = request.split(' ');
    let method = parts.next().filter(|m| !m.is_empty()).ok_or_else(bad)?;
    let target = parts.next().filter(|t| !t.is_empty()).ok_or_else(bad)?;
    match &request {
        Cow::Borrowed(r) => {
            let m = &r[..method.len()];
            let t = &r[method.len() + 1..method.len() + 1 + target.len()];
            Ok((Cow::Borrowed(m), Cow::Borrowed(t)))
        }
        Cow::Owned(_) => Ok((Cow::Owned(method.to_string()), Cow::Owned(target.to_string()))),
    }
}

fn split_target(target: Cow<'_, str>) -> (Cow<'_, str>, Option<Cow<'_, str>>) {
    match target {
        Cow::Borrowed(t) => match t.split_once('?') {
            Some((p, q)) => (Cow::Borrowed(p), (!q.is_empty()).then_some(Cow::Borrowed(q))),
            None => (Cow::Borrowed(t), None),
        },
        Cow::Owned(t) => match t.split_once('?') {
            Some((p, q)) => (Cow::Owned(p.to_string()), (!q.is_empty()).then(|| Cow::Owned(q.to_string()))),
            None => (Cow::Owned(t), None),
        },
    }
}

fn parse_extras<'a>(c: &mut Cursor<'a>, ev: &mut EventRef<'a>) -> Result<(), ParseError> {
    loop {
        let rest = c.rest();
        let trimmed = rest.trim_start_matches(' ');
        if trimmed.is_empty() {
            return Ok(());
        }
        if trimmed.len() == rest.len() {
            return Err(ParseError(format!("nginx: expected a space before extras at byte {}", c.pos)));
        }
        c.pos += rest.len() - trimmed.len();
        let eq = memchr::memchr2(b'=', b' ', trimmed.as_bytes())
            .filter(|&i| trimmed.as_bytes()[i] == b'=')
            .ok_or_else(|| {
                ParseError(format!(
                    "nginx: extra '{}' is not key=value",
                    truncate_for_error(trimmed.split(' ').next().unwrap_or(""))
                ))
            })?;
        let key = &trimmed[..eq];
        c.pos += eq + 1;
        let value: Cow<'a, str> = if c.rest().starts_with('"') {
            let (v, cut) = c.quoted(key)?;
            if cut {
                ev.notes.truncated(key);
            }
            v
        } else {
            let rest = c.rest();
            let end = memchr::memchr(b' ', rest.as_bytes()).unwrap_or(rest.len());
            c.pos += end;
            Cow::Borrowed(&rest[..end])
        };
        let Some(v) = dash(value) else { continue };
        apply_extra(ev, key, v)?;
    }
}

fn apply_extra<'a>(ev: &mut EventRef<'a>, key: &str, v: Cow<'a, str>) -> Result<(), ParseError> {
    match key {
        "rt" => {
            let secs: f64 = num("rt", &v)?;
            if !(secs.is_finite() && secs >= 0.0) {
                return Err(ParseError(format!("rt: '{v}' is not a duration in seconds")));
            }
            ev.latency_ms = Some(secs * 1000.0);
        }
        "latency_ms" => ev.latency_ms = Some(num("latency_ms", &v)?),
        "query" => ev.query = Some(v),
        "user_agent" => ev.user_agent = Some(v),
        "referer" => ev.referer = Some(v),
        "host" => ev.host = Some(v),
        "request_id" => ev.request_id = Some(v),
        "user_id" => ev.user_id = Some(v),
        "api_key_id" => ev.api_key_id = Some(v),
        "session_id" => ev.session_id = Some(v),
        "device_id" => ev.device_id = Some(v),
        "grant_type" => ev.grant_type = Some(GrantType::parse("grant_type", &v, &mut ev.notes)),
        "auth_result" => ev.auth_result = Some(AuthResult::parse("auth_result", &v, &mut ev.notes)),
        "attestation" => ev.attestation = Some(Attestation::parse("attestation", &v, &mut ev.notes)),
        "signature" => ev.signature = Some(Signature::parse("signature", &v, &mut ev.notes)),
        "country" => ev.country = normalize_country(Some(v))?,
        "asn" => ev.asn = Some(num("asn", &v)?),
        "bytes_sent" => ev.bytes_sent = Some(num("bytes_sent", &v)?),
        // Unknown keys are ignored, as unknown JSON fields are.
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_next_to_multibyte_characters() {
        // Found by fuzzing (fuzz/regressions/nginx): `\x` then a character
        // of two or three bytes used to slice inside it and panic.
        assert_eq!(unescape("\\x1ɣx03\\x01"), "x1ɣx03\u{1}");
        assert_eq!(unescape("\\x徜 16"), "x徜 16");
        assert_eq!(unescape("a\\ɣ"), "a\\ɣ");
        assert_eq!(unescape("\\x16\\x+3\\\"\\\\"), "\u{16}x+3\"\\");
        assert_eq!(unescape("trailing\\"), "trailing\\");
        let line = "198.51.100.7 - - [28/Nov/2026:10:15:02 +0000] \"\\x1ɣx03\\x01\" 400 0 \"-\" \"-\"";
        let err = parse(line).expect_err("not a request line");
        assert!(err.0.contains("request") || err.0.contains("method"), "{}", err.0);
    }

    #[test]
    fn stock_combined() {
        let l = r#"203.0.113.9 - - [28/Nov/2026:10:15:02 +0000] "GET /v1/items/1042?x=1 HTTP/1.1" 200 1834 "https://shop.example/" "Mozilla/5.0 (X11; Linux x86_64)""#;
        let e = parse(l).unwrap();
        assert_eq!(e.client_ip, "203.0.113.9");
        assert_eq!(e.ts_ms, 1_795_860_902_000);
        assert_eq!(e.method, "GET");
        assert_eq!(e.path, "/v1/items/1042");
        assert_eq!(e.query.as_deref(), Some("x=1"));
        assert_eq!(e.status, 200);
        assert_eq!(e.bytes_sent, Some(1834));
        assert_eq!(e.referer.as_deref(), Some("https://shop.example/"));
        assert_eq!(e.user_id, None);
    }

    #[test]
    fn combined_with_extras() {
        let l = r#"203.0.113.9 - - [28/Nov/2026:10:15:02 +0000] "GET /v1/items/1042 HTTP/1.1" 200 1834 "-" "python-requests/2.32.3" rt=0.012 api_key_id=mobile-android user_id=u-8812 attestation=missing session_id="s 1" country=de asn=64500 unknown=1"#;
        let e = parse(l).unwrap();
        assert_eq!(e.referer, None);
        assert_eq!(e.latency_ms, Some(12.0));
        assert_eq!(e.api_key_id.as_deref(), Some("mobile-android"));
        assert_eq!(e.user_id.as_deref(), Some("u-8812"));
        assert_eq!(e.attestation, Some(Attestation::Missing));
        assert_eq!(e.session_id.as_deref(), Some("s 1"));
        assert_eq!(e.country.as_deref(), Some("DE"));
        assert_eq!(e.asn, Some(64500));
    }

    #[test]
    fn remote_user_ipv6_and_escapes() {
        let l = r#"2001:db8::7 - bob [28/Nov/2026:10:15:02 -0500] "POST /login HTTP/2.0" 302 0 "-" "Mozilla \x22quoted\x22""#;
        let e = parse(l).unwrap();
        assert_eq!(e.user_id.as_deref(), Some("bob"));
        assert_eq!(e.user_agent.as_deref(), Some("Mozilla \"quoted\""));
        assert_eq!(e.ts_ms, 1_795_860_902_000 + 5 * 3_600_000);
    }

    #[test]
    fn keeps_what_a_cut_off_line_has() {
        let l = r#"203.0.113.9 - - [28/Nov/2026:10:15:02 +0000] "GET /v1/items HTTP/1.1" 200 1834 "-" "Mozilla/5.0 (Windows NT"#;
        let e = parse(l).unwrap();
        assert_eq!(e.user_agent.as_deref(), Some("Mozilla/5.0 (Windows NT"));
        assert_eq!((e.notes.truncated, e.notes.text.as_deref()), (1, Some("user_agent truncated")));
        let l = r#"203.0.113.9 - - [28/Nov/2026:10:15:02 +0000] "GET /v1/items HTTP/1.1" 200 1834 "https://shop.exa"#;
        let e = parse(l).unwrap();
        assert_eq!((e.referer.as_deref(), e.user_agent.as_deref()), (Some("https://shop.exa"), None));
        assert_eq!(e.notes.text.as_deref(), Some("referer truncated"));
        // Common log format: no referer or user agent at all.
        let l = r#"203.0.113.9 - - [28/Nov/2026:10:15:02 +0000] "GET /v1/items HTTP/1.1" 200 1834"#;
        let e = parse(l).unwrap();
        assert!(e.notes.is_empty() && e.user_agent.is_none());
        let l = r#"203.0.113.9 - - [28/Nov/2026:10:15:02 +0000] "GET / HTTP/1.1" 200 1 "-" "-" session_id="abc"#;
        let e = parse(l).unwrap();
        assert_eq!((e.session_id.as_deref(), e.notes.truncated), (Some("abc"), 1));
    }

    #[test]
    fn unknown_vocabulary_is_kept_and_noted() {
        let l = r#"203.0.113.9 - - [28/Nov/2026:10:15:02 +0000] "GET / HTTP/1.1" 200 1 "-" "-" attestation=maybe signature=OK"#;
        let e = parse(l).unwrap();
        assert_eq!(e.attestation, Some(Attestation::Unknown));
        assert_eq!(e.signature, Some(Signature::Valid), "a common alias");
        assert_eq!((e.notes.unknown, e.notes.text.as_deref()), (1, Some("attestation=maybe unknown")));
    }

    #[test]
    fn rejects_with_reasons() {
        let cases = [
            (r#"203.0.113.9 - - [28/Nov/2026:10:15:02 +0000] "GET /v1/items HTTP/1.1"#, "unterminated"),
            (r#"203.0.113.9 - - [28/Nov/2026:10:15:02 +0000] "-" 400 0 "-" "-""#, "METHOD TARGET"),
            (r#"999.0.113.9 - - [28/Nov/2026:10:15:02 +0000] "GET / HTTP/1.1" 200 1 "-" "-""#, "client_ip"),
            (r#"203.0.113.9 - - [28/Nov/2026:10:15:02 +0000] "GET / HTTP/1.1" OK 1 "-" "-""#, "status"),
            (r#"203.0.113.9 - - [32/Nov/2026:10:15:02 +0000] "GET / HTTP/1.1" 200 1 "-" "-""#, "time_local"),
            ("hello world", "expected"),
        ];
        for (line, want) in cases {
            let err = parse(line).unwrap_err().to_string();
            assert!(err.contains(want), "{line}\n  -> {err}\n  wanted '{want}'");
        }
    }
}
