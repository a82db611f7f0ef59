//! The synthetic catalog: a deterministic, valid Backstage catalog of N
//! entities with the shape of a real organisation (see `Shares`), written as
//! YAML files with a manifest that names counts, relation totals and hubs.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use anyhow::Context as _;
use catalog_store::testing::rng::Rng;
use serde::Serialize;
use serde_json::{Value, json};

use crate::yaml;

/// How the files are reached from `catalog-info.yaml`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// One Location whose targets list every file.
    Single,
    /// One Location entity per file, each listed by the root Location.
    PerFile,
}

/// Entities per generated file.
const ENTITIES_PER_FILE: usize = 100;

const WORDS: &[&str] = &[
    "atlas", "beacon", "cobalt", "delta", "ember", "falcon", "garnet", "harbor", "iris", "jade", "kepler", "lumen",
    "meadow", "nova", "orbit", "pixel", "quartz", "raven", "summit", "tidal", "umber", "vertex", "willow", "zenith",
];
const TAGS: &[&str] =
    &["java", "go", "rust", "python", "typescript", "kotlin", "grpc", "rest", "kafka", "tier-1", "pci", "gdpr"];
const COMPONENT_TYPES: &[&str] = &["service", "service", "service", "website", "library", "worker"];
const RESOURCE_TYPES: &[&str] = &["database", "s3-bucket", "kafka-topic", "cache", "queue"];
const API_TYPES: &[&str] = &["openapi", "openapi", "grpc", "asyncapi", "graphql"];

/// What was generated, written as `manifest.json` next to the files.
#[derive(Debug, Serialize)]
pub struct Manifest {
    pub seed: u64,
    pub layout: Layout,
    pub n_entities: usize,
    pub n_files: usize,
    pub counts: BTreeMap<String, usize>,
    pub relations: BTreeMap<String, usize>,
    /// Components and resources with the most transitive dependents.
    pub hubs: Vec<Hub>,
    /// Refs benchmarks can use as targets.
    pub samples: Samples,
}

#[derive(Debug, Serialize)]
pub struct Hub {
    pub entity_ref: String,
    pub direct_dependents: usize,
    pub transitive_dependents: usize,
}

#[derive(Debug, Serialize)]
pub struct Samples {
    pub components: Vec<String>,
    /// Teams: groups at the bottom of the hierarchy.
    pub groups: Vec<String>,
    /// The top of the group hierarchy: its subtree is every group.
    pub root_groups: Vec<String>,
    pub apis: Vec<String>,
    pub systems: Vec<String>,
}

struct Counts {
    groups: usize,
    users: usize,
    domains: usize,
    systems: usize,
    components: usize,
    apis: usize,
    resources: usize,
}

impl Counts {
    /// The shares of the Backstage measurement this benchmark compares with.
    fn for_total(total: usize) -> Self {
        let share = |percent: f64, minimum: usize| ((total as f64 * percent / 100.0).round() as usize).max(minimum);
        let groups = share(3.0, 4);
        let users = share(20.0, 1);
        let domains = share(0.5, 1);
        let systems = share(4.0, 1);
        let components = share(45.0, 2);
        let apis = share(15.0, 1);
        let assigned = groups + users + domains + systems + components + apis;
        let resources = total.saturating_sub(assigned).max(1);
        Self { groups, users, domains, systems, components, apis, resources }
    }
}

fn name(rng: &mut Rng, prefix: &str, index: usize) -> String {
    format!("{prefix}-{}-{index}", rng.pick(WORDS))
}

fn metadata(rng: &mut Rng, name: &str, description: String) -> Value {
    let n_tags = rng.below(3);
    let mut tags: Vec<&str> = (0..n_tags).map(|_| *rng.pick(TAGS)).collect();
    tags.sort_unstable();
    tags.dedup();
    let mut metadata = json!({
        "name": name,
        "description": description,
        "tags": tags,
        "labels": {"bench.acme.io/tier": (1 + rng.below(3)).to_string()},
    });
    if rng.chance(30) {
        metadata["annotations"] = json!({"github.com/project-slug": format!("acme/{name}")});
    }
    metadata
}

fn entity(kind: &str, metadata: Value, spec: Value) -> Value {
    json!({"apiVersion": "backstage.io/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec})
}

/// Writes a catalog of `total` entities into `out` and returns its manifest.
pub fn generate(total: usize, seed: u64, layout: Layout, out: &Path) -> anyhow::Result<Manifest> {
    let counts = Counts::for_total(total);
    let mut rng = Rng::new(seed);
    let mut relations: BTreeMap<String, usize> = BTreeMap::new();
    let mut count = |relation: &str, n: usize| *relations.entry(relation.to_owned()).or_default() += n;

    // Groups: a root, then levels 1-3, each group's parent on the level above.
    let group_names: Vec<String> = (0..counts.groups).map(|index| name(&mut rng, "group", index)).collect();
    let level_sizes = [1, (counts.groups / 10).max(1), counts.groups / 2];
    let mut levels = vec![0usize; counts.groups];
    let mut parents: Vec<Option<usize>> = vec![None; counts.groups];
    let mut boundary = [0usize; 4];
    boundary[1] = 1;
    boundary[2] = (boundary[1] + level_sizes[1]).min(counts.groups);
    boundary[3] = (boundary[2] + level_sizes[2]).min(counts.groups);
    for index in 1..counts.groups {
        let level = if index < boundary[2] {
            1
        } else if index < boundary[3] {
            2
        } else {
            3
        };
        levels[index] = level;
        let (start, end) = (boundary[level - 1], boundary[level]);
        parents[index] = Some(start + rng.below((end - start).max(1)));
    }
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); counts.groups];
    for (index, parent) in parents.iter().enumerate() {
        if let Some(parent) = parent {
            children[*parent].push(index);
        }
    }
    let teams: Vec<usize> = (0..counts.groups).filter(|index| levels[*index] >= 2).collect();
    let teams = if teams.is_empty() { (0..counts.groups).collect() } else { teams };
    let mut groups = Vec::with_capacity(counts.groups);
    for index in 0..counts.groups {
        let group_type = ["organization", "department", "team", "sub-team"][levels[index]];
        let mut spec = json!({
            "type": group_type,
            "children": children[index].iter().map(|child| group_names[*child].clone()).collect::<Vec<_>>(),
            "profile": {"displayName": group_names[index].replace('-', " "), "email": format!("{}@acme.example", group_names[index])},
        });
        if let Some(parent) = parents[index] {
            spec["parent"] = json!(group_names[parent]);
        }
        count("childOf", usize::from(parents[index].is_some()));
        let description = format!("The {} {}.", group_type, group_names[index]);
        groups.push(entity("Group", metadata(&mut rng, &group_names[index], description), spec));
    }

    let mut users = Vec::with_capacity(counts.users);
    for index in 0..counts.users {
        let user = name(&mut rng, "user", index);
        let n_groups = rng.between(1, 3);
        let mut member_of: Vec<&str> = (0..n_groups).map(|_| group_names[*rng.pick(&teams)].as_str()).collect();
        member_of.sort_unstable();
        member_of.dedup();
        count("memberOf", member_of.len());
        let spec = json!({"memberOf": member_of, "profile": {"displayName": user.replace('-', " "), "email": format!("{user}@acme.example")}});
        users.push(entity("User", metadata(&mut rng, &user, format!("User {user}.")), spec));
    }

    let domain_names: Vec<String> = (0..counts.domains).map(|index| name(&mut rng, "domain", index)).collect();
    let mut domains = Vec::with_capacity(counts.domains);
    for domain in &domain_names {
        let owner = &group_names[rng.below(counts.groups)];
        count("ownedBy", 1);
        domains.push(entity(
            "Domain",
            metadata(&mut rng, domain, format!("Domain {domain}.")),
            json!({"owner": owner}),
        ));
    }

    let system_names: Vec<String> = (0..counts.systems).map(|index| name(&mut rng, "system", index)).collect();
    let system_owners: Vec<usize> = (0..counts.systems).map(|_| *rng.pick(&teams)).collect();
    let mut systems = Vec::with_capacity(counts.systems);
    for (index, system) in system_names.iter().enumerate() {
        let spec =
            json!({"owner": group_names[system_owners[index]], "domain": domain_names[rng.below(counts.domains)]});
        count("ownedBy", 1);
        count("partOf", 1);
        systems.push(entity("System", metadata(&mut rng, system, format!("System {system}.")), spec));
    }

    let component_names: Vec<String> = (0..counts.components).map(|index| name(&mut rng, "component", index)).collect();
    let api_names: Vec<String> = (0..counts.apis).map(|index| name(&mut rng, "api", index)).collect();
    let resource_names: Vec<String> = (0..counts.resources).map(|index| name(&mut rng, "resource", index)).collect();
    // The dependency graph over components (0..c) and resources (c..c+r), for the hubs.
    let n_nodes = counts.components + counts.resources;
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n_nodes];
    let mut per_system: Vec<Vec<Value>> = vec![Vec::new(); counts.systems];

    let mut next_api = 0;
    for index in 0..counts.components {
        let system = rng.below(counts.systems);
        let owner = &group_names[system_owners[system]];
        let lifecycle = match rng.below(10) {
            0 => "deprecated",
            1 | 2 => "experimental",
            _ => "production",
        };
        let mut depends_on = Vec::new();
        for _ in 0..rng.skewed_below(7) {
            let (target, node) = if rng.chance(30) {
                let target = rng.skewed_below(counts.resources);
                (format!("resource:{}", resource_names[target]), counts.components + target)
            } else {
                let target = rng.skewed_below(counts.components);
                (format!("component:{}", component_names[target]), target)
            };
            if node != index && !depends_on.contains(&target) {
                dependents[node].push(index);
                depends_on.push(target);
            }
        }
        let n_provided = rng.below(3).min(counts.apis - next_api);
        let provides: Vec<&str> = api_names[next_api..next_api + n_provided].iter().map(String::as_str).collect();
        next_api += n_provided;
        let mut consumes: Vec<&str> =
            (0..rng.skewed_below(6)).map(|_| api_names[rng.skewed_below(counts.apis)].as_str()).collect();
        consumes.sort_unstable();
        consumes.dedup();
        count("ownedBy", 1);
        count("partOf", 1);
        count("dependsOn", depends_on.len());
        count("providesApi", provides.len());
        count("consumesApi", consumes.len());
        let spec = json!({
            "type": rng.pick(COMPONENT_TYPES),
            "lifecycle": lifecycle,
            "owner": owner,
            "system": system_names[system],
            "dependsOn": depends_on,
            "providesApis": provides,
            "consumesApis": consumes,
        });
        let description = format!("Component {} of {}.", component_names[index], system_names[system]);
        per_system[system].push(entity("Component", metadata(&mut rng, &component_names[index], description), spec));
    }

    for api in &api_names {
        let system = rng.below(counts.systems);
        let definition = format!(
            "openapi: 3.0.3\ninfo:\n  title: {api}\n  version: 1.0.0\npaths:\n  /{api}:\n    get:\n      responses:\n        \"200\":\n          description: OK\n"
        );
        let spec = json!({
            "type": rng.pick(API_TYPES),
            "lifecycle": "production",
            "owner": group_names[system_owners[system]],
            "system": system_names[system],
            "definition": definition,
        });
        count("ownedBy", 1);
        count("partOf", 1);
        per_system[system].push(entity("API", metadata(&mut rng, api, format!("API {api}.")), spec));
    }

    for (index, resource) in resource_names.iter().enumerate() {
        let system = rng.below(counts.systems);
        let mut spec = json!({
            "type": rng.pick(RESOURCE_TYPES),
            "owner": group_names[system_owners[system]],
            "system": system_names[system],
        });
        if index > 0 && rng.chance(30) {
            let target = rng.below(index);
            spec["dependsOn"] = json!([format!("resource:{}", resource_names[target])]);
            dependents[counts.components + target].push(counts.components + index);
            count("dependsOn", 1);
        }
        count("ownedBy", 1);
        count("partOf", 1);
        per_system[system].push(entity(
            "Resource",
            metadata(&mut rng, resource, format!("Resource {resource}.")),
            spec,
        ));
    }

    // Files: groups, domains and systems in chunks; each system's parts together.
    std::fs::create_dir_all(out.join("entities")).with_context(|| format!("cannot create {}", out.display()))?;
    let mut files: Vec<(String, Vec<Value>)> = Vec::new();
    let chunked = |prefix: &str, entities: Vec<Value>, files: &mut Vec<(String, Vec<Value>)>| {
        for (index, chunk) in entities.chunks(ENTITIES_PER_FILE).enumerate() {
            files.push((format!("entities/{prefix}-{index:05}.yaml"), chunk.to_vec()));
        }
    };
    chunked("groups", groups, &mut files);
    chunked("users", users, &mut files);
    chunked("domains", domains, &mut files);
    let mut parts: Vec<Value> = systems;
    for system_parts in per_system {
        parts.extend(system_parts);
    }
    chunked("systems", parts, &mut files);

    for (path, entities) in &files {
        let text: Vec<String> = entities.iter().map(yaml::document).collect();
        std::fs::write(out.join(path), text.join("---\n")).with_context(|| format!("cannot write {path}"))?;
    }
    let root_targets: Vec<String> = match layout {
        Layout::Single => files.iter().map(|(path, _)| format!("./{path}")).collect(),
        Layout::PerFile => {
            std::fs::create_dir_all(out.join("locations")).context("cannot create locations/")?;
            let mut targets = Vec::with_capacity(files.len());
            for (index, (path, _)) in files.iter().enumerate() {
                let location = json!({
                    "apiVersion": "backstage.io/v1alpha1", "kind": "Location",
                    "metadata": {"name": format!("location-{index:05}")},
                    "spec": {"type": "file", "target": format!("../{path}")},
                });
                let location_path = format!("locations/location-{index:05}.yaml");
                std::fs::write(out.join(&location_path), yaml::document(&location))
                    .with_context(|| format!("cannot write {location_path}"))?;
                targets.push(format!("./{location_path}"));
            }
            targets
        }
    };
    let root = json!({
        "apiVersion": "backstage.io/v1alpha1", "kind": "Location",
        "metadata": {"name": "synthetic-root", "description": format!("A synthetic catalog of {total} entities (seed {seed}).")},
        "spec": {"type": "file", "targets": root_targets},
    });
    std::fs::write(out.join("catalog-info.yaml"), yaml::document(&root)).context("cannot write catalog-info.yaml")?;

    let manifest = Manifest {
        seed,
        layout,
        n_entities: total,
        n_files: files.len(),
        counts: BTreeMap::from([
            ("Group".to_owned(), counts.groups),
            ("User".to_owned(), counts.users),
            ("Domain".to_owned(), counts.domains),
            ("System".to_owned(), counts.systems),
            ("Component".to_owned(), counts.components),
            ("API".to_owned(), counts.apis),
            ("Resource".to_owned(), counts.resources),
            ("Location".to_owned(), 1 + if layout == Layout::PerFile { files.len() } else { 0 }),
        ]),
        relations,
        hubs: hubs(&dependents, &component_names, &resource_names),
        samples: Samples {
            components: component_names.iter().take(100).map(|name| format!("component:default/{name}")).collect(),
            groups: teams.iter().take(20).map(|index| format!("group:default/{}", group_names[*index])).collect(),
            root_groups: (0..counts.groups)
                .filter(|index| parents[*index].is_none())
                .map(|index| format!("group:default/{}", group_names[index]))
                .collect(),
            apis: api_names.iter().take(20).map(|name| format!("api:default/{name}")).collect(),
            systems: system_names.iter().take(20).map(|name| format!("system:default/{name}")).collect(),
        },
    };
    let text = serde_json::to_string_pretty(&manifest).context("cannot serialise the manifest")?;
    std::fs::write(out.join("manifest.json"), text).context("cannot write manifest.json")?;
    Ok(manifest)
}

/// The ten nodes with the most transitive dependents, among the 50 with the
/// most direct ones.
fn hubs(dependents: &[Vec<usize>], components: &[String], resources: &[String]) -> Vec<Hub> {
    let label = |node: usize| {
        if node < components.len() {
            format!("component:default/{}", components[node])
        } else {
            format!("resource:default/{}", resources[node - components.len()])
        }
    };
    let mut by_direct: Vec<usize> = (0..dependents.len()).collect();
    by_direct.sort_by_key(|node| std::cmp::Reverse(dependents[*node].len()));
    let mut hubs: Vec<Hub> = by_direct
        .into_iter()
        .take(50)
        .map(|start| {
            let mut seen = vec![false; dependents.len()];
            seen[start] = true;
            let mut queue = VecDeque::from([start]);
            let mut n_reached = 0;
            while let Some(node) = queue.pop_front() {
                for dependent in &dependents[node] {
                    if !seen[*dependent] {
                        seen[*dependent] = true;
                        n_reached += 1;
                        queue.push_back(*dependent);
                    }
                }
            }
            Hub {
                entity_ref: label(start),
                direct_dependents: dependents[start].len(),
                transitive_dependents: n_reached,
            }
        })
        .collect();
    hubs.sort_by_key(|hub| std::cmp::Reverse(hub.transitive_dependents));
    hubs.truncate(10);
    hubs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(root: &Path) -> Vec<String> {
        let mut texts = Vec::new();
        for directory in ["entities", "locations"] {
            let Ok(entries) = std::fs::read_dir(root.join(directory)) else { continue };
            for entry in entries {
                texts.push(std::fs::read_to_string(entry.unwrap().path()).unwrap());
            }
        }
        texts
    }

    #[test]
    fn the_catalog_is_valid_has_the_requested_size_and_shape_and_matches_its_manifest() {
        let directory = tempfile::tempdir().unwrap();
        let manifest = generate(2_000, 42, Layout::Single, directory.path()).unwrap();
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for text in read_all(directory.path()) {
            for document in catalog_domain::parse_documents(&text) {
                assert!(document.problems().is_empty(), "{:?}", document.problems());
                if let catalog_domain::DocumentOutcome::Entity(entity) = document.outcome {
                    *kinds.entry(entity.kind.clone()).or_default() += 1;
                }
            }
        }
        assert_eq!(kinds.values().sum::<usize>(), 2_000);
        for (kind, n) in &kinds {
            assert_eq!(manifest.counts[kind], *n, "{kind}");
        }
        assert_eq!(kinds["Component"], 900);
        assert_eq!(kinds["User"], 400);
        assert!(manifest.hubs[0].transitive_dependents > 50, "{:?}", manifest.hubs);
        assert!(manifest.relations["dependsOn"] > 900);
    }

    #[test]
    fn the_same_seed_writes_the_same_files() {
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        generate(300, 9, Layout::PerFile, first.path()).unwrap();
        generate(300, 9, Layout::PerFile, second.path()).unwrap();
        let mut a = read_all(first.path());
        let mut b = read_all(second.path());
        a.sort();
        b.sort();
        assert_eq!(a, b);
        let root = std::fs::read_to_string(first.path().join("catalog-info.yaml")).unwrap();
        assert!(root.contains("./locations/location-00000.yaml"), "{root}");
    }
}
