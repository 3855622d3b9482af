//! Traces: a distributed issuer started with `--otlp-endpoint` exports its spans over
//! OTLP/HTTP (protobuf) to a receiver this test runs on 127.0.0.1, decoded with the
//! OpenTelemetry protocol's own types. The issuer is stopped with SIGTERM seconds after
//! the applies, before the exporter's 5 s batch delay and while its consumer span is
//! still open: what arrives was sent by the flush on shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::post;
use firstcome_e2e::issuer::{postgres, start_distributed, wait_for_coupons};
use firstcome_e2e::spike::apply;
use firstcome_e2e::{Services, unique_name};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use prost::Message;
use reqwest::StatusCode;
use tokio::net::TcpListener;

/// One exported span, flattened with its resource's attributes.
#[derive(Debug)]
struct Exported {
    resource: HashMap<String, String>,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    attributes: HashMap<String, String>,
}

impl Exported {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    fn is_child_of(&self, parent: &Exported) -> bool {
        self.trace_id == parent.trace_id && self.parent_span_id == parent.span_id
    }
}

/// What the receiver was sent: the decoded export requests.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

impl Received {
    fn spans(&self) -> Vec<Exported> {
        let requests = self.0.lock().unwrap();
        let mut spans = Vec::new();
        for resource_spans in requests.iter().flat_map(|r| &r.resource_spans) {
            let resource = (resource_spans.resource.as_ref())
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
                spans.push(Exported {
                    resource: resource.clone(),
                    name: span.name.clone(),
                    trace_id: span.trace_id.clone(),
                    span_id: span.span_id.clone(),
                    parent_span_id: span.parent_span_id.clone(),
                    attributes: attributes(&span.attributes),
                });
            }
        }
        spans
    }
}

fn attributes(list: &[KeyValue]) -> HashMap<String, String> {
    let text = |kv: &KeyValue| match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        other => Some(format!("{other:?}")),
    };
    (list.iter())
        .filter_map(|kv| Some((kv.key.clone(), text(kv)?)))
        .collect()
}

async fn receive(State(received): State<Received>, body: Bytes) -> impl IntoResponse {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
    received.0.lock().unwrap().push(request);
    let reply = ExportTraceServiceResponse::default().encode_to_vec();
    ([(CONTENT_TYPE, "application/x-protobuf")], reply)
}

/// An OTLP/HTTP trace receiver on 127.0.0.1: its base URL and what it receives.
async fn receiver() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let received = Received::default();
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}"), received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apply_path_is_exported_as_one_trace_per_apply() {
    let services = Services::from_env();
    let (endpoint, received) = receiver().await;
    let campaign = unique_name("traced");
    let limit = format!("{campaign}:5");
    let mut issuer = start_distributed(
        &services,
        &["--campaign", &limit, "--otlp-endpoint", &endpoint],
    )
    .await;
    let client = reqwest::Client::new();
    for user in ["alice", "bob"] {
        let (status, body) = apply(&client, &issuer.base, &campaign, user).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    wait_for_coupons(&postgres(&services).await, &campaign, 2).await;
    issuer.stop().await;

    let spans = received.spans();
    assert!(!spans.is_empty(), "no span was exported");
    for span in &spans {
        assert_eq!(
            span.resource["service.name"], "firstcome-issuer",
            "{span:?}"
        );
        assert_eq!(span.resource["campaign"], campaign, "{span:?}");
    }
    let named = |name: &'static str| spans.iter().filter(move |s| s.name == name);
    let applies: Vec<&Exported> = named("apply").collect();
    assert_eq!(applies.len(), 2, "{spans:#?}");
    let mut sequences = Vec::new();
    for apply in &applies {
        assert_eq!(apply.attribute("campaign"), Some(campaign.as_str()));
        assert_eq!(apply.attribute("outcome"), Some("admitted"));
        let sequence = apply.attribute("sequence").expect("the admitted sequence");
        sequences.push(sequence.to_string());
        let script: Vec<_> = named("admission_script")
            .filter(|s| s.is_child_of(apply))
            .collect();
        assert_eq!(script.len(), 1, "one admission script call under {apply:?}");
        let hand_off: Vec<_> = named("hand_off").filter(|s| s.is_child_of(apply)).collect();
        assert_eq!(hand_off.len(), 1, "one hand-off under {apply:?}");
        assert_eq!(hand_off[0].attribute("sequence"), Some(sequence));
    }
    sequences.sort();
    assert_eq!(sequences, ["1", "2"]);
    assert_ne!(
        applies[0].trace_id, applies[1].trace_id,
        "a trace per apply"
    );

    // The consumer's span lasts as long as the process: it arrives only because the
    // shutdown flushed it, with the batches that persisted the two winners under it.
    let consumers: Vec<&Exported> = named("consumer")
        .filter(|s| s.attribute("campaign") == Some(campaign.as_str()))
        .collect();
    assert!(!consumers.is_empty(), "{spans:#?}");
    let persisted: u64 = named("batch")
        .filter(|b| consumers.iter().any(|c| b.is_child_of(c)))
        .map(|b| b.attribute("messages").unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(persisted, 2);
}
