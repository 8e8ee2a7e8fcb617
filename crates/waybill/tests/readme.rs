//! The README's one-minute walkthrough, run as written: `waybill dev` and
//! `waybill listen` as separate processes (what `make dev` and `make listen`
//! run), then every `curl` command of the walkthrough sent as the README
//! spells it (method, URL, headers, body), only with the two ports moved to
//! free ones. The receiver must print the event; the greeting must say what
//! the README says it does; and `listen --secret` must check the signature.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const README: &str = include_str!("../../../README.md");
const README_API: &str = "http://127.0.0.1:8080";
const README_RECEIVER: &str = "http://127.0.0.1:9000";

/// A process whose stdout lines arrive on a channel; killed when dropped.
struct Process {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Process {
    fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_waybill"))
            .args(args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("waybill starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                drop(tx.send(line));
            }
        });
        Self { child, lines }
    }

    /// Lines up to and including the first that satisfies `done`.
    fn until(&self, done: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let last = done(&line);
                    seen.push(line);
                    if last {
                        return seen;
                    }
                }
                Err(_) => panic!("not printed within 60 s; printed so far: {seen:#?}"),
            }
        }
    }

    /// The JSON body `waybill listen` prints after a request line.
    fn next_webhook(&self) -> (String, Value) {
        let lines = self.until(|l| l.starts_with("POST ") || l.starts_with("PUT "));
        let request = lines.last().unwrap().clone();
        let body = self.until(str::is_empty);
        let json = serde_json::from_str(&body.concat()).expect("listen prints the JSON body");
        (request, json)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        drop(self.child.kill());
        drop(self.child.wait());
    }
}

/// The walkthrough section of the README.
fn walkthrough() -> &'static str {
    let start = README
        .find("## One-minute walkthrough")
        .expect("the README has a walkthrough");
    let end = README[start + 3..]
        .find("\n## ")
        .map_or(README.len(), |i| start + 3 + i);
    &README[start..end]
}

/// The fenced blocks of `text` whose info string is `lang`.
fn blocks<'a>(text: &'a str, lang: &str) -> Vec<&'a str> {
    let fence = format!("```{lang}\n");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(&fence) {
        let body = &rest[i + fence.len()..];
        let end = body.find("```").expect("a closed code fence");
        out.push(&body[..end]);
        rest = &body[end + 3..];
    }
    out
}

/// Shell words of a command: `\` + newline continues the line, single and
/// double quotes group (the README uses nothing more).
fn shell_words(command: &str) -> Vec<String> {
    let joined = command.replace("\\\n", " ");
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in joined.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_default().push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_default();
            }
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_default().push(c),
        }
    }
    assert!(quote.is_none(), "unbalanced quotes in {command}");
    words.extend(word);
    words
}

/// One `curl` command of the README.
#[derive(Debug)]
struct Curl {
    method: String,
    url: String,
    headers: BTreeMap<String, String>,
    body: Option<String>,
}

fn parse_curl(command: &str) -> Curl {
    let words = shell_words(command);
    assert_eq!(words[0], "curl", "{command}");
    let mut curl = Curl {
        method: "GET".into(),
        url: String::new(),
        headers: BTreeMap::new(),
        body: None,
    };
    let mut args = words[1..].iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-s" => {}
            "-X" => curl.method = args.next().unwrap().clone(),
            "-H" => {
                let (name, value) = args.next().unwrap().split_once(':').unwrap();
                curl.headers
                    .insert(name.trim().to_owned(), value.trim().to_owned());
            }
            "-d" => curl.body = Some(args.next().unwrap().clone()),
            url if url.starts_with("http") => curl.url = url.to_owned(),
            other => panic!("the README's curl uses `{other}`, which this test does not read"),
        }
    }
    curl
}

async fn send(http: &reqwest::Client, curl: &Curl) -> (u16, Value) {
    let mut request = http.request(curl.method.parse().unwrap(), &curl.url);
    for (name, value) in &curl.headers {
        request = request.header(name, value);
    }
    if let Some(body) = &curl.body {
        request = request.body(body.clone());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_works_as_written() {
    waybill_testkit::wait::watchdog(Duration::from_secs(180));
    let text = walkthrough();
    let (api_port, receiver_port) = (
        waybill_testkit::cluster::free_port(),
        waybill_testkit::cluster::free_port(),
    );
    let api = format!("http://127.0.0.1:{api_port}");
    let receiver = format!("http://127.0.0.1:{receiver_port}");
    let moved = |s: &str| {
        s.replace(README_API, &api)
            .replace(README_RECEIVER, &receiver)
    };

    // `make dev` greets with what the README shows.
    assert!(README.contains("make dev"));
    let dev = Process::spawn(&["dev", "--port", &api_port.to_string()]);
    let greeting = dev.until(|l| l.starts_with("operator token: "));
    let shown = blocks(text, "text")[0];
    for line in shown.lines().filter(|l| l.starts_with("api")) {
        assert!(
            greeting.contains(&moved(line)),
            "the README shows `{line}`; waybill dev printed {greeting:#?}"
        );
    }
    let portal = format!("portal: {api}/portal#token=wbps_");
    assert!(
        shown.contains("portal: http://127.0.0.1:8080/portal#token=wbps_")
            && greeting.iter().any(|l| l.starts_with(&portal)),
        "the greeting has a portal session line: {greeting:#?}"
    );
    assert!(text.contains("make listen     # = waybill listen --port 9000"));
    let listen = Process::spawn(&["listen", "--port", &receiver_port.to_string()]);
    listen.until(|l| l.starts_with("listening on "));

    let commands: Vec<Curl> = blocks(text, "sh")
        .into_iter()
        .filter(|b| b.trim_start().starts_with("curl"))
        .map(|b| parse_curl(&moved(b)))
        .collect();
    assert_eq!(commands.len(), 2, "subscribe, then post an event");
    let http = reqwest::Client::new();

    let (status, subscription) = send(&http, &commands[0]).await;
    assert_eq!(status, 201, "{subscription}");
    let secret = subscription["signing_secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));

    let (status, accepted) = send(&http, &commands[1]).await;
    assert_eq!(status, 202, "{accepted}");
    for field in ["id", "topic", "partition", "offset"] {
        assert!(
            !accepted[field].is_null(),
            "the answer names `{field}`: {accepted}"
        );
    }
    let (request, body) = listen.next_webhook();
    assert!(
        request.starts_with("POST /webhooks webhook-id=msg_"),
        "{request}"
    );
    let sent: Value = serde_json::from_str(commands[1].body.as_deref().unwrap()).unwrap();
    assert_eq!(body["id"], accepted["id"]);
    assert_eq!(body["event_name"], sent["event_name"]);
    assert_eq!(body["entity"], sent["entity"]);
    assert_eq!(body["data"], sent["data"]);

    // "Run the receiver as ... listen --port 9000 --secret whsec_..." and it
    // verifies each signature.
    assert!(text.contains("listen --port 9000 --secret whsec_..."));
    drop(listen);
    let listen = Process::spawn(&[
        "listen",
        "--port",
        &receiver_port.to_string(),
        "--secret",
        &secret,
    ]);
    listen.until(|l| l.starts_with("listening on "));
    let (status, _) = send(&http, &commands[1]).await;
    assert_eq!(status, 202);
    let (request, _) = listen.next_webhook();
    assert!(request.ends_with("(signature ok)"), "{request}");

    // "Read a subscription back with curl -s .../v1/subscriptions/<id> -H 'X-Api-Key: ...'".
    let read_back = text
        .lines()
        .find(|l| l.contains("/v1/subscriptions/<id>"))
        .expect("the README reads a subscription back");
    let start = read_back.find("curl").unwrap();
    let end = read_back[start..].find('`').unwrap() + start;
    let id = subscription["id"].as_str().unwrap();
    let get = parse_curl(&moved(&read_back[start..end].replace("<id>", id)));
    let (status, got) = send(&http, &get).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["id"], subscription["id"]);
    drop(dev);
}

#[test]
fn shell_words_reads_the_readme_quoting() {
    assert_eq!(
        shell_words("curl -s -X POST http://x \\\n  -H 'A: b' \\\n  -d '{\"k\": \"v w\"}'"),
        [
            "curl",
            "-s",
            "-X",
            "POST",
            "http://x",
            "-H",
            "A: b",
            "-d",
            "{\"k\": \"v w\"}"
        ]
    );
}
