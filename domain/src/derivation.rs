//! Relations derived from spec fields: every edge an entity's spec states,
//! in both directions, as `spec.rs` says which field states which relation.

use serde_json::Value;

use crate::entity::Entity;
use crate::entity_ref::EntityRef;
use crate::relation::{Relation, RelationEdge};
use crate::spec::{FieldShape, kind_spec};

/// Every edge an entity's spec states, in both directions: `owner: team-a` on
/// component `a` gives `a ownedBy team-a` and `team-a ownerOf a`. Targets need
/// not exist; the store shows them as unresolved.
pub fn derive_relations(entity: &Entity) -> Vec<RelationEdge> {
    let Some(kind_spec) = kind_spec(&entity.kind) else {
        return Vec::new();
    };
    let source = entity.entity_ref();
    let mut edges = Vec::new();
    for field in kind_spec.fields {
        let Some(relation_type) = field.relation else { continue };
        let (texts, default_kind): (Vec<&str>, Option<&str>) = match (field.shape, entity.spec.get(field.name)) {
            (FieldShape::Reference(default_kind), Some(Value::String(text))) => (vec![text.as_str()], default_kind),
            (FieldShape::ReferenceList(default_kind), Some(Value::Array(items))) => {
                (items.iter().filter_map(Value::as_str).collect(), default_kind)
            }
            _ => continue,
        };
        for text in texts {
            let Ok(target) = EntityRef::parse_with_defaults(text, default_kind, &entity.metadata.namespace) else {
                continue;
            };
            edges.push(RelationEdge { source: source.clone(), relation_type, target: target.clone() });
            edges.push(RelationEdge { source: target, relation_type: relation_type.reverse(), target: source.clone() });
        }
    }
    edges.sort();
    edges.dedup();
    edges
}

impl Entity {
    /// Replaces the relations with those derived from the spec (outgoing only:
    /// the reverse edges belong to the targets).
    pub fn with_derived_relations(mut self) -> Self {
        self.relations = self.stated_relations();
        self
    }

    /// The relations this entity's spec states, leaving it, in the order
    /// `relations` holds them.
    pub fn stated_relations(&self) -> Vec<Relation> {
        let source = self.entity_ref();
        derive_relations(self)
            .into_iter()
            .filter(|edge| edge.source == source)
            .map(|edge| Relation { relation_type: edge.relation_type, target_ref: edge.target.to_string() })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::relation::RelationType;

    fn edges_of(document: Value) -> Vec<(String, &'static str, String)> {
        let entity = crate::validate(&document).unwrap();
        derive_relations(&entity)
            .into_iter()
            .map(|edge| (edge.source.to_string(), edge.relation_type.as_str(), edge.target.to_string()))
            .collect()
    }

    fn has(edges: &[(String, &'static str, String)], source: &str, relation: &str, target: &str) -> bool {
        edges.iter().any(|(s, r, t)| s == source && *r == relation && t == target)
    }

    #[test]
    fn a_component_states_ownership_system_apis_and_dependencies_both_ways() {
        let edges = edges_of(json!({
            "apiVersion": "backstage.io/v1alpha1", "kind": "Component",
            "metadata": {"name": "tracker", "namespace": "ops"},
            "spec": {"type": "service", "lifecycle": "production", "owner": "team-a", "system": "shipping",
                     "subcomponentOf": "platform", "providesApis": ["track"], "consumesApis": ["default/bill"],
                     "dependsOn": ["resource:db"], "dependencyOf": ["component:web"]}
        }));
        let me = "component:ops/tracker";
        assert!(has(&edges, me, "ownedBy", "group:ops/team-a"));
        assert!(has(&edges, "group:ops/team-a", "ownerOf", me));
        assert!(has(&edges, me, "partOf", "system:ops/shipping"));
        assert!(has(&edges, "system:ops/shipping", "hasPart", me));
        assert!(has(&edges, me, "partOf", "component:ops/platform"));
        assert!(has(&edges, me, "providesApi", "api:ops/track"));
        assert!(has(&edges, "api:ops/track", "apiProvidedBy", me));
        assert!(has(&edges, me, "consumesApi", "api:default/bill"));
        assert!(has(&edges, "api:default/bill", "apiConsumedBy", me));
        assert!(has(&edges, me, "dependsOn", "resource:ops/db"));
        assert!(has(&edges, "resource:ops/db", "dependencyOf", me));
        assert!(has(&edges, me, "dependencyOf", "component:ops/web"));
        assert!(has(&edges, "component:ops/web", "dependsOn", me));
        assert_eq!(edges.len(), 14);
    }

    #[test]
    fn an_api_is_owned_and_part_of_its_system() {
        let edges = edges_of(json!({
            "apiVersion": "backstage.io/v1alpha1", "kind": "API", "metadata": {"name": "track"},
            "spec": {"type": "openapi", "lifecycle": "production", "owner": "user:jane", "definition": "x", "system": "s"}
        }));
        assert!(has(&edges, "api:default/track", "ownedBy", "user:default/jane"));
        assert!(has(&edges, "system:default/s", "hasPart", "api:default/track"));
    }

    #[test]
    fn a_resource_depends_on_other_resources() {
        let edges = edges_of(json!({
            "apiVersion": "backstage.io/v1alpha1", "kind": "Resource", "metadata": {"name": "db"},
            "spec": {"type": "database", "owner": "team-a", "dependsOn": ["resource:disk"]}
        }));
        assert!(has(&edges, "resource:default/db", "dependsOn", "resource:default/disk"));
        assert!(has(&edges, "resource:default/disk", "dependencyOf", "resource:default/db"));
    }

    #[test]
    fn systems_and_domains_nest() {
        let system = edges_of(json!({
            "apiVersion": "backstage.io/v1alpha1", "kind": "System", "metadata": {"name": "s"},
            "spec": {"owner": "team-a", "domain": "d"}
        }));
        assert!(has(&system, "system:default/s", "partOf", "domain:default/d"));
        assert!(has(&system, "domain:default/d", "hasPart", "system:default/s"));
        let domain = edges_of(json!({
            "apiVersion": "backstage.io/v1alpha1", "kind": "Domain", "metadata": {"name": "d"},
            "spec": {"owner": "team-a", "subdomainOf": "top"}
        }));
        assert!(has(&domain, "domain:default/d", "partOf", "domain:default/top"));
        assert!(has(&domain, "group:default/team-a", "ownerOf", "domain:default/d"));
    }

    #[test]
    fn groups_state_parents_children_and_members() {
        let edges = edges_of(json!({
            "apiVersion": "backstage.io/v1alpha1", "kind": "Group", "metadata": {"name": "team-a"},
            "spec": {"type": "team", "parent": "dept", "children": ["team-a1"], "members": ["jane"]}
        }));
        assert!(has(&edges, "group:default/team-a", "childOf", "group:default/dept"));
        assert!(has(&edges, "group:default/dept", "parentOf", "group:default/team-a"));
        assert!(has(&edges, "group:default/team-a", "parentOf", "group:default/team-a1"));
        assert!(has(&edges, "group:default/team-a1", "childOf", "group:default/team-a"));
        assert!(has(&edges, "group:default/team-a", "hasMember", "user:default/jane"));
        assert!(has(&edges, "user:default/jane", "memberOf", "group:default/team-a"));
    }

    #[test]
    fn users_are_members_of_groups() {
        let edges = edges_of(json!({
            "apiVersion": "backstage.io/v1alpha1", "kind": "User", "metadata": {"name": "jane"},
            "spec": {"memberOf": ["team-a", "other/team-b"]}
        }));
        assert!(has(&edges, "user:default/jane", "memberOf", "group:default/team-a"));
        assert!(has(&edges, "group:other/team-b", "hasMember", "user:default/jane"));
    }

    #[test]
    fn an_entity_lists_only_its_outgoing_relations() {
        let entity = crate::validate(&json!({
            "apiVersion": "backstage.io/v1alpha1", "kind": "User", "metadata": {"name": "jane"},
            "spec": {"memberOf": ["team-a"]}
        }))
        .unwrap();
        assert_eq!(
            entity.relations,
            vec![Relation { relation_type: RelationType::MemberOf, target_ref: "group:default/team-a".into() }]
        );
    }

    #[test]
    fn template_and_location_kinds_state_only_ownership() {
        let edges = edges_of(json!({
            "apiVersion": "scaffolder.backstage.io/v1beta3", "kind": "Template", "metadata": {"name": "t"},
            "spec": {"type": "service", "owner": "team-a", "steps": []}
        }));
        assert_eq!(edges.len(), 2);
        let location = edges_of(json!({
            "apiVersion": "backstage.io/v1alpha1", "kind": "Location", "metadata": {"name": "l"},
            "spec": {"targets": ["./a.yaml"]}
        }));
        assert!(location.is_empty());
    }
}
