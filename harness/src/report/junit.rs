//! JUnit XML, for CI systems that show test results.

use super::Collector;
use crate::runner::Verdict;
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use std::time::Duration;

/// Renders the collected run as JUnit XML: one test case per scenario.
pub fn render_junit(c: &Collector) -> Result<String, quick_junit::SerializeError> {
    let mut report = Report::new("netmend");
    let mut suite = TestSuite::new("scenarios");
    for r in &c.results {
        let status = match r.verdict {
            Verdict::Pass => TestCaseStatus::success(),
            Verdict::Fail => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(r.reasons.join("; "));
                s.set_type("scenario-failed");
                s
            }
            Verdict::Unsupported => {
                let mut s = TestCaseStatus::skipped();
                s.set_message(r.unsupported.clone().unwrap_or_default());
                s
            }
        };
        let mut case = TestCase::new(r.id.clone(), status);
        case.set_classname(format!("netmend.{}.{}", r.backend, r.catalog));
        case.set_time(Duration::from_millis(r.virtual_ms));
        suite.add_test_case(case);
    }
    report.add_test_suite(suite);
    report.to_string()
}
