//! A flood of new entities: every request from a new address, device and
//! session, as rotating residential proxies, minted device ids or a busy
//! launch day produce. One stuffing address sends every `attacker_every`-th
//! request; it must still be caught while the flood evicts everything cold.
//! Used by the memory test and the high-cardinality benchmark.

use std::io::{self, Write};

use crate::event::time::format_rfc3339;

/// The address the flood's credential stuffer uses.
pub const ATTACKER_IP: &str = "203.0.113.250";

/// Writes `n` JSON lines spread evenly over `span_ms` from `start_ms`.
pub fn write(out: &mut impl Write, n: usize, start_ms: i64, span_ms: i64, attacker_every: usize) -> io::Result<()> {
    for i in 0..n {
        let ts = format_rfc3339(start_ms + (i as i128 * span_ms as i128 / n.max(1) as i128) as i64);
        if attacker_every > 0 && i % attacker_every == 0 {
            writeln!(
                out,
                r#"{{"ts":"{ts}","client_ip":"{ATTACKER_IP}","method":"POST","path":"/oauth/token","status":401,"grant_type":"password","auth_result":"invalid_credentials","user_id":"victim{i}@example.com","api_key_id":"mobile-android"}}"#
            )?;
            continue;
        }
        // Addresses walk 100.64.0.0/10 (shared address space) /24 by /24;
        // product ids are scattered (a flood of app users, not an id walk).
        let (a, b, c) = (64 + ((i >> 16) & 0x3f), (i >> 8) & 0xff, i & 0xff);
        writeln!(
            out,
            r#"{{"ts":"{ts}","client_ip":"100.{a}.{b}.{c}","method":"GET","path":"/v1/products/{}","status":200,"user_agent":"okhttp/4.12.0","api_key_id":"mobile-android","device_id":"dev-{i:x}","session_id":"sess-{i:x}","attestation":"valid","signature":"valid"}}"#,
            (i as u64).wrapping_mul(2_654_435_761) % 100_000
        )?;
    }
    Ok(())
}
