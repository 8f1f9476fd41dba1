//! The `Schedule` resource's spec and its pure rules: a cron pattern (5 fields, or 6 with
//! seconds first, or an `@hourly`-style alias) read in an IANA time zone, the workflow it
//! runs and with which inputs, what to do when a fire time comes while the previous run is
//! still going (`overlap`), and how many fire times missed during a downtime still run
//! (`catchup`). [`Compiled::due`] says which fire times since the last recorded one run and
//! which are recorded as missed; the controller (server) and the store's `schedule_fires`
//! table make each fire time act at most once. Fire times follow croner's DST rule: in a
//! spring-forward gap a fixed-time pattern fires at the first instant after the gap and an
//! interval pattern skips the gap; in a fall-back overlap a fixed-time pattern fires once
//! (the first pass) and an interval pattern fires in both passes. Paths in errors are
//! relative to the resource's `spec`.

use crate::ids::JobId;
use crate::spec::SpecError;
use crate::state::JobState;
use crate::workflow::Scalar;
use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// `catchup` when a document gives none: after a downtime, the most recent missed fire
/// time runs and the older ones are recorded as missed.
pub const DEFAULT_CATCHUP: u32 = 1;
/// Largest `catchup`.
pub const MAX_CATCHUP: u32 = 100;
/// Most missed fire times recorded (one row each) for one gap; older ones in a longer gap
/// are only counted in the log: a once-a-second schedule down for a day must not write
/// 86 400 rows.
pub const MAX_MISSED_RECORDED: usize = 1000;
/// Longest cron pattern accepted.
pub const MAX_CRON: usize = 256;
/// The variable naming the schedule that started a run (every step of it sees it).
pub const SCHEDULE_ENV: &str = "ROTA_SCHEDULE";
/// The variable holding the fire time a run was started for (RFC 3339, UTC).
pub const FIRE_TIME_ENV: &str = "ROTA_FIRE_TIME";
/// The zone a schedule without `timeZone` reads its pattern in.
pub const DEFAULT_ZONE: &str = "UTC";

/// What a `Schedule` declares.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScheduleSpec {
    /// `MIN HOUR DOM MON DOW`, `SEC MIN HOUR DOM MON DOW`, or `@hourly`, `@daily`,
    /// `@weekly`, `@monthly`, `@yearly`.
    pub cron: String,
    /// IANA zone the pattern is read in (`Europe/Berlin`); UTC when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// The `Workflow` each fire time runs.
    pub workflow: String,
    /// The workflow's inputs for every run.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, Scalar>,
    /// What a fire time does while the previous run's job has not finished.
    #[serde(default, skip_serializing_if = "Overlap::is_allow")]
    pub overlap: Overlap,
    /// How many of the most recent due fire times run when several are due at once (after
    /// a downtime); older ones are recorded as missed. 1 to [`MAX_CATCHUP`].
    #[serde(default = "default_catchup", skip_serializing_if = "is_default_catchup")]
    pub catchup: u32,
    /// While true, nothing fires and nothing is recorded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
}

fn default_catchup() -> u32 {
    DEFAULT_CATCHUP
}

fn is_default_catchup(n: &u32) -> bool {
    *n == DEFAULT_CATCHUP
}

/// What a fire time does while the schedule's previous run has not finished.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Runs anyway: runs may overlap.
    #[default]
    Allow,
    /// Records the fire time as skipped.
    Skip,
    /// Cancels the previous run, then runs.
    CancelPrevious,
}

impl Overlap {
    fn is_allow(&self) -> bool {
        *self == Overlap::Allow
    }

    /// As documents write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Allow => "allow",
            Overlap::Skip => "skip",
            Overlap::CancelPrevious => "cancel_previous",
        }
    }
}

/// What became of one fire time (one row of the store's `schedule_fires`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum FireOutcome {
    /// A run of the workflow was started (a job).
    Run,
    /// `overlap: skip` and the previous run had not finished.
    Skipped,
    /// Older than the `catchup` most recent due fire times.
    Missed,
}

impl FireOutcome {
    /// As stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            FireOutcome::Run => "run",
            FireOutcome::Skipped => "skipped",
            FireOutcome::Missed => "missed",
        }
    }

    /// The outcome stored as `s`.
    pub fn parse(s: &str) -> Option<FireOutcome> {
        [FireOutcome::Run, FireOutcome::Skipped, FireOutcome::Missed].into_iter().find(|o| o.as_str() == s)
    }
}

impl fmt::Display for FireOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One recorded fire time as `status.schedule` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct FireView {
    /// The fire time.
    pub fire_time: DateTime<Utc>,
    /// What became of it.
    pub outcome: FireOutcome,
    /// The run's job (outcome `run`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
    /// The run's job state when read (`None`: pruned, or not a run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<JobState>,
}

/// What `GET` of a schedule shows in `status.schedule`, computed when read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ScheduleStatus {
    /// The pattern.
    pub cron: String,
    /// The zone it is read in.
    pub time_zone: String,
    /// The next fire time after now (`None` when suspended or the pattern never fires again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_fire_time: Option<DateTime<Utc>>,
    /// The most recent fire time that started a run, with its job and that job's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<FireView>,
    /// Recent fire times that were skipped or missed, newest first.
    #[serde(default)]
    pub recent_not_run: Vec<FireView>,
}

fn err(path: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError { path: path.into(), message: message.into() }
}

/// A spec's pattern and zone, parsed.
#[derive(Clone, Debug)]
pub struct Compiled {
    cron: Cron,
    zone: chrono_tz::Tz,
}

/// Which due fire times run and which are recorded as missed, each oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Due {
    /// Older than the `catchup` most recent: recorded as missed.
    pub missed: Vec<DateTime<Utc>>,
    /// The `catchup` most recent: each runs (or is skipped by `overlap`).
    pub run: Vec<DateTime<Utc>>,
    /// Whether older due fire times than `missed` holds were left unrecorded
    /// ([`MAX_MISSED_RECORDED`]).
    pub truncated: bool,
}

impl ScheduleSpec {
    /// The zone's name as shown (`UTC` when unset).
    pub fn zone_name(&self) -> &str {
        self.time_zone.as_deref().unwrap_or(DEFAULT_ZONE)
    }

    /// Checks the declaration (the workflow's existence and inputs are the server's to
    /// check: they need the stored workflow).
    pub fn validate(&self) -> Result<(), SpecError> {
        self.compile().map(|_| ())
    }

    /// The pattern and zone, parsed; errors name `cron`, `timeZone`, `catchup` or `workflow`.
    pub fn compile(&self) -> Result<Compiled, SpecError> {
        crate::limits::check_name("workflow", &self.workflow)?;
        if self.cron.len() > MAX_CRON {
            return Err(err("cron", format!("is {} bytes; the limit is {MAX_CRON}", self.cron.len())));
        }
        let cron = parse_cron(&self.cron).map_err(|m| err("cron", m))?;
        let zone: chrono_tz::Tz = self.zone_name().parse().map_err(|_| {
            err(
                "timeZone",
                format!("`{}` is not an IANA time zone (e.g. Europe/Berlin, UTC)", self.zone_name()),
            )
        })?;
        // A pattern no date matches (`0 0 31 2 *`) would search to croner's year 5000 each
        // time its next fire time is asked for: refused once here instead.
        if cron.find_next_occurrence(&DateTime::<Utc>::UNIX_EPOCH.with_timezone(&zone), false).is_err() {
            return Err(err("cron", format!("`{}` matches no date; it would never fire", self.cron.trim())));
        }
        if !(1..=MAX_CATCHUP).contains(&self.catchup) {
            return Err(err("catchup", format!("must be between 1 and {MAX_CATCHUP}")));
        }
        Ok(Compiled { cron, zone })
    }

    /// The inputs as a run takes them (text, as `rota run --input` gives them).
    pub fn input_texts(&self) -> BTreeMap<String, String> {
        self.inputs.iter().map(|(k, v)| (k.clone(), v.text())).collect()
    }
}

/// Parses a pattern: 5 fields, 6 with seconds first, or an alias; no year field.
fn parse_cron(pattern: &str) -> Result<Cron, String> {
    let trimmed = pattern.trim();
    if trimmed.starts_with('@') {
        let known = ["@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually"];
        if !known.iter().any(|k| k.eq_ignore_ascii_case(trimmed)) {
            return Err(format!("`{trimmed}` is not an alias; use one of {}", known.join(", ")));
        }
    }
    let fields = trimmed.split_whitespace().count();
    if !trimmed.starts_with('@') && !(5..=6).contains(&fields) {
        return Err(format!(
            "`{trimmed}` has {fields} fields; use 5 (MIN HOUR DOM MON DOW) or 6 (SEC MIN HOUR DOM MON DOW)"
        ));
    }
    // croner reads an empty list item (`,` alone, `1,,2`) as no value at all: a field that
    // matches nothing, and a search for the next fire time that steps minute by minute to
    // croner's year 5000 (found by fuzzing: 7 s per search).
    if let Some(field) = trimmed.split_whitespace().find(|f| f.split(',').any(str::is_empty)) {
        return Err(format!("`{trimmed}`: `{field}` has an empty item in its list (a stray comma)"));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(trimmed)
        .map_err(|e| format!("`{trimmed}` is not a cron pattern: {e}"))
}

impl Compiled {
    /// The first fire time strictly after `t`, if the pattern fires again.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.zone);
        self.cron.find_next_occurrence(&local, false).ok().map(|d| d.with_timezone(&Utc))
    }

    /// The fire times in `(since, now]`: the `catchup` most recent run, up to
    /// [`MAX_MISSED_RECORDED`] older ones are missed, and any older still are left out
    /// (`truncated`). Walks back from `now`, so a long gap costs only what it records.
    pub fn due(&self, since: DateTime<Utc>, now: DateTime<Utc>, catchup: u32) -> Due {
        if now <= since {
            return Due::default();
        }
        let want = catchup as usize + MAX_MISSED_RECORDED;
        let start = now.with_timezone(&self.zone);
        let mut newest_first: Vec<DateTime<Utc>> = Vec::new();
        let mut truncated = false;
        for t in self.cron.iter_from(start, croner::Direction::Backward) {
            let t = t.with_timezone(&Utc);
            if t <= since {
                break;
            }
            if newest_first.len() == want {
                truncated = true;
                break;
            }
            newest_first.push(t);
        }
        newest_first.reverse();
        let split = newest_first.len().saturating_sub(catchup as usize);
        let run = newest_first.split_off(split);
        Due { missed: newest_first, run, truncated }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec(cron: &str, zone: Option<&str>) -> ScheduleSpec {
        ScheduleSpec {
            cron: cron.into(),
            time_zone: zone.map(str::to_string),
            workflow: "w".into(),
            inputs: BTreeMap::new(),
            overlap: Overlap::Allow,
            catchup: DEFAULT_CATCHUP,
            suspend: false,
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next_n(c: &Compiled, from: &str, n: usize) -> Vec<String> {
        let mut t = utc(from);
        let mut out = Vec::new();
        for _ in 0..n {
            t = c.next_after(t).unwrap();
            out.push(t.to_rfc3339());
        }
        out
    }

    #[test]
    fn patterns_of_five_or_six_fields_and_aliases_parse() {
        for ok in [
            "*/5 * * * *",
            "*/2 * * * * *",
            "@hourly",
            "@DAILY",
            "@weekly",
            "@monthly",
            "@yearly",
            "0 9 * * MON-FRI",
        ] {
            spec(ok, None).validate().unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["* * * *", "0 0 0 1 1 * 2030", "61 * * * *", "@reboot", "nonsense", ""] {
            let e = spec(bad, None).validate().unwrap_err();
            assert_eq!(e.path, "cron", "{bad}: {e}");
        }
        let c = spec("@hourly", None).compile().unwrap();
        assert_eq!(next_n(&c, "2026-01-01T10:20:00Z", 1), ["2026-01-01T11:00:00+00:00"]);
        let c = spec("*/2 * * * * *", None).compile().unwrap();
        assert_eq!(
            next_n(&c, "2026-01-01T10:20:01Z", 2),
            ["2026-01-01T10:20:02+00:00", "2026-01-01T10:20:04+00:00"]
        );
    }

    /// Found by `fuzz/fuzz_targets/cron.rs`: `, * * *  * * ` compiled to a pattern whose
    /// seconds field matches nothing, and each `next_after` and `due` then searched to
    /// croner's year 5000 (7 s each in a release build: a libFuzzer timeout). Patterns that
    /// can never fire are refused when compiled instead.
    #[test]
    fn patterns_that_never_fire_are_refused() {
        for bad in [", * * *  * * ", "* , * * *", "0 0 * * ,", "1,,2 * * * *", "0 0 31 2 *", "0 0 30 2 *"] {
            let e = spec(bad, None).validate().unwrap_err();
            assert_eq!(e.path, "cron", "{bad}: {e}");
            eprintln!("{bad:?}: {e}");
        }
        let e = spec(", * * *  * * ", None).validate().unwrap_err();
        assert!(e.message.contains("stray comma"), "{e}");
        let e = spec("0 0 31 2 *", Some("Europe/Berlin")).validate().unwrap_err();
        assert!(e.message.contains("never fire"), "{e}");
        // Rare is not never: 29 February on a Monday.
        let c = spec("0 0 29 2 1", None).compile().unwrap();
        assert_eq!(next_n(&c, "2026-03-29T01:30:00Z", 1), ["2027-02-01T00:00:00+00:00"]);
    }

    #[test]
    fn zones_and_bounds_are_checked_naming_the_field() {
        let e = spec("@daily", Some("Mars/Olympus")).validate().unwrap_err();
        assert_eq!(e.path, "timeZone");
        let mut s = spec("@daily", Some("Europe/Berlin"));
        s.validate().unwrap();
        s.catchup = MAX_CATCHUP + 1;
        assert_eq!(s.validate().unwrap_err().path, "catchup");
        s.catchup = 0;
        assert_eq!(s.validate().unwrap_err().path, "catchup");
        s.catchup = 1;
        s.workflow = "has space".into();
        assert_eq!(s.validate().unwrap_err().path, "workflow");
    }

    #[test]
    fn defaults_leave_the_canonical_text() {
        let s: ScheduleSpec = serde_json::from_str(r#"{"cron":"@daily","workflow":"w"}"#).unwrap();
        assert_eq!((s.catchup, s.overlap, s.suspend, s.zone_name()), (1, Overlap::Allow, false, "UTC"));
        assert_eq!(serde_json::to_string(&s).unwrap(), r#"{"cron":"@daily","workflow":"w"}"#);
        let s: ScheduleSpec = serde_json::from_str(
            r#"{"cron":"@daily","workflow":"w","overlap":"cancel_previous","timeZone":"Europe/Berlin"}"#,
        )
        .unwrap();
        assert_eq!(s.overlap, Overlap::CancelPrevious);
        assert!(serde_json::from_str::<ScheduleSpec>(r#"{"cron":"@daily","workflow":"w","x":1}"#).is_err());
    }

    /// Europe/Berlin springs forward on 2026-03-29 at 02:00 CET (01:00Z) to 03:00 CEST.
    #[test]
    fn spring_forward_fires_a_fixed_time_after_the_gap_and_skips_the_gap_for_intervals() {
        let fixed = spec("30 2 * * *", Some("Europe/Berlin")).compile().unwrap();
        // 02:30 does not exist that day: the first instant after the gap (03:00 CEST).
        assert_eq!(
            next_n(&fixed, "2026-03-28T12:00:00Z", 3),
            ["2026-03-29T01:00:00+00:00", "2026-03-30T00:30:00+00:00", "2026-03-31T00:30:00+00:00"]
        );
        let every_half_hour = spec("*/30 * * * *", Some("Europe/Berlin")).compile().unwrap();
        // 01:30 CET, then 03:00 CEST: 02:00 and 02:30 never happen.
        assert_eq!(
            next_n(&every_half_hour, "2026-03-29T00:15:00Z", 3),
            ["2026-03-29T00:30:00+00:00", "2026-03-29T01:00:00+00:00", "2026-03-29T01:30:00+00:00"]
        );
    }

    /// Europe/Berlin falls back on 2026-10-25 at 03:00 CEST (01:00Z) to 02:00 CET.
    #[test]
    fn fall_back_fires_a_fixed_time_once_and_intervals_in_both_passes() {
        let fixed = spec("30 2 * * *", Some("Europe/Berlin")).compile().unwrap();
        // 02:30 CEST (00:30Z) only; the second 02:30 (CET, 01:30Z) does not fire.
        assert_eq!(
            next_n(&fixed, "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T00:30:00+00:00", "2026-10-26T01:30:00+00:00"]
        );
        let every_half_hour = spec("*/30 * * * *", Some("Europe/Berlin")).compile().unwrap();
        assert_eq!(
            next_n(&every_half_hour, "2026-10-24T23:45:00Z", 5),
            [
                "2026-10-25T00:00:00+00:00",
                "2026-10-25T00:30:00+00:00",
                "2026-10-25T01:00:00+00:00",
                "2026-10-25T01:30:00+00:00",
                "2026-10-25T02:00:00+00:00"
            ]
        );
    }

    #[test]
    fn due_fire_times_run_up_to_catchup_and_the_rest_are_missed() {
        let c = spec("*/2 * * * * *", None).compile().unwrap();
        let since = utc("2026-01-01T00:00:00Z");
        // Nothing new.
        assert_eq!(c.due(since, since, 1), Due::default());
        assert_eq!(c.due(since, utc("2026-01-01T00:00:01Z"), 1), Due::default());
        // On time: the one due fire time runs (a fire time equal to now is due).
        let d = c.due(since, utc("2026-01-01T00:00:02Z"), 1);
        assert_eq!((d.run, d.missed), (vec![utc("2026-01-01T00:00:02Z")], vec![]));
        // A 10 s gap with catchup 1: the newest runs, four are missed, oldest first.
        let d = c.due(since, utc("2026-01-01T00:00:11Z"), 1);
        assert_eq!(d.run, vec![utc("2026-01-01T00:00:10Z")]);
        assert_eq!(d.missed.len(), 4);
        assert_eq!(d.missed[0], utc("2026-01-01T00:00:02Z"));
        assert!(!d.truncated);
        let d = c.due(since, utc("2026-01-01T00:00:11Z"), 3);
        assert_eq!((d.run.len(), d.missed.len()), (3, 2));
        // A day down: only the newest are recorded.
        let d = c.due(since, utc("2026-01-02T00:00:00Z"), 2);
        assert_eq!((d.run.len(), d.missed.len(), d.truncated), (2, MAX_MISSED_RECORDED, true));
        assert_eq!(d.run[1], utc("2026-01-02T00:00:00Z"));
    }

    #[test]
    fn due_in_a_zone_walks_back_across_a_fall_back() {
        let c = spec("*/30 * * * *", Some("Europe/Berlin")).compile().unwrap();
        let d = c.due(utc("2026-10-24T23:45:00Z"), utc("2026-10-25T02:00:00Z"), 100);
        let got: Vec<String> = d.run.iter().map(|t| t.to_rfc3339()).collect();
        assert_eq!(
            got,
            [
                "2026-10-25T00:00:00+00:00",
                "2026-10-25T00:30:00+00:00",
                "2026-10-25T01:00:00+00:00",
                "2026-10-25T01:30:00+00:00",
                "2026-10-25T02:00:00+00:00"
            ]
        );
    }
}
