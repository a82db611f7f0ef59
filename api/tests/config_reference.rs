//! docs/configuration.md documents every configuration key, with its
//! default, and no key that does not exist: this test fails when the config
//! types and the reference drift apart.

// Tests unwrap: a failure is a failed test that names its line.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use catalog_api::config::{Config, ProviderConfig};
use catalog_ingestion::{
    FileProviderConfig, GithubOrgProviderConfig, GithubProviderConfig, KubernetesClusterConfig,
    KubernetesProviderConfig, PagerDutyProviderConfig,
};
use serde_json::Value;

/// Dotted key paths of a value's leaves (lists are leaves) with their JSON.
fn flatten(prefix: &str, value: &Value, keys: &mut BTreeMap<String, String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                flatten(&path, child, keys);
            }
        }
        leaf => {
            keys.insert(prefix.to_owned(), leaf.to_string());
        }
    }
}

/// Every key: the sections', and each provider type's under its type name
/// (`github.organization`), the way the reference lists them.
fn every_key() -> BTreeMap<String, String> {
    let mut keys = BTreeMap::new();
    flatten("", &serde_json::to_value(Config::default()).unwrap(), &mut keys);
    let providers = [
        ProviderConfig::File(FileProviderConfig { paths: Vec::new() }),
        ProviderConfig::Github(GithubProviderConfig::default()),
        ProviderConfig::GithubOrg(GithubOrgProviderConfig::default()),
        ProviderConfig::Kubernetes(KubernetesProviderConfig::default()),
        ProviderConfig::PagerDuty(PagerDutyProviderConfig::default()),
    ];
    for provider in providers {
        let mut value = serde_json::to_value(provider).unwrap();
        let kind = value["type"].as_str().unwrap().to_owned();
        value.as_object_mut().unwrap().remove("type");
        flatten(&kind, &value, &mut keys);
    }
    flatten("kubernetes.clusters[]", &serde_json::to_value(KubernetesClusterConfig::default()).unwrap(), &mut keys);
    keys
}

/// The keys the reference's tables document: the first cell of each row.
fn documented() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md")).unwrap();
    text.lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`'))
        .map(|(key, rest)| (key.to_owned(), rest.to_owned()))
        .collect()
}

#[test]
fn the_configuration_reference_names_every_key_and_no_other() {
    let keys = every_key();
    let documented = documented();
    let missing: Vec<String> = keys
        .iter()
        .filter(|(key, _)| !documented.contains_key(*key))
        .map(|(key, default)| format!("{key} = {default}"))
        .collect();
    let unknown: Vec<&String> = documented.keys().filter(|key| !keys.contains_key(*key)).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "document these:\n{}\nremove these: {unknown:?}",
        missing.join("\n")
    );
    // Row cells after the key: type, default, environment, meaning.
    for (key, default) in &keys {
        let cells: Vec<&str> = documented[key].split('|').map(str::trim).collect();
        assert_eq!(cells.get(2).copied(), Some(format!("`{default}`").as_str()), "the default of {key}");
    }
}

#[test]
fn the_example_configurations_check_out() {
    for name in ["embedded", "production"] {
        let path =
            std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../config")).join(format!("{name}.yaml"));
        assert_eq!(Config::check(Some(&path), Vec::new()), Vec::<String>::new(), "{name}");
    }
    let embedded = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/embedded.yaml"));
    assert_eq!(Config::load(Some(&embedded), Vec::new()).unwrap(), Config::default(), "embedded.yaml is the defaults");
}
