//! The GitHub org provider: an organisation's teams become Groups (parent
//! and children from team nesting) and its members become Users (memberOf
//! from team membership, profile from their GitHub profile), annotated with
//! `github.com/team-slug` and `github.com/user-login`. Read through the REST
//! API with `Link` pagination; any failed or missing page leaves the snapshot
//! incomplete and empty, so an outage neither removes nor rewrites anyone.

use std::collections::{BTreeMap, BTreeSet};

use catalog_store::{InvalidEntity, LocationStatus, Snapshot, SnapshotEntity};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::github::{GithubAuth, GithubBuildError, github_source};
use crate::pull::{HttpSource, RetryPolicy, SourceError};

/// One organisation's teams and members.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GithubOrgProviderConfig {
    pub organization: String,
    /// The REST API's root (GitHub Enterprise: `https://HOST/api/v3`).
    pub api_base_url: String,
    /// The namespace the Groups and Users go in: give each organisation its
    /// own when reading several whose team or user names could collide.
    pub namespace: String,
    /// Read each member's profile (name, email) with one request per member.
    pub user_profiles: bool,
    /// The environment variable holding the token (it needs `read:org`).
    pub token_variable: String,
    /// A GitHub App to authenticate as instead (0: none; it needs the
    /// Members organisation permission, read).
    pub app_id: u64,
    pub app_installation_id: u64,
    /// The environment variable holding the app's private key (PEM).
    pub app_private_key_variable: String,
    /// A file holding the app's private key instead (a mounted secret).
    pub app_private_key_file: String,
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
            api_base_url: "https://api.github.com".into(),
            namespace: "default".into(),
            user_profiles: true,
            token_variable: "GITHUB_TOKEN".into(),
            app_id: 0,
            app_installation_id: 0,
            app_private_key_variable: "GITHUB_APP_PRIVATE_KEY".into(),
            app_private_key_file: String::new(),
            concurrency: 8,
            max_removed_percent: 20,
            request_timeout_seconds: 30,
        }
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
        let auth = GithubAuth {
            api_base_url: &config.api_base_url,
            token_variable: &config.token_variable,
            app_id: config.app_id,
            app_installation_id: config.app_installation_id,
            app_private_key_variable: &config.app_private_key_variable,
            app_private_key_file: &config.app_private_key_file,
        };
        let source = github_source(&auth, config.request_timeout_seconds, policy)?;
        Ok(Self { key, config: config.clone(), source })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn organization(&self) -> &str {
        &self.config.organization
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.config.api_base_url.trim_end_matches('/'))
    }

    /// Reads the organisation into a snapshot of Groups and Users.
    pub async fn read(&self) -> Snapshot {
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
                Ok(entity) => snapshot.entities.push(SnapshotEntity { entity, location: Some(location.clone()) }),
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
