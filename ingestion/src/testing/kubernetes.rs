//! A fake Kubernetes API server: it speaks the
//! real wire format of list and watch for the workload kinds the provider
//! reads (`/apis/apps/v1/deployments`, namespaced paths too): lists with
//! `resourceVersion` and `continue` pages, watches as newline-delimited
//! JSON with ADDED, MODIFIED, DELETED and BOOKMARK events, and `ERROR`
//! events with 410 Gone once a watch's resource version has been compacted
//! away. Tests change its objects and make it fail on purpose.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// One change as a watch sends it.
#[derive(Clone, Debug)]
struct Event {
    resource_version: u64,
    collection: String,
    kind: &'static str,
    object: Value,
}

#[derive(Debug, Default)]
struct FakeState {
    resource_version: u64,
    /// Objects by collection (`apps/v1/deployments`), then namespace and name.
    objects: HashMap<String, BTreeMap<(String, String), Value>>,
    events: Vec<Event>,
    /// Watches from a resource version below this get 410 Gone (those
    /// versions' events are gone).
    compacted_before: u64,
    /// Bumped to end every open watch.
    generation: u64,
    /// The next this many list requests answer 500.
    failing_lists: u32,
    /// A broken line for every open watch, numbered so each sends it once,
    /// and whether the watch ends right after it (a truncated body).
    corruption: Option<(u64, String, bool)>,
    /// Every request's path and query, in order.
    requests: Vec<String>,
}

/// The fake server; dropping it stops it.
pub struct FakeKubernetes {
    url: String,
    state: Arc<Mutex<FakeState>>,
    wake: broadcast::Sender<()>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeKubernetes {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<FakeState>>,
    wake: broadcast::Sender<()>,
}

/// Lists are served in pages of at most this many objects when the client
/// asks for no smaller `limit`.
const PAGE: usize = 500;

impl FakeKubernetes {
    pub async fn start() -> FakeKubernetes {
        let state = Arc::new(Mutex::new(FakeState { resource_version: 1000, ..Default::default() }));
        let (wake, _) = broadcast::channel(1024);
        let shared = Shared { state: Arc::clone(&state), wake: wake.clone() };
        let app = axum::Router::new().fallback(serve).with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake API server");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeKubernetes { url, state, wake, server }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn state(&self) -> parking_lot::MutexGuard<'_, FakeState> {
        self.state.lock()
    }

    /// Creates or replaces an object (a full manifest with apiVersion, kind
    /// and metadata.namespace/name) and tells the watches.
    pub fn apply(&self, object: Value) {
        let (collection, key) = (collection_of(&object), object_key(&object));
        let mut state = self.state();
        state.resource_version += 1;
        let version = state.resource_version;
        let mut object = object;
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        object["metadata"].as_object_mut().map(|meta| meta.entry("uid").or_insert(json!(format!("uid-{version}"))));
        let objects = state.objects.entry(collection.clone()).or_default();
        let kind = if objects.insert(key, object.clone()).is_some() { "MODIFIED" } else { "ADDED" };
        state.events.push(Event { resource_version: version, collection, kind, object });
        drop(state);
        let _ = self.wake.send(());
    }

    /// Deletes an object and tells the watches; false when it was not there.
    pub fn delete(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> bool {
        let collection = collection(api_version, kind);
        let mut state = self.state();
        let Some(mut object) =
            state.objects.get_mut(&collection).and_then(|objects| objects.remove(&(namespace.into(), name.into())))
        else {
            return false;
        };
        state.resource_version += 1;
        let version = state.resource_version;
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        state.events.push(Event { resource_version: version, collection, kind: "DELETED", object });
        drop(state);
        let _ = self.wake.send(());
        true
    }

    /// Compacts the event history and ends every open watch: clients
    /// resuming from where they were get 410 Gone and must list again.
    pub fn expire_watches(&self) {
        let mut state = self.state();
        state.compacted_before = state.resource_version;
        state.events.clear();
        state.generation += 1;
        drop(state);
        let _ = self.wake.send(());
    }

    /// Changes an object behind the watches' back: no event is recorded, so
    /// only a new list shows it (what a client misses while disconnected).
    pub fn apply_silently(&self, object: Value) {
        let (collection, key) = (collection_of(&object), object_key(&object));
        let mut state = self.state();
        state.resource_version += 1;
        let mut object = object;
        object["metadata"]["resourceVersion"] = json!(state.resource_version.to_string());
        state.objects.entry(collection).or_default().insert(key, object);
    }

    /// Deletes an object behind the watches' back (see [`Self::apply_silently`]).
    pub fn delete_silently(&self, api_version: &str, kind: &str, namespace: &str, name: &str) {
        let collection = collection(api_version, kind);
        let mut state = self.state();
        state.resource_version += 1;
        if let Some(objects) = state.objects.get_mut(&collection) {
            objects.remove(&(namespace.into(), name.into()));
        }
    }

    /// Sends `line` (malformed JSON, or half an event) down every open
    /// watch; with `end`, the watch's body ends right after it, as a
    /// connection cut mid-event does.
    pub fn corrupt_watches(&self, line: &str, end: bool) {
        let mut state = self.state();
        let number = state.corruption.as_ref().map_or(1, |(number, _, _)| number + 1);
        state.corruption = Some((number, line.to_owned(), end));
        drop(state);
        let _ = self.wake.send(());
    }

    /// The next `n` list requests answer 500 (`u32::MAX`: until told otherwise).
    pub fn fail_lists(&self, n: u32) {
        self.state().failing_lists = n;
    }

    /// The requests so far whose path and query contain `fragment`.
    pub fn requests_matching(&self, fragment: &str) -> Vec<String> {
        self.state().requests.iter().filter(|request| request.contains(fragment)).cloned().collect()
    }
}

/// An object's namespace and name.
fn object_key(object: &Value) -> (String, String) {
    let field = |name: &str| object["metadata"][name].as_str().unwrap_or_default().to_owned();
    (field("namespace"), field("name"))
}

/// `apps/v1/deployments` for a Deployment manifest.
fn collection_of(object: &Value) -> String {
    collection(object["apiVersion"].as_str().unwrap_or_default(), object["kind"].as_str().unwrap_or_default())
}

fn collection(api_version: &str, kind: &str) -> String {
    format!("{api_version}/{}s", kind.to_ascii_lowercase())
}

/// `/apis/apps/v1/deployments` or `/apis/apps/v1/namespaces/shop/deployments`
/// into the collection and the namespace (None: all).
fn route(path: &str) -> Option<(String, Option<String>)> {
    let rest = path.strip_prefix("/apis/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [group, version, resource] => Some((format!("{group}/{version}/{resource}"), None)),
        [group, version, "namespaces", namespace, resource] => {
            Some((format!("{group}/{version}/{resource}"), Some((*namespace).to_owned())))
        }
        _ => None,
    }
}

async fn serve(State(shared): State<Shared>, uri: Uri, Query(query): Query<HashMap<String, String>>) -> Response {
    shared.state.lock().requests.push(uri.path_and_query().map(ToString::to_string).unwrap_or_default());
    let Some((collection, namespace)) = route(uri.path()) else {
        return status(StatusCode::NOT_FOUND, "NotFound", &format!("the server could not find {}", uri.path()));
    };
    if query.get("watch").is_some_and(|watch| watch == "true" || watch == "1") {
        watch(shared, collection, namespace, &query)
    } else {
        list(&shared, &collection, namespace.as_deref(), &query)
    }
}

fn list(shared: &Shared, collection: &str, namespace: Option<&str>, query: &HashMap<String, String>) -> Response {
    let mut state = shared.state.lock();
    if state.failing_lists > 0 {
        if state.failing_lists != u32::MAX {
            state.failing_lists -= 1;
        }
        return status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "etcdserver: request timed out");
    }
    let limit = query.get("limit").and_then(|limit| limit.parse().ok()).unwrap_or(PAGE).min(PAGE);
    let start: usize = query.get("continue").and_then(|token| token.parse().ok()).unwrap_or(0);
    let items: Vec<&Value> = state
        .objects
        .get(collection)
        .into_iter()
        .flat_map(|objects| objects.iter())
        .filter(|((object_namespace, _), _)| namespace.is_none_or(|namespace| namespace == object_namespace))
        .map(|(_, object)| object)
        .collect();
    let page: Vec<&Value> = items.iter().skip(start).take(limit).copied().collect();
    let next = start + page.len();
    let kind = list_kind(collection);
    let mut metadata = json!({"resourceVersion": state.resource_version.to_string()});
    if next < items.len() {
        metadata["continue"] = json!(next.to_string());
    }
    let (group_version, _) = collection.rsplit_once('/').unwrap_or_default();
    axum::Json(json!({"kind": kind, "apiVersion": group_version, "metadata": metadata, "items": page})).into_response()
}

fn list_kind(collection: &str) -> String {
    let resource = collection.rsplit('/').next().unwrap_or_default();
    let kind = match resource {
        "deployments" => "Deployment",
        "statefulsets" => "StatefulSet",
        "daemonsets" => "DaemonSet",
        "cronjobs" => "CronJob",
        other => other,
    };
    format!("{kind}List")
}

fn watch(shared: Shared, collection: String, namespace: Option<String>, query: &HashMap<String, String>) -> Response {
    let from: u64 = query.get("resourceVersion").and_then(|version| version.parse().ok()).unwrap_or(0);
    let mut wake = shared.wake.subscribe();
    let stream = async_stream::stream! {
        let (generation, compacted, mut corrupted) = {
            let state = shared.state.lock();
            // A watch opened after a corruption does not see it.
            let corrupted = state.corruption.as_ref().map_or(0, |(number, _, _)| *number);
            (state.generation, from < state.compacted_before, corrupted)
        };
        if compacted {
            let gone = json!({"type": "ERROR", "object": {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {from}"), "reason": "Expired", "code": 410
            }});
            yield Ok::<_, std::convert::Infallible>(format!("{gone}\n"));
            return;
        }
        let mut sent = from;
        let bookmark = {
            let state = shared.state.lock();
            json!({"type": "BOOKMARK", "object": {
                "kind": list_kind(&collection).trim_end_matches("List"),
                "apiVersion": collection.rsplit_once('/').unwrap_or_default().0,
                "metadata": {"resourceVersion": state.resource_version.to_string()}
            }})
        };
        yield Ok(format!("{bookmark}\n"));
        loop {
            let (lines, ended, broken) = {
                let state = shared.state.lock();
                let broken = match &state.corruption {
                    Some((number, line, end)) if *number > corrupted => {
                        corrupted = *number;
                        Some((line.clone(), *end))
                    }
                    _ => None,
                };
                let lines: Vec<String> = state
                    .events
                    .iter()
                    .filter(|event| event.resource_version > sent && event.collection == collection)
                    .filter(|event| {
                        namespace.as_deref().is_none_or(|namespace| event.object["metadata"]["namespace"] == namespace)
                    })
                    .map(|event| format!("{}\n", json!({"type": event.kind, "object": event.object})))
                    .collect();
                sent = state.events.last().map_or(sent, |event| event.resource_version.max(sent));
                (lines, state.generation != generation, broken)
            };
            for line in lines {
                yield Ok(line);
            }
            if let Some((line, end)) = broken {
                yield Ok(line);
                if end {
                    return;
                }
            }
            if ended {
                return;
            }
            if wake.recv().await.is_err() {
                return;
            }
        }
    };
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()});
    (code, axum::Json(body)).into_response()
}

/// A Deployment manifest as an API server returns it, with its status.
pub fn deployment(namespace: &str, name: &str, labels: Value, ready: i32) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name, "namespace": namespace, "labels": labels, "generation": 1,
            "creationTimestamp": "2026-01-05T10:00:00Z",
            "annotations": {"deployment.kubernetes.io/revision": "1"},
            "managedFields": [{"manager": "kubectl", "operation": "Update", "apiVersion": "apps/v1"}]
        },
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": format!("registry.example.com/{name}:1.4.2")}]}
            }
        },
        "status": {
            "observedGeneration": 1, "replicas": 3, "readyReplicas": ready, "availableReplicas": ready,
            "updatedReplicas": 3,
            "conditions": [
                {"type": "Available", "status": if ready > 0 { "True" } else { "False" },
                 "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability.",
                 "lastUpdateTime": "2026-01-05T10:01:00Z", "lastTransitionTime": "2026-01-05T10:01:00Z"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                 "message": format!("ReplicaSet \"{name}-5d8f\" has successfully progressed."),
                 "lastUpdateTime": "2026-01-05T10:01:00Z", "lastTransitionTime": "2026-01-05T10:00:00Z"}
            ]
        }
    })
}

/// A CronJob manifest with its status.
pub fn cron_job(namespace: &str, name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "creationTimestamp": "2026-01-05T10:00:00Z"},
        "spec": {
            "schedule": "*/15 * * * *",
            "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "OnFailure",
                "containers": [{"name": name, "image": format!("registry.example.com/{name}:2.0.0")}]
            }}}}
        },
        "status": {"lastScheduleTime": "2026-01-06T08:15:00Z"}
    })
}
