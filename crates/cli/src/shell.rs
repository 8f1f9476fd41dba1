//! Turning an argv into one POSIX shell command line that `sh -c` splits back into exactly
//! that argv: `rota job submit -- sh -c 'echo "$X"'` must run `sh` with the two words
//! `-c` and `echo "$X"`, not whatever a naive join would make of them.

/// Quotes every word and joins them with spaces.
pub(crate) fn join_quoted<S: AsRef<str>>(argv: &[S]) -> String {
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
