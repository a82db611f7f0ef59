//! Why a rule did not pass, as data: the part of the expression that did not
//! hold, the entity path it looked at, what it expected and what it found.

use std::sync::Arc;

use cel::common::ast::{Expr, IdedExpr, LiteralValue};
use cel::objects::Key;
use cel::{Context, Program, Value};
use serde::{Deserialize, Serialize};

/// Why a rule failed, is unknown, or could not be evaluated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    /// The part of the rule that did not hold: the first failing operand of
    /// its top-level `&&`, or the whole rule.
    pub expression: String,
    /// The entity path it looked at (`metadata.annotations.pagerduty.com/service-id`),
    /// `facts.NAME` for a fact, `None` when it looked at no one path.
    pub path: Option<String>,
    /// What the rule wanted there (`present`, `== 'production'`, `true`).
    pub expected: String,
    /// What it found (`null` when the path is absent).
    pub actual: serde_json::Value,
}

impl Explanation {
    pub(crate) fn error(expression: &str, message: String) -> Self {
        Explanation {
            expression: expression.trim().to_owned(),
            path: None,
            expected: "an evaluation without error".to_owned(),
            actual: serde_json::Value::String(message),
        }
    }

    pub(crate) fn unknown_fact(name: &str) -> Self {
        Explanation {
            expression: format!("fact('{name}')"),
            path: Some(format!("facts.{name}")),
            expected: "a fact observed within its time to live".to_owned(),
            actual: serde_json::Value::Null,
        }
    }
}

/// The explanation of a rule that evaluated to `false`.
pub(crate) fn failure(program: &Program, source: &str, context: &Context, entity: &serde_json::Value) -> Explanation {
    let mut conjuncts = Vec::new();
    flatten_and(program.expression(), &mut conjuncts);
    let failing = conjuncts
        .iter()
        .copied()
        .find(|conjunct| !matches!(Value::resolve(conjunct, context), Ok(Value::Bool(true))))
        .unwrap_or(program.expression());
    let expression = source_of(program, source, failing).unwrap_or(source).trim().to_owned();
    explain_node(failing, expression, context, entity)
}

/// The operands of nested `&&`s, left to right.
fn flatten_and<'e>(node: &'e IdedExpr, into: &mut Vec<&'e IdedExpr>) {
    match &node.expr {
        Expr::Call(call) if call.func_name == "_&&_" && call.target.is_none() => {
            call.args.iter().for_each(|argument| flatten_and(argument, into));
        }
        _ => into.push(node),
    }
}

fn explain_node(node: &IdedExpr, expression: String, context: &Context, entity: &serde_json::Value) -> Explanation {
    let found = |operand: &IdedExpr| cel_to_json(&Value::resolve(operand, context).unwrap_or(Value::Null));
    match &node.expr {
        // A failed `||` failed every operand: the last is, by the usual
        // guard-then-check shape (`!has(x) || x in [...]`), the check.
        Expr::Call(call) if call.func_name == "_||_" && call.target.is_none() && !call.args.is_empty() => {
            explain_node(&call.args[call.args.len() - 1], expression, context, entity)
        }
        // has(entity.a.b)
        Expr::Select(select) if select.test => Explanation {
            expression,
            path: entity_path(&select.operand).map(|path| join(&path, &select.field)),
            expected: "present".to_owned(),
            actual: serde_json::Value::Null,
        },
        Expr::Call(call) if call.func_name == "@in" && call.args.len() == 2 => {
            let (key, container) = (&call.args[0], &call.args[1]);
            match (literal(key), entity_path(container)) {
                (Some(serde_json::Value::String(key)), Some(path)) => Explanation {
                    expression,
                    path: Some(join(&path, &key)),
                    expected: "present".to_owned(),
                    actual: serde_json::Value::Null,
                },
                // entity.spec.lifecycle in ['production', 'experimental']
                _ if matches!(container.expr, Expr::List(_)) => Explanation {
                    expression,
                    path: first_entity_path(key),
                    expected: format!("one of {}", found(container)),
                    actual: found(key),
                },
                _ => Explanation {
                    expression,
                    path: entity_path(container),
                    expected: format!("to contain {}", found(key)),
                    actual: found(container),
                },
            }
        }
        Expr::Call(call) if call.args.len() == 2 && comparison(&call.func_name).is_some() => {
            let operator = comparison(&call.func_name).unwrap_or_default();
            let (left, right) = (&call.args[0], &call.args[1]);
            // The side that is a literal is what was expected; the other was looked at.
            let (looked, expected) = match (literal(left), literal(right)) {
                (None, Some(value)) => (left, format!("{operator} {value}")),
                (Some(value), None) => (right, format!("{} {value}", mirrored(operator))),
                _ => (left, format!("{operator} {}", found(right))),
            };
            Explanation { expression, path: first_entity_path(looked), expected, actual: found(looked) }
        }
        Expr::Call(call) if call.func_name == "!_" && call.args.len() == 1 => Explanation {
            expression,
            path: first_entity_path(&call.args[0]),
            expected: "false".to_owned(),
            actual: found(&call.args[0]),
        },
        _ => {
            let path = first_entity_path(node);
            let actual = path.as_deref().map_or(serde_json::Value::Bool(false), |path| value_at(entity, path));
            Explanation { expression, path, expected: "true".to_owned(), actual }
        }
    }
}

fn comparison(function: &str) -> Option<&'static str> {
    Some(match function {
        "_==_" => "==",
        "_!=_" => "!=",
        "_<_" => "<",
        "_<=_" => "<=",
        "_>_" => ">",
        "_>=_" => ">=",
        _ => return None,
    })
}

/// `5 < x` expects `x > 5`.
fn mirrored(operator: &str) -> &str {
    match operator {
        "<" => ">",
        "<=" => ">=",
        ">" => "<",
        ">=" => "<=",
        other => other,
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() { field.to_owned() } else { format!("{path}.{field}") }
}

fn literal(node: &IdedExpr) -> Option<serde_json::Value> {
    match &node.expr {
        Expr::Literal(LiteralValue::String(text)) => Some(serde_json::Value::String(text.inner().to_owned())),
        Expr::Literal(LiteralValue::Int(int)) => Some(serde_json::Value::from(*int.inner())),
        Expr::Literal(LiteralValue::UInt(uint)) => Some(serde_json::Value::from(*uint.inner())),
        Expr::Literal(LiteralValue::Double(double)) => Some(serde_json::Value::from(*double.inner())),
        Expr::Literal(LiteralValue::Boolean(flag)) => Some(serde_json::Value::Bool(*flag.inner())),
        Expr::Literal(LiteralValue::Null) => Some(serde_json::Value::Null),
        _ => None,
    }
}

/// The path under `entity` a chain of selections and constant indexes
/// spells (`entity.metadata.annotations['a/b']` is `metadata.annotations.a/b`);
/// `None` when the node is not such a chain.
pub(crate) fn entity_path(node: &IdedExpr) -> Option<String> {
    match &node.expr {
        Expr::Ident(name) if name == "entity" => Some(String::new()),
        Expr::Select(select) if !select.test => entity_path(&select.operand).map(|path| join(&path, &select.field)),
        Expr::Call(call) if call.func_name == "_[_]" && call.target.is_none() && call.args.len() == 2 => {
            let key = match literal(&call.args[1])? {
                serde_json::Value::String(key) => key,
                other => other.to_string(),
            };
            entity_path(&call.args[0]).map(|path| join(&path, &key))
        }
        _ => None,
    }
}

/// `facts.NAME` for `fact('NAME')`, and the fields selected from it
/// (`fact('pagerduty.service').status` is `facts.pagerduty.service.status`).
fn fact_path(node: &IdedExpr) -> Option<String> {
    match &node.expr {
        Expr::Call(call) if call.func_name == crate::subject::FACT_FUNCTION && call.target.is_none() => {
            match call.args.as_slice() {
                [IdedExpr { expr: Expr::Literal(LiteralValue::String(name)), .. }] => {
                    Some(format!("facts.{}", name.inner()))
                }
                _ => None,
            }
        }
        Expr::Select(select) if !select.test => fact_path(&select.operand).map(|path| join(&path, &select.field)),
        _ => None,
    }
}

/// The first entity path read anywhere in `node`, left to right.
fn first_entity_path(node: &IdedExpr) -> Option<String> {
    // `entity` itself is no path to show.
    if let Some(path) = entity_path(node).or_else(|| fact_path(node)).filter(|path| !path.is_empty()) {
        return Some(path);
    }
    match &node.expr {
        Expr::Select(select) => first_entity_path(&select.operand),
        Expr::Call(call) => call.target.iter().map(|target| &**target).chain(&call.args).find_map(first_entity_path),
        Expr::List(list) => list.elements.iter().find_map(first_entity_path),
        Expr::Comprehension(comprehension) => first_entity_path(&comprehension.iter_range),
        _ => None,
    }
}

/// The value at an entity path (`null` when absent).
fn value_at(entity: &serde_json::Value, path: &str) -> serde_json::Value {
    path.split('.')
        .filter(|segment| !segment.is_empty())
        .try_fold(entity, |value, segment| value.get(segment))
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

/// The text of `node` in `source`: from the least start to the greatest
/// end of the nodes in it (a binary operator's own range is the operator's).
fn source_of<'s>(program: &Program, source: &'s str, node: &IdedExpr) -> Option<&'s str> {
    let mut range: Option<(u32, u32)> = None;
    visit_ids(node, &mut |id| {
        if let Some((start, stop)) = program.source_info().offset_for(id) {
            range = Some(range.map_or((start, stop), |(least, most)| (least.min(start), most.max(stop))));
        }
    });
    let (start, stop) = range?;
    // A node's range is its own token's (a selection's is its `.`, an
    // operator's the operator): the text runs on over the selected field's
    // name and the brackets still open.
    // A global call's own range starts at its `(`: its name runs back from there.
    let mut start = (start as usize).min(source.len());
    while let Some(before) = source.get(..start)?.chars().next_back().filter(|c| c.is_alphanumeric() || *c == '_') {
        start -= before.len_utf8();
    }
    let mut end = (stop as usize + 1).min(source.len());
    let mut depth: i32 = source
        .get(start..end)?
        .chars()
        .map(|character| i32::from(matches!(character, '(' | '[')) - i32::from(matches!(character, ')' | ']')))
        .sum();
    let mut rest = source.get(end..)?.chars().peekable();
    while let Some(character) = rest.next_if(|character| character.is_alphanumeric() || *character == '_') {
        end += character.len_utf8();
    }
    for character in rest {
        if depth <= 0 {
            break;
        }
        depth += i32::from(matches!(character, '(' | '[')) - i32::from(matches!(character, ')' | ']'));
        end += character.len_utf8();
    }
    source.get(start..end)
}

/// Where an offset into `source` is: 1-based line and column.
pub(crate) fn position(source: &str, offset: u32) -> (u32, u32) {
    let before = source.get(..offset as usize).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
    (u32::try_from(line).unwrap_or(u32::MAX), u32::try_from(column).unwrap_or(u32::MAX))
}

fn visit_ids(node: &IdedExpr, visit: &mut dyn FnMut(u64)) {
    visit(node.id);
    match &node.expr {
        Expr::Select(select) => visit_ids(&select.operand, visit),
        Expr::Call(call) => {
            call.target.iter().for_each(|target| visit_ids(target, visit));
            call.args.iter().for_each(|argument| visit_ids(argument, visit));
        }
        Expr::List(list) => list.elements.iter().for_each(|element| visit_ids(element, visit)),
        Expr::Comprehension(comprehension) => {
            [&comprehension.iter_range, &comprehension.loop_step, &comprehension.result]
                .into_iter()
                .for_each(|inner| visit_ids(inner, visit));
        }
        _ => {}
    }
}

/// A CEL value as JSON (timestamps and durations as text).
pub(crate) fn cel_to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Null => serde_json::Value::Null,
        Value::Bool(flag) => serde_json::Value::Bool(*flag),
        Value::Int(int) => serde_json::Value::from(*int),
        Value::UInt(uint) => serde_json::Value::from(*uint),
        Value::Float(float) => serde_json::Value::from(*float),
        Value::String(text) => serde_json::Value::String(text.to_string()),
        Value::List(items) => serde_json::Value::Array(items.iter().map(cel_to_json).collect()),
        Value::Map(map) => serde_json::Value::Object(
            map.map
                .iter()
                .map(|(key, value)| {
                    let key = match key {
                        Key::String(text) => text.to_string(),
                        other => format!("{other:?}"),
                    };
                    (key, cel_to_json(value))
                })
                .collect(),
        ),
        Value::Timestamp(at) => serde_json::Value::String(at.to_rfc3339()),
        other => serde_json::Value::String(describe(other)),
    }
}

/// A short description of a value for messages.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::String(text) => format!("the string {:?}", Arc::clone(text)),
        other => format!("{other:?}"),
    }
}
