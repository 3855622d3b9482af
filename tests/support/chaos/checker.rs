//! The independent checker of a chaos run. It reads only the clients' history, what
//! PostgreSQL holds, what the campaign's topic carries and the summary the issuers
//! serve — none of the issuer's code — and names every broken promise: never over
//! `limit`, never over `perUserLimit`, everyone told "admitted" holds that coupon, and
//! nobody holds one without an answer that may have admitted them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::history::{Answer, Attempt};

/// A coupon in PostgreSQL.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Coupon {
    pub user: String,
    pub ordinal: i64,
    pub sequence: i64,
}

/// A message on the campaign's topic, in its partition's order; `claim` is the winner it
/// names, `None` when it is not a winner event of the campaign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub partition: i32,
    pub offset: i64,
    pub claim: Option<Coupon>,
}

/// An unresolved row of `failed_events` for the campaign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedEvent {
    pub partition: i32,
    pub offset: i64,
    pub reason: String,
    pub error: String,
}

/// The counts of the campaign's summary (`GET /v1/campaigns/{campaign}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    pub admitted: i64,
    pub issued: i64,
    pub pending_persistence: i64,
}

/// What a campaign ended with, once the faults healed and the consumers drained.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub limit: i64,
    pub per_user_limit: i64,
    pub coupons: Vec<Coupon>,
    pub events: Vec<Event>,
    pub unresolved: Vec<FailedEvent>,
    /// `None` when no issuer answered with it.
    pub summary: Option<Summary>,
}

/// A promise a run broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// More coupons than the limit.
    OverLimit,
    /// A user holds more coupons than the per-user limit.
    OverPerUserLimit,
    /// A sequence held twice, or outside 1..=limit.
    DuplicateOrOutOfRangeSequence,
    /// A user answered 201 (or told by a 409 that they hold a sequence) holds no such coupon.
    AdmittedWithoutCoupon,
    /// A coupon whose user got neither its 201 nor an answer that may have admitted them.
    CouponWithoutAdmission,
    /// A 5xx docs/api.md does not list for an apply.
    Unlisted5xx,
    /// A 4xx an apply of a well-formed request must not get (bad token, unknown campaign, …).
    UnexpectedAnswer,
    /// Someone was told `sold_out` while the campaign ended below its limit (a slot lost).
    SoldOutBelowLimit,
    /// The summary's counts differ from the database's, or persistence never drained.
    SummaryMismatch,
    /// A failed event left unresolved.
    FailedEventUnresolved,
    /// The first claim of a sequence on the topic is not the coupon holding it, or a
    /// coupon's sequence is claimed by no event.
    TopicDisagrees,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::OverLimit => "over_limit",
            Self::OverPerUserLimit => "over_per_user_limit",
            Self::DuplicateOrOutOfRangeSequence => "duplicate_or_out_of_range_sequence",
            Self::AdmittedWithoutCoupon => "admitted_without_coupon",
            Self::CouponWithoutAdmission => "coupon_without_admission",
            Self::Unlisted5xx => "unlisted_5xx",
            Self::UnexpectedAnswer => "unexpected_answer",
            Self::SoldOutBelowLimit => "sold_out_below_limit",
            Self::SummaryMismatch => "summary_mismatch",
            Self::FailedEventUnresolved => "failed_event_unresolved",
            Self::TopicDisagrees => "topic_disagrees",
        }
    }
}

/// One broken promise, with what shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub kind: Kind,
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.detail)
    }
}

fn violation(kind: Kind, detail: String) -> Violation {
    Violation { kind, detail }
}

/// Every violation of one campaign: `attempts` are the history's attempts on it.
pub fn check(observed: &Observed, attempts: &[&Attempt]) -> Vec<Violation> {
    let mut found = Vec::new();
    found.extend(limits(observed));
    found.extend(sequences(observed));
    found.extend(answers(attempts));
    found.extend(admitted_without_coupon(observed, attempts));
    found.extend(coupon_without_admission(observed, attempts));
    found.extend(sold_out_below_limit(observed, attempts));
    found.extend(summary(observed));
    found.extend(observed.unresolved.iter().map(|f| {
        let detail = format!(
            "partition {} offset {}: {} ({})",
            f.partition, f.offset, f.reason, f.error
        );
        violation(Kind::FailedEventUnresolved, detail)
    }));
    found.extend(topic(observed));
    found
}

fn limits(observed: &Observed) -> Vec<Violation> {
    let mut found = Vec::new();
    if observed.coupons.len() as i64 > observed.limit {
        let detail = format!(
            "{} coupons, limit {}",
            observed.coupons.len(),
            observed.limit
        );
        found.push(violation(Kind::OverLimit, detail));
    }
    for (user, held) in coupons_by_user(&observed.coupons) {
        if held.len() as i64 > observed.per_user_limit {
            let detail = format!(
                "{user} holds {held:?}, perUserLimit {}",
                observed.per_user_limit
            );
            found.push(violation(Kind::OverPerUserLimit, detail));
        }
    }
    found
}

fn sequences(observed: &Observed) -> Vec<Violation> {
    let mut holders: BTreeMap<i64, Vec<&str>> = BTreeMap::new();
    for coupon in &observed.coupons {
        holders
            .entry(coupon.sequence)
            .or_default()
            .push(&coupon.user);
    }
    holders
        .into_iter()
        .filter(|(sequence, users)| users.len() > 1 || !(1..=observed.limit).contains(sequence))
        .map(|(sequence, users)| {
            let detail = format!(
                "sequence {sequence} held by {users:?} (limit {})",
                observed.limit
            );
            violation(Kind::DuplicateOrOutOfRangeSequence, detail)
        })
        .collect()
}

/// The answers docs/api.md lists for an apply that a well-formed request with a valid
/// identity may get.
fn answers(attempts: &[&Attempt]) -> Vec<Violation> {
    attempts
        .iter()
        .filter_map(|attempt| {
            let Answer::Http { status, reason, .. } = &attempt.answer else {
                return None;
            };
            let listed = matches!(
                (*status, reason.as_str()),
                (201, _)
                    | (409, "already_applied")
                    | (410, "sold_out")
                    | (429, "rate_limited")
                    | (
                        503,
                        "backend_unavailable"
                            | "outcome_unknown"
                            | "admission_unconfirmed"
                            | "identity_unavailable"
                    )
            );
            let kind = match *status {
                _ if listed => return None,
                500.. => Kind::Unlisted5xx,
                _ => Kind::UnexpectedAnswer,
            };
            Some(violation(kind, describe(attempt)))
        })
        .collect()
}

fn describe(attempt: &Attempt) -> String {
    format!(
        "{} to issuer {} at {:?}: {:?}",
        attempt.user, attempt.issuer, attempt.sent, attempt.answer
    )
}

fn coupons_by_user(coupons: &[Coupon]) -> BTreeMap<&str, BTreeSet<i64>> {
    let mut by_user: BTreeMap<&str, BTreeSet<i64>> = BTreeMap::new();
    for coupon in coupons {
        by_user
            .entry(&coupon.user)
            .or_default()
            .insert(coupon.sequence);
    }
    by_user
}

/// A 201 names the sequence won; a 409 `already_applied` the sequences held: each must be
/// the user's coupon.
fn admitted_without_coupon(observed: &Observed, attempts: &[&Attempt]) -> Vec<Violation> {
    let held = coupons_by_user(&observed.coupons);
    attempts
        .iter()
        .filter_map(|attempt| match &attempt.answer {
            Answer::Http {
                status: 201 | 409,
                sequences,
                ..
            } => {
                let holds = held.get(attempt.user.as_str());
                let missing: Vec<i64> = (sequences.iter())
                    .filter(|s| !holds.is_some_and(|h| h.contains(*s)))
                    .copied()
                    .collect();
                let detail = format!("{}; holds {holds:?}, lacks {missing:?}", describe(attempt));
                (!missing.is_empty()).then(|| violation(Kind::AdmittedWithoutCoupon, detail))
            }
            _ => None,
        })
        .collect()
}

/// Whether an answer leaves open that the attempt admitted its user: no answer to a
/// request that went out, `503 outcome_unknown` (Redis's answer was lost) or `503
/// admission_unconfirmed` ("you were admitted but Kafka did not ack in time"). A
/// connection no issuer took admitted nobody, nor did a `503 backend_unavailable`.
fn ambiguous(answer: &Answer) -> bool {
    match answer {
        Answer::NoAnswer { .. } => true,
        Answer::Unreached { .. } => false,
        Answer::Http { status, reason, .. } => {
            *status == 503 && matches!(reason.as_str(), "outcome_unknown" | "admission_unconfirmed")
        }
    }
}

/// Each of a user's coupons is named by one of their 201s, or stands for one of their
/// ambiguous attempts (each attempt admits at most once).
fn coupon_without_admission(observed: &Observed, attempts: &[&Attempt]) -> Vec<Violation> {
    let mut answered: HashMap<&str, (BTreeSet<i64>, usize)> = HashMap::new();
    for attempt in attempts {
        let (won, maybe) = answered.entry(attempt.user.as_str()).or_default();
        match &attempt.answer {
            Answer::Http {
                status: 201,
                sequences,
                ..
            } => won.extend(sequences),
            answer if ambiguous(answer) => *maybe += 1,
            _ => {}
        }
    }
    let mut found = Vec::new();
    for (user, held) in coupons_by_user(&observed.coupons) {
        let (won, maybe) = answered.get(user).cloned().unwrap_or_default();
        let unexplained: Vec<i64> = held.difference(&won).copied().collect();
        if unexplained.len() > maybe {
            let told: Vec<String> = (attempts.iter())
                .filter(|a| a.user == user)
                .map(|a| format!("{:?} from issuer {} at {:?}", a.answer, a.issuer, a.sent))
                .collect();
            let detail = format!(
                "{user} holds {held:?}: 201 for {won:?}, {maybe} ambiguous answers; told {told:?}"
            );
            found.push(violation(Kind::CouponWithoutAdmission, detail));
        }
    }
    found
}

/// A slot is never given back, and every admitted slot becomes a coupon: a campaign that
/// answered `sold_out` ends with exactly `limit` coupons.
fn sold_out_below_limit(observed: &Observed, attempts: &[&Attempt]) -> Vec<Violation> {
    let told = attempts.iter().find(
        |a| matches!(&a.answer, Answer::Http { status: 410, reason, .. } if reason == "sold_out"),
    );
    match told {
        Some(attempt) if (observed.coupons.len() as i64) < observed.limit => {
            let detail = format!(
                "{} coupons of {}; {}",
                observed.coupons.len(),
                observed.limit,
                describe(attempt)
            );
            vec![violation(Kind::SoldOutBelowLimit, detail)]
        }
        _ => Vec::new(),
    }
}

fn summary(observed: &Observed) -> Vec<Violation> {
    let coupons = observed.coupons.len() as i64;
    let detail = match observed.summary {
        None => "no issuer served the summary".to_string(),
        Some(s) if (s.admitted, s.issued, s.pending_persistence) == (coupons, coupons, 0) => {
            return Vec::new();
        }
        Some(s) => format!("{s:?}, {coupons} coupons in PostgreSQL"),
    };
    vec![violation(Kind::SummaryMismatch, detail)]
}

/// The first event claiming a sequence (events of one sequence share a partition, in
/// order) is the coupon holding it; every coupon's sequence is claimed.
fn topic(observed: &Observed) -> Vec<Violation> {
    let mut events: Vec<&Event> = observed.events.iter().collect();
    events.sort_by_key(|e| (e.partition, e.offset));
    let mut first: BTreeMap<i64, &Coupon> = BTreeMap::new();
    for claim in events.iter().filter_map(|e| e.claim.as_ref()) {
        first.entry(claim.sequence).or_insert(claim);
    }
    let mut found = Vec::new();
    for coupon in &observed.coupons {
        match first.get(&coupon.sequence) {
            Some(claim) if *claim == coupon => {}
            claim => {
                let detail = format!("coupon {coupon:?}, first claim on the topic {claim:?}");
                found.push(violation(Kind::TopicDisagrees, detail));
            }
        }
    }
    let held: BTreeSet<i64> = observed.coupons.iter().map(|c| c.sequence).collect();
    for (sequence, claim) in first.iter().filter(|(s, _)| !held.contains(*s)) {
        let detail = format!("sequence {sequence} claimed by {claim:?} on the topic, no coupon");
        found.push(violation(Kind::TopicDisagrees, detail));
    }
    found
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn coupon(user: &str, ordinal: i64, sequence: i64) -> Coupon {
        Coupon {
            user: user.into(),
            ordinal,
            sequence,
        }
    }

    fn attempt(user: &str, answer: Answer) -> Attempt {
        Attempt {
            campaign: 0,
            user: user.into(),
            issuer: 0,
            sent: Duration::ZERO,
            answered: Duration::from_millis(5),
            answer,
        }
    }

    fn claims(coupons: &[Coupon]) -> Vec<Event> {
        (coupons.iter().enumerate())
            .map(|(offset, c)| Event {
                partition: 0,
                offset: offset as i64,
                claim: Some(c.clone()),
            })
            .collect()
    }

    /// A sold-out campaign of limit 4, two coupons per user, where everything holds: `a`
    /// won twice then was told it holds both, `b` won once, `c`'s first try got no answer
    /// (it won) and its retries were refused, `d` was unconfirmed, `e` sold out.
    fn healthy() -> (Observed, Vec<Attempt>) {
        let coupons = vec![
            coupon("a", 1, 1),
            coupon("a", 2, 2),
            coupon("b", 1, 3),
            coupon("c", 1, 4),
        ];
        let observed = Observed {
            limit: 4,
            per_user_limit: 2,
            events: claims(&coupons),
            coupons,
            unresolved: Vec::new(),
            summary: Some(Summary {
                admitted: 4,
                issued: 4,
                pending_persistence: 0,
            }),
        };
        let attempts = vec![
            attempt("a", Answer::admitted(1)),
            attempt("a", Answer::admitted(2)),
            attempt(
                "a",
                Answer::http(
                    409,
                    &serde_json::json!({"reason": "already_applied", "sequences": [1, 2]}),
                ),
            ),
            attempt("b", Answer::admitted(3)),
            attempt(
                "c",
                Answer::NoAnswer {
                    error: "timed out".into(),
                },
            ),
            attempt("c", Answer::refused(503, "backend_unavailable")),
            attempt("c", Answer::refused(429, "rate_limited")),
            attempt("c", Answer::refused(410, "sold_out")),
            attempt("d", Answer::refused(503, "admission_unconfirmed")),
            attempt("e", Answer::refused(410, "sold_out")),
        ];
        (observed, attempts)
    }

    fn kinds(observed: &Observed, attempts: &[Attempt]) -> Vec<Kind> {
        let refs: Vec<&Attempt> = attempts.iter().collect();
        let mut kinds: Vec<Kind> = check(observed, &refs).into_iter().map(|v| v.kind).collect();
        kinds.dedup();
        kinds
    }

    #[test]
    fn a_healthy_run_has_no_violation() {
        let (observed, attempts) = healthy();
        assert_eq!(kinds(&observed, &attempts), vec![]);
    }

    /// Seed 1005: `outcome_unknown` may have admitted; `backend_unavailable` says nothing
    /// was, so a coupon behind it alone is a broken promise.
    #[test]
    fn outcome_unknown_may_have_admitted_and_backend_unavailable_did_not() {
        let (observed, mut attempts) = healthy();
        let lost = (attempts.iter())
            .position(|a| matches!(a.answer, Answer::NoAnswer { .. }))
            .expect("c's first try got no answer");
        attempts[lost].answer = Answer::refused(503, "outcome_unknown");
        assert_eq!(kinds(&observed, &attempts), vec![]);
        attempts[lost].answer = Answer::refused(503, "backend_unavailable");
        assert_eq!(
            kinds(&observed, &attempts),
            vec![Kind::CouponWithoutAdmission]
        );
    }

    type Breakage = fn(&mut Observed, &mut Vec<Attempt>);

    /// A breakage of [`healthy`] and the violations it must be named by.
    fn case(expected: &'static [Kind], breakage: Breakage) -> (&'static [Kind], Breakage) {
        (expected, breakage)
    }

    fn kind_set(found: &[Kind]) -> BTreeSet<Kind> {
        found.iter().copied().collect()
    }

    #[test]
    fn each_broken_promise_is_named() {
        use Kind::*;
        let cases = [
            // Four coupons in 1..=3 cannot all be distinct: both are named.
            case(&[OverLimit, DuplicateOrOutOfRangeSequence], |o, _| {
                o.limit = 3
            }),
            case(&[OverPerUserLimit], |o, _| o.per_user_limit = 1),
            case(&[DuplicateOrOutOfRangeSequence, TopicDisagrees], |o, _| {
                o.coupons[3].sequence = 3;
                o.events = claims(&o.coupons);
            }),
            case(&[DuplicateOrOutOfRangeSequence, TopicDisagrees], |o, _| {
                o.coupons[3].sequence = 0;
            }),
            case(&[AdmittedWithoutCoupon], |_, a| {
                a.push(attempt("e", Answer::admitted(4)))
            }),
            case(&[AdmittedWithoutCoupon], |_, a| {
                let told = serde_json::json!({"reason": "already_applied", "sequences": [3, 4]});
                a.push(attempt("b", Answer::http(409, &told)))
            }),
            // c's only ambiguous attempt is gone: nothing may have admitted it.
            case(&[CouponWithoutAdmission], |_, a| {
                a.retain(|a| !matches!(a.answer, Answer::NoAnswer { .. }))
            }),
            // c's only ambiguous attempt never reached an issuer.
            case(&[CouponWithoutAdmission], |_, a| {
                for attempt in a.iter_mut() {
                    if let Answer::NoAnswer { error } = &attempt.answer {
                        let error = error.clone();
                        attempt.answer = Answer::Unreached { error };
                    }
                }
            }),
            // b won once but holds two.
            case(&[CouponWithoutAdmission], |o, _| {
                o.coupons.push(coupon("b", 2, 5));
                o.limit = 5;
                o.events = claims(&o.coupons);
                o.summary = Some(Summary {
                    admitted: 5,
                    issued: 5,
                    pending_persistence: 0,
                });
            }),
            case(&[Unlisted5xx], |_, a| {
                a.push(attempt("f", Answer::refused(500, "internal")))
            }),
            case(&[Unlisted5xx], |_, a| {
                a.push(attempt("f", Answer::refused(502, "")))
            }),
            case(&[UnexpectedAnswer], |_, a| {
                a.push(attempt("f", Answer::refused(401, "invalid_token")))
            }),
            case(&[UnexpectedAnswer], |_, a| {
                a.push(attempt("f", Answer::refused(404, "unknown_campaign")))
            }),
            case(&[SoldOutBelowLimit], |o, _| o.limit = 5),
            case(&[SummaryMismatch], |o, _| o.summary = None),
            case(&[SummaryMismatch], |o, _| {
                o.summary = Some(Summary {
                    admitted: 4,
                    issued: 3,
                    pending_persistence: 1,
                })
            }),
            case(&[FailedEventUnresolved], |o, _| {
                o.unresolved.push(FailedEvent {
                    partition: 1,
                    offset: 9,
                    reason: "invalid_event".into(),
                    error: "not json".into(),
                })
            }),
            case(&[TopicDisagrees], |o, _| o.events.truncate(3)),
            case(&[TopicDisagrees], |o, _| {
                let ghost = Event {
                    partition: 0,
                    offset: -1,
                    claim: Some(coupon("z", 1, 2)),
                };
                o.events.push(ghost);
            }),
            case(&[TopicDisagrees], |o, _| {
                let stray = Event {
                    partition: 2,
                    offset: 0,
                    claim: Some(coupon("z", 1, 9)),
                };
                o.events.push(stray);
            }),
        ];
        for (expected, breakage) in cases {
            let (mut observed, mut attempts) = healthy();
            breakage(&mut observed, &mut attempts);
            let found = kinds(&observed, &attempts);
            assert_eq!(kind_set(&found), kind_set(expected), "{observed:?}");
        }
    }

    #[test]
    fn undecodable_events_claim_nothing_and_kinds_have_snake_case_names() {
        let (mut observed, attempts) = healthy();
        observed.events.push(Event {
            partition: 0,
            offset: 99,
            claim: None,
        });
        assert_eq!(kinds(&observed, &attempts), vec![]);
        assert_eq!(Kind::Unlisted5xx.name(), "unlisted_5xx");
        assert_eq!(
            Kind::CouponWithoutAdmission.name(),
            "coupon_without_admission"
        );
    }
}
