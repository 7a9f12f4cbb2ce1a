//! The filter's scan: which names of the index's arena contain a needle,
//! marked one bit per name id.
//!
//! The arena holds every name followed by [`SEPARATOR`]; [`Layout`] adds,
//! for each 64-byte block of it, the id of the name its first byte belongs
//! to. A scan reads the arena a block at a time with SSE2 (through `wide`,
//! safe Rust): two needle bytes compared at their offsets give candidate
//! starts (memchr's `packedpair::Pair` picks the two rarest), a candidate is
//! checked whole, and its name is the block's first id plus the separators
//! before it in the block. No per-match search restarts and no search for
//! the name: at 1M names a common needle (200k matches) costs a few ns a
//! match instead of memchr `memmem`'s ~25 ns restart plus ~9 ns to find the
//! name by galloping over the offsets (measured, see the README). The last
//! few bytes of the arena, too short for a block's loads, are searched with
//! `memmem`.
//!
//! Hand-written because no crate counts *records* holding a substring: the
//! searchers (memchr, aho-corasick) report positions one call at a time.

use memchr::arch::all::packedpair::Pair;
use memchr::memmem;
use wide::u8x16;

/// Byte that ends each name in the arena: never part of UTF-8, so no
/// needle and no name holds it, and no match spans two names.
pub(crate) const SEPARATOR: u8 = 0xFF;

/// Byte a forgotten name's bytes are overwritten with: never part of UTF-8
/// either (so nothing matches it) and not a separator (so the separators
/// still count the names).
pub(crate) const BLANK: u8 = 0xFE;

/// Bytes per block of the arena.
pub(crate) const BLOCK: usize = 64;

/// Bytes a block scan reads from a block's start: the block, and what a
/// needle starting in its last byte may span.
const WINDOW: usize = 2 * BLOCK;

/// Longest needle the block scan takes (its bytes lie within `WINDOW`);
/// longer ones are searched by memmem (they match rarely).
const MAX_BLOCK_NEEDLE: usize = BLOCK;

/// A lower-cased needle, prepared once for a scan.
pub(crate) struct Needle<'a> {
    bytes: &'a [u8],
    finder: memmem::Finder<'a>,
    /// The two offsets compared for candidates (equal for one byte).
    pair: (usize, usize),
    /// The needle as a little-endian word and its mask, when it fits in 8
    /// bytes (checked with one load instead of a slice comparison).
    word: Option<(u64, u64)>,
}

impl<'a> Needle<'a> {
    /// `bytes` must not be empty (an empty filter is no filter).
    pub(crate) fn new(bytes: &'a [u8]) -> Needle<'a> {
        let pair = Pair::new(bytes)
            .map(|p| (usize::from(p.index1()), usize::from(p.index2())))
            .unwrap_or((0, 0));
        let word = (!bytes.is_empty() && bytes.len() <= 8).then(|| {
            let mut buf = [0u8; 8];
            buf[..bytes.len()].copy_from_slice(bytes);
            let mask = u64::MAX >> (8 * (8 - bytes.len()));
            (u64::from_le_bytes(buf), mask)
        });
        Needle {
            bytes,
            finder: memmem::Finder::new(bytes),
            pair,
            word,
        }
    }

    /// Whether the needle starts at `offset` (below `BLOCK`) of a window.
    fn matches_at(&self, window: &[u8; WINDOW], offset: usize) -> bool {
        let offset = offset & (BLOCK - 1);
        match self.word {
            Some((word, mask)) => (load8(window, offset) ^ word) & mask == 0,
            None => window.get(offset..offset + self.bytes.len()) == Some(self.bytes),
        }
    }
}

/// The arena and what maps a byte of it to its name.
pub(crate) struct Layout<'a> {
    /// The names, each followed by [`SEPARATOR`].
    pub(crate) arena: &'a [u8],
    /// Offset of each id's name in `arena`.
    pub(crate) starts: &'a [usize],
    /// For each block of `arena`, the id of the name holding its first byte.
    pub(crate) block_first: &'a [u32],
}

impl Layout<'_> {
    /// Marks in `bits` (ids `lo..`, one bit each) the names among them that
    /// contain `needle`; returns how many.
    pub(crate) fn mark(&self, needle: &Needle<'_>, lo: usize, bits: &mut [u64]) -> usize {
        let hi = (lo + bits.len() * 64).min(self.starts.len());
        if lo >= hi || needle.bytes.is_empty() {
            return 0;
        }
        let start = self.starts[lo];
        let end = self.starts.get(hi).copied().unwrap_or(self.arena.len());
        let mut marks = Marks {
            lo,
            bits,
            count: 0,
            last: usize::MAX,
        };
        let mut base = start - start % BLOCK;
        if needle.bytes.len() <= MAX_BLOCK_NEEDLE {
            base = self.blocks(needle, start, end, base, &mut marks);
        }
        // The rest (the tail too short for a block's loads, or all of it
        // for a long needle), searched by memmem.
        let from = base.max(start);
        if from < end {
            let mut id = lo;
            for found in needle.finder.find_iter(&self.arena[from..end]) {
                let pos = from + found;
                id += self.starts[id + 1..hi].partition_point(|&s| s <= pos);
                marks.add(id);
            }
        }
        marks.count
    }
}

impl Layout<'_> {
    /// The block scan of `start..end` from the block at `base`, while a
    /// block's loads stay within the arena; returns where it stopped.
    fn blocks(
        &self,
        needle: &Needle<'_>,
        start: usize,
        end: usize,
        mut base: usize,
        marks: &mut Marks<'_>,
    ) -> usize {
        // Offsets below 64 (the needle is at most MAX_BLOCK_NEEDLE long):
        // every load then lies in a WINDOW-byte array, unchecked.
        let (i1, i2) = (needle.pair.0 & 63, needle.pair.1 & 63);
        let (c1, c2) = (
            u8x16::splat(needle.bytes[i1]),
            u8x16::splat(needle.bytes[i2]),
        );
        let separator = u8x16::splat(SEPARATOR);
        while base < end {
            let Some(window) = self
                .arena
                .get(base..base + WINDOW)
                .and_then(|w| <&[u8; WINDOW]>::try_from(w).ok())
            else {
                break;
            };
            let hits: [u8x16; BLOCK / 16] = std::array::from_fn(|k| {
                load16(window, 16 * k + i1).simd_eq(c1) & load16(window, 16 * k + i2).simd_eq(c2)
            });
            if (hits[0] | hits[1] | hits[2] | hits[3]).to_bitmask() != 0 {
                let mut candidates = 0u64;
                let mut separators = 0u64;
                for (k, hit) in hits.iter().enumerate() {
                    candidates |= u64::from(hit.to_bitmask()) << (16 * k);
                    let bytes = load16(window, 16 * k).simd_eq(separator);
                    separators |= u64::from(bytes.to_bitmask()) << (16 * k);
                }
                let first = self.block_first[base / BLOCK] as usize;
                while candidates != 0 {
                    let offset = candidates.trailing_zeros();
                    candidates &= candidates - 1;
                    let pos = base + offset as usize;
                    if pos >= start && pos < end && needle.matches_at(window, offset as usize) {
                        let before = separators & ((1u64 << offset) - 1);
                        marks.add(first + before.count_ones() as usize);
                    }
                }
            }
            base += BLOCK;
        }
        base
    }
}

/// The bits one scan sets, counting each name once.
struct Marks<'b> {
    lo: usize,
    bits: &'b mut [u64],
    count: usize,
    last: usize,
}

impl Marks<'_> {
    fn add(&mut self, id: usize) {
        if id != self.last {
            self.last = id;
            self.count += 1;
            let bit = id - self.lo;
            self.bits[bit / 64] |= 1 << (bit % 64);
        }
    }
}

/// 16 bytes of the window at `at` (at most 111 by construction: a lane
/// group's start plus an offset below 64; the `min` lets the compiler drop
/// the bounds check).
#[inline(always)]
fn load16(window: &[u8; WINDOW], at: usize) -> u8x16 {
    let at = at.min(WINDOW - 16);
    let mut lanes = [0u8; 16];
    lanes.copy_from_slice(&window[at..at + 16]);
    u8x16::from(lanes)
}

/// 8 bytes of the window at `at` (below `BLOCK`), little-endian.
#[inline(always)]
fn load8(window: &[u8; WINDOW], at: usize) -> u64 {
    let at = at & (BLOCK - 1);
    let mut word = [0u8; 8];
    word.copy_from_slice(&window[at..at + 8]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An arena as the index lays it out, with the names at `blanked`
    /// overwritten as a forgotten name is.
    fn layout_of(names: &[String], blanked: &[usize]) -> (Vec<u8>, Vec<usize>, Vec<u32>) {
        let (mut arena, mut starts, mut block_first) = (Vec::new(), Vec::new(), Vec::new());
        for (id, name) in names.iter().enumerate() {
            starts.push(arena.len());
            arena.extend_from_slice(name.as_bytes());
            if blanked.contains(&id) {
                let from = starts[id];
                arena[from..].fill(BLANK);
            }
            arena.push(SEPARATOR);
            while block_first.len() * BLOCK < arena.len() {
                block_first.push(id as u32);
            }
        }
        (arena, starts, block_first)
    }

    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    #[test]
    fn marks_exactly_the_names_holding_the_needle_in_any_id_range() {
        let mut seed = 0x5eed_u64;
        // Names from empty to several blocks long, over a small alphabet so
        // that needles match often, twice in a name, and across blocks.
        let names: Vec<String> = (0..3_000)
            .map(|i| {
                let len = match rng(&mut seed) % 10 {
                    0 => 0,
                    1 => 64 + (rng(&mut seed) % 150) as usize,
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
        let blanked = [3, 64, 65, 1_000, 2_999];
        let (arena, starts, block_first) = layout_of(&names, &blanked);
        let layout = Layout {
            arena: &arena,
            starts: &starts,
            block_first: &block_first,
        };
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
        ] {
            let prepared = Needle::new(needle.as_bytes());
            for (lo, words) in [(0, 47), (64, 1), (128, 3), (2_944, 1), (1_024, 20)] {
                let mut bits = vec![0u64; words];
                let count = layout.mark(&prepared, lo, &mut bits);
                let hi = (lo + words * 64).min(names.len());
                let mut want = 0;
                for id in lo..hi {
                    let holds = !blanked.contains(&id) && names[id].contains(needle);
                    let bit = bits[(id - lo) / 64] & (1 << ((id - lo) % 64)) != 0;
                    assert_eq!(bit, holds, "{needle:?} id {id} ({:?})", names[id]);
                    want += usize::from(holds);
                }
                assert_eq!(count, want, "{needle:?} from {lo}");
            }
        }
    }

    #[test]
    fn a_match_in_the_last_bytes_is_found() {
        // The tail is too short for a block's loads: searched by memmem.
        for len in [1, 7, 63, 64, 65, 130] {
            let mut names: Vec<String> = (0..5).map(|i| format!("x{i}")).collect();
            names.push(format!("{}needle", "y".repeat(len)));
            let (arena, starts, block_first) = layout_of(&names, &[]);
            let layout = Layout {
                arena: &arena,
                starts: &starts,
                block_first: &block_first,
            };
            let mut bits = vec![0u64; 1];
            assert_eq!(layout.mark(&Needle::new(b"needle"), 0, &mut bits), 1);
            assert_eq!(bits[0], 1 << 5, "{len}");
        }
    }
}
