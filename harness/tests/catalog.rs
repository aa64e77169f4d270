//! The catalog document is generated and kept in sync; scenarios and entries
//! reference each other consistently.

use netmend_harness::{catalog, scenario};

mod common;

use common::repo;

#[test]
fn catalog_readme_is_the_rendered_catalog() {
    let entries = catalog::load(&repo().join("catalog")).unwrap();
    let rendered = catalog::render(&entries);
    let on_disk = std::fs::read_to_string(repo().join("catalog/README.md")).unwrap();
    assert!(
        rendered == on_disk,
        "catalog/README.md is stale: run `cargo run -p netmend-harness -- catalog > catalog/README.md`"
    );
}

#[test]
fn scenarios_and_catalog_entries_reference_each_other() {
    let entries = catalog::load(&repo().join("catalog")).unwrap();
    let scenarios = scenario::load_all(&[repo().join("scenarios")]).unwrap();
    for s in &scenarios {
        let entry = entries
            .iter()
            .find(|e| e.id == s.scenario.catalog)
            .unwrap_or_else(|| {
                panic!(
                    "{}: unknown catalog id {}",
                    s.path.display(),
                    s.scenario.catalog
                )
            });
        assert!(
            entry.scenarios.contains(&s.scenario.id),
            "{} does not list {}",
            entry.id,
            s.scenario.id
        );
    }
    for e in &entries {
        for id in &e.scenarios {
            assert!(
                scenarios.iter().any(|s| &s.scenario.id == id),
                "{} lists missing scenario {id}",
                e.id
            );
        }
    }
}
