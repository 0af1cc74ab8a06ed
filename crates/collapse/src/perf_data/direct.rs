//! Records of a file-mode recording read straight from the mapped file.
//!
//! linux-perf-data's iterator copies every record into its own buffer
//! before sorting; for a million samples that copying and sorting is most
//! of the reading time. For uncompressed native-endian files (the common
//! case) this walks the data section in place: the records of each
//! FINISHED_ROUND window are sorted by (time, offset) as index entries, and
//! each record is handed to linux-perf-event-reader as a slice of the map.
//! The order is the parser's own (its `Sorter` rule: a round releases what
//! is not newer than the previous round's newest record).

use std::collections::HashMap;

use linux_perf_data::linux_perf_event_reader::{
    get_record_id, get_record_identifier, get_record_timestamp, AttrFlags, RawData, RawEventRecord,
    RecordIdParseInfo, RecordParseInfo, RecordType, SampleFormat,
};
use linux_perf_data::{AttributeDescription, Endianness};

use super::layout::{after_records, check_record};
use super::{Damage, ReadProgress, ReadStats, PROGRESS_EVERY_RECORDS};
use crate::event::{event_from_record, EventSink};

const PERF_RECORD_FINISHED_ROUND: u32 = 68;
const PERF_RECORD_AUXTRACE: u32 = 71;
const PERF_RECORD_COMPRESSED: u32 = 81;
const PERF_RECORD_COMPRESSED2: u32 = 83;

type LittleEndian = byteorder::LittleEndian;

/// How a record's attribute is found.
enum AttrLookup {
    Only,
    ById(RecordIdParseInfo, HashMap<u64, usize>),
    ByIdentifier(bool, HashMap<u64, usize>),
}

/// How far the walk gets past the oldest record it still needs before it
/// gives the bytes behind that record back.
const RELEASE_EVERY: usize = 16 << 20;

/// The data section to walk.
pub struct DataSection<'a> {
    /// Its bytes.
    pub bytes: &'a [u8],
    /// Their offset in the file, for error messages.
    pub file_offset: u64,
    /// True when the layout check has cut `bytes` to complete records;
    /// false when the walk must check each record and stop at the first
    /// bad one.
    pub records_checked: bool,
}

/// Walks the data section when it can; `None` when the file needs the
/// general reader (compressed or AUXTRACE records, another byte order),
/// which happens only for data the layout check has seen. Stretches no
/// longer needed go to `release`.
pub fn stream(
    section: DataSection<'_>,
    attributes: &[AttributeDescription],
    sink: &mut dyn EventSink,
    release: &dyn Fn(std::ops::Range<usize>),
    progress: &mut dyn FnMut(ReadProgress),
) -> Option<ReadStats> {
    let data = section.bytes;
    if section.records_checked && (cfg!(target_endian = "big") || attributes.is_empty()) {
        return None;
    }
    if attributes.is_empty() {
        return Some(ReadStats::default()); // no attribute, nothing to attribute records to
    }
    let parse_infos: Vec<RecordParseInfo> = attributes
        .iter()
        .map(|a| RecordParseInfo::new(&a.attr, Endianness::LittleEndian))
        .collect();
    let lookup = attr_lookup(attributes, &parse_infos);

    let mut stats = ReadStats::default();
    let mut callchain = Vec::new();
    let mut names = Vec::new();
    // (time, offset, attr) of records not yet released; None sorts first, as in the parser.
    let mut pending: Vec<(Option<u64>, usize, Option<usize>)> = Vec::new();
    let mut previous_max: (Option<u64>, usize) = (None, 0);
    let mut current_max: (Option<u64>, usize) = (None, 0);
    let mut at = 0usize;
    let mut released = 0usize;
    let mut deliver = |entries: &mut Vec<(Option<u64>, usize, Option<usize>)>,
                       stats: &mut ReadStats| {
        for &(_, offset, attr) in entries.iter() {
            stats.records += 1;
            let Some(attr) = attr else {
                continue; // perf's own (user) records carry nothing we fold
            };
            let record = raw_record(data, offset, parse_infos[attr]);
            match event_from_record(&record, attr, &mut callchain, &mut names) {
                Ok(Some(event)) => sink.event(&event),
                Ok(None) => {}
                Err(_) => stats.malformed_records += 1,
            }
        }
        entries.clear();
    };
    let mut ready = Vec::new();
    let mut complete_records = 0u64;
    let mut reported = 0u64;
    let mut damage = None;
    while at < data.len() {
        let header = data.get(at..at + 8);
        let kind = header.map_or(0, |h| u32::from_le_bytes([h[0], h[1], h[2], h[3]]));
        let size = header.map_or(0, |h| u16::from_le_bytes([h[6], h[7]]));
        let problem = if matches!(
            kind,
            PERF_RECORD_AUXTRACE | PERF_RECORD_COMPRESSED | PERF_RECORD_COMPRESSED2
        ) {
            if section.records_checked {
                return None;
            }
            Some(format!(
                "record of type {kind} (compressed or AUX data) in a recording whose header does not announce such data"
            ))
        } else {
            check_record(kind, u64::from(size), (data.len() - at) as u64, || None).err()
        };
        if let Some(what) = problem {
            // Unreachable after the layout check, which cut the data here.
            if !section.records_checked {
                damage = Some(Damage {
                    offset: section.file_offset + at as u64,
                    what: after_records(&what, complete_records),
                });
            }
            break;
        }
        let size = usize::from(size);
        if kind != PERF_RECORD_FINISHED_ROUND {
            complete_records += 1;
        }
        match kind {
            PERF_RECORD_FINISHED_ROUND => {
                // Release everything not newer than the previous round's newest.
                pending.sort_unstable_by_key(|&(time, offset, _)| (time, offset));
                let split =
                    pending.partition_point(|&(time, offset, _)| (time, offset) <= previous_max);
                ready.extend(pending.drain(..split));
                deliver(&mut ready, &mut stats);
                previous_max = current_max;
                if stats.records >= reported + PROGRESS_EVERY_RECORDS {
                    reported = stats.records;
                    progress(ReadProgress {
                        records: stats.records,
                        bytes: Some(at as u64),
                        total_bytes: Some(data.len() as u64),
                    });
                }
                let oldest = pending.iter().map(|&(_, offset, _)| offset).min();
                let needed_from = oldest.unwrap_or(at);
                if needed_from >= released + RELEASE_EVERY {
                    release(released..needed_from);
                    released = needed_from;
                }
            }
            _ => {
                let (time, attr) = if kind >= 64 {
                    (None, None)
                } else {
                    let body = RawData::Single(&data[at + 8..at + size]);
                    let record_type = RecordType(kind);
                    let attr = match &lookup {
                        AttrLookup::Only => 0,
                        AttrLookup::ById(info, ids) => {
                            get_record_id::<LittleEndian>(record_type, body, info)
                                .and_then(|id| ids.get(&id).copied())
                                .unwrap_or(0)
                        }
                        AttrLookup::ByIdentifier(sample_id_all, ids) => {
                            get_record_identifier::<LittleEndian>(record_type, body, *sample_id_all)
                                .and_then(|id| ids.get(&id).copied())
                                .unwrap_or(0)
                        }
                    };
                    (
                        get_record_timestamp::<LittleEndian>(record_type, body, &parse_infos[attr]),
                        Some(attr),
                    )
                };
                current_max = current_max.max((time, at));
                pending.push((time, at, attr));
            }
        }
        at += size;
    }
    pending.sort_unstable_by_key(|&(time, offset, _)| (time, offset));
    deliver(&mut pending, &mut stats);
    stats.damage = damage;
    progress(ReadProgress {
        records: stats.records,
        bytes: Some(at.min(data.len()) as u64),
        total_bytes: Some(data.len() as u64),
    });
    Some(stats)
}

fn raw_record(data: &[u8], offset: usize, parse_info: RecordParseInfo) -> RawEventRecord<'_> {
    let kind = u32::from_le_bytes(data[offset..offset + 4].try_into().expect("4 bytes"));
    let misc = u16::from_le_bytes([data[offset + 4], data[offset + 5]]);
    let size = usize::from(u16::from_le_bytes([data[offset + 6], data[offset + 7]]));
    RawEventRecord::new(
        RecordType(kind),
        misc,
        RawData::Single(&data[offset + 8..offset + size]),
        parse_info,
    )
}

/// The parser's rule for telling which attribute a record belongs to.
fn attr_lookup(attributes: &[AttributeDescription], parse_infos: &[RecordParseInfo]) -> AttrLookup {
    if attributes.len() == 1 {
        return AttrLookup::Only;
    }
    let ids: HashMap<u64, usize> = attributes
        .iter()
        .enumerate()
        .flat_map(|(index, a)| a.event_ids.iter().map(move |&id| (id, index)))
        .collect();
    let first = parse_infos[0].id_parse_info;
    if parse_infos.iter().all(|p| p.id_parse_info == first) {
        return AttrLookup::ById(first, ids);
    }
    let sample_id_all = attributes[0].attr.flags.contains(AttrFlags::SAMPLE_ID_ALL);
    if attributes
        .iter()
        .all(|a| a.attr.sample_format.contains(SampleFormat::IDENTIFIER))
    {
        return AttrLookup::ByIdentifier(sample_id_all, ids);
    }
    AttrLookup::Only
}
