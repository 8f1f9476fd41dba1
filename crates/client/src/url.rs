//! Server addresses: `host:port` (as in `ROTA_SERVER=zeus:7777`), `host`, `:port`,
//! `http://…` and `https://…`. Pure parsing; it never resolves or connects.

use crate::error::{ClientError, Result};
use reqwest::Url;

/// Port used when a bare host name is given without one (`rota server`'s default).
pub const DEFAULT_PORT: u16 = 7777;

/// Parses a server address into a base URL.
///
/// Without a scheme, `http://` is assumed and a missing port means [`DEFAULT_PORT`]
/// (`:7777` alone means `127.0.0.1:7777`). With a scheme, the scheme's default port
/// applies. Credentials, queries and fragments are refused; a path prefix is kept (for a
/// server behind a reverse proxy).
pub fn server_url(s: &str) -> Result<Url> {
    let s = s.trim();
    if s.is_empty() {
        return Err(ClientError::InvalidServer("the server address is empty".into()));
    }
    let has_scheme = s.contains("://");
    let full = match (has_scheme, s.starts_with(':')) {
        (true, _) => s.to_string(),
        (false, true) => format!("http://127.0.0.1{s}"),
        (false, false) => format!("http://{s}"),
    };
    let mut url = Url::parse(&full).map_err(|e| {
        ClientError::InvalidServer(format!(
            "'{s}' is not a server address ({e}); expected host:port, http://host:port or https://host:port"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ClientError::InvalidServer(format!(
            "'{s}' uses scheme '{}'; use http:// or https://",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ClientError::InvalidServer(format!("'{s}' has no host name")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ClientError::InvalidServer(format!(
            "'{s}' carries credentials; pass the token separately"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ClientError::InvalidServer(format!("'{s}' must not have a query or fragment")));
    }
    if !has_scheme && !has_explicit_port(s) {
        url.set_port(Some(DEFAULT_PORT))
            .map_err(|()| ClientError::InvalidServer(format!("'{s}' cannot take a port")))?;
    }
    Ok(url)
}

/// True when the authority part of a scheme-less address names a port.
fn has_explicit_port(s: &str) -> bool {
    let authority = s.split('/').next().unwrap_or(s);
    let after_host = match authority.rfind(']') {
        Some(i) => &authority[i + 1..],
        None => authority,
    };
    after_host.rsplit_once(':').is_some_and(|(_, port)| !port.is_empty())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ok(s: &str) -> String {
        server_url(s).map(|u| u.to_string()).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn accepts_the_documented_forms() {
        let cases = [
            ("zeus:7777", "http://zeus:7777/"),
            ("zeus:80", "http://zeus/"),
            ("zeus:8080", "http://zeus:8080/"),
            ("zeus", "http://zeus:7777/"),
            (":9000", "http://127.0.0.1:9000/"),
            ("127.0.0.1:7777", "http://127.0.0.1:7777/"),
            ("[::1]:7000", "http://[::1]:7000/"),
            ("[::1]", "http://[::1]:7777/"),
            ("http://zeus:7777", "http://zeus:7777/"),
            ("http://zeus", "http://zeus/"),
            ("https://rota.example.com", "https://rota.example.com/"),
            ("https://rota.example.com:8443/rota/", "https://rota.example.com:8443/rota/"),
            ("  zeus:7777 \n", "http://zeus:7777/"),
            ("zeus:7777/prefix", "http://zeus:7777/prefix"),
        ];
        for (input, want) in cases {
            assert_eq!(ok(input), want, "input {input:?}");
        }
    }

    #[test]
    fn refuses_what_cannot_work() {
        for bad in [
            "",
            "   ",
            "ftp://zeus",
            "unix:///run/rota.sock",
            "http://",
            "http://user:pw@zeus:7777",
            "zeus:7777?x=1",
            "http://zeus#frag",
            "zeus:notaport",
            "zeus:99999",
        ] {
            match server_url(bad) {
                Err(ClientError::InvalidServer(msg)) => assert!(!msg.is_empty()),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }
}
