//! Drawings the dashboard renders on the server as SVG (no script, and no inline style: the
//! Content-Security-Policy allows neither): a job's step DAG, laid out in columns by depth,
//! and the throughput page's bar and line charts. Pure functions over plain data; the text
//! they place is escaped here.

use std::collections::BTreeMap;
use std::fmt::Write;

/// Escapes text for SVG (XML) content and attributes.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A step to draw: its name, state (a CSS class `state-<state>`) and what it needs.
pub(crate) struct Node<'a> {
    pub(crate) name: &'a str,
    pub(crate) state: &'a str,
    pub(crate) needs: &'a [String],
}

const COL: i64 = 180;
const ROW: i64 = 46;
const BOX_W: i64 = 150;
const BOX_H: i64 = 30;

/// The DAG as an SVG: each step in the column of its depth (longest chain of needs before
/// it), edges from each need to the step. Steps are few (the spec bounds them).
pub(crate) fn dag(nodes: &[Node<'_>]) -> String {
    let index: BTreeMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (n.name, i)).collect();
    // Depth by repeated relaxation: specs are validated acyclic, and the bound stops a loop anyway.
    let mut depth = vec![0usize; nodes.len()];
    for _ in 0..nodes.len() {
        let mut changed = false;
        for (i, n) in nodes.iter().enumerate() {
            for need in n.needs {
                if let Some(&j) = index.get(need.as_str())
                    && depth[i] < depth[j] + 1
                {
                    depth[i] = depth[j] + 1;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let mut rows_in: BTreeMap<usize, i64> = BTreeMap::new();
    let pos: Vec<(i64, i64)> = depth
        .iter()
        .map(|&d| {
            let row = rows_in.entry(d).or_insert(0);
            let p = (10 + d as i64 * COL, 10 + *row * ROW);
            *row += 1;
            p
        })
        .collect();
    let width = 20 + (depth.iter().max().copied().unwrap_or(0) as i64) * COL + BOX_W;
    let height = 20 + rows_in.values().max().copied().unwrap_or(1) * ROW;
    let mut svg = format!(
        r#"<svg class="dag" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" aria-label="step graph">"#
    );
    for (i, n) in nodes.iter().enumerate() {
        for need in n.needs {
            if let Some(&j) = index.get(need.as_str()) {
                let (x1, y1) = (pos[j].0 + BOX_W, pos[j].1 + BOX_H / 2);
                let (x2, y2) = (pos[i].0, pos[i].1 + BOX_H / 2);
                let mid = (x1 + x2) / 2;
                let _ =
                    write!(svg, r#"<path class="edge" d="M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}"/>"#);
            }
        }
    }
    for (i, n) in nodes.iter().enumerate() {
        let (x, y) = pos[i];
        let label: String = if n.name.chars().count() > 20 {
            n.name.chars().take(19).chain(std::iter::once('…')).collect()
        } else {
            n.name.to_string()
        };
        let _ = write!(
            svg,
            r#"<g class="node state-{state}" data-step="{name}"><title>{name}: {state}</title><rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="5"/><text x="{tx}" y="{ty}">{label}</text></g>"#,
            state = esc(n.state),
            name = esc(n.name),
            tx = x + 10,
            ty = y + 20,
            label = esc(&label),
        );
    }
    svg.push_str("</svg>");
    svg
}

/// One bar of a stacked bar chart: a label (its minute) and a value per series.
pub(crate) struct Bar {
    pub(crate) label: String,
    pub(crate) values: Vec<u64>,
}

/// A stacked bar chart, one bar per minute, series drawn with the CSS classes given.
pub(crate) fn bars(bars: &[Bar], classes: &[&str], title: &str) -> String {
    let (w, h, pad) = (720i64, 180i64, 30i64);
    let max = bars.iter().map(|b| b.values.iter().sum::<u64>()).max().unwrap_or(0).max(1);
    let slot = (w - pad) as f64 / bars.len().max(1) as f64;
    let mut svg = format!(
        r#"<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" role="img" aria-label="{t}"><title>{t}</title>"#,
        t = esc(title)
    );
    let _ = write!(
        svg,
        r#"<text class="axis" x="0" y="12">{max}</text><text class="axis" x="0" y="{}">0</text>"#,
        h - pad
    );
    for (i, b) in bars.iter().enumerate() {
        let mut y = (h - pad) as f64;
        let x = pad as f64 + i as f64 * slot;
        for (k, v) in b.values.iter().enumerate() {
            if *v == 0 {
                continue;
            }
            let bh = (*v as f64 / max as f64) * (h - pad - 10) as f64;
            y -= bh;
            let _ = write!(
                svg,
                r#"<rect class="{c}" x="{x:.1}" y="{y:.1}" width="{bw:.1}" height="{bh:.1}"><title>{l}: {v}</title></rect>"#,
                c = classes.get(k).copied().unwrap_or("other"),
                bw = (slot - 1.0).max(1.0),
                l = esc(&b.label),
            );
        }
    }
    if let (Some(first), Some(last)) = (bars.first(), bars.last()) {
        let _ = write!(
            svg,
            r#"<text class="axis" x="{pad}" y="{}">{}</text><text class="axis" x="{}" y="{}" text-anchor="end">{}</text>"#,
            h - 8,
            esc(&first.label),
            w,
            h - 8,
            esc(&last.label)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Lines over the same minutes (mean and max latency, say), in milliseconds.
pub(crate) fn lines(labels: &[String], series: &[(&str, Vec<Option<f64>>)], title: &str) -> String {
    let (w, h, pad) = (720i64, 180i64, 30i64);
    let max = series.iter().flat_map(|(_, v)| v.iter().flatten()).copied().fold(0.0f64, f64::max).max(1.0);
    let slot = (w - pad) as f64 / labels.len().max(1) as f64;
    let mut svg = format!(
        r#"<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" role="img" aria-label="{t}"><title>{t}</title>"#,
        t = esc(title)
    );
    let _ = write!(
        svg,
        r#"<text class="axis" x="0" y="12">{max:.0} ms</text><text class="axis" x="0" y="{}">0</text>"#,
        h - pad
    );
    for (class, values) in series {
        let mut d = String::new();
        for (i, v) in values.iter().enumerate() {
            let Some(v) = v else { continue };
            let x = pad as f64 + (i as f64 + 0.5) * slot;
            let y = (h - pad) as f64 - (v / max) * (h - pad - 10) as f64;
            let _ = write!(d, "{}{x:.1},{y:.1} ", if d.is_empty() { "M" } else { "L" });
            let _ = write!(
                svg,
                r#"<circle class="{class}" cx="{x:.1}" cy="{y:.1}" r="2.5"><title>{}: {v:.1} ms</title></circle>"#,
                esc(&labels[i])
            );
        }
        if !d.is_empty() {
            let _ = write!(svg, r#"<path class="line {class}" d="{}"/>"#, d.trim_end());
        }
    }
    if let (Some(first), Some(last)) = (labels.first(), labels.last()) {
        let _ = write!(
            svg,
            r#"<text class="axis" x="{pad}" y="{}">{}</text><text class="axis" x="{w}" y="{}" text-anchor="end">{}</text>"#,
            h - 8,
            esc(first),
            h - 8,
            esc(last)
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dag_places_steps_by_depth_and_escapes() {
        let needs_a = vec!["a".to_string()];
        let needs_bc = vec!["b".to_string(), "<c>".to_string()];
        let nodes = [
            Node { name: "a", state: "succeeded", needs: &[] },
            Node { name: "b", state: "running", needs: &needs_a },
            Node { name: "<c>", state: "ready", needs: &needs_a },
            Node { name: "d", state: "waiting", needs: &needs_bc },
        ];
        let svg = dag(&nodes);
        assert!(svg.contains(r#"data-step="&lt;c&gt;""#), "{svg}");
        assert!(!svg.contains("<c>"), "names are escaped");
        assert_eq!(svg.matches("<path").count(), 4, "four edges");
        // a in column 0, b and <c> in column 1, d in column 2.
        assert!(svg.contains(r#"<rect x="370""#), "d is two columns in: {svg}");
        assert!(!svg.contains("style="), "no inline style (CSP)");
    }

    #[test]
    fn charts_have_no_inline_style() {
        let b = [
            Bar { label: "12:00".into(), values: vec![3, 1] },
            Bar { label: "12:01".into(), values: vec![0, 0] },
        ];
        let svg = bars(&b, &["ok", "bad"], "jobs");
        assert_eq!(svg.matches("<rect").count(), 2);
        let l = lines(&["12:00".into(), "12:01".into()], &[("mean", vec![Some(2.0), None])], "latency");
        assert!(l.contains("<circle") && !l.contains("style="));
    }
}
