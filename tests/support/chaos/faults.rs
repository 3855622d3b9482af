//! The injectors: each fault of a schedule done to the real processes and services of
//! the chaos bed, and healed after its length.

use std::time::Duration;

use super::bed::ChaosBed;
use super::deployment::Deployment;
use super::failover;
use super::schedule::{Fault, FaultKind, Target};
use crate::toxiproxy::{Stream, Toxic};

/// How long a slow link holds each of Redis's replies: past the issuers' 1 s Redis
/// timeout.
const SLOW_LINK_DELAY: Duration = Duration::from_millis(2_000);
/// How long a slow link holds each of Kafka's replies: past the deployment's 2 s
/// delivery timeout.
const SLOW_KAFKA_LINK_DELAY: Duration = Duration::from_millis(3_000);

/// Injects `fault` and heals it; returns once healed. Faults on one process or service
/// wait for each other (its slot's or the bed's lock), so a late heal (a broker takes
/// seconds to start) never overlaps the next fault there. `names` are the run's
/// campaigns.
pub async fn inject(fault: Fault, deployment: &Deployment, bed: &ChaosBed, names: &[String]) {
    let Fault {
        kind,
        target,
        lasts,
        ..
    } = fault;
    match (kind, target) {
        (FaultKind::KillApi, Target::Api(i)) => deployment.apis[i].kill_for(lasts).await,
        (FaultKind::PauseApi, Target::Api(i)) => deployment.apis[i].pause_for(lasts).await,
        (FaultKind::KillConsumer, Target::Consumer(i)) => {
            deployment.consumers[i].kill_for(lasts).await
        }
        (FaultKind::PauseConsumer, Target::Consumer(i)) => {
            deployment.consumers[i].pause_for(lasts).await
        }
        (FaultKind::RollingRestart, Target::Apis) => {
            for slot in &deployment.apis {
                slot.restart_gracefully().await;
            }
        }
        (FaultKind::KillBroker, Target::Broker) => bed.outage("kill", "kafka", lasts).await,
        (FaultKind::StopPostgres, Target::Postgres) => bed.outage("stop", "postgres", lasts).await,
        (FaultKind::SlowRedisLink, Target::RedisLink(i)) => {
            let replies = Toxic::latency(Stream::Downstream, SLOW_LINK_DELAY);
            deployment.links.redis[i].fault_for(&[replies], lasts).await
        }
        (FaultKind::PartitionRedisLink, Target::RedisLink(i)) => {
            deployment.links.redis[i].partition_for(lasts).await
        }
        (FaultKind::PartitionPostgresLink, Target::PostgresLink(i)) => {
            deployment.links.postgres[i].partition_for(lasts).await
        }
        (FaultKind::PartitionKafkaLink, Target::KafkaLink(i)) => {
            deployment.links.kafka[i].partition_for(lasts).await
        }
        (FaultKind::SlowKafkaLink, Target::KafkaLink(i)) => {
            let acks = Toxic::latency(Stream::Downstream, SLOW_KAFKA_LINK_DELAY);
            deployment.links.kafka[i].fault_for(&[acks], lasts).await
        }
        (FaultKind::KillRedisPrimary, Target::Sentinel) => {
            failover::kill_sentinel_primary(bed, lasts).await
        }
        (FaultKind::PromoteLaggingReplica, Target::Sentinel) => {
            failover::promote_lagging_replica(bed, lasts).await
        }
        (FaultKind::KillSlotPrimary, Target::SlotPrimary(campaign)) => {
            failover::kill_slot_primary(bed, &names[campaign], lasts).await
        }
        (kind, target) => panic!("the schedule drew {kind:?} on {target:?}"),
    }
}
