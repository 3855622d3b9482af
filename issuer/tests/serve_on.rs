//! `serve_on` runs a wiring on listeners the caller bound, until the caller's shutdown
//! future resolves: an issuer started in process, over real TCP, its public API on one
//! listener and its operational endpoints on the other.

use std::time::Duration;

use clap::Parser;
use firstcome_issuer::cli::Cli;
use firstcome_issuer::wiring::{Listeners, build, serve_on};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn serves_on_its_listener_until_shutdown_then_stops() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let args = Cli::try_parse_from(["firstcome-issuer", "--data-dir", data]).unwrap();
    let wiring = build(&args.serve).await.unwrap();
    let listeners = Listeners {
        api: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        ops: TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let base = format!("http://{}", listeners.api.local_addr().unwrap());
    let ops = format!("http://{}", listeners.ops.local_addr().unwrap());
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve_on(listeners, wiring, stop.clone().cancelled_owned()));

    let client = reqwest::Client::new();
    let status = |url: String| {
        let client = client.clone();
        async move { client.get(url).send().await.unwrap().status() }
    };
    assert_eq!(
        status(format!("{ops}/readyz")).await,
        reqwest::StatusCode::OK
    );
    assert_eq!(
        status(format!("{ops}/metrics")).await,
        reqwest::StatusCode::OK
    );
    for (path, where_not) in [
        ("/metrics", &base),
        ("/readyz", &base),
        ("/openapi.yaml", &ops),
    ] {
        let url = format!("{where_not}{path}");
        assert_eq!(status(url).await, reqwest::StatusCode::NOT_FOUND, "{path}");
    }
    assert_eq!(
        status(format!("{base}/openapi.yaml")).await,
        reqwest::StatusCode::OK
    );
    let applied = client
        .post(format!("{base}/v1/campaigns/demo/applications"))
        .json(&json!({ "userId": "alice" }))
        .send()
        .await
        .unwrap();
    assert_eq!(applied.status(), reqwest::StatusCode::CREATED);

    stop.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(5), server).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
    for url in [format!("{base}/openapi.yaml"), format!("{ops}/healthz")] {
        assert!(
            client.get(url).send().await.is_err(),
            "nothing listens once stopped"
        );
    }
}
