//! The state budget: how much memory per-entity state may hold, and how a
//! pipeline file spells it.
//!
//! The default is fitted to the machine (a quarter of its memory, or of the
//! cgroup's limit when one is set), so that a flood of new addresses, devices
//! and sessions evicts the coldest entities instead of growing until the
//! kernel kills the process that every gateway asks for decisions.

/// Smallest budget accepted: below this even a quiet site thrashes.
pub const MIN_BUDGET: usize = 16 << 20;
/// Largest default, however large the machine.
const MAX_DEFAULT: usize = 16 << 30;

/// Parses a state budget: a size (see [`parse_size`]) of at least [`MIN_BUDGET`].
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let bytes = parse_size(s)?;
    if bytes < MIN_BUDGET {
        return Err(format!("'{s}' is below the smallest budget, {} MiB", MIN_BUDGET >> 20));
    }
    Ok(bytes)
}

/// Parses `"512MiB"`, `"2GiB"`, `"1.5 GB"`, `"65536"` (bytes) and the like,
/// up to gigabytes (a terabyte of anything gatewatch keeps is a mistake).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("'{s}' is not a size such as 512MiB or 2GiB"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tb" | "tib" | "t" => return Err(format!("'{s}': a size in terabytes is not plausible here")),
        u => return Err(format!("'{s}': unknown unit '{u}' (use B, KiB, MiB, GiB, KB, MB or GB)")),
    };
    let bytes = n * mult;
    if !bytes.is_finite() || bytes >= 1e15 {
        return Err(format!("'{s}' is not a plausible size"));
    }
    Ok(bytes as usize)
}

/// A quarter of the memory this process may use (cgroup limit, else physical
/// memory), between [`MIN_BUDGET`] and 16 GiB.
pub fn default_budget() -> usize {
    let total = cgroup_limit().or_else(physical_memory).unwrap_or(4 << 30);
    (total / 4).clamp(MIN_BUDGET, MAX_DEFAULT)
}

fn cgroup_limit() -> Option<usize> {
    let v2 = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok();
    let v1 = || std::fs::read_to_string("/sys/fs/cgroup/memory/memory.limit_in_bytes").ok();
    let text = v2.or_else(v1)?;
    let n: u64 = text.trim().parse().ok()?;
    // v1 reports "no limit" as a huge number.
    (n < (1u64 << 50)).then_some(n as usize)
}

fn physical_memory() -> Option<usize> {
    #[cfg(unix)]
    {
        // SAFETY: sysconf only reads system configuration.
        let (pages, size) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGE_SIZE)) };
        if pages > 0 && size > 0 {
            return Some(pages as usize * size as usize);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_bytes("33554432"), Ok(32 << 20));
        assert!(parse_bytes("1MiB").unwrap_err().contains("smallest"));
        assert!(parse_bytes("lots").unwrap_err().contains("not a size"));
        assert!(parse_bytes("3 parsecs").unwrap_err().contains("unknown unit"));
        let d = default_budget();
        assert!((MIN_BUDGET..=MAX_DEFAULT).contains(&d));
    }
}
