//! Admission policies as code: YAML files of rules an entity must meet to
//! enter the catalog, checked when a provider's snapshot is applied. Each
//! policy applies to some providers, location patterns and kinds, in one
//! of two modes: `warn` (the entity is admitted and carries the violation)
//! or `enforce` (it is refused; a known entity keeps its last good
//! version). Rules are CEL like a scorecard's, or built-ins written as data
//! (required annotations and labels, an owner that resolves, kebab-case
//! names, allowed values) that compile to CEL, so one evaluator and one
//! explanation serve both.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use catalog_domain::names::MetadataKey;
use serde::{Deserialize, Serialize};

use crate::rule::{Evaluation, Reads, Rule, RuleOutcome};
use crate::scorecard::{Located, ScorecardError, located, read_yaml};
use crate::sources::{SourceProblem, read_files};
use crate::subject::{Relation, Subject};

/// What a policy does to an entity that breaks one of its rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    /// Admitted, carrying the violation.
    Warn,
    /// Refused with an error naming the rule.
    Enforce,
}

/// Which entities a policy checks: every list that is set must hold the
/// entity's value. Providers are keys (`file`, `github-2`), locations are
/// glob patterns over the location key (`*/services/**`), kinds compare
/// ignoring case. Empty: all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyScope {
    #[serde(default)]
    pub providers: Vec<String>,
    #[serde(default)]
    pub locations: Vec<String>,
    #[serde(default)]
    pub kinds: Vec<String>,
}

/// A value list a field's value must be one of.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AllowedValues {
    /// A dotted path under the entity (`spec.lifecycle`).
    pub field: String,
    pub values: Vec<String>,
}

/// One rule of a policy, as written: an `expression`, or exactly one
/// built-in.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyRuleDefinition {
    pub id: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub expression: Option<String>,
    #[serde(default)]
    pub required_annotations: Vec<String>,
    #[serde(default)]
    pub required_labels: Vec<String>,
    /// `spec.owner` resolves to a Group or User of the catalog (or of the
    /// same snapshot).
    #[serde(default)]
    pub owner_resolves: bool,
    /// `metadata.name` is lower-case words joined by single dashes.
    #[serde(default)]
    pub kebab_case_name: bool,
    #[serde(default)]
    pub allowed_values: Option<AllowedValues>,
}

/// Which of a policy's entities wait in the review queue until approved.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Review {
    /// An entity the catalog does not hold yet.
    #[serde(default)]
    pub new_entities: bool,
    /// A known entity whose `spec.owner` changes.
    #[serde(default)]
    pub owner_changes: bool,
    /// Members of the group the entity names as its owner may decide too,
    /// besides holders of the `entity.approve` permission.
    #[serde(default)]
    pub owner_members_may_approve: bool,
}

/// A policy file as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PolicyFile {
    id: String,
    title: String,
    #[serde(default)]
    description: Option<String>,
    /// Required with rules; a policy that only reviews has none.
    #[serde(default)]
    mode: Option<Mode>,
    #[serde(default)]
    applies_to: PolicyScope,
    #[serde(default)]
    rules: Vec<PolicyRuleDefinition>,
    #[serde(default)]
    review: Option<Review>,
    /// The share (0 to 1) of a provider's snapshot this policy may refuse
    /// before it is held back; the configured default when unset.
    #[serde(default)]
    max_refused_share: Option<f64>,
}

/// A compiled rule of a policy.
#[derive(Clone, Debug)]
pub struct PolicyRule {
    pub id: String,
    pub title: String,
    /// The CEL it was written as or compiled to.
    pub rule: Rule,
}

/// A checked, compiled admission policy.
#[derive(Clone, Debug)]
pub struct Policy {
    pub id: String,
    pub title: String,
    pub description: Option<String>,
    pub mode: Mode,
    pub applies_to: PolicyScope,
    pub max_refused_share: Option<f64>,
    pub rules: Vec<PolicyRule>,
    /// What waits for review; None: nothing.
    pub review: Option<Review>,
    locations: Vec<glob::Pattern>,
    reads: Reads,
}

/// The relations an admission rule may read: those a snapshot entity states
/// itself. The others (dependents, members) are the catalog's, known only
/// once entities are stored; a scorecard reads them.
const ADMISSION_RELATIONS: [Relation; 2] = [Relation::Owner, Relation::System];

/// The name pattern `kebabCaseName` checks.
const KEBAB_CASE: &str = "^[a-z0-9]+(-[a-z0-9]+)*$";

impl Policy {
    /// Reads and checks a policy file: YAML, the shape, every rule (an
    /// expression, or one built-in), what its rules may read, the patterns
    /// and the share; every problem is reported with where it is.
    pub fn parse(yaml: &str) -> Result<Policy, ScorecardError> {
        let file: PolicyFile = read_yaml(yaml)?;
        let mut problems = Vec::new();
        if file.id.trim().is_empty() {
            problems.push(Located::at("id".to_owned(), "must not be empty".to_owned()));
        }
        if let Some(share) = file.max_refused_share
            && !(0.0..=1.0).contains(&share)
        {
            problems.push(Located::at("maxRefusedShare".to_owned(), format!("{share} is not between 0 and 1")));
        }
        let mut locations = Vec::new();
        for (index, pattern) in file.applies_to.locations.iter().enumerate() {
            match glob::Pattern::new(pattern) {
                Ok(pattern) => locations.push(pattern),
                Err(error) => problems.push(Located::at(
                    format!("appliesTo.locations[{index}]"),
                    format!("{pattern:?} is not a glob pattern: {error}"),
                )),
            }
        }
        let reviews = file.review.as_ref().is_some_and(|review| review.new_entities || review.owner_changes);
        if file.rules.is_empty() && !reviews {
            problems.push(Located::at(
                "rules".to_owned(),
                "a policy needs at least one rule, or a review of newEntities or ownerChanges".to_owned(),
            ));
        }
        if !file.rules.is_empty() && file.mode.is_none() {
            problems
                .push(Located::at("mode".to_owned(), "a policy with rules needs a mode: warn or enforce".to_owned()));
        }
        if file.review.is_some() && !reviews {
            problems.push(Located::at(
                "review".to_owned(),
                "a review needs newEntities or ownerChanges (or both) set to true".to_owned(),
            ));
        }
        let mut ids = BTreeSet::new();
        let mut rules = Vec::new();
        for (index, definition) in file.rules.iter().enumerate() {
            let at = format!("rules[{index}]");
            if !ids.insert(definition.id.clone()) {
                problems
                    .push(Located::at(format!("{at}.id"), format!("the rule id {:?} is used twice", definition.id)));
            }
            let (source, written_at) = match expression_of(definition) {
                Ok(expression) => expression,
                Err(message) => {
                    problems.push(Located::at(at, message));
                    continue;
                }
            };
            match Rule::compile(&source) {
                Ok(rule) => {
                    if let Some(message) = unreadable(rule.reads()) {
                        problems.push(Located::at(format!("{at}.{written_at}"), message));
                    }
                    let title = definition.title.clone().unwrap_or_else(|| definition.id.clone());
                    rules.push(PolicyRule { id: definition.id.clone(), title, rule });
                }
                Err(found) => problems.extend(located(&format!("{at}.{written_at}"), found)),
            }
        }
        if !problems.is_empty() {
            return Err(ScorecardError { problems });
        }
        let reads = Reads::union(rules.iter().map(|rule| rule.rule.reads()));
        Ok(Policy {
            id: file.id,
            title: file.title,
            description: file.description,
            mode: file.mode.unwrap_or(Mode::Warn),
            applies_to: file.applies_to,
            max_refused_share: file.max_refused_share,
            rules,
            review: file.review.filter(|review| review.new_entities || review.owner_changes),
            locations,
            reads,
        })
    }

    /// What any of its rules reads (of relations: owner and system at most).
    pub fn reads(&self) -> &Reads {
        &self.reads
    }

    /// Whether it checks an entity of `kind` from `provider`, read from `location`.
    pub fn applies(&self, provider: &str, location: Option<&str>, kind: &str) -> bool {
        let scope = &self.applies_to;
        (scope.providers.is_empty() || scope.providers.iter().any(|key| key == provider))
            && (scope.kinds.is_empty() || scope.kinds.iter().any(|allowed| allowed.eq_ignore_ascii_case(kind)))
            && (self.locations.is_empty()
                || location.is_some_and(|location| self.locations.iter().any(|pattern| pattern.matches(location))))
    }

    /// The rules `subject` breaks, each with why: a rule that fails, or
    /// cannot be evaluated for it (an admission check fails closed).
    pub fn violations(&self, subject: &Subject) -> Vec<(&PolicyRule, RuleOutcome)> {
        self.violations_in(&Evaluation::new(subject, &self.reads))
    }

    /// [`Policy::violations`] in an evaluation prepared for several
    /// policies' rules (it must hold what this policy reads): the subject
    /// is converted to CEL once for all of them.
    pub fn violations_in(&self, evaluation: &Evaluation<'_>) -> Vec<(&PolicyRule, RuleOutcome)> {
        self.rules
            .iter()
            .map(|rule| (rule, rule.rule.evaluate_in(evaluation)))
            .filter(|(_, outcome)| outcome.status != crate::rule::RuleStatus::Pass)
            .collect()
    }
}

/// The policy files `sources` name, read and parsed: a refused file keeps
/// the version `previous` held for its path and is reported (see
/// [`crate::read_sources`], which reads scorecards the same way).
pub fn read_policies(
    sources: &[PathBuf],
    previous: &BTreeMap<PathBuf, Policy>,
) -> (BTreeMap<PathBuf, Policy>, Vec<SourceProblem>) {
    read_files(
        sources,
        previous,
        |text| Policy::parse(text).map_err(|error| error.to_string()),
        |policy| policy.id.as_str(),
        "policy",
    )
}

/// The CEL of a rule definition and the field it was written in (for
/// locating problems); an error when it sets no rule or more than one.
fn expression_of(definition: &PolicyRuleDefinition) -> Result<(String, &'static str), String> {
    let mut written: Vec<(String, &'static str)> = Vec::new();
    if let Some(expression) = &definition.expression {
        written.push((expression.clone(), "expression"));
    }
    if !definition.required_annotations.is_empty() {
        written.push((contains_all("annotations", &definition.required_annotations)?, "requiredAnnotations"));
    }
    if !definition.required_labels.is_empty() {
        written.push((contains_all("labels", &definition.required_labels)?, "requiredLabels"));
    }
    if definition.owner_resolves {
        written.push((
            "owner() != null && owner().kind in ['Group', 'User', 'group', 'user']".to_owned(),
            "ownerResolves",
        ));
    }
    if definition.kebab_case_name {
        written.push((format!("entity.metadata.name.matches('{KEBAB_CASE}')"), "kebabCaseName"));
    }
    if let Some(allowed) = &definition.allowed_values {
        written.push((one_of(allowed)?, "allowedValues"));
    }
    match written.len() {
        1 => Ok(written.remove(0)),
        0 => Err("a rule needs an expression or one built-in (requiredAnnotations, requiredLabels, \
                  ownerResolves, kebabCaseName, allowedValues)"
            .to_owned()),
        _ => Err(format!(
            "a rule has one expression or built-in, and this one has {}",
            written.iter().map(|(_, field)| *field).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// `'a' in entity.metadata.MAP && ...`: every key present.
fn contains_all(map: &str, keys: &[String]) -> Result<String, String> {
    let checked = keys
        .iter()
        .map(|key| {
            MetadataKey::parse(key)
                .map(|_| format!("'{key}' in entity.metadata.{map}"))
                .map_err(|error| format!("{key:?} is not a {map} key: {error}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(checked.join(" && "))
}

/// `entity.FIELD in [...]` for entities that have the field.
fn one_of(allowed: &AllowedValues) -> Result<String, String> {
    let segments: Vec<&str> = allowed.field.split('.').collect();
    let identifier = |segment: &&str| {
        segment.chars().next().is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
            && segment.chars().all(|char| char.is_ascii_alphanumeric() || char == '_')
    };
    if !segments.iter().all(identifier) {
        return Err(format!("{:?} is not a dotted path of names (spec.lifecycle)", allowed.field));
    }
    if allowed.values.is_empty() {
        return Err("allowedValues needs at least one value".to_owned());
    }
    if let Some(bad) = allowed.values.iter().find(|value| value.contains(['\'', '\\'])) {
        return Err(format!("{bad:?}: an allowed value cannot hold a quote or a backslash"));
    }
    let values: Vec<String> = allowed.values.iter().map(|value| format!("'{value}'")).collect();
    let path = format!("entity.{}", allowed.field);
    // Absent, there is nothing to check: `has` on each level keeps a
    // missing parent from being an error.
    let present: Vec<String> =
        (1..=segments.len()).map(|depth| format!("has(entity.{})", segments[..depth].join("."))).collect();
    Ok(format!("!({}) || {path} in [{}]", present.join(" && "), values.join(", ")))
}

/// Why a rule reading `reads` cannot be an admission rule, if it cannot.
fn unreadable(reads: &Reads) -> Option<String> {
    if let Some(relation) = reads.relations.iter().find(|relation| !ADMISSION_RELATIONS.contains(relation)) {
        return Some(format!(
            "an admission rule can read owner() and system(), not {}(): what else relates to an entity is \
             known once it is stored (use a scorecard)",
            relation.function()
        ));
    }
    if !reads.nested.is_empty() {
        return Some("an admission rule cannot read a related entity's relations (use a scorecard)".to_owned());
    }
    if !reads.facts.is_empty() {
        return Some("an admission rule cannot read facts: they are observed after the entity is stored".to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;

    use super::*;
    use crate::rule::RuleStatus;

    fn component(name: &str, annotations: serde_json::Value, spec: serde_json::Value) -> Subject {
        Subject::new(
            json!({"apiVersion": "backstage.io/v1alpha1", "kind": "Component",
                   "metadata": {"name": name, "annotations": annotations}, "spec": spec}),
            Utc::now(),
        )
    }

    const POLICY: &str = r#"
id: basics
title: Catalog basics
mode: enforce
appliesTo: { providers: [file], locations: ["*/services/**"], kinds: [component] }
rules:
  - id: on-call
    requiredAnnotations: [pagerduty.com/service-id]
  - id: owner
    ownerResolves: true
  - id: kebab
    kebabCaseName: true
  - id: lifecycle
    allowedValues: { field: spec.lifecycle, values: [production, experimental] }
"#;

    #[test]
    fn built_in_rules_say_which_rule_failed_and_where() {
        let policy = Policy::parse(POLICY).unwrap();
        let good = component(
            "payments-api",
            json!({"pagerduty.com/service-id": "P1"}),
            json!({"lifecycle": "production", "owner": "team-a"}),
        )
        .with_related(Relation::Owner, vec![json!({"kind": "Group", "metadata": {"name": "team-a"}})]);
        assert!(policy.violations(&good).is_empty(), "{:?}", policy.violations(&good));

        let bad = component("Payments_API", json!({}), json!({"lifecycle": "retired", "owner": "nobody"}));
        let found: Vec<(&str, RuleStatus, Option<String>)> = policy
            .violations(&bad)
            .into_iter()
            .map(|(rule, outcome)| (rule.id.as_str(), outcome.status, outcome.explanation.and_then(|why| why.path)))
            .collect();
        assert_eq!(
            found,
            [
                ("on-call", RuleStatus::Fail, Some("metadata.annotations.pagerduty.com/service-id".to_owned())),
                ("owner", RuleStatus::Fail, None),
                ("kebab", RuleStatus::Fail, Some("metadata.name".to_owned())),
                ("lifecycle", RuleStatus::Fail, Some("spec.lifecycle".to_owned())),
            ]
        );
        let lifecycle = &policy.violations(&bad)[3].1;
        let explanation = lifecycle.explanation.as_ref().unwrap();
        assert_eq!(
            (explanation.expected.as_str(), &explanation.actual),
            (r#"one of ["production","experimental"]"#, &json!("retired"))
        );
        // A kind with no lifecycle has nothing to check.
        let group = Subject::new(json!({"kind": "Group", "metadata": {"name": "team-a"}, "spec": {}}), Utc::now());
        let lifecycle = Policy::parse(&POLICY.replace("kinds: [component]", "kinds: []")).unwrap();
        let failed: Vec<&str> = lifecycle.violations(&group).into_iter().map(|(rule, _)| rule.id.as_str()).collect();
        assert_eq!(failed, ["on-call", "owner"]);
    }

    #[test]
    fn a_policy_applies_by_provider_location_pattern_and_kind() {
        let policy = Policy::parse(POLICY).unwrap();
        assert!(policy.applies("file", Some("repo/services/payments/catalog-info.yaml"), "Component"));
        assert!(!policy.applies("github", Some("repo/services/payments/catalog-info.yaml"), "Component"));
        assert!(!policy.applies("file", Some("repo/libraries/catalog-info.yaml"), "Component"));
        assert!(!policy.applies("file", Some("repo/services/payments/catalog-info.yaml"), "API"));
        assert!(!policy.applies("file", None, "Component"));
    }

    #[test]
    fn a_review_policy_needs_no_rules_but_something_to_review() {
        let review = Policy::parse(
            "id: review\ntitle: Review\nappliesTo: { providers: [github] }\n\
             review: { newEntities: true, ownerMembersMayApprove: true }\n",
        )
        .unwrap();
        assert_eq!(
            review.review,
            Some(Review { new_entities: true, owner_changes: false, owner_members_may_approve: true })
        );
        assert!(review.rules.is_empty());

        let problems = |yaml: &str| -> Vec<String> {
            Policy::parse(yaml).unwrap_err().problems.iter().map(|problem| problem.at.clone()).collect()
        };
        // A review of nothing, and rules without a mode.
        assert_eq!(problems("id: r\ntitle: R\nreview: { ownerMembersMayApprove: true }\n"), ["rules", "review"]);
        assert_eq!(problems("id: r\ntitle: R\nrules: [{id: a, kebabCaseName: true}]\n"), ["mode"]);
        // Rules and a review together: the rules keep their mode.
        let both = Policy::parse(&format!("{POLICY}review: {{ ownerChanges: true }}\n")).unwrap();
        assert_eq!((both.mode, both.review.map(|review| review.owner_changes)), (Mode::Enforce, Some(true)));
    }

    #[test]
    fn a_broken_policy_is_refused_with_every_problem_located() {
        let broken = r#"
id: broken
title: Broken
mode: enforce
appliesTo: { locations: ["[unclosed"] }
maxRefusedShare: 2
rules:
  - id: two
    kebabCaseName: true
    ownerResolves: true
  - id: none
  - id: members
    expression: "members(owner()).size() > 0"
  - id: dependents
    expression: "dependents().size() == 0"
  - id: fact
    expression: "fact('github.archived') == false"
  - id: syntax
    expression: "entity.metadata.name =="
  - id: annotation
    requiredAnnotations: ["not a key!"]
"#;
        let problems: Vec<String> =
            Policy::parse(broken).unwrap_err().problems.iter().map(|problem| problem.at.clone()).collect();
        assert_eq!(
            problems,
            [
                "maxRefusedShare",
                "appliesTo.locations[0]",
                "rules[0]",
                "rules[1]",
                "rules[2].expression",
                "rules[3].expression",
                "rules[4].expression",
                "rules[5].expression",
                "rules[6]",
            ]
        );
        let unknown_mode = "id: x\ntitle: X\nmode: block\nrules: [{id: a, kebabCaseName: true}]\n";
        let message = Policy::parse(unknown_mode).unwrap_err().to_string();
        assert!(message.contains("block"), "{message}");
    }
}
