//! The JSON Schema of scenario files (issue 12): shipped in the repository
//! as `netmend schema` prints it, it accepts every shipped scenario and
//! refuses the malformed files the loader refuses.

mod common;

use common::repo;
use netmend_harness::scenario;
use serde_json::Value;

const SCHEMA_FILE: &str = "scenarios/scenario.schema.json";

fn validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(&scenario::schema()).unwrap();
    jsonschema::validator_for(&schema).expect("a valid JSON Schema")
}

/// A scenario file as the JSON an editor's TOML support checks.
fn as_json(toml_text: &str) -> Value {
    let value: toml::Value = toml::from_str(toml_text).unwrap();
    serde_json::to_value(value).unwrap()
}

#[test]
fn the_shipped_schema_is_the_one_netmend_prints() {
    let shipped = std::fs::read_to_string(repo().join(SCHEMA_FILE)).unwrap_or_default();
    assert!(
        shipped == scenario::schema(),
        "{SCHEMA_FILE} is stale: run `cargo run -p netmend-harness -- schema > {SCHEMA_FILE}`"
    );
}

#[test]
fn every_shipped_scenario_validates() {
    let v = validator();
    let mut checked = 0;
    for entry in std::fs::read_dir(repo().join("scenarios")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        let instance = as_json(&std::fs::read_to_string(&path).unwrap());
        let errors: Vec<String> = v.iter_errors(&instance).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
        checked += 1;
    }
    // Every file the loader takes, none skipped.
    let loaded = netmend_harness::scenario::load_all(&[repo().join("scenarios")])
        .expect("shipped scenarios load")
        .len();
    assert!(checked >= 16, "{checked}");
    assert_eq!(checked, loaded);
}

#[test]
fn what_the_loader_refuses_for_its_shape_the_schema_refuses_too() {
    let v = validator();
    let base = std::fs::read_to_string(repo().join("scenarios/tcp-reset.toml")).unwrap();
    assert!(v.is_valid(&as_json(&base)));
    let cases = [
        // An unknown top-level field.
        (
            "catalog = \"tcp-reset\"",
            "catalog = \"tcp-reset\"\ncolour = \"blue\"",
        ),
        // An unknown fault kind.
        ("kind = \"reset\"", "kind = \"meteor\""),
        // A field the kind does not take.
        ("kind = \"reset\"", "kind = \"reset\"\nduration = \"1s\""),
        // A fault kind without its required field.
        ("kind = \"reset\"", "kind = \"blackhole\""),
        // A duration that is no duration.
        ("at = \"1s\"", "at = 1000"),
        // An unknown workload kind.
        ("kind = \"stream\"", "kind = \"movie\""),
        // A symptom nobody knows.
        ("baseline = [\"loss\"]", "baseline = [\"gremlins\"]"),
    ];
    for (from, to) in cases {
        assert!(base.contains(from), "fixture drifted: {from}");
        let text = base.replacen(from, to, 1);
        let path = std::path::Path::new("bad.toml");
        assert!(
            scenario::parse(path, &text).is_err(),
            "the loader takes {to:?}"
        );
        assert!(
            !v.is_valid(&as_json(&text)),
            "the schema takes what the loader refuses: {to:?}"
        );
    }
}
