//! Scenario files: the model ([`Scenario`]), durations, and the loader.

pub mod duration;
mod load;
mod model;

pub use crate::fault::{Direction, Fault, HostRole};
pub use duration::Dur;
pub use load::{load_all, load_file, parse, LoadError, Loaded};
pub use model::*;
