//! Reads SQLite's write-ahead log before SQLite does, to notice damage that
//! SQLite would pass over in silence.
//!
//! SQLite replays a WAL up to its first frame whose checksum or salt does
//! not match and ignores the rest; with a damaged header it ignores all of
//! it. That is right after a crash (the last frame was torn), but when
//! frames of the same log follow the bad one, committed transactions are
//! being dropped: jobs accepted by the journal would vanish without a word.
//! [`inspect`] tells those apart. The format is SQLite's documented WAL
//! format (<https://www.sqlite.org/fileformat2.html#walformat>).

use std::io::{self, Read};

const HEADER: usize = 32;
const FRAME_HEADER: usize = 24;
const MAGIC_LE: u32 = 0x377f_0682;
const MAGIC_BE: u32 = 0x377f_0683;

/// Damage [`inspect`] found: what SQLite is about to ignore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalDamage {
    /// Frames of this log that SQLite will replay.
    pub intact_frames: u64,
    /// Frames written after the damage, which SQLite will ignore.
    pub ignored_frames: u64,
    /// Where: the header, or the first bad frame's number (from 0).
    pub at: DamageAt,
}

/// Where a log is damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamageAt {
    /// The header: the whole log is ignored.
    Header,
    /// This frame (from 0) and every one after it.
    Frame(u64),
}

impl std::fmt::Display for WalDamage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.at {
            DamageAt::Header => write!(f, "its header is damaged"),
            DamageAt::Frame(n) => write!(f, "frame {n} is damaged"),
        }?;
        write!(
            f,
            ": {} frame(s) written after it are ignored, {} replayed",
            self.ignored_frames, self.intact_frames
        )
    }
}

/// Reads a WAL and says whether SQLite would drop frames that were written
/// after a damaged one. `None`: intact, empty, or only a torn tail (a crash
/// during the last write, which loses nothing that was committed).
pub(crate) fn inspect(mut wal: impl Read) -> io::Result<Option<WalDamage>> {
    let mut header = [0u8; HEADER];
    if !read_full(&mut wal, &mut header)? {
        return Ok(None);
    }
    let big_endian = match word(&header, 0, true) {
        MAGIC_LE => false,
        MAGIC_BE => true,
        _ => return whole_log_ignored(&mut wal, None),
    };
    let page_size = match word(&header, 8, true) {
        1 => 65_536,
        n if (512..=32_768).contains(&n) && n.is_power_of_two() => n as usize,
        _ => return whole_log_ignored(&mut wal, None),
    };
    let salts = [word(&header, 16, true), word(&header, 20, true)];
    let mut sum = checksum((0, 0), &header[..24], big_endian);
    if sum != (word(&header, 24, true), word(&header, 28, true)) {
        return whole_log_ignored(&mut wal, Some((salts, page_size)));
    }
    let mut frame = vec![0u8; FRAME_HEADER + page_size];
    let mut intact = 0u64;
    loop {
        if !read_full(&mut wal, &mut frame)? {
            return Ok(None);
        }
        let ours = [word(&frame, 8, true), word(&frame, 12, true)] == salts;
        let next = checksum(
            checksum(sum, &frame[..8], big_endian),
            &frame[FRAME_HEADER..],
            big_endian,
        );
        if ours && next == (word(&frame, 16, true), word(&frame, 20, true)) {
            sum = next;
            intact += 1;
            continue;
        }
        // The first frame SQLite stops at: damage only if this log goes on.
        let mut ignored = u64::from(ours);
        while read_full(&mut wal, &mut frame)? {
            ignored += u64::from([word(&frame, 8, true), word(&frame, 12, true)] == salts);
        }
        let damaged = ignored > u64::from(ours);
        return Ok(damaged.then_some(WalDamage {
            intact_frames: intact,
            ignored_frames: ignored,
            at: DamageAt::Frame(intact),
        }));
    }
}

/// A log whose header SQLite rejects: every frame in it is ignored. With
/// the header's salts unreadable, frames are counted by size.
fn whole_log_ignored(
    wal: &mut impl Read,
    header: Option<([u32; 2], usize)>,
) -> io::Result<Option<WalDamage>> {
    let page_size = header.map_or(4096, |(_, size)| size);
    let mut frame = vec![0u8; FRAME_HEADER + page_size];
    let mut frames = 0u64;
    while read_full(wal, &mut frame)? {
        frames += 1;
    }
    Ok((frames > 0).then_some(WalDamage {
        intact_frames: 0,
        ignored_frames: frames,
        at: DamageAt::Header,
    }))
}

/// SQLite's WAL checksum over `data` (a multiple of 8 bytes), continuing
/// from `sum`.
fn checksum(mut sum: (u32, u32), data: &[u8], big_endian: bool) -> (u32, u32) {
    for pair in data.chunks_exact(8) {
        let (x0, x1) = (word(pair, 0, big_endian), word(pair, 4, big_endian));
        sum.0 = sum.0.wrapping_add(x0).wrapping_add(sum.1);
        sum.1 = sum.1.wrapping_add(x1).wrapping_add(sum.0);
    }
    sum
}

fn word(bytes: &[u8], at: usize, big_endian: bool) -> u32 {
    let b = [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
    if big_endian {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    }
}

/// Fills `buf`; `false` if the input ended first (a partial read is a torn
/// tail, and counts as nothing).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}
