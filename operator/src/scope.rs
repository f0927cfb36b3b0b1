//! Shared reflectors: one watch per kind (ModelGroup, RoutingPolicy, VirtualKey, Secret, and the
//! metadata of the config Secrets this operator published) per watched scope, all namespaces or
//! each configured one. Reconciles read these in-memory stores; every change sends the object's
//! namespace to the work queue.

use std::{collections::BTreeSet, fmt::Debug, sync::Arc};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, Resource, ResourceExt,
    core::PartialObjectMeta,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher::{self, Event, watcher},
    },
};
use modelgate_crds::{ModelGroup, Resources, RoutingPolicy, VirtualKey};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::{publish, queue::Trigger};

const UNREFERENCED_SECRET_TYPES: &str =
    "type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token";

/// The stores of one watched scope.
#[derive(Clone)]
pub struct Stores {
    model_groups: Store<ModelGroup>,
    routing_policies: Store<RoutingPolicy>,
    virtual_keys: Store<VirtualKey>,
    secrets: Store<Secret>,
    published: Store<PartialObjectMeta<Secret>>,
}

/// Every scope the operator watches: the whole cluster, or each configured namespace.
#[derive(Clone)]
pub enum Scopes {
    Cluster(Stores),
    Namespaces(Arc<std::collections::BTreeMap<String, Stores>>),
}

impl Scopes {
    /// Starts the watches. They retry with backoff on errors for as long as the process runs.
    pub fn start(
        client: &Client,
        namespaces: &[String],
        triggers: &mpsc::UnboundedSender<Trigger>,
    ) -> Self {
        if namespaces.is_empty() {
            return Self::Cluster(Stores::start(client, None, triggers));
        }
        let stores = namespaces
            .iter()
            .map(|ns| (ns.clone(), Stores::start(client, Some(ns), triggers)))
            .collect();
        Self::Namespaces(Arc::new(stores))
    }

    /// Waits until every watch has listed once.
    pub async fn wait_ready(&self) {
        match self {
            Self::Cluster(stores) => stores.wait_ready().await,
            Self::Namespaces(all) => {
                for stores in all.values() {
                    stores.wait_ready().await;
                }
            }
        }
    }

    /// The stores that hold `namespace`, if it is watched.
    pub fn stores(&self, namespace: &str) -> Option<&Stores> {
        match self {
            Self::Cluster(stores) => Some(stores),
            Self::Namespaces(all) => all.get(namespace),
        }
    }

    /// Namespaces with anything to reconcile: a modelgate object or a published config.
    pub fn active_namespaces(&self) -> BTreeSet<String> {
        match self {
            Self::Cluster(stores) => stores.active_namespaces(),
            Self::Namespaces(all) => all.values().flat_map(Stores::active_namespaces).collect(),
        }
    }
}

impl Stores {
    fn start(
        client: &Client,
        namespace: Option<&str>,
        triggers: &mpsc::UnboundedSender<Trigger>,
    ) -> Self {
        let own = format!("!{}", publish::CONFIG_LABEL);
        let published = format!("{}=true", publish::CONFIG_LABEL);
        Self {
            model_groups: reflect(api(client, namespace), watcher::Config::default(), triggers),
            routing_policies: reflect(api(client, namespace), watcher::Config::default(), triggers),
            virtual_keys: reflect(api(client, namespace), watcher::Config::default(), triggers),
            // The published configs are large and derived: left out of the Secret cache, and
            // watched as metadata only (their checksum annotation). Helm releases and
            // service-account tokens are never referenced, so they are not cached either.
            secrets: reflect(
                api(client, namespace),
                watcher::Config::default()
                    .labels(&own)
                    .fields(UNREFERENCED_SECRET_TYPES),
                triggers,
            ),
            published: reflect(
                api(client, namespace),
                watcher::Config::default().labels(&published),
                triggers,
            ),
        }
    }

    async fn wait_ready(&self) {
        // Err only if a writer was dropped, which cannot happen while the watch tasks run.
        let _ = self.model_groups.wait_until_ready().await;
        let _ = self.routing_policies.wait_until_ready().await;
        let _ = self.virtual_keys.wait_until_ready().await;
        let _ = self.secrets.wait_until_ready().await;
        let _ = self.published.wait_until_ready().await;
    }

    fn active_namespaces(&self) -> BTreeSet<String> {
        let mut namespaces = BTreeSet::new();
        namespaces.extend(
            self.model_groups
                .state()
                .iter()
                .filter_map(|o| o.namespace()),
        );
        namespaces.extend(
            self.routing_policies
                .state()
                .iter()
                .filter_map(|o| o.namespace()),
        );
        namespaces.extend(
            self.virtual_keys
                .state()
                .iter()
                .filter_map(|o| o.namespace()),
        );
        namespaces.extend(self.published.state().iter().filter_map(|o| o.namespace()));
        namespaces
    }

    /// Everything the compiler reads for one namespace.
    pub fn resources(&self, namespace: &str) -> Resources {
        Resources {
            model_groups: in_namespace(&self.model_groups, namespace),
            routing_policies: in_namespace(&self.routing_policies, namespace),
            virtual_keys: in_namespace(&self.virtual_keys, namespace),
            secrets: in_namespace(&self.secrets, namespace),
        }
    }

    /// The checksum annotation of the config Secret published in `namespace`, as last seen.
    pub fn published_checksum(&self, namespace: &str) -> Option<String> {
        let key = reflector::ObjectRef::new(publish::CONFIG_SECRET).within(namespace);
        self.published.get(&key).and_then(|meta| {
            meta.annotations()
                .get(publish::CHECKSUM_ANNOTATION)
                .cloned()
        })
    }

    /// Whether a config Secret is published in `namespace`.
    pub fn has_published(&self, namespace: &str) -> bool {
        let key = reflector::ObjectRef::new(publish::CONFIG_SECRET).within(namespace);
        self.published.get(&key).is_some()
    }
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn in_namespace<K>(store: &Store<K>, namespace: &str) -> Vec<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .state()
        .iter()
        .filter(|o| o.meta().namespace.as_deref() == Some(namespace))
        .map(|o| K::clone(o))
        .collect()
}

/// A reflector whose events become namespace triggers. A relist (`InitDone`) triggers every
/// namespace, because objects deleted while the watch was down are not reported one by one.
fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    triggers: &mpsc::UnboundedSender<Trigger>,
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    let triggers = triggers.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            let trigger = match event {
                Ok(Event::Apply(o) | Event::Delete(o) | Event::InitApply(o)) => {
                    o.meta().namespace.clone().map(Trigger::Namespace)
                }
                Ok(Event::InitDone) => Some(Trigger::All),
                Ok(Event::Init) => None,
                Err(error) => {
                    tracing::warn!(kind = %K::kind(&()), %error, "watch failed; retrying with backoff");
                    None
                }
            };
            if let Some(trigger) = trigger
                && triggers.send(trigger).is_err()
            {
                return;
            }
        }
    });
    reader
}
