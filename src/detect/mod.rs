//! Rules: SQL predicates over feature batches, compiled once by DataFusion.
//!
//! Each predicate is parsed against the features schema and planned into a
//! physical expression when the pipeline loads, so a bad column name or a
//! non-boolean predicate is a load-time error naming the rule, and each tick
//! costs one vectorised evaluation per rule, with no query planning.
//!
//! A predicate is planned against, and evaluated on, only the columns it
//! names: DataFusion evaluates `a AND b` by filtering the batch to the rows
//! where `a` holds before evaluating `b`, and a feature batch has ~50
//! columns, so filtering all of them cost more than the rules themselves
//! (7.6 % of a replay's instructions on the simulator's mix).

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DFSchema;
use datafusion::logical_expr::ExprSchemable;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;

use crate::config::RuleSpec;
use crate::features::{self, EntityType};

/// A rule that cannot be compiled.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {rule}: {message}")]
pub struct RuleError {
    pub file: PathBuf,
    pub line: usize,
    pub rule: String,
    pub message: String,
}

/// Evaluation failed on a batch (a bug or a schema mismatch, not bad input).
#[derive(Debug, thiserror::Error)]
#[error("rule '{rule}': evaluation failed: {source}")]
pub struct EvalError {
    pub rule: String,
    #[source]
    pub source: datafusion::error::DataFusionError,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub spec: RuleSpec,
    expr: Planned,
    /// [`RuleSpec::spare`], compiled.
    pub spare: Option<Predicate>,
}

/// A physical expression over a projection of the features schema.
#[derive(Debug, Clone)]
struct Planned {
    expr: Arc<dyn PhysicalExpr>,
    /// Feature columns the expression reads, in schema order: the batch it
    /// is evaluated on is projected to these.
    columns: Vec<usize>,
}

impl Planned {
    /// Evaluates to a boolean array over `batch` (a features-schema batch).
    fn evaluate(&self, batch: &RecordBatch) -> Result<Option<BooleanArray>, datafusion::error::DataFusionError> {
        let projected = batch.project(&self.columns)?;
        let array = self.expr.evaluate(&projected)?.into_array(batch.num_rows())?;
        Ok(array.as_any().downcast_ref::<BooleanArray>().cloned())
    }
}

/// A rule that matched one row of a feature batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub rule: usize,
    pub row: usize,
}

/// All rules of a pipeline, grouped by the entity type they judge.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    by_entity: [Vec<usize>; EntityType::COUNT],
}

/// A boolean SQL predicate over feature batches, compiled once.
#[derive(Debug, Clone)]
pub struct Predicate {
    pub sql: String,
    expr: Planned,
}

impl Predicate {
    /// Compiles `sql` against the features schema; `what` names it in errors.
    pub fn compile(sql: &str, file: &std::path::Path, line: usize, what: &str) -> Result<Predicate, RuleError> {
        let err = |message: String| RuleError { file: file.to_path_buf(), line, rule: what.to_string(), message };
        let ctx = SessionContext::new();
        let df_schema = DFSchema::try_from(features::schema().as_ref().clone()).map_err(|e| err(e.to_string()))?;
        let expr = ctx.parse_sql_expr(sql, &df_schema).map_err(|e| err(format!("when: {}", clean(&e))))?;
        let ty = expr.get_type(&df_schema).map_err(|e| err(format!("when: {}", clean(&e))))?;
        if ty != DataType::Boolean {
            return Err(err(format!("when: must be a boolean condition, but '{sql}' is {ty}")));
        }
        let schema = features::schema();
        let mut columns: Vec<usize> = expr
            .column_refs()
            .iter()
            .map(|c| schema.index_of(&c.name).map_err(|e| err(format!("when: {e}"))))
            .collect::<Result<_, _>>()?;
        columns.sort_unstable();
        columns.dedup();
        let projected = DFSchema::try_from(schema.project(&columns).map_err(|e| err(e.to_string()))?)
            .map_err(|e| err(e.to_string()))?;
        let expr = ctx.create_physical_expr(expr, &projected).map_err(|e| err(format!("when: {}", clean(&e))))?;
        Ok(Predicate { sql: sql.to_string(), expr: Planned { expr, columns } })
    }

    /// Which rows satisfy the predicate (null counts as false).
    pub fn matches(&self, batch: &RecordBatch) -> Result<Vec<bool>, datafusion::error::DataFusionError> {
        let mask = self.expr.evaluate(batch)?;
        Ok((0..batch.num_rows()).map(|i| mask.as_ref().is_some_and(|m| m.is_valid(i) && m.value(i))).collect())
    }
}

impl RuleSet {
    /// Compiles every rule against the features schema.
    pub fn compile(specs: &[RuleSpec]) -> Result<RuleSet, RuleError> {
        let mut set = RuleSet::default();
        for spec in specs {
            let p = Predicate::compile(&spec.when, &spec.file, spec.line, &format!("rule '{}'", spec.name))?;
            let spare = match &spec.spare {
                Some((sql, line)) => Some(
                    Predicate::compile(sql, &spec.file, *line, &format!("rule '{}'", spec.name))
                        .map_err(|e| RuleError { message: e.message.replacen("when:", "spare:", 1), ..e })?,
                ),
                None => None,
            };
            set.by_entity[spec.entity.index()].push(set.rules.len());
            set.rules.push(Rule { spec: spec.clone(), expr: p.expr, spare });
        }
        Ok(set)
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Rules of entity type `t` that match rows of `batch`, in rule order then row order.
    pub fn evaluate(&self, t: EntityType, batch: &RecordBatch) -> Result<Vec<Hit>, EvalError> {
        let mut hits = Vec::new();
        for &ri in &self.by_entity[t.index()] {
            let rule = &self.rules[ri];
            let wrap = |source| EvalError { rule: rule.spec.name.clone(), source };
            let Some(mask) = rule.expr.evaluate(batch).map_err(wrap)? else {
                continue;
            };
            for row in 0..mask.len() {
                if mask.is_valid(row) && mask.value(row) {
                    hits.push(Hit { rule: ri, row });
                }
            }
        }
        Ok(hits)
    }
}

/// DataFusion errors carry a backtrace-like prefix that helps nobody editing a rule.
fn clean(e: &datafusion::error::DataFusionError) -> String {
    let s = e.to_string();
    s.strip_prefix("Schema error: ")
        .or_else(|| s.strip_prefix("SQL error: "))
        .or_else(|| s.strip_prefix("Error during planning: "))
        .unwrap_or(&s)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Pipeline;
    use std::path::Path;

    fn rules(when: &str) -> Result<RuleSet, String> {
        let src = format!(
            "[[rules]]\nname = \"t\"\nentity = \"ip\"\nwhen = \"{when}\"\naction = \"deny\"\nttl = \"1h\"\nreason = \"x\"\n"
        );
        let p = Pipeline::from_source(Path::new("p.toml"), &src).map_err(|e| e.to_string())?;
        RuleSet::compile(&p.rules).map_err(|e| e.to_string())
    }

    #[test]
    fn compile_errors_name_the_rule() {
        let e = rules("login_failurez_10m > 3").unwrap_err();
        assert!(e.starts_with("p.toml:4: rule 't': when:"), "{e}");
        assert!(e.contains("login_failurez_10m"), "{e}");
        let e = rules("requests_1m + 1").unwrap_err();
        assert!(e.contains("must be a boolean"), "{e}");
        let e = rules("requests_1m >").unwrap_err();
        assert!(e.contains("rule 't'"), "{e}");
    }

    #[test]
    fn evaluates_over_a_feature_batch() {
        let set =
            rules("requests_1m >= 2 AND (login_failure_ratio_10m IS NULL OR login_failure_ratio_10m < 0.5)").unwrap();
        let mut a = features::state::EntityState::new("1.2.3.4".into(), 0);
        let mut b = features::state::EntityState::new("5.6.7.8".into(), 0);
        let k = features::state::Contribution { ts: 1_000, ..Default::default() };
        let mut one = k.clone();
        one.counts[features::state::c::REQ] = 1;
        a.apply(&one, None, false);
        a.apply(&one, None, false);
        b.apply(&one, None, false);
        let batch = features::build_batch(EntityType::Ip, 1_000, [&a, &b].into_iter()).unwrap();
        let hits = set.evaluate(EntityType::Ip, &batch).unwrap();
        assert_eq!(hits, vec![Hit { rule: 0, row: 0 }]);
        assert!(set.evaluate(EntityType::User, &batch).unwrap().is_empty());
    }
}
