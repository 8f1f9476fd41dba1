//! The event stream (`GET /api/v1/events`): opening it and reading its Server-Sent Events
//! as [`StreamEvent`]s, remembering the last id so a caller can reconnect where it left off.
//! No reconnect policy here: the caller decides (the CLI's `rota events -f`).

use crate::error::{ClientError, Result};
use rota_api_types::events::StreamEvent;
use std::time::Duration;

/// The server writes at least a keepalive every 15 s: silence this long means the link
/// is gone.
const SILENCE: Duration = Duration::from_secs(45);

/// An open event stream.
pub struct EventStream {
    resp: reqwest::Response,
    url: String,
    buf: Vec<u8>,
    last_id: Option<String>,
}

impl EventStream {
    pub(crate) fn new(resp: reqwest::Response) -> Self {
        let url = resp.url().to_string();
        Self { resp, url, buf: Vec::new(), last_id: None }
    }

    /// The id of the last event (or position) the server sent: what to reconnect with.
    pub fn last_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// The next event, or `None` when the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<StreamEvent>> {
        loop {
            while let Some(end) = find_block_end(&self.buf) {
                let block: Vec<u8> = self.buf.drain(..end.0 + end.1).collect();
                if let Some(e) = self.parse_block(&block[..end.0])? {
                    return Ok(Some(e));
                }
            }
            let chunk = match tokio::time::timeout(SILENCE, self.resp.chunk()).await {
                Ok(Ok(Some(c))) => c,
                Ok(Ok(None)) => return Ok(None),
                Ok(Err(e)) => {
                    return Err(ClientError::Unreachable {
                        url: self.url.clone(),
                        source: e,
                        tried: Vec::new(),
                    });
                }
                // Silent for too long: as if the server had ended it (the caller reconnects).
                Err(_) => return Ok(None),
            };
            self.buf.extend_from_slice(&chunk);
        }
    }

    /// One SSE block: `id:` sets the position even without data; `data:` lines make the
    /// event; comments and `retry:` are skipped.
    fn parse_block(&mut self, block: &[u8]) -> Result<Option<StreamEvent>> {
        let text = String::from_utf8_lossy(block);
        let mut data = String::new();
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                self.last_id = Some(v.trim_start().to_string());
            } else if let Some(v) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        if data.is_empty() {
            return Ok(None);
        }
        serde_json::from_str(&data)
            .map(Some)
            .map_err(|source| ClientError::Decode { url: self.url.clone(), source })
    }
}

/// Where the first block of `buf` ends: (its length, the separator's length).
fn find_block_end(buf: &[u8]) -> Option<(usize, usize)> {
    (0..buf.len()).find_map(|i| {
        if buf[i..].starts_with(b"\n\n") {
            Some((i, 2))
        } else if buf[i..].starts_with(b"\r\n\r\n") {
            Some((i, 4))
        } else {
            None
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn blocks_end_at_a_blank_line() {
        assert_eq!(find_block_end(b"id: 1\n\nrest"), Some((5, 2)));
        assert_eq!(find_block_end(b"id: 1\r\n\r\n"), Some((5, 4)));
        assert_eq!(find_block_end(b"id: 1\n"), None);
    }
}
