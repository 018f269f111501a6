//! Console sign-ins: a random token in an `HttpOnly` cookie stands for the
//! admin key typed on the login page, so the key is never in a URL, a
//! browser's history or an access log, and script on the page cannot read it.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::HeaderMap;
use base64::Engine as _;
use rand::Rng as _;

/// The cookie's name.
pub const COOKIE: &str = "gw_console";
/// How long a sign-in lasts (a working day), in ms; the key is checked again
/// on every request, so revoking it ends the session at once.
pub const TTL_MS: i64 = 8 * 3_600_000;
/// Most sign-ins kept: every login adds one, so a bound keeps a stream of
/// logins from growing the map; past it the oldest is dropped.
const MAX: usize = 1024;

struct Session {
    key: String,
    expires_ms: i64,
}

/// Signed-in consoles, by token.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Starts a session for `key` (already verified as an admin key) and returns its token.
    pub fn open(&self, key: String, now_ms: i64) -> String {
        let bytes: [u8; 32] = rand::rng().random();
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let Ok(mut map) = self.map.lock() else { return token };
        map.retain(|_, s| s.expires_ms > now_ms);
        if map.len() >= MAX
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires_ms).map(|(t, _)| t.clone())
        {
            map.remove(&oldest);
        }
        map.insert(token.clone(), Session { key, expires_ms: now_ms + TTL_MS });
        token
    }

    /// The key a live session stands for.
    pub fn key(&self, token: &str, now_ms: i64) -> Option<String> {
        let map = self.map.lock().ok()?;
        map.get(token).filter(|s| s.expires_ms > now_ms).map(|s| s.key.clone())
    }

    pub fn close(&self, token: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(token);
        }
    }
}

/// The console's token among the request's cookies (RFC 6265 §5.4: one or
/// more `Cookie` headers of `name=value` pairs separated by `; `).
pub fn token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty() && v.len() <= 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_stands_for_its_key_until_it_expires_or_closes() {
        let s = Sessions::default();
        let t = s.open("gw_a_b".into(), 1_000);
        assert_eq!(t.len(), 43);
        assert_eq!(s.key(&t, 2_000).as_deref(), Some("gw_a_b"));
        assert_eq!(s.key(&t, 1_000 + TTL_MS), None);
        assert_eq!(s.key("forged", 2_000), None);
        s.close(&t);
        assert_eq!(s.key(&t, 2_000), None);
        assert_ne!(s.open("k".into(), 0), s.open("k".into(), 0), "tokens are random");
    }

    #[test]
    fn logins_do_not_grow_the_map_without_bound() {
        let s = Sessions::default();
        let first = s.open("k".into(), 0);
        for i in 0..(MAX + 10) {
            s.open("k".into(), i as i64 + 1);
        }
        assert!(s.map.lock().unwrap().len() <= MAX);
        assert_eq!(s.key(&first, 5), None, "the oldest went first");
    }

    #[test]
    fn the_token_is_found_among_other_cookies() {
        let mut h = HeaderMap::new();
        h.append("cookie", "theme=dark; gw_console=abc".parse().unwrap());
        assert_eq!(token(&h), Some("abc"));
        let mut h = HeaderMap::new();
        h.append("cookie", "gw_console_x=1".parse().unwrap());
        h.append("cookie", "gw_console=".parse().unwrap());
        assert_eq!(token(&h), None);
    }
}
