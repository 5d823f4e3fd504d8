//! Text lines packed into one buffer: how a socket text receiver holds what it read
//! until a batch takes it.
//!
//! A `String` per line costs a heap block and a 24-byte slot besides the text (about
//! 1.75 times a 60-byte line) and an allocation on the receiver's one thread. Packed,
//! a line costs its text and one offset; the `String`s are made when a batch takes the
//! block, in parallel on the CPU pool, and live only while the batch runs. The WAL
//! holds a packed block in the same bytes as the `Vec<String>` it stands for, so
//! recovery reads it back as any other block.

use serde::ser::{Serialize, SerializeSeq, Serializer};

/// UTF-8 lines (without their line ends) in one `String`, with where each ends.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct PackedLines {
    text: String,
    ends: Vec<usize>,
}

impl PackedLines {
    /// An empty set with room for `lines` lines of `bytes` bytes in all.
    pub(crate) fn with_capacity(bytes: usize, lines: usize) -> Self {
        PackedLines {
            text: String::with_capacity(bytes),
            ends: Vec::with_capacity(lines),
        }
    }

    /// Appends one line.
    pub(crate) fn push(&mut self, line: &str) {
        self.text.push_str(line);
        self.ends.push(self.text.len());
    }

    /// Appends all of `other`'s lines.
    pub(crate) fn append(&mut self, other: &PackedLines) {
        let base = self.text.len();
        self.text.push_str(&other.text);
        self.ends.extend(other.ends.iter().map(|e| e + base));
    }

    /// The number of lines.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// The lines, in order.
    pub(crate) fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let line = &self.text[start..end];
            start = end;
            line
        })
    }

    /// One `String` per line, each allocated to its length.
    pub(crate) fn to_strings(&self) -> Vec<String> {
        self.iter().map(str::to_owned).collect()
    }

    /// Splits off the lines from `at` on (for a block too large for one WAL record).
    pub(crate) fn split_off(&mut self, at: usize) -> PackedLines {
        let cut = if at == 0 { 0 } else { self.ends[at - 1] };
        let text = self.text.split_off(cut);
        let ends = self
            .ends
            .split_off(at)
            .into_iter()
            .map(|e| e - cut)
            .collect();
        PackedLines { text, ends }
    }
}

/// Serialises as the sequence of its lines: the same bytes as the `Vec<String>` the
/// lines stand for, in any serde format.
impl Serialize for PackedLines {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for line in self.iter() {
            seq.serialize_element(line)?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packed(lines: &[&str]) -> PackedLines {
        let mut p = PackedLines::default();
        for l in lines {
            p.push(l);
        }
        p
    }

    #[test]
    fn lines_round_trip_with_empty_and_multibyte_lines() {
        let lines = ["a b", "", "ünï cödé", "", "last"];
        let p = packed(&lines);
        assert_eq!(p.len(), 5);
        assert_eq!(p.iter().collect::<Vec<_>>(), lines);
        assert_eq!(p.to_strings(), lines.map(String::from));
        assert_eq!(PackedLines::default().len(), 0);
    }

    #[test]
    fn append_and_split_off_keep_every_line() {
        let mut p = packed(&["x", "yy"]);
        p.append(&packed(&["", "zzz", "w"]));
        assert_eq!(p.iter().collect::<Vec<_>>(), ["x", "yy", "", "zzz", "w"]);
        for at in 0..=p.len() {
            let mut a = p.clone();
            let b = a.split_off(at);
            let mut joined: Vec<&str> = a.iter().collect();
            joined.extend(b.iter());
            assert_eq!(joined, ["x", "yy", "", "zzz", "w"], "split at {at}");
        }
    }

    #[test]
    fn encodes_as_the_strings_it_stands_for() {
        let lines = ["a", "", &"long ".repeat(100), "é"];
        let p = packed(&lines);
        let strings: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        let pos: Option<&[u8]> = Some(b"pos");
        assert_eq!(
            crate::runtime::graph::encode(&(pos, &p)).unwrap(),
            crate::runtime::graph::encode(&(pos, &strings)).unwrap()
        );
        let back: (Option<Vec<u8>>, Vec<String>) =
            crate::runtime::graph::decode(&crate::runtime::graph::encode(&(pos, &p)).unwrap())
                .unwrap();
        assert_eq!(back.1, strings);
    }
}
