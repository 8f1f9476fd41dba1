//! Turning an argv into one POSIX shell command line that `sh -c` splits back into exactly
//! that argv: `rota job submit -- sh -c 'echo "$X"'` must run `sh` with the two words
//! `-c` and `echo "$X"`, not whatever a naive join would make of them. Also how a printed
//! command names rota itself, so that it works when pasted.

/// Quotes every word and joins them with spaces.
pub fn join_quoted<S: AsRef<str>>(argv: &[S]) -> String {
    let mut out = String::new();
    for (i, word) in argv.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&quote(word.as_ref(), i == 0));
    }
    out
}

/// One word, quoted only when it needs to be. In command position, words that the shell
/// would read as an assignment (`A=b`) or a reserved word (`if`, `!`) are quoted too.
fn quote(word: &str, command_position: bool) -> String {
    let plain = !word.is_empty()
        && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"_@%+:,./-=".contains(&b))
        && !(command_position && (word.contains('=') || is_reserved(word)));
    if plain {
        return word.to_string();
    }
    // Inside single quotes nothing is special except the closing quote, so a quote in the
    // word ends the quoted part, adds an escaped quote, and starts a new quoted part.
    let mut q = String::with_capacity(word.len() + 2);
    q.push('\'');
    for c in word.chars() {
        if c == '\'' {
            q.push_str("'\\''");
        } else {
            q.push(c);
        }
    }
    q.push('\'');
    q
}

/// How a shell runs this very program, for commands rota prints: `rota` when the first
/// `rota` on the PATH is this binary, else this binary's own path, quoted (after
/// `cargo run` there is no `rota` on the PATH, or an older one).
pub fn this_program() -> String {
    let Ok(exe) = std::env::current_exe() else { return "rota".into() };
    if first_on_path("rota").is_some_and(|found| same_file(&found, &exe)) {
        return "rota".into();
    }
    quote(&exe.display().to_string(), true)
}

/// The first executable file called `name` in the PATH's directories, as a shell finds it.
fn first_on_path(name: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| {
        std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// The same file (through symlinks and hard links): same device and inode.
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Reserved words of POSIX sh and of the shells commonly behind `sh` (bash, zsh).
fn is_reserved(word: &str) -> bool {
    matches!(
        word,
        "!" | "{"
            | "}"
            | "case"
            | "coproc"
            | "do"
            | "done"
            | "elif"
            | "else"
            | "esac"
            | "fi"
            | "for"
            | "function"
            | "if"
            | "in"
            | "select"
            | "then"
            | "time"
            | "until"
            | "while"
            | "[["
            | "]]"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn quotes_only_what_needs_it() {
        assert_eq!(join_quoted(&["echo", "hello"]), "echo hello");
        assert_eq!(join_quoted(&["ls", "-la", "/tmp/a.b"]), "ls -la /tmp/a.b");
        assert_eq!(join_quoted(&["echo", ""]), "echo ''");
        assert_eq!(join_quoted(&["echo", "it's"]), r"echo 'it'\''s'");
        assert_eq!(join_quoted(&["A=b", "x=y"]), "'A=b' x=y");
        assert_eq!(join_quoted(&["if", "if"]), "'if' if");
    }

    /// The real test: the shell splits our line back into the same words.
    #[test]
    fn round_trips_through_sh() {
        let words = [
            "printf",
            "%s\\n",
            "plain",
            "",
            " lead and trail ",
            "it's",
            "''",
            "\"double\"",
            "$HOME",
            "`id`",
            "$(id)",
            "a\\b",
            "semi;colon",
            "amp&&pipe|",
            "glob*?[x]",
            "~user",
            "#not a comment",
            "new\nline",
            "tab\there",
            "ünïcödé",
            "!bang",
            "{a,b}",
            "<in >out",
        ];
        let line = join_quoted(&words);
        let out = Command::new("sh").arg("-c").arg(&line).env_clear().output().unwrap();
        assert!(out.status.success(), "{line}");
        let expected: String = words[2..].iter().map(|w| format!("{w}\n")).collect();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), expected, "{line}");
    }
}
