//! `GET /v1/campaigns/{campaign}/applications/{userId}` and `.../applications/me`: what a
//! user holds in a campaign. With identity on, callers see their own coupons only.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::caller::Caller;
use super::{Api, ApiError};
use crate::user_id::UserId;

pub async fn lookup(
    State(api): State<Arc<Api>>,
    Path((campaign, user_id)): Path<(String, String)>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let user = caller.may_look_up(user_id)?;
    holdings(&api, campaign, user).await
}

pub async fn mine(
    State(api): State<Arc<Api>>,
    Path(campaign): Path<String>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    holdings(&api, campaign, caller.me()?).await
}

async fn holdings(api: &Api, campaign: String, user: UserId) -> Result<Json<Value>, ApiError> {
    let held = api.issuer.lookup(&campaign, &user).await?;
    let status = if held.is_empty() {
        "not_applied"
    } else if held.iter().all(|h| h.coupon.is_some()) {
        "issued"
    } else {
        "admitted"
    };
    let coupons: Vec<Value> = held
        .iter()
        .map(|h| match &h.coupon {
            Some(coupon) => json!({
                "sequence": h.sequence,
                "status": "issued",
                "ordinal": coupon.ordinal,
                "couponId": coupon.coupon_id,
                "admittedAt": coupon.admitted_at,
                "issuedAt": coupon.issued_at,
            }),
            None => json!({ "sequence": h.sequence, "status": "pending" }),
        })
        .collect();
    Ok(Json(json!({
        "campaign": campaign,
        "userId": user.as_str(),
        "status": status,
        "coupons": coupons,
    })))
}
