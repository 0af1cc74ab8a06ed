//! A file seen through byte patches, without copying it.

use std::io::{self, Read, Seek, SeekFrom};

/// `base` (up to `len` bytes) with `patches` laid over it; implements
/// `Read + Seek` for the parser.
pub struct Patched<B> {
    base: B,
    len: u64,
    patches: Vec<(u64, Vec<u8>)>,
    position: u64,
}

impl<B: AsRef<[u8]>> Patched<B> {
    /// `patches` must be sorted by offset and not overlap; bytes past
    /// `len` are not visible.
    pub fn new(base: B, len: u64, patches: Vec<(u64, Vec<u8>)>) -> Patched<B> {
        let len = len.min(base.as_ref().len() as u64);
        Patched {
            base,
            len,
            patches,
            position: 0,
        }
    }
}

impl<B: AsRef<[u8]>> Read for Patched<B> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.position >= self.len {
            return Ok(0);
        }
        let start = self.position as usize;
        let n = buf.len().min((self.len - self.position) as usize);
        let end = start + n;
        buf[..n].copy_from_slice(&self.base.as_ref()[start..end]);
        for (offset, bytes) in &self.patches {
            let (patch_start, patch_end) = (*offset as usize, *offset as usize + bytes.len());
            if patch_end <= start || patch_start >= end {
                continue;
            }
            let from = patch_start.max(start);
            let to = patch_end.min(end);
            buf[from - start..to - start]
                .copy_from_slice(&bytes[from - patch_start..to - patch_start]);
        }
        self.position += n as u64;
        Ok(n)
    }
}

impl<B: AsRef<[u8]>> Seek for Patched<B> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::End(delta) => self.len.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        };
        let target = target
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        self.position = target;
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_show_through_reads_at_any_offset() {
        let base = b"0123456789".to_vec();
        let mut file = Patched::new(base, 8, vec![(2, b"ab".to_vec()), (6, b"xyz".to_vec())]);
        let mut all = Vec::new();
        file.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"01ab45xy", "patches applied, length cut at 8");
        file.seek(SeekFrom::Start(3)).unwrap();
        let mut two = [0u8; 2];
        file.read_exact(&mut two).unwrap();
        assert_eq!(&two, b"b4");
        assert!(file.seek(SeekFrom::Current(-10)).is_err());
        assert_eq!(file.seek(SeekFrom::End(0)).unwrap(), 8);
    }
}
