//! `flamegraph-perf diff` on two real recordings (fixtures/sendfile-diff:
//! the sendfile load without and with an extra copy loop), determinism of
//! every output, and `--summary-json`.

mod support;

use std::path::PathBuf;

use serde_json::Value;
use support::*;

fn sendfile_diff(name: &str) -> String {
    fixture("sendfile-diff").join(name).display().to_string()
}

/// `diff` with the fixture's symfs and kallsyms plus `args`; asserts success.
fn diff(args: &[&str]) -> Vec<u8> {
    let (symfs, kallsyms) = (sendfile_diff("symfs"), sendfile_diff("kallsyms"));
    let mut all = vec!["diff", "-q", "--symfs", &symfs, "--kallsyms", &kallsyms];
    all.extend_from_slice(args);
    let output = run(&all);
    assert!(
        output.status.success(),
        "diff {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn parse_svg(svg: &str) -> roxmltree::Document<'_> {
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..roxmltree::ParsingOptions::default()
    };
    roxmltree::Document::parse_with_options(svg, options).expect("well-formed SVG")
}

/// (title, fill) of every frame whose title starts with `name (`.
fn frames_named(svg: &str, name: &str) -> Vec<(String, (u8, u8, u8))> {
    let doc = parse_svg(svg);
    doc.descendants()
        .filter(|n| n.has_tag_name("g"))
        .filter_map(|g| {
            let title = g.children().find(|c| c.has_tag_name("title"))?.text()?;
            if !name.is_empty() && !title.starts_with(&format!("{name} (")) {
                return None;
            }
            let fill = g
                .children()
                .find(|c| c.has_tag_name("rect"))?
                .attribute("fill")?;
            let v: Vec<u8> = fill
                .trim_start_matches("rgb(")
                .trim_end_matches(')')
                .split(',')
                .map(|c| c.trim().parse().unwrap())
                .collect();
            Some((title.to_owned(), (v[0], v[1], v[2])))
        })
        .collect()
}

/// Numbers after "before " and "after " in a diff tooltip.
fn before_after(title: &str) -> (u64, u64) {
    let number = |key: &str| -> u64 {
        let at = title
            .find(key)
            .unwrap_or_else(|| panic!("{key} in {title}"))
            + key.len();
        title[at..]
            .split(' ')
            .next()
            .unwrap()
            .replace(',', "")
            .parse()
            .unwrap()
    };
    (number("before "), number("after "))
}

/// Our folded stacks of both recordings, in a directory of the test's own.
fn two_folded_files(test: &str) -> (PathBuf, PathBuf) {
    let dir = root().join("target/diff-test").join(test);
    std::fs::create_dir_all(&dir).unwrap();
    let mut paths = Vec::new();
    for (data, name) in [
        ("before.data", "before.folded"),
        ("perf.data", "after.folded"),
    ] {
        let output = run(&[
            "-q",
            "--folded",
            "-i",
            &sendfile_diff(data),
            "--symfs",
            &sendfile_diff("symfs"),
            "--kallsyms",
            &sendfile_diff("kallsyms"),
        ]);
        assert!(output.status.success());
        let path = dir.join(name);
        std::fs::write(&path, output.stdout).unwrap();
        paths.push(path);
    }
    (paths.remove(0), paths.remove(0))
}

#[test]
fn copy_loop_is_red_and_sendfile_is_blue() {
    let svg = String::from_utf8(diff(&[
        &sendfile_diff("before.data"),
        &sendfile_diff("perf.data"),
    ]))
    .unwrap();
    // The new copy loop: only in AFTER, grown, red.
    let copy = frames_named(&svg, "copy_loop");
    assert_eq!(copy.len(), 1, "{copy:?}");
    let (title, (r, g, b)) = &copy[0];
    let (before, after) = before_after(title);
    assert_eq!(before, 0);
    assert!(after > 300, "{title}");
    assert!(title.ends_with(&format!("; +{after} samples)")), "{title}");
    assert!(r > g && r > b, "copy_loop is red: {title} rgb({r},{g},{b})");
    // The server's sendfile column shrank; its tooltip says so with both counts.
    let sendfile = frames_named(&svg, "do_sendfile");
    assert!(!sendfile.is_empty());
    let (title, _) = &sendfile[0];
    let (before, after) = before_after(title);
    assert!(before > after * 2, "{title}");
    assert!(
        title.ends_with(&format!("; -{} samples)", fmt_thousands(before - after))),
        "{title}"
    );
    assert_some_shrunk_frame_is_blue(&svg);
}

/// Some frame whose tooltip shows fewer samples in AFTER is drawn blue.
fn assert_some_shrunk_frame_is_blue(svg: &str) {
    let blue_and_shrunk = frames_named(svg, "")
        .into_iter()
        .filter(|(title, _)| title.contains("; after "))
        .any(|(title, (r, _, b))| {
            let (before, after) = before_after(&title);
            b > r && before > after
        });
    assert!(blue_and_shrunk, "no shrunk frame is blue");
}

fn fmt_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        let left = digits.len() - i;
        if i > 0 && left / 3 * 3 == left {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[test]
fn folded_sides_give_the_same_graph_as_recordings() {
    let (before, after) = two_folded_files("folded_sides_give_the_same_graph_as_recordings");
    // The default title names the files; everything else must be the same.
    let from_data = diff(&[
        "--title",
        "t",
        &sendfile_diff("before.data"),
        &sendfile_diff("perf.data"),
    ]);
    let from_folded = diff(&[
        "--title",
        "t",
        before.to_str().unwrap(),
        after.to_str().unwrap(),
    ]);
    assert!(
        from_data == from_folded,
        "SVG differs between perf.data and folded inputs"
    );
    // And the difffolded text: every line has two counts whose sums are the sides' totals.
    let text = String::from_utf8(diff(&[
        "--folded",
        before.to_str().unwrap(),
        after.to_str().unwrap(),
    ]))
    .unwrap();
    let (mut sum_before, mut sum_after) = (0u64, 0u64);
    for line in text.lines() {
        let mut fields = line.rsplitn(3, ' ');
        sum_after += fields.next().unwrap().parse::<u64>().unwrap();
        sum_before += fields.next().unwrap().parse::<u64>().unwrap();
    }
    assert_eq!(sum_before, total(&read_folded(&before)));
    assert_eq!(sum_after, total(&read_folded(&after)));
    assert!(text.contains(";copy_loop 0 "), "copy_loop is AFTER-only");
}

#[test]
fn normalize_scales_before_to_after_total() {
    let (before, after) = two_folded_files("normalize_scales_before_to_after_total");
    let text = String::from_utf8(diff(&[
        "--folded",
        "--normalize",
        before.to_str().unwrap(),
        after.to_str().unwrap(),
    ]))
    .unwrap();
    let lines = text.lines().count() as i64;
    let (mut sum_before, mut sum_after) = (0i64, 0i64);
    for line in text.lines() {
        let mut fields = line.rsplitn(3, ' ');
        sum_after += fields.next().unwrap().parse::<i64>().unwrap();
        sum_before += fields.next().unwrap().parse::<i64>().unwrap();
    }
    assert_ne!(total(&read_folded(&before)), total(&read_folded(&after)));
    // Each line is rounded on its own.
    assert!(
        (sum_before - sum_after).abs() <= lines / 2 + 1,
        "{sum_before} vs {sum_after}"
    );
}

#[test]
fn negate_shows_the_before_shape() {
    let (before, after) = two_folded_files("negate_shows_the_before_shape");
    let svg = String::from_utf8(diff(&[
        "--negate",
        before.to_str().unwrap(),
        after.to_str().unwrap(),
    ]))
    .unwrap();
    let doc = parse_svg(&svg);
    let root_width: u64 = doc
        .descendants()
        .filter(|n| n.has_tag_name("rect"))
        .filter_map(|r| r.attribute(("http://github.com/jonhoo/inferno", "w")))
        .map(|w| w.parse().unwrap())
        .max()
        .expect("frames with fg:w");
    assert_eq!(root_width, total(&read_folded(&before)));
    assert!(
        frames_named(&svg, "copy_loop").is_empty(),
        "AFTER-only frames are not drawn"
    );
    // Deltas keep their sign: do_sendfile still shows its shrinkage, and
    // shrunk frames are still blue.
    let (title, _) = &frames_named(&svg, "do_sendfile")[0];
    let (b0, a0) = before_after(title);
    assert!(b0 > a0, "{title}");
    assert!(title.ends_with(&format!("; -{} samples)", fmt_thousands(b0 - a0))));
    assert_some_shrunk_frame_is_blue(&svg);
}

#[test]
fn outputs_are_byte_identical_across_runs_and_thread_counts() {
    let with = |extra: &[&str]| -> Vec<u8> {
        let mut all = vec!["-q"];
        all.extend_from_slice(extra);
        stdout_of("sendfile", &all)
    };
    let svg = with(&[]);
    assert!(svg.len() > 10_000);
    assert!(svg == with(&[]), "SVG differs between runs");
    assert!(svg == with(&["-j", "1"]), "SVG differs with one thread");
    let folded = with(&["--folded"]);
    assert!(folded == with(&["--folded", "-j", "1"]));
    assert!(folded == with(&["--folded"]));
    // No timestamps or random ids in the SVG.
    let text = String::from_utf8(svg).unwrap();
    assert!(!text.contains("2026") && !text.contains("random"));

    let dir = root().join("target/diff-test");
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b) = (dir.join("summary-a.json"), dir.join("summary-b.json"));
    with(&["--summary-json", a.to_str().unwrap()]);
    with(&["--summary-json", b.to_str().unwrap(), "-j", "1"]);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());

    let pair = [sendfile_diff("before.data"), sendfile_diff("perf.data")];
    let d1 = diff(&[&pair[0], &pair[1]]);
    assert!(d1 == diff(&[&pair[0], &pair[1]]));
    let p1 = diff(&["--side-by-side", &pair[0], &pair[1]]);
    assert!(p1 == diff(&["--side-by-side", &pair[0], &pair[1]]));
}

#[test]
fn summary_json_describes_the_profile() {
    let path = root().join("target/diff-test/spin-summary.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    stdout_of("spin", &["-q", "--summary-json", path.to_str().unwrap()]);
    let json: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(json["schema"], "flamegraph-perf-summary/1");
    let folded = folded_of("spin", &[]);
    assert_eq!(json["weight"].as_u64().unwrap(), total(&folded));
    assert!(json["samples"].as_u64().unwrap() >= total(&folded));
    assert_eq!(json["lost_samples"], 0);
    assert_eq!(json["partial"], false);
    assert!(json["event"].as_str().unwrap().starts_with("cpu-clock"));
    assert!(!json["events"].as_array().unwrap().is_empty());
    let duration = json["duration_seconds"].as_f64().unwrap();
    assert!(duration > 0.3 && duration < 30.0, "{duration}");
    // The hottest leaf of the spin fixture is spin.
    assert_eq!(json["top_self"][0]["function"], "spin");
    assert!(json["top_self"][0]["share"].as_f64().unwrap() > 0.5);
    let unresolved = json["unresolved_share"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&unresolved));
    // Total share: a function is counted once per stack, so main ≥ spin.
    let share_of = |name: &str| {
        json["top_total"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["function"] == name)
            .map(|f| f["share"].as_f64().unwrap())
    };
    assert!(share_of("main").unwrap() >= share_of("spin").unwrap());
}

#[test]
fn diff_errors_name_the_file() {
    let output = run(&["diff", "/nonexistent/a.data", &sendfile_diff("perf.data")]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/a.data"), "{stderr}");
    let garbage = root().join("target/diff-test/garbage.folded");
    std::fs::create_dir_all(garbage.parent().unwrap()).unwrap();
    std::fs::write(&garbage, "no count here\n").unwrap();
    let output = run(&[
        "diff",
        garbage.to_str().unwrap(),
        &sendfile_diff("perf.data"),
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("garbage.folded"));
}
