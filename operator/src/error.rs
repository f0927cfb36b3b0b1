//! Why a reconcile failed, with a bounded reason for the failure metric.

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("{action}: {source}")]
    Api {
        action: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("a VirtualKey has no uid yet, so its key Secret cannot be owned by it")]
    MissingUid,
    #[error("the OS random source failed: {0}")]
    Random(String),
    #[error("the operator may not read Secrets in this namespace")]
    SecretAccessDenied,
}

impl ReconcileError {
    pub fn api(action: &'static str) -> impl Fn(kube::Error) -> Self {
        move |source| Self::Api { action, source }
    }

    /// A bounded label for the failure metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Api {
                source: kube::Error::Api(status),
                ..
            } => match status.code {
                409 => "Conflict",
                403 => "Forbidden",
                404 => "NotFound",
                400 | 422 => "Invalid",
                429 | 500..=599 => "Unavailable",
                _ => "ApiError",
            },
            Self::Api { .. } => "Unavailable",
            Self::MissingUid => "MissingUid",
            Self::Random(_) => "Random",
            Self::SecretAccessDenied => "SecretAccessDenied",
        }
    }
}
