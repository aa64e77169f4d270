//! Benchmarks that need no network namespace (`netmend bench …`); the
//! netns ones live in `backend::netns::bench`.

pub mod signal;
