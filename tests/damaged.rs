//! Broken recordings (fixtures/damaged, made by its make.sh): every
//! complete record is recovered, the damage is reported with its byte
//! offset, the exit status is 3; unreadable files get one line and exit 2.

mod support;

use support::*;

/// (file, complete records, damage offset) from fixtures/damaged/expected.txt,
/// written by an independent walk of the record headers.
fn expected() -> Vec<(String, Option<u64>, Option<u64>)> {
    std::fs::read_to_string(fixture("damaged").join("expected.txt"))
        .unwrap()
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (
                fields[0].to_owned(),
                fields[1].parse().ok(),
                fields[2].parse().ok(),
            )
        })
        .collect()
}

#[test]
fn damaged_recordings_yield_partial_graphs_with_the_offset() {
    let mut checked = 0;
    for (file, records, offset) in expected() {
        let path = fixture("damaged").join(&file);
        let output = run(&["-i", path.to_str().unwrap(), "--folded", "--keep-idle"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{file}: {stderr}");
        match (records, offset) {
            (None, _) => {
                assert_eq!(output.status.code(), Some(2), "{file}: {stderr}");
                assert_eq!(stderr.lines().count(), 1, "{file}: one line: {stderr}");
                assert!(stderr.contains(&file), "{file}: names the file: {stderr}");
            }
            (Some(records), Some(offset)) => {
                assert_eq!(
                    output.status.code(),
                    Some(3),
                    "{file}: partial graph: {stderr}"
                );
                assert!(
                    stderr.contains(&format!("damaged at byte {offset}:")),
                    "{file}: offset {offset}: {stderr}"
                );
                assert!(
                    stderr.contains(&format!("read the {records} complete records"))
                        || file == "badfeature.data",
                    "{file}: {records} records: {stderr}"
                );
                let folded = parse_folded(&String::from_utf8_lossy(&output.stdout));
                assert!(
                    total(&folded) > 0,
                    "{file}: a graph from what was recovered"
                );
            }
            (Some(_), None) => panic!("{file}: expected.txt lists no damage"),
        }
        checked += 1;
    }
    assert_eq!(checked, 6);
}

#[test]
fn truncated_recording_keeps_exactly_the_samples_before_the_cut() {
    // The truncated file is the spin fixture cut at 60%: its samples are a
    // prefix of the full recording's.
    let spin = fixture("spin");
    let full = folded_of("spin", &["--keep-idle"]);
    let output = run(&[
        "-i",
        fixture("damaged").join("truncated.data").to_str().unwrap(),
        "--symfs",
        spin.join("symfs").to_str().unwrap(),
        "--kallsyms",
        spin.join("kallsyms").to_str().unwrap(),
        "--folded",
        "--keep-idle",
    ]);
    assert_eq!(output.status.code(), Some(3));
    let partial = parse_folded(&String::from_utf8_lossy(&output.stdout));
    assert!(total(&partial) * 2 > total(&full), "most of the samples");
    assert!(total(&partial) < total(&full));
    for (stack, count) in &partial {
        assert!(
            full.get(stack).is_some_and(|c| c >= count),
            "{stack} is in the full graph"
        );
    }
}

#[test]
fn recovers_from_a_pipe_cut_mid_record() {
    let bytes = std::fs::read(fixture("pipe").join("perf.data")).unwrap();
    let cut = &bytes[..bytes.len() * 3 / 4 + 5];
    let mut child = binary()
        .args(["-i", "-", "--folded", "--keep-idle"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(cut).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("damaged at byte"), "{stderr}");
    assert!(total(&parse_folded(&String::from_utf8_lossy(&output.stdout))) > 100);
}
