//! Human-readable durations in scenario files (`"250ms"`, `"1.5s"`, `"2m"`).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// A duration written as a human string in TOML.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

impl fmt::Debug for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map(Dur).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl schemars::JsonSchema for Dur {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration: \"250ms\", \"1.5s\", \"2m 30s\"",
            "pattern": "^\\s*[0-9]"
        })
    }
}

/// Parses `"250ms"`, `"1.5s"`, `"2m 30s"`; decimal seconds are allowed
/// because scenario authors write them.
pub fn parse(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if let Some(num) = t.strip_suffix('s') {
        if let Ok(secs) = num.trim().parse::<f64>() {
            if secs.is_finite() && secs >= 0.0 && !num.trim().is_empty() {
                // More seconds than a Duration holds is an error, not a panic.
                return Duration::try_from_secs_f64(secs)
                    .map_err(|_| format!("invalid duration `{s}` (too long)"));
            }
        }
    }
    humantime::parse_duration(t).map_err(|e| {
        format!("invalid duration `{s}` ({e}); write e.g. \"250ms\", \"1.5s\", \"2m\"")
    })
}

#[cfg(test)]
mod tests {
    use super::parse;
    use std::time::Duration;

    #[test]
    fn parses_common_forms_and_refuses_garbage() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("2m 30s"), Ok(Duration::from_secs(150)));
        assert!(parse("5 parsecs").is_err());
        assert!(parse("-1s").is_err());
        assert!(parse("s").is_err());
    }

    /// Found by the `scenario` fuzz target: a number of seconds beyond
    /// what a `Duration` holds made the loader panic.
    #[test]
    fn refuses_more_seconds_than_a_duration_holds() {
        assert_eq!(
            parse("4111111111111111111111111111111111s"),
            Err("invalid duration `4111111111111111111111111111111111s` (too long)".into())
        );
        assert!(parse("1e300s").is_err());
        assert!(parse("18446744073709551615s").is_err());
        assert!(parse("18446744073709550000s").is_ok());
    }
}
