//! GraphQL filter and ordering inputs, converted to the store's filter.

use async_graphql::{Enum, InputObject};
use catalog_store::{Filter, FilterField, Predicate};

use super::error::ApiError;
use crate::error_code::Limit;

/// How deep and/or/not may nest, and how many comparisons one filter may hold.
const MAX_FILTER_DEPTH: usize = 8;
const MAX_FILTER_TERMS: usize = 64;
/// The most values one filter key may list (`kind: [...]`, `in: [...]`).
const MAX_FILTER_VALUES: usize = 500;

fn check_values(n_values: usize) -> Result<(), ApiError> {
    if n_values > MAX_FILTER_VALUES {
        return Err(ApiError::LimitExceeded {
            limit: Limit::FilterValues,
            message: format!("a filter key may list at most {MAX_FILTER_VALUES} values, got {n_values}"),
        });
    }
    Ok(())
}

/// Selects entities. Every key set must hold (AND); each list matches any of
/// its values; `and`, `or` and `not` compose filters. Typed keys compare
/// case-insensitively, as Backstage does.
#[derive(InputObject, Clone, Debug, Default)]
pub struct EntityFilter {
    pub kind: Option<Vec<String>>,
    pub namespace: Option<Vec<String>>,
    pub name: Option<Vec<String>>,
    /// Owner refs; a bare name means a Group in the default namespace.
    pub owner: Option<Vec<String>>,
    pub lifecycle: Option<Vec<String>>,
    #[graphql(name = "type")]
    pub spec_type: Option<Vec<String>>,
    /// System refs; a bare name means a System in the default namespace.
    pub system: Option<Vec<String>>,
    /// Entities with any of these tags.
    pub tags: Option<Vec<String>>,
    /// Owned by any of these groups or by any group under them (children,
    /// transitively). A bare name means a Group in the default namespace.
    pub owned_by_tree: Option<Vec<String>>,
    /// Owned by any of these users or by any group they belong to, directly or
    /// through parent groups. A bare name means a User in the default namespace.
    pub owned_by_member: Option<Vec<String>>,
    /// Comparisons on any dotted path, e.g. `metadata.labels.acme.com/tier` or
    /// `spec.profile.email`.
    pub fields: Option<Vec<FieldPredicate>>,
    pub and: Option<Vec<EntityFilter>>,
    pub or: Option<Vec<EntityFilter>>,
    pub not: Option<Box<EntityFilter>>,
}

/// One comparison on a dotted path. Set exactly one of `equals`, `in`, `exists`.
#[derive(InputObject, Clone, Debug)]
pub struct FieldPredicate {
    pub key: String,
    pub equals: Option<String>,
    #[graphql(name = "in")]
    pub any_of: Option<Vec<String>>,
    pub exists: Option<bool>,
}

impl EntityFilter {
    /// The store filter, or a BAD_USER_INPUT / LIMIT_EXCEEDED error.
    pub fn to_store(&self) -> Result<Filter, ApiError> {
        let mut n_terms = 0;
        self.convert(1, &mut n_terms)
    }

    fn convert(&self, depth: usize, n_terms: &mut usize) -> Result<Filter, ApiError> {
        if depth > MAX_FILTER_DEPTH {
            return Err(ApiError::LimitExceeded {
                limit: Limit::FilterDepth,
                message: format!("filters may nest at most {MAX_FILTER_DEPTH} levels"),
            });
        }
        let mut all = Vec::new();
        let typed = [
            (FilterField::Kind, &self.kind),
            (FilterField::Namespace, &self.namespace),
            (FilterField::Name, &self.name),
            (FilterField::Owner, &self.owner),
            (FilterField::Lifecycle, &self.lifecycle),
            (FilterField::Type, &self.spec_type),
            (FilterField::System, &self.system),
            (FilterField::Tag, &self.tags),
            (FilterField::OwnedByTree, &self.owned_by_tree),
            (FilterField::OwnedByMember, &self.owned_by_member),
        ];
        for (field, values) in typed {
            if let Some(values) = values {
                check_values(values.len())?;
                all.push(Filter::Field { field, predicate: Predicate::In(values.clone()) });
            }
        }
        for predicate in self.fields.iter().flatten() {
            check_values(predicate.any_of.as_ref().map_or(0, Vec::len))?;
            all.push(predicate.to_store()?);
        }
        for filter in self.and.iter().flatten() {
            *n_terms += 1;
            all.push(filter.convert(depth + 1, n_terms)?);
        }
        if let Some(any) = &self.or {
            // Every child counts, empty ones included: each is a condition.
            *n_terms += any.len();
            let any = any.iter().map(|filter| filter.convert(depth + 1, n_terms)).collect::<Result<_, _>>()?;
            all.push(Filter::Any(any));
        }
        if let Some(not) = &self.not {
            all.push(Filter::Not(Box::new(not.convert(depth + 1, n_terms)?)));
        }
        *n_terms += all.len();
        if *n_terms > MAX_FILTER_TERMS {
            return Err(ApiError::LimitExceeded {
                limit: Limit::FilterTerms,
                message: format!("a filter may hold at most {MAX_FILTER_TERMS} comparisons"),
            });
        }
        Ok(Filter::All(all))
    }
}

impl FieldPredicate {
    fn to_store(&self) -> Result<Filter, ApiError> {
        let field = FilterField::from_key(self.key.trim());
        let predicate = match (&self.equals, &self.any_of, self.exists) {
            (Some(value), None, None) => Predicate::In(vec![value.clone()]),
            (None, Some(values), None) => Predicate::In(values.clone()),
            (None, None, Some(exists)) => Predicate::Exists(exists),
            _ => {
                return Err(ApiError::BadUserInput(format!(
                    "filter field {:?}: set exactly one of equals, in, exists",
                    self.key
                )));
            }
        };
        Ok(Filter::Field { field, predicate })
    }
}

/// The key to sort entities by.
#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq, Default)]
#[graphql(remote = "catalog_store::OrderField")]
pub enum EntityOrderField {
    #[default]
    Name,
    Kind,
    Namespace,
    Title,
    CreatedAt,
    UpdatedAt,
}

#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq, Default)]
pub enum OrderDirection {
    #[default]
    Asc,
    Desc,
}

/// Sorting of an entity page; ties are broken by insertion order.
#[derive(InputObject, Clone, Copy, Debug, Default)]
pub struct EntityOrder {
    pub field: EntityOrderField,
    #[graphql(default)]
    pub direction: OrderDirection,
}

/// The most words one search may hold; each is one condition.
const MAX_SEARCH_WORDS: usize = 10;
/// The longest search text: each word becomes a `LIKE '%word%'` scan.
const MAX_SEARCH_CHARS: usize = 256;

pub(crate) fn search_words(text: &str) -> Result<String, ApiError> {
    let n_chars = text.chars().count();
    if n_chars > MAX_SEARCH_CHARS {
        return Err(ApiError::LimitExceeded {
            limit: Limit::SearchChars,
            message: format!("a search may be at most {MAX_SEARCH_CHARS} characters, got {n_chars}"),
        });
    }
    let mut words: Vec<&str> = text.split_whitespace().collect();
    words.sort_unstable();
    words.dedup();
    if words.len() > MAX_SEARCH_WORDS {
        return Err(ApiError::LimitExceeded {
            limit: Limit::SearchWords,
            message: format!("a search may hold at most {MAX_SEARCH_WORDS} words, got {}", words.len()),
        });
    }
    Ok(words.join(" "))
}
