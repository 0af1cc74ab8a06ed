//! Folded stacks: the structured boundary between collapsing and rendering.
//!
//! A [`FoldedStacks`] holds weighted stacks of [`Frame`]s, root first. Frame
//! names are sanitized when they enter (see [`sanitize_name`]), so every
//! consumer can rely on them: no `;` (it would split a frame in the text
//! form), no control characters, bounded length. Text (`a;b;c 12` lines) is
//! produced or parsed only at the edges, by [`FoldedStacks::write_folded`] and
//! [`FoldedStacks::parse`].

pub mod seq_table;

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use seq_table::SeqTable;

type FxHashMap<K, V> = HashMap<K, V, BuildHasherDefault<rustc_hash::FxHasher>>;
use std::fmt;
use std::io::{self, BufRead, Write};

/// Longest frame name kept, in bytes; longer names are cut at a character
/// boundary and end in `…`.
pub const MAX_NAME_BYTES: usize = 4096;

/// What kind of code a frame stands for. In the text form it is the
/// stackcollapse-perf suffix (`_[k]`, `_[j]`, `_[i]`), which the java palette
/// of the renderer colours by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Annotation {
    /// Ordinary user-space code (or the process root frame): no suffix.
    None,
    /// Kernel code: `_[k]`.
    Kernel,
    /// JIT-compiled code (perf map symbols): `_[j]`.
    Jit,
    /// A function inlined into its caller: `_[i]`.
    Inlined,
}

impl Annotation {
    /// The suffix this annotation adds in folded text.
    pub fn suffix(self) -> &'static str {
        match self {
            Annotation::None => "",
            Annotation::Kernel => "_[k]",
            Annotation::Jit => "_[j]",
            Annotation::Inlined => "_[i]",
        }
    }

    /// Splits a known suffix off a folded-text frame.
    pub fn split_suffix(text: &str) -> (&str, Annotation) {
        for annotation in [Annotation::Kernel, Annotation::Jit, Annotation::Inlined] {
            if let Some(name) = text.strip_suffix(annotation.suffix()) {
                if !name.is_empty() {
                    return (name, annotation);
                }
            }
        }
        (text, Annotation::None)
    }
}

/// One frame of a folded stack: a sanitized name plus its annotation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frame {
    name: Box<str>,
    annotation: Annotation,
}

impl Frame {
    /// Makes a frame, sanitizing `name` (see [`sanitize_name`]).
    pub fn new(name: &str, annotation: Annotation) -> Frame {
        Frame {
            name: sanitize_name(name).into_owned().into_boxed_str(),
            annotation,
        }
    }

    /// The sanitized name, without annotation suffix.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The frame's annotation.
    pub fn annotation(&self) -> Annotation {
        self.annotation
    }
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        f.write_str(self.annotation.suffix())
    }
}

/// Makes a name safe for folded text and for the SVG: `;` becomes `:` (as
/// stackcollapse-perf does for function names, so it never splits a frame),
/// control characters (C0, DEL, C1) and Unicode bidi overrides become `�`,
/// an empty name becomes `[unknown]`, and names longer than
/// [`MAX_NAME_BYTES`] are cut and end in `…`.
pub fn sanitize_name(name: &str) -> Cow<'_, str> {
    let needs_change = name.is_empty()
        || name.len() > MAX_NAME_BYTES
        || name.chars().any(|c| c == ';' || is_unsafe_char(c));
    if !needs_change {
        return Cow::Borrowed(name);
    }
    if name.is_empty() {
        return Cow::Borrowed("[unknown]");
    }
    let mut out = String::with_capacity(name.len().min(MAX_NAME_BYTES + 3));
    for c in name.chars() {
        if out.len() + c.len_utf8() > MAX_NAME_BYTES {
            out.push('…');
            break;
        }
        out.push(match c {
            ';' => ':',
            c if is_unsafe_char(c) => '\u{FFFD}',
            c => c,
        });
    }
    Cow::Owned(out)
}

/// Characters that must never reach folded text or XML: control characters
/// (including NUL, tab and newlines) and the bidi controls that can make a
/// name display as something else.
fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// Index of an interned frame in a [`FoldedStacks`].
pub type FrameId = u32;

/// Weighted stacks of frames, root first, with identical stacks merged.
///
/// Frames are interned: each distinct [`Frame`] is stored once and stacks are
/// sequences of [`FrameId`]s. Weights are sample counts or summed periods,
/// whatever the producer chose; [`FoldedStacks::total`] is their sum.
#[derive(Clone, Debug, Default)]
pub struct FoldedStacks {
    frames: Vec<Frame>,
    frame_ids: FxHashMap<Frame, FrameId>,
    stacks: SeqTable<FrameId, u64>,
}

/// A folded text line that could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The input could not be read.
    #[error("cannot read folded stacks: {0}")]
    Io(#[from] io::Error),
    /// A line does not end in a count.
    #[error("line {line}: expected `frame;frame;... COUNT`, found {text:?}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// The start of the offending line.
        text: String,
    },
}

impl FoldedStacks {
    /// An empty set of stacks.
    pub fn new() -> FoldedStacks {
        FoldedStacks::default()
    }

    /// An empty set with room for `stacks` stacks of `frames` frames in all.
    pub fn with_capacity(stacks: usize, frames: usize) -> FoldedStacks {
        FoldedStacks {
            stacks: SeqTable::with_capacity(stacks, frames),
            ..FoldedStacks::default()
        }
    }

    /// Interns a frame, returning its id.
    pub fn intern(&mut self, frame: Frame) -> FrameId {
        if let Some(&id) = self.frame_ids.get(&frame) {
            return id;
        }
        let id = FrameId::try_from(self.frames.len()).expect("fewer than 2^32 distinct frames");
        self.frames.push(frame.clone());
        self.frame_ids.insert(frame, id);
        id
    }

    /// Interns a frame given by name and annotation.
    pub fn intern_name(&mut self, name: &str, annotation: Annotation) -> FrameId {
        self.intern(Frame::new(name, annotation))
    }

    /// The frame behind an id.
    ///
    /// # Panics
    /// If `id` did not come from this `FoldedStacks`.
    pub fn frame(&self, id: FrameId) -> &Frame {
        &self.frames[id as usize]
    }

    /// Adds `weight` to a stack (root first). Empty stacks and zero weights
    /// are ignored.
    pub fn add(&mut self, stack: &[FrameId], weight: u64) {
        if stack.is_empty() || weight == 0 {
            return;
        }
        *self.stacks.entry(stack, || 0) += weight;
    }

    /// Number of distinct stacks.
    pub fn len(&self) -> usize {
        self.stacks.len()
    }

    /// True when there are no stacks.
    pub fn is_empty(&self) -> bool {
        self.stacks.is_empty()
    }

    /// Sum of all weights.
    pub fn total(&self) -> u64 {
        self.stacks.iter().map(|(_, &w)| w).sum()
    }

    /// Stacks with their weights, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&[FrameId], u64)> {
        self.stacks.iter().map(|(s, &w)| (s, w))
    }

    /// Formats one stack as folded text without the count.
    pub fn stack_text(&self, stack: &[FrameId]) -> String {
        let mut text = String::new();
        for (i, &id) in stack.iter().enumerate() {
            if i > 0 {
                text.push(';');
            }
            let frame = self.frame(id);
            text.push_str(frame.name());
            text.push_str(frame.annotation().suffix());
        }
        text
    }

    /// Stacks with weights in the byte order of their folded text lines
    /// (`a;b;c 12`), the order `sort` and inferno give them, computed
    /// without building the lines: at the first differing frame, the frame
    /// texts decide, and where one text is a prefix of the other, the
    /// separator after it (`;` or the space before the count) does.
    pub fn sorted(&self) -> Vec<(&[FrameId], u64)> {
        let texts: Vec<String> = self.frames.iter().map(Frame::to_string).collect();
        let mut stacks: Vec<(&[FrameId], u64)> = self.iter().collect();
        // A line is a sequence of tokens: a frame's text followed by `;`
        // when more frames follow, by the space before the count when it is
        // the last. Ranking all tokens once turns line comparison into
        // comparing rank sequences, sortable by multikey quicksort in time
        // proportional to the distinguishing prefixes.
        let mut tokens: Vec<(String, u32, bool)> = Vec::with_capacity(texts.len() * 2);
        for (id, text) in texts.iter().enumerate() {
            tokens.push((format!("{text};"), id as u32, false));
            tokens.push((format!("{text} "), id as u32, true));
        }
        tokens.sort_unstable();
        // Exact unless an ending token is a prefix of another token (a
        // name with a space that extends another name): then the digits of
        // the count can decide, so compare whole lines instead.
        let ambiguous = tokens
            .windows(2)
            .any(|w| w[0].2 && w[1].0.starts_with(w[0].0.as_str()));
        if ambiguous {
            return self.sorted_by_lines(texts, stacks);
        }
        let mut continues = vec![0u32; texts.len()];
        let mut ends = vec![0u32; texts.len()];
        for (rank, (_, id, end)) in tokens.iter().enumerate() {
            let rank = rank as u32 + 1;
            if *end {
                ends[*id as usize] = rank;
            } else {
                continues[*id as usize] = rank;
            }
        }
        let key = |stack: &[FrameId], depth: usize| -> u32 {
            match stack.get(depth) {
                None => 0,
                Some(&frame) if depth + 1 == stack.len() => ends[frame as usize],
                Some(&frame) => continues[frame as usize],
            }
        };
        multikey_quicksort(&mut stacks, 0, &key);
        stacks
    }

    /// The general comparison, for stacks whose order needs the whole line.
    fn sorted_by_lines<'s>(
        &'s self,
        texts: Vec<String>,
        mut stacks: Vec<(&'s [FrameId], u64)>,
    ) -> Vec<(&'s [FrameId], u64)> {
        let mut order: Vec<u32> = (0..texts.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| texts[a as usize].cmp(&texts[b as usize]));
        let mut rank = vec![0u32; texts.len()];
        for (r, &id) in order.iter().enumerate() {
            rank[id as usize] = r as u32;
        }
        stacks.sort_unstable_by(|&(a, wa), &(b, wb)| {
            let k = a.iter().zip(b).take_while(|(x, y)| x == y).count();
            let (ta, tb) = match (a.get(k), b.get(k)) {
                // One stack is a prefix of the other: its space sorts before `;`.
                (None, Some(_)) => return Ordering::Less,
                (Some(_), None) => return Ordering::Greater,
                (None, None) => return wa.to_string().cmp(&wb.to_string()),
                (Some(&fa), Some(&fb)) => (&texts[fa as usize], &texts[fb as usize]),
            };
            let separator = |stack: &[FrameId]| if k + 1 < stack.len() { b';' } else { b' ' };
            let prefix_order = if tb.starts_with(ta.as_str()) {
                separator(a).cmp(&tb.as_bytes()[ta.len()])
            } else if ta.starts_with(tb.as_str()) {
                ta.as_bytes()[tb.len()].cmp(&separator(b))
            } else {
                return rank[a[k] as usize].cmp(&rank[b[k] as usize]);
            };
            if prefix_order != Ordering::Equal {
                return prefix_order;
            }
            let line =
                |stack: &[FrameId], weight: u64| format!("{} {weight}", self.stack_text(stack));
            line(a, wa).cmp(&line(b, wb))
        });
        stacks
    }

    /// The same stacks with every stack reversed (leaf first), for
    /// "who calls this" graphs.
    pub fn reversed(&self) -> FoldedStacks {
        let mut reversed = FoldedStacks {
            frames: self.frames.clone(),
            frame_ids: self.frame_ids.clone(),
            stacks: SeqTable::new(),
        };
        let mut buf = Vec::new();
        for (stack, weight) in self.iter() {
            buf.clear();
            buf.extend(stack.iter().rev());
            reversed.add(&buf, weight);
        }
        reversed
    }

    /// All stacks as folded text lines (`a;b;c 12`), sorted bytewise so the
    /// output is deterministic.
    pub fn to_lines(&self) -> Vec<String> {
        self.sorted()
            .into_iter()
            .map(|(stack, weight)| format!("{} {weight}", self.stack_text(stack)))
            .collect()
    }

    /// Writes the folded text form, one sorted line per stack.
    pub fn write_folded<W: Write>(&self, mut out: W) -> io::Result<()> {
        for (stack, weight) in self.sorted() {
            for (i, &id) in stack.iter().enumerate() {
                if i > 0 {
                    out.write_all(b";")?;
                }
                let frame = self.frame(id);
                out.write_all(frame.name().as_bytes())?;
                out.write_all(frame.annotation().suffix().as_bytes())?;
            }
            writeln!(out, " {weight}")?;
        }
        out.flush()
    }

    /// Parses folded text (`frame;frame;... COUNT` per line, as written by
    /// stackcollapse tools). Blank lines are skipped; annotation suffixes
    /// become [`Annotation`]s; names are sanitized like any other.
    pub fn parse<R: BufRead>(input: R) -> Result<FoldedStacks, ParseError> {
        let mut folded = FoldedStacks::new();
        let mut stack = Vec::new();
        for (index, line) in input.split(b'\n').enumerate() {
            let line = line?;
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\r', ' ', '\t']);
            if line.is_empty() {
                continue;
            }
            let bad_line = || ParseError::BadLine {
                line: index + 1,
                text: line.chars().take(80).collect(),
            };
            let (frames, count) = line.rsplit_once([' ', '\t']).ok_or_else(bad_line)?;
            // Counts may be fractional in some tools' output; keep the integer part.
            let count = count.split('.').next().unwrap_or("");
            let count: u64 = count.parse().map_err(|_| bad_line())?;
            stack.clear();
            for text in frames.split(';') {
                let (name, annotation) = Annotation::split_suffix(text);
                stack.push(folded.intern_name(name, annotation));
            }
            folded.add(&stack, count);
        }
        Ok(folded)
    }
}

/// Bentley–Sedgewick multikey quicksort of stacks by `key(stack, depth)`
/// (0 past the end): a three-way partition on the key at `depth`, then the
/// equal part continues one level deeper.
fn multikey_quicksort(
    items: &mut [(&[FrameId], u64)],
    mut depth: usize,
    key: &(impl Fn(&[FrameId], usize) -> u32 + Sync),
) {
    let mut items = items;
    loop {
        if items.len() <= 12 {
            items.sort_unstable_by(|a, b| {
                let mut d = depth;
                loop {
                    let (ka, kb) = (key(a.0, d), key(b.0, d));
                    if ka != kb || ka == 0 {
                        return ka.cmp(&kb);
                    }
                    d += 1;
                }
            });
            return;
        }
        let (first, middle, last) = (
            key(items[0].0, depth),
            key(items[items.len() / 2].0, depth),
            key(items[items.len() - 1].0, depth),
        );
        let pivot = first.max(middle.min(last)).min(middle.max(last));
        // Three-way partition: [< pivot][== pivot][> pivot].
        let (mut lt, mut i, mut gt) = (0, 0, items.len());
        while i < gt {
            let k = key(items[i].0, depth);
            if k < pivot {
                items.swap(lt, i);
                lt += 1;
                i += 1;
            } else if k > pivot {
                gt -= 1;
                items.swap(i, gt);
            } else {
                i += 1;
            }
        }
        let (smaller, rest) = items.split_at_mut(lt);
        let (equal, larger) = rest.split_at_mut(gt - lt);
        if smaller.len() + larger.len() > 1 << 14 {
            rayon::join(
                || multikey_quicksort(smaller, depth, key),
                || multikey_quicksort(larger, depth, key),
            );
        } else {
            multikey_quicksort(smaller, depth, key);
            multikey_quicksort(larger, depth, key);
        }
        if pivot == 0 {
            return;
        }
        items = equal;
        depth += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_replaces_separator_and_controls() {
        assert_eq!(sanitize_name("a;b"), "a:b");
        assert_eq!(
            sanitize_name("x\0y\nz\u{202E}"),
            "x\u{FFFD}y\u{FFFD}z\u{FFFD}"
        );
        assert_eq!(sanitize_name(""), "[unknown]");
        assert!(matches!(sanitize_name("plain name"), Cow::Borrowed(_)));
    }

    #[test]
    fn sanitize_caps_long_names_on_char_boundary() {
        let long = "é".repeat(MAX_NAME_BYTES);
        let capped = sanitize_name(&long);
        assert!(capped.len() <= MAX_NAME_BYTES + '…'.len_utf8());
        assert!(capped.ends_with('…'));
    }

    #[test]
    fn merges_identical_stacks_and_round_trips_text() {
        let text = "proc;main;work_[k] 3\nproc;main 2\nproc;main;work_[k] 4\n";
        let folded = FoldedStacks::parse(text.as_bytes()).unwrap();
        assert_eq!(folded.len(), 2);
        assert_eq!(folded.total(), 9);
        assert_eq!(
            folded.to_lines(),
            vec!["proc;main 2", "proc;main;work_[k] 7"]
        );
        let work = folded
            .iter()
            .find(|(s, _)| s.len() == 3)
            .map(|(s, _)| folded.frame(s[2]).clone())
            .unwrap();
        assert_eq!(work.name(), "work");
        assert_eq!(work.annotation(), Annotation::Kernel);
    }

    #[test]
    fn sorted_matches_sorting_the_text_lines() {
        // Prefix names (`foo` / `foo.isra.0` / `foo bar`), spaces, and
        // stacks that are prefixes of others all sort as their text does.
        // With names that extend others after a space (`foo 7`): whole lines decide.
        let text = "p;foo 5\np;foo.isra.0;x 3\np;foo;bar 2\np;foo bar 1\np;foo 7;z 4\n\
                    p;fo 9\np 1\nq;a_[k] 2\nq;a;b 3\nq;a 12\np;foo 1;y 6\n";
        let folded = FoldedStacks::parse(text.as_bytes()).unwrap();
        let mut expected: Vec<String> = folded
            .iter()
            .map(|(s, w)| format!("{} {w}", folded.stack_text(s)))
            .collect();
        expected.sort();
        assert_eq!(folded.to_lines(), expected);
        let mut written = Vec::new();
        folded.write_folded(&mut written).unwrap();
        assert_eq!(
            String::from_utf8(written).unwrap(),
            expected.join("\n") + "\n"
        );
        let reversed = folded.reversed();
        assert!(reversed.to_lines().contains(&"bar;foo;p 2".to_owned()));
        assert_eq!(reversed.total(), folded.total());

        // Without such names: the token-rank sort, on many random stacks.
        let mut text = String::new();
        let names = ["a", "ab", "a.isra.0", "b", "a_[k]", "z", "A", "\u{e9}"];
        let mut state = 12345u64;
        for i in 0..3000 {
            let mut line = String::from("root");
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            for d in 0..(state >> 60) as usize + 1 {
                line.push(';');
                line.push_str(names[((state >> (d * 3)) & 7) as usize]);
            }
            text.push_str(&format!("{line} {}\n", i % 97 + 1));
        }
        let folded = FoldedStacks::parse(text.as_bytes()).unwrap();
        let mut expected: Vec<String> = folded
            .iter()
            .map(|(s, w)| format!("{} {w}", folded.stack_text(s)))
            .collect();
        expected.sort();
        assert_eq!(folded.to_lines(), expected);
    }

    #[test]
    fn rejects_lines_without_counts() {
        let err = FoldedStacks::parse("a;b 1\na;b\n".as_bytes()).unwrap_err();
        assert!(matches!(err, ParseError::BadLine { line: 2, .. }), "{err}");
    }
}
