//! Which paths exist, learned from traffic, to tell probing from broken links.
//!
//! A path "exists" once any request to its template got something other than
//! 404/410. A 404 on a template never seen to exist is a probe (`/.env`,
//! `/wp-admin/setup.php`); a 404 on `/v1/products/:id` is an ordinary miss.
//! Templates replace id-like segments with `:id`, so the catalogue stays small.

use rustc_hash::FxHashSet;

/// Most templates remembered; beyond this no new template is learned, which
/// only makes probing detection more conservative.
pub const MAX_TEMPLATES: usize = 200_000;

#[derive(Debug, Default)]
pub struct PathCatalog {
    known: FxHashSet<u64>,
    buf: Vec<u8>,
}

/// True for segments that name one resource rather than a route: numbers,
/// UUIDs, long hex, long tokens mixing letters and digits.
pub fn is_id_segment(b: &[u8]) -> bool {
    if b.is_empty() {
        return false;
    }
    if b.iter().all(u8::is_ascii_digit) {
        return true;
    }
    let hexish = b.iter().all(|c| c.is_ascii_hexdigit() || *c == b'-');
    if hexish && b.len() >= 8 && b.iter().any(u8::is_ascii_digit) {
        return true;
    }
    b.len() >= 16
        && b.iter().any(u8::is_ascii_digit)
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_'))
}

/// The last all-digit segment of a path, for sequential-id detection.
///
/// Splits the bytes, not the `str`: a `char` pattern searches backwards with
/// a general `memrchr`, whose set-up costs more than these short paths do.
pub fn numeric_id(path: &str) -> Option<u64> {
    path.as_bytes()
        .rsplit(|&c| c == b'/')
        .find(|s| !s.is_empty() && s.len() <= 15 && s.iter().all(u8::is_ascii_digit))
        .and_then(|s| std::str::from_utf8(s).ok()?.parse().ok())
}

impl PathCatalog {
    /// Hash of the path's template. (Split as bytes, as [`numeric_id`]
    /// does: `str::split` with a `char` set up a general searcher per path.)
    pub fn template_hash(&mut self, path: &str) -> u64 {
        self.buf.clear();
        for seg in path.as_bytes().split(|&c| c == b'/') {
            if is_id_segment(seg) {
                self.buf.extend_from_slice(b":id");
            } else {
                self.buf.extend_from_slice(seg);
            }
            self.buf.push(b'/');
        }
        xxhash_rust::xxh3::xxh3_64(&self.buf)
    }

    /// Records a response; returns true when it was a 404 on a path never seen to exist.
    pub fn observe(&mut self, path: &str, status: u16) -> bool {
        let h = self.template_hash(path);
        if status == 404 || status == 410 {
            !self.known.contains(&h)
        } else {
            if self.known.len() < MAX_TEMPLATES {
                self.known.insert(h);
            }
            false
        }
    }

    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_and_probes() {
        let mut c = PathCatalog::default();
        assert!(!c.observe("/v1/products/17", 200));
        assert!(!c.observe("/v1/products/99999", 404), "known template");
        assert!(c.observe("/.env", 404));
        assert!(c.observe("/wp-admin/setup.php", 404));
        assert!(!c.observe("/v1/orders/3f2a9c1e-8b7d-4e2a-9f00-1234567890ab", 200));
        assert!(!c.observe("/v1/orders/aaaaaaaa-8b7d-4e2a-9f00-1234567890ab", 404));
    }

    #[test]
    fn ids() {
        assert_eq!(numeric_id("/v1/products/1042"), Some(1042));
        assert_eq!(numeric_id("/v1/products/1042/reviews"), Some(1042));
        assert_eq!(numeric_id("/v1/products"), None);
        assert!(is_id_segment(b"5f2b8c3d"));
        assert!(!is_id_segment(b"products"));
        assert!(!is_id_segment(b"deadbeef"), "hex words without digits are route names");
    }
}
