//! Whether a pod gets the sidecar, and the pod it becomes. Pure and idempotent: a pod that went
//! through it once comes out of a second pass unchanged.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};

use super::{
    annotations::{self, Inject, Invalid},
    sidecar::{self, CONTAINER, Injection, KeyRef, SidecarSettings},
};

/// What the webhook does with a pod.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Not asked for (or opted out): let it through untouched, say nothing.
    Untouched,
    /// Asked for but not done, and why.
    Skipped(SkipReason),
    /// The pod with the sidecar, and the hash of what was injected.
    Injected { pod: Box<Pod>, hash: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    HostNetwork,
    SharedProcessNamespace,
    AlreadyInjected,
    InvalidAnnotation(Invalid),
    UnknownVirtualKey(String),
    PortConflict { container: String, port: u16 },
}

impl SkipReason {
    /// A stable label for metrics and the Event's note.
    pub fn code(&self) -> &'static str {
        match self {
            Self::HostNetwork => "HostNetwork",
            Self::SharedProcessNamespace => "SharedProcessNamespace",
            Self::AlreadyInjected => "AlreadyInjected",
            Self::InvalidAnnotation(_) => "InvalidAnnotation",
            Self::UnknownVirtualKey(_) => "UnknownVirtualKey",
            Self::PortConflict { .. } => "PortConflict",
        }
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::HostNetwork => write!(
                f,
                "the pod uses the host's network, where a loopback sidecar would be shared with every pod of the node"
            ),
            Self::SharedProcessNamespace => write!(
                f,
                "the pod shares its process namespace, which would let the app read the sidecar's provider credentials"
            ),
            Self::AlreadyInjected => write!(f, "the pod already has the current sidecar"),
            Self::InvalidAnnotation(invalid) => write!(f, "{invalid}"),
            Self::UnknownVirtualKey(name) => write!(
                f,
                "VirtualKey {name:?} (annotation {}) does not exist in the pod's namespace",
                annotations::VIRTUAL_KEY
            ),
            Self::PortConflict { container, port } => write!(
                f,
                "container {container:?} uses port {port}, which the sidecar needs; set {} or {} to another port",
                annotations::PROXY_PORT,
                annotations::ADMIN_PORT
            ),
        }
    }
}

/// What the webhook knows besides the pod: its namespace's labels and annotations, and the
/// VirtualKeys of the namespace (name to the Secret key holding its key material).
pub struct Context<'a> {
    pub namespace_labels: &'a BTreeMap<String, String>,
    pub namespace_annotations: &'a BTreeMap<String, String>,
    pub virtual_key: &'a dyn Fn(&str) -> Option<KeyRef>,
    pub settings: &'a SidecarSettings,
}

pub fn decide(pod: &Pod, context: &Context<'_>) -> Decision {
    let empty = BTreeMap::new();
    let pod_annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    let asked = match annotations::inject(pod_annotations) {
        Ok(Inject::Enabled) => true,
        Ok(Inject::Disabled) => false,
        Ok(Inject::Unset) => namespace_asks(context),
        Err(invalid) => return Decision::Skipped(SkipReason::InvalidAnnotation(invalid)),
    };
    if !asked {
        return Decision::Untouched;
    }
    let Some(spec) = &pod.spec else {
        return Decision::Untouched;
    };
    if spec.host_network == Some(true) {
        return Decision::Skipped(SkipReason::HostNetwork);
    }
    if spec.share_process_namespace == Some(true) {
        return Decision::Skipped(SkipReason::SharedProcessNamespace);
    }
    let requests = match annotations::pod_requests(pod_annotations) {
        Ok(requests) => requests,
        Err(invalid) => return Decision::Skipped(SkipReason::InvalidAnnotation(invalid)),
    };
    let key = match &requests.virtual_key {
        Some(name) => match (context.virtual_key)(name) {
            Some(key) => Some(key),
            None => return Decision::Skipped(SkipReason::UnknownVirtualKey(name.clone())),
        },
        None => None,
    };
    let injection = sidecar::build(context.settings, &requests, key.as_ref());
    if let Some(conflict) = port_conflict(spec, &injection) {
        return Decision::Skipped(conflict);
    }
    let injected = apply(pod, &injection);
    if &injected == pod {
        return Decision::Skipped(SkipReason::AlreadyInjected);
    }
    Decision::Injected {
        pod: Box::new(injected),
        hash: injection.hash,
    }
}

/// The namespace asks with `modelgate.io/inject: enabled` as a label or an annotation.
fn namespace_asks(context: &Context<'_>) -> bool {
    [context.namespace_labels, context.namespace_annotations]
        .iter()
        .any(|map| map.get(annotations::INJECT).map(String::as_str) == Some("enabled"))
}

fn app_containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .filter(|c| c.name != CONTAINER)
}

fn port_conflict(spec: &PodSpec, injection: &Injection) -> Option<SkipReason> {
    app_containers(spec).find_map(|container| {
        container
            .ports
            .iter()
            .flatten()
            .map(|p| p.container_port)
            .find(|p| {
                *p == i32::from(injection.proxy_port) || *p == i32::from(injection.admin_port)
            })
            .map(|port| SkipReason::PortConflict {
                container: container.name.clone(),
                port: u16::try_from(port).unwrap_or_default(),
            })
    })
}

/// The pod with the injection: the sidecar replaced (or added) first among the init containers
/// (native) or the containers, its volumes replaced (or added), the env added to every app
/// container that does not set it, and the hash annotation.
fn apply(pod: &Pod, injection: &Injection) -> Pod {
    let mut pod = pod.clone();
    let Some(spec) = pod.spec.as_mut() else {
        return pod;
    };
    let native = injection.container.restart_policy.is_some();
    let mut init_containers = spec.init_containers.take().unwrap_or_default();
    init_containers.retain(|c| c.name != CONTAINER);
    spec.containers.retain(|c| c.name != CONTAINER);
    if native {
        init_containers.insert(0, injection.container.clone());
    } else {
        spec.containers.insert(0, injection.container.clone());
    }
    spec.init_containers = (!init_containers.is_empty()).then_some(init_containers);
    // The sidecar's token volume names the pod's ServiceAccount, which the API server's
    // ServiceAccount admission plugin sets to `default` when the pod names none; say so here too,
    // so the pod is valid wherever that plugin is off.
    spec.service_account_name
        .get_or_insert_with(|| "default".to_owned());

    let mut volumes = spec.volumes.take().unwrap_or_default();
    for volume in &injection.volumes {
        volumes.retain(|v| v.name != volume.name);
        volumes.push(volume.clone());
    }
    spec.volumes = Some(volumes);

    for container in spec.containers.iter_mut().filter(|c| c.name != CONTAINER) {
        let env = container.env.get_or_insert_with(Vec::new);
        for var in &injection.env {
            if !env.iter().any(|e| e.name == var.name) {
                env.push(var.clone());
            }
        }
    }
    pod.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(annotations::INJECTED.to_owned(), injection.hash.clone());
    pod
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ContainerPort, EnvVar};
    use serde_json::json;

    use super::*;

    fn pod(annotations: serde_json::Value, spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "app", "namespace": "team-a", "annotations": annotations},
            "spec": spec,
        }))
        .unwrap()
    }

    fn app_spec() -> serde_json::Value {
        json!({"containers": [
            {"name": "app", "image": "python:3", "env": [{"name": "LOG", "value": "1"}]},
            {"name": "worker", "image": "python:3", "env": [{"name": "OPENAI_BASE_URL", "value": "http://mine"}]},
        ]})
    }

    fn keys(name: &str) -> Option<KeyRef> {
        (name == "search-team").then(|| KeyRef {
            secret: "search-team-key".to_owned(),
            key: "key".to_owned(),
        })
    }

    fn decide_with(
        pod: &Pod,
        namespace_labels: &[(&str, &str)],
        settings: &SidecarSettings,
    ) -> Decision {
        let labels = namespace_labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let context = Context {
            namespace_labels: &labels,
            namespace_annotations: &BTreeMap::new(),
            virtual_key: &keys,
            settings,
        };
        decide(pod, &context)
    }

    fn injected(decision: Decision) -> Pod {
        match decision {
            Decision::Injected { pod, .. } => *pod,
            other => panic!("not injected: {other:?}"),
        }
    }

    fn env<'a>(container: &'a Container, name: &str) -> Option<&'a EnvVar> {
        container.env.iter().flatten().find(|e| e.name == name)
    }

    #[test]
    fn a_pod_that_asks_gets_a_native_sidecar_and_the_env() {
        let settings = SidecarSettings::default();
        let asked = pod(
            json!({"modelgate.io/inject": "enabled", "modelgate.io/virtual-key": "search-team"}),
            app_spec(),
        );
        let out = injected(decide_with(&asked, &[], &settings));
        let spec = out.spec.as_ref().unwrap();
        let sidecar = &spec.init_containers.as_ref().unwrap()[0];
        assert_eq!(sidecar.name, CONTAINER);
        assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
        assert!(sidecar.startup_probe.is_some());
        assert!(
            sidecar
                .args
                .as_ref()
                .unwrap()
                .contains(&"--listen=127.0.0.1:4000".to_owned())
        );
        assert_eq!(
            env(sidecar, sidecar::WORKER_THREADS).and_then(|e| e.value.as_deref()),
            Some("1"),
            "a sidecar serves one app on one thread"
        );
        let app = &spec.containers[0];
        assert_eq!(
            env(app, sidecar::OPENAI_BASE_URL).unwrap().value.as_deref(),
            Some("http://127.0.0.1:4000/v1")
        );
        let key = env(app, "OPENAI_API_KEY").unwrap();
        assert!(key.value.is_none());
        let selector = key
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(selector.name, "search-team-key");
        assert!(env(app, "ANTHROPIC_API_KEY").is_some());
        // A container that set its own base URL keeps it.
        let worker = &spec.containers[1];
        assert_eq!(
            env(worker, sidecar::OPENAI_BASE_URL)
                .unwrap()
                .value
                .as_deref(),
            Some("http://mine")
        );
        // Only the sidecar mounts the credentials.
        for container in &spec.containers {
            assert!(container.volume_mounts.is_none(), "{}", container.name);
        }
        assert!(
            out.metadata
                .annotations
                .unwrap()
                .contains_key(annotations::INJECTED)
        );
    }

    #[test]
    fn injecting_twice_changes_nothing() {
        let settings = SidecarSettings::default();
        let asked = pod(json!({"modelgate.io/inject": "enabled"}), app_spec());
        let once = injected(decide_with(&asked, &[], &settings));
        assert_eq!(
            decide_with(&once, &[], &settings),
            Decision::Skipped(SkipReason::AlreadyInjected)
        );
        // A container added after the first pass (another webhook) gets the env on reinvocation.
        let mut later = once.clone();
        later.spec.as_mut().unwrap().containers.push(Container {
            name: "late".to_owned(),
            ..Container::default()
        });
        let again = injected(decide_with(&later, &[], &settings));
        assert!(env(&again.spec.unwrap().containers[2], sidecar::OPENAI_BASE_URL).is_some());
    }

    #[test]
    fn a_changed_sidecar_replaces_the_old_one() {
        let asked = pod(json!({"modelgate.io/inject": "enabled"}), app_spec());
        let old = injected(decide_with(&asked, &[], &SidecarSettings::default()));
        let newer = SidecarSettings {
            image: "registry.example.com/modelgate:0.2.0".to_owned(),
            ..SidecarSettings::default()
        };
        let new = injected(decide_with(&old, &[], &newer));
        let spec = new.spec.as_ref().unwrap();
        let sidecars: Vec<_> = spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| c.name == CONTAINER)
            .collect();
        assert_eq!(sidecars.len(), 1);
        assert_eq!(
            sidecars[0].image.as_deref(),
            Some("registry.example.com/modelgate:0.2.0")
        );
        assert_ne!(
            old.metadata.annotations.unwrap()[annotations::INJECTED],
            new.metadata.annotations.unwrap()[annotations::INJECTED]
        );
    }

    #[test]
    fn the_namespace_asks_and_the_pod_may_decline() {
        let settings = SidecarSettings::default();
        let plain = pod(json!({}), app_spec());
        assert_eq!(decide_with(&plain, &[], &settings), Decision::Untouched);
        assert!(matches!(
            decide_with(&plain, &[("modelgate.io/inject", "enabled")], &settings),
            Decision::Injected { .. }
        ));
        let declines = pod(json!({"modelgate.io/inject": "disabled"}), app_spec());
        assert_eq!(
            decide_with(&declines, &[("modelgate.io/inject", "enabled")], &settings),
            Decision::Untouched
        );
    }

    #[test]
    fn skips_say_why() {
        let settings = SidecarSettings::default();
        let enabled = json!({"modelgate.io/inject": "enabled"});
        let cases = [
            (
                pod(
                    enabled.clone(),
                    json!({"hostNetwork": true, "containers": [{"name": "a"}]}),
                ),
                "HostNetwork",
            ),
            (
                pod(
                    enabled.clone(),
                    json!({"shareProcessNamespace": true, "containers": [{"name": "a"}]}),
                ),
                "SharedProcessNamespace",
            ),
            (
                pod(json!({"modelgate.io/inject": "true"}), app_spec()),
                "InvalidAnnotation",
            ),
            (
                pod(
                    json!({"modelgate.io/inject": "enabled", "modelgate.io/proxy-port": "x"}),
                    app_spec(),
                ),
                "InvalidAnnotation",
            ),
            (
                pod(
                    json!({"modelgate.io/inject": "enabled", "modelgate.io/virtual-key": "nobody"}),
                    app_spec(),
                ),
                "UnknownVirtualKey",
            ),
        ];
        for (pod, code) in cases {
            match decide_with(&pod, &[], &settings) {
                Decision::Skipped(reason) => assert_eq!(reason.code(), code, "{reason}"),
                other => panic!("{code}: {other:?}"),
            }
        }
        let mut busy = pod(enabled, app_spec());
        busy.spec.as_mut().unwrap().containers[0].ports = Some(vec![ContainerPort {
            container_port: 4000,
            ..ContainerPort::default()
        }]);
        match decide_with(&busy, &[], &settings) {
            Decision::Skipped(reason @ SkipReason::PortConflict { .. }) => {
                assert!(
                    reason.to_string().contains("modelgate.io/proxy-port"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn without_native_sidecars_it_is_the_first_container() {
        let settings = SidecarSettings {
            native: false,
            ..SidecarSettings::default()
        };
        let asked = pod(json!({"modelgate.io/inject": "enabled"}), app_spec());
        let out = injected(decide_with(&asked, &[], &settings));
        let spec = out.spec.unwrap();
        assert_eq!(spec.containers[0].name, CONTAINER);
        assert!(spec.containers[0].restart_policy.is_none());
        assert!(spec.init_containers.is_none());
    }

    #[test]
    fn the_sidecar_has_a_token_of_its_own_and_the_app_none_of_it() {
        let settings = SidecarSettings::default();
        let mut asked = pod(json!({"modelgate.io/inject": "enabled"}), app_spec());
        asked.spec.as_mut().unwrap().automount_service_account_token = Some(false);
        let out = injected(decide_with(&asked, &[], &settings));
        let spec = out.spec.unwrap();
        let sidecar = &spec.init_containers.unwrap()[0];
        assert!(
            sidecar
                .volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == sidecar::TOKEN_VOLUME)
        );
        assert!(spec.containers.iter().all(|c| c.volume_mounts.is_none()));
    }
}
