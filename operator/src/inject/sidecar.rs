//! What is injected: the data plane container (a native sidecar where the API server has them),
//! its credentials volume, and the env that points the app's OpenAI and Anthropic SDKs at it.
//! Pure: settings and a pod's requests in, Kubernetes objects out.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{
        Capabilities, ConfigMapProjection, Container, ContainerPort, DownwardAPIProjection,
        DownwardAPIVolumeFile, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, ObjectFieldSelector,
        Probe, ProjectedVolumeSource, ResourceRequirements, SeccompProfile, SecretKeySelector,
        SecretVolumeSource, SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount,
        VolumeProjection,
    },
    apimachinery::pkg::{api::resource::Quantity, util::intstr::IntOrString},
};
use sha2::{Digest, Sha256};

use super::annotations::PodRequests;

/// The sidecar container's name.
pub const CONTAINER: &str = "modelgate-proxy";
/// The volume holding the provider credentials, mounted into the sidecar alone.
pub const CREDENTIALS_VOLUME: &str = "modelgate-credentials";
/// A ServiceAccount token of the sidecar's own, so it never depends on the app's (which the pod
/// may turn off, and which the API server's ServiceAccount plugin mounts before this webhook runs).
pub const TOKEN_VOLUME: &str = "modelgate-token";
const CREDENTIALS_PATH: &str = "/etc/modelgate/credentials";
const TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The UID and GID of the image's non-root user.
const NONROOT: i64 = 65532;

/// Env the app containers get, unless they set it themselves.
pub const OPENAI_BASE_URL: &str = "OPENAI_BASE_URL";
pub const ANTHROPIC_BASE_URL: &str = "ANTHROPIC_BASE_URL";
pub const OPENAI_API_KEY: &str = "OPENAI_API_KEY";
pub const ANTHROPIC_API_KEY: &str = "ANTHROPIC_API_KEY";

/// How every sidecar is made, from the operator's flags (the chart's values).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SidecarSettings {
    pub image: String,
    pub pull_policy: String,
    pub proxy_port: u16,
    pub admin_port: u16,
    pub cpu_request: String,
    pub memory_request: String,
    pub cpu_limit: String,
    pub memory_limit: String,
    /// An init container with `restartPolicy: Always` (Kubernetes 1.29+), or a plain container.
    pub native: bool,
    pub config_secret: String,
    pub credentials_secret: String,
    pub drain_seconds: u32,
    pub extra_args: Vec<String>,
}

impl Default for SidecarSettings {
    fn default() -> Self {
        Self {
            image: "ghcr.io/modelgate/modelgate:0.1.0".to_owned(),
            pull_policy: "IfNotPresent".to_owned(),
            proxy_port: 4000,
            admin_port: 9464,
            cpu_request: "50m".to_owned(),
            memory_request: "64Mi".to_owned(),
            cpu_limit: "1".to_owned(),
            memory_limit: "256Mi".to_owned(),
            native: true,
            config_secret: "modelgate-config".to_owned(),
            credentials_secret: "modelgate-credentials".to_owned(),
            drain_seconds: 30,
            extra_args: Vec::new(),
        }
    }
}

/// Where a VirtualKey's key material is: the env an app's API key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRef {
    pub secret: String,
    pub key: String,
}

/// Everything one pod gets.
#[derive(Clone, Debug, PartialEq)]
pub struct Injection {
    pub container: Container,
    pub volumes: Vec<Volume>,
    /// Env for each app container that does not set the name itself.
    pub env: Vec<EnvVar>,
    /// Short hash of the container and volumes, for the `modelgate.io/injected` annotation.
    pub hash: String,
    pub proxy_port: u16,
    pub admin_port: u16,
}

/// Builds the injection for a pod with `requests` and its key (if it names a VirtualKey).
pub fn build(
    settings: &SidecarSettings,
    requests: &PodRequests,
    key: Option<&KeyRef>,
) -> Injection {
    let proxy_port = requests.proxy_port.unwrap_or(settings.proxy_port);
    let admin_port = requests.admin_port.unwrap_or(settings.admin_port);
    let volumes = vec![
        Volume {
            name: CREDENTIALS_VOLUME.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(settings.credentials_secret.clone()),
                // Before the operator's first publish the Secret may not exist yet.
                optional: Some(true),
                // Readable by the sidecar's user without a pod-wide fsGroup; no other container
                // mounts the volume.
                default_mode: Some(0o444),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
        token_volume(),
    ];
    let mounts = vec![
        VolumeMount {
            name: CREDENTIALS_VOLUME.to_owned(),
            mount_path: CREDENTIALS_PATH.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: TOKEN_VOLUME.to_owned(),
            mount_path: TOKEN_PATH.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
    ];
    let admin = IntOrString::Int(i32::from(admin_port));
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: admin.clone(),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    };
    let mut args = vec![
        format!("--listen=127.0.0.1:{proxy_port}"),
        // On the pod IP, for the kubelet's probes and Prometheus; the API stays on loopback.
        format!("--admin-listen=0.0.0.0:{admin_port}"),
        format!("--config-secret={}", settings.config_secret),
        format!("--credentials-dir={CREDENTIALS_PATH}"),
        "--log-format=json".to_owned(),
        format!("--drain-seconds={}", settings.drain_seconds),
    ];
    args.extend(settings.extra_args.iter().cloned());
    let quantity = |request: &Option<String>, default: &str| {
        Quantity(request.clone().unwrap_or_else(|| default.to_owned()))
    };
    let container = Container {
        name: CONTAINER.to_owned(),
        image: Some(settings.image.clone()),
        image_pull_policy: Some(settings.pull_policy.clone()),
        command: Some(vec!["/usr/local/bin/modelgate-dataplane".to_owned()]),
        args: Some(args),
        env: Some(vec![
            field_env("POD_NAMESPACE", "metadata.namespace"),
            field_env("POD_NAME", "metadata.name"),
            // One thread serves one app: no cross-thread wake-ups, the least CPU per request.
            // An env var, so that `--worker-threads` in the extra args still overrides it.
            value_env(WORKER_THREADS, "1"),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("mg-admin".to_owned()),
            container_port: i32::from(admin_port),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        // A native sidecar: started before the app containers, stopped after them.
        restart_policy: settings.native.then(|| "Always".to_owned()),
        // The app starts once the sidecar serves a config (native sidecars only).
        startup_probe: settings.native.then(|| probe("/readyz", 1, 120)),
        readiness_probe: Some(probe("/readyz", 5, 2)),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                (
                    "cpu".to_owned(),
                    quantity(&requests.cpu_request, &settings.cpu_request),
                ),
                (
                    "memory".to_owned(),
                    quantity(&requests.memory_request, &settings.memory_request),
                ),
            ])),
            limits: Some(BTreeMap::from([
                (
                    "cpu".to_owned(),
                    quantity(&requests.cpu_limit, &settings.cpu_limit),
                ),
                (
                    "memory".to_owned(),
                    quantity(&requests.memory_limit, &settings.memory_limit),
                ),
            ])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(NONROOT),
            run_as_group: Some(NONROOT),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..SeccompProfile::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    let mut env = vec![
        value_env(
            OPENAI_BASE_URL,
            &format!("http://127.0.0.1:{proxy_port}/v1"),
        ),
        value_env(
            ANTHROPIC_BASE_URL,
            &format!("http://127.0.0.1:{proxy_port}"),
        ),
    ];
    if let Some(key) = key {
        for name in [OPENAI_API_KEY, ANTHROPIC_API_KEY] {
            env.push(EnvVar {
                name: name.to_owned(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: key.secret.clone(),
                        key: key.key.clone(),
                        optional: Some(false),
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            });
        }
    }
    let hash = hash(&container, &volumes);
    Injection {
        container,
        volumes,
        env,
        hash,
        proxy_port,
        admin_port,
    }
}

/// A token of the pod's ServiceAccount for the sidecar alone, laid out like the automounted one
/// (token, CA, namespace), so the in-cluster client finds it where it looks.
fn token_volume() -> Volume {
    Volume {
        name: TOKEN_VOLUME.to_owned(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o444),
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".to_owned(),
                        expiration_seconds: Some(3600),
                        ..ServiceAccountTokenProjection::default()
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "kube-root-ca.crt".to_owned(),
                        items: Some(vec![KeyToPath {
                            key: "ca.crt".to_owned(),
                            path: "ca.crt".to_owned(),
                            ..KeyToPath::default()
                        }]),
                        ..ConfigMapProjection::default()
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    downward_api: Some(DownwardAPIProjection {
                        items: Some(vec![DownwardAPIVolumeFile {
                            path: "namespace".to_owned(),
                            field_ref: Some(ObjectFieldSelector {
                                field_path: "metadata.namespace".to_owned(),
                                ..ObjectFieldSelector::default()
                            }),
                            ..DownwardAPIVolumeFile::default()
                        }]),
                    }),
                    ..VolumeProjection::default()
                },
            ]),
        }),
        ..Volume::default()
    }
}

fn value_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    }
}

/// The data plane's setting of its thread count.
pub const WORKER_THREADS: &str = "MODELGATE_WORKER_THREADS";

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn hash(container: &Container, volumes: &[Volume]) -> String {
    let bytes = serde_json::to_vec(&(container, volumes)).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}
