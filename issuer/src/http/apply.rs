//! `POST /v1/campaigns/{campaign}/applications`: a user applies for a coupon.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

use super::ApiError;
use crate::issuer::{ApplyResult, Issuer};
use crate::user_id::UserId;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplyRequest {
    user_id: String,
}

pub async fn apply(
    State(issuer): State<Arc<Issuer>>,
    Path(campaign): Path<String>,
    body: Result<Json<ApplyRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    let user = UserId::parse(request.user_id)?;
    let user_id = user.to_string();
    let result = issuer.apply(&campaign, user).await?;
    Ok(match result {
        ApplyResult::Admitted(admission) => (
            StatusCode::CREATED,
            Json(json!({
                "reason": "admitted",
                "campaign": campaign,
                "userId": user_id,
                "sequence": admission.sequence,
                "ordinal": admission.ordinal,
                "admittedAt": admission.admitted_at,
            })),
        )
            .into_response(),
        ApplyResult::AlreadyApplied(sequences) => ApiError::new(
            StatusCode::CONFLICT,
            "already_applied",
            "you already hold as many coupons of this campaign as one user may",
        )
        .with("campaign", campaign)
        .with("sequences", sequences)
        .into_response(),
        ApplyResult::SoldOut => ApiError::new(
            StatusCode::GONE,
            "sold_out",
            "every coupon of this campaign is taken",
        )
        .with("campaign", campaign)
        .into_response(),
        ApplyResult::NotOpen { opens_at } => {
            let mut error = ApiError::new(
                StatusCode::TOO_EARLY,
                "campaign_not_open",
                "the campaign is not open yet",
            )
            .with("campaign", campaign);
            if let Some(opens_at) = opens_at {
                let wait = (opens_at - Utc::now()).num_seconds().max(1) as u64;
                error = error
                    .with("opensAt", opens_at.to_rfc3339())
                    .retry_after(wait);
            }
            error.into_response()
        }
        ApplyResult::Closed { closes_at } => ApiError::new(
            StatusCode::FORBIDDEN,
            "campaign_closed",
            "the campaign is closed",
        )
        .with("campaign", campaign)
        .with("closedAt", closes_at.map(|t| t.to_rfc3339()))
        .into_response(),
    })
}
