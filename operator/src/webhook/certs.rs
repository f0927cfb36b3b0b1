//! The webhook's own CA and serving certificate, kept in one Secret and rotated before they
//! expire, with no gap in trust: a new CA joins the bundle the API server trusts well before it
//! signs anything, and the old one stays in the bundle until it expires.
//!
//! Pure: [`plan`] takes what is stored and the time, and returns what to store next (or nothing).
//! Nothing here reads a clock or the API.

use std::{collections::BTreeMap, time::Duration};

use jiff::Timestamp;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// One CA: its certificate, key and validity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ca {
    pub cert: String,
    pub key: String,
    pub name: String,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
}

/// The serving certificate and what it was issued for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Serving {
    pub cert: String,
    pub key: String,
    pub issuer: String,
    pub dns_names: Vec<String>,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
}

/// Everything the Secret holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The CA that signs the serving certificate.
    pub ca: Ca,
    /// The CA that takes over next: trusted already, signing nothing yet.
    pub next: Option<Ca>,
    /// CAs that signed earlier serving certificates, trusted until they expire.
    pub previous: Vec<Ca>,
    pub serving: Serving,
}

/// How long each lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validity {
    pub ca: Duration,
    pub serving: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot issue a certificate: {0}")]
    Issue(#[from] rcgen::Error),
    #[error("the stored webhook certificate Secret is incomplete or malformed: {0}")]
    Stored(String),
}

impl Stored {
    /// Every CA the API server must trust now, newest first.
    pub fn bundle(&self) -> String {
        let mut bundle = String::new();
        for ca in self.next.iter().chain([&self.ca]).chain(&self.previous) {
            bundle.push_str(&ca.cert);
        }
        bundle
    }
}

/// What to store next, or `None` when what is stored is good. `bundle_trusted` says whether the
/// webhook configuration already carries `stored.bundle()`, so a next CA may start signing.
pub fn plan(
    stored: Option<&Stored>,
    dns_names: &[String],
    validity: &Validity,
    bundle_trusted: bool,
    now: Timestamp,
) -> Result<Option<Stored>, CertError> {
    let Some(stored) = stored else {
        let ca = issue_ca(validity.ca, now)?;
        let serving = issue_serving(&ca, dns_names, validity.serving, now)?;
        return Ok(Some(Stored {
            ca,
            next: None,
            previous: Vec::new(),
            serving,
        }));
    };
    let mut next = stored.clone();
    next.previous.retain(|ca| ca.not_after > now);
    // At two thirds of the CA's life a successor joins the bundle; at five sixths, once the
    // bundle with it is trusted, it takes over signing.
    if next.next.is_none() && past(&next.ca, 2, 3, now) {
        next.next = Some(issue_ca(validity.ca, now)?);
    }
    if let Some(successor) = next.next.clone()
        && bundle_trusted
        && (past(&next.ca, 5, 6, now) || next.ca.not_after <= now)
    {
        let retired = std::mem::replace(&mut next.ca, successor);
        next.next = None;
        next.previous.push(retired);
        next.serving = issue_serving(&next.ca, dns_names, validity.serving, now)?;
    }
    let serving = &next.serving;
    let serving_stale = serving.issuer != next.ca.name
        || serving.dns_names != dns_names
        || serving_past(serving, now);
    if serving_stale {
        next.serving = issue_serving(&next.ca, dns_names, validity.serving, now)?;
    }
    Ok((&next != stored).then_some(next))
}

/// Whether `num/den` of the CA's life has passed.
fn past(ca: &Ca, num: i64, den: i64, now: Timestamp) -> bool {
    fraction_passed(ca.not_before, ca.not_after, num, den, now)
}

fn serving_past(serving: &Serving, now: Timestamp) -> bool {
    fraction_passed(serving.not_before, serving.not_after, 2, 3, now)
}

fn fraction_passed(from: Timestamp, to: Timestamp, num: i64, den: i64, now: Timestamp) -> bool {
    let life = to.as_millisecond() - from.as_millisecond();
    now.as_millisecond() >= from.as_millisecond() + life * num / den
}

fn issue_ca(validity: Duration, now: Timestamp) -> Result<Ca, CertError> {
    let name = format!("modelgate-webhook-ca-{}", now.as_millisecond());
    let (not_before, not_after) = window(now, validity, None);
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, &name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = to_time(not_before);
    params.not_after = to_time(not_after);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(Ca {
        cert: cert.pem(),
        key: key.serialize_pem(),
        name,
        not_before,
        not_after,
    })
}

fn issue_serving(
    ca: &Ca,
    dns_names: &[String],
    validity: Duration,
    now: Timestamp,
) -> Result<Serving, CertError> {
    let (not_before, not_after) = window(now, validity, Some(ca.not_after));
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.subject_alt_names = dns_names
        .iter()
        .map(|name| match name.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(name.as_str().try_into()?)),
        })
        .collect::<Result<_, rcgen::Error>>()?;
    params.distinguished_name.push(
        DnType::CommonName,
        dns_names
            .first()
            .map_or("modelgate-webhook", String::as_str),
    );
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.not_before = to_time(not_before);
    params.not_after = to_time(not_after);
    let issuer = ca_issuer(ca)?;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Serving {
        cert: cert.pem(),
        key: key.serialize_pem(),
        issuer: ca.name.clone(),
        dns_names: dns_names.to_vec(),
        not_before,
        not_after,
    })
}

/// The stored CA as an issuer: its name and key are all that signing needs (the authority key
/// identifier is derived from the key).
fn ca_issuer(ca: &Ca) -> Result<Issuer<'static, KeyPair>, CertError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, &ca.name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::from_pem(&ca.key)?;
    Ok(Issuer::new(params, key))
}

/// Valid from a little before now (clock skew between the operator and the API server: a
/// minute, or a tenth of a short validity), for `validity`, never past `cap`.
fn window(now: Timestamp, validity: Duration, cap: Option<Timestamp>) -> (Timestamp, Timestamp) {
    let skew = jiff::SignedDuration::try_from((validity / 10).min(Duration::from_secs(60)))
        .unwrap_or(jiff::SignedDuration::ZERO);
    let not_before = now - skew;
    let wanted =
        now + jiff::SignedDuration::try_from(validity).unwrap_or(jiff::SignedDuration::MAX);
    let not_after = cap.map_or(wanted, |cap| wanted.min(cap));
    (not_before, not_after)
}

fn to_time(at: Timestamp) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(at.as_second())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// The Secret's data keys and the annotation holding everything else.
pub mod layout {
    pub const CA_CERT: &str = "ca.crt";
    pub const TLS_CERT: &str = "tls.crt";
    pub const TLS_KEY: &str = "tls.key";
    pub const BUNDLE: &str = "ca-bundle.crt";
    /// The full state (every CA with its key, the serving pair), as JSON.
    pub const STATE: &str = "state.json";
}

/// The Secret's data: the state plus the files a reader (or a human) wants.
pub fn to_data(stored: &Stored) -> BTreeMap<String, Vec<u8>> {
    let state = serde_json::json!({
        "ca": ca_json(&stored.ca),
        "next": stored.next.as_ref().map(ca_json),
        "previous": stored.previous.iter().map(ca_json).collect::<Vec<_>>(),
        "serving": {
            "cert": stored.serving.cert,
            "key": stored.serving.key,
            "issuer": stored.serving.issuer,
            "dnsNames": stored.serving.dns_names,
            "notBefore": stored.serving.not_before.to_string(),
            "notAfter": stored.serving.not_after.to_string(),
        },
    });
    BTreeMap::from([
        (layout::STATE.to_owned(), state.to_string().into_bytes()),
        (
            layout::CA_CERT.to_owned(),
            stored.ca.cert.clone().into_bytes(),
        ),
        (layout::BUNDLE.to_owned(), stored.bundle().into_bytes()),
        (
            layout::TLS_CERT.to_owned(),
            stored.serving.cert.clone().into_bytes(),
        ),
        (
            layout::TLS_KEY.to_owned(),
            stored.serving.key.clone().into_bytes(),
        ),
    ])
}

pub fn from_data(data: &BTreeMap<String, Vec<u8>>) -> Result<Stored, CertError> {
    let state = data
        .get(layout::STATE)
        .ok_or_else(|| CertError::Stored(format!("no {}", layout::STATE)))?;
    let state: serde_json::Value =
        serde_json::from_slice(state).map_err(|e| CertError::Stored(e.to_string()))?;
    let text = |value: &serde_json::Value, field: &str| -> Result<String, CertError> {
        value[field]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| CertError::Stored(format!("no {field}")))
    };
    let time = |value: &serde_json::Value, field: &str| -> Result<Timestamp, CertError> {
        text(value, field)?
            .parse()
            .map_err(|e: jiff::Error| CertError::Stored(e.to_string()))
    };
    let ca = |value: &serde_json::Value| -> Result<Ca, CertError> {
        Ok(Ca {
            cert: text(value, "cert")?,
            key: text(value, "key")?,
            name: text(value, "name")?,
            not_before: time(value, "notBefore")?,
            not_after: time(value, "notAfter")?,
        })
    };
    let serving = &state["serving"];
    Ok(Stored {
        ca: ca(&state["ca"])?,
        next: match &state["next"] {
            serde_json::Value::Null => None,
            value => Some(ca(value)?),
        },
        previous: state["previous"]
            .as_array()
            .into_iter()
            .flatten()
            .map(ca)
            .collect::<Result<_, _>>()?,
        serving: Serving {
            cert: text(serving, "cert")?,
            key: text(serving, "key")?,
            issuer: text(serving, "issuer")?,
            dns_names: serving["dnsNames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect(),
            not_before: time(serving, "notBefore")?,
            not_after: time(serving, "notAfter")?,
        },
    })
}

fn ca_json(ca: &Ca) -> serde_json::Value {
    serde_json::json!({
        "cert": ca.cert,
        "key": ca.key,
        "name": ca.name,
        "notBefore": ca.not_before.to_string(),
        "notAfter": ca.not_after.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec![
            "modelgate-webhook.modelgate.svc".to_owned(),
            "127.0.0.1".to_owned(),
        ]
    }

    fn validity() -> Validity {
        Validity {
            ca: Duration::from_secs(600),
            serving: Duration::from_secs(120),
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    #[test]
    fn a_first_plan_issues_a_ca_and_a_serving_certificate() {
        let stored = plan(None, &names(), &validity(), false, at(0))
            .unwrap()
            .unwrap();
        assert_eq!(stored.serving.issuer, stored.ca.name);
        assert!(stored.serving.cert.contains("BEGIN CERTIFICATE"));
        assert_eq!(from_data(&to_data(&stored)).unwrap(), stored);
        // Nothing to do a moment later.
        assert!(
            plan(Some(&stored), &names(), &validity(), true, at(10))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn the_serving_certificate_renews_at_two_thirds_of_its_life() {
        let stored = plan(None, &names(), &validity(), false, at(0))
            .unwrap()
            .unwrap();
        // Valid from 12 s before issue (a tenth of 120 s): 132 s of life, two thirds 76 s after.
        assert!(
            plan(Some(&stored), &names(), &validity(), true, at(70))
                .unwrap()
                .is_none()
        );
        let renewed = plan(Some(&stored), &names(), &validity(), true, at(80))
            .unwrap()
            .unwrap();
        assert_ne!(renewed.serving.cert, stored.serving.cert);
        assert_eq!(renewed.ca, stored.ca);
        // New names are a reason too.
        let more = [names(), vec!["other.svc".to_owned()]].concat();
        assert!(
            plan(Some(&stored), &more, &validity(), true, at(1))
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn a_ca_rotation_keeps_old_and_new_trusted_throughout() {
        let first = plan(None, &names(), &validity(), false, at(0))
            .unwrap()
            .unwrap();
        // CA life 660 s from a minute before issue: two thirds at 380 s, five sixths at 490 s.
        let joined = plan(Some(&first), &names(), &validity(), true, at(400))
            .unwrap()
            .unwrap();
        let successor = joined.next.clone().expect("a successor joins the bundle");
        assert_eq!(joined.ca, first.ca, "the old CA still signs");
        assert!(
            joined.bundle().contains(&first.ca.cert) && joined.bundle().contains(&successor.cert)
        );
        // At five sixths, not while the new bundle is not trusted yet...
        let waiting = plan(Some(&joined), &names(), &validity(), false, at(500)).unwrap();
        assert!(waiting.is_none_or(|w| w.ca == first.ca));
        // ...and once it is, the successor signs and the old CA stays trusted.
        let promoted = plan(Some(&joined), &names(), &validity(), true, at(500))
            .unwrap()
            .unwrap();
        assert_eq!(promoted.ca, successor);
        assert_eq!(promoted.serving.issuer, successor.name);
        assert!(promoted.bundle().contains(&first.ca.cert));
        // After the old CA expires it leaves the bundle.
        let later = plan(Some(&promoted), &names(), &validity(), true, at(700))
            .unwrap()
            .unwrap();
        assert!(!later.bundle().contains(&first.ca.cert));
    }

    #[test]
    fn the_serving_certificate_never_outlives_its_ca() {
        let short = Validity {
            ca: Duration::from_secs(100),
            serving: Duration::from_secs(1000),
        };
        let stored = plan(None, &names(), &short, false, at(0)).unwrap().unwrap();
        assert!(stored.serving.not_after <= stored.ca.not_after);
    }
}
