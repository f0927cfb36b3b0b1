//! modelgate's configuration: the three CRDs (ModelGroup, RoutingPolicy, VirtualKey), the pure
//! compiler that turns them into the data plane's [`CompiledConfig`], and the standalone loader.
//! No Kubernetes client and no I/O beyond what callers hand in.

pub mod catalog;
pub mod common;
pub mod compile;
pub mod compiled;
pub mod credentials;
pub mod exposition;
pub mod loader;
pub mod model_group;
pub mod report;
pub mod routing_policy;
pub mod spend;
pub mod virtual_key;

pub use compile::{Resources, compile};
pub use compiled::{CompiledConfig, SCHEMA_VERSION, hash_key};
pub use loader::{LoadError, load_config};
pub use model_group::{ModelGroup, ModelGroupSpec, ProviderKind};
pub use report::{ObjectKind, ObjectReport, Reason, Rejection};
pub use routing_policy::{RoutingPolicy, RoutingPolicySpec};
pub use virtual_key::{VirtualKey, VirtualKeySpec};

use kube::CustomResourceExt;

/// The CRDs as the API server takes them, with the file name each is written to.
pub fn crds() -> Vec<(
    &'static str,
    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
)> {
    vec![
        ("modelgroups.modelgate.io.yaml", ModelGroup::crd()),
        ("routingpolicies.modelgate.io.yaml", RoutingPolicy::crd()),
        ("virtualkeys.modelgate.io.yaml", VirtualKey::crd()),
    ]
}
