//! Which Events a status change publishes. Pure: one for a phase change (and
//! `Provisioned` when a campaign leaves provisioning), one when the planned issuer
//! replicas change, one Warning for each condition that turned False with a new reason;
//! the controller only sends them.

use std::cmp::Ordering;

use kube::runtime::events::EventType;

use crate::reason::Reason;
use crate::resource::{CouponCampaignStatus, Phase};
use crate::status;

/// One Event to publish about the campaign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub type_: EventType,
    pub reason: String,
    pub note: String,
}

fn notice(type_: EventType, reason: impl ToString, note: impl Into<String>) -> Notice {
    Notice {
        type_,
        reason: reason.to_string(),
        note: note.into(),
    }
}

/// The Events that going from `old` to `new` publishes, in order.
pub fn notices(old: Option<&CouponCampaignStatus>, new: &CouponCampaignStatus) -> Vec<Notice> {
    let mut notices = phase_notices(old.map(|s| s.phase), new);
    notices.extend(scaled_notice(old, new));
    notices.extend(condition_notices(old, new));
    notices
}

/// The issuers scaled by the plan: to peak before the opening, back to base after it.
fn scaled_notice(old: Option<&CouponCampaignStatus>, new: &CouponCampaignStatus) -> Option<Notice> {
    let (before, after) = (old?.issuer_replicas, new.issuer_replicas);
    let reason = match before.cmp(&after) {
        Ordering::Less => Reason::IssuersScaledUp,
        Ordering::Greater => Reason::IssuersScaledDown,
        Ordering::Equal => return None,
    };
    let note = format!("issuer replicas {before} → {after}");
    Some(notice(EventType::Normal, reason, note))
}

fn phase_notices(old: Option<Phase>, new: &CouponCampaignStatus) -> Vec<Notice> {
    if old == Some(new.phase) {
        return Vec::new();
    }
    let mut notices = vec![phase_notice(new)];
    let was_provisioning = matches!(old, None | Some(Phase::Pending | Phase::Provisioning));
    let is_provisioned = !matches!(
        new.phase,
        Phase::Provisioning | Phase::Failed | Phase::Pending
    );
    if was_provisioning && is_provisioned {
        notices.push(notice(
            EventType::Normal,
            Reason::Provisioned,
            "Redis keys, topic and issuers are in place",
        ));
    }
    notices
}

fn phase_notice(new: &CouponCampaignStatus) -> Notice {
    use EventType::{Normal, Warning};
    match new.phase {
        Phase::Open => notice(Normal, Reason::Opened, "the campaign is open for applies"),
        Phase::SoldOut => notice(
            Normal,
            Reason::SoldOut,
            format!("all {} coupons admitted", new.admitted),
        ),
        Phase::Closed => notice(Normal, Reason::Closed, "the campaign is closed"),
        Phase::Scheduled => notice(
            Normal,
            Reason::Scheduled,
            "provisioned; waiting for opensAt",
        ),
        Phase::Provisioning => notice(Normal, Reason::Provisioning, "waiting for Redis and Kafka"),
        Phase::Failed => notice(
            Warning,
            Reason::Failed,
            "the campaign cannot run; see its conditions",
        ),
        Phase::Pending => notice(Normal, Reason::Pending, ""),
    }
}

/// A Warning for each condition that turned False, or stayed False with a new reason.
/// `CouponsRemaining` and `Paused` are False without being a problem.
fn condition_notices<'a>(
    old: Option<&'a CouponCampaignStatus>,
    new: &'a CouponCampaignStatus,
) -> impl Iterator<Item = Notice> + 'a {
    new.conditions
        .iter()
        .filter(|c| c.status == "False")
        .filter(|c| c.reason != Reason::CouponsRemaining && c.reason != Reason::Paused)
        .filter(move |c| {
            let before = old.and_then(|s| status::condition(s, &c.type_));
            before.is_none_or(|b| b.status != "False" || b.reason != c.reason)
        })
        .map(|c| notice(EventType::Warning, &c.reason, c.message.clone()))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::status::{READY, REDIS_READY, SOLD_OUT};

    fn status(phase: Phase, conditions: &[(&str, &str, Reason)]) -> CouponCampaignStatus {
        CouponCampaignStatus {
            phase,
            admitted: 100,
            conditions: conditions
                .iter()
                .map(|(kind, status, reason)| Condition {
                    type_: kind.to_string(),
                    status: status.to_string(),
                    reason: reason.to_string(),
                    message: format!("{reason} message"),
                    observed_generation: None,
                    last_transition_time: Time(Timestamp::UNIX_EPOCH),
                })
                .collect(),
            ..CouponCampaignStatus::default()
        }
    }

    fn reasons(notices: &[Notice]) -> Vec<(EventType, &str)> {
        notices
            .iter()
            .map(|n| (n.type_, n.reason.as_str()))
            .collect()
    }

    #[test]
    fn each_transition_publishes_its_events() {
        use EventType::{Normal, Warning};
        let provisioning = status(
            Phase::Provisioning,
            &[(REDIS_READY, "False", Reason::RedisUnavailable)],
        );
        let secret_missing = status(
            Phase::Provisioning,
            &[(REDIS_READY, "False", Reason::BackendsSecretMissing)],
        );
        let open = status(
            Phase::Open,
            &[
                (REDIS_READY, "True", Reason::Provisioned),
                (SOLD_OUT, "False", Reason::CouponsRemaining),
            ],
        );
        let open_no_issuer = status(
            Phase::Open,
            &[
                (READY, "False", Reason::NoReadyIssuer),
                (SOLD_OUT, "False", Reason::CouponsRemaining),
            ],
        );
        let sold_out = status(Phase::SoldOut, &[(SOLD_OUT, "True", Reason::SoldOut)]);
        let failed = status(Phase::Failed, &[(READY, "False", Reason::InvalidSpec)]);
        let scheduled = status(Phase::Scheduled, &[]);
        let at_peak = CouponCampaignStatus {
            issuer_replicas: 12,
            ..scheduled.clone()
        };
        let table: [(Option<&CouponCampaignStatus>, &CouponCampaignStatus, Vec<_>); 11] = [
            (
                None,
                &provisioning,
                vec![(Normal, "Provisioning"), (Warning, "RedisUnavailable")],
            ),
            (Some(&provisioning), &provisioning, vec![]),
            (
                Some(&provisioning),
                &secret_missing,
                vec![(Warning, "BackendsSecretMissing")],
            ),
            (
                Some(&provisioning),
                &open,
                vec![(Normal, "Opened"), (Normal, "Provisioned")],
            ),
            (
                None,
                &open,
                vec![(Normal, "Opened"), (Normal, "Provisioned")],
            ),
            (
                Some(&open),
                &open_no_issuer,
                vec![(Warning, "NoReadyIssuer")],
            ),
            (Some(&open), &sold_out, vec![(Normal, "SoldOut")]),
            (
                Some(&open),
                &failed,
                vec![(Warning, "Failed"), (Warning, "InvalidSpec")],
            ),
            (
                Some(&scheduled),
                &at_peak,
                vec![(Normal, "IssuersScaledUp")],
            ),
            (Some(&at_peak), &at_peak, vec![]),
            (
                Some(&at_peak),
                &scheduled,
                vec![(Normal, "IssuersScaledDown")],
            ),
        ];
        for (i, (old, new, expected)) in table.into_iter().enumerate() {
            assert_eq!(reasons(&notices(old, new)), expected, "row {i}");
        }
    }

    #[test]
    fn notes_say_what_happened() {
        let base = status(Phase::Scheduled, &[]);
        let peak = CouponCampaignStatus {
            issuer_replicas: 12,
            ..base.clone()
        };
        assert_eq!(
            notices(Some(&base), &peak)[0].note,
            "issuer replicas 0 → 12"
        );
        let sold_out = status(Phase::SoldOut, &[]);
        let open = status(Phase::Open, &[]);
        assert_eq!(
            notices(Some(&open), &sold_out)[0].note,
            "all 100 coupons admitted"
        );
        let broken = status(
            Phase::Provisioning,
            &[(REDIS_READY, "False", Reason::RedisUnavailable)],
        );
        assert_eq!(
            notices(Some(&open), &broken)[1].note,
            "RedisUnavailable message"
        );
    }
}
