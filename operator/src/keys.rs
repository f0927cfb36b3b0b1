//! Virtual-key material. A VirtualKey that names no Secret gets a strong random key generated into
//! the Secret `<name>-key` (key `key`), owned by the VirtualKey so it goes when the key goes. The
//! key is written there and nowhere else: never into status, events, logs or the compiled config
//! (which holds only its SHA-256).

use std::collections::BTreeMap;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use k8s_openapi::{
    ByteString, api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{Api, Client, Resource, ResourceExt, api::PostParams};
use modelgate_crds::{VirtualKey, virtual_key::generated_key_secret};

use crate::{FIELD_MANAGER, MANAGED_BY, error::ReconcileError};

/// Prefix of every generated key, so a leaked one is recognisable (and scannable).
pub const KEY_PREFIX: &str = "sk-mg-";
/// Label naming the VirtualKey a generated Secret belongs to.
pub const VIRTUAL_KEY_LABEL: &str = "modelgate.io/virtual-key";
/// 256 bits of entropy.
const KEY_BYTES: usize = 32;

/// Creates the generated Secret of every VirtualKey that needs one and has none yet; returns the
/// Secrets created, so this reconcile compiles with them without waiting for the watch.
pub async fn ensure_generated(
    client: &Client,
    namespace: &str,
    virtual_keys: &[VirtualKey],
    secrets: &[Secret],
) -> Result<Vec<Secret>, ReconcileError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut created = Vec::new();
    for virtual_key in virtual_keys
        .iter()
        .filter(|vk| vk.spec.key_secret_ref.is_none())
    {
        let name = generated_key_secret(&virtual_key.name_any()).name;
        if secrets.iter().any(|s| s.name_any() == name) {
            continue;
        }
        let secret = key_secret(virtual_key, &name)?;
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        match api.create(&params, &secret).await {
            Ok(secret) => {
                tracing::info!(namespace, virtual_key = %virtual_key.name_any(), secret = %name, "generated virtual-key Secret");
                created.push(secret);
            }
            // Created by an earlier run whose watch event has not arrived yet: never overwrite.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                created.push(
                    api.get(&name)
                        .await
                        .map_err(ReconcileError::api("read generated key Secret"))?,
                );
            }
            Err(error) => return Err(ReconcileError::api("create generated key Secret")(error)),
        }
    }
    Ok(created)
}

fn key_secret(virtual_key: &VirtualKey, name: &str) -> Result<Secret, ReconcileError> {
    let owner = virtual_key
        .controller_owner_ref(&())
        .ok_or(ReconcileError::MissingUid)?;
    let key = generate_key()?;
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: virtual_key.namespace(),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    MANAGED_BY.to_owned(),
                ),
                (
                    "app.kubernetes.io/part-of".to_owned(),
                    "modelgate".to_owned(),
                ),
                (VIRTUAL_KEY_LABEL.to_owned(), virtual_key.name_any()),
            ])),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            generated_key_secret("").key,
            ByteString(key.into_bytes()),
        )])),
        ..Secret::default()
    })
}

/// `sk-mg-` and 256 random bits from the OS CSPRNG, base64url without padding (43 characters).
pub fn generate_key() -> Result<String, ReconcileError> {
    let mut bytes = [0u8; KEY_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| ReconcileError::Random(e.to_string()))?;
    Ok(format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_prefixed_long_and_distinct() {
        let a = generate_key().unwrap();
        let b = generate_key().unwrap();
        assert!(a.starts_with(KEY_PREFIX));
        assert_eq!(a.len(), KEY_PREFIX.len() + 43);
        assert_ne!(a, b);
    }
}
