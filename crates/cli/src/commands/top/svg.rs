//! A ratatui buffer as an SVG picture (monospace text, the cells' colours and bold), for
//! the README's screenshot of `rota top`. Pure: a buffer in, a string out.

use ratatui::buffer::Buffer;
use ratatui::style::{Color, Modifier};
use std::fmt::Write;

const CELL_W: f64 = 8.4;
const CELL_H: f64 = 18.0;
const FONT_SIZE: f64 = 14.0;
const BACKGROUND: &str = "#1e1e2e";
const FOREGROUND: &str = "#d4d4d4";

/// The SVG of `buf`: one `<rect>` per run of a background colour, one `<text>` per run of
/// cells with the same look, each placed at its column so the grid holds in any font.
pub(crate) fn render(buf: &Buffer) -> String {
    let area = buf.area;
    let (w, h) = (num(f64::from(area.width) * CELL_W), num(f64::from(area.height) * CELL_H));
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="'DejaVu Sans Mono', 'Menlo', 'Consolas', monospace" font-size="{FONT_SIZE}">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="{BACKGROUND}"/>"#);
    for y in area.top()..area.bottom() {
        let mut x = area.left();
        while x < area.right() {
            let this = look(buf, x, y);
            let start = x;
            let mut text = String::new();
            while x < area.right() && look(buf, x, y) == this {
                text.push_str(buf[(x, y)].symbol());
                x += 1;
            }
            let (fg, bg, bold) = this;
            let px = num(f64::from(start - area.left()) * CELL_W);
            let py = f64::from(y - area.top()) * CELL_H;
            let rw = num(f64::from(x - start) * CELL_W);
            if let Some(bg) = bg {
                let _ = writeln!(
                    out,
                    r#"<rect x="{px}" y="{}" width="{rw}" height="{CELL_H}" fill="{bg}"/>"#,
                    num(py)
                );
            }
            if text.trim().is_empty() {
                continue;
            }
            let weight = if bold { r#" font-weight="bold""# } else { "" };
            // The run's width is forced (`textLength`): a font a little wider or narrower
            // than the grid still keeps every column in place.
            let baseline = num(py + CELL_H * 0.75);
            let _ = writeln!(
                out,
                r#"<text x="{px}" y="{baseline}" textLength="{rw}" lengthAdjust="spacingAndGlyphs" fill="{fg}"{weight} xml:space="preserve">{}</text>"#,
                escape(&text)
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

/// A cell's foreground, background (none: the picture's) and boldness, reversal applied.
fn look(buf: &Buffer, x: u16, y: u16) -> (String, Option<String>, bool) {
    let c = &buf[(x, y)];
    let (fg, bg) = if c.modifier.contains(Modifier::REVERSED) {
        (
            colour(c.bg).unwrap_or_else(|| BACKGROUND.into()),
            Some(colour(c.fg).unwrap_or_else(|| FOREGROUND.into())),
        )
    } else {
        (colour(c.fg).unwrap_or_else(|| FOREGROUND.into()), colour(c.bg))
    };
    (fg, bg, c.modifier.contains(Modifier::BOLD))
}

/// A terminal colour as `#rrggbb` (`None`: the default).
fn colour(c: Color) -> Option<String> {
    let hex = match c {
        Color::Reset => return None,
        Color::Black => "#1e1e2e",
        Color::Red => "#f38ba8",
        Color::Green => "#a6e3a1",
        Color::Yellow => "#f9e2af",
        Color::Blue => "#89b4fa",
        Color::Magenta => "#cba6f7",
        Color::Cyan => "#89dceb",
        Color::Gray => "#bac2de",
        Color::DarkGray => "#7f849c",
        Color::LightRed => "#f5a0b8",
        Color::LightGreen => "#b8f0b0",
        Color::LightYellow => "#faeac0",
        Color::LightBlue => "#a0c4fb",
        Color::LightMagenta => "#dcbcf9",
        Color::LightCyan => "#a8e8f2",
        Color::White => "#ffffff",
        Color::Rgb(r, g, b) => return Some(format!("#{r:02x}{g:02x}{b:02x}")),
        Color::Indexed(i) => return Some(format!("#{i:02x}{i:02x}{i:02x}")),
    };
    Some(hex.to_string())
}

/// A coordinate with at most one decimal (`924`, `33.6`).
fn num(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ratatui::layout::Rect;
    use ratatui::style::Style;

    #[test]
    fn cells_become_positioned_coloured_text() {
        let mut buf = Buffer::empty(Rect::new(0, 0, 6, 1));
        buf.set_string(0, 0, "a<b", Style::new().fg(Color::Red));
        buf.set_string(4, 0, "ok", Style::new().add_modifier(Modifier::REVERSED));
        let svg = render(&buf);
        assert!(
            svg.contains(r##"<text x="0" y="13.5" textLength="25.2" lengthAdjust="spacingAndGlyphs" fill="#f38ba8" xml:space="preserve">a&lt;b</text>"##),
            "{svg}"
        );
        assert!(svg.contains(r##"<rect x="33.6" y="0" width="16.8" height="18" fill="#d4d4d4"/>"##), "{svg}");
        assert!(
            svg.starts_with(r#"<svg xmlns="http://www.w3.org/2000/svg" width="50.4" height="18""#),
            "{svg}"
        );
        assert!(svg.ends_with("</svg>\n"));
    }
}
