//! Folded stacks → interactive SVG flamegraph, through inferno.
//!
//! [`render_svg`] takes a [`FoldedStacks`] and an [`Options`] and writes one
//! self-contained SVG with inferno's click-to-zoom, search and reset-zoom
//! script. Every string that reaches the SVG is either escaped by inferno
//! (frame names, title, subtitle) after being sanitized here, or fixed by this
//! crate (font type, name type, notes): nothing from a profile is inserted
//! into an unescaped position.

use std::io::{self, Write};
use std::str::FromStr;

use flamegraph_perf_folded::{sanitize_name, FoldedStacks, FrameId};
use inferno::flamegraph::{self, color::Palette, Direction};

mod diff;
mod side_by_side;

pub use diff::{render_diff_svg, DiffView};
pub use side_by_side::{render_side_by_side, SideBySide};

/// How to draw the flamegraph. Defaults follow the seed pipeline
/// (`flamegraph.pl --colors=java --hash`).
#[derive(Clone, Debug)]
pub struct Options {
    /// Title at the top of the graph. Default: `"Flame Graph"`; the CLI puts
    /// the recording's hostname here.
    pub title: String,
    /// Second line under the title. Default: none.
    pub subtitle: Option<String>,
    /// Colour palette name, one of [`PALETTES`]. Default: `"java"`, which
    /// colours `_[k]` kernel, `_[j]` JIT and `_[i]` inlined frames apart.
    pub colors: String,
    /// Colour by hash of the function name, so a function keeps its colour
    /// across graphs. Default: `true`.
    pub hash: bool,
    /// Image width in pixels; `None` makes the SVG fluid (fills the window).
    /// Default: `None`.
    pub width: Option<usize>,
    /// Frames narrower than this percentage of the graph's width are
    /// omitted (inferno's fluid-layout meaning of `--minwidth`). Default: `0.1`.
    pub min_width: f64,
    /// Reverse each stack (leaf becomes root) before merging. Default: `false`.
    pub reverse: bool,
    /// Icicle graph: grow top-down. Default: `false`.
    pub inverted: bool,
    /// What a unit of weight is called in tooltips. Default: `"samples"`.
    pub count_name: String,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            title: "Flame Graph".to_owned(),
            subtitle: None,
            colors: "java".to_owned(),
            hash: true,
            width: None,
            min_width: 0.1,
            reverse: false,
            inverted: false,
            count_name: "samples".to_owned(),
        }
    }
}

/// Palette names accepted in [`Options::colors`].
pub const PALETTES: &[&str] = Palette::VARIANTS;

/// Why a graph could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// [`Options::colors`] is not one of [`PALETTES`].
    #[error("unknown colour palette {0:?} (expected one of: {list})", list = PALETTES.join(", "))]
    UnknownPalette(String),
    /// An option value is out of range.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// There is nothing to draw.
    #[error("no stacks to render")]
    NoStacks,
    /// Writing the SVG failed (including a closed pipe).
    #[error("cannot write SVG: {0}")]
    Io(#[from] io::Error),
}

/// Writes `stacks` as an SVG flamegraph to `out`.
pub fn render_svg<W: Write>(
    stacks: &FoldedStacks,
    options: &Options,
    out: W,
) -> Result<(), RenderError> {
    if stacks.is_empty() {
        return Err(RenderError::NoStacks);
    }
    let mut inferno_options = inferno_options(options)?;
    let lines = visible_lines(stacks, options.reverse, options.min_width);
    draw_in_line_order(&mut inferno_options, lines.iter().map(String::as_str), out)
}

/// Has inferno draw `lines`, which are in its own (folded-line) order and
/// cut to their visible depth. Cut stacks break inferno's sortedness
/// check; its flame-chart mode takes lines in the given (reversed) order
/// without that check and is otherwise the same.
fn draw_in_line_order<'l, W: Write>(
    inferno_options: &mut flamegraph::Options<'_>,
    lines: impl DoubleEndedIterator<Item = &'l str>,
    out: W,
) -> Result<(), RenderError> {
    inferno_options.flame_chart = true;
    flamegraph::from_lines(inferno_options, lines.rev(), out)?;
    Ok(())
}

/// inferno's options for `options`, checked.
fn inferno_options(options: &Options) -> Result<flamegraph::Options<'static>, RenderError> {
    let palette = Palette::from_str(&options.colors)
        .map_err(|_| RenderError::UnknownPalette(options.colors.clone()))?;
    if !(options.min_width.is_finite() && options.min_width >= 0.0) {
        return Err(RenderError::InvalidOption(format!(
            "minimum width must be a non-negative number, got {}",
            options.min_width
        )));
    }
    if options.width == Some(0) {
        return Err(RenderError::InvalidOption("width must be positive".into()));
    }

    let mut inferno_options = flamegraph::Options::default();
    inferno_options.colors = palette;
    inferno_options.hash = options.hash;
    inferno_options.title = sanitize_name(&options.title).into_owned();
    inferno_options.subtitle = options
        .subtitle
        .as_deref()
        .map(|s| sanitize_name(s).into_owned());
    inferno_options.image_width = options.width;
    inferno_options.min_width = options.min_width;
    inferno_options.count_name = sanitize_name(&options.count_name).into_owned();
    if options.inverted {
        inferno_options.direction = Direction::Inverted;
        if inferno_options.title == flamegraph::defaults::TITLE {
            inferno_options.title = "Icicle Graph".to_owned();
        }
    }
    Ok(inferno_options)
}

/// Writes a valid SVG of the graph's size that shows `message` instead of
/// frames (for recordings without samples, where a script expects a file).
pub fn render_empty<W: Write>(
    options: &Options,
    message: &str,
    mut out: W,
) -> Result<(), RenderError> {
    let width = options.width.unwrap_or(1200);
    let escape = |s: &str| {
        sanitize_name(s)
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    write!(
        out,
        "<?xml version=\"1.0\" standalone=\"no\"?>\n\
         <svg version=\"1.1\" width=\"{width}\" height=\"80\" viewBox=\"0 0 {width} 80\" xmlns=\"http://www.w3.org/2000/svg\">\n\
         <rect x=\"0\" y=\"0\" width=\"100%\" height=\"100%\" fill=\"#eeeeee\"/>\n\
         <text x=\"50%\" y=\"30\" text-anchor=\"middle\" font-family=\"monospace\" font-size=\"17\">{}</text>\n\
         <text x=\"50%\" y=\"60\" text-anchor=\"middle\" font-family=\"monospace\" font-size=\"12\">{}</text>\n\
         </svg>\n",
        escape(&options.title),
        escape(message)
    )?;
    out.flush()?;
    Ok(())
}

/// The folded lines inferno needs to draw exactly what it would draw from
/// all of `stacks`, in the order it would process them: frames narrower
/// than `min_width` percent of the total are cut off (inferno omits them,
/// and everything above them), and runs of neighbouring stacks that become
/// identical are merged, so the space they took stays where it was. A
/// million distinct stacks shrink to the few thousand that can be seen,
/// which keeps rendering time and SVG size bounded.
fn visible_lines(stacks: &FoldedStacks, reverse: bool, min_width: f64) -> Vec<String> {
    let reversed;
    let stacks = if reverse {
        reversed = stacks.reversed();
        &reversed
    } else {
        stacks
    };
    // Text order groups every prefix (call-tree node) into one run, as in
    // inferno's own pass over its sorted lines.
    let entries = stacks.sorted();
    let cut = visible_depths(&entries, min_width);
    merge_visible(entries.iter().copied(), &cut, |sum, weight| *sum += weight)
        .into_iter()
        .map(|(prefix, sum)| line(stacks, prefix, sum))
        .collect()
}

/// Each stack cut to its visible depth (`cut`, from [`visible_depths`]),
/// with neighbours that become identical merged by `add`ing their weights,
/// so the space they took stays where it was.
pub(crate) fn merge_visible<'s, W>(
    entries: impl IntoIterator<Item = (&'s [FrameId], W)>,
    cut: &[usize],
    add: impl Fn(&mut W, W),
) -> Vec<(&'s [FrameId], W)> {
    let mut merged: Vec<(&[FrameId], W)> = Vec::new();
    for ((stack, weight), &keep) in entries.into_iter().zip(cut) {
        let visible = &stack[..keep];
        match merged.last_mut() {
            Some((prefix, sum)) if *prefix == visible => add(sum, weight),
            _ => merged.push((visible, weight)),
        }
    }
    merged
}

/// For stacks in folded-line order (each call-tree node is one contiguous
/// run): how many frames of each stay visible when nodes narrower than
/// `min_width` percent of the total are cut off, with everything above
/// them, as inferno omits them. A stack keeps at least its root frame: a
/// root narrower than the threshold is not drawn, but its weight still
/// counts in the total.
pub(crate) fn visible_depths(entries: &[(&[FrameId], u64)], min_width: f64) -> Vec<usize> {
    let total: u64 = entries.iter().map(|(_, w)| w).sum();
    let threshold = min_width * total as f64 / 100.0;
    let mut cut: Vec<usize> = entries.iter().map(|(s, _)| s.len()).collect();
    // Open nodes along the current path: (first entry, weight so far).
    let mut open: Vec<(usize, u64)> = Vec::new();
    let close =
        |node_depth: usize, (first, weight): (usize, u64), end: usize, cut: &mut [usize]| {
            if (weight as f64) < threshold {
                for c in &mut cut[first..end] {
                    *c = (*c).min(node_depth.max(1));
                }
            }
        };
    for i in 0..entries.len() {
        let shared = if i == 0 {
            0
        } else {
            common_prefix(entries[i - 1].0, entries[i].0)
        };
        while open.len() > shared {
            let depth = open.len() - 1;
            let node = open.pop().expect("non-empty");
            close(depth, node, i, &mut cut);
        }
        let (stack, weight) = entries[i];
        for node in &mut open {
            node.1 += weight;
        }
        open.extend((shared..stack.len()).map(|_| (i, weight)));
    }
    while let Some(node) = open.pop() {
        let depth = open.len();
        close(depth, node, entries.len(), &mut cut);
    }
    cut
}

fn line(stacks: &FoldedStacks, prefix: &[FrameId], weight: u64) -> String {
    format!("{} {weight}", stacks.stack_text(prefix))
}

fn common_prefix(a: &[FrameId], b: &[FrameId]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flamegraph_perf_folded::Annotation;
    use quick_xml::events::Event;

    /// Parses the whole SVG as XML (panicking if it is not well-formed) and
    /// asserts it holds exactly one `<script>` element: the renderer's own.
    fn assert_well_formed_with_one_script(svg: &[u8]) {
        let mut reader = quick_xml::Reader::from_reader(svg);
        reader.config_mut().check_end_names = true;
        let mut scripts = 0;
        let mut buf = Vec::new();
        loop {
            match reader.read_event_into(&mut buf).expect("well-formed XML") {
                Event::Eof => break,
                Event::Start(e) if e.name().as_ref() == b"script" => scripts += 1,
                _ => {}
            }
            buf.clear();
        }
        assert_eq!(scripts, 1, "exactly the renderer's own script");
    }

    #[test]
    fn hostile_names_stay_escaped_and_well_formed() {
        let mut stacks = FoldedStacks::new();
        let root = stacks.intern_name("evil<script>alert(1)</script>", Annotation::None);
        let leaf = stacks.intern_name("a]]>b\"c'\u{1}\0;d", Annotation::Kernel);
        stacks.add(&[root, leaf], 5);
        let mut svg = Vec::new();
        let options = Options {
            title: "host</title><script>x</script>".into(),
            ..Options::default()
        };
        render_svg(&stacks, &options, &mut svg).unwrap();
        assert_well_formed_with_one_script(&svg);
        let text = String::from_utf8(svg).unwrap();
        assert!(text.contains("evil&lt;script&gt;alert(1)"));
        assert!(!text.contains('\u{1}') && !text.contains('\0'));
    }

    fn render(stacks: &FoldedStacks, options: &Options) -> String {
        let mut svg = Vec::new();
        render_svg(stacks, options, &mut svg).unwrap();
        String::from_utf8(svg).unwrap()
    }

    /// What inferno draws from the full input and from the pruned lines
    /// must be the same picture.
    /// inferno's own rendering of every line, as the reference.
    fn inferno_reference(stacks: &FoldedStacks, options: &Options) -> String {
        let mut inferno_options = flamegraph::Options::default();
        inferno_options.colors = Palette::from_str(&options.colors).unwrap();
        inferno_options.hash = options.hash;
        inferno_options.title = options.title.clone();
        inferno_options.min_width = options.min_width;
        inferno_options.reverse_stack_order = options.reverse;
        let lines = stacks.to_lines();
        let mut reference = Vec::new();
        flamegraph::from_lines(
            &mut inferno_options,
            lines.iter().map(String::as_str),
            &mut reference,
        )
        .unwrap();
        String::from_utf8(reference).unwrap()
    }

    #[test]
    fn fixture_graphs_are_byte_identical_to_inferno_on_every_line() {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures");
        let mut compared = 0;
        for entry in std::fs::read_dir(fixtures).unwrap() {
            let path = entry.unwrap().path().join("expected.folded");
            let Ok(text) = std::fs::read(&path) else {
                continue;
            };
            let stacks = FoldedStacks::parse(&text[..]).unwrap();
            for reverse in [false, true] {
                let options = Options {
                    reverse,
                    min_width: 0.5,
                    ..Options::default()
                };
                assert_eq!(
                    render(&stacks, &options),
                    inferno_reference(&stacks, &options),
                    "{}",
                    path.display()
                );
            }
            compared += 1;
        }
        assert!(compared >= 10);
    }

    #[test]
    fn pruning_draws_exactly_what_inferno_draws() {
        let mut text = String::new();
        for i in 0..3000u32 {
            // A few wide stacks and many narrow ones under shared parents.
            let weight = if i % 1000 == 0 { 5000 } else { 1 + i % 3 };
            text.push_str(&format!("app;main;mid{};leaf{} {weight}\n", i % 7, i));
        }
        let stacks = FoldedStacks::parse(text.as_bytes()).unwrap();
        for (reverse, min_width) in [(false, 0.1), (true, 0.1), (false, 0.0), (false, 2.0)] {
            let options = Options {
                reverse,
                min_width,
                ..Options::default()
            };
            let ours = render(&stacks, &options);
            assert_eq!(
                ours,
                inferno_reference(&stacks, &options),
                "reverse={reverse} min_width={min_width}"
            );
        }
        assert!(visible_lines(&stacks, false, 0.1).len() < 100);
        assert_eq!(visible_lines(&stacks, false, 0.0).len(), 3000);
    }

    #[test]
    fn renders_frames_and_rejects_bad_palette() {
        let stacks = FoldedStacks::parse("proc;main;do_sendfile_[k] 7\n".as_bytes()).unwrap();
        let mut svg = Vec::new();
        render_svg(&stacks, &Options::default(), &mut svg).unwrap();
        assert_well_formed_with_one_script(&svg);
        let text = String::from_utf8(svg).unwrap();
        // The java palette colours by the suffix and shows the bare name.
        assert!(text.contains("<title>do_sendfile (7 samples, 100.00%)</title>"));
        assert!(text.contains("Reset Zoom"));
        let bad = Options {
            colors: "plaid".into(),
            ..Options::default()
        };
        assert!(matches!(
            render_svg(&stacks, &bad, Vec::new()),
            Err(RenderError::UnknownPalette(_))
        ));
    }
}
