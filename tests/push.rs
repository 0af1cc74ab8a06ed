//! `--push` against a stand-in for Grafana Pyroscope's `/ingest` API: a
//! loopback HTTP server written here that enforces the published contract
//! (POST /ingest; `name=APP{k=v,...}` with label keys in [A-Za-z0-9_.];
//! `from` ≤ `until`, Unix seconds, not older than an hour; `format=pprof`;
//! `sampleRate`; `spyName`; a pprof body of at most 4 MiB uncompressed and
//! 16,000 samples) and records what it accepted. Other modes answer 400,
//! 429 (then accept) or 500, or nothing listens at all.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prost::Message;
use support::*;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Accept,
    Reject400,
    TooManyThenAccept(u32),
    Fail500,
}

#[derive(Debug)]
struct Upload {
    params: BTreeMap<String, String>,
    profile: export::pprof::proto::Profile,
}

#[derive(Default)]
struct Seen {
    uploads: Vec<Upload>,
    requests: u32,
    refusals: Vec<String>,
}

struct Server {
    url: String,
    seen: Arc<Mutex<Seen>>,
}

fn serve(mode: Mode) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let shared = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            handle(stream, mode, &shared);
        }
    });
    Server { url, seen }
}

fn respond(mut stream: TcpStream, code: u16, text: &str) {
    let _ = write!(
        stream,
        "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}

fn handle(stream: TcpStream, mode: Mode, seen: &Mutex<Seen>) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() || line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let request_number = {
        let mut seen = seen.lock().unwrap();
        seen.requests += 1;
        seen.requests
    };
    match mode {
        Mode::Reject400 => return respond(stream, 400, "bad request"),
        Mode::Fail500 => return respond(stream, 500, "internal error"),
        Mode::TooManyThenAccept(n) if request_number <= n => {
            return respond(stream, 429, "slow down")
        }
        _ => {}
    }
    match check_ingest(&request_line, &body) {
        Ok(upload) => {
            seen.lock().unwrap().uploads.push(upload);
            respond(stream, 200, "");
        }
        Err(why) => {
            seen.lock().unwrap().refusals.push(why.clone());
            respond(stream, 400, &why);
        }
    }
}

fn decode_query(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Pyroscope's documented `/ingest` contract.
fn check_ingest(request_line: &str, body: &[u8]) -> Result<Upload, String> {
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "POST" {
        return Err(format!("method {method}"));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != "/ingest" {
        return Err(format!("path {path}"));
    }
    let params: BTreeMap<String, String> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode_query(k), decode_query(v)))
        .collect();
    for required in ["name", "from", "until"] {
        if !params.contains_key(required) {
            return Err(format!("missing {required}"));
        }
    }
    if params.get("format").map(String::as_str) != Some("pprof") {
        return Err("format is not pprof".into());
    }
    let name = &params["name"];
    let (app, labels) = name
        .strip_suffix('}')
        .and_then(|n| n.split_once('{'))
        .ok_or(format!("name {name} lacks {{labels}}"))?;
    if app.is_empty() {
        return Err("empty application name".into());
    }
    for label in labels.split(',') {
        let (key, value) = label.split_once('=').ok_or(format!("label {label}"))?;
        if key.is_empty()
            || value.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.".contains(&b))
        {
            return Err(format!("bad label {label}"));
        }
    }
    let from: i64 = params["from"].parse().map_err(|_| "from is not a number")?;
    let until: i64 = params["until"]
        .parse()
        .map_err(|_| "until is not a number")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if from > until || until > now + 60 || until < now - 3600 {
        return Err(format!("bad time range {from}..{until} (now {now})"));
    }
    if let Some(rate) = params.get("sampleRate") {
        rate.parse::<u64>()
            .map_err(|_| "sampleRate is not a number")?;
    }
    let mut raw = Vec::new();
    flate2::read::MultiGzDecoder::new(body)
        .read_to_end(&mut raw)
        .map_err(|e| format!("body is not gzip: {e}"))?;
    if raw.len() > 4 << 20 {
        return Err(format!("profile of {} bytes > 4 MiB", raw.len()));
    }
    let profile = export::pprof::proto::Profile::decode(&raw[..])
        .map_err(|e| format!("body is not pprof: {e}"))?;
    if profile.sample.len() > 16_000 {
        return Err(format!("{} samples > 16000", profile.sample.len()));
    }
    Ok(Upload { params, profile })
}

/// A copy of a fixture's perf.data with a fresh modification time (the
/// push derives the recording's start from it).
fn fresh_copy(name: &str, test: &str) -> PathBuf {
    let dir = root().join("target/push-test").join(test);
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("perf.data");
    std::fs::copy(fixture(name).join("perf.data"), &copy).unwrap();
    copy
}

fn push_args(data: &Path, fixture_name: &str, url: &str, extra: &[&str]) -> Vec<String> {
    let dir = fixture(fixture_name);
    let mut args: Vec<String> = vec![
        "-q".into(),
        "-i".into(),
        data.display().to_string(),
        "--symfs".into(),
        dir.join("symfs").display().to_string(),
        "--kallsyms".into(),
        dir.join("kallsyms").display().to_string(),
        "--push".into(),
        url.into(),
        "--app".into(),
        "kafka.broker".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn run_push(args: &[String]) -> std::process::Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&args)
}

/// Samples per comm in the uploads, to compare with the folded output.
fn samples_by_comm(uploads: &[Upload]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for upload in uploads {
        let p = &upload.profile;
        let comm_key = p.string_table.iter().position(|s| s == "comm").unwrap() as i64;
        for sample in &p.sample {
            let comm = sample
                .label
                .iter()
                .find(|l| l.key == comm_key)
                .map(|l| p.string_table[l.str as usize].clone())
                .unwrap();
            *out.entry(comm).or_default() += sample.value[0] as u64;
        }
    }
    out
}

#[test]
fn one_shot_push_follows_the_ingest_contract() {
    let server = serve(Mode::Accept);
    let data = fresh_copy("sendfile", "one-shot");
    let args = push_args(&data, "sendfile", &server.url, &["--label", "env=staging"]);
    let output = run_push(&args);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.stdout.starts_with(b"<?xml"),
        "the SVG is still written"
    );
    let seen = server.seen.lock().unwrap();
    assert!(seen.refusals.is_empty(), "{:?}", seen.refusals);
    assert_eq!(seen.uploads.len(), 1);
    let params = &seen.uploads[0].params;
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(
        params["name"],
        format!("kafka.broker{{env=staging,hostname={}}}", hostname.trim())
    );
    assert_eq!(params["sampleRate"], "999");
    assert_eq!(params["spyName"], "flamegraph-perf");
    // Every sample arrives, per comm as in the folded output.
    let folded = folded_of("sendfile", &[]);
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for (stack, weight) in &folded {
        *expected
            .entry(stack.split(';').next().unwrap().to_owned())
            .or_default() += weight;
    }
    assert_eq!(samples_by_comm(&seen.uploads), expected);
}

#[test]
fn large_windows_are_split_not_dropped() {
    // No fixture has 16,000 distinct stacks: build a 40,000-stack profile
    // and split it with the limits --push uses.
    let dir = root().join("target/push-test/split");
    std::fs::create_dir_all(&dir).unwrap();
    let mut stacks = folded::FoldedStacks::new();
    let mut profile = collapse::AddressProfile::default();
    profile.objects.push(collapse::CodeObject {
        name: "/bin/app".into(),
        build_id: None,
        kernel: false,
        jit: false,
    });
    let root_frame = stacks.intern_name("app", folded::Annotation::None);
    profile.threads.push(collapse::ThreadRoot {
        root: root_frame,
        pid: -1,
        tid: -1,
    });
    for i in 0..40_000u32 {
        let name = stacks.intern_name(&format!("f{i}"), folded::Annotation::None);
        profile.locations.push(collapse::CodeLocation {
            object: Some(0),
            address: 0x1000 + u64::from(i),
            names: vec![name],
            sources: Vec::new(),
        });
        let start = profile.chains.len() as u32;
        profile.chains.push(i);
        profile.samples.push(collapse::AddressSample {
            thread: 0,
            chain: (start, 1),
            samples: 1 + u64::from(i % 3),
            weight: 1 + u64::from(i % 3),
        });
    }
    let parts = export::upload_parts(
        &profile,
        &stacks,
        &export::PprofOptions::default(),
        export::UploadLimits::default(),
    )
    .unwrap();
    assert!(parts.len() >= 3, "{} parts", parts.len());
    let mut total = 0;
    for part in &parts {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&part[..])
            .read_to_end(&mut raw)
            .unwrap();
        assert!(raw.len() <= 4 << 20);
        let p = export::pprof::proto::Profile::decode(&raw[..]).unwrap();
        assert!(p.sample.len() <= 16_000);
        // Each part carries only what it uses.
        assert!(p.location.len() <= 16_000);
        total += p.sample.iter().map(|s| s.value[0]).sum::<i64>();
    }
    let expected: u64 = profile.samples.iter().map(|s| s.samples).sum();
    assert_eq!(total as u64, expected);
}

#[test]
fn retries_after_429_then_succeeds() {
    let server = serve(Mode::TooManyThenAccept(2));
    let data = fresh_copy("spin", "retry");
    let output = run_push(&push_args(&data, "spin", &server.url, &[]));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen.requests, 3);
    assert_eq!(seen.uploads.len(), 1);
}

#[test]
fn failures_are_reported_without_losing_local_data_or_hanging() {
    for (mode, expect) in [
        (Some(Mode::Reject400), "400"),
        (Some(Mode::Fail500), "500"),
        (None, "gave up after"),
    ] {
        let url = match mode {
            Some(mode) => serve(mode).url,
            None => {
                // A port nothing listens on.
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let url = format!("http://{}", listener.local_addr().unwrap());
                drop(listener);
                url
            }
        };
        let test = format!("fail-{expect}").replace(' ', "-");
        let data = fresh_copy("spin", &test);
        let pprof = data.with_extension("pb.gz");
        let args = push_args(&data, "spin", &url, &["--pprof", pprof.to_str().unwrap()]);
        let started = Instant::now();
        let output = run_push(&args);
        let took = started.elapsed();
        assert_eq!(output.status.code(), Some(4), "{expect}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expect) && stderr.contains(&url), "{stderr}");
        assert!(
            output.stdout.starts_with(b"<?xml"),
            "the SVG is still written"
        );
        assert!(
            pprof.metadata().unwrap().len() > 100,
            "the local pprof is kept"
        );
        assert!(took < Duration::from_secs(30), "took {took:?}");
    }
}

#[test]
fn old_recordings_need_override_timestamp() {
    let server = serve(Mode::Accept);
    let data = fresh_copy("spin", "old");
    let status = std::process::Command::new("touch")
        .args(["-d", "3 hours ago"])
        .arg(&data)
        .status()
        .unwrap();
    assert!(status.success());
    let output = run_push(&push_args(&data, "spin", &server.url, &[]));
    assert_eq!(output.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--override-timestamp"));
    assert_eq!(server.seen.lock().unwrap().requests, 0);
    let output = run_push(&push_args(
        &data,
        "spin",
        &server.url,
        &["--override-timestamp"],
    ));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(server.seen.lock().unwrap().uploads.len(), 1);
}

#[test]
fn bad_labels_and_names_are_refused_before_reading() {
    let server = serve(Mode::Accept);
    let data = fresh_copy("spin", "labels");
    for (label, app) in [("bad-key=x", "app"), ("novalue", "app"), ("env=ok", "a b")] {
        let mut args = push_args(&data, "spin", &server.url, &["--label", label]);
        let at = args.iter().position(|a| a == "kafka.broker").unwrap();
        args[at] = app.into();
        let output = run_push(&args);
        assert_eq!(output.status.code(), Some(2), "{label} {app}");
        assert!(output.stdout.is_empty(), "nothing is read or written");
    }
    assert_eq!(server.seen.lock().unwrap().requests, 0);
}

/// Whether live recording works here; under CI=true it must.
fn can_record() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().nth(1))
        == Some("0");
    let paranoid: i32 = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(2);
    if root || paranoid <= 0 {
        return true;
    }
    assert!(!ci_requires_live(), "CI=true requires recording to work");
    eprintln!("skipped: needs root or kernel.perf_event_paranoid <= 0");
    false
}

fn folded_total(text: &[u8]) -> u64 {
    String::from_utf8_lossy(text)
        .lines()
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(_, n)| n.parse::<u64>().unwrap())
        .sum()
}

#[test]
fn continuous_push_uploads_one_window_per_interval() {
    if !can_record() {
        return;
    }
    let server = serve(Mode::Accept);
    let args: Vec<String> = [
        "-a",
        "-g",
        "-q",
        "--folded",
        "--push",
        &server.url,
        "--app",
        "fleet.test",
        "--label",
        "cluster=kafka",
        "--push-interval",
        "1s",
        "--",
        "sleep",
        "3.5",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let output = run_push(&args);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen = server.seen.lock().unwrap();
    assert!(seen.refusals.is_empty(), "{:?}", seen.refusals);
    assert!(seen.uploads.len() >= 3, "{} windows", seen.uploads.len());
    let mut previous_until = 0i64;
    for upload in &seen.uploads {
        let name = &upload.params["name"];
        assert!(
            name.starts_with("fleet.test{") && name.contains("cluster=kafka"),
            "{name}"
        );
        assert!(name.contains("hostname="), "{name}");
        let from: i64 = upload.params["from"].parse().unwrap();
        let until: i64 = upload.params["until"].parse().unwrap();
        assert!(from < until);
        // Windows follow each other (whole seconds: they may share one).
        assert!(from + 1 >= previous_until, "{from} after {previous_until}");
        previous_until = until;
    }
    // Nothing is lost between windows: the uploads add up to the graph.
    let uploaded: u64 = samples_by_comm(&seen.uploads).values().sum();
    assert_eq!(uploaded, folded_total(&output.stdout));
}

#[test]
fn continuous_push_keeps_sampling_when_uploads_fail() {
    if !can_record() {
        return;
    }
    let server = serve(Mode::Fail500);
    let args: Vec<String> = [
        "-a",
        "-g",
        "--folded",
        "--keep-idle",
        "--push",
        &server.url,
        "--app",
        "fleet.test",
        "--push-interval",
        "1s",
        "--",
        "sleep",
        "1.5",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let started = Instant::now();
    let output = run_push(&args);
    assert_eq!(output.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.matches("not uploaded").count() >= 2, "{stderr}");
    assert!(
        folded_total(&output.stdout) > 100,
        "the local graph has everything"
    );
    assert!(
        server.seen.lock().unwrap().requests >= 10,
        "each window retried"
    );
    assert!(started.elapsed() < Duration::from_secs(40));
}
