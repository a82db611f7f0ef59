//! Metrics over OTLP: when an OTLP endpoint is configured, the registry
//! behind `GET /metrics` is also pushed to it every
//! `OTEL_METRIC_EXPORT_INTERVAL` and once more at shutdown. The push reads
//! the registry's OpenMetrics text, so both paths carry the same families,
//! labels and values: counters become monotonic sums (named without
//! `_total`), gauges stay gauges, histograms become explicit-bucket
//! histograms, all cumulative since the process started.
//!
//! Our own push rather than the OpenTelemetry SDK's meter provider: the SDK
//! exports only what its own instruments aggregated, and recording every
//! metric twice (prometheus-client for /metrics, OTel instruments for OTLP)
//! would let the two drift apart.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use tokio::sync::watch;
use tracing::Instrument as _;

use crate::telemetry::metrics::Metrics;

/// The specification's defaults, in milliseconds.
const DEFAULT_INTERVAL_MS: u64 = 60_000;
const DEFAULT_TIMEOUT_MS: u64 = 10_000;

/// Where and how metrics are pushed, from the standard `OTEL_*` variables.
#[derive(Clone, Debug)]
pub struct OtlpMetricsConfig {
    endpoint: reqwest::Url,
    json: bool,
    headers: HeaderMap,
    timeout: Duration,
    interval: Duration,
    resource: Vec<KeyValue>,
}

impl OtlpMetricsConfig {
    /// `None` when no OTLP endpoint is set or `OTEL_METRICS_EXPORTER` is
    /// `none`; an error naming the variable when one is malformed or asks for
    /// what is not supported (gRPC, compression).
    pub fn from_env() -> anyhow::Result<Option<Self>> {
        Self::from_lookup(|name| std::env::var(name).ok(), crate::telemetry::resource_attributes())
    }

    fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        resource: Vec<(String, opentelemetry::Value)>,
    ) -> anyhow::Result<Option<Self>> {
        let var = |name: &str| lookup(name).map(|value| value.trim().to_owned()).filter(|value| !value.is_empty());
        // The signal's own variable wins over the general one.
        let either = |suffix: &str| {
            let specific = format!("OTEL_EXPORTER_OTLP_METRICS_{suffix}");
            match var(&specific) {
                Some(value) => Some((specific, value)),
                None => var(&format!("OTEL_EXPORTER_OTLP_{suffix}"))
                    .map(|value| (format!("OTEL_EXPORTER_OTLP_{suffix}"), value)),
            }
        };
        if var("OTEL_SDK_DISABLED").is_some_and(|disabled| disabled.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        if let Some(exporters) = var("OTEL_METRICS_EXPORTER") {
            let exporters: Vec<&str> = exporters.split(',').map(str::trim).collect();
            if let Some(other) = exporters.iter().find(|name| !matches!(**name, "otlp" | "none" | "prometheus")) {
                bail!("OTEL_METRICS_EXPORTER lists `{other}`: the catalog knows `otlp`, `prometheus` and `none`");
            }
            // /metrics is served whatever this says.
            if !exporters.contains(&"otlp") {
                return Ok(None);
            }
        }
        let endpoint = match (var("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"), var("OTEL_EXPORTER_OTLP_ENDPOINT")) {
            (Some(endpoint), _) => ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", endpoint),
            // The general endpoint is a base each signal appends its path to.
            (None, Some(base)) => ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("{}/v1/metrics", base.trim_end_matches('/'))),
            (None, None) => return Ok(None),
        };
        let (variable, endpoint) = endpoint;
        let endpoint = reqwest::Url::parse(&endpoint)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https"))
            .with_context(|| format!("{variable} must be an http or https URL, not `{endpoint}`"))?;
        let json = match either("PROTOCOL") {
            None => false,
            Some((_, protocol)) if protocol == "http/protobuf" => false,
            Some((_, protocol)) if protocol == "http/json" => true,
            Some((variable, protocol)) => {
                bail!("{variable} must be `http/protobuf` or `http/json` for metrics, not `{protocol}`")
            }
        };
        if let Some((variable, compression)) = either("COMPRESSION")
            && compression != "none"
        {
            bail!("{variable}: the catalog sends metrics uncompressed; `{compression}` is not supported");
        }
        if let Some(preference) = var("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE")
            && !preference.eq_ignore_ascii_case("cumulative")
        {
            tracing::warn!(
                preference,
                "metrics are pushed cumulative, as /metrics counts them; the temporality preference is ignored"
            );
        }
        // Like the span exporter: the signal's own headers replace the
        // general ones (credentials for one collector never go to another).
        let mut headers = HeaderMap::new();
        if let Some((variable, list)) = either("HEADERS") {
            for (name, value) in parse_headers(&list).with_context(|| format!("{variable} is malformed"))? {
                headers.insert(name, value);
            }
        }
        let milliseconds = |variable: &str, default: u64| -> anyhow::Result<Duration> {
            match var(variable) {
                None => Ok(Duration::from_millis(default)),
                Some(value) => match value.parse::<u64>() {
                    Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
                    _ => bail!("{variable} must be a positive number of milliseconds, not `{value}`"),
                },
            }
        };
        let timeout = match either("TIMEOUT") {
            Some((variable, _)) => milliseconds(&variable, DEFAULT_TIMEOUT_MS)?,
            None => Duration::from_millis(DEFAULT_TIMEOUT_MS),
        };
        let interval = milliseconds("OTEL_METRIC_EXPORT_INTERVAL", DEFAULT_INTERVAL_MS)?;
        let resource = resource
            .into_iter()
            .map(|(key, value)| KeyValue { key, value: Some(value.into()), key_strindex: 0 })
            .collect();
        Ok(Some(Self { endpoint, json, headers, timeout, interval, resource }))
    }
}

/// `OTEL_EXPORTER_OTLP_HEADERS`: `name=value` pairs separated by commas,
/// values percent-encoded.
fn parse_headers(list: &str) -> anyhow::Result<Vec<(HeaderName, HeaderValue)>> {
    list.split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').with_context(|| format!("`{pair}` is not name=value"))?;
            let value = percent_encoding::percent_decode_str(value.trim()).decode_utf8_lossy();
            let name = HeaderName::try_from(name.trim()).with_context(|| format!("`{name}` is not a header name"))?;
            let value = HeaderValue::try_from(value.as_ref()).with_context(|| format!("the value of `{name}`"))?;
            Ok((name, value))
        })
        .collect()
}

/// Pushes every `config.interval` until `stop` turns true, then once more so
/// that the last counts reach the collector.
pub(crate) async fn push_until(metrics: Arc<Metrics>, config: OtlpMetricsConfig, mut stop: watch::Receiver<bool>) {
    let client = match reqwest::Client::builder().timeout(config.timeout).build() {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cannot build the HTTP client for OTLP metrics; metrics stay at /metrics only");
            return;
        }
    };
    tracing::info!(endpoint = %config.endpoint, interval_ms = config.interval.as_millis() as u64, "pushing metrics over OTLP");
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate: there is nothing worth sending yet.
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => push(&metrics, &config, &client).await,
            _ = stop.changed() => break,
        }
    }
    push(&metrics, &config, &client).await;
}

async fn push(metrics: &Metrics, config: &OtlpMetricsConfig, client: &reqwest::Client) {
    // The counts' SQL spans hang under this one rather than each being a trace of its own.
    let span = tracing::info_span!("metrics.export");
    if let Err(error) = send(metrics, config, client).instrument(span).await {
        tracing::warn!(error = format!("{error:#}"), endpoint = %config.endpoint, "cannot push metrics over OTLP");
    }
}

/// One push, counts and request together bounded by the exporter's timeout:
/// a database that does not answer cannot hold up shutdown's last push.
async fn send(metrics: &Metrics, config: &OtlpMetricsConfig, client: &reqwest::Client) -> anyhow::Result<()> {
    tokio::time::timeout(config.timeout, send_unbounded(metrics, config, client))
        .await
        .with_context(|| format!("no answer within {} ms", config.timeout.as_millis()))?
}

async fn send_unbounded(metrics: &Metrics, config: &OtlpMetricsConfig, client: &reqwest::Client) -> anyhow::Result<()> {
    metrics.refresh().await;
    let text = metrics.openmetrics().context("cannot encode the metrics")?;
    let request = to_request(&text, &config.resource, unix_nanos(metrics.started_at()), unix_nanos(SystemTime::now()))?;
    let (body, content_type) = if config.json {
        (serde_json::to_vec(&request)?, "application/json")
    } else {
        (request.encode_to_vec(), "application/x-protobuf")
    };
    let response = client
        .post(config.endpoint.clone())
        .headers(config.headers.clone())
        .header(CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let excerpt: String = body.chars().take(200).collect();
        bail!("the collector answered {status}: {excerpt}");
    }
    Ok(())
}

fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |elapsed| u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
}

/// One metric family of the OpenMetrics text.
#[derive(Debug, Default)]
struct Family {
    name: String,
    kind: String,
    help: String,
    unit: String,
    samples: Vec<Sample>,
}

/// A sample's labels as written, in order.
type Labels = Vec<(String, String)>;

#[derive(Debug)]
struct Sample {
    /// What follows the family's name: `_total`, `_bucket`, `_sum`, ...
    suffix: String,
    labels: Labels,
    value: f64,
    /// Whether the text was an integer (sent as `asInt`).
    integer: Option<i64>,
}

/// The registry's OpenMetrics text as one OTLP export request.
fn to_request(text: &str, resource: &[KeyValue], start: u64, now: u64) -> anyhow::Result<ExportMetricsServiceRequest> {
    let metrics = parse(text)?
        .into_iter()
        .filter_map(|family| to_metric(family, start, now).transpose())
        .collect::<anyhow::Result<Vec<Metric>>>()?;
    Ok(ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource { attributes: resource.to_vec(), ..Resource::default() }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "catalog".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..InstrumentationScope::default()
                }),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    })
}

fn parse(text: &str) -> anyhow::Result<Vec<Family>> {
    let mut families: Vec<Family> = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let context = || format!("line {} of the OpenMetrics text: `{line}`", number + 1);
        if line.is_empty() || line == "# EOF" {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let (Some(keyword), Some(name)) = (parts.next(), parts.next()) else { bail!("{}", context()) };
            let rest = unescape(parts.next().unwrap_or_default());
            // prometheus-client writes HELP, TYPE and UNIT before the samples.
            if families.last().is_none_or(|family| family.name != name) {
                families.push(Family { name: name.to_owned(), ..Family::default() });
            }
            let family = families.last_mut().expect("pushed above");
            match keyword {
                "HELP" => family.help = rest,
                "TYPE" => family.kind = rest,
                "UNIT" => family.unit = rest,
                _ => {}
            }
            continue;
        }
        let family = families.last_mut().with_context(|| format!("a sample before any family: {}", context()))?;
        let sample = parse_sample(line, &family.name).with_context(context)?;
        family.samples.push(sample);
    }
    Ok(families)
}

fn parse_sample(line: &str, family: &str) -> anyhow::Result<Sample> {
    let name_end = line.find(['{', ' ']).context("no value")?;
    let suffix = line[..name_end].strip_prefix(family).context("a sample outside its family")?.to_owned();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inside) = rest.strip_prefix('{') {
        rest = inside;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = rest.split_once("=\"").context("a label without a quoted value")?;
            let mut value = String::new();
            let mut characters = after.char_indices();
            let end = loop {
                match characters.next() {
                    Some((_, '\\')) => match characters.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, escaped)) => value.push(escaped),
                        None => bail!("an unfinished escape"),
                    },
                    Some((index, '"')) => break index,
                    Some((_, character)) => value.push(character),
                    None => bail!("an unterminated label value"),
                }
            };
            labels.push((key.trim_start_matches(',').to_owned(), value));
            rest = &after[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }
    let text = rest.split_whitespace().next().context("no value")?;
    let value = match text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        number => number.parse().with_context(|| format!("`{number}` is not a number"))?,
    };
    Ok(Sample { suffix, labels, value, integer: text.parse().ok() })
}

fn unescape(text: &str) -> String {
    let mut unescaped = String::with_capacity(text.len());
    let mut characters = text.chars();
    while let Some(character) = characters.next() {
        match (character, characters.clone().next()) {
            ('\\', Some('n')) => {
                unescaped.push('\n');
                characters.next();
            }
            ('\\', Some(escaped @ ('\\' | '"'))) => {
                unescaped.push(escaped);
                characters.next();
            }
            _ => unescaped.push(character),
        }
    }
    unescaped
}

/// OTLP's unit for a Prometheus one (UCUM codes).
fn unit(prometheus: &str) -> String {
    match prometheus {
        "seconds" => "s".to_owned(),
        "bytes" => "By".to_owned(),
        other => other.to_owned(),
    }
}

fn attributes(labels: &[(String, String)]) -> Vec<KeyValue> {
    labels
        .iter()
        .map(|(key, value)| KeyValue {
            key: key.clone(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.clone())) }),
            key_strindex: 0,
        })
        .collect()
}

fn number_point(sample: &Sample, start: u64, now: u64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attributes(&sample.labels),
        start_time_unix_nano: start,
        time_unix_nano: now,
        value: Some(match sample.integer {
            Some(integer) => number_data_point::Value::AsInt(integer),
            None => number_data_point::Value::AsDouble(sample.value),
        }),
        ..NumberDataPoint::default()
    }
}

/// `None` for the kinds the registry does not hold (info, stateset, summary)
/// and for families without samples yet (some backends drop a metric with
/// no points, noisily).
fn to_metric(family: Family, start: u64, now: u64) -> anyhow::Result<Option<Metric>> {
    if family.samples.is_empty() {
        return Ok(None);
    }
    let cumulative = AggregationTemporality::Cumulative as i32;
    let data = match family.kind.as_str() {
        "counter" => metric::Data::Sum(Sum {
            data_points: family
                .samples
                .iter()
                .filter(|sample| sample.suffix == "_total")
                .map(|sample| number_point(sample, start, now))
                .collect(),
            aggregation_temporality: cumulative,
            is_monotonic: true,
        }),
        "gauge" | "unknown" => metric::Data::Gauge(Gauge {
            data_points: family.samples.iter().map(|sample| number_point(sample, start, now)).collect(),
        }),
        "histogram" => metric::Data::Histogram(Histogram {
            data_points: histogram_points(&family, start, now)?,
            aggregation_temporality: cumulative,
        }),
        _ => return Ok(None),
    };
    Ok(Some(Metric {
        name: family.name,
        description: family.help,
        unit: unit(&family.unit),
        data: Some(data),
        ..Metric::default()
    }))
}

/// One point per label set. Prometheus buckets count everything up to their
/// bound; OTLP's count only their own range, so the counts are differenced.
fn histogram_points(family: &Family, start: u64, now: u64) -> anyhow::Result<Vec<HistogramDataPoint>> {
    // Each label set (without `le`), its point, and its last bucket's running total.
    let mut points: Vec<(Labels, HistogramDataPoint, u64)> = Vec::new();
    for sample in &family.samples {
        let labels: Labels = sample.labels.iter().filter(|(key, _)| key != "le").cloned().collect();
        let index = match points.iter().position(|(known, _, _)| *known == labels) {
            Some(index) => index,
            None => {
                let point = HistogramDataPoint {
                    attributes: attributes(&labels),
                    start_time_unix_nano: start,
                    time_unix_nano: now,
                    ..HistogramDataPoint::default()
                };
                points.push((labels, point, 0));
                points.len() - 1
            }
        };
        let (_, point, below) = &mut points[index];
        match sample.suffix.as_str() {
            "_sum" => point.sum = Some(sample.value),
            "_count" => point.count = sample.value as u64,
            "_bucket" => {
                let bound = sample.labels.iter().find(|(key, _)| key == "le").context("a bucket without `le`")?;
                let cumulative = sample.value as u64;
                let own = cumulative
                    .checked_sub(*below)
                    .with_context(|| format!("{}'s buckets are not cumulative", family.name))?;
                *below = cumulative;
                point.bucket_counts.push(own);
                if bound.1 != "+Inf" {
                    point.explicit_bounds.push(bound.1.parse().with_context(|| format!("le=`{}`", bound.1))?);
                }
            }
            _ => {}
        }
    }
    Ok(points.into_iter().map(|(_, point, _)| point).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family as MetricFamily;
    use prometheus_client::metrics::gauge::Gauge as PrometheusGauge;
    use prometheus_client::metrics::histogram::Histogram as PrometheusHistogram;
    use prometheus_client::registry::{Registry, Unit};

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct RouteLabels {
        route: String,
    }

    /// A registry like the server's, with a label value that needs escaping.
    fn registry_text() -> String {
        let mut registry = Registry::with_prefix("catalog");
        let requests = MetricFamily::<RouteLabels, Counter>::default();
        let odd = RouteLabels { route: "a \"quoted\" \\ route".to_owned() };
        requests.get_or_create(&odd).inc_by(3);
        requests.get_or_create(&RouteLabels { route: "/graphql".to_owned() }).inc();
        registry.register("requests", "Requests, by route", requests);
        let open = PrometheusGauge::<i64>::default();
        open.set(-2);
        registry.register("open", "Open things", open);
        registry.register("idle", "Nothing counted yet", MetricFamily::<RouteLabels, Counter>::default());
        let durations = MetricFamily::<RouteLabels, PrometheusHistogram>::new_with_constructor(|| {
            PrometheusHistogram::new([0.1, 1.0])
        });
        {
            let histogram = durations.get_or_create(&RouteLabels { route: "/graphql".to_owned() });
            for value in [0.05, 0.5, 0.7, 3.0] {
                histogram.observe(value);
            }
        }
        registry.register_with_unit("duration", "Durations", Unit::Seconds, durations);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    fn metric<'a>(request: &'a ExportMetricsServiceRequest, name: &str) -> &'a Metric {
        let metrics = &request.resource_metrics[0].scope_metrics[0].metrics;
        metrics.iter().find(|metric| metric.name == name).unwrap_or_else(|| panic!("no {name} in {metrics:#?}"))
    }

    fn label(attributes: &[KeyValue]) -> String {
        match attributes.iter().find(|attribute| attribute.key == "route").and_then(|kv| kv.value.clone()) {
            Some(AnyValue { value: Some(any_value::Value::StringValue(value)) }) => value,
            other => panic!("no route label: {other:?}"),
        }
    }

    #[test]
    fn the_registry_becomes_cumulative_otlp_metrics_with_the_same_values() {
        let text = registry_text();
        let request = to_request(&text, &[], 10, 20).unwrap();

        let Some(metric::Data::Sum(sum)) = &metric(&request, "catalog_requests").data else { panic!("a sum") };
        assert!(sum.is_monotonic);
        assert_eq!(sum.aggregation_temporality, AggregationTemporality::Cumulative as i32);
        let quoted = sum.data_points.iter().find(|point| label(&point.attributes) == "a \"quoted\" \\ route").unwrap();
        assert_eq!(quoted.value, Some(number_data_point::Value::AsInt(3)));
        assert_eq!((quoted.start_time_unix_nano, quoted.time_unix_nano), (10, 20));
        assert_eq!(sum.data_points.len(), 2);
        // prometheus-client ends every HELP with a period.
        assert_eq!(metric(&request, "catalog_requests").description, "Requests, by route.");

        let names: Vec<&str> =
            request.resource_metrics[0].scope_metrics[0].metrics.iter().map(|metric| metric.name.as_str()).collect();
        assert!(!names.contains(&"catalog_idle"), "a family without samples is left out: {names:?}");

        let Some(metric::Data::Gauge(gauge)) = &metric(&request, "catalog_open").data else { panic!("a gauge") };
        assert_eq!(gauge.data_points[0].value, Some(number_data_point::Value::AsInt(-2)));

        let duration = metric(&request, "catalog_duration_seconds");
        assert_eq!(duration.unit, "s");
        let Some(metric::Data::Histogram(histogram)) = &duration.data else { panic!("a histogram") };
        let point = &histogram.data_points[0];
        assert_eq!(label(&point.attributes), "/graphql");
        assert!(point.attributes.iter().all(|attribute| attribute.key != "le"));
        assert_eq!(point.explicit_bounds, vec![0.1, 1.0]);
        // 0.05 | 0.5, 0.7 | 3.0: each bucket's own count, not Prometheus's running total.
        assert_eq!(point.bucket_counts, vec![1, 2, 1]);
        assert_eq!(point.count, 4);
        assert!((point.sum.unwrap() - 4.25).abs() < 1e-9);
    }

    #[test]
    fn json_and_protobuf_carry_the_same_request() {
        let request = to_request(&registry_text(), &[], 1, 2).unwrap();
        let decoded = ExportMetricsServiceRequest::decode(request.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, request);
        let json = serde_json::to_value(&request).unwrap();
        let metrics = &json["resourceMetrics"][0]["scopeMetrics"][0]["metrics"];
        let sum = metrics.as_array().unwrap().iter().find(|metric| metric["name"] == "catalog_requests").unwrap();
        assert_eq!(sum["sum"]["isMonotonic"], true, "{sum}");
    }

    #[test]
    fn malformed_text_is_an_error_naming_the_line() {
        let error = to_request("# TYPE x counter\nx_total{a=\"b} 1\n", &[], 0, 0).unwrap_err();
        assert!(format!("{error:#}").contains("line 2"), "{error:#}");
        let error = to_request("# TYPE x counter\nx_total one\n", &[], 0, 0).unwrap_err();
        assert!(format!("{error:#}").contains("`one` is not a number"), "{error:#}");
    }

    fn config(variables: &[(&str, &str)]) -> anyhow::Result<Option<OtlpMetricsConfig>> {
        let variables: Vec<(String, String)> =
            variables.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect();
        OtlpMetricsConfig::from_lookup(
            |name| variables.iter().find(|(known, _)| known == name).map(|(_, value)| value.clone()),
            vec![("service.name".to_owned(), "catalog".into())],
        )
    }

    #[test]
    fn the_standard_variables_choose_endpoint_protocol_headers_and_interval() {
        assert!(config(&[]).unwrap().is_none(), "no endpoint, no push");
        let base = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]).unwrap().unwrap();
        assert_eq!(base.endpoint.as_str(), "http://collector:4318/v1/metrics");
        assert!(!base.json, "http/protobuf is the default");
        assert_eq!(base.interval, Duration::from_secs(60));
        assert_eq!(base.resource[0].key, "service.name");

        let specific = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "https://metrics.example/ingest"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=one,x-general=1"),
            ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "authorization=Bearer%20abc,x-tenant=two"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "250"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(specific.endpoint.as_str(), "https://metrics.example/ingest", "used as given");
        assert!(specific.json);
        assert_eq!(specific.headers["authorization"], "Bearer abc");
        assert_eq!(specific.headers["x-tenant"], "two", "the metrics' own headers win");
        assert_eq!(specific.interval, Duration::from_millis(250));

        assert!(
            !specific.headers.contains_key("x-general"),
            "the general headers are not sent beside the metrics' own"
        );
        assert_eq!(specific.headers.len(), 2);

        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        assert!(config(&[endpoint, ("OTEL_METRICS_EXPORTER", "none")]).unwrap().is_none());
        assert!(config(&[endpoint, ("OTEL_METRICS_EXPORTER", "prometheus")]).unwrap().is_none());
        assert!(config(&[endpoint, ("OTEL_METRICS_EXPORTER", "otlp, prometheus")]).unwrap().is_some());
        assert!(config(&[endpoint, ("OTEL_SDK_DISABLED", "true")]).unwrap().is_none());
        let general = config(&[endpoint, ("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=one")]).unwrap().unwrap();
        assert_eq!(general.headers["x-tenant"], "one", "the general headers when the metrics have none");
    }

    #[test]
    fn unsupported_or_malformed_variables_are_refused_by_name() {
        let refused = |variables: &[(&str, &str)], expected: &str| {
            let error = format!("{:#}", config(variables).unwrap_err());
            assert!(error.contains(expected), "`{error}` should name {expected}");
        };
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        refused(&[endpoint, ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc")], "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL");
        refused(&[endpoint, ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")], "OTEL_EXPORTER_OTLP_COMPRESSION");
        refused(&[endpoint, ("OTEL_METRIC_EXPORT_INTERVAL", "0")], "OTEL_METRIC_EXPORT_INTERVAL");
        refused(&[endpoint, ("OTEL_EXPORTER_OTLP_HEADERS", "novalue")], "OTEL_EXPORTER_OTLP_HEADERS");
        refused(&[endpoint, ("OTEL_METRICS_EXPORTER", "console")], "OTEL_METRICS_EXPORTER");
        refused(&[("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "collector:4318")], "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT");
    }
}
