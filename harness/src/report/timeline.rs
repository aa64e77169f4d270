//! `run --timeline DIR`: one self-contained SVG per scenario run — the
//! faults as bands, what was delivered over time for the baseline and the
//! mitigated run, each connection attempt and network event as a mark, and
//! the recovery interval the checkers measured.
//!
//! SVG rather than HTML: one file that a browser shows, a README embeds and
//! an XML parser reads (the tests do), with no script and nothing fetched.
//! Every drawn element carries a class and `data-` attributes with its
//! figures, so a test (or a user's tool) can read the timeline back.

use crate::check::{Measured, Trace};
use crate::runner::{ScenarioResult, Traces, Verdict};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Width of the drawing, px.
const WIDTH: f64 = 1000.0;
/// Left edge of the plots (room for the y labels).
const LEFT: f64 = 80.0;
/// Right edge of the plots.
const RIGHT: f64 = 975.0;
/// Height of one plot.
const PLOT: f64 = 150.0;
/// Height of one variant's panel: its heading, plot, attempt and event rows
/// and axis labels.
const PANEL: f64 = 250.0;
/// Height of the heading above the panels.
const HEAD: f64 = 70.0;
/// Height of the legend below them.
const LEGEND: f64 = 40.0;
/// Height of the recovery interval's bar at the foot of a plot.
const STRIP: f64 = 12.0;
/// Marks drawn at most per row; the rest are counted in the row's label
/// (a reconnect storm makes thousands of attempts).
const MAX_MARKS: usize = 400;

/// Colours, by what they show.
const FAULT: &str = "#f4a261";
const BASELINE: &str = "#d62828";
const MITIGATED: &str = "#2a9d8f";
const RECOVERY: &str = "#457b9d";
const ATTEMPT: &str = "#6c757d";
const EVENT: &str = "#7b2cbf";

/// The file a scenario run's timeline goes to in `dir`: `ID.svg`, or
/// `ID.rN.svg` for repeat `N` of `run --repeat`.
pub fn timeline_path(dir: &Path, result: &ScenarioResult) -> PathBuf {
    match result.repeat {
        Some(r) => dir.join(format!("{}.r{r}.svg", result.id)),
        None => dir.join(format!("{}.svg", result.id)),
    }
}

/// Writes the timeline of `result` into `dir` (made if missing); returns
/// the file written.
///
/// # Errors
///
/// The directory or the file could not be written.
pub fn write_timeline(dir: &Path, result: &ScenarioResult) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = timeline_path(dir, result);
    std::fs::write(&path, render_timeline(result))?;
    Ok(path)
}

/// The timeline of one scenario run as a standalone SVG document.
pub fn render_timeline(result: &ScenarioResult) -> String {
    let traces = &result.traces;
    let variants: Vec<(&str, &str, Option<&Measured>, Option<&Trace>)> = vec![
        (
            "baseline",
            BASELINE,
            result.baseline.as_ref(),
            traces.baseline.as_ref(),
        ),
        (
            "mitigated",
            MITIGATED,
            result.mitigated.as_ref(),
            traces.mitigated.as_ref(),
        ),
    ];
    let ran = variants.iter().any(|v| v.3.is_some());
    let panels = if ran { 2.0 } else { 1.0 };
    let height = HEAD + panels * PANEL + LEGEND;
    let scale = Scale::of(traces, result);

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, Liberation Sans, Arial, sans-serif" font-size="12" data-scenario="{}" data-verdict="{}" data-backend="{}" data-seed="{}">"#,
        esc(&result.id),
        verdict(result.verdict),
        result.backend,
        result.seed,
    );
    let _ = write!(
        svg,
        r##"<title>{} — {}</title><rect class="background" x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>"##,
        esc(&result.id),
        verdict(result.verdict)
    );
    heading(&mut svg, result);

    if ran {
        for (i, (name, colour, measured, trace)) in variants.iter().enumerate() {
            let top = HEAD + i as f64 * PANEL;
            let panel = Panel {
                name,
                colour,
                top,
                scale: &scale,
            };
            panel.draw(&mut svg, traces, *measured, *trace);
        }
    } else {
        // Unsupported, broken before a run, or a command: the schedule, and
        // what there is to say.
        let panel = Panel {
            name: "schedule",
            colour: ATTEMPT,
            top: HEAD,
            scale: &scale,
        };
        panel.schedule_only(&mut svg, traces, result);
    }
    legend(&mut svg, height - LEGEND + 10.0);
    svg.push_str("</svg>\n");
    svg
}

/// The verdict's name, as the JSON report spells it.
fn verdict(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Fail => "fail",
        Verdict::Unsupported => "unsupported",
        Verdict::Error => "error",
    }
}

fn heading(svg: &mut String, result: &ScenarioResult) {
    let colour = match result.verdict {
        Verdict::Pass => MITIGATED,
        Verdict::Fail | Verdict::Error => BASELINE,
        Verdict::Unsupported => ATTEMPT,
    };
    let repeat = result
        .repeat
        .map_or(String::new(), |r| format!(", repeat {r}"));
    let _ = write!(
        svg,
        r##"<text class="title" x="{LEFT}" y="26" font-size="18" font-weight="bold">{}</text><text class="verdict" x="{RIGHT}" y="26" font-size="16" font-weight="bold" text-anchor="end" fill="{colour}">{}</text><text x="{LEFT}" y="46" fill="#444">catalog: {} · backend {} · seed {}{repeat}</text>"##,
        esc(&result.id),
        verdict(result.verdict).to_uppercase(),
        esc(&result.catalog),
        result.backend,
        result.seed,
    );
    // (An unsupported scenario's reason is written in its panel.)
    if let Some(reason) = result.reasons.first() {
        let _ = write!(
            svg,
            r##"<text class="reason" x="{LEFT}" y="62" fill="#444">{}</text>"##,
            esc(&clip(reason, 140))
        );
    }
}

/// Time (x) and amount (y) to pixels, shared by every panel so that the
/// bands line up.
struct Scale {
    /// The run's span.
    end: Duration,
    /// Largest amount on the y axis.
    max: u64,
    /// `"B"` or `"msgs"`.
    unit: &'static str,
}

impl Scale {
    fn of(traces: &Traces, result: &ScenarioResult) -> Scale {
        let runs = [traces.baseline.as_ref(), traces.mitigated.as_ref()];
        let mut end = runs
            .iter()
            .flatten()
            .map(|t| t.elapsed)
            .chain(traces.faults.iter().map(|f| f.2))
            .chain(traces.actions.iter().map(|a| a.0))
            .max()
            .unwrap_or_default();
        if let Some(c) = &result.command {
            end = end.max(Duration::from_millis(c.duration_ms));
        }
        // A little room after the last thing drawn, so that a fault at the
        // end of a schedule is not drawn on the edge.
        let end = (end + end / 20).max(Duration::from_millis(100));
        let measured = [result.baseline.as_ref(), result.mitigated.as_ref()];
        let expected = measured.iter().flatten().map(|m| m.expected).max();
        let reached = runs
            .iter()
            .flatten()
            .filter_map(|t| t.delivered.last().map(|p| p.1))
            .max();
        let max = expected.max(reached).unwrap_or(1).max(1);
        let unit = match measured.iter().flatten().next() {
            Some(m) if m.unit == "messages" => "msgs",
            _ => "B",
        };
        Scale { end, max, unit }
    }

    fn x(&self, t: Duration) -> f64 {
        let f = t.as_secs_f64() / self.end.as_secs_f64();
        LEFT + f.clamp(0.0, 1.0) * (RIGHT - LEFT)
    }

    /// `v` in the plot whose top edge is at `top`.
    fn y(&self, top: f64, v: u64) -> f64 {
        top + PLOT - (v as f64 / self.max as f64).clamp(0.0, 1.0) * PLOT
    }

    /// Round tick times: about ten over the run.
    fn ticks(&self) -> Vec<Duration> {
        let span = self.end.as_millis().max(1) as u64;
        let step = [
            10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 60_000,
        ]
        .into_iter()
        .find(|s| span / s <= 10)
        .unwrap_or(120_000);
        (0..=span / step)
            .map(|i| Duration::from_millis(i * step))
            .collect()
    }
}

/// One variant's panel.
struct Panel<'a> {
    name: &'a str,
    colour: &'a str,
    top: f64,
    scale: &'a Scale,
}

impl Panel<'_> {
    /// The plot's top edge.
    fn plot_top(&self) -> f64 {
        self.top + 36.0
    }

    fn draw(
        &self,
        svg: &mut String,
        traces: &Traces,
        measured: Option<&Measured>,
        trace: Option<&Trace>,
    ) {
        let summary = measured.map_or("did not run".to_string(), Measured::describe);
        let _ = write!(
            svg,
            r##"<g class="panel" data-variant="{}"><text x="{LEFT}" y="{}" font-weight="bold" fill="{}">{}</text><text x="{}" y="{}" fill="#333">{}</text>"##,
            self.name,
            self.top + 16.0,
            self.colour,
            self.name,
            LEFT + 80.0,
            self.top + 16.0,
            esc(&clip(&summary, 130)),
        );
        self.frame(svg, true);
        self.bands(svg, traces);
        if let Some(trace) = trace {
            self.recovery(svg, trace, measured);
            self.series(svg, trace);
            self.attempts(svg, trace);
            self.events(svg, traces, trace);
        }
        self.axis(svg);
        svg.push_str("</g>");
    }

    fn schedule_only(&self, svg: &mut String, traces: &Traces, result: &ScenarioResult) {
        let _ = write!(
            svg,
            r#"<g class="panel" data-variant="schedule"><text x="{LEFT}" y="{}" font-weight="bold">fault schedule</text>"#,
            self.top + 16.0,
        );
        self.frame(svg, false);
        self.bands(svg, traces);
        let empty = Trace::default();
        self.events(svg, traces, &empty);
        if let Some(c) = &result.command {
            let (x0, x1) = (
                self.scale.x(Duration::ZERO),
                self.scale.x(Duration::from_millis(c.duration_ms)),
            );
            let y = self.plot_top() + PLOT / 2.0;
            let exit = c
                .exit_code
                .map_or("a signal".to_string(), |c| c.to_string());
            let _ = write!(
                svg,
                r#"<g class="command" data-duration-ms="{}" data-exit="{exit}"><rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="16" fill="{ATTEMPT}" fill-opacity="0.5"/><text x="{:.1}" y="{:.1}">the command ran {} ms, exit {exit}</text></g>"#,
                c.duration_ms,
                y - 8.0,
                (x1 - x0).max(1.0),
                x0 + 4.0,
                y - 12.0,
                c.duration_ms,
            );
        } else {
            let what = result
                .unsupported
                .as_deref()
                .map_or("no run".to_string(), |why| format!("not run: {why}"));
            let _ = write!(
                svg,
                r##"<text class="not-run" x="{:.1}" y="{:.1}" fill="#444">{}</text>"##,
                LEFT + 8.0,
                self.plot_top() + PLOT / 2.0,
                esc(&clip(&what, 130)),
            );
        }
        self.axis(svg);
        svg.push_str("</g>");
    }

    /// The plot's box and, with `amounts`, the y axis (amount delivered).
    fn frame(&self, svg: &mut String, amounts: bool) {
        let top = self.plot_top();
        let _ = write!(
            svg,
            r##"<rect class="plot" x="{LEFT}" y="{top:.1}" width="{:.1}" height="{PLOT}" fill="#fafafa" stroke="#999"/>"##,
            RIGHT - LEFT
        );
        if !amounts {
            return;
        }
        for frac in [0u64, 2, 4] {
            let v = self.scale.max * frac / 4;
            let y = self.scale.y(top, v);
            let _ = write!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555" font-size="11">{}</text>"##,
                LEFT - 6.0,
                y + 4.0,
                amount(v, self.scale.unit)
            );
        }
    }

    /// Each fault as a band over the plot, its kind written at the top.
    fn bands(&self, svg: &mut String, traces: &Traces) {
        let top = self.plot_top();
        for (kind, from, to) in &traces.faults {
            let (x0, x1) = (self.scale.x(*from), self.scale.x(*to));
            // The kind's name inside the band, or left of it at the edge.
            let (label_x, anchor) = if x0 > RIGHT - 90.0 {
                (x1 - 3.0, "end")
            } else {
                (x0 + 2.0, "start")
            };
            let _ = write!(
                svg,
                r##"<g class="fault-band" data-kind="{kind}" data-from-ms="{}" data-to-ms="{}"><title>{kind}: {} – {}</title><rect x="{x0:.1}" y="{top:.1}" width="{:.1}" height="{PLOT}" fill="{FAULT}" fill-opacity="0.45"/><text x="{label_x:.1}" y="{:.1}" font-size="11" fill="#7a3e00" text-anchor="{anchor}">{kind}</text></g>"##,
                from.as_millis(),
                to.as_millis(),
                time(*from),
                time(*to),
                (x1 - x0).max(2.0),
                top + 12.0,
            );
        }
    }

    /// Delivered so far, as a step curve.
    fn series(&self, svg: &mut String, trace: &Trace) {
        let top = self.plot_top();
        let mut d = format!(
            "M{:.1},{:.1}",
            self.scale.x(Duration::ZERO),
            self.scale.y(top, 0)
        );
        let mut last = 0;
        for &(t, v) in &trace.delivered {
            let x = self.scale.x(t);
            let _ = write!(
                d,
                " L{x:.1},{:.1} L{x:.1},{:.1}",
                self.scale.y(top, last),
                self.scale.y(top, v)
            );
            last = v;
        }
        let _ = write!(
            d,
            " L{:.1},{:.1}",
            self.scale.x(trace.elapsed),
            self.scale.y(top, last)
        );
        let _ = write!(
            svg,
            r#"<path class="series" data-variant="{}" data-points="{}" data-final="{last}" d="{d}" fill="none" stroke="{}" stroke-width="2.5"/>"#,
            self.name,
            trace.delivered.len(),
            self.colour
        );
    }

    /// The recovery interval the checkers measured, or that there was none.
    fn recovery(&self, svg: &mut String, trace: &Trace, measured: Option<&Measured>) {
        let top = self.plot_top();
        let bottom = top + PLOT;
        match trace.recovery {
            Some((from, to)) => {
                let (x0, x1) = (self.scale.x(from), self.scale.x(to));
                let ms = measured
                    .and_then(|m| m.recovery_ms)
                    .unwrap_or(to.saturating_sub(from).as_millis() as u64);
                let _ = write!(
                    svg,
                    r#"<g class="recovery" data-from-ms="{}" data-to-ms="{}" data-ms="{ms}"><title>recovery: path whole at {}, delivery resumed at {}</title><line x1="{x0:.1}" y1="{top:.1}" x2="{x0:.1}" y2="{bottom:.1}" stroke="{RECOVERY}" stroke-dasharray="3,2"/><line x1="{x1:.1}" y1="{top:.1}" x2="{x1:.1}" y2="{bottom:.1}" stroke="{RECOVERY}" stroke-dasharray="3,2"/><rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{STRIP}" fill="{RECOVERY}" fill-opacity="0.6"/><text x="{:.1}" y="{:.1}" font-size="11" fill="{RECOVERY}">recovered in {ms} ms</text></g>"#,
                    from.as_millis(),
                    to.as_millis(),
                    time(from),
                    time(to),
                    bottom - STRIP,
                    (x1 - x0).max(2.0),
                    (x1 + 4.0).min(RIGHT - 110.0),
                    bottom - 3.0,
                );
            }
            None if measured.is_some_and(|m| m.recovery_ms.is_none()) => {
                let _ = write!(
                    svg,
                    r#"<text class="no-recovery" x="{:.1}" y="{:.1}" font-size="12" font-weight="bold" fill="{BASELINE}" text-anchor="end">never recovered</text>"#,
                    RIGHT - 6.0,
                    top + PLOT - 8.0,
                );
            }
            None => {}
        }
    }

    /// A tick under the plot for each connection attempt.
    fn attempts(&self, svg: &mut String, trace: &Trace) {
        let y = self.plot_top() + PLOT + 5.0;
        let _ = write!(
            svg,
            r##"<g class="attempts" data-count="{}"><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="10" fill="#555">attempts {}</text>"##,
            trace.attempts.len(),
            LEFT - 6.0,
            y + 9.0,
            trace.attempts.len()
        );
        for t in trace.attempts.iter().take(MAX_MARKS) {
            let x = self.scale.x(*t);
            let _ = write!(
                svg,
                r#"<line class="attempt" data-t-ms="{}" x1="{x:.1}" y1="{y:.1}" x2="{x:.1}" y2="{:.1}" stroke="{ATTEMPT}" stroke-width="1.5"><title>attempt at {}</title></line>"#,
                t.as_millis(),
                y + 10.0,
                time(*t),
            );
        }
        svg.push_str("</g>");
    }

    /// A diamond under the attempts for each change the faults made (as
    /// scheduled; where it took effect late, where it took effect) and each
    /// event the client's stack reported.
    fn events(&self, svg: &mut String, traces: &Traces, trace: &Trace) {
        let row = self.plot_top() + PLOT + 26.0;
        let _ = write!(
            svg,
            r##"<g class="events"><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="10" fill="#555">network</text><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="10" fill="#555">client</text>"##,
            LEFT - 6.0,
            row + 4.0,
            LEFT - 6.0,
            row + 18.0,
        );
        for (at, what) in &traces.actions {
            let effect = trace
                .applied
                .iter()
                .filter(|(s, _)| s == at)
                .map(|(_, e)| *e)
                .max()
                .unwrap_or(*at);
            self.diamond(svg, "network", effect, what, row, FAULT);
        }
        for (t, what) in trace.events.iter().take(MAX_MARKS) {
            self.diamond(svg, "client", *t, what, row + 14.0, EVENT);
        }
        svg.push_str("</g>");
    }

    fn diamond(&self, svg: &mut String, source: &str, t: Duration, what: &str, y: f64, fill: &str) {
        let x = self.scale.x(t);
        let _ = write!(
            svg,
            r##"<path class="event" data-source="{source}" data-t-ms="{}" d="M{x:.1},{:.1} l4,4 l-4,4 l-4,-4 z" fill="{fill}" stroke="#333" stroke-width="0.5"><title>{}: {}</title></path>"##,
            t.as_millis(),
            y - 4.0,
            time(t),
            esc(what),
        );
    }

    /// The time axis under the marks.
    fn axis(&self, svg: &mut String) {
        let y = self.plot_top() + PLOT + 58.0;
        for t in self.scale.ticks() {
            let x = self.scale.x(t);
            let _ = write!(
                svg,
                r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#ccc"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" font-size="10" fill="#555">{}</text>"##,
                self.plot_top(),
                self.plot_top() + PLOT,
                y,
                time(t),
            );
        }
    }
}

fn legend(svg: &mut String, y: f64) {
    let items = [
        ("fault", FAULT, "rect"),
        ("baseline delivered", BASELINE, "line"),
        ("mitigated delivered", MITIGATED, "line"),
        ("recovery interval", RECOVERY, "rect"),
        ("connection attempt", ATTEMPT, "tick"),
        ("fault action", FAULT, "diamond"),
        ("client event", EVENT, "diamond"),
    ];
    let _ = write!(svg, r#"<g class="legend">"#);
    let mut x = LEFT;
    for (label, colour, shape) in items {
        let mark = match shape {
            "rect" => format!(
                r#"<rect x="{x:.1}" y="{:.1}" width="14" height="10" fill="{colour}" fill-opacity="0.5"/>"#,
                y - 9.0
            ),
            "line" => format!(
                r#"<line x1="{x:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="2.5"/>"#,
                y - 4.0,
                x + 14.0,
                y - 4.0
            ),
            "tick" => format!(
                r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="1.5"/>"#,
                x + 7.0,
                y - 10.0,
                x + 7.0,
                y
            ),
            _ => format!(
                r##"<path d="M{:.1},{:.1} l4,4 l-4,4 l-4,-4 z" fill="{colour}" stroke="#333" stroke-width="0.5"/>"##,
                x + 7.0,
                y - 9.0
            ),
        };
        let _ = write!(
            svg,
            r##"{mark}<text x="{:.1}" y="{y:.1}" font-size="11" fill="#333">{label}</text>"##,
            x + 18.0
        );
        x += 18.0 + 7.0 * label.len() as f64 + 16.0;
    }
    svg.push_str("</g>");
}

/// `t` as the axis writes it: ms below a second, else seconds.
fn time(t: Duration) -> String {
    let ms = t.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", t.as_secs_f64())
    }
}

/// An amount as the y axis writes it.
fn amount(v: u64, unit: &str) -> String {
    match unit {
        "B" if v >= 1 << 20 => format!("{:.1} MiB", v as f64 / f64::from(1 << 20)),
        "B" if v >= 1 << 10 => format!("{:.0} KiB", v as f64 / f64::from(1 << 10)),
        _ => format!("{v} {unit}"),
    }
}

/// At most `max` characters of `s`, an ellipsis where cut.
fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// `s` safe inside XML text and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0.
            c if c.is_control() && c != '\n' && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_for_xml() {
        assert_eq!(
            esc("a<b & \"c\" 'd'>\u{1}"),
            "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt; "
        );
    }

    #[test]
    fn times_and_amounts_read_well() {
        assert_eq!(time(Duration::from_millis(250)), "250 ms");
        assert_eq!(time(Duration::from_millis(2500)), "2.5 s");
        assert_eq!(amount(3 << 20, "B"), "3.0 MiB");
        assert_eq!(amount(512 << 10, "B"), "512 KiB");
        assert_eq!(amount(40, "msgs"), "40 msgs");
    }

    #[test]
    fn clipping_keeps_char_boundaries() {
        assert_eq!(clip("ééé", 2), "éé…");
        assert_eq!(clip("ab", 2), "ab");
    }
}
