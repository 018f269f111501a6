//! An entity's name, stored inside its state when short.
//!
//! Looking an entity up compares the request's value with the stored name.
//! Held in a separate allocation, that comparison is a cache miss of its own
//! before the state's; held inline (addresses, subnets, device and session
//! ids, most user ids fit in 22 bytes) it shares the state's cache line.

/// A name of up to 22 bytes inline, longer ones boxed. 24 bytes either way.
#[derive(Clone, PartialEq, Eq)]
pub enum Key {
    Inline { len: u8, buf: [u8; INLINE] },
    Heap(Box<str>),
}

const INLINE: usize = 22;

impl Key {
    pub fn new(s: &str) -> Key {
        if s.len() <= INLINE {
            let mut buf = [0u8; INLINE];
            buf[..s.len()].copy_from_slice(s.as_bytes());
            Key::Inline { len: s.len() as u8, buf }
        } else {
            Key::Heap(s.into())
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Key::Inline { len, buf } => &buf[..*len as usize],
            Key::Heap(s) => s.as_bytes(),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            // Always valid: the bytes were copied whole from a `&str`.
            Key::Inline { .. } => std::str::from_utf8(self.as_bytes()).unwrap_or_default(),
            Key::Heap(s) => s,
        }
    }

    /// Bytes held outside the key itself.
    pub fn heap_bytes(&self) -> usize {
        match self {
            Key::Inline { .. } => 0,
            Key::Heap(s) => s.len(),
        }
    }
}

impl From<&str> for Key {
    fn from(s: &str) -> Key {
        Key::new(s)
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::Key;

    #[test]
    fn round_trips_short_long_and_multibyte() {
        for s in ["", "203.0.113.7", "exactly-22-bytes-long!", "twenty-three bytes long", "Gerät-ü-ß-€-ids-long-é"]
        {
            let k = Key::new(s);
            assert_eq!(k.as_str(), s);
            assert_eq!(k.as_bytes(), s.as_bytes());
            assert_eq!(k.heap_bytes() > 0, s.len() > 22, "{s}");
        }
        assert_eq!(std::mem::size_of::<Key>(), 24);
    }
}
