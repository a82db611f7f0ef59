//! Backstage's `${{ ... }}` expressions, rendered by a data-only minijinja
//! environment: templates read the data they are given and nothing else.
//!
//! The sandbox, and why each part of it:
//! - No loader and no `include`/`import`/`extends` (minijinja is built
//!   without `multi_template`): a template can never name a file.
//! - No function reaches the environment, the clock or the network; the
//!   `debug()` global, which dumps the whole context (secrets included), is
//!   removed.
//! - Fuel bounds the work of one render, and the recursion limit bounds
//!   nesting, so a loop bomb ends with [`ExpressionProblem::OutOfFuel`]
//!   (the class of CVE-2022-36067, where a template escaped Backstage's
//!   sandbox, has no surface here: there is no host language to escape to).
//! - Fuel does not see everything: minijinja's `list * n` is a lazy sequence
//!   that costs nothing until it is written out, and writing a value out
//!   (text, `dump`, a typed value) happens after fuel has been charged. So
//!   every value that leaves minijinja goes through a bounded writer or a
//!   bounded walk ([`MAX_VALUE_NODES`], [`MAX_VALUE_BYTES`],
//!   [`MAX_VALUE_DEPTH`]) and stops with [`ExpressionProblem::TooLarge`].
//! - Fuel is per render, and a task renders many strings (every input
//!   string, every skeleton file), so a task also has a [`RenderBudget`] of
//!   rendered bytes shared by all its renders; when it is spent the render
//!   fails with [`ExpressionProblem::BudgetSpent`].
//!
//! Syntax: variables are `${{ ... }}` as in Backstage. Blocks are `${% ... %}`
//! and comments `${# ... #}`, not Jinja's `{% %}` and `{# #}`: skeleton files
//! are often themselves templates for other tools (Helm, Jekyll, GitHub
//! Actions, Ansible), and plain `{%` in them must come through untouched.
//! The price is that Nunjucks blocks written `{% if %}` in a Backstage
//! skeleton must be written `${% if %}` here.
//!
//! Undefined values: Backstage (Nunjucks) renders an undefined value as the
//! empty string, and templates rely on it for optional parameters. We keep
//! that (minijinja's `Chainable`: `parameters.system` and even
//! `steps.publish.output.remoteUrl` of a skipped step render empty), but are
//! strict about the first name of every variable: a typo such as
//! `${{ paramters.name }}` is an error, not a silently empty string.

mod filters;

use std::collections::HashSet;
use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Serde, ValueKind};
use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use serde_json::{Map, Value};

/// Fuel of one render (one string or one skeleton file, not a task): about
/// this many instructions, or 64 bytes of memory each (≈ 6 MB). A skeleton
/// file of a few thousand lines uses a few thousand; a loop of a million
/// iterations cannot finish. What a whole task renders is bounded by its
/// [`RenderBudget`].
const FUEL: u64 = 100_000;

/// Most values (items, entries, scalars) one value may hold when it leaves
/// minijinja: a lazy `range(100000) * 100` would otherwise become ten
/// million JSON values.
const MAX_VALUE_NODES: usize = 1_000_000;

/// Most bytes one value may take when it leaves minijinja, as text or JSON.
const MAX_VALUE_BYTES: usize = 8 * 1024 * 1024;

/// Deepest nesting of a value that leaves minijinja; walking it recurses.
const MAX_VALUE_DEPTH: usize = 128;

/// Bytes one task may render in all, over every step input and skeleton
/// file: far above a real service skeleton, far below what exhausts memory.
pub(crate) const TASK_RENDER_BYTES: usize = 64 * 1024 * 1024;

/// The detail of the minijinja error the formatter and `dump` raise for a
/// value over the limits, so that it maps back to
/// [`ExpressionProblem::TooLarge`].
const TOO_LARGE_DETAIL: &str = "the value is too large to write out";

/// Runtime nesting limit (recursive loops, nested calls).
const RECURSION_LIMIT: usize = 64;

/// Functions every template may call: the names of minijinja's globals.
const GLOBALS: &[&str] = &["range", "dict", "namespace"];

/// Why an expression could not be rendered. Messages name the problem
/// only, never a value, since values may be secrets.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExpressionProblem {
    #[error("the expression is not valid syntax: {0}")]
    Syntax(String),
    #[error("`{name}` is not defined here (the expression can use {known})")]
    UnknownVariable { name: String, known: String },
    #[error("the expression does too much work and was stopped (out of fuel)")]
    OutOfFuel,
    #[error(
        "the expression's value is too large (more than {MAX_VALUE_NODES} values, {MAX_VALUE_BYTES} bytes or \
         {MAX_VALUE_DEPTH} levels of nesting)"
    )]
    TooLarge,
    #[error("the task has rendered more than {TASK_RENDER_BYTES} bytes of templates in all and was stopped")]
    BudgetSpent,
    #[error("the expression failed: {0}")]
    Failed(String),
    #[error("the expression's value is not JSON: {0}")]
    NotJson(String),
}

/// An expression problem with the path of the string that holds it (a
/// field path such as `spec.steps[0].input.values.name`, or a file path).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct ExpressionError {
    pub path: String,
    pub problem: ExpressionProblem,
}

/// The bytes a task may still render, shared by every render of the task
/// (the runner's step inputs and every action's skeleton files).
#[derive(Debug)]
pub(crate) struct RenderBudget {
    bytes_left: AtomicUsize,
}

impl RenderBudget {
    /// A budget of [`TASK_RENDER_BYTES`] for one task.
    pub(crate) fn for_task() -> Arc<Self> {
        Self::with_bytes(TASK_RENDER_BYTES)
    }

    pub(crate) fn with_bytes(n_bytes: usize) -> Arc<Self> {
        Arc::new(Self { bytes_left: AtomicUsize::new(n_bytes) })
    }

    /// Takes `n_bytes` from the budget, or empties it and fails when fewer
    /// are left, so that every later render of the task fails too.
    fn spend(&self, n_bytes: usize) -> Result<(), ExpressionProblem> {
        let spent =
            self.bytes_left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(n_bytes));
        if spent.is_err() {
            self.bytes_left.store(0, Ordering::Relaxed);
            return Err(ExpressionProblem::BudgetSpent);
        }
        Ok(())
    }
}

/// The data an expression reads (`parameters`, `steps`, `user`, `secrets`
/// for step inputs; `values` for skeleton files), converted once for many
/// renders, and the task's budget that every render spends from.
pub(crate) struct ExpressionContext {
    value: minijinja::Value,
    roots: Vec<String>,
    budget: Arc<RenderBudget>,
}

impl ExpressionContext {
    pub(crate) fn new(data: &Map<String, Value>, budget: Arc<RenderBudget>) -> Self {
        Self { value: minijinja::Value::from(Serde(data)), roots: data.keys().cloned().collect(), budget }
    }
}

/// The sandboxed environment. Build one and share it: it holds no task data.
pub(crate) struct Expressions {
    environment: Environment<'static>,
}

impl Expressions {
    pub(crate) fn new() -> Self {
        let mut environment = Environment::new();
        let syntax = SyntaxConfig::builder()
            .variable_delimiters("${{", "}}")
            .block_delimiters("${%", "%}")
            .comment_delimiters("${#", "#}")
            // Rendered files end as their skeleton does.
            .keep_trailing_newline(true)
            .build()
            .expect("the delimiters are distinct and non-empty");
        environment.set_syntax(syntax);
        environment.set_fuel(Some(FUEL));
        environment.set_recursion_limit(RECURSION_LIMIT);
        environment.set_undefined_behavior(UndefinedBehavior::Chainable);
        // Generated files are not HTML: no escaping, whatever their name (Backstage: autoescape false).
        environment.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        // Nunjucks renders null as empty; minijinja would write `none`.
        environment.set_formatter(|output, _state, value| {
            if value.is_none() || value.is_undefined() {
                return Ok(());
            }
            // Strings were charged fuel when they were made; containers are
            // written (and a lazy `list * n` made) only now, so they are cut off.
            if let Some(text) = value.as_str() {
                return output.write_str(text).map_err(minijinja::Error::from);
            }
            // Nunjucks writes JavaScript's `true`/`false`; minijinja would write Python's `True`.
            if value.kind() == ValueKind::Bool {
                return output
                    .write_str(if value.is_true() { "true" } else { "false" })
                    .map_err(minijinja::Error::from);
            }
            // Measured first: once a write fails, minijinja's Display still iterates the rest of
            // every open sequence (up to 100M items each), it only stops writing.
            BoundedWalk::default().measure(value, 0).map_err(|_| too_large())?;
            let mut bounded = BoundedWriter { inner: output, bytes_left: MAX_VALUE_BYTES, exceeded: false };
            match write!(bounded, "{value}") {
                Err(_) if bounded.exceeded => Err(too_large()),
                written => written.map_err(minijinja::Error::from),
            }
        });
        environment.remove_global("debug");
        filters::register(&mut environment);
        Self { environment }
    }

    /// Renders text: every `${{ }}` is interpolated as a string. For file
    /// names and contents.
    pub(crate) fn render_text(
        &self,
        source: &str,
        context: &ExpressionContext,
        path: &str,
    ) -> Result<String, ExpressionError> {
        let at = |problem| ExpressionError { path: path.to_owned(), problem };
        if !source.contains("${") {
            return Ok(source.to_owned());
        }
        let template = self.environment.template_from_str(source).map_err(|error| at(problem_of(&error)))?;
        check_roots(template.undeclared_variables(false), &context.roots).map_err(at)?;
        let rendered = template.render(&context.value).map_err(|error| at(problem_of(&error)))?;
        context.budget.spend(rendered.len()).map_err(at)?;
        Ok(rendered)
    }

    /// Renders a JSON tree (a step's input) the way Backstage does: a string
    /// that is exactly one `${{ expr }}` becomes the expression's typed value
    /// (number, boolean, object...), other strings are interpolated, keys are
    /// left alone. An undefined value removes its key from an object and is
    /// null in a list; `None` is returned when the whole tree is undefined.
    ///
    /// One difference from Backstage is kept on purpose: a string of text
    /// and expressions that renders empty (`"${{ a }}${{ b }}"` with both
    /// undefined) stays `""` here, where Backstage drops its key. An empty
    /// string is an explicit value an action can check; a single undefined
    /// expression still drops its key.
    pub(crate) fn render_value(
        &self,
        value: &Value,
        context: &ExpressionContext,
        path: &str,
    ) -> Result<Option<Value>, ExpressionError> {
        Ok(match value {
            Value::String(text) => match single_expression(text) {
                Some(expression) => self.evaluate(expression, context, path)?,
                None => Some(Value::String(self.render_text(text, context, path)?)),
            },
            Value::Array(items) => {
                let mut rendered = Vec::with_capacity(items.len());
                for (index, item) in items.iter().enumerate() {
                    let item = self.render_value(item, context, &format!("{path}[{index}]"))?;
                    rendered.push(item.unwrap_or(Value::Null));
                }
                Some(Value::Array(rendered))
            }
            Value::Object(fields) => {
                let mut rendered = Map::new();
                for (key, field) in fields {
                    if let Some(field) = self.render_value(field, context, &format!("{path}.{key}"))? {
                        rendered.insert(key.clone(), field);
                    }
                }
                Some(Value::Object(rendered))
            }
            other => Some(other.clone()),
        })
    }

    /// Compiles every string of a JSON tree and checks that it only uses the
    /// given names, without rendering anything: template problems are found
    /// before a task starts.
    pub(crate) fn check_value(&self, value: &Value, roots: &[&str], path: &str, problems: &mut Vec<ExpressionError>) {
        match value {
            Value::String(text) if text.contains("${") => {
                let roots: Vec<String> = roots.iter().map(|root| (*root).to_owned()).collect();
                let undeclared = match single_expression(text) {
                    Some(expression) => self
                        .environment
                        .compile_expression(expression)
                        .map(|compiled| compiled.undeclared_variables(false)),
                    None => {
                        self.environment.template_from_str(text).map(|template| template.undeclared_variables(false))
                    }
                };
                let checked =
                    undeclared.map_err(|error| problem_of(&error)).and_then(|names| check_roots(names, &roots));
                if let Err(problem) = checked {
                    problems.push(ExpressionError { path: path.to_owned(), problem });
                }
            }
            Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    self.check_value(item, roots, &format!("{path}[{index}]"), problems);
                }
            }
            Value::Object(fields) => {
                for (key, field) in fields {
                    self.check_value(field, roots, &format!("{path}.{key}"), problems);
                }
            }
            _ => {}
        }
    }
    fn evaluate(
        &self,
        expression: &str,
        context: &ExpressionContext,
        path: &str,
    ) -> Result<Option<Value>, ExpressionError> {
        let at = |problem| ExpressionError { path: path.to_owned(), problem };
        let compiled = self.environment.compile_expression(expression).map_err(|error| at(problem_of(&error)))?;
        check_roots(compiled.undeclared_variables(false), &context.roots).map_err(at)?;
        let value = compiled.eval(&context.value).map_err(|error| at(problem_of(&error)))?;
        if value.is_undefined() {
            return Ok(None);
        }
        let mut walk = BoundedWalk::default();
        let json = walk.convert(&value, 0).map_err(at)?;
        context.budget.spend(walk.n_bytes).map_err(at)?;
        Ok(Some(json))
    }
}

fn too_large() -> minijinja::Error {
    minijinja::Error::new(ErrorKind::InvalidOperation, TOO_LARGE_DETAIL)
}

/// Writes through to minijinja's output until `bytes_left` is spent, then
/// fails, which stops the value's `Display` (and a lazy sequence's
/// iteration) there.
struct BoundedWriter<'a, W: fmt::Write> {
    inner: &'a mut W,
    bytes_left: usize,
    exceeded: bool,
}

impl<W: fmt::Write> fmt::Write for BoundedWriter<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        match self.bytes_left.checked_sub(text.len()) {
            Some(left) => {
                self.bytes_left = left;
                self.inner.write_str(text)
            }
            None => {
                self.exceeded = true;
                Err(fmt::Error)
            }
        }
    }
}

/// Converts a minijinja value to JSON one item at a time, counting values
/// and bytes and stopping at the limits. `serde_json::to_value` would
/// reserve a lazy sequence's whole length up front and then fill it.
#[derive(Default)]
pub(crate) struct BoundedWalk {
    n_nodes: usize,
    n_bytes: usize,
}

impl BoundedWalk {
    fn count(&mut self, n_bytes: usize) -> Result<(), ExpressionProblem> {
        self.n_nodes += 1;
        self.n_bytes = self.n_bytes.saturating_add(n_bytes);
        if self.n_nodes > MAX_VALUE_NODES || self.n_bytes > MAX_VALUE_BYTES {
            return Err(ExpressionProblem::TooLarge);
        }
        Ok(())
    }

    /// The value as JSON, or an error as soon as it passes a limit.
    pub(crate) fn convert(&mut self, value: &minijinja::Value, depth: usize) -> Result<Value, ExpressionProblem> {
        self.walk(value, depth, true)
    }

    /// Checks the value against the limits without building anything.
    fn measure(&mut self, value: &minijinja::Value, depth: usize) -> Result<(), ExpressionProblem> {
        self.walk(value, depth, false).map(drop)
    }

    /// Visits every item, counting; builds the JSON only when `build` is set
    /// (otherwise every container is returned empty).
    fn walk(&mut self, value: &minijinja::Value, depth: usize, build: bool) -> Result<Value, ExpressionProblem> {
        if depth > MAX_VALUE_DEPTH {
            return Err(ExpressionProblem::TooLarge);
        }
        let failed = |error: minijinja::Error| problem_of(&error);
        match value.kind() {
            ValueKind::Seq | ValueKind::Iterable => {
                self.count(2)?;
                let mut items = Vec::new();
                for item in value.try_iter().map_err(failed)? {
                    let item = self.walk(&item, depth + 1, build)?;
                    if build {
                        items.push(item);
                    }
                }
                Ok(Value::Array(items))
            }
            ValueKind::Map => {
                self.count(2)?;
                let mut fields = Map::new();
                for key in value.try_iter().map_err(failed)? {
                    let name = key.as_str().map_or_else(|| key.to_string(), str::to_owned);
                    self.count(name.len())?;
                    let field = value.get_item(&key).map_err(failed)?;
                    let field = self.walk(&field, depth + 1, build)?;
                    if build {
                        fields.insert(name, field);
                    }
                }
                Ok(Value::Object(fields))
            }
            ValueKind::Invalid => {
                Err(ExpressionProblem::Failed("the value could not be computed (an error inside it)".into()))
            }
            _ => {
                // Scalars: a string or bytes costs its length, anything else a number's worth.
                let n_bytes = value.as_str().map(str::len).or_else(|| value.as_bytes().map(<[u8]>::len)).unwrap_or(16);
                self.count(n_bytes)?;
                if !build {
                    return Ok(Value::Null);
                }
                serde_json::to_value(value).map_err(|error| ExpressionProblem::NotJson(error.to_string()))
            }
        }
    }
}

/// The expression inside a string that is exactly one `${{ ... }}`, with
/// nothing around it: as in Backstage (`isSingleTemplateString`), a space
/// or newline outside the braces makes the string text, so
/// `" ${{ parameters.debug }} "` renders `" false "`, not `false`.
fn single_expression(text: &str) -> Option<&str> {
    let inner = text.strip_prefix("${{")?.strip_suffix("}}")?;
    (!inner.contains("${") && !inner.contains("}}")).then_some(inner)
}

fn check_roots(undeclared: HashSet<String>, roots: &[String]) -> Result<(), ExpressionProblem> {
    let mut unknown: Vec<String> =
        undeclared.into_iter().filter(|name| !roots.contains(name) && !GLOBALS.contains(&name.as_str())).collect();
    unknown.sort();
    match unknown.into_iter().next() {
        None => Ok(()),
        Some(name) => {
            let known = roots.iter().map(|root| format!("`{root}`")).collect::<Vec<_>>().join(", ");
            Err(ExpressionProblem::UnknownVariable { name, known })
        }
    }
}

fn problem_of(error: &minijinja::Error) -> ExpressionProblem {
    let detail = error.detail().map(str::to_owned).unwrap_or_else(|| error.kind().to_string());
    let detail = match error.line() {
        Some(line) => format!("{detail} (line {line})"),
        None => detail,
    };
    if error.detail() == Some(TOO_LARGE_DETAIL) {
        return ExpressionProblem::TooLarge;
    }
    match error.kind() {
        ErrorKind::OutOfFuel => ExpressionProblem::OutOfFuel,
        ErrorKind::SyntaxError => ExpressionProblem::Syntax(detail),
        _ => ExpressionProblem::Failed(detail),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde_json::json;

    use super::*;

    fn context(data: Value) -> ExpressionContext {
        ExpressionContext::new(data.as_object().unwrap(), RenderBudget::for_task())
    }

    fn task_context() -> ExpressionContext {
        context(json!({
            "parameters": {"name": "checkout", "replicas": 3, "debug": false, "tags": ["a", "b"], "system": null,
                "owner": "group:default/team-a", "repoUrl": "github.com?owner=acme&repo=checkout"},
            "steps": {"publish": {"output": {"remoteUrl": "https://github.com/acme/checkout"}}},
            "user": {"ref": "user:default/ada", "entity": {"metadata": {"name": "ada"}}},
            "secrets": {"token": "s3cret"},
        }))
    }

    fn render(source: &str) -> Result<String, ExpressionError> {
        Expressions::new().render_text(source, &task_context(), "file")
    }

    fn value(source: &str) -> Option<Value> {
        Expressions::new().render_value(&json!(source), &task_context(), "input").unwrap()
    }

    #[test]
    fn a_string_that_is_one_expression_keeps_the_values_type() {
        assert_eq!(value("${{ parameters.replicas }}"), Some(json!(3)));
        assert_eq!(value("${{ parameters.debug }}"), Some(json!(false)));
        assert_eq!(value("${{ parameters.tags }}"), Some(json!(["a", "b"])));
        assert_eq!(
            value("${{ steps.publish.output }}"),
            Some(json!({"remoteUrl": "https://github.com/acme/checkout"}))
        );
        assert_eq!(value("${{ parameters.name }}"), Some(json!("checkout")));
    }

    #[test]
    fn an_expression_with_anything_around_it_is_text_as_in_backstage() {
        assert_eq!(value(" ${{ parameters.replicas }} "), Some(json!(" 3 ")));
        assert_eq!(value("${{ parameters.replicas }}\n"), Some(json!("3\n")));
        assert_eq!(value("${{ parameters.tags | length }} "), Some(json!("2 ")));
        assert_eq!(value(" ${{ parameters.debug }} ${{ not parameters.debug }}"), Some(json!(" false true")));
    }

    #[test]
    fn text_and_expressions_that_render_empty_stay_an_empty_string() {
        assert_eq!(value("${{ parameters.missing }}${{ parameters.system }}"), Some(json!("")));
    }

    #[test]
    fn other_strings_interpolate_every_expression_as_text() {
        assert_eq!(value("svc-${{ parameters.name }} x${{ parameters.replicas }}"), Some(json!("svc-checkout x3")));
        assert_eq!(
            render("${{ user.entity.metadata.name }} owns ${{ parameters.name }}").unwrap(),
            "ada owns checkout"
        );
    }

    #[test]
    fn an_input_tree_renders_leaves_and_keeps_keys() {
        let input = json!({"${{ parameters.name }}": ["${{ parameters.replicas }}", 1, true], "n": {"x": "${{ parameters.name }}"}});
        let rendered = Expressions::new().render_value(&input, &task_context(), "input").unwrap();
        assert_eq!(rendered, Some(json!({"${{ parameters.name }}": [3, 1, true], "n": {"x": "checkout"}})));
    }

    #[test]
    fn an_undefined_value_drops_its_key_and_renders_as_empty_text() {
        let input = json!({"system": "${{ parameters.missing }}", "url": "${{ steps.skipped.output.remoteUrl }}", "list": ["${{ parameters.missing }}"]});
        let rendered = Expressions::new().render_value(&input, &task_context(), "input").unwrap();
        assert_eq!(rendered, Some(json!({"list": [null]})));
        assert_eq!(render("[${{ parameters.missing }}][${{ parameters.system }}]").unwrap(), "[][]");
    }

    #[test]
    fn an_unknown_first_name_is_an_error_not_an_empty_string() {
        let error = render("${{ paramters.name }}").unwrap_err();
        assert_eq!(error.path, "file");
        assert!(
            matches!(&error.problem, ExpressionProblem::UnknownVariable { name, .. } if name == "paramters"),
            "{error}"
        );
        assert!(error.to_string().contains("`parameters`"), "{error}");
    }

    #[test]
    fn environment_variables_are_not_reachable() {
        for source in ["${{ env.PATH }}", "${{ environ.PATH }}", "${{ process.env.PATH }}", "${{ os.environ }}"] {
            let error = render(source).unwrap_err();
            assert!(matches!(error.problem, ExpressionProblem::UnknownVariable { .. }), "{source}: {error}");
        }
    }

    #[test]
    fn include_import_and_extends_do_not_exist() {
        for source in [
            "${% include '/etc/passwd' %}",
            "${% import '/etc/passwd' as p %}",
            "${% extends '/etc/passwd' %}",
            "${% from '/etc/passwd' import x %}",
        ] {
            let error = render(source).unwrap_err();
            assert!(matches!(error.problem, ExpressionProblem::Syntax(_)), "{source}: {error}");
        }
    }

    #[test]
    fn the_debug_global_that_dumps_the_context_is_gone() {
        let error = render("${{ debug() }}").unwrap_err();
        assert!(matches!(error.problem, ExpressionProblem::UnknownVariable { .. }), "{error}");
    }

    #[test]
    fn a_loop_bomb_runs_out_of_fuel_quickly() {
        let started = Instant::now();
        let bomb = "${% for a in range(10000) %}${% for b in range(10000) %}${{ a * b }}${% endfor %}${% endfor %}";
        assert_eq!(render(bomb).unwrap_err().problem, ExpressionProblem::OutOfFuel);
        let typed = "${{ range(10000) | map('string') | join(',') * 10000 }}";
        let error = Expressions::new().render_value(&json!(typed), &task_context(), "input").unwrap_err();
        assert_eq!(error.problem, ExpressionProblem::OutOfFuel);
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    }

    #[test]
    fn a_lazily_repeated_list_is_too_large_to_become_a_typed_value() {
        let error = Expressions::new()
            .render_value(&json!("${{ range(100000) * 100 }}"), &task_context(), "input")
            .unwrap_err();
        assert_eq!(error.problem, ExpressionProblem::TooLarge);
    }

    #[test]
    fn a_lazily_repeated_list_is_cut_off_when_written_as_text() {
        let started = Instant::now();
        // Written whole, this is gigabytes: the process would abort on allocation.
        for source in ["${{ range(100000) * 100 }}x", "${{ [range(100000) * 1000] * 100000 }}x"] {
            assert_eq!(render(source).unwrap_err().problem, ExpressionProblem::TooLarge, "{source}");
        }
        // Stopping the writes is not enough: Display would still walk the 100M items it no longer writes.
        assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    }

    #[test]
    fn a_lazily_repeated_list_is_too_large_to_dump() {
        for source in ["${{ (range(100000) * 100) | dump }}", "x${{ ([range(100000) * 1000] * 100000) | dump }}"] {
            let error = Expressions::new().render_value(&json!(source), &task_context(), "input").unwrap_err();
            assert_eq!(error.problem, ExpressionProblem::TooLarge, "{source}");
        }
    }

    #[test]
    fn a_deeply_nested_value_built_in_a_loop_is_too_large_to_dump() {
        let source = "${% set ns = namespace(x=[]) %}${% for i in range(3000) %}${% set ns.x = [ns.x] %}${% endfor %}\
                      ${{ ns.x | dump }}";
        assert_eq!(render(source).unwrap_err().problem, ExpressionProblem::TooLarge);
    }

    #[test]
    fn the_renders_of_a_task_share_one_budget_of_bytes() {
        let context = ExpressionContext::new(&Map::new(), RenderBudget::with_bytes(10));
        let expressions = Expressions::new();
        assert_eq!(expressions.render_text("${{ 'abcdef' }}", &context, "a").unwrap(), "abcdef");
        let error = expressions.render_text("${{ 'abcdef' }}", &context, "b").unwrap_err();
        assert_eq!(error.problem, ExpressionProblem::BudgetSpent);
        let error = expressions.render_value(&json!("${{ 1 }}"), &context, "c").unwrap_err();
        assert_eq!(error.problem, ExpressionProblem::BudgetSpent, "a spent budget stays spent");
    }

    #[test]
    fn deep_recursion_is_stopped_by_the_recursion_limit() {
        let mut deep = json!([]);
        for _ in 0..200 {
            deep = json!([deep]);
        }
        let context = context(json!({"values": {"tree": deep}}));
        let source = "${% for node in values.tree recursive %}[${{ loop(node) }}]${% endfor %}";
        let error = Expressions::new().render_text(source, &context, "file").unwrap_err();
        assert!(error.to_string().contains("recursion"), "{error}");
    }

    #[test]
    fn jinja_block_and_comment_syntax_passes_through_untouched() {
        let source =
            "{% if x %}{{ helm }}{# c #}{% endif %} ${% if parameters.replicas > 1 %}many${% endif %}${# gone #}";
        assert_eq!(render(source).unwrap(), "{% if x %}{{ helm }}{# c #}{% endif %} many");
    }

    #[test]
    fn a_trailing_newline_is_kept() {
        assert_eq!(render("name: ${{ parameters.name }}\n").unwrap(), "name: checkout\n");
    }

    #[test]
    fn built_in_string_filters_are_available() {
        assert_eq!(render("${{ parameters.name | upper }}").unwrap(), "CHECKOUT");
        assert_eq!(render("${{ parameters.name | replace('check', 'pay') | title }}").unwrap(), "Payout");
        assert_eq!(render("${{ parameters.tags | join('-') }}").unwrap(), "a-b");
        assert_eq!(render("${{ parameters.missing | default('none') }}").unwrap(), "none");
        assert_eq!(render("${{ ' x ' | trim }}${{ 'a b' | urlencode }}").unwrap(), "xa%20b");
        assert_eq!(value("${{ parameters.tags | dump }}"), Some(json!("[\"a\",\"b\"]")));
    }

    #[test]
    fn a_template_check_reports_syntax_and_unknown_names_with_paths() {
        let input = json!({"a": "${{ parameters.name }}", "b": ["ok", "${{ nope }}"], "c": "${{ parameters. }}"});
        let mut problems = Vec::new();
        Expressions::new().check_value(&input, &["parameters", "steps"], "spec.steps[0].input", &mut problems);
        let paths: Vec<_> = problems.iter().map(|problem| problem.path.as_str()).collect();
        assert_eq!(paths, ["spec.steps[0].input.b[1]", "spec.steps[0].input.c"]);
        assert!(matches!(problems[1].problem, ExpressionProblem::Syntax(_)));
    }
}
