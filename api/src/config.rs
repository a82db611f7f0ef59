//! Configuration: defaults that run with nothing set, then an optional YAML
//! file, then `CATALOG_SECTION__KEY` environment variables. Only those names
//! (and `CATALOG_PROFILE`) are configuration: any other variable under the
//! prefix belongs to someone else and is ignored with a warning, so that a
//! `CATALOG_BIN` in a user's shell cannot stop the server from starting.

use std::path::Path;

use catalog_ingestion::FileProviderConfig;
pub use catalog_ingestion::ProviderConfig;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The whole configuration. Unknown keys are errors, so typos never pass silently.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Which defaults apply before the file and the environment: `embedded`
    /// (the demo: GraphiQL, introspection and field suggestions on) or
    /// `production` (all three off).
    pub profile: Profile,
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub ingestion: IngestionConfig,
    pub graphql: GraphqlConfig,
    pub changes: ChangesConfig,
    pub auth: crate::auth::AuthConfig,
    pub audit: AuditConfig,
    pub metrics: MetricsConfig,
    pub webhooks: crate::webhooks::WebhooksConfig,
    pub scaffolder: crate::scaffolder::ScaffolderConfig,
    pub governance: GovernanceConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GovernanceConfig {
    /// Whether `serve` evaluates the scorecards and keeps their results
    /// current (on one replica at a time: the governance leader).
    pub enabled: bool,
    /// Scorecard files, or folders whose `*.yaml` and `*.yml` files are
    /// scorecards. A file with a problem is refused and logged; its previous
    /// version keeps applying.
    pub scorecards: Vec<std::path::PathBuf>,
    /// Admission policy files, or folders of them: checked on every
    /// provider's snapshot before it is applied (`warn` admits with the
    /// violation, `enforce` refuses). A file with a problem is refused and
    /// logged; its previous version keeps applying.
    pub policies: Vec<std::path::PathBuf>,
    /// The share (0 to 1) of a snapshot an `enforce` policy may refuse
    /// before it is held back (its violations then only warn), unless the
    /// policy sets its own `maxRefusedShare`.
    pub max_refused_share: f64,
    /// How often the scorecard and policy files are read again for changes.
    pub reload_seconds: u64,
    /// How often scorecards whose rules read `now` or a fact are evaluated
    /// again (dates in `enforceFrom` and exemptions' expiry are followed
    /// exactly).
    pub reevaluate_seconds: u64,
    /// How long after its provider read it a fact (`fact('pagerduty.service')`)
    /// may be judged by; older, the rules that read it are `UNKNOWN`.
    pub fact_ttl_seconds: u64,
    /// Stale detection: the built-in `staleness` scorecard.
    pub staleness: StalenessConfig,
    /// How often the catalog's health figures are recorded for
    /// `catalogHealth { history }` (by one replica: whichever finds the last
    /// recording older than this). Kept as long as `changes.retention_days`.
    pub health_record_seconds: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StalenessConfig {
    /// Whether the built-in `staleness` scorecard is evaluated.
    pub enabled: bool,
    /// Days without a change to an entity's content after which it is stale.
    pub unchanged_days: u32,
    /// Days without a push to an entity's GitHub repository after which it
    /// is stale (with a GitHub discovery provider).
    pub repository_unchanged_days: u32,
    /// Days its provider has not read an entity's location in full after
    /// which it is stale (its source failing or gone).
    pub not_seen_days: u32,
    /// The group shown as the built-in scorecard's owner.
    pub owner: String,
}

impl Default for StalenessConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            unchanged_days: 365,
            repository_unchanged_days: 180,
            not_seen_days: 7,
            owner: "group:default/platform".to_owned(),
        }
    }
}

impl GovernanceConfig {
    /// What serde cannot check: the share is a fraction.
    pub fn problems(&self) -> Vec<String> {
        if (0.0..=1.0).contains(&self.max_refused_share) {
            return Vec::new();
        }
        vec![format!("governance.max_refused_share: {} is not between 0 and 1", self.max_refused_share)]
    }
}

impl Default for GovernanceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            scorecards: vec!["examples/scorecards".into()],
            policies: vec!["examples/policies".into()],
            max_refused_share: catalog_governance::DEFAULT_MAX_REFUSED_SHARE,
            reload_seconds: 30,
            reevaluate_seconds: 3_600,
            fact_ttl_seconds: 7_200,
            staleness: StalenessConfig::default(),
            health_record_seconds: 3_600,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Days of audit log to keep; 0 keeps everything. Purged hourly; each
    /// purge leaves a record saying what it deleted.
    pub retention_days: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { retention_days: 365 }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Whether GET /metrics serves Prometheus metrics (without
    /// authentication: counts only, never entity data). Off: 404.
    pub enabled: bool,
    /// The `operationName`s that get their own series in
    /// `catalog_graphql_operation_duration_seconds`; others count as
    /// `other`. Empty: the first 200 distinct names seen, which a client
    /// sending made-up names can use up.
    pub operation_names: Vec<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { enabled: true, operation_names: Vec::new() }
    }
}

impl MetricsConfig {
    /// Problems no type expresses, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        self.operation_names
            .iter()
            .enumerate()
            .filter(|(_, name)| !crate::graphql::is_operation_label(name))
            .map(|(index, name)| {
                format!(
                    "metrics.operation_names[{index}]: `{name}` is not a GraphQL name of at most 64 characters (or is `anonymous`/`other`)"
                )
            })
            .collect()
    }
}

/// A set of defaults for where the catalog runs.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// One process on a laptop or in a demo: everything discoverable.
    #[default]
    Embedded,
    /// Exposed to a company: nothing discoverable that need not be.
    Production,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ChangesConfig {
    /// Changes held for subscribers that fall behind (shared by all of them);
    /// a subscriber further behind is ended with a resumable error.
    pub subscriber_buffer: usize,
    /// Days of change log to keep (the latest version of every entity is
    /// always kept); 0 keeps everything. Purged hourly.
    pub retention_days: u32,
}

impl Default for ChangesConfig {
    fn default() -> Self {
        Self { subscriber_buffer: crate::hub::SUBSCRIBER_BUFFER, retention_days: 30 }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The address to listen on.
    pub host: String,
    /// The port to listen on; 0 picks a free one.
    pub port: u16,
    /// The longest a request may run before it is cut off.
    pub request_timeout_seconds: u64,
    /// Origins (e.g. `https://portal.example.com`, or `*`) whose browser
    /// pages may call the API (CORS) and open its WebSocket. Empty: only
    /// pages served from the catalog's own origin, and non-browser clients.
    pub cors_allowed_origins: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (embedded) or `postgres://USER@HOST:PORT/DB`. Put the
    /// password in the environment (CATALOG_DATABASE__URL), never in a file.
    pub url: String,
    /// The longest one read statement may run on PostgreSQL before the
    /// server cancels it; 0: no limit. (SQLite has no statement timeout:
    /// the request timeout bounds its reads.)
    pub statement_timeout_seconds: u64,
    /// How many decoded entity bodies each pool (primary, replica) keeps in
    /// memory, so that entities read again are neither sent by the
    /// database nor decoded again; 0: none. A body is served from memory
    /// only for the version its row names.
    pub body_cache_entries: usize,
    /// The most connections each pool (primary, replica) opens; 0: 16 on
    /// PostgreSQL, 4 on SQLite. Replicas times this must stay under the
    /// database's own `max_connections`.
    pub max_connections: u32,
    /// Whether `serve` applies pending migrations when it starts (under the
    /// migration lock, so replicas may start together). Off: it waits,
    /// answering /readyz with 503, until `catalog migrate` has run.
    pub migrate_on_start: bool,
    /// A read replica of the PostgreSQL primary (`postgres://...`): GraphQL
    /// queries read it; mutations (with their own reads) and subscriptions'
    /// change-log reads use the primary. Empty: everything uses `url`.
    pub read_url: String,
}

impl DatabaseConfig {
    /// Problems no type expresses, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let postgres = |url: &str| url.starts_with("postgres://") || url.starts_with("postgresql://");
        let both_postgres = postgres(&self.url) && postgres(&self.read_url);
        if !self.read_url.is_empty() && !both_postgres {
            return vec![
                "database.read_url: a read replica needs PostgreSQL, for both database.url and database.read_url"
                    .into(),
            ];
        }
        Vec::new()
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IngestionConfig {
    /// Whether `serve` runs the providers on a schedule.
    pub enabled: bool,
    /// Time between provider runs.
    pub interval_seconds: u64,
    /// The longest one provider run may take; past it the run is abandoned
    /// and nothing of it applied.
    pub run_timeout_seconds: u64,
    /// Also run the file providers as soon as a file under their directories
    /// changes (inotify), instead of waiting for the interval.
    pub watch: bool,
    pub providers: Vec<ProviderConfig>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GraphqlConfig {
    /// Whether GET /graphql from a browser serves GraphiQL.
    pub graphiql_enabled: bool,
    /// Whether `__schema` and `__type` answer.
    pub introspection: bool,
    /// Whether validation errors suggest field names ("did you mean ...?").
    pub field_suggestions: bool,
    /// Whether GET /graphql requires the `x-catalog-csrf` header (POST
    /// already requires a JSON content type, which cross-site forms cannot send).
    pub require_csrf_header: bool,
    /// How long a WebSocket may stay open without sending its
    /// `connection_init` before it is closed with 4408.
    pub websocket_init_timeout_seconds: u64,
    /// The most operations one WebSocket may run at once; one more closes
    /// it with 4429.
    pub max_websocket_operations: usize,
    /// Whether mutations may be sent over the WebSocket (POST otherwise).
    pub websocket_mutations: bool,
    /// The most WebSockets open at once on this server; more get 503.
    pub max_websocket_connections: usize,
    /// The largest request body accepted on /graphql.
    pub max_body_bytes: usize,
    /// The longest query text accepted.
    pub max_query_bytes: usize,
    /// The deepest nesting of brackets, braces and parentheses in a query,
    /// checked before parsing (the parser recurses per level).
    pub max_nesting: usize,
    /// The most tokens (names, punctuation, values) a query may hold, counted
    /// before parsing.
    pub max_tokens: usize,
    /// The most aliases a request may use, fragments expanded.
    pub max_aliases: usize,
    /// The most fields a request may select, fragments expanded.
    pub max_fields: usize,
    /// The most directives a request may use, fragments expanded.
    pub max_directives: usize,
    /// The deepest selection nesting of an operation.
    pub max_depth: usize,
    /// The most an operation may cost; connection fields cost their page size
    /// times their selection.
    pub max_complexity: usize,
    /// The most entities one request (or subscription event) may load
    /// through relation fields, whose lists complexity cannot price.
    pub max_loaded_entities: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self { host: "127.0.0.1".into(), port: 7007, request_timeout_seconds: 30, cors_allowed_origins: Vec::new() }
    }
}

impl DatabaseConfig {
    /// The store's session settings.
    pub fn connect_settings(&self) -> catalog_store::ConnectSettings {
        let timeout = std::time::Duration::from_secs(self.statement_timeout_seconds);
        catalog_store::ConnectSettings {
            statement_timeout: Some(timeout),
            body_cache_entries: Some(self.body_cache_entries),
            max_connections: Some(self.max_connections),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://data/catalog.db".into(),
            statement_timeout_seconds: 30,
            body_cache_entries: catalog_store::DEFAULT_BODY_CACHE_ENTRIES,
            max_connections: 0,
            migrate_on_start: true,
            read_url: String::new(),
        }
    }
}

impl Default for IngestionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_seconds: 60,
            run_timeout_seconds: 900,
            watch: true,
            providers: vec![ProviderConfig::File(FileProviderConfig {
                paths: vec!["examples/catalog-info.yaml".into()],
            })],
        }
    }
}

impl Default for GraphqlConfig {
    fn default() -> Self {
        Self {
            graphiql_enabled: true,
            introspection: true,
            field_suggestions: true,
            require_csrf_header: false,
            websocket_init_timeout_seconds: 10,
            max_websocket_operations: 20,
            websocket_mutations: false,
            max_websocket_connections: 10_000,
            max_body_bytes: 256 * 1024,
            max_query_bytes: 32 * 1024,
            max_nesting: 40,
            max_tokens: 2_000,
            max_aliases: 30,
            max_fields: 1_000,
            max_directives: 50,
            max_depth: 16,
            max_complexity: 10_000,
            max_loaded_entities: 10_000,
        }
    }
}

/// Why a configuration could not be loaded; names the file or variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {message}")]
    File { path: String, message: String },
    #[error("environment variable {name}: {message}")]
    Environment { name: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The prefix of environment overrides; `__` separates sections.
pub const ENV_PREFIX: &str = "CATALOG_";

/// Variables under [`ENV_PREFIX`] that the binary reads itself (the config
/// file's path; `telemetry/mod.rs` reads the logging and tracing ones), not
/// configuration keys.
const READ_BY_THE_BINARY: [&str; 4] = ["CONFIG", "LOG", "LOG_FORMAT", "TRACE"];

/// What the name of a variable under [`ENV_PREFIX`] is to the configuration.
#[derive(Debug, PartialEq)]
enum EnvironmentName {
    /// A key, as the path of keys below the root (`SERVER__PORT`: server, port).
    Key(Vec<String>),
    /// Read by the binary or the test harness: skipped without a word.
    ReadElsewhere,
    /// Neither (`CATALOG_BIN`): ignored with a warning.
    Unrelated,
}

impl EnvironmentName {
    /// Classifies `path`, a variable's name without the prefix.
    fn of(path: &str) -> Self {
        if READ_BY_THE_BINARY.contains(&path) || path.starts_with("TEST_") {
            return Self::ReadElsewhere;
        }
        // `profile` is the one key at the root that is not a section.
        if path == "PROFILE" || path.contains("__") {
            return Self::Key(path.split("__").map(str::to_ascii_lowercase).collect());
        }
        Self::Unrelated
    }
}

impl Config {
    /// The defaults of a profile.
    pub fn for_profile(profile: Profile) -> Self {
        let mut config = Config { profile, ..Config::default() };
        if profile == Profile::Production {
            config.graphql.graphiql_enabled = false;
            config.graphql.introspection = false;
            config.graphql.field_suggestions = false;
            config.graphql.require_csrf_header = true;
            config.auth.anonymous_read = false;
        }
        config
    }

    /// The profile's defaults, then the file (when given), then the
    /// environment variables. The profile itself comes from the file or
    /// `CATALOG_PROFILE`.
    pub fn load(
        file: Option<&Path>,
        environment: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let config = Self::layered(file, environment)?;
        serde_json::from_value(config).map_err(|error| ConfigError::Invalid(error.to_string()))
    }

    /// Every problem of a configuration, each with the path of the key it
    /// is about (`load` stops at the first): unknown keys anywhere, then
    /// each section's and each provider's type errors. Empty: it loads.
    pub fn check(file: Option<&Path>, environment: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
        let mut merged = match Self::layered(file, environment) {
            Ok(merged) => merged,
            Err(error) => return vec![error.to_string()],
        };
        let Ok(defaults) = serde_json::to_value(Config::default()) else { return vec!["internal error".into()] };
        let mut problems = Vec::new();
        remove_unknown_keys(&mut merged, &defaults, "", &mut problems);
        let Value::Object(sections) = &merged else { return problems };
        for (section, value) in sections {
            let mut probe = defaults.clone();
            probe[section] = value.clone();
            if section == "ingestion" {
                // Each provider on its own, so that one bad entry does not hide another.
                let providers = value.get("providers").and_then(Value::as_array).cloned().unwrap_or_default();
                probe[section]["providers"] = Value::Array(Vec::new());
                for (index, provider) in providers.into_iter().enumerate() {
                    let mut one = probe.clone();
                    one["ingestion"]["providers"] = Value::Array(vec![provider]);
                    if let Err(error) = serde_json::from_value::<Config>(one) {
                        problems.push(format!("ingestion.providers[{index}]: {error}"));
                    }
                }
            }
            if let Err(error) = serde_json::from_value::<Config>(probe) {
                problems.push(format!("{section}: {error}"));
            }
        }
        if let Ok(config) = serde_json::from_value::<Config>(merged) {
            problems.extend(config.database.problems());
            problems.extend(config.metrics.problems());
            problems.extend(config.governance.problems());
        }
        problems
    }

    /// Defaults, file and environment merged, not yet typed.
    fn layered(
        file: Option<&Path>,
        environment: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Value, ConfigError> {
        let mut value = Value::Object(Map::new());
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|error| ConfigError::File { path: path.display().to_string(), message: error.to_string() })?;
            let overlay = catalog_domain::document::parse_yaml(&text)
                .map_err(|error| ConfigError::File { path: path.display().to_string(), message: error.to_string() })?;
            if !overlay.is_null() {
                merge(&mut value, overlay);
            }
        }
        for (name, raw) in environment {
            let Some(path) = name.strip_prefix(ENV_PREFIX) else { continue };
            let keys = match EnvironmentName::of(path) {
                EnvironmentName::Key(keys) => keys,
                EnvironmentName::ReadElsewhere => continue,
                EnvironmentName::Unrelated => {
                    // The name only: the value may be anybody's secret.
                    tracing::warn!(
                        variable = %name,
                        "ignoring an environment variable that starts with CATALOG_ but is not configuration \
                         (configuration variables are CATALOG_SECTION__KEY)"
                    );
                    continue;
                }
            };
            if keys.iter().any(String::is_empty) {
                return Err(ConfigError::Environment { name, message: "empty section name".into() });
            }
            let parsed = serde_json::from_str::<Value>(&raw).unwrap_or(Value::String(raw));
            set_path(&mut value, &keys, parsed)
                .map_err(|error| ConfigError::Environment { name, message: error.to_string() })?;
        }
        let profile = match value.get("profile") {
            Some(profile) => serde_json::from_value(profile.clone())
                .map_err(|_| ConfigError::Invalid(format!("profile must be embedded or production, got {profile}")))?,
            None => Profile::default(),
        };
        let mut config = serde_json::to_value(Config::for_profile(profile))
            .map_err(|error| ConfigError::Invalid(error.to_string()))?;
        merge(&mut config, value);
        Ok(config)
    }
}

/// Removes (and reports, with their paths) the keys of `value` that `known`
/// does not have. Lists and the provider entries are left to typing: their
/// shapes differ per entry.
fn remove_unknown_keys(value: &mut Value, known: &Value, path: &str, problems: &mut Vec<String>) {
    let (Value::Object(map), Value::Object(known)) = (value, known) else { return };
    map.retain(|key, child| {
        let here = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        match known.get(key) {
            Some(known_child) => {
                remove_unknown_keys(child, known_child, &here, problems);
                true
            }
            None => {
                let hint =
                    closest(key, known.keys()).map(|name| format!(" (did you mean {name}?)")).unwrap_or_default();
                problems.push(format!("{here}: unknown key{hint}"));
                false
            }
        }
    });
}

/// The known key nearest to a misspelt one, when it is near enough.
fn closest<'a>(key: &str, known: impl Iterator<Item = &'a String>) -> Option<&'a String> {
    let distance = |a: &str, b: &str| -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut previous = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let substitution = previous + usize::from(ca != *cb);
                previous = row[j + 1];
                row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
            }
        }
        row[b.len()]
    };
    known.map(|name| (distance(key, name), name)).filter(|(d, _)| *d <= 2).min_by_key(|(d, _)| *d).map(|(_, name)| name)
}

fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

/// Why an environment variable's key path cannot be set.
#[derive(Debug, thiserror::Error)]
enum PathError {
    #[error("no key")]
    NoKey,
    #[error("{0} is not a section")]
    NotASection(String),
    #[error("{0} is not inside a section")]
    NotInsideASection(String),
}

fn set_path(value: &mut Value, keys: &[String], new: Value) -> Result<(), PathError> {
    let Some((last, parents)) = keys.split_last() else { return Err(PathError::NoKey) };
    let mut current = value;
    for key in parents {
        let Value::Object(map) = current else { return Err(PathError::NotASection(key.clone())) };
        current = map.entry(key.clone()).or_insert_with(|| Value::Object(Map::new()));
    }
    let Value::Object(map) = current else { return Err(PathError::NotInsideASection(last.clone())) };
    // A string for a numeric or boolean key was not valid JSON: keep it as text
    // so that deserialization names the key in its error.
    map.insert(last.clone(), new);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_reports_every_problem_with_its_path() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("catalog.yaml");
        let text = "server:\n  prot: 8080\n  request_timeout_seconds: soon\ngraphql:\n  max_depth: -1\n\
                    ingestion:\n  providers:\n    - type: file\n      paths: [a.yaml]\n    - type: gitlab\n      url: x\n";
        std::fs::write(&path, text).unwrap();
        let problems = Config::check(Some(&path), Vec::new());
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(problems[0].starts_with("server.prot: unknown key (did you mean port?)"), "{problems:#?}");
        assert!(
            problems.iter().any(|problem| problem.starts_with("ingestion.providers[1]:") && problem.contains("gitlab"))
        );
        assert!(problems.iter().any(|problem| problem.starts_with("server:") && problem.contains("soon")));
        assert!(problems.iter().any(|problem| problem.starts_with("graphql:") && problem.contains("-1")));
        std::fs::write(&path, "server:\n  port: 8080\n").unwrap();
        assert_eq!(Config::check(Some(&path), Vec::new()), Vec::<String>::new());
    }

    #[test]
    fn a_read_replica_is_checked_against_the_primary() {
        let replica = ("CATALOG_DATABASE__READ_URL".to_owned(), "postgres://reader@replica/catalog".to_owned());
        let problems = Config::check(None, vec![replica.clone()]);
        assert_eq!(problems.len(), 1, "the default primary is SQLite: {problems:#?}");
        assert!(problems[0].starts_with("database.read_url:"), "{problems:#?}");
        let primary = ("CATALOG_DATABASE__URL".to_owned(), "postgres://catalog@primary/catalog".to_owned());
        assert_eq!(Config::check(None, vec![primary, replica]), Vec::<String>::new());
    }

    #[test]
    fn a_refused_share_outside_zero_to_one_is_a_problem() {
        let share = |value: &str| vec![("CATALOG_GOVERNANCE__MAX_REFUSED_SHARE".to_owned(), value.to_owned())];
        let problems = Config::check(None, share("5"));
        assert_eq!(problems, ["governance.max_refused_share: 5 is not between 0 and 1"]);
        assert_eq!(Config::check(None, share("0.5")), Vec::<String>::new());
    }

    #[test]
    fn the_defaults_need_no_file_and_no_environment() {
        let config = Config::load(None, Vec::new()).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.server.port, 7007);
        assert!(config.database.url.starts_with("sqlite://"));
    }

    #[test]
    fn the_file_overrides_defaults_and_the_environment_overrides_the_file() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("catalog.yaml");
        std::fs::write(&path, "server:\n  port: 8080\n  host: 0.0.0.0\ningestion:\n  interval_seconds: 5\n").unwrap();
        let environment = vec![
            ("CATALOG_SERVER__PORT".to_owned(), "9090".to_owned()),
            ("CATALOG_DATABASE__URL".to_owned(), "postgres://catalog@db/catalog".to_owned()),
            ("UNRELATED".to_owned(), "x".to_owned()),
        ];
        let config = Config::load(Some(&path), environment).unwrap();
        assert_eq!((config.server.host.as_str(), config.server.port), ("0.0.0.0", 9090));
        assert_eq!(config.ingestion.interval_seconds, 5);
        assert_eq!(config.database.url, "postgres://catalog@db/catalog");
    }

    #[test]
    fn the_production_profile_hides_the_schema_unless_told_otherwise() {
        let production = vec![("CATALOG_PROFILE".to_owned(), "production".to_owned())];
        let config = Config::load(None, production.clone()).unwrap();
        assert_eq!(config.profile, Profile::Production);
        assert!(!config.graphql.introspection && !config.graphql.field_suggestions && !config.graphql.graphiql_enabled);
        assert!(!config.auth.anonymous_read);
        let mut with_introspection = production;
        with_introspection.push(("CATALOG_GRAPHQL__INTROSPECTION".to_owned(), "true".to_owned()));
        let config = Config::load(None, with_introspection).unwrap();
        assert!(config.graphql.introspection && !config.graphql.field_suggestions);
        let error = Config::load(None, vec![("CATALOG_PROFILE".to_owned(), "staging".to_owned())]).unwrap_err();
        assert!(error.to_string().contains("embedded or production"), "{error}");
    }

    #[test]
    fn metrics_are_on_unless_the_file_or_the_environment_turns_them_off() {
        assert!(Config::load(None, Vec::new()).unwrap().metrics.enabled);
        let off = vec![("CATALOG_METRICS__ENABLED".to_owned(), "false".to_owned())];
        assert!(!Config::load(None, off).unwrap().metrics.enabled);
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("catalog.yaml");
        std::fs::write(&path, "metrics:\n  enabled: false\n").unwrap();
        assert!(!Config::load(Some(&path), Vec::new()).unwrap().metrics.enabled);
        std::fs::write(&path, "metrics:\n  enable: true\n").unwrap();
        let error = Config::load(Some(&path), Vec::new()).unwrap_err().to_string();
        assert!(error.contains("enable"), "{error}");
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("catalog.yaml");
        std::fs::write(&path, "server:\n  prot: 8080\n").unwrap();
        let error = Config::load(Some(&path), Vec::new()).unwrap_err().to_string();
        assert!(error.contains("prot"), "{error}");
        let error =
            Config::load(None, vec![("CATALOG_SERVER__PORT".to_owned(), "eighty".to_owned())]).unwrap_err().to_string();
        assert!(error.contains("eighty") || error.contains("u16"), "{error}");
    }

    fn variables(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect()
    }

    #[test]
    fn only_section_keys_and_the_profile_are_configuration_under_the_prefix() {
        let cases = [
            ("SERVER__PORT", EnvironmentName::Key(vec!["server".into(), "port".into()])),
            (
                "SCAFFOLDER__GITHUB__API_BASE_URL",
                EnvironmentName::Key(vec!["scaffolder".into(), "github".into(), "api_base_url".into()]),
            ),
            ("PROFILE", EnvironmentName::Key(vec!["profile".into()])),
            ("NOPE__KEY", EnvironmentName::Key(vec!["nope".into(), "key".into()])),
            ("CONFIG", EnvironmentName::ReadElsewhere),
            ("LOG", EnvironmentName::ReadElsewhere),
            ("LOG_FORMAT", EnvironmentName::ReadElsewhere),
            ("TRACE", EnvironmentName::ReadElsewhere),
            ("TEST_DATABASE_URL", EnvironmentName::ReadElsewhere),
            ("BIN", EnvironmentName::Unrelated),
            ("BENCH_TOKEN", EnvironmentName::Unrelated),
            ("SERVER", EnvironmentName::Unrelated),
            ("", EnvironmentName::Unrelated),
        ];
        for (path, expected) in cases {
            assert_eq!(EnvironmentName::of(path), expected, "CATALOG_{path}");
        }
    }

    #[test]
    fn an_unrelated_variable_under_the_prefix_is_ignored_with_a_warning_naming_it_but_not_its_value() {
        #[derive(Clone, Default)]
        struct Captured(std::sync::Arc<parking_lot::Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
        let environment = variables(&[("CATALOG_BIN", "/opt/secret-value"), ("CATALOG_SERVER__PORT", "9090")]);
        let (loaded, problems) = tracing::subscriber::with_default(subscriber, || {
            (Config::load(None, environment.clone()), Config::check(None, environment))
        });
        assert_eq!(loaded.unwrap().server.port, 9090);
        assert_eq!(problems, Vec::<String>::new());
        let logs = String::from_utf8(captured.0.lock().clone()).unwrap();
        assert!(logs.contains("WARN") && logs.contains("CATALOG_BIN"), "{logs}");
        assert!(!logs.contains("secret-value"), "{logs}");
    }

    #[test]
    fn an_unknown_key_inside_a_section_stays_an_error_in_the_environment() {
        for name in ["CATALOG_SERVER__NOPE", "CATALOG_NOPE__KEY"] {
            let environment = variables(&[(name, "1")]);
            let error = Config::load(None, environment.clone()).unwrap_err().to_string();
            assert!(error.contains("nope"), "{name}: {error}");
            let problems = Config::check(None, environment);
            assert_eq!(problems.len(), 1, "{name}: {problems:#?}");
            assert!(problems[0].contains("nope") && problems[0].contains("unknown key"), "{name}: {problems:#?}");
        }
    }
}
