//! Blob transfer bookkeeping, sans-IO: how a sender slices a blob into
//! chunks, and what a receiver accepts next. The bytes themselves (spooling
//! to memory or a temp file, hashing) stay with the daemon; this decides
//! whether a chunk is the one expected, and when a blob and the whole set
//! are complete.

use jobmesh_wire::blob::BlobMeta;

/// Why a chunk or a finished blob was refused. Every one fails the attempt
/// (retryably: the next attempt sends everything again).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// A chunk for a blob that was not announced.
    #[error("chunk for blob {index}, but only {announced} blobs were announced")]
    UnknownBlob {
        /// The index in the chunk.
        index: u16,
        /// How many were announced.
        announced: usize,
    },
    /// A chunk not starting where the previous one ended.
    #[error("blob {blob}: chunk at offset {got}, expected {expected}")]
    OutOfOrder {
        /// Which blob.
        blob: u16,
        /// The next offset expected.
        expected: u64,
        /// The offset received.
        got: u64,
    },
    /// A chunk running past the announced size.
    #[error("blob {blob}: chunk ends at byte {end}, past its announced size {size}")]
    Overrun {
        /// Which blob.
        blob: u16,
        /// Its announced size.
        size: u64,
        /// Where the chunk ended.
        end: u64,
    },
    /// The bytes do not hash to the announced digest.
    #[error("blob {blob}: BLAKE3 digest mismatch (announced {expected}, received {got}); the bytes were damaged in transit")]
    DigestMismatch {
        /// Which blob.
        blob: u16,
        /// Announced digest.
        expected: String,
        /// Digest of what arrived.
        got: String,
    },
}

/// What a received chunk completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkVerdict {
    /// More of this blob is expected.
    Partial,
    /// This blob is complete (check its digest now).
    BlobComplete,
}

/// The receiving side of one set of blobs (a job's inputs or a result's outputs).
#[derive(Debug, Clone)]
pub struct Incoming {
    blobs: Vec<BlobMeta>,
    received: Vec<u64>,
}

impl Incoming {
    /// Expects the announced `blobs` (already validated against the limits).
    pub fn new(blobs: Vec<BlobMeta>) -> Self {
        let received = vec![0; blobs.len()];
        Self { blobs, received }
    }

    /// The announced blobs.
    pub fn blobs(&self) -> &[BlobMeta] {
        &self.blobs
    }

    /// Accounts for a chunk of `len` bytes at `offset` of blob `index`.
    pub fn accept(
        &mut self,
        index: u16,
        offset: u64,
        len: usize,
    ) -> Result<ChunkVerdict, TransferError> {
        let i = usize::from(index);
        let Some(meta) = self.blobs.get(i) else {
            return Err(TransferError::UnknownBlob {
                index,
                announced: self.blobs.len(),
            });
        };
        let expected = self.received[i];
        if offset != expected {
            return Err(TransferError::OutOfOrder {
                blob: index,
                expected,
                got: offset,
            });
        }
        let end = offset.saturating_add(len as u64);
        if end > meta.size {
            return Err(TransferError::Overrun {
                blob: index,
                size: meta.size,
                end,
            });
        }
        self.received[i] = end;
        Ok(if end == meta.size {
            ChunkVerdict::BlobComplete
        } else {
            ChunkVerdict::Partial
        })
    }

    /// Compares a finished blob's digest (lowercase hex) with the announced one.
    pub fn check_digest(&self, index: u16, computed: &str) -> Result<(), TransferError> {
        match self.blobs.get(usize::from(index)) {
            Some(meta) if meta.blake3 == computed => Ok(()),
            Some(meta) => Err(TransferError::DigestMismatch {
                blob: index,
                expected: meta.blake3.clone(),
                got: computed.to_owned(),
            }),
            None => Err(TransferError::UnknownBlob {
                index,
                announced: self.blobs.len(),
            }),
        }
    }

    /// Whether every byte of every blob has arrived (empty blobs need none).
    pub fn is_complete(&self) -> bool {
        self.blobs
            .iter()
            .zip(&self.received)
            .all(|(m, r)| *r == m.size)
    }

    /// Bytes received so far, of [`total`](Self::total).
    pub fn received(&self) -> u64 {
        self.received.iter().sum()
    }

    /// Bytes announced.
    pub fn total(&self) -> u64 {
        self.blobs.iter().map(|b| b.size).sum()
    }
}

/// Slices a blob of `size` bytes into `(offset, len)` chunks of at most
/// `max_payload` bytes, in order. An empty blob has no chunks.
pub fn chunks(size: u64, max_payload: usize) -> impl Iterator<Item = (u64, usize)> {
    let step = max_payload.max(1) as u64;
    (0..size.div_ceil(step)).map(move |i| {
        let offset = i * step;
        (offset, (size - offset).min(step) as usize)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{prop, prop_assert, prop_assert_eq, proptest};

    fn meta(index: u16, size: u64) -> BlobMeta {
        BlobMeta {
            index,
            size,
            blake3: format!("{index:064x}"),
            name: None,
        }
    }

    #[test]
    fn chunks_must_come_in_order_and_within_size() {
        let mut t = Incoming::new(vec![meta(0, 10), meta(1, 0)]);
        assert!(!t.is_complete());
        assert_eq!(t.accept(0, 0, 4), Ok(ChunkVerdict::Partial));
        assert_eq!(
            t.accept(0, 8, 2),
            Err(TransferError::OutOfOrder {
                blob: 0,
                expected: 4,
                got: 8
            })
        );
        assert_eq!(
            t.accept(0, 4, 7),
            Err(TransferError::Overrun {
                blob: 0,
                size: 10,
                end: 11
            })
        );
        assert_eq!(
            t.accept(2, 0, 1),
            Err(TransferError::UnknownBlob {
                index: 2,
                announced: 2
            })
        );
        assert_eq!(t.accept(0, 4, 6), Ok(ChunkVerdict::BlobComplete));
        assert!(t.is_complete(), "the empty blob needs no chunk");
        assert_eq!((t.received(), t.total()), (10, 10));
    }

    #[test]
    fn digests_are_compared_with_the_announcement() {
        let t = Incoming::new(vec![meta(0, 1)]);
        assert_eq!(t.check_digest(0, &format!("{:064x}", 0)), Ok(()));
        let err = t.check_digest(0, &"f".repeat(64)).expect_err("mismatch");
        assert!(err.to_string().contains("damaged"), "{err}");
    }

    #[test]
    fn slicing_covers_a_blob_exactly() {
        assert_eq!(chunks(0, 5).count(), 0);
        assert_eq!(chunks(10, 5).collect::<Vec<_>>(), vec![(0, 5), (5, 5)]);
        assert_eq!(
            chunks(11, 5).collect::<Vec<_>>(),
            vec![(0, 5), (5, 5), (10, 1)]
        );
    }

    proptest! {
        /// Whatever the sizes and chunk size, a sender's slicing is exactly
        /// what a receiver accepts, and completes every blob once.
        #[test]
        fn slicing_and_accepting_agree(
            sizes in prop::collection::vec(0u64..5000, 0..6),
            max in 1usize..700,
        ) {
            let metas: Vec<BlobMeta> = sizes.iter().enumerate().map(|(i, s)| meta(i as u16, *s)).collect();
            let mut t = Incoming::new(metas);
            for (i, size) in sizes.iter().enumerate() {
                let mut completed = 0;
                for (offset, len) in chunks(*size, max) {
                    prop_assert!(len <= max && len > 0);
                    if t.accept(i as u16, offset, len).expect("in order") == ChunkVerdict::BlobComplete {
                        completed += 1;
                    }
                }
                prop_assert_eq!(completed, usize::from(*size > 0));
            }
            prop_assert!(t.is_complete());
            prop_assert_eq!(t.received(), sizes.iter().sum::<u64>());
        }
    }
}
