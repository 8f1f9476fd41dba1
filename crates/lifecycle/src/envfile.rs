//! Env files for `multi --env-file` and `diagnose`: `KEY=VALUE` lines, `#` comments,
//! blank lines, an optional `export ` prefix, and single- or double-quoted values (the
//! latter with `\"`, `\\`, `\n`, `\$` escapes). Every bad line is reported with its
//! 1-based number; nothing is ever exported from a file with errors.

use std::path::Path;

/// One line that does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Parses the text of an env file: the variables in order, or every bad line.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, Vec<BadLine>> {
    let mut vars = Vec::new();
    let mut bad = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        match parse_line(raw) {
            Ok(Some(kv)) => vars.push(kv),
            Ok(None) => {}
            Err(message) => bad.push(BadLine { line: i + 1, message }),
        }
    }
    if bad.is_empty() { Ok(vars) } else { Err(bad) }
}

/// Reads and parses an env file; a file that cannot be read is one bad "line 0".
pub fn load(path: &Path) -> Result<Vec<(String, String)>, Vec<BadLine>> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text),
        Err(e) => Err(vec![BadLine { line: 0, message: format!("cannot read {}: {e}", path.display()) }]),
    }
}

fn parse_line(raw: &str) -> Result<Option<(String, String)>, String> {
    let line = raw.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let line = line.strip_prefix("export ").map(str::trim_start).unwrap_or(line);
    let Some((key, value)) = line.split_once('=') else {
        return Err(format!("expected KEY=VALUE, got '{}'", short(line)));
    };
    let key = key.trim_end();
    let valid_key = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_key {
        return Err(format!("'{}' is not a variable name", short(key)));
    }
    Ok(Some((key.to_string(), parse_value(value.trim_start())?)))
}

fn parse_value(v: &str) -> Result<String, String> {
    if let Some(rest) = v.strip_prefix('\'') {
        let Some(end) = rest.find('\'') else { return Err("unterminated single quote".into()) };
        return trailing(&rest[end + 1..]).map(|()| rest[..end].to_string());
    }
    if let Some(rest) = v.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return trailing(&rest[i + 1..]).map(|()| out),
                '\\' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, c @ ('"' | '\\' | '$' | '`'))) => out.push(c),
                    Some((_, c)) => {
                        out.push('\\');
                        out.push(c);
                    }
                    None => break,
                },
                c => out.push(c),
            }
        }
        return Err("unterminated double quote".into());
    }
    let v = v.trim_end();
    if v.contains(['"', '\'']) {
        return Err(format!("unbalanced quote in '{}'", short(v)));
    }
    Ok(v.to_string())
}

/// After a closing quote only spaces and a comment may follow.
fn trailing(rest: &str) -> Result<(), String> {
    let rest = rest.trim();
    if rest.is_empty() || rest.starts_with('#') {
        Ok(())
    } else {
        Err(format!("unexpected '{}' after the closing quote", short(rest)))
    }
}

fn short(s: &str) -> String {
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_lines() {
        let text = "# comment\n\nA=1\nexport B = two words \nC='x # y'\nD=\"q\\\"\\n\" # c\nE=\n";
        let vars = parse(text).unwrap();
        let want = [("A", "1"), ("B", "two words"), ("C", "x # y"), ("D", "q\"\n"), ("E", "")];
        assert_eq!(vars, want.map(|(k, v)| (k.to_string(), v.to_string())));
    }

    #[test]
    fn bad_lines_are_numbered() {
        let text = "A=1\nthis is not valid\n1X=2\nB='open\nC=\"x\" y\n";
        let bad = parse(text).unwrap_err();
        let lines: Vec<usize> = bad.iter().map(|b| b.line).collect();
        assert_eq!(lines, [2, 3, 4, 5]);
        assert_eq!(bad[0].to_string(), "line 2: expected KEY=VALUE, got 'this is not valid'");
    }
}
