//! deploy/kubernetes fits the server: no cluster runs where tests run, so
//! this reads every manifest and checks what a cluster would find out the
//! hard way: probes that ask routes the server has on the port its
//! configuration listens on, a ConfigMap that passes `catalog config check`
//! and matches config/production.yaml, environment variables the
//! configuration loader reads, Secret references that resolve, and the
//! security settings the image can satisfy.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use catalog_api::config::{Config, ProviderConfig};
use catalog_store::testing::TestDatabase;
use serde_json::Value;

use crate::deploy_compose::{repository, yaml};
use crate::helpers::spawn_app;

fn directory() -> PathBuf {
    repository().join("deploy/kubernetes")
}

/// Every manifest the kustomization lists, by kind.
fn manifests() -> BTreeMap<String, Value> {
    let kustomization = yaml(&directory().join("kustomization.yaml"));
    let mut manifests = BTreeMap::new();
    for file in kustomization["resources"].as_array().expect("resources") {
        let manifest = yaml(&directory().join(file.as_str().unwrap()));
        let kind = manifest["kind"].as_str().expect("a kind").to_owned();
        assert!(manifests.insert(kind.clone(), manifest).is_none(), "one {kind}");
    }
    manifests
}

fn pod_spec(manifests: &BTreeMap<String, Value>) -> &Value {
    &manifests["Deployment"]["spec"]["template"]["spec"]
}

fn container<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
    pod[list].as_array().into_iter().flatten().find(|container| container["name"] == name).unwrap_or_else(|| {
        panic!("no {list} entry named {name}");
    })
}

/// A container's environment, Secret references resolved to the Secret's
/// (placeholder) values.
fn environment(container: &Value, manifests: &BTreeMap<String, Value>) -> Vec<(String, String)> {
    let secret = &manifests["Secret"];
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|variable| {
            let name = variable["name"].as_str().unwrap().to_owned();
            let value = match variable["valueFrom"]["secretKeyRef"].as_object() {
                Some(reference) => {
                    assert_eq!(reference["name"], secret["metadata"]["name"], "{name} names the example Secret");
                    let key = reference["key"].as_str().unwrap();
                    secret["stringData"][key]
                        .as_str()
                        .unwrap_or_else(|| panic!("{name}: the Secret has no key {key}"))
                        .to_owned()
                }
                None => variable["value"].as_str().unwrap_or_else(|| panic!("{name} has a value")).to_owned(),
            };
            (name, value)
        })
        .collect()
}

/// The ConfigMap's file, written where `catalog config check` can read it,
/// at the path the containers' CATALOG_CONFIG names.
fn config_file(manifests: &BTreeMap<String, Value>, container: &Value, into: &Path) -> PathBuf {
    let path = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|variable| variable["name"] == "CATALOG_CONFIG")
        .and_then(|variable| variable["value"].as_str())
        .expect("CATALOG_CONFIG");
    let mounted = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|mount| path.starts_with(mount["mountPath"].as_str().unwrap()))
        .unwrap_or_else(|| panic!("nothing is mounted above {path}"));
    let volume = pod_spec(manifests)["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|volume| volume["name"] == mounted["name"])
        .expect("the mounted volume");
    let config_map = &manifests["ConfigMap"];
    assert_eq!(volume["configMap"]["name"], config_map["metadata"]["name"], "mounted from the ConfigMap");
    let file_name = Path::new(path).strip_prefix(mounted["mountPath"].as_str().unwrap()).unwrap();
    let text = config_map["data"][file_name.to_str().unwrap()].as_str().expect("the ConfigMap holds the file");
    let written = into.join(file_name);
    std::fs::write(&written, text).unwrap();
    written
}

#[test]
fn the_kustomization_lists_every_manifest_and_names_no_namespace() {
    let kustomization = yaml(&directory().join("kustomization.yaml"));
    let listed: BTreeSet<String> =
        kustomization["resources"].as_array().unwrap().iter().map(|file| file.as_str().unwrap().to_owned()).collect();
    let present: BTreeSet<String> = std::fs::read_dir(directory())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
        .collect();
    assert_eq!(listed, present);
    assert!(kustomization.get("namespace").is_none(), "namespace-agnostic");
    for (kind, manifest) in manifests() {
        assert!(manifest["metadata"].get("namespace").is_none(), "{kind} names no namespace");
    }
    let kinds: BTreeSet<String> = manifests().into_keys().collect();
    let expected = [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "Secret",
        "Service",
        "ServiceAccount",
    ];
    assert_eq!(kinds, expected.into_iter().map(str::to_owned).collect());
}

#[test]
fn the_config_map_passes_config_check_and_is_config_production_yaml() {
    let manifests = manifests();
    let pod = pod_spec(&manifests);
    let directory = tempfile::tempdir().unwrap();
    let production = repository().join("config/production.yaml");
    for (list, name) in [("containers", "catalog"), ("initContainers", "migrate")] {
        let container = container(pod, list, name);
        let file = config_file(&manifests, container, directory.path());
        let environment = environment(container, &manifests);
        assert_eq!(Config::check(Some(&file), environment.clone()), Vec::<String>::new(), "{name}");
        let loaded = Config::load(Some(&file), Vec::new()).unwrap();
        assert_eq!(loaded, Config::load(Some(&production), Vec::new()).unwrap(), "the ConfigMap is production.yaml");
        assert!(!loaded.database.migrate_on_start, "the init container migrates; the server waits for it");
        let with_environment = Config::load(Some(&file), environment).unwrap();
        assert!(with_environment.database.url.starts_with("postgres://"), "the Secret's URL is PostgreSQL");
    }
}

#[test]
fn every_environment_variable_is_one_the_catalog_reads() {
    let manifests = manifests();
    let pod = pod_spec(&manifests);
    let directory = tempfile::tempdir().unwrap();
    for (list, name) in [("containers", "catalog"), ("initContainers", "migrate")] {
        let container = container(pod, list, name);
        let file = config_file(&manifests, container, directory.path());
        let config = Config::load(Some(&file), Vec::new()).unwrap();
        // Besides CATALOG_*, the variables the configured providers read their tokens from.
        let token_variables: BTreeSet<String> = config
            .ingestion
            .providers
            .iter()
            .flat_map(|provider| match provider {
                ProviderConfig::File(_) => Vec::new(),
                // Each cluster may name its own (in-cluster ones need none).
                ProviderConfig::Kubernetes(kubernetes) => kubernetes
                    .clusters
                    .iter()
                    .map(|cluster| cluster.token_variable.clone())
                    .filter(|variable| !variable.is_empty())
                    .collect(),
                other => {
                    let value = serde_json::to_value(other).unwrap();
                    vec![value["token_variable"].as_str().expect("a provider without a token variable").to_owned()]
                }
            })
            .collect();
        for (variable, value) in environment(container, &manifests) {
            if variable.starts_with("CATALOG_") {
                // One variable at a time: an unknown key is reported with its name.
                let problems = Config::check(Some(&file), vec![(variable.clone(), value)]);
                assert_eq!(problems, Vec::<String>::new(), "{name}: {variable}");
            } else {
                assert!(token_variables.contains(&variable), "{name}: nothing reads {variable}");
            }
        }
    }
}

#[test]
fn the_service_account_may_read_the_watched_workloads_and_nothing_else() {
    let manifests = manifests();
    let account = manifests["ServiceAccount"]["metadata"]["name"].as_str().unwrap();
    assert_eq!(pod_spec(&manifests)["serviceAccountName"], account);
    let binding = &manifests["ClusterRoleBinding"];
    assert_eq!(binding["roleRef"]["name"], manifests["ClusterRole"]["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["kind"], "ServiceAccount");
    assert_eq!(binding["subjects"][0]["name"], account);
    assert!(binding["subjects"][0]["namespace"].is_string(), "a ServiceAccount subject needs its namespace");
    let rules = manifests["ClusterRole"]["rules"].as_array().unwrap();
    let mut granted = BTreeSet::new();
    for rule in rules {
        let verbs: BTreeSet<&str> = rule["verbs"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(verbs, BTreeSet::from(["get", "list", "watch"]), "read-only: {rule}");
        for group in rule["apiGroups"].as_array().unwrap() {
            for resource in rule["resources"].as_array().unwrap() {
                granted.insert(format!("{}/{}", group.as_str().unwrap(), resource.as_str().unwrap()));
            }
        }
    }
    let production = Config::load(Some(&repository().join("config/production.yaml")), Vec::new()).unwrap();
    let mut needed = BTreeSet::new();
    for provider in &production.ingestion.providers {
        if let ProviderConfig::Kubernetes(kubernetes) = provider {
            for kind in &kubernetes.kinds {
                let (group_path, resource) = kind.api_path();
                // `apis/apps/v1` -> `apps`
                let group = group_path.split('/').nth(1).unwrap();
                needed.insert(format!("{group}/{resource}"));
            }
        }
    }
    assert!(!needed.is_empty(), "production.yaml runs a kubernetes provider");
    assert_eq!(granted, needed, "exactly the watched kinds");
}

#[test]
fn the_secret_holds_placeholders_only() {
    let manifests = manifests();
    let secret = &manifests["Secret"];
    assert!(secret.get("data").is_none(), "stringData, readable placeholders");
    let values = secret["stringData"].as_object().expect("stringData");
    assert!(!values.is_empty());
    for (key, value) in values {
        assert!(value.as_str().unwrap().contains("REPLACE-ME"), "{key} is a placeholder");
    }
}

#[test]
fn replicas_are_secured_and_disruptions_leave_one_serving() {
    let manifests = manifests();
    let deployment = &manifests["Deployment"];
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = pod_spec(&manifests);
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&deployment["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(&manifests["Service"]["spec"]["selector"], labels, "the Service selects the pods");
    let budget = &manifests["PodDisruptionBudget"]["spec"];
    assert_eq!(budget["minAvailable"], 1);
    assert_eq!(&budget["selector"]["matchLabels"], labels, "the budget covers the pods");

    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let user = pod["securityContext"]["runAsUser"].as_u64().expect("a numeric user");
    let dockerfile = std::fs::read_to_string(repository().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains(&format!("USER {user}")), "the image runs as {user}");
    let server = container(pod, "containers", "catalog");
    let migrate = container(pod, "initContainers", "migrate");
    assert_eq!(server["args"], serde_json::json!(["serve"]));
    assert_eq!(migrate["args"], serde_json::json!(["migrate"]));
    assert_eq!(server["image"], migrate["image"], "migrated by the binary that serves");
    for container in [server, migrate] {
        let security = &container["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true, "{}", container["name"]);
        assert_eq!(security["allowPrivilegeEscalation"], false, "{}", container["name"]);
        assert!(container["resources"]["requests"].is_object(), "{} requests resources", container["name"]);
        assert!(container["resources"]["limits"]["memory"].is_string(), "{} has a memory limit", container["name"]);
    }
    let kustomization = yaml(&directory().join("kustomization.yaml"));
    assert!(
        kustomization["images"].as_array().unwrap().iter().any(|image| image["name"] == server["image"]),
        "the kustomization sets the image"
    );
}

/// The probes' ports are the container port the configuration listens on
/// (the Service's target too), and their paths answer 200 on a real server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probes_ask_routes_the_server_answers_on_its_configured_port() {
    let manifests = manifests();
    let pod = pod_spec(&manifests);
    let server = container(pod, "containers", "catalog");
    let directory = tempfile::tempdir().unwrap();
    let file = config_file(&manifests, server, directory.path());
    let config = Config::load(Some(&file), environment(server, &manifests)).unwrap();
    assert_eq!(config.server.host, "0.0.0.0", "reachable by the kubelet and the Service");
    let ports = server["ports"].as_array().unwrap();
    let port_number = |port: &Value| -> u64 {
        match port {
            Value::String(name) => ports
                .iter()
                .find(|declared| declared["name"] == name.as_str())
                .unwrap_or_else(|| panic!("no container port named {name}"))["containerPort"]
                .as_u64()
                .unwrap(),
            number => number.as_u64().unwrap(),
        }
    };
    let target = &manifests["Service"]["spec"]["ports"][0]["targetPort"];
    assert_eq!(port_number(target), u64::from(config.server.port), "the Service's target port");

    let app = spawn_app(TestDatabase::sqlite().await).await;
    let mut paths = BTreeMap::new();
    for probe in ["livenessProbe", "readinessProbe"] {
        let get = &server[probe]["httpGet"];
        assert_eq!(port_number(&get["port"]), u64::from(config.server.port), "{probe} asks the configured port");
        let path = get["path"].as_str().unwrap().to_owned();
        let response = app.client.get(app.url(&path)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{probe}: {path}");
        paths.insert(probe, path);
    }
    assert_eq!(paths["livenessProbe"], "/healthz", "alive even while waiting for migrations");
    assert_eq!(paths["readinessProbe"], "/readyz", "ready only when the database and its schema are");
}
