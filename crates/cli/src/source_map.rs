//! Where in a job document's text a field path such as `steps[1].needs[0]` is, so that
//! validation errors (which know paths, not positions) can say `job.yaml:7:14: ...` too.
//! The text is read a second time as a bare YAML tree (JSON parses as YAML as well) that
//! keeps each value's line and column; nothing here decides whether the document is valid.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;
use std::fmt;

/// A YAML value that remembers where its children are.
enum Node {
    Map(Vec<(String, Spanned<Node>)>),
    Seq(Vec<Spanned<Node>>),
    Scalar,
}

/// Line and column (1-based) of the value at `path` in `text`, if it can be found.
pub(crate) fn locate(text: &str, path: &str) -> Option<(u64, u64)> {
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
