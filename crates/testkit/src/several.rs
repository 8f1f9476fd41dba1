//! Several `rota server` processes of one control plane (PostgreSQL) in end-to-end tests:
//! which of them says it leads, and a server in a HOME/XDG tree of its own that shares the
//! first tree's token files and secret key file (the store holds their hashes and the key's
//! fingerprint; a server refuses files that do not match them). Starts servers only through [`crate::server`].

use crate::server::{self, Server, Spec};
use crate::{Env, HEARTBEAT, LEASE_TTL};
use std::path::Path;
use std::time::Duration;

/// Whether the server at `url` says it leads (`GET /healthz/detail` with the admin token of
/// the tree at `root`); `None` if it cannot say within 5 s (down, or busy).
pub async fn leads(root: &Path, url: &str) -> Option<bool> {
    let token = server::Server::admin_token(root).ok()?;
    let client = rota_client::Client::new(url, Some(token)).ok()?;
    let detail = tokio::time::timeout(Duration::from_secs(5), client.healthz_detail()).await.ok()?.ok()?;
    Some(detail.leads)
}

/// A server of `env`'s control plane in its own tree at `root` (made here, with copies of
/// `env`'s token files), listening on `listen`, on `env`'s database, with the kit's lease
/// timings and `args` after. Panics if it cannot start.
pub fn start_in_own_tree(env: &Env, root: &Path, listen: &str, args: &[&str]) -> Server {
    server::make_tree(root).unwrap_or_else(|e| panic!("making {}: {e}", root.display()));
    let data = root.join("data/rota");
    std::fs::create_dir_all(&data).unwrap_or_else(|e| panic!("making {}: {e}", data.display()));
    // The secret key file too: every server of a control plane needs the same key.
    for file in ["admin.token", "join.token", "secret.key"] {
        let from = env.data_dir().join(file);
        std::fs::copy(&from, data.join(file)).unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
    }
    let spec = env.server_spec(listen, HEARTBEAT, LEASE_TTL, args);
    server::start(Spec { root: root.to_path_buf(), ..spec }).unwrap_or_else(|e| panic!("{e}"))
}
