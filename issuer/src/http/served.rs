//! The campaign a request's path names, as an extractor: looked up once per request and
//! kept in the request's extensions, so the rate limit, the caller's identity and the
//! handler share one look-up.

use std::sync::Arc;

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;

use super::{Api, ApiError};
use crate::campaign::Campaign;

/// The campaign of the path (`{campaign}`), one this process serves.
#[derive(Clone)]
pub struct ServedCampaign(pub Arc<Campaign>);

impl FromRequestParts<Arc<Api>> for ServedCampaign {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, ApiError> {
        if let Some(served) = parts.extensions.get::<Self>() {
            return Ok(served.clone());
        }
        let params = RawPathParams::from_request_parts(parts, api)
            .await
            .map_err(|_| ApiError::not_found())?;
        let name = params
            .iter()
            .find_map(|(key, value)| (key == "campaign").then_some(value))
            .ok_or_else(ApiError::not_found)?;
        let served = Self(Arc::clone(api.issuer.campaign(name)?));
        parts.extensions.insert(served.clone());
        Ok(served)
    }
}
