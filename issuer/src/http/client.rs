//! Who an apply comes from, as an extractor: the connection's peer, or — behind a
//! trusted proxy — the client it forwards for ([`crate::client_addr`]); and that client
//! within its campaign's per-client rate.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};

use super::served::ServedCampaign;
use super::{Api, ApiError};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The client address an apply is rate limited under.
pub struct ClientAddr(pub IpAddr);

impl FromRequestParts<Arc<Api>> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, ApiError> {
        let ConnectInfo(peer) = ConnectInfo::<SocketAddr>::from_request_parts(parts, api)
            .await
            .map_err(|_| ApiError::no_peer_address())?;
        let forwarded = parts.headers.get_all(X_FORWARDED_FOR);
        let forwarded = forwarded.iter().map(HeaderValue::as_bytes);
        Ok(Self(api.trusted_proxies.client(peer.ip(), forwarded)))
    }
}

/// An apply whose client is within its campaign's per-client rate. An extractor placed
/// before [`super::caller::Caller`], so the bucket is taken before credentials are
/// checked: a flood of bad tokens from one address is cut off like any other flood,
/// without a signature verified for each.
pub struct WithinClientRate;

impl FromRequestParts<Arc<Api>> for WithinClientRate {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, ApiError> {
        let ClientAddr(client) = ClientAddr::from_request_parts(parts, api).await?;
        let ServedCampaign(campaign) = ServedCampaign::from_request_parts(parts, api).await?;
        campaign.limits.check_client(client)?;
        Ok(Self)
    }
}
