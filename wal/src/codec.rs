//! Decoding bytes from disk or the network with bincode, bounded: a corrupt length
//! field must be an error, never an allocation of the claimed size (bincode's serde
//! path allocates a string's claimed length before reading it).
//!
//! The bound is a multiple of the input's own length, rounded up to a size class:
//! nothing valid claims more bytes than the input holds, and a corrupt claim allocates
//! at most four times the input (or 64 KiB) before it fails.

use serde::de::DeserializeOwned;

/// bincode's standard configuration with a byte limit of `N`.
type Bounded<const N: usize> = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<N>,
>;

fn bounded<const N: usize>() -> Bounded<N> {
    bincode::config::standard().with_limit::<N>()
}

/// Decodes a value encoded with bincode's standard configuration (serde), claiming at
/// most about four times `bytes.len()`; returns it and the bytes it used.
pub fn decode_bounded<T: DeserializeOwned>(
    bytes: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    const KIB: usize = 1 << 10;
    macro_rules! class {
        ($($limit:expr),*) => {
            $(if bytes.len() <= $limit / 4 {
                return bincode::serde::decode_from_slice(bytes, bounded::<{ $limit }>());
            })*
        };
    }
    class!(
        64 * KIB,
        KIB * KIB,
        16 * KIB * KIB,
        256 * KIB * KIB,
        4096 * KIB * KIB
    );
    bincode::serde::decode_from_slice(bytes, bounded::<{ usize::MAX }>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_length_is_an_error_not_an_allocation() {
        // A string claiming 2^45 bytes: unbounded, bincode would try to allocate it.
        let mut bytes = vec![253u8];
        bytes.extend_from_slice(&(1u64 << 45).to_le_bytes());
        let err = decode_bounded::<String>(&bytes).unwrap_err();
        assert!(
            matches!(err, bincode::error::DecodeError::LimitExceeded),
            "{err:?}"
        );
    }

    #[test]
    fn valid_values_of_every_size_class_decode() {
        for n in [0usize, 10, 100_000, 5_000_000] {
            let v = vec!["x".repeat(n)];
            let bytes = bincode::serde::encode_to_vec(&v, bincode::config::standard()).unwrap();
            let (back, used): (Vec<String>, usize) = decode_bounded(&bytes).unwrap();
            assert_eq!(back, v);
            assert_eq!(used, bytes.len());
        }
    }
}
