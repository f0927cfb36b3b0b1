//! Shared reflectors. The modelgate CRs are watched per scope (all namespaces, or each configured
//! one), and the Namespaces' metadata for their org label. Secrets are watched only inside the
//! tenant namespaces that hold modelgate objects, and only those labelled for modelgate
//! (credentials, virtual keys, the configs this operator published): the operator needs no
//! cluster-wide read of Secrets, only a RoleBinding in each tenant namespace. Reconciles read
//! these in-memory stores; every change sends its namespace to the work queue.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Debug,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use futures_util::StreamExt;
use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{Namespace, Secret},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    core::PartialObjectMeta,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher::{self, Event, watcher},
    },
};
use modelgate_crds::{
    ModelGroup, Resources, RoutingPolicy, VirtualKey,
    common::{CREDENTIAL_LABEL, DATA_PLANE_LABEL, ORG_LABEL, SecretKeySelector, VIRTUAL_KEY_LABEL},
    virtual_key::generated_key_secret,
};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::{publish, queue::Trigger, served::ServedSummary};

/// The modelgate CRs of one watched scope.
#[derive(Clone)]
struct CrdStores {
    model_groups: Store<ModelGroup>,
    routing_policies: Store<RoutingPolicy>,
    virtual_keys: Store<VirtualKey>,
}

/// The Secrets modelgate reads in one tenant namespace.
#[derive(Clone)]
pub struct TenantStores {
    credentials: Store<Secret>,
    keys: Store<Secret>,
    published: Store<PartialObjectMeta<Secret>>,
    /// The data planes' heartbeat Leases here.
    heartbeats: Store<Lease>,
    /// The API server refused a Secret watch here: the operator holds no RoleBinding in it.
    forbidden: Arc<AtomicBool>,
}

/// Everything the operator watches.
#[derive(Clone)]
pub struct Scopes {
    client: Client,
    triggers: mpsc::UnboundedSender<Trigger>,
    crds: Arc<BTreeMap<Option<String>, CrdStores>>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    tenants: Arc<Mutex<BTreeMap<String, TenantStores>>>,
}

impl Scopes {
    /// Starts the watches; `namespaces` empty watches the CRs of the whole cluster. They retry
    /// with backoff on errors for as long as the process runs.
    pub fn start(
        client: &Client,
        namespaces: &[String],
        triggers: &mpsc::UnboundedSender<Trigger>,
    ) -> Self {
        let scopes: Vec<Option<String>> = if namespaces.is_empty() {
            vec![None]
        } else {
            namespaces.iter().cloned().map(Some).collect()
        };
        let crds = scopes
            .into_iter()
            .map(|scope| {
                let stores = CrdStores::start(client, scope.as_deref(), triggers);
                (scope, stores)
            })
            .collect();
        let scopes = Self {
            client: client.clone(),
            triggers: triggers.clone(),
            crds: Arc::new(crds),
            // A change of a namespace's org label re-compiles it.
            namespaces: reflect(
                Api::all(client.clone()),
                watcher::Config::default(),
                triggers,
                |o: &PartialObjectMeta<Namespace>| o.name_any(),
            ),
            tenants: Arc::default(),
        };
        // The configured namespaces are tenants from the start.
        for namespace in namespaces {
            scopes.tenant(namespace);
        }
        scopes
    }

    /// Waits until every CR and namespace watch has listed once.
    pub async fn wait_ready(&self) {
        for stores in self.crds.values() {
            stores.wait_ready().await;
        }
        // Err only if a writer was dropped, which cannot happen while the watch tasks run.
        let _ = self.namespaces.wait_until_ready().await;
    }

    /// Whether `namespace` is watched at all.
    pub fn watches(&self, namespace: &str) -> bool {
        self.crds.contains_key(&None) || self.crds.contains_key(&Some(namespace.to_owned()))
    }

    /// Namespaces with anything to reconcile: a modelgate object or a published config.
    pub fn active_namespaces(&self) -> BTreeSet<String> {
        let mut active: BTreeSet<String> =
            self.crds.values().flat_map(CrdStores::namespaces).collect();
        let tenants = lock(&self.tenants);
        active.extend(
            tenants
                .iter()
                .filter(|(_, t)| !t.published.state().is_empty())
                .map(|(ns, _)| ns.clone()),
        );
        active
    }

    /// The Secret watches of `namespace`, started on first use.
    pub fn tenant(&self, namespace: &str) -> TenantStores {
        let mut tenants = lock(&self.tenants);
        tenants
            .entry(namespace.to_owned())
            .or_insert_with(|| TenantStores::start(&self.client, namespace, &self.triggers))
            .clone()
    }

    /// The Secret watches of `namespace`, if they were started.
    pub fn existing_tenant(&self, namespace: &str) -> Option<TenantStores> {
        lock(&self.tenants).get(namespace).cloned()
    }

    /// Whether `namespace` holds a ModelGroup, RoutingPolicy or VirtualKey.
    pub fn has_objects(&self, namespace: &str) -> bool {
        self.crds.values().any(|stores| {
            holds(&stores.model_groups, namespace)
                || holds(&stores.routing_policies, namespace)
                || holds(&stores.virtual_keys, namespace)
        })
    }

    /// A namespace's labels and annotations, from the cache (empty when it is unknown).
    pub fn namespace_metadata(
        &self,
        namespace: &str,
    ) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        self.namespaces
            .get(&reflector::ObjectRef::new(namespace))
            .map(|ns| (ns.labels().clone(), ns.annotations().clone()))
            .unwrap_or_default()
    }

    /// Where the key of VirtualKey `name` in `namespace` lives, if that VirtualKey exists.
    pub fn virtual_key_secret(&self, namespace: &str, name: &str) -> Option<SecretKeySelector> {
        let wanted = reflector::ObjectRef::new(name).within(namespace);
        let key = self
            .crds
            .values()
            .find_map(|stores| stores.virtual_keys.get(&wanted))?;
        Some(
            key.spec
                .key_secret_ref
                .clone()
                .unwrap_or_else(|| generated_key_secret(name)),
        )
    }

    /// Everything the compiler reads for one namespace, once its Secret watches have listed.
    pub fn resources(&self, namespace: &str, tenant: &TenantStores) -> Resources {
        let mut resources = Resources {
            secrets: tenant.secrets(),
            ..Resources::default()
        };
        for stores in self.crds.values() {
            resources
                .model_groups
                .extend(in_namespace(&stores.model_groups, namespace));
            resources
                .routing_policies
                .extend(in_namespace(&stores.routing_policies, namespace));
            resources
                .virtual_keys
                .extend(in_namespace(&stores.virtual_keys, namespace));
        }
        if let Some(org) = self
            .namespaces
            .get(&reflector::ObjectRef::new(namespace))
            .and_then(|ns| ns.labels().get(ORG_LABEL).cloned())
        {
            resources.namespace_orgs.insert(namespace.to_owned(), org);
        }
        resources
    }
}

impl CrdStores {
    fn start(
        client: &Client,
        namespace: Option<&str>,
        triggers: &mpsc::UnboundedSender<Trigger>,
    ) -> Self {
        Self {
            model_groups: reflect(
                api(client, namespace),
                watcher::Config::default(),
                triggers,
                namespace_of,
            ),
            routing_policies: reflect(
                api(client, namespace),
                watcher::Config::default(),
                triggers,
                namespace_of,
            ),
            virtual_keys: reflect(
                api(client, namespace),
                watcher::Config::default(),
                triggers,
                namespace_of,
            ),
        }
    }

    async fn wait_ready(&self) {
        let _ = self.model_groups.wait_until_ready().await;
        let _ = self.routing_policies.wait_until_ready().await;
        let _ = self.virtual_keys.wait_until_ready().await;
    }

    fn namespaces(&self) -> BTreeSet<String> {
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
        namespaces
    }
}

impl TenantStores {
    fn start(client: &Client, namespace: &str, triggers: &mpsc::UnboundedSender<Trigger>) -> Self {
        let forbidden = Arc::new(AtomicBool::new(false));
        let config = |labels: &str| watcher::Config::default().labels(labels);
        Self {
            credentials: reflect_tracking(
                Api::namespaced(client.clone(), namespace),
                config(&format!("{CREDENTIAL_LABEL}=true")),
                triggers,
                namespace_of,
                forbidden.clone(),
            ),
            keys: reflect_tracking(
                Api::namespaced(client.clone(), namespace),
                config(VIRTUAL_KEY_LABEL),
                triggers,
                namespace_of,
                forbidden.clone(),
            ),
            // The published configs are large and derived: watched as metadata only (their
            // checksum annotation).
            published: reflect_tracking(
                Api::namespaced(client.clone(), namespace),
                config(&format!("{}=true", publish::CONFIG_LABEL)),
                triggers,
                namespace_of,
                forbidden.clone(),
            ),
            // Renewed every few seconds by every data plane: a heartbeat only triggers a
            // reconcile when what is served changed (the controller checks).
            heartbeats: reflect_with(
                Api::namespaced(client.clone(), namespace),
                config(&format!("{DATA_PLANE_LABEL}=true")),
                triggers,
                |lease: &Lease| Trigger::Heartbeat(namespace_of(lease)),
                forbidden.clone(),
            ),
            forbidden,
        }
    }

    /// Waits until every Secret watch here has listed once; false when the API server refuses
    /// them (no RoleBinding for the operator in this namespace).
    pub async fn ready(&self) -> bool {
        loop {
            if self.forbidden.load(Ordering::Relaxed) {
                return false;
            }
            let listed = tokio::time::timeout(std::time::Duration::from_millis(200), async {
                let _ = self.credentials.wait_until_ready().await;
                let _ = self.keys.wait_until_ready().await;
                let _ = self.published.wait_until_ready().await;
                let _ = self.heartbeats.wait_until_ready().await;
            })
            .await;
            if listed.is_ok() {
                return true;
            }
        }
    }

    fn secrets(&self) -> Vec<Secret> {
        let mut secrets: BTreeMap<String, Secret> = BTreeMap::new();
        for secret in self
            .credentials
            .state()
            .iter()
            .chain(self.keys.state().iter())
        {
            secrets.insert(secret.name_any(), Secret::clone(secret));
        }
        secrets.into_values().collect()
    }

    /// The checksum annotation of the Secret `name` published here, as last seen.
    pub fn published_checksum(&self, namespace: &str, name: &str) -> Option<String> {
        let key = reflector::ObjectRef::new(name).within(namespace);
        self.published.get(&key).and_then(|meta| {
            meta.annotations()
                .get(publish::CHECKSUM_ANNOTATION)
                .cloned()
        })
    }

    /// The data planes of this namespace against the config published with `checksum`.
    pub fn served(&self, checksum: &str) -> ServedSummary {
        let leases = self.heartbeats.state();
        let leases: Vec<&Lease> = leases.iter().map(AsRef::as_ref).collect();
        ServedSummary::of(&leases, checksum, jiff::Timestamp::now())
    }

    /// Whether a config Secret is published here.
    pub fn has_published(&self, namespace: &str) -> bool {
        let key = reflector::ObjectRef::new(publish::CONFIG_SECRET).within(namespace);
        self.published.get(&key).is_some()
    }
}

/// The namespace a namespaced object's change concerns.
fn namespace_of<K: Resource>(object: &K) -> String {
    object.meta().namespace.clone().unwrap_or_default()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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

fn holds<K>(store: &Store<K>, namespace: &str) -> bool
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .state()
        .iter()
        .any(|o| o.meta().namespace.as_deref() == Some(namespace))
}

/// A reflector whose events become namespace triggers (`namespace_of` names the namespace an
/// object's change concerns). A relist (`InitDone`) triggers every namespace, because objects
/// deleted while the watch was down are not reported one by one.
fn reflect<K, N>(
    api: Api<K>,
    config: watcher::Config,
    triggers: &mpsc::UnboundedSender<Trigger>,
    namespace_of: N,
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    N: Fn(&K) -> String + Send + 'static,
{
    reflect_tracking(
        api,
        config,
        triggers,
        namespace_of,
        Arc::new(AtomicBool::new(false)),
    )
}

/// [`reflect`], raising `forbidden` while the API server refuses the watch (RBAC) and lowering
/// it once the watch works.
fn reflect_tracking<K, N>(
    api: Api<K>,
    config: watcher::Config,
    triggers: &mpsc::UnboundedSender<Trigger>,
    namespace_of: N,
    forbidden: Arc<AtomicBool>,
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    N: Fn(&K) -> String + Send + 'static,
{
    reflect_with(
        api,
        config,
        triggers,
        move |o: &K| Trigger::Namespace(namespace_of(o)),
        forbidden,
    )
}

/// [`reflect_tracking`] with the trigger an object's change sends.
fn reflect_with<K, T>(
    api: Api<K>,
    config: watcher::Config,
    triggers: &mpsc::UnboundedSender<Trigger>,
    trigger_of: T,
    forbidden: Arc<AtomicBool>,
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    T: Fn(&K) -> Trigger + Send + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    let triggers = triggers.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            let trigger = match event {
                Ok(Event::Apply(o) | Event::Delete(o) | Event::InitApply(o)) => {
                    forbidden.store(false, Ordering::Relaxed);
                    Some(trigger_of(&o))
                }
                Ok(Event::InitDone) => {
                    forbidden.store(false, Ordering::Relaxed);
                    Some(Trigger::All)
                }
                Ok(Event::Init) => None,
                Err(error) => {
                    if is_forbidden(&error) && !forbidden.swap(true, Ordering::Relaxed) {
                        tracing::warn!(kind = %K::kind(&()), %error, "the API server refuses this watch: the operator's ServiceAccount needs a RoleBinding here");
                        Some(Trigger::All)
                    } else {
                        tracing::warn!(kind = %K::kind(&()), %error, "watch failed; retrying with backoff");
                        None
                    }
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

fn is_forbidden(error: &watcher::Error) -> bool {
    matches!(
        error,
        watcher::Error::InitialListFailed(kube::Error::Api(status))
            | watcher::Error::WatchFailed(kube::Error::Api(status))
            | watcher::Error::WatchStartFailed(kube::Error::Api(status))
            if status.code == 403
    )
}
