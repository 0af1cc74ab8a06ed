//! Two profiles' stacks side by side, as difffolded.pl pairs them.

use std::collections::BTreeMap;
use std::io::{self, Write};

use crate::FoldedStacks;

/// How to pair two profiles.
#[derive(Clone, Copy, Debug, Default)]
pub struct DiffOptions {
    /// Scale the BEFORE counts so both sides have the same total (for
    /// recordings of different lengths or rates), rounding each to the
    /// nearest integer as difffolded.pl `-n` does. Default: `false`.
    pub normalize: bool,
}

/// One stack in both profiles: its folded text and its weight in each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiffLine {
    /// The stack as folded text, root first, without the counts.
    pub stack: String,
    /// Weight in BEFORE (scaled when normalized); 0 if absent there.
    pub before: u64,
    /// Weight in AFTER; 0 if absent there.
    pub after: u64,
}

/// Every stack of two profiles with its weight in each, sorted by stack
/// text: the `stack before after` lines of difffolded.pl, which a
/// differential flamegraph draws in AFTER's shape, coloured by the change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiffStacks {
    lines: Vec<DiffLine>,
    before_total: u64,
    after_total: u64,
}

impl DiffStacks {
    /// Pairs `before` and `after` by stack text.
    pub fn new(before: &FoldedStacks, after: &FoldedStacks, options: DiffOptions) -> DiffStacks {
        let mut pairs: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for (stack, weight) in before.iter() {
            pairs.entry(before.stack_text(stack)).or_default().0 += weight;
        }
        for (stack, weight) in after.iter() {
            pairs.entry(after.stack_text(stack)).or_default().1 += weight;
        }
        let raw_before = before.total();
        let after_total = after.total();
        let scale = |count: u64| -> u64 {
            if options.normalize && raw_before > 0 {
                (count as f64 * after_total as f64 / raw_before as f64).round() as u64
            } else {
                count
            }
        };
        let lines: Vec<DiffLine> = pairs
            .into_iter()
            .map(|(stack, (b, a))| DiffLine {
                stack,
                before: scale(b),
                after: a,
            })
            .collect();
        let before_total = lines.iter().map(|l| l.before).sum();
        DiffStacks {
            lines,
            before_total,
            after_total,
        }
    }

    /// The pairs, sorted by stack text.
    pub fn lines(&self) -> &[DiffLine] {
        &self.lines
    }

    /// Sum of the BEFORE weights (after scaling, when normalized).
    pub fn before_total(&self) -> u64 {
        self.before_total
    }

    /// Sum of the AFTER weights.
    pub fn after_total(&self) -> u64 {
        self.after_total
    }

    /// True when neither side has a stack.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Writes `stack before after` lines, the format of difffolded.pl and
    /// inferno-diff-folded.
    pub fn write_folded<W: Write>(&self, mut out: W) -> io::Result<()> {
        for line in &self.lines {
            writeln!(out, "{} {} {}", line.stack, line.before, line.after)?;
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
        let counts: Vec<(u64, u64)> = diff.lines().iter().map(|l| (l.before, l.after)).collect();
        assert_eq!(counts, [(50, 50), (150, 150)]);
    }
}
