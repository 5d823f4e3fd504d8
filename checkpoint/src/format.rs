//! The envelope every file this crate writes is wrapped in.
//!
//! ```text
//! offset  size  field
//! 0       8     magic (b"SLUICECP" checkpoint, b"SLUICESC" state chunk,
//!               b"SLUICESM" state manifest)
//! 8       2     format version, little-endian u16 (currently 1)
//! 10      2     reserved, zero
//! 12      8     payload length, little-endian u64
//! 20      4     CRC32 (IEEE) of bytes 0..20 followed by the payload
//! 24      n     payload
//! ```
//!
//! A file is accepted only if it has the expected magic, a known version, exactly
//! `24 + payload length` bytes, and a matching CRC. Anything else is an error that names
//! the file and the offset; no partial payload is ever returned.

use crate::error::{CheckpointError, Result};

/// Size of the envelope header.
pub const HEADER_LEN: usize = 24;
/// The current format version.
pub const FORMAT_VERSION: u16 = 1;
/// Magic of a metadata checkpoint file.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"SLUICECP";
/// Magic of a state-snapshot chunk file.
pub const CHUNK_MAGIC: [u8; 8] = *b"SLUICESC";
/// Magic of a state-snapshot manifest file.
pub const MANIFEST_MAGIC: [u8; 8] = *b"SLUICESM";

/// Wraps `payload` in an envelope with `magic`.
pub fn encode(magic: [u8; 8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&magic);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&out[..20]);
    h.update(payload);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Checks the envelope of `bytes` (read from `path`) and returns its payload.
pub fn decode<'a>(magic: [u8; 8], path: &str, bytes: &'a [u8]) -> Result<&'a [u8]> {
    if bytes.len() < HEADER_LEN {
        return Err(CheckpointError::corruption(
            path,
            bytes.len() as u64,
            format!(
                "truncated: {} bytes, shorter than the {HEADER_LEN}-byte header",
                bytes.len()
            ),
        ));
    }
    if bytes[..8] != magic {
        return Err(CheckpointError::corruption(
            path,
            0,
            format!(
                "bad magic {:?}, expected {:?}",
                String::from_utf8_lossy(&bytes[..8]),
                String::from_utf8_lossy(&magic)
            ),
        ));
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != FORMAT_VERSION {
        return Err(CheckpointError::corruption(
            path,
            8,
            format!(
                "unsupported format version {version} (this build reads version {FORMAT_VERSION})"
            ),
        ));
    }
    let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let expected = (HEADER_LEN as u64).checked_add(len);
    if expected != Some(bytes.len() as u64) {
        return Err(CheckpointError::corruption(
            path,
            bytes.len() as u64,
            format!(
                "length mismatch: header says {len} payload bytes ({} in all), the file has {} bytes (truncated or extended)",
                HEADER_LEN as u64 + len.min(u64::MAX - HEADER_LEN as u64),
                bytes.len()
            ),
        ));
    }
    let stored = u32::from_le_bytes(bytes[20..24].try_into().expect("4 bytes"));
    let mut h = crc32fast::Hasher::new();
    h.update(&bytes[..20]);
    h.update(&bytes[HEADER_LEN..]);
    let computed = h.finalize();
    if stored != computed {
        return Err(CheckpointError::ChecksumMismatch {
            path: path.to_owned(),
            offset: 20,
            stored,
            computed,
        });
    }
    Ok(&bytes[HEADER_LEN..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let f = encode(CHECKPOINT_MAGIC, b"hello");
        assert_eq!(f.len(), HEADER_LEN + 5);
        assert_eq!(decode(CHECKPOINT_MAGIC, "x", &f).unwrap(), b"hello");
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let f = encode(CHECKPOINT_MAGIC, b"some payload bytes");
        for i in 0..f.len() {
            let mut g = f.clone();
            g[i] ^= 0x40;
            assert!(
                decode(CHECKPOINT_MAGIC, "x", &g).is_err(),
                "flip at {i} accepted"
            );
        }
    }

    #[test]
    fn every_truncation_and_extension_is_detected() {
        let f = encode(CHECKPOINT_MAGIC, b"some payload bytes");
        for n in 0..f.len() {
            let err = decode(CHECKPOINT_MAGIC, "file-a", &f[..n]).unwrap_err();
            assert!(err.to_string().contains("file-a"), "{err}");
        }
        let mut g = f.clone();
        g.push(0);
        assert!(decode(CHECKPOINT_MAGIC, "x", &g).is_err());
    }

    #[test]
    fn wrong_magic_and_version_are_named() {
        let f = encode(CHUNK_MAGIC, b"p");
        let err = decode(CHECKPOINT_MAGIC, "x", &f).unwrap_err();
        assert!(err.to_string().contains("bad magic"), "{err}");
        let mut g = encode(CHECKPOINT_MAGIC, b"p");
        g[8] = 9;
        let err = decode(CHECKPOINT_MAGIC, "x", &g).unwrap_err();
        assert!(
            err.to_string().contains("unsupported format version 9"),
            "{err}"
        );
    }

    #[test]
    fn huge_length_field_does_not_overflow() {
        let mut f = encode(CHECKPOINT_MAGIC, b"p");
        f[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode(CHECKPOINT_MAGIC, "x", &f).is_err());
    }
}
