//! The dashboard in a real browser: Debian's chromium (headless), driven over WebDriver by
//! chromedriver (fantoccini), against the real server on port 0 with deliveries of every
//! status. Screenshots of each page go to `<target>/dashboard-screenshots/<test>/`.
//!
//! Both binaries must be installed (`apt-get install chromium chromium-driver`; `.ci/run`
//! does it): without them these tests fail, saying so, rather than skip.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use futurnal::handlers::{DeliveryHandler, EventHandlers, Handled, HandlerError, HandlerOutcome};
use futurnal::storage::queue::{ClaimedDelivery, DeliveryStatus};
use futurnal::storage::registry::RepoRef;
use futurnal::storage::BoxFuture;
use serde_json::{json, Value};

use crate::helpers::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// What a hostile payload carries: it must show as these characters, never as markup.
const HOSTILE: &str = "<img src=x onerror=alert(1)>";
const REPO: &str = "octo/hello";
const REPO_ID: u64 = 4242;
const BROKEN: &str = "octo/broken";
/// Failed deliveries wait a minute before their next attempt: one that failed stays
/// `retrying` (and what comes after it in its domain `queued`) for the whole test.
const SLOW_RETRIES: &str = "[workers]\nretry_base_ms = 60000\nretry_cap_ms = 60000\n";

// ---- The browser ----

/// chromedriver (killed on drop) and a WebDriver session in headless chromium.
struct Browser {
    client: Client,
    driver: Child,
    shots: PathBuf,
    _profile: tempfile::TempDir,
}

fn require(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: the dashboard's browser tests need Debian's {package} \
         (apt-get install -y chromium chromium-driver; .ci/run installs them)"
    );
}

/// chromium's DevTools command `cmd`, through chromedriver (`goog/cdp/execute`).
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Value,
}

impl fantoccini::wd::WebDriverCompatibleCommand for Cdp {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/goog/cdp/execute", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(json!({ "cmd": self.cmd, "params": self.params }).to_string()))
    }
}

impl Browser {
    async fn start(test: &str) -> Browser {
        require(CHROMIUM, "chromium");
        require(CHROMEDRIVER, "chromium-driver");
        use std::os::unix::process::CommandExt;
        // A process group of its own: a failing test ends chromedriver and the browser it
        // started together (see `Drop`).
        let mut driver = Command::new(CHROMEDRIVER)
            .arg("--port=0")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{CHROMEDRIVER} does not start: {e}"));
        // It prints the port it chose; the rest of what it prints is drained so that it
        // never blocks on a full pipe.
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let stdout = driver.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line.split("started successfully on port ").nth(1) {
                    let _ = port_tx.send(port.trim_end_matches('.').trim().parse::<u16>().ok());
                }
            }
        });
        let port = port_rx
            .recv_timeout(Duration::from_secs(30))
            .ok()
            .flatten()
            .expect("chromedriver says which port it listens on");
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({
            "browserName": "chrome",
            // An alert stays open for the test to find (it must never appear).
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,800", "--hide-scrollbars", "--no-first-run", "--lang=en-US",
                    "--disable-extensions", "--disable-background-networking", "--disable-sync",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let client = fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities.as_object().unwrap().clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| panic!("no WebDriver session in {CHROMIUM}: {e}"));
        let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("dashboard-screenshots").join(test);
        std::fs::create_dir_all(&shots).unwrap();
        println!("screenshots of {test}: {}", shots.display());
        let browser = Browser { client, driver, shots, _profile: profile };
        // Times must show in the viewer's zone: one that is not UTC, and off by a half hour.
        browser.cdp("Emulation.setTimezoneOverride", json!({ "timezoneId": "Asia/Kolkata" })).await;
        browser
    }

    async fn cdp(&self, cmd: &'static str, params: Value) -> Value {
        self.client.issue_cmd(Cdp { cmd, params }).await.unwrap_or_else(|e| panic!("{cmd}: {e}"))
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("opening {url}: {e}"));
    }

    async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap_or_else(|e| panic!("script failed ({e}): {script}"))
    }

    /// Runs `script` (a function body that returns a value) until it returns something
    /// other than null/false/0/"", or fails after 10 s, saying what the page showed.
    async fn wait(&self, what: &str, script: &str) -> Value {
        self.wait_up_to(Duration::from_secs(10), what, script).await
    }

    async fn wait_up_to(&self, limit: Duration, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let value = self.js(script).await;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            if Instant::now() >= deadline {
                let page = self.js("return document.body.innerText").await;
                panic!("timed out waiting for {what}; last: {value}; the page said:\n{}", page.as_str().unwrap_or(""));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn click(&self, css: &str) {
        let element = self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no {css}: {e}"));
        element.click().await.unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    /// Clicks the page's own confirmation dialog's button once it is open.
    async fn confirm(&self, expect_in_body: &str) {
        let body = self
            .wait(
                "the confirmation dialog",
                "return document.querySelector('#confirm').open && document.querySelector('#confirm-body').textContent",
            )
            .await;
        assert!(body.as_str().unwrap().contains(expect_in_body), "the dialog says what it will do: {body}");
        self.click("#confirm-ok").await;
    }

    /// A PNG of the whole page (not only the viewport) at `width`.
    async fn screenshot(&self, name: &str, width: u32, mobile: bool) {
        let height =
            self.js("return Math.ceil(document.documentElement.scrollHeight)").await.as_u64().unwrap().max(800);
        let metrics = json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile });
        self.cdp("Emulation.setDeviceMetricsOverride", metrics).await;
        self.wait("the page to take the screenshot's size", &format!("return window.innerHeight === {height}")).await;
        let png = self.client.screenshot().await.unwrap();
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        println!("screenshot: {}", path.display());
        self.cdp("Emulation.clearDeviceMetricsOverride", json!({})).await;
    }

    /// No `alert()` ran: a hostile string never became script.
    async fn assert_no_alert(&self) {
        match self.client.get_alert_text().await {
            Err(e) if e.is_no_such_alert() => {}
            Ok(text) => panic!("an alert opened: {text:?}"),
            Err(e) => panic!("asking for an alert failed: {e}"),
        }
    }

    async fn close(self) {
        self.client.clone().close().await.unwrap();
    }
}

impl Drop for Browser {
    /// Ends chromedriver's process group: chromedriver and the chromium it started.
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        let _ = self.driver.wait();
    }
}

// ---- The server and its deliveries ----

/// The real handlers, except that the deliveries named in `fail_once` fail for good the
/// first time (then go dead), so that a replay of them succeeds.
#[derive(Default)]
struct FailOnce {
    real: OnceLock<Arc<dyn DeliveryHandler>>,
    fail_once: Mutex<Vec<String>>,
}

impl FailOnce {
    fn real(&self) -> &Arc<dyn DeliveryHandler> {
        self.real.get().expect("the real handlers are set before the first delivery")
    }
}

impl DeliveryHandler for FailOnce {
    fn handle<'a>(&'a self, d: &'a ClaimedDelivery) -> BoxFuture<'a, Result<Handled, HandlerError>> {
        let fail = {
            let mut ids = self.fail_once.lock().unwrap();
            let at = ids.iter().position(|id| *id == d.delivery_id);
            at.map(|i| ids.remove(i)).is_some()
        };
        if fail {
            return Box::pin(async { Err(HandlerError::Permanent("scripted: refused once, as a test asked".into())) });
        }
        self.real().handle(d)
    }

    fn can_handle_together(&self, lane: &[ClaimedDelivery]) -> usize {
        let failing = self.fail_once.lock().unwrap();
        let clean = lane.iter().take_while(|d| !failing.contains(&d.delivery_id)).count();
        self.real().can_handle_together(&lane[..clean])
    }

    fn handle_together<'a>(
        &'a self,
        deliveries: &'a [ClaimedDelivery],
    ) -> BoxFuture<'a, Result<Handled<Vec<HandlerOutcome>>, HandlerError>> {
        self.real().handle_together(deliveries)
    }
}

async fn spawn_dashboard_app(extra_toml: &str) -> (TestApp, Arc<FailOnce>) {
    let handler = Arc::new(FailOnce::default());
    let toml = format!("{SLOW_RETRIES}{extra_toml}");
    let app = spawn_app(AppOptions {
        toml: toml.clone(),
        handler: Some(handler.clone()),
        track: vec![REPO, BROKEN],
        ..Default::default()
    })
    .await;
    let config = config_for(app.dir.path(), &toml);
    let sync = Arc::new(futurnal::sync::SyncEngine::new(&config, app.copy.clone()));
    let real: Arc<dyn DeliveryHandler> = Arc::new(EventHandlers::new(app.registry.clone(), sync));
    assert!(handler.real.set(real).is_ok());
    (app, handler)
}

fn fixture_for(path: &str, repo: &str, github_id: u64) -> Value {
    let mut value: Value = serde_json::from_slice(&std::fs::read(fixture(path)).unwrap()).unwrap();
    value["repository"]["id"] = github_id.into();
    value["repository"]["full_name"] = repo.into();
    value["repository"]["name"] = repo.split('/').nth(1).unwrap().into();
    value
}

async fn deliver(app: &TestApp, event: &str, body: &Value) -> String {
    let d = Delivery::new(event, serde_json::to_vec(body).unwrap());
    let id = d.id.clone();
    let (status, answer) = app.post(d).await;
    assert!(status == 202, "{event}: {status} {answer}");
    id
}

/// The deliveries the pages show: one of each status, and one hostile payload.
struct Seeded {
    push: String,
    hostile: String,
    ignored: String,
    dead: String,
    retrying: String,
    queued: String,
    repo_id: i64,
    head: String,
}

async fn seed(app: &TestApp, handler: &FailOnce) -> Seeded {
    // Done: a push of a real commit, an issue whose title is hostile, a pull request and
    // a release (the local copy browser's material).
    let remote = GitRemote::existing(app.dir.path(), REPO);
    let first = remote.head();
    let head = remote.commit("src/lib.rs", "pub fn hello() {}\n", "Add the library\n\nWith a body line.");
    remote.push("main");
    let push = deliver(
        app,
        "push",
        &serde_json::from_slice(&push_payload(REPO, REPO_ID, "refs/heads/main", &first, &head)).unwrap(),
    )
    .await;
    let mut issue = fixture_for("payloads/issues/opened.payload.json", REPO, REPO_ID);
    issue["issue"]["title"] = HOSTILE.into();
    issue["issue"]["body"] = format!("{HOSTILE} <script>alert(2)</script>").into();
    let hostile = deliver(app, "issues", &issue).await;
    let pull = fixture_for("payloads/pull_request/opened.payload.json", REPO, REPO_ID);
    let pull_id = deliver(app, "pull_request", &pull).await;
    let mut review = fixture_for("payloads/pull_request_review/submitted.payload.json", REPO, REPO_ID);
    review["review"]["state"] = "approved".into();
    review["review"]["body"] = format!("Looks good {HOSTILE}").into();
    let review_id = deliver(app, "pull_request_review", &review).await;
    let release = fixture_for("payloads/release/published.payload.json", REPO, REPO_ID);
    let release_id = deliver(app, "release", &release).await;
    for id in [&push, &hostile, &pull_id, &review_id, &release_id] {
        app.wait_for_status(id, DeliveryStatus::Done).await;
    }

    // Ignored: a repository nobody tracks.
    let ignored = new_id();
    let mut d = Delivery::new("push", push_body("octo/untracked", 99));
    d.id = ignored.clone();
    assert_eq!(app.post(d).await.0, 202);
    app.wait_for_status(&ignored, DeliveryStatus::Ignored).await;

    // Dead: an issue that the handler refuses the first time; replayed, it is stored.
    let mut later = fixture_for("payloads/issues/opened.payload.json", REPO, REPO_ID);
    later["issue"]["number"] = 8001.into();
    later["issue"]["id"] = 980_001.into();
    later["issue"]["title"] = "Refused the first time".into();
    let d = Delivery::new("issues", serde_json::to_vec(&later).unwrap());
    let dead = d.id.clone();
    handler.fail_once.lock().unwrap().push(dead.clone());
    assert_eq!(app.post(d).await.0, 202);
    app.wait_for_status(&dead, DeliveryStatus::Dead).await;

    // Retrying: a push to a repository whose remote has gone; queued: the push after it,
    // held back behind it in the same ordering domain.
    let broken = GitRemote::existing(app.dir.path(), BROKEN);
    std::fs::remove_dir_all(&broken.bare).unwrap();
    let zero = "0000000000000000000000000000000000000000";
    let body: Value = serde_json::from_slice(&push_payload(BROKEN, 77, "refs/heads/main", zero, &head)).unwrap();
    let retrying = deliver(app, "push", &body).await;
    app.wait_for_status(&retrying, DeliveryStatus::Retrying).await;
    // It stays queued: its domain waits for the retry a minute from now.
    let queued = deliver(app, "push", &body_with_after(&body, &first)).await;

    let repo_id = app.registry.find(RepoRef::Name(REPO.into())).await.unwrap().unwrap().id;
    Seeded { push, hostile, ignored, dead, retrying, queued, repo_id, head }
}

fn body_with_after(body: &Value, after: &str) -> Value {
    let mut body = body.clone();
    body["after"] = after.into();
    body
}

/// The delivery statuses the deliveries page shows, row by row.
const ROW_STATUSES: &str =
    "return [...document.querySelectorAll('#deliveries-list tr[data-status]')].map(r => r.dataset.status).join(',')";

// ---- The tests ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_every_page_filters_replays_and_escapes_hostile_payloads() {
    let (app, handler) = spawn_dashboard_app("").await;
    let seeded = seed(&app, &handler).await;
    let browser = Browser::start("dashboard").await;
    let base = format!("http://{}", app.admin);

    // ---- Overview: health, role, queue, instances, and charts drawn as SVG.
    browser.goto(&format!("{base}/#/")).await;
    browser.wait("the overview's cards", "return document.querySelector('#overview-cards .card')").await;
    let cards = browser.js("return document.querySelector('#overview-cards').innerText").await;
    let cards = cards.as_str().unwrap();
    assert!(cards.contains("ok") && cards.contains("all") && cards.contains("QUEUE"), "{cards}");
    assert!(cards.contains("of 1,000,000"), "the queue's cap: {cards}");
    browser
        .wait(
            "bars in both count charts",
            "return document.querySelectorAll('#chart-received svg rect.bar').length > 0 \
             && document.querySelectorAll('#chart-processed svg rect.bar').length > 0",
        )
        .await;
    browser
        .wait(
            "the latency charts' lines or points",
            "return ['#chart-ack', '#chart-queryable'].every(c => document.querySelectorAll(`${c} svg path.series-line, ${c} svg circle.dot`).length > 0)",
        )
        .await;
    // Stacked by outcome: the received chart has queued and ignored; processing has done and dead.
    let series = browser
        .js("return ['#chart-received', '#chart-processed'].map(c => [...new Set([...document.querySelectorAll(`${c} rect.bar`)].map(r => r.dataset.series))].sort().join(' '))")
        .await;
    assert!(
        series[0].as_str().unwrap().contains("ignored") && series[0].as_str().unwrap().contains("queued"),
        "{series}"
    );
    assert!(series[1].as_str().unwrap().contains("dead") && series[1].as_str().unwrap().contains("done"), "{series}");
    assert_eq!(
        browser.js("return document.querySelectorAll('#chart-received rect.hit').length").await,
        60,
        "an hour of minutes"
    );
    let instances = browser.js("return document.querySelector('#instances').innerText").await;
    assert!(instances.as_str().unwrap().contains("(this one)"), "{instances}");
    browser.screenshot("overview", 1280, false).await;
    browser.click("button[data-range='day']").await;
    browser.wait("a day of hours", "return document.querySelectorAll('#chart-received rect.hit').length === 24").await;
    browser.screenshot("overview-day", 1280, false).await;
    browser.click("button[data-range='hour']").await;
    browser.wait("an hour again", "return document.querySelectorAll('#chart-received rect.hit').length === 60").await;

    // At a phone's width the charts are drawn again for it, one a row, nothing wider
    // than the screen.
    browser
        .cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": true }),
        )
        .await;
    browser
        .wait(
            "charts drawn for 390 px",
            "return [...document.querySelectorAll('#charts svg')].every(s => Number(s.getAttribute('width')) <= 390)",
        )
        .await;
    assert_eq!(browser.js("return document.documentElement.scrollWidth <= 390").await, true, "no sideways scrolling");
    browser.screenshot("overview-phone", 390, true).await;
    browser
        .cdp("Emulation.setEmulatedMedia", json!({ "features": [{ "name": "prefers-color-scheme", "value": "dark" }] }))
        .await;
    browser
        .wait("the dark scheme", "return getComputedStyle(document.body).backgroundColor === 'rgb(15, 20, 25)'")
        .await;
    browser.screenshot("overview-dark", 1280, false).await;
    browser.cdp("Emulation.setEmulatedMedia", json!({ "features": [] })).await;

    // ---- Repositories: every field, and actions that ask first and say how they went.
    browser.goto(&format!("{base}/#/repositories")).await;
    let card = "section[data-repository='octo/hello']";
    browser.wait("the repository's card", &format!("return document.querySelector(\"{card} dl\")")).await;
    let text = browser.js(&format!("return document.querySelector(\"{card}\").innerText")).await;
    for field in [
        "Hook",
        "Last delivery",
        "GitHub's last response",
        "Failures",
        "Queue depth",
        "Polling watermark",
        "Mirror size",
        "Last sync",
        "Branches",
    ] {
        assert!(text.as_str().unwrap().contains(field), "{field} in {text}");
    }
    browser.click(&format!("{card} button[data-action='sync']")).await;
    browser.confirm("octo/hello").await;
    browser
        .wait(
            "the sync's result",
            "return [...document.querySelectorAll('.toast')].some(t => /synced, \\d+ changes/.test(t.textContent))",
        )
        .await;
    // Without a hook there is nothing to ping or catch up: those buttons are off and say why.
    let off = browser
        .js(&format!("return [...document.querySelectorAll(\"{card} button[data-action='ping'], {card} button[data-action='catch-up']\")].map(b => b.disabled && b.title)"))
        .await;
    assert!(off.as_array().unwrap().iter().all(|t| t.as_str().is_some_and(|t| t.contains("webhook enable"))), "{off}");
    // An action that fails says why: octo/broken's remote is gone.
    let broken = "section[data-repository='octo/broken']";
    browser.click(&format!("{broken} button[data-action='sync']")).await;
    browser.confirm("octo/broken").await;
    browser.wait("the failed sync's reason", "return [...document.querySelectorAll('.toast.error')].some(t => t.textContent.startsWith('Sync now — sync failed'))").await;
    browser.screenshot("repositories", 1280, false).await;

    // ---- Deliveries: every status listed; filtered by status; a live arrival.
    browser.goto(&format!("{base}/#/deliveries")).await;
    let statuses = browser.wait("every status in the list", &format!("const s = ({}); return ['done','ignored','dead','retrying','queued'].every(x => s.split(',').includes(x)) && s", ROW_STATUSES.trim_start_matches("return "))).await;
    println!("statuses listed: {statuses}");
    for (id, status) in [
        (&seeded.push, "done"),
        (&seeded.ignored, "ignored"),
        (&seeded.dead, "dead"),
        (&seeded.retrying, "retrying"),
        (&seeded.queued, "queued"),
    ] {
        let shown =
            browser.js(&format!("return document.querySelector('tr[data-delivery=\"{id}\"]')?.dataset.status")).await;
        assert_eq!(shown, status, "{id}");
    }
    let started = Instant::now();
    let arriving = deliver(&app, "push", &serde_json::from_slice(&push_body(BROKEN, 77)).unwrap()).await;
    browser
        .wait_up_to(
            Duration::from_secs(2),
            "a new delivery to appear within 2 s",
            &format!("return document.querySelector('tr[data-delivery=\"{arriving}\"]')"),
        )
        .await;
    println!("a new delivery showed after {:?}", started.elapsed());
    let status = browser.client.find(Locator::Css("#filter-status")).await.unwrap();
    status.select_by_value("dead").await.unwrap();
    browser
        .wait(
            "only the dead one",
            &format!("const s = ({}); return s === 'dead'", ROW_STATUSES.trim_start_matches("return ")),
        )
        .await;
    assert!(
        browser.client.current_url().await.unwrap().as_str().ends_with("#/deliveries?status=dead"),
        "the address keeps the filter"
    );
    assert_eq!(
        browser.js(&format!("return document.querySelector('tr[data-delivery=\"{}\"]') !== null", seeded.dead)).await,
        true
    );
    browser.screenshot("deliveries-dead", 1280, false).await;
    // Filters combine: the repository and the event narrow it too; an id prefix finds one.
    status.select_by_value("").await.unwrap();
    let repository = browser.client.find(Locator::Css("#filter-repository")).await.unwrap();
    browser
        .wait(
            "the repository filter's choices",
            "return document.querySelector('#filter-repository option[value=\"octo/broken\"]')",
        )
        .await;
    repository.select_by_value(BROKEN).await.unwrap();
    browser.wait("octo/broken's deliveries only", "return [...document.querySelectorAll('#deliveries-list tr[data-delivery]')].every(r => r.children[4].textContent === 'octo/broken') && document.querySelectorAll('#deliveries-list tr[data-delivery]').length === 3").await;
    repository.select_by_value("").await.unwrap();
    let search = browser.client.find(Locator::Css("#filter-q")).await.unwrap();
    search.send_keys(&seeded.hostile[..13]).await.unwrap();
    browser.wait("the delivery found by its id's beginning", &format!("const rows = document.querySelectorAll('#deliveries-list tr[data-delivery]'); return rows.length === 1 && rows[0].dataset.delivery === '{}'", seeded.hostile)).await;
    browser.screenshot("deliveries-search", 1280, false).await;

    // ---- The dead delivery's page: its error and attempts; replay, confirm, watch it change.
    browser.goto(&format!("{base}/#/deliveries?status=dead")).await;
    browser
        .wait("the dead row", &format!("return document.querySelector('tr[data-delivery=\"{}\"] a')", seeded.dead))
        .await;
    browser.click(&format!("tr[data-delivery=\"{}\"] a", seeded.dead)).await;
    browser
        .wait("the dead delivery's page", "return document.querySelector('#delivery-status')?.textContent === 'dead'")
        .await;
    let page = browser.js("return document.querySelector('main').innerText").await;
    let page = page.as_str().unwrap();
    assert!(page.contains("refused once, as a test asked"), "its error: {page}");
    assert!(page.contains("Attempts (1)") && page.contains("x-github-event"), "attempts and headers: {page}");
    browser.screenshot("delivery-dead", 1280, false).await;
    browser.click("#replay").await;
    browser.confirm(&seeded.dead).await;
    browser
        .wait(
            "the replayed delivery to show done",
            "return document.querySelector('#delivery-status')?.textContent === 'done'",
        )
        .await;
    app.wait_for_status(&seeded.dead, DeliveryStatus::Done).await;
    browser
        .wait(
            "what the replay changed",
            "return document.querySelector('#delivery-changes').innerText.includes('issue#8001')",
        )
        .await;
    browser.screenshot("delivery-replayed", 1280, false).await;

    // ---- The hostile payload: shown as text, nothing of it run or rendered.
    browser.goto(&format!("{base}/#/deliveries/{}", seeded.hostile)).await;
    browser.wait("the payload tree", "return document.querySelector('#payload-tree details')").await;
    // Drawn at once with the tree: an element made from the payload would be there now.
    assert_eq!(
        browser.js("return document.querySelectorAll('img, script:not([src])').length").await,
        0,
        "no element came from the payload"
    );
    let shown = browser
        .wait("the hostile title as text", &format!("return [...document.querySelectorAll('#payload-tree .str')].find(s => s.textContent === {})?.textContent", json!(json!(HOSTILE).to_string())))
        .await;
    assert_eq!(shown, json!(HOSTILE).to_string());
    let xpath = format!("//span[@class='str' and text()='{}']", json!(HOSTILE));
    let element = browser.client.find(Locator::XPath(&xpath)).await.unwrap();
    assert!(element.is_displayed().await.unwrap(), "the hostile string is visible");
    assert!(
        browser
            .js("return document.querySelector('#payload-size').textContent")
            .await
            .as_str()
            .unwrap()
            .contains("KiB"),
        "the payload's size"
    );
    browser.screenshot("delivery-hostile", 1280, false).await;
    browser.click("#delivery-payload button:nth-of-type(2)").await;
    assert_eq!(
        browser.js("return [...document.querySelectorAll('#payload-tree details')].every(d => !d.open)").await,
        true,
        "folded"
    );
    browser.click("#delivery-payload button:nth-of-type(1)").await;
    assert_eq!(
        browser.js("return [...document.querySelectorAll('#payload-tree details')].every(d => d.open)").await,
        true,
        "unfolded"
    );
    browser.assert_no_alert().await;

    // ---- The local copy: commits with their paths, the issue with the hostile title,
    // pull requests, releases, branches; each linked to GitHub.
    let copy = format!("{base}/#/copy/{}", seeded.repo_id);
    browser.goto(&format!("{copy}/commits")).await;
    let commit = format!("tr[data-sha=\"{}\"]", seeded.head);
    browser.wait("the pushed commit", &format!("return document.querySelector('{commit}')")).await;
    let row = browser.js(&format!("return document.querySelector('{commit}').innerText")).await;
    assert!(row.as_str().unwrap().contains("Add the library") && row.as_str().unwrap().contains("src/lib.rs"), "{row}");
    // GitHub's web address, as the daemon derives it from its API URL (a closed local port
    // in tests).
    let overview: Value = app.client.get(format!("{base}/api/overview")).send().await.unwrap().json().await.unwrap();
    let web = overview["github_web_url"].as_str().unwrap().to_owned();
    let link = browser.js(&format!("return document.querySelector('{commit} a').href")).await;
    assert_eq!(link, format!("{web}/octo/hello/commit/{}", seeded.head));
    browser.screenshot("copy-commits", 1280, false).await;
    browser.goto(&format!("{copy}/issues")).await;
    browser.wait("the issues", "return document.querySelector('tr[data-issue]')").await;
    let titles = browser.js("return [...document.querySelectorAll('tr[data-issue] a')].map(a => a.textContent)").await;
    assert!(titles.as_array().unwrap().iter().any(|t| t.as_str().unwrap().ends_with(HOSTILE)), "{titles}");
    assert_eq!(browser.js("return document.querySelectorAll('img').length").await, 0);
    browser.assert_no_alert().await;
    browser.screenshot("copy-issues", 1280, false).await;
    browser.goto(&format!("{copy}/pulls")).await;
    browser
        .wait(
            "the pull request",
            "return document.querySelector('tr[data-pull] a')?.href.includes('/octo/hello/pull/')",
        )
        .await;
    // With its review, whose body (hostile too) is text.
    let review = browser
        .wait(
            "the pull request's review",
            "return document.querySelector('tr[data-pull=\"2\"] li[data-review]')?.innerText",
        )
        .await;
    let review = review.as_str().unwrap();
    assert!(review.contains("approved") && review.contains(&format!("Looks good {HOSTILE}")), "{review}");
    assert_eq!(browser.js("return document.querySelectorAll('img').length").await, 0);
    browser.screenshot("copy-pulls", 1280, false).await;
    browser.goto(&format!("{copy}/releases")).await;
    browser
        .wait(
            "the release",
            "return document.querySelector('#copy-content a')?.href.includes('/octo/hello/releases/tag/')",
        )
        .await;
    browser.goto(&format!("{copy}/branches")).await;
    let branch = browser.wait("the branch", "return document.querySelector('#copy-content tbody a')?.href").await;
    assert_eq!(branch, format!("{web}/octo/hello/tree/main"));
    browser.screenshot("copy-branches", 1280, false).await;

    // Times are in the viewer's zone (here UTC+05:30), the UTC time on hover.
    let (shown, utc) = {
        let pair =
            browser.js("const t = document.querySelector('#copy-content time'); return [t.textContent, t.title]").await;
        (pair[0].as_str().unwrap().to_owned(), pair[1].as_str().unwrap().to_owned())
    };
    assert_eq!(local_minutes(&shown), (utc_minutes(&utc) + 330) % 1440, "{shown} is {utc} in Asia/Kolkata");

    browser.close().await;
    app.stop().await;
}

/// Minutes after midnight of a time shown as `…09:02:00 PM` or `…21:02:00`.
fn local_minutes(text: &str) -> u32 {
    let clock =
        text.split_whitespace().find(|w| w.matches(':').count() == 2).unwrap_or_else(|| panic!("no time in {text:?}"));
    let parts: Vec<u32> = clock.trim_end_matches(',').split(':').map(|p| p.parse().unwrap()).collect();
    let mut hours = parts[0] % 12;
    if text.contains("PM") {
        hours += 12;
    } else if !text.contains("AM") {
        hours = parts[0];
    }
    hours * 60 + parts[1]
}

/// Minutes after midnight of `2026-12-01 20:31:05 UTC`.
fn utc_minutes(title: &str) -> u32 {
    let clock = title.split_whitespace().nth(1).unwrap_or_else(|| panic!("no time in {title:?}"));
    let parts: Vec<u32> = clock.split(':').map(|p| p.parse().unwrap()).collect();
    parts[0] * 60 + parts[1]
}

/// With an admin token configured, the page asks for it once (a wrong one is refused and
/// asked for again), sends it with every request, and never shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_asks_for_the_admin_token_once_and_never_shows_it() {
    let token = "dashboard-admin-token-5b0c91";
    let (app, _handler) = spawn_dashboard_app(&format!("[serve]\nadmin_token = \"{token}\"\n")).await;
    let browser = Browser::start("dashboard-token").await;
    let base = format!("http://{}", app.admin);
    browser.goto(&format!("{base}/#/deliveries")).await;
    browser.wait("the token form", "return document.querySelector('#token-dialog')?.open").await;
    browser.screenshot("token-form", 1280, false).await;
    let input = browser.client.find(Locator::Css("#token-input")).await.unwrap();
    input.send_keys("not-the-token-at-all").await.unwrap();
    browser.click("#token-submit").await;
    browser.wait("the refusal", "return document.querySelector('#token-dialog')?.innerText.includes('refused')").await;
    let input = browser.client.find(Locator::Css("#token-input")).await.unwrap();
    input.send_keys(token).await.unwrap();
    browser.click("#token-submit").await;
    browser.wait("the deliveries page, with the token", "return !document.querySelector('#token-dialog') && document.querySelector('#delivery-filters') && document.querySelector('#live').textContent.startsWith('live')").await;
    // A state-changing request goes through too (token and CSRF header both sent).
    let d = Delivery::new("push", push_body("octo/untracked", 99));
    let id = d.id.clone();
    assert_eq!(app.post(d).await.0, 202);
    app.wait_for_status(&id, DeliveryStatus::Ignored).await;
    browser.goto(&format!("{base}/#/deliveries/{id}")).await;
    browser.wait("the delivery's page", "return document.querySelector('#replay')").await;
    browser.click("#replay").await;
    browser.confirm(&id).await;
    browser
        .wait(
            "the replay's result",
            "return [...document.querySelectorAll('.toast')].some(t => t.textContent.includes('queued again'))",
        )
        .await;
    // Asked once: a reload of the tab keeps it (sessionStorage), and it is nowhere on the page.
    browser.client.refresh().await.unwrap();
    browser
        .wait(
            "the page after a reload, without asking",
            "return document.querySelector('#delivery-summary dl') && !document.querySelector('#token-dialog')",
        )
        .await;
    let html = browser.js("return document.documentElement.outerHTML").await;
    assert!(!html.as_str().unwrap().contains(token), "the token is not on the page");
    browser.close().await;
    app.stop().await;
}
