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

use flamegraph_perf_folded::{sanitize_name, FoldedStacks};
use inferno::flamegraph::{self, color::Palette, Direction};

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
    /// Frames narrower than this many pixels are omitted. Default: `0.1`.
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
    inferno_options.reverse_stack_order = options.reverse;
    inferno_options.count_name = sanitize_name(&options.count_name).into_owned();
    if options.inverted {
        inferno_options.direction = Direction::Inverted;
        if inferno_options.title == flamegraph::defaults::TITLE {
            inferno_options.title = "Icicle Graph".to_owned();
        }
    }
    // Lines come sorted from FoldedStacks; inferno re-sorts when reversing.
    inferno_options.no_sort = !options.reverse;

    let lines = stacks.to_lines();
    flamegraph::from_lines(
        &mut inferno_options,
        lines.iter().map(String::as_str),
        out,
    )?;
    Ok(())
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
