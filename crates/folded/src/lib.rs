//! Folded stacks: the structured boundary between collapsing and rendering.
//!
//! A [`FoldedStacks`] holds weighted stacks of [`Frame`]s, root first. Frame
//! names are sanitized when they enter (see [`sanitize_name`]), so every
//! consumer can rely on them: no `;` (it would split a frame in the text
//! form), no control characters, bounded length. Text (`a;b;c 12` lines) is
//! produced or parsed only at the edges, by [`FoldedStacks::write_folded`] and
//! [`FoldedStacks::parse`].

pub mod diff;
pub mod seq_table;
pub mod string_table;

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;

pub use diff::{DiffOptions, DiffStacks};
use seq_table::SeqTable;
pub use string_table::StringTable;

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
    frames: FrameTable,
    stacks: SeqTable<FrameId, u64>,
    /// The stacks are stored in [`FoldedStacks::sorted`] order.
    in_line_order: bool,
}

/// Interned frames.
#[derive(Clone, Debug, Default)]
struct FrameTable {
    frames: Vec<Frame>,
    ids: FxHashMap<Frame, FrameId>,
}

impl FrameTable {
    fn intern(&mut self, frame: Frame) -> FrameId {
        if let Some(&id) = self.ids.get(&frame) {
            return id;
        }
        let id = FrameId::try_from(self.frames.len()).expect("fewer than 2^32 distinct frames");
        self.frames.push(frame.clone());
        self.ids.insert(frame, id);
        id
    }

    fn get(&self, id: FrameId) -> &Frame {
        &self.frames[id as usize]
    }
}

/// Stacks gathered without merging, for producers that emit many stacks:
/// adding one is a copy, and [`FoldedStacksBuilder::build`] merges
/// identical stacks once, by sorting them into folded-line order on all
/// cores, which is the order rendering needs anyway.
#[derive(Debug, Default)]
pub struct FoldedStacksBuilder {
    frames: FrameTable,
    /// Every stack added, duplicates included.
    list: StackList,
}

impl FoldedStacksBuilder {
    /// An empty builder.
    pub fn new() -> FoldedStacksBuilder {
        FoldedStacksBuilder::default()
    }

    /// Interns a frame given by name and annotation (see
    /// [`FoldedStacks::intern_name`]).
    pub fn intern_name(&mut self, name: &str, annotation: Annotation) -> FrameId {
        self.frames.intern(Frame::new(name, annotation))
    }

    /// The frame behind an id.
    ///
    /// # Panics
    /// If `id` did not come from this builder.
    pub fn frame(&self, id: FrameId) -> &Frame {
        self.frames.get(id)
    }

    /// Number of frames interned so far; ids are `0..frame_count()`.
    pub fn frame_count(&self) -> usize {
        self.frames.frames.len()
    }

    /// Adds `weight` to a stack (root first). Empty stacks and zero weights
    /// are ignored.
    pub fn add(&mut self, stack: &[FrameId], weight: u64) {
        self.list.add(stack, weight);
    }

    /// Adds stacks gathered elsewhere (on another thread) from this
    /// builder's frame ids.
    pub fn append(&mut self, list: StackList) {
        if self.list.stacks.is_empty() {
            self.list = list;
            return;
        }
        let offset = self.list.items.len();
        self.list.items.extend_from_slice(&list.items);
        self.list.stacks.extend(
            list.stacks
                .into_iter()
                .map(|(start, len, weight)| (start + offset, len, weight)),
        );
    }

    /// The stacks with identical ones merged.
    pub fn build(self) -> FoldedStacks {
        let FoldedStacksBuilder {
            frames,
            list: StackList {
                items, mut stacks, ..
            },
        } = self;
        let ranks = TokenRanks::new(&frames.frames);
        let frame_at = |&(start, len, _): &(usize, u32, u64), depth: usize| {
            (depth < len as usize).then(|| (items[start + depth], depth + 1 == len as usize))
        };
        match &ranks {
            Some(ranks) => multikey_quicksort(&mut stacks, 0, &|stack, depth| {
                ranks.key(frame_at(stack, depth))
            }),
            // Any order that puts identical stacks together; `sorted` then
            // compares whole lines.
            None => multikey_quicksort(&mut stacks, 0, &|stack, depth| {
                frame_at(stack, depth).map_or(0, |(id, _)| id + 1)
            }),
        }
        let mut merged: Vec<(usize, u32, u64)> = Vec::with_capacity(stacks.len());
        for (start, len, weight) in stacks {
            let stack = &items[start..start + len as usize];
            if let Some(last) = merged.last_mut() {
                if &items[last.0..last.0 + last.1 as usize] == stack {
                    last.2 += weight;
                    continue;
                }
            }
            merged.push((start, len, weight));
        }
        FoldedStacks {
            frames,
            stacks: SeqTable::from_distinct(items, merged),
            in_line_order: ranks.is_some(),
        }
    }
}

/// Stacks of frame ids, duplicates included, gathered apart from their
/// [`FoldedStacksBuilder`] (which must have interned the ids) so that
/// several threads can fold at once; see [`FoldedStacksBuilder::append`].
#[derive(Debug, Default)]
pub struct StackList {
    items: Vec<FrameId>,
    /// `(start, len, weight)` of each stack added, duplicates included.
    stacks: Vec<(usize, u32, u64)>,
}

impl StackList {
    /// An empty list with room for `stacks` stacks of `frames` frames in all.
    pub fn with_capacity(stacks: usize, frames: usize) -> StackList {
        StackList {
            items: Vec::with_capacity(frames),
            stacks: Vec::with_capacity(stacks),
        }
    }

    /// Adds `weight` to a stack (root first). Empty stacks and zero weights
    /// are ignored.
    pub fn add(&mut self, stack: &[FrameId], weight: u64) {
        if stack.is_empty() || weight == 0 {
            return;
        }
        let len = u32::try_from(stack.len()).expect("stacks shorter than 2^32 frames");
        self.stacks.push((self.items.len(), len, weight));
        self.items.extend_from_slice(stack);
    }
}

/// Folded-line order as ranks: a line is a sequence of tokens, each a
/// frame's text followed by `;` when more frames follow or by the space
/// before the count when it is the last. Ranking all tokens once turns
/// line comparison into comparing rank sequences.
struct TokenRanks {
    continues: Vec<u32>,
    ends: Vec<u32>,
}

impl TokenRanks {
    /// `None` when an ending token is a prefix of another token (a name
    /// with a space that extends another name): then the digits of the
    /// count can decide, and only whole lines give the order.
    fn new(frames: &[Frame]) -> Option<TokenRanks> {
        let mut tokens: Vec<(String, u32, bool)> = Vec::with_capacity(frames.len() * 2);
        for (id, frame) in frames.iter().enumerate() {
            tokens.push((format!("{frame};"), id as u32, false));
            tokens.push((format!("{frame} "), id as u32, true));
        }
        tokens.sort_unstable();
        if tokens
            .windows(2)
            .any(|w| w[0].2 && w[1].0.starts_with(w[0].0.as_str()))
        {
            return None;
        }
        let mut ranks = TokenRanks {
            continues: vec![0; frames.len()],
            ends: vec![0; frames.len()],
        };
        for (rank, (_, id, end)) in tokens.iter().enumerate() {
            let rank = rank as u32 + 1;
            if *end {
                ranks.ends[*id as usize] = rank;
            } else {
                ranks.continues[*id as usize] = rank;
            }
        }
        Some(ranks)
    }

    /// The sort key of a frame (and whether it is the stack's last) at
    /// some depth; 0 past the end of the stack.
    fn key(&self, frame: Option<(FrameId, bool)>) -> u32 {
        match frame {
            None => 0,
            Some((id, true)) => self.ends[id as usize],
            Some((id, false)) => self.continues[id as usize],
        }
    }
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

    /// Interns a frame, returning its id.
    pub fn intern(&mut self, frame: Frame) -> FrameId {
        self.frames.intern(frame)
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
        self.frames.get(id)
    }

    /// Adds `weight` to a stack (root first). Empty stacks and zero weights
    /// are ignored.
    pub fn add(&mut self, stack: &[FrameId], weight: u64) {
        if stack.is_empty() || weight == 0 {
            return;
        }
        let before = self.stacks.len();
        *self.stacks.entry(stack, || 0) += weight;
        if self.stacks.len() != before {
            self.in_line_order = false;
        }
    }

    /// Interns every frame of `other` (a profile with its own frame ids),
    /// then hands `each` every stack of `other` in this profile's ids, with
    /// its weight.
    pub fn import(
        &mut self,
        other: &FoldedStacks,
        mut each: impl FnMut(&mut FoldedStacks, &[FrameId], u64),
    ) {
        let ids: Vec<FrameId> = other
            .frames
            .frames
            .iter()
            .map(|frame| self.intern(frame.clone()))
            .collect();
        let mut stack = Vec::new();
        for (frames, weight) in other.iter() {
            stack.clear();
            stack.extend(frames.iter().map(|&id| ids[id as usize]));
            each(self, &stack, weight);
        }
    }

    /// Adds every stack of `other` (a profile with its own frame ids).
    pub fn add_all(&mut self, other: &FoldedStacks) {
        self.import(other, |stacks, stack, weight| stacks.add(stack, weight));
    }

    /// Number of distinct stacks.
    pub fn len(&self) -> usize {
        self.stacks.len()
    }

    /// Number of interned frames (ids are `0..frame_count()`).
    pub fn frame_count(&self) -> usize {
        self.frames.frames.len()
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
        let mut text = Vec::new();
        self.write_stack(&mut text, stack)
            .expect("writing to a Vec cannot fail");
        String::from_utf8(text).expect("frame names are UTF-8")
    }

    /// Writes one stack as folded text (`a;b;c`), without the count.
    pub fn write_stack<W: Write>(&self, out: &mut W, stack: &[FrameId]) -> io::Result<()> {
        for (i, &id) in stack.iter().enumerate() {
            if i > 0 {
                out.write_all(b";")?;
            }
            let frame = self.frame(id);
            out.write_all(frame.name().as_bytes())?;
            out.write_all(frame.annotation().suffix().as_bytes())?;
        }
        Ok(())
    }

    /// Stacks with weights in the byte order of their folded text lines
    /// (`a;b;c 12`), the order `sort` and inferno give them, computed
    /// without building the lines: at the first differing frame, the frame
    /// texts decide, and where one text is a prefix of the other, the
    /// separator after it (`;` or the space before the count) does.
    pub fn sorted(&self) -> Vec<(&[FrameId], u64)> {
        let mut stacks: Vec<(&[FrameId], u64)> = self.iter().collect();
        if self.in_line_order {
            return stacks;
        }
        let Some(ranks) = TokenRanks::new(&self.frames.frames) else {
            let texts: Vec<String> = self.frames.frames.iter().map(Frame::to_string).collect();
            return self.sorted_by_lines(texts, stacks);
        };
        multikey_quicksort(&mut stacks, 0, &|&(stack, _), depth| {
            ranks.key(stack.get(depth).map(|&id| (id, depth + 1 == stack.len())))
        });
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
            stacks: SeqTable::new(),
            in_line_order: false,
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
            self.write_stack(&mut out, stack)?;
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

/// Parts of the sort at least this big are worth a rayon task.
const PARALLEL_SORT_ITEMS: usize = 1 << 14;
/// Depth up to which the multikey sort recurses into equal parts in parallel.
const PARALLEL_SORT_DEPTH: usize = 48;

/// Bentley–Sedgewick multikey quicksort of stacks by `key(stack, depth)`
/// (0 past the end): a three-way partition on the key at `depth`, then the
/// equal part continues one level deeper.
fn multikey_quicksort<E: Send>(
    items: &mut [E],
    mut depth: usize,
    key: &(impl Fn(&E, usize) -> u32 + Sync),
) {
    let mut items = items;
    loop {
        if items.len() <= 12 {
            items.sort_unstable_by(|a, b| {
                let mut d = depth;
                loop {
                    let (ka, kb) = (key(a, d), key(b, d));
                    if ka != kb || ka == 0 {
                        return ka.cmp(&kb);
                    }
                    d += 1;
                }
            });
            return;
        }
        let (first, middle, last) = (
            key(&items[0], depth),
            key(&items[items.len() / 2], depth),
            key(&items[items.len() - 1], depth),
        );
        let pivot = first.max(middle.min(last)).min(middle.max(last));
        // Three-way partition: [< pivot][== pivot][> pivot].
        let (mut lt, mut i, mut gt) = (0, 0, items.len());
        while i < gt {
            let k = key(&items[i], depth);
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
        if pivot == 0 {
            sort_sides(smaller, larger, depth, key);
            return;
        }
        // Stacks share long prefixes, so the equal part is often most of
        // the work: sort it beside the sides rather than after them. Past
        // some depth, loop instead, so deep stacks cannot exhaust a
        // thread's stack.
        if equal.len() > PARALLEL_SORT_ITEMS && depth < PARALLEL_SORT_DEPTH {
            rayon::join(
                || sort_sides(smaller, larger, depth, key),
                || multikey_quicksort(equal, depth + 1, key),
            );
            return;
        }
        sort_sides(smaller, larger, depth, key);
        items = equal;
        depth += 1;
    }
}

/// The parts below and above the pivot of one [`multikey_quicksort`] level.
fn sort_sides<E: Send>(
    smaller: &mut [E],
    larger: &mut [E],
    depth: usize,
    key: &(impl Fn(&E, usize) -> u32 + Sync),
) {
    if smaller.len() + larger.len() > PARALLEL_SORT_ITEMS {
        rayon::join(
            || multikey_quicksort(smaller, depth, key),
            || multikey_quicksort(larger, depth, key),
        );
    } else {
        multikey_quicksort(smaller, depth, key);
        multikey_quicksort(larger, depth, key);
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

    /// Every stack's folded line, sorted as text.
    fn text_lines_sorted(folded: &FoldedStacks) -> Vec<String> {
        let mut lines: Vec<String> = folded
            .iter()
            .map(|(s, w)| format!("{} {w}", folded.stack_text(s)))
            .collect();
        lines.sort();
        lines
    }

    #[test]
    fn sorted_matches_sorting_the_text_lines() {
        // Prefix names (`foo` / `foo.isra.0` / `foo bar`), spaces, and
        // stacks that are prefixes of others all sort as their text does.
        // With names that extend others after a space (`foo 7`): whole lines decide.
        let text = "p;foo 5\np;foo.isra.0;x 3\np;foo;bar 2\np;foo bar 1\np;foo 7;z 4\n\
                    p;fo 9\np 1\nq;a_[k] 2\nq;a;b 3\nq;a 12\np;foo 1;y 6\n";
        let folded = FoldedStacks::parse(text.as_bytes()).unwrap();
        let expected = text_lines_sorted(&folded);
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
        let expected = text_lines_sorted(&folded);
        assert_eq!(folded.to_lines(), expected);
    }

    /// The builder merges duplicates and agrees with adding one by one,
    /// with and without names that force whole-line comparison.
    #[test]
    fn builder_merges_like_add() {
        for names in [
            &["a", "ab", "a.isra.0", "b", "z", "\u{e9}", "a b", "c"][..],
            &["a", "ab", "a.isra.0", "b", "z", "\u{e9}", "a 1", "c"][..],
        ] {
            let mut builder = FoldedStacksBuilder::new();
            let mut one_by_one = FoldedStacks::new();
            let mut state = 99u64;
            for i in 0..5000u64 {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let depth = (state >> 61) as usize + 1;
                let names: Vec<&str> = (0..depth)
                    .map(|d| names[((state >> (d * 3 + 20)) & 7) as usize])
                    .collect();
                let ids: Vec<FrameId> = names
                    .iter()
                    .map(|n| builder.intern_name(n, Annotation::None))
                    .collect();
                builder.add(&ids, i % 7);
                let ids: Vec<FrameId> = names
                    .iter()
                    .map(|n| one_by_one.intern_name(n, Annotation::None))
                    .collect();
                one_by_one.add(&ids, i % 7);
            }
            let built = builder.build();
            assert_eq!(built.len(), one_by_one.len());
            assert_eq!(built.total(), one_by_one.total());
            assert_eq!(built.to_lines(), one_by_one.to_lines());
            let mut expected = built.to_lines();
            expected.sort();
            assert_eq!(built.to_lines(), expected);
        }
    }

    #[test]
    fn rejects_lines_without_counts() {
        let err = FoldedStacks::parse("a;b 1\na;b\n".as_bytes()).unwrap_err();
        assert!(matches!(err, ParseError::BadLine { line: 2, .. }), "{err}");
    }
}
