//! Logs and traces: `tracing` events to stderr (`LOG_FORMAT`, `RUST_LOG`) and, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, the manager's spans exported over OTLP/HTTP (protobuf):
//! one per HTTP request, children per lifecycle step and agent call
//! (`docs/reference/configuration.md` §3).
//!
//! Span fields are chosen where the spans are made and never carry keys, secrets or bodies; the
//! export layer only sees spans of this workspace's crates, so a dependency's spans (the exporter's
//! own HTTP client included) never reach the collector.

use crate::config::{LogFormat, Settings};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Crates whose spans are exported.
const TRACED_CRATES: [&str; 3] = ["rds_manager", "rds_vmm", "rds_net"];

/// Flushes and stops the trace exporter when the manager stops.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still queued (bounded by the SDK's export timeout).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(p) = self.provider.take() {
            // The exporter's blocking HTTP client must not run on (or be dropped in) an async
            // runtime thread.
            let done = std::thread::spawn(move || p.shutdown()).join();
            if let Ok(Err(e)) = done {
                eprintln!("trace export shutdown: {e}");
            }
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Installs the global subscriber. Fails only when the exporter cannot be built.
pub fn init(settings: &Settings) -> Result<Telemetry, String> {
    let provider = match &settings.otel.endpoint {
        Some(base) => Some(tracer_provider(base, &settings.otel.service_name)?),
        None => None,
    };
    // Colour codes only on a terminal: a log written to a file or a journal stays plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let fmt = match settings.log_format {
        LogFormat::Json => fmt.json().boxed(),
        LogFormat::Pretty => fmt.boxed(),
    }
    .with_filter(EnvFilter::new(log_directives(settings)));
    let export = provider.as_ref().map(|p| {
        let targets = TRACED_CRATES
            .iter()
            .fold(Targets::new(), |t, c| t.with_target(*c, LevelFilter::INFO));
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("run-dat-sheesh"))
            .with_filter(targets)
    });
    tracing_subscriber::registry().with(fmt).with(export).init();
    Ok(Telemetry { provider })
}

/// `RUST_LOG` plus the exporter's own diagnostics at `OTEL_DIAGNOSTIC_LOG_LEVEL` (warnings when
/// unset, so a collector that refuses spans is visible).
fn log_directives(settings: &Settings) -> String {
    let mut directives = settings.rust_log.clone();
    // netlink-packet-route warns on every link dump of a newer kernel's attributes; that is noise.
    if !directives.contains("netlink_packet_route") {
        directives.push_str(",netlink_packet_route=error");
    }
    let diag = settings.otel.diagnostic_level.unwrap_or("warn");
    // The OpenTelemetry crates log under their package names (`opentelemetry_sdk`,
    // `opentelemetry-otlp`, …), all starting with this prefix.
    directives.push_str(&format!(",opentelemetry={diag}"));
    directives
}

fn tracer_provider(base: &str, service_name: &str) -> Result<SdkTracerProvider, String> {
    // reqwest is built without a TLS provider of its own; ring is the one the workspace already
    // builds. Installing fails only when one is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary);
    // The standard signal-specific variable, when set, wins over the base URL (as the SDK defines).
    if std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none() {
        exporter = exporter.with_endpoint(traces_url(base));
    }
    let exporter = exporter
        .build()
        .map_err(|e| format!("OTEL_EXPORTER_OTLP_ENDPOINT: cannot build the exporter: {e}"))?;
    let resource = Resource::builder()
        .with_service_name(service_name.to_string())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// OTLP/HTTP: the traces path is appended to the base endpoint.
fn traces_url(base: &str) -> String {
    format!("{}/v1/traces", base.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::traces_url;

    #[test]
    fn traces_path_is_appended_once() {
        assert_eq!(
            traces_url("http://c:4318"),
            "http://c:4318/v1/traces".to_string()
        );
        assert_eq!(traces_url("https://c/otlp/"), "https://c/otlp/v1/traces");
    }
}
