//! Server addresses: `host:port` (as in `ROTA_SERVER=zeus:7777`), `host`, `:port`,
//! `http://…` and `https://…`, and comma-separated lists of them (`a:7777,b:7777`: several
//! servers of one control plane). Pure parsing; it never resolves or connects.

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

/// Parses a comma-separated list of server addresses (`a:7777,b:7777`), each as
/// [`server_url`], in order and without duplicates. Surrounding blanks are ignored; an
/// empty entry (`a:7777,,b:7777`) or an empty list is refused, naming the entry.
pub fn server_urls(s: &str) -> Result<Vec<Url>> {
    let mut urls: Vec<Url> = Vec::new();
    for (i, entry) in s.split(',').enumerate() {
        if entry.trim().is_empty() {
            return Err(ClientError::InvalidServer(format!(
                "entry {} of the server list '{}' is empty",
                i + 1,
                s.trim()
            )));
        }
        let url = server_url(entry)?;
        if !urls.contains(&url) {
            urls.push(url);
        }
    }
    Ok(urls)
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
    fn lists_parse_each_entry_in_order() {
        let urls = server_urls(" a:7777, http://b:8000/x ,:9000,a").unwrap();
        let got: Vec<&str> = urls.iter().map(Url::as_str).collect();
        assert_eq!(got, ["http://a:7777/", "http://b:8000/x", "http://127.0.0.1:9000/"]);
        let one = server_urls("zeus").unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].as_str(), "http://zeus:7777/");
        // The same server twice is one server.
        assert_eq!(server_urls("a:7777,http://a:7777/").unwrap().len(), 1);
    }

    #[test]
    fn lists_name_the_bad_entry() {
        for (bad, named) in [
            ("a:7777,ftp://b", "ftp://b"),
            ("a:7777,,b:7777", "entry 2"),
            ("a:7777,", "entry 2"),
            ("", "entry 1"),
            ("a:7777,b:notaport", "b:notaport"),
        ] {
            match server_urls(bad) {
                Err(ClientError::InvalidServer(msg)) => assert!(msg.contains(named), "{bad:?}: {msg}"),
                other => panic!("{bad:?} gave {other:?}"),
            }
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
