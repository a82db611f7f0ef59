//! Governance in GraphQL: the scorecards the catalog applies with their
//! rules and summaries, each entity's scores and their history, a group's
//! rollup over its ownership tree, a scorecard previewed before it is
//! merged, and level and rule transitions as they happen. The results are
//! the stored ones (`catalog_governance::Evaluator` keeps them current);
//! nothing here evaluates a rule except the preview.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_graphql::{
    Context, Enum, InputValueError, InputValueResult, Json, Object, Result, Scalar, ScalarType, SimpleObject,
    Subscription, Value,
};
use catalog_domain::EntityRef;
use catalog_governance::{
    AppliesTo, Exemption, Explanation, FactSource, LevelCount, LoadedScorecard, RuleSummary, RuleTransition, Scorecard,
    StoredResult, Summary,
};
use catalog_store::{FilterField, ScoreChange, ScoreStore, ScorecardRecord, StoredEntity, StoredScore};
use chrono::{DateTime, Utc};
use futures::Stream;

use super::MAX_VALIDATE_BYTES;
use super::context::{catalog, engine, parse_ref, read_scope, require_unrestricted, score_store, scores_loader};
use super::error::ApiError;
use crate::error_code::Limit;

/// Transitions one `scoreHistory` page may hold.
const MAX_HISTORY_PAGE: i32 = 100;
/// Transitions read per statement by `scoreChanges`.
const READ_BATCH: u64 = 500;
/// How often `scoreChanges` looks for transitions another replica's
/// evaluator wrote (this process's own wake it at once).
const POLL_EVERY: Duration = Duration::from_secs(2);
/// Previews run one at a time per process: each reads the whole catalog.
static PREVIEWS: LazyLock<tokio::sync::Semaphore> = LazyLock::new(|| tokio::sync::Semaphore::new(1));

/// A position in the history of score transitions: a transition's
/// sequence number, as a string. Its own sequence, not the change log's:
/// pass a `scoreChanges` or `scoreHistory` cursor only back to those.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScoreCursor(pub i64);

/// A position in the history of score transitions (a sequence number as a
/// string), for `scoreChanges(after:)` and `scoreHistory(before:)`.
#[Scalar]
impl ScalarType for ScoreCursor {
    fn parse(value: Value) -> InputValueResult<Self> {
        crate::graphql::paging::sequence_cursor(&value).map(ScoreCursor).ok_or_else(|| {
            InputValueError::custom(format!("{value} is not a score cursor (a non-negative integer as a string)"))
        })
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_string())
    }
}

/// A rule's status for one entity.
#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq)]
#[graphql(name = "RuleStatus", remote = "catalog_governance::RuleStatus")]
pub enum RuleStatusValue {
    Pass,
    Fail,
    /// A fact it needs is missing or older than its time to live.
    Unknown,
    /// The rule could not be evaluated for this entity.
    Error,
}

/// Which entities a scorecard (or an exemption) is about: every list that
/// is set must hold the entity's value. All empty: every entity.
#[derive(SimpleObject, Clone)]
#[graphql(name = "ScorecardSelector")]
pub struct SelectorValue {
    pub kinds: Vec<String>,
    pub types: Vec<String>,
    pub lifecycles: Vec<String>,
    pub namespaces: Vec<String>,
    pub entities: Vec<String>,
}

impl From<&AppliesTo> for SelectorValue {
    fn from(selector: &AppliesTo) -> Self {
        SelectorValue {
            kinds: selector.kind.clone(),
            types: selector.spec_type.clone(),
            lifecycles: selector.lifecycle.clone(),
            namespaces: selector.namespace.clone(),
            entities: selector.entities.clone(),
        }
    }
}

/// A rule an entity need not pass, for a reason, until it expires.
#[derive(SimpleObject, Clone)]
#[graphql(name = "ScorecardExemption")]
pub struct ExemptionValue {
    pub rule: String,
    pub selector: SelectorValue,
    pub reason: String,
    /// The date (UTC) from which it no longer applies.
    pub expires: String,
    /// Who approved it (a user ref).
    pub approved_by: String,
}

impl From<&Exemption> for ExemptionValue {
    fn from(exemption: &Exemption) -> Self {
        ExemptionValue {
            rule: exemption.rule.clone(),
            selector: SelectorValue::from(&exemption.selector),
            reason: exemption.reason.clone(),
            expires: exemption.expires.clone(),
            approved_by: exemption.approved_by.clone(),
        }
    }
}

/// What a rule reads: the entity paths, the relation functions, the facts,
/// and whether it reads the clock.
#[derive(SimpleObject, Clone)]
pub struct RuleReads {
    pub fields: Vec<String>,
    pub relations: Vec<String>,
    pub facts: Vec<String>,
    pub now: bool,
}

/// One rule of a level, as written.
#[derive(SimpleObject, Clone)]
#[graphql(name = "ScorecardRule")]
pub struct RuleValue {
    pub id: String,
    pub title: String,
    pub description: Option<String>,
    /// The CEL expression (docs/governance.md).
    pub expression: String,
    /// Its share of the percentage score.
    pub weight: u32,
    /// Before this date the rule is shown but does not count.
    pub enforce_from: Option<String>,
    pub reads: RuleReads,
}

/// A level and the rules an entity must pass to reach it (with every level
/// before it).
#[derive(SimpleObject, Clone)]
pub struct ScorecardLevel {
    pub name: String,
    pub rules: Vec<RuleValue>,
}

/// Entities at one level; `level` is null for those below the first.
#[derive(SimpleObject, Clone)]
#[graphql(name = "LevelCount")]
pub struct LevelCountValue {
    pub level: Option<String>,
    pub entities: u64,
}

/// One rule's results over the entities counted.
#[derive(SimpleObject, Clone)]
#[graphql(name = "RuleSummary", complex)]
pub struct RuleSummaryValue {
    pub rule: String,
    pub level: String,
    /// Whether it counts yet (its `enforceFrom` has passed or is unset).
    pub enforced: bool,
    pub pass: u64,
    pub fail: u64,
    pub unknown: u64,
    pub error: u64,
    /// Results that did not pass but an exemption covers.
    pub exempt: u64,
}

#[async_graphql::ComplexObject]
impl RuleSummaryValue {
    /// Passing (or exempt) results over all results, 0 to 1; null with none.
    async fn pass_rate(&self) -> Option<f64> {
        let total = self.pass + self.fail + self.unknown + self.error;
        (total > 0).then(|| (self.pass + self.exempt) as f64 / total as f64)
    }
}

impl From<RuleSummary> for RuleSummaryValue {
    fn from(summary: RuleSummary) -> Self {
        RuleSummaryValue {
            rule: summary.rule,
            level: summary.level,
            enforced: summary.enforced,
            pass: summary.pass,
            fail: summary.fail,
            unknown: summary.unknown,
            error: summary.error,
            exempt: summary.exempt,
        }
    }
}

/// A scorecard's results over the entities it applies to.
#[derive(SimpleObject, Clone)]
#[graphql(name = "ScorecardSummary")]
pub struct SummaryValue {
    pub evaluated: u64,
    /// Lowest first, starting with the entities below the first level.
    pub levels: Vec<LevelCountValue>,
    pub rules: Vec<RuleSummaryValue>,
}

fn level_counts(levels: Vec<LevelCount>) -> Vec<LevelCountValue> {
    levels.into_iter().map(|count| LevelCountValue { level: count.level, entities: count.entities }).collect()
}

impl From<Summary> for SummaryValue {
    fn from(summary: Summary) -> Self {
        SummaryValue {
            evaluated: summary.evaluated,
            levels: level_counts(summary.levels),
            rules: summary.rules.into_iter().map(RuleSummaryValue::from).collect(),
        }
    }
}

/// Scorecards parsed from their stored source, by version: resolvers read a
/// scorecard's rules often and it changes rarely.
static PARSED: LazyLock<parking_lot::Mutex<HashMap<String, Arc<Scorecard>>>> = LazyLock::new(Default::default);

fn parsed(record: &ScorecardRecord) -> Option<Arc<Scorecard>> {
    let mut parsed = PARSED.lock();
    if let Some(found) = parsed.get(&record.version) {
        return Some(found.clone());
    }
    match LoadedScorecard::parse(&record.source) {
        Ok(loaded) => {
            if parsed.len() >= 256 {
                parsed.clear();
            }
            parsed.insert(record.version.clone(), loaded.scorecard.clone());
            Some(loaded.scorecard)
        }
        Err(error) => {
            // Written by a newer binary whose rules this one cannot read.
            tracing::warn!(scorecard = %record.id, %error, "a stored scorecard cannot be read by this version");
            None
        }
    }
}

/// A scorecard the catalog applies.
pub struct ScorecardValue {
    record: ScorecardRecord,
    scorecard: Arc<Scorecard>,
}

impl ScorecardValue {
    fn new(record: ScorecardRecord) -> Option<Self> {
        let scorecard = parsed(&record)?;
        Some(ScorecardValue { record, scorecard })
    }
}

/// A scorecard the catalog applies: levels of rules, exemptions, and its
/// results over the catalog.
#[Object(name = "Scorecard")]
impl ScorecardValue {
    async fn id(&self) -> &str {
        &self.record.id
    }

    async fn title(&self) -> &str {
        &self.scorecard.title
    }

    /// Who owns it (an entity ref).
    async fn owner(&self) -> &str {
        &self.scorecard.owner
    }

    async fn description(&self) -> Option<&str> {
        self.scorecard.description.as_deref()
    }

    /// Which entities it applies to.
    async fn applies_to(&self) -> SelectorValue {
        SelectorValue::from(&self.scorecard.applies_to)
    }

    /// Its levels, lowest first.
    async fn levels(&self) -> Vec<ScorecardLevel> {
        let mut levels: Vec<ScorecardLevel> =
            self.scorecard.levels().map(|name| ScorecardLevel { name: name.to_owned(), rules: Vec::new() }).collect();
        for (level, definition, rule) in self.scorecard.rules() {
            let reads = rule.reads();
            let value = RuleValue {
                id: definition.id.clone(),
                title: definition.title.clone(),
                description: definition.description.clone(),
                expression: definition.expression.clone(),
                weight: definition.weight,
                enforce_from: definition.enforce_from.clone(),
                reads: RuleReads {
                    fields: reads.fields.iter().cloned().collect(),
                    relations: reads.relations.iter().map(|relation| relation.function().to_owned()).collect(),
                    facts: reads.facts.iter().cloned().collect(),
                    now: reads.now,
                },
            };
            if let Some(found) = levels.iter_mut().find(|found| found.name == level) {
                found.rules.push(value);
            }
        }
        levels
    }

    async fn exemptions(&self) -> Vec<ExemptionValue> {
        self.scorecard.exemptions().map(ExemptionValue::from).collect()
    }

    /// Changes whenever its source does.
    async fn version(&self) -> &str {
        &self.record.version
    }

    /// The YAML it was read from.
    async fn source(&self) -> &str {
        &self.record.source
    }

    /// When its results were last written.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.record.updated_at
    }

    /// Entities per level and each rule's results over the whole catalog.
    /// Not available to principals whose reads a policy limits (the counts
    /// would include what they cannot see): they use a group's
    /// `scorecardRollup`.
    async fn summary(&self, ctx: &Context<'_>) -> Result<SummaryValue> {
        require_unrestricted(ctx, "a scorecard's summary")?;
        let summary: Summary = serde_json::from_value(self.record.summary.clone()).unwrap_or_default();
        Ok(SummaryValue::from(summary))
    }
}

/// Why a rule did not pass, as data.
#[derive(SimpleObject, Clone)]
#[graphql(name = "RuleExplanation")]
pub struct ExplanationValue {
    /// The part of the rule that did not hold.
    pub expression: String,
    /// The entity path it looked at (`facts.NAME` for a fact); null when it
    /// looked at no one path.
    pub path: Option<String>,
    /// What the rule wanted there.
    pub expected: String,
    /// What it found (null when the path is absent).
    pub actual: Json<serde_json::Value>,
}

impl From<Explanation> for ExplanationValue {
    fn from(explanation: Explanation) -> Self {
        ExplanationValue {
            expression: explanation.expression,
            path: explanation.path,
            expected: explanation.expected,
            actual: Json(explanation.actual),
        }
    }
}

/// A rule of an admission policy that an entity breaks but was admitted with.
#[derive(SimpleObject, Clone)]
#[graphql(name = "PolicyViolation")]
pub struct PolicyViolationValue {
    pub policy: String,
    pub rule: String,
    /// `warn`, or `held-back`: an `enforce` policy that would have refused
    /// more than its share of the provider's entities, so it only warned.
    pub mode: String,
    /// The whole violation in a sentence, as a refusal would say it.
    pub message: String,
    /// Why, as data; null when the stored explanation cannot be read.
    pub explanation: Option<ExplanationValue>,
}

impl From<&catalog_store::PolicyViolation> for PolicyViolationValue {
    fn from(violation: &catalog_store::PolicyViolation) -> Self {
        PolicyViolationValue {
            policy: violation.policy.clone(),
            rule: violation.rule.clone(),
            mode: violation.mode.clone(),
            message: violation.message.clone(),
            explanation: serde_json::from_value::<Explanation>(violation.explanation.clone())
                .ok()
                .map(ExplanationValue::from),
        }
    }
}

/// One rule's result for one entity.
#[derive(SimpleObject, Clone)]
#[graphql(name = "RuleResult")]
pub struct RuleResultValue {
    pub rule: String,
    pub level: String,
    pub status: RuleStatusValue,
    /// Whether it counts yet (`enforceFrom`).
    pub enforced: bool,
    /// Whether an exemption covers it (`exemption` says which).
    pub exempt: bool,
    pub exemption: Option<ExemptionValue>,
    /// Null when it passed.
    pub explanation: Option<ExplanationValue>,
    /// Since when this status (and exemption, and enforcement) has held.
    pub since: DateTime<Utc>,
}

impl From<StoredResult> for RuleResultValue {
    fn from(result: StoredResult) -> Self {
        RuleResultValue {
            rule: result.rule,
            level: result.level,
            status: result.status.into(),
            enforced: result.enforced,
            exempt: result.exemption.is_some(),
            exemption: result.exemption.as_ref().map(ExemptionValue::from),
            explanation: result.explanation.map(ExplanationValue::from),
            since: result.since,
        }
    }
}

/// An entity's standing under one scorecard.
#[derive(SimpleObject, Clone)]
pub struct EntityScore {
    /// The scorecard's id.
    pub scorecard: String,
    /// The highest level it reaches; null below the first.
    pub level: Option<String>,
    /// Passing (or exempt) enforced weight over all enforced weight, 0 to 100.
    pub score: f64,
    pub rules: Vec<RuleResultValue>,
    /// When the result was last written.
    pub updated_at: DateTime<Utc>,
}

impl From<&StoredScore> for EntityScore {
    fn from(score: &StoredScore) -> Self {
        let results: Vec<StoredResult> = serde_json::from_value(score.results.clone()).unwrap_or_default();
        EntityScore {
            scorecard: score.scorecard.clone(),
            level: score.level.clone(),
            score: score.score,
            rules: results.into_iter().map(RuleResultValue::from).collect(),
            updated_at: score.updated_at,
        }
    }
}

/// A rule whose status changed; null before the first evaluation or after
/// the last.
#[derive(SimpleObject, Clone)]
#[graphql(name = "RuleTransition")]
pub struct RuleTransitionValue {
    pub rule: String,
    #[graphql(name = "from")]
    pub before: Option<RuleStatusValue>,
    #[graphql(name = "to")]
    pub after: Option<RuleStatusValue>,
}

impl From<RuleTransition> for RuleTransitionValue {
    fn from(transition: RuleTransition) -> Self {
        RuleTransitionValue {
            rule: transition.rule,
            before: transition.from.map(Into::into),
            after: transition.to.map(Into::into),
        }
    }
}

/// A change of an entity's level or of a rule's status under one scorecard.
#[derive(SimpleObject, Clone)]
pub struct ScoreTransition {
    /// Resume `scoreChanges` after this transition, or page `scoreHistory` before it.
    pub cursor: ScoreCursor,
    pub time: DateTime<Utc>,
    pub scorecard: String,
    pub entity_ref: String,
    pub level_before: Option<String>,
    pub level: Option<String>,
    /// The score after it; null when the scorecard stopped applying.
    pub score: Option<f64>,
    /// The rules whose status changed.
    pub rules: Vec<RuleTransitionValue>,
    /// The scorecard stopped applying to the entity, or the entity is gone.
    pub removed: bool,
}

impl From<ScoreChange> for ScoreTransition {
    fn from(change: ScoreChange) -> Self {
        let rules: Vec<RuleTransition> = serde_json::from_value(change.rules).unwrap_or_default();
        ScoreTransition {
            cursor: ScoreCursor(change.sequence),
            time: change.time,
            scorecard: change.scorecard,
            entity_ref: change.entity_ref.to_string(),
            level_before: change.level_before,
            level: change.level,
            score: change.score,
            rules: rules.into_iter().map(RuleTransitionValue::from).collect(),
            removed: change.removed,
        }
    }
}

/// A page of an entity's transitions, newest first.
#[derive(SimpleObject, Clone)]
pub struct ScoreHistoryPage {
    pub transitions: Vec<ScoreTransition>,
    /// Pass as `before` for older ones; null when there are none.
    pub next_cursor: Option<ScoreCursor>,
}

/// A scorecard's results over what a group (and its subgroups) owns.
#[derive(SimpleObject, Clone)]
pub struct ScorecardRollup {
    pub scorecard: String,
    /// The groups counted: the group and, with `includeSubgroups`, every
    /// group under it.
    pub groups: u64,
    /// Their entities the scorecard applies to.
    pub evaluated: u64,
    /// Lowest first, starting with those below the first level.
    pub levels: Vec<LevelCountValue>,
    pub rules: Vec<RuleSummaryValue>,
}

/// An entity whose level or rules the previewed scorecard would change.
#[derive(SimpleObject, Clone)]
pub struct ScorecardMove {
    pub entity_ref: String,
    /// Whether the scorecard in force scores it.
    pub scored_before: bool,
    pub level_before: Option<String>,
    /// Whether the previewed scorecard would score it.
    pub scored: bool,
    pub level: Option<String>,
    pub rules: Vec<RuleTransitionValue>,
}

/// A failing result of a preview.
#[derive(SimpleObject, Clone)]
pub struct PreviewFailure {
    pub entity_ref: String,
    pub rule: String,
    pub status: RuleStatusValue,
    pub explanation: Option<ExplanationValue>,
}

/// What a scorecard would say about the catalog, and what would change
/// against the scorecard in force with its id.
#[derive(SimpleObject, Clone)]
pub struct ScorecardPreview {
    pub scorecard: String,
    /// Whether a scorecard with this id is in force (the moves are counted against it).
    pub replaces: bool,
    pub summary: SummaryValue,
    /// The first 100 failing results that no exemption covers.
    pub failures: Vec<PreviewFailure>,
    pub more_failures: u64,
    /// The first 100 entities whose level or rules would change.
    pub moves: Vec<ScorecardMove>,
    pub more_moves: u64,
}

/// The result of a preview: the preview, or every problem of the file.
#[derive(SimpleObject, Clone)]
pub struct ScorecardPreviewResult {
    /// Null when the file has problems.
    pub preview: Option<ScorecardPreview>,
    pub problems: Vec<ScorecardProblem>,
}

/// A problem in a scorecard file: where (`levels[1].rules[0].expression`,
/// and the line and column in an expression) and what.
#[derive(SimpleObject, Clone)]
pub struct ScorecardProblem {
    pub at: String,
    pub line: u32,
    pub column: u32,
    pub message: String,
}

/// Governance's root fields.
#[derive(Default)]
pub struct GovernanceQuery;

#[Object]
impl GovernanceQuery {
    /// The scorecards the catalog applies, by id.
    async fn scorecards(&self, ctx: &Context<'_>) -> Result<Vec<ScorecardValue>> {
        let records = score_store(ctx)?.scorecards().await.map_err(ApiError::from)?;
        Ok(records.into_iter().filter_map(ScorecardValue::new).collect())
    }

    /// One scorecard by id; null when none has it.
    async fn scorecard(&self, ctx: &Context<'_>, id: String) -> Result<Option<ScorecardValue>> {
        let record = score_store(ctx)?.scorecard(&id).await.map_err(ApiError::from)?;
        Ok(record.and_then(ScorecardValue::new))
    }

    /// How true the catalog is, now and as recorded every
    /// `governance.health_record_seconds` (newest first, `historyLength` of
    /// them, at most 1,000): for a dashboard to draw the trend. Counts the
    /// whole catalog: principals whose reads a policy limits cannot read it.
    async fn catalog_health(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 48)] history_length: i32,
    ) -> Result<CatalogHealth> {
        require_unrestricted(ctx, "catalogHealth")?;
        if !(0..=MAX_HEALTH_HISTORY).contains(&history_length) {
            return Err(
                ApiError::BadUserInput(format!("historyLength must be between 0 and {MAX_HEALTH_HISTORY}")).into()
            );
        }
        let scores = score_store(ctx)?;
        let current = crate::health::figures(catalog(ctx)?, scores, engine(ctx)?).await.map_err(ApiError::from)?;
        let mut history = Vec::new();
        if history_length > 0 {
            let records = scores.health_history(history_length as u64).await.map_err(ApiError::from)?;
            for record in records {
                // A recording this release cannot read is left out, not an error.
                if let Ok(figures) = serde_json::from_value::<crate::health::HealthFigures>(record.figures) {
                    history.push(HealthSnapshot::new(record.recorded_at, figures));
                }
            }
        }
        Ok(CatalogHealth { current: HealthSnapshot::new(Utc::now(), current), history })
    }

    /// Evaluates a new or changed scorecard (YAML, up to 64 KB) over the
    /// current catalog without storing anything: its summary, its failures,
    /// and the entities whose level or rules would change against the
    /// scorecard in force with the same id. A file with problems returns
    /// them all, located. Reads the whole catalog: one preview runs at a time
    /// per server, and principals whose reads a policy limits cannot run it.
    #[graphql(complexity = 1000)]
    async fn preview_scorecard(&self, ctx: &Context<'_>, yaml: String) -> Result<ScorecardPreviewResult> {
        if yaml.len() > MAX_VALIDATE_BYTES {
            return Err(ApiError::LimitExceeded {
                limit: Limit::ValidateBytes,
                message: format!("yaml is {} bytes, over the limit of {MAX_VALIDATE_BYTES}", yaml.len()),
            }
            .into());
        }
        require_unrestricted(ctx, "previewScorecard")?;
        let scorecard = match Scorecard::parse(&yaml) {
            Ok(scorecard) => scorecard,
            Err(error) => {
                let problems = error
                    .problems
                    .into_iter()
                    .map(|problem| ScorecardProblem {
                        at: problem.at,
                        line: problem.line,
                        column: problem.column,
                        message: problem.message,
                    })
                    .collect();
                return Ok(ScorecardPreviewResult { preview: None, problems });
            }
        };
        let _turn = PREVIEWS.acquire().await.map_err(|_| ApiError::Internal)?;
        let stored = score_store(ctx)?.scores_of(&scorecard.id).await.map_err(ApiError::from)?;
        let facts = ctx.data_opt::<Arc<crate::facts::ProviderFacts>>().map(|facts| &**facts as &dyn FactSource);
        let preview = catalog_governance::preview(catalog(ctx)?, &scorecard, Utc::now(), &stored, facts)
            .await
            .map_err(ApiError::from)?;
        let levels = preview.levels.into_iter().map(|(level, entities)| LevelCountValue { level, entities }).collect();
        Ok(ScorecardPreviewResult {
            preview: Some(ScorecardPreview {
                scorecard: preview.scorecard,
                replaces: !stored.is_empty(),
                summary: SummaryValue {
                    evaluated: preview.evaluated,
                    levels,
                    rules: preview.rules.into_iter().map(RuleSummaryValue::from).collect(),
                },
                failures: preview
                    .failures
                    .into_iter()
                    .map(|failure| PreviewFailure {
                        entity_ref: failure.entity_ref,
                        rule: failure.result.rule,
                        status: failure.result.status.into(),
                        explanation: failure.result.explanation.map(ExplanationValue::from),
                    })
                    .collect(),
                more_failures: preview.more_failures,
                moves: preview
                    .moves
                    .into_iter()
                    .map(|moved| ScorecardMove {
                        entity_ref: moved.entity_ref,
                        scored_before: moved.scored_before,
                        level_before: moved.level_before,
                        scored: moved.scored,
                        level: moved.level,
                        rules: moved.rules.into_iter().map(RuleTransitionValue::from).collect(),
                    })
                    .collect(),
                more_moves: preview.more_moves,
            }),
            problems: Vec::new(),
        })
    }
}

/// An entity's scores, under one scorecard or all (the `scores` field).
pub(crate) async fn entity_scores(
    ctx: &Context<'_>,
    stored: &StoredEntity,
    scorecard: Option<String>,
) -> Result<Vec<EntityScore>> {
    let scores = scores_loader(ctx)?.load_one(stored.entity_ref.clone()).await?.unwrap_or_default();
    Ok(scores
        .iter()
        .filter(|score| scorecard.as_ref().is_none_or(|wanted| *wanted == score.scorecard))
        .map(EntityScore::from)
        .collect())
}

/// Transitions one `scoresAsOf` reads at most.
const MAX_AS_OF_HISTORY: u64 = 1_000;

/// An entity's standing under one scorecard at a past time.
#[derive(SimpleObject, Clone)]
pub struct PastScore {
    pub scorecard: String,
    /// The level it reached then; null below the first.
    pub level: Option<String>,
    /// Its score then; null when the history no longer says (transitions
    /// older than `changes.retention_days` are purged).
    pub score: Option<f64>,
    pub rules: Vec<PastRuleResult>,
}

/// One rule's status at a past time.
#[derive(SimpleObject, Clone)]
pub struct PastRuleResult {
    pub rule: String,
    pub status: RuleStatusValue,
}

/// The entity's standings at `time`, rebuilt from its current results and
/// the transitions recorded since (one read of its history).
pub(crate) async fn entity_scores_as_of(
    ctx: &Context<'_>,
    stored: &StoredEntity,
    time: DateTime<Utc>,
    scorecard: Option<String>,
) -> Result<Vec<PastScore>> {
    if time > Utc::now() {
        return Err(ApiError::BadUserInput(format!("time: {time} is in the future")).into());
    }
    let current = scores_loader(ctx)?.load_one(stored.entity_ref.clone()).await?.unwrap_or_default();
    let history = score_store(ctx)?
        .score_history(&stored.entity_ref, scorecard.as_deref(), None, MAX_AS_OF_HISTORY)
        .await
        .map_err(ApiError::from)?;
    if history.len() as u64 == MAX_AS_OF_HISTORY && history.last().is_some_and(|oldest| oldest.time > time) {
        return Err(ApiError::BadUserInput(format!(
            "time: more than {MAX_AS_OF_HISTORY} transitions since {time}; ask for one scorecard or a later time"
        ))
        .into());
    }
    let mut ids: Vec<&str> = current
        .iter()
        .map(|score| score.scorecard.as_str())
        .chain(history.iter().map(|change| change.scorecard.as_str()))
        .filter(|id| scorecard.as_deref().is_none_or(|wanted| wanted == *id))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(ids
        .into_iter()
        .filter_map(|id| {
            let now = current.iter().find(|score| score.scorecard == id);
            catalog_governance::score_as_of(id, now, &history, time)
        })
        .map(|past| PastScore {
            scorecard: past.scorecard,
            level: past.level,
            score: past.score,
            rules: past
                .rules
                .into_iter()
                .map(|(rule, status)| PastRuleResult { rule, status: status.into() })
                .collect(),
        })
        .collect())
}

/// Why an entity may no longer be true: the staleness scorecard's failing
/// rules (governance.staleness).
#[derive(SimpleObject, Clone)]
pub struct Staleness {
    /// Whether any reason holds.
    pub stale: bool,
    /// Since when it has been stale (its oldest reason's time); null when
    /// it is not.
    pub since: Option<DateTime<Utc>>,
    pub reasons: Vec<StaleReason>,
}

/// One reason an entity is stale.
#[derive(SimpleObject, Clone)]
pub struct StaleReason {
    /// `owner-missing`, `owner-without-members`, `deprecated-but-depended-on`,
    /// `unchanged`, `not-seen`, `repository-archived`, `repository-unchanged`,
    /// `no-workloads` or `no-pagerduty-service`.
    pub reason: String,
    /// What it found, as data.
    pub explanation: Option<ExplanationValue>,
    /// Since when it has held.
    pub since: DateTime<Utc>,
}

/// The entity's staleness; null when stale detection does not apply to it
/// (its kind, or governance is off) or has not evaluated it yet.
pub(crate) async fn entity_staleness(ctx: &Context<'_>, stored: &StoredEntity) -> Result<Option<Staleness>> {
    let scores = scores_loader(ctx)?.load_one(stored.entity_ref.clone()).await?.unwrap_or_default();
    let Some(score) = scores.iter().find(|score| score.scorecard == catalog_governance::STALENESS) else {
        return Ok(None);
    };
    let results: Vec<StoredResult> = serde_json::from_value(score.results.clone()).unwrap_or_default();
    let reasons: Vec<StaleReason> = results
        .into_iter()
        .filter(|result| result.status == catalog_governance::RuleStatus::Fail && result.exemption.is_none())
        .map(|result| StaleReason {
            reason: result.rule,
            explanation: result.explanation.map(ExplanationValue::from),
            since: result.since,
        })
        .collect();
    Ok(Some(Staleness { stale: !reasons.is_empty(), since: reasons.iter().map(|reason| reason.since).min(), reasons }))
}

/// The most recordings `catalogHealth` returns.
const MAX_HEALTH_HISTORY: i32 = 1_000;

/// The catalog's health now and as recorded.
#[derive(SimpleObject)]
pub struct CatalogHealth {
    pub current: HealthSnapshot,
    /// Newest first.
    pub history: Vec<HealthSnapshot>,
}

/// The health figures at one time.
#[derive(SimpleObject)]
pub struct HealthSnapshot {
    pub time: DateTime<Utc>,
    pub entities: u64,
    pub by_kind: Vec<KindCount>,
    /// Entities whose `spec.owner` names no entity of the catalog.
    pub orphans: u64,
    /// Distinct refs that relations point at and no entity has.
    pub dangling_refs: u64,
    /// Entities whose source's latest version was refused (validation or an
    /// `enforce` admission policy): the last good version is served.
    pub processing_errors: u64,
    /// Refs claimed by more than one source (`conflicts`).
    pub conflicts: u64,
    /// Entities stale for any reason (`staleness`).
    pub stale: u64,
    /// Entities admitted with admission policy violations.
    pub policy_violations: u64,
    /// Entities waiting for review (`pendingEntities`).
    pub pending: u64,
    /// Per scorecard rule: the entities it applies to and those that pass.
    pub rule_coverage: Vec<RuleCoverageValue>,
    /// Providers whose last run failed or could not read everything (as
    /// this process saw them).
    pub providers_in_error: Vec<String>,
}

impl HealthSnapshot {
    fn new(time: DateTime<Utc>, figures: crate::health::HealthFigures) -> Self {
        let counts = figures.counts;
        HealthSnapshot {
            time,
            entities: counts.entities,
            by_kind: counts.by_kind.into_iter().map(|(kind, entities)| KindCount { kind, entities }).collect(),
            orphans: counts.orphans,
            dangling_refs: counts.dangling_refs,
            processing_errors: counts.processing_errors,
            conflicts: counts.conflicts,
            stale: counts.stale,
            policy_violations: counts.policy_violations,
            pending: counts.pending,
            rule_coverage: figures
                .rule_coverage
                .into_iter()
                .map(|coverage| RuleCoverageValue {
                    pass_rate: (coverage.applicable > 0).then(|| coverage.passing as f64 / coverage.applicable as f64),
                    scorecard: coverage.scorecard,
                    rule: coverage.rule,
                    applicable: coverage.applicable,
                    passing: coverage.passing,
                })
                .collect(),
            providers_in_error: figures.providers_in_error,
        }
    }
}

/// Entities of one kind (lower-case).
#[derive(SimpleObject)]
pub struct KindCount {
    pub kind: String,
    pub entities: u64,
}

/// How much of what a rule applies to passes it.
#[derive(SimpleObject)]
#[graphql(name = "RuleCoverage")]
pub struct RuleCoverageValue {
    pub scorecard: String,
    pub rule: String,
    /// Entities with a result for it.
    pub applicable: u64,
    /// Of those, passing or exempt.
    pub passing: u64,
    /// `passing / applicable`; null when it applies to nothing.
    pub pass_rate: Option<f64>,
}

/// An entity's transitions, newest first (the `scoreHistory` field).
pub(crate) async fn score_history(
    ctx: &Context<'_>,
    stored: &StoredEntity,
    scorecard: Option<String>,
    first: i32,
    before: Option<ScoreCursor>,
) -> Result<ScoreHistoryPage> {
    if !(1..=MAX_HISTORY_PAGE).contains(&first) {
        return Err(ApiError::BadUserInput(format!("first must be between 1 and {MAX_HISTORY_PAGE}")).into());
    }
    let limit = first as u64 + 1;
    let mut changes = score_store(ctx)?
        .score_history(&stored.entity_ref, scorecard.as_deref(), before.map(|cursor| cursor.0), limit)
        .await
        .map_err(ApiError::from)?;
    let more = changes.len() as u64 == limit;
    changes.truncate(first as usize);
    let next_cursor = more.then(|| changes.last().map(|change| ScoreCursor(change.sequence))).flatten();
    Ok(ScoreHistoryPage { transitions: changes.into_iter().map(ScoreTransition::from).collect(), next_cursor })
}

/// A scorecard's results over what `group` owns, and with `include_subgroups`
/// what every group under it owns (the `scorecardRollup` field). Entities
/// the read scope hides are not counted.
pub(crate) async fn scorecard_rollup(
    ctx: &Context<'_>,
    group: &StoredEntity,
    scorecard: String,
    include_subgroups: bool,
) -> Result<Option<ScorecardRollup>> {
    let store = score_store(ctx)?;
    let record = store.scorecard(&scorecard).await.map_err(ApiError::from)?;
    let Some(definition) = record.and_then(ScorecardValue::new) else {
        return Ok(None);
    };
    let catalog = catalog(ctx)?;
    let groups = if include_subgroups {
        catalog
            .owner_closure(&FilterField::OwnedByTree, std::slice::from_ref(&group.entity_ref))
            .await
            .map_err(ApiError::from)?
    } else {
        vec![group.entity_ref.clone()]
    };
    let mut scores = store.scores_owned_by(&scorecard, &groups).await.map_err(ApiError::from)?;
    let scope = read_scope(ctx)?;
    if scope.is_restricted()
        && let Some(filter) = scope.narrow(None)
    {
        let refs: Vec<EntityRef> = scores.iter().map(|score| score.entity_ref.clone()).collect();
        let visible = catalog.refs_matching(&refs, &filter).await.map_err(ApiError::from)?;
        scores.retain(|score| visible.contains(&score.entity_ref));
    }
    let mut summary = Summary::empty(&definition.scorecard);
    for score in &scores {
        let results: Vec<StoredResult> = serde_json::from_value(score.results.clone()).unwrap_or_default();
        summary.count(score.level.as_deref(), results.iter().map(StoredResult::counted));
    }
    let SummaryValue { evaluated, levels, rules } = SummaryValue::from(summary);
    Ok(Some(ScorecardRollup { scorecard, groups: groups.len() as u64, evaluated, levels, rules }))
}

/// Governance's subscriptions.
#[derive(Default)]
pub struct GovernanceSubscription;

#[Subscription]
impl GovernanceSubscription {
    /// Level and rule transitions as the evaluator records them, in order:
    /// under the scorecards named (all when omitted), of the entities named
    /// or owned by the groups named and every group under them (as the tree
    /// is when the subscription starts). With `after`, the transitions after
    /// that cursor are replayed first. Transitions of entities the read
    /// scope hides are left out.
    async fn score_changes(
        &self,
        ctx: &Context<'_>,
        scorecards: Option<Vec<String>>,
        refs: Option<Vec<String>>,
        owned_by_tree: Option<Vec<String>>,
        after: Option<ScoreCursor>,
    ) -> Result<impl Stream<Item = Result<ScoreTransition>> + use<>> {
        let store: ScoreStore = score_store(ctx)?.clone();
        let catalog = catalog(ctx)?.clone();
        let scope = super::context::shared_scope(ctx)?.clone();
        let refs = match refs {
            Some(refs) => Some(
                refs.iter()
                    .map(|text| parse_ref(text, None, "default"))
                    .collect::<Result<std::collections::HashSet<_>, _>>()?,
            ),
            None => None,
        };
        let owners = match owned_by_tree {
            Some(groups) => {
                let roots = groups
                    .iter()
                    .map(|text| parse_ref(text, Some("group"), "default"))
                    .collect::<Result<Vec<_>, _>>()?;
                let closure = catalog.owner_closure(&FilterField::OwnedByTree, &roots).await.map_err(ApiError::from)?;
                Some(closure)
            }
            None => None,
        };
        let mut announced = store.transitions();
        let start = match after {
            Some(after) => after.0,
            None => store.latest_score_sequence().await.map_err(ApiError::from)?,
        };
        Ok(async_stream::stream! {
            let mut cursor = start;
            loop {
                let batch = match store.score_changes_after(cursor, READ_BATCH).await {
                    Ok(batch) => batch,
                    Err(error) => {
                        yield Err(ApiError::from(error).into());
                        return;
                    }
                };
                let full = batch.len() as u64 == READ_BATCH;
                if let Some(last) = batch.last() {
                    cursor = last.sequence;
                }
                let mut wanted: Vec<ScoreChange> = batch
                    .into_iter()
                    .filter(|change| scorecards.as_ref().is_none_or(|names| names.contains(&change.scorecard)))
                    .filter(|change| refs.as_ref().is_none_or(|refs| refs.contains(&change.entity_ref)))
                    .collect();
                if !wanted.is_empty() && (owners.is_some() || scope.current().is_restricted()) {
                    match visible_and_owned(&catalog, &scope, owners.as_deref(), &wanted).await {
                        Ok(kept) => wanted.retain(|change| kept.contains(&change.entity_ref)),
                        Err(error) => {
                            yield Err(error.into());
                            return;
                        }
                    }
                }
                for change in wanted {
                    yield Ok(ScoreTransition::from(change));
                }
                if full {
                    continue;
                }
                tokio::select! {
                    changed = announced.changed() => if changed.is_err() { return },
                    () = tokio::time::sleep(POLL_EVERY) => {}
                }
            }
        })
    }
}

/// Which of the changes' entities the read scope shows and, when `owners`
/// is given, one of them owns.
async fn visible_and_owned(
    catalog: &catalog_store::Catalog,
    scope: &crate::auth::policy::SharedScope,
    owners: Option<&[EntityRef]>,
    changes: &[ScoreChange],
) -> Result<std::collections::HashSet<EntityRef>, ApiError> {
    let refs: Vec<EntityRef> = changes.iter().map(|change| change.entity_ref.clone()).collect();
    let mut kept: std::collections::HashSet<EntityRef> = refs.iter().cloned().collect();
    if let Some(owners) = owners {
        let found = catalog.owners_of(&refs).await?;
        kept.retain(|entity_ref| {
            found.get(entity_ref).and_then(Option::as_ref).is_some_and(|owner| owners.contains(owner))
        });
    }
    let scope = scope.current();
    if scope.is_restricted()
        && let Some(filter) = scope.narrow(None)
    {
        let visible = catalog.refs_matching(&refs, &filter).await?;
        kept.retain(|entity_ref| visible.contains(entity_ref));
    }
    Ok(kept)
}
