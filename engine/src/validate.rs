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

/// Refuses a zero duration for `field`.
pub(crate) fn nonzero(field: &'static str, d: std::time::Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        return Err(ConfigError::new(field, "must be greater than zero"));
    }
    Ok(())
}
