//! Binary payloads ("blobs") on the data channel: their descriptions and the
//! chunk frames that carry their bytes.
//!
//! A job's input blobs are announced by a `blobs` message (direction
//! `input`) right before its `submit`; a result's output blobs by a `blobs`
//! message (direction `output`) right before its `result`. The bytes follow as
//! binary chunk frames, in order per blob (the channel is ordered and
//! reliable), each at most the connection's message size:
//!
//! ```text
//! 0      1      2                 18          22     24        32
//! +------+------+-----------------+-----------+------+---------+---------...
//! | 0xB1 | dir  | job id (16)     | attempt   | blob | offset  | payload
//! +------+------+-----------------+-----------+------+---------+---------...
//!          0 = input, 1 = output   u32 BE      u16 BE u64 BE
//! ```
//!
//! JSON messages always start with `{`, so the first byte tells the two apart
//! ([`Frame::decode`]). Every blob carries its BLAKE3 digest; the receiver
//! checks it when the last byte arrives.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::dc::{DcMsg, JobId};
use crate::DecodeError;

/// First byte of a chunk frame.
pub const CHUNK_MAGIC: u8 = 0xB1;
/// Bytes of a chunk frame before its payload.
pub const CHUNK_HEADER_LEN: usize = 32;
/// Largest blob accepted by default (2 GiB); a daemon may lower it.
pub const MAX_BLOB_SIZE: u64 = 2 * 1024 * 1024 * 1024;
/// Most blobs one job (or one result) may carry.
pub const MAX_BLOBS_PER_JOB: usize = 16;
/// Longest blob name, in bytes.
pub const MAX_BLOB_NAME: usize = 255;

/// Which way a blob travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Submitter → worker, part of the job.
    Input,
    /// Worker → submitter, part of the result.
    Output,
}

/// What a receiver needs to know about a blob before its bytes arrive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobMeta {
    /// Its index within the job's input or output (0, 1, ...).
    pub index: u16,
    /// Its exact size in bytes.
    pub size: u64,
    /// BLAKE3 digest of its bytes, 64 lowercase hex digits.
    pub blake3: String,
    /// A file name for humans and handlers (no path separators).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl BlobMeta {
    /// Checks a list of blob descriptions against the limits: at most
    /// [`MAX_BLOBS_PER_JOB`], indexes 0..n in order, sizes ≤ `max_size`,
    /// well-formed digests and names.
    pub fn validate_all(blobs: &[BlobMeta], max_size: u64) -> Result<(), DecodeError> {
        let invalid = |reason: String| DecodeError::Invalid {
            field: "blobs",
            reason,
        };
        if blobs.len() > MAX_BLOBS_PER_JOB {
            return Err(invalid(format!(
                "{} blobs, at most {MAX_BLOBS_PER_JOB}",
                blobs.len()
            )));
        }
        for (i, b) in blobs.iter().enumerate() {
            if usize::from(b.index) != i {
                return Err(invalid(format!("blob {i} has index {}", b.index)));
            }
            if b.size > max_size {
                return Err(invalid(format!(
                    "blob {i} is {} bytes, the limit is {max_size}",
                    b.size
                )));
            }
            if !crate::is_lower_hex(&b.blake3, 64) {
                return Err(invalid(format!(
                    "blob {i}: blake3 must be 64 lowercase hex digits"
                )));
            }
            if let Some(name) = &b.name {
                let ok = !name.is_empty()
                    && name.len() <= MAX_BLOB_NAME
                    && !name.contains(['/', '\\'])
                    && !name.chars().any(char::is_control)
                    && name != "."
                    && name != "..";
                if !ok {
                    return Err(invalid(format!(
                        "blob {i}: name must be 1-{MAX_BLOB_NAME} bytes without path separators or control characters"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Where a chunk's payload belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    /// Input or output.
    pub direction: Direction,
    /// The job.
    pub job_id: JobId,
    /// The attempt it belongs to.
    pub attempt: u32,
    /// Which blob.
    pub blob: u16,
    /// Byte offset of the payload within the blob.
    pub offset: u64,
}

impl ChunkHeader {
    /// Encodes the header followed by `payload` as one data-channel message.
    pub fn encode(&self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(CHUNK_HEADER_LEN + payload.len());
        out.push(CHUNK_MAGIC);
        out.push(match self.direction {
            Direction::Input => 0,
            Direction::Output => 1,
        });
        out.extend_from_slice(self.job_id.as_bytes());
        out.extend_from_slice(&self.attempt.to_be_bytes());
        out.extend_from_slice(&self.blob.to_be_bytes());
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// Decodes a chunk frame into its header and payload.
    pub fn decode(bytes: &[u8]) -> Result<(Self, &[u8]), DecodeError> {
        let bad = |reason: &str| DecodeError::Invalid {
            field: "chunk",
            reason: reason.to_owned(),
        };
        if bytes.len() < CHUNK_HEADER_LEN {
            return Err(bad("shorter than the 32-byte chunk header"));
        }
        if bytes[0] != CHUNK_MAGIC {
            return Err(bad("does not start with the chunk magic byte"));
        }
        let direction = match bytes[1] {
            0 => Direction::Input,
            1 => Direction::Output,
            _ => return Err(bad("direction must be 0 (input) or 1 (output)")),
        };
        let (id, rest) = bytes[2..].split_at(16);
        let job_id = Uuid::from_slice(id).map_err(|_| bad("bad job id"))?;
        let attempt = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let blob = u16::from_be_bytes([rest[4], rest[5]]);
        let mut off = [0u8; 8];
        off.copy_from_slice(&rest[6..14]);
        let offset = u64::from_be_bytes(off);
        Ok((
            Self {
                direction,
                job_id,
                attempt,
                blob,
                offset,
            },
            &bytes[CHUNK_HEADER_LEN..],
        ))
    }
}

/// One data-channel message: a JSON message or a chunk of a blob.
#[derive(Debug, PartialEq)]
pub enum Frame<'a> {
    /// A JSON message.
    Msg(DcMsg),
    /// A blob chunk: where it goes and its bytes.
    Chunk(ChunkHeader, &'a [u8]),
}

impl<'a> Frame<'a> {
    /// Tells a chunk (first byte [`CHUNK_MAGIC`]) from a JSON message and decodes it.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        if bytes.first() == Some(&CHUNK_MAGIC) {
            let (h, payload) = ChunkHeader::decode(bytes)?;
            Ok(Frame::Chunk(h, payload))
        } else {
            DcMsg::decode(bytes).map(Frame::Msg)
        }
    }

    /// The frames of one data-channel message, each still to be
    /// [decoded](Self::decode): a chunk alone, or the JSON messages a
    /// sender batched into it, joined by `\n` (JSON text never holds a raw
    /// newline), in order.
    pub fn split(bytes: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
        let batch = bytes.first() != Some(&CHUNK_MAGIC);
        let mut rest = Some(bytes);
        std::iter::from_fn(move || {
            let now = rest?;
            match now.iter().position(|b| *b == b'\n').filter(|_| batch) {
                Some(i) => {
                    rest = Some(&now[i + 1..]);
                    Some(&now[..i])
                }
                None => {
                    rest = None;
                    Some(now)
                }
            }
        })
    }
}

/// The largest chunk payload for a connection whose maximum message size is
/// `max_message_size` (64 KiB between jobmesh peers; smaller when the remote
/// negotiated less, as browsers may).
pub fn chunk_payload_max(max_message_size: usize) -> usize {
    max_message_size.saturating_sub(CHUNK_HEADER_LEN).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(index: u16, size: u64) -> BlobMeta {
        BlobMeta {
            index,
            size,
            blake3: "ab".repeat(32),
            name: Some(format!("f{index}.bin")),
        }
    }

    #[test]
    fn a_batch_splits_into_its_messages_and_a_chunk_stays_whole() {
        let split = |b: &'static [u8]| Frame::split(b).collect::<Vec<_>>();
        assert_eq!(split(br#"{"a":1}"#), [&br#"{"a":1}"#[..]]);
        assert_eq!(
            split(b"{\"a\":1}\n{\"b\":2}"),
            [&b"{\"a\":1}"[..], &b"{\"b\":2}"[..]]
        );
        // A chunk's payload may hold any byte, newlines too.
        let chunk: &[u8] = &[CHUNK_MAGIC, b'\n', b'x'];
        assert_eq!(split(chunk), [chunk]);
        // Empty parts stay: each fails to decode as the message it is not.
        assert_eq!(split(b"{}\n"), [&b"{}"[..], &b""[..]]);
    }

    #[test]
    fn chunk_headers_round_trip_and_frames_are_told_apart() {
        let h = ChunkHeader {
            direction: Direction::Output,
            job_id: Uuid::new_v4(),
            attempt: 3,
            blob: 2,
            offset: 0x0102_0304_0506_0708,
        };
        let bytes = h.encode(b"payload");
        assert_eq!(bytes.len(), CHUNK_HEADER_LEN + 7);
        assert_eq!(Frame::decode(&bytes), Ok(Frame::Chunk(h, &b"payload"[..])));
        let msg = DcMsg::Accepted {
            job_id: h.job_id,
            attempt: 1,
        };
        assert_eq!(Frame::decode(&msg.encode()), Ok(Frame::Msg(msg)));
    }

    #[test]
    fn broken_chunks_are_refused_with_a_reason() {
        assert!(ChunkHeader::decode(&[CHUNK_MAGIC; 10]).is_err());
        let mut bytes = ChunkHeader {
            direction: Direction::Input,
            job_id: Uuid::nil(),
            attempt: 1,
            blob: 0,
            offset: 0,
        }
        .encode(b"");
        bytes[1] = 7;
        let err = ChunkHeader::decode(&bytes).expect_err("bad direction");
        assert!(err.to_string().contains("direction"), "{err}");
        // Arbitrary bytes never panic.
        for n in 0..64u8 {
            let junk: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37) ^ CHUNK_MAGIC).collect();
            let _ = Frame::decode(&junk);
        }
    }

    #[test]
    fn blob_lists_are_checked_against_the_limits() {
        assert!(BlobMeta::validate_all(&[meta(0, 10), meta(1, 0)], 100).is_ok());
        assert!(
            BlobMeta::validate_all(&[meta(1, 10)], 100).is_err(),
            "indexes from 0"
        );
        assert!(
            BlobMeta::validate_all(&[meta(0, 101)], 100).is_err(),
            "size limit"
        );
        let many: Vec<BlobMeta> = (0..=MAX_BLOBS_PER_JOB as u16).map(|i| meta(i, 1)).collect();
        assert!(BlobMeta::validate_all(&many, 100).is_err(), "count limit");
        let mut bad = meta(0, 1);
        bad.blake3 = "XYZ".into();
        assert!(BlobMeta::validate_all(&[bad], 100).is_err(), "digest");
        let mut sneaky = meta(0, 1);
        let mut control = meta(0, 1);
        control.name = Some("report\x1b[2J.txt".into());
        assert!(
            BlobMeta::validate_all(&[control], 100).is_err(),
            "a control character in a name"
        );
        sneaky.name = Some("../etc/passwd".into());
        assert!(
            BlobMeta::validate_all(&[sneaky], 100).is_err(),
            "path in a name"
        );
    }

    #[test]
    fn chunk_payloads_fit_the_negotiated_message_size() {
        assert_eq!(chunk_payload_max(64 * 1024), 64 * 1024 - CHUNK_HEADER_LEN);
        assert_eq!(chunk_payload_max(16 * 1024), 16 * 1024 - CHUNK_HEADER_LEN);
        assert_eq!(chunk_payload_max(0), 1);
    }
}
