//! Making a process non-dumpable (`prctl(PR_SET_DUMPABLE, 0)`): no core file, and no other
//! process of the same user may ptrace it or read its memory (`/proc/<pid>/mem`, `environ`).
//! The one way rota does it: the server and `rota dev` (the secret key and secret values),
//! a worker, its spawner helpers and its supervisor (the join token), each at its own start
//! (an `execve` makes a process dumpable again). `ROTA_ALLOW_PTRACE=1` opts out, for
//! profiling. Linux only; elsewhere a no-op.

/// The variable that keeps rota's processes dumpable (`1`), for profilers and debuggers.
pub const ALLOW_PTRACE_ENV: &str = "ROTA_ALLOW_PTRACE";

/// Whether `ROTA_ALLOW_PTRACE=1` is set in this process's environment.
pub fn ptrace_allowed() -> bool {
    std::env::var_os(ALLOW_PTRACE_ENV).is_some_and(|v| v == "1")
}

/// Makes this process non-dumpable, unless [`ALLOW_PTRACE_ENV`] opts out (logged once, here:
/// each process calls this once, at its start). A failure is logged, never fatal: the
/// process works the same, only less protected.
pub fn forbid_dumps() {
    if ptrace_allowed() {
        tracing::warn!(
            "{ALLOW_PTRACE_ENV}=1: this process stays dumpable, so a step or any other process of the \
             same user can read its environment and memory"
        );
        return;
    }
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable) {
        tracing::warn!(
            "cannot make this process non-dumpable (secrets in its memory stay readable by a debugger of the same user): {e}"
        );
    }
}
