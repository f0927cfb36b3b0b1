//! Secret lookup for the compiler: `stringData` (standalone files) or `data` (the API server).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use super::upstream::parse_allowed_hosts;
use crate::{
    common::{ALLOWED_HOSTS_ANNOTATION, CREDENTIAL_LABEL, SecretKeySelector, VIRTUAL_KEY_LABEL},
    report::{Reason, Rejection},
};

/// What a Secret is read for: each use needs the Secret to carry its own label, so nobody can
/// point modelgate at a Secret that was never meant for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretUse {
    /// A provider credential (`modelgate.io/credential: "true"`).
    Credential,
    /// Virtual-key material (`modelgate.io/virtual-key: "true"`).
    VirtualKey,
}

impl SecretUse {
    pub fn label(self) -> &'static str {
        match self {
            Self::Credential => CREDENTIAL_LABEL,
            Self::VirtualKey => VIRTUAL_KEY_LABEL,
        }
    }

    /// Whether the label's value lets the Secret be read for this use: a credential Secret says
    /// `"true"`; a key Secret any name (the operator labels the keys it generates with their
    /// VirtualKey's name, a person writes `"true"`).
    fn accepts(self, value: &str) -> bool {
        match self {
            Self::Credential => value == "true",
            Self::VirtualKey => !value.is_empty(),
        }
    }
}

/// A Secret value, with the hosts its annotation lets a credential go to.
pub struct Resolved {
    pub value: String,
    pub allowed_hosts: Vec<String>,
}

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
    /// any value). The Secret must carry the label of `usage`.
    pub fn resolve(
        &self,
        namespace: &str,
        selector: &SecretKeySelector,
        field: &str,
        usage: SecretUse,
    ) -> Result<Resolved, Rejection> {
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
        let labelled = secret
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(usage.label()))
            .is_some_and(|value| usage.accepts(value));
        if !labelled {
            return Err(Rejection::new(
                Reason::SecretNotLabelled,
                format!(
                    "{field}: Secret \"{name}\" is not labelled for modelgate; if it is meant \
                     for this, run `kubectl label secret {name} {label}=true -n {namespace}`",
                    name = selector.name,
                    label = usage.label(),
                ),
            ));
        }
        let allowed_hosts = secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ALLOWED_HOSTS_ANNOTATION))
            .map(|hosts| parse_allowed_hosts(hosts))
            .unwrap_or_default();
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
        let value = from_string_data.or_else(from_data).ok_or_else(|| {
            Rejection::new(
                Reason::SecretNotFound,
                format!(
                    "{field}: Secret \"{}\" has no key \"{}\"",
                    selector.name, selector.key
                ),
            )
        })?;
        Ok(Resolved {
            value,
            allowed_hosts,
        })
    }
}
