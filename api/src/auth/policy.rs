//! Authorization: the policy file's rules map principals to permissions, and
//! entity.read to the entities a principal may see. A read condition becomes
//! a store filter, ANDed into every list, count and facet, and matched
//! against every entity the DataLoader returns, so hidden entities are
//! neither shown nor counted.

use std::sync::Arc;

use parking_lot::RwLock;

use catalog_store::{Catalog, EntityMatcher, Filter, FilterField, Predicate, StoreError, StoredEntity};
use serde::{Deserialize, Serialize};

use crate::auth::identity::{Permission, Principal};

/// One rule of `auth.policy`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyRule {
    /// Who the rule is for: `token:NAME`, `sub:SUBJECT` (a JWT's subject),
    /// `group:NAME` (a value of a JWT's `groups` claim), `anonymous`, or `*`
    /// (any authenticated principal).
    pub subjects: Vec<String>,
    /// Permissions granted (see `identity::Permission`).
    pub permissions: Vec<String>,
    /// For entity.read: only the entities meeting every condition set.
    pub conditions: Option<ReadConditions>,
    /// For template.execute: only the templates meeting these conditions;
    /// absent: every template the principal may read.
    pub templates: Option<TemplateConditions>,
    /// For template.execute: the actions the templates may use (`fetch:*`
    /// ends in a wildcard); empty: every action.
    pub actions: Vec<String>,
}

/// Which templates a rule lets a principal run: any one condition set holding
/// is enough (a ref listed, an owner, or a tag).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TemplateConditions {
    /// Template refs, e.g. `template:default/rust-service` (`rust-service`).
    pub refs: Vec<String>,
    /// Owners (`spec.owner`), e.g. `group:default/team-platform-dx`.
    pub owners: Vec<String>,
    pub tags: Vec<String>,
}

/// What one rule lets a principal run: which templates, with which actions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TemplateGrant {
    pub templates: Option<TemplateConditions>,
    pub actions: Vec<String>,
}

/// The templates and actions a principal may run, when a policy limits
/// them; None: any (no policy, or a rule without limits).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TemplateGrants(pub Option<Vec<TemplateGrant>>);

/// Why a policy refuses a template run; the message names what is missing.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateRefusal {
    #[error("the policy does not let this principal run {template_ref} (template.execute)")]
    Template { template_ref: String },
    #[error(
        "the policy does not let this principal run the action(s) {refused} that {template_ref} uses (template.execute actions)"
    )]
    Actions { template_ref: String, refused: String },
}

impl TemplateGrants {
    /// Whether some grant covers the template and every action it uses; the
    /// refusal names what is missing.
    pub fn allows(&self, template: &catalog_domain::Entity, actions: &[&str]) -> Result<(), TemplateRefusal> {
        let Some(grants) = &self.0 else { return Ok(()) };
        let template_ref = template.entity_ref().to_string();
        let covering: Vec<&TemplateGrant> = grants
            .iter()
            .filter(|grant| grant.templates.as_ref().is_none_or(|wanted| matches_template(wanted, template)))
            .collect();
        if covering.is_empty() {
            return Err(TemplateRefusal::Template { template_ref });
        }
        let allowed = |grant: &TemplateGrant, action: &str| {
            grant.actions.is_empty()
                || grant.actions.iter().any(|pattern| match pattern.strip_suffix('*') {
                    Some(prefix) => action.starts_with(prefix),
                    None => pattern == action,
                })
        };
        if covering.iter().any(|grant| actions.iter().all(|action| allowed(grant, action))) {
            return Ok(());
        }
        let refused: Vec<&str> =
            actions.iter().copied().filter(|action| !covering.iter().any(|grant| allowed(grant, action))).collect();
        let refused = if refused.is_empty() { "together".to_owned() } else { refused.join(", ") };
        Err(TemplateRefusal::Actions { template_ref, refused })
    }
}

/// The kind a partial owner ref defaults to, as in the entities' specs.
const OWNER_KIND: Option<&str> = catalog_domain::spec::default_kind("owner");

fn matches_template(wanted: &TemplateConditions, template: &catalog_domain::Entity) -> bool {
    let reference = |text: &str, kind: Option<&str>| {
        catalog_domain::EntityRef::parse_with_defaults(text, kind, "default").ok().map(|parsed| parsed.to_string())
    };
    let template_ref = template.entity_ref().to_string();
    let owner =
        template.spec.get("owner").and_then(serde_json::Value::as_str).and_then(|owner| reference(owner, OWNER_KIND));
    wanted.refs.iter().any(|wanted| reference(wanted, Some("template")).as_deref() == Some(template_ref.as_str()))
        || wanted.owners.iter().any(|wanted| owner.is_some() && reference(wanted, OWNER_KIND) == owner)
        || wanted.tags.iter().any(|tag| template.metadata.tags.iter().any(|own| own.eq_ignore_ascii_case(tag)))
}

/// Conditions on the entities a rule lets a principal read; every one set
/// must hold.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReadConditions {
    /// Entity kinds, e.g. `[component, api]`.
    pub kinds: Vec<String>,
    pub namespaces: Vec<String>,
    /// Owned by the principal (a JWT's subject as a user ref) or by any group
    /// it belongs to, directly or through parent groups, or by a group its
    /// token names in `groups`.
    pub owned_by_principal: bool,
    /// An annotation the entity must carry, e.g. `backstage.io/techdocs-ref`.
    pub has_annotation: Option<String>,
}

/// Why a policy cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("auth.policy rule {index}: {message}")]
pub struct PolicyError {
    index: usize,
    message: String,
}

/// The policy, checked once at startup.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    rules: Vec<(Vec<String>, Vec<Permission>, Option<ReadConditions>)>,
    /// Per rule (same order): what it lets its subjects run.
    templates: Vec<TemplateGrant>,
}

impl Policy {
    pub fn new(rules: &[PolicyRule]) -> Result<Self, PolicyError> {
        let mut checked = Vec::new();
        let mut templates = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            let error = |message: String| PolicyError { index, message };
            if rule.subjects.is_empty() {
                return Err(error("subjects must name at least one subject".into()));
            }
            for subject in &rule.subjects {
                let known = subject == "*"
                    || subject == "anonymous"
                    || ["token:", "sub:", "group:"].iter().any(|prefix| subject.starts_with(prefix));
                if !known {
                    return Err(error(format!(
                        "subject {subject:?} must be token:NAME, sub:SUBJECT, group:NAME, anonymous or *"
                    )));
                }
            }
            let permissions = rule
                .permissions
                .iter()
                .map(|name| Permission::parse(name).ok_or_else(|| error(format!("unknown permission {name:?}"))))
                .collect::<Result<Vec<_>, _>>()?;
            if rule.conditions.is_some() && !permissions.contains(&Permission::EntityRead) {
                return Err(error("conditions apply to entity.read, which the rule does not grant".into()));
            }
            if (rule.templates.is_some() || !rule.actions.is_empty())
                && !permissions.contains(&Permission::TemplateExecute)
            {
                return Err(error(
                    "templates and actions apply to template.execute, which the rule does not grant".into(),
                ));
            }
            checked.push((rule.subjects.clone(), permissions, rule.conditions.clone()));
            templates.push(TemplateGrant { templates: rule.templates.clone(), actions: rule.actions.clone() });
        }
        Ok(Self { rules: checked, templates })
    }

    /// Whether any rule is configured: without rules, scopes alone decide.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    fn rules_for<'a>(
        &'a self,
        principal: &'a Principal,
    ) -> impl Iterator<Item = &'a (Vec<String>, Vec<Permission>, Option<ReadConditions>)> {
        self.rules.iter().filter(move |(subjects, _, _)| subjects.iter().any(|subject| applies(subject, principal)))
    }

    /// Whether a rule grants `permission` to the principal.
    pub fn grants(&self, principal: &Principal, permission: Permission) -> bool {
        self.rules_for(principal)
            .any(|(_, permissions, _)| permissions.contains(&Permission::Admin) || permissions.contains(&permission))
    }

    /// What the principal may run, given that some rule grants it
    /// template.execute: the grants of its rules, or None when one of them
    /// (or an admin rule) has no limits.
    pub fn template_grants(&self, principal: &Principal) -> TemplateGrants {
        let mut grants = Vec::new();
        for ((subjects, permissions, _), grant) in self.rules.iter().zip(&self.templates) {
            if !subjects.iter().any(|subject| applies(subject, principal)) {
                continue;
            }
            if permissions.contains(&Permission::Admin) {
                return TemplateGrants(None);
            }
            if permissions.contains(&Permission::TemplateExecute) {
                if grant.templates.is_none() && grant.actions.is_empty() {
                    return TemplateGrants(None);
                }
                grants.push(grant.clone());
            }
        }
        TemplateGrants(Some(grants))
    }

    /// What the principal may read, given that some rule grants it entity.read.
    pub fn read_filter(&self, principal: &Principal) -> Option<Filter> {
        let mut any = Vec::new();
        for (_, permissions, conditions) in self.rules_for(principal) {
            if !permissions.contains(&Permission::EntityRead) && !permissions.contains(&Permission::Admin) {
                continue;
            }
            match conditions {
                None => return None,
                Some(conditions) => any.push(condition_filter(conditions, principal)),
            }
        }
        Some(Filter::Any(any))
    }
}

fn applies(subject: &str, principal: &Principal) -> bool {
    match principal {
        Principal::Anonymous => subject == "anonymous",
        Principal::Token { name, .. } => subject == "*" || subject.strip_prefix("token:") == Some(name.as_str()),
        Principal::Jwt { subject: sub, groups, .. } => {
            subject == "*"
                || subject.strip_prefix("sub:") == Some(sub.as_str())
                || subject.strip_prefix("group:").is_some_and(|group| groups.iter().any(|own| own == group))
        }
    }
}

fn field(field: FilterField, values: Vec<String>) -> Filter {
    Filter::Field { field, predicate: Predicate::In(values) }
}

fn condition_filter(conditions: &ReadConditions, principal: &Principal) -> Filter {
    let mut all = Vec::new();
    if !conditions.kinds.is_empty() {
        all.push(field(FilterField::Kind, conditions.kinds.clone()));
    }
    if !conditions.namespaces.is_empty() {
        all.push(field(FilterField::Namespace, conditions.namespaces.clone()));
    }
    if let Some(annotation) = &conditions.has_annotation {
        let path = FilterField::Path(format!("metadata.annotations.{annotation}"));
        all.push(Filter::Field { field: path, predicate: Predicate::Exists(true) });
    }
    if conditions.owned_by_principal {
        all.push(match principal {
            Principal::Jwt { subject, groups, .. } => {
                // The subject stands for a user: a `sub` that names another
                // kind (`group:platform`) must not act as that group.
                let user = catalog_domain::EntityRef::parse_with_defaults(subject, Some("User"), "default")
                    .ok()
                    .filter(|user| user.kind() == "user");
                let mut owners: Vec<Filter> =
                    user.map(|user| field(FilterField::OwnedByMember, vec![user.to_string()])).into_iter().collect();
                if !groups.is_empty() {
                    owners.push(field(FilterField::OwnedByTree, groups.clone()));
                }
                Filter::Any(owners)
            }
            // A token or an anonymous caller is nobody's member: owns nothing.
            Principal::Token { .. } | Principal::Anonymous => Filter::Any(Vec::new()),
        });
    }
    Filter::All(all)
}

/// What a request may read: everything, or the entities a filter selects.
#[derive(Clone)]
pub enum ReadScope {
    All,
    Only { filter: Filter, matcher: Arc<EntityMatcher> },
}

/// A read scope that may be replaced while requests use it: a WebSocket's
/// scope is rebuilt whenever its credentials are checked again, so that a
/// subscription follows a principal's changed groups (and the catalog's
/// changed ownership) instead of keeping what held when it connected.
#[derive(Clone)]
pub struct SharedScope(Arc<RwLock<ReadScope>>);

impl SharedScope {
    pub fn new(scope: ReadScope) -> Self {
        Self(Arc::new(RwLock::new(scope)))
    }

    /// The scope now (a cheap clone: its matcher is shared).
    pub fn current(&self) -> ReadScope {
        self.0.read().clone()
    }

    pub fn replace(&self, scope: ReadScope) {
        *self.0.write() = scope;
    }
}

impl ReadScope {
    pub async fn new(catalog: &Catalog, filter: Option<Filter>) -> Result<Self, StoreError> {
        Ok(match filter {
            None => ReadScope::All,
            Some(filter) => {
                let matcher = Arc::new(catalog.entity_matcher(&filter).await?);
                ReadScope::Only { filter, matcher }
            }
        })
    }

    /// `filter` narrowed to what the scope lets through.
    pub fn narrow(&self, filter: Option<Filter>) -> Option<Filter> {
        match (self, filter) {
            (ReadScope::All, filter) => filter,
            (ReadScope::Only { filter: scope, .. }, None) => Some(scope.clone()),
            (ReadScope::Only { filter: scope, .. }, Some(filter)) => Some(Filter::All(vec![scope.clone(), filter])),
        }
    }

    pub fn allows(&self, entity: &StoredEntity) -> bool {
        match self {
            ReadScope::All => true,
            ReadScope::Only { matcher, .. } => matcher.matches(entity),
        }
    }

    /// [`ReadScope::allows`] for an entity that is not stored (one waiting
    /// in the review queue).
    pub fn allows_entity(&self, entity_ref: &catalog_domain::EntityRef, entity: &catalog_domain::Entity) -> bool {
        match self {
            ReadScope::All => true,
            ReadScope::Only { matcher, .. } => matcher.matches_entity(entity_ref, entity),
        }
    }

    pub fn is_restricted(&self) -> bool {
        matches!(self, ReadScope::Only { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(subjects: &[&str], permissions: &[&str], conditions: Option<ReadConditions>) -> PolicyRule {
        PolicyRule {
            subjects: subjects.iter().map(|subject| (*subject).to_owned()).collect(),
            permissions: permissions.iter().map(|permission| (*permission).to_owned()).collect(),
            conditions,
            ..PolicyRule::default()
        }
    }

    fn token(name: &str) -> Principal {
        Principal::Token { id: 1, name: name.into(), scopes: vec![Permission::EntityRead], expires_at: None }
    }

    fn template(name: &str, owner: &str, tags: &[&str]) -> catalog_domain::Entity {
        catalog_domain::validate(&serde_json::json!({
            "apiVersion": "scaffolder.backstage.io/v1beta3", "kind": "Template",
            "metadata": {"name": name, "tags": tags},
            "spec": {"type": "service", "owner": owner, "steps": []},
        }))
        .unwrap()
    }

    #[test]
    fn template_rules_limit_which_templates_and_actions_a_principal_runs() {
        let platform = TemplateConditions { owners: vec!["team-platform".into()], ..Default::default() };
        let docs =
            TemplateConditions { tags: vec!["docs".into()], refs: vec!["handbook".into()], ..Default::default() };
        let policy = Policy::new(&[
            PolicyRule {
                templates: Some(platform),
                actions: vec!["fetch:*".into(), "publish:github".into()],
                ..rule(&["token:dev"], &["entity.read", "template.execute"], None)
            },
            PolicyRule { templates: Some(docs), ..rule(&["token:dev"], &["template.execute"], None) },
            rule(&["token:lead"], &["entity.read", "template.execute"], None),
        ])
        .unwrap();
        let dev = policy.template_grants(&token("dev"));
        let service = template("rust-service", "group:default/team-platform", &[]);
        assert_eq!(dev.allows(&service, &["fetch:template", "publish:github"]), Ok(()));
        let refused = dev.allows(&service, &["fetch:template", "github:webhook"]).unwrap_err().to_string();
        assert!(refused.contains("github:webhook") && !refused.contains("fetch:template"), "{refused}");
        let other = template("other", "team-billing", &["docs"]);
        assert_eq!(dev.allows(&other, &["github:webhook"]), Ok(()), "a tag rule without action limits");
        let handbook = template("handbook", "team-billing", &[]);
        assert_eq!(dev.allows(&handbook, &[]), Ok(()), "listed by ref");
        let stranger = template("stranger", "team-billing", &[]);
        assert!(dev.allows(&stranger, &[]).unwrap_err().to_string().contains("template:default/stranger"));
        assert_eq!(policy.template_grants(&token("lead")), TemplateGrants(None), "a rule without limits");
        assert_eq!(policy.template_grants(&token("nobody")), TemplateGrants(Some(Vec::new())));

        let misplaced = PolicyRule { actions: vec!["fetch:*".into()], ..rule(&["*"], &["entity.read"], None) };
        assert!(Policy::new(&[misplaced]).unwrap_err().to_string().contains("template.execute"));
    }

    #[test]
    fn rules_match_their_subjects_and_union_their_conditions() {
        let components = ReadConditions { kinds: vec!["component".into()], ..Default::default() };
        let apis = ReadConditions { kinds: vec!["api".into()], ..Default::default() };
        let policy = Policy::new(&[
            rule(&["token:portal"], &["entity.read"], Some(components)),
            rule(&["token:portal", "token:ops"], &["entity.read"], Some(apis)),
            rule(&["token:admin"], &["admin"], None),
        ])
        .unwrap();
        assert!(policy.grants(&token("portal"), Permission::EntityRead));
        assert!(!policy.grants(&token("portal"), Permission::EntityRefresh));
        assert!(!policy.grants(&token("stranger"), Permission::EntityRead));
        assert!(policy.grants(&token("admin"), Permission::EntityDelete));
        assert_eq!(policy.read_filter(&token("admin")), None, "an unconditional rule reads everything");
        let Some(Filter::Any(conditions)) = policy.read_filter(&token("portal")) else { panic!("a filter") };
        assert_eq!(conditions.len(), 2, "one per matching rule");
        assert!(!policy.grants(&Principal::Anonymous, Permission::EntityRead));
    }

    #[test]
    fn bad_rules_are_refused_naming_the_rule() {
        let error = Policy::new(&[rule(&["team-a"], &["entity.read"], None)]).unwrap_err().to_string();
        assert!(error.contains("rule 0") && error.contains("team-a"), "{error}");
        let error = Policy::new(&[rule(&["*"], &["entity.write"], None)]).unwrap_err().to_string();
        assert!(error.contains("entity.write"), "{error}");
        let conditions = Some(ReadConditions::default());
        let error = Policy::new(&[rule(&["*"], &["entity.refresh"], conditions)]).unwrap_err().to_string();
        assert!(error.contains("entity.read"), "{error}");
    }
}
