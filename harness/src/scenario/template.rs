//! Scaffolds for new scenarios (`netmend new ID --from TEMPLATE`): a
//! commented scenario file of each workload kind and its catalog entry,
//! both valid as written.

/// The workload a new scenario starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Template {
    /// A byte stream under a path fault, with the resumable session.
    Stream,
    /// Messages through several brokers, one of which crashes.
    Signaling,
    /// Your own program (curl as a start) under a path fault, netns only.
    Command,
}

/// The scenario file and the catalog entry of a new scenario `id`.
pub fn scaffold(id: &str, template: Template) -> (String, String) {
    let scenario = match template {
        Template::Stream => include_str!("../../templates/stream.toml"),
        Template::Signaling => include_str!("../../templates/signaling.toml"),
        Template::Command => include_str!("../../templates/command.toml"),
    };
    let catalog = include_str!("../../templates/catalog.toml");
    (
        scenario.replace("{{id}}", id),
        catalog.replace("{{id}}", id),
    )
}

/// Whether `id` can name a scenario (and its files): letters, digits, `-`
/// and `_`, as the loader requires.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}
