//! The SVG and the comparison page in a real browser: headless Chromium
//! driven by playwright-core (tests/browser/drive.mjs), clicked and typed
//! into as a person would. Under CI=true these must run (.ci/run installs
//! chromium, node and playwright-core); elsewhere they skip with a reason.
//!
//! Screenshots are kept in target/browser-artifacts/.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::*;

/// node, Chromium and the driver script, or why they are missing.
fn browser() -> Result<(PathBuf, PathBuf, PathBuf), String> {
    let chromium = std::env::var_os("FLAMEGRAPH_PERF_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.is_file() {
        return Err(format!("no Chromium at {}", chromium.display()));
    }
    let node = which("node").ok_or("node is not on PATH")?;
    let dir = root().join("tests/browser");
    if !dir.join("node_modules/playwright-core").is_dir() {
        return Err("playwright-core is not installed (cd tests/browser && npm ci)".into());
    }
    Ok((node, chromium, dir.join("drive.mjs")))
}

/// The browser, or None after printing why the test is skipped (a failure
/// under CI=true).
fn browser_or_skip(test: &str) -> Option<(PathBuf, PathBuf, PathBuf)> {
    match browser() {
        Ok(found) => Some(found),
        Err(why) if ci_requires_live() => panic!("{test}: CI=true but {why}"),
        Err(why) => {
            eprintln!("skipping {test}: {why}");
            None
        }
    }
}

fn artifacts() -> PathBuf {
    let dir = root().join("target/browser-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the driver and returns its result, asserting the page logged no
/// JavaScript error.
fn drive(browser: &(PathBuf, PathBuf, PathBuf), args: &[&str]) -> Value {
    let (node, chromium, script) = browser;
    let output = Command::new(node)
        .arg(script)
        .arg(chromium)
        .args(args)
        .current_dir(script.parent().unwrap())
        .output()
        .expect("run node");
    assert!(
        output.status.success(),
        "drive.mjs {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: Value = serde_json::from_slice(&output.stdout).expect("driver prints JSON");
    assert_eq!(
        json["errors"],
        Value::Array(vec![]),
        "JavaScript errors in the page"
    );
    json["result"].clone()
}

fn render_fixture_svg(name: &str, out: &Path) {
    std::fs::write(out, stdout_of(name, &["-q"])).unwrap();
}

fn is_png(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|b| b.starts_with(b"\x89PNG\r\n\x1a\n") && b.len() > 10_000)
}

/// Share (in %) of the samples under a frame whose name matches `needle`:
/// what inferno's search reports as "Matched".
fn matched_share(folded: &Folded, needle: &str) -> f64 {
    let total = total(folded) as f64;
    let hit: u64 = folded
        .iter()
        .filter(|(stack, _)| stack.split(';').any(|f| f.contains(needle)))
        .map(|(_, w)| w)
        .sum();
    100.0 * hit as f64 / total
}

fn percent(text: &str) -> f64 {
    text.trim_start_matches("Matched: ")
        .trim_end_matches('%')
        .parse()
        .unwrap_or_else(|_| panic!("not a match text: {text:?}"))
}

#[test]
fn clicking_do_sendfile_zooms_and_search_highlights_it() {
    let Some(browser) = browser_or_skip("clicking_do_sendfile_zooms_and_search_highlights_it")
    else {
        return;
    };
    let dir = artifacts();
    let svg = dir.join("sendfile.svg");
    render_fixture_svg("sendfile", &svg);
    let shot = dir.join("sendfile-zoomed-do_sendfile.png");
    let _ = std::fs::remove_file(&shot);
    let r = drive(
        &browser,
        &[
            "svg",
            svg.to_str().unwrap(),
            "do_sendfile",
            "sendfile-cli",
            "do_sendfile",
            shot.to_str().unwrap(),
        ],
    );

    // Before: do_sendfile is part of the width, nothing hidden.
    let before = &r["before"];
    let initial_width = before["target"]["width_attr"].as_str().unwrap().to_owned();
    assert_ne!(initial_width, "100.0000%");
    assert_eq!(before["unzoom_visible"], false);
    assert_eq!(before["hidden_frames"], 0);

    // A click on do_sendfile: it spans the whole width.
    let zoomed = &r["zoomed"];
    assert_eq!(zoomed["target"]["width_attr"], "100.0000%");
    let pixel = zoomed["target"]["pixel_width"].as_f64().unwrap();
    let full = zoomed["frames_width"].as_f64().unwrap();
    assert!((pixel - full).abs() <= 2.0, "{pixel} px of {full} px");
    // Its ancestors stay (faded, full width): all, sendfile-srv, ..., the syscall.
    let ancestors: Vec<&str> = zoomed["ancestors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(ancestors.first(), Some(&"all"));
    assert_eq!(ancestors.get(1), Some(&"sendfile-srv"));
    assert!(ancestors.contains(&"__x64_sys_sendfile64"), "{ancestors:?}");
    for a in zoomed["ancestors"].as_array().unwrap() {
        assert_eq!(a["hidden"], false, "{a}");
        assert_eq!(a["parent"], true, "{a}");
    }
    // Unrelated frames disappear: the client's whole column.
    assert_eq!(r["unrelated_before"]["hidden"], false);
    assert_eq!(r["unrelated_zoomed"]["hidden"], true);
    assert!(zoomed["hidden_frames"].as_u64().unwrap() > 10);
    assert_eq!(zoomed["unzoom_visible"], true);
    assert!(is_png(&shot), "screenshot {}", shot.display());

    // "Reset Zoom" restores everything.
    let reset = &r["reset"];
    assert_eq!(reset["hidden_frames"], 0);
    assert_eq!(reset["target"]["width_attr"], initial_width.as_str());
    assert_eq!(reset["unzoom_visible"], false);

    // Search (the control, then Ctrl-F) highlights do_sendfile frames and
    // reports their share of the samples.
    let folded = folded_of("sendfile", &[]);
    let expected = matched_share(&folded, "do_sendfile");
    for key in ["searched", "ctrl_f"] {
        let s = &r[key];
        assert_eq!(s["matched_visible"], true, "{key}");
        let got = percent(s["matched_text"].as_str().unwrap());
        assert!(
            (got - expected).abs() < 0.15,
            "{key}: Matched {got}% but do_sendfile has {expected:.2}% of the samples"
        );
        let highlighted = s["highlighted"].as_array().unwrap();
        assert!(!highlighted.is_empty(), "{key}");
        for name in highlighted {
            assert!(
                name.as_str().unwrap().contains("do_sendfile"),
                "{key}: {name}"
            );
        }
    }
    assert_eq!(r["searched"]["search_text"], "Reset Search");
    let cleared = &r["search_cleared"];
    assert_eq!(cleared["matched_visible"], false);
    assert_eq!(cleared["search_text"], "Search");
    assert_eq!(cleared["highlighted"], Value::Array(vec![]));
    eprintln!(
        "sendfile SVG: load {:.0} ms in Chromium; screenshot {}",
        r["load_ms"].as_f64().unwrap(),
        shot.display()
    );
}

#[test]
fn side_by_side_page_zooms_and_searches_every_graph_together() {
    let Some(browser) =
        browser_or_skip("side_by_side_page_zooms_and_searches_every_graph_together")
    else {
        return;
    };
    let dir = artifacts();
    let fx = fixture("sendfile-diff");
    let page = dir.join("sendfile-diff.html");
    let output = run(&[
        "diff",
        "-q",
        "--side-by-side",
        "--symfs",
        fx.join("symfs").to_str().unwrap(),
        "--kallsyms",
        fx.join("kallsyms").to_str().unwrap(),
        fx.join("before.data").to_str().unwrap(),
        fx.join("perf.data").to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::write(&page, &output.stdout).unwrap();
    let shot = dir.join("sendfile-diff-side-by-side.png");
    let _ = std::fs::remove_file(&shot);
    let r = drive(
        &browser,
        &[
            "html",
            page.to_str().unwrap(),
            "do_sendfile",
            "do_sendfile",
            shot.to_str().unwrap(),
        ],
    );
    let graphs = ["before", "after", "diff"];
    for g in graphs {
        let initial = &r["initial"][g];
        assert_ne!(initial["target"]["width_attr"], "100.0000%", "{g}");
        assert_eq!(initial["unzoom_visible"], false, "{g}");
    }
    // One click in AFTER zooms all three to do_sendfile.
    for g in graphs {
        let zoomed = &r["zoomed"][g];
        assert_eq!(zoomed["target"]["width_attr"], "100.0000%", "{g}");
        assert_eq!(zoomed["unzoom_visible"], true, "{g}");
        assert!(zoomed["hidden_frames"].as_u64().unwrap() > 0, "{g}");
        let ancestors: Vec<&str> = zoomed["ancestors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap())
            .collect();
        assert_eq!(ancestors.get(1), Some(&"sendfile-srv"), "{g}");
    }
    assert!(is_png(&shot));
    // A search in BEFORE runs in all three.
    for g in graphs {
        let s = &r["searched"][g];
        assert!(
            s["matched_text"].as_str().unwrap().starts_with("Matched: "),
            "{g}: {s}"
        );
        assert!(!s["highlighted"].as_array().unwrap().is_empty(), "{g}");
    }
    // Reset Zoom in the diff resets all three.
    for g in graphs {
        let reset = &r["reset"][g];
        assert_eq!(reset["hidden_frames"], 0, "{g}");
        assert_eq!(reset["unzoom_visible"], false, "{g}");
    }
    // The diff's do_sendfile tooltip carries both counts and the change.
    let diff_title = r["initial"]["diff"]["target"]["title"].as_str().unwrap();
    assert!(
        diff_title.starts_with("do_sendfile (before ") && diff_title.contains("; after "),
        "{diff_title}"
    );
    eprintln!(
        "side-by-side page: all three graphs ready {:.0} ms after navigation",
        r["load_ms"].as_f64().unwrap()
    );
}

/// Renders a graph of 300k distinct stacks and reports how long Chromium
/// takes to load it and to zoom (reported, not asserted: timing belongs in
/// benchmarks; bench/run.sh measures the 1M-sample graph).
#[test]
fn large_graph_loads_and_zooms() {
    let Some(browser) = browser_or_skip("large_graph_loads_and_zooms") else {
        return;
    };
    let dir = artifacts();
    let folded_path = dir.join("large.folded");
    let mut text = String::new();
    for i in 0..300_000u32 {
        text.push_str(&format!(
            "proc{};main;layer{};mid{};work{};leaf{} {}\n",
            i % 6,
            i % 17,
            i % 101,
            i % 997,
            i,
            1 + i % 7
        ));
    }
    std::fs::write(&folded_path, text).unwrap();
    let svg = dir.join("large.svg");
    let output = run(&["-q", "--from-folded", folded_path.to_str().unwrap()]);
    assert!(output.status.success());
    std::fs::write(&svg, &output.stdout).unwrap();
    let r = drive(&browser, &["load", "3", svg.to_str().unwrap()]);
    let result = &r[0];
    assert!(result["frames"].as_u64().unwrap() > 100);
    assert!(result["zoom_ms"].as_f64().is_some());
    eprintln!(
        "large graph (300k stacks, {} frames drawn, {} bytes): load {:.0} ms, zoom {:.0} ms in headless Chromium",
        result["frames"],
        output.stdout.len(),
        result["load_ms"].as_f64().unwrap(),
        result["zoom_ms"].as_f64().unwrap()
    );
}

/// Our speedscope export opens in the speedscope app itself (from its npm
/// package), in Chromium, without errors.
#[test]
fn speedscope_export_opens_in_speedscope() {
    let Some(browser) = browser_or_skip("speedscope_export_opens_in_speedscope") else {
        return;
    };
    if !root()
        .join("tests/browser/node_modules/speedscope")
        .is_dir()
    {
        assert!(
            !ci_requires_live(),
            "CI=true but the speedscope package is missing"
        );
        eprintln!("skipping: tests/browser/node_modules/speedscope missing");
        return;
    }
    let dir = artifacts();
    let json = dir.join("spin.speedscope.json");
    stdout_of("spin", &["-q", "--speedscope", json.to_str().unwrap()]);
    let shot = dir.join("spin-in-speedscope.png");
    let r = drive(
        &browser,
        &["speedscope", json.to_str().unwrap(), shot.to_str().unwrap()],
    );
    let text = r["text"].as_str().unwrap();
    // The profile's name (the recording's path) and the views are shown.
    assert!(text.contains("spin/perf.data"), "{text}");
    assert!(
        text.contains("Left Heavy") && text.contains("Sandwich"),
        "{text}"
    );
    assert!(r["canvases"].as_u64().unwrap() >= 1);
    assert!(is_png(&shot));
}
