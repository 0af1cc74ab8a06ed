//! The kernel's per-CPU sample ring buffer, read without copying more than
//! the records themselves.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{fence, AtomicU64, Ordering};

use perf_event_open_sys::bindings::perf_event_mmap_page;

/// A mapped perf ring buffer: one metadata page plus `2^n` data pages.
pub struct RingBuffer {
    fd: OwnedFd,
    base: *mut u8,
    map_len: usize,
    data_offset: usize,
    data_size: usize,
}

// SAFETY: the mapping is owned by this value and only accessed through it.
unsafe impl Send for RingBuffer {}

/// perf_event_header size.
const HEADER_SIZE: usize = 8;

impl RingBuffer {
    /// Maps `data_pages` (a power of two) data pages of the event `fd`;
    /// on failure the fd comes back with the error, for a smaller retry.
    pub fn map(
        fd: OwnedFd,
        data_pages: usize,
        page_size: usize,
    ) -> Result<RingBuffer, (OwnedFd, std::io::Error)> {
        assert!(data_pages.is_power_of_two());
        let map_len = (data_pages + 1) * page_size;
        // SAFETY: mapping a perf event fd as the kernel documents; the
        // result is checked before use and unmapped in Drop.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err((fd, std::io::Error::last_os_error()));
        }
        let base = base.cast::<u8>();
        let page = base.cast::<perf_event_mmap_page>();
        // SAFETY: the first page is the metadata page; data_offset/data_size
        // exist since Linux 4.1 (0 before: data follows the first page).
        let (offset, size) = unsafe { ((*page).data_offset as usize, (*page).data_size as usize) };
        let (data_offset, data_size) = if size == 0 {
            (page_size, data_pages * page_size)
        } else {
            (offset, size)
        };
        Ok(RingBuffer {
            fd,
            base,
            map_len,
            data_offset,
            data_size,
        })
    }

    /// The event fd the buffer belongs to.
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Size of the data area in bytes.
    pub fn data_size(&self) -> usize {
        self.data_size
    }

    fn head_and_tail(&self) -> (&AtomicU64, &AtomicU64) {
        let page = self.base.cast::<perf_event_mmap_page>();
        // SAFETY: data_head and data_tail are naturally aligned u64 fields
        // of the mapped metadata page, shared with the kernel.
        unsafe {
            (
                AtomicU64::from_ptr(std::ptr::addr_of_mut!((*page).data_head)),
                AtomicU64::from_ptr(std::ptr::addr_of_mut!((*page).data_tail)),
            )
        }
    }

    /// Copies every complete record now in the buffer into `out` (each
    /// 8-byte aligned, `header.size` bytes long, records that wrap around
    /// the end put back together), calls `record` with each one's range in
    /// `out`, and frees the space for the kernel. Returns how many bytes
    /// were consumed.
    pub fn drain(
        &mut self,
        out: &mut Vec<u8>,
        mut record: impl FnMut(std::ops::Range<usize>),
    ) -> usize {
        let (head, tail) = self.head_and_tail();
        let head_value = head.load(Ordering::Acquire);
        // The kernel's writes to the data area happen before data_head is
        // published; the acquire load above orders our reads after them.
        fence(Ordering::Acquire);
        let mut position = tail.load(Ordering::Relaxed);
        let start = position;
        while head_value.wrapping_sub(position) >= HEADER_SIZE as u64 {
            let mut header = [0u8; HEADER_SIZE];
            self.copy_out(position, &mut header);
            let record_size = u16::from_ne_bytes([header[6], header[7]]) as u64;
            if record_size < HEADER_SIZE as u64 || record_size > head_value.wrapping_sub(position) {
                // A torn or corrupt header: skip everything up to head.
                position = head_value;
                break;
            }
            let begin = out.len();
            out.resize(begin + record_size as usize, 0);
            let (_, rest) = out.split_at_mut(begin);
            self.copy_out(position, rest);
            record(begin..begin + record_size as usize);
            position = position.wrapping_add(record_size);
        }
        // Our reads of the records must complete before the kernel may
        // overwrite them.
        tail.store(position, Ordering::Release);
        position.wrapping_sub(start) as usize
    }

    /// Copies `dest.len()` bytes starting at ring position `position`.
    fn copy_out(&self, position: u64, dest: &mut [u8]) {
        let size = self.data_size;
        let offset = (position % size as u64) as usize;
        let first = dest.len().min(size - offset);
        // SAFETY: offset < size and first ≤ size - offset, so both copies
        // stay inside the data area; dest does not overlap the mapping.
        unsafe {
            let area = self.base.add(self.data_offset);
            std::ptr::copy_nonoverlapping(area.add(offset), dest.as_mut_ptr(), first);
            if first < dest.len() {
                std::ptr::copy_nonoverlapping(
                    area,
                    dest.as_mut_ptr().add(first),
                    dest.len() - first,
                );
            }
        }
    }
}

impl Drop for RingBuffer {
    fn drop(&mut self) {
        // SAFETY: unmapping the region mapped in `map`.
        unsafe {
            libc::munmap(self.base.cast(), self.map_len);
        }
    }
}
