//! Spikes of concurrent applies the way real clients send them: a transport error or a
//! `backend_unavailable` is retried (bounded); every other answer is final.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::json;

/// How one user's apply ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Admitted,
    AlreadyApplied,
    SoldOut,
    /// No definite answer: the apply may or may not have won (503 unconfirmed, or the
    /// issuer never answered within the retry budget).
    Unknown(String),
}

#[derive(Clone, Debug)]
pub struct Answer {
    pub user: String,
    pub outcome: Outcome,
}

/// How long one user keeps retrying.
const RETRY_BUDGET: Duration = Duration::from_secs(30);

async fn apply_until_answered(client: &reqwest::Client, url: &str, user: &str) -> Outcome {
    let deadline = Instant::now() + RETRY_BUDGET;
    loop {
        let last = match client
            .post(url)
            .json(&json!({ "userId": user }))
            .send()
            .await
        {
            Ok(response) => {
                let status = response.status();
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                let reason = body["reason"].as_str().unwrap_or_default().to_string();
                match (status, reason.as_str()) {
                    (StatusCode::CREATED, _) => return Outcome::Admitted,
                    (StatusCode::CONFLICT, "already_applied") => return Outcome::AlreadyApplied,
                    (StatusCode::GONE, "sold_out") => return Outcome::SoldOut,
                    (StatusCode::SERVICE_UNAVAILABLE, "backend_unavailable") => reason,
                    _ => return Outcome::Unknown(format!("{status} {reason}")),
                }
            }
            Err(error) => error.to_string(),
        };
        if Instant::now() > deadline {
            return Outcome::Unknown(last);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One apply per user, `in_flight` at a time; `progress` counts answered users.
pub async fn spike(
    base: &str,
    campaign: &str,
    users: Vec<String>,
    in_flight: usize,
    progress: Arc<AtomicUsize>,
) -> Vec<Answer> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = format!("{base}/v1/campaigns/{campaign}/applications");
    futures::stream::iter(users)
        .map(|user| {
            let (client, url, progress) = (client.clone(), url.clone(), progress.clone());
            async move {
                let outcome = apply_until_answered(&client, &url, &user).await;
                progress.fetch_add(1, Ordering::Relaxed);
                Answer { user, outcome }
            }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await
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
