//! The process model: which code is mapped where in each process, and what
//! each thread is called, as of the current point of the event stream.

use std::collections::HashMap;
use std::sync::Arc;

use crate::dso::DsoId;

/// One executable mapping of a code object into an address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// File offset of `start`.
    pub pgoff: u64,
    /// The mapped object.
    pub dso: DsoId,
}

impl Mapping {
    /// File offset of `address`, which must lie inside the mapping.
    pub fn file_offset(&self, address: u64) -> u64 {
        address - self.start + self.pgoff
    }
}

/// The executable mappings of one address space: sorted, non-overlapping.
/// A new mapping replaces whatever it overlaps, as `mmap` does.
#[derive(Clone, Debug, Default)]
pub struct MapTable {
    maps: Vec<Mapping>,
}

impl MapTable {
    /// Adds a mapping, cutting away the parts of older ones it overlaps.
    pub fn insert(&mut self, new: Mapping) {
        if new.end <= new.start {
            return;
        }
        // Fast path: mappings mostly arrive in increasing address order.
        if self.maps.last().is_none_or(|last| last.end <= new.start) {
            self.maps.push(new);
            return;
        }
        let first = self.maps.partition_point(|m| m.end <= new.start);
        let mut last = first;
        while last < self.maps.len() && self.maps[last].start < new.end {
            last += 1;
        }
        let mut replacement = Vec::with_capacity(3);
        if let Some(head) = self
            .maps
            .get(first)
            .filter(|m| m.start < new.start && first < last)
        {
            replacement.push(Mapping {
                end: new.start,
                ..*head
            });
        }
        replacement.push(new);
        if last > first {
            let tail = self.maps[last - 1];
            if tail.end > new.end {
                replacement.push(Mapping {
                    start: new.end,
                    pgoff: tail.pgoff + (new.end - tail.start),
                    ..tail
                });
            }
        }
        self.maps.splice(first..last, replacement);
    }

    /// The mapping containing `address`.
    pub fn find(&self, address: u64) -> Option<&Mapping> {
        let pos = self.maps.partition_point(|m| m.start <= address);
        let map = self.maps.get(pos.checked_sub(1)?)?;
        (address < map.end).then_some(map)
    }

    /// Number of mappings.
    pub fn len(&self) -> usize {
        self.maps.len()
    }

    /// True when nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.maps.is_empty()
    }
}

/// Index of a frozen [`MapTable`] version in a [`ProcessModel`].
pub type MapVersion = u32;

/// Interned thread name.
pub type CommId = u32;

#[derive(Clone, Debug, Default)]
struct Process {
    maps: Arc<MapTable>,
    /// The id under which the current `maps` was frozen, if it was.
    frozen_as: Option<MapVersion>,
}

/// Processes, threads and the kernel's own mappings.
///
/// Samples refer to a process's mappings through a [`MapVersion`]: a frozen
/// snapshot taken the first time a sample needs the table after it changed.
/// Snapshots share structure (`Arc`), so a process that maps nothing new
/// costs nothing per sample, and a change after a snapshot copies the table
/// once.
#[derive(Debug, Default)]
pub struct ProcessModel {
    processes: HashMap<i32, Process>,
    threads: HashMap<i32, (i32, CommId)>,
    comms: Vec<Box<[u8]>>,
    comm_ids: HashMap<Box<[u8]>, CommId>,
    frozen: Vec<Arc<MapTable>>,
    kernel: MapTable,
}

impl ProcessModel {
    /// An empty model. Version 0 is the empty table, for unknown processes.
    /// Thread 0, the idle task, is named `swapper` (perf does the same: the
    /// kernel never reports its name).
    pub fn new() -> ProcessModel {
        let mut model = ProcessModel {
            frozen: vec![Arc::new(MapTable::default())],
            ..ProcessModel::default()
        };
        model.set_comm(0, 0, b"swapper", false);
        model
    }

    /// Interns a thread name.
    pub fn intern_comm(&mut self, name: &[u8]) -> CommId {
        if let Some(&id) = self.comm_ids.get(name) {
            return id;
        }
        let id = CommId::try_from(self.comms.len()).expect("fewer than 2^32 names");
        self.comms.push(name.into());
        self.comm_ids.insert(name.into(), id);
        id
    }

    /// The name behind an id.
    pub fn comm(&self, id: CommId) -> &[u8] {
        &self.comms[id as usize]
    }

    /// Current name of a thread, if it was ever named.
    pub fn thread_comm(&self, tid: i32) -> Option<CommId> {
        self.threads.get(&tid).map(|&(_, comm)| comm)
    }

    /// A thread was named; `exec` means its process replaced its image.
    pub fn set_comm(&mut self, pid: i32, tid: i32, name: &[u8], exec: bool) {
        let comm = self.intern_comm(name);
        self.threads.insert(tid, (pid, comm));
        if exec {
            let process = self.processes.entry(pid).or_default();
            process.maps = Arc::new(MapTable::default());
            process.frozen_as = None;
        }
    }

    /// A process (`pid != ppid`) or thread was created.
    pub fn fork(&mut self, pid: i32, ppid: i32, tid: i32, ptid: i32) {
        let parent_comm = self
            .threads
            .get(&ptid)
            .or_else(|| self.threads.get(&ppid))
            .map(|&(_, comm)| comm);
        if let Some(comm) = parent_comm {
            self.threads.insert(tid, (pid, comm));
        }
        if pid != ppid {
            // A new address space starts as a copy of the parent's.
            let maps = self
                .processes
                .get(&ppid)
                .map(|p| Arc::clone(&p.maps))
                .unwrap_or_default();
            self.processes.insert(
                pid,
                Process {
                    maps,
                    frozen_as: None,
                },
            );
        }
    }

    /// Adds an executable user mapping to a process.
    pub fn map_user(&mut self, pid: i32, mapping: Mapping) {
        let process = self.processes.entry(pid).or_default();
        Arc::make_mut(&mut process.maps).insert(mapping);
        process.frozen_as = None;
    }

    /// Adds a kernel or module mapping.
    pub fn map_kernel(&mut self, mapping: Mapping) {
        self.kernel.insert(mapping);
    }

    /// The kernel's mappings.
    pub fn kernel_maps(&self) -> &MapTable {
        &self.kernel
    }

    /// The current mappings of `pid`, frozen so later changes do not affect
    /// them. Unknown processes get version 0, the empty table.
    pub fn freeze_maps(&mut self, pid: i32) -> MapVersion {
        let Some(process) = self.processes.get_mut(&pid) else {
            return 0;
        };
        if let Some(version) = process.frozen_as {
            return version;
        }
        let version = MapVersion::try_from(self.frozen.len()).unwrap_or(MapVersion::MAX);
        if version == MapVersion::MAX {
            return 0;
        }
        self.frozen.push(Arc::clone(&process.maps));
        process.frozen_as = Some(version);
        version
    }

    /// A frozen table.
    pub fn frozen_maps(&self, version: MapVersion) -> &MapTable {
        &self.frozen[version as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(start: u64, end: u64, pgoff: u64, dso: DsoId) -> Mapping {
        Mapping {
            start,
            end,
            pgoff,
            dso,
        }
    }

    #[test]
    fn overlapping_mapping_replaces_the_covered_part() {
        let mut table = MapTable::default();
        table.insert(map(0x1000, 0x5000, 0, 1));
        table.insert(map(0x6000, 0x7000, 0, 2));
        table.insert(map(0x2000, 0x3000, 0x100, 3));
        assert_eq!(table.find(0x1500).unwrap().dso, 1);
        assert_eq!(table.find(0x2500).unwrap().dso, 3);
        let tail = table.find(0x3500).unwrap();
        assert_eq!((tail.dso, tail.file_offset(0x3500)), (1, 0x2500));
        assert!(table.find(0x5500).is_none());
        table.insert(map(0x0, 0x8000, 0, 4));
        assert_eq!(table.len(), 1);
        assert_eq!(table.find(0x6500).unwrap().dso, 4);
    }

    #[test]
    fn frozen_versions_survive_later_changes_and_exec() {
        let mut model = ProcessModel::new();
        model.set_comm(10, 10, b"sh", true);
        model.map_user(10, map(0x1000, 0x2000, 0, 1));
        let v1 = model.freeze_maps(10);
        assert_eq!(model.freeze_maps(10), v1, "no change, same version");
        model.fork(11, 10, 11, 10);
        assert_eq!(model.comm(model.thread_comm(11).unwrap()), b"sh");
        model.set_comm(11, 11, b"cat", true);
        model.map_user(11, map(0x1000, 0x2000, 0, 2));
        let v2 = model.freeze_maps(11);
        assert_eq!(model.frozen_maps(v1).find(0x1800).unwrap().dso, 1);
        assert_eq!(model.frozen_maps(v2).find(0x1800).unwrap().dso, 2);
        assert_eq!(model.freeze_maps(999), 0);
        assert!(model.frozen_maps(0).is_empty());
    }
}
