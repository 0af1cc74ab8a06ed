//! speedscope's JSON file format (a "sampled" profile), from folded stacks.

use std::io::Write;

use flamegraph_perf_folded::FoldedStacks;
use serde::Serialize;

use crate::ExportError;

#[derive(Serialize)]
struct File<'a> {
    #[serde(rename = "$schema")]
    schema: &'static str,
    shared: Shared,
    profiles: [SampledProfile<'a>; 1],
    name: &'a str,
    #[serde(rename = "activeProfileIndex")]
    active_profile_index: u32,
    exporter: String,
}

#[derive(Serialize)]
struct Shared {
    frames: Vec<FrameEntry>,
}

#[derive(Serialize)]
struct FrameEntry {
    name: String,
}

#[derive(Serialize)]
struct SampledProfile<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
    unit: &'static str,
    #[serde(rename = "startValue")]
    start_value: u64,
    #[serde(rename = "endValue")]
    end_value: u64,
    samples: Vec<Vec<u32>>,
    weights: Vec<u64>,
}

/// Writes `stacks` as one sampled speedscope profile named `name`. Each
/// stack (root first, frame names as in the folded output) becomes a
/// sample weighing its weight × `nanoseconds_per_weight` in nanoseconds,
/// or its weight as it is (unit `none`) when that is `None`.
pub fn write_speedscope<W: Write>(
    stacks: &FoldedStacks,
    name: &str,
    nanoseconds_per_weight: Option<u64>,
    mut out: W,
) -> Result<(), ExportError> {
    if stacks.is_empty() {
        return Err(ExportError::NoSamples);
    }
    let sorted = stacks.sorted();
    // Frames in first-use order of the sorted stacks: stable output.
    let mut index = vec![u32::MAX; stacks.frame_count()];
    let mut frames = Vec::new();
    let mut samples = Vec::with_capacity(sorted.len());
    let mut weights = Vec::with_capacity(sorted.len());
    for (stack, weight) in &sorted {
        let sample = stack
            .iter()
            .map(|&id| {
                if index[id as usize] == u32::MAX {
                    index[id as usize] = frames.len() as u32;
                    frames.push(FrameEntry {
                        name: stacks.frame(id).to_string(),
                    });
                }
                index[id as usize]
            })
            .collect();
        samples.push(sample);
        weights.push(weight.saturating_mul(nanoseconds_per_weight.unwrap_or(1)));
    }
    let total = weights.iter().sum();
    let file = File {
        schema: "https://www.speedscope.app/file-format-schema.json",
        shared: Shared { frames },
        profiles: [SampledProfile {
            kind: "sampled",
            name,
            unit: if nanoseconds_per_weight.is_some() {
                "nanoseconds"
            } else {
                "none"
            },
            start_value: 0,
            end_value: total,
            samples,
            weights,
        }],
        name,
        active_profile_index: 0,
        exporter: format!("flamegraph-perf {}", env!("CARGO_PKG_VERSION")),
    };
    serde_json::to_writer(&mut out, &file).map_err(std::io::Error::other)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}
