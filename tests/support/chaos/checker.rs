//! The independent checker of a chaos run. It reads only the clients' history, what
//! PostgreSQL holds, what the campaign's topic carries and the summary the issuers
//! serve — none of the issuer's code — and names every broken promise: never over
//! `limit`, never over `perUserLimit`, everyone told "admitted" holds that coupon, and
//! nobody holds one without an answer that may have admitted them; and the counts the
//! operator would publish in the CouponCampaign's status agree with PostgreSQL.

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
    /// The topic it was consumed from: the campaign's or its dead-letter topic.
    pub topic: String,
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

/// The counts the operator publishes in the CouponCampaign's status, read from where it
/// reads them (operator/src/backends): the limit and the admission counter in Redis,
/// the coupons and the unresolved failed events of the campaign in PostgreSQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrdCounts {
    pub limit: i64,
    pub admitted: i64,
    pub issued: i64,
    pub failed_events: i64,
}

impl CrdCounts {
    /// `status.remaining`: limit − admitted, at least 0.
    pub fn remaining(&self) -> i64 {
        (self.limit - self.admitted).max(0)
    }

    /// `status.pendingPersistence`: admitted − issued, at least 0.
    pub fn pending_persistence(&self) -> i64 {
        (self.admitted - self.issued).max(0)
    }
}

/// What a campaign ended with, once the faults healed and the consumers drained.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The campaign's topic (its dead-letter topic is this with `.dlq`).
    pub topic: String,
    pub limit: i64,
    pub per_user_limit: i64,
    pub coupons: Vec<Coupon>,
    pub events: Vec<Event>,
    pub unresolved: Vec<FailedEvent>,
    /// `None` when no issuer answered with it.
    pub summary: Option<Summary>,
    /// `None` when Redis holds no admission counter for the campaign (the operator then
    /// shows the last counts it knew, and `RedisReady=False`).
    pub crd: Option<CrdCounts>,
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
    /// The counts the operator would publish (status.admitted, issued, remaining,
    /// pendingPersistence, failedEvents) differ from the database's.
    CrdCountsMismatch,
    /// A failed event left unresolved.
    FailedEventUnresolved,
    /// The first claim of a sequence on the topic is not the coupon holding it, or a
    /// coupon's sequence is claimed by no event.
    TopicDisagrees,
    /// A winner event on the topic claiming a sequence another user holds, kept nowhere:
    /// no failed event for it (the consumer must store it as a `sequence_conflict`).
    EventDropped,
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
            Self::CrdCountsMismatch => "crd_counts_mismatch",
            Self::FailedEventUnresolved => "failed_event_unresolved",
            Self::TopicDisagrees => "topic_disagrees",
            Self::EventDropped => "event_dropped",
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
    found.extend(crd_counts(observed));
    found.extend(unexpected_failed_events(observed).into_iter().map(|f| {
        let detail = format!(
            "{} partition {} offset {}: {} ({})",
            f.topic, f.partition, f.offset, f.reason, f.error
        );
        violation(Kind::FailedEventUnresolved, detail)
    }));
    found.extend(topic(observed));
    found.extend(dropped_events(observed));
    found
}

/// Each event claiming a sequence that another user's coupon holds has its failed event
/// (at its topic, partition and offset). Not judged while failed events of the
/// dead-letter topic exist: those stand for events of the topic under other offsets
/// (and are named themselves).
fn dropped_events(observed: &Observed) -> Vec<Violation> {
    let dead_letter = format!("{}.dlq", observed.topic);
    if observed.unresolved.iter().any(|f| f.topic == dead_letter) {
        return Vec::new();
    }
    let mut holders: BTreeMap<i64, Vec<&str>> = BTreeMap::new();
    for coupon in &observed.coupons {
        (holders.entry(coupon.sequence).or_default()).push(&coupon.user);
    }
    let kept = |e: &Event| {
        (observed.unresolved.iter()).any(|f| {
            (f.topic.as_str(), f.partition, f.offset) == (&observed.topic, e.partition, e.offset)
        })
    };
    (observed.events.iter())
        .filter(|e| {
            e.claim.as_ref().is_some_and(|c| {
                (holders.get(&c.sequence)).is_some_and(|users| !users.contains(&c.user.as_str()))
            }) && !kept(e)
        })
        .map(|e| {
            let detail = format!(
                "partition {} offset {}: {:?}, no failed event",
                e.partition, e.offset, e.claim
            );
            violation(Kind::EventDropped, detail)
        })
        .collect()
}

/// The first claim of each sequence on the topic (events of one sequence share a
/// partition, in order), with where it is.
fn first_claims(observed: &Observed) -> BTreeMap<i64, &Event> {
    let mut events: Vec<&Event> = observed.events.iter().collect();
    events.sort_by_key(|e| (e.partition, e.offset));
    let mut first: BTreeMap<i64, &Event> = BTreeMap::new();
    for event in events {
        if let Some(claim) = &event.claim {
            first.entry(claim.sequence).or_insert(event);
        }
    }
    first
}

/// Whether `failed` is what docs/failure-modes.md ("Redis losing admissions") says a
/// Redis that lost admissions leaves behind, and nothing else: a `sequence_conflict` of
/// the campaign's topic whose event claims a sequence that an earlier event of its
/// partition claimed first for another user, that user holding the coupon. (A conflict
/// parked on the dead-letter topic is the design's stated residual risk: named.)
fn expected_conflict(
    observed: &Observed,
    first: &BTreeMap<i64, &Event>,
    failed: &FailedEvent,
) -> bool {
    if failed.reason != "sequence_conflict" || failed.topic != observed.topic {
        return false;
    }
    let Some(claim) = (observed.events.iter())
        .find(|e| (e.partition, e.offset) == (failed.partition, failed.offset))
        .and_then(|e| e.claim.as_ref())
    else {
        return false;
    };
    let Some(holder) = first.get(&claim.sequence) else {
        return false;
    };
    let held = (observed.coupons.iter()).find(|c| c.sequence == claim.sequence);
    (holder.partition, holder.offset) < (failed.partition, failed.offset)
        && holder.claim.as_ref().is_some_and(|h| h.user != claim.user)
        && held.is_some_and(|c| Some(c) == holder.claim.as_ref())
}

/// The unresolved failed events other than [`expected_conflict`]s.
fn unexpected_failed_events(observed: &Observed) -> Vec<&FailedEvent> {
    let first = first_claims(observed);
    (observed.unresolved.iter())
        .filter(|f| !expected_conflict(observed, &first, f))
        .collect()
}

/// The operator's status counts (from Redis and PostgreSQL as it reads them) against
/// the coupons: admitted and issued equal them, nothing pending, the rest remaining,
/// and the failed events it counts are the expected conflicts.
fn crd_counts(observed: &Observed) -> Vec<Violation> {
    let coupons = observed.coupons.len() as i64;
    let conflicts = (observed.unresolved.len() - unexpected_failed_events(observed).len()) as i64;
    let Some(crd) = observed.crd else {
        let detail = "Redis holds no admission counter (status.admitted stale)".to_string();
        return vec![violation(Kind::CrdCountsMismatch, detail)];
    };
    let expected = CrdCounts {
        limit: observed.limit,
        admitted: coupons,
        issued: coupons,
        failed_events: conflicts,
    };
    if crd == expected {
        return Vec::new();
    }
    let detail = format!(
        "{crd:?} (remaining {}, pendingPersistence {}); {coupons} coupons of {} in \
         PostgreSQL, {conflicts} expected sequence conflicts",
        crd.remaining(),
        crd.pending_persistence(),
        observed.limit
    );
    vec![violation(Kind::CrdCountsMismatch, detail)]
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
        Answer::Unreached { .. } | Answer::RoomSoldOut => false,
        Answer::Http { status, reason, .. } => {
            *status == 503 && matches!(reason.as_str(), "outcome_unknown" | "admission_unconfirmed")
        }
    }
}

/// Per user: the sequences their 201s named, and how many of their attempts got an
/// ambiguous answer (each may have admitted them once).
fn admissions_by_user<'a>(attempts: &[&'a Attempt]) -> HashMap<&'a str, (BTreeSet<i64>, usize)> {
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
    answered
}

/// Each of a user's coupons is named by one of their 201s, or stands for one of their
/// ambiguous attempts (each attempt admits at most once).
fn coupon_without_admission(observed: &Observed, attempts: &[&Attempt]) -> Vec<Violation> {
    let answered = admissions_by_user(attempts);
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

/// Every admitted slot becomes a coupon: a campaign that answered `sold_out` ends with
/// exactly `limit` coupons, unless Redis lost admissions nobody was told of (a failover's
/// lost writes, a Cluster slot's data gone; seed 4115). Each ambiguous answer whose
/// admission never became a coupon may have held a slot when the campaign said sold out;
/// a restore frees such slots for later applicants (the counts then show them remaining:
/// `summary` and `crd_counts` check that no slot stays counted without its coupon).
fn sold_out_below_limit(observed: &Observed, attempts: &[&Attempt]) -> Vec<Violation> {
    let told = attempts.iter().find(|a| {
        a.answer == Answer::RoomSoldOut
            || matches!(&a.answer, Answer::Http { status: 410, reason, .. } if reason == "sold_out")
    });
    let coupons = observed.coupons.len() as i64;
    match told {
        Some(attempt) if coupons + lost_with_redis(observed, attempts) < observed.limit => {
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

/// How many slots admissions nobody was told of may have held: per user, their
/// ambiguous answers not standing for one of their coupons (a coupon no 201 names),
/// at most the coupons their per-user limit still leaves them.
fn lost_with_redis(observed: &Observed, attempts: &[&Attempt]) -> i64 {
    let held = coupons_by_user(&observed.coupons);
    (admissions_by_user(attempts).into_iter())
        .map(|(user, (won, maybe))| {
            let held = held.get(user).cloned().unwrap_or_default();
            let explained = held.difference(&won).count() as i64;
            let left = observed.per_user_limit - held.len() as i64;
            (maybe as i64 - explained).min(left).max(0)
        })
        .sum()
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
    let first: BTreeMap<i64, &Coupon> = (first_claims(observed).into_iter())
        .filter_map(|(sequence, e)| Some((sequence, e.claim.as_ref()?)))
        .collect();
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

    fn crd(limit: i64, coupons: i64, failed_events: i64) -> CrdCounts {
        CrdCounts {
            limit,
            admitted: coupons,
            issued: coupons,
            failed_events,
        }
    }

    /// `z`'s claim of sequence 3 (b's) after b's, stored as a failed event of `reason`
    /// on `topic`: what a Redis that lost b's admission leaves.
    fn second_claim(o: &mut Observed, user: &str, topic: &str, reason: &str) {
        let offset = o.events.len() as i64;
        o.events.push(Event {
            partition: 0,
            offset,
            claim: Some(coupon(user, 1, 3)),
        });
        o.unresolved.push(FailedEvent {
            topic: topic.into(),
            partition: 0,
            offset,
            reason: reason.into(),
            error: "sequence 3 is held by another user".into(),
        });
        o.crd = Some(crd(4, 4, 1));
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
            topic: "t".into(),
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
            crd: Some(crd(4, 4, 0)),
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
                o.limit = 3;
                o.crd = Some(crd(3, 4, 0));
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
                o.crd = Some(crd(5, 5, 0));
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
            // One coupon short: d's admission_unconfirmed may have held the fifth slot
            // when the 410s came, and Redis lost it (no violation); without it, a slot
            // was lost.
            case(&[], |o, _| {
                o.limit = 5;
                o.crd = Some(crd(5, 4, 0));
            }),
            case(&[SoldOutBelowLimit], |o, a| {
                a.retain(|a| a.user != "d");
                o.limit = 5;
                o.crd = Some(crd(5, 4, 0));
            }),
            // The waiting room said sold out (no 410 at all), one coupon short.
            case(&[SoldOutBelowLimit], |o, a| {
                a.retain(|a| a.user != "d");
                a.retain(|a| !matches!(a.answer, Answer::Http { status: 410, .. }));
                a.push(attempt("g", Answer::RoomSoldOut));
                o.limit = 5;
                o.crd = Some(crd(5, 4, 0));
            }),
            case(&[SummaryMismatch], |o, _| o.summary = None),
            case(&[SummaryMismatch], |o, _| {
                o.summary = Some(Summary {
                    admitted: 4,
                    issued: 3,
                    pending_persistence: 1,
                })
            }),
            case(&[CrdCountsMismatch], |o, _| o.crd = None),
            // The operator would show 5 admitted (a counter ahead of the coupons).
            case(&[CrdCountsMismatch], |o, _| {
                o.crd = Some(CrdCounts {
                    admitted: 5,
                    ..crd(4, 4, 0)
                })
            }),
            case(&[CrdCountsMismatch], |o, _| o.crd = Some(crd(4, 4, 2))),
            // A conflict parked on the dead-letter topic, a "conflict" of the holder's
            // own copy, and a conflict of the event that claimed the sequence first are
            // not what a Redis losing admissions leaves.
            case(&[FailedEventUnresolved, CrdCountsMismatch], |o, _| {
                second_claim(o, "z", "t.dlq", "sequence_conflict")
            }),
            case(&[FailedEventUnresolved, CrdCountsMismatch], |o, _| {
                second_claim(o, "b", "t", "sequence_conflict")
            }),
            case(&[FailedEventUnresolved, CrdCountsMismatch], |o, _| {
                second_claim(o, "z", "t", "invalid_event")
            }),
            // z's second claim consumed and kept nowhere.
            case(&[EventDropped], |o, _| {
                second_claim(o, "z", "t", "sequence_conflict");
                o.unresolved.clear();
                o.crd = Some(crd(4, 4, 0));
            }),
            case(
                &[FailedEventUnresolved, CrdCountsMismatch, TopicDisagrees],
                |o, _| {
                    second_claim(o, "z", "t", "sequence_conflict");
                    let z = o.events.pop().expect("z's claim");
                    o.events.insert(0, Event { offset: -1, ..z });
                    o.unresolved[0].offset = -1;
                },
            ),
            case(&[FailedEventUnresolved], |o, _| {
                o.unresolved.push(FailedEvent {
                    topic: "t".into(),
                    partition: 1,
                    offset: 9,
                    reason: "invalid_event".into(),
                    error: "not json".into(),
                })
            }),
            case(&[TopicDisagrees], |o, _| o.events.truncate(3)),
            // z's claim of a's sequence comes first and is kept nowhere.
            case(&[TopicDisagrees, EventDropped], |o, _| {
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

    /// A lagging replica promoted hands b's sequence to z again: z's event is a
    /// `sequence_conflict` failed event that stays (b keeps the coupon), as the design says.
    #[test]
    fn a_second_claim_of_a_held_sequence_is_an_expected_conflict() {
        let (mut observed, attempts) = healthy();
        second_claim(&mut observed, "z", "t", "sequence_conflict");
        assert_eq!(kinds(&observed, &attempts), vec![]);
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
