//! Differential flamegraphs: one profile's shape, coloured by the change
//! from another (flamegraph.pl's differential mode, fed by difffolded.pl).

use std::collections::HashMap;
use std::io::Write;

use flamegraph_perf_folded::{sanitize_name, DiffStacks, FrameId};

use crate::Options;
use crate::{inferno_options, RenderError};

/// What a differential graph shows.
#[derive(Clone, Copy, Debug, Default)]
pub struct DiffView {
    /// Draw BEFORE's shape instead of AFTER's (flamegraph.pl `--negate` on
    /// swapped inputs): code paths that disappeared are visible, and red
    /// still means "grew". Default: `false` (AFTER's shape).
    pub negate: bool,
}

/// One node of the call tree as inferno lays it out, and what both sides
/// weigh there.
#[derive(Clone, Copy, Debug, Default)]
struct NodeWeights {
    before: u64,
    after: u64,
}

/// Writes a differential flamegraph of `diff` to `out`.
///
/// Frame widths are AFTER's weights (BEFORE's with [`DiffView::negate`]).
/// Colours follow difffolded.pl and flamegraph.pl: a frame is red where
/// its own (self) weight grew from BEFORE to AFTER, blue where it shrank,
/// white where it did not change, with saturation by the size of the
/// change. Frames narrower than [`Options::min_width`] are not drawn, and
/// their change counts towards their nearest drawn ancestor. Tooltips give the frame's total weight on both sides, each as a
/// share of its side's total, and the change.
pub fn render_diff_svg<W: Write>(
    diff: &DiffStacks,
    options: &Options,
    view: DiffView,
    mut out: W,
) -> Result<(), RenderError> {
    let mut inferno_options = inferno_options(options)?;
    inferno_options.negate_differentials = view.negate;
    let reversed;
    let diff = if options.reverse {
        reversed = diff.reversed();
        &reversed
    } else {
        diff
    };
    let entries = diff.sorted();
    let shown = |before: u64, after: u64| if view.negate { before } else { after };
    let shape: Vec<(&[FrameId], u64)> = entries
        .iter()
        .map(|&(stack, before, after)| (stack, shown(before, after)))
        .collect();
    if shape.iter().all(|&(_, w)| w == 0) {
        return Err(RenderError::NoStacks);
    }
    // As for plain graphs, only what inferno would draw is passed on: cut
    // stacks keep both sides' weights in their visible ancestor.
    let cut = crate::visible_depths(&shape, options.min_width);
    let merged = crate::merge_visible(
        entries
            .iter()
            .map(|&(stack, before, after)| (stack, (before, after))),
        &cut,
        |sum, (before, after)| {
            sum.0 += before;
            sum.1 += after;
        },
    );
    // inferno reads `stack original new` and draws `new`.
    let lines: Vec<(String, u64, u64)> = merged
        .into_iter()
        .map(|(stack, (before, after))| {
            let original = if view.negate { after } else { before };
            let text = diff.stack_text(stack);
            (
                format!("{text} {original} {}", shown(before, after)),
                before,
                after,
            )
        })
        .collect();
    let mut svg = Vec::new();
    crate::draw_in_line_order(
        &mut inferno_options,
        lines.iter().map(|(line, _, _)| line.as_str()),
        &mut svg,
    )?;
    let nodes = layout(&lines, view.negate);
    let svg = String::from_utf8(svg).map_err(|e| RenderError::Io(std::io::Error::other(e)))?;
    let count_name = sanitize_name(&options.count_name).into_owned();
    let totals = NodeWeights {
        before: diff.before_total(),
        after: diff.after_total(),
    };
    out.write_all(retitle(&svg, &nodes, totals, &count_name, options.inverted).as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Key of a drawn frame: depth ("all" is 0), start and width in shape units.
type NodeKey = (usize, u64, u64);

/// Replays inferno's merge of sorted lines (frames open while consecutive
/// lines share them; time advances by the shown weight) and records each
/// node's position with the weight both sides put under it.
fn layout(lines: &[(String, u64, u64)], negate: bool) -> HashMap<NodeKey, NodeWeights> {
    let mut nodes = HashMap::new();
    // Open path: (frame text, start, weights so far).
    let mut open: Vec<(&str, u64, NodeWeights)> = Vec::new();
    let mut time = 0u64;
    let mut close = |depth: usize, (_, start, weights): (&str, u64, NodeWeights), end: u64| {
        // Zero-width frames are drawn only with a minimum width of 0; where
        // several start at one place, they share the first one's numbers.
        nodes.entry((depth, start, end - start)).or_insert(weights);
    };
    for (line, before, after) in lines {
        let shown = if negate { *before } else { *after };
        // The stack is everything before the two counts.
        let stack = line.rsplitn(3, ' ').nth(2).unwrap_or("");
        let frames = std::iter::once("").chain(stack.split(';'));
        let mut depth = 0;
        let mut frames = frames.peekable();
        while depth < open.len() && frames.peek() == Some(&open[depth].0) {
            frames.next();
            depth += 1;
        }
        while open.len() > depth {
            let node = open.pop().expect("non-empty");
            close(open.len(), node, time);
        }
        for frame in frames {
            open.push((frame, time, NodeWeights::default()));
        }
        for node in &mut open {
            node.2.before += before;
            node.2.after += after;
        }
        time += shown;
    }
    while let Some(node) = open.pop() {
        close(open.len(), node, time);
    }
    nodes
}

/// Replaces each frame's tooltip with both sides' weights and the change.
/// A frame is found by its depth (the rank of its `y` among all frames'),
/// `fg:x` and `fg:w`.
fn retitle(
    svg: &str,
    nodes: &HashMap<NodeKey, NodeWeights>,
    totals: NodeWeights,
    count_name: &str,
    inverted: bool,
) -> String {
    const OPEN: &str = "<g><title>";
    let frames = parse_frames(svg);
    let mut ys: Vec<i64> = frames.iter().map(|f| f.y).collect();
    ys.sort_unstable();
    ys.dedup();
    if !inverted {
        ys.reverse();
    }
    let depth_of: HashMap<i64, usize> = ys.iter().enumerate().map(|(d, &y)| (y, d)).collect();
    let mut result = String::with_capacity(svg.len() + frames.len() * 48);
    let mut copied = 0;
    for frame in &frames {
        let Some(weights) = nodes.get(&(depth_of[&frame.y], frame.x, frame.w)) else {
            continue;
        };
        let title = &svg[frame.title.clone()];
        // The escaped name is everything before inferno's " (counts)".
        let name = title.rsplit_once(" (").map_or(title, |(name, _)| name);
        result.push_str(&svg[copied..frame.title.start]);
        result.push_str(name);
        result.push_str(" (");
        result.push_str(&describe(*weights, totals, count_name));
        result.push(')');
        copied = frame.title.end;
    }
    result.push_str(&svg[copied..]);
    debug_assert!(result.matches(OPEN).count() == svg.matches(OPEN).count());
    result
}

fn describe(weights: NodeWeights, totals: NodeWeights, count_name: &str) -> String {
    let share = |part: u64, total: u64| {
        if total == 0 {
            0.0
        } else {
            100.0 * part as f64 / total as f64
        }
    };
    let change = weights.after as i128 - weights.before as i128;
    format!(
        "before {} {count_name}, {:.2}%; after {} {count_name}, {:.2}%; {}{} {count_name}",
        thousands(weights.before as i128),
        share(weights.before, totals.before),
        thousands(weights.after as i128),
        share(weights.after, totals.after),
        if change > 0 { "+" } else { "" },
        thousands(change),
    )
}

/// `1234567` → `1,234,567` (as inferno writes counts).
fn thousands(n: i128) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        let left = digits.len() - i;
        if i > 0 && left / 3 * 3 == left {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A frame of inferno's SVG: where its title text is, and its geometry.
struct SvgFrame {
    title: std::ops::Range<usize>,
    y: i64,
    x: u64,
    w: u64,
}

/// Finds `<g><title>…</title><rect … y="…" … fg:x="…" fg:w="…"/>` frames.
fn parse_frames(svg: &str) -> Vec<SvgFrame> {
    const OPEN: &str = "<g><title>";
    let mut frames = Vec::new();
    let mut at = 0;
    while let Some(found) = svg[at..].find(OPEN) {
        let start = at + found + OPEN.len();
        let Some(len) = svg[start..].find("</title>") else {
            break;
        };
        let title = start..start + len;
        let rect_start = title.end;
        let rect_end = svg[rect_start..]
            .find("/>")
            .map_or(svg.len(), |e| rect_start + e);
        let rect = &svg[rect_start..rect_end];
        let attr = |name: &str| -> Option<&str> {
            let key = format!(" {name}=\"");
            let from = rect.find(&key)? + key.len();
            let len = rect[from..].find('"')?;
            Some(&rect[from..from + len])
        };
        let parsed = (|| {
            Some(SvgFrame {
                title: title.clone(),
                y: attr("y")?.parse::<f64>().ok()?.round() as i64,
                x: attr("fg:x")?.parse().ok()?,
                w: attr("fg:w")?.parse().ok()?,
            })
        })();
        if let Some(frame) = parsed {
            frames.push(frame);
        }
        at = rect_end;
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use flamegraph_perf_folded::{DiffOptions, FoldedStacks};

    fn diff(before: &str, after: &str) -> DiffStacks {
        DiffStacks::new(
            &FoldedStacks::parse(before.as_bytes()).unwrap(),
            &FoldedStacks::parse(after.as_bytes()).unwrap(),
            DiffOptions::default(),
        )
    }

    fn titles(svg: &str) -> Vec<String> {
        parse_frames(svg)
            .into_iter()
            .map(|f| svg[f.title].to_owned())
            .collect()
    }

    #[test]
    fn tooltips_show_both_sides_and_the_change() {
        let d = diff(
            "srv;main;do_sendfile_[k] 60\nsrv;main;parse 40\n",
            "srv;main;do_sendfile_[k] 30\nsrv;main;copy_loop 50\nsrv;main;parse 20\n",
        );
        let mut svg = Vec::new();
        render_diff_svg(&d, &Options::default(), DiffView::default(), &mut svg).unwrap();
        let svg = String::from_utf8(svg).unwrap();
        let titles = titles(&svg);
        assert!(titles.contains(
            &"do_sendfile (before 60 samples, 60.00%; after 30 samples, 30.00%; -30 samples)"
                .to_owned()
        ));
        assert!(titles.contains(
            &"copy_loop (before 0 samples, 0.00%; after 50 samples, 50.00%; +50 samples)"
                .to_owned()
        ));
        assert!(titles.contains(
            &"main (before 100 samples, 100.00%; after 100 samples, 100.00%; 0 samples)".to_owned()
        ));
        // Red for growth, blue for shrinkage.
        let fill_of = |name: &str| {
            let at = svg.find(&format!("<title>{name} (")).unwrap();
            let fill = svg[at..].find("fill=\"").unwrap() + at + 6;
            svg[fill..fill + svg[fill..].find('"').unwrap()].to_owned()
        };
        let rgb = |s: String| -> (u8, u8, u8) {
            let v: Vec<u8> = s
                .trim_start_matches("rgb(")
                .trim_end_matches(')')
                .split(',')
                .map(|c| c.parse().unwrap())
                .collect();
            (v[0], v[1], v[2])
        };
        let (r, _, b) = rgb(fill_of("copy_loop"));
        assert!(r > b, "grown frame is red");
        let (r, _, b) = rgb(fill_of("do_sendfile"));
        assert!(b > r, "shrunk frame is blue");
    }

    #[test]
    fn negate_draws_the_before_shape_and_keeps_red_for_growth() {
        let d = diff(
            "srv;main;gone 40\nsrv;main;stays 60\n",
            "srv;main;stays 30\nsrv;main;new 70\n",
        );
        let mut svg = Vec::new();
        let view = DiffView { negate: true };
        render_diff_svg(&d, &Options::default(), view, &mut svg).unwrap();
        let svg = String::from_utf8(svg).unwrap();
        let titles = titles(&svg);
        assert!(titles.iter().any(|t| t.starts_with("gone (before 40")));
        assert!(!titles.iter().any(|t| t.starts_with("new (")));
        let at = svg.find("<title>stays (").unwrap();
        let fill = &svg[at..][svg[at..].find("fill=\"rgb(").unwrap() + 10..];
        let v: Vec<u8> = fill[..fill.find(')').unwrap()]
            .split(',')
            .map(|c| c.parse().unwrap())
            .collect();
        assert!(v[2] > v[0], "stays shrank (60 → 30): blue");
    }

    #[test]
    fn every_frame_gets_a_new_title() {
        let mut before = String::new();
        let mut after = String::new();
        for i in 0..200 {
            before.push_str(&format!("p;a{};b{} {}\n", i % 13, i % 7, 1 + i % 5));
            after.push_str(&format!("p;a{};b{} {}\n", i % 11, i % 7, 1 + i % 3));
        }
        let d = diff(&before, &after);
        for inverted in [false, true] {
            let options = Options {
                inverted,
                min_width: 0.0,
                ..Options::default()
            };
            let mut svg = Vec::new();
            render_diff_svg(&d, &options, DiffView::default(), &mut svg).unwrap();
            let svg = String::from_utf8(svg).unwrap();
            let titles = titles(&svg);
            assert!(titles.len() > 20);
            for t in &titles {
                assert!(t.contains("; after "), "{t}");
            }
        }
    }

    #[test]
    fn huge_diffs_draw_only_visible_frames_and_keep_every_sample() {
        let mut before = String::new();
        let mut after = String::new();
        for i in 0..20_000 {
            before.push_str(&format!("p;mid{};leaf{i} {}\n", i % 5, 1 + i % 3));
            after.push_str(&format!("p;mid{};leaf{i} {}\n", i % 4, 1 + i % 2));
        }
        let d = diff(&before, &after);
        let mut svg = Vec::new();
        render_diff_svg(&d, &Options::default(), DiffView::default(), &mut svg).unwrap();
        let svg = String::from_utf8(svg).unwrap();
        let titles = titles(&svg);
        assert!(titles.len() < 50, "{} frames drawn", titles.len());
        let all = format!(
            "all (before {} samples, 100.00%; after {} samples, 100.00%; {} samples)",
            thousands(d.before_total() as i128),
            thousands(d.after_total() as i128),
            thousands(d.after_total() as i128 - d.before_total() as i128)
        );
        assert!(titles.contains(&all), "{all}");
        // mid4 exists only before: not drawn in AFTER's shape, but its
        // samples are in p's BEFORE count.
        assert!(!titles.iter().any(|t| t.starts_with("mid4 (")));
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(-1234567), "-1,234,567");
    }
}
