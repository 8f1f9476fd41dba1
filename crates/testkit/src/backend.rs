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
