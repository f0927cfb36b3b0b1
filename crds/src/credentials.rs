//! The compiled config in two parts, as the operator publishes it in a cluster: the config
//! without any credential (routing, keys' hashes, limits), which every data plane reads through
//! the API in seconds, and the credentials alone, a Secret mounted into data-plane containers
//! only, so an application container beside an injected sidecar never holds a provider key.
//! Deployments name their credentials by `secret/key`, so a new deployment using a credential
//! already delivered needs nothing new.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::compiled::{CompiledAws, CompiledConfig, CompiledDeployment, Sensitive};

/// Where each of a deployment's credentials comes from, as `secret/key`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialRefs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_access_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_secret_access_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_session_token: Option<String>,
}

/// Every credential the accepted deployments of a namespace use, by `secret/key`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialBundle {
    pub credentials: BTreeMap<String, Sensitive>,
    /// SHA-256 of the canonical JSON with this field blanked.
    pub checksum: String,
}

/// `secret/key`: how a deployment names one credential.
pub fn credential_ref(secret: &str, key: &str) -> String {
    format!("{secret}/{key}")
}

impl CredentialBundle {
    pub fn compute_checksum(&self) -> String {
        let mut unsealed = self.clone();
        unsealed.checksum.clear();
        let bytes = serde_json::to_vec(&unsealed).unwrap_or_default();
        hex::encode(Sha256::digest(&bytes))
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    fn take(&self, name: Option<&String>) -> Option<Sensitive> {
        self.credentials.get(name?).cloned()
    }
}

impl CompiledConfig {
    /// The config without credentials (re-sealed) and the credentials it used.
    pub fn split_credentials(mut self) -> (CompiledConfig, CredentialBundle) {
        let mut bundle = CredentialBundle::default();
        for deployment in self.deployments_mut() {
            let Some(refs) = deployment.credential_refs.clone() else {
                continue;
            };
            let mut keep = |name: Option<String>, value: Option<Sensitive>| {
                if let (Some(name), Some(value)) = (name, value) {
                    bundle.credentials.insert(name, value);
                }
            };
            keep(refs.api_key, deployment.api_key.take());
            if let Some(aws) = deployment.aws.take() {
                keep(refs.aws_access_key_id, Some(aws.access_key_id));
                keep(refs.aws_secret_access_key, Some(aws.secret_access_key));
                keep(refs.aws_session_token, aws.session_token);
            }
        }
        self.seal();
        bundle.checksum = bundle.compute_checksum();
        (self, bundle)
    }

    /// Puts the bundle's credentials back into the deployments that name them; returns the ids
    /// of deployments whose credentials the bundle lacks (not delivered yet).
    pub fn with_credentials(&mut self, bundle: &CredentialBundle) -> Vec<String> {
        let mut missing = Vec::new();
        for deployment in self.deployments_mut() {
            let Some(refs) = deployment.credential_refs.clone() else {
                continue;
            };
            if refs.api_key.is_some() {
                deployment.api_key = bundle.take(refs.api_key.as_ref());
                if deployment.api_key.is_none() {
                    missing.push(deployment.id.clone());
                }
            }
            if refs.aws_access_key_id.is_some() {
                deployment.aws = match (
                    bundle.take(refs.aws_access_key_id.as_ref()),
                    bundle.take(refs.aws_secret_access_key.as_ref()),
                ) {
                    (Some(access_key_id), Some(secret_access_key)) => Some(CompiledAws {
                        access_key_id,
                        secret_access_key,
                        session_token: bundle.take(refs.aws_session_token.as_ref()),
                    }),
                    _ => {
                        missing.push(deployment.id.clone());
                        None
                    }
                };
            }
        }
        missing
    }

    fn deployments_mut(&mut self) -> impl Iterator<Item = &mut CompiledDeployment> {
        self.model_groups
            .values_mut()
            .flat_map(|group| group.deployments.iter_mut())
    }
}

#[cfg(test)]
mod tests {
    use crate::loader::load_config;

    const CONFIG: &str = r#"
apiVersion: v1
kind: Secret
metadata:
  name: creds
  labels: {modelgate.io/credential: "true"}
stringData: {openai: sk-openai-canary, id: AKIA-canary, secret: aws-secret-canary}
---
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {name: g}
spec:
  models: [g]
  deployments:
    - {name: o, provider: openai, model: gpt-4o-mini, credentials: {secretKeyRef: {name: creds, key: openai}}}
    - name: b
      provider: bedrock
      model: amazon.nova-pro-v1:0
      region: us-east-1
      credentials: {aws: {accessKeyIdRef: {name: creds, key: id}, secretAccessKeyRef: {name: creds, key: secret}}}
    - {name: m, provider: mock, model: m}
"#;

    #[test]
    fn the_public_part_holds_no_credential_and_the_two_make_the_whole_again() {
        let now = "2026-06-01T00:00:00Z".parse().unwrap();
        let (whole, _) = load_config(CONFIG.as_bytes(), &|_| None, now).unwrap();
        let (public, bundle) = whole.clone().split_credentials();
        let text = String::from_utf8(public.to_json()).unwrap();
        for canary in ["sk-openai-canary", "AKIA-canary", "aws-secret-canary"] {
            assert!(!text.contains(canary), "{canary} in the public config");
        }
        assert_eq!(public.checksum, public.compute_checksum());
        assert_eq!(bundle.credentials.len(), 3);
        assert!(text.contains("\"apiKey\": \"creds/openai\""), "{text}");

        let mut rebuilt = public.clone();
        assert!(rebuilt.with_credentials(&bundle).is_empty());
        assert_eq!(rebuilt.model_groups, whole.model_groups);

        let mut partial = public;
        let mut short = bundle;
        short.credentials.remove("creds/secret");
        assert_eq!(partial.with_credentials(&short), vec!["default/g/b"]);
    }
}
