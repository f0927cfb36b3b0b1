//! Publishing: the compiled config of a namespace becomes the Secret `modelgate-config` (key
//! `config.json`, no credentials) that data planes watch, and the Secret `modelgate-credentials`
//! (key `credentials.json`) that they mount. Each is written only when its checksum changed,
//! carries labels to find it by, and has no owner, so deleting a CR never garbage-collects the
//! config every data plane in the namespace serves from.

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

/// The Secret holding a namespace's credentials, mounted only into data-plane containers.
pub const CREDENTIALS_SECRET: &str = "modelgate-credentials";
pub const CREDENTIALS_KEY: &str = "credentials.json";

/// What a namespace's published Secrets hold, as the watch last saw them (their checksums).
#[derive(Clone, Copy, Default)]
pub struct Published<'a> {
    pub config: Option<&'a str>,
    pub credentials: Option<&'a str>,
}

/// Publishes `config` as two Secrets: the config without credentials (`modelgate-config`, read
/// by every data plane through the API) and its credentials (`modelgate-credentials`, mounted
/// into data-plane containers only). Each is written only when its checksum changed. Returns
/// the checksum of the published config and whether a write happened.
pub async fn publish(
    client: &Client,
    namespace: &str,
    config: &CompiledConfig,
    cached: Published<'_>,
    metrics: &Metrics,
) -> Result<(String, bool), ReconcileError> {
    let (public, credentials) = config.clone().split_credentials();
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let wrote_credentials = write_if_changed(
        &api,
        CREDENTIALS_SECRET,
        CREDENTIALS_KEY,
        credentials.to_json(),
        &credentials.checksum,
        cached.credentials,
    )
    .await?;
    let json = public.to_json();
    let bytes = json.len();
    let wrote_config = write_if_changed(
        &api,
        CONFIG_SECRET,
        CONFIG_KEY,
        json,
        &public.checksum,
        cached.config,
    )
    .await?;
    if wrote_config || wrote_credentials {
        metrics.published(namespace, bytes);
        tracing::info!(namespace, checksum = %public.checksum, bytes, credentials = wrote_credentials, "published config");
    }
    Ok((public.checksum, wrote_config || wrote_credentials))
}

/// Writes `data` under `key` in the Secret `name` unless it already holds `checksum`. `cached`
/// is the checksum the watch last saw; when it differs the live object is read first, so a
/// watch that lags behind our own write does not cause a second one.
async fn write_if_changed(
    api: &Api<Secret>,
    name: &str,
    key: &str,
    data: Vec<u8>,
    checksum: &str,
    cached: Option<&str>,
) -> Result<bool, ReconcileError> {
    if cached == Some(checksum) {
        return Ok(false);
    }
    let live = api
        .get_metadata_opt(name)
        .await
        .map_err(ReconcileError::api("read a published Secret"))?;
    if live.is_some_and(|m| {
        m.annotations()
            .get(CHECKSUM_ANNOTATION)
            .is_some_and(|c| c == checksum)
    }) {
        return Ok(false);
    }
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
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
                checksum.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(key.to_owned(), ByteString(data))])),
        ..Secret::default()
    };
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&secret),
    )
    .await
    .map_err(ReconcileError::api("publish a config Secret"))?;
    Ok(true)
}
