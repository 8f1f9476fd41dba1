//! Durations ("30s", "1h 30m", or a number of seconds) and byte sizes ("512MiB", "1G",
//! or a number of bytes) as they appear in job documents and flags.

use std::time::Duration;

/// Parses a duration written as humantime ("250ms", "1h 30m") or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = t.parse::<f64>() {
        // try_: a huge number of seconds would panic in from_secs_f64.
        return Duration::try_from_secs_f64(secs).map_err(|_| {
            format!("'{s}' is not a non-negative duration that fits (at most ~584 billion years)")
        });
    }
    humantime::parse_duration(t).map_err(|e| format!("'{s}' is not a duration ({e}); try 30s, 5m, 1h 30m"))
}

/// Parses a byte size: a bare number of bytes, or a number with K/M/G/T (powers of 1024,
/// with or without "i"/"B", e.g. "512MiB", "1G", "64k").
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("'{s}' is not a size; try 512MiB or 1G"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => {
            return Err(format!("'{s}': unknown size unit '{other}'; use K, M, G or T"));
        }
    };
    let v = n * mult as f64;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(format!("'{s}' is out of range"));
    }
    Ok(v as u64)
}

/// `5s`, `3m`, `2h`, `4d`: how long ago `t` was.
pub fn age(t: chrono::DateTime<chrono::Utc>, now: chrono::DateTime<chrono::Utc>) -> String {
    let secs = (now - t).num_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Serde helpers: a duration field accepts "30s" or a number of seconds, and is written
/// back as milliseconds-precise humantime.
pub mod serde_duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Num(f64),
        Text(String),
    }

    /// Deserializes an optional duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<Raw>::deserialize(d)? {
            None => Ok(None),
            Some(Raw::Num(n)) => Duration::try_from_secs_f64(n).map(Some).map_err(|_| {
                serde::de::Error::custom(format!("{n} is not a non-negative duration that fits"))
            }),
            Some(Raw::Text(s)) => super::parse_duration(&s).map(Some).map_err(serde::de::Error::custom),
        }
    }

    /// Serializes an optional duration as humantime text.
    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            None => s.serialize_none(),
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
        }
    }
}

/// Serde helpers: a size field accepts "512MiB" or a number of bytes; written as bytes.
pub mod serde_size {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Num(u64),
        Text(String),
    }

    /// Deserializes an optional size.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Option::<Raw>::deserialize(d)? {
            None => Ok(None),
            Some(Raw::Num(n)) => Ok(Some(n)),
            Some(Raw::Text(s)) => super::parse_size(&s).map(Some).map_err(serde::de::Error::custom),
        }
    }

    /// Serializes an optional size as a number of bytes.
    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            None => s.serialize_none(),
            Some(n) => s.serialize_u64(*n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_number_of_seconds_is_an_error_not_a_panic() {
        assert!(parse_duration("1.8446744073709552e19").is_err());
        let j = serde_json::from_str::<crate::JobSpec>(
            r#"{"steps":[{"name":"a","run":"true","timeout":1.8446744073709552e19}]}"#,
        );
        assert!(j.unwrap_err().to_string().contains("duration"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(parse_size("1Q").is_err());
        assert!(parse_size("lots").is_err());
    }
}
