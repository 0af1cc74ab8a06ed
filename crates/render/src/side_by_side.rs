//! One self-contained HTML page with BEFORE, AFTER and their difference,
//! whose zoom and search follow each other.
//!
//! Each graph is one of our SVGs, shown in its own frame (loaded from a
//! `blob:` URL made from the page's own data, so nothing is fetched) with
//! a small script added that reports zoom, reset and search to the page
//! and replays what the other graphs report. Messages go through
//! `postMessage`, which works whatever origin the browser gives a local
//! file. A zoom travels as the path of frame names from the root, so it
//! finds the same call path in the other graphs, or its deepest ancestor
//! there when the path is missing on that side.

use std::io::Write;

use flamegraph_perf_folded::{DiffStacks, FoldedStacks};

use crate::diff::{render_diff_svg, DiffView};
use crate::{render_svg, Options, RenderError};

/// The three graphs of a comparison page.
#[derive(Clone, Copy, Debug)]
pub struct SideBySide<'a> {
    /// The BEFORE profile.
    pub before: &'a FoldedStacks,
    /// The AFTER profile.
    pub after: &'a FoldedStacks,
    /// Both, paired (see [`DiffStacks`]).
    pub diff: &'a DiffStacks,
    /// What BEFORE is called on the page (e.g. its file name).
    pub before_label: &'a str,
    /// What AFTER is called on the page.
    pub after_label: &'a str,
}

/// Added to every graph: syncs it with the page (see the module docs).
/// Runs after inferno's script, whose functions it wraps.
const SYNC_SCRIPT: &str = include_str!("sync.js");
/// The page's own script: loads the graphs and relays messages.
const PAGE_SCRIPT: &str = include_str!("page.js");

/// Writes the comparison page. `options` styles all three graphs; its
/// title heads the page.
pub fn render_side_by_side<W: Write>(
    graphs: SideBySide<'_>,
    options: &Options,
    view: DiffView,
    mut out: W,
) -> Result<(), RenderError> {
    let graph = |stacks: &FoldedStacks, label: &str| -> Result<String, RenderError> {
        let mut svg = Vec::new();
        let options = Options {
            title: label.to_owned(),
            subtitle: None,
            ..options.clone()
        };
        render_svg(stacks, &options, &mut svg)?;
        Ok(with_sync_script(svg))
    };
    let before = graph(graphs.before, graphs.before_label)?;
    let after = graph(graphs.after, graphs.after_label)?;
    let mut diff_svg = Vec::new();
    let diff_options = Options {
        title: format!(
            "Difference: {} shape; red grew, blue shrank",
            if view.negate { "BEFORE's" } else { "AFTER's" }
        ),
        subtitle: None,
        ..options.clone()
    };
    render_diff_svg(graphs.diff, &diff_options, view, &mut diff_svg)?;
    let diff = with_sync_script(diff_svg);

    let data = format!(
        "[{},{},{}]",
        json_string(&before),
        json_string(&after),
        json_string(&diff)
    );
    let title = html_escape(&options.title);
    write!(
        out,
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; frame-src blob:; img-src data: blob:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ margin: 0; font-family: Verdana, sans-serif; background: #fafafa; }}
header {{ padding: 8px 12px; }}
h1 {{ font-size: 18px; margin: 0 0 4px 0; }}
header p {{ font-size: 12px; margin: 0; color: #555; }}
.pair {{ display: flex; gap: 6px; }}
.pair > section {{ flex: 1 1 0; min-width: 0; }}
h2 {{ font-size: 13px; margin: 6px 12px; overflow-wrap: anywhere; }}
iframe {{ display: block; width: 100%; height: 300px; border: 1px solid #ddd; background: #fff; }}
</style>
</head>
<body>
<header>
<h1>{title}</h1>
<p>Click a frame to zoom, Ctrl-F or the Search control to search: the other graphs follow.</p>
</header>
<div class="pair">
<section><h2>BEFORE: {before_label}</h2><iframe id="before" title="BEFORE"></iframe></section>
<section><h2>AFTER: {after_label}</h2><iframe id="after" title="AFTER"></iframe></section>
</div>
<section><h2>AFTER compared with BEFORE</h2><iframe id="diff" title="difference"></iframe></section>
<script type="application/json" id="flamegraphs">{data}</script>
<script>
{PAGE_SCRIPT}
</script>
</body>
</html>
"#,
        before_label = html_escape(graphs.before_label),
        after_label = html_escape(graphs.after_label),
    )?;
    out.flush()?;
    Ok(())
}

/// Adds [`SYNC_SCRIPT`] just before the closing `</svg>`.
fn with_sync_script(svg: Vec<u8>) -> String {
    let svg = String::from_utf8(svg).expect("the renderer writes UTF-8");
    let end = svg.rfind("</svg>").unwrap_or(svg.len());
    debug_assert!(!SYNC_SCRIPT.contains("]]>"));
    format!(
        "{}<script type=\"text/ecmascript\"><![CDATA[\n{SYNC_SCRIPT}\n]]></script>\n{}",
        &svg[..end],
        &svg[end..]
    )
}

/// A JSON string literal that is also safe inside an HTML `<script>`:
/// `<` is escaped, so no `</script>` or `<!--` can appear.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8 + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn html_escape(text: &str) -> String {
    flamegraph_perf_folded::sanitize_name(text)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use flamegraph_perf_folded::DiffOptions;

    #[test]
    fn page_is_self_contained_and_escapes_everything() {
        let before =
            FoldedStacks::parse("srv;main;</script><script>alert(1) 3\n".as_bytes()).unwrap();
        let after = FoldedStacks::parse("srv;main;x 5\n".as_bytes()).unwrap();
        let diff = DiffStacks::new(&before, &after, DiffOptions::default());
        let mut page = Vec::new();
        let graphs = SideBySide {
            before: &before,
            after: &after,
            diff: &diff,
            before_label: "old<b>.data",
            after_label: "new.data",
        };
        render_side_by_side(graphs, &Options::default(), DiffView::default(), &mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        // Exactly the page's two scripts (the data and the code) open, and
        // the only other "<script" text is the SVGs' own, escaped in JSON.
        assert_eq!(page.matches("<script").count(), 2);
        assert!(page.contains("old&lt;b&gt;.data"));
        assert!(!page.contains("http://") || !page.contains("src=\"http"));
        assert!(!page.contains("src=\"http") && !page.contains("href=\"http"));
        let data_start = page.find("id=\"flamegraphs\">").unwrap();
        let data = &page[data_start..page[data_start..].find("</script>").unwrap() + data_start];
        assert!(!data.contains('<'));
    }

    #[test]
    fn json_strings_escape_controls_and_markup() {
        assert_eq!(
            json_string("a\"b\\c\n<\u{1}"),
            "\"a\\\"b\\\\c\\n\\u003c\\u0001\""
        );
    }
}
