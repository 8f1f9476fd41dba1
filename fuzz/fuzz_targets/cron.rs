//! A `Schedule`'s `cron` and `timeZone` (first and second line of the input) compiled, then
//! its next fire time and due times computed around a DST change. Must never panic or hang.
#![no_main]

use chrono::{DateTime, Duration, Utc};
use libfuzzer_sys::fuzz_target;
use rota_domain::schedule::{Overlap, ScheduleSpec};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut lines = text.splitn(3, '\n');
    let cron = lines.next().unwrap_or_default().to_string();
    let time_zone = lines.next().map(str::to_string);
    let catchup = lines.next().map_or(1, |l| l.len() as u32 % 12);
    let spec = ScheduleSpec {
        cron,
        time_zone,
        workflow: "w".into(),
        inputs: Default::default(),
        overlap: Overlap::default(),
        catchup,
        suspend: false,
    };
    let Ok(compiled) = spec.compile() else { return };
    // 2026-03-29 01:30 UTC: Europe's spring-forward hour.
    let Some(now) = DateTime::<Utc>::from_timestamp(1_774_747_800, 0) else { return };
    let _ = compiled.next_after(now);
    let _ = compiled.next_after(now - Duration::days(400));
    let _ = compiled.due(now - Duration::hours(3), now, spec.catchup);
});
