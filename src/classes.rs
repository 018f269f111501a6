//! Request classes: what a gateway can tell about a request before it is
//! answered, named so that one decision can be about every request of a kind.
//!
//! A credential list sent through a residential proxy pool, a few attempts
//! per address from hundreds of addresses, cannot be stopped address by
//! address: an address's first attempt comes before anything is known about
//! it, and most addresses make only one or two. What every such attempt has
//! in common is known before it is answered: it posts the sign-in form
//! without the session that opening the form starts. While the service-wide
//! campaign columns show such a campaign, a decision on the class
//! `bare-login` challenges every request of it, from any address; a person,
//! who opened the page first, is not in the class (docs/FEATURES.md, "Cold
//! failures").

/// Sign-in forms posted without a session.
pub const BARE_LOGIN: &str = "bare-login";

/// Every class a decision can name.
pub const ALL: [&str; 1] = [BARE_LOGIN];

/// `[classes]` of the pipeline: which requests belong to which class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassConfig {
    /// Paths of the web sign-in forms: pages a person opens (which starts a
    /// session) before posting the password. Compared after normalising the
    /// path the way servers route it (see [`normalize`]). Empty: no request
    /// is `bare-login`, and a decision on it stops nothing.
    pub login_forms: Vec<String>,
    /// How many opened sessions the API remembers to tell a session from a
    /// made-up id ([`crate::sessions`]).
    pub sessions_held: usize,
}

impl Default for ClassConfig {
    fn default() -> Self {
        ClassConfig { login_forms: Vec::new(), sessions_held: crate::sessions::DEFAULT_HELD }
    }
}

impl ClassConfig {
    /// The class of a request, from what a gateway knows before answering
    /// it: the method, the path (query and all) and whether it carries a
    /// session.
    pub fn classify(&self, method: &str, path: &str, has_session: bool) -> Option<&'static str> {
        if has_session || !method.eq_ignore_ascii_case("POST") || self.login_forms.is_empty() {
            return None;
        }
        let path = normalize(path);
        self.login_forms.iter().any(|f| normalize(f) == path).then_some(BARE_LOGIN)
    }
}

/// A request path as a router would see it, so that a client cannot step
/// out of a class by spelling the same resource differently: the query and
/// fragment dropped, percent-escapes decoded, `;parameters` of segments
/// dropped, empty and `.` segments removed, `..` resolved, ASCII lower-cased,
/// no trailing slash. Spellings a given server would route elsewhere are
/// still put in the class, which costs a person at most a challenge.
pub fn normalize(path: &str) -> String {
    let raw = path.split(['?', '#']).next().unwrap_or("");
    let decoded = percent_decode(raw);
    let mut segments: Vec<&str> = Vec::new();
    for seg in decoded.split(['/', '\\']) {
        let seg = seg.split(';').next().unwrap_or("");
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len() + 1);
    for s in segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() {
        out.push('/');
    }
    out.make_ascii_lowercase();
    out
}

/// Decodes `%XX` escapes (invalid ones are kept as written); bytes that do
/// not form UTF-8 become U+FFFD, which matches no form.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forms() -> ClassConfig {
        ClassConfig { login_forms: vec!["/login".into()], ..Default::default() }
    }

    #[test]
    fn bare_login_is_a_form_post_without_session() {
        let c = forms();
        assert_eq!(c.classify("POST", "/login", false), Some(BARE_LOGIN));
        assert_eq!(c.classify("post", "/login?next=/cart", false), Some(BARE_LOGIN));
        assert_eq!(c.classify("POST", "/login", true), None, "a person opened the page first");
        assert_eq!(c.classify("GET", "/login", false), None, "opening the page is not posting it");
        assert_eq!(c.classify("POST", "/oauth/token", false), None);
        assert_eq!(c.classify("POST", "/loginx", false), None);
        assert_eq!(ClassConfig::default().classify("POST", "/login", false), None);
    }

    /// Spellings that reach the same handler on common routers stay in the class.
    #[test]
    fn no_way_around_by_spelling() {
        let c = forms();
        for p in [
            "/login/",
            "//login",
            "/./login",
            "/x/../login",
            "/LOGIN",
            "/%6cogin",
            "/%6Cogin",
            "/login;jsessionid=1",
            "/login#top",
            "\\login",
            "/login//",
        ] {
            assert_eq!(c.classify("POST", p, false), Some(BARE_LOGIN), "{p}");
        }
        assert_eq!(normalize("/a/%2"), "/a/%2", "an invalid escape is kept");
        assert_eq!(normalize("/../../.."), "/");
        assert_eq!(normalize(""), "/");
        assert_eq!(normalize("/%ff"), "/\u{fffd}");
    }
}
