//! The clients of a chaos run: every planned apply sent at its time to its issuer, and
//! retried as docs/api.md tells clients to (a 503 `backend_unavailable` or
//! `outcome_unknown`, a 429, or no answer, for up to [`RETRY_BUDGET`], on the next
//! issuer); every attempt recorded. To a campaign with a waiting room a client first
//! joins its queue and polls it until the room gives it a pass (or says sold out, which
//! is recorded too).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use firstcome_issuer::http::PASS_HEADER;
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
/// How often a waiting ticket is polled.
const POLL_EVERY: Duration = Duration::from_millis(200);

/// What the clients send with: the issuers' bases, the campaigns' names, and a token per
/// user of each jwt campaign.
pub struct Clients {
    client: reqwest::Client,
    bases: Vec<String>,
    names: Vec<String>,
    tokens: HashMap<(usize, String), String>,
    /// Whether each campaign has a waiting room.
    rooms: Vec<bool>,
}

/// Where a user stands in a waiting room.
enum Room {
    /// Let in: apply with this pass.
    Pass(String),
    /// In the queue with this ticket (or to join again with none).
    Waiting(Option<String>),
    /// The room said sold out (or closed): no apply.
    Over { sold_out: bool },
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
            rooms: plan.campaigns.iter().map(|c| c.room).collect(),
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

    /// One user's apply, retried until it has a final answer or the budget is spent; to
    /// a campaign with a waiting room, with the pass the room gave first.
    async fn apply(&self, apply: &Apply, history: &History) {
        let started = Instant::now();
        let mut pass = None;
        if self.rooms[apply.campaign] {
            let Some(given) = self.enter(apply, history, started).await else {
                return;
            };
            pass = Some(given);
        }
        for attempt in 0.. {
            let issuer = (apply.issuer + attempt) % self.bases.len();
            let sent = history.now();
            let (answer, pause) = self.attempt(apply, issuer, pass.as_deref()).await;
            let retry = match &answer {
                Answer::NoAnswer { .. } | Answer::Unreached { .. } => true,
                Answer::Http { status, reason, .. } => {
                    *status == 429 || (*status == 503 && reason != "admission_unconfirmed")
                }
                Answer::RoomSoldOut => false, // never an apply's answer
            };
            history.record(apply.campaign, &apply.user, issuer, sent, answer);
            if !retry || started.elapsed() > RETRY_BUDGET {
                return;
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// The pass of the campaign's waiting room: joins its queue and polls the ticket
    /// (on the next issuer after a failed request, joining again when the ticket lapsed)
    /// until the room lets the user in. `None` when the room says sold out (recorded) or
    /// closed, or the budget is spent.
    async fn enter(&self, apply: &Apply, history: &History, started: Instant) -> Option<String> {
        let mut ticket = None;
        let mut issuer = apply.issuer;
        while started.elapsed() <= RETRY_BUDGET {
            let sent = history.now();
            match self.room(apply, issuer, ticket.as_deref()).await {
                Some(Room::Pass(pass)) => return Some(pass),
                Some(Room::Waiting(waiting)) => ticket = waiting,
                Some(Room::Over { sold_out }) => {
                    if sold_out {
                        history.record(
                            apply.campaign,
                            &apply.user,
                            issuer,
                            sent,
                            Answer::RoomSoldOut,
                        );
                    }
                    return None;
                }
                None => issuer = (issuer + 1) % self.bases.len(),
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
        None
    }

    /// Joins the queue (no `ticket`) or polls the ticket; `None` when the issuer gave no
    /// room answer (an error, a 503, no answer).
    async fn room(&self, apply: &Apply, issuer: usize, ticket: Option<&str>) -> Option<Room> {
        let queue = format!(
            "{}/v1/campaigns/{}/queue",
            self.bases[issuer], self.names[apply.campaign]
        );
        let request = match ticket {
            None => self
                .client
                .post(queue)
                .json(&json!({ "userId": apply.user })),
            Some(ticket) => self.client.get(format!("{queue}/{ticket}")),
        };
        let response = self.identified(request, apply).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body: Value = response.json().await.ok()?;
        let ticket = body["ticket"].as_str().or(ticket).map(str::to_string);
        Some(match body["state"].as_str()? {
            "admitted" => Room::Pass(body["pass"].as_str()?.to_string()),
            "waiting" => Room::Waiting(ticket),
            "expired" => Room::Waiting(None),
            state => Room::Over {
                sold_out: state == "sold_out",
            },
        })
    }

    /// `request` with the user's bearer token, if their campaign has identity jwt.
    fn identified(
        &self,
        request: reqwest::RequestBuilder,
        apply: &Apply,
    ) -> reqwest::RequestBuilder {
        match self.tokens.get(&(apply.campaign, apply.user.clone())) {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// One attempt (with the room's `pass`, if any): its answer, and the pause its
    /// `Retry-After` asks for (capped).
    async fn attempt(
        &self,
        apply: &Apply,
        issuer: usize,
        pass: Option<&str>,
    ) -> (Answer, Duration) {
        let url = format!(
            "{}/v1/campaigns/{}/applications",
            self.bases[issuer], self.names[apply.campaign]
        );
        let mut request = self.client.post(url).json(&json!({ "userId": apply.user }));
        request = self.identified(request, apply);
        if let Some(pass) = pass {
            request = request.header(PASS_HEADER, pass);
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
