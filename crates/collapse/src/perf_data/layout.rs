//! The structure of a perf.data file, checked byte by byte before the
//! parser sees it, and the patches that make a damaged file readable.
//!
//! linux-perf-data trusts offsets and counts (it was seen to panic on a
//! huge section offset and to abort allocating for a section that claims a
//! terabyte). [`inspect`] walks the header, attribute section, every record
//! of the data section and every feature section it will parse, all with
//! checked arithmetic against the file length. What it cannot accept it
//! either refuses (no usable header or attributes: an error) or repairs
//! with byte patches over the file: the data size cut to the last complete
//! record (killed or truncated recordings), a corrupt feature section left
//! out. Repairs are reported as [`Damage`], so the graph is known to be
//! partial.

use std::path::Path;

use super::ReadError;

/// File-mode header size.
pub const FILE_HEADER_SIZE: u64 = 104;
/// Pipe-mode header size.
pub const PIPE_HEADER_SIZE: u64 = 16;

const RECORD_HEADER: u64 = 8;
const PERF_RECORD_HEADER_ATTR: u32 = 64;
const PERF_RECORD_FINISHED_ROUND: u32 = 68;
const PERF_RECORD_AUXTRACE: u32 = 71;
const PERF_RECORD_HEADER_FEATURE: u32 = 80;

const FEATURE_HOSTNAME: u32 = 3;
const FEATURE_OSRELEASE: u32 = 4;
const FEATURE_VERSION: u32 = 5;
const FEATURE_ARCH: u32 = 6;
const FEATURE_CPUDESC: u32 = 8;
const FEATURE_CPUID: u32 = 9;
const FEATURE_CMDLINE: u32 = 11;
const FEATURE_EVENT_DESC: u32 = 12;
const FEATURE_AUXTRACE: u32 = 18;
const FEATURE_COMPRESSED: u32 = 27;

/// Where a recording is damaged, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// Byte offset in the file where reading stops (or the damaged part starts).
    pub offset: u64,
    /// What is wrong there.
    pub what: String,
}

/// What [`inspect`] found.
#[derive(Clone, Debug, Default)]
pub struct Layout {
    /// Pipe mode (a stream of records after a 16-byte header).
    pub pipe_mode: bool,
    /// Big-endian file.
    pub big_endian: bool,
    /// Byte patches to lay over the file, sorted and disjoint.
    pub patches: Vec<(u64, Vec<u8>)>,
    /// Bytes the parser may see (pipe mode: up to the last complete record).
    pub readable_len: u64,
    /// The first damage found, if any: the graph will be partial.
    pub damage: Option<Damage>,
    /// Complete records in the data, not counting FINISHED_ROUND markers
    /// (which the parser consumes itself).
    pub records: u64,
    /// File mode: where the complete records of the data section are
    /// (offset, length).
    pub data_range: Option<(u64, u64)>,
    /// The record headers of the data were checked (and `records` counted).
    /// When false, `data_range` is the data section the header claims, and
    /// whoever walks it must check each record (see [`check_record`]).
    pub records_checked: bool,
}

struct Bytes<'a> {
    data: &'a [u8],
    big_endian: bool,
    /// Gives back the memory of a range the scan is done with.
    release: &'a dyn Fn(std::ops::Range<usize>),
}

/// How much of the data the record scan walks between releases.
const RELEASE_EVERY: u64 = 16 << 20;

impl Bytes<'_> {
    fn u16(&self, at: u64) -> Option<u16> {
        let at = usize::try_from(at).ok()?;
        let raw: [u8; 2] = self.data.get(at..at.checked_add(2)?)?.try_into().ok()?;
        Some(if self.big_endian {
            u16::from_be_bytes(raw)
        } else {
            u16::from_le_bytes(raw)
        })
    }
    fn u32(&self, at: u64) -> Option<u32> {
        let at = usize::try_from(at).ok()?;
        let raw: [u8; 4] = self.data.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if self.big_endian {
            u32::from_be_bytes(raw)
        } else {
            u32::from_le_bytes(raw)
        })
    }
    fn u64(&self, at: u64) -> Option<u64> {
        let at = usize::try_from(at).ok()?;
        let raw: [u8; 8] = self.data.get(at..at.checked_add(8)?)?.try_into().ok()?;
        Some(if self.big_endian {
            u64::from_be_bytes(raw)
        } else {
            u64::from_le_bytes(raw)
        })
    }
    fn encode_u64(&self, value: u64) -> Vec<u8> {
        if self.big_endian {
            value.to_be_bytes().to_vec()
        } else {
            value.to_le_bytes().to_vec()
        }
    }
    fn encode_u32(&self, value: u32) -> Vec<u8> {
        if self.big_endian {
            value.to_be_bytes().to_vec()
        } else {
            value.to_le_bytes().to_vec()
        }
    }
    fn len(&self) -> u64 {
        self.data.len() as u64
    }
}

/// Checks `bytes` (the whole file) and returns its layout and repairs.
pub fn inspect(path: &Path, bytes: &[u8]) -> Result<Layout, ReadError> {
    inspect_releasing(path, bytes, &|_| {}, false)
}

/// [`inspect`], calling `release` with each stretch of the data section
/// the record scan has passed, so a mapped file need not stay resident.
///
/// With `walker_checks_records`, the record scan is left out where the
/// caller's walk of the records can check them itself: a file-mode,
/// little-endian recording whose header is complete and announces neither
/// compressed nor AUX data. A million-sample file is then read once, not twice.
pub fn inspect_releasing(
    path: &Path,
    bytes: &[u8],
    release: &dyn Fn(std::ops::Range<usize>),
    walker_checks_records: bool,
) -> Result<Layout, ReadError> {
    let len = bytes.len() as u64;
    let corrupt = |offset: u64, what: String| ReadError::Corrupt {
        path: path.to_owned(),
        offset,
        what,
    };
    if bytes.is_empty() {
        return Err(ReadError::Empty {
            path: path.to_owned(),
        });
    }
    if !super::starts_like_perf_data(bytes) {
        let shown = &bytes[..bytes.len().min(8)];
        return Err(ReadError::NotPerfData {
            path: path.to_owned(),
            magic: String::from_utf8_lossy(shown).into_owned(),
        });
    }
    let b = Bytes {
        data: bytes,
        big_endian: &bytes[..8] == b"2ELIFREP",
        release,
    };
    let Some(header_size) = b.u64(8) else {
        return Err(corrupt(
            8,
            format!("file ends after {len} bytes, inside the header"),
        ));
    };
    let mut layout = Layout {
        big_endian: b.big_endian,
        readable_len: len,
        ..Layout::default()
    };
    if header_size == PIPE_HEADER_SIZE {
        layout.pipe_mode = true;
        inspect_pipe(&b, &mut layout);
        return Ok(layout);
    }
    if header_size != FILE_HEADER_SIZE {
        return Err(corrupt(
            8,
            format!("header size {header_size}, expected {FILE_HEADER_SIZE} (file) or {PIPE_HEADER_SIZE} (pipe)"),
        ));
    }
    if len < FILE_HEADER_SIZE {
        return Err(corrupt(
            len,
            format!("file ends after {len} bytes, inside the {FILE_HEADER_SIZE}-byte header"),
        ));
    }
    let section = |field: u64, name: &str| -> Result<(u64, u64), ReadError> {
        let (offset, size) = (b.u64(field).unwrap_or(0), b.u64(field + 8).unwrap_or(0));
        match offset.checked_add(size) {
            Some(end) if end <= len => Ok((offset, size)),
            _ => Err(corrupt(
                field,
                format!("{name} section [{offset}, +{size}) lies outside the {len}-byte file"),
            )),
        }
    };
    let attr_size = b.u64(16).unwrap_or(0);
    let (attrs_offset, attrs_size) = section(24, "attribute")?;
    if !(64..=4096).contains(&attr_size) || !attrs_size.is_multiple_of(attr_size) || attrs_size == 0
    {
        return Err(corrupt(
            16,
            format!("attribute entry size {attr_size} does not fit the attribute section ({attrs_size} bytes)"),
        ));
    }
    // Each entry: perf_event_attr (its own size field says how long) + ids section.
    let mut entry = attrs_offset;
    while entry < attrs_offset + attrs_size {
        let own_size = u64::from(b.u32(entry + 4).unwrap_or(u32::MAX));
        if own_size != 0 && !(64..=attr_size).contains(&own_size) {
            return Err(corrupt(
                entry + 4,
                format!("event attribute of {own_size} bytes in a {attr_size}-byte entry"),
            ));
        }
        entry += attr_size;
    }
    // The legacy event_types section: only trusted if it is empty.
    let event_types = b.u64(64).unwrap_or(0);
    if event_types != 0 {
        layout.patches.push((56, vec![0; 16]));
    }

    // The data section: cut at the first incomplete or impossible record.
    let data_offset = b.u64(40).unwrap_or(0);
    let data_size = b.u64(48).unwrap_or(0);
    if data_offset < FILE_HEADER_SIZE || data_offset > len {
        return Err(corrupt(
            40,
            format!("data section offset {data_offset} lies outside the {len}-byte file"),
        ));
    }
    let claimed_end = data_offset.checked_add(data_size).filter(|&end| end <= len);
    let (scan_end, early) = match (data_size, claimed_end) {
        (0, _) => (
            len,
            Some(Damage {
                offset: 40,
                what: "the header says the data section is empty: the recording was not finished (perf record killed?)".into(),
            }),
        ),
        (_, None) => (
            len,
            Some(Damage {
                offset: len,
                what: format!(
                    "the file ends at byte {len}, inside the data section that should end at {}",
                    data_offset.saturating_add(data_size)
                ),
            }),
        ),
        (_, Some(end)) => (end, None),
    };
    let feature_bits = |word: u64| b.u64(72 + 8 * word).unwrap_or(0);
    let announces = |feature: u32| feature_bits(u64::from(feature / 64)) >> (feature % 64) & 1 == 1;
    let feature_count: u64 = (0..4)
        .map(|w| u64::from(feature_bits(w).count_ones()))
        .sum();
    let features_fit = scan_end
        .checked_add(16 * feature_count)
        .is_some_and(|end| end <= len);
    let walk_can_check = walker_checks_records
        && early.is_none()
        && features_fit
        && !b.big_endian
        && !announces(FEATURE_AUXTRACE)
        && !announces(FEATURE_COMPRESSED);
    let (complete_end, record_damage) = if walk_can_check {
        (scan_end, None)
    } else {
        layout.records_checked = true;
        scan_records(&b, data_offset, scan_end, &mut layout.records, false)
    };
    layout.data_range = Some((data_offset, complete_end - data_offset));
    let data_damaged = early.is_some() || record_damage.is_some();
    if data_damaged {
        layout
            .patches
            .push((48, b.encode_u64(complete_end - data_offset)));
        // Feature sections follow the data; after damage they are gone or garbage.
        layout.patches.push((72, vec![0; 32]));
        layout.damage = record_damage.or(early).map(|d| Damage {
            what: after_records(&d.what, layout.records),
            ..d
        });
        layout.patches.sort_by_key(|(offset, _)| *offset);
        return Ok(layout);
    }

    // Feature sections: a table of (offset, size) per set bit, after the data.
    let table_start = data_offset + data_size;
    let mut bits: Vec<u32> = Vec::new();
    for word in 0..4u32 {
        let flags = b.u64(72 + 8 * u64::from(word)).unwrap_or(0);
        bits.extend(
            (0..64)
                .filter(|bit| flags >> bit & 1 == 1)
                .map(|bit| word * 64 + bit),
        );
    }
    let table_end = table_start + 16 * bits.len() as u64;
    if table_end > len {
        layout.patches.push((72, vec![0; 32]));
        layout.damage = Some(Damage {
            offset: table_start,
            what: format!(
                "the feature sections after the data are missing (the file ends at byte {len}): \
                 host and event names are lost; read the {} complete records before it",
                layout.records
            ),
        });
        layout.patches.sort_by_key(|(offset, _)| *offset);
        return Ok(layout);
    }
    let mut kept: Vec<(u32, [u8; 16])> = Vec::new();
    for (index, &feature) in bits.iter().enumerate() {
        let at = table_start + 16 * index as u64;
        let (offset, size) = (b.u64(at).unwrap_or(0), b.u64(at + 8).unwrap_or(0));
        let problem = match offset.checked_add(size) {
            Some(end) if end <= len => check_feature(&b, feature, offset, size).err(),
            _ => Some(format!("section [{offset}, +{size}) lies outside the file")),
        };
        match problem {
            None => {
                let entry: [u8; 16] = bytes[at as usize..at as usize + 16]
                    .try_into()
                    .expect("16 bytes");
                kept.push((feature, entry));
            }
            Some(problem) => {
                if layout.damage.is_none() {
                    layout.damage = Some(Damage {
                        offset: at,
                        what: format!(
                            "feature section {} is corrupt ({problem}); left out",
                            feature_name(feature)
                        ),
                    });
                }
            }
        }
    }
    if kept.len() != bits.len() {
        // Rewrite the bitmap and the table without the dropped features.
        let mut flags = [0u64; 4];
        let mut table = Vec::with_capacity(16 * kept.len());
        for (feature, entry) in &kept {
            flags[(*feature / 64) as usize] |= 1 << (feature % 64);
            table.extend_from_slice(entry);
        }
        let mut flag_bytes = Vec::with_capacity(32);
        for word in flags {
            flag_bytes.extend(b.encode_u64(word));
        }
        layout.patches.push((72, flag_bytes));
        if !table.is_empty() {
            layout.patches.push((table_start, table));
        }
    }
    layout.patches.sort_by_key(|(offset, _)| *offset);
    Ok(layout)
}

fn feature_name(feature: u32) -> String {
    match feature {
        FEATURE_HOSTNAME => "HOSTNAME".into(),
        FEATURE_OSRELEASE => "OSRELEASE".into(),
        FEATURE_VERSION => "VERSION".into(),
        FEATURE_ARCH => "ARCH".into(),
        FEATURE_CPUDESC => "CPUDESC".into(),
        FEATURE_CPUID => "CPUID".into(),
        FEATURE_CMDLINE => "CMDLINE".into(),
        FEATURE_EVENT_DESC => "EVENT_DESC".into(),
        other => format!("#{other}"),
    }
}

/// Checks one record header: `kind` and `size` from the header, `remaining`
/// bytes from the record's start to the end of the data, `aux_size` the
/// trace size of an AUXTRACE record (read only for that kind). Returns the
/// bytes the record takes, or what is wrong with it.
pub(crate) fn check_record(
    kind: u32,
    size: u64,
    remaining: u64,
    aux_size: impl FnOnce() -> Option<u64>,
) -> Result<u64, String> {
    if remaining < RECORD_HEADER {
        return Err(format!(
            "the last record is cut off after {remaining} bytes"
        ));
    }
    if size < RECORD_HEADER {
        return Err(format!(
            "record of type {kind} claims {size} bytes (less than its header)"
        ));
    }
    let mut total = size;
    if kind == PERF_RECORD_AUXTRACE {
        // The trace data follows the record, and its size is in the body.
        total = size.saturating_add(aux_size().unwrap_or(u64::MAX));
    }
    if total > remaining {
        return Err(format!(
            "record of type {kind} needs {total} bytes but only {remaining} remain"
        ));
    }
    Ok(total)
}

/// The message for damage found after `records` complete records.
pub(crate) fn after_records(what: &str, records: u64) -> String {
    format!("{what}; read the {records} complete records before it")
}

/// Walks records from `start` to `end`. Returns the end of the last
/// complete record and the damage that stopped the walk, if any.
fn scan_records(
    b: &Bytes<'_>,
    start: u64,
    end: u64,
    records: &mut u64,
    pipe: bool,
) -> (u64, Option<Damage>) {
    let mut at = start;
    let mut released = start;
    while at < end {
        if at - released >= RELEASE_EVERY {
            if let (Ok(from), Ok(to)) = (usize::try_from(released), usize::try_from(at)) {
                (b.release)(from..to);
            }
            released = at;
        }
        let remaining = end - at;
        let kind = b.u32(at).unwrap_or(0);
        let size = u64::from(b.u16(at + 6).unwrap_or(0));
        let total = match check_record(kind, size, remaining, || b.u64(at + RECORD_HEADER)) {
            Ok(total) => total,
            Err(what) => return (at, Some(Damage { offset: at, what })),
        };
        if pipe {
            if let Some(problem) = check_pipe_record(b, kind, at, size) {
                return (
                    at,
                    Some(Damage {
                        offset: at,
                        what: problem,
                    }),
                );
            }
        }
        if kind != PERF_RECORD_FINISHED_ROUND {
            *records += 1;
        }
        at += total;
    }
    (at, None)
}

/// Pipe-mode metadata records the parser reads eagerly.
fn check_pipe_record(b: &Bytes<'_>, kind: u32, at: u64, size: u64) -> Option<String> {
    let body = at + RECORD_HEADER;
    let body_len = size - RECORD_HEADER;
    match kind {
        PERF_RECORD_HEADER_ATTR => {
            let own_size = u64::from(b.u32(body + 4).unwrap_or(u32::MAX));
            let own_size = if own_size == 0 { 64 } else { own_size };
            if !(64..=body_len).contains(&own_size) || !(body_len - own_size).is_multiple_of(8) {
                return Some(format!(
                    "event attribute record of {body_len} bytes holds an attribute of {own_size}"
                ));
            }
            None
        }
        _ => None,
    }
}

/// A feature section the parser will read, checked so that no count or
/// length in it exceeds the section.
fn check_feature(b: &Bytes<'_>, feature: u32, offset: u64, size: u64) -> Result<(), String> {
    let end = offset + size;
    let string_at = |at: u64| -> Result<u64, String> {
        let len = u64::from(b.u32(at).ok_or("string length cut off")?);
        let after = at + 4 + len;
        if after > end {
            return Err(format!("a {len}-byte string in a {size}-byte section"));
        }
        Ok(after)
    };
    match feature {
        FEATURE_HOSTNAME | FEATURE_OSRELEASE | FEATURE_VERSION | FEATURE_ARCH | FEATURE_CPUDESC
        | FEATURE_CPUID => string_at(offset).map(|_| ()),
        FEATURE_CMDLINE => {
            let count = b.u32(offset).ok_or("argument count cut off")?;
            let mut at = offset + 4;
            for _ in 0..count {
                at = string_at(at)?;
            }
            Ok(())
        }
        FEATURE_EVENT_DESC => {
            let count = b.u32(offset).ok_or("event count cut off")?;
            let attr_size = u64::from(b.u32(offset + 4).ok_or("attribute size cut off")?);
            if count > 0 && !(64..=4096).contains(&attr_size) {
                return Err(format!("attribute size {attr_size}"));
            }
            let mut at = offset + 8;
            for _ in 0..count {
                if at + attr_size > end {
                    return Err("an attribute runs past the section".into());
                }
                let own_size = u64::from(b.u32(at + 4).unwrap_or(u32::MAX));
                if own_size != 0 && !(64..=attr_size).contains(&own_size) {
                    return Err(format!(
                        "an attribute of {own_size} bytes in {attr_size}-byte slots"
                    ));
                }
                at += attr_size;
                let ids = u64::from(b.u32(at).ok_or("id count cut off")?);
                at = string_at(at + 4)?;
                at = at
                    .checked_add(ids * 8)
                    .filter(|&after| after <= end)
                    .ok_or_else(|| format!("{ids} ids do not fit"))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Pipe mode: records right after the 16-byte header. Metadata records
/// that would make the parser fail or over-allocate are neutralized where
/// possible; the readable part ends at the first damage.
fn inspect_pipe(b: &Bytes<'_>, layout: &mut Layout) {
    let len = b.len();
    let (end, damage) = scan_records(b, PIPE_HEADER_SIZE, len, &mut layout.records, true);
    layout.records_checked = true;
    layout.readable_len = end;
    layout.damage = damage.map(|d| Damage {
        what: after_records(&d.what, layout.records),
        ..d
    });
    // Feature records: neutralize corrupt contents (the parser allocates by their counts).
    let mut at = PIPE_HEADER_SIZE;
    while at < end {
        let kind = b.u32(at).unwrap_or(0);
        let size = u64::from(b.u16(at + 6).unwrap_or(8));
        if kind == PERF_RECORD_HEADER_FEATURE && size >= 16 {
            if let Some(patch) = neutralize_feature_record(b, at, size) {
                layout.patches.push(patch);
            }
        }
        let mut total = size.max(RECORD_HEADER);
        if kind == PERF_RECORD_AUXTRACE {
            total = total.saturating_add(b.u64(at + RECORD_HEADER).unwrap_or(0));
        }
        at = at.saturating_add(total);
    }
}

/// For a HEADER_FEATURE record whose content is corrupt: a patch that
/// zeroes its leading count or length, which every parsed feature accepts.
pub(crate) fn neutralize_feature_bytes(
    record: &[u8],
    big_endian: bool,
) -> Option<(usize, Vec<u8>)> {
    let b = Bytes {
        data: record,
        big_endian,
        release: &|_| {},
    };
    let size = record.len() as u64;
    if size < 16 {
        return None;
    }
    let feature = b.u64(8)? as u32;
    let (offset, content) = (16u64, size - 16);
    if check_feature(&b, feature, offset, content).is_ok() {
        return None;
    }
    Some((16, b.encode_u32(0)))
}

fn neutralize_feature_record(b: &Bytes<'_>, at: u64, size: u64) -> Option<(u64, Vec<u8>)> {
    let record = b.data.get(at as usize..(at + size) as usize)?;
    neutralize_feature_bytes(record, b.big_endian)
        .map(|(offset, bytes)| (at + offset as u64, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(data_offset: u64, data_size: u64, total: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; total];
        bytes[..8].copy_from_slice(b"PERFILE2");
        bytes[8..16].copy_from_slice(&104u64.to_le_bytes());
        bytes[16..24].copy_from_slice(&136u64.to_le_bytes());
        bytes[24..32].copy_from_slice(&104u64.to_le_bytes());
        bytes[32..40].copy_from_slice(&136u64.to_le_bytes());
        bytes[40..48].copy_from_slice(&data_offset.to_le_bytes());
        bytes[48..56].copy_from_slice(&data_size.to_le_bytes());
        if total >= 240 {
            bytes[104 + 4..104 + 8].copy_from_slice(&120u32.to_le_bytes());
        }
        bytes
    }

    #[test]
    fn rejects_sections_outside_the_file_before_parsing() {
        let path = Path::new("x.data");
        // A 120-byte file claiming a huge attribute section (seen to abort the parser).
        let mut bytes = header(104, 0, 120);
        bytes[32..40].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let err = inspect(path, &bytes).unwrap_err();
        assert!(
            matches!(err, ReadError::Corrupt { offset: 24, .. }),
            "{err}"
        );
        let err = inspect(path, b"hello world, not perf").unwrap_err();
        assert!(err.to_string().contains("not a perf.data file"), "{err}");
        assert!(matches!(inspect(path, b""), Err(ReadError::Empty { .. })));
    }

    #[test]
    fn killed_and_truncated_data_is_cut_to_complete_records() {
        let path = Path::new("x.data");
        let mut bytes = header(240, 0, 240);
        // Two complete 16-byte records and half of a third.
        for kind in [3u32, 3] {
            bytes.extend_from_slice(&kind.to_le_bytes());
            bytes.extend_from_slice(&0u16.to_le_bytes());
            bytes.extend_from_slice(&16u16.to_le_bytes());
            bytes.extend_from_slice(&[0; 8]);
        }
        bytes.extend_from_slice(&[3, 0, 0, 0, 0, 0, 16, 0, 1, 2]);
        let layout = inspect(path, &bytes).unwrap();
        assert_eq!(layout.records, 2);
        let damage = layout.damage.unwrap();
        assert_eq!(damage.offset, 240 + 32, "{}", damage.what);
        assert!(layout.patches.contains(&(48, 32u64.to_le_bytes().to_vec())));

        // A data section claimed longer than the file.
        let mut truncated = bytes.clone();
        truncated[48..56].copy_from_slice(&1000u64.to_le_bytes());
        let layout = inspect(path, &truncated).unwrap();
        assert_eq!(layout.records, 2);
        assert!(layout.damage.is_some());
    }

    #[test]
    fn feature_counts_that_do_not_fit_are_refused() {
        let data = vec![0u8; 64];
        let b = Bytes {
            data: &data,
            big_endian: false,
            release: &|_| {},
        };
        assert!(
            check_feature(&b, FEATURE_EVENT_DESC, 0, 64).is_ok(),
            "zero events"
        );
        let mut huge = data.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        huge[4..8].copy_from_slice(&136u32.to_le_bytes());
        let b = Bytes {
            data: &huge,
            big_endian: false,
            release: &|_| {},
        };
        assert!(check_feature(&b, FEATURE_EVENT_DESC, 0, 64).is_err());
        assert!(check_feature(&b, FEATURE_CMDLINE, 0, 64).is_err());
        assert!(check_feature(&b, FEATURE_HOSTNAME, 0, 64).is_err());
    }
}
