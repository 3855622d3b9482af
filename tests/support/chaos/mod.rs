//! Seeded chaos: a seed draws campaigns, a client workload and a fault schedule
//! ([`schedule`]); the run deploys API issuers and consumers on the chaos bed ([`bed`],
//! [`deployment`], through [`links`] its faults slow or partition), sends the workload recording every answer ([`workload`],
//! [`history`]) while injecting the faults ([`faults`]), heals, lets the consumers drain,
//! then reads the durable record ([`observe`]) and checks it against the history with a
//! checker that shares no code with the issuer ([`checker`]). [`report`] tells the result.

pub mod bed;
pub mod checker;
pub mod deployment;
pub mod failover;
pub mod faults;
pub mod history;
pub mod links;
pub mod observe;
pub mod report;
pub mod schedule;
pub mod workload;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bed::ChaosBed;
use deployment::Deployment;
use history::{Answer, Attempt, History};
use links::Links;
use report::SeedReport;
use schedule::Plan;

/// How long the consumers get to persist everything once the faults are healed.
const DRAIN: Duration = Duration::from_secs(120);

/// Runs `seed` on `bed`: deploys, sends the workload under the schedule's faults, drains,
/// checks. The report (of the code at `revision`) lists every violation; a run that
/// cannot proceed panics (after printing its seed).
pub async fn run_seed(bed: &ChaosBed, seed: u64, revision: &str) -> SeedReport {
    let begun = Instant::now();
    let plan = Plan::from_seed(seed);
    println!(
        "chaos seed {seed}: {} s of schedule on {:?} Redis, campaigns {:?}, {} applies, faults {:?}",
        plan.span.as_secs(),
        plan.redis,
        plan.campaigns,
        plan.applies.len(),
        plan.faults
    );
    let names: Vec<String> = (0..plan.campaigns.len())
        .map(|k| crate::unique_name(&format!("chaos-{seed}-{k}")))
        .collect();
    let dir = crate::issuer::temp_dir("chaos");
    let campaigns: Vec<_> = names
        .iter()
        .cloned()
        .zip(plan.campaigns.iter().cloned())
        .collect();
    let replicated = failover::up(bed, plan.redis).await;
    let services = crate::Services {
        redis_url: replicated.unwrap_or_else(|| bed.services.redis_url.clone()),
        database_url: bed.services.database_url.clone(),
        kafka_brokers: bed.services.kafka_brokers.clone(),
    };
    let linked = plan.linked();
    let links = if linked.is_empty() {
        Links::default()
    } else {
        Links::open(bed.toxiproxy().await, &services, &linked, &names[0]).await
    };
    let deployment = Deployment::start(&services, &dir, &campaigns, links).await;
    let clients = workload::Clients::new(&plan, names.clone(), deployment.bases());

    let history = History::new(Instant::now());
    let injected = futures::future::join_all(plan.faults.iter().map(|fault| {
        let deployment = &deployment;
        let history = &history;
        let names = &names;
        async move {
            tokio::time::sleep(fault.at.saturating_sub(history.now())).await;
            faults::inject(*fault, deployment, bed, names).await;
        }
    }));
    futures::future::join(clients.run(&plan, &history), injected).await;

    drain(&services, &deployment, &names).await;
    let attempts = history.attempts();
    let checked = check(&services, &plan, &names, &deployment, &attempts).await;
    deployment.stop().await;
    deployment::delete_topics(&services, &names).await;
    failover::down(bed, plan.redis).await;
    let _ = std::fs::remove_dir_all(&dir);
    SeedReport {
        seed,
        revision: revision.to_string(),
        redis: plan.redis.name().to_string(),
        rooms: plan.campaigns.iter().filter(|c| c.room).count(),
        span: plan.span,
        took: begun.elapsed(),
        faults: (plan.faults_by_kind().into_iter())
            .map(|(kind, n)| (kind.to_string(), n))
            .collect(),
        requests: attempts.len(),
        answers: tally(&attempts),
        coupons: checked.coupons,
        events: checked.events,
        violations: checked.violations,
    }
}

/// Waits (at most [`DRAIN`]) until every campaign has settled (see [`settled`]); the
/// checker judges what is there after that either way.
async fn drain(services: &crate::Services, deployment: &Deployment, names: &[String]) {
    let deadline = Instant::now() + DRAIN;
    let bases = deployment.bases();
    for name in names {
        while !settled(services, &bases, name).await {
            if Instant::now() > deadline {
                println!("chaos: {name} not settled {DRAIN:?} after the schedule");
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Whether campaign `name` has settled: its consumer groups have committed both lanes,
/// Redis holds its counter (restored, if Redis lost it or it was fenced) and its summary
/// shows nothing pending persistence. The summary alone is not enough: while the counter
/// is missing it says 0 admitted, so nothing pending.
async fn settled(services: &crate::Services, bases: &[String], name: &str) -> bool {
    let summary = observe::summary(bases, name).await;
    summary.is_some_and(|s| s.pending_persistence == 0)
        && observe::counter(&services.redis_url, name).await.is_some()
        && observe::consumers_caught_up(&services.kafka_brokers, name, &deployment::topic(name))
            .await
}

/// What the checker found over a run's campaigns.
#[derive(Default)]
struct Checked {
    coupons: usize,
    /// Winner events on the campaigns' topics: copies of one winner count each.
    events: usize,
    violations: Vec<String>,
}

async fn check(
    services: &crate::Services,
    plan: &Plan,
    names: &[String],
    deployment: &Deployment,
    attempts: &[Attempt],
) -> Checked {
    let pool = crate::issuer::postgres(services).await;
    let mut checked = Checked::default();
    for (index, (name, campaign)) in names.iter().zip(&plan.campaigns).enumerate() {
        let topic = deployment::topic(name);
        let observed = observe::observe(
            services,
            &pool,
            &observe::Campaign {
                name,
                topic: &topic,
                limit: i64::from(campaign.limit),
                per_user_limit: i64::from(campaign.per_user_limit),
            },
            &deployment.bases(),
        )
        .await;
        let own: Vec<&Attempt> = attempts.iter().filter(|a| a.campaign == index).collect();
        println!(
            "chaos seed {}: {name}: {} coupons of {} (perUserLimit {}), {} events on the topic",
            plan.seed,
            observed.coupons.len(),
            campaign.limit,
            campaign.per_user_limit,
            observed.events.len()
        );
        checked.coupons += observed.coupons.len();
        checked.events += observed.events.len();
        checked.violations.extend(
            checker::check(&observed, &own)
                .into_iter()
                .map(|v| format!("{name}: {v}")),
        );
    }
    checked
}

/// Attempts by answer: `201`, `409 already_applied`, …, `no answer`, `unreached`.
fn tally(attempts: &[Attempt]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for attempt in attempts {
        let key = match &attempt.answer {
            Answer::Http { status: 201, .. } => "201".to_string(),
            Answer::Http { status, reason, .. } => format!("{status} {reason}"),
            Answer::NoAnswer { .. } => "no answer".to_string(),
            Answer::Unreached { .. } => "unreached".to_string(),
            Answer::RoomSoldOut => "room sold_out".to_string(),
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}
