//! The on-disk format: segment headers and record frames. Pure functions over bytes,
//! shared by the writer, the readers, recovery and the fuzz target.
//!
//! ```text
//! segment  = header frame*
//! header   = magic "SLUICEWL" | version u32 | segment id u64 | first lsn u64
//!            | created unix-ms u64 | crc32 u32 of the 36 bytes before it     (40 bytes)
//! frame    = len u32 | crc32 u32 of (len bytes ++ payload) | payload          (8 + len bytes)
//! ```
//! All integers are little-endian. The length is inside the CRC, so a flipped length
//! is caught as a checksum mismatch or an impossible length, never read as a record.

use crate::{Lsn, SegmentId};

/// The magic at the start of every segment.
pub const MAGIC: [u8; 8] = *b"SLUICEWL";
/// The current format version.
pub const FORMAT_VERSION: u32 = 1;
/// The size of a segment header.
pub const HEADER_LEN: usize = 40;
/// The size of a frame header (length + CRC).
pub const FRAME_HEADER_LEN: usize = 8;
/// The largest payload the format allows (a length above it is impossible, i.e. corrupt).
pub const MAX_RECORD_BYTES: usize = 256 << 20;

/// A decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub segment: SegmentId,
    pub first_lsn: Lsn,
    pub created_ms: u64,
}

impl SegmentHeader {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..20].copy_from_slice(&self.segment.0.to_le_bytes());
        b[20..28].copy_from_slice(&self.first_lsn.0.to_le_bytes());
        b[28..36].copy_from_slice(&self.created_ms.to_le_bytes());
        let crc = crc32fast::hash(&b[0..36]);
        b[36..40].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a header, saying what is wrong with it when it is not one.
    pub fn decode(b: &[u8]) -> Result<SegmentHeader, String> {
        if b.len() < HEADER_LEN {
            return Err(format!(
                "segment header cut short: {} of {HEADER_LEN} bytes",
                b.len()
            ));
        }
        if b[0..8] != MAGIC {
            return Err("bad magic: not a sluice WAL segment".into());
        }
        let stored = u32_at(b, 36);
        let computed = crc32fast::hash(&b[0..36]);
        if stored != computed {
            return Err(format!(
                "segment header checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ));
        }
        let version = u32_at(b, 8);
        if version != FORMAT_VERSION {
            return Err(format!(
                "unsupported format version {version} (this build reads version {FORMAT_VERSION})"
            ));
        }
        Ok(SegmentHeader {
            segment: SegmentId(u64_at(b, 12)),
            first_lsn: Lsn(u64_at(b, 20)),
            created_ms: u64_at(b, 28),
        })
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn frame_crc(len: u32, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Appends one frame holding `payload` to `out`.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    let len = payload.len() as u32;
    out.reserve(FRAME_HEADER_LEN + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&frame_crc(len, payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Why the bytes at some offset are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadFrame {
    /// The frame (header or payload) runs past the end of the data.
    CutShort { needed: usize, available: usize },
    /// The length field is larger than any record can be.
    ImpossibleLength { len: u64 },
    /// The CRC does not match.
    ChecksumMismatch { stored: u32, computed: u32 },
}

impl std::fmt::Display for BadFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadFrame::CutShort { needed, available } => write!(
                f,
                "frame cut short: needs {needed} bytes, {available} remain"
            ),
            BadFrame::ImpossibleLength { len } => write!(
                f,
                "impossible record length {len} (maximum {MAX_RECORD_BYTES})"
            ),
            BadFrame::ChecksumMismatch { stored, computed } => write!(
                f,
                "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
        }
    }
}

/// Decodes the frame at the start of `buf`: its payload and total length, or why not.
/// `buf` must not be empty.
pub fn decode_frame(buf: &[u8]) -> Result<(&[u8], usize), BadFrame> {
    if buf.len() < FRAME_HEADER_LEN {
        return Err(BadFrame::CutShort {
            needed: FRAME_HEADER_LEN,
            available: buf.len(),
        });
    }
    let len = u32_at(buf, 0);
    if len as usize > MAX_RECORD_BYTES {
        return Err(BadFrame::ImpossibleLength { len: len as u64 });
    }
    let total = FRAME_HEADER_LEN + len as usize;
    if buf.len() < total {
        return Err(BadFrame::CutShort {
            needed: total,
            available: buf.len(),
        });
    }
    let payload = &buf[FRAME_HEADER_LEN..total];
    let stored = u32_at(buf, 4);
    let computed = frame_crc(len, payload);
    if stored != computed {
        return Err(BadFrame::ChecksumMismatch { stored, computed });
    }
    Ok((payload, total))
}

/// Where a scan stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanStop {
    /// Offset of the bad frame (relative to the scanned bytes).
    pub offset: usize,
    /// What is wrong with it.
    pub bad: BadFrame,
    /// True when no valid frame follows the bad one: the signature of a write that was
    /// cut off by a crash (a torn tail) rather than of damage inside the log.
    pub tail: bool,
}

/// The result of scanning a run of frames.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scan {
    /// `(offset, payload length)` of each valid frame, relative to the scanned bytes.
    pub frames: Vec<(usize, usize)>,
    /// The offset just past the last valid frame.
    pub end: usize,
    /// Set when the scan met bytes that are not a valid frame.
    pub stop: Option<ScanStop>,
}

/// Scans `data` as a run of frames, stopping at the first bad one.
pub fn scan_frames(data: &[u8]) -> Scan {
    let mut scan = Scan::default();
    let mut at = 0;
    while at < data.len() {
        match decode_frame(&data[at..]) {
            Ok((payload, total)) => {
                scan.frames.push((at, payload.len()));
                at += total;
            }
            Err(bad) => {
                let tail = !valid_frame_after(data, at + 1);
                scan.stop = Some(ScanStop {
                    offset: at,
                    bad,
                    tail,
                });
                break;
            }
        }
    }
    scan.end = at;
    scan
}

/// Whether a valid, non-empty frame starts anywhere at or after `from`. Runs only on the
/// error path; random bytes are rejected by the length check before any CRC is computed.
fn valid_frame_after(data: &[u8], from: usize) -> bool {
    let mut at = from;
    while at + FRAME_HEADER_LEN < data.len() {
        let len = u32_at(data, at) as usize;
        if len > 0 && len <= data.len() - at - FRAME_HEADER_LEN && decode_frame(&data[at..]).is_ok()
        {
            return true;
        }
        at += 1;
    }
    false
}

/// The decoder's contract, checked on arbitrary bytes by the fuzz target
/// (`fuzz/fuzz_targets/frame_decoder.rs`) and by a property test: no panic; the frames
/// a scan accepts are contiguous and re-encode to exactly the bytes they were read
/// from (so damage is never returned as a record); a scan stops only at a frame that
/// does not decode.
#[doc(hidden)]
pub fn check_decoder_contract(data: &[u8]) {
    let _ = SegmentHeader::decode(data);
    let scan = scan_frames(data);
    let mut at = 0;
    for &(offset, len) in &scan.frames {
        assert_eq!(offset, at, "frames are contiguous");
        let Ok((payload, total)) = decode_frame(&data[offset..]) else {
            panic!("a scanned frame at {offset} does not decode");
        };
        assert_eq!(payload.len(), len);
        let mut again = Vec::new();
        encode_frame(payload, &mut again);
        assert_eq!(&data[offset..offset + total], &again[..]);
        at = offset + total;
    }
    assert_eq!(scan.end, at);
    match &scan.stop {
        Some(stop) => {
            assert_eq!(stop.offset, scan.end);
            assert!(decode_frame(&data[stop.offset..]).is_err());
        }
        None => assert_eq!(scan.end, data.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decoder_contract_holds_on_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            check_decoder_contract(&data);
        }

        #[test]
        fn decoder_contract_holds_on_damaged_frames(
            lens in proptest::collection::vec(0usize..80, 1..8),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3),
            cut in any::<usize>(),
        ) {
            let mut data = Vec::new();
            for (i, len) in lens.iter().enumerate() {
                encode_frame(&vec![i as u8; *len], &mut data);
            }
            for (at, x) in flips {
                let n = data.len();
                data[at % n] ^= x;
            }
            data.truncate(cut % (data.len() + 1));
            check_decoder_contract(&data);
        }
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = SegmentHeader {
            segment: SegmentId(7),
            first_lsn: Lsn(42),
            created_ms: 1_700_000_000_000,
        };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b).unwrap(), h);
        for i in 0..HEADER_LEN {
            let mut d = b;
            d[i] ^= 0x40;
            assert!(SegmentHeader::decode(&d).is_err(), "flip at {i} accepted");
        }
        assert!(SegmentHeader::decode(&b[..39]).is_err());
    }

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        for p in [&b""[..], b"a", b"hello world"] {
            encode_frame(p, &mut buf);
        }
        let scan = scan_frames(&buf);
        assert_eq!(scan.stop, None);
        assert_eq!(scan.end, buf.len());
        let lens: Vec<usize> = scan.frames.iter().map(|f| f.1).collect();
        assert_eq!(lens, vec![0, 1, 11]);
    }

    #[test]
    fn cut_tail_is_a_tail_and_inner_damage_is_not() {
        let mut buf = Vec::new();
        for i in 0..10u8 {
            encode_frame(&[i; 100], &mut buf);
        }
        let full = buf.len();
        // Cut the last frame short: a torn tail.
        let scan = scan_frames(&buf[..full - 30]);
        let stop = scan.stop.unwrap();
        assert!(stop.tail);
        assert_eq!(scan.frames.len(), 9);
        // Flip a byte in the third frame: damage with valid frames after it.
        let mut d = buf.clone();
        d[2 * 108 + 50] ^= 1;
        let scan = scan_frames(&d);
        let stop = scan.stop.unwrap();
        assert_eq!(stop.offset, 2 * 108);
        assert!(matches!(stop.bad, BadFrame::ChecksumMismatch { .. }));
        assert!(!stop.tail);
        // Zeroes after the last frame (preallocated, never written): a tail.
        let mut z = buf.clone();
        z.extend_from_slice(&[0u8; 4096]);
        let scan = scan_frames(&z);
        assert_eq!(scan.frames.len(), 10);
        assert!(scan.stop.unwrap().tail);
        // An impossible length with frames after it is damage.
        let mut l = buf.clone();
        l[108..112].copy_from_slice(&u32::MAX.to_le_bytes());
        let stop = scan_frames(&l).stop.unwrap();
        assert_eq!(
            stop.bad,
            BadFrame::ImpossibleLength {
                len: u32::MAX as u64
            }
        );
        assert!(!stop.tail);
    }
}
