//! Checking a pipe-mode stream (stdin) record by record on its way to the
//! parser: the same checks as [`super::layout`], for data that cannot be
//! looked at in advance.

use std::cell::RefCell;
use std::io::{self, Read};
use std::rc::Rc;

use super::layout::{neutralize_feature_bytes, Damage, PIPE_HEADER_SIZE};

const PERF_RECORD_HEADER_ATTR: u32 = 64;
const PERF_RECORD_FINISHED_ROUND: u32 = 68;
const PERF_RECORD_AUXTRACE: u32 = 71;
const PERF_RECORD_HEADER_FEATURE: u32 = 80;
/// AUXTRACE payloads larger than this are treated as corrupt.
const MAX_AUX_BYTES: u64 = 1 << 30;

/// What the stream looked like so far.
#[derive(Debug, Default)]
pub struct PipeState {
    /// Complete records passed on (FINISHED_ROUND not counted).
    pub records: u64,
    /// Where the stream broke, if it did.
    pub damage: Option<Damage>,
}

/// A reader that passes on whole, checked records only and ends the
/// stream at the first broken one.
pub struct PipeGuard<R> {
    inner: R,
    pending: Vec<u8>,
    position: usize,
    offset: u64,
    started: bool,
    done: bool,
    big_endian: bool,
    state: Rc<RefCell<PipeState>>,
}

impl<R: Read> PipeGuard<R> {
    /// Wraps a pipe-mode stream.
    pub fn new(inner: R) -> (PipeGuard<R>, Rc<RefCell<PipeState>>) {
        let state = Rc::new(RefCell::new(PipeState::default()));
        (
            PipeGuard {
                inner,
                pending: Vec::new(),
                position: 0,
                offset: 0,
                started: false,
                done: false,
                big_endian: false,
                state: Rc::clone(&state),
            },
            state,
        )
    }

    fn damage(&mut self, what: String) {
        let mut state = self.state.borrow_mut();
        let records = state.records;
        state.damage.get_or_insert(Damage {
            offset: self.offset,
            what: format!("{what}; read the {records} complete records before it"),
        });
        self.done = true;
    }

    /// Reads exactly `buf.len()` bytes; returns how many arrived before EOF.
    fn fill(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(got)
    }

    fn u32_at(&self, bytes: &[u8], at: usize) -> u32 {
        let raw: [u8; 4] = bytes[at..at + 4].try_into().expect("4 bytes");
        if self.big_endian {
            u32::from_be_bytes(raw)
        } else {
            u32::from_le_bytes(raw)
        }
    }

    /// Queues the next whole record (or the header), or ends the stream.
    fn next_record(&mut self) -> io::Result<()> {
        self.pending.clear();
        self.position = 0;
        if !self.started {
            self.started = true;
            let mut header = [0u8; PIPE_HEADER_SIZE as usize];
            let got = self.fill(&mut header)?;
            self.big_endian = &header[..8] == b"2ELIFREP";
            self.pending.extend_from_slice(&header[..got]);
            self.offset += got as u64;
            if got < header.len() {
                self.done = true;
            }
            return Ok(());
        }
        let mut head = [0u8; 8];
        let got = self.fill(&mut head)?;
        if got == 0 {
            self.done = true;
            return Ok(());
        }
        if got < head.len() {
            self.damage(format!("the stream ends {got} bytes into a record header"));
            return Ok(());
        }
        let kind = self.u32_at(&head, 0);
        let size_raw: [u8; 2] = head[6..8].try_into().expect("2 bytes");
        let size = if self.big_endian {
            u16::from_be_bytes(size_raw)
        } else {
            u16::from_le_bytes(size_raw)
        } as usize;
        if size < head.len() {
            self.damage(format!(
                "record of type {kind} claims {size} bytes (less than its header)"
            ));
            return Ok(());
        }
        let mut record = vec![0u8; size];
        record[..8].copy_from_slice(&head);
        let got = self.fill(&mut record[8..])?;
        if got < size - 8 {
            self.damage(format!(
                "the stream ends inside a record of type {kind} ({} of {size} bytes)",
                got + 8
            ));
            return Ok(());
        }
        if kind == PERF_RECORD_AUXTRACE && size >= 16 {
            let raw: [u8; 8] = record[8..16].try_into().expect("8 bytes");
            let extra = if self.big_endian {
                u64::from_be_bytes(raw)
            } else {
                u64::from_le_bytes(raw)
            };
            if extra > MAX_AUX_BYTES {
                self.damage(format!(
                    "AUXTRACE record claims {extra} bytes of trace data"
                ));
                return Ok(());
            }
            let start = record.len();
            record.resize(start + extra as usize, 0);
            let got = self.fill(&mut record[start..])?;
            if got < extra as usize {
                self.damage("the stream ends inside AUXTRACE data".into());
                return Ok(());
            }
        }
        if kind == PERF_RECORD_HEADER_ATTR {
            let own = self.u32_at(&record, 12) as usize;
            let own = if own == 0 { 64 } else { own };
            let body = size - 8;
            if !(64..=body).contains(&own) || !(body - own).is_multiple_of(8) {
                self.damage(format!(
                    "event attribute record of {body} bytes holds an attribute of {own}"
                ));
                return Ok(());
            }
        }
        if kind == PERF_RECORD_HEADER_FEATURE {
            if let Some((at, patch)) = neutralize_feature_bytes(&record, self.big_endian) {
                record[at..at + patch.len()].copy_from_slice(&patch);
            }
        }
        if kind != PERF_RECORD_FINISHED_ROUND {
            self.state.borrow_mut().records += 1;
        }
        self.offset += record.len() as u64;
        self.pending = record;
        Ok(())
    }
}

impl<R: Read> Read for PipeGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.position == self.pending.len() {
            if self.done {
                return Ok(0);
            }
            self.next_record()?;
        }
        let n = buf.len().min(self.pending.len() - self.position);
        buf[..n].copy_from_slice(&self.pending[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_whole_records_and_stops_at_a_cut() {
        let mut stream = b"PERFILE2".to_vec();
        stream.extend_from_slice(&16u64.to_le_bytes());
        for _ in 0..2 {
            stream.extend_from_slice(&3u32.to_le_bytes());
            stream.extend_from_slice(&0u16.to_le_bytes());
            stream.extend_from_slice(&16u16.to_le_bytes());
            stream.extend_from_slice(&[7; 8]);
        }
        let whole = stream.len();
        stream.extend_from_slice(&[3, 0, 0, 0, 0, 0, 16, 0, 1]);
        let (mut guard, state) = PipeGuard::new(&stream[..]);
        let mut out = Vec::new();
        guard.read_to_end(&mut out).unwrap();
        assert_eq!(out, &stream[..whole]);
        let state = state.borrow();
        assert_eq!(state.records, 2);
        assert_eq!(state.damage.as_ref().unwrap().offset, whole as u64);
    }
}
