//! How many issuer pods a campaign runs, and when that changes: `issuer.scaling` scales
//! the issuers to peak `leadSeconds` before `opensAt` and back to base once the campaign
//! is sold out or closed. Pure (now, spec, last status in; replicas and the next instant
//! to look again out), so every case is a row of a table test.

use chrono::{DateTime, TimeDelta, Utc};

use crate::resource::{CouponCampaignSpec, CouponCampaignStatus, Phase, ScalingSpec};

/// The issuer pods to run now, and when the plan changes next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub replicas: i32,
    /// The next instant the plan changes by the clock alone (the lead instant, or
    /// `closesAt`); `None` when only a change of the spec or status can change it.
    pub next: Option<DateTime<Utc>>,
}

impl Plan {
    const fn at(replicas: i32, next: Option<DateTime<Utc>>) -> Self {
        Self { replicas, next }
    }
}

/// The plan at `now`. `status` is the campaign's last recorded status: a campaign whose
/// phase is `SoldOut` goes back to base (and to peak again if its limit is raised while
/// it is open). A paused campaign runs no issuer; without `scaling`, `issuer.replicas`
/// (or `default_replicas`) holds at all times.
pub fn plan(
    now: DateTime<Utc>,
    spec: &CouponCampaignSpec,
    status: Option<&CouponCampaignStatus>,
    default_replicas: i32,
) -> Plan {
    if spec.paused {
        return Plan::at(0, None);
    }
    let Some(scaling) = &spec.issuer.scaling else {
        return Plan::at(spec.issuer.replicas.unwrap_or(default_replicas), None);
    };
    let base = |next| Plan::at(scaling.base_replicas, next);
    let closed = spec.closes_at.is_some_and(|closes| now >= closes);
    let sold_out = status.is_some_and(|s| s.phase == Phase::SoldOut);
    if closed || sold_out {
        return base(None);
    }
    match peak_from(spec, scaling) {
        Some(from) if now < from => base(Some(from)),
        _ => Plan::at(scaling.peak_replicas, spec.closes_at),
    }
}

/// The lead instant: `leadSeconds` before `opensAt`. A campaign without `opensAt` is open
/// from the start, so at peak from the start.
fn peak_from(spec: &CouponCampaignSpec, scaling: &ScalingSpec) -> Option<DateTime<Utc>> {
    let lead = TimeDelta::seconds(i64::from(scaling.lead_seconds));
    spec.opens_at.map(|opens| opens - lead)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::campaign;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn status(phase: Phase) -> CouponCampaignStatus {
        CouponCampaignStatus {
            phase,
            ..CouponCampaignStatus::default()
        }
    }

    const WINDOW: &str = "opensAt: '2026-11-27T09:00:00Z'\nclosesAt: '2026-11-27T21:00:00Z'\n";
    const SCALED: &str =
        "issuer: {scaling: {baseReplicas: 2, peakReplicas: 10, leadSeconds: 600}}\n";

    #[test]
    fn the_plan_follows_the_clock_and_the_sale() {
        let scaled = format!("limit: 1\n{WINDOW}{SCALED}");
        let no_window = format!("limit: 1\n{SCALED}");
        let opens_only = format!("limit: 1\nopensAt: '2026-11-27T09:00:00Z'\n{SCALED}");
        let fixed = format!("limit: 1\n{WINDOW}issuer: {{replicas: 3}}\n");
        let default = format!("limit: 1\n{WINDOW}");
        let paused = format!("limit: 1\n{WINDOW}paused: true\n{SCALED}");
        let lead_default = format!("limit: 1\n{WINDOW}issuer: {{scaling: {{peakReplicas: 4}}}}\n");
        let lead = Some(at("2026-11-27T08:50:00Z"));
        let closes = Some(at("2026-11-27T21:00:00Z"));
        let sold_out = status(Phase::SoldOut);
        let open = status(Phase::Open);
        #[rustfmt::skip]
        let table: [(&str, &str, Option<&CouponCampaignStatus>, Plan); 15] = [
            // a day before: base until the lead instant
            (&scaled, "2026-11-26T09:00:00Z", None, Plan::at(2, lead)),
            (&scaled, "2026-11-27T08:49:59Z", Some(&status(Phase::Scheduled)), Plan::at(2, lead)),
            // from the lead instant, still scheduled: peak until closesAt
            (&scaled, "2026-11-27T08:50:00Z", Some(&status(Phase::Scheduled)), Plan::at(10, closes)),
            (&scaled, "2026-11-27T10:00:00Z", Some(&open), Plan::at(10, closes)),
            // sold out: base, and nothing to wait for but a raised limit
            (&scaled, "2026-11-27T10:00:00Z", Some(&sold_out), Plan::at(2, None)),
            // closed: base, sold out or not
            (&scaled, "2026-11-27T21:00:00Z", Some(&open), Plan::at(2, None)),
            (&scaled, "2026-11-28T00:00:00Z", Some(&status(Phase::Closed)), Plan::at(2, None)),
            // no opensAt: open from the start, so at peak from the start
            (&no_window, "2026-11-27T10:00:00Z", None, Plan::at(10, None)),
            (&no_window, "2026-11-27T10:00:00Z", Some(&sold_out), Plan::at(2, None)),
            (&opens_only, "2026-11-27T09:30:00Z", Some(&open), Plan::at(10, None)),
            // defaults: base 1, lead 5 minutes
            (&lead_default, "2026-11-27T08:54:59Z", None, Plan::at(1, Some(at("2026-11-27T08:55:00Z")))),
            (&lead_default, "2026-11-27T08:55:00Z", None, Plan::at(4, closes)),
            // without scaling: the replicas of the spec, or the operator's default, always
            (&fixed, "2026-11-27T10:00:00Z", Some(&open), Plan::at(3, None)),
            (&default, "2026-11-27T10:00:00Z", Some(&sold_out), Plan::at(7, None)),
            // paused: none, whatever the plan says
            (&paused, "2026-11-27T10:00:00Z", Some(&open), Plan::at(0, None)),
        ];
        for (i, (spec, now, status, expected)) in table.into_iter().enumerate() {
            let spec = campaign(spec).spec;
            assert_eq!(plan(at(now), &spec, status, 7), expected, "row {i}: {now}");
        }
    }
}
