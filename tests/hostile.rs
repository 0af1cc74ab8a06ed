//! Hostile names through the whole pipeline: whatever a symbol, thread name
//! or perf-map entry contains, the SVG is well-formed XML (checked with a
//! strict parser) with exactly the renderer's own script, control bytes are
//! replaced, names are capped, and `;` never splits a frame.

mod support;

use std::process::Stdio;

use support::*;

/// 200 names built from the parts that break XML, HTML, terminals and folded text.
fn hostile_names() -> Vec<Vec<u8>> {
    let parts: Vec<Vec<u8>> = vec![
        b"<script>alert(1)</script>".to_vec(),
        b"\"'&<>".to_vec(),
        b"]]>".to_vec(),
        b"<![CDATA[x]]>".to_vec(),
        b"<!--".to_vec(),
        b"-->".to_vec(),
        b"&#x3C;script&#x3E;".to_vec(),
        b"&amp;&lt;".to_vec(),
        b"\x00".to_vec(),
        b"\x01\x02\x07\x08\x0b\x0c\x1b[31m".to_vec(),
        b"\x7f".to_vec(),
        "\u{202E}gnp.exe".as_bytes().to_vec(),
        "\u{2066}\u{2069}\u{200F}".as_bytes().to_vec(),
        b"\xff\xfe\xc3\x28".to_vec(),
        b"a;b;c".to_vec(),
        b"%s%n%x".to_vec(),
        b"../../etc/passwd".to_vec(),
        "\u{1F525}".as_bytes().to_vec(),
        b"\xe2\x80".to_vec(),
        b"<svg onload=alert(1)>".to_vec(),
    ];
    let mut names = Vec::new();
    for i in 0..200 {
        let mut name = format!("fn{i}_").into_bytes();
        name.extend_from_slice(&parts[i % parts.len()]);
        name.extend_from_slice(&parts[(i * 7 + 3) % parts.len()]);
        if i % 50 == 49 {
            // Megabyte names.
            name.extend(std::iter::repeat_n(b'x', 1 << 20));
        }
        names.push(name);
    }
    names
}

/// Parses the SVG with a strict XML parser; returns the frame titles.
fn checked_svg(svg: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(svg).expect("the SVG is UTF-8");
    let document = roxmltree::Document::parse_with_options(
        text,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..roxmltree::ParsingOptions::default()
        },
    )
    .expect("the SVG is well-formed XML");
    let scripts = document
        .descendants()
        .filter(|n| n.has_tag_name("script"))
        .count();
    assert_eq!(scripts, 1, "exactly the renderer's own script");
    for node in document.descendants() {
        for attribute in node.attributes() {
            assert!(
                !attribute.name().starts_with("on")
                    || attribute.name() == "onload" && node.has_tag_name("svg")
            );
        }
        if let Some(text) = node.text() {
            assert!(
                !text
                    .chars()
                    .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r'),
                "no control characters in text: {:?}",
                &text[..text.len().min(80)]
            );
        }
    }
    document
        .descendants()
        .filter(|n| n.has_tag_name("title"))
        .filter_map(|n| n.text().map(str::to_owned))
        .collect()
}

#[test]
fn hostile_folded_names_render_to_well_formed_svg() {
    let mut input = Vec::new();
    for (i, name) in hostile_names().iter().enumerate() {
        input.extend_from_slice(b"app;");
        // `;` in folded text is the separator; the rest of the name is one frame.
        input.extend(name.iter().map(|&b| if b == b'\n' { b' ' } else { b }));
        input.extend_from_slice(format!(" {}\n", 10 + i).as_bytes());
    }
    let mut child = binary()
        .args([
            "--from-folded",
            "-",
            "--minwidth",
            "0",
            "--title",
            "t<\u{1}>",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let writer = {
        let mut stdin = child.stdin.take().unwrap();
        std::thread::spawn(move || {
            use std::io::Write;
            stdin.write_all(&input).unwrap();
        })
    };
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let titles = checked_svg(&output.stdout);
    assert!(
        titles
            .iter()
            .any(|t| t.contains("<script>alert(1)</script>")),
        "names kept, escaped"
    );
    let longest = titles.iter().map(String::len).max().unwrap();
    assert!(longest < 8192, "megabyte names are capped ({longest})");
    assert!(
        titles.iter().any(|t| t.contains('…')),
        "capped names end in an ellipsis"
    );
}

#[test]
fn hostile_perf_map_names_never_split_frames_or_break_the_svg() {
    // The jit fixture with its perf map rewritten: every JIT symbol gets a
    // hostile name, covering the sampled addresses.
    let dir = std::env::temp_dir().join(format!("fgp-hostile-map-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(std::process::Command::new("cp")
        .arg("-a")
        .arg(fixture("jit").join("symfs"))
        .arg(&dir)
        .status()
        .unwrap()
        .success());
    let map_path = std::fs::read_dir(dir.join("tmp"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "map"))
        .unwrap();
    let original = std::fs::read_to_string(&map_path).unwrap();
    let names = hostile_names();
    let mut rewritten = Vec::new();
    for (i, line) in original.lines().enumerate() {
        let mut fields = line.split_whitespace();
        let (start, size) = (fields.next().unwrap(), fields.next().unwrap());
        rewritten.extend_from_slice(format!("{start} {size} ").as_bytes());
        let name: Vec<u8> = names[(i * 37 + 13) % names.len()]
            .iter()
            .copied()
            .filter(|&b| b != b'\n')
            .collect();
        rewritten.extend_from_slice(&name);
        rewritten.push(b'\n');
    }
    std::fs::write(&map_path, &rewritten).unwrap();
    let jit = fixture("jit");
    let common = [
        "-i",
        jit.join("perf.data").to_str().unwrap(),
        "--symfs",
        dir.to_str().unwrap(),
        "--kallsyms",
        jit.join("kallsyms").to_str().unwrap(),
    ]
    .map(String::from);
    let folded_output = run(&[
        common.iter().map(String::as_str).collect::<Vec<_>>(),
        vec!["--folded"],
    ]
    .concat());
    let folded = parse_folded(&String::from_utf8_lossy(&folded_output.stdout));
    // Every JIT stack keeps its depth: no name was split by a `;`.
    let plain = folded_of("jit", &[]);
    let depth = |f: &Folded| f.keys().map(|s| s.split(';').count()).max().unwrap();
    assert_eq!(depth(&folded), depth(&plain), "the same frames, renamed");
    assert!(folded.keys().all(|s| !s.chars().any(char::is_control)));
    let svg_output = run(&common.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(svg_output.status.success());
    let titles = checked_svg(&svg_output.stdout);
    assert!(
        titles.iter().any(|t| t.starts_with("fn")),
        "hostile JIT names are drawn"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn hostile_thread_names_from_a_live_recording() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { geteuid() } != 0 || which("gcc").is_none() {
        assert!(!ci_requires_live(), "CI=true runs as root with gcc");
        eprintln!("skipped: needs root and gcc");
        return;
    }
    let dir = std::env::temp_dir().join(format!("fgp-hostile-comm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let busy = dir.join("busy");
    assert!(std::process::Command::new("gcc")
        .args(["-O1", "-fno-omit-frame-pointer", "-o"])
        .arg(&busy)
        .arg(root().join("tests/programs/busy.c"))
        .status()
        .unwrap()
        .success());
    // The kernel keeps 15 bytes of a thread name.
    let comm = "<i>&;\"]]>\u{1b}\u{7}x";
    let output = binary()
        .args(["-g", "--"])
        .arg(&busy)
        .args(["1", comm])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let titles = checked_svg(&output.stdout);
    assert!(
        titles.iter().any(|t| t.starts_with("<i>&:\"]]>")),
        "the thread name is a root frame, `;` made `:`: {:?}",
        &titles[..titles.len().min(5)]
    );
    std::fs::remove_dir_all(&dir).ok();
}

extern "C" {
    fn geteuid() -> u32;
}
