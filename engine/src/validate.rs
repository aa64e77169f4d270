//! Configuration checked when it is built: one typed error naming the field.

use thiserror::Error;

/// A configuration value the engine refuses, found when the session,
/// acceptor or gate is built — never later, as a panic or a hang.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("invalid configuration: `{field}` {problem}")]
#[non_exhaustive]
pub struct ConfigError {
    /// The field, as `Struct::field`.
    pub field: &'static str,
    /// What is wrong with its value, and what would be accepted.
    pub problem: String,
}

impl ConfigError {
    pub(crate) fn new(field: &'static str, problem: impl Into<String>) -> Self {
        ConfigError {
            field,
            problem: problem.into(),
        }
    }
}

/// The shortest timer the engine accepts. Below a millisecond no network
/// round trip fits, so a shorter timeout could only ever fail, and a
/// shorter interval would keep a core busy for nothing.
pub const MIN_TIMER: std::time::Duration = std::time::Duration::from_millis(1);

/// Refuses a cap (`field`, `value`) below the first step it caps
/// (`floor_name`, `floor`).
pub(crate) fn cap_at_least(
    field: &'static str,
    value: std::time::Duration,
    floor_name: &str,
    floor: std::time::Duration,
) -> Result<(), ConfigError> {
    if value < floor {
        return Err(ConfigError::new(
            field,
            format!("({value:?}) must be at least {floor_name} ({floor:?})"),
        ));
    }
    Ok(())
}

/// Refuses a duration below [`MIN_TIMER`] for `field`.
pub(crate) fn at_least_1ms(field: &'static str, d: std::time::Duration) -> Result<(), ConfigError> {
    if d < MIN_TIMER {
        return Err(ConfigError::new(
            field,
            format!("({d:?}) must be at least {MIN_TIMER:?}"),
        ));
    }
    Ok(())
}
