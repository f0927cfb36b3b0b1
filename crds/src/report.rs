//! Per-object compile outcome: accepted, or rejected with a stable reason and a message a person
//! can act on. The operator turns these into status conditions; the standalone data plane logs them.

use std::fmt;

/// The CRD kinds the compiler reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    ModelGroup,
    RoutingPolicy,
    VirtualKey,
}

impl ObjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ModelGroup => "ModelGroup",
            Self::RoutingPolicy => "RoutingPolicy",
            Self::VirtualKey => "VirtualKey",
        }
    }
}

/// Why an object was left out of the compiled config. The names are stable: they become the
/// `reason` of the `Accepted` condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    InvalidSpec,
    InvalidUrl,
    InvalidPricing,
    DuplicateDeployment,
    DuplicateModel,
    SecretNotFound,
    UnknownFallback,
    FallbackCycle,
    KeyExpired,
    WeakKey,
    DuplicateKey,
    PolicyConflict,
    UnknownGroup,
    /// A referenced Secret lacks the label that lets modelgate read it.
    SecretNotLabelled,
    /// A credential would go to a host its Secret does not allow.
    CredentialHostNotAllowed,
    /// A VirtualKey names an org other than its namespace's.
    OrgMismatch,
    /// A VirtualKey names a team no RoutingPolicy of its namespace declares.
    UnknownTeam,
    /// A deployment has no price (a warning: it is still served, see `allowUnpriced`).
    UnpricedDeployment,
    /// The operator may not read the namespace's Secrets (no RoleBinding for it there).
    SecretAccessDenied,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidSpec => "InvalidSpec",
            Self::InvalidUrl => "InvalidURL",
            Self::InvalidPricing => "InvalidPricing",
            Self::DuplicateDeployment => "DuplicateDeployment",
            Self::DuplicateModel => "DuplicateModel",
            Self::SecretNotFound => "SecretNotFound",
            Self::UnknownFallback => "UnknownFallback",
            Self::FallbackCycle => "FallbackCycle",
            Self::KeyExpired => "KeyExpired",
            Self::WeakKey => "WeakKey",
            Self::DuplicateKey => "DuplicateKey",
            Self::PolicyConflict => "PolicyConflict",
            Self::UnknownGroup => "UnknownGroup",
            Self::SecretNotLabelled => "SecretNotLabelled",
            Self::CredentialHostNotAllowed => "CredentialHostNotAllowed",
            Self::OrgMismatch => "OrgMismatch",
            Self::UnknownTeam => "UnknownTeam",
            Self::UnpricedDeployment => "UnpricedDeployment",
            Self::SecretAccessDenied => "SecretAccessDenied",
        }
    }

    /// Whether the failure is a reference that did not resolve (condition `ResolvedRefs=False`).
    pub fn is_unresolved_reference(self) -> bool {
        matches!(
            self,
            Self::SecretNotFound
                | Self::SecretNotLabelled
                | Self::UnknownFallback
                | Self::UnknownGroup
                | Self::UnknownTeam
                | Self::SecretAccessDenied
        )
    }
}

/// A rejected object's reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub message: String,
}

impl Rejection {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.as_str(), self.message)
    }
}

/// The outcome for one input object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectReport {
    pub kind: ObjectKind,
    pub namespace: String,
    pub name: String,
    /// The object's `metadata.generation`, echoed into `status.observedGeneration`.
    pub generation: Option<i64>,
    /// `Ok` when compiled in, otherwise why not.
    pub outcome: Result<(), Rejection>,
    /// What is served but deserves a look (a deployment with no price).
    pub warnings: Vec<Rejection>,
}

impl ObjectReport {
    pub fn is_accepted(&self) -> bool {
        self.outcome.is_ok()
    }
}
