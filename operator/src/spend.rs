//! Spend in VirtualKey status: with a shared state store (`--state redis://...`), the operator
//! reads each budgeted key's counter for the current period, through the same counter naming the
//! data planes use (`modelgate_crds::spend`), and reports spend and what is left.

use std::{sync::Arc, time::Duration};

use arc_swap::ArcSwapOption;

use jiff::Timestamp;
use kube::ResourceExt;
use modelgate_crds::{
    VirtualKey,
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

/// One key's budget period as the store has it.
#[derive(Clone, Debug, PartialEq)]
pub struct Spend {
    pub spend_usd: f64,
    pub remaining_usd: f64,
    pub period: String,
}

impl Spend {
    /// The VirtualKey status fields.
    pub fn status_fields(&self) -> Map<String, Value> {
        let mut fields = Map::new();
        fields.insert("spend".to_owned(), json!(self.spend_usd));
        fields.insert("remaining".to_owned(), json!(self.remaining_usd));
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

    /// The key's spend this period; `None` when the key has no budget.
    pub async fn read(&self, key: &VirtualKey) -> Option<Result<Spend, redis::RedisError>> {
        let budget = key.spec.budget.as_ref()?;
        let namespace = key.namespace().unwrap_or_default();
        let name = key.name_any();
        let window = BudgetWindow::containing(budget.period, Timestamp::now());
        let counter = counter_key(
            Subject::Key {
                namespace: &namespace,
                name: &name,
            },
            Meter::Budget { period: &window.id },
        );
        let Some(connection) = self.connection.load_full() else {
            return Some(Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "not connected to the state store yet",
            ))));
        };
        let mut connection = ConnectionManager::clone(&connection);
        let spent: Result<Option<i64>, _> = redis::cmd("HGET")
            .arg(&counter)
            .arg("spent")
            .query_async(&mut connection)
            .await;
        Some(spent.map(|nanos| {
            // Whole micro-dollars: status changes only when spend visibly does.
            let spend_usd = (nanos.unwrap_or(0) as f64 / 1e3).round() / 1e6;
            Spend {
                spend_usd,
                remaining_usd: ((budget.limit - spend_usd) * 1e6).round().max(0.0) / 1e6,
                period: window.id,
            }
        }))
    }
}
