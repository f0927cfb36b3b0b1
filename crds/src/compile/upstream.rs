//! Where a deployment's calls go, and with which credential. A `baseUrl` never points at
//! link-local or cloud-metadata addresses, and at loopback only where the namespace allows it
//! (standalone files always do: their author runs the gateway). A credential goes only to a host
//! its Secret allows: its provider's own API hosts, or those its `modelgate.io/allowed-hosts`
//! annotation names. No message quotes a URL's credentials, query or path.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{
    model_group::ProviderKind,
    report::{Reason, Rejection},
};

/// Names that resolve to a cloud's instance metadata service.
const METADATA_HOSTS: &[&str] = &[
    "metadata.google.internal",
    "metadata.goog",
    "metadata",
    "instance-data",
    "instance-data.ec2.internal",
];

/// Google's token endpoint, where a Vertex service account's signed assertion goes.
const GOOGLE_TOKEN_HOST: &str = "oauth2.googleapis.com";

/// A checked `baseUrl`: its normalised text (no trailing slash) and its host.
pub(crate) struct Upstream {
    pub url: String,
    pub host: String,
}

/// Checks a `baseUrl`: http(s), a host, no credentials, query or fragment, and no address a
/// gateway must never call.
pub(crate) fn check_url(
    raw: &str,
    field: &str,
    allow_loopback: bool,
) -> Result<Upstream, Rejection> {
    let bad = |shown: &str, why: &str| {
        Rejection::new(Reason::InvalidUrl, format!("{field}.baseUrl{shown}: {why}"))
    };
    let url = url::Url::parse(raw).map_err(|e| bad("", &e.to_string()))?;
    let shown = format!(" ({})", origin(&url));
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(&shown, "only http and https are allowed"));
    }
    let Some(host) = url.host() else {
        return Err(bad(&shown, "a host is required"));
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("", "credentials belong in a Secret, not in the URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad(&shown, "a query string or fragment is not allowed"));
    }
    match classify(&host) {
        Destination::Forbidden(what) => {
            return Err(bad(&shown, &format!("{what} addresses are never called")));
        }
        Destination::Loopback if !allow_loopback => {
            return Err(bad(
                &shown,
                "loopback addresses are refused in a cluster unless the namespace's default \
                 RoutingPolicy sets allowLoopbackUpstreams",
            ));
        }
        Destination::Loopback | Destination::Routable => {}
    }
    Ok(Upstream {
        host: url.host_str().unwrap_or_default().to_ascii_lowercase(),
        url: url.as_str().trim_end_matches('/').to_owned(),
    })
}

/// What a URL host is.
enum Destination {
    /// Link-local or cloud metadata: never called.
    Forbidden(&'static str),
    Loopback,
    Routable,
}

fn classify(host: &url::Host<&str>) -> Destination {
    match host {
        url::Host::Ipv4(ip) => classify_ip(IpAddr::V4(*ip)),
        url::Host::Ipv6(ip) => classify_ip(IpAddr::V6(*ip)),
        url::Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if METADATA_HOSTS.contains(&name.as_str()) {
                Destination::Forbidden("cloud metadata")
            } else if name == "localhost" || name.ends_with(".localhost") {
                Destination::Loopback
            } else {
                Destination::Routable
            }
        }
    }
}

/// Classifies an address; the data plane's connector applies the same rule after DNS.
pub fn forbidden_address(ip: IpAddr) -> Option<&'static str> {
    match classify_ip(ip) {
        Destination::Forbidden(what) => Some(what),
        _ => None,
    }
}

/// Whether `ip` is a loopback address (IPv4-mapped ones included).
pub fn is_loopback(ip: IpAddr) -> bool {
    matches!(classify_ip(ip), Destination::Loopback)
}

fn classify_ip(ip: IpAddr) -> Destination {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            if v4 == Ipv4Addr::new(169, 254, 169, 254) || v4 == Ipv4Addr::new(100, 100, 100, 200) {
                Destination::Forbidden("cloud metadata")
            } else if v4.is_link_local() {
                Destination::Forbidden("link-local")
            } else if v4.is_unspecified() {
                Destination::Forbidden("unspecified")
            } else if v4.is_loopback() {
                Destination::Loopback
            } else {
                Destination::Routable
            }
        }
        IpAddr::V6(v6) => {
            if v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
                Destination::Forbidden("cloud metadata")
            } else if v6.is_unicast_link_local() {
                Destination::Forbidden("link-local")
            } else if v6.is_unspecified() {
                Destination::Forbidden("unspecified")
            } else if v6.is_loopback() {
                Destination::Loopback
            } else {
                Destination::Routable
            }
        }
    }
}

/// `scheme://host[:port]`: what a message may show of a URL.
fn origin(url: &url::Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{}://{host}:{port}", url.scheme()),
        (Some(host), None) => format!("{}://{host}", url.scheme()),
        (None, _) => format!("{}:", url.scheme()),
    }
}

/// A credential Secret's permission to travel.
pub(crate) struct Pin<'a> {
    pub provider: ProviderKind,
    pub region: Option<&'a str>,
    /// The hosts its `modelgate.io/allowed-hosts` annotation names.
    pub allowed: &'a [String],
    pub secret: &'a str,
    pub field: &'a str,
}

impl Pin<'_> {
    /// Refuses to send the credential to `host` unless its Secret allows it.
    pub(crate) fn check(&self, host: &str, what: &str) -> Result<(), Rejection> {
        let mut own = self.provider.own_hosts(self.region);
        if self.provider == ProviderKind::Vertex {
            own.push(GOOGLE_TOKEN_HOST.to_owned());
        }
        if own
            .iter()
            .chain(self.allowed)
            .any(|p| host_matches(p, host))
        {
            return Ok(());
        }
        let rule = if own.is_empty() {
            format!(
                "{} has no API host of its own, so the Secret's modelgate.io/allowed-hosts \
                 annotation must name every host it may go to",
                self.provider.as_str()
            )
        } else {
            format!(
                "it goes to {}'s own API hosts only, unless the Secret's \
                 modelgate.io/allowed-hosts annotation names this host",
                self.provider.as_str()
            )
        };
        Err(Rejection::new(
            Reason::CredentialHostNotAllowed,
            format!(
                "{}: the credential in Secret \"{}\" may not be sent to {what} host {host}: {rule}",
                self.field, self.secret,
            ),
        ))
    }
}

/// The hosts of an allowed-hosts annotation: comma or space separated, lowercased.
pub(crate) fn parse_allowed_hosts(annotation: &str) -> Vec<String> {
    annotation
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|h| !h.is_empty())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// `pattern` is a host, or `*` followed by a suffix, where `*` stands for one DNS label.
fn host_matches(pattern: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.');
    match pattern.strip_prefix('*') {
        Some(suffix) => host
            .strip_suffix(suffix)
            .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// The host a Vertex service-account key sends its signed assertion to (`token_uri`).
pub(crate) fn token_host(service_account_json: &str) -> Option<String> {
    let key: serde_json::Value = serde_json::from_str(service_account_json).ok()?;
    let uri = url::Url::parse(key.get("token_uri")?.as_str()?).ok()?;
    uri.host_str().map(str::to_ascii_lowercase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_exactly_or_by_one_label() {
        assert!(host_matches("api.openai.com", "API.openai.com"));
        assert!(host_matches("*.openai.azure.com", "team.openai.azure.com"));
        assert!(!host_matches("*.openai.azure.com", "a.b.openai.azure.com"));
        assert!(!host_matches("*.openai.azure.com", "openai.azure.com"));
        assert!(host_matches(
            "*-aiplatform.googleapis.com",
            "us-east5-aiplatform.googleapis.com"
        ));
        assert!(!host_matches(
            "*-aiplatform.googleapis.com",
            "evil.com/-aiplatform.googleapis.com"
        ));
        assert!(!host_matches("api.openai.com", "api.openai.com.evil.com"));
    }

    #[test]
    fn metadata_link_local_and_unspecified_addresses_are_never_allowed() {
        for raw in [
            "http://169.254.169.254/latest",
            "http://[fd00:ec2::254]/",
            "http://metadata.google.internal/computeMetadata/v1",
            "http://169.254.10.1:8080",
            "http://[fe80::1]/",
            "http://0.0.0.0:8000",
            "http://[::ffff:169.254.169.254]/",
            "http://100.100.100.200/",
        ] {
            let refused = check_url(raw, "d", true).err();
            assert_eq!(refused.map(|r| r.reason), Some(Reason::InvalidUrl), "{raw}");
        }
    }

    #[test]
    fn loopback_is_a_setting_and_private_ranges_are_fine() {
        for raw in [
            "http://127.0.0.1:8080/v1",
            "http://localhost:8000",
            "http://[::1]:9/",
        ] {
            assert!(check_url(raw, "d", false).is_err(), "{raw}");
            assert!(check_url(raw, "d", true).is_ok(), "{raw}");
        }
        for raw in [
            "http://10.0.0.7:8000/v1",
            "http://vllm.team-a.svc:8000",
            "https://192.168.1.2",
        ] {
            assert!(check_url(raw, "d", false).is_ok(), "{raw}");
        }
    }

    #[test]
    fn no_message_quotes_userinfo_query_or_path() {
        let secret = "hunter2-canary";
        for raw in [
            format!("http://user:{secret}@api.example.com/v1"),
            format!("http://api.example.com/v1?key={secret}"),
            format!("http://169.254.169.254/{secret}"),
            format!("ftp://api.example.com/{secret}"),
        ] {
            let message = check_url(&raw, "deployments[x]", true)
                .err()
                .unwrap()
                .message;
            assert!(!message.contains(secret), "{message}");
        }
    }
}
