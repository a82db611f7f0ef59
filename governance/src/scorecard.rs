//! Scorecards as code: a YAML file of ordered levels of rules, with weights
//! for a percentage, `enforceFrom` dates for a staged rollout, and
//! exemptions that expire by themselves. A file is checked whole: every
//! problem is reported with where it is, and a file with any problem is
//! refused (its previous version keeps applying, which is the caller's).

use std::collections::BTreeSet;

use catalog_domain::EntityRef;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::explain::Explanation;
use crate::rule::{Evaluation, Problem, Reads, Rule, RuleStatus};
use crate::subject::Subject;

/// Which entities a scorecard (or an exemption) is about: every list that is
/// set must hold the entity's value, compared ignoring case. Empty: all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AppliesTo {
    #[serde(default)]
    pub kind: Vec<String>,
    #[serde(default, rename = "type")]
    pub spec_type: Vec<String>,
    #[serde(default)]
    pub lifecycle: Vec<String>,
    #[serde(default)]
    pub namespace: Vec<String>,
    /// Entity refs (`component:default/payments`).
    #[serde(default)]
    pub entities: Vec<String>,
}

impl AppliesTo {
    pub fn matches(&self, subject: &Subject) -> bool {
        let text = |pointer: &str| subject.entity.pointer(pointer).and_then(serde_json::Value::as_str);
        let holds = |allowed: &[String], value: Option<&str>| {
            allowed.is_empty()
                || value.is_some_and(|value| allowed.iter().any(|allowed| allowed.eq_ignore_ascii_case(value)))
        };
        let namespace = text("/metadata/namespace").unwrap_or("default");
        holds(&self.kind, text("/kind"))
            && holds(&self.spec_type, text("/spec/type"))
            && holds(&self.lifecycle, text("/spec/lifecycle"))
            && holds(&self.namespace, Some(namespace))
            && (self.entities.is_empty() || {
                // Written refs in any spelling `EntityRef::parse` accepts.
                let entity_ref = subject.entity_ref();
                self.entities
                    .iter()
                    .filter_map(|text| EntityRef::parse(text).ok())
                    .any(|written| written.as_str().eq_ignore_ascii_case(&entity_ref))
            })
    }

    fn check(&self, at: &str, problems: &mut Vec<Located>) {
        for (index, text) in self.entities.iter().enumerate() {
            if let Err(error) = EntityRef::parse(text) {
                problems.push(Located::at(
                    format!("{at}.entities[{index}]"),
                    format!("{text:?} is not an entity ref: {error}"),
                ));
            }
        }
    }
}

/// One rule of a level, as written.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleDefinition {
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    /// The CEL expression (`docs/governance.md`).
    pub expression: String,
    /// Its share of the percentage score; 1 when unset.
    #[serde(default = "one")]
    pub weight: u32,
    /// Before this date (UTC) the rule is evaluated and shown, but does not
    /// count towards levels or the score.
    #[serde(default)]
    pub enforce_from: Option<String>,
}

fn one() -> u32 {
    1
}

/// A level and the rules an entity must pass to reach it (with every level
/// before it).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LevelDefinition {
    pub name: String,
    pub rules: Vec<RuleDefinition>,
}

/// A rule an entity need not pass, for a reason, until it expires.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Exemption {
    pub rule: String,
    pub selector: AppliesTo,
    pub reason: String,
    /// The date (UTC) from which it no longer applies.
    pub expires: String,
    /// The user who approved it (`user:default/alice`).
    pub approved_by: String,
}

/// A scorecard file as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ScorecardFile {
    id: String,
    title: String,
    owner: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    applies_to: AppliesTo,
    levels: Vec<LevelDefinition>,
    #[serde(default)]
    exemptions: Vec<Exemption>,
}

/// A problem in a scorecard file, located: `at` is the path in the file
/// (`levels[1].rules[0].expression`), and for an expression the line and
/// column in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Located {
    pub at: String,
    pub line: u32,
    pub column: u32,
    pub message: String,
}

impl Located {
    pub(crate) fn at(at: String, message: String) -> Self {
        Located { at, line: 0, column: 0, message }
    }
}

/// A rule file's YAML read into its shape; a problem with either refuses
/// the file whole (the YAML error, or the field serde names).
pub(crate) fn read_yaml<T: serde::de::DeserializeOwned>(yaml: &str) -> Result<T, ScorecardError> {
    let refuse = |message: String| ScorecardError { problems: vec![Located::at(String::new(), message)] };
    let json = catalog_domain::document::parse_yaml(yaml).map_err(|error| refuse(error.to_string()))?;
    serde_json::from_value(json).map_err(|error| refuse(error.to_string()))
}

/// An expression's problems, located at the field `at` that holds it.
pub(crate) fn located(at: &str, problems: Vec<Problem>) -> impl Iterator<Item = Located> + '_ {
    problems.into_iter().map(move |Problem { line, column, message }| Located {
        at: at.to_owned(),
        line,
        column,
        message,
    })
}

impl std::fmt::Display for Located {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}", self.at)?;
        if self.line > 0 {
            write!(formatter, ":{}:{}", self.line, self.column)?;
        }
        write!(formatter, ": {}", self.message)
    }
}

/// A scorecard file that cannot apply, with every problem in it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the file is refused: {}", .problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ScorecardError {
    pub problems: Vec<Located>,
}

#[derive(Debug)]
struct CompiledRule {
    definition: RuleDefinition,
    rule: Rule,
    enforce_from: Option<DateTime<Utc>>,
}

#[derive(Debug)]
struct CompiledExemption {
    definition: Exemption,
    expires: DateTime<Utc>,
}

/// A checked, compiled scorecard.
#[derive(Debug)]
pub struct Scorecard {
    pub id: String,
    pub title: String,
    pub owner: String,
    pub description: Option<String>,
    pub applies_to: AppliesTo,
    levels: Vec<(String, Vec<CompiledRule>)>,
    exemptions: Vec<CompiledExemption>,
    /// What any of its rules reads.
    reads: Reads,
}

/// One rule's result for one entity.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleResult {
    pub rule: String,
    pub level: String,
    pub status: RuleStatus,
    pub explanation: Option<Explanation>,
    /// Whether it counts yet (`enforceFrom` passed or unset).
    pub enforced: bool,
    /// The exemption that applies to it, when one does.
    pub exemption: Option<Exemption>,
}

/// A scorecard's verdict on one entity.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Score {
    pub scorecard: String,
    /// The highest level whose enforced rules, and every earlier level's,
    /// all pass or are exempt; `None` below the first.
    pub level: Option<String>,
    /// Passing (or exempt) enforced weight over all enforced weight, 0 to 100.
    pub score: f64,
    pub rules: Vec<RuleResult>,
}

impl Scorecard {
    /// Reads and checks a scorecard file: YAML, the shape, every rule's
    /// expression, unique ids, dates, and exemptions naming known rules.
    pub fn parse(yaml: &str) -> Result<Scorecard, ScorecardError> {
        let file: ScorecardFile = read_yaml(yaml)?;
        let mut problems = Vec::new();
        if file.id.trim().is_empty() {
            problems.push(Located::at("id".to_owned(), "must not be empty".to_owned()));
        }
        if let Err(error) = EntityRef::parse(&file.owner) {
            problems.push(Located::at("owner".to_owned(), format!("{:?} is not an entity ref: {error}", file.owner)));
        }
        file.applies_to.check("appliesTo", &mut problems);
        if file.levels.is_empty() {
            problems.push(Located::at("levels".to_owned(), "a scorecard needs at least one level".to_owned()));
        }
        let mut level_names = BTreeSet::new();
        let mut rule_ids = BTreeSet::new();
        let mut levels = Vec::new();
        for (level_index, level) in file.levels.iter().enumerate() {
            let at = format!("levels[{level_index}]");
            if !level_names.insert(level.name.to_ascii_lowercase()) {
                problems.push(Located::at(format!("{at}.name"), format!("the level {:?} is named twice", level.name)));
            }
            if level.rules.is_empty() {
                problems.push(Located::at(format!("{at}.rules"), "a level needs at least one rule".to_owned()));
            }
            let mut rules = Vec::new();
            for (rule_index, definition) in level.rules.iter().enumerate() {
                let at = format!("{at}.rules[{rule_index}]");
                if !rule_ids.insert(definition.id.clone()) {
                    problems.push(Located::at(
                        format!("{at}.id"),
                        format!("the rule id {:?} is used twice", definition.id),
                    ));
                }
                if definition.weight == 0 {
                    problems.push(Located::at(format!("{at}.weight"), "must be at least 1".to_owned()));
                }
                let enforce_from = match definition.enforce_from.as_deref().map(parse_date).transpose() {
                    Ok(date) => date,
                    Err(message) => {
                        problems.push(Located::at(format!("{at}.enforceFrom"), message));
                        None
                    }
                };
                match Rule::compile(&definition.expression) {
                    Ok(rule) => rules.push(CompiledRule { definition: definition.clone(), rule, enforce_from }),
                    Err(found) => problems.extend(located(&format!("{at}.expression"), found)),
                }
            }
            levels.push((level.name.clone(), rules));
        }
        let mut exemptions = Vec::new();
        for (index, exemption) in file.exemptions.iter().enumerate() {
            let at = format!("exemptions[{index}]");
            if !rule_ids.contains(&exemption.rule) {
                problems.push(Located::at(
                    format!("{at}.rule"),
                    format!("no rule of this scorecard has the id {:?}", exemption.rule),
                ));
            }
            if exemption.reason.trim().is_empty() {
                problems.push(Located::at(format!("{at}.reason"), "an exemption must say why".to_owned()));
            }
            if let Err(error) = EntityRef::parse(&exemption.approved_by) {
                problems.push(Located::at(
                    format!("{at}.approvedBy"),
                    format!("{:?} is not an entity ref: {error}", exemption.approved_by),
                ));
            }
            exemption.selector.check(&format!("{at}.selector"), &mut problems);
            match parse_date(&exemption.expires) {
                Ok(expires) => exemptions.push(CompiledExemption { definition: exemption.clone(), expires }),
                Err(message) => problems.push(Located::at(format!("{at}.expires"), message)),
            }
        }
        if !problems.is_empty() {
            return Err(ScorecardError { problems });
        }
        let reads = Reads::union(levels.iter().flat_map(|(_, rules)| rules.iter().map(|rule| rule.rule.reads())));
        Ok(Scorecard {
            reads,
            id: file.id,
            title: file.title,
            owner: file.owner,
            description: file.description,
            applies_to: file.applies_to,
            levels,
            exemptions,
        })
    }

    /// The levels' names, lowest first.
    pub fn levels(&self) -> impl Iterator<Item = &str> {
        self.levels.iter().map(|(name, _)| name.as_str())
    }

    /// Its exemptions, expired ones included.
    pub fn exemptions(&self) -> impl Iterator<Item = &Exemption> {
        self.exemptions.iter().map(|exemption| &exemption.definition)
    }

    /// Every rule with its level.
    pub fn rules(&self) -> impl Iterator<Item = (&str, &RuleDefinition, &Rule)> {
        self.levels
            .iter()
            .flat_map(|(level, rules)| rules.iter().map(move |rule| (level.as_str(), &rule.definition, &rule.rule)))
    }

    /// What any of its rules reads: what a caller loads for it, and what
    /// makes its stored results stale.
    pub fn reads(&self) -> &Reads {
        &self.reads
    }

    /// The first time after `now` when its results can change with time
    /// alone: a rule's `enforceFrom` or an exemption's expiry. A rule that
    /// reads `now` has no such time: its evaluator re-evaluates periodically.
    pub fn next_boundary(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let enforced = self.levels.iter().flat_map(|(_, rules)| rules.iter().filter_map(|rule| rule.enforce_from));
        let expiries = self.exemptions.iter().map(|exemption| exemption.expires);
        enforced.chain(expiries).filter(|&time| time > now).min()
    }

    /// The scorecard's verdict on `subject`; `None` when it does not apply.
    pub fn evaluate(&self, subject: &Subject) -> Option<Score> {
        if !self.applies_to.matches(subject) {
            return None;
        }
        self.evaluate_in(subject, &Evaluation::new(subject, &self.reads))
    }

    /// [`Scorecard::evaluate`] in an evaluation of `subject` prepared for
    /// several scorecards (with the union of their [`Reads`]), so that the
    /// subject is converted to CEL once for all of them.
    pub fn evaluate_in(&self, subject: &Subject, evaluation: &Evaluation<'_>) -> Option<Score> {
        if !self.applies_to.matches(subject) {
            return None;
        }
        let mut results = Vec::new();
        let mut level = None;
        let mut climbing = true;
        let (mut passed_weight, mut enforced_weight) = (0u64, 0u64);
        for (name, rules) in &self.levels {
            let mut level_holds = true;
            for compiled in rules {
                let outcome = compiled.rule.evaluate_in(evaluation);
                let enforced = compiled.enforce_from.is_none_or(|from| subject.now >= from);
                let exemption = self
                    .exemptions
                    .iter()
                    .find(|exemption| {
                        exemption.definition.rule == compiled.definition.id
                            && subject.now < exemption.expires
                            && exemption.definition.selector.matches(subject)
                    })
                    .map(|exemption| exemption.definition.clone());
                let holds = outcome.status == RuleStatus::Pass || exemption.is_some();
                if enforced {
                    enforced_weight += u64::from(compiled.definition.weight);
                    if holds {
                        passed_weight += u64::from(compiled.definition.weight);
                    } else {
                        level_holds = false;
                    }
                }
                results.push(RuleResult {
                    rule: compiled.definition.id.clone(),
                    level: name.clone(),
                    status: outcome.status,
                    explanation: outcome.explanation,
                    enforced,
                    exemption,
                });
            }
            climbing &= level_holds;
            if climbing {
                level = Some(name.clone());
            }
        }
        let score = if enforced_weight == 0 { 100.0 } else { 100.0 * passed_weight as f64 / enforced_weight as f64 };
        Some(Score { scorecard: self.id.clone(), level, score, rules: results })
    }
}

/// A date (`2027-01-31`, midnight UTC) or an RFC 3339 time.
fn parse_date(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return date.and_hms_opt(0, 0, 0).map(|time| time.and_utc()).ok_or_else(|| format!("{text:?} is not a date"));
    }
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|_| format!("{text:?} is not a date (2027-01-31) or an RFC 3339 time"))
}
