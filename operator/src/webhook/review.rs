//! One AdmissionReview of a pod: the decision from the informer caches (no API round trip), the
//! JSON patch, and an Event and a metric for each pod that asked.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::{
    core::admission::{AdmissionRequest, AdmissionResponse, Operation},
    runtime::events::{Event, EventType, Recorder},
};

use crate::{
    inject::{
        annotations,
        decide::{self, Context, Decision},
        sidecar::{KeyRef, SidecarSettings},
    },
    metrics::Metrics,
    scope::Scopes,
};

/// Marks a pod that asked but was not injected, with the reason's code, so the pod says why
/// (and the report of pods without a sidecar does not count it twice).
pub const SKIPPED: &str = "modelgate.io/injection-skipped";

pub struct Injector {
    pub settings: SidecarSettings,
    pub scopes: Scopes,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
}

impl Injector {
    pub fn review(&self, request: &AdmissionRequest<Pod>) -> AdmissionResponse {
        let response = AdmissionResponse::from(request);
        let (Operation::Create, Some(pod)) = (&request.operation, &request.object) else {
            return response;
        };
        let namespace = request
            .namespace
            .clone()
            .or_else(|| pod.metadata.namespace.clone())
            .unwrap_or_default();
        let (labels, annotations) = self.scopes.namespace_metadata(&namespace);
        let key = |name: &str| -> Option<KeyRef> {
            self.scopes
                .virtual_key_secret(&namespace, name)
                .map(|s| KeyRef {
                    secret: s.name,
                    key: s.key,
                })
        };
        let context = Context {
            namespace_labels: &labels,
            namespace_annotations: &annotations,
            virtual_key: &key,
            settings: &self.settings,
        };
        let decision = decide::decide(pod, &context);
        let (mutated, event) = match decision {
            Decision::Untouched => return response,
            Decision::Injected { pod: mutated, hash } => {
                let note = format!("modelgate sidecar injected ({hash})");
                if !request.dry_run {
                    self.metrics.injection("injected", "");
                }
                (*mutated, (EventType::Normal, "Injected", note))
            }
            Decision::Skipped(decide::SkipReason::AlreadyInjected) => {
                let reason = decide::SkipReason::AlreadyInjected;
                if !request.dry_run {
                    self.metrics.injection("skipped", reason.code());
                }
                let note = format!("{}: {reason}", reason.code());
                (pod.clone(), (EventType::Normal, "InjectionSkipped", note))
            }
            Decision::Skipped(reason) => {
                if !request.dry_run {
                    self.metrics.injection("skipped", reason.code());
                }
                tracing::info!(namespace, pod = %pod_name(pod), reason = reason.code(), %reason, "sidecar not injected");
                let mut marked = pod.clone();
                marked
                    .metadata
                    .annotations
                    .get_or_insert_with(BTreeMap::new)
                    .insert(SKIPPED.to_owned(), reason.code().to_owned());
                let note = format!("{}: {reason}", reason.code());
                (marked, (EventType::Warning, "InjectionSkipped", note))
            }
        };
        if !request.dry_run {
            self.announce(pod, &namespace, event);
        }
        let patch = json_patch::diff(
            &serde_json::to_value(pod).unwrap_or_default(),
            &serde_json::to_value(&mutated).unwrap_or_default(),
        );
        if patch.0.is_empty() {
            return response;
        }
        match response.clone().with_patch(patch) {
            Ok(patched) => patched,
            Err(error) => {
                tracing::warn!(%error, "cannot encode the injection patch; admitting unchanged");
                response
            }
        }
    }

    /// An Event on the pod's owner (the pod has no name yet when its controller creates it),
    /// or on the pod itself; written in the background so admission never waits on it.
    fn announce(
        &self,
        pod: &Pod,
        namespace: &str,
        (type_, reason, note): (EventType, &'static str, String),
    ) {
        let Some(reference) = regarding(pod, namespace) else {
            return;
        };
        let recorder = self.recorder.clone();
        tokio::spawn(async move {
            let event = Event {
                type_,
                reason: reason.to_owned(),
                note: Some(note),
                action: "Inject".to_owned(),
                secondary: None,
            };
            if let Err(error) = recorder.publish(&event, &reference).await {
                tracing::debug!(%error, "injection Event not recorded");
            }
        });
    }
}

fn regarding(pod: &Pod, namespace: &str) -> Option<ObjectReference> {
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    if let Some(owner) = owner {
        return Some(ObjectReference {
            api_version: Some(owner.api_version.clone()),
            kind: Some(owner.kind.clone()),
            name: Some(owner.name.clone()),
            namespace: Some(namespace.to_owned()),
            uid: Some(owner.uid.clone()),
            ..ObjectReference::default()
        });
    }
    let name = pod.metadata.name.clone()?;
    Some(ObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some("Pod".to_owned()),
        name: Some(name),
        namespace: Some(namespace.to_owned()),
        ..ObjectReference::default()
    })
}

fn pod_name(pod: &Pod) -> String {
    pod.metadata
        .name
        .clone()
        .or_else(|| pod.metadata.generate_name.clone().map(|g| format!("{g}*")))
        .unwrap_or_default()
}

/// Whether a pod asked for the sidecar and has none (and was not skipped for a reason): what
/// the report of pods created while the injector was away counts.
pub fn asked_without_sidecar(
    annotations_of_pod: &BTreeMap<String, String>,
    namespace_labels: &BTreeMap<String, String>,
    namespace_annotations: &BTreeMap<String, String>,
) -> bool {
    if annotations_of_pod.contains_key(annotations::INJECTED)
        || annotations_of_pod.contains_key(SKIPPED)
    {
        return false;
    }
    match annotations::inject(annotations_of_pod) {
        Ok(annotations::Inject::Enabled) => true,
        Ok(annotations::Inject::Unset) => [namespace_labels, namespace_annotations]
            .iter()
            .any(|m| m.get(annotations::INJECT).map(String::as_str) == Some("enabled")),
        _ => false,
    }
}
