//! The command line: SVG output, folded input, errors and exit codes.

mod support;

use std::io::Write;
use std::process::Stdio;

use quick_xml::events::Event;
use support::*;

/// Parses an SVG as XML (panics if malformed) and returns how many
/// `<script>` elements it has.
fn script_elements(svg: &[u8]) -> usize {
    let mut reader = quick_xml::Reader::from_reader(svg);
    reader.config_mut().check_end_names = true;
    let mut scripts = 0;
    let mut buf = Vec::new();
    loop {
        match reader
            .read_event_into(&mut buf)
            .expect("SVG is well-formed XML")
        {
            Event::Eof => return scripts,
            Event::Start(e) if e.name().as_ref() == b"script" => scripts += 1,
            _ => {}
        }
        buf.clear();
    }
}

fn svg_of(args: &[&str]) -> String {
    let output = run(args);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        script_elements(&output.stdout),
        1,
        "exactly inferno's own script"
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn svg_is_interactive_and_well_formed() {
    let args = fixture_args("sendfile");
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let svg = svg_of(&argv);
    assert!(
        svg.contains("<title>do_sendfile ("),
        "do_sendfile frame is drawn"
    );
    assert!(svg.contains("sendfile-srv"));
    for interactive in ["Reset Zoom", "function zoom(", "function search(", "Search"] {
        assert!(svg.contains(interactive), "{interactive}");
    }
}

#[test]
fn render_options_reach_the_svg() {
    let mut args = fixture_args("spin");
    args.extend(
        [
            "--title",
            "custom <title>",
            "--subtitle",
            "sub",
            "--width",
            "800",
            "--colors",
            "hot",
            "--countname",
            "ticks",
            "--inverted",
        ]
        .map(String::from),
    );
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let svg = svg_of(&argv);
    assert!(svg.contains("custom &lt;title&gt;"));
    assert!(svg.contains(">sub<"));
    assert!(svg.contains("width=\"800\""));
    assert!(svg.contains(" ticks"), "count name in tooltips");
    let reversed = {
        let mut args = fixture_args("spin");
        args.push("--reverse".into());
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        svg_of(&argv)
    };
    assert!(reversed.contains("<title>spin ("));
    let mut args = fixture_args("spin");
    args.extend(["--colors".to_owned(), "plaid".to_owned()]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = run(&argv);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("plaid"));
}

#[test]
fn from_folded_renders_files_and_stdin() {
    let dir = tempdir("from-folded");
    let path = dir.join("in.folded");
    std::fs::write(&path, "app;main;hot 90\napp;main;cold 10\n").unwrap();
    let svg = svg_of(&["--from-folded", path.to_str().unwrap(), "--title", "t"]);
    assert!(svg.contains("<title>hot (90 samples, 90.00%)</title>"));

    let mut child = binary()
        .args(["--from-folded", "-", "--folded"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a;b 1\na;b 2\nx;y;z 4\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "a;b 3\nx;y;z 4\n"
    );

    std::fs::write(&path, "app;main 12\nthis line has no count\n").unwrap();
    let output = run(&["--from-folded", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("in.folded") && stderr.contains("line 2"),
        "{stderr}"
    );
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("fgp-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn bad_inputs_get_one_line_naming_the_file_and_exit_2() {
    let dir = tempdir("bad-inputs");
    let empty = dir.join("empty.data");
    std::fs::write(&empty, b"").unwrap();
    let garbage = dir.join("garbage.data");
    std::fs::write(&garbage, b"this is not a perf.data file at all\n").unwrap();
    let short = dir.join("short.data");
    std::fs::write(&short, b"PERFILE2\x68\0\0\0\0\0\0\0").unwrap();
    // A 120-byte file that claims a 1 TiB data section.
    let huge = dir.join("huge.data");
    let mut header = vec![0u8; 120];
    header[..8].copy_from_slice(b"PERFILE2");
    header[8..16].copy_from_slice(&104u64.to_le_bytes());
    header[16..24].copy_from_slice(&136u64.to_le_bytes());
    header[40..48].copy_from_slice(&104u64.to_le_bytes());
    header[48..56].copy_from_slice(&(1u64 << 40).to_le_bytes());
    std::fs::write(&huge, header).unwrap();
    let missing = dir.join("missing.data");
    for (path, says) in [
        (&empty, "empty"),
        (&garbage, "not a perf.data file"),
        (&short, "inside the"),
        (&huge, "corrupt perf.data at offset"),
        (&missing, "No such file"),
        (&dir, "directory"),
    ] {
        let output = run(&["-i", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{}: {stderr}",
            path.display()
        );
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.contains(path.to_str().unwrap()),
            "names the file: {stderr}"
        );
        assert!(stderr.contains(says), "{stderr}");
        assert!(!stderr.contains("panicked"));
        assert!(output.stdout.is_empty());
    }
    let output = run(&["-i", "x.data", "-a"]);
    assert_eq!(output.status.code(), Some(2), "-i does not record");
}

#[test]
fn closed_stdout_pipe_exits_quietly() {
    let args = fixture_args("sendfile");
    let mut child = binary()
        .args(&args)
        .arg("--folded")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        !stderr.contains("error") && !stderr.contains("Broken pipe"),
        "{stderr}"
    );
}

#[test]
fn terminal_stdout_writes_flamegraph_svg() {
    let Some(script) = tool_or_skip("script", "util-linux, to fake a terminal") else {
        return;
    };
    let dir = tempdir("terminal");
    let args = fixture_args("spin").join(" ");
    let command = format!(
        "cd {} && {} {args} -q",
        dir.display(),
        env!("CARGO_BIN_EXE_flamegraph-perf")
    );
    let output = std::process::Command::new(script)
        .args(["-qec", &command, "/dev/null"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let svg = std::fs::read(dir.join("flamegraph.svg")).expect("flamegraph.svg written");
    assert_eq!(script_elements(&svg), 1);
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(said.contains("wrote flamegraph.svg"), "{said}");
    assert!(!said.contains("<svg"), "no SVG on the terminal");
}

#[test]
fn progress_only_on_a_terminal() {
    // Piped stderr: no progress line, no terminal control codes.
    let mut command = binary();
    command
        .args(fixture_args("spin"))
        .env("FLAMEGRAPH_PERF_PROGRESS_AFTER_MS", "0");
    let output = command.output().unwrap();
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("reading") && !stderr.contains('\x1b'),
        "{stderr}"
    );

    let Some(script) = tool_or_skip("script", "util-linux, to fake a terminal") else {
        return;
    };
    let dir = tempdir("progress");
    let args = fixture_args("spin").join(" ");
    let command = format!(
        "FLAMEGRAPH_PERF_PROGRESS_AFTER_MS=0 {} {args} > {}/out.svg",
        env!("CARGO_BIN_EXE_flamegraph-perf"),
        dir.display()
    );
    let output = std::process::Command::new(script)
        .args(["-qec", &command, "/dev/null"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let said = String::from_utf8_lossy(&output.stdout);
    let line = said
        .split('\r')
        .find(|part| part.contains(": reading "))
        .unwrap_or_else(|| panic!("no progress line in {said:?}"));
    assert!(
        line.contains("records") && line.contains("(100%)"),
        "{line:?}"
    );
    // The line is cleared before the summary.
    assert!(said.contains("\r\x1b[Kflamegraph-perf: "), "{said:?}");
}
