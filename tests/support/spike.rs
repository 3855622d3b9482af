//! Applies over HTTP as the tests send them: one apply, spikes of concurrent applies
//! (raw, or retried the way real clients retry), and the tally of their answers.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// How one user's apply ended.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Admitted,
    AlreadyApplied,
    SoldOut,
    /// No definite answer: the apply may or may not have won (503 unconfirmed, any other
    /// answer, or the issuer never answered within the retry budget).
    Unknown(String),
}

impl Outcome {
    fn of(status: StatusCode, body: &Value) -> Self {
        match (status, body["reason"].as_str().unwrap_or_default()) {
            (StatusCode::CREATED, _) => Self::Admitted,
            (StatusCode::CONFLICT, "already_applied") => Self::AlreadyApplied,
            (StatusCode::GONE, "sold_out") => Self::SoldOut,
            (status, reason) => Self::Unknown(format!("{status} {reason}")),
        }
    }
}

/// The answer one user got in a spike: the last HTTP answer and what it means.
#[derive(Clone, Debug)]
pub struct Answer {
    pub user: String,
    /// `None` only when the issuer never answered (under [`Retry::Unavailable`]).
    pub status: Option<StatusCode>,
    /// The JSON body; null when there was none or it was not JSON.
    pub body: Value,
    pub outcome: Outcome,
}

/// What a spike does with an apply that got no definite answer.
impl Answer {
    /// The answer to an apply sent some other way (e.g. with a waiting room's pass).
    pub fn new(user: String, status: StatusCode, body: Value) -> Self {
        let outcome = Outcome::of(status, &body);
        Self {
            user,
            status: Some(status),
            body,
            outcome,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Retry {
    /// Every answer is final; a transport error fails the test.
    Never,
    /// Like a real client: a transport error, a 503 `backend_unavailable` or
    /// `outcome_unknown`, or a 429 `rate_limited` is tried again, for up to `budget` per
    /// user; every other answer is final.
    Unavailable { budget: Duration },
}

impl Retry {
    /// The fault tests' policy: up to 30 s per user.
    pub const UNTIL_ANSWERED: Self = Self::Unavailable {
        budget: Duration::from_secs(30),
    };
}

/// How long one try may take when tries are retried.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The `Retry-After` of a `rate_limited` answer, at least.
const RATE_LIMITED_PAUSE: Duration = Duration::from_secs(1);

/// The loopback addresses a spike comes from by default: 127.0.1.0 to 127.0.1.255 (see
/// [`Spike::from_one_address`] for a crowd behind one address, [`Spike::crowd`] for
/// another /24).
const LOOPBACK_CROWD: [u8; 3] = [127, 0, 1];
const CROWD: usize = 256;

/// One apply over HTTP: its status and JSON body (null when the body is not JSON).
pub async fn try_apply(
    client: &reqwest::Client,
    base: &str,
    campaign: &str,
    user: &str,
) -> reqwest::Result<(StatusCode, Value)> {
    try_apply_as(client, base, campaign, user, None).await
}

/// One apply over HTTP naming `user`, with `token` as its bearer token if given.
pub async fn try_apply_as(
    client: &reqwest::Client,
    base: &str,
    campaign: &str,
    user: &str,
    token: Option<&str>,
) -> reqwest::Result<(StatusCode, Value)> {
    let mut request = client
        .post(format!("{base}/v1/campaigns/{campaign}/applications"))
        .json(&json!({ "userId": user }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status();
    Ok((status, response.json().await.unwrap_or_default()))
}

/// One apply over HTTP that must be answered.
pub async fn apply(
    client: &reqwest::Client,
    base: &str,
    campaign: &str,
    user: &str,
) -> (StatusCode, Value) {
    try_apply(client, base, campaign, user)
        .await
        .expect("apply request")
}

/// One user's apply (with its bearer token, if any) under `retry`.
async fn apply_under(
    client: &reqwest::Client,
    base: &str,
    campaign: &str,
    (user, token): (String, Option<&str>),
    retry: Retry,
) -> Answer {
    let started = Instant::now();
    loop {
        let attempt = try_apply_as(client, base, campaign, &user, token).await;
        let budget_left = match retry {
            Retry::Never => false,
            Retry::Unavailable { budget } => started.elapsed() <= budget,
        };
        match attempt {
            Ok((StatusCode::SERVICE_UNAVAILABLE, body))
                if budget_left
                    && matches!(
                        body["reason"].as_str(),
                        Some("backend_unavailable" | "outcome_unknown")
                    ) => {}
            Ok((StatusCode::TOO_MANY_REQUESTS, _)) if budget_left => {
                tokio::time::sleep(RATE_LIMITED_PAUSE).await;
            }
            Ok((status, body)) => {
                let outcome = Outcome::of(status, &body);
                return Answer {
                    user,
                    status: Some(status),
                    body,
                    outcome,
                };
            }
            Err(_) if budget_left => {}
            Err(error) if matches!(retry, Retry::Never) => panic!("apply request: {error}"),
            Err(error) => {
                return Answer {
                    user,
                    status: None,
                    body: Value::Null,
                    outcome: Outcome::Unknown(error.to_string()),
                };
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A spike: one apply per user, `in_flight` at a time, spread round-robin over the
/// issuers at `bases` and over 256 client addresses (or one). By default 64 in flight,
/// [`Retry::Never`], no progress counter.
#[derive(Clone, Debug)]
pub struct Spike {
    bases: Vec<String>,
    campaign: String,
    in_flight: usize,
    retry: Retry,
    progress: Option<Arc<AtomicUsize>>,
    /// Each user's bearer token, for campaigns with identity jwt.
    tokens: Option<Arc<HashMap<String, String>>>,
    /// How many client addresses the applies come from.
    addresses: usize,
    /// The first three octets of the local addresses applies are sent from.
    crowd: [u8; 3],
}

impl Spike {
    pub fn new(bases: &[&str], campaign: &str) -> Self {
        assert!(!bases.is_empty(), "a spike needs an issuer");
        Self {
            bases: bases.iter().map(|b| b.to_string()).collect(),
            campaign: campaign.to_string(),
            in_flight: 64,
            retry: Retry::Never,
            progress: None,
            tokens: None,
            addresses: CROWD,
            crowd: LOOPBACK_CROWD,
        }
    }

    /// Sends from `a.b.c.0` to `a.b.c.255` instead of 127.0.1.x: addresses local to
    /// this machine (a route `local a.b.c.0/24 dev lo`) from which the issuers are
    /// reachable, e.g. through a Service's ClusterIP on a real node.
    pub fn crowd(mut self, prefix: [u8; 3]) -> Self {
        self.crowd = prefix;
        self
    }

    pub fn in_flight(mut self, in_flight: usize) -> Self {
        self.in_flight = in_flight;
        self
    }

    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// Counts the users answered so far into `progress` (see [`wait_progress`]).
    pub fn progress(mut self, progress: Arc<AtomicUsize>) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Every apply from the crowd's first address (127.0.1.0 by default): a crowd behind one address (a carrier NAT, a proxy).
    pub fn from_one_address(mut self) -> Self {
        self.addresses = 1;
        self
    }

    /// Sends each user's apply with its token from `tokens` (user → token).
    pub fn tokens(mut self, tokens: HashMap<String, String>) -> Self {
        self.tokens = Some(Arc::new(tokens));
        self
    }

    /// Fires one apply per entry of `users`; the answers, in no particular order.
    pub async fn run(self, users: Vec<String>) -> Vec<Answer> {
        let crowd: Vec<reqwest::Client> = (0..self.addresses)
            .map(|n| self.client_at(u8::try_from(n).expect("at most 256 addresses")))
            .collect();
        let this = &self;
        futures::stream::iter(users.into_iter().enumerate())
            .map(|(i, user)| {
                let client = &crowd[i % crowd.len()];
                async move {
                    let base = &this.bases[i % this.bases.len()];
                    let token = (this.tokens.as_ref()).and_then(|t| t.get(&user)).cloned();
                    let applicant = (user, token.as_deref());
                    let answer =
                        apply_under(client, base, &this.campaign, applicant, this.retry).await;
                    if let Some(progress) = &this.progress {
                        progress.fetch_add(1, Ordering::Relaxed);
                    }
                    answer
                }
            })
            .buffer_unordered(self.in_flight)
            .collect()
            .await
    }

    /// A client sending from the crowd's address `n` (127.0.1.`n` by default).
    fn client_at(&self, n: u8) -> reqwest::Client {
        // Plain HTTP: no trust roots to load (256 clients loading the system's took
        // seconds, enough to make a timed campaign miss its opening).
        let [a, b, c] = self.crowd;
        let mut client = reqwest::Client::builder()
            .local_address(std::net::IpAddr::from([a, b, c, n]))
            .tls_built_in_root_certs(false)
            .pool_max_idle_per_host(self.in_flight);
        if matches!(self.retry, Retry::Unavailable { .. }) {
            client = client.timeout(ATTEMPT_TIMEOUT);
        }
        client.build().unwrap()
    }
}

/// `count` users named `{prefix}-0`, `{prefix}-1`, …
pub fn users(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

/// How many answers had each outcome.
pub fn tally(answers: &[Answer]) -> HashMap<Outcome, usize> {
    let mut counts = HashMap::new();
    for answer in answers {
        *counts.entry(answer.outcome.clone()).or_default() += 1;
    }
    counts
}

/// The users answered "admitted".
pub fn admitted_users(answers: &[Answer]) -> impl Iterator<Item = &str> {
    answers
        .iter()
        .filter(|a| a.outcome == Outcome::Admitted)
        .map(|a| a.user.as_str())
}

/// What a spike on a fresh campaign of `limit` coupons must end with: exactly `limit`
/// users admitted, holding the sequences 1..=limit, and `sold_out` users told it is sold out.
pub fn assert_every_coupon_given(answers: &[Answer], limit: u64, sold_out: usize) {
    let outcomes = tally(answers);
    let admitted = usize::try_from(limit).expect("a test's limit fits in usize");
    assert_eq!(
        outcomes.get(&Outcome::Admitted),
        Some(&admitted),
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.get(&Outcome::SoldOut),
        Some(&sold_out),
        "{outcomes:?}"
    );
    assert_eq!(
        admitted_sequences(answers),
        (1..=limit).collect::<Vec<u64>>()
    );
}

/// Sequences of the admitted answers, sorted.
pub fn admitted_sequences(answers: &[Answer]) -> Vec<u64> {
    let mut sequences: Vec<u64> = answers
        .iter()
        .filter(|a| a.outcome == Outcome::Admitted)
        .map(|a| {
            a.body["sequence"]
                .as_u64()
                .expect("admitted answers carry a sequence")
        })
        .collect();
    sequences.sort_unstable();
    sequences
}

/// Waits until at least `count` users were answered.
pub async fn wait_progress(progress: &AtomicUsize, count: usize) {
    crate::wait_until(
        &format!("{count} users of the spike to be answered"),
        Duration::from_secs(60),
        || async {
            match progress.load(Ordering::Relaxed) {
                answered if answered >= count => Ok(()),
                answered => Err(format!("{answered} answered")),
            }
        },
    )
    .await;
}
