//! What the catalog's tables hold of an entity besides its body: the typed
//! filter columns of the entities table and the key/value pairs of the facet
//! table. The write path fills the tables with these functions, and every
//! reader that evaluates a filter without SQL (the facet index, the matcher,
//! time travel) computes them the same way, so that a filter means one thing
//! everywhere.

use catalog_domain::{Entity, EntityRef, spec};
use serde_json::Value;

use crate::filter::FilterField;
use crate::models::entity_row;

/// Longest value kept in the facet index: longer values (inline API
/// definitions, for one) are neither useful facets nor useful filters.
const MAX_FACET_VALUE_CHARS: usize = 200;

/// Deepest spec path flattened into the facet index.
const MAX_FACET_DEPTH: usize = 3;

/// A typed filter column of the entities table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum TypedColumn {
    Kind,
    Namespace,
    Name,
    Owner,
    Lifecycle,
    Type,
    System,
}

impl TypedColumn {
    /// The column a filter on `field` reads; None for fields read from the
    /// facet table.
    pub(crate) fn of(field: &FilterField) -> Option<TypedColumn> {
        Some(match field {
            FilterField::Kind => TypedColumn::Kind,
            FilterField::Namespace => TypedColumn::Namespace,
            FilterField::Name => TypedColumn::Name,
            FilterField::Owner | FilterField::OwnedByTree | FilterField::OwnedByMember => TypedColumn::Owner,
            FilterField::Lifecycle => TypedColumn::Lifecycle,
            FilterField::Type => TypedColumn::Type,
            FilterField::System => TypedColumn::System,
            FilterField::Tag | FilterField::Path(_) | FilterField::ScoreLevel(_) | FilterField::FailingRule(_) => {
                return None;
            }
        })
    }

    pub(crate) fn model_column(self) -> entity_row::Column {
        match self {
            TypedColumn::Kind => entity_row::Column::Kind,
            TypedColumn::Namespace => entity_row::Column::Namespace,
            TypedColumn::Name => entity_row::Column::Name,
            TypedColumn::Owner => entity_row::Column::OwnerRef,
            TypedColumn::Lifecycle => entity_row::Column::Lifecycle,
            TypedColumn::Type => entity_row::Column::SpecType,
            TypedColumn::System => entity_row::Column::SystemRef,
        }
    }

    pub(crate) fn column_name(self) -> &'static str {
        match self {
            TypedColumn::Kind => "kind",
            TypedColumn::Namespace => "namespace",
            TypedColumn::Name => "name",
            TypedColumn::Owner => "owner_ref",
            TypedColumn::Lifecycle => "lifecycle",
            TypedColumn::Type => "spec_type",
            TypedColumn::System => "system_ref",
        }
    }

    /// The kind a partial ref in the column (and in a filter value on it)
    /// defaults to: the spec field's, from the kind table.
    pub(crate) const fn default_kind(self) -> Option<&'static str> {
        match self {
            TypedColumn::Owner => spec::default_kind("owner"),
            TypedColumn::System => spec::default_kind("system"),
            TypedColumn::Kind
            | TypedColumn::Namespace
            | TypedColumn::Name
            | TypedColumn::Lifecycle
            | TypedColumn::Type => None,
        }
    }

    pub(crate) fn value(self, columns: &TypedColumns) -> Option<&str> {
        match self {
            TypedColumn::Kind => Some(&columns.kind),
            TypedColumn::Namespace => Some(&columns.namespace),
            TypedColumn::Name => Some(&columns.name),
            TypedColumn::Owner => columns.owner_ref.as_deref(),
            TypedColumn::Lifecycle => columns.lifecycle.as_deref(),
            TypedColumn::Type => columns.spec_type.as_deref(),
            TypedColumn::System => columns.system_ref.as_deref(),
        }
    }
}

/// The typed filter columns of one entity, as the entities table holds them.
pub(crate) struct TypedColumns {
    pub(crate) kind: String,
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) owner_ref: Option<String>,
    pub(crate) lifecycle: Option<String>,
    pub(crate) spec_type: Option<String>,
    pub(crate) system_ref: Option<String>,
    pub(crate) search_text: String,
}

/// The owner an entity names, as the catalog stores and compares it (the
/// `owner_ref` column): what an owner change is judged by.
pub fn owner_column(entity: &Entity) -> Option<EntityRef> {
    typed_columns(entity).owner_ref.and_then(|owner| EntityRef::from_stored(&owner).ok())
}

/// The filter columns, lower-cased: Backstage compares these case-insensitively.
pub(crate) fn typed_columns(entity: &Entity) -> TypedColumns {
    const OWNER_KIND: Option<&str> = TypedColumn::Owner.default_kind();
    const SYSTEM_KIND: Option<&str> = TypedColumn::System.default_kind();
    let namespace = entity.metadata.namespace.as_str();
    let reference = |field: &str, default_kind: Option<&str>| {
        entity
            .spec_str(field)
            .and_then(|text| EntityRef::parse_with_defaults(text, default_kind, namespace).ok())
            .map(|entity_ref| entity_ref.to_string())
    };
    let search_text =
        [Some(entity.metadata.name.as_str()), entity.metadata.title.as_deref(), entity.metadata.description.as_deref()]
            .into_iter()
            .flatten()
            .chain(entity.metadata.tags.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase();
    TypedColumns {
        kind: entity.kind.to_ascii_lowercase(),
        namespace: entity.metadata.namespace.to_ascii_lowercase(),
        name: entity.metadata.name.to_ascii_lowercase(),
        owner_ref: reference("owner", OWNER_KIND),
        lifecycle: entity.spec_str("lifecycle").map(str::to_lowercase),
        spec_type: entity.spec_str("type").map(str::to_lowercase),
        system_ref: reference("system", SYSTEM_KIND),
        search_text,
    }
}

/// The (key, value) pairs of the facet index: kind, namespace, name, tags,
/// labels, annotations and scalar spec fields, keyed by their dotted path.
pub(crate) fn facet_pairs(entity: &Entity) -> Vec<(String, String)> {
    let metadata = &entity.metadata;
    let mut pairs = vec![
        ("kind".to_owned(), entity.kind.clone()),
        ("metadata.namespace".to_owned(), metadata.namespace.clone()),
        ("metadata.name".to_owned(), metadata.name.clone()),
    ];
    pairs.extend(metadata.tags.iter().map(|tag| ("metadata.tags".to_owned(), tag.clone())));
    pairs.extend(metadata.labels.iter().map(|(key, value)| (format!("metadata.labels.{key}"), value.clone())));
    pairs
        .extend(metadata.annotations.iter().map(|(key, value)| (format!("metadata.annotations.{key}"), value.clone())));
    for (key, value) in &entity.spec {
        flatten(&format!("spec.{key}"), value, 1, &mut pairs);
    }
    pairs.retain(|(_, value)| value.chars().count() <= MAX_FACET_VALUE_CHARS);
    pairs.sort();
    pairs.dedup();
    pairs
}

fn flatten(path: &str, value: &Value, depth: usize, pairs: &mut Vec<(String, String)>) {
    match value {
        Value::String(text) => pairs.push((path.to_owned(), text.clone())),
        Value::Bool(flag) => pairs.push((path.to_owned(), flag.to_string())),
        Value::Number(number) => pairs.push((path.to_owned(), number.to_string())),
        Value::Array(items) => {
            for item in items {
                if !item.is_array() && !item.is_object() {
                    flatten(path, item, depth, pairs);
                }
            }
        }
        Value::Object(map) if depth < MAX_FACET_DEPTH => {
            for (key, value) in map {
                flatten(&format!("{path}.{key}"), value, depth + 1, pairs);
            }
        }
        Value::Object(_) | Value::Null => {}
    }
}
