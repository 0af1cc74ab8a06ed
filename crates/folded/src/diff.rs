//! Two profiles' stacks side by side, as difffolded.pl pairs them.

use std::io::{self, Write};

use crate::{FoldedStacks, Frame, FrameId};

/// How to pair two profiles.
#[derive(Clone, Copy, Debug, Default)]
pub struct DiffOptions {
    /// Scale the BEFORE counts so both sides have the same total (for
    /// recordings of different lengths or rates), rounding each to the
    /// nearest integer as difffolded.pl `-n` does. Default: `false`.
    pub normalize: bool,
}

/// Every stack of two profiles with its weight in each: the `stack before
/// after` lines of difffolded.pl, which a differential flamegraph draws in
/// AFTER's shape, coloured by the change. Stack texts are made only when
/// written, so a pair of million-stack profiles costs their frame ids, not
/// their text.
#[derive(Clone, Debug, Default)]
pub struct DiffStacks {
    /// The union of both sides' stacks; each stack's weight is one more
    /// than its index in `counts`.
    stacks: FoldedStacks,
    /// (BEFORE, AFTER) weight of each stack.
    counts: Vec<(u64, u64)>,
    before_total: u64,
    after_total: u64,
}

impl DiffStacks {
    /// Pairs `before` and `after` by stack text.
    pub fn new(before: &FoldedStacks, after: &FoldedStacks, options: DiffOptions) -> DiffStacks {
        let mut diff = DiffStacks::default();
        for (side, profile) in [before, after].into_iter().enumerate() {
            let counts = &mut diff.counts;
            diff.stacks.import(profile, |stacks, stack, weight| {
                let index = *stacks.stacks.entry(stack, || {
                    counts.push((0, 0));
                    counts.len() as u64
                }) - 1;
                let pair = &mut counts[index as usize];
                if side == 0 {
                    pair.0 += weight;
                } else {
                    pair.1 += weight;
                }
            });
        }
        diff.stacks.in_line_order = false;
        let raw_before: u64 = diff.counts.iter().map(|c| c.0).sum();
        diff.after_total = diff.counts.iter().map(|c| c.1).sum();
        if options.normalize && raw_before > 0 {
            let scale = diff.after_total as f64 / raw_before as f64;
            for pair in &mut diff.counts {
                pair.0 = (pair.0 as f64 * scale).round() as u64;
            }
        }
        diff.before_total = diff.counts.iter().map(|c| c.0).sum();
        diff
    }

    /// Stacks with their (BEFORE, AFTER) weights, in the byte order of their
    /// folded lines (see [`FoldedStacks::sorted`]).
    pub fn sorted(&self) -> Vec<(&[FrameId], u64, u64)> {
        self.stacks
            .sorted()
            .into_iter()
            .map(|(stack, index)| {
                let (before, after) = self.counts[index as usize - 1];
                (stack, before, after)
            })
            .collect()
    }

    /// The same pairs with every stack reversed (leaf first).
    pub fn reversed(&self) -> DiffStacks {
        let mut reversed = DiffStacks {
            stacks: FoldedStacks {
                frames: self.stacks.frames.clone(),
                ..FoldedStacks::default()
            },
            counts: self.counts.clone(),
            before_total: self.before_total,
            after_total: self.after_total,
        };
        let mut buf = Vec::new();
        for (stack, index) in self.stacks.iter() {
            buf.clear();
            buf.extend(stack.iter().rev());
            reversed.stacks.add(&buf, index);
        }
        reversed
    }

    /// The frame behind an id of [`DiffStacks::sorted`]'s stacks.
    pub fn frame(&self, id: FrameId) -> &Frame {
        self.stacks.frame(id)
    }

    /// One stack as folded text, without counts.
    pub fn stack_text(&self, stack: &[FrameId]) -> String {
        self.stacks.stack_text(stack)
    }

    /// Number of distinct stacks on either side.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// True when neither side has a stack.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Sum of the BEFORE weights (after scaling, when normalized).
    pub fn before_total(&self) -> u64 {
        self.before_total
    }

    /// Sum of the AFTER weights.
    pub fn after_total(&self) -> u64 {
        self.after_total
    }

    /// Writes `stack before after` lines in folded-line order, the format
    /// of difffolded.pl and inferno-diff-folded.
    pub fn write_folded<W: Write>(&self, mut out: W) -> io::Result<()> {
        for (stack, before, after) in self.sorted() {
            self.stacks.write_stack(&mut out, stack)?;
            writeln!(out, " {before} {after}")?;
        }
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folded(text: &str) -> FoldedStacks {
        FoldedStacks::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn pairs_by_stack_and_keeps_one_sided_stacks() {
        let before = folded("a;b 10\na;c 5\n");
        let after = folded("a;b 4\na;d_[k] 7\n");
        let diff = DiffStacks::new(&before, &after, DiffOptions::default());
        let mut text = Vec::new();
        diff.write_folded(&mut text).unwrap();
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "a;b 10 4\na;c 5 0\na;d_[k] 0 7\n"
        );
        assert_eq!((diff.before_total(), diff.after_total()), (15, 11));
    }

    #[test]
    fn normalize_scales_before_to_after_total() {
        let before = folded("a;b 100\na;c 300\n");
        let after = folded("a;b 50\na;c 150\n");
        let diff = DiffStacks::new(&before, &after, DiffOptions { normalize: true });
        let counts: Vec<(u64, u64)> = diff.sorted().iter().map(|l| (l.1, l.2)).collect();
        assert_eq!(counts, [(50, 50), (150, 150)]);
    }
}
