//! Every reason text users see is rendered by `rota_domain::Reason` / `LostCause` and by
//! nothing else: this test renders each variant and fails if a backend crate's source spells
//! one in a string literal (test code included), whole or in a telling piece.
//!
//! Variable parts (step names, numbers, a worker's own why) are rendered as a marker; a
//! literal's format arguments (`{}`, `{name}`) become the same marker, so `"lost: {why}"`
//! matches the rendered `lost: <marker>`. Pieces shorter than 8 characters and bare state
//! names (`failed`, `timeout`: also SQL vocabulary) are only matched as part of a whole text.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use rota_domain::{AttemptOutcome, JobState, LostCause, Reason, StopCause};
use std::path::{Path, PathBuf};

/// Stands for a variable part.
const MARK: &str = "\u{1}";
const STOPS: [StopCause; 4] =
    [StopCause::Cancelled, StopCause::Revoked, StopCause::Deadline, StopCause::NotHeld];

/// Fails to compile when a variant is added without a sample below.
fn covered(r: &Reason) {
    match r {
        Reason::Attempt(_)
        | Reason::AfterAttempts(..)
        | Reason::LostFails(_)
        | Reason::NotRetried(..)
        | Reason::Stopped(_)
        | Reason::StoppedWhileRunning(_)
        | Reason::NotRunAfterFailure(_)
        | Reason::NotRunAfterCancel(_)
        | Reason::CancelledByWorker
        | Reason::Succeeded { .. }
        | Reason::Step { .. }
        | Reason::Ended(_)
        | Reason::SecretInOutput { .. }
        | Reason::SecretUnavailable { .. } => {}
    }
}

fn covered_lost(c: &LostCause) {
    match c {
        LostCause::LeaseExpired
        | LostCause::SessionEnded
        | LostCause::Superseded { .. }
        | LostCause::Replaced { .. }
        | LostCause::Forgotten { .. }
        | LostCause::StoppedUnasked => {}
    }
}

fn outcomes() -> Vec<AttemptOutcome> {
    let failed = |exit_code, signal, why| AttemptOutcome::Failed { exit_code, signal, why };
    vec![
        AttemptOutcome::Succeeded,
        failed(None, None, Some(MARK.to_string())),
        failed(Some(i32::MAX), None, None),
        failed(None, Some(i32::MAX), None),
        failed(None, None, None),
        AttemptOutcome::Timeout,
        AttemptOutcome::Memory,
        AttemptOutcome::Cancelled,
        AttemptOutcome::Lost { why: MARK.to_string() },
    ]
}

/// Every reason rendered, variable parts as [`MARK`].
fn samples() -> Vec<String> {
    let m = || MARK.to_string();
    let why = AttemptOutcome::Failed { exit_code: None, signal: None, why: Some(m()) };
    let mut reasons: Vec<Reason> = outcomes().into_iter().map(Reason::Attempt).collect();
    reasons.extend([
        Reason::AfterAttempts(why.clone(), u32::MAX),
        Reason::LostFails(AttemptOutcome::Lost { why: m() }),
        Reason::NotRetried(why, m()),
        Reason::NotRunAfterFailure(m()),
        Reason::NotRunAfterCancel(m()),
        Reason::CancelledByWorker,
        Reason::Succeeded { steps: 1 },
        Reason::Succeeded { steps: usize::MAX },
        Reason::Step { step: m(), reason: m() },
        Reason::SecretInOutput { key: m() },
        Reason::SecretUnavailable { reference: m(), problem: m() },
    ]);
    reasons.extend(STOPS.map(Reason::Stopped));
    reasons.extend(JobState::ALL.iter().map(|s| Reason::Ended(*s)));
    let mut out: Vec<String> = reasons.iter().inspect(|r| covered(r)).map(|r| r.to_string()).collect();
    // The text around a stop's own reason, which a backend might compose.
    for c in STOPS {
        let whole = Reason::StoppedWhileRunning(c);
        covered(&whole);
        out.push(whole.to_string().replace(&Reason::Stopped(c).to_string(), MARK));
    }
    let lost = [
        LostCause::LeaseExpired,
        LostCause::SessionEnded,
        LostCause::Superseded { name: m() },
        LostCause::Replaced { name: m(), instance: Some(m()), host: m() },
        LostCause::Replaced { name: m(), instance: None, host: m() },
        LostCause::Forgotten { name: m() },
        LostCause::StoppedUnasked,
    ];
    out.extend(lost.iter().inspect(|c| covered_lost(c)).map(ToString::to_string));
    for n in [i32::MAX.to_string(), u32::MAX.to_string(), usize::MAX.to_string()] {
        for s in &mut out {
            *s = s.replace(&n, MARK);
        }
    }
    out
}

fn is_state_name(s: &str) -> bool {
    use rota_domain::{AttemptStatus, StepState};
    JobState::ALL.iter().any(|x| x.as_str() == s)
        || StepState::ALL.iter().any(|x| x.as_str() == s)
        || AttemptStatus::ALL.iter().any(|x| x.as_str() == s)
}

/// The telling pieces of a rendered sample: its constant parts of at least 8 characters.
fn pieces(sample: &str) -> Vec<&str> {
    sample.split(MARK).map(str::trim).filter(|p| p.chars().count() >= 8 && !is_state_name(p)).collect()
}

/// A whole sample worth matching on its own: some constant text, not a bare state name.
fn whole_worth(sample: &str) -> bool {
    let constant: String = sample.split(MARK).collect();
    constant.trim().chars().count() >= 4 && !is_state_name(sample)
}

/// The string literals of a Rust source (plain, raw, byte), escapes resolved, comments and
/// char literals skipped.
fn string_literals(src: &str) -> Vec<String> {
    let c: Vec<char> = src.chars().collect();
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let prev_ident = i > 0 && ident(c[i - 1]);
        match c[i] {
            '/' if c.get(i + 1) == Some(&'/') => {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
            }
            '/' if c.get(i + 1) == Some(&'*') => {
                let mut depth = 0;
                while i < c.len() {
                    if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 2;
                    } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            '\'' => {
                // A char literal ('x', '\n', '"') or a lifetime ('a).
                if c.get(i + 1) == Some(&'\\') {
                    i += 2;
                    while i < c.len() && c[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                } else if c.get(i + 2) == Some(&'\'') {
                    i += 3;
                } else {
                    i += 1;
                }
            }
            'r' | 'b' if !prev_ident => {
                let mut j = i + 1;
                if c[i] == 'b' && c.get(j) == Some(&'r') {
                    j += 1;
                }
                let raw = c[i] == 'r' || j == i + 2;
                let hashes_from = j;
                while raw && c.get(j) == Some(&'#') {
                    j += 1;
                }
                if c.get(j) != Some(&'"') {
                    i += 1;
                    continue;
                }
                if raw {
                    let close: String =
                        std::iter::once('"').chain(c[hashes_from..j].iter().copied()).collect();
                    let rest: String = c[j + 1..].iter().collect();
                    let end = rest.find(&close).unwrap_or(rest.len());
                    out.push(rest[..end].to_string());
                    i = j + 1 + rest[..end].chars().count() + close.chars().count();
                } else {
                    i = j;
                }
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                while i < c.len() && c[i] != '"' {
                    if c[i] == '\\' {
                        i += 1;
                        match c.get(i) {
                            Some('\n') => {
                                while i + 1 < c.len() && c[i + 1].is_whitespace() {
                                    i += 1;
                                }
                            }
                            Some('n') => s.push('\n'),
                            Some('t') => s.push('\t'),
                            Some(&other) => s.push(other),
                            None => {}
                        }
                    } else {
                        s.push(c[i]);
                    }
                    i += 1;
                }
                out.push(s);
                i += 1;
            }
            _ => i += 1,
        }
    }
    out
}

/// A literal with its format arguments (`{}`, `{name}`, `{0:?}`) as [`MARK`].
fn normalize(lit: &str) -> String {
    let mut out = String::new();
    let mut chars = lit.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                for inner in chars.by_ref() {
                    if inner == '}' {
                        break;
                    }
                }
                out.push_str(MARK);
            }
            _ => out.push(ch),
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// Every `(file, literal)` of the backend crates' sources.
fn backend_literals() -> Vec<(PathBuf, String)> {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    rust_files(&crates.join("store-sqlite/src"), &mut files);
    let postgres = crates.join("store-postgres/src");
    if postgres.is_dir() {
        rust_files(&postgres, &mut files);
    }
    files
        .into_iter()
        .flat_map(|f| {
            let src = std::fs::read_to_string(&f).unwrap();
            string_literals(&src).into_iter().map(move |l| (f.clone(), normalize(&l)))
        })
        .collect()
}

#[test]
fn no_backend_source_spells_a_reason() {
    let samples = samples();
    let literals = backend_literals();
    // The scan must see the backend's code, or it would pass by reading nothing.
    assert!(
        literals.iter().any(|(_, l)| l.contains("UPDATE steps SET state")),
        "the SQLite backend's literals were not read"
    );
    let mut found = std::collections::BTreeSet::new();
    for sample in &samples {
        for (file, lit) in &literals {
            let whole = whole_worth(sample) && lit.contains(sample.as_str());
            let piece = pieces(sample).into_iter().find(|p| lit.contains(p));
            if whole || piece.is_some() {
                let what = piece.unwrap_or(sample).replace(MARK, "…");
                found.insert(format!("{}: {:?} contains {what:?}", file.display(), lit.replace(MARK, "{}")));
            }
        }
    }
    assert!(
        found.is_empty(),
        "reason texts belong in rota-domain (reason.rs):\n{}",
        found.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn the_scan_sees_what_it_must() {
    let src = r##"
        // "lease expired" in a comment is fine
        let c = '"'; let l: &'static str = "x";
        conn.execute("UPDATE steps SET reason = 'lost: lease expired'")?;
        let r = format!("step '{}': {reason}", a.step);
        let w = r#"raw "not run: step 'x' failed""#;
        let s = "a \
                 b";
    "##;
    let lits: Vec<String> = string_literals(src).iter().map(|l| normalize(l)).collect();
    assert_eq!(lits[0], "x");
    assert!(lits[1].contains("lost: lease expired"));
    assert_eq!(lits[2], format!("step '{MARK}': {MARK}"));
    assert_eq!(lits[3], "raw \"not run: step 'x' failed\"");
    assert_eq!(lits[4], "a b");
    assert_eq!(lits.len(), 5, "{lits:?}");
    let samples = samples();
    let hit = |lit: &str| {
        samples.iter().any(|s| {
            (whole_worth(s) && lit.contains(s.as_str())) || pieces(s).iter().any(|p| lit.contains(p))
        })
    };
    assert!(hit(&lits[1]) && hit(&lits[2]) && hit(&lits[3]));
    assert!(!hit(&lits[0]) && !hit(&lits[4]));
    assert!(!hit("UPDATE steps SET state = 'failed' WHERE state IN ('waiting', 'ready')"));
    assert!(hit(&normalize("{run_reason} while it ran (its attempt was left to finish)")));
}
