//! docker-compose.yml fits together: no Docker engine runs where tests run,
//! so this reads the file (and the files it mounts) and checks what `docker
//! compose up` relies on: the proxy's upstreams are the replicas, on the port
//! their configuration listens on; the replicas share image, configuration
//! and database; the migration runs first; every healthcheck asks /readyz or
//! pg_isready; traces have somewhere to go.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use catalog_api::config::Config;
use serde_json::Value;

pub fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A YAML file of the repository, as JSON values (anchors and merge keys
/// resolved, as Docker's parser resolves them).
pub fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|error| panic!("{} does not parse: {error}", path.display()))
}

/// The compose file's services by name.
fn services() -> serde_json::Map<String, Value> {
    let compose = yaml(&repository().join("docker-compose.yml"));
    compose["services"].as_object().expect("a services map").clone()
}

/// A service's environment as (name, value) pairs, from either of compose's
/// two spellings (a map, or a list of NAME=value).
fn environment(service: &Value) -> Vec<(String, String)> {
    match &service["environment"] {
        Value::Object(map) => map
            .iter()
            .map(|(name, value)| (name.clone(), value.as_str().map_or_else(|| value.to_string(), str::to_owned)))
            .collect(),
        Value::Array(list) => list
            .iter()
            .filter_map(Value::as_str)
            .filter_map(|pair| pair.split_once('='))
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect(),
        _ => Vec::new(),
    }
}

fn variable(service: &Value, name: &str) -> Option<String> {
    environment(service).into_iter().find(|(key, _)| key == name).map(|(_, value)| value)
}

fn command(service: &Value) -> Vec<&str> {
    service["command"].as_array().map(|words| words.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

/// The condition a service waits for on another (`depends_on`).
fn waits_for<'a>(service: &'a Value, other: &str) -> Option<&'a str> {
    service["depends_on"][other]["condition"].as_str()
}

/// Bind mounts as (repository file, path in the container).
fn bind_mounts(service: &Value) -> Vec<(PathBuf, String)> {
    service["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|volume| volume.starts_with("./"))
        .map(|volume| {
            let mut parts = volume.split(':');
            let source = repository().join(parts.next().unwrap());
            (source, parts.next().expect("a target").to_owned())
        })
        .collect()
}

/// The catalog's configuration as a replica loads it: its mounted file under
/// its environment.
fn replica_config(service: &Value) -> (PathBuf, Vec<(String, String)>) {
    let target = variable(service, "CATALOG_CONFIG").expect("CATALOG_CONFIG names the config file");
    let (source, _) = bind_mounts(service)
        .into_iter()
        .find(|(_, mounted)| *mounted == target)
        .unwrap_or_else(|| panic!("nothing is mounted at {target}"));
    (source, environment(service))
}

/// The services that serve the catalog.
fn replicas(services: &serde_json::Map<String, Value>) -> Vec<(&String, &Value)> {
    services.iter().filter(|(_, service)| command(service) == ["serve"]).collect()
}

#[test]
fn two_replicas_share_image_configuration_and_database() {
    let services = services();
    let replicas = replicas(&services);
    assert_eq!(replicas.len(), 2, "two replicas: {:?}", replicas.iter().map(|(name, _)| name).collect::<Vec<_>>());
    let (first, second) = (replicas[0].1, replicas[1].1);
    assert!(first["image"].is_string() && first["image"] == second["image"], "one image");
    assert!(first["build"].is_string(), "the image is built from the repository's Dockerfile");
    assert!(repository().join("Dockerfile").exists());
    for name in ["CATALOG_DATABASE__URL", "CATALOG_CONFIG"] {
        assert!(variable(first, name).is_some() && variable(first, name) == variable(second, name), "{name}");
    }
    assert_eq!(bind_mounts(first), bind_mounts(second), "the same files mounted");
    let (file, environment) = replica_config(first);
    assert_eq!(Config::check(Some(&file), environment.clone()), Vec::<String>::new(), "{}", file.display());
    let config = Config::load(Some(&file), environment).unwrap();
    assert!(config.database.url.starts_with("postgres://"), "replicas share PostgreSQL: {}", config.database.url);
    assert!(config.ingestion.enabled, "both ingest, so that one leads and the other can take over");
    assert_eq!(config.server.host, "0.0.0.0", "reachable from the proxy");
    assert!(!config.database.migrate_on_start, "the migrate service migrates");
}

#[test]
fn the_migration_runs_once_postgres_is_healthy_and_before_the_replicas() {
    let services = services();
    let (name, migrate) =
        services.iter().find(|(_, service)| command(service) == ["migrate"]).expect("a service runs `catalog migrate`");
    assert_eq!(waits_for(migrate, "postgres"), Some("service_healthy"));
    assert_eq!(migrate["restart"], "no", "one-shot");
    for (replica, service) in replicas(&services) {
        assert_eq!(waits_for(service, name), Some("service_completed_successfully"), "{replica}");
        assert_eq!(migrate["image"], service["image"], "migrated by the replicas' own binary");
        assert_eq!(variable(migrate, "CATALOG_DATABASE__URL"), variable(service, "CATALOG_DATABASE__URL"));
    }
}

#[test]
fn every_healthcheck_asks_readyz_or_pg_isready_on_the_configured_port() {
    let services = services();
    let mut checked = BTreeSet::new();
    for (name, service) in &services {
        let Some(test) = service.get("healthcheck").map(|check| &check["test"]) else { continue };
        let words: Vec<&str> = match test {
            Value::Array(words) => words.iter().filter_map(Value::as_str).collect(),
            Value::String(line) => line.split_whitespace().collect(),
            other => panic!("{name}: a healthcheck test is a list or a string, not {other}"),
        };
        let line = words.join(" ");
        assert!(line.contains("/readyz") || line.contains("pg_isready"), "{name}: {line}");
        if line.contains("/readyz") {
            let (file, environment) = replica_config(service);
            let port = Config::load(Some(&file), environment).unwrap().server.port;
            assert!(line.contains(&format!("127.0.0.1:{port}/readyz")), "{name} asks the port it listens on: {line}");
            // The image must hold the program the check runs.
            let program = words.iter().find(|word| !word.starts_with("CMD")).unwrap();
            let dockerfile = std::fs::read_to_string(repository().join("Dockerfile")).unwrap();
            assert!(dockerfile.contains(&format!(" {program}")), "the image installs {program}");
        }
        checked.insert(name.clone());
    }
    for (replica, _) in replicas(&services) {
        assert!(checked.contains(replica), "{replica} has a healthcheck");
    }
    assert!(checked.contains("postgres"), "postgres has a healthcheck");
}

#[test]
fn the_proxy_balances_over_exactly_the_replicas_and_passes_websocket_upgrades() {
    let services = services();
    let (_, proxy) = services
        .iter()
        .find(|(_, service)| service["image"].as_str().is_some_and(|image| image.starts_with("nginx")))
        .expect("an nginx proxy");
    let (conf, target) = bind_mounts(proxy).into_iter().next().expect("the proxy's configuration is mounted");
    assert_eq!(target, "/etc/nginx/nginx.conf");
    let conf = std::fs::read_to_string(conf).unwrap();
    let upstreams: BTreeSet<(String, u16)> = conf
        .lines()
        .map(str::trim)
        .filter_map(|line| line.strip_prefix("server ")?.strip_suffix(';'))
        .map(|address| {
            let (host, port) = address.split_once(':').expect("host:port");
            (host.to_owned(), port.parse().unwrap())
        })
        .collect();
    let mut expected = BTreeSet::new();
    for (name, service) in replicas(&services) {
        let (file, environment) = replica_config(service);
        expected.insert((name.clone(), Config::load(Some(&file), environment).unwrap().server.port));
        assert_eq!(waits_for(proxy, name), Some("service_healthy"), "the proxy waits for {name}");
    }
    assert_eq!(upstreams, expected, "upstream servers are the replicas on their ports");
    assert!(!conf.contains("ip_hash") && !conf.contains("least_conn"), "round robin");

    let websocket = conf.split("location /graphql/ws").nth(1).expect("a location for subscriptions");
    let block = &websocket[..websocket.find('}').unwrap()];
    for directive in ["proxy_http_version 1.1", "proxy_set_header Upgrade $http_upgrade", "proxy_set_header Connection"]
    {
        assert!(block.contains(directive), "/graphql/ws needs `{directive}`");
    }
    assert!(proxy["ports"].as_array().is_some_and(|ports| !ports.is_empty()), "the proxy is published");
}

#[test]
fn traces_go_from_the_replicas_through_the_collector_to_jaeger() {
    let services = services();
    let (collector_name, collector) = services
        .iter()
        .find(|(_, service)| service["image"].as_str().is_some_and(|image| image.contains("opentelemetry-collector")))
        .expect("an OpenTelemetry collector");
    for (replica, service) in replicas(&services) {
        let endpoint = variable(service, "OTEL_EXPORTER_OTLP_ENDPOINT").expect("OTEL_EXPORTER_OTLP_ENDPOINT");
        assert_eq!(endpoint, format!("http://{collector_name}:4318"), "{replica}: the collector's OTLP/HTTP port");
        assert!(variable(service, "OTEL_SERVICE_NAME").is_some(), "{replica}");
    }
    let (file, _) = bind_mounts(collector).into_iter().next().expect("the collector's configuration is mounted");
    assert!(file.starts_with(repository().join("deploy/compose")), "{}", file.display());
    let pipeline = yaml(&file);
    let exporters = pipeline["service"]["pipelines"]["traces"]["exporters"].as_array().expect("a traces pipeline");
    assert!(pipeline["service"]["pipelines"]["traces"]["receivers"].as_array().unwrap().contains(&"otlp".into()));
    let (jaeger_name, jaeger) = services
        .iter()
        .find(|(_, service)| service["image"].as_str().is_some_and(|image| image.starts_with("jaegertracing/")))
        .expect("Jaeger");
    let exported_to: Vec<&str> = exporters
        .iter()
        .filter_map(|name| pipeline["exporters"][name.as_str().unwrap()]["endpoint"].as_str())
        .collect();
    assert_eq!(exported_to, [format!("{jaeger_name}:4317")], "traces go to Jaeger's OTLP port");
    assert!(jaeger["ports"].as_array().unwrap().iter().any(|port| port.as_str() == Some("16686:16686")), "Jaeger's UI");
}

#[test]
fn every_mounted_file_exists() {
    for (name, service) in services() {
        for (source, _) in bind_mounts(&service) {
            assert!(source.is_file(), "{name} mounts {}, which does not exist", source.display());
        }
    }
}
