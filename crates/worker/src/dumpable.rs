//! Making a process non-dumpable (`prctl(PR_SET_DUMPABLE, 0)`): no core file, and no other
//! process of the same user may ptrace it or read its memory (`/proc/<pid>/mem`, `environ`).
//! The one way rota does it: `rota server` and `rota dev` hold the secret key and secret
//! values in memory. Linux only; elsewhere a no-op.

/// Makes this process non-dumpable. A failure is logged, never fatal: the process works
/// the same, only less protected.
pub fn forbid_dumps() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable) {
        tracing::warn!(
            "cannot make this process non-dumpable (secrets in its memory stay readable by a debugger of the same user): {e}"
        );
    }
}
