//! Names and periods of the shared spend and rate counters. One function derives every counter
//! key, and the data plane (reserve, settle, enforce) and the operator (spend in VirtualKey
//! status) both call it, so no path can count against a different counter than another. Keys
//! are hashes of config identities (namespace, key name, org, team), never client input.

use jiff::{Timestamp, ToSpan, civil::Weekday, tz::TimeZone};
use sha2::{Digest, Sha256};

use crate::common::BudgetPeriod;

/// Whose spend or rate a counter holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject<'a> {
    /// A VirtualKey, by namespace and name.
    Key { namespace: &'a str, name: &'a str },
    /// A team of an org, in a namespace (a RoutingPolicy selecting the team).
    Team {
        namespace: &'a str,
        org: &'a str,
        team: &'a str,
    },
    /// An org, in a namespace (a RoutingPolicy selecting the org).
    Org { namespace: &'a str, org: &'a str },
    /// A deployment, by its id (`namespace/group/deployment`): its provider quota, shared by the
    /// fleet.
    Deployment { id: &'a str },
}

impl Subject<'_> {
    /// `key`, `team` or `org`: how refusals name the limit.
    pub fn scope(&self) -> &'static str {
        match self {
            Self::Key { .. } => "key",
            Self::Team { .. } => "team",
            Self::Org { .. } => "org",
            Self::Deployment { .. } => "deployment",
        }
    }
}

/// What a counter measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Meter<'a> {
    /// Spend in one budget period (the period's id, from [`BudgetWindow`]).
    Budget { period: &'a str },
    /// Requests in one minute (unix minute).
    Requests { minute: i64 },
    /// Tokens in one minute (unix minute).
    Tokens { minute: i64 },
}

/// The counter key for `subject`'s `meter`: `mg:` and 32 hex digits.
pub fn counter_key(subject: Subject<'_>, meter: Meter<'_>) -> String {
    let mut hash = Sha256::new();
    // Length-prefixed fields, so no two identities can serialize alike.
    let mut field = |value: &str| {
        hash.update((value.len() as u64).to_le_bytes());
        hash.update(value.as_bytes());
    };
    match subject {
        Subject::Key { namespace, name } => {
            field("key");
            field(namespace);
            field(name);
        }
        Subject::Team {
            namespace,
            org,
            team,
        } => {
            field("team");
            field(namespace);
            field(org);
            field(team);
        }
        Subject::Org { namespace, org } => {
            field("org");
            field(namespace);
            field(org);
        }
        Subject::Deployment { id } => {
            field("deployment");
            field(id);
        }
    }
    match meter {
        Meter::Budget { period } => {
            field("budget");
            field(period);
        }
        Meter::Requests { minute } => {
            field("rpm");
            field(&minute.to_string());
        }
        Meter::Tokens { minute } => {
            field("tpm");
            field(&minute.to_string());
        }
    }
    format!("mg:{}", &hex::encode(hash.finalize())[..32])
}

/// The budget period containing an instant: its id and when it resets (UTC calendar).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetWindow {
    pub id: String,
    /// Unix seconds of the next reset; `None` for `total`, which never resets.
    pub resets_at: Option<i64>,
}

impl BudgetWindow {
    pub fn containing(period: BudgetPeriod, now: Timestamp) -> Self {
        let today = now.to_zoned(TimeZone::UTC).date();
        let (id, next) = match period {
            BudgetPeriod::Total => {
                return Self {
                    id: "total".to_owned(),
                    resets_at: None,
                };
            }
            BudgetPeriod::Daily => (format!("d{today}"), today.tomorrow().ok()),
            BudgetPeriod::Weekly => {
                let since_monday = i64::from(today.weekday().since(Weekday::Monday));
                let monday = today.checked_sub(since_monday.days()).unwrap_or(today);
                (format!("w{monday}"), monday.checked_add(7.days()).ok())
            }
            BudgetPeriod::Monthly => {
                let first = today.first_of_month();
                (
                    format!("m{}", first.strftime("%Y-%m")),
                    first.checked_add(1.month()).ok(),
                )
            }
        };
        let resets_at = next
            .and_then(|d| d.to_zoned(TimeZone::UTC).ok())
            .map(|z| z.timestamp().as_second());
        Self { id, resets_at }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn periods_follow_the_utc_calendar() {
        let now = at("2026-11-25T23:59:59Z"); // a Wednesday
        let day = BudgetWindow::containing(BudgetPeriod::Daily, now);
        assert_eq!(day.id, "d2026-11-25");
        assert_eq!(day.resets_at, Some(at("2026-11-26T00:00:00Z").as_second()));
        let week = BudgetWindow::containing(BudgetPeriod::Weekly, now);
        assert_eq!(week.id, "w2026-11-23");
        assert_eq!(week.resets_at, Some(at("2026-11-30T00:00:00Z").as_second()));
        let month = BudgetWindow::containing(BudgetPeriod::Monthly, at("2026-12-31T12:00:00Z"));
        assert_eq!(month.id, "m2026-12");
        assert_eq!(
            month.resets_at,
            Some(at("2027-01-01T00:00:00Z").as_second())
        );
        let total = BudgetWindow::containing(BudgetPeriod::Total, now);
        assert_eq!((total.id.as_str(), total.resets_at), ("total", None));
    }

    #[test]
    fn counter_keys_are_distinct_per_subject_meter_and_period_and_never_echo_input() {
        let key = Subject::Key {
            namespace: "team-a",
            name: "checkout",
        };
        let org = Subject::Org {
            namespace: "team-a",
            org: "checkout",
        };
        let keys = [
            counter_key(
                key,
                Meter::Budget {
                    period: "d2026-11-25",
                },
            ),
            counter_key(
                key,
                Meter::Budget {
                    period: "d2026-11-26",
                },
            ),
            counter_key(
                org,
                Meter::Budget {
                    period: "d2026-11-25",
                },
            ),
            counter_key(key, Meter::Requests { minute: 1 }),
            counter_key(key, Meter::Tokens { minute: 1 }),
            counter_key(
                Subject::Key {
                    namespace: "team-ac",
                    name: "heckout",
                },
                Meter::Budget {
                    period: "d2026-11-25",
                },
            ),
        ];
        for (i, a) in keys.iter().enumerate() {
            assert!(a.starts_with("mg:") && a.len() == 35 && !a.contains("checkout"));
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
