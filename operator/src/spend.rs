//! Spend in VirtualKey and RoutingPolicy status: with a shared state store (`--state
//! redis://...`), the operator reads each key's, team's and org's counter for the current period,
//! through the same counter naming the data planes use (`modelgate_crds::spend`), and reports
//! spend (and what is left of a key's budget).

use std::{sync::Arc, time::Duration};

use arc_swap::ArcSwapOption;

use jiff::Timestamp;
use kube::ResourceExt;
use modelgate_crds::{
    RoutingPolicy, VirtualKey,
    common::BudgetPeriod,
    routing_policy::ScopeSpend,
    spend::{BudgetWindow, Meter, Subject, counter_key},
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::{Map, Value, json};

const TIMEOUT: Duration = Duration::from_secs(2);

pub struct SpendReader {
    /// Made in the background when Redis does not answer at start, so the operator runs (and
    /// keeps the last reported spend) while Redis is away.
    connection: Arc<ArcSwapOption<ConnectionManager>>,
}

/// One key's spend in its current period as the store has it.
#[derive(Clone, Debug, PartialEq)]
pub struct Spend {
    pub spend_usd: f64,
    /// What is left of the key's budget; `None` without one.
    pub remaining_usd: Option<f64>,
    pub period: String,
}

impl Spend {
    /// The VirtualKey status fields.
    pub fn status_fields(&self) -> Map<String, Value> {
        let mut fields = Map::new();
        fields.insert("spend".to_owned(), json!(self.spend_usd));
        if let Some(remaining) = self.remaining_usd {
            fields.insert("remaining".to_owned(), json!(remaining));
        }
        fields.insert("budgetPeriod".to_owned(), json!(self.period));
        fields
    }
}

impl SpendReader {
    pub async fn connect(url: &str) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT));
        let connection = Arc::new(ArcSwapOption::empty());
        match ConnectionManager::new_with_config(client.clone(), config.clone()).await {
            Ok(manager) => connection.store(Some(Arc::new(manager))),
            Err(error) => {
                tracing::warn!(%error, "the state store is unreachable; connecting in the background");
                let slot = connection.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        if let Ok(manager) =
                            ConnectionManager::new_with_config(client.clone(), config.clone()).await
                        {
                            slot.store(Some(Arc::new(manager)));
                            return;
                        }
                    }
                });
            }
        }
        Ok(Self { connection })
    }

    /// The key's spend this period: its budget's, else the calendar month (the period the data
    /// planes count a key without a budget in).
    pub async fn read(&self, key: &VirtualKey) -> Result<Spend, redis::RedisError> {
        let namespace = key.namespace().unwrap_or_default();
        let name = key.name_any();
        let budget = key.spec.budget.as_ref();
        let subject = Subject::Key {
            namespace: &namespace,
            name: &name,
        };
        let (spend_usd, period) = self
            .spent(subject, budget.map_or(BudgetPeriod::Monthly, |b| b.period))
            .await?;
        Ok(Spend {
            spend_usd,
            remaining_usd: budget.map(|b| ((b.limit - spend_usd) * 1e6).round().max(0.0) / 1e6),
            period,
        })
    }

    /// What each org and team `policy` selects spent in the current period (its budget's, else
    /// the calendar month). Teams are of the namespace's org, as the data planes count them.
    pub async fn read_policy(
        &self,
        policy: &RoutingPolicy,
        org_of_namespace: &str,
    ) -> Result<Vec<ScopeSpend>, redis::RedisError> {
        let namespace = policy.namespace().unwrap_or_default();
        let period = policy
            .spec
            .limits
            .as_ref()
            .and_then(|limits| limits.budget.as_ref())
            .map_or(BudgetPeriod::Monthly, |budget| budget.period);
        let mut spend = Vec::new();
        for team in &policy.spec.teams {
            let subject = Subject::Team {
                namespace: &namespace,
                org: org_of_namespace,
                team,
            };
            let (usd, period) = self.spent(subject, period).await?;
            spend.push(ScopeSpend {
                scope: "team".to_owned(),
                name: team.clone(),
                spend: usd,
                period,
            });
        }
        for org in &policy.spec.orgs {
            let subject = Subject::Org {
                namespace: &namespace,
                org,
            };
            let (usd, period) = self.spent(subject, period).await?;
            spend.push(ScopeSpend {
                scope: "org".to_owned(),
                name: org.clone(),
                spend: usd,
                period,
            });
        }
        Ok(spend)
    }

    /// USD `subject` spent in the `period` that contains now, and that period's id.
    async fn spent(
        &self,
        subject: Subject<'_>,
        period: BudgetPeriod,
    ) -> Result<(f64, String), redis::RedisError> {
        let window = BudgetWindow::containing(period, Timestamp::now());
        let counter = counter_key(subject, Meter::Budget { period: &window.id });
        let Some(connection) = self.connection.load_full() else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "not connected to the state store yet",
            )));
        };
        let mut connection = ConnectionManager::clone(&connection);
        let nanos: Option<i64> = redis::cmd("HGET")
            .arg(&counter)
            .arg("spent")
            .query_async(&mut connection)
            .await?;
        // Whole micro-dollars: status changes only when spend visibly does.
        Ok(((nanos.unwrap_or(0) as f64 / 1e3).round() / 1e6, window.id))
    }
}
