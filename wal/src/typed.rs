//! A typed layer: records are values encoded with serde + bincode 2 (standard config).

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Appended, Lsn, RecordHandle, Result, Wal, WalError};

/// A [`Wal`] whose records are values of `T`.
#[derive(Debug, Clone)]
pub struct TypedWal<T> {
    wal: Wal,
    _t: PhantomData<fn() -> T>,
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

impl<T: Serialize + DeserializeOwned> TypedWal<T> {
    /// Wraps a log.
    pub fn new(wal: Wal) -> Self {
        TypedWal {
            wal,
            _t: PhantomData,
        }
    }

    /// The untyped log.
    pub fn inner(&self) -> &Wal {
        &self.wal
    }

    /// Encodes one value.
    pub fn encode(value: &T) -> Result<Vec<u8>> {
        bincode::serde::encode_to_vec(value, config()).map_err(|e| WalError::Encode(e.to_string()))
    }

    fn decode(lsn: Lsn, bytes: &[u8]) -> Result<T> {
        let (v, used) = crate::codec::decode_bounded(bytes).map_err(|e| WalError::Decode {
            lsn,
            reason: e.to_string(),
        })?;
        if used != bytes.len() {
            return Err(WalError::Decode {
                lsn,
                reason: format!("{} trailing bytes after the value", bytes.len() - used),
            });
        }
        Ok(v)
    }

    /// Appends one value; see [`Wal::append`].
    pub fn append(&self, value: &T) -> Result<Appended> {
        self.wal.append(&Self::encode(value)?)
    }

    /// Appends several values in one commit; see [`Wal::append_batch`].
    pub fn append_batch(&self, values: &[T]) -> Result<Vec<Appended>> {
        let encoded = values
            .iter()
            .map(Self::encode)
            .collect::<Result<Vec<_>>>()?;
        self.wal.append_batch(&encoded)
    }

    /// Reads one value by handle.
    pub fn read(&self, handle: RecordHandle) -> Result<T> {
        Self::decode(handle.lsn, &self.wal.read(handle)?)
    }

    /// Iterates over `(Lsn, T)` from `from`.
    pub fn iter_from(&self, from: Lsn) -> Result<impl Iterator<Item = Result<(Lsn, T)>>> {
        Ok(self
            .wal
            .iter_from(from)?
            .map(|r| r.and_then(|(lsn, b)| Ok((lsn, Self::decode(lsn, &b)?)))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WalOptions;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Block {
        stream: u32,
        records: Vec<String>,
    }

    #[test]
    fn typed_round_trip_and_wrong_type_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
        let typed = TypedWal::<Block>::new(wal.clone());
        let b = Block {
            stream: 3,
            records: vec!["a".into(), "bc".into()],
        };
        let a = typed.append(&b).unwrap();
        assert_eq!(typed.read(a.handle).unwrap(), b);
        let wrong = TypedWal::<(u64, u64, u64, u64)>::new(wal);
        assert!(matches!(wrong.read(a.handle), Err(WalError::Decode { .. })));
    }
}
