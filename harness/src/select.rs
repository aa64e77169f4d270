//! Which scenarios a run takes: by id or glob (`--only`, `--skip`), by tag
//! (`--tag`), and one shard of n (`--partition k/n`) so a CI matrix splits
//! the suite without two jobs running the same scenario.

use crate::scenario::Scenario;
use globset::{Glob, GlobMatcher};
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// A selection flag that cannot be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SelectError {
    /// `--only`/`--skip` is not a valid glob.
    #[error("`{pattern}` is not a valid id or glob: {why}")]
    Pattern {
        /// What was given.
        pattern: String,
        /// The glob parser's reason.
        why: String,
    },
    /// `--partition` is not `k/n` with `1 <= k <= n`.
    #[error("`{0}` is not a partition: write k/n with 1 <= k <= n (e.g. 2/4)")]
    Partition(String),
}

/// An id or a glob over ids (`tcp-*`, `broker-?lap`).
#[derive(Clone, Debug)]
pub struct Pattern {
    text: String,
    matcher: GlobMatcher,
}

impl FromStr for Pattern {
    type Err = SelectError;

    fn from_str(text: &str) -> Result<Self, SelectError> {
        let glob = Glob::new(text).map_err(|e| SelectError::Pattern {
            pattern: text.to_string(),
            why: e.kind().to_string(),
        })?;
        Ok(Pattern {
            text: text.to_string(),
            matcher: glob.compile_matcher(),
        })
    }
}

impl Pattern {
    /// Whether `id` matches.
    pub fn matches(&self, id: &str) -> bool {
        self.matcher.is_match(id)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Shard `index` of `count` (both from 1, as written: `2/4`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partition {
    /// Which shard, 1 ..= `count`.
    pub index: u32,
    /// How many shards.
    pub count: u32,
}

impl FromStr for Partition {
    type Err = SelectError;

    fn from_str(text: &str) -> Result<Self, SelectError> {
        let bad = || SelectError::Partition(text.to_string());
        let (k, n) = text.split_once('/').ok_or_else(bad)?;
        let index: u32 = k.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if index == 0 || count == 0 || index > count {
            return Err(bad());
        }
        Ok(Partition { index, count })
    }
}

impl Partition {
    /// Whether the scenario `id` falls into this shard: by a hash of the
    /// id (FNV-1a, stable across versions and machines), so adding a
    /// scenario moves no other between shards.
    pub fn holds(&self, id: &str) -> bool {
        crate::hash::fnv1a(id.bytes()) % u64::from(self.count) == u64::from(self.index - 1)
    }
}

/// What `run` takes of the scenarios it loaded.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Only scenarios whose id matches one of these (all when empty).
    pub only: Vec<Pattern>,
    /// Never scenarios whose id matches one of these.
    pub skip: Vec<Pattern>,
    /// Only scenarios carrying one of these tags (all when empty).
    pub tags: Vec<String>,
    /// Only this shard.
    pub partition: Option<Partition>,
}

impl Selection {
    /// Whether the run takes `s`.
    pub fn keeps(&self, s: &Scenario) -> bool {
        self.chosen(s) && self.partition.is_none_or(|p| p.holds(&s.id))
    }

    /// Whether `--only`, `--skip` and `--tag` take `s` (the partition
    /// aside).
    pub fn chosen(&self, s: &Scenario) -> bool {
        (self.only.is_empty() || self.only.iter().any(|p| p.matches(&s.id)))
            && !self.skip.iter().any(|p| p.matches(&s.id))
            && (self.tags.is_empty() || self.tags.iter().any(|t| s.tags.contains(t)))
    }

    /// Whether anything narrows the choice by name or tag (a selection
    /// that then takes nothing is most likely a typo).
    pub fn names_something(&self) -> bool {
        !self.only.is_empty() || !self.tags.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_read_as_written_and_refused_out_of_range() {
        assert_eq!(
            "2/4".parse::<Partition>(),
            Ok(Partition { index: 2, count: 4 })
        );
        for bad in ["0/4", "5/4", "1/0", "4", "a/b", "1/4/2", ""] {
            assert!(bad.parse::<Partition>().is_err(), "{bad}");
        }
    }

    #[test]
    fn every_id_falls_into_exactly_one_shard_of_n() {
        for count in 1..=7 {
            for i in 0..200 {
                let id = format!("scenario-{i}");
                let shards = (1..=count)
                    .filter(|&index| Partition { index, count }.holds(&id))
                    .count();
                assert_eq!(shards, 1, "{id} in {shards} of {count}");
            }
        }
    }

    #[test]
    fn globs_match_ids_and_bad_globs_are_refused() {
        let p: Pattern = "broker-*".parse().unwrap();
        assert!(p.matches("broker-loss") && !p.matches("tcp-reset"));
        let exact: Pattern = "tcp-reset".parse().unwrap();
        assert!(exact.matches("tcp-reset") && !exact.matches("tcp-reset-2"));
        assert!("broker-[".parse::<Pattern>().is_err());
    }
}
