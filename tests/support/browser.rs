//! A real headless Chromium (Debian's `chromium`, installed by `scripts/chromium`) driven
//! over WebDriver by Debian's `chromedriver`: both on the loopback interface only, the
//! browser with a throwaway profile, and every process of theirs killed when dropped.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use crate::issuer::temp_dir;
use crate::process::free_port;
use crate::required_env;

/// One headless Chromium session.
pub struct Browser {
    pub client: Client,
    _driver: Driver,
}

/// chromedriver (and the Chromium it starts, in its process group) and the profile.
struct Driver {
    child: Child,
    profile: PathBuf,
}

impl Browser {
    /// Starts chromedriver and one headless Chromium session.
    pub async fn start() -> Self {
        let port = free_port();
        // Without --allowed-ips chromedriver listens on 127.0.0.1 and ::1 only.
        let child = Command::new(required_env("FIRSTCOME_TEST_CHROMEDRIVER"))
            .arg(format!("--port={port}"))
            .arg("--log-level=WARNING")
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("starting chromedriver");
        let driver = Driver {
            child,
            profile: temp_dir("chromium-profile"),
        };
        let url = format!("http://127.0.0.1:{port}");
        let client = crate::wait_until("a Chromium session", Duration::from_secs(30), || {
            connect(&url, &driver.profile)
        })
        .await;
        Self {
            client,
            _driver: driver,
        }
    }

    /// Ends the session (Chromium quits); dropping then stops chromedriver.
    pub async fn stop(self) {
        (self.client.clone().close().await).expect("closing the browser session");
    }

    /// The value of `script` (a function body: `return ...`) in the current tab.
    pub async fn eval(&self, script: &str) -> Value {
        (self.client.execute(script, vec![]).await)
            .unwrap_or_else(|e| panic!("running {script:?} in the page: {e}"))
    }
}

async fn connect(url: &str, profile: &Path) -> Result<Client, String> {
    let options = json!({
        "binary": required_env("FIRSTCOME_TEST_CHROMIUM"),
        "args": [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-background-timer-throttling",
            "--disable-renderer-backgrounding",
            "--disable-backgrounding-occluded-windows",
            format!("--user-data-dir={}", profile.display()),
        ],
    });
    let capabilities = json!({ "browserName": "chrome", "goog:chromeOptions": options });
    // plain HTTP: chromedriver is on the loopback interface
    let mut builder = ClientBuilder::new(HttpConnector::new());
    builder.capabilities(capabilities.as_object().expect("an object").clone());
    builder.connect(url).await.map_err(|e| e.to_string())
}

impl Drop for Driver {
    fn drop(&mut self) {
        // chromedriver and every Chromium process it started share its process group
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
