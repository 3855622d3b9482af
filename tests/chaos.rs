//! Seeded chaos over the whole distributed path (tests/support/chaos): each seed deploys
//! API issuers and consumers on a test bed of its own, sends a workload under a random
//! fault schedule, and checks the durable record against the clients' history.
//!
//! By default a short slice of fixed seeds (the CI slice). `FIRSTCOME_CHAOS_SEED=N`
//! replays one seed (`scripts/soak --seed N` does, recording it);
//! `FIRSTCOME_CHAOS_SEEDS=A..B` runs seeds A to B-1 (what `scripts/soak` does), and
//! `FIRSTCOME_CHAOS_REPORT=FILE.md` adds each seed to the soak's record `FILE.jsonl`
//! (naming the code's `FIRSTCOME_CHAOS_REVISION`) and writes the report of the whole
//! record to `FILE.md`, keeping its "Findings" section.
//! `FIRSTCOME_CHAOS_LOG` sets the deployment's log filter (errors only by default).

// The drain reads Redis through a connection of any deployment (one primary, Sentinel or
// Cluster); proving its future `Send` takes the compiler past its default depth of 128.
#![recursion_limit = "256"]

use std::path::Path;

use firstcome_e2e::chaos::bed::ChaosBed;
use firstcome_e2e::chaos::report::{
    SeedReport, keeping_findings, markdown, merged, record, replay_command,
};
use firstcome_e2e::chaos::run_seed;

/// Seeds that draw, between them, every fault kind of the single Redis: API issuers
/// killed and paused, consumers killed and paused, a rolling restart, the broker killed
/// (answers `admission_unconfirmed`), PostgreSQL stopped, slow links to Redis (answers
/// `outcome_unknown`), slow and partitioned links to Kafka, partitions from Redis and
/// from PostgreSQL (4011); and campaigns behind waiting rooms, some sold out while
/// their crowd still queues (5002). About 3 minutes on 2 busy cores (192 s in CI).
const CI_SLICE: [u64; 4] = [2001, 2003, 4011, 5002];

fn seeds() -> Vec<u64> {
    let parse = |s: &str| {
        s.trim()
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("not a seed: {s}"))
    };
    if let Ok(seed) = std::env::var("FIRSTCOME_CHAOS_SEED") {
        return vec![parse(&seed)];
    }
    match std::env::var("FIRSTCOME_CHAOS_SEEDS") {
        Ok(range) => {
            let (from, to) = range
                .split_once("..")
                .unwrap_or_else(|| panic!("FIRSTCOME_CHAOS_SEEDS is A..B, not {range}"));
            (parse(from)..parse(to)).collect()
        }
        Err(_) => CI_SLICE.to_vec(),
    }
}

/// Adds `report` to the soak's record beside `file` (its `.jsonl`) and writes the
/// record's report to `file`, keeping its hand-written findings (docs/soak.md's).
fn add_to_soak(file: &Path, report: &SeedReport) {
    let record_file = file.with_extension("jsonl");
    let earlier = std::fs::read_to_string(&record_file).unwrap_or_default();
    let all = merged(&earlier, std::slice::from_ref(report));
    std::fs::write(&record_file, record(&all)).expect("writing the soak's record");
    let previous = std::fs::read_to_string(file).unwrap_or_default();
    std::fs::write(file, keeping_findings(markdown(&all), &previous))
        .expect("writing the soak's report");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_fault_schedules_break_no_promise() {
    let bed = ChaosBed::up();
    let revision = std::env::var("FIRSTCOME_CHAOS_REVISION").unwrap_or("unnamed".into());
    let mut reports: Vec<SeedReport> = Vec::new();
    for seed in seeds() {
        let report = run_seed(&bed, seed, &revision).await;
        println!("{}", report.line());
        for violation in &report.violations {
            println!("chaos seed {seed}: {violation}");
        }
        if let Ok(file) = std::env::var("FIRSTCOME_CHAOS_REPORT") {
            add_to_soak(Path::new(&file), &report);
        }
        reports.push(report);
    }
    let failed: Vec<String> = (reports.iter())
        .filter(|r| !r.violations.is_empty())
        .map(|r| replay_command(r.seed))
        .collect();
    assert!(
        failed.is_empty(),
        "seeds with violations; replay each: {failed:#?}"
    );
}
