//! Code objects that addresses resolve into: ELF files, the kernel, JIT maps.

use std::collections::HashMap;

use crate::event::CpuMode;

/// Index of a [`Dso`] in a [`Dsos`] registry.
pub type DsoId = u32;

/// What kind of code object a mapping refers to; decides how addresses
/// inside it are translated and symbolized.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DsoKind {
    /// The kernel image (`[kernel.kallsyms]`), symbolized from kallsyms.
    Kernel,
    /// A kernel module (`[name]` or a `.ko` path), symbolized from kallsyms.
    KernelModule,
    /// The vDSO the kernel maps into every process.
    Vdso,
    /// A file-backed mapping, symbolized from the ELF file.
    Elf,
    /// Anonymous executable memory of one process: JIT code, named by
    /// `/tmp/perf-PID.map`. Holds the pid the map file is named after.
    PerfMap(i32),
    /// Anything else that cannot be symbolized (`[vsyscall]`, `[uprobes]`, …).
    Other,
}

/// A code object.
#[derive(Clone, Debug)]
pub struct Dso {
    /// The name perf shows for it: a path, `[vdso]`, `[kernel.kallsyms]`,
    /// `/tmp/perf-PID.map`.
    pub name: Vec<u8>,
    /// How to symbolize it.
    pub kind: DsoKind,
    /// GNU build id, when the recording carries one.
    pub build_id: Option<Vec<u8>>,
    /// A process that mapped it (the first one seen; -1 for the kernel):
    /// in a live recording its files are read through that process's root.
    pub pid: i32,
}

impl Dso {
    /// The frame name for an address in this object that has no symbol:
    /// `[basename]`, as stackcollapse-perf does (without doubling brackets
    /// of names that already have them, like `[vdso]`).
    pub fn unresolved_frame_name(&self) -> String {
        let name = String::from_utf8_lossy(&self.name);
        let name = name.strip_suffix(" (deleted)").unwrap_or(&name);
        let base = name.rsplit('/').next().unwrap_or(name);
        let base = base
            .strip_prefix('[')
            .and_then(|b| b.strip_suffix(']'))
            .unwrap_or(base);
        format!("[{base}]")
    }
}

/// (kind, name, build id when it had to tell two files at one path apart).
type DsoKey = (DsoKind, Vec<u8>, Option<Vec<u8>>);

/// Registry of code objects, each stored once.
#[derive(Debug, Default)]
pub struct Dsos {
    dsos: Vec<Dso>,
    ids: HashMap<DsoKey, DsoId>,
}

impl Dsos {
    /// The object for a mapping of `path` in process `pid`, classified the
    /// way perf does (`map__new`): anonymous executable memory becomes the
    /// process's perf map, `[vdso]` the vDSO, kernel-mode maps the kernel or
    /// a module, everything else an ELF file. Two files at the same path
    /// with different build ids (two containers, an upgrade) are two objects.
    pub fn for_mapping(
        &mut self,
        pid: i32,
        path: &[u8],
        cpu_mode: CpuMode,
        build_id: Option<&[u8]>,
    ) -> DsoId {
        let (kind, name) = classify(pid, path, cpu_mode);
        let mut key = (kind.clone(), name.clone(), None);
        if let Some(&id) = self.ids.get(&key) {
            let dso = &mut self.dsos[id as usize];
            match (build_id, &dso.build_id) {
                (Some(new), None) => {
                    dso.build_id = Some(new.to_vec());
                    return id;
                }
                (Some(new), Some(known)) if new != known.as_slice() => {
                    key.2 = Some(new.to_vec());
                    if let Some(&other) = self.ids.get(&key) {
                        return other;
                    }
                }
                _ => return id,
            }
        }
        let id = DsoId::try_from(self.dsos.len()).expect("fewer than 2^32 objects");
        self.dsos.push(Dso {
            name,
            kind,
            build_id: build_id.map(<[u8]>::to_vec),
            pid,
        });
        self.ids.insert(key, id);
        id
    }

    /// The kernel image object, created on first use.
    pub fn kernel(&mut self) -> DsoId {
        self.for_mapping(-1, b"[kernel.kallsyms]", CpuMode::Kernel, None)
    }

    /// Records a build id from the recording's build-id table for the
    /// object with this path (if such an object exists or appears later):
    /// an ELF file, the vDSO, or the kernel image (`[kernel.kallsyms]`).
    pub fn note_build_id(&mut self, path: &[u8], build_id: &[u8]) {
        // The table lists the kernel image under its perf name.
        let mode = if path == b"[kernel.kallsyms]" {
            CpuMode::Kernel
        } else {
            CpuMode::User
        };
        let pid = if mode == CpuMode::Kernel { -1 } else { 0 };
        self.for_mapping(pid, path, mode, Some(build_id));
    }

    /// The object behind an id.
    pub fn get(&self, id: DsoId) -> &Dso {
        &self.dsos[id as usize]
    }

    /// All objects with their ids.
    pub fn iter(&self) -> impl Iterator<Item = (DsoId, &Dso)> {
        self.dsos.iter().enumerate().map(|(i, d)| (i as DsoId, d))
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.dsos.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.dsos.is_empty()
    }
}

fn classify(pid: i32, path: &[u8], cpu_mode: CpuMode) -> (DsoKind, Vec<u8>) {
    if matches!(cpu_mode, CpuMode::Kernel | CpuMode::GuestKernel) {
        if path.starts_with(b"[kernel.kallsyms]") || path.starts_with(b"[guest.kernel.kallsyms") {
            return (DsoKind::Kernel, b"[kernel.kallsyms]".to_vec());
        }
        return (DsoKind::KernelModule, module_name(path));
    }
    let anonymous = path == b"//anon"
        || path.starts_with(b"/dev/zero")
        || path.starts_with(b"/anon_hugepage")
        || path.starts_with(b"[anon:")
        || path.starts_with(b"[stack")
        || path.starts_with(b"/SYSV")
        || path == b"[heap]"
        || path.is_empty();
    if anonymous {
        return (
            DsoKind::PerfMap(pid),
            format!("/tmp/perf-{pid}.map").into_bytes(),
        );
    }
    if path == b"[vdso]" {
        return (DsoKind::Vdso, path.to_vec());
    }
    if path.starts_with(b"[") {
        return (DsoKind::Other, path.to_vec());
    }
    (DsoKind::Elf, path.to_vec())
}

/// `[name]` for a module path like `/lib/modules/…/nf_conntrack.ko(.xz)`,
/// the path itself when it already is `[name]`.
fn module_name(path: &[u8]) -> Vec<u8> {
    if path.starts_with(b"[") {
        return path.to_vec();
    }
    let base = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    let stem = base.split(|&b| b == b'.').next().unwrap_or(base);
    let mut name = b"[".to_vec();
    // Module names use `_` where file names may use `-`.
    name.extend(stem.iter().map(|&b| if b == b'-' { b'_' } else { b }));
    name.push(b']');
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_like_perf() {
        let mut dsos = Dsos::default();
        let jit = dsos.for_mapping(42, b"//anon", CpuMode::User, None);
        assert_eq!(dsos.get(jit).kind, DsoKind::PerfMap(42));
        assert_eq!(dsos.get(jit).unresolved_frame_name(), "[perf-42.map]");
        let libc = dsos.for_mapping(
            1,
            b"/usr/lib/x86_64-linux-gnu/libc.so.6",
            CpuMode::User,
            None,
        );
        assert_eq!(dsos.get(libc).unresolved_frame_name(), "[libc.so.6]");
        assert_eq!(
            dsos.for_mapping(
                2,
                b"/usr/lib/x86_64-linux-gnu/libc.so.6",
                CpuMode::User,
                None
            ),
            libc
        );
        let kernel = dsos.for_mapping(-1, b"[kernel.kallsyms]_text", CpuMode::Kernel, None);
        assert_eq!(kernel, dsos.kernel());
        assert_eq!(
            dsos.get(kernel).unresolved_frame_name(),
            "[kernel.kallsyms]"
        );
        let module = dsos.for_mapping(
            -1,
            b"/lib/modules/6.1/kernel/nf-conntrack.ko.xz",
            CpuMode::Kernel,
            None,
        );
        assert_eq!(dsos.get(module).name, b"[nf_conntrack]");
        let vdso = dsos.for_mapping(3, b"[vdso]", CpuMode::User, None);
        assert_eq!(dsos.get(vdso).unresolved_frame_name(), "[vdso]");
        // The same path with another build id is another file.
        let a = dsos.for_mapping(5, b"/usr/bin/app", CpuMode::User, Some(b"aaaa"));
        let b = dsos.for_mapping(6, b"/usr/bin/app", CpuMode::User, Some(b"bbbb"));
        assert_ne!(a, b);
        assert_eq!(
            dsos.for_mapping(7, b"/usr/bin/app", CpuMode::User, Some(b"bbbb")),
            b
        );
        assert_eq!(dsos.for_mapping(7, b"/usr/bin/app", CpuMode::User, None), a);
        assert_eq!(dsos.get(b).pid, 6);
    }
}
