//! Who an apply comes from, as an extractor: the connection's peer, or — behind a
//! trusted proxy — the client it forwards for ([`crate::client_addr`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};

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
