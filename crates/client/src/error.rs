//! The client's one error type. It classifies failures so callers can act on them
//! (an unreachable server is retried, a 409 is final, a 401 means the credential is gone);
//! it never decides what to do itself.

/// Every way a call to the control plane can fail.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a non-2xx status and (usually) an `ErrorBody`.
    #[error("server answered {status} {code}: {message}")]
    Http {
        /// HTTP status code.
        status: u16,
        /// Machine-readable code from the error body (`conflict`, `unauthorized`, ...).
        code: String,
        /// Human-readable message from the error body.
        message: String,
        /// The request body's field the server blamed, as a JSON pointer
        /// (`/documents/1/spec/steps/0/run`), when it named one.
        pointer: Option<String>,
    },
    /// The server could not be reached or did not answer in time: it is down, restarting
    /// or partitioned away. With several servers, the last one tried; `tried` names the
    /// others, each with why it was left.
    #[error("cannot reach the rota server at {url}{}", also_tried(tried))]
    Unreachable {
        /// The URL that was called.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
        /// The servers tried before this one, as `URL (reason)`; empty with one server.
        tried: Vec<String>,
    },
    /// The server answered 2xx with a body that is not what the protocol says.
    #[error("unexpected reply from {url}: {source}")]
    Decode {
        /// The URL that was called.
        url: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The server address is not usable (`host:port`, `http://…` or `https://…`).
    #[error("invalid server address: {0}")]
    InvalidServer(String),
    /// A `--ca-cert` file cannot be used.
    #[error("the CA certificate file {}: {problem}", path.display())]
    CaCert {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A worker-protocol call was made before `register` returned a credential.
    #[error("not registered: call register first")]
    NotRegistered,
}

fn also_tried(tried: &[String]) -> String {
    if tried.is_empty() { String::new() } else { format!(" (also tried {})", tried.join(", ")) }
}

/// `Result` with [`ClientError`].
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

impl ClientError {
    /// True when the server could not be reached (connect error, timeout, connection
    /// dropped): worth retrying later.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }

    /// The HTTP status the server answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True for a 409: the attempt (or resource) is no longer the caller's. Never retry.
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409)
    }

    /// The server's error code (`conflict`, `forgotten`, ...) of an HTTP error.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Http { code, .. } => Some(code),
            _ => None,
        }
    }

    /// True for a 401: the token or session credential is not (or no longer) valid.
    pub fn is_unauthorized(&self) -> bool {
        self.status() == Some(401)
    }

    /// Why the server's certificate was refused, when that is why the call failed (not
    /// transient: it fails the same way until the certificate or `--ca-cert` changes).
    pub fn certificate_problem(&self) -> Option<String> {
        match self {
            Self::Unreachable { source, .. } => crate::tls::certificate_problem(source),
            _ => None,
        }
    }

    /// True when retrying the same call later may succeed: unreachable, 408, 429 or 5xx.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Http { status, .. } => *status == 408 || *status == 429 || *status >= 500,
            _ => false,
        }
    }
}
