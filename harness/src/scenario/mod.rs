//! Scenario files: the model ([`Scenario`]) and the loader. The faults a
//! scenario schedules are [`crate::fault`]'s, its durations
//! [`crate::duration`]'s; both are named here too, as a file spells them.

mod load;
mod model;
pub mod template;

pub use crate::duration::Dur;
pub use crate::fault::{Direction, Fault, HostRole};
pub use load::{load_all, load_file, parse, parse_bytes, LoadError, Loaded};
pub use model::*;

/// The JSON Schema of scenario files (`netmend schema`; shipped as
/// `scenarios/scenario.schema.json` for editors that complete and check
/// TOML against a schema).
pub fn schema() -> String {
    let schema = schemars::schema_for!(Scenario);
    // A schema of plain structs always serializes.
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}
