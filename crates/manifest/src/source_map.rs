//! Where in a job document's text a field path such as `steps[1].needs[0]` is, so that
//! validation errors (which know paths, not positions) can say `job.yaml:7:14: ...` too.
//! The text is read a second time as a bare YAML tree (JSON parses as YAML as well) that
//! keeps each value's line and column; nothing here decides whether the document is valid.
//! [`deserialize`] is the one way a document is parsed a document: its errors lead with
//! `file:line:column`, found from the failing field's path when the parser has no position
//! of its own (a duration or size that does not parse, say).

use crate::error::{Error, invalid};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;
use std::fmt;

/// A YAML value that remembers where its children are.
enum Node {
    Map(Vec<(String, Spanned<Node>)>),
    Seq(Vec<Spanned<Node>>),
    Scalar,
}

/// Deserializes a YAML or JSON document; an error is [`Error::Invalid`] led by `at(line,
/// column)`. Only `true`/`false` are YAML booleans, so `on: yes` is not silently `true`.
pub fn deserialize<T: de::DeserializeOwned>(
    text: &str,
    json: bool,
    at: &dyn Fn(u64, u64) -> String,
) -> Result<T, Error> {
    if json {
        return serde_json::from_str(text).map_err(|e| {
            // serde_json appends " at line L column C" to its message; we lead with it instead.
            let msg = e.to_string();
            let suffix = format!(" at line {} column {}", e.line(), e.column());
            let msg = msg.strip_suffix(&suffix).unwrap_or(&msg).to_string();
            invalid(format!("{}: {msg}", at(e.line() as u64, e.column() as u64)))
        });
    }
    let options = serde_saphyr::options! { strict_booleans: true };
    let failed_at = std::cell::RefCell::new(String::new());
    let parsed = serde_saphyr::with_deserializer_from_str_with_options(text, options, |d| {
        serde_path_to_error::deserialize(d).map_err(|e| {
            *failed_at.borrow_mut() = e.path().to_string();
            e.into_inner()
        })
    });
    parsed.map_err(|e| {
        let plain = serde_saphyr::render_options! { snippets: serde_saphyr::SnippetMode::Off };
        let msg = e.render_with_options(plain);
        let own = e.location().map(|l| (l.line(), l.column())).filter(|p| *p != (1, 1));
        let path = failed_at.borrow();
        let by_path = (!path.is_empty() && path.as_str() != ".")
            .then(|| locate_pointer(text, &rota_domain::resource::json_pointer(&path)))
            .flatten();
        let msg = match e.location() {
            Some(l) => {
                let suffix = format!(" at line {}, column {}", l.line(), l.column());
                msg.strip_suffix(&suffix).unwrap_or(&msg).to_string()
            }
            None => msg,
        };
        // The parser's own position says where (and its message what); a position found
        // from the path also names the field, which the message alone may not.
        match (own, by_path) {
            (Some((line, column)), _) => invalid(format!("{}: {msg}", at(line, column))),
            (None, Some((line, column))) => invalid(format!("{}: {path}: {msg}", at(line, column))),
            (None, None) => invalid(format!("{}: {msg}", at(1, 1))),
        }
    })
}

/// Line and column (1-based) of the value at `path` in `text`, if it can be found.
pub fn locate(text: &str, path: &str) -> Option<(u64, u64)> {
    let root: Spanned<Node> = serde_saphyr::from_str(text).ok()?;
    let mut node = &root;
    for segment in segments(path)? {
        node = match (&node.value, segment) {
            (Node::Map(entries), Segment::Key(k)) => &entries.iter().find(|(name, _)| name == k)?.1,
            (Node::Seq(items), Segment::Index(i)) => items.get(i)?,
            _ => return None,
        };
    }
    let loc = node.referenced;
    (loc.line() > 0).then(|| (loc.line(), loc.column()))
}

/// Line and column (1-based) of the value a JSON pointer (`/spec/steps/1/run`, RFC 6901)
/// names in `text`; a key that is missing points at its parent instead (a missing field is
/// best shown where it belongs), the root at line 1.
pub fn locate_pointer(text: &str, pointer: &str) -> Option<(u64, u64)> {
    let root: Spanned<Node> = serde_saphyr::from_str(text).ok()?;
    let mut node = &root;
    for raw in pointer.split('/').skip(1) {
        let key = raw.replace("~1", "/").replace("~0", "~");
        let next = match &node.value {
            Node::Map(entries) => entries.iter().find(|(name, _)| *name == key).map(|e| &e.1),
            Node::Seq(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
            Node::Scalar => None,
        };
        match next {
            Some(n) => node = n,
            None => break,
        }
    }
    let loc = node.referenced;
    (loc.line() > 0).then(|| (loc.line(), loc.column()))
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// `steps[1].needs[0]` → `steps`, 1, `needs`, 0. `env.A.B` keeps `A.B` as one key, since
/// environment names are the only keys that may contain dots.
fn segments(path: &str) -> Option<Vec<Segment<'_>>> {
    let mut out = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if out.last() == Some(&Segment::Key("env")) {
            out.push(Segment::Key(rest));
            break;
        }
        let end = rest.find(['.', '[']).unwrap_or(rest.len());
        if end > 0 {
            out.push(Segment::Key(&rest[..end]));
        }
        rest = &rest[end..];
        while let Some(inner) = rest.strip_prefix('[') {
            let close = inner.find(']')?;
            out.push(Segment::Index(inner[..close].parse().ok()?));
            rest = &inner[close + 1..];
        }
        rest = rest.strip_prefix('.').unwrap_or(rest);
    }
    Some(out)
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            entries.push((key, map.next_value::<Spanned<Node>>()?));
        }
        Ok(Node::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_segments() {
        use Segment::*;
        assert_eq!(segments("steps[1].needs[0]").unwrap(), [Key("steps"), Index(1), Key("needs"), Index(0)]);
        assert_eq!(segments("steps[0].env.A.B").unwrap(), [Key("steps"), Index(0), Key("env"), Key("A.B")]);
        assert_eq!(segments("queue").unwrap(), [Key("queue")]);
        assert!(segments("steps[x]").is_none());
    }

    #[test]
    fn json_pointers_find_values_or_their_parent() {
        let yaml = "kind: Workflow\nspec:\n  steps:\n    - name: a\n      run: x\n      env: {A/B: 1}\n";
        assert_eq!(locate_pointer(yaml, "/spec/steps/0/run"), Some((5, 12)));
        assert_eq!(locate_pointer(yaml, "/spec/steps/0/env/A~1B"), Some((6, 18)));
        assert_eq!(locate_pointer(yaml, "/spec/steps/0/timeout"), Some((4, 7)), "missing: its parent");
    }

    #[test]
    fn finds_values_in_yaml_and_json() {
        let yaml = "queue: q\nsteps:\n  - name: a\n    run: x\n  - name: b\n    run: y\n    needs: [a, zz]\n";
        assert_eq!(locate(yaml, "steps[1].needs[1]"), Some((7, 16)));
        assert_eq!(locate(yaml, "steps[1].name"), Some((5, 11)));
        assert_eq!(locate(yaml, "queue"), Some((1, 8)));
        assert_eq!(locate(yaml, "steps[2].name"), None);
        let json = "{\n  \"steps\": [\n    {\"name\": \"a\", \"run\": \"\"}\n  ]\n}\n";
        assert_eq!(locate(json, "steps[0].run").map(|(l, _)| l), Some(3));
    }
}
