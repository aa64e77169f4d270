//! `run --timeline DIR`: one SVG per shipped scenario from one run, read
//! back with an XML parser and checked against the run's JSON report; and a
//! screenshot of one in headless Chromium, inspected pixel by pixel.

mod common;

use common::{netmend, repo};
use netmend_harness::scenario::load_all;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh directory under the target dir (kept after the test, for a look).
fn out_dir(name: &str) -> PathBuf {
    let dir = repo().join("target").join("netmend-tests").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("make the output directory");
    dir
}

/// Runs the shipped suite on sim with a timeline and a JSON report; returns
/// the timeline directory and the report's scenarios by id.
fn run_with_timeline(name: &str, extra: &[&str]) -> (PathBuf, BTreeMap<String, Value>) {
    let dir = out_dir(name);
    let (tl, json) = (dir.join("timeline"), dir.join("report.json"));
    let mut args = vec![
        "run",
        "--backend",
        "sim",
        "--quiet",
        "--timeline",
        tl.to_str().expect("utf-8 path"),
        "--json",
        json.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    let out = netmend(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON report")).expect("JSON");
    let scenarios = report["scenarios"]
        .as_array()
        .expect("scenarios")
        .iter()
        .map(|s| (s["id"].as_str().expect("id").to_string(), s.clone()))
        .collect();
    (tl, scenarios)
}

fn elements<'a>(doc: &'a roxmltree::Document<'a>, class: &str) -> Vec<roxmltree::Node<'a, 'a>> {
    doc.descendants()
        .filter(|n| n.attribute("class") == Some(class))
        .collect()
}

fn num(node: &roxmltree::Node, attr: &str) -> u64 {
    node.attribute(attr)
        .unwrap_or_else(|| panic!("{attr} missing"))
        .parse()
        .unwrap_or_else(|e| panic!("{attr}: {e}"))
}

/// The panel of `variant` in a timeline.
fn panel<'a>(doc: &'a roxmltree::Document<'a>, variant: &str) -> roxmltree::Node<'a, 'a> {
    elements(doc, "panel")
        .into_iter()
        .find(|n| n.attribute("data-variant") == Some(variant))
        .unwrap_or_else(|| panic!("no {variant} panel"))
}

#[test]
fn one_run_writes_a_timeline_for_every_shipped_scenario_that_says_what_the_report_says() {
    let (dir, report) = run_with_timeline("timeline-suite", &[]);
    let shipped = load_all(&[repo().join("scenarios")]).expect("shipped scenarios load");
    let mut written: Vec<String> = std::fs::read_dir(&dir)
        .expect("timeline directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    let mut want: Vec<String> = shipped
        .iter()
        .map(|l| format!("{}.svg", l.scenario.id))
        .collect();
    want.sort();
    assert_eq!(written, want, "one file per scenario, nothing else");

    for loaded in &shipped {
        let s = &loaded.scenario;
        let path = dir.join(format!("{}.svg", s.id));
        let text = std::fs::read_to_string(&path).expect("timeline file");
        // Self-contained: nothing fetched, nothing run.
        for outside in ["<script", "href=", "src=", "@import", "url("] {
            assert!(!text.contains(outside), "{}: has {outside}", s.id);
        }
        let doc = roxmltree::Document::parse(&text)
            .unwrap_or_else(|e| panic!("{}: not well-formed XML: {e}", s.id));
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert_eq!(root.attribute("data-scenario"), Some(s.id.as_str()));
        let result = &report[&s.id];
        assert_eq!(
            root.attribute("data-verdict"),
            result["verdict"].as_str(),
            "{}",
            s.id
        );

        // The faults as bands, in file order, in every panel.
        let bands = elements(&doc, "fault-band");
        let panels = elements(&doc, "panel").len();
        assert_eq!(bands.len(), s.faults.len() * panels, "{}", s.id);
        for (band, fault) in bands.iter().zip(s.faults.iter().cycle()) {
            assert_eq!(band.attribute("data-kind"), Some(fault.kind()));
            assert_eq!(
                u128::from(num(band, "data-from-ms")),
                fault.at().0.as_millis()
            );
            assert_eq!(
                u128::from(num(band, "data-to-ms")),
                fault.healed_at().0.as_millis()
            );
        }
        // Every change the faults make, marked in every panel.
        let network = elements(&doc, "event")
            .into_iter()
            .filter(|e| e.attribute("data-source") == Some("network"))
            .count();
        assert_eq!(network, s.schedule().len() * panels, "{}", s.id);

        if result["verdict"] == "unsupported" {
            assert_eq!(panels, 1, "{}: the schedule alone", s.id);
            let reason = result["unsupported"].as_str().expect("a reason");
            let not_run = elements(&doc, "not-run");
            let shown = not_run[0].text().expect("text");
            assert!(shown.contains(&reason[..40.min(reason.len())]), "{shown}");
            continue;
        }
        for variant in ["baseline", "mitigated"] {
            let figures = &result[variant];
            let p = panel(&doc, variant);
            let series: Vec<_> = p
                .descendants()
                .filter(|n| n.attribute("class") == Some("series"))
                .collect();
            assert_eq!(series.len(), 1, "{} {variant}: one curve", s.id);
            // A point per delivery (none when nothing arrived: a firewall's
            // baseline).
            let delivered = figures["delivered"].as_u64().expect("delivered");
            assert_eq!(
                num(&series[0], "data-points") > 0,
                delivered > 0,
                "{} {variant}",
                s.id
            );
            // What the curve ends at is what the report says arrived, when
            // it all arrived (the curve is the in-order high-water mark, a
            // gap holds it below the count of distinct bytes).
            if figures["lost"] == 0 {
                assert_eq!(
                    num(&series[0], "data-final"),
                    figures["expected"].as_u64().expect("expected"),
                    "{} {variant}",
                    s.id
                );
            }
            let attempts = p
                .descendants()
                .find(|n| n.attribute("class") == Some("attempts"))
                .expect("attempt row");
            assert_eq!(
                num(&attempts, "data-count"),
                figures["attempts"].as_u64().expect("attempts"),
                "{} {variant}",
                s.id
            );
            let marks = p
                .descendants()
                .filter(|n| n.attribute("class") == Some("attempt"))
                .count() as u64;
            assert_eq!(marks, num(&attempts, "data-count").min(400));
            // The recovery interval is the one the report measured.
            let recovery = p
                .descendants()
                .find(|n| n.attribute("class") == Some("recovery"));
            match (figures["recovery_ms"].as_u64(), recovery) {
                (Some(ms), Some(r)) if !s.faults.is_empty() => {
                    assert_eq!(num(&r, "data-ms"), ms, "{} {variant}", s.id);
                    let (from, to) = (num(&r, "data-from-ms"), num(&r, "data-to-ms"));
                    assert!(to >= from);
                    // Whole milliseconds of each end: within one of the figure.
                    assert!((to - from).abs_diff(ms) <= 1, "{} {variant}", s.id);
                }
                (None, None) => {
                    assert!(
                        p.descendants()
                            .any(|n| n.attribute("class") == Some("no-recovery")),
                        "{} {variant}: says it never recovered",
                        s.id
                    );
                }
                (ms, r) => panic!("{} {variant}: report {ms:?}, timeline {r:?}", s.id),
            }
        }
    }
}

#[test]
fn repeats_get_one_timeline_each() {
    let (dir, _) = run_with_timeline("timeline-repeat", &["--only", "tcp-reset", "--repeat", "2"]);
    let mut written: Vec<String> = std::fs::read_dir(&dir)
        .expect("timeline directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(written, ["tcp-reset.r1.svg", "tcp-reset.r2.svg"]);
}

#[test]
fn a_timeline_directory_that_cannot_be_made_is_bad_input() {
    let dir = out_dir("timeline-bad");
    let file = dir.join("a-file");
    std::fs::write(&file, b"not a directory").expect("write");
    let out = netmend(&[
        "run",
        "--backend",
        "sim",
        "--only",
        "tcp-reset",
        "--timeline",
        file.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("a-file"), "{err}");
}

/// Headless Chromium, as the machine's doc says it runs here (no network
/// it would reach for, a fresh profile).
fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|p| p.join(name))
                    .find(|p| p.is_file())
            })
        })
}

fn screenshot(browser: &Path, page: &Path, png: &Path) {
    let profile = png.with_extension("profile");
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1000,630",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    assert!(
        png.is_file(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Pixels of `png` within `tolerance` of each channel of `rgb`.
fn count_near(img: &[u8], channels: usize, rgb: [u8; 3], tolerance: u8) -> usize {
    img.chunks_exact(channels)
        .filter(|p| (0..3).all(|i| p[i].abs_diff(rgb[i]) <= tolerance))
        .count()
}

/// Over `base`, `rgb` at opacity `alpha`.
fn blend(rgb: [u8; 3], alpha: f64, base: [u8; 3]) -> [u8; 3] {
    let mix = |c: u8, b: u8| (alpha * f64::from(c) + (1.0 - alpha) * f64::from(b)).round() as u8;
    [
        mix(rgb[0], base[0]),
        mix(rgb[1], base[1]),
        mix(rgb[2], base[2]),
    ]
}

#[test]
#[ignore = "needs headless Chromium (apt-get install chromium)"]
fn a_timeline_renders_in_headless_chromium_with_its_bands_and_curves() {
    let Some(browser) = chromium() else {
        panic!("needs headless Chromium, which is not installed (apt-get install chromium)");
    };
    let (dir, _) = run_with_timeline("timeline-shot", &["--only", "link-flap"]);
    let page = dir.join("link-flap.svg");
    let png = dir.join("..").join("link-flap.png");
    screenshot(&browser, &page, &png);

    let decoder = png::Decoder::new(std::fs::File::open(&png).expect("open the screenshot"));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut img = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut img).expect("a frame");
    let img = &img[..info.buffer_size()];
    let channels = info.color_type.samples();
    assert!(channels >= 3, "{:?}", info.color_type);
    assert_eq!((info.width, info.height), (1000, 630));

    // Not blank: the white background and much else.
    let white = count_near(img, channels, [255, 255, 255], 0);
    let pixels = (info.width * info.height) as usize;
    assert!(white < pixels * 95 / 100, "{white} of {pixels} white");
    // The fault bands: the fault colour at 45 % over the plot's background.
    let band = blend([0xf4, 0xa2, 0x61], 0.45, [0xfa, 0xfa, 0xfa]);
    let band_pixels = count_near(img, channels, band, 6);
    assert!(band_pixels > 2000, "band pixels: {band_pixels}");
    // Both curves, 2.5 px wide over seconds of run: hundreds of pixels each.
    for (name, rgb) in [
        ("baseline", [0xd6, 0x28, 0x28]),
        ("mitigated", [0x2a, 0x9d, 0x8f]),
    ] {
        let n = count_near(img, channels, rgb, 12);
        assert!(n > 300, "{name} curve pixels: {n}");
    }
}
