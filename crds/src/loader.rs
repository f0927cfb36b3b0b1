//! The standalone loader: a config file is either a compiled config (JSON, as the operator
//! publishes it) or a multi-document YAML of the same CRs and Secrets a user would
//! `kubectl apply`, compiled in-process by the same [`compile`](crate::compile).

use k8s_openapi::api::core::v1::Secret;
use serde_json::Value;

use crate::{
    common::{API_VERSION, ORG_LABEL},
    compile::{Mode, Resources, compile},
    compiled::{CompiledConfig, CompiledConfigError},
    report::{ObjectKind, ObjectReport, Reason, Rejection},
};

/// A whole file that cannot be used; the data plane keeps its last good config.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("config file is not valid YAML: {0}")]
    Yaml(String),
    #[error(transparent)]
    Compiled(#[from] CompiledConfigError),
    #[error("document {index}: {message}")]
    Document { index: usize, message: String },
    #[error("Secret \"{secret}\": environment variable {variable} is not set")]
    MissingEnv { secret: String, variable: String },
}

/// Reads a config file's bytes. `env` resolves `${VAR}` inside Secret values (only there, so
/// nothing else in the file can be steered by the environment).
pub fn load_config(
    bytes: &[u8],
    env: &dyn Fn(&str) -> Option<String>,
    now: jiff::Timestamp,
) -> Result<(CompiledConfig, Vec<ObjectReport>), LoadError> {
    let text =
        std::str::from_utf8(bytes).map_err(|e| LoadError::Yaml(format!("not UTF-8: {e}")))?;
    if text.trim_start().starts_with('{') {
        return Ok((CompiledConfig::from_json(bytes)?, Vec::new()));
    }
    let (resources, mut reports) = parse_manifests(text, env)?;
    let (config, compiled_reports) = compile(&resources, now);
    reports.extend(compiled_reports);
    Ok((config, reports))
}

/// Splits a multi-document YAML into resources. Objects whose spec does not deserialize are
/// reported (as the API server would refuse them) and left out; the others still load.
pub fn parse_manifests(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Resources, Vec<ObjectReport>), LoadError> {
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| LoadError::Yaml(e.to_string()))?;
    let mut resources = Resources {
        mode: Mode::Standalone,
        ..Resources::default()
    };
    let mut reports = Vec::new();
    for (index, doc) in documents.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        let api_version = doc
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let kind = doc
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        match (api_version.as_str(), kind.as_str()) {
            ("v1", "Secret") => resources.secrets.push(parse_secret(index, doc, env)?),
            ("v1", "Namespace") => {
                let name = doc.pointer("/metadata/name").and_then(Value::as_str);
                let org = doc
                    .pointer("/metadata/labels")
                    .and_then(|labels| labels.get(ORG_LABEL))
                    .and_then(Value::as_str);
                if let (Some(name), Some(org)) = (name, org) {
                    resources
                        .namespace_orgs
                        .insert(name.to_owned(), org.to_owned());
                }
            }
            (API_VERSION, "ModelGroup") => push_or_report(
                index,
                doc,
                ObjectKind::ModelGroup,
                &mut resources.model_groups,
                &mut reports,
            )?,
            (API_VERSION, "RoutingPolicy") => push_or_report(
                index,
                doc,
                ObjectKind::RoutingPolicy,
                &mut resources.routing_policies,
                &mut reports,
            )?,
            (API_VERSION, "VirtualKey") => push_or_report(
                index,
                doc,
                ObjectKind::VirtualKey,
                &mut resources.virtual_keys,
                &mut reports,
            )?,
            _ => {
                return Err(LoadError::Document {
                    index,
                    message: format!(
                        "unsupported apiVersion/kind {api_version:?}/{kind:?}; expected v1 Secret or Namespace, or {API_VERSION} ModelGroup, RoutingPolicy, VirtualKey"
                    ),
                });
            }
        }
    }
    Ok((resources, reports))
}

fn push_or_report<T: serde::de::DeserializeOwned>(
    index: usize,
    doc: Value,
    kind: ObjectKind,
    into: &mut Vec<T>,
    reports: &mut Vec<ObjectReport>,
) -> Result<(), LoadError> {
    let metadata = doc.get("metadata");
    let name = metadata
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return Err(LoadError::Document {
            index,
            message: format!("{} has no metadata.name", kind.as_str()),
        });
    };
    let namespace = metadata
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_owned();
    match serde_json::from_value::<T>(doc) {
        Ok(object) => into.push(object),
        Err(e) => reports.push(ObjectReport {
            kind,
            namespace,
            name,
            generation: None,
            outcome: Err(Rejection::new(Reason::InvalidSpec, e.to_string())),
            warnings: Vec::new(),
        }),
    }
    Ok(())
}

fn parse_secret(
    index: usize,
    mut doc: Value,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Secret, LoadError> {
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if let Some(Value::Object(data)) = doc.get_mut("stringData") {
        for value in data.values_mut() {
            if let Value::String(s) = value {
                *s = expand_env(s, env).map_err(|variable| LoadError::MissingEnv {
                    secret: name.clone(),
                    variable,
                })?;
            }
        }
    }
    serde_json::from_value(doc).map_err(|e| LoadError::Document {
        index,
        message: format!("Secret \"{name}\": {e}"),
    })
}

/// Replaces `${NAME}` with the variable's value; `$$` is a literal `$`. Returns the name of the
/// first unset variable.
fn expand_env(input: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{')
            && let Some(end) = body.find('}')
            && is_env_name(&body[..end])
        {
            let name = &body[..end];
            out.push_str(&env(name).ok_or_else(|| name.to_owned())?);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests;
