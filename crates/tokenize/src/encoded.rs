//! Compact storage of many encoded texts.

use crate::truncation::Truncation;

/// Token ids of one width; u16 holds any vocabulary of up to 65,536 entries (BERT's 30,522).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IdStore {
    U16(Vec<u16>),
    U32(Vec<u32>),
}

impl IdStore {
    /// An empty store wide enough for ids below `vocab_size`.
    pub(crate) fn for_vocab(vocab_size: usize) -> IdStore {
        if vocab_size <= 1 << 16 {
            IdStore::U16(Vec::new())
        } else {
            IdStore::U32(Vec::new())
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            IdStore::U16(v) => v.len(),
            IdStore::U32(v) => v.len(),
        }
    }

    /// Bytes per id.
    pub(crate) fn width(&self) -> usize {
        match self {
            IdStore::U16(_) => 2,
            IdStore::U32(_) => 4,
        }
    }

    pub(crate) fn reserve(&mut self, n: usize) {
        match self {
            IdStore::U16(v) => v.reserve(n),
            IdStore::U32(v) => v.reserve(n),
        }
    }

    /// Append ids; they must fit the width (guaranteed by the vocabulary size).
    pub(crate) fn extend_from_u32(&mut self, ids: &[u32]) {
        match self {
            IdStore::U16(v) => v.extend(ids.iter().map(|&id| {
                debug_assert!(id <= u16::MAX as u32);
                id as u16
            })),
            IdStore::U32(v) => v.extend_from_slice(ids),
        }
    }

    pub(crate) fn append(&mut self, other: IdStore) {
        match (self, other) {
            (IdStore::U16(a), IdStore::U16(b)) => a.extend_from_slice(&b),
            (IdStore::U32(a), IdStore::U32(b)) => a.extend_from_slice(&b),
            (IdStore::U32(a), IdStore::U16(b)) => a.extend(b.iter().map(|&id| id as u32)),
            (IdStore::U16(_), IdStore::U32(_)) => unreachable!("ids of one vocabulary share a width"),
        }
    }

    fn get(&self, i: usize) -> u32 {
        match self {
            IdStore::U16(v) => v[i] as u32,
            IdStore::U32(v) => v[i],
        }
    }

    /// Little-endian bytes of the ids in `range`, appended to `out`.
    pub(crate) fn write_le(&self, out: &mut Vec<u8>) {
        match self {
            IdStore::U16(v) => {
                out.reserve(v.len() * 2);
                for id in v {
                    out.extend_from_slice(&id.to_le_bytes());
                }
            }
            IdStore::U32(v) => {
                out.reserve(v.len() * 4);
                for id in v {
                    out.extend_from_slice(&id.to_le_bytes());
                }
            }
        }
    }

    /// Parse `bytes` (a whole number of ids of `width` bytes, little-endian).
    pub(crate) fn read_le(width: usize, bytes: &[u8]) -> Option<IdStore> {
        match width {
            2 => {
                Some(IdStore::U16(bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect()))
            }
            4 => Some(IdStore::U32(
                bytes.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            )),
            _ => None,
        }
    }
}

/// The ids of one row of [`EncodedTexts`], as u32 whatever the stored width.
#[derive(Debug, Clone)]
pub enum RowIds<'a> {
    /// Stored as u16.
    Narrow(std::slice::Iter<'a, u16>),
    /// Stored as u32.
    Wide(std::slice::Iter<'a, u32>),
}

impl Iterator for RowIds<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        match self {
            RowIds::Narrow(it) => it.next().map(|&id| id as u32),
            RowIds::Wide(it) => it.next().copied(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            RowIds::Narrow(it) => it.size_hint(),
            RowIds::Wide(it) => it.size_hint(),
        }
    }
}

impl ExactSizeIterator for RowIds<'_> {}

/// The packed ids (`[CLS] … [SEP]`, unpadded) of many texts, in input order.
///
/// Ids are stored back to back, as u16 when the vocabulary has at most 65,536 entries (BERT's
/// 30,522 does) and u32 otherwise, with one offset per row: 49,994 IMDB reviews at max_len 512
/// take about 30 MB instead of the 200 MB of `Vec<Vec<i64>>`. Padding is left to the batcher,
/// which pads each batch to its own longest row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedTexts {
    pub(crate) ids: IdStore,
    /// `offsets[row]..offsets[row + 1]` indexes `ids`; `offsets.len() == rows + 1`.
    pub(crate) offsets: Vec<usize>,
    pub(crate) max_len: usize,
    pub(crate) truncation: Truncation,
}

impl EncodedTexts {
    /// Store already packed rows (e.g. for tests of code that consumes encoded texts).
    ///
    /// `vocab_size` picks the id width; `max_len` and `truncation` are recorded as given.
    ///
    /// # Panics
    /// When an id does not fit the width `vocab_size` calls for (an id ≥ `vocab_size`
    /// above 65,535), or a row is longer than `max_len`.
    pub fn from_rows<R: AsRef<[u32]>>(
        rows: impl IntoIterator<Item = R>,
        vocab_size: usize,
        max_len: usize,
        truncation: Truncation,
    ) -> EncodedTexts {
        let mut ids = IdStore::for_vocab(vocab_size);
        let mut offsets = vec![0];
        for row in rows {
            let row = row.as_ref();
            assert!(row.len() <= max_len, "row of {} ids exceeds max_len {max_len}", row.len());
            if let IdStore::U16(_) = ids {
                assert!(
                    row.iter().all(|&id| id <= u16::MAX as u32),
                    "id above 65535 with vocab_size {vocab_size}"
                );
            }
            ids.extend_from_u32(row);
            offsets.push(ids.len());
        }
        EncodedTexts { ids, offsets, max_len, truncation }
    }

    /// Number of texts.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// True when no text was encoded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `max_len` the texts were packed to (every row has at most this many ids).
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The truncation strategy the texts were packed with.
    pub fn truncation(&self) -> Truncation {
        self.truncation
    }

    /// Number of ids of `row`, `[CLS]` and `[SEP]` included.
    ///
    /// # Panics
    /// When `row >= self.len()`.
    pub fn seq_len(&self, row: usize) -> usize {
        self.offsets[row + 1] - self.offsets[row]
    }

    /// The length of every row, in order.
    pub fn seq_lens(&self) -> impl ExactSizeIterator<Item = usize> + '_ {
        self.offsets.windows(2).map(|w| w[1] - w[0])
    }

    /// The longest row (0 when empty).
    pub fn longest(&self) -> usize {
        self.seq_lens().max().unwrap_or(0)
    }

    /// Total number of ids over all rows.
    pub fn total_ids(&self) -> usize {
        self.ids.len()
    }

    /// Bytes per stored id (2 or 4).
    pub fn id_width(&self) -> usize {
        self.ids.width()
    }

    /// The ids of `row`.
    ///
    /// # Panics
    /// When `row >= self.len()`.
    pub fn ids(&self, row: usize) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.seq_len(row));
        self.extend_row_into(row, &mut out);
        out
    }

    /// Append the ids of `row` to `out`, converted to `T` (`u32`, `i64`, …), without allocating
    /// a row: this is what a batcher calls to fill a padded `[batch, seq]` buffer.
    ///
    /// # Panics
    /// When `row >= self.len()`.
    pub fn extend_row_into<T: From<u32>>(&self, row: usize, out: &mut Vec<T>) {
        let range = self.offsets[row]..self.offsets[row + 1];
        match &self.ids {
            IdStore::U16(v) => out.extend(v[range].iter().map(|&id| T::from(id as u32))),
            IdStore::U32(v) => out.extend(v[range].iter().map(|&id| T::from(id))),
        }
    }

    /// The ids of `row` as an iterator, to convert to any integer type without a copy
    /// (`.map(|id| id as i32)`).
    ///
    /// # Panics
    /// When `row >= self.len()`.
    pub fn row_iter(&self, row: usize) -> RowIds<'_> {
        let range = self.offsets[row]..self.offsets[row + 1];
        match &self.ids {
            IdStore::U16(v) => RowIds::Narrow(v[range].iter()),
            IdStore::U32(v) => RowIds::Wide(v[range].iter()),
        }
    }

    /// The id at `position` of `row`.
    ///
    /// # Panics
    /// When out of range.
    pub fn id(&self, row: usize, position: usize) -> u32 {
        assert!(
            position < self.seq_len(row),
            "position {position} beyond row {row} of {} ids",
            self.seq_len(row)
        );
        self.ids.get(self.offsets[row] + position)
    }

    /// A new set holding `rows` of this one, in the order given (repeats allowed).
    ///
    /// # Panics
    /// When a row index is out of range.
    pub fn select(&self, rows: &[usize]) -> EncodedTexts {
        let mut ids = match &self.ids {
            IdStore::U16(_) => IdStore::U16(Vec::new()),
            IdStore::U32(_) => IdStore::U32(Vec::new()),
        };
        ids.reserve(rows.iter().map(|&r| self.seq_len(r)).sum());
        let mut offsets = Vec::with_capacity(rows.len() + 1);
        offsets.push(0);
        for &row in rows {
            let range = self.offsets[row]..self.offsets[row + 1];
            match (&mut ids, &self.ids) {
                (IdStore::U16(dst), IdStore::U16(src)) => dst.extend_from_slice(&src[range]),
                (IdStore::U32(dst), IdStore::U32(src)) => dst.extend_from_slice(&src[range]),
                _ => unreachable!(),
            }
            offsets.push(ids.len());
        }
        EncodedTexts { ids, offsets, max_len: self.max_len, truncation: self.truncation }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_in_both_widths() {
        let rows = vec![vec![101u32, 7, 102], vec![101, 102], vec![101, 70_000, 5, 102]];
        let wide = EncodedTexts::from_rows(&rows, 100_000, 8, Truncation::Tail);
        assert_eq!(wide.id_width(), 4);
        let narrow = EncodedTexts::from_rows(&rows[..2], 30_522, 8, Truncation::Head);
        assert_eq!(narrow.id_width(), 2);
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(&wide.ids(i), row);
            assert_eq!(wide.seq_len(i), row.len());
        }
        assert_eq!(narrow.ids(1), vec![101, 102]);
        let mut buf: Vec<i64> = vec![-1];
        narrow.extend_row_into(0, &mut buf);
        assert_eq!(buf, vec![-1, 101, 7, 102]);
        assert_eq!(wide.longest(), 4);
        assert_eq!(wide.total_ids(), 9);
        assert_eq!(wide.id(2, 1), 70_000);
        assert_eq!(wide.row_iter(2).collect::<Vec<_>>(), rows[2]);
        assert_eq!(narrow.row_iter(0).map(|id| id as i32).collect::<Vec<_>>(), vec![101, 7, 102]);
        assert_eq!(wide.seq_lens().collect::<Vec<_>>(), vec![3, 2, 4]);
        assert_eq!((wide.max_len(), wide.truncation()), (8, Truncation::Tail));
    }

    #[test]
    fn select_reorders_and_repeats() {
        let rows = vec![vec![1u32, 2], vec![3], vec![4, 5, 6]];
        let e = EncodedTexts::from_rows(&rows, 10, 3, Truncation::Head);
        let s = e.select(&[2, 0, 2]);
        assert_eq!(s.len(), 3);
        assert_eq!((s.ids(0), s.ids(1), s.ids(2)), (vec![4, 5, 6], vec![1, 2], vec![4, 5, 6]));
        assert!(e.select(&[]).is_empty());
    }

    #[test]
    #[should_panic(expected = "exceeds max_len")]
    fn from_rows_rejects_rows_over_max_len() {
        EncodedTexts::from_rows([[1u32, 2, 3]], 10, 2, Truncation::Head);
    }
}
