//! An order-statistic list: ids kept sorted by a caller-given order, with
//! positional access and ranks in O(√n) and inserts/removes in O(√n).
//!
//! The ids live in blocks of at most `MAX_BLOCK` entries; a position is found
//! by walking block lengths, an id by binary search on block boundaries. The
//! order is given to every call as a comparison over ids (a total order in
//! which two distinct ids never compare equal), so the list stores 4 bytes an
//! entry and never copies keys.

use std::cmp::Ordering;

const MAX_BLOCK: usize = 1024;

#[derive(Debug, Default, Clone)]
pub struct RankedList {
    blocks: Vec<Vec<u32>>,
    len: usize,
}

impl RankedList {
    /// Builds the list from ids already sorted in the list's order.
    #[cfg(test)]
    pub fn from_sorted(ids: Vec<u32>) -> RankedList {
        RankedList::from_sorted_iter(ids.len(), ids.into_iter())
    }

    /// Builds the list from `len` ids given in the list's order, without
    /// holding them all at once.
    pub fn from_sorted_iter(len: usize, ids: impl Iterator<Item = u32>) -> RankedList {
        let mut blocks = Vec::with_capacity(len.div_ceil(MAX_BLOCK / 2));
        let mut block: Vec<u32> = Vec::with_capacity(MAX_BLOCK / 2);
        let mut count = 0;
        for id in ids {
            block.push(id);
            count += 1;
            if block.len() == MAX_BLOCK / 2 {
                blocks.push(std::mem::replace(
                    &mut block,
                    Vec::with_capacity(MAX_BLOCK / 2),
                ));
            }
        }
        if !block.is_empty() {
            block.shrink_to_fit();
            blocks.push(block);
        }
        RankedList { blocks, len: count }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The block holding (or due to hold) `id`: the first whose last entry is
    /// not before it.
    fn block_for(&self, id: u32, cmp: &impl Fn(u32, u32) -> Ordering) -> usize {
        let b = self.blocks.partition_point(|blk| {
            blk.last()
                .is_some_and(|&last| cmp(last, id) == Ordering::Less)
        });
        b.min(self.blocks.len().saturating_sub(1))
    }

    pub fn insert(&mut self, id: u32, cmp: impl Fn(u32, u32) -> Ordering) {
        if self.blocks.is_empty() {
            self.blocks.push(vec![id]);
            self.len = 1;
            return;
        }
        let b = self.block_for(id, &cmp);
        let block = &mut self.blocks[b];
        let at = block.partition_point(|&e| cmp(e, id) == Ordering::Less);
        block.insert(at, id);
        self.len += 1;
        if block.len() > MAX_BLOCK {
            let tail = block.split_off(block.len() / 2);
            self.blocks.insert(b + 1, tail);
        }
    }

    /// Removes `id`, which must compare as it did when it was inserted.
    /// Returns false if it was not found.
    pub fn remove(&mut self, id: u32, cmp: impl Fn(u32, u32) -> Ordering) -> bool {
        if self.blocks.is_empty() {
            return false;
        }
        let b = self.block_for(id, &cmp);
        let block = &mut self.blocks[b];
        let at = block.partition_point(|&e| cmp(e, id) == Ordering::Less);
        if block.get(at) != Some(&id) {
            return false;
        }
        block.remove(at);
        self.len -= 1;
        if block.is_empty() {
            self.blocks.remove(b);
        }
        true
    }

    /// The number of leading entries for which `pred` holds (`pred` must be
    /// true for a prefix of the list and false after it).
    pub fn rank(&self, pred: impl Fn(u32) -> bool) -> usize {
        let b = self
            .blocks
            .partition_point(|blk| blk.last().is_some_and(|&last| pred(last)));
        let before: usize = self.blocks[..b].iter().map(Vec::len).sum();
        match self.blocks.get(b) {
            Some(block) => before + block.partition_point(|&e| pred(e)),
            None => before,
        }
    }

    /// The id at `pos` in the list's order.
    pub fn get(&self, pos: usize) -> Option<u32> {
        let (b, i) = self.locate(pos)?;
        Some(self.blocks[b][i])
    }

    fn locate(&self, mut pos: usize) -> Option<(usize, usize)> {
        for (b, block) in self.blocks.iter().enumerate() {
            if pos < block.len() {
                return Some((b, pos));
            }
            pos -= block.len();
        }
        None
    }

    /// Ids from `pos` onwards, in order.
    pub fn iter_from(&self, pos: usize) -> impl Iterator<Item = u32> + '_ {
        let (b, i) = self.locate(pos).unwrap_or((self.blocks.len(), 0));
        self.blocks
            .get(b..)
            .unwrap_or(&[])
            .iter()
            .enumerate()
            .flat_map(move |(k, blk)| blk[if k == 0 { i } else { 0 }..].iter().copied())
    }

    /// Ids from `pos` backwards to the first, in reverse order.
    pub fn iter_back_from(&self, pos: usize) -> impl Iterator<Item = u32> + '_ {
        let located = self.locate(pos);
        let (b, i) = located.unwrap_or((0, 0));
        let blocks: &[Vec<u32>] = if located.is_some() {
            &self.blocks[..=b]
        } else {
            &[]
        };
        blocks.iter().rev().enumerate().flat_map(move |(k, blk)| {
            let end = if k == 0 { i + 1 } else { blk.len() };
            blk[..end].iter().rev().copied()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic xorshift, so the test needs no extra crates.
    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    #[test]
    fn matches_a_sorted_vec_under_random_edits() {
        let mut seed = 0x9e3779b97f4a7c15;
        let mut keys: Vec<u64> = (0..5000).map(|_| rng(&mut seed) % 300).collect();
        let cmp_with = |keys: &Vec<u64>| {
            let keys = keys.clone();
            move |a: u32, b: u32| keys[a as usize].cmp(&keys[b as usize]).then(a.cmp(&b))
        };
        let mut ids: Vec<u32> = (0..keys.len() as u32).collect();
        let c = cmp_with(&keys);
        ids.sort_by(|&a, &b| c(a, b));
        let mut list = RankedList::from_sorted(ids);
        for _ in 0..3000 {
            let id = (rng(&mut seed) % keys.len() as u64) as u32;
            assert!(list.remove(id, cmp_with(&keys)));
            keys[id as usize] = rng(&mut seed) % 300;
            list.insert(id, cmp_with(&keys));
        }
        let mut expected: Vec<u32> = (0..keys.len() as u32).collect();
        let c = cmp_with(&keys);
        expected.sort_by(|&a, &b| c(a, b));
        assert_eq!(list.len(), expected.len());
        assert_eq!(list.iter_from(0).collect::<Vec<_>>(), expected);
        for pos in [0, 1, 1023, 1024, 2500, 4999] {
            assert_eq!(list.get(pos), Some(expected[pos]));
            assert_eq!(list.iter_from(pos).next(), Some(expected[pos]));
            let back: Vec<u32> = list.iter_back_from(pos).collect();
            let mut want = expected[..=pos].to_vec();
            want.reverse();
            assert_eq!(back, want);
        }
        assert_eq!(list.get(5000), None);
        assert_eq!(list.iter_from(5000).count(), 0);
        let below_100 = expected
            .iter()
            .filter(|&&id| keys[id as usize] < 100)
            .count();
        assert_eq!(list.rank(|id| keys[id as usize] < 100), below_100);
    }

    #[test]
    fn grows_from_empty_and_shrinks_to_empty() {
        let cmp = |a: u32, b: u32| a.cmp(&b);
        let mut list = RankedList::default();
        for id in (0..3000).rev() {
            list.insert(id, cmp);
        }
        assert_eq!(
            list.iter_from(0).collect::<Vec<_>>(),
            (0..3000).collect::<Vec<_>>()
        );
        for id in 0..3000 {
            assert!(list.remove(id, cmp));
        }
        assert_eq!(list.len(), 0);
        assert!(!list.remove(7, cmp));
        assert_eq!(list.rank(|_| true), 0);
    }
}
