//! Traces: the issuer's tracing spans (apply, admission script, hand-off, consumer batch,
//! provision) exported with OpenTelemetry over OTLP/HTTP (protobuf), off unless
//! `--otlp-endpoint` is set. Spans leave in batches from the exporter's own thread, never
//! on the request path; [`Traces::shutdown`] sends what is left before the process exits.

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{ExporterBuildError, Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::registry::LookupSpan;

/// The target of the spans built for every apply (apply, admission script, hand-off):
/// they exist for traces. Without an exporter the default log filter turns the target
/// off ([`default_log_filter`]): the log layer would format their fields for every apply
/// (about 3 µs of its CPU, docs/testing.md) although nothing logs inside them but
/// failures, whose events carry their own fields.
pub const APPLY_TRACE: &str = "firstcome_issuer::apply_trace";

/// The log filter when `RUST_LOG` sets none: `info`, and the per-apply spans only when
/// traces are exported.
pub fn default_log_filter(exported: bool) -> String {
    if exported {
        "info".to_string()
    } else {
        format!("info,{APPLY_TRACE}=off")
    }
}

/// The `service.name` of every span the issuer exports.
pub const SERVICE_NAME: &str = "firstcome-issuer";
/// The resource attribute naming the campaign, when the process serves only one.
pub const CAMPAIGN_ATTRIBUTE: &str = "campaign";

#[derive(Debug, thiserror::Error)]
pub enum TracesError {
    #[error("cannot export traces to {endpoint}")]
    Exporter {
        endpoint: String,
        #[source]
        source: ExporterBuildError,
    },
}

/// The exporting tracer provider of a process.
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Exports to `endpoint` (a collector's OTLP/HTTP base URL, e.g.
    /// `http://otel-collector:4318`; spans go to its `/v1/traces`), as the OpenTelemetry
    /// environment variable `OTEL_EXPORTER_OTLP_ENDPOINT` means it. `campaign` names the
    /// one campaign the process serves, if it serves only one.
    pub fn new(endpoint: &str, campaign: Option<&str>) -> Result<Self, TracesError> {
        let traces_url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let exporter = SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(traces_url)
            .build()
            .map_err(|source| TracesError::Exporter {
                endpoint: endpoint.to_string(),
                source,
            })?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource(campaign))
            .build();
        Ok(Self { provider })
    }

    /// The layer that hands the spans of a `tracing` subscriber to the exporter.
    pub fn layer<S>(&self) -> OpenTelemetryLayer<S, Tracer>
    where
        S: Subscriber + for<'span> LookupSpan<'span>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer(SERVICE_NAME))
    }

    /// Ends the export: the spans still queued are sent (blocking, bounded by the
    /// exporter's timeout). A failure is printed: the logs may already be gone.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("traces: the last spans were not exported: {error}");
        }
    }
}

/// `service.name`, the campaign if there is one, and what `OTEL_RESOURCE_ATTRIBUTES`
/// adds (the SDK's detectors).
fn resource(campaign: Option<&str>) -> Resource {
    let builder = Resource::builder().with_service_name(SERVICE_NAME);
    match campaign {
        Some(campaign) => {
            builder.with_attribute(KeyValue::new(CAMPAIGN_ATTRIBUTE, campaign.to_string()))
        }
        None => builder,
    }
    .build()
}

#[cfg(test)]
mod tests {
    use opentelemetry::Key;

    use super::*;

    #[test]
    fn the_resource_names_the_service_and_its_campaign() {
        let one = resource(Some("shop.black-friday"));
        let get = |r: &Resource, key: &'static str| r.get(&Key::from_static_str(key));
        assert_eq!(
            get(&one, "service.name").map(|v| v.to_string()),
            Some(SERVICE_NAME.to_string())
        );
        assert_eq!(
            get(&one, CAMPAIGN_ATTRIBUTE).map(|v| v.to_string()),
            Some("shop.black-friday".to_string())
        );
        assert_eq!(get(&resource(None), CAMPAIGN_ATTRIBUTE), None);
    }

    #[test]
    fn a_bad_endpoint_is_refused_with_its_reason() {
        let Err(error) = Traces::new("not a url", None) else {
            panic!("an invalid endpoint was accepted");
        };
        assert_eq!(error.to_string(), "cannot export traces to not a url");
        let source = std::error::Error::source(&error).map(|s| s.to_string());
        assert!(source.is_some_and(|s| s.starts_with("invalid URI")));
    }
}
