//! Secret lookup for the compiler: `stringData` (standalone files) or `data` (the API server).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use crate::{
    common::SecretKeySelector,
    report::{Reason, Rejection},
};

/// Secrets by (namespace, name).
pub struct SecretIndex<'a> {
    by_name: BTreeMap<(String, String), &'a Secret>,
}

impl<'a> SecretIndex<'a> {
    pub fn new(secrets: &'a [Secret]) -> Self {
        let by_name = secrets
            .iter()
            .map(|s| {
                let ns = s.namespace().unwrap_or_else(|| "default".to_owned());
                ((ns, s.name_any()), s)
            })
            .collect();
        Self { by_name }
    }

    /// The value of `selector` in `namespace`, or a rejection that names the Secret and key (never
    /// any value).
    pub fn resolve(
        &self,
        namespace: &str,
        selector: &SecretKeySelector,
        field: &str,
    ) -> Result<String, Rejection> {
        let secret = self
            .by_name
            .get(&(namespace.to_owned(), selector.name.clone()))
            .ok_or_else(|| {
                Rejection::new(
                    Reason::SecretNotFound,
                    format!(
                        "{field}: Secret \"{}\" not found in namespace \"{namespace}\"",
                        selector.name
                    ),
                )
            })?;
        let from_string_data = secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(&selector.key))
            .cloned();
        let from_data = || {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(&selector.key))
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
        };
        from_string_data.or_else(from_data).ok_or_else(|| {
            Rejection::new(
                Reason::SecretNotFound,
                format!(
                    "{field}: Secret \"{}\" has no key \"{}\"",
                    selector.name, selector.key
                ),
            )
        })
    }
}
