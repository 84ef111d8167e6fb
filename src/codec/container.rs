//! Avro object container files (the offline `audit` reads events and
//! consent states from them), read with bounds.
//!
//! apache-avro's reader inflates a deflate block whole, with no limit: a
//! 1 MB block claimed 3.1 GB. This one reads the format itself (the
//! specification's "Object Container Files": magic, metadata map, sync
//! marker, then blocks of a record count, a byte size, the records and the
//! sync marker again) over the file's bytes, and bounds every size it is
//! told: a block of more than `MAX_BLOCK` bytes, compressed or inflated, is
//! an error, not an allocation; so is a block claiming more records than
//! it has bytes. Records are decoded with apache-avro's datum reader,
//! resolved from the file's writer schema to ours.

use super::DecodeError;
use apache_avro::Schema;
use apache_avro::types::Value;

/// The most bytes a block may take, compressed or inflated.
pub const MAX_BLOCK: usize = 64 * 1024 * 1024;
/// The most bytes the header's metadata map may take.
const MAX_METADATA: usize = 16 * 1024 * 1024;
const MAGIC: &[u8; 4] = b"Obj\x01";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    Null,
    Deflate,
}

fn err(msg: impl Into<String>) -> DecodeError {
    DecodeError::Avro(msg.into())
}

/// The bytes of a file, read from the front.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| {
                err(format!(
                    "{what} at byte {}: needs {n} bytes, the file has {} left",
                    self.at,
                    self.bytes.len() - self.at
                ))
            })?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    /// An Avro `long`: zig-zag, variable length (at most 10 bytes).
    fn long(&mut self, what: &str) -> Result<i64, DecodeError> {
        let mut n: u64 = 0;
        for shift in (0..70).step_by(7) {
            let b = *self
                .take(1, what)?
                .first()
                .ok_or_else(|| err("unreachable"))?;
            if shift == 63 && b > 1 {
                break;
            }
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok((n >> 1) as i64 ^ -((n & 1) as i64));
            }
        }
        Err(err(format!("{what} at byte {}: not a valid long", self.at)))
    }

    /// A size: a `long` from 0 to `max`.
    fn size(&mut self, what: &str, max: usize) -> Result<usize, DecodeError> {
        let at = self.at;
        let n = self.long(what)?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= max)
            .ok_or_else(|| {
                err(format!(
                    "{what} at byte {at}: {n} is not between 0 and {max}"
                ))
            })
    }

    fn done(&self) -> bool {
        self.at == self.bytes.len()
    }
}

/// The header: the writer schema, the codec, the sync marker.
struct Header {
    writer: Schema,
    codec: Codec,
    sync: [u8; 16],
}

fn header(c: &mut Cursor<'_>) -> Result<Header, DecodeError> {
    if c.take(4, "magic")? != MAGIC {
        return Err(err("not an Avro object container file (no Obj\\x01 magic)"));
    }
    let (mut schema, mut codec) = (None, Codec::Null);
    let start = c.at;
    loop {
        let mut count = c.long("metadata block count")?;
        if count == 0 {
            break;
        }
        if count < 0 {
            count = count
                .checked_neg()
                .ok_or_else(|| err("metadata block count out of range"))?;
            c.long("metadata block size")?;
        }
        for _ in 0..count {
            let n = c.size("metadata key length", MAX_METADATA)?;
            let key = c.take(n, "metadata key")?;
            let n = c.size("metadata value length", MAX_METADATA)?;
            let value = c.take(n, "metadata value")?;
            match key {
                b"avro.schema" => schema = Some(value),
                b"avro.codec" => {
                    codec = match value {
                        b"null" => Codec::Null,
                        b"deflate" => Codec::Deflate,
                        other => {
                            return Err(err(format!(
                                "codec {:?} is not supported (null and deflate are)",
                                crate::model::redact(&String::from_utf8_lossy(other))
                            )));
                        }
                    }
                }
                _ => {}
            }
            if c.at - start > MAX_METADATA {
                return Err(err(format!("metadata past {MAX_METADATA} bytes")));
            }
        }
    }
    let schema = schema.ok_or_else(|| err("the header has no avro.schema"))?;
    let schema = std::str::from_utf8(schema).map_err(|_| err("avro.schema is not UTF-8"))?;
    let writer = super::avro::parse_schema(schema).map_err(|e| {
        DecodeError::Schema(format!("the file's writer schema does not parse: {e}"))
    })?;
    let mut sync = [0; 16];
    sync.copy_from_slice(c.take(16, "sync marker")?);
    Ok(Header {
        writer,
        codec,
        sync,
    })
}

/// The records of a container file, in order. An error in a record ends
/// its block (the next record's start is unknown): one `Err` says how many
/// of the block's records were skipped, and reading goes on at the next
/// block. An error in the file's structure is the last item.
pub struct Records<'a> {
    file: Cursor<'a>,
    header: Header,
    reader: &'a Schema,
    /// The block being read, inflated, and where in it.
    block: Vec<u8>,
    at: usize,
    /// Records left in the block, and the block's number (from 1).
    left: usize,
    number: u64,
    finished: bool,
}

/// Opens a container file whose records are to be read as `reader`.
pub fn records<'a>(bytes: &'a [u8], reader: &'a Schema) -> Result<Records<'a>, DecodeError> {
    let mut file = Cursor { bytes, at: 0 };
    let header = header(&mut file)?;
    Ok(Records {
        file,
        header,
        reader,
        block: Vec::new(),
        at: 0,
        left: 0,
        number: 0,
        finished: false,
    })
}

impl Records<'_> {
    /// The file's writer schema.
    pub fn writer(&self) -> &Schema {
        &self.header.writer
    }

    /// The next block into `self.block`; `Ok(false)` at the file's end.
    fn next_block(&mut self) -> Result<bool, DecodeError> {
        if self.file.done() {
            return Ok(false);
        }
        self.number += 1;
        let n = self.number;
        let count = self
            .file
            .size(&format!("block {n}'s record count"), MAX_BLOCK)?;
        let size = self.file.size(&format!("block {n}'s size"), MAX_BLOCK)?;
        let data = self.file.take(size, &format!("block {n}"))?;
        if self.file.take(16, &format!("block {n}'s sync marker"))? != self.header.sync {
            return Err(err(format!(
                "block {n}: the sync marker does not match the header's"
            )));
        }
        self.block.clear();
        match self.header.codec {
            Codec::Null => self.block.extend_from_slice(data),
            Codec::Deflate => {
                self.block = miniz_oxide::inflate::decompress_to_vec_with_limit(data, MAX_BLOCK)
                    .map_err(|e| match e.status {
                        miniz_oxide::inflate::TINFLStatus::HasMoreOutput => {
                            err(format!("block {n} inflates past {} MiB", MAX_BLOCK >> 20))
                        }
                        status => err(format!("block {n} does not inflate: {status:?}")),
                    })?;
            }
        }
        if count > self.block.len() {
            return Err(err(format!(
                "block {n} claims {count} records in {} bytes",
                self.block.len()
            )));
        }
        self.at = 0;
        self.left = count;
        Ok(true)
    }

    fn record(&mut self) -> Result<Value, DecodeError> {
        let writer = &self.header.writer;
        let reader = (writer != self.reader).then_some(self.reader);
        let mut rest = &self.block[self.at..];
        let before = rest.len();
        let value = apache_avro::from_avro_datum(writer, &mut rest, reader);
        self.at += before - rest.len();
        self.left -= 1;
        value.map_err(|e| {
            let skipped = std::mem::take(&mut self.left);
            err(format!(
                "block {}: {e}; the block's {skipped} records after it are skipped",
                self.number
            ))
        })
    }
}

impl Iterator for Records<'_> {
    type Item = Result<Value, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        while self.left == 0 {
            match self.next_block() {
                Ok(true) => {}
                Ok(false) => {
                    self.finished = true;
                    return None;
                }
                Err(e) => {
                    self.finished = true;
                    return Some(Err(e));
                }
            }
        }
        Some(self.record())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::avro;

    fn events(n: usize) -> Vec<Value> {
        let e = crate::codec::json::decode_event(include_bytes!(
            "../../tests/fixtures/event-full.json"
        ))
        .unwrap();
        (0..n)
            .map(|i| {
                let mut e = e.clone();
                e.event_id = format!("e-{i}");
                avro::event_to_value(&e)
            })
            .collect()
    }

    fn file(codec: apache_avro::Codec, values: Vec<Value>) -> Vec<u8> {
        let schema = &avro::schemas().unwrap().event;
        let mut w = apache_avro::Writer::with_codec(schema, Vec::new(), codec);
        for v in values {
            w.append(v).unwrap();
        }
        w.into_inner().unwrap()
    }

    fn ids(bytes: &[u8]) -> Vec<Result<String, String>> {
        let schema = &avro::schemas().unwrap().event;
        records(bytes, schema)
            .unwrap()
            .map(|v| {
                v.and_then(|v| avro::event_from_value(&v))
                    .map(|e| e.event_id)
                    .map_err(|e| e.to_string())
            })
            .collect()
    }

    #[test]
    fn reads_what_apache_avro_writes_null_and_deflate() {
        for codec in [
            apache_avro::Codec::Null,
            apache_avro::Codec::Deflate(Default::default()),
        ] {
            let got = ids(&file(codec, events(3)));
            assert_eq!(
                got,
                vec![Ok("e-0".into()), Ok("e-1".into()), Ok("e-2".into())]
            );
        }
    }

    /// Writes a container by hand: `blocks` of (record count, raw block bytes).
    fn handmade(codec: &str, blocks: &[(i64, Vec<u8>)]) -> Vec<u8> {
        fn long(out: &mut Vec<u8>, n: i64) {
            let mut z = ((n << 1) ^ (n >> 63)) as u64;
            loop {
                let b = (z & 0x7f) as u8;
                z >>= 7;
                if z == 0 {
                    out.push(b);
                    return;
                }
                out.push(b | 0x80);
            }
        }
        let mut out = MAGIC.to_vec();
        long(&mut out, 2);
        for (k, v) in [("avro.schema", avro::EVENT_AVSC), ("avro.codec", codec)] {
            long(&mut out, k.len() as i64);
            out.extend_from_slice(k.as_bytes());
            long(&mut out, v.len() as i64);
            out.extend_from_slice(v.as_bytes());
        }
        long(&mut out, 0);
        out.extend_from_slice(&[7; 16]);
        for (count, data) in blocks {
            long(&mut out, *count);
            long(&mut out, data.len() as i64);
            out.extend_from_slice(data);
            out.extend_from_slice(&[7; 16]);
        }
        out
    }

    #[test]
    fn a_deflate_bomb_is_an_error_not_gigabytes() {
        // 200 MB of zeros deflate to about 200 KB.
        let zeros = vec![0u8; 200 * 1024 * 1024];
        let bomb = miniz_oxide::deflate::compress_to_vec(&zeros, 9);
        drop(zeros);
        assert!(bomb.len() < 1024 * 1024, "{}", bomb.len());
        let got = ids(&handmade("deflate", &[(1, bomb)]));
        assert_eq!(got.len(), 1);
        let e = got[0].as_ref().unwrap_err();
        assert!(e.contains("block 1 inflates past 64 MiB"), "{e}");
    }

    #[test]
    fn sizes_the_file_cannot_back_are_errors_not_allocations() {
        // A block claiming 500 MB in an 8 KB file.
        let mut f = handmade("null", &[]);
        f.extend_from_slice(&[2, 0x80, 0x80, 0x80, 0xdc, 0x03]);
        f.extend_from_slice(&[0; 8192]);
        let got = ids(&f);
        let e = got[0].as_ref().unwrap_err();
        assert!(
            e.contains("block 1's size at byte") && e.contains("is not between 0 and"),
            "{e}"
        );
        // More records than bytes.
        let got = ids(&handmade("null", &[(1_000_000, vec![0; 10])]));
        let e = got[0].as_ref().unwrap_err();
        assert!(e.contains("records in 10 bytes"), "{e}");
        // A sync marker that does not match.
        let mut f = file(apache_avro::Codec::Null, events(1));
        let n = f.len();
        f[n - 1] ^= 1;
        assert!(ids(&f)[0].as_ref().unwrap_err().contains("sync marker"));
        // A codec we do not read, and a file that is not one.
        let schema = &avro::schemas().unwrap().event;
        assert!(records(&handmade("zstandard", &[]), schema).is_err());
        assert!(records(b"{\"event_id\":1}", schema).is_err());
    }

    #[test]
    fn a_bad_record_skips_the_rest_of_its_block_and_reading_goes_on() {
        let good = file(apache_avro::Codec::Null, events(2));
        let schema = &avro::schemas().unwrap().event;
        // Block 1: garbage claiming 2 records; block 2: a good block copied from `good`.
        let mut r = records(&good, schema).unwrap();
        let header_end = r.file.at;
        r.next_block().unwrap();
        let good_block = r.block.clone();
        let mut f = good[..header_end].to_vec();
        for (count, data) in [(2usize, vec![0xffu8; 6]), (2, good_block)] {
            f.push((count * 2) as u8);
            f.extend_from_slice(&[
                (data.len() * 2 % 128) as u8 | 0x80,
                (data.len() * 2 / 128) as u8,
            ]);
            f.extend_from_slice(&data);
            f.extend_from_slice(&r.header.sync);
        }
        let got = ids(&f);
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].as_ref().unwrap_err().contains("block 1"), "{got:?}");
        assert!(
            got[0]
                .as_ref()
                .unwrap_err()
                .contains("1 records after it are skipped"),
            "{got:?}"
        );
        assert_eq!(got[1..], [Ok("e-0".into()), Ok("e-1".into())]);
    }
}
