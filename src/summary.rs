//! `--summary-json`: what a profile holds, for scripts and CI dashboards.
//!
//! The schema is versioned (`"schema": "flamegraph-perf-summary/1"`) and
//! documented in README.md; fields are only ever added. Output is
//! deterministic: the same input gives the same bytes (no timestamps, ties
//! broken by name).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use folded::FoldedStacks;
use serde::Serialize;

/// Functions listed in `top_self` and `top_total`.
const TOP_FUNCTIONS: usize = 20;

/// What is known about a profile besides its stacks.
#[derive(Debug, Default)]
pub struct Facts<'a> {
    /// The file read (`None` when recording live).
    pub input: Option<&'a Path>,
    /// The recording machine's name, when known.
    pub hostname: Option<&'a str>,
    /// The event folded.
    pub event: Option<&'a str>,
    /// Every event in the recording.
    pub events: Vec<&'a str>,
    /// Samples of the folded event read.
    pub samples: u64,
    /// Samples the kernel dropped.
    pub lost_samples: u64,
    /// Records the kernel dropped (ring buffer full).
    pub lost_records: u64,
    /// From the first to the last sample (recording: the sampling time).
    pub duration_seconds: Option<f64>,
    /// Samples dropped as idle.
    pub idle_samples: u64,
    /// Frames (counted per sample) without a symbol.
    pub unresolved_frames: u64,
    /// Frames (counted per sample) in all.
    pub frames: u64,
    /// The data was damaged or cut short.
    pub partial: bool,
}

#[derive(Serialize)]
struct Summary<'a> {
    schema: &'static str,
    input: Option<String>,
    hostname: Option<&'a str>,
    event: Option<&'a str>,
    events: &'a [&'a str],
    samples: u64,
    weight: u64,
    stacks: usize,
    idle_samples: u64,
    lost_samples: u64,
    lost_records: u64,
    duration_seconds: Option<f64>,
    unresolved_share: f64,
    partial: bool,
    top_self: Vec<Function>,
    top_total: Vec<Function>,
}

#[derive(Serialize)]
struct Function {
    function: String,
    weight: u64,
    share: f64,
}

/// Writes the summary of `stacks` and `facts` to `path` as JSON, the way
/// every output file is written ([`crate::output::write_file_replacing`]).
pub fn write(path: &Path, facts: &Facts<'_>, stacks: &FoldedStacks) -> Result<()> {
    let mut text = to_json(facts, stacks);
    text.push('\n');
    crate::output::write_file_replacing(path, |out| out.write_all(text.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))
}

fn to_json(facts: &Facts<'_>, stacks: &FoldedStacks) -> String {
    let total = stacks.total();
    let (self_weights, total_weights) = function_weights(stacks);
    let top = |weights: HashMap<u32, u64>| -> Vec<Function> {
        let mut named: Vec<(String, u64)> = weights
            .into_iter()
            .map(|(id, w)| (stacks.frame(id).to_string(), w))
            .collect();
        named.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        named
            .into_iter()
            .take(TOP_FUNCTIONS)
            .map(|(function, weight)| Function {
                function,
                weight,
                share: round(ratio(weight, total)),
            })
            .collect()
    };
    let summary = Summary {
        schema: "flamegraph-perf-summary/1",
        input: facts.input.map(|p| p.display().to_string()),
        hostname: facts.hostname,
        event: facts.event,
        events: &facts.events,
        samples: facts.samples,
        weight: total,
        stacks: stacks.len(),
        idle_samples: facts.idle_samples,
        lost_samples: facts.lost_samples,
        lost_records: facts.lost_records,
        duration_seconds: facts.duration_seconds.map(round),
        unresolved_share: round(ratio(facts.unresolved_frames, facts.frames)),
        partial: facts.partial,
        top_self: top(self_weights),
        top_total: top(total_weights),
    };
    serde_json::to_string_pretty(&summary).expect("plain data serializes")
}

/// Per frame: weight of stacks it ends (self) and of stacks it is in
/// (total, counted once per stack however often it recurses).
fn function_weights(stacks: &FoldedStacks) -> (HashMap<u32, u64>, HashMap<u32, u64>) {
    let mut self_weights: HashMap<u32, u64> = HashMap::new();
    let mut total_weights: HashMap<u32, u64> = HashMap::new();
    let mut seen: Vec<u32> = Vec::new();
    for (stack, weight) in stacks.iter() {
        if let Some(&leaf) = stack.last() {
            *self_weights.entry(leaf).or_default() += weight;
        }
        seen.clear();
        for &id in stack {
            if !seen.contains(&id) {
                seen.push(id);
                *total_weights.entry(id).or_default() += weight;
            }
        }
    }
    (self_weights, total_weights)
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Six decimals: enough for shares, and stable text across platforms.
fn round(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_functions_count_recursion_once_and_sort_by_weight_then_name() {
        let stacks =
            FoldedStacks::parse("app;main;f;f;spin 6\napp;main;g 2\napp;main;b 2\n".as_bytes())
                .unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&to_json(&Facts::default(), &stacks)).unwrap();
        assert_eq!(json["weight"], 10);
        assert_eq!(json["top_self"][0]["function"], "spin");
        assert_eq!(json["top_self"][0]["share"], 0.6);
        assert_eq!(json["top_self"][1]["function"], "b");
        let total: Vec<(&str, u64)> = json["top_total"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["function"].as_str().unwrap(),
                    f["weight"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(total[..3], [("app", 10), ("main", 10), ("f", 6)]);
    }
}
