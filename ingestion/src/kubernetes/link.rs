//! Which workloads belong to which catalog entity, decided by the entity's
//! annotations as Backstage's Kubernetes plugin reads them:
//! `backstage.io/kubernetes-id` (matched against the workloads' label of
//! the same name), `backstage.io/kubernetes-label-selector` (a Kubernetes
//! label selector), narrowed by `backstage.io/kubernetes-namespace` and
//! `backstage.io/kubernetes-cluster` when those are set. The same rule
//! decides both whether the provider leaves a workload to an entity that
//! claims it and which workloads the `kubernetes` GraphQL field shows.

use std::collections::BTreeMap;

use super::workload::Workload;

pub const KUBERNETES_ID: &str = "backstage.io/kubernetes-id";
pub const LABEL_SELECTOR: &str = "backstage.io/kubernetes-label-selector";
pub const NAMESPACE: &str = "backstage.io/kubernetes-namespace";
pub const CLUSTER: &str = "backstage.io/kubernetes-cluster";

/// Every annotation a link reads.
pub const LINK_ANNOTATIONS: [&str; 4] = [KUBERNETES_ID, LABEL_SELECTOR, NAMESPACE, CLUSTER];

/// What an entity's annotations say about its workloads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    id: Option<String>,
    selector: Option<Selector>,
    namespace: Option<String>,
    cluster: Option<String>,
}

impl Link {
    /// The link an entity's annotations describe; None when they name no
    /// workload (no id, no valid selector).
    pub fn from_annotations<'a>(annotations: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<Link> {
        let mut link = Link { id: None, selector: None, namespace: None, cluster: None };
        for (key, value) in annotations {
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            match key {
                KUBERNETES_ID => link.id = Some(value.to_owned()),
                // An unparsable selector links to nothing rather than to
                // everything, and so does one of negations only (`!x`,
                // `a!=b`): it would take over nearly every workload.
                LABEL_SELECTOR => link.selector = Selector::parse(value).ok().filter(Selector::has_positive),
                NAMESPACE => link.namespace = Some(value.to_owned()),
                CLUSTER => link.cluster = Some(value.to_owned()),
                _ => {}
            }
        }
        (link.id.is_some() || link.selector.is_some()).then_some(link)
    }

    /// Whether `workload` belongs to the entity.
    pub fn matches(&self, workload: &Workload) -> bool {
        if self.namespace.as_ref().is_some_and(|namespace| *namespace != workload.namespace)
            || self.cluster.as_ref().is_some_and(|cluster| *cluster != workload.cluster)
        {
            return false;
        }
        let by_id = self.id.as_ref().is_some_and(|id| match workload.labels.get(KUBERNETES_ID) {
            Some(label) => label == id,
            // An unlabelled workload is known by its name, but only where
            // namespace and cluster pin it down: this is how the provider's
            // own entities find their workload.
            None => *id == workload.name && self.namespace.is_some() && self.cluster.is_some(),
        });
        by_id || self.selector.as_ref().is_some_and(|selector| selector.matches(&workload.labels))
    }
}

/// A Kubernetes label selector in its string form: `app=web`,
/// `tier!=cache`, `env in (prod,staging)`, `env notin (dev)`, `canary`,
/// `!canary`, comma-separated and all required.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector(Vec<Requirement>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// Why a selector's text cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("{text:?}: an empty requirement")]
    EmptyRequirement { text: String },
    #[error("{text:?}: cannot read {part:?}")]
    Unreadable { text: String, part: String },
}

impl Selector {
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        let mut requirements = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                return Err(SelectorError::EmptyRequirement { text: text.to_owned() });
            }
            let requirement = Requirement::parse(part)
                .ok_or_else(|| SelectorError::Unreadable { text: text.to_owned(), part: part.to_owned() })?;
            requirements.push(requirement);
        }
        Ok(Selector(requirements))
    }

    /// Whether some requirement asks for a label to be there.
    pub fn has_positive(&self) -> bool {
        self.0.iter().any(|requirement| {
            matches!(requirement, Requirement::Equals(..) | Requirement::In(..) | Requirement::Exists(_))
        })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|requirement| match requirement {
            Requirement::Equals(key, value) => labels.get(key) == Some(value),
            Requirement::NotEquals(key, value) => labels.get(key) != Some(value),
            Requirement::In(key, values) => labels.get(key).is_some_and(|label| values.contains(label)),
            Requirement::NotIn(key, values) => labels.get(key).is_none_or(|label| !values.contains(label)),
            Requirement::Exists(key) => labels.contains_key(key),
            Requirement::NotExists(key) => !labels.contains_key(key),
        })
    }
}

impl Requirement {
    fn parse(part: &str) -> Option<Requirement> {
        let key_ok = |key: &str| {
            !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        };
        if let Some(key) = part.strip_prefix('!') {
            return key_ok(key.trim()).then(|| Requirement::NotExists(key.trim().to_owned()));
        }
        if let Some((key, value)) = part.split_once("!=") {
            return key_ok(key.trim()).then(|| Requirement::NotEquals(key.trim().to_owned(), value.trim().to_owned()));
        }
        if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
            return key_ok(key.trim()).then(|| Requirement::Equals(key.trim().to_owned(), value.trim().to_owned()));
        }
        if let Some(open) = part.find('(') {
            let (head, rest) = part.split_at(open);
            let values: Vec<String> = rest
                .strip_prefix('(')?
                .strip_suffix(')')?
                .split(',')
                .map(|value| value.trim().to_owned())
                .filter(|value| !value.is_empty())
                .collect();
            let mut words = head.split_whitespace();
            let (key, operator) = (words.next()?, words.next()?);
            if words.next().is_some() || !key_ok(key) || values.is_empty() {
                return None;
            }
            return match operator {
                "in" => Some(Requirement::In(key.to_owned(), values)),
                "notin" => Some(Requirement::NotIn(key.to_owned(), values)),
                _ => None,
            };
        }
        key_ok(part).then(|| Requirement::Exists(part.to_owned()))
    }
}

/// Splits at commas outside parentheses (`a in (x,y),b` is two parts).
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (at, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn workload(name: &str, namespace: &str, pairs: &[(&str, &str)]) -> Workload {
        Workload::for_tests("prod", namespace, name, pairs)
    }

    #[test]
    fn selectors_follow_kubernetes_semantics() {
        let selector = Selector::parse("app=web, tier!=cache,env in (prod, staging),!canary,team").unwrap();
        assert!(selector.matches(&labels(&[("app", "web"), ("env", "prod"), ("team", "a")])));
        assert!(!selector.matches(&labels(&[("app", "web"), ("env", "dev"), ("team", "a")])));
        assert!(!selector.matches(&labels(&[("app", "web"), ("env", "prod"), ("team", "a"), ("canary", "")])));
        assert!(!selector.matches(&labels(&[("app", "web"), ("env", "prod"), ("team", "a"), ("tier", "cache")])));
        assert!(!selector.matches(&labels(&[("app", "web"), ("env", "prod")])));
        let notin = Selector::parse("env notin (dev,test)").unwrap();
        assert!(notin.matches(&labels(&[])));
        assert!(!notin.matches(&labels(&[("env", "test")])));
        for bad in ["", "app=web,", "env in ()", "env within (a)", "a b", "bad key=1"] {
            assert!(Selector::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn a_link_matches_by_label_or_selector_within_its_namespace_and_cluster() {
        let by_id = Link::from_annotations([(KUBERNETES_ID, "checkout")]).unwrap();
        assert!(by_id.matches(&workload("anything", "shop", &[(KUBERNETES_ID, "checkout")])));
        assert!(!by_id.matches(&workload("checkout", "shop", &[])), "an unpinned id never matches by name");
        let pinned =
            Link::from_annotations([(KUBERNETES_ID, "checkout"), (NAMESPACE, "shop"), (CLUSTER, "prod")]).unwrap();
        assert!(pinned.matches(&workload("checkout", "shop", &[])));
        assert!(!pinned.matches(&workload("checkout", "shop", &[(KUBERNETES_ID, "other")])));
        assert!(!pinned.matches(&workload("checkout", "shop-2", &[])));
        let selector = Link::from_annotations([(LABEL_SELECTOR, "app=cart"), (NAMESPACE, "shop")]).unwrap();
        assert!(selector.matches(&workload("cart", "shop", &[("app", "cart")])));
        assert!(!selector.matches(&workload("cart", "other", &[("app", "cart")])));
        assert_eq!(Link::from_annotations([(LABEL_SELECTOR, "in (")]), None, "a broken selector links nothing");
        assert_eq!(Link::from_annotations([(NAMESPACE, "shop")]), None);
        assert_eq!(Link::from_annotations([(LABEL_SELECTOR, "!canary,tier!=cache")]), None, "negations claim nothing");
    }
}
