//! The Backstage filters templates commonly use, on top of minijinja's
//! built-in string filters: `parseRepoUrl`, `parseEntityRef`, `pick`,
//! `projectSlug`, and `dump` (Nunjucks' name for JSON text).
//!
//! Error messages never repeat the filtered value: it may be a secret.

use catalog_domain::EntityRef;
use catalog_domain::entity_ref::DEFAULT_NAMESPACE;
use minijinja::value::{Kwargs, Serde, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind};
use serde_json::{Map, Value as Json};

use super::{BoundedWalk, ExpressionProblem};

pub(super) fn register(environment: &mut Environment<'static>) {
    environment.add_filter("parseRepoUrl", parse_repo_url);
    environment.add_filter("parseEntityRef", parse_entity_ref);
    environment.add_filter("pick", pick);
    environment.add_filter("projectSlug", project_slug);
    environment.add_filter("dump", dump);
}

fn failed(message: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, message)
}

/// The parts of a RepoUrlPicker value, `host?owner=o&repo=r`.
///
/// Backstage decides which query parameters are required from the host's
/// integration type (GitHub needs owner, Bitbucket workspace and project,
/// ...). Integrations are not configured in this crate, so the rule is the
/// common core: a host and a repo, and an owner unless a workspace or
/// project names where the repo lives. Absent parts are absent keys.
fn read_repo_url(repo_url: &str) -> Result<Map<String, Json>, Error> {
    const EXPECTED: &str = "(expected host?owner=o&repo=r)";
    let url = url::Url::parse(&format!("https://{repo_url}"))
        .map_err(|_| failed(format!("parseRepoUrl: the repository URL is not a URL {EXPECTED}")))?;
    let host = match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => return Err(failed(format!("parseRepoUrl: the repository URL has no host {EXPECTED}"))),
    };
    let query = |name: &str| {
        url.query_pairs().find(|(key, value)| key == name && !value.is_empty()).map(|(_, value)| value.into_owned())
    };
    let mut parts = Map::new();
    parts.insert("host".into(), Json::String(host));
    for name in ["owner", "repo", "organization", "workspace", "project"] {
        if let Some(value) = query(name) {
            parts.insert(name.into(), Json::String(value));
        }
    }
    if !parts.contains_key("repo") {
        return Err(failed(format!("parseRepoUrl: the repository URL has no repo parameter {EXPECTED}")));
    }
    let has_place = ["owner", "workspace", "project"].iter().any(|name| parts.contains_key(*name));
    if !has_place {
        return Err(failed(format!("parseRepoUrl: the repository URL has no owner parameter {EXPECTED}")));
    }
    Ok(parts)
}

fn parse_repo_url(repo_url: &str) -> Result<Value, Error> {
    Ok(Value::from(Serde(read_repo_url(repo_url)?)))
}

/// `owner/repo` of a RepoUrlPicker value.
fn project_slug(repo_url: &str) -> Result<String, Error> {
    let parts = read_repo_url(repo_url)?;
    match (parts.get("owner").and_then(Json::as_str), parts.get("repo").and_then(Json::as_str)) {
        (Some(owner), Some(repo)) => Ok(format!("{owner}/{repo}")),
        _ => Err(failed("projectSlug: the repository URL has no owner parameter".into())),
    }
}

/// `{kind, namespace, name}` of an entity reference, with optional
/// `defaultKind` and `defaultNamespace` given as a map
/// (`parseEntityRef({"defaultKind": "group"})`) or as keyword arguments
/// (`parseEntityRef(defaultKind="group")`). Nunjucks also accepts unquoted
/// keys (`{ defaultKind: "group" }`); Jinja syntax reads those as variables,
/// so they must be quoted here. The parts are lower-case, the catalog's
/// canonical form (references are case-insensitive).
fn parse_entity_ref(text: &str, options: Option<Value>, keywords: Kwargs) -> Result<Value, Error> {
    let option = |name: &str| -> Result<Option<String>, Error> {
        if let Some(value) = keywords.get::<Option<String>>(name)? {
            return Ok(Some(value));
        }
        let from_map = options.as_ref().and_then(|options| options.get_attr(name).ok());
        Ok(from_map.and_then(|value| value.as_str().map(str::to_owned)))
    };
    let default_kind = option("defaultKind")?;
    let default_namespace = option("defaultNamespace")?.unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
    keywords.assert_all_used()?;
    let entity_ref = EntityRef::parse_with_defaults(text, default_kind.as_deref(), &default_namespace)
        .map_err(|error| failed(format!("parseEntityRef: the entity reference is not valid: {error}")))?;
    let parts = serde_json::json!({
        "kind": entity_ref.kind(),
        "namespace": entity_ref.namespace(),
        "name": entity_ref.name(),
    });
    Ok(Value::from(Serde(parts)))
}

/// The value at a dotted path of an object (lodash's `get`, which Backstage
/// uses): `pick('metadata.name')`; a number segment indexes a list.
/// Undefined when the path does not exist.
fn pick(value: Value, path: &str) -> Result<Value, Error> {
    let mut current = value;
    for segment in path.split('.') {
        let key = match segment.parse::<i64>() {
            Ok(index) if current.kind() == ValueKind::Seq => Value::from(index),
            _ => Value::from(segment),
        };
        current = current.get_item(&key).unwrap_or(Value::UNDEFINED);
        if current.is_undefined() {
            break;
        }
    }
    Ok(current)
}

/// JSON text of a value (Nunjucks' `dump`), through the bounded walk: a
/// lazy `list * n` is made only here, after fuel was charged.
fn dump(value: Value) -> Result<String, Error> {
    let json = BoundedWalk::default().convert(&value, 0).map_err(|problem| match problem {
        ExpressionProblem::TooLarge => super::too_large(),
        other => failed(format!("dump: the value is not JSON: {other}")),
    })?;
    serde_json::to_string(&json).map_err(|error| failed(format!("dump: the value is not JSON: {error}")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::Json;
    use crate::expression::{ExpressionContext, Expressions, RenderBudget};

    fn value(source: &str) -> Result<Option<Json>, String> {
        let data = json!({"parameters": {
            "repoUrl": "github.com?owner=acme&repo=checkout",
            "owner": "team-a",
            "entity": {"metadata": {"name": "svc", "tags": ["x", "y"]}},
        }});
        let context = ExpressionContext::new(data.as_object().unwrap(), RenderBudget::for_task());
        Expressions::new().render_value(&json!(source), &context, "input").map_err(|error| error.to_string())
    }

    #[test]
    fn parse_repo_url_reads_host_owner_and_repo() {
        assert_eq!(
            value("${{ parameters.repoUrl | parseRepoUrl }}").unwrap(),
            Some(json!({"host": "github.com", "owner": "acme", "repo": "checkout"}))
        );
    }

    #[test]
    fn parse_repo_url_keeps_organization_workspace_and_project_when_given() {
        assert_eq!(
            value("${{ 'bitbucket.org:8443?workspace=w&project=p&repo=r' | parseRepoUrl }}").unwrap(),
            Some(json!({"host": "bitbucket.org:8443", "repo": "r", "workspace": "w", "project": "p"}))
        );
        assert_eq!(
            value("${{ 'dev.azure.com?organization=o&owner=x&repo=r' | parseRepoUrl }}").unwrap(),
            Some(json!({"host": "dev.azure.com", "owner": "x", "repo": "r", "organization": "o"}))
        );
    }

    #[test]
    fn parse_repo_url_needs_a_repo_and_an_owner() {
        let error = value("${{ 'github.com?owner=acme' | parseRepoUrl }}").unwrap_err();
        assert!(error.contains("no repo parameter"), "{error}");
        let error = value("${{ 'github.com?repo=r' | parseRepoUrl }}").unwrap_err();
        assert!(error.contains("no owner parameter"), "{error}");
    }

    #[test]
    fn project_slug_is_owner_slash_repo() {
        assert_eq!(value("${{ parameters.repoUrl | projectSlug }}").unwrap(), Some(json!("acme/checkout")));
    }

    #[test]
    fn parse_entity_ref_takes_defaults_as_a_map_or_keywords() {
        assert_eq!(
            value("${{ 'component:payments/Checkout' | parseEntityRef }}").unwrap(),
            Some(json!({"kind": "component", "namespace": "payments", "name": "checkout"}))
        );
        assert_eq!(
            value("${{ parameters.owner | parseEntityRef({'defaultKind': 'group', 'defaultNamespace': 'ops'}) }}")
                .unwrap(),
            Some(json!({"kind": "group", "namespace": "ops", "name": "team-a"}))
        );
        assert_eq!(
            value("${{ parameters.owner | parseEntityRef(defaultKind='group') | pick('name') }}").unwrap(),
            Some(json!("team-a"))
        );
    }

    #[test]
    fn parse_entity_ref_without_a_kind_or_default_kind_fails() {
        let error = value("${{ parameters.owner | parseEntityRef }}").unwrap_err();
        assert!(error.contains("parseEntityRef") && error.contains("no default kind"), "{error}");
    }

    #[test]
    fn pick_follows_a_dotted_path_and_is_undefined_past_its_end() {
        assert_eq!(value("${{ parameters.entity | pick('metadata.name') }}").unwrap(), Some(json!("svc")));
        assert_eq!(value("${{ parameters.entity | pick('metadata.tags.1') }}").unwrap(), Some(json!("y")));
        assert_eq!(value("${{ parameters.entity | pick('metadata.nope.deeper') }}").unwrap(), None);
    }
}
