//! The injectors: each fault of a schedule done to the real processes and services of
//! the chaos bed, and healed after its length.

use super::bed::ChaosBed;
use super::deployment::Deployment;
use super::schedule::{Fault, FaultKind, Target};

/// Injects `fault` and heals it; returns once healed. Faults on one process wait for each
/// other (its slot's lock), so a late heal never overlaps the next fault there.
pub async fn inject(fault: Fault, deployment: &Deployment, bed: &ChaosBed) {
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
        (FaultKind::KillBroker, Target::Broker) => {
            bed.service("kill", "kafka").await;
            tokio::time::sleep(lasts).await;
            bed.service("start", "kafka").await;
        }
        (FaultKind::StopPostgres, Target::Postgres) => {
            bed.service("stop", "postgres").await;
            tokio::time::sleep(lasts).await;
            bed.service("start", "postgres").await;
        }
        (kind, target) => panic!("the schedule drew {kind:?} on {target:?}"),
    }
}
