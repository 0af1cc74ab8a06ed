//! Folded text through the parser, text output and the SVG renderer;
//! the SVG must stay well-formed with one script (checked coarsely).
#![no_main]

use folded::FoldedStacks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(stacks) = FoldedStacks::parse(data) else {
        return;
    };
    let _ = stacks.to_lines();
    let _ = stacks.reversed();
    if stacks.is_empty() || stacks.total() == 0 {
        return;
    }
    let mut svg = Vec::new();
    if render::render_svg(&stacks, &render::Options::default(), &mut svg).is_ok() {
        let text = String::from_utf8_lossy(&svg);
        assert_eq!(text.matches("<script").count(), 1, "only the renderer's script");
    }
});
