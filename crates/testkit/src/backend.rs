//! [`Backend`]: the store the servers of a test run on, and [`both_backends!`](crate::both_backends),
//! the one way to run a backend-agnostic test on each. A test names its backend once, when
//! it makes its tree ([`crate::Env::on`], [`crate::cluster::Cluster::on`]); every server
//! the kit starts in that tree then runs on it. Must not start servers itself (that is
//! [`crate::server`], through `Env`).

use crate::postgres::URL_ENV;
use crate::require::require;

/// Where a test's servers keep their data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in the test's tree (the server's default, or the file the test names).
    Sqlite,
    /// A fresh PostgreSQL database per tree ([`crate::postgres::TestDb`]), dropped with it.
    Postgres,
}

impl Backend {
    /// Whether this machine can run a test on this backend. When it cannot, the test must
    /// return at once: this says why it is skipped, or panics under `ROTA_REQUIRE_ALL=1`
    /// ([`require`]). The tests [`both_backends!`](crate::both_backends) makes ask it first.
    #[must_use]
    pub fn available(self) -> bool {
        match self {
            Backend::Sqlite => true,
            Backend::Postgres => require(
                std::env::var_os(URL_ENV).is_some_and(|u| !u.is_empty()),
                "PostgreSQL",
                &format!("set {URL_ENV}=postgres://USER@HOST:PORT/DB"),
            ),
        }
    }
}

/// Makes the named test function, `fn name(backend: Backend)` (or `async fn`), one test
/// per backend, `name::sqlite` and `name::postgres`, each with the attributes given
/// (by default `#[test]`, and `#[tokio::test(flavor = "multi_thread")]` for an `async fn`;
/// `tokio` must then be a dependency of the test crate). The body stays an ordinary function
/// next to the invocation, so rustfmt formats it and a function the macro does not name
/// is dead code (a warning, an error in CI). The PostgreSQL test returns at once when
/// [`Backend::available`] says so. `.ci/run` counts the tests each backend ran and fails
/// if they differ.
///
/// ```ignore
/// use rota_testkit::{Backend, both_backends};
///
/// both_backends!(async fn dag_runs);
/// async fn dag_runs(backend: Backend) {
///     let c = Cluster::on(backend, Timing::FAST).await;
///     // ...
/// }
/// ```
#[macro_export]
macro_rules! both_backends {
    (async fn $name:ident) => {
        $crate::both_backends!(#[tokio::test(flavor = "multi_thread")] async fn $name);
    };
    (fn $name:ident) => {
        $crate::both_backends!(#[test] fn $name);
    };
    ($(#[$attr:meta])+ async fn $name:ident) => {
        mod $name {
            $(#[$attr])+
            async fn sqlite() {
                super::$name($crate::backend::Backend::Sqlite).await;
            }

            $(#[$attr])+
            async fn postgres() {
                if $crate::backend::Backend::Postgres.available() {
                    super::$name($crate::backend::Backend::Postgres).await;
                }
            }
        }
    };
    ($(#[$attr:meta])+ fn $name:ident) => {
        mod $name {
            $(#[$attr])+
            fn sqlite() {
                super::$name($crate::backend::Backend::Sqlite);
            }

            $(#[$attr])+
            fn postgres() {
                if $crate::backend::Backend::Postgres.available() {
                    super::$name($crate::backend::Backend::Postgres);
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use crate::{Backend, Env, HEARTBEAT, LEASE_TTL};

    crate::both_backends!(fn every_server_of_a_tree_runs_on_its_backend_unless_told_otherwise);
    fn every_server_of_a_tree_runs_on_its_backend_unless_told_otherwise(backend: Backend) {
        let env = Env::on(backend);
        assert_eq!(env.backend(), backend);
        let spec = env.server_spec("127.0.0.1:0", HEARTBEAT, LEASE_TTL, &["--retention", "1h"]);
        let database = spec.args.iter().position(|a| a == "--database").map(|i| spec.args[i + 1].as_str());
        match backend {
            // The server's default file in the tree.
            Backend::Sqlite => assert_eq!(database, None, "{:?}", spec.args),
            Backend::Postgres => {
                let url = env.database_url().expect("a database of its own");
                assert!(url.starts_with("postgres://"), "{url}");
                assert_eq!(database, Some(url), "{:?}", spec.args);
            }
        }
        let own = env.server_spec("127.0.0.1:0", HEARTBEAT, LEASE_TTL, &["--database", "x.db"]);
        assert_eq!(own.args.iter().filter(|a| *a == "--database").count(), 1, "{:?}", own.args);
        assert!(own.args.ends_with(&["--database".to_string(), "x.db".to_string()]), "{:?}", own.args);
    }
}
