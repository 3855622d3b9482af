//! The waiting room's metrics: queue length, admissions and how long admitted users
//! waited, per campaign. Registered with the issuer's other metrics.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::labels::CampaignLabel;

type HistogramFamily = Family<CampaignLabel, Histogram, fn() -> Histogram>;

/// The families, registered once per process.
pub struct RoomFamilies {
    queue_length: Family<CampaignLabel, Gauge>,
    admissions: Family<CampaignLabel, Counter>,
    wait_seconds: HistogramFamily,
}

/// One campaign's room metrics, resolved once.
#[derive(Clone, Debug)]
pub struct RoomMetrics {
    queue_length: Gauge,
    admissions: Counter,
    wait_seconds: Histogram,
}

/// 0.5 s to about 2.3 hours, doubling.
fn wait_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.5, 2.0, 15))
}

impl RoomFamilies {
    pub fn register(registry: &mut Registry) -> Self {
        let families = Self {
            queue_length: Family::default(),
            admissions: Family::default(),
            wait_seconds: HistogramFamily::new_with_constructor(wait_histogram),
        };
        registry.register(
            "waiting_room_queue_length",
            "Tickets waiting in the campaign's waiting room, as this issuer last read it",
            families.queue_length.clone(),
        );
        registry.register(
            "waiting_room_admissions",
            "Users this issuer let in from the waiting room",
            families.admissions.clone(),
        );
        registry.register(
            "waiting_room_wait_seconds",
            "How long users let in waited: from joining (or the opening, for the pre-queue) to admission",
            families.wait_seconds.clone(),
        );
        families
    }

    pub fn of(&self, campaign: &str) -> RoomMetrics {
        let label = CampaignLabel::of(campaign);
        RoomMetrics {
            queue_length: self.queue_length.get_or_create(&label).clone(),
            admissions: self.admissions.get_or_create(&label).clone(),
            wait_seconds: self.wait_seconds.get_or_create(&label).clone(),
        }
    }
}

impl RoomMetrics {
    /// One admission run: the queue left, and each admitted user's wait.
    pub fn admitted(&self, waiting: u64, waits_ms: &[u64]) {
        self.queue_length
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
        self.admissions.inc_by(waits_ms.len() as u64);
        for wait in waits_ms {
            self.wait_seconds.observe(*wait as f64 / 1000.0);
        }
    }
}
