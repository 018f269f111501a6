//! Process-wide memory settings, made once at start.
//!
//! Transparent huge pages are turned off for the process by default, as
//! Redis does (`disable-thp`) and MongoDB and many databases advise: with
//! THP set to `always` (the default of most distributions), the first touch
//! of each 2 MiB region zeroes the whole of it, and a process whose state
//! grows with its input (a flood of new addresses, devices and sessions)
//! spends much of its time in the kernel doing so. Measured on a 2-core VM
//! (docs/PERFORMANCE.md, 2026-12-07 (later)): a flood of new entities ran
//! at 1.5-1.7x the events per CPU-second without THP, the other mixes at
//! 1.05-1.25x, with 15-20 % less peak memory and a system time that no
//! longer varied by 3x between identical runs; the price is up to ~7 % more
//! user time (TLB misses). An operator who measures otherwise keeps them
//! with `--huge-pages` (or `GATEWATCH_HUGE_PAGES=1`).

/// The environment variable that keeps huge pages (any value but `0`,
/// `false` or empty), for the binary and the end-to-end bench alike.
pub const KEEP_ENV: &str = "GATEWATCH_HUGE_PAGES";

/// Whether `KEEP_ENV` asks to keep huge pages.
pub fn keep_requested() -> bool {
    std::env::var(KEEP_ENV).is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

/// The start-up setting the binary and the end-to-end bench share: huge
/// pages off unless `keep` (`--huge-pages`) or [`KEEP_ENV`] asks to keep them.
pub fn set_at_start(keep: bool) -> std::io::Result<()> {
    if keep || keep_requested() { Ok(()) } else { disable_huge_pages() }
}

/// Turns transparent huge pages off for this process and its children
/// (Linux's `PR_SET_THP_DISABLE`, which since 4.13 applies to mappings that
/// already exist too). Elsewhere, or where the kernel refuses, nothing
/// changes and the error says why; the engine runs either way.
pub fn disable_huge_pages() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and
        // changes no memory this process can see, only how the kernel backs it.
        let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "transparent huge pages are a Linux setting"))
    }
}

/// Whether this process runs without transparent huge pages (Linux).
pub fn huge_pages_disabled() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: a query with no pointer arguments.
        unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn disabling_takes_effect() {
        // Inherited by nothing here: the test process keeps the setting, which
        // only changes how the kernel backs its memory.
        super::disable_huge_pages().expect("prctl");
        assert!(super::huge_pages_disabled());
    }
}
