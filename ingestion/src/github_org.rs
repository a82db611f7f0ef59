//! The GitHub org provider: an organisation's teams become Groups (parent
//! and children from team nesting) and its members become Users (memberOf
//! from team membership, profile from their GitHub profile), annotated with
//! `github.com/team-slug` and `github.com/user-login`. Read through the REST
//! API with `Link` pagination; any failed or missing page leaves the snapshot
//! incomplete and empty, so an outage neither removes nor rewrites anyone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use catalog_http::github::GithubAuthConfig;
use catalog_http::{HttpSource, RetryPolicy, SourceError};
use catalog_store::{InvalidEntity, LocationStatus, Snapshot, SnapshotEntity};
use futures::StreamExt as _;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::github::GithubBuildError;
use crate::provider::{BuildContext, BuildError, BuildProvider, GithubRefresh, Provider, ReadError};

/// The provider's type in the configuration.
const KIND: &str = "github-org";

/// The GitHub webhook events that change an organisation's teams or members.
const ORGANISATION_EVENTS: [&str; 4] = ["membership", "team", "organization", "member"];

/// One organisation's teams and members.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GithubOrgProviderConfig {
    pub organization: String,
    /// Where the REST API is and how to authenticate to it. The token needs
    /// `read:org`; an app, the Members organisation permission (read).
    #[serde(flatten)]
    pub auth: GithubAuthConfig,
    /// The namespace the Groups and Users go in: give each organisation its
    /// own when reading several whose team or user names could collide.
    pub namespace: String,
    /// Read each member's profile (name, email) with one request per member.
    pub user_profiles: bool,
    /// Requests at once for team members and profiles.
    pub concurrency: usize,
    /// The most of its entities one complete run may remove, in percent.
    pub max_removed_percent: u8,
    pub request_timeout_seconds: u64,
}

impl Default for GithubOrgProviderConfig {
    fn default() -> Self {
        Self {
            organization: String::new(),
            auth: GithubAuthConfig::default(),
            namespace: "default".into(),
            user_profiles: true,
            concurrency: 8,
            max_removed_percent: 20,
            request_timeout_seconds: 30,
        }
    }
}

impl BuildProvider for GithubOrgProviderConfig {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn build(&self, context: BuildContext) -> Result<Arc<dyn Provider>, BuildError> {
        Ok(Arc::new(GithubOrgProvider::build(context.key, self, context.policy).map_err(BuildError::new)?))
    }
}

/// A ready GitHub org provider.
pub struct GithubOrgProvider {
    key: String,
    config: GithubOrgProviderConfig,
    source: HttpSource,
}

impl std::fmt::Debug for GithubOrgProvider {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("GithubOrgProvider").field("key", &self.key).field("config", &self.config).finish()
    }
}

#[derive(Clone, Debug, Deserialize)]
struct Team {
    slug: String,
    name: String,
    description: Option<String>,
    parent: Option<TeamParent>,
}

#[derive(Clone, Debug, Deserialize)]
struct TeamParent {
    slug: String,
}

#[derive(Clone, Debug, Deserialize)]
struct Member {
    login: String,
    avatar_url: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
struct Profile {
    name: Option<String>,
    email: Option<String>,
}

/// Everything one run read.
struct Organisation {
    teams: Vec<Team>,
    members_by_team: Vec<(String, Vec<Member>)>,
    members: Vec<Member>,
    profiles: BTreeMap<String, Profile>,
}

impl GithubOrgProvider {
    pub fn build(key: String, config: &GithubOrgProviderConfig, policy: RetryPolicy) -> Result<Self, GithubBuildError> {
        if config.organization.trim().is_empty() {
            return Err(GithubBuildError::NoOrganization);
        }
        let source = config.auth.source(config.request_timeout_seconds, policy)?;
        Ok(Self { key, config: config.clone(), source })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.config.auth.api_base_url.trim_end_matches('/'))
    }

    /// Reads the organisation into a snapshot of Groups and Users.
    async fn snapshot(&self) -> Snapshot {
        let location = format!("url:{}", self.url(&format!("orgs/{}", self.config.organization)));
        let mut snapshot = Snapshot {
            provider: self.key.clone(),
            max_removed_share: Some(f64::from(self.config.max_removed_percent.min(100)) / 100.0),
            ..Default::default()
        };
        let organisation = match self.fetch().await {
            Ok(organisation) => organisation,
            Err(error) => {
                tracing::warn!(provider = %self.key, error = %error, "cannot read the organisation; nothing changes");
                snapshot.locations.push(LocationStatus {
                    target: location,
                    error: Some(error.to_string()),
                    keeps_entities: true,
                    ..Default::default()
                });
                snapshot.incomplete = Some(format!("reading the organisation failed: {error}"));
                return snapshot;
            }
        };
        let mut problems = Vec::new();
        for document in self.documents(&organisation) {
            match catalog_domain::validate(&document) {
                Ok(entity) => snapshot.entities.push(SnapshotEntity::new(entity, Some(location.clone()))),
                Err(errors) => {
                    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
                    let kind = document["kind"].as_str().unwrap_or_default();
                    let name = document["metadata"]["name"].as_str().unwrap_or_default();
                    problems.push(format!("{kind} {name}: {}", messages.join("; ")));
                    // A team or member that cannot be an entity keeps its
                    // last good version. One whose name cannot even make a
                    // ref was never stored: nothing to keep, and nothing
                    // else is held back for it (unlike a file's document,
                    // the name here is the identity).
                    if let Ok(entity_ref) =
                        catalog_domain::EntityRef::parse(&format!("{kind}:{}/{name}", self.config.namespace))
                    {
                        snapshot.invalid.push(InvalidEntity {
                            entity_ref,
                            location: Some(location.clone()),
                            errors: messages,
                        });
                    }
                }
            }
        }
        snapshot.locations.push(LocationStatus {
            target: location,
            error: (!problems.is_empty()).then(|| problems.join("\n")),
            n_entities: snapshot.entities.len(),
            keeps_entities: false,
        });
        snapshot
    }

    async fn fetch(&self) -> Result<Organisation, SourceError> {
        let organization = &self.config.organization;
        let concurrency = self.config.concurrency.max(1);
        let teams: Vec<Team> =
            self.source.get_all_pages(&self.url(&format!("orgs/{organization}/teams?per_page=100"))).await?;
        // Owned slugs and logins: futures borrowing the lists' items do not
        // satisfy the Send bound of the runtime's tasks.
        let slugs: Vec<String> = teams.iter().map(|team| team.slug.clone()).collect();
        let members_by_team: Vec<(String, Vec<Member>)> =
            futures::stream::iter(slugs.into_iter().map(|slug| async move {
                let url = self.url(&format!("orgs/{organization}/teams/{slug}/members?per_page=100"));
                self.source.get_all_pages::<Member>(&url).await.map(|members| (slug, members))
            }))
            .buffered(concurrency)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        let members: Vec<Member> =
            self.source.get_all_pages(&self.url(&format!("orgs/{organization}/members?per_page=100"))).await?;
        let mut profiles = BTreeMap::new();
        if self.config.user_profiles {
            let logins: Vec<String> = members.iter().map(|member| member.login.clone()).collect();
            let fetched: Vec<Result<(String, Profile), SourceError>> =
                futures::stream::iter(logins.into_iter().map(|login| async move {
                    let url = self.url(&format!("users/{login}"));
                    self.source.get_json::<Profile>(&url).await.map(|(profile, _)| (login, profile))
                }))
                .buffered(concurrency)
                .collect()
                .await;
            for profile in fetched {
                let (login, profile) = profile?;
                profiles.insert(login, profile);
            }
        }
        Ok(Organisation { teams, members_by_team, members, profiles })
    }

    /// The Groups and Users as Backstage documents, in a stable order.
    fn documents(&self, organisation: &Organisation) -> Vec<serde_json::Value> {
        let organization = &self.config.organization;
        let namespace = &self.config.namespace;
        let mut children: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for team in &organisation.teams {
            if let Some(parent) = &team.parent {
                children.entry(parent.slug.as_str()).or_default().push(team.slug.as_str());
            }
        }
        let mut teams_of: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (slug, members) in &organisation.members_by_team {
            for member in members {
                teams_of.entry(member.login.as_str()).or_default().insert(slug.as_str());
            }
        }
        let mut documents = Vec::new();
        for team in &organisation.teams {
            let mut spec = json!({
                "type": "team",
                "profile": {"displayName": team.name},
                "children": children.get(team.slug.as_str()).cloned().unwrap_or_default(),
            });
            if let Some(parent) = &team.parent {
                spec["parent"] = json!(parent.slug);
            }
            let mut metadata = json!({
                "name": team.slug,
                "namespace": namespace,
                "annotations": {"github.com/team-slug": format!("{organization}/{}", team.slug)},
            });
            if let Some(description) = team.description.as_ref().filter(|text| !text.is_empty()) {
                metadata["description"] = json!(description);
            }
            documents.push(
                json!({"apiVersion": "backstage.io/v1alpha1", "kind": "Group", "metadata": metadata, "spec": spec}),
            );
        }
        for member in &organisation.members {
            let mut profile = serde_json::Map::new();
            if let Some(found) = organisation.profiles.get(&member.login) {
                if let Some(name) = found.name.as_ref().filter(|name| !name.is_empty()) {
                    profile.insert("displayName".into(), json!(name));
                }
                if let Some(email) = found.email.as_ref().filter(|email| !email.is_empty()) {
                    profile.insert("email".into(), json!(email));
                }
            }
            if let Some(avatar) = &member.avatar_url {
                profile.insert("picture".into(), json!(avatar));
            }
            let member_of: Vec<&str> = teams_of.get(member.login.as_str()).into_iter().flatten().copied().collect();
            documents.push(json!({
                "apiVersion": "backstage.io/v1alpha1",
                "kind": "User",
                "metadata": {
                    "name": member.login,
                    "namespace": namespace,
                    "annotations": {"github.com/user-login": member.login},
                },
                "spec": {"profile": profile, "memberOf": member_of},
            }));
        }
        documents
    }
}

impl Provider for GithubOrgProvider {
    fn key(&self) -> &str {
        &self.key
    }

    fn kind(&self) -> &'static str {
        KIND
    }

    fn read(&self) -> BoxFuture<'_, Result<Vec<Snapshot>, ReadError>> {
        Box::pin(async move { Ok(vec![self.snapshot().await]) })
    }

    /// A change of the organisation's teams or members runs the whole
    /// provider: a membership touches a User and a Group at once.
    fn github_refresh(&self, event: &str, payload: &Value) -> Option<GithubRefresh> {
        let organization = payload["organization"]["login"]
            .as_str()
            .or_else(|| payload["repository"]["owner"]["login"].as_str())
            .unwrap_or_default();
        (ORGANISATION_EVENTS.contains(&event) && self.config.organization.eq_ignore_ascii_case(organization))
            .then(|| GithubRefresh::Provider(self.key.clone()))
    }
}
