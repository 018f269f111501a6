//! How the engine thread is scheduled beside the API's threads. The loop it
//! runs is [`crate::driver::live`].

/// How much lower than the API's threads the engine thread is scheduled (Linux
/// nice). Lookups must never wait on ingestion; when both want the CPU, the
/// lookup goes first, and the engine still gets every cycle the API leaves idle.
pub const ENGINE_NICE: i32 = 5;

/// Lowers the calling thread's scheduling priority by `nice` (Linux: nice is per thread).
pub fn lower_thread_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain syscalls on the calling thread; no memory is shared with the kernel.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
        // SAFETY: as above; failure only leaves the priority unchanged.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) };
        if rc != 0 {
            tracing::debug!("engine thread priority unchanged");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}
