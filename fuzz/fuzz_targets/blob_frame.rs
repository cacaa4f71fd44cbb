//! Every data-channel message as the daemon reads it (`on_dc_bytes` in
//! crates/peer/src/daemon.rs): `Frame::decode`, which tells a binary chunk
//! frame (`ChunkHeader::decode`) from a JSON message, then `peek_job_id` when
//! it fails. A decoded chunk re-encodes to the same bytes; a decoded `blobs`
//! message's list passes `BlobMeta::validate_all` at the default limit.
#![no_main]

use jobmesh_wire::blob::{BlobMeta, ChunkHeader, Frame, CHUNK_HEADER_LEN, MAX_BLOB_SIZE};
use jobmesh_wire::dc::DcMsg;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((header, payload)) = ChunkHeader::decode(data) {
        assert_eq!(payload.len() + CHUNK_HEADER_LEN, data.len());
        assert_eq!(header.encode(payload), data);
    }
    match Frame::decode(data) {
        Ok(Frame::Chunk(header, payload)) => {
            assert_eq!(header.encode(payload), data);
        }
        Ok(Frame::Msg(DcMsg::Blobs { blobs, .. })) => {
            BlobMeta::validate_all(&blobs, MAX_BLOB_SIZE).expect("decode validated the list");
            let _ = BlobMeta::validate_all(&blobs, 0);
        }
        Ok(Frame::Msg(_)) => {}
        Err(e) => {
            let _ = e.to_string();
            let _ = DcMsg::peek_job_id(data);
        }
    }
});
