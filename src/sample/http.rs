//! Shared plumbing of the HTTP sources (Kafka Connect, Flink, Prometheus): one client per
//! source with its timeout, JSON GETs with errors that say what failed.

use std::time::Duration;

/// Errors of an HTTP source.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HttpError {
    #[error("cannot build HTTP client: {0}")]
    Client(String),
    #[error("GET {url}: timed out")]
    Timeout { url: String },
    #[error("GET {url}: {message}")]
    Connect { url: String, message: String },
    #[error("GET {url}: HTTP {status}: {body}")]
    Status { url: String, status: u16, body: String },
    #[error("GET {url}: invalid response: {message}")]
    Decode { url: String, message: String },
}

impl HttpError {
    /// Bounded label value for the error counter.
    pub fn kind(&self) -> &'static str {
        match self {
            HttpError::Client(_) => "client",
            HttpError::Timeout { .. } => "timeout",
            HttpError::Connect { .. } => "connect",
            HttpError::Status { .. } => "http_status",
            HttpError::Decode { .. } => "decode",
        }
    }
}

/// A client whose every request times out after `timeout`.
pub fn client(timeout: Duration) -> Result<reqwest::Client, HttpError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("streamguard/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| HttpError::Client(e.to_string()))
}

/// GET `url` and decode JSON; a non-2xx status is an error carrying (a bounded prefix
/// of) the body.
pub async fn get_json<T: serde::de::DeserializeOwned>(client: &reqwest::Client, url: &str) -> Result<T, HttpError> {
    let resp = client.get(url).send().await.map_err(|e| send_error(url, e))?;
    let status = resp.status();
    if !status.is_success() {
        let mut body = resp.text().await.unwrap_or_default();
        body.truncate(512);
        return Err(HttpError::Status { url: url.to_string(), status: status.as_u16(), body });
    }
    let bytes = resp.bytes().await.map_err(|e| send_error(url, e))?;
    serde_json::from_slice(&bytes).map_err(|e| HttpError::Decode { url: url.to_string(), message: e.to_string() })
}

fn send_error(url: &str, e: reqwest::Error) -> HttpError {
    if e.is_timeout() {
        HttpError::Timeout { url: url.to_string() }
    } else {
        let mut message = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            message = format!("{message}: {s}");
            src = s.source();
        }
        HttpError::Connect { url: url.to_string(), message }
    }
}
