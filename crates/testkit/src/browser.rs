//! A real headless Chromium driven over W3C WebDriver (Debian's `chromium` and
//! `chromium-driver`): [`Browser::start`] runs `chromedriver` on a free loopback port in its
//! own process group (killed with the browser when the [`Browser`] drops) and opens a
//! session with a fresh profile; helpers to log in to the dashboard, wait for text, and
//! write screenshots (only with `ROTA_UPDATE_SCREENSHOTS=1`).

use crate::require::require;
pub use fantoccini::Locator;
use fantoccini::{Client, ClientBuilder};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian puts the browser and its driver.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A browser session; the driver (and the browser it started) die with it.
pub struct Browser {
    /// The WebDriver client.
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium, or `None` when they are not installed
    /// (a failure under `ROTA_REQUIRE_ALL`, see [`require`]).
    pub async fn start() -> Option<Browser> {
        let installed = Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists();
        if !require(
            installed,
            "Chromium and chromedriver",
            "apt-get install chromium chromium-driver (.ci/run does)",
        ) {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port for chromedriver")
            .port();
        let mut cmd = Command::new(CHROMEDRIVER);
        cmd.arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group, so the browser it starts is killed with it.
            .process_group(0);
        let driver = cmd.spawn().expect("start chromedriver");
        let profile = tempfile::tempdir().expect("a browser profile directory");
        let caps = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1400,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let serde_json::Value::Object(caps) = caps else { unreachable!("an object literal") };
        let url = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        let client = loop {
            match ClientBuilder::rustls()
                .expect("rustls connector")
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) if start.elapsed() < Duration::from_secs(30) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("no WebDriver session from chromedriver at {url} within 30 s: {e}"),
            }
        };
        eprintln!("browser session after {:?}", start.elapsed());
        Some(Browser { client, driver, _profile: profile })
    }

    /// Logs in to the dashboard of `server` (its base URL) with `token`.
    pub async fn login(&self, server: &str, token: &str) {
        self.client.goto(&format!("{server}/ui/login")).await.expect("open the login page");
        let input = self.client.wait().for_element(Locator::Id("token")).await.expect("the token field");
        input.send_keys(token).await.expect("type the token");
        self.client
            .find(Locator::Css("form button[type=submit]"))
            .await
            .expect("the button")
            .click()
            .await
            .expect("submit");
        self.wait_for_css("main[sse-connect]", Duration::from_secs(30)).await;
    }

    /// Waits until an element matches `css`.
    pub async fn wait_for_css(&self, css: &str, within: Duration) -> fantoccini::elements::Element {
        let start = Instant::now();
        loop {
            if let Ok(e) = self.client.find(Locator::Css(css)).await {
                return e;
            }
            assert!(
                start.elapsed() < within,
                "no element `{css}` within {within:?}; page:\n{}",
                self.text().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the element `css`, finding it again when the page replaced it in between (a
    /// live region refreshed by the event stream).
    pub async fn click(&self, css: &str, within: Duration) {
        let start = Instant::now();
        loop {
            let e = self.wait_for_css(css, within).await;
            match e.click().await {
                Ok(()) => return,
                Err(err) if start.elapsed() < within => {
                    eprintln!("click `{css}` again: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => panic!("could not click `{css}` within {within:?}: {err}"),
            }
        }
    }

    /// Waits until the text of the element `css` satisfies `cond`; returns that text.
    pub async fn wait_for_text(
        &self,
        css: &str,
        within: Duration,
        what: &str,
        cond: impl Fn(&str) -> bool,
    ) -> String {
        let start = Instant::now();
        loop {
            if let Ok(e) = self.client.find(Locator::Css(css)).await
                && let Ok(t) = e.text().await
                && cond(&t)
            {
                eprintln!("{what}: after {:?}", start.elapsed());
                return t;
            }
            assert!(start.elapsed() < within, "{what}: not within {within:?}; page:\n{}", self.text().await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The page's visible text (for failure messages).
    pub async fn text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(b) => b.text().await.unwrap_or_default(),
            Err(e) => format!("(no body: {e})"),
        }
    }

    /// Sets a marker in the page's JavaScript state; [`Browser::same_page`] tells whether it
    /// survived (the page was not reloaded since).
    pub async fn mark_page(&self) {
        self.client.execute("window.__rotaMark = 'kept'; return true;", vec![]).await.expect("mark the page");
    }

    /// Whether the page marked by [`Browser::mark_page`] is still the one shown.
    pub async fn same_page(&self) -> bool {
        self.client
            .execute("return window.__rotaMark === 'kept';", vec![])
            .await
            .ok()
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    }

    /// Writes a PNG of the page to `docs/screenshots/NAME.png` of the repository, only when
    /// `ROTA_UPDATE_SCREENSHOTS=1`.
    pub async fn screenshot(&self, name: &str) {
        if std::env::var("ROTA_UPDATE_SCREENSHOTS").as_deref() != Ok("1") {
            return;
        }
        let png = self.client.screenshot().await.expect("a screenshot");
        let path = screenshots_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        eprintln!("wrote {}", path.display());
    }

    /// Ends the session (the driver is killed on drop either way).
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

/// `docs/screenshots` of the repository (created).
pub fn screenshots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots");
    std::fs::create_dir_all(&dir).expect("create docs/screenshots");
    dir
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The driver leads its group: the browser and its helpers go with it.
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.driver.id())]).status();
        let _ = self.driver.wait();
    }
}
