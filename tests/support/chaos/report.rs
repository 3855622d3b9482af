//! What a chaos run tells: one line per seed, and the soak's report: a record of every
//! seed run so far (docs/soak.jsonl, one JSON object a line) and the Markdown made from
//! it (docs/soak.md).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What one seed did and found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedReport {
    pub seed: u64,
    /// The code the seed ran (a commit, perhaps "with local changes").
    pub revision: String,
    /// The Redis the seed ran on (`single`, `sentinel`, `cluster`).
    pub redis: String,
    /// The seed's campaigns that had a waiting room (each of its users joined the queue
    /// and applied with the pass it gave).
    #[serde(default)]
    pub rooms: usize,
    /// The schedule's span.
    pub span: Duration,
    /// Wall time of the whole run: deployment, schedule, drain, check.
    pub took: Duration,
    pub faults: BTreeMap<String, usize>,
    /// Apply attempts sent.
    pub requests: usize,
    /// Attempts by answer (`201`, `410 sold_out`, `no answer`, …).
    pub answers: BTreeMap<String, usize>,
    /// Coupons persisted, over the run's campaigns.
    #[serde(default)]
    pub coupons: usize,
    /// Winner events on the campaigns' topics: a winner published again (re-publishing,
    /// the drift audit, a retry's hand-off) counts once more each time.
    #[serde(default)]
    pub events: usize,
    /// `campaign: kind: detail` of each violation.
    pub violations: Vec<String>,
}

/// The command that replays `seed`: it runs with the issuers' logs on and is recorded in
/// the soak's record (`FIRSTCOME_CHAOS_SEED` replays it unrecorded).
pub fn replay_command(seed: u64) -> String {
    format!("scripts/soak --seed {seed}")
}

impl SeedReport {
    /// One line: the seed, its figures, and its violations (or how to replay them).
    pub fn line(&self) -> String {
        let verdict = if self.violations.is_empty() {
            "0 violations".to_string()
        } else {
            format!(
                "{} VIOLATIONS; replay: {}",
                self.violations.len(),
                replay_command(self.seed)
            )
        };
        format!(
            "chaos seed {}: {} s of schedule on {} Redis in {} s, faults {:?}, {} requests {:?}, {verdict}",
            self.seed,
            self.span.as_secs(),
            self.redis,
            self.took.as_secs(),
            self.faults,
            self.requests,
            self.answers
        )
    }
}

fn sum<'a>(counts: impl Iterator<Item = (&'a str, usize)>) -> BTreeMap<&'a str, usize> {
    let mut total = BTreeMap::new();
    for (key, count) in counts {
        *total.entry(key).or_default() += count;
    }
    total
}

fn listed(counts: &BTreeMap<&str, usize>) -> String {
    let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
    parts.join(", ")
}

/// Winner events per coupon, `-` for a record from before they were counted.
fn per_coupon(events: usize, coupons: usize) -> String {
    if coupons == 0 {
        "-".to_string()
    } else {
        format!("{:.1}", events as f64 / coupons as f64)
    }
}

/// `events` as copies per coupon, for the totals.
fn copies(events: usize, coupons: usize) -> String {
    format!("{} per coupon", per_coupon(events, coupons))
}

/// The soak's record with `runs` added: a seed run again replaces its earlier record.
/// `record` is the text of docs/soak.jsonl (one [`SeedReport`] a line); by seed.
pub fn merged(record: &str, runs: &[SeedReport]) -> Vec<SeedReport> {
    let earlier = (record.lines().filter(|line| !line.trim().is_empty())).map(|line| {
        serde_json::from_str::<SeedReport>(line)
            .unwrap_or_else(|error| panic!("a line of the soak's record: {error}: {line}"))
    });
    let mut seeds: BTreeMap<u64, SeedReport> = earlier.map(|r| (r.seed, r)).collect();
    seeds.extend(runs.iter().map(|r| (r.seed, r.clone())));
    seeds.into_values().collect()
}

/// The record's text (docs/soak.jsonl): one JSON object a seed.
pub fn record(reports: &[SeedReport]) -> String {
    reports
        .iter()
        .map(|r| serde_json::to_string(r).expect("a seed report is JSON") + "\n")
        .collect()
}

/// How many violations the seeds found, and in which seeds: "0", or e.g. "4 in 1 seed
/// (4019)".
fn violations_by_seed(reports: &[SeedReport]) -> String {
    let failed: Vec<String> = (reports.iter())
        .filter(|r| !r.violations.is_empty())
        .map(|r| r.seed.to_string())
        .collect();
    let count: usize = reports.iter().map(|r| r.violations.len()).sum();
    match failed.len() {
        0 => "0".to_string(),
        1 => format!("{count} in 1 seed ({})", failed[0]),
        n => format!("{count} in {n} seeds ({})", failed.join(", ")),
    }
}

/// The soak's report in Markdown: totals, then one row per seed, each naming the code it
/// ran (a seed draws the same plan as long as schedule.rs is unchanged).
pub fn markdown(reports: &[SeedReport]) -> String {
    let minutes = reports.iter().map(|r| r.span.as_secs_f64()).sum::<f64>() / 60.0;
    let faults = sum(reports
        .iter()
        .flat_map(|r| r.faults.iter().map(|(k, n)| (k.as_str(), *n))));
    let answers = sum(reports
        .iter()
        .flat_map(|r| r.answers.iter().map(|(k, n)| (k.as_str(), *n))));
    let violations = violations_by_seed(reports);
    let beds = sum(reports.iter().map(|r| (r.redis.as_str(), 1)));
    let coupons: usize = reports.iter().map(|r| r.coupons).sum();
    let events: usize = reports.iter().map(|r| r.events).sum();
    let rooms: usize = reports.iter().map(|r| r.rooms).sum();
    let seeds_with_rooms = reports.iter().filter(|r| r.rooms > 0).count();
    let revisions = sum(reports.iter().map(|r| (r.revision.as_str(), 1)));
    let mut text = format!(
        "# Chaos soak\n\nWritten by `scripts/soak`: seeded random fault schedules over the distributed \
         path (tests/support/chaos), each checked by the independent checker. Each run adds its \
         seeds to the record, docs/soak.jsonl (a seed run again replaces its row).\n\n\
         - seeds: {} (Redis: {})\n- campaigns with a waiting room: {rooms} (in {seeds_with_rooms} seeds)\n\
         - minutes of schedule: {minutes:.1}\n- faults by kind: {}\n\
         - requests: {} ({})\n- coupons: {coupons}, winner events on the topics: {events} ({})\n\
         - violations: {violations}\n- revisions (seeds): {}\n\n\
         Replay one seed (at its revision): `{}`\n\n\
         | seed | revision | Redis | rooms | schedule (s) | run (s) | faults | requests | events per coupon | violations |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
        reports.len(),
        listed(&beds),
        listed(&faults),
        reports.iter().map(|r| r.requests).sum::<usize>(),
        listed(&answers),
        copies(events, coupons),
        listed(&revisions),
        replay_command(reports.first().map_or(0, |r| r.seed)),
    );
    for r in reports {
        let found = if r.violations.is_empty() {
            "0".to_string()
        } else {
            r.violations.join("<br>")
        };
        let faults = r.faults.iter().map(|(k, n)| (k.as_str(), *n)).collect();
        text.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {found} |\n",
            r.seed,
            r.revision,
            r.redis,
            r.rooms,
            r.span.as_secs(),
            r.took.as_secs(),
            listed(&faults),
            r.requests,
            per_coupon(r.events, r.coupons),
        ));
    }
    text
}

/// The heading of the report's hand-written part, kept when a soak writes it again.
const FINDINGS: &str = "## Findings";

/// `report` followed by the hand-written part of `previous` (its "Findings" section to
/// the end), if it has one: a rerun of the soak rewrites the figures, not the findings.
pub fn keeping_findings(report: String, previous: &str) -> String {
    let kept = (previous.lines().position(|line| line == FINDINGS))
        .map(|at| previous.lines().skip(at).collect::<Vec<_>>().join("\n"));
    match kept {
        Some(findings) => format!("{report}\n{findings}\n"),
        None => report,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(seed: u64, violations: Vec<String>) -> SeedReport {
        SeedReport {
            seed,
            revision: "abc1234".into(),
            redis: "sentinel".into(),
            rooms: 1,
            span: Duration::from_secs(30),
            took: Duration::from_secs(70),
            faults: BTreeMap::from([("kill_api".into(), 2), ("stop_postgres".into(), 1)]),
            requests: 100,
            answers: BTreeMap::from([("201".to_string(), 60), ("410 sold_out".to_string(), 40)]),
            coupons: 60,
            events: 90,
            violations,
        }
    }

    #[test]
    fn the_soak_report_sums_every_seed_and_lists_each() {
        let text = markdown(&[
            report(1, vec![]),
            report(2, vec!["c: over_limit: 4 coupons".into()]),
        ]);
        assert!(text.contains("- revisions (seeds): abc1234 2\n"), "{text}");
        assert!(
            text.contains(
                "- seeds: 2 (Redis: sentinel 2)\n\
                 - campaigns with a waiting room: 2 (in 2 seeds)\n\
                 - minutes of schedule: 1.0\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("- faults by kind: kill_api 4, stop_postgres 2\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "- requests: 200 (201 120, 410 sold_out 80)\n\
                 - coupons: 120, winner events on the topics: 180 (1.5 per coupon)\n\
                 - violations: 1 in 1 seed (2)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "| 1 | abc1234 | sentinel | 1 | 30 | 70 | kill_api 2, stop_postgres 1 | 100 | 1.5 | 0 |\n"
            ),
            "{text}"
        );
        assert!(text.contains(
            "| 2 | abc1234 | sentinel | 1 | 30 | 70 | kill_api 2, stop_postgres 1 | 100 | 1.5 | c: over_limit: 4 coupons |"
        ));
    }

    #[test]
    fn a_rerun_keeps_the_hand_written_findings() {
        let previous = "# Chaos soak\n\n| 1 | old |\n\n## Findings\n\nSeed 9 found x.\n\nMore.\n";
        let report = markdown(&[report(1, vec![])]);
        let written = keeping_findings(report.clone(), previous);
        assert_eq!(
            written,
            format!("{report}\n## Findings\n\nSeed 9 found x.\n\nMore.\n")
        );
        assert!(!written.contains("| 1 | old |"), "{written}");
        assert_eq!(
            keeping_findings(report.clone(), &written),
            written,
            "a second rerun"
        );
        assert_eq!(keeping_findings(report.clone(), "no findings"), report);
    }

    #[test]
    fn a_seed_run_again_replaces_its_record_and_the_others_stay() {
        let first = record(&[report(1, vec![]), report(3, vec!["x".into()])]);
        let mut again = report(3, vec![]);
        again.revision = "def5678".into();
        let merged = merged(&first, &[again.clone(), report(2, vec![])]);
        assert_eq!(merged, vec![report(1, vec![]), report(2, vec![]), again]);
        assert_eq!(
            super::merged(&record(&merged), &[]),
            merged,
            "the record reads back"
        );
    }

    #[test]
    fn a_failing_seed_says_how_to_replay_it() {
        let line = report(17, vec!["x".into()]).line();
        assert!(
            line.ends_with("1 VIOLATIONS; replay: scripts/soak --seed 17"),
            "{line}"
        );
        let passed = report(17, vec![]).line();
        assert!(
            passed.starts_with("chaos seed 17: 30 s of schedule on sentinel Redis in 70 s"),
            "{passed}"
        );
        assert!(passed.ends_with("0 violations"), "{passed}");
    }
}
