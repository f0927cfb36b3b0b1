//! The Grafana dashboard and the alert rules the chart ships, read the way Prometheus reads
//! them: every PromQL expression is parsed by a PromQL parser, and every series, label and label
//! value it names is looked up in a real scrape. A panel that queries a series the gateway does
//! not export (a renamed metric, a label typo) fails here instead of showing "No data".

use std::collections::{BTreeMap, BTreeSet};

use promql_parser::{
    label::MatchOp,
    parser::{self, Expr, LabelModifier, VectorMatchCardinality},
};
use serde_json::Value;

use crate::exposition::{self, Sample};

/// The chart's copy of the dashboard; `docs/grafana/` holds the same file.
pub const DASHBOARD: &str = "charts/modelgate/files/grafana/modelgate.json";
/// The chart's copy of the alert rules; `docs/prometheus/` holds the same file.
pub const ALERTS: &str = "charts/modelgate/files/prometheus/alerts.yaml";

/// One PromQL expression and where it comes from.
#[derive(Clone, Debug)]
pub struct Expression {
    pub origin: String,
    pub promql: String,
}

/// The repository's root.
pub fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every expression of the dashboard (panel targets, and the variables' `label_values` queries
/// as the equivalent PromQL) and of the alert rules.
pub fn expressions() -> Vec<Expression> {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join(DASHBOARD)).unwrap()).unwrap();
    let mut found = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            found.push(Expression {
                origin: format!(
                    "panel {:?} {}",
                    panel["title"].as_str().unwrap_or_default(),
                    target["refId"].as_str().unwrap_or_default()
                ),
                promql: grafana_to_promql(target["expr"].as_str().unwrap()),
            });
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        let Some(query) = variable["query"]["query"].as_str() else {
            continue;
        };
        let (metric, label) = query
            .strip_prefix("label_values(")
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(|args| args.split_once(','))
            .unwrap_or_else(|| panic!("variable {}: {query}", variable["name"]));
        found.push(Expression {
            origin: format!("variable {}", variable["name"].as_str().unwrap_or_default()),
            promql: format!("count by ({}) ({})", label.trim(), metric.trim()),
        });
    }
    let rules: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(root().join(ALERTS)).unwrap()).unwrap();
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let name = rule["alert"].as_str().or(rule["record"].as_str()).unwrap();
            found.push(Expression {
                origin: format!("rule {name}"),
                promql: rule["expr"].as_str().unwrap().to_owned(),
            });
        }
    }
    found
}

/// Grafana's variables replaced by what they stand for: ranges by a duration, a dashboard
/// variable (`$group`, with "All" selected) by a regex matching anything.
fn grafana_to_promql(expr: &str) -> String {
    let mut promql = expr
        .replace("$__rate_interval", "5m")
        .replace("$__range", "1h")
        .replace("$__interval", "1m");
    while let Some(at) = promql.find('$') {
        let end = promql[at + 1..]
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .map_or(promql.len(), |n| at + 1 + n);
        promql.replace_range(at..end, ".*");
    }
    promql
}

/// What an expression asks of the series it reads.
#[derive(Default, Debug)]
struct Uses {
    selectors: Vec<Selector>,
    /// Labels an aggregation or a vector match groups by, with the series they must be on.
    groupings: Vec<(Vec<String>, BTreeSet<String>)>,
}

#[derive(Debug)]
struct Selector {
    metric: Option<String>,
    /// Each matcher's label and the literal values it wants present (`=`, and `=~` of a plain
    /// alternation such as `hit|miss`); no values for negative and pattern matchers.
    matchers: Vec<(String, Vec<String>)>,
}

/// Collects the uses of `expr` and returns the series names it reads.
fn walk(expr: &Expr, uses: &mut Uses) -> BTreeSet<String> {
    match expr {
        Expr::Aggregate(aggregate) => {
            let metrics = walk(&aggregate.expr, uses);
            if let Some(param) = &aggregate.param {
                walk(param, uses);
            }
            if let Some(modifier) = &aggregate.modifier {
                uses.groupings
                    .push((modifier_labels(modifier), metrics.clone()));
            }
            metrics
        }
        Expr::Binary(binary) => {
            let left = walk(&binary.lhs, uses);
            let right = walk(&binary.rhs, uses);
            if let Some(modifier) = &binary.modifier {
                if let Some(matching) = &modifier.matching {
                    uses.groupings
                        .push((modifier_labels(matching), left.clone()));
                    uses.groupings
                        .push((modifier_labels(matching), right.clone()));
                }
                match &modifier.card {
                    // group_left(labels) copies labels from the right side, group_right from the left.
                    VectorMatchCardinality::ManyToOne(labels) => {
                        uses.groupings.push((labels.labels.clone(), right.clone()));
                    }
                    VectorMatchCardinality::OneToMany(labels) => {
                        uses.groupings.push((labels.labels.clone(), left.clone()));
                    }
                    _ => {}
                }
            }
            left.union(&right).cloned().collect()
        }
        Expr::Paren(paren) => walk(&paren.expr, uses),
        Expr::Unary(unary) => walk(&unary.expr, uses),
        Expr::Subquery(subquery) => walk(&subquery.expr, uses),
        Expr::Call(call) => call
            .args
            .args
            .iter()
            .flat_map(|arg| walk(arg, uses))
            .collect(),
        Expr::VectorSelector(selector) => select(selector, uses),
        Expr::MatrixSelector(matrix) => select(&matrix.vs, uses),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => BTreeSet::new(),
    }
}

fn modifier_labels(modifier: &LabelModifier) -> Vec<String> {
    modifier.labels().labels.clone()
}

fn select(selector: &parser::VectorSelector, uses: &mut Uses) -> BTreeSet<String> {
    let matchers = selector
        .matchers
        .matchers
        .iter()
        .chain(selector.matchers.or_matchers.iter().flatten())
        .filter(|m| m.name != "__name__")
        .map(|m| {
            let literals = match &m.op {
                MatchOp::Equal if !m.value.is_empty() => vec![m.value.clone()],
                MatchOp::Re(_)
                    if m.value.split('|').all(|alternative| {
                        !alternative.is_empty()
                            && alternative
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || "_-/".contains(c))
                    }) =>
                {
                    m.value.split('|').map(str::to_owned).collect()
                }
                _ => Vec::new(),
            };
            (m.name.clone(), literals)
        })
        .collect();
    uses.selectors.push(Selector {
        metric: selector.name.clone(),
        matchers,
    });
    selector.name.iter().cloned().collect()
}

/// Checks every expression against `exposition` for the series `covers` says it exports:
/// each is named, has samples, and carries every label an expression matches or groups by,
/// with the values an expression asks for. Returns how many selectors were checked, or the
/// problems found. Series of other exporters are left to their own scrape, but every series
/// must be modelgate's.
pub fn check(exposition: &str, covers: impl Fn(&str) -> bool) -> Result<usize, Vec<String>> {
    let samples = exposition::samples(exposition);
    let mut by_name: BTreeMap<&str, Vec<&Sample>> = BTreeMap::new();
    for sample in &samples {
        by_name
            .entry(sample.name.as_str())
            .or_default()
            .push(sample);
    }
    let has_label = |metric: &str, label: &str| {
        by_name
            .get(metric)
            .is_some_and(|samples| samples.iter().any(|s| s.labels.contains_key(label)))
    };
    let mut problems = Vec::new();
    let mut checked = 0;
    for expression in expressions() {
        let parsed = match parser::parse(&expression.promql) {
            Ok(parsed) => parsed,
            Err(error) => {
                problems.push(format!("{}: does not parse: {error}", expression.origin));
                continue;
            }
        };
        let mut uses = Uses::default();
        walk(&parsed, &mut uses);
        let origin = &expression.origin;
        for selector in &uses.selectors {
            let Some(metric) = &selector.metric else {
                problems.push(format!("{origin}: a selector without a series name"));
                continue;
            };
            if !metric.starts_with("modelgate_") {
                problems.push(format!("{origin}: {metric} is not a modelgate series"));
                continue;
            }
            if !covers(metric) {
                continue;
            }
            checked += 1;
            let Some(series) = by_name.get(metric.as_str()) else {
                problems.push(format!("{origin}: no sample of {metric} in the scrape"));
                continue;
            };
            for (label, values) in &selector.matchers {
                if !has_label(metric, label) {
                    problems.push(format!("{origin}: {metric} has no label {label}"));
                }
                for value in values {
                    if !series.iter().any(|s| s.labels.get(label) == Some(value)) {
                        problems.push(format!(
                            "{origin}: no sample of {metric} has {label}=\"{value}\""
                        ));
                    }
                }
            }
        }
        for (labels, metrics) in &uses.groupings {
            if metrics.is_empty() || !metrics.iter().all(|m| covers(m)) {
                continue;
            }
            for label in labels {
                if !metrics.iter().any(|m| has_label(m, label)) {
                    problems.push(format!(
                        "{origin}: groups by {label}, which none of {metrics:?} has"
                    ));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(checked)
    } else {
        Err(problems)
    }
}
