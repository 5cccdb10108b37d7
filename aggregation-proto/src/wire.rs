//! Protobuf wire primitives for the aggregation messages, shared by the encoder and the decoder so
//! both agree on every byte count.

/// `AggregatedRecord.partition_key_table` (field 1, length-delimited).
pub(crate) const TAG_PARTITION_KEY_TABLE: u8 = 0x0A;
/// `AggregatedRecord.explicit_hash_key_table` (field 2, length-delimited).
pub(crate) const TAG_EXPLICIT_HASH_KEY_TABLE: u8 = 0x12;
/// `AggregatedRecord.records` (field 3, length-delimited).
pub(crate) const TAG_RECORDS: u8 = 0x1A;
/// `Record.partition_key_index` (field 1, varint).
pub(crate) const TAG_PARTITION_KEY_INDEX: u8 = 0x08;
/// `Record.explicit_hash_key_index` (field 2, varint).
pub(crate) const TAG_EXPLICIT_HASH_KEY_INDEX: u8 = 0x10;
/// `Record.data` (field 3, length-delimited).
pub(crate) const TAG_DATA: u8 = 0x1A;

pub(crate) const WIRE_VARINT: u64 = 0;
pub(crate) const WIRE_FIXED64: u64 = 1;
pub(crate) const WIRE_LENGTH_DELIMITED: u64 = 2;
pub(crate) const WIRE_FIXED32: u64 = 5;

#[inline]
pub(crate) fn varint_len(value: u64) -> usize {
    prost::encoding::encoded_len_varint(value)
}

#[inline]
pub(crate) fn put_varint(buf: &mut Vec<u8>, value: u64) {
    prost::encoding::encode_varint(value, buf);
}

/// Bytes taken by a length-delimited field with a one-byte tag and a payload of `len` bytes.
#[inline]
pub(crate) fn length_delimited_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// Bytes of a `Record` message body (without its own tag and length prefix).
#[inline]
pub(crate) fn record_body_len(
    partition_key_index: u64,
    explicit_hash_key_index: Option<u64>,
    data_len: usize,
) -> usize {
    1 + varint_len(partition_key_index)
        + explicit_hash_key_index.map_or(0, |index| 1 + varint_len(index))
        + length_delimited_len(data_len)
}

/// Reads a varint at `*pos`, advancing it. `None` on truncation or a varint over ten bytes.
#[inline]
pub(crate) fn read_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value: u64 = 0;
    for shift in 0..10 {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7F) << (shift * 7);
        if byte < 0x80 {
            return Some(value);
        }
    }
    None
}

/// Reads a length prefix at `*pos` and returns the range of the payload it announces, advancing
/// past it. `None` if the payload would run past the end of `buf`.
#[inline]
pub(crate) fn read_length_delimited(buf: &[u8], pos: &mut usize) -> Option<std::ops::Range<usize>> {
    let len = usize::try_from(read_varint(buf, pos)?).ok()?;
    let start = *pos;
    let end = start.checked_add(len).filter(|&end| end <= buf.len())?;
    *pos = end;
    Some(start..end)
}

/// Skips a field of an unknown number, as protobuf parsers must. `None` on truncation or on a
/// wire type this schema can never contain (groups are deprecated and unused here).
pub(crate) fn skip_field(buf: &[u8], pos: &mut usize, wire_type: u64) -> Option<()> {
    match wire_type {
        WIRE_VARINT => read_varint(buf, pos).map(drop),
        WIRE_FIXED64 => advance(buf, pos, 8),
        WIRE_LENGTH_DELIMITED => read_length_delimited(buf, pos).map(drop),
        WIRE_FIXED32 => advance(buf, pos, 4),
        _ => None,
    }
}

fn advance(buf: &[u8], pos: &mut usize, by: usize) -> Option<()> {
    let end = pos.checked_add(by).filter(|&end| end <= buf.len())?;
    *pos = end;
    Some(())
}
