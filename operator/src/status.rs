//! Status on every CR, written with server-side apply under one field manager: the conditions
//! `Accepted`, `ResolvedRefs` and `Ready`, `observedGeneration`, and the checksum of the config
//! that includes the object. An unchanged status is not written; a changed `Ready` emits an Event.

use std::fmt::Debug;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::events::{Event, EventType, Recorder},
};
use modelgate_crds::{ObjectReport, Rejection, common::condition};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Map, Value, json};

use crate::{FIELD_MANAGER, error::ReconcileError, publish::CONFIG_SECRET, served::ServedSummary};

/// One condition as this operator decides it, before times are assigned.
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    pub type_: &'static str,
    pub status: &'static str,
    pub reason: String,
    pub message: String,
}

/// The conditions for a compile outcome: `Accepted`, `ResolvedRefs`, `Ready`, and for an
/// accepted object whose namespace's data planes are known, `Served`.
pub fn verdicts(
    report: &ObjectReport,
    checksum: &str,
    served: Option<&ServedSummary>,
) -> Vec<Verdict> {
    let short = checksum.get(..12).unwrap_or(checksum);
    match &report.outcome {
        Ok(()) => {
            let mut verdicts = accepted_verdicts(report, short);
            verdicts.extend(served.map(served_verdict));
            verdicts
        }
        Err(rejection) => rejected_verdicts(rejection).into(),
    }
}

fn accepted_verdicts(report: &ObjectReport, short: &str) -> Vec<Verdict> {
    vec![
        Verdict {
            type_: condition::ACCEPTED,
            status: "True",
            reason: "Compiled".to_owned(),
            message: "compiled into the namespace config".to_owned(),
        },
        Verdict {
            type_: condition::RESOLVED_REFS,
            status: "True",
            reason: "ResolvedRefs".to_owned(),
            message: "every referenced Secret and model group exists".to_owned(),
        },
        Verdict {
            type_: condition::READY,
            status: "True",
            reason: "Published".to_owned(),
            message: ready_message(report, short),
        },
    ]
}

fn rejected_verdicts(rejection: &Rejection) -> [Verdict; 3] {
    let reason = rejection.reason.as_str().to_owned();
    let refs = if rejection.reason.is_unresolved_reference() {
        Verdict {
            type_: condition::RESOLVED_REFS,
            status: "False",
            reason: reason.clone(),
            message: rejection.message.clone(),
        }
    } else {
        Verdict {
            type_: condition::RESOLVED_REFS,
            status: "True",
            reason: "ResolvedRefs".to_owned(),
            message: "no unresolved reference found".to_owned(),
        }
    };
    [
        Verdict {
            type_: condition::ACCEPTED,
            status: "False",
            reason: reason.clone(),
            message: rejection.message.clone(),
        },
        refs,
        Verdict {
            type_: condition::READY,
            status: "False",
            reason,
            message: format!(
                "left out of the published config, other objects are unaffected: {}",
                rejection.message
            ),
        },
    ]
}

/// Whether every live data plane serves the published config.
fn served_verdict(served: &ServedSummary) -> Verdict {
    let (status, reason, message) = if served.live == 0 {
        (
            "Unknown",
            "NoDataPlanes",
            "no data plane reports a heartbeat in this namespace".to_owned(),
        )
    } else if served.stale.is_empty() {
        (
            "True",
            "AllServing",
            format!("{} data plane(s) serve the published config", served.live),
        )
    } else {
        let named: Vec<&str> = served.stale.iter().take(10).map(String::as_str).collect();
        (
            "False",
            "Stale",
            format!(
                "{} of {} data planes serve an older config: {}",
                served.stale.len(),
                served.live,
                named.join(", ")
            ),
        )
    };
    Verdict {
        type_: condition::SERVED,
        status,
        reason: reason.to_owned(),
        message,
    }
}

/// Where an accepted object is live, and what of it deserves a look (a deployment with no
/// price, which budgeted keys may not call).
fn ready_message(report: &ObjectReport, short: &str) -> String {
    let mut message = format!("live in Secret {CONFIG_SECRET} (config {short})");
    for warning in &report.warnings {
        message.push_str(&format!("; {warning}"));
    }
    message
}

/// Turns verdicts into conditions, keeping `lastTransitionTime` where the status did not change.
pub fn conditions(
    verdicts: Vec<Verdict>,
    existing: &[Condition],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
    verdicts
        .into_iter()
        .map(|verdict| {
            let since = existing
                .iter()
                .find(|c| c.type_ == verdict.type_ && c.status == verdict.status)
                .map_or(Time(now), |c| c.last_transition_time.clone());
            Condition {
                type_: verdict.type_.to_owned(),
                status: verdict.status.to_owned(),
                reason: verdict.reason,
                message: verdict.message,
                observed_generation: generation,
                last_transition_time: since,
            }
        })
        .collect()
}

/// Writes the status `report` implies on `object`, unless it already has it. `extra` holds
/// kind-specific fields (a ModelGroup's deployment count). Returns whether a write happened.
pub async fn apply<K>(
    client: &Client,
    recorder: &Recorder,
    object: &K,
    report: &ObjectReport,
    (checksum, served): (&str, Option<&ServedSummary>),
    extra: Map<String, Value>,
) -> Result<bool, ReconcileError>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let current = serde_json::to_value(object)
        .ok()
        .and_then(|mut v| v.get_mut("status").map(Value::take))
        .unwrap_or_else(|| Value::Object(Map::new()));
    let existing: Vec<Condition> = current
        .get("conditions")
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default();
    let conditions = conditions(
        verdicts(report, checksum, served),
        &existing,
        report.generation,
        Timestamp::now(),
    );
    let mut desired = Map::new();
    desired.insert("conditions".to_owned(), json!(conditions));
    if let Some(generation) = report.generation {
        desired.insert("observedGeneration".to_owned(), json!(generation));
    }
    if report.is_accepted() {
        desired.insert("configChecksum".to_owned(), json!(checksum));
        if let Some(served) = served {
            desired.insert("served".to_owned(), json!(served.ratio()));
        }
        desired.extend(extra);
    }
    let desired = Value::Object(desired);
    if desired == current {
        return Ok(false);
    }
    let api: Api<K> = Api::namespaced(client.clone(), &report.namespace);
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": desired,
    });
    api.patch_status(
        &object.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(ReconcileError::api("write status"))?;
    announce_transition(recorder, object, &existing, &conditions).await;
    Ok(true)
}

/// An Event when `Ready` changes status or reason; failures to record are logged, never fatal.
async fn announce_transition<K>(
    recorder: &Recorder,
    object: &K,
    before: &[Condition],
    after: &[Condition],
) where
    K: Resource<DynamicType = ()>,
{
    let ready = |conditions: &[Condition]| {
        conditions
            .iter()
            .find(|c| c.type_ == condition::READY)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let Some((status, reason, message)) = ready(after) else {
        return;
    };
    if ready(before).is_some_and(|(s, r, _)| s == status && r == reason) {
        return;
    }
    let event = Event {
        type_: if status == "True" {
            EventType::Normal
        } else {
            EventType::Warning
        },
        reason,
        note: Some(message),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, &object.object_ref(&())).await {
        tracing::warn!(%error, name = %object.name_any(), "cannot record event");
    }
}

#[cfg(test)]
mod tests {
    use modelgate_crds::{ObjectKind, Reason, Rejection};

    use super::*;

    fn report(outcome: Result<(), Rejection>) -> ObjectReport {
        ObjectReport {
            kind: ObjectKind::ModelGroup,
            namespace: "team-a".to_owned(),
            name: "chat".to_owned(),
            generation: Some(3),
            outcome,
            warnings: Vec::new(),
        }
    }

    #[test]
    fn an_accepted_object_is_ready_with_the_config_it_is_in() {
        let [accepted, refs, ready]: [Verdict; 3] =
            verdicts(&report(Ok(())), "0123456789abcdef", None)
                .try_into()
                .unwrap();
        assert_eq!(
            (accepted.status, refs.status, ready.status),
            ("True", "True", "True")
        );
        assert_eq!(ready.reason, "Published");
        assert!(ready.message.contains("0123456789ab"), "{}", ready.message);
    }

    #[test]
    fn an_unpriced_deployment_is_named_in_ready() {
        let mut unpriced = report(Ok(()));
        unpriced.warnings.push(Rejection::new(
            Reason::UnpricedDeployment,
            "deployments[local] has no pricing",
        ));
        let [_, _, ready]: [Verdict; 3] = verdicts(&unpriced, "0123456789abcdef", None)
            .try_into()
            .unwrap();
        assert_eq!(ready.status, "True");
        assert!(
            ready
                .message
                .contains("UnpricedDeployment: deployments[local]"),
            "{}",
            ready.message
        );
    }

    #[test]
    fn an_unresolved_reference_fails_resolved_refs_with_the_reason() {
        let rejection = Rejection::new(Reason::UnknownFallback, "fallback \"gone\" does not exist");
        let [accepted, refs, ready]: [Verdict; 3] = verdicts(&report(Err(rejection)), "c", None)
            .try_into()
            .unwrap();
        assert_eq!(
            (accepted.status, refs.status, ready.status),
            ("False", "False", "False")
        );
        assert_eq!(refs.reason, "UnknownFallback");
        assert!(ready.message.contains("does not exist"));
    }

    #[test]
    fn another_rejection_keeps_resolved_refs_true() {
        let rejection = Rejection::new(Reason::FallbackCycle, "a -> b -> a");
        let [accepted, refs, _]: [Verdict; 3] = verdicts(&report(Err(rejection)), "c", None)
            .try_into()
            .unwrap();
        assert_eq!(accepted.reason, "FallbackCycle");
        assert_eq!(refs.status, "True");
    }

    #[test]
    fn transition_time_is_kept_while_the_status_holds() {
        let earlier: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let later: Timestamp = "2026-06-01T00:00:00Z".parse().unwrap();
        let first = conditions(verdicts(&report(Ok(())), "a", None), &[], Some(1), earlier);
        let second = conditions(verdicts(&report(Ok(())), "b", None), &first, Some(2), later);
        assert!(second.iter().all(|c| c.last_transition_time.0 == earlier));
        assert!(second.iter().all(|c| c.observed_generation == Some(2)));
        let rejected = Rejection::new(Reason::InvalidUrl, "bad");
        let third = conditions(
            verdicts(&report(Err(rejected)), "c", None),
            &second,
            Some(3),
            later,
        );
        let ready = third.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.last_transition_time.0, later);
    }

    #[test]
    fn served_says_whether_every_live_data_plane_serves_the_published_config() {
        let served = |serving, live, stale: &[&str]| ServedSummary {
            serving,
            live,
            stale: stale.iter().map(|s| (*s).to_owned()).collect(),
        };
        let verdicts = |summary: &ServedSummary| verdicts(&report(Ok(())), "c", Some(summary));
        let all = verdicts(&served(3, 3, &[]));
        assert_eq!((all[3].type_, all[3].status), ("Served", "True"));
        let stale = verdicts(&served(2, 3, &["gw-7f9c"]));
        assert_eq!(
            (stale[3].status, stale[3].reason.as_str()),
            ("False", "Stale")
        );
        assert!(stale[3].message.contains("gw-7f9c"), "{}", stale[3].message);
        let none = verdicts(&served(0, 0, &[]));
        assert_eq!(
            (none[3].status, none[3].reason.as_str()),
            ("Unknown", "NoDataPlanes")
        );
        let rejected = Rejection::new(Reason::InvalidUrl, "bad");
        assert_eq!(
            crate::status::verdicts(&report(Err(rejected)), "c", Some(&served(3, 3, &[]))).len(),
            3,
            "a rejected object is not served"
        );
    }
}
