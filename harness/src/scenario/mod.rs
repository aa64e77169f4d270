//! Scenario files: the model ([`Scenario`]) and the loader. The faults a
//! scenario schedules are [`crate::fault`]'s, its durations
//! [`crate::duration`]'s; both are named here too, as a file spells them.

mod load;
mod model;

pub use crate::duration::Dur;
pub use crate::fault::{Direction, Fault, HostRole};
pub use load::{load_all, load_file, parse, LoadError, Loaded};
pub use model::*;
