//! A real browser for page tests: headless Chromium from Debian's packages (`chromium`,
//! `chromium-driver`; `make browser-deps` installs them) driven over WebDriver by fantoccini.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

use crate::{free_port, repo_root};

/// `CHROMIUM` / `CHROMEDRIVER`, else Debian's paths.
fn program(variable: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(variable).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.exists(),
        "{} not found: `make browser-deps` installs Debian's chromium and chromium-driver (or set {variable})",
        path.display()
    );
    path
}

/// A headless Chromium session; the driver process ends with it.
#[derive(Debug)]
pub struct Browser {
    pub client: Client,
    driver: Child,
    profile: PathBuf,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless window of 1280×`height`, in US
    /// English (dates and money are formatted as the browser's language says).
    pub async fn start(height: u32) -> Self {
        let chromium = program("CHROMIUM", "/usr/bin/chromium");
        let chromedriver = program("CHROMEDRIVER", "/usr/bin/chromedriver");
        let port = free_port();
        // Its own process group: stopping it stops the Chromium it started, even after a panic.
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = std::env::temp_dir().join(format!("omnistream-chromium-{}-{port}", std::process::id()));
        let capabilities = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                // --no-sandbox: CI and this machine run as root, where Chromium's sandbox cannot start.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--lang=en-US",
                         format!("--window-size=1280,{height}"), format!("--user-data-dir={}", profile.display())],
            }
        });
        let serde_json::Value::Object(capabilities) = capabilities else { unreachable!("an object") };
        let started = Instant::now();
        let client = loop {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(client) => break client,
                // chromedriver takes a moment to listen.
                Err(_) if started.elapsed() < Duration::from_secs(30) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => panic!("no WebDriver session within 30 s: {error}"),
            }
        };
        Self { client, driver, profile }
    }

    /// The text of the first element `css` matches ("" when none does).
    pub async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Whether the first element `css` matches is shown (false when none matches).
    pub async fn is_displayed(&self, css: &str) -> bool {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.is_displayed().await.unwrap_or(false),
            Err(_) => false,
        }
    }

    /// Waits until the text of `css` satisfies `check`; panics with the last text after `deadline`.
    pub async fn wait_for_text(&self, css: &str, deadline: Duration, check: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let text = self.text(css).await;
            if check(&text) {
                return text;
            }
            assert!(
                started.elapsed() < deadline,
                "{css} did not show what was expected within {deadline:?}: {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Replaces the value of the input `css` with `text`.
    pub async fn fill(&self, css: &str, text: &str) {
        let input = self.client.find(Locator::Css(css)).await.expect("the input");
        input.clear().await.expect("cleared");
        if !text.is_empty() {
            input.send_keys(text).await.expect("typed");
        }
    }

    pub async fn click(&self, css: &str) {
        self.client.find(Locator::Css(css)).await.expect("the element").click().await.expect("clicked");
    }

    /// A screenshot of the window, as PNG, at `relative` under the repository (e.g. `target/…`).
    pub async fn screenshot(&self, relative: &Path) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        let path = repo_root().join(relative);
        std::fs::create_dir_all(path.parent().expect("a directory")).expect("creates the directory");
        std::fs::write(&path, png).expect("writes the screenshot");
        path
    }

    /// Ends the session and the driver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        self.stop_driver();
    }

    fn stop_driver(&mut self) {
        if let Ok(group) = i32::try_from(self.driver.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(group),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Drop for Browser {
    /// A failed test still stops chromedriver (which ends its Chromium).
    fn drop(&mut self) {
        self.stop_driver();
    }
}
