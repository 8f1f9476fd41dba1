//! `rota top`: a live terminal view of the fleet, queues and running jobs over the event
//! stream, with heal, cancel and log keys. This module owns the run loop ([`App`]: keys,
//! stream events, throttled snapshot refreshes, actions through `rota_client`) and the
//! terminal's setup and restore; `model`, `view` and `keys` are pure and know no I/O.

mod keys;
mod model;
// Only the tests draw the README's screenshot.
#[cfg(test)]
mod svg;
mod view;

#[cfg(test)]
mod tests;

use crate::args::GlobalArgs;
use crate::commands::job::Api;
use crate::config::Paths;
use crate::failure;
use anyhow::{Context, Result, anyhow};
use keys::Action;
use model::{Logs, Model, Snapshot};
use ratatui::Terminal;
use ratatui::backend::Backend;
use ratatui::crossterm::event::{self, Event, KeyEvent};
use rota_api_types::events::{EventsQuery, StreamEvent};
use rota_api_types::jobs::{ListJobsQuery, LogsQuery};
use rota_api_types::supervisors::{FleetHealRequest, FleetHealResponse};
use rota_client::Client;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Refreshes triggered by events come at most this often.
const THROTTLE: Duration = Duration::from_millis(300);
/// A refresh at least this often, whatever the stream says (it may be idle, resyncing or
/// lost).
const FALLBACK: Duration = Duration::from_secs(5);
/// How often the loop wakes without input (ages tick on, throttled refreshes run).
const TICK: Duration = Duration::from_millis(250);
/// Most running jobs shown.
const RUNNING_LIMIT: u32 = 200;
/// How long the server may take to heal each failed worker (as `worker heal --fleet`'s
/// default: registration within 15 s, plus the supervisor's link).
const HEAL_WAIT: Duration = Duration::from_secs(30);
/// Most bytes of logs read per refresh of the log pane.
const LOG_PAGE: u64 = 256 * 1024;

/// `rota top`. Refuses to start unless stdout is a terminal: it would fill a pipe or a file
/// with escape codes. That is the environment's fault, not the command line's, so the exit
/// code is 78 (`failure::EXIT_CONFIG`, the CLI's "bad environment or configuration" code,
/// as for a missing token file), not 2 (a usage error: the flags are fine) nor 1.
pub(crate) fn run(global: &GlobalArgs, paths: &Paths) -> Result<ExitCode> {
    if !std::io::stdout().is_terminal() {
        return Err(failure::with_code(
            failure::EXIT_CONFIG,
            anyhow!(
                "rota top needs a terminal, and stdout is not one; for scripts use `rota worker list`, \
                 `rota worker stats`, `rota job list` or `rota events -f --json`"
            ),
        ));
    }
    let api = Api::connect(global, paths)?;
    let model = Model::new(
        api.server.clone(),
        global.namespace.as_deref(),
        global.all_namespaces,
        chrono::Utc::now(),
    );
    crate::commands::block_on(async move {
        let mut signals = crate::signals::StopSignals::install()?;
        // Raw mode, the alternate screen, and a panic hook that restores both before the
        // previous hook prints the panic (ratatui's own).
        let mut terminal = ratatui::try_init().map_err(|e| {
            ratatui::restore();
            anyhow!("cannot set up the terminal: {e}")
        })?;
        let _restore = Restore;
        let keys = read_keys();
        let app = App::start(api, model);
        tokio::select! {
            r = app.run(&mut terminal, keys) => r?,
            // In raw mode Ctrl-C is a key; these come from `kill`.
            _ = signals.recv() => {}
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Restores the terminal when `run` ends, by error or not.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// Key presses from the terminal, read on a thread of their own (crossterm's reads block).
/// The thread ends when the receiver is gone.
fn read_keys() -> mpsc::Receiver<KeyEvent> {
    let (tx, rx) = mpsc::channel(64);
    std::thread::spawn(move || {
        while !tx.is_closed() {
            match event::poll(Duration::from_millis(200)) {
                Ok(true) => match event::read() {
                    Ok(Event::Key(k)) => {
                        if tx.blocking_send(k).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                },
                Ok(false) => {}
                Err(_) => return,
            }
        }
    });
    rx
}

/// What the stream task tells the loop.
enum StreamMsg {
    Connected,
    Event(Box<StreamEvent>),
    Lost(String),
}

/// Whether the loop goes on.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Quit,
}

/// The run loop's state: the model, the client and what runs beside the loop (the event
/// stream, a heal).
pub(crate) struct App {
    api: Api,
    pub(crate) model: Model,
    stream: mpsc::Receiver<StreamMsg>,
    stream_task: tokio::task::JoinHandle<()>,
    heal_tx: mpsc::Sender<Result<FleetHealResponse, String>>,
    heal_rx: mpsc::Receiver<Result<FleetHealResponse, String>>,
    tick: tokio::time::Interval,
    dirty: bool,
    last_refresh: Option<Instant>,
}

impl Drop for App {
    fn drop(&mut self) {
        self.stream_task.abort();
    }
}

impl App {
    /// Starts following the event stream; the first refresh happens on the first step.
    pub(crate) fn start(api: Api, model: Model) -> Self {
        let (tx, stream) = mpsc::channel(1024);
        let stream_task = tokio::spawn(follow_events(api.client.clone(), tx));
        let (heal_tx, heal_rx) = mpsc::channel(1);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self { api, model, stream, stream_task, heal_tx, heal_rx, tick, dirty: true, last_refresh: None }
    }

    /// Steps until quit (a quit key, or the key source ending).
    pub(crate) async fn run<B: Backend>(
        mut self,
        terminal: &mut Terminal<B>,
        mut keys: mpsc::Receiver<KeyEvent>,
    ) -> Result<()>
    where
        B::Error: Send + Sync + 'static,
    {
        while self.step(terminal, &mut keys).await? == Flow::Continue {}
        Ok(())
    }

    /// Waits for one thing (a key, a stream event, the heal's answer, a tick), acts on it,
    /// refreshes if due, and redraws.
    pub(crate) async fn step<B: Backend>(
        &mut self,
        terminal: &mut Terminal<B>,
        keys: &mut mpsc::Receiver<KeyEvent>,
    ) -> Result<Flow>
    where
        B::Error: Send + Sync + 'static,
    {
        if self.last_refresh.is_some() {
            tokio::select! {
                // Keys first: the operator waits on them.
                biased;
                k = keys.recv() => {
                    let Some(k) = k else { return Ok(Flow::Quit) };
                    if let Some(a) = keys::action(&k, self.model.confirm.is_some())
                        && self.act(a).await == Flow::Quit
                    {
                        return Ok(Flow::Quit);
                    }
                }
                m = self.stream.recv() => match m {
                    Some(StreamMsg::Connected) => self.model.stream_connected(),
                    Some(StreamMsg::Event(e)) => self.dirty |= self.model.on_event(&e),
                    Some(StreamMsg::Lost(why)) => self.model.stream_lost(why),
                    None => self.model.stream_lost("the stream task ended".into()),
                },
                h = self.heal_rx.recv() => {
                    if let Some(outcome) = h {
                        self.model.heal_finished(outcome);
                        self.dirty = true;
                    }
                }
                _ = self.tick.tick() => {}
            }
        }
        let since = self.last_refresh.map(|t| t.elapsed());
        if since.is_none_or(|s| (self.dirty && s >= THROTTLE) || s >= FALLBACK) {
            self.refresh().await;
        }
        self.model.now = chrono::Utc::now();
        self.draw(terminal)?;
        Ok(Flow::Continue)
    }

    /// Draws the model.
    pub(crate) fn draw<B: Backend>(&self, terminal: &mut Terminal<B>) -> Result<()>
    where
        B::Error: Send + Sync + 'static,
    {
        terminal.draw(|f| view::render(f, &self.model)).context("cannot draw")?;
        Ok(())
    }

    /// Reads a new snapshot (and the open log pane's new lines); an error goes to the
    /// status line and the old snapshot stays.
    async fn refresh(&mut self) {
        self.dirty = false;
        self.last_refresh = Some(Instant::now());
        match load(&self.api.client).await {
            Ok(s) => self.model.load(s, chrono::Utc::now()),
            Err(e) => self.model.status = format!("cannot refresh: {:#}", self.api.error(e, None)),
        }
        if let Some(logs) = self.model.logs.as_mut()
            && let Err(e) = read_logs(&self.api.client, logs).await
        {
            let job = logs.job;
            self.model.status = format!("cannot read the logs: {:#}", self.api.error(e, Some(job)));
        }
    }

    /// Does what a key asked for.
    async fn act(&mut self, action: Action) -> Flow {
        let m = &mut self.model;
        match action {
            Action::Quit => return Flow::Quit,
            Action::Back if m.help => m.help = false,
            Action::Back if m.logs.is_some() => m.logs = None,
            Action::Back => return Flow::Quit,
            Action::NextPane => m.cycle_focus(true),
            Action::PrevPane => m.cycle_focus(false),
            Action::Up => m.move_selection(-1),
            Action::Down => m.move_selection(1),
            Action::Help => m.help = !m.help,
            Action::Refresh => self.dirty = true,
            Action::Heal if m.healing() => m.status = "a heal is already running".into(),
            Action::Heal => {
                m.heal_started();
                let client = self.api.client.clone();
                let tx = self.heal_tx.clone();
                let server = self.api.server.clone();
                tokio::spawn(async move {
                    let req = FleetHealRequest {
                        dry_run: false,
                        timeout_ms: Some(u64::try_from(HEAL_WAIT.as_millis()).unwrap_or(u64::MAX)),
                        worker: None,
                    };
                    let outcome = client.heal_fleet(&req).await.map_err(|e| format!("{server}: {e}"));
                    let _ = tx.send(outcome).await;
                });
            }
            Action::Cancel => match m.selected_job() {
                Some(j) => m.confirm = Some(j.id),
                None => m.status = "no running job selected (Tab to the jobs pane)".into(),
            },
            Action::Answer(yes) => {
                let Some(job) = m.confirm.take() else { return Flow::Continue };
                if !yes {
                    m.status = "cancel: not asked".into();
                    return Flow::Continue;
                }
                m.status = match self.api.client.cancel_job(job).await {
                    Ok(s) => format!("cancelled job {job}: now {}", s.state),
                    Err(e) => format!("cannot cancel job {job}: {:#}", self.api.error(e, Some(job))),
                };
                self.dirty = true;
            }
            Action::Logs => match (m.logs.take(), m.selected_job().map(|j| j.id)) {
                (Some(_), _) => {}
                (None, None) => m.status = "no running job selected (Tab to the jobs pane)".into(),
                (None, Some(job)) => {
                    let mut logs = Logs::new(job);
                    if let Err(e) = read_logs(&self.api.client, &mut logs).await {
                        m.status = format!("cannot read the logs: {:#}", self.api.error(e, Some(job)));
                    }
                    m.logs = Some(logs);
                }
            },
        }
        Flow::Continue
    }
}

/// One snapshot: workers, supervisors, queues (with how long their oldest job has waited)
/// and running jobs.
async fn load(client: &Client) -> rota_client::Result<Snapshot> {
    let running = ListJobsQuery {
        state: Some("running".into()),
        limit: Some(RUNNING_LIMIT),
        ..ListJobsQuery::default()
    };
    let (workers, supervisors, queues, running) = tokio::try_join!(
        client.list_workers(),
        client.list_supervisors(),
        client.list_queues(),
        client.list_jobs(&running),
    )?;
    Ok(Snapshot {
        workers: workers.workers,
        supervisors: supervisors.supervisors,
        queues: queues.queues,
        running: running.jobs,
    })
}

/// Reads `logs`' job's new output (after its cursor) into it, page after page. The first
/// read of a long log keeps only its tail.
async fn read_logs(client: &Client, logs: &mut Logs) -> rota_client::Result<()> {
    for _ in 0..64 {
        // The first read starts at the output's tail (the server finds it).
        let q = LogsQuery {
            after: logs.cursor,
            max_bytes: Some(LOG_PAGE),
            tail_bytes: logs.cursor.is_none().then_some(LOG_PAGE),
            ..LogsQuery::default()
        };
        let page = client.job_logs(logs.job, &q).await?;
        let empty = page.chunks.is_empty();
        for c in &page.chunks {
            logs.push(&c.step, &c.data.0);
        }
        logs.cursor = Some(page.next_cursor);
        if empty || page.done {
            break;
        }
    }
    Ok(())
}

/// Follows the event stream into `tx`, reconnecting where it left off (`Last-Event-ID`)
/// with the one backoff, until the loop is gone.
async fn follow_events(client: Client, tx: mpsc::Sender<StreamMsg>) {
    let query = EventsQuery { follow: Some(true), ..EventsQuery::default() };
    let mut last: Option<String> = None;
    let mut backoff = rota_worker::backoff::Backoff::server();
    loop {
        match client.events(&query, last.as_deref()).await {
            Ok(mut stream) => {
                backoff.reset();
                if tx.send(StreamMsg::Connected).await.is_err() {
                    return;
                }
                loop {
                    let msg = match stream.next().await {
                        Ok(Some(e)) => StreamMsg::Event(Box::new(e)),
                        Ok(None) => break,
                        Err(e) => StreamMsg::Lost(e.to_string()),
                    };
                    let lost = matches!(msg, StreamMsg::Lost(_));
                    if tx.send(msg).await.is_err() {
                        return;
                    }
                    if lost {
                        break;
                    }
                }
                last = stream.last_id().map(str::to_string).or(last);
            }
            Err(e) => {
                if tx.send(StreamMsg::Lost(e.to_string())).await.is_err() {
                    return;
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}
