//! Every size limit of rota's input, in one place: the server's validation, the OpenAPI
//! document and the worker's spawn-time check all read these. Pure checks only; callers
//! turn a [`LimitError`] into their own error (400, a failed step, ...).

/// Names: step, queue, tag and worker names (`A-Z a-z 0-9 _ - .`).
pub const MAX_NAME: usize = 128;
/// The same rule as a JSON Schema / ECMA pattern.
pub const NAME_PATTERN: &str = "^[A-Za-z0-9_.-]{1,128}$";
/// A job's display name (any printable text).
pub const MAX_JOB_NAME: usize = 256;
/// Host names (a DNS name is at most 253; a worker name may stand in for one).
pub const MAX_HOST: usize = 255;
/// An idempotency key (document, header or revoke).
pub const MAX_IDEMPOTENCY_KEY: usize = 256;
/// Short free text: a worker's version, profile, capability, instance id.
pub const MAX_SHORT_TEXT: usize = 128;
/// Steps in one job.
pub const MAX_STEPS: usize = 1000;
/// Tags a job may require or a worker may carry.
pub const MAX_TAGS: usize = 64;
/// Queues one worker claims from.
pub const MAX_QUEUES: usize = 64;
/// Capabilities a worker may announce.
pub const MAX_CAPABILITIES: usize = 64;
/// Variables in one `env` map (job or step).
pub const MAX_ENV_VARS: usize = 4096;
/// Longest environment variable name.
pub const MAX_ENV_KEY: usize = 1024;
/// Linux's per-string limit of `execve` (`MAX_ARG_STRLEN`, 32 pages): each `KEY=VALUE`
/// and the script, counted with its terminating NUL, must fit.
pub const MAX_ARG_STRLEN: usize = 128 * 1024;
/// Total bytes of a step's argv and environment (strings with their NULs, plus one pointer
/// each) a job may use. Linux allows a quarter of the stack limit (2 MiB with the usual
/// 8 MiB); half of that is left for what the worker adds and for smaller stacks.
pub const MAX_EXEC_BYTES: usize = 1 << 20;
/// What the worker itself may use at spawn (PATH, HOME, `ROTA_*` included): the whole
/// 2 MiB `ARG_MAX` of a default stack, less a margin.
pub const MAX_SPAWN_BYTES: usize = (2 << 20) - (64 << 10);
/// A worker's concurrency, and so the attempts (results, log batches, replies) one
/// worker call may carry.
pub const MAX_CONCURRENCY: usize = 100_000;
/// Jobs in one batch submit.
pub const MAX_BATCH_JOBS: usize = 1000;
/// Jobs (or keys) in one revoke call, and workers named in one fleet command.
pub const MAX_ITEMS: usize = 1000;
/// A `state` filter of a job listing.
pub const MAX_QUERY_TEXT: usize = 1024;

/// An input over a limit, or malformed; `field` names where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct LimitError {
    /// Where, e.g. `steps[2].env.KEY` or `queues[0]`.
    pub field: String,
    /// What is wrong, naming the limit.
    pub message: String,
}

fn fail(field: impl Into<String>, message: impl Into<String>) -> LimitError {
    LimitError { field: field.into(), message: message.into() }
}

/// A name: 1..=[`MAX_NAME`] characters of `A-Z a-z 0-9 _ - .`.
pub fn check_name(field: &str, s: &str) -> Result<(), LimitError> {
    if s.is_empty() || s.len() > MAX_NAME {
        return Err(fail(
            field,
            format!("must be 1-{MAX_NAME} characters of A-Z a-z 0-9 _ - . (got {})", s.len()),
        ));
    }
    if !s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
        return Err(fail(
            field,
            format!("'{}': use only A-Z a-z 0-9 _ - . (at most {MAX_NAME})", preview(s)),
        ));
    }
    Ok(())
}

/// Free text: 1..=`max` bytes, no control characters (NUL included).
pub fn check_text(field: &str, s: &str, max: usize) -> Result<(), LimitError> {
    if s.is_empty() {
        return Err(fail(field, "must not be empty"));
    }
    if s.len() > max {
        return Err(fail(field, format!("is {} bytes; the limit is {max}", s.len())));
    }
    if s.chars().any(char::is_control) {
        return Err(fail(field, "contains a control character (NUL, newline, ...)"));
    }
    Ok(())
}

/// A list of at most `max` entries.
pub fn check_count(field: &str, len: usize, max: usize) -> Result<(), LimitError> {
    if len > max {
        return Err(fail(field, format!("has {len} entries; the limit is {max}")));
    }
    Ok(())
}

/// One `env` map: names, values and their count (exec sizes are checked per step); a value
/// may be a reference to a secret's key (`{secret: NAME/KEY}`), checked for its form.
pub fn check_env_map<'a>(
    field: &str,
    env: impl ExactSizeIterator<Item = (&'a String, &'a crate::secret::EnvValue)>,
) -> Result<(), LimitError> {
    check_count(field, env.len(), MAX_ENV_VARS)?;
    for (k, v) in env {
        let f = format!("{field}.{}", preview(k));
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(fail(f, "not a valid environment variable name (empty, or has '=' or NUL)"));
        }
        if k.len() > MAX_ENV_KEY {
            return Err(fail(f, format!("the name is {} bytes; the limit is {MAX_ENV_KEY}", k.len())));
        }
        match v {
            crate::secret::EnvValue::Plain(v) if v.contains('\0') => {
                return Err(fail(f, "the value contains a NUL byte"));
            }
            crate::secret::EnvValue::Plain(_) => {}
            crate::secret::EnvValue::Secret(r) => r.validate(&f)?,
        }
    }
    Ok(())
}

/// Whether `sh -c script` with this environment can be executed: every string (the
/// script, each `KEY=VALUE`) under [`MAX_ARG_STRLEN`] with its NUL, and the whole under
/// `total_max` ([`MAX_EXEC_BYTES`] for a job, [`MAX_SPAWN_BYTES`] at spawn).
pub fn check_exec<'a>(
    field: &str,
    script: &str,
    env: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    total_max: usize,
) -> Result<(), LimitError> {
    let ptr = std::mem::size_of::<usize>();
    if script.len() + 1 > MAX_ARG_STRLEN {
        return Err(fail(
            format!("{field}.run"),
            format!(
                "the script is {} bytes; the kernel's per-string limit is {} (128 KiB)",
                script.len(),
                MAX_ARG_STRLEN - 1
            ),
        ));
    }
    // argv: "/bin/sh", "-c", script.
    let mut total = "/bin/sh".len() + 1 + "-c".len() + 1 + script.len() + 1 + 3 * ptr;
    for (k, v) in env {
        let len = k.len() + 1 + v.len() + 1;
        if len > MAX_ARG_STRLEN {
            return Err(fail(
                format!("{field}.env.{}", preview(&String::from_utf8_lossy(k))),
                format!(
                    "KEY=VALUE is {} bytes; the kernel's per-string limit is {} (128 KiB)",
                    len - 1,
                    MAX_ARG_STRLEN - 1
                ),
            ));
        }
        total += len + ptr;
    }
    if total > total_max {
        return Err(fail(
            field,
            format!("the script and environment take {total} bytes; the limit is {total_max}"),
        ));
    }
    Ok(())
}

/// The first characters of `s`, for messages about huge or odd input.
fn preview(s: &str) -> String {
    let mut out: String = s.chars().take(40).flat_map(char::escape_debug).collect();
    if s.chars().count() > 40 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_check_names_the_variable_and_the_limit() {
        let big = "x".repeat(MAX_ARG_STRLEN);
        let env = [(b"BIG".as_slice(), big.as_bytes())];
        let e = check_exec("steps[0]", "true", env.into_iter(), MAX_EXEC_BYTES).unwrap_err();
        assert_eq!(e.field, "steps[0].env.BIG");
        assert!(e.message.contains("131071"), "{e}");
        let fits = "x".repeat(MAX_ARG_STRLEN - "BIG=".len() - 1);
        let env = [(b"BIG".as_slice(), fits.as_bytes())];
        assert_eq!(check_exec("s", "true", env.into_iter(), MAX_EXEC_BYTES), Ok(()));
    }

    #[test]
    fn exec_check_bounds_the_total() {
        let v = "x".repeat(100_000);
        let env: Vec<(String, String)> = (0..11).map(|i| (format!("K{i}"), v.clone())).collect();
        let it = env.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()));
        let e = check_exec("steps[1]", "true", it, MAX_EXEC_BYTES).unwrap_err();
        assert_eq!(e.field, "steps[1]");
        assert!(e.message.contains(&MAX_EXEC_BYTES.to_string()), "{e}");
    }

    #[test]
    fn text_refuses_nul_and_oversize() {
        assert!(check_text("name", "a\0b", 10).unwrap_err().message.contains("control"));
        assert!(check_text("name", &"a".repeat(11), 10).unwrap_err().message.contains("limit is 10"));
        assert_eq!(check_text("name", "nightly build", 256), Ok(()));
    }
}
