//! The clients of a chaos run: every planned apply sent at its time to its issuer, and
//! retried as docs/api.md tells clients to (a 503 `backend_unavailable` or
//! `outcome_unknown`, a 429, or no answer, for up to [`RETRY_BUDGET`], on the next
//! issuer); every attempt recorded.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use super::history::{Answer, History};
use super::schedule::{Apply, Plan};
use crate::tokens;

/// How long a client keeps retrying one apply.
const RETRY_BUDGET: Duration = Duration::from_secs(30);
/// How long one attempt may take: a frozen issuer is given up on.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest pause between tries (a `Retry-After` longer than this is cut short).
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// Applies in flight at most.
const IN_FLIGHT: usize = 48;

/// What the clients send with: the issuers' bases, the campaigns' names, and a token per
/// user of each jwt campaign.
pub struct Clients {
    client: reqwest::Client,
    bases: Vec<String>,
    names: Vec<String>,
    tokens: HashMap<(usize, String), String>,
}

impl Clients {
    /// Signs the tokens the plan's jwt campaigns need (before the run's clock starts).
    pub fn new(plan: &Plan, names: Vec<String>, bases: Vec<String>) -> Self {
        let expires = chrono::Utc::now().timestamp() + 3600;
        let mut tokens = HashMap::new();
        for apply in plan
            .applies
            .iter()
            .filter(|a| plan.campaigns[a.campaign].jwt)
        {
            tokens
                .entry((apply.campaign, apply.user.clone()))
                .or_insert_with(|| tokens::token(tokens::SIGNER, &apply.user, expires));
        }
        let client = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .tls_built_in_root_certs(false)
            .build()
            .expect("an HTTP client");
        Self {
            client,
            bases,
            names,
            tokens,
        }
    }

    /// Sends every apply of `plan` at its time; returns when each has its final answer.
    pub async fn run(&self, plan: &Plan, history: &History) {
        futures::stream::iter(&plan.applies)
            .for_each_concurrent(IN_FLIGHT, |apply| async move {
                let due = apply.at.saturating_sub(history.now());
                tokio::time::sleep(due).await;
                self.apply(apply, history).await;
            })
            .await;
    }

    /// One user's apply, retried until it has a final answer or the budget is spent.
    async fn apply(&self, apply: &Apply, history: &History) {
        let started = Instant::now();
        for attempt in 0.. {
            let issuer = (apply.issuer + attempt) % self.bases.len();
            let sent = history.now();
            let (answer, pause) = self.attempt(apply, issuer).await;
            let retry = match &answer {
                Answer::NoAnswer { .. } | Answer::Unreached { .. } => true,
                Answer::Http { status, reason, .. } => {
                    *status == 429 || (*status == 503 && reason != "admission_unconfirmed")
                }
            };
            history.record(apply.campaign, &apply.user, issuer, sent, answer);
            if !retry || started.elapsed() > RETRY_BUDGET {
                return;
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// One attempt: its answer, and the pause its `Retry-After` asks for (capped).
    async fn attempt(&self, apply: &Apply, issuer: usize) -> (Answer, Duration) {
        let url = format!(
            "{}/v1/campaigns/{}/applications",
            self.bases[issuer], self.names[apply.campaign]
        );
        let mut request = self.client.post(url).json(&json!({ "userId": apply.user }));
        if let Some(token) = self.tokens.get(&(apply.campaign, apply.user.clone())) {
            request = request.bearer_auth(token);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) if error.is_connect() => {
                let error = error.to_string();
                return (Answer::Unreached { error }, MAX_PAUSE / 5);
            }
            Err(error) => {
                let error = error.to_string();
                return (Answer::NoAnswer { error }, MAX_PAUSE / 5);
            }
        };
        let status = response.status().as_u16();
        let retry_after = (response.headers().get("retry-after"))
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .map_or(MAX_PAUSE / 5, |s| Duration::from_secs(s).min(MAX_PAUSE));
        // A body cut off is no answer; a body that is not JSON is an answer without one.
        match response.bytes().await {
            Ok(bytes) => {
                let body: Value = serde_json::from_slice(&bytes).unwrap_or_default();
                (Answer::http(status, &body), retry_after)
            }
            Err(error) => {
                let error = format!("{status}, body cut off: {error}");
                (Answer::NoAnswer { error }, retry_after)
            }
        }
    }
}
