//! The filter's scan: which names of the index's arena contain a needle.
//!
//! The arena holds every name followed by [`SEPARATOR`]. A scan reads it a
//! 64-byte block at a time with SSE2 compares (through `wide`, safe Rust)
//! and gives, per block, a 64-bit mask of the needle's match starts. Each
//! match is carried to its name's separator by one addition: with `s` the
//! block's separator mask, `(!s + matches + carry) & s` sets exactly the
//! separators that end a name holding a match (a match's bit carries up
//! through its name's non-separator bits; a name running past the block
//! carries into the next). The result ([`Matches`]) is one bit per arena
//! byte, set at the separator of each matching name, and how many: no
//! branch and no work per match, so a needle in every eighth name costs what
//! a needle in none does.
//!
//! Two scans, chosen per needle by counting its matches in the arena's
//! first 256 KB: a dense needle (more than one match in 512 bytes) has
//! every byte compared in every block, as above; a sparse one is searched
//! with memchr's `memmem` (AVX2 where the CPU has it), each match then
//! marking the separator after it, so a rare needle costs what memchr's
//! search does. Needles longer than [`MAX_NEEDLE`] are always sparse.
//!
//! Measured at 1M names (the admin API bench's; `cargo bench -p
//! herald-store --bench index`, see the README): a needle in one name in
//! eight cost ~6 ms on one core with `memmem` alone (a restart per match,
//! ~25 ns, and a search for each match's name), ~2.9 ms here.
//!
//! On several threads the arena is cut into chunks that the threads take in
//! turn (a late-starting thread takes fewer; see the README's figures).
//!
//! Hand-written because no crate counts *records* holding a substring: the
//! searchers (memchr, aho-corasick) report positions one call at a time.

use memchr::memmem;
use parking_lot::Mutex;
use wide::u8x16;

/// Byte that ends each name in the arena: never part of UTF-8, so no
/// needle and no name holds it, and no match spans two names.
pub(crate) const SEPARATOR: u8 = 0xFF;

/// Byte a forgotten name's bytes are overwritten with: never part of UTF-8
/// either (so nothing matches it) and not a separator (so every separator
/// still ends one name).
pub(crate) const BLANK: u8 = 0xFE;

/// Bytes per block of the arena (one word of [`Matches::ends`]).
const BLOCK: usize = 64;

/// Bytes a block's compares read from its start: the block, and what a
/// needle starting in its last byte spans.
const WINDOW: usize = 2 * BLOCK;

/// Longest needle compared in blocks (its bytes lie within `WINDOW`).
const MAX_NEEDLE: usize = BLOCK;

/// Bytes sampled to choose between the dense and the sparse scan.
const SAMPLE_BYTES: usize = 256 * 1024;

/// A needle matching more often than once in this many bytes is dense.
const DENSE_EVERY: usize = 512;

/// Chunks per thread of a scan on several threads.
const CHUNKS_PER_THREAD: usize = 8;

/// The names one needle matches.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Matches {
    /// One bit per arena byte, set at the separator ending a matching name.
    pub(crate) ends: Vec<u64>,
    /// How many names match.
    pub(crate) count: usize,
}

impl Matches {
    /// Whether the name whose separator is at `end` matches.
    pub(crate) fn holds_end(&self, end: usize) -> bool {
        self.ends
            .get(end / BLOCK)
            .is_some_and(|w| w & (1 << (end % BLOCK)) != 0)
    }

    /// The separators set, in arena order.
    pub(crate) fn ends(&self) -> impl Iterator<Item = usize> + '_ {
        self.ends.iter().enumerate().flat_map(|(w, &word)| {
            let mut word = word;
            std::iter::from_fn(move || {
                (word != 0).then(|| {
                    let bit = word.trailing_zeros() as usize;
                    word &= word - 1;
                    w * BLOCK + bit
                })
            })
        })
    }
}

/// A lower-cased, non-empty needle, prepared once for a scan.
pub(crate) struct Needle<'a> {
    bytes: &'a [u8],
    /// Each byte, splatted (empty for a needle longer than `MAX_NEEDLE`).
    lanes: Vec<u8x16>,
    /// The sparse scan's searcher.
    finder: memmem::Finder<'a>,
}

impl<'a> Needle<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Needle<'a> {
        let lanes = if bytes.len() <= MAX_NEEDLE {
            bytes.iter().map(|&b| u8x16::splat(b)).collect()
        } else {
            Vec::new()
        };
        Needle {
            bytes,
            lanes,
            finder: memmem::Finder::new(bytes),
        }
    }

    /// The match starts in the block at the window's start: every byte
    /// compared, four lane groups at a time.
    #[inline(always)]
    fn starts(&self, window: &[u8; WINDOW]) -> u64 {
        let mut hits = [u8x16::splat(0xFF); BLOCK / 16];
        for (j, lane) in self.lanes.iter().enumerate() {
            for (k, hit) in hits.iter_mut().enumerate() {
                *hit &= load16(window, 16 * k + j).simd_eq(*lane);
            }
        }
        bitmask(hits)
    }

    /// [`Needle::starts`] for a needle of exactly `L` bytes: every offset a
    /// constant, the compares unrolled.
    #[inline(always)]
    fn starts_of<const L: usize>(&self, window: &[u8; WINDOW]) -> u64 {
        let mut hits = [u8x16::splat(0xFF); BLOCK / 16];
        let lanes: [u8x16; L] =
            std::array::from_fn(|j| self.lanes.get(j).copied().unwrap_or_default());
        for (j, lane) in lanes.iter().enumerate() {
            for (k, hit) in hits.iter_mut().enumerate() {
                *hit &= load16(window, 16 * k + j).simd_eq(*lane);
            }
        }
        bitmask(hits)
    }
}

/// Which names of `arena` hold `needle`, on `parts` threads (the arena in
/// chunks of blocks they take in turn). `reuse` is an earlier scan's `ends` to write
/// over (its pages already mapped: a fresh 3 MB costs more in page faults
/// than the scan of a rare needle), or empty.
pub(crate) fn scan(arena: &[u8], needle: &Needle<'_>, parts: usize, reuse: Vec<u64>) -> Matches {
    let blocks = arena.len().div_ceil(BLOCK);
    let mut ends = reuse;
    ends.resize(blocks, 0);
    if needle.bytes.is_empty() || blocks == 0 {
        ends.fill(0);
        return Matches { ends, count: 0 };
    }
    scan_as(arena, needle, parts, dense(arena, needle), ends)
}

/// [`scan`] with the compare chosen; every word of `ends` is written.
fn scan_as(
    arena: &[u8],
    needle: &Needle<'_>,
    parts: usize,
    dense: bool,
    mut ends: Vec<u64>,
) -> Matches {
    // A needle too long for the blocks is searched by memmem.
    let dense = dense && !needle.lanes.is_empty();
    let blocks = ends.len();
    let parts = parts.min(blocks).max(1);
    // On several threads, the arena goes in chunks that each thread takes
    // in turn, so a thread that starts late (a new thread can wait a
    // millisecond or two for a core, measured inside the server) takes
    // fewer of them instead of doubling the scan's time.
    let chunks = if parts == 1 {
        1
    } else {
        (parts * CHUNKS_PER_THREAD).min(blocks)
    };
    let mut runs: Vec<(usize, &mut [u64])> = Vec::with_capacity(chunks);
    let mut rest: &mut [u64] = &mut ends;
    let mut first = 0;
    for c in 0..chunks {
        let next = blocks * (c + 1) / chunks;
        let (mine, after) = rest.split_at_mut(next - first);
        runs.push((first, mine));
        rest = after;
        first = next;
    }
    // (first block, names ended, carried past the last block) per chunk;
    // this thread and `parts - 1` helpers take chunks until none is left.
    let queue = Mutex::new(runs.into_iter());
    let done = Mutex::new(Vec::with_capacity(chunks));
    let work = || loop {
        let next = queue.lock().next();
        let Some((first, mine)) = next else {
            return;
        };
        let (count, carry) = scan_run(arena, needle, dense, first, mine);
        done.lock().push((first, count, carry));
    };
    std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..parts).map(|_| scope.spawn(work)).collect();
        work();
        for helper in helpers {
            // A chunk that panicked (a bug) is not silently missing.
            helper
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
        }
    });
    let mut results = done.into_inner();
    results.sort_unstable_by_key(|&(first, _, _)| first);
    let mut matches = Matches {
        count: results.iter().map(|r| r.1).sum(),
        ends,
    };
    // A name running from one run into the next ends in the later one.
    for pair in results.windows(2) {
        if pair[0].2 {
            mark_end_after(arena, pair[1].0 * BLOCK, &mut matches);
        }
    }
    matches
}

/// Marks the separator at or after `pos` (the end of the name holding it),
/// counting it if it was not marked.
fn mark_end_after(arena: &[u8], pos: usize, matches: &mut Matches) {
    let Some(at) = arena
        .get(pos..)
        .and_then(|rest| memchr::memchr(SEPARATOR, rest))
    else {
        return;
    };
    let end = pos + at;
    if !matches.holds_end(end) {
        if let Some(word) = matches.ends.get_mut(end / BLOCK) {
            *word |= 1 << (end % BLOCK);
            matches.count += 1;
        }
    }
}

/// Whether `needle` is common enough in the arena's first bytes that
/// comparing all its bytes in every block beats memmem's search from match
/// to match (~30 ns a match, against ~0.07 ns a byte more for the compare:
/// they meet near one match in 512 bytes, one name in twenty; measured).
fn dense(arena: &[u8], needle: &Needle<'_>) -> bool {
    let sample = arena.get(..SAMPLE_BYTES).unwrap_or(arena);
    let enough = sample.len() / DENSE_EVERY + 1;
    needle.finder.find_iter(sample).take(enough).count() >= enough
}

/// Scans the blocks from `first` into `ends` (one word each); returns how
/// many separators it set and whether a match is carried past its last
/// block (into a name that ends later).
fn scan_run(
    arena: &[u8],
    needle: &Needle<'_>,
    dense: bool,
    first: usize,
    ends: &mut [u64],
) -> (usize, bool) {
    // One loop per compare, each compiled with its own (inlined) compare.
    macro_rules! fixed {
        ($($n:literal)*) => {
            match needle.bytes.len() {
                $($n if dense => scan_blocks(arena, first, ends, true, |w| needle.starts_of::<$n>(w)),)*
                _ if dense => scan_blocks(arena, first, ends, true, |w| needle.starts(w)),
                _ => scan_sparse(arena, needle, first, ends),
            }
        };
    }
    fixed!(1 2 3 4 5 6 7 8)
}

/// The sparse scan of the blocks from `first`: memchr's `memmem` (AVX2
/// where the CPU has it) finds each match, and the separator after it is
/// marked; a match whose name runs past the last block is carried.
fn scan_sparse(arena: &[u8], needle: &Needle<'_>, first: usize, ends: &mut [u64]) -> (usize, bool) {
    ends.fill(0);
    let start = first * BLOCK;
    let end = ((first + ends.len()) * BLOCK).min(arena.len());
    // Matches starting before `end`, whatever bytes they span after it.
    let reach = (end + needle.bytes.len())
        .saturating_sub(1)
        .min(arena.len());
    let Some(haystack) = arena.get(start..reach) else {
        return (0, false);
    };
    let (mut count, mut next_name) = (0, start);
    for found in needle.finder.find_iter(haystack) {
        let pos = start + found;
        if pos >= end {
            break;
        }
        if pos < next_name {
            // Another match in the name just marked.
            continue;
        }
        let Some(at) = arena
            .get(pos..end)
            .and_then(|rest| memchr::memchr(SEPARATOR, rest))
        else {
            return (count, true);
        };
        let bit = pos + at - start;
        if let Some(word) = ends.get_mut(bit / BLOCK) {
            *word |= 1 << (bit % BLOCK);
            count += 1;
        }
        next_name = pos + at + 1;
    }
    (count, false)
}

/// The block loop of [`scan_run`] with `starts` finding each block's match
/// starts; `dense` says they are common (no branch to skip empty blocks).
#[inline(always)]
fn scan_blocks(
    arena: &[u8],
    first: usize,
    ends: &mut [u64],
    dense: bool,
    starts: impl Fn(&[u8; WINDOW]) -> u64,
) -> (usize, bool) {
    let separator = u8x16::splat(SEPARATOR);
    let mut carry = 0u64;
    let mut count = 0usize;
    let mut padded = [0u8; WINDOW];
    for (i, end_bits) in ends.iter_mut().enumerate() {
        let base = (first + i) * BLOCK;
        let window = match arena
            .get(base..base + WINDOW)
            .and_then(|w| <&[u8; WINDOW]>::try_from(w).ok())
        {
            Some(window) => window,
            // The last blocks: the arena's end, then BLANK (no match, no
            // separator).
            None => {
                let tail = arena.get(base..).unwrap_or_default();
                padded.fill(BLANK);
                padded[..tail.len()].copy_from_slice(tail);
                &padded
            }
        };
        let starts = starts(window);
        if !dense && starts == 0 && carry == 0 {
            // Nothing starts or runs on here: no name ends matched.
            *end_bits = 0;
            continue;
        }
        let separators = bitmask(std::array::from_fn(|k| {
            load16(window, 16 * k).simd_eq(separator)
        }));
        let (sum, over) = (!separators).overflowing_add(starts);
        let (sum, over_again) = sum.overflowing_add(carry);
        carry = u64::from(over || over_again);
        let ended = sum & separators;
        *end_bits = ended;
        count += ended.count_ones() as usize;
    }
    (count, carry != 0)
}

/// One bit per byte of four lane groups (true lanes are all ones).
#[inline(always)]
fn bitmask(groups: [u8x16; BLOCK / 16]) -> u64 {
    groups.iter().enumerate().fold(0, |mask, (k, g)| {
        mask | u64::from(g.to_bitmask()) << (16 * k)
    })
}

/// 16 bytes of the window at `at` (at most 111 by construction: a lane
/// group's start plus an offset below `MAX_NEEDLE`), read as one unaligned
/// load (a copy through a local array costs a store-forwarding stall).
#[inline(always)]
fn load16(window: &[u8; WINDOW], at: usize) -> u8x16 {
    debug_assert!(at <= WINDOW - 16, "a load past the window: {at}");
    let at = at.min(WINDOW - 16);
    window[at..]
        .first_chunk::<16>()
        .map_or(u8x16::splat(0), |bytes| u8x16::from(*bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An arena as the index lays it out, with the names at `blanked`
    /// overwritten as a forgotten name is.
    fn arena_of(names: &[String], blanked: &[usize]) -> (Vec<u8>, Vec<usize>) {
        let (mut arena, mut ends) = (Vec::new(), Vec::new());
        for (id, name) in names.iter().enumerate() {
            let start = arena.len();
            arena.extend_from_slice(name.as_bytes());
            if blanked.contains(&id) {
                arena[start..].fill(BLANK);
            }
            ends.push(arena.len());
            arena.push(SEPARATOR);
        }
        (arena, ends)
    }

    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    #[test]
    fn marks_the_end_of_exactly_the_names_holding_the_needle() {
        let mut seed = 0x5eed_u64;
        // Names from empty to several blocks long, over a small alphabet so
        // that needles match often, twice in a name, across blocks and
        // across the runs of a scan on several threads.
        let names: Vec<String> = (0..3_000)
            .map(|i| {
                let len = match rng(&mut seed) % 10 {
                    0 => 0,
                    1 => 64 + (rng(&mut seed) % 300) as usize,
                    _ => (rng(&mut seed) % 40) as usize,
                };
                let mut name: String = (0..len)
                    .map(|_| ['a', 'b', '.', 'c', 'o', 'm', '-'][(rng(&mut seed) % 7) as usize])
                    .collect();
                if i % 97 == 0 {
                    name.push('é');
                }
                name
            })
            .collect();
        // Needles of exactly `MAX_NEEDLE` bytes and longer (memmem), planted
        // in some names: once, twice, and at every offset of a block.
        let edge = "ab.co-m".repeat(10)[..MAX_NEEDLE].to_owned();
        let long = "m-oc.ba".repeat(11);
        let mut names = names;
        for (i, id) in (100..2_900).step_by(97).enumerate() {
            let pad = "a".repeat(i % 70);
            names[id] = match i % 3 {
                0 => format!("{pad}{edge}"),
                1 => format!("{pad}{long}.{long}"),
                _ => format!("{pad}{edge}{long}"),
            };
        }
        let blanked = [3, 64, 65, 1_000, 2_999];
        let (arena, ends) = arena_of(&names, &blanked);
        for needle in [
            "a",
            ".",
            "é",
            "ab",
            ".com",
            "com",
            "a.b-c",
            "abcabcab",
            "abcabcabc",
            "b.c.o.m-a",
            "zz",
            &edge,
            &long,
        ] {
            let prepared = Needle::new(needle.as_bytes());
            let want: Vec<usize> = names
                .iter()
                .enumerate()
                .filter(|(id, name)| !blanked.contains(id) && name.contains(needle))
                .map(|(id, _)| ends[id])
                .collect();
            if needle.len() >= MAX_NEEDLE {
                assert!(want.len() > 10, "{needle:?} is planted");
            }
            for dense in [true, false] {
                for parts in [1, 2, 3, 7, 5_000] {
                    let blocks = arena.len().div_ceil(BLOCK);
                    let found = scan_as(&arena, &prepared, parts, dense, vec![0; blocks]);
                    assert_eq!(found.count, want.len(), "{needle:?} {dense} {parts}");
                    assert_eq!(found.ends().collect::<Vec<_>>(), want, "{needle:?}");
                }
            }
            // Over an earlier scan's words, as the index reuses them.
            let reused = scan(&arena, &Needle::new(b"a"), 1, Vec::new()).ends;
            let found = scan(&arena, &prepared, 2, reused);
            assert_eq!(found.ends().collect::<Vec<_>>(), want, "{needle:?} reused");
        }
    }

    #[test]
    fn a_match_in_the_last_bytes_is_found() {
        // The last blocks are read through a padded copy.
        for len in [0, 1, 7, 63, 64, 65, 130] {
            let mut names: Vec<String> = (0..5).map(|i| format!("x{i}")).collect();
            names.push(format!("{}needle", "y".repeat(len)));
            let (arena, ends) = arena_of(&names, &[]);
            let found = scan(&arena, &Needle::new(b"needle"), 1, vec![u64::MAX; 3]);
            assert_eq!(found.ends().collect::<Vec<_>>(), [ends[5]], "{len}");
            assert!(found.holds_end(ends[5]) && !found.holds_end(ends[4]));
        }
    }
}
