//! Folded stacks: the structured boundary between collapsing and rendering.
//!
//! A [`FoldedStacks`] holds weighted stacks of [`Frame`]s, root first. Frame
//! names are sanitized when they enter (see [`sanitize_name`]), so every
//! consumer can rely on them: no `;` (it would split a frame in the text
//! form), no control characters, bounded length. Text (`a;b;c 12` lines) is
//! produced or parsed only at the edges, by [`FoldedStacks::write_folded`] and
//! [`FoldedStacks::parse`].

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;

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
    stacks: FxHashMap<Box<[FrameId]>, u64>,
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
        if let Some(w) = self.stacks.get_mut(stack) {
            *w += weight;
        } else {
            self.stacks.insert(stack.into(), weight);
        }
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
        self.stacks.values().sum()
    }

    /// Stacks with their weights, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&[FrameId], u64)> {
        self.stacks.iter().map(|(s, &w)| (&s[..], w))
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
        let mut order: Vec<u32> = (0..texts.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| texts[a as usize].cmp(&texts[b as usize]));
        let mut rank = vec![0u32; texts.len()];
        for (r, &id) in order.iter().enumerate() {
            rank[id as usize] = r as u32;
        }
        let mut stacks: Vec<(&[FrameId], u64)> = self.iter().collect();
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
            // A name with a space continues where the other line's count
            // starts: compare the text lines themselves (rare).
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
            stacks: FxHashMap::default(),
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
    }

    #[test]
    fn rejects_lines_without_counts() {
        let err = FoldedStacks::parse("a;b 1\na;b\n".as_bytes()).unwrap_err();
        assert!(matches!(err, ParseError::BadLine { line: 2, .. }), "{err}");
    }
}
