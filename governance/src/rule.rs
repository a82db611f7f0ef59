//! One rule: a CEL expression compiled once, checked for what it may use
//! (the variables `entity` and `now`, CEL's standard functions and ours),
//! with what it reads, and evaluated over a [`Subject`] into a status.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, LazyLock, Mutex};

use cel::common::ast::{Expr, IdedExpr, LiteralValue};
use cel::extractors::Arguments;
use cel::objects::{Key, Map};
use cel::{Context, Env, ExecutionError, Program, Value};
use serde::{Deserialize, Serialize};

use crate::explain::{self, Explanation};
use crate::subject::{FACT_FUNCTION, Relation, Subject};

/// The most nodes a rule's expression may have. CEL always terminates, but
/// its cost grows with the expression and with the lists it iterates, and a
/// rule runs on every change of every entity it applies to.
pub const MAX_EXPRESSION_NODES: usize = 500;
/// The most comprehensions (`all`, `exists`, `map`, `filter`) one may nest:
/// each level multiplies the work by the length of a list.
pub const MAX_COMPREHENSION_DEPTH: usize = 2;
/// The most entities a relation function hands a rule; the rest are left
/// out (a rule over a hub's ten thousand dependents would otherwise cost as
/// much as the hub is large).
pub const MAX_RELATED: usize = 1_000;

/// The variables a rule may name.
pub const VARIABLES: [&str; 2] = ["entity", "now"];

/// What a rule reads: the caller loads only these, and re-evaluates the rule
/// for an entity when one of them changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Reads {
    /// Paths under the entity (`metadata.annotations.pagerduty.com/service-id`);
    /// a path also covers everything below it.
    pub fields: BTreeSet<String>,
    pub relations: BTreeSet<Relation>,
    /// Relations read of a related entity, by a relation function given
    /// one (`members(owner())`): loaded for every entity the rule reaches
    /// through `relations`.
    pub nested: BTreeSet<Relation>,
    pub facts: BTreeSet<String>,
    /// Whether the result can change with time alone.
    pub now: bool,
}

/// A problem with a rule's expression, located in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// 1-based line and column in the expression; 0 when the problem is the
    /// expression as a whole.
    pub line: u32,
    pub column: u32,
    pub message: String,
}

/// A rule's status for one entity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RuleStatus {
    Pass,
    Fail,
    /// A fact it needs is missing or older than its time to live.
    Unknown,
    /// The expression could not be evaluated for this entity (a value of the
    /// wrong type, a result that is not a boolean).
    Error,
}

/// A rule's status with why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleOutcome {
    pub status: RuleStatus,
    /// `None` when it passed.
    pub explanation: Option<Explanation>,
}

/// A compiled rule.
#[derive(Clone)]
pub struct Rule {
    source: String,
    program: Arc<Program>,
    reads: Reads,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Rule").field("source", &self.source).field("reads", &self.reads).finish()
    }
}

/// CEL's standard environment, shared by every evaluation.
static ENVIRONMENT: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

impl Rule {
    /// Compiles `source`, or reports every problem found in it.
    pub fn compile(source: &str) -> Result<Rule, Vec<Problem>> {
        let program = ENVIRONMENT.compile(source).map_err(|errors| {
            errors
                .errors
                .iter()
                .map(|error| Problem {
                    // The parser's positions are 1-based already.
                    line: u32::try_from(error.pos.0.max(1)).unwrap_or(1),
                    column: u32::try_from(error.pos.1.max(1)).unwrap_or(1),
                    message: error.msg.clone(),
                })
                .collect::<Vec<_>>()
        })?;
        let mut check = Check { program: &program, problems: Vec::new(), reads: Reads::default(), nodes: 0 };
        check.visit(program.expression(), &mut Vec::new(), 0);
        if check.nodes > MAX_EXPRESSION_NODES {
            check.problems.push(Problem {
                line: 0,
                column: 0,
                message: format!(
                    "the expression has {} nodes, more than the {MAX_EXPRESSION_NODES} a rule may have",
                    check.nodes
                ),
            });
        }
        let Check { problems, reads, .. } = check;
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Rule { source: source.to_owned(), program: Arc::new(program), reads })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn reads(&self) -> &Reads {
        &self.reads
    }

    /// The rule's status for `subject`.
    pub fn evaluate(&self, subject: &Subject) -> RuleOutcome {
        self.evaluate_in(&Evaluation::new(subject, &self.reads))
    }

    /// The rule's status in an evaluation prepared for several rules of one
    /// subject (it must hold what this rule reads: [`Evaluation::new`] with a
    /// union of the rules' [`Reads`]).
    pub fn evaluate_in(&self, evaluation: &Evaluation<'_>) -> RuleOutcome {
        // The first fact a `fact()` call found missing. Only an error makes
        // it matter: CEL may decide without it (`fact('x') || true`).
        *evaluation.missing.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        let executed = self.program.execute(&evaluation.context);
        let missing = evaluation.missing.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        match executed {
            Err(_) if let Some(name) = missing => {
                RuleOutcome { status: RuleStatus::Unknown, explanation: Some(Explanation::unknown_fact(&name)) }
            }
            Ok(Value::Bool(true)) => RuleOutcome { status: RuleStatus::Pass, explanation: None },
            Ok(Value::Bool(false)) => RuleOutcome {
                status: RuleStatus::Fail,
                explanation: Some(explain::failure(
                    &self.program,
                    &self.source,
                    &evaluation.context,
                    evaluation.entity,
                )),
            },
            Ok(other) => RuleOutcome {
                status: RuleStatus::Error,
                explanation: Some(Explanation::error(
                    &self.source,
                    format!("the rule must give a boolean, and gave {}", explain::describe(&other)),
                )),
            },
            Err(error) => RuleOutcome {
                status: RuleStatus::Error,
                explanation: Some(Explanation::error(&self.source, error.to_string())),
            },
        }
    }
}

impl Reads {
    /// What any of `reads` reads.
    pub fn union<'r>(reads: impl IntoIterator<Item = &'r Reads>) -> Reads {
        let mut all = Reads::default();
        for reads in reads {
            all.fields.extend(reads.fields.iter().cloned());
            all.relations.extend(reads.relations.iter().copied());
            all.nested.extend(reads.nested.iter().copied());
            all.facts.extend(reads.facts.iter().cloned());
            all.now |= reads.now;
        }
        all
    }
}

/// One subject made ready for its rules: the envelope, the clock and the
/// relation and fact functions converted to CEL once, whatever the number
/// of rules evaluated in it. Converting the envelope costs more than
/// evaluating a typical rule.
pub struct Evaluation<'s> {
    context: Context<'s, 's>,
    entity: &'s serde_json::Value,
    missing: Arc<Mutex<Option<String>>>,
}

impl<'s> Evaluation<'s> {
    /// Holds what `reads` names: pass the union of the rules to evaluate.
    pub fn new(subject: &'s Subject, reads: &Reads) -> Self {
        let missing = Arc::new(Mutex::new(None));
        let context = context(subject, reads, &missing);
        Evaluation { context, entity: &subject.entity, missing }
    }
}

/// The context one evaluation runs in: `entity`, `now`, and the functions
/// the rule calls, each over the subject's data.
fn context<'s>(subject: &Subject, reads: &Reads, missing: &Arc<Mutex<Option<String>>>) -> Context<'s, 's> {
    let mut context = Context::with_env(Arc::clone(&ENVIRONMENT));
    context.add_variable_from_value("entity", json_to_cel(&with_defaults(&subject.entity)));
    context.add_variable_from_value("now", Value::Timestamp(subject.now.fixed_offset()));
    for relation in reads.relations.union(&reads.nested).copied() {
        let own = reads.relations.contains(&relation).then(|| {
            let entities = subject.related.get(&relation).map(Vec::as_slice).unwrap_or_default();
            relation_value(relation, entities.iter())
        });
        let of_related: BTreeMap<String, Value> = subject
            .nested
            .get(&relation)
            .map(|by_ref| {
                by_ref.iter().map(|(of, entities)| (of.clone(), relation_value(relation, entities.iter()))).collect()
            })
            .unwrap_or_default();
        // Every name here is ours, not the standard library's (checked at compile).
        let _ = context.add_function(relation.function(), move |Arguments(arguments): Arguments| -> Value {
            match arguments.first() {
                None => own.clone().unwrap_or(Value::Null),
                // A related entity that is absent (`owner()` is null) relates to nothing.
                Some(related) => cel_ref(related)
                    .and_then(|of| of_related.get(&of).cloned())
                    .unwrap_or_else(|| relation_value(relation, std::iter::empty())),
            }
        });
    }
    if !reads.facts.is_empty() {
        let facts: Vec<(String, Option<Value>)> = reads
            .facts
            .iter()
            .map(|name| {
                let current = subject.facts.get(name).filter(|fact| fact.is_current(subject.now));
                (name.clone(), current.map(|fact| json_to_cel(&fact.value)))
            })
            .collect();
        let missing = Arc::clone(missing);
        let _ = context.add_function(FACT_FUNCTION, move |name: Arc<String>| -> Result<Value, ExecutionError> {
            match facts.iter().find(|(known, _)| known == name.as_str()) {
                Some((_, Some(value))) => Ok(value.clone()),
                _ => {
                    let mut first = missing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    first.get_or_insert_with(|| name.to_string());
                    drop(first);
                    Err(ExecutionError::function_error(FACT_FUNCTION, format!("the fact {name} is unknown")))
                }
            }
        });
    }
    context
}

/// What a relation function answers for these entities: the first one (or
/// `null`) for `owner` and `system`, a list of at most [`MAX_RELATED`] otherwise.
fn relation_value<'e>(relation: Relation, mut entities: impl Iterator<Item = &'e serde_json::Value>) -> Value {
    if relation.is_single() {
        entities.next().map_or(Value::Null, json_to_cel)
    } else {
        Value::List(Arc::new(entities.take(MAX_RELATED).map(json_to_cel).collect()))
    }
}

/// The lower-case `kind:namespace/name` of an entity as CEL holds it.
fn cel_ref(entity: &Value) -> Option<String> {
    let Value::Map(map) = entity else { return None };
    let text = |value: Option<&Value>| match value {
        Some(Value::String(text)) => Some(text.as_str().to_owned()),
        _ => None,
    };
    let field = |map: &Map, key: &str| map.map.get(&Key::String(Arc::new(key.to_owned()))).cloned();
    let kind = text(field(map, "kind").as_ref())?;
    let Some(Value::Map(metadata)) = field(map, "metadata") else { return None };
    let name = text(field(&metadata, "name").as_ref())?;
    let namespace = text(field(&metadata, "namespace").as_ref()).unwrap_or_else(|| "default".to_owned());
    Some(format!("{kind}:{namespace}/{name}").to_ascii_lowercase())
}

/// The envelope with the collections Backstage defaults when a file leaves
/// them out (annotations, labels, tags, links), so that
/// `'x' in entity.metadata.annotations` is false there rather than an error.
fn with_defaults(entity: &serde_json::Value) -> std::borrow::Cow<'_, serde_json::Value> {
    let defaults = [("annotations", false), ("labels", false), ("tags", true), ("links", true)];
    let metadata = entity.get("metadata").and_then(serde_json::Value::as_object);
    if metadata.is_some_and(|metadata| defaults.iter().all(|(key, _)| metadata.contains_key(*key))) {
        return std::borrow::Cow::Borrowed(entity);
    }
    let mut entity = entity.clone();
    if let Some(object) = entity.as_object_mut() {
        let metadata = object.entry("metadata").or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
        if let Some(metadata) = metadata.as_object_mut() {
            for (key, is_list) in defaults {
                metadata.entry(key).or_insert_with(|| {
                    if is_list {
                        serde_json::Value::Array(Vec::new())
                    } else {
                        serde_json::Value::Object(serde_json::Map::new())
                    }
                });
            }
        }
    }
    std::borrow::Cow::Owned(entity)
}

/// JSON as CEL sees it: whole numbers are ints, other numbers doubles.
pub(crate) fn json_to_cel(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(flag) => Value::Bool(*flag),
        serde_json::Value::Number(number) => match number.as_i64() {
            Some(int) => Value::Int(int),
            None => Value::Float(number.as_f64().unwrap_or_default()),
        },
        serde_json::Value::String(text) => Value::String(Arc::new(text.clone())),
        serde_json::Value::Array(items) => Value::List(Arc::new(items.iter().map(json_to_cel).collect())),
        serde_json::Value::Object(fields) => Value::Map(Map {
            map: Arc::new(
                fields.iter().map(|(key, value)| (Key::String(Arc::new(key.clone())), json_to_cel(value))).collect(),
            ),
        }),
    }
}

/// Compile-time checks, and what the rule reads, in one walk.
struct Check<'p> {
    program: &'p Program,
    problems: Vec<Problem>,
    reads: Reads,
    nodes: usize,
}

impl Check<'_> {
    fn problem(&mut self, node: &IdedExpr, message: String) {
        let (line, column) = self
            .program
            .source_info()
            .offset_for(node.id)
            .map_or((0, 0), |(start, _)| explain::position(&self.program.source_info().source, start));
        self.problems.push(Problem { line, column, message });
    }

    /// `bound`: the names comprehensions bind around this node.
    fn visit(&mut self, node: &IdedExpr, bound: &mut Vec<String>, comprehensions: usize) {
        self.nodes += 1;
        match &node.expr {
            Expr::Ident(name) => {
                if name == "now" {
                    self.reads.now = true;
                } else if name == "entity" {
                    // The whole entity: a rule that hands it to a function reads all of it.
                    self.reads.fields.insert(String::new());
                } else if !bound.contains(name) {
                    self.problem(
                        node,
                        format!("unknown variable `{name}`: a rule can use {}", VARIABLES.join(" and ")),
                    );
                }
            }
            Expr::Select(select) => {
                if let Some(path) = explain::entity_path(node) {
                    self.reads.fields.insert(path);
                    return;
                }
                self.visit(&select.operand, bound, comprehensions);
            }
            Expr::Call(call) => {
                if call.func_name == "_[_]"
                    && let Some(path) = explain::entity_path(node)
                {
                    self.reads.fields.insert(path);
                    return;
                }
                self.check_function(node, &call.func_name, call.target.is_some(), &call.args);
                if let Some(target) = &call.target {
                    self.visit(target, bound, comprehensions);
                }
                for argument in &call.args {
                    self.visit(argument, bound, comprehensions);
                }
            }
            Expr::Comprehension(comprehension) => {
                if comprehensions >= MAX_COMPREHENSION_DEPTH {
                    self.problem(
                        node,
                        format!("comprehensions nest deeper than the {MAX_COMPREHENSION_DEPTH} levels a rule may use"),
                    );
                }
                self.visit(&comprehension.iter_range, bound, comprehensions);
                self.visit(&comprehension.accu_init, bound, comprehensions);
                let names =
                    [Some(&comprehension.iter_var), comprehension.iter_var2.as_ref(), Some(&comprehension.accu_var)];
                let depth = bound.len();
                bound.extend(names.into_iter().flatten().cloned());
                for inner in [&comprehension.loop_cond, &comprehension.loop_step, &comprehension.result] {
                    self.visit(inner, bound, comprehensions + 1);
                }
                bound.truncate(depth);
            }
            Expr::List(list) => list.elements.iter().for_each(|element| self.visit(element, bound, comprehensions)),
            Expr::Map(map) => {
                for entry in &map.entries {
                    if let cel::common::ast::EntryExpr::MapEntry(entry) = &entry.expr {
                        self.visit(&entry.key, bound, comprehensions);
                        self.visit(&entry.value, bound, comprehensions);
                    }
                }
            }
            Expr::Struct(_) => {
                self.problem(node, "a rule cannot build messages (no protobuf types are declared)".to_owned())
            }
            Expr::Literal(_) | Expr::Unspecified => {}
        }
    }

    fn check_function(&mut self, node: &IdedExpr, name: &str, member: bool, arguments: &[IdedExpr]) {
        if is_operator(name) {
            return;
        }
        if let Some(relation) = Relation::of_function(name) {
            match (member, arguments.len()) {
                (false, 0) => {
                    self.reads.relations.insert(relation);
                }
                // A literal is never an entity; anything else may evaluate to one.
                (false, 1) if !matches!(arguments[0].expr, Expr::Literal(_) | Expr::List(_) | Expr::Map(_)) => {
                    self.reads.nested.insert(relation);
                }
                _ => self.problem(
                    node,
                    format!(
                        "`{name}` takes no argument (this entity's) or one related entity (`{name}(owner())`), and is not a method"
                    ),
                ),
            }
            return;
        }
        if name == FACT_FUNCTION {
            match arguments {
                [IdedExpr { expr: Expr::Literal(LiteralValue::String(fact)), .. }] if !member => {
                    self.reads.facts.insert(fact.inner().to_owned());
                }
                _ => self
                    .problem(node, format!("`{FACT_FUNCTION}` takes one name in quotes, e.g. fact('github.archived')")),
            }
            return;
        }
        if !is_standard_function(name) {
            let ours: Vec<_> =
                Relation::ALL.iter().map(|relation| relation.function()).chain([FACT_FUNCTION]).collect();
            self.problem(
                node,
                format!("unknown function `{name}`: a rule can call CEL's standard functions and {}", ours.join(", ")),
            );
        }
    }
}

/// Operators are calls in CEL's tree (`_&&_`, `!_`, `@in`, `_[_]`).
fn is_operator(name: &str) -> bool {
    name.starts_with('_') || name.starts_with('@') || name == "!_" || name == "-_"
}

/// Whether CEL's standard environment declares `name`. The environment only
/// tells through refusing a function declared again under that name.
fn is_standard_function(name: &str) -> bool {
    let mut scratch = Context::with_env(Arc::clone(&ENVIRONMENT));
    scratch.add_function(name, || false).is_err()
}
