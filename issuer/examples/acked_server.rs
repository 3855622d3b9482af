//! The floor of an admitted apply for `scripts/bench`: an axum server that answers every
//! POST only once the broker acked a winner event for it, and does nothing else. It reads
//! the body's user id, publishes the event through the issuer's own producer (idempotent,
//! `acks=all`, in turns) and answers `201` with the event, on the same runtime and
//! allocator as the issuer. No admission, no read-back: what it costs per answer, an
//! admitted apply costs at least. Usage: `acked_server ADDRESS BROKERS TOPIC`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use firstcome_contract::WinnerEvent;
use firstcome_issuer::cli::{DEFAULT_DELIVERY_TIMEOUT_MS, DEFAULT_TOPIC_PARTITIONS};
use firstcome_issuer::kafka::producer::WinnerPublisher;
use firstcome_issuer::kafka::topics::ensure_topics;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Floor {
    publisher: WinnerPublisher,
    topic: Arc<str>,
    sequences: AtomicU64,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApplyRequest {
    user_id: String,
}

async fn apply(State(floor): State<Arc<Floor>>, Json(request): Json<ApplyRequest>) -> Response {
    let event = WinnerEvent {
        campaign: "bench".to_string(),
        user_id: request.user_id,
        ordinal: 1,
        sequence: floor.sequences.fetch_add(1, Ordering::Relaxed) + 1,
        admitted_at: Utc::now(),
    };
    match floor.publisher.publish(&floor.topic, &event).await {
        Ok(_) => (StatusCode::CREATED, Json(event)).into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(address), Some(brokers), Some(topic)) = (args.next(), args.next(), args.next())
    else {
        anyhow::bail!("usage: acked_server ADDRESS BROKERS TOPIC");
    };
    // The issuer's defaults: as many partitions, as long a wait for an ack.
    ensure_topics(&brokers, &[&topic], DEFAULT_TOPIC_PARTITIONS, 1).await?;
    let floor = Arc::new(Floor {
        publisher: WinnerPublisher::new(
            &brokers,
            Duration::from_millis(DEFAULT_DELIVERY_TIMEOUT_MS),
        )?,
        topic: Arc::from(topic),
        sequences: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/v1/campaigns/{campaign}/applications", post(apply))
        .with_state(floor);
    let listener = tokio::net::TcpListener::bind(&address).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
