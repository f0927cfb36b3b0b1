//! The Redis store: what a fleet of replicas shares. Each admit and each settle is one round trip
//! to one Lua script, with every counter passed in KEYS and every number in ARGV (never a command
//! built from strings). Counter names are hashes (`modelgate_crds::spend::counter_key`).
//!
//! A budget counter is three keys: a hash (`spent`, `reserved`), a hash of live reservations
//! (request id -> amount) and a sorted set of their expiry times, so admit reaps expired
//! reservations before it checks. The connection manager reconnects on its own, and concurrent
//! requests share one reconnect attempt.

use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::{AsyncCommands, Script};

use crate::fleet::SharedConnection;

use super::store::{
    Admission, BudgetState, SETTLED_MEMORY_MS, Settlement, Store, StoreError, Verdict,
};

/// KEYS: 3 per budget (state, reservations, expiries), then 1 per rate counter.
/// ARGV: id, now_ms, ttl_ms, budget count, rate count, then (limit, amount, expire_at_ms) per
/// budget, then per rate counter.
/// Returns {0, 0} admitted, {1, i} over budget i, {2, i} over rate i (0-based).
const ADMIT: &str = r"
local id, now, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local nb, nr = tonumber(ARGV[4]), tonumber(ARGV[5])
for i = 0, nb - 1 do
  local state, res, exp = KEYS[3*i+1], KEYS[3*i+2], KEYS[3*i+3]
  local expired = redis.call('ZRANGEBYSCORE', exp, '-inf', now)
  for _, rid in ipairs(expired) do
    local amount = tonumber(redis.call('HGET', res, rid) or '0')
    redis.call('HINCRBY', state, 'reserved', -amount)
    redis.call('HDEL', res, rid)
  end
  if #expired > 0 then redis.call('ZREMRANGEBYSCORE', exp, '-inf', now) end
end
local a = 6
for i = 0, nb - 1 do
  local limit, amount = tonumber(ARGV[a]), tonumber(ARGV[a+1])
  local spent = tonumber(redis.call('HGET', KEYS[3*i+1], 'spent') or '0')
  local reserved = tonumber(redis.call('HGET', KEYS[3*i+1], 'reserved') or '0')
  if spent + reserved + amount > limit then return {1, i} end
  a = a + 3
end
for j = 0, nr - 1 do
  local limit, amount = tonumber(ARGV[a]), tonumber(ARGV[a+1])
  local used = tonumber(redis.call('GET', KEYS[3*nb+j+1]) or '0')
  if used + amount > limit then return {2, j} end
  a = a + 3
end
a = 6
for i = 0, nb - 1 do
  local state, res, exp = KEYS[3*i+1], KEYS[3*i+2], KEYS[3*i+3]
  local amount, expire_at = ARGV[a+1], tonumber(ARGV[a+2])
  redis.call('HINCRBY', state, 'reserved', amount)
  redis.call('HSET', res, id, amount)
  redis.call('ZADD', exp, now + ttl, id)
  if expire_at > 0 then
    redis.call('PEXPIREAT', state, expire_at)
    redis.call('PEXPIREAT', res, expire_at)
    redis.call('PEXPIREAT', exp, expire_at)
  end
  a = a + 3
end
for j = 0, nr - 1 do
  local key = KEYS[3*nb+j+1]
  redis.call('INCRBY', key, ARGV[a+1])
  redis.call('PEXPIREAT', key, ARGV[a+2])
  a = a + 3
end
return {0, 0}
";

/// KEYS: the settled marker, 3 per budget, 1 per rate counter, then 1 per meter.
/// ARGV: marker ttl ms, budget count, rate count, meter count, request id, cost per budget,
/// correction per rate counter, then (cost, expire_at_ms) per meter.
/// Returns 1 when settled now, 0 when this request was already settled.
const SETTLE: &str = r"
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
local nb, nr, nm, id = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
for i = 0, nb - 1 do
  local state, res, exp = KEYS[3*i+2], KEYS[3*i+3], KEYS[3*i+4]
  local amount = redis.call('HGET', res, id)
  if amount then
    redis.call('HINCRBY', state, 'reserved', -tonumber(amount))
    redis.call('HDEL', res, id)
    redis.call('ZREM', exp, id)
  end
  local cost = tonumber(ARGV[6 + i])
  if cost ~= 0 then redis.call('HINCRBY', state, 'spent', cost) end
end
for j = 0, nr - 1 do
  local key = KEYS[3*nb+j+2]
  local delta = tonumber(ARGV[6 + nb + j])
  if delta ~= 0 and redis.call('EXISTS', key) == 1 then redis.call('INCRBY', key, delta) end
end
for k = 0, nm - 1 do
  local key = KEYS[3*nb+nr+k+2]
  local cost, expire_at = tonumber(ARGV[6 + nb + nr + 2*k]), ARGV[7 + nb + nr + 2*k]
  if cost ~= 0 then redis.call('HINCRBY', key, 'spent', cost) end
  redis.call('PEXPIREAT', key, expire_at)
end
return 1
";

pub struct RedisStore {
    connection: SharedConnection,
    admit: Script,
    settle: Script,
}

impl RedisStore {
    /// Connects to `url` (`redis://host:port/db`), or keeps trying in the background when Redis
    /// does not answer within `timeout`; every command gives up after `timeout`, so an
    /// unreachable Redis shows up as an error, not a hung request.
    pub async fn connect(url: &str, timeout: Duration) -> Result<Self, StoreError> {
        Ok(Self {
            connection: SharedConnection::open(url, timeout).await?,
            admit: Script::new(ADMIT),
            settle: Script::new(SETTLE),
        })
    }

    /// The connection, for the cache and the fleet tasks.
    pub fn connection(&self) -> &SharedConnection {
        &self.connection
    }
}

fn budget_keys(counter: &str) -> [String; 3] {
    [
        counter.to_owned(),
        format!("{counter}:r"),
        format!("{counter}:e"),
    ]
}

fn unavailable(error: redis::RedisError) -> StoreError {
    StoreError(error.to_string())
}

impl Store for RedisStore {
    fn admit<'a>(&'a self, a: &'a Admission) -> BoxFuture<'a, Result<Verdict, StoreError>> {
        Box::pin(async move {
            let mut invocation = self.admit.prepare_invoke();
            for charge in &a.budgets {
                for key in budget_keys(&charge.counter) {
                    invocation.key(key);
                }
            }
            for charge in &a.rates {
                invocation.key(&charge.counter);
            }
            invocation
                .arg(&a.id)
                .arg(a.now_ms)
                .arg(a.reservation_ttl_ms)
                .arg(a.budgets.len())
                .arg(a.rates.len());
            for c in &a.budgets {
                invocation.arg(c.limit).arg(c.amount).arg(c.expire_at_ms);
            }
            for c in &a.rates {
                invocation.arg(c.limit).arg(c.amount).arg(c.expire_at_ms);
            }
            let mut connection = self.connection.get()?;
            let (kind, index): (i64, usize) = invocation
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable)?;
            Ok(match kind {
                1 => Verdict::OverBudget(index),
                2 => Verdict::OverRate(index),
                _ => Verdict::Admitted,
            })
        })
    }

    fn settle<'a>(&'a self, s: &'a Settlement) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut invocation = self.settle.prepare_invoke();
            invocation.key(settled_marker(&s.id));
            for (counter, _) in &s.budgets {
                for key in budget_keys(counter) {
                    invocation.key(key);
                }
            }
            for (counter, _) in &s.rates {
                invocation.key(counter);
            }
            for meter in &s.meters {
                invocation.key(&meter.counter);
            }
            invocation
                .arg(SETTLED_MEMORY_MS)
                .arg(s.budgets.len())
                .arg(s.rates.len())
                .arg(s.meters.len())
                .arg(&s.id);
            for (_, cost) in &s.budgets {
                invocation.arg(*cost);
            }
            for (_, delta) in &s.rates {
                invocation.arg(*delta);
            }
            for meter in &s.meters {
                invocation.arg(meter.cost).arg(meter.expire_at_ms);
            }
            let mut connection = self.connection.get()?;
            let _settled: i64 = invocation
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable)?;
            Ok(())
        })
    }

    fn budget<'a>(&'a self, counter: &'a str) -> BoxFuture<'a, Result<BudgetState, StoreError>> {
        Box::pin(async move {
            let mut connection = self.connection.get()?;
            let (spent, reserved): (Option<i64>, Option<i64>) = redis::cmd("HMGET")
                .arg(counter)
                .arg("spent")
                .arg("reserved")
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            Ok(BudgetState {
                spent: spent.unwrap_or(0),
                reserved: reserved.unwrap_or(0),
            })
        })
    }

    fn rate<'a>(&'a self, counter: &'a str) -> BoxFuture<'a, Result<i64, StoreError>> {
        Box::pin(async move {
            let mut connection = self.connection.get()?;
            let value: Option<i64> = connection.get(counter).await.map_err(unavailable)?;
            Ok(value.unwrap_or(0))
        })
    }
}

/// The key remembering that a request was settled: a hash of its id, under the counters' prefix.
fn settled_marker(id: &str) -> String {
    use sha2::{Digest, Sha256};
    format!("mg:s:{}", &hex::encode(Sha256::digest(id.as_bytes()))[..32])
}
