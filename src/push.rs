//! `--push`: uploading a profile to Grafana Pyroscope's `/ingest` API.
//!
//! The contract (Pyroscope's HTTP API): `POST /ingest` with query
//! parameters `name=APP{label=value,...}`, `from` and `until` (Unix
//! seconds), `format=pprof`, `sampleRate` (Hz), `spyName`; the body is a
//! pprof profile. The server refuses profiles over 4 MiB uncompressed or
//! 16,000 samples, and timestamps more than an hour old: profiles are split
//! to fit, and old recordings are refused here unless the user overrides
//! the time. Every label set becomes a series, so only `hostname` and the
//! user's labels are sent (no per-thread labels).

use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Attempts per upload before giving up.
const ATTEMPTS: u32 = 5;
/// Wait before the first retry; doubled each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Pyroscope refuses samples older than this.
const MAX_AGE: Duration = Duration::from_secs(3600);

/// Where and as what to upload.
pub struct Target {
    /// Base URL of the server.
    pub url: String,
    /// `name` query parameter: `APP{hostname=H,k=v}`, labels sorted.
    pub name: String,
}

impl Target {
    /// Checks the application name and labels and builds the series name.
    pub fn new(url: &str, app: &str, labels: &[String], hostname: &str) -> Result<Target> {
        let url = url.trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!("--push {url}: expected an http:// or https:// URL");
        }
        if !is_name(app, b"_.-") {
            bail!("--app {app:?}: use letters, digits, '_', '.' and '-'");
        }
        let mut pairs: Vec<(String, String)> = vec![("hostname".into(), hostname.into())];
        for label in labels {
            let Some((key, value)) = label.split_once('=') else {
                bail!("--label {label:?}: expected KEY=VALUE");
            };
            if !is_name(key, b"_.") {
                bail!("--label {label:?}: label keys use letters, digits, '_' and '.'");
            }
            if value.is_empty() || value.contains([',', '{', '}', '=']) {
                bail!(
                    "--label {label:?}: values must be non-empty, without ',', '{{', '}}' or '='"
                );
            }
            pairs.retain(|(k, _)| k != key);
            pairs.push((key.into(), value.into()));
        }
        pairs.sort();
        let labels: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        Ok(Target {
            url: url.to_owned(),
            name: format!("{app}{{{}}}", labels.join(",")),
        })
    }
}

/// True for a non-empty `text` of ASCII letters, digits and `extra` bytes.
fn is_name(text: &str, extra: &[u8]) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

/// One upload window.
pub struct Window {
    /// Start and end, ns since the Unix epoch.
    pub start_ns: i64,
    pub end_ns: i64,
    /// Sampling rate in Hz.
    pub sample_rate: u64,
}

impl Window {
    /// The window, checked against Pyroscope's age limit; with `override_time`
    /// an old window is moved to end now.
    pub fn checked(self, override_time: bool) -> Result<Window> {
        let now = crate::exports::unix_now_ns();
        if now - self.end_ns <= MAX_AGE.as_nanos() as i64 {
            return Ok(self);
        }
        if !override_time {
            bail!(
                "the samples ended {} min ago; Pyroscope refuses data older than an hour (--override-timestamp uploads it as ending now)",
                (now - self.end_ns) / 60_000_000_000
            );
        }
        let length = self.end_ns - self.start_ns;
        Ok(Window {
            start_ns: now - length,
            end_ns: now,
            ..self
        })
    }
}

/// Uploads `parts` (gzip pprof bodies) for one window, in order; the
/// first part that is not accepted stops the upload and is the error.
pub fn upload(target: &Target, window: &Window, parts: &[Vec<u8>], quiet: bool) -> Result<()> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .build();
    let from = window.start_ns.div_euclid(1_000_000_000);
    let until = window.end_ns.div_euclid(1_000_000_000).max(from + 1);
    for (i, body) in parts.iter().enumerate() {
        send_with_retries(&agent, target, from, until, window.sample_rate, body).with_context(
            || {
                format!(
                    "--push {}: part {} of {} not accepted",
                    target.url,
                    i + 1,
                    parts.len()
                )
            },
        )?;
    }
    if !quiet {
        eprintln!(
            "flamegraph-perf: pushed {} to {} in {} upload{}",
            target.name,
            target.url,
            parts.len(),
            if parts.len() == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

fn send_with_retries(
    agent: &ureq::Agent,
    target: &Target,
    from: i64,
    until: i64,
    sample_rate: u64,
    body: &[u8],
) -> Result<()> {
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        let result = agent
            .post(&format!("{}/ingest", target.url))
            .query("name", &target.name)
            .query("from", &from.to_string())
            .query("until", &until.to_string())
            .query("format", "pprof")
            .query("sampleRate", &sample_rate.to_string())
            .query("spyName", "flamegraph-perf")
            .set("Content-Type", "application/octet-stream")
            .send_bytes(body);
        let retryable = match result {
            Ok(_) => return Ok(()),
            Err(ureq::Error::Status(code, response)) => {
                let text = response.into_string().unwrap_or_default();
                let text = text.trim().chars().take(200).collect::<String>();
                if code != 429 && code < 500 {
                    bail!("the server answered {code}: {text}");
                }
                format!("the server answered {code}: {text}")
            }
            Err(ureq::Error::Transport(error)) => error.to_string(),
        };
        if attempt >= ATTEMPTS {
            bail!("{retryable} (gave up after {ATTEMPTS} attempts)");
        }
        std::thread::sleep(backoff);
        backoff *= 2;
        attempt += 1;
    }
}
