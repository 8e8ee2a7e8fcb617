//! Headless Chromium driven over the W3C WebDriver protocol, for the
//! portal's browser tests: Debian's `chromium` and `chromedriver`
//! (`scripts/ensure-browser.sh` installs them), a session of our own, a
//! throwaway profile, no background networking.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// The Chromium binary.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Its driver.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long an element may take to appear or a condition to hold.
const WAIT: Duration = Duration::from_secs(20);

/// One browser session; the driver is stopped when dropped.
pub struct Browser {
    driver: Child,
    base: String,
    http: reqwest::Client,
    /// Where screenshots go.
    pub out: PathBuf,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A found element's WebDriver reference.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver and a headless Chromium session whose window is
    /// `width` × `height`; screenshots go under `out`.
    pub async fn start(out: &Path, width: u32, height: u32) -> Result<Self, String> {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            if !Path::new(binary).exists() {
                return Err(format!(
                    "{binary} is missing: run scripts/ensure-browser.sh (Debian's chromium and chromium-driver)"
                ));
            }
        }
        std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
        let port = crate::cluster::free_port();
        let log = std::fs::File::create(out.join("chromedriver.log")).map_err(|e| e.to_string())?;
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::from(log.try_clone().map_err(|e| e.to_string())?))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("cannot start chromedriver: {e}"))?;
        let profile = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut browser = Self {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            out: out.to_owned(),
            _profile: profile,
        };
        let deadline = Instant::now() + WAIT;
        loop {
            let ready = browser
                .http
                .get(format!("{}/status", browser.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            if Instant::now() > deadline {
                return Err("chromedriver did not answer within 20 s".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-dev-shm-usage".into(),
            format!("--user-data-dir={}", browser._profile.path().display()),
            format!("--window-size={width},{height}"),
        ];
        let session = browser
            .raw(
                "POST",
                "/session",
                Some(json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
                }}})),
            )
            .await?;
        let id = session["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no session: {session}"))?;
        browser.base = format!("{}/session/{id}", browser.base);
        Ok(browser)
    }

    async fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self
                .http
                .post(&url)
                .header("content-type", "application/json")
                .body(body.unwrap_or_else(|| json!({})).to_string()),
        };
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(format!("{method} {path}: {status}: {text}"));
        }
        Ok(value["value"].clone())
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        self.raw(method, path, body).await
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) -> Result<(), String> {
        self.call("POST", "/url", Some(json!({"url": url})))
            .await
            .map(drop)
    }

    /// The first element matching `css`, waiting for it to appear.
    pub async fn find(&self, css: &str) -> Result<Element, String> {
        self.find_by("css selector", css).await
    }

    /// The first element matching `xpath` (e.g. a button by its text).
    pub async fn find_xpath(&self, xpath: &str) -> Result<Element, String> {
        self.find_by("xpath", xpath).await
    }

    async fn find_by(&self, using: &str, value: &str) -> Result<Element, String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let found = self
                .call(
                    "POST",
                    "/element",
                    Some(json!({"using": using, "value": value})),
                )
                .await;
            if let Ok(v) = &found
                && let Some(Value::String(id)) = v.as_object().and_then(|o| o.values().next())
            {
                return Ok(Element(id.clone()));
            }
            if Instant::now() > deadline {
                return Err(format!("no element `{value}` within 20 s: {found:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the button or link whose text is `text`.
    pub async fn click_text(&self, text: &str) -> Result<(), String> {
        let e = self
            .find_xpath(&format!(
                "//*[self::button or self::a][normalize-space(.)='{text}']"
            ))
            .await?;
        self.click_element(&e).await
    }

    /// Clicks the first element matching `css`.
    pub async fn click(&self, css: &str) -> Result<(), String> {
        let e = self.find(css).await?;
        self.click_element(&e).await
    }

    async fn click_element(&self, e: &Element) -> Result<(), String> {
        self.call("POST", &format!("/element/{}/click", e.0), None)
            .await
            .map(drop)
    }

    /// Replaces the value of the input matching `css` with `text`, typed.
    pub async fn fill(&self, css: &str, text: &str) -> Result<(), String> {
        let e = self.find(css).await?;
        self.call("POST", &format!("/element/{}/clear", e.0), None)
            .await?;
        self.call(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(json!({"text": text})),
        )
        .await
        .map(drop)
    }

    /// Runs `script` in the page (its `return` is the answer).
    pub async fn execute(&self, script: &str) -> Result<Value, String> {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// The text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> Result<String, String> {
        let e = self.find(css).await?;
        let v = self
            .call("GET", &format!("/element/{}/text", e.0), None)
            .await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// Waits until the page's text (its `body`) contains `needle`.
    pub async fn wait_for_text(&self, needle: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let body = self.text("body").await.unwrap_or_default();
            if body.contains(needle) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the page never showed `{needle}`; it shows:\n{body}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the text of `css` contains `needle`.
    pub async fn wait_for_text_in(
        &self,
        css: &str,
        needle: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.text(css).await.unwrap_or_default();
            if text.contains(needle) {
                return Ok(text);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "`{css}` never showed `{needle}`; it shows `{text}`"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Accepts the open `confirm()` dialog.
    pub async fn accept_dialog(&self) -> Result<(), String> {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.call("POST", "/alert/accept", None).await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Sets the window's size (a phone is 390 × 844).
    pub async fn resize(&self, width: u32, height: u32) -> Result<(), String> {
        self.call(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await
        .map(drop)
    }

    /// Writes a PNG of the page to `<out>/<name>.png` and returns its path.
    pub async fn screenshot(&self, name: &str) -> Result<PathBuf, String> {
        let v = self.call("GET", "/screenshot", None).await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .map_err(|e| e.to_string())?;
        let path = self.out.join(format!("{name}.png"));
        std::fs::write(&path, png).map_err(|e| e.to_string())?;
        Ok(path)
    }

    /// Ends the session.
    pub async fn quit(mut self) {
        let _ = self.call("DELETE", "", None).await;
        let _ = self.driver.kill();
    }
}
