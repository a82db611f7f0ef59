//! Governance: rules that say whether an entity meets the organisation's
//! standards, and scorecards that group them into levels.
//!
//! A rule is a CEL expression (the Common Expression Language Kubernetes
//! uses for admission policies) over the entity's envelope, what it relates
//! to (its owner, system, dependencies, dependents and members, through
//! functions), the facts providers hold about it, and `now`. It is compiled
//! once and knows what it reads, so the caller loads only that and can tell
//! which entities a change makes stale. Its result is a status with the
//! explanation as data: the path it looked at, what it expected and what it
//! found. A fact that is missing or older than its time to live makes the
//! result `UNKNOWN`, never a failure.
//!
//! Scorecards are YAML files: ordered levels of rules, optional weights for a
//! percentage, `enforceFrom` dates for a staged rollout, and exemptions with
//! an expiry. Rules and scorecards are pure: the caller supplies the subject
//! and the clock. `preview` is the one part that reads the store: a
//! scorecard evaluated over the stored catalog, storing nothing.
//!
//! Admission policies are YAML files of rules (CEL, or built-ins that
//! compile to it) checked on a provider's snapshot before it is applied:
//! `warn` admits the entity with the violation, `enforce` refuses it.

mod admission;
mod evaluator;
mod explain;
mod load;
mod policy;
mod preview;
mod results;
mod rule;
mod runner;
mod scorecard;
mod sources;
mod staleness;
mod subject;

pub use admission::{Admission, AdmissionReport, DEFAULT_MAX_REFUSED_SHARE, HeldBack};
pub use evaluator::{Evaluator, LoadedScorecard, Pass, version_of};
pub use explain::Explanation;
pub use policy::{AllowedValues, Mode, Policy, PolicyRule, PolicyRuleDefinition, PolicyScope, read_policies};
pub use preview::{Failure, MAX_LISTED_FAILURES, Move, Preview, preview};
pub use results::{LevelCount, PastScore, RuleSummary, RuleTransition, StoredResult, Summary, score_as_of};
pub use rule::{Evaluation, Problem, Reads, Rule, RuleOutcome, RuleStatus};
pub use runner::{Settings, read_sources, run};
pub use scorecard::{
    AppliesTo, Exemption, LevelDefinition, Located, RuleDefinition, RuleResult, Score, Scorecard, ScorecardError,
};
pub use sources::SourceProblem;
pub use staleness::{STALENESS, StalenessSettings, staleness_scorecard};
pub use subject::{Fact, FactSource, Relation, SEEN_AT_FACT, Subject, UPDATED_AT_FACT};
