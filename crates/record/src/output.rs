//! Saving a recording as perf.data (`-o FILE`), readable by Linux perf.
//!
//! The file is written inside a fresh private directory next to the
//! destination and renamed into place when complete, so a planted symlink
//! is replaced rather than followed, another user's file is never
//! truncated, and the destination never holds a half-written file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracepoint_decode::{PerfEventAttr, PerfEventFormat};
use tracepoint_perf::{PerfDataFileWriter, PerfHeaderIndex};

/// What the file says about where it was recorded.
#[derive(Clone, Debug, Default)]
pub struct RecordingHost {
    /// `uname -n`.
    pub hostname: String,
    /// `uname -r`.
    pub os_release: String,
    /// `uname -m`.
    pub arch: String,
    /// CPUs available / online.
    pub cpus: (u32, u32),
    /// Our command line.
    pub cmdline: Vec<String>,
}

impl RecordingHost {
    /// This machine and process.
    pub fn current() -> RecordingHost {
        // SAFETY: uname fills the zeroed struct.
        let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
        unsafe { libc::uname(&mut uts) };
        let field = |f: &[libc::c_char]| {
            let bytes: Vec<u8> = f
                .iter()
                .take_while(|&&c| c != 0)
                .map(|&c| c as u8)
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        let online = crate::system::online_cpus().len() as u32;
        // SAFETY: sysconf without pointers.
        let configured = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
        RecordingHost {
            hostname: field(&uts.nodename),
            os_release: field(&uts.release),
            arch: field(&uts.machine),
            cpus: (
                u32::try_from(configured).unwrap_or(online).max(online),
                online,
            ),
            cmdline: std::env::args().collect(),
        }
    }
}

/// The one event of a recording, as the file describes it.
pub struct EventDescription<'a> {
    /// The attribute bytes as passed to perf_event_open.
    pub attr: &'a [u8],
    /// Its name.
    pub name: &'a str,
    /// The ids of every opened fd.
    pub ids: &'a [u64],
    /// tracefs format, for tracepoints.
    pub tracepoint_format: Option<&'a str>,
}

/// A perf.data file being written.
pub struct PerfDataOutput {
    destination: PathBuf,
    private_dir: PathBuf,
    writer: PerfDataFileWriter,
    build_ids: BTreeMap<Vec<u8>, (Vec<u8>, bool)>,
    finished: bool,
}

/// Why perf.data could not be written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {error}")]
pub struct OutputError {
    /// The destination.
    pub path: PathBuf,
    /// The cause.
    pub error: std::io::Error,
}

const PERF_RECORD_HEADER_BUILD_ID: u32 = 67;
const PERF_RECORD_MISC_BUILD_ID_SIZE: u16 = 1 << 15;

impl PerfDataOutput {
    /// Starts writing to a private temporary file for `destination`.
    pub fn create(destination: &Path) -> Result<PerfDataOutput, OutputError> {
        let error = |error| OutputError {
            path: destination.to_owned(),
            error,
        };
        let parent = destination
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = destination
            .file_name()
            .ok_or_else(|| error(std::io::Error::other("not a file name")))?
            .to_string_lossy()
            .into_owned();
        let private_dir = make_private_dir(parent, &name).map_err(error)?;
        let temp = private_dir.join("perf.data");
        let mut writer = PerfDataFileWriter::new();
        let created = temp
            .to_str()
            .ok_or_else(|| std::io::Error::other("path is not UTF-8"))
            .and_then(|t| writer.create_file(t));
        if let Err(e) = created {
            let _ = std::fs::remove_dir_all(&private_dir);
            return Err(error(e));
        }
        Ok(PerfDataOutput {
            destination: destination.to_owned(),
            private_dir,
            writer,
            build_ids: BTreeMap::new(),
            finished: false,
        })
    }

    /// The destination path.
    pub fn destination(&self) -> &Path {
        &self.destination
    }

    /// Appends records exactly as the kernel (or synthesis) produced them.
    pub fn write_record(&mut self, bytes: &[u8]) -> Result<(), OutputError> {
        self.writer
            .write_event_data(bytes)
            .map_err(|e| self.error(e))
    }

    /// Marks that every record so far is ordered before every later one.
    pub fn finish_round(&mut self) -> Result<(), OutputError> {
        self.writer
            .write_finished_round()
            .map_err(|e| self.error(e))
    }

    /// Remembers a build id for the file's build-id table.
    pub fn note_build_id(&mut self, path: &[u8], build_id: &[u8], kernel: bool) {
        if !build_id.is_empty() && build_id.len() <= 20 {
            self.build_ids
                .entry(path.to_vec())
                .or_insert_with(|| (build_id.to_vec(), kernel));
        }
    }

    fn error(&self, error: std::io::Error) -> OutputError {
        OutputError {
            path: self.destination.clone(),
            error,
        }
    }

    /// Writes the attribute, feature sections and header, then moves the
    /// file into place.
    pub fn finish(
        mut self,
        event: &EventDescription<'_>,
        host: &RecordingHost,
    ) -> Result<PathBuf, OutputError> {
        let attr = to_file_attr(event.attr);
        let format = event.tracepoint_format.and_then(|text| {
            let system = event.name.split(':').next().unwrap_or("");
            PerfEventFormat::parse(cfg!(target_pointer_width = "64"), system, text).map(Arc::new)
        });
        match &format {
            Some(format) => {
                let page_size = crate::system::SystemLimits::read().page_size as u32;
                self.writer.set_tracing_data_required(
                    std::mem::size_of::<libc::c_long>() as u8,
                    page_size,
                );
                if let Some(root) = crate::system::tracefs_root() {
                    if let Ok(page) = std::fs::read(root.join("events/header_page")) {
                        self.writer.set_tracing_data_header_page(&page);
                    }
                    if let Ok(header) = std::fs::read(root.join("events/header_event")) {
                        self.writer.set_tracing_data_header_event(&header);
                    }
                }
                self.writer
                    .add_tracepoint_event_desc(event.ids, &attr, event.name, format);
            }
            None => {
                self.writer.add_event_desc(event.ids, &attr, event.name);
            }
        }
        self.writer.set_utsname_headers(
            host.hostname.as_bytes(),
            host.os_release.as_bytes(),
            host.arch.as_bytes(),
        );
        self.writer.set_string_header(
            PerfHeaderIndex::Version,
            concat!("flamegraph-perf ", env!("CARGO_PKG_VERSION")).as_bytes(),
        );
        self.writer.set_nr_cpus_header(host.cpus.0, host.cpus.1);
        self.writer
            .set_header(PerfHeaderIndex::Cmdline, &cmdline_section(&host.cmdline));
        self.writer
            .set_header(PerfHeaderIndex::BuildId, &build_id_section(&self.build_ids));
        let temp = self.private_dir.join("perf.data");
        self.writer
            .finalize_and_close()
            .map_err(|e| self.error(e))?;
        std::fs::rename(&temp, &self.destination).map_err(|e| self.error(e))?;
        let _ = std::fs::remove_dir(&self.private_dir);
        self.finished = true;
        Ok(self.destination.clone())
    }
}

impl Drop for PerfDataOutput {
    fn drop(&mut self) {
        if !self.finished {
            self.writer.close_no_finalize();
            let _ = std::fs::remove_dir_all(&self.private_dir);
        }
    }
}

/// Creates `parent/.NAME.flamegraph-perf.PID.N` with mode 0700 (failing
/// rather than reusing anything that exists).
fn make_private_dir(parent: &Path, name: &str) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    for attempt in 0..1000u32 {
        let dir = parent.join(format!(
            ".{name}.flamegraph-perf.{}.{attempt}",
            std::process::id()
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(
        "could not create a private temporary directory",
    ))
}

/// Our attribute bytes in tracepoint_perf's attribute type (the same
/// kernel ABI layout, truncated or zero-extended to its size).
fn to_file_attr(bytes: &[u8]) -> PerfEventAttr {
    let mut attr = PerfEventAttr::default();
    let size = std::mem::size_of::<PerfEventAttr>().min(bytes.len());
    // SAFETY: PerfEventAttr is a repr(C) struct of plain integers, so any
    // byte pattern is a valid value; the copy stays within both objects.
    unsafe {
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            (&mut attr as *mut PerfEventAttr).cast::<u8>(),
            size,
        );
    }
    // The size field says how much of the struct is meaningful.
    attr.size = tracepoint_decode::PerfEventAttrSize(std::mem::size_of::<PerfEventAttr>() as u32);
    attr
}

/// perf's string: u32 length (of the padded string) + bytes padded with NULs to 64.
fn push_header_string(out: &mut Vec<u8>, s: &str) {
    let padded = (s.len() + 1).next_multiple_of(64);
    out.extend_from_slice(&(padded as u32).to_ne_bytes());
    out.extend_from_slice(s.as_bytes());
    out.resize(out.len() + padded - s.len(), 0);
}

fn cmdline_section(args: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(args.len() as u32).to_ne_bytes());
    for arg in args {
        push_header_string(&mut out, arg);
    }
    out
}

/// `build_id_event` entries, as perf's HEADER_BUILD_ID section holds them.
fn build_id_section(build_ids: &BTreeMap<Vec<u8>, (Vec<u8>, bool)>) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, (id, kernel)) in build_ids {
        let name_len = (path.len() + 1).next_multiple_of(64);
        let size = 8 + 4 + 24 + name_len;
        let Ok(size) = u16::try_from(size) else {
            continue;
        };
        let misc = PERF_RECORD_MISC_BUILD_ID_SIZE | if *kernel { 1 } else { 2 };
        out.extend_from_slice(&PERF_RECORD_HEADER_BUILD_ID.to_ne_bytes());
        out.extend_from_slice(&misc.to_ne_bytes());
        out.extend_from_slice(&size.to_ne_bytes());
        out.extend_from_slice(&(-1i32).to_ne_bytes());
        let mut id_field = [0u8; 24];
        id_field[..id.len()].copy_from_slice(id);
        id_field[20] = id.len() as u8;
        out.extend_from_slice(&id_field);
        out.extend_from_slice(path);
        out.resize(out.len() + name_len - path.len(), 0);
    }
    out
}
