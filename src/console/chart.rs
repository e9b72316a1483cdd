//! The Activity page's chart (spec/console.md, "Activity"): changes
//! received per day per instance over the last [`DAYS`] days, from the
//! journal's imports, drawn as stacked bars in server-side SVG (no
//! script), with a legend and the same numbers as a table for screen
//! readers and for reading exact values.

use std::collections::BTreeMap;

use maud::{Markup, html};

use crate::{JournalEntry, JournalKind};

/// Days the chart covers, today included.
pub(super) const DAYS: i64 = 14;

const DAY_MS: i64 = 86_400_000;

/// Colours of the instances' bars, in turn (each at least 3:1 against
/// white, told apart by the legend's order as well as by colour).
const COLOURS: &[&str] = &[
    "#0b4f9c", "#b35c00", "#1e6b2b", "#7a2a8c", "#a11d1d", "#006d75", "#5c5c00", "#4d4d4d",
];

/// Changes an import brought that were new here: applied, older than what
/// was here, or held (everything but those already known).
pub(super) fn received(e: &JournalEntry) -> u64 {
    e.changes.saturating_sub(e.known)
}

/// Per day (days since the epoch, UTC) per instance, the changes received.
pub(super) fn per_day(
    entries: &[JournalEntry],
    now_ms: i64,
) -> BTreeMap<i64, BTreeMap<String, u64>> {
    let today = now_ms.div_euclid(DAY_MS);
    let mut out: BTreeMap<i64, BTreeMap<String, u64>> = BTreeMap::new();
    for day in today - DAYS + 1..=today {
        out.insert(day, BTreeMap::new());
    }
    for e in entries.iter().filter(|e| e.kind == JournalKind::Import) {
        let day = e.at_ms.div_euclid(DAY_MS);
        if let Some(by) = out.get_mut(&day) {
            let peer = e.peer.clone().unwrap_or_default();
            *by.entry(peer).or_default() += received(e);
        }
    }
    out
}

fn day_label(day: i64) -> String {
    chrono::DateTime::from_timestamp_millis(day * DAY_MS)
        .map(|t| t.format("%m-%d").to_string())
        .unwrap_or_default()
}

/// The chart, its legend and its table.
pub(super) fn chart(entries: &[JournalEntry], now_ms: i64) -> Markup {
    let days = per_day(entries, now_ms);
    let mut peers: Vec<String> = days.values().flat_map(|by| by.keys().cloned()).collect();
    peers.sort();
    peers.dedup();
    let colour = |p: &str| {
        let i = peers.iter().position(|x| x == p).unwrap_or(0);
        COLOURS[i % COLOURS.len()]
    };
    let max = days
        .values()
        .map(|by| by.values().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let (w, h, left, bottom, top) = (700.0_f64, 240.0_f64, 48.0, 28.0, 12.0);
    let plot_h = h - bottom - top;
    let slot = (w - left - 8.0) / days.len().max(1) as f64;
    let bar_w = (slot * 0.7).max(2.0);
    let scale = |n: u64| n as f64 / max as f64 * plot_h;
    // Each bar: x, y, height, colour, what it says; each day's label: x, text.
    let mut bars: Vec<(f64, f64, f64, &str, String)> = Vec::new();
    let mut labels: Vec<(f64, String)> = Vec::new();
    for (i, (day, by)) in days.iter().enumerate() {
        let x = left + 4.0 + i as f64 * slot;
        let mut y = h - bottom;
        for (peer, n) in by.iter().filter(|(_, n)| **n > 0) {
            let bh = scale(*n).max(1.0);
            y -= bh;
            let said = format!("{}: {n} from {peer}", day_label(*day));
            bars.push((x, y, bh, colour(peer), said));
        }
        if i % 2 == 0 || days.len() <= 8 {
            labels.push((x + bar_w / 2.0, day_label(*day)));
        }
    }
    html! {
        figure {
            svg viewBox=(format!("0 0 {w} {h}")) width="100%" role="img" aria-labelledby="chart-title" {
                title id="chart-title" { "Changes received per day per instance, the last " (DAYS) " days" }
                line x1=(left) y1=(h - bottom) x2=(w - 4.0) y2=(h - bottom) stroke="#1b1b1b" {}
                text x=(left - 6.0) y=(top + 4.0) text-anchor="end" { (max) }
                text x=(left - 6.0) y=(h - bottom) text-anchor="end" { "0" }
                @for (x, y, bh, fill, said) in &bars {
                    rect x=(format!("{x:.1}")) y=(format!("{y:.1}")) width=(format!("{bar_w:.1}")) height=(format!("{bh:.1}")) fill=(fill) {
                        title { (said) }
                    }
                }
                @for (x, label) in &labels {
                    text x=(format!("{x:.1}")) y=(h - 10.0) text-anchor="middle" { (label) }
                }
            }
            figcaption {
                @if peers.is_empty() {
                    "No changes received in the last " (DAYS) " days."
                } @else {
                    ul.legend aria-label="Instances" {
                        @for p in &peers {
                            li { span.swatch style=(format!("background:{}", colour(p))) {} (p) }
                        }
                    }
                }
            }
        }
        @if !peers.is_empty() {
            details {
                summary { "The chart's numbers" }
                div.scroll {
                    table {
                        thead { tr {
                            th scope="col" { "Day (UTC)" }
                            @for p in &peers { th.n scope="col" { (p) } }
                        } }
                        tbody {
                            @for (day, by) in &days {
                                tr {
                                    th scope="row" { (day_label(*day)) }
                                    @for p in &peers { td.n { (by.get(p).copied().unwrap_or(0)) } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Via;

    fn import(at_ms: i64, peer: &str, changes: u64, known: u64) -> JournalEntry {
        JournalEntry {
            id: 0,
            at_ms,
            kind: JournalKind::Import,
            via: Via::File,
            peer: Some(peer.into()),
            full: false,
            changes,
            applied: changes - known,
            known,
            older: 0,
            quarantined: 0,
            bytes: None,
            duration_ms: 0,
        }
    }

    #[test]
    fn changes_already_known_are_not_counted_as_received() {
        let now = 100 * DAY_MS + 5;
        let days = per_day(
            &[
                import(now, "field-1", 10, 4),
                import(now - 1, "field-1", 3, 0),
                import(now - DAY_MS, "field-2", 2, 0),
                import(now - 30 * DAY_MS, "field-2", 7, 0),
            ],
            now,
        );
        assert_eq!(days.len(), DAYS as usize);
        assert_eq!(days[&100]["field-1"], 9);
        assert_eq!(days[&99]["field-2"], 2);
        assert!(days.values().all(|by| by.values().all(|n| *n != 7)));
    }
}
