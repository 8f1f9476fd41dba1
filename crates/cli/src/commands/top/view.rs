//! Drawing `rota top`: the [`Model`] onto a ratatui frame (title, fleet, queues, running
//! jobs, the log pane, the heal and status lines, the help pane). Pure: reads the model
//! only, so `TestBackend` snapshots show exactly what a terminal would.

use super::keys::BINDINGS;
use super::model::{Health, Model, Pane, Stream};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, TableState, Wrap};

/// Draws the whole screen.
pub(crate) fn render(frame: &mut Frame<'_>, model: &Model) {
    let area = frame.area();
    let log_height = if model.logs.is_some() { area.height / 3 } else { 0 };
    let fleet_height = (model.fleet_rows().len() as u16 + 3).clamp(4, area.height / 2);
    let [title, fleet, middle, logs, heal, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(fleet_height),
        Constraint::Min(4),
        Constraint::Length(log_height),
        Constraint::Length(u16::from(model.heal.is_some())),
        Constraint::Length(1),
    ])
    .areas(area);
    let [queues, jobs] =
        Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(middle);
    frame.render_widget(Paragraph::new(title_line(model)), title);
    render_fleet(frame, model, fleet);
    render_queues(frame, model, queues);
    render_jobs(frame, model, jobs);
    if model.logs.is_some() {
        render_logs(frame, model, logs);
    }
    if let Some(h) = &model.heal {
        let style = if h.running {
            Style::new().fg(Color::Yellow)
        } else if h.line.contains("failed:") || h.line.starts_with("heal failed") {
            Style::new().fg(Color::Red)
        } else {
            Style::new().fg(Color::Green)
        };
        frame.render_widget(Paragraph::new(Line::styled(h.line.clone(), style)), heal);
    }
    let status_line = match model.confirm {
        Some(job) => {
            Line::styled(format!("cancel job {job}? y/n"), Style::new().fg(Color::Black).bg(Color::Yellow))
        }
        None => Line::styled(model.status.clone(), Style::new().fg(Color::DarkGray)),
    };
    frame.render_widget(Paragraph::new(status_line), status);
    if model.help {
        render_help(frame, area);
    }
}

fn title_line(model: &Model) -> Line<'static> {
    let (stream, colour) = match &model.stream {
        Stream::Connecting => ("events: connecting".to_string(), Color::Yellow),
        Stream::Live => ("events: live".to_string(), Color::Green),
        Stream::Lost(why) => (format!("events: reconnecting ({why})"), Color::Red),
    };
    let mut spans = vec![
        Span::styled("rota top", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format!("  {}  {}  ", model.server, model.scope)),
        Span::styled(stream, Style::new().fg(colour)),
    ];
    if let Some(e) = &model.last_event {
        spans.push(Span::styled(format!("  last: {e}"), Style::new().fg(Color::DarkGray)));
    }
    Line::from(spans)
}

fn pane_block(model: &Model, pane: Pane, title: String) -> Block<'static> {
    let focused = model.focus == pane;
    let style = if focused { Style::new().fg(Color::Cyan) } else { Style::new() };
    let title = if focused { format!(" {title} ▸ ") } else { format!(" {title} ") };
    Block::new().borders(Borders::ALL).border_style(style).title(title)
}

fn health_style(h: Health) -> Style {
    match h {
        Health::Ok => Style::new(),
        Health::Warn => Style::new().fg(Color::Yellow),
        Health::Bad => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        Health::Gone => Style::new().fg(Color::DarkGray),
    }
}

fn selection_style(model: &Model, pane: Pane) -> Style {
    if model.focus == pane { Style::new().add_modifier(Modifier::REVERSED) } else { Style::new() }
}

fn header(cells: &[&'static str]) -> Row<'static> {
    Row::new(cells.iter().copied()).style(Style::new().add_modifier(Modifier::BOLD))
}

fn render_table(frame: &mut Frame<'_>, table: Table<'_>, area: Rect, selected: Option<usize>) {
    let mut state = TableState::new().with_selected(selected);
    frame.render_stateful_widget(table, area, &mut state);
}

fn render_fleet(frame: &mut Frame<'_>, model: &Model, area: Rect) {
    let rows = model.fleet_rows();
    let count = |kind: &str| rows.iter().filter(|r| r.kind == kind).count();
    let mut title = format!("Fleet: {} workers, {} supervisors", count("worker"), count("supervisor"));
    let bad = rows.iter().filter(|r| r.health == Health::Bad).count();
    if bad > 0 {
        title.push_str(&format!(", {bad} unhealthy"));
    }
    let mut heads = vec!["KIND", "NAME", "HOST", "STATE", "SEEN", "SLOTS", "QUEUES / NOTE"];
    let mut widths =
        vec![Constraint::Length(10), Constraint::Min(10), Constraint::Min(8), Constraint::Length(16)];
    widths.extend([Constraint::Length(10), Constraint::Length(6), Constraint::Fill(1)]);
    if model.all_namespaces {
        heads.insert(0, "NAMESPACE");
        widths.insert(0, Constraint::Length(12));
    }
    let body = rows.iter().map(|r| {
        let mut cells = Vec::with_capacity(heads.len());
        if model.all_namespaces {
            cells.push(Cell::from(r.namespace.clone()));
        }
        cells.extend([
            Cell::from(r.kind),
            Cell::from(r.name.clone()),
            Cell::from(r.host.clone()),
            Cell::from(r.state.clone()),
            Cell::from(r.seen.clone()),
            Cell::from(r.slots.clone()),
            Cell::from(r.note.clone()),
        ]);
        Row::new(cells).style(health_style(r.health))
    });
    let table = Table::new(body, widths)
        .header(header(&heads))
        .block(pane_block(model, Pane::Fleet, title))
        .row_highlight_style(selection_style(model, Pane::Fleet));
    render_table(frame, table, area, model.selected(Pane::Fleet));
}

fn render_queues(frame: &mut Frame<'_>, model: &Model, area: Rect) {
    let rows = model.queue_rows();
    let mut heads = vec!["QUEUE", "READY", "RUNNING", "PAUSED", "OLDEST"];
    let mut widths = vec![
        Constraint::Min(8),
        Constraint::Length(6),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(8),
    ];
    if model.all_namespaces {
        heads.insert(0, "NAMESPACE");
        widths.insert(0, Constraint::Length(12));
    }
    let body = rows.iter().map(|q| {
        let mut cells = Vec::with_capacity(heads.len());
        if model.all_namespaces {
            cells.push(q.namespace.clone());
        }
        cells.extend([
            q.queue.clone(),
            q.ready.to_string(),
            q.running.to_string(),
            if q.paused { "yes" } else { "no" }.to_string(),
            model.oldest_waiting(q),
        ]);
        let style = if q.paused { Style::new().fg(Color::Yellow) } else { Style::new() };
        Row::new(cells).style(style)
    });
    let table = Table::new(body, widths)
        .header(header(&heads))
        .block(pane_block(model, Pane::Queues, format!("Queues: {}", rows.len())))
        .row_highlight_style(selection_style(model, Pane::Queues));
    render_table(frame, table, area, model.selected(Pane::Queues));
}

fn render_jobs(frame: &mut Frame<'_>, model: &Model, area: Rect) {
    let jobs = model.job_rows();
    let heads = ["JOB", "NAME", "QUEUE", "STEPS", "AGE"];
    let widths = [
        Constraint::Length(8),
        Constraint::Min(8),
        Constraint::Min(6),
        Constraint::Length(14),
        Constraint::Length(5),
    ];
    let body = jobs.iter().map(|j| {
        Row::new(vec![
            short_id(&j.id.to_string()),
            crate::output::or_dash(j.name.as_deref()).to_string(),
            j.queue.clone(),
            format!("{} running {}/{}", j.steps.running, j.steps.succeeded, j.steps.total),
            crate::output::age(j.created_at, model.now),
        ])
    });
    let table = Table::new(body, widths)
        .header(header(&heads))
        .block(pane_block(model, Pane::Jobs, format!("Running jobs: {}", jobs.len())))
        .row_highlight_style(selection_style(model, Pane::Jobs));
    render_table(frame, table, area, model.selected(Pane::Jobs));
}

/// The last 8 characters of a job id (UUIDv7: the first ones are its time, shared by jobs
/// submitted together).
fn short_id(id: &str) -> String {
    id.chars().rev().take(8).collect::<Vec<_>>().into_iter().rev().collect()
}

fn render_logs(frame: &mut Frame<'_>, model: &Model, area: Rect) {
    let Some(logs) = &model.logs else { return };
    let shown = logs.shown();
    let inner = area.height.saturating_sub(2) as usize;
    let tail: Vec<Line<'_>> =
        shown[shown.len().saturating_sub(inner)..].iter().map(|l| Line::raw(l.clone())).collect();
    let block = Block::new().borders(Borders::ALL).title(format!(" Logs of job {} (l to close) ", logs.job));
    frame.render_widget(Paragraph::new(tail).block(block), area);
}

fn render_help(frame: &mut Frame<'_>, area: Rect) {
    let width = area.width.min(86);
    let height = (BINDINGS.len() as u16 + 4).min(area.height);
    let popup =
        Rect { x: area.x + (area.width - width) / 2, y: area.y + (area.height - height) / 2, width, height };
    let mut lines: Vec<Line<'_>> = BINDINGS
        .iter()
        .map(|(k, what)| {
            Line::from(vec![Span::styled(format!("{k:<14}"), Style::new().fg(Color::Cyan)), Span::raw(*what)])
        })
        .collect();
    lines.push(Line::raw(""));
    lines.push(Line::styled("Unhealthy workers and supervisors are red.", Style::new().fg(Color::DarkGray)));
    frame.render_widget(Clear, popup);
    let block = Block::new().borders(Borders::ALL).title(" Keys (? to close) ");
    frame.render_widget(Paragraph::new(lines).block(block).wrap(Wrap { trim: false }), popup);
}
