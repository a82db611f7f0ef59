//! The filter vocabulary: a tree of comparisons on entity fields, composed
//! with all/any/not, and the form typed filter values take. The SQL path
//! (`query.rs`), the facet index and the matcher all evaluate it.

use catalog_domain::EntityRef;

/// A filter over entities: comparisons on a field, composed with all/any/not.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    All(Vec<Filter>),
    Any(Vec<Filter>),
    Not(Box<Filter>),
    Field { field: FilterField, predicate: Predicate },
}

/// What a field comparison tests.
#[derive(Clone, Debug, PartialEq)]
pub enum Predicate {
    /// Equal to one of the values (one value: equality).
    In(Vec<String>),
    /// The field is present (true) or absent (false).
    Exists(bool),
}

/// A filterable field. The common ones are typed columns; any other dotted path
/// (`metadata.labels.x`, `spec.profile.email`) goes through the facet index.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FilterField {
    Kind,
    Namespace,
    Name,
    /// Values are entity refs; partial refs default to kind Group.
    Owner,
    Lifecycle,
    Type,
    /// Values are entity refs; partial refs default to kind System.
    System,
    Tag,
    /// Values are group refs: owned by the group or by any group under it
    /// (children, transitively). Partial refs default to kind Group.
    OwnedByTree,
    /// Values are user refs: owned by the user or by any group the user is a
    /// member of, directly or through parent groups. Partial refs default to kind User.
    OwnedByMember,
    /// `scores.SCORECARD.level`: the entity's level under a scorecard (the
    /// empty string: below its first level); exists: the scorecard applies.
    /// Current results only: not in `asOf` pages, read policies or the
    /// change stream's filters.
    ScoreLevel(String),
    /// `scores.SCORECARD.failing`: the ids of the scorecard's rules the
    /// entity does not pass and no exemption covers; exists: any.
    FailingRule(String),
    Path(String),
}

impl FilterField {
    /// The field for a dotted key as users write it.
    pub fn from_key(key: &str) -> FilterField {
        match key {
            "kind" => FilterField::Kind,
            "namespace" | "metadata.namespace" => FilterField::Namespace,
            "name" | "metadata.name" => FilterField::Name,
            "owner" | "spec.owner" => FilterField::Owner,
            "lifecycle" | "spec.lifecycle" => FilterField::Lifecycle,
            "type" | "spec.type" => FilterField::Type,
            "system" | "spec.system" => FilterField::System,
            "tags" | "tag" | "metadata.tags" => FilterField::Tag,
            "ownedByTree" => FilterField::OwnedByTree,
            "ownedByMember" => FilterField::OwnedByMember,
            STALE_KEY => FilterField::FailingRule(STALENESS_SCORECARD.to_owned()),
            other => {
                let score = other.strip_prefix(SCORES_PREFIX);
                if let Some(scorecard) = score.and_then(|rest| rest.strip_suffix(LEVEL_SUFFIX)) {
                    return FilterField::ScoreLevel(scorecard.to_owned());
                }
                if let Some(scorecard) = score.and_then(|rest| rest.strip_suffix(FAILING_SUFFIX)) {
                    return FilterField::FailingRule(scorecard.to_owned());
                }
                FilterField::Path(other.to_owned())
            }
        }
    }

    /// The key of this field in the facet index.
    pub fn facet_key(&self) -> String {
        match self {
            FilterField::Kind => "kind".into(),
            FilterField::Namespace => "metadata.namespace".into(),
            FilterField::Name => "metadata.name".into(),
            FilterField::Owner | FilterField::OwnedByTree | FilterField::OwnedByMember => "spec.owner".into(),
            FilterField::Lifecycle => "spec.lifecycle".into(),
            FilterField::Type => "spec.type".into(),
            FilterField::System => "spec.system".into(),
            FilterField::Tag => "metadata.tags".into(),
            FilterField::ScoreLevel(scorecard) => format!("{SCORES_PREFIX}{scorecard}{LEVEL_SUFFIX}"),
            FilterField::FailingRule(scorecard) => format!("{SCORES_PREFIX}{scorecard}{FAILING_SUFFIX}"),
            FilterField::Path(path) => path.clone(),
        }
    }

    /// The scorecard a governance field is about.
    pub(crate) fn scorecard(&self) -> Option<&str> {
        match self {
            FilterField::ScoreLevel(scorecard) | FilterField::FailingRule(scorecard) => Some(scorecard),
            _ => None,
        }
    }
}

/// The id of the governance crate's built-in staleness scorecard, whose
/// failing rules are an entity's reasons to be stale.
pub const STALENESS_SCORECARD: &str = "staleness";
/// `stale`: the staleness scorecard's failing rules (`exists: true`: stale
/// for any reason; `equals: unchanged`: for that one).
const STALE_KEY: &str = "stale";

/// Filter and facet keys of governance results: `scores.SCORECARD.level`
/// and `scores.SCORECARD.failing` (an entity path never starts with `scores`).
const SCORES_PREFIX: &str = "scores.";
const LEVEL_SUFFIX: &str = ".level";
const FAILING_SUFFIX: &str = ".failing";

impl Filter {
    /// Whether a comparison anywhere in it reads governance results, which
    /// only SQL answers.
    pub(crate) fn reads_scores(&self) -> bool {
        match self {
            Filter::All(filters) | Filter::Any(filters) => filters.iter().any(Filter::reads_scores),
            Filter::Not(filter) => filter.reads_scores(),
            Filter::Field { field, .. } => field.scorecard().is_some(),
        }
    }
}

/// Filter values as the typed columns hold them: lower-cased, and refs
/// completed with the field's default kind and the default namespace.
pub(crate) fn typed_values(values: &[String], default_kind: Option<&str>) -> Vec<String> {
    values
        .iter()
        .map(|value| match default_kind {
            Some(default_kind) => {
                EntityRef::parse_with_defaults(value, Some(default_kind), catalog_domain::entity_ref::DEFAULT_NAMESPACE)
                    .map(|entity_ref| entity_ref.to_string())
                    .unwrap_or_else(|_| value.to_lowercase())
            }
            None => value.to_lowercase(),
        })
        .collect()
}
