//! The annotations a pod (or its namespace) uses to ask for the sidecar, read and checked: a bad
//! value is a reason to skip, named, never a guess.

use std::collections::BTreeMap;

/// `enabled` on a pod or its namespace asks for the sidecar; `disabled` on a pod opts it out.
pub const INJECT: &str = "modelgate.io/inject";
/// The VirtualKey (in the pod's namespace) whose key the app containers get as their API key.
pub const VIRTUAL_KEY: &str = "modelgate.io/virtual-key";
/// The loopback port the sidecar's API listens on (4000 unless set).
pub const PROXY_PORT: &str = "modelgate.io/proxy-port";
/// The port of the sidecar's /healthz, /readyz and /metrics (probes and scrapes).
pub const ADMIN_PORT: &str = "modelgate.io/admin-port";
pub const CPU_REQUEST: &str = "modelgate.io/proxy-cpu-request";
pub const CPU_LIMIT: &str = "modelgate.io/proxy-cpu-limit";
pub const MEMORY_REQUEST: &str = "modelgate.io/proxy-memory-request";
pub const MEMORY_LIMIT: &str = "modelgate.io/proxy-memory-limit";
/// Set by the injector: the hash of what it injected, so a pod running an older sidecar is found.
pub const INJECTED: &str = "modelgate.io/injected";

/// Whether an object asks for injection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inject {
    Enabled,
    Disabled,
    Unset,
}

/// A value that is not what its annotation takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub annotation: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "annotation {}={:?} is invalid: expected {}",
            self.annotation, self.value, self.expected
        )
    }
}

pub fn inject(annotations: &BTreeMap<String, String>) -> Result<Inject, Invalid> {
    match annotations.get(INJECT).map(String::as_str) {
        None => Ok(Inject::Unset),
        Some("enabled") => Ok(Inject::Enabled),
        Some("disabled") => Ok(Inject::Disabled),
        Some(other) => Err(Invalid {
            annotation: INJECT,
            value: other.to_owned(),
            expected: "enabled or disabled",
        }),
    }
}

/// What a pod's annotations ask of its sidecar.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodRequests {
    pub virtual_key: Option<String>,
    pub proxy_port: Option<u16>,
    pub admin_port: Option<u16>,
    pub cpu_request: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_request: Option<String>,
    pub memory_limit: Option<String>,
}

pub fn pod_requests(annotations: &BTreeMap<String, String>) -> Result<PodRequests, Invalid> {
    let get = |name: &str| annotations.get(name).map(String::as_str);
    let port = |name: &'static str| -> Result<Option<u16>, Invalid> {
        get(name)
            .map(|value| {
                value.parse::<u16>().ok().filter(|p| *p > 0).ok_or(Invalid {
                    annotation: name,
                    value: value.to_owned(),
                    expected: "a port number from 1 to 65535",
                })
            })
            .transpose()
    };
    let quantity = |name: &'static str| -> Result<Option<String>, Invalid> {
        get(name)
            .map(|value| {
                if is_quantity(value) {
                    Ok(value.to_owned())
                } else {
                    Err(Invalid {
                        annotation: name,
                        value: value.to_owned(),
                        expected: "a Kubernetes quantity such as 100m, 0.5, 128Mi or 1G",
                    })
                }
            })
            .transpose()
    };
    let virtual_key = get(VIRTUAL_KEY)
        .map(|name| {
            if is_dns_subdomain(name) {
                Ok(name.to_owned())
            } else {
                Err(Invalid {
                    annotation: VIRTUAL_KEY,
                    value: name.to_owned(),
                    expected: "the name of a VirtualKey in the pod's namespace",
                })
            }
        })
        .transpose()?;
    Ok(PodRequests {
        virtual_key,
        proxy_port: port(PROXY_PORT)?,
        admin_port: port(ADMIN_PORT)?,
        cpu_request: quantity(CPU_REQUEST)?,
        cpu_limit: quantity(CPU_LIMIT)?,
        memory_request: quantity(MEMORY_REQUEST)?,
        memory_limit: quantity(MEMORY_LIMIT)?,
    })
}

/// A Kubernetes resource quantity: a non-negative decimal number with an optional exponent or
/// one of the binary or decimal suffixes.
pub fn is_quantity(text: &str) -> bool {
    const SUFFIXES: [&str; 14] = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P",
    ];
    let (number, suffix) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let digits_ok = !number.is_empty()
        && number.matches('.').count() <= 1
        && number.chars().any(|c| c.is_ascii_digit());
    let suffix_ok = suffix.is_empty()
        || SUFFIXES.contains(&suffix)
        || suffix == "E"
        || suffix
            .strip_prefix(['e', 'E'])
            .map(|exp| exp.strip_prefix(['+', '-']).unwrap_or(exp))
            .is_some_and(|exp| !exp.is_empty() && exp.chars().all(|c| c.is_ascii_digit()));
    digits_ok && suffix_ok
}

/// An object name: lowercase alphanumerics, `-` and `.`, starting and ending alphanumeric.
fn is_dns_subdomain(name: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !name.is_empty()
        && name.len() <= 253
        && name.starts_with(alnum)
        && name.ends_with(alnum)
        && name.chars().all(|c| alnum(c) || c == '-' || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn quantities_are_checked() {
        for good in ["100m", "0.5", "1", "128Mi", "1G", "2e3", "1.5Gi", "1E"] {
            assert!(is_quantity(good), "{good}");
        }
        for bad in ["", "m", "-1", "1.2.3", "12 Mi", "1Mb", "lots", "1e", "Mi"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn inject_takes_enabled_or_disabled() {
        assert_eq!(inject(&annotations(&[])), Ok(Inject::Unset));
        assert_eq!(
            inject(&annotations(&[(INJECT, "enabled")])),
            Ok(Inject::Enabled)
        );
        let invalid = inject(&annotations(&[(INJECT, "yes")])).unwrap_err();
        assert!(
            invalid.to_string().contains("enabled or disabled"),
            "{invalid}"
        );
    }

    #[test]
    fn pod_requests_name_the_bad_annotation() {
        let requests = pod_requests(&annotations(&[
            (VIRTUAL_KEY, "search-team"),
            (PROXY_PORT, "14000"),
            (CPU_LIMIT, "500m"),
        ]))
        .unwrap();
        assert_eq!(requests.virtual_key.as_deref(), Some("search-team"));
        assert_eq!(requests.proxy_port, Some(14000));
        assert_eq!(requests.cpu_limit.as_deref(), Some("500m"));
        for (name, value) in [
            (PROXY_PORT, "0"),
            (ADMIN_PORT, "70000"),
            (MEMORY_LIMIT, "big"),
            (VIRTUAL_KEY, "Not_A_Name"),
        ] {
            let invalid = pod_requests(&annotations(&[(name, value)])).unwrap_err();
            assert_eq!(invalid.annotation, name);
        }
    }
}
