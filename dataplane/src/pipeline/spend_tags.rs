//! Spend tags against the caller's RoutingPolicy: only the keys it lists, with the values it
//! lists (when it lists any), so the series they label stay bounded by the config.

use std::collections::BTreeMap;

use crate::{config::KeyEntry, error::ApiError};

const PARAM: &str = "x-modelgate-spend-tags";

pub fn check(key: &KeyEntry, tags: &BTreeMap<String, String>) -> Result<(), ApiError> {
    let allowed = key.policy.as_deref().map(|policy| &policy.spec.spend_tags);
    for (tag, value) in tags {
        match allowed.and_then(|allowed| allowed.get(tag)) {
            None => {
                return Err(ApiError::invalid_spend_tag(
                    format!("the key's RoutingPolicy does not list the tag `{tag}` in spendTags"),
                    PARAM,
                ));
            }
            Some(values) if !values.is_empty() && !values.contains(value) => {
                return Err(ApiError::invalid_spend_tag(
                    format!("`{tag}` may be one of {}", values.join(", ")),
                    PARAM,
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}
