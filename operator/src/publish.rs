//! Publishing: the compiled config of a namespace becomes the Secret `modelgate-config` (key
//! `config.json`) that data planes mount. It is written only when the checksum changed, carries
//! labels to find it by, and has no owner, so deleting a CR never garbage-collects the config
//! every data plane in the namespace serves from.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString, api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
};
use modelgate_crds::CompiledConfig;

use crate::{FIELD_MANAGER, MANAGED_BY, error::ReconcileError, metrics::Metrics};

pub const CONFIG_SECRET: &str = "modelgate-config";
pub const CONFIG_KEY: &str = "config.json";
/// Label on every published config Secret (`kubectl get secret -l modelgate.io/compiled-config`).
pub const CONFIG_LABEL: &str = "modelgate.io/compiled-config";
/// Annotation holding the checksum of the config in the Secret.
pub const CHECKSUM_ANNOTATION: &str = "modelgate.io/config-checksum";

/// Writes `config` unless the Secret already holds it. `cached` is the checksum the watch last
/// saw; when it differs the live object is read first, so a watch that lags behind our own write
/// does not cause a second one. Returns whether a write happened.
pub async fn publish(
    client: &Client,
    namespace: &str,
    config: &CompiledConfig,
    cached: Option<&str>,
    metrics: &Metrics,
) -> Result<bool, ReconcileError> {
    if cached == Some(config.checksum.as_str()) {
        return Ok(false);
    }
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let live = api
        .get_metadata_opt(CONFIG_SECRET)
        .await
        .map_err(ReconcileError::api("read config Secret"))?;
    if live.is_some_and(|m| m.annotations().get(CHECKSUM_ANNOTATION) == Some(&config.checksum)) {
        return Ok(false);
    }
    let json = config.to_json();
    let bytes = json.len();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(CONFIG_SECRET.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    MANAGED_BY.to_owned(),
                ),
                (
                    "app.kubernetes.io/part-of".to_owned(),
                    "modelgate".to_owned(),
                ),
                (CONFIG_LABEL.to_owned(), "true".to_owned()),
            ])),
            annotations: Some(BTreeMap::from([(
                CHECKSUM_ANNOTATION.to_owned(),
                config.checksum.clone(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_owned(), ByteString(json))])),
        ..Secret::default()
    };
    api.patch(
        CONFIG_SECRET,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&secret),
    )
    .await
    .map_err(ReconcileError::api("publish config Secret"))?;
    metrics.published(namespace, bytes);
    tracing::info!(namespace, checksum = %config.checksum, bytes, "published config");
    Ok(true)
}
