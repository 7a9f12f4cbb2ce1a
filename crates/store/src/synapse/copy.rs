//! Reading PostgreSQL's binary `COPY … TO STDOUT (FORMAT binary)` output of
//! the attached load's query (destination, the four numeric columns as
//! `bigint`, `hashtext(destination)`), row by row as the chunks arrive.
//! Binary rather than text: no escapes to undo and no digits to parse, and
//! PostgreSQL sends a `bigint` without formatting it. Strict: anything but
//! the format's header, rows of exactly those six fields and its trailer is
//! a [`CopyError`], never a panic, and nothing after the trailer is
//! accepted.
//!
//! Hand-written because sqlx hands out the COPY stream as raw bytes and has
//! no reader for the binary format; the crate that has one
//! (`tokio-postgres`'s `BinaryCopyOutStream`) is a second PostgreSQL client
//! for ~150 lines of framing.

/// The signature every binary COPY stream starts with.
const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Fields in each row: the name, four `bigint`s, one `integer`.
const FIELDS: i16 = 6;

/// What is wrong with a COPY stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CopyError {
    #[error("it does not start with the binary COPY signature")]
    Signature,
    #[error("its header asks for flags {0:#x} (OIDs or an unknown critical flag)")]
    Flags(u32),
    #[error("its header extension has a length of {0}")]
    Extension(i32),
    #[error("row {row} has {found} fields, not {FIELDS}")]
    FieldCount { row: u64, found: i16 },
    #[error("row {row}, field {field}: a length of {length}")]
    Length { row: u64, field: usize, length: i32 },
    #[error("row {row}: the destination is NULL")]
    NullName { row: u64 },
    #[error("row {row}: the destination is not UTF-8")]
    NameNotUtf8 { row: u64 },
    #[error("data after the end of the COPY")]
    AfterEnd,
    #[error("it ends in the middle (after {rows} rows)")]
    Truncated { rows: u64 },
}

/// One row, borrowed from the chunk it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CopyRow<'a> {
    pub(crate) destination: &'a str,
    /// `[retry_last_ts, retry_interval, failure_ts,
    /// last_successful_stream_ordering]`.
    pub(crate) columns: [Option<i64>; 4],
    /// `hashtext(destination)`.
    pub(crate) hash: i32,
}

/// Where the reader is in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    Rows,
    Ended,
}

/// Reads the stream chunk by chunk; a row split across chunks waits in
/// `pending` for the rest.
#[derive(Debug)]
pub(crate) struct CopyReader {
    state: State,
    pending: Vec<u8>,
    rows: u64,
}

impl Default for CopyReader {
    fn default() -> CopyReader {
        CopyReader {
            state: State::Header,
            pending: Vec::new(),
            rows: 0,
        }
    }
}

/// A cursor over bytes; `None` when they run out.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let out = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(out)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn i16(&mut self) -> Option<i16> {
        self.array().map(i16::from_be_bytes)
    }

    fn i32(&mut self) -> Option<i32> {
        self.array().map(i32::from_be_bytes)
    }
}

/// A step's outcome: done (bytes used), or more bytes needed.
enum Step<T> {
    Done(T, usize),
    More,
}

impl CopyReader {
    /// Feeds one chunk; `row` is called for each complete row in order.
    pub(crate) fn feed(
        &mut self,
        chunk: &[u8],
        mut row: impl FnMut(CopyRow<'_>),
    ) -> Result<(), CopyError> {
        if self.pending.is_empty() {
            let used = self.read(chunk, &mut row)?;
            if let Some(rest) = chunk.get(used..) {
                self.pending.extend_from_slice(rest);
            }
        } else {
            let mut pending = std::mem::take(&mut self.pending);
            pending.extend_from_slice(chunk);
            let used = self.read(&pending, &mut row)?;
            pending.drain(..used.min(pending.len()));
            self.pending = pending;
        }
        Ok(())
    }

    /// The stream ended: it must have ended with the trailer.
    pub(crate) fn finish(self) -> Result<u64, CopyError> {
        match self.state {
            State::Ended if self.pending.is_empty() => Ok(self.rows),
            State::Ended => Err(CopyError::AfterEnd),
            _ => Err(CopyError::Truncated { rows: self.rows }),
        }
    }

    /// Reads what it can of `bytes`; returns how many it used.
    fn read(
        &mut self,
        bytes: &[u8],
        row: &mut impl FnMut(CopyRow<'_>),
    ) -> Result<usize, CopyError> {
        let mut used = 0;
        loop {
            let rest = bytes.get(used..).unwrap_or_default();
            match self.state {
                State::Ended if rest.is_empty() => return Ok(used),
                State::Ended => return Err(CopyError::AfterEnd),
                State::Header => match header(rest)? {
                    Step::Done((), n) => {
                        used += n;
                        self.state = State::Rows;
                    }
                    Step::More => return Ok(used),
                },
                State::Rows => match self.row(rest)? {
                    Step::Done(Some(r), n) => {
                        used += n;
                        self.rows += 1;
                        row(r);
                    }
                    Step::Done(None, n) => {
                        used += n;
                        self.state = State::Ended;
                    }
                    Step::More => return Ok(used),
                },
            }
        }
    }

    /// One row, or `None` for the trailer.
    fn row<'a>(&self, bytes: &'a [u8]) -> Result<Step<Option<CopyRow<'a>>>, CopyError> {
        let row = self.rows + 1;
        let mut c = Cursor { bytes, at: 0 };
        let Some(fields) = c.i16() else {
            return Ok(Step::More);
        };
        if fields == -1 {
            return Ok(Step::Done(None, c.at));
        }
        if fields != FIELDS {
            return Err(CopyError::FieldCount { row, found: fields });
        }
        // The field's bytes, `None` for NULL; `Err(More)` when they are not all here.
        let mut field =
            |index: usize, wanted: Option<i32>| -> Result<Option<Option<&'a [u8]>>, CopyError> {
                let Some(length) = c.i32() else {
                    return Ok(None);
                };
                if length == -1 {
                    return Ok(Some(None));
                }
                let bad = CopyError::Length {
                    row,
                    field: index,
                    length,
                };
                if length < 0 || wanted.is_some_and(|w| w != length) {
                    return Err(bad);
                }
                let Ok(n) = usize::try_from(length) else {
                    return Err(bad);
                };
                Ok(c.take(n).map(Some))
            };
        let Some(name) = field(0, None)? else {
            return Ok(Step::More);
        };
        let mut columns = [None; 4];
        for (i, column) in columns.iter_mut().enumerate() {
            let Some(value) = field(i + 1, Some(8))? else {
                return Ok(Step::More);
            };
            *column = value
                .and_then(|v| <[u8; 8]>::try_from(v).ok())
                .map(i64::from_be_bytes);
        }
        let Some(hash) = field(5, Some(4))? else {
            return Ok(Step::More);
        };
        let Some(name) = name else {
            return Err(CopyError::NullName { row });
        };
        let Some(hash) = hash.and_then(|h| <[u8; 4]>::try_from(h).ok()) else {
            return Err(CopyError::Length {
                row,
                field: 5,
                length: -1,
            });
        };
        let destination = std::str::from_utf8(name).map_err(|_| CopyError::NameNotUtf8 { row })?;
        Ok(Step::Done(
            Some(CopyRow {
                destination,
                columns,
                hash: i32::from_be_bytes(hash),
            }),
            c.at,
        ))
    }
}

/// The header: signature, flags (none may be set: no OIDs, no unknown
/// critical flag) and an extension area, skipped.
fn header(bytes: &[u8]) -> Result<Step<()>, CopyError> {
    let mut c = Cursor { bytes, at: 0 };
    let Some(signature) = c.take(SIGNATURE.len()) else {
        return match SIGNATURE.starts_with(bytes) {
            true => Ok(Step::More),
            false => Err(CopyError::Signature),
        };
    };
    if signature != SIGNATURE {
        return Err(CopyError::Signature);
    }
    let (Some(flags), Some(extension)) = (c.i32(), c.i32()) else {
        return Ok(Step::More);
    };
    // Bit 16: OIDs in every row; bits 0-15: critical flags a reader must
    // know; bits 17-31 are for readers to ignore.
    let flags = flags as u32;
    if flags & 0x0001_FFFF != 0 {
        return Err(CopyError::Flags(flags));
    }
    let Ok(extension) = usize::try_from(extension) else {
        return Err(CopyError::Extension(extension));
    };
    match c.take(extension) {
        Some(_) => Ok(Step::Done((), c.at)),
        None => Ok(Step::More),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row to write: name (`None`: NULL), columns, hash.
    type Written<'a> = (Option<&'a [u8]>, [Option<i64>; 4], i32);

    fn stream(rows: &[Written<'_>]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0i32.to_be_bytes());
        out.extend_from_slice(&4i32.to_be_bytes());
        out.extend_from_slice(b"ext!");
        for (name, columns, hash) in rows {
            out.extend_from_slice(&FIELDS.to_be_bytes());
            match name {
                Some(n) => {
                    out.extend_from_slice(&(n.len() as i32).to_be_bytes());
                    out.extend_from_slice(n);
                }
                None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            }
            for c in columns {
                match c {
                    Some(v) => {
                        out.extend_from_slice(&8i32.to_be_bytes());
                        out.extend_from_slice(&v.to_be_bytes());
                    }
                    None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                }
            }
            out.extend_from_slice(&4i32.to_be_bytes());
            out.extend_from_slice(&hash.to_be_bytes());
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    type Owned = (String, [Option<i64>; 4], i32);

    fn read_in_chunks(bytes: &[u8], size: usize) -> Result<Vec<Owned>, CopyError> {
        let mut reader = CopyReader::default();
        let mut out = Vec::new();
        for chunk in bytes.chunks(size.max(1)) {
            reader.feed(chunk, |r| {
                out.push((r.destination.to_owned(), r.columns, r.hash))
            })?;
        }
        let rows = reader.finish()?;
        assert_eq!(rows as usize, out.len());
        Ok(out)
    }

    fn sample() -> Vec<u8> {
        stream(&[
            (
                Some(b"a.org"),
                [Some(1), None, Some(-5), Some(i64::MAX)],
                -7,
            ),
            (Some("é\\x\t.例".as_bytes()), [None; 4], i32::MIN),
            (Some(b""), [Some(i64::MIN); 4], 1023),
        ])
    }

    #[test]
    fn rows_are_read_whatever_the_chunks() {
        let bytes = sample();
        let whole = read_in_chunks(&bytes, bytes.len()).unwrap();
        assert_eq!(
            whole,
            vec![
                (
                    "a.org".into(),
                    [Some(1), None, Some(-5), Some(i64::MAX)],
                    -7
                ),
                ("é\\x\t.例".into(), [None; 4], i32::MIN),
                (String::new(), [Some(i64::MIN); 4], 1023),
            ]
        );
        for size in 1..bytes.len() {
            assert_eq!(
                read_in_chunks(&bytes, size).unwrap(),
                whole,
                "chunks of {size}"
            );
        }
    }

    #[test]
    fn an_empty_table_is_the_header_and_the_trailer() {
        assert_eq!(read_in_chunks(&stream(&[]), 3).unwrap(), vec![]);
    }

    #[test]
    fn a_malformed_stream_is_an_error_never_a_panic() {
        let good = sample();
        // Every truncation: an error (Truncated), never a panic.
        for end in 0..good.len() {
            assert!(
                matches!(
                    read_in_chunks(&good[..end], 7),
                    Err(CopyError::Truncated { .. })
                ),
                "cut at {end}"
            );
        }
        // Every single-byte corruption: read or refused, never a panic.
        for at in 0..good.len() {
            for value in [0x00, 0x7f, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[at] = value;
                let _ = read_in_chunks(&bad, 5);
            }
        }
        let mut after = good.clone();
        after.push(0);
        assert_eq!(read_in_chunks(&after, 4), Err(CopyError::AfterEnd));
        let mut signature = good.clone();
        signature[0] = b'X';
        assert_eq!(read_in_chunks(&signature, 64), Err(CopyError::Signature));
        let mut oids = good.clone();
        oids[11..15].copy_from_slice(&(1i32 << 16).to_be_bytes());
        assert_eq!(read_in_chunks(&oids, 64), Err(CopyError::Flags(1 << 16)));
        // Bits 17-31 are for readers to ignore.
        let mut ignorable = good.clone();
        ignorable[11..15].copy_from_slice(&(1i32 << 20).to_be_bytes());
        assert_eq!(read_in_chunks(&ignorable, 64), read_in_chunks(&good, 64));
        let mut extension = good.clone();
        extension[15..19].copy_from_slice(&(-2i32).to_be_bytes());
        assert_eq!(
            read_in_chunks(&extension, 64),
            Err(CopyError::Extension(-2))
        );
        let null_name = stream(&[(None, [None; 4], 0)]);
        assert_eq!(
            read_in_chunks(&null_name, 64),
            Err(CopyError::NullName { row: 1 })
        );
        let not_utf8 = stream(&[(Some(b"\xff.org"), [None; 4], 0)]);
        assert_eq!(
            read_in_chunks(&not_utf8, 64),
            Err(CopyError::NameNotUtf8 { row: 1 })
        );
        // Five fields instead of six.
        let mut five = good.clone();
        let first_row = SIGNATURE.len() + 8 + 4;
        five[first_row..first_row + 2].copy_from_slice(&5i16.to_be_bytes());
        assert_eq!(
            read_in_chunks(&five, 64),
            Err(CopyError::FieldCount { row: 1, found: 5 })
        );
        // An int4 where a bigint belongs.
        let mut short = good;
        let first_number = first_row + 2 + 4 + "a.org".len();
        short[first_number..first_number + 4].copy_from_slice(&4i32.to_be_bytes());
        assert_eq!(
            read_in_chunks(&short, 64),
            Err(CopyError::Length {
                row: 1,
                field: 1,
                length: 4
            })
        );
    }
}
