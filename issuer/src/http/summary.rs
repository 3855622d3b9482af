//! `GET /v1/campaigns` and `GET /v1/campaigns/{campaign}`: where campaigns stand.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::{Api, ApiError};
use crate::issuer::Issuer;

pub async fn one(
    State(api): State<Arc<Api>>,
    Path(campaign): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(summary(&api.issuer, &campaign).await?))
}

pub async fn list(State(api): State<Arc<Api>>) -> Result<Json<Value>, ApiError> {
    let mut names: Vec<&str> = api
        .issuer
        .campaigns()
        .map(|c| c.config.name.as_str())
        .collect();
    names.sort_unstable();
    let mut campaigns = Vec::with_capacity(names.len());
    for name in names {
        campaigns.push(summary(&api.issuer, name).await?);
    }
    Ok(Json(json!({ "campaigns": campaigns })))
}

async fn summary(issuer: &Issuer, name: &str) -> Result<Value, ApiError> {
    let campaign = issuer.campaign(name)?;
    let config = &campaign.config;
    let summary = issuer.summary(name).await?;
    let counts = summary.counts;
    let mut body = json!({
        "name": config.name,
        "limit": counts.limit,
        "perUserLimit": config.per_user_limit,
        "admitted": counts.admitted,
        "issued": summary.issued,
        "pendingPersistence": counts.admitted.saturating_sub(summary.issued),
        "remaining": counts.limit.saturating_sub(counts.admitted),
        "drift": campaign.drift.load(std::sync::atomic::Ordering::Relaxed),
        "state": summary.state,
        "opensAt": config.opens_at,
        "closesAt": config.closes_at,
        "topic": config.topic,
        "identity": config.identity.mode(),
    });
    if let (Some(room), Some(queue)) = (&campaign.room, issuer.rooms()) {
        body["waitingRoom"] = json!({
            "queueLength": queue.length(&campaign.keys).await?,
            "admissionRate": room.config.admission_rate,
            "maxActive": room.config.max_active,
            "passTtlSeconds": room.config.pass_ttl_seconds,
            "joinableFrom": room.joinable_from(),
        });
    }
    Ok(body)
}
