//! The throughput page: jobs ended per minute by outcome and submit→start latency over the
//! last hour, drawn on the server from the store's figures (the whole fleet's, whichever
//! server answers; never one server's own counters), cached briefly per namespace.

use super::graph::{Bar, bars, lines};
use super::{Chrome, UiError, UiRequest, html};
use crate::error::ApiError;
use crate::state::AppState;
use askama::Template;
use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Duration as ChronoDuration, DurationRound, Utc};
use rota_domain::JobState;
use rota_store::Throughput;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a computed hour is reused: the page refreshes on job events, many a second.
const CACHE_FOR: Duration = Duration::from_secs(5);

type Cache = Mutex<HashMap<String, (Instant, DateTime<Utc>, Throughput)>>;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(Cache::default)
}

/// The last hour's figures of `namespace` (`None`: all), at most [`CACHE_FOR`] old.
async fn hour(state: &AppState, namespace: Option<&str>) -> Result<(DateTime<Utc>, Throughput), ApiError> {
    let key = format!("{}|{}", state.me.id.0, namespace.unwrap_or("*"));
    if let Some((at, since, t)) = cache().lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key)
        && at.elapsed() < CACHE_FOR
    {
        return Ok((*since, t.clone()));
    }
    let now = state.store.now();
    let since = now.duration_trunc(ChronoDuration::minutes(1)).unwrap_or(now) - ChronoDuration::minutes(59);
    let t = state.store.throughput(since, namespace).await?;
    let mut c = cache().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    c.retain(|_, (at, _, _)| at.elapsed() < CACHE_FOR);
    c.insert(key, (Instant::now(), since, t.clone()));
    Ok((since, t))
}

const OUTCOMES: [JobState; 4] =
    [JobState::Succeeded, JobState::Failed, JobState::Cancelled, JobState::Revoked];

#[derive(Template)]
#[template(path = "ui/throughput_live.html")]
struct ThroughputLive {
    jobs_svg: String,
    latency_svg: String,
    totals: Vec<(&'static str, u64)>,
    started: u64,
    mean_ms: String,
}

#[derive(Template)]
#[template(path = "ui/throughput.html")]
struct ThroughputPage {
    chrome: Chrome,
    live_url: String,
    live: String,
}

/// `GET /ui/throughput`.
pub(crate) async fn page(req: UiRequest, State(state): State<AppState>) -> Result<Response, UiError> {
    let (since, t) = hour(&state, req.scope.filter()).await?;
    let minutes: Vec<DateTime<Utc>> = (0..60).map(|i| since + ChronoDuration::minutes(i)).collect();
    let labels: Vec<String> = minutes.iter().map(|m| m.format("%H:%M").to_string()).collect();
    let chart_bars: Vec<Bar> = minutes
        .iter()
        .zip(&labels)
        .map(|(m, label)| Bar {
            label: label.clone(),
            values: OUTCOMES
                .iter()
                .map(|o| t.finished.iter().filter(|f| f.minute == *m && f.state == *o).map(|f| f.jobs).sum())
                .collect(),
        })
        .collect();
    let mean: Vec<Option<f64>> =
        minutes.iter().map(|m| t.latency.iter().find(|l| l.minute == *m).map(|l| l.mean_ms)).collect();
    let max: Vec<Option<f64>> =
        minutes.iter().map(|m| t.latency.iter().find(|l| l.minute == *m).map(|l| l.max_ms as f64)).collect();
    let started: u64 = t.latency.iter().map(|l| l.started).sum();
    let weighted: f64 = t.latency.iter().map(|l| l.mean_ms * l.started as f64).sum();
    let live = ThroughputLive {
        jobs_svg: bars(
            &chart_bars,
            &["succeeded", "failed", "cancelled", "revoked"],
            "jobs ended per minute by outcome",
        ),
        latency_svg: lines(
            &labels,
            &[("mean", mean), ("max", max)],
            "submit to start latency per minute (ms)",
        ),
        totals: OUTCOMES
            .iter()
            .map(|o| (o.as_str(), t.finished.iter().filter(|f| f.state == *o).map(|f| f.jobs).sum()))
            .collect(),
        started,
        mean_ms: if started > 0 { format!("{:.1}", weighted / started as f64) } else { "—".into() },
    };
    if req.fragment {
        return html(&live);
    }
    let chrome = req.chrome(&state, "Throughput", "throughput", "&kind=job,resync").await;
    html(&ThroughputPage {
        live_url: format!("/ui/throughput?{}", chrome.nsq()),
        chrome,
        live: live.render()?,
    })
}
