//! Pods the injector did not reach: with `failurePolicy: Ignore`, a pod created while no
//! operator replica answered starts without its sidecar. A metadata-only watch of pods finds
//! those that asked for one and have none, and those whose sidecar is not what the injector
//! injects now; both are gauges, and the leader records a `NotInjected` Event on each pod of the
//! first kind, once.

use std::{collections::HashSet, sync::Arc, time::Duration};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::{
    Api, Client, ResourceExt,
    core::PartialObjectMeta,
    runtime::{
        WatchStreamExt,
        events::{Event, EventType, Recorder},
        reflector,
        reflector::Store,
        watcher::{self, watcher},
    },
};
use tokio::sync::watch;

use super::review::asked_without_sidecar;
use crate::{
    inject::{annotations, sidecar},
    metrics::Metrics,
    scope::Scopes,
};

pub struct Gaps {
    pub client: Client,
    /// Namespaces to look in; every namespace when empty.
    pub namespaces: Vec<String>,
    pub scopes: Scopes,
    pub settings: sidecar::SidecarSettings,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub interval: Duration,
}

impl Gaps {
    pub async fn run(self, leading: watch::Receiver<bool>, mut shutdown: watch::Receiver<bool>) {
        let apis: Vec<Api<PartialObjectMeta<Pod>>> = if self.namespaces.is_empty() {
            vec![Api::all(self.client.clone())]
        } else {
            self.namespaces
                .iter()
                .map(|ns| Api::namespaced(self.client.clone(), ns))
                .collect()
        };
        let stores: Vec<Store<PartialObjectMeta<Pod>>> = apis
            .into_iter()
            .map(|api| {
                let (reader, writer) = reflector::store();
                let stream = reflector(writer, watcher(api, watcher::Config::default()))
                    .default_backoff()
                    .applied_objects();
                tokio::spawn(async move {
                    let mut stream = std::pin::pin!(stream);
                    while let Some(item) = stream.next().await {
                        if let Err(error) = item {
                            tracing::debug!(%error, "pod metadata watch error");
                        }
                    }
                });
                reader
            })
            .collect();
        let mut reported = HashSet::new();
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                _ = tick.tick() => {}
            }
            let pods: Vec<Arc<PartialObjectMeta<Pod>>> =
                stores.iter().flat_map(Store::state).collect();
            let current = current_hashes(&self.settings, &pods);
            let mut missing = Vec::new();
            let mut stale = 0;
            for (pod, current) in pods.iter().zip(current) {
                let namespace = pod.namespace().unwrap_or_default();
                let (labels, annotations) = self.scopes.namespace_metadata(&namespace);
                if asked_without_sidecar(pod.annotations(), &labels, &annotations) {
                    missing.push(pod.clone());
                } else if let Some(hash) = pod.annotations().get(annotations::INJECTED)
                    && *hash != current
                {
                    stale += 1;
                }
            }
            self.metrics.set_pod_injection_gaps(missing.len(), stale);
            if !*leading.borrow() {
                continue;
            }
            for pod in missing {
                let Some(uid) = pod.uid() else { continue };
                if reported.insert(uid.clone()) {
                    self.announce(&pod, uid);
                }
            }
        }
    }

    fn announce(&self, pod: &PartialObjectMeta<Pod>, uid: String) {
        let reference = ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Pod".to_owned()),
            name: Some(pod.name_any()),
            namespace: pod.namespace(),
            uid: Some(uid),
            ..ObjectReference::default()
        };
        let recorder = self.recorder.clone();
        tokio::spawn(async move {
            let event = Event {
                type_: EventType::Warning,
                reason: "NotInjected".to_owned(),
                note: Some(
                    "the pod asks for the modelgate sidecar but has none: it was created while the injector was unavailable (failurePolicy Ignore). Delete it, or `kubectl rollout restart` its workload, to inject it".to_owned(),
                ),
                action: "Inject".to_owned(),
                secondary: None,
            };
            if let Err(error) = recorder.publish(&event, &reference).await {
                tracing::debug!(%error, "NotInjected Event not recorded");
            }
        });
    }
}

/// The hash the injector would give each pod now.
fn current_hashes(
    settings: &sidecar::SidecarSettings,
    pods: &[Arc<PartialObjectMeta<Pod>>],
) -> Vec<String> {
    pods.iter()
        .map(|pod| {
            let requests = annotations::pod_requests(pod.annotations()).unwrap_or_default();
            sidecar::build(settings, &requests, None).hash
        })
        .collect()
}
