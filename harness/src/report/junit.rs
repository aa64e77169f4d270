//! JUnit XML, for CI systems that show test results: one test case per
//! scenario run, its wall time in `time`, what it ran with and what it
//! showed as properties, a failed scenario's figures in the failure's body,
//! and a run that could not be carried out as an error, not a failure.

use super::Collector;
use crate::backend::BackendKind;
use crate::runner::{ScenarioResult, Verdict};
use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};
use std::time::Duration;

/// Renders the collected run as JUnit XML.
///
/// # Errors
///
/// Only if the XML writer fails (it writes to memory).
pub fn render_junit(c: &Collector) -> Result<String, quick_junit::SerializeError> {
    let mut report = Report::new("netmend");
    let mut suite = TestSuite::new("scenarios");
    for (i, r) in c.results.iter().enumerate() {
        let mut case = TestCase::new(name(r), status(r));
        case.set_classname(format!("netmend.{}.{}", r.backend, r.catalog));
        case.set_time(c.walls.get(i).copied().unwrap_or_default());
        case.add_properties(properties(r));
        suite.add_test_case(case);
    }
    report.add_test_suite(suite);
    report.to_string()
}

fn name(r: &ScenarioResult) -> String {
    match r.repeat {
        Some(repeat) => format!("{} #{repeat}", r.id),
        None => r.id.clone(),
    }
}

fn status(r: &ScenarioResult) -> TestCaseStatus {
    match r.verdict {
        Verdict::Pass => TestCaseStatus::success(),
        Verdict::Fail => {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_message(r.reasons.join("; "));
            s.set_type("scenario-failed");
            s.set_description(figures(r));
            s
        }
        Verdict::Error => {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
            s.set_message(r.reasons.join("; "));
            s.set_type("run-broken");
            s.set_description(figures(r));
            s
        }
        Verdict::Unsupported => {
            let mut s = TestCaseStatus::skipped();
            s.set_message(r.unsupported.clone().unwrap_or_default());
            s
        }
    }
}

/// What both runs showed, one line each, then the reasons.
fn figures(r: &ScenarioResult) -> String {
    let mut lines = Vec::new();
    if let Some(run) = &r.command {
        lines.push(format!(
            "command `{}` exited with {:?} after {} ms (expected {:?}); stderr tail:\n{}",
            run.argv.join(" "),
            run.exit_code,
            run.duration_ms,
            r.expected_exit,
            run.stderr
        ));
    }
    for (half, m) in [("baseline", &r.baseline), ("mitigated", &r.mitigated)] {
        if let Some(m) = m {
            lines.push(format!("{half}: {}", m.describe()));
        }
    }
    lines.extend(r.reasons.iter().map(|why| format!("- {why}")));
    lines.join("\n")
}

fn properties(r: &ScenarioResult) -> Vec<Property> {
    let symptoms = |m: &Option<crate::check::Measured>| {
        m.as_ref().map_or(String::new(), |m| {
            let names: Vec<&str> = m.symptoms.iter().map(|s| s.name()).collect();
            names.join(",")
        })
    };
    let mut out = vec![
        Property::new("seed", r.seed.to_string()),
        Property::new("backend", r.backend.to_string()),
        Property::new("catalog", r.catalog.clone()),
        // The time both runs took in their world: virtual on sim.
        Property::new(
            if r.backend == BackendKind::Sim {
                "simulated-time"
            } else {
                "run-time"
            },
            format!("{:.3}s", Duration::from_millis(r.virtual_ms).as_secs_f64()),
        ),
    ];
    if r.baseline.is_some() || r.mitigated.is_some() {
        out.push(Property::new("baseline-symptoms", symptoms(&r.baseline)));
        out.push(Property::new("mitigated-symptoms", symptoms(&r.mitigated)));
    }
    if let Some(repeat) = r.repeat {
        out.push(Property::new("repeat", repeat.to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::RunEvent;

    fn result(id: &str, verdict: Verdict, reasons: &[&str]) -> ScenarioResult {
        ScenarioResult {
            id: id.into(),
            catalog: "tcp-reset".into(),
            backend: BackendKind::Netns,
            seed: 42,
            verdict,
            expected_baseline: Vec::new(),
            baseline: None,
            mitigated: None,
            reasons: reasons.iter().map(|r| r.to_string()).collect(),
            unsupported: None,
            expected_exit: None,
            command: None,
            virtual_ms: 1500,
            repeat: None,
            traces: Box::default(),
        }
    }

    #[test]
    fn a_broken_run_is_an_error_a_failed_one_a_failure_each_with_its_properties() {
        let mut c = Collector::default();
        for (r, wall) in [
            (result("ok", Verdict::Pass, &[]), 2),
            (
                result("bad", Verdict::Fail, &["mitigated run failed: loss"]),
                3,
            ),
            (
                result(
                    "broke",
                    Verdict::Error,
                    &["Baseline run broke: netns lab: x"],
                ),
                4,
            ),
        ] {
            c.event(&RunEvent::ScenarioFinished {
                result: Box::new(r),
                wall: Duration::from_secs(wall),
            });
        }
        let xml = render_junit(&c).unwrap();
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let case = |name: &str| {
            doc.descendants()
                .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some(name))
                .unwrap()
        };
        assert_eq!(case("ok").attribute("time"), Some("2.000"));
        assert!(case("bad").children().any(|n| n.has_tag_name("failure")
            && n.attribute("message") == Some("mitigated run failed: loss")));
        assert!(case("broke").children().any(|n| n.has_tag_name("error")));
        assert!(!case("broke").children().any(|n| n.has_tag_name("failure")));
        let props: Vec<(&str, &str)> = case("ok")
            .descendants()
            .filter(|n| n.has_tag_name("property"))
            .map(|n| (n.attribute("name").unwrap(), n.attribute("value").unwrap()))
            .collect();
        assert_eq!(
            props,
            [
                ("seed", "42"),
                ("backend", "netns"),
                ("catalog", "tcp-reset"),
                ("run-time", "1.500s"),
            ]
        );
    }
}
