//! `--pprof` and `--speedscope` checked by their reference readers:
//! `go tool pprof` (Debian's golang-go) and the JSON schema shipped in the
//! speedscope npm package (tests/browser/validate-speedscope.mjs). Under
//! CI=true these must run (.ci/run installs both); elsewhere they skip.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use prost::Message;
use support::*;

/// `go`, or None after printing why the test is skipped.
fn go_or_skip(test: &str) -> Option<PathBuf> {
    tool_or_skip(
        "go",
        &format!("go tool pprof, for {test}; apt-get install golang-go"),
    )
}

fn out_dir(test: &str) -> PathBuf {
    let dir = root().join("target/export-test").join(test);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs ours on a fixture with `extra`, writing `--pprof` to the returned path.
fn pprof_of(fixture_name: &str, dir: &Path, extra: &[&str]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(format!("{fixture_name}.pb.gz"));
    let mut args = vec!["-q", "--pprof", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    stdout_of(fixture_name, &args);
    path
}

fn go_pprof(go: &Path, args: &[&str], file: &Path) -> (bool, String) {
    let output = Command::new(go)
        .args(["tool", "pprof"])
        .args(args)
        .arg(file)
        .env("HOME", std::env::temp_dir())
        .env("PPROF_TMPDIR", std::env::temp_dir())
        .output()
        .expect("run go tool pprof");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Folded stacks rebuilt from `go tool pprof -traces`: the comm label as
/// root, then the frames root first ("(inline)" marks dropped).
fn folded_from_traces(text: &str) -> Folded {
    let mut folded = Folded::new();
    for block in text.split("-----------+-------------------------------------------------------") {
        let mut comm = None;
        let mut count = None;
        let mut frames: Vec<String> = Vec::new();
        for line in block.lines() {
            let trimmed = line.trim();
            if let Some(value) = trimmed.strip_prefix("comm:") {
                comm = Some(value.trim().to_owned());
                continue;
            }
            if trimmed.is_empty() || comm.is_none() {
                continue;
            }
            let name = if count.is_none() {
                let (n, rest) = trimmed.split_once(char::is_whitespace).unwrap();
                count = Some(n.parse::<u64>().unwrap());
                rest.trim()
            } else {
                trimmed
            };
            frames.push(name.trim_end_matches(" (inline)").to_owned());
        }
        if let (Some(comm), Some(count)) = (comm, count) {
            frames.reverse();
            let stack = std::iter::once(comm)
                .chain(frames)
                .collect::<Vec<_>>()
                .join(";");
            *folded.entry(stack).or_default() += count;
        }
    }
    folded
}

#[test]
fn go_tool_pprof_reads_our_profiles_and_agrees_with_the_folded_output() {
    let Some(go) = go_or_skip("go_tool_pprof_reads_our_profiles") else {
        return;
    };
    let dir = out_dir("pprof");
    for (fixture_name, extra) in [
        ("spin", &[][..]),
        ("sendfile", &[]),
        ("jit", &[]),
        ("inline", &["--inline"]),
    ] {
        let path = pprof_of(fixture_name, &dir, extra);
        let (ok, raw) = go_pprof(&go, &["-raw"], &path);
        assert!(ok, "{fixture_name}: go tool pprof -raw failed: {raw}");
        // 999 Hz recordings: the period is 10^9/999 ns.
        assert!(raw.contains("PeriodType: cpu nanoseconds"), "{raw}");
        assert!(raw.contains("Period: 1001001\n"), "{raw}");
        assert!(raw.contains("samples/count cpu/nanoseconds[dflt]"), "{raw}");

        let ours = folded_of(fixture_name, extra);
        let (ok, top) = go_pprof(&go, &["-top", "-sample_index=samples"], &path);
        assert!(ok, "{top}");
        assert!(
            top.contains(&format!("of {} total", total(&ours))),
            "{fixture_name}: total differs from our {} samples:\n{top}",
            total(&ours)
        );
        let (ok, traces) = go_pprof(&go, &["-traces", "-sample_index=samples"], &path);
        assert!(ok, "{traces}");
        let rebuilt = folded_from_traces(&traces);
        assert_eq!(
            rebuilt, ours,
            "{fixture_name}: folded stacks rebuilt from the pprof differ from --folded"
        );
    }
}

/// pprof shortens C++ names when it reads them; the system name (shown in
/// parentheses by `-raw`) keeps them whole.
#[test]
fn cpp_names_are_kept_whole() {
    let Some(go) = go_or_skip("cpp_names_are_kept_whole") else {
        return;
    };
    let path = pprof_of("cpp", &out_dir("cpp"), &[]);
    let (ok, raw) = go_pprof(&go, &["-raw"], &path);
    assert!(ok, "{raw}");
    for name in [
        "geo::transform_all<double, 3>",
        "(anonymous namespace)::mix",
        "level<24>",
    ] {
        assert!(
            raw.contains(&format!(" s=0({name})")),
            "{name} missing:\n{raw}"
        );
    }
}

#[test]
fn the_hottest_function_is_on_top_and_cpu_time_is_samples_times_period() {
    let Some(go) = go_or_skip("the_hottest_function_is_on_top") else {
        return;
    };
    let path = pprof_of("spin", &out_dir("top"), &[]);
    let (ok, top) = go_pprof(&go, &["-top", "-sample_index=samples"], &path);
    assert!(ok, "{top}");
    let first_row = top
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .nth(1)
        .unwrap_or_else(|| panic!("no rows: {top}"));
    assert_eq!(first_row.split_whitespace().last(), Some("spin"), "{top}");
    // The cpu value of every sample is its count × the period.
    let (_, raw) = go_pprof(&go, &["-raw"], &path);
    let samples: Vec<(u64, u64)> = raw
        .lines()
        .filter_map(|l| {
            let (values, _) = l.split_once(':')?;
            let mut v = values.split_whitespace().map(|x| x.parse::<u64>());
            match (v.next(), v.next(), v.next()) {
                (Some(Ok(n)), Some(Ok(ns)), None) => Some((n, ns)),
                _ => None,
            }
        })
        .collect();
    assert!(!samples.is_empty());
    for (n, ns) in samples {
        assert_eq!(ns, n * 1_001_001);
    }
}

#[test]
fn tracepoint_profiles_count_events() {
    let Some(go) = go_or_skip("tracepoint_profiles_count_events") else {
        return;
    };
    let path = pprof_of("tracepoint", &out_dir("tracepoint"), &[]);
    let (ok, raw) = go_pprof(&go, &["-raw"], &path);
    assert!(ok, "{raw}");
    assert!(raw.contains("PeriodType: samples count"), "{raw}");
    assert!(raw.contains("Period: 1\n"), "{raw}");
}

#[test]
fn mapping_build_ids_are_the_binaries_build_ids() {
    let Some(go) = go_or_skip("mapping_build_ids_are_the_binaries_build_ids") else {
        return;
    };
    let Some(readelf) = tool_or_skip("readelf", "the binaries' build ids") else {
        return;
    };
    for (fixture_name, binary) in [("spin", "spin"), ("sendfile", "sendfile")] {
        let path = pprof_of(fixture_name, &out_dir("buildid"), &[]);
        let (ok, raw) = go_pprof(&go, &["-raw"], &path);
        assert!(ok);
        let elf = fixture(fixture_name).join(format!(
            "symfs/tmp/flamegraph-perf-fixtures/{fixture_name}/{binary}"
        ));
        let notes = Command::new(&readelf).arg("-n").arg(&elf).output().unwrap();
        let notes = String::from_utf8_lossy(&notes.stdout);
        let build_id = notes
            .lines()
            .find_map(|l| l.trim().strip_prefix("Build ID: "))
            .expect("the fixture binary has a build id")
            .trim()
            .to_owned();
        let mapping = raw
            .lines()
            .skip_while(|l| !l.starts_with("Mappings"))
            .find(|l| l.contains(&format!("/{binary} ")))
            .unwrap_or_else(|| panic!("no mapping of {binary}: {raw}"));
        assert!(mapping.contains(&build_id), "{mapping} lacks {build_id}");
    }
    // The kernel's mapping carries the build id perf recorded for it.
    let Some(perf) = tool_or_skip("perf", "the recorded kernel build id") else {
        return;
    };
    let data = fixture("spin").join("perf.data");
    let list = Command::new(perf)
        .args(["buildid-list", "-i"])
        .arg(&data)
        .env("HOME", "/nonexistent")
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    let kernel_id = list
        .lines()
        .find_map(|l| l.strip_suffix(" [kernel.kallsyms]"))
        .expect("perf lists the kernel's build id");
    let path = pprof_of("spin", &out_dir("buildid-kernel"), &[]);
    let (_, raw) = go_pprof(&go, &["-raw"], &path);
    let kernel_mapping = raw
        .lines()
        .find(|l| l.contains("[kernel.kallsyms]") && l.contains("0x"))
        .expect("a kernel mapping");
    assert!(
        kernel_mapping.contains(kernel_id),
        "{kernel_mapping} lacks {kernel_id}"
    );
}

#[test]
fn go_tool_pprof_rejects_broken_profiles() {
    let Some(go) = go_or_skip("go_tool_pprof_rejects_broken_profiles") else {
        return;
    };
    let dir = out_dir("broken");
    let good = pprof_of("spin", &dir, &[]);
    let bytes = std::fs::read(&good).unwrap();
    assert!(
        go_pprof(&go, &["-raw"], &good).0,
        "the good one is accepted"
    );

    // 1. Cut in the middle of the gzip stream.
    let cut = dir.join("cut.pb.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    // 2. A valid gzip of bytes that are not a profile.
    let garbage = dir.join("garbage.pb.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &[0xff; 64]).unwrap();
    std::fs::write(&garbage, gz.finish().unwrap()).unwrap();
    // 3. Our profile with a sample pointing at a location that does not exist.
    let mut decoded = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::MultiGzDecoder::new(&bytes[..]),
        &mut decoded,
    )
    .unwrap();
    let mut profile = export::pprof::proto::Profile::decode(&decoded[..]).unwrap();
    profile.sample[0].location_id.push(999_999);
    let dangling = dir.join("dangling.pb.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &profile.encode_to_vec()).unwrap();
    std::fs::write(&dangling, gz.finish().unwrap()).unwrap();

    for broken in [cut, garbage, dangling] {
        let (ok, text) = go_pprof(&go, &["-raw"], &broken);
        assert!(!ok, "{} was accepted: {text}", broken.display());
    }
}

#[test]
fn exports_are_deterministic() {
    let dir = out_dir("deterministic");
    let a = pprof_of("sendfile", &dir.join("a"), &[]);
    let b = pprof_of("sendfile", &dir.join("b"), &["-j", "1"]);
    assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
}

#[test]
fn speedscope_files_match_the_schema_and_the_folded_output() {
    let validator = root().join("tests/browser/validate-speedscope.mjs");
    let node = which("node");
    let installed = root()
        .join("tests/browser/node_modules/speedscope")
        .is_dir();
    let dir = out_dir("speedscope");
    let path = dir.join("sendfile.speedscope.json");
    stdout_of("sendfile", &["-q", "--speedscope", path.to_str().unwrap()]);

    // The samples are the folded stacks, weights in ns at 10^9/999 per sample.
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let frames: Vec<&str> = json["shared"]["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    let profile = &json["profiles"][0];
    assert_eq!(profile["unit"], "nanoseconds");
    let mut rebuilt = Folded::new();
    for (sample, weight) in profile["samples"]
        .as_array()
        .unwrap()
        .iter()
        .zip(profile["weights"].as_array().unwrap())
    {
        let stack: Vec<&str> = sample
            .as_array()
            .unwrap()
            .iter()
            .map(|i| frames[i.as_u64().unwrap() as usize])
            .collect();
        let ns = weight.as_u64().unwrap();
        assert_eq!(ns % 1_001_001, 0);
        *rebuilt.entry(stack.join(";")).or_default() += ns / 1_001_001;
    }
    assert_eq!(rebuilt, folded_of("sendfile", &[]));

    match (node, installed) {
        (Some(node), true) => {
            let bad = dir.join("bad.json");
            std::fs::write(&bad, r#"{"profiles":[{"type":"sampled"}]}"#).unwrap();
            let output = Command::new(&node)
                .arg(&validator)
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stdout)
            );
            let output = Command::new(&node)
                .arg(&validator)
                .arg(&bad)
                .output()
                .unwrap();
            assert!(!output.status.success(), "the validator can fail");
        }
        _ if ci_requires_live() => panic!("CI=true but node or the speedscope package is missing"),
        _ => eprintln!("skipping the schema check: node or tests/browser/node_modules missing"),
    }
}

/// Locations of one mapping in `go tool pprof -raw` output: address and
/// lines (innermost first) as (system name, "file:line").
fn raw_locations(raw: &str, mapping: u64) -> Vec<(u64, Vec<(String, String)>)> {
    let mut locations: Vec<(u64, Vec<(String, String)>)> = Vec::new();
    let mut in_mapping = false;
    let section = raw
        .lines()
        .skip_while(|l| !l.starts_with("Locations"))
        .skip(1)
        .take_while(|l| !l.starts_with("Mappings"));
    for line in section {
        let mut words: Vec<&str> = line.split_whitespace().collect();
        if words.first().is_some_and(|w| w.ends_with(':')) {
            // "N: 0xADDR M=K name file:line s=0(system name)"
            in_mapping = words.get(2) == Some(&format!("M={mapping}").as_str());
            if !in_mapping {
                continue;
            }
            let address = u64::from_str_radix(words[1].trim_start_matches("0x"), 16).unwrap();
            locations.push((address, Vec::new()));
            words.drain(..3);
        } else if !in_mapping {
            continue;
        }
        let [name, position, system @ ..] = &words[..] else {
            panic!("unexpected location line {line:?}");
        };
        let system = system
            .first()
            .and_then(|s| s.strip_prefix("s=0("))
            .and_then(|s| s.strip_suffix(')'))
            .unwrap_or(name);
        locations
            .last_mut()
            .unwrap()
            .1
            .push((system.to_owned(), (*position).to_owned()));
    }
    locations
}

#[test]
fn inline_source_lines_agree_with_binutils_addr2line() {
    let Some(go) = go_or_skip("inline_source_lines_agree_with_binutils_addr2line") else {
        return;
    };
    let Some(addr2line) = tool_or_skip("addr2line", "binutils, the oracle for source lines") else {
        return;
    };
    let dir = out_dir("source-lines");
    let path = pprof_of("inline", &dir, &["--inline"]);
    let (ok, raw) = go_pprof(&go, &["-raw"], &path);
    assert!(ok, "{raw}");
    let mapping_line = raw
        .lines()
        .skip_while(|l| !l.starts_with("Mappings"))
        .find(|l| l.contains("/inline/inline "))
        .unwrap_or_else(|| panic!("no mapping of the fixture binary: {raw}"));
    assert!(
        mapping_line.contains("[FN][FL][LN][IN]"),
        "file names, line numbers and inline frames: {mapping_line}"
    );
    let mapping: u64 = mapping_line
        .split(':')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let locations = raw_locations(&raw, mapping);
    assert!(locations.len() >= 3, "{raw}");
    let elf = fixture("inline").join("symfs/tmp/flamegraph-perf-fixtures/inline/inline");
    // Our addresses are file offsets; binutils wants virtual addresses.
    // The fixture's code segment maps offset 0x1000 at 0x1000, so they
    // agree; object says so for the file actually read.
    let bytes = std::fs::read(&elf).unwrap();
    let file = object::File::parse(&*bytes).unwrap();
    let to_vaddr = |offset: u64| {
        use object::{Object, ObjectSegment};
        file.segments()
            .find_map(|segment| {
                let (start, size) = segment.file_range();
                (start..start + size)
                    .contains(&offset)
                    .then(|| offset - start + segment.address())
            })
            .expect("the address is in a segment")
    };
    let mut inlined_seen = false;
    for (address, ours) in &locations {
        let output = Command::new(&addr2line)
            .args(["-f", "-i", "-e"])
            .arg(&elf)
            .arg(format!("{:#x}", to_vaddr(*address)))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        let lines: Vec<&str> = text.lines().collect();
        let expected: Vec<(String, String)> = lines
            .chunks(2)
            .map(|pair| {
                let position = pair[1].split(" (discriminator").next().unwrap();
                (pair[0].to_owned(), position.to_owned())
            })
            .collect();
        assert_eq!(ours, &expected, "location {address:#x}");
        inlined_seen |= ours.len() == 3;
    }
    assert!(
        inlined_seen,
        "inner and middle inlined into outer somewhere"
    );

    // Without --inline no DWARF is read, so no source is claimed.
    let path = pprof_of("inline", &out_dir("no-source-lines"), &[]);
    let (ok, raw) = go_pprof(&go, &["-raw"], &path);
    assert!(ok, "{raw}");
    assert!(!raw.contains("inline.c"), "{raw}");
}
