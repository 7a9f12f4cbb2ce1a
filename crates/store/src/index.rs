//! The in-memory index of the `destinations` table that answers the admin
//! list: every sort order as an order-statistic list, and the lower-cased
//! names in one buffer for the substring filter.
//!
//! SQLite stays the source of truth: the index is loaded from it at start-up
//! and every write the store commits to `destinations` is applied here after
//! the commit. It exists because SQLite needs a full scan to count a
//! substring filter or to skip to a deep `OFFSET` (tens to hundreds of ms at
//! 1M rows), while here both cost microseconds to a few milliseconds.
//!
//! Ordering is Synapse's SQL: `ORDER BY <column> <dir>, destination ASC`, NULL
//! before any value ascending and after any value descending, names compared
//! as bytes.

use std::cmp::Ordering;
use std::collections::HashMap;

use herald_shared::{
    next_token, Destination, DestinationStatus, DestinationsPage, DestinationsQuery, Direction,
    FederationSummary, OrderBy,
};
use memchr::memmem;

use super::ranked::RankedList;

/// One `destinations` row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationRow {
    pub destination: String,
    pub retry_last_ts: Option<i64>,
    pub retry_interval: Option<i64>,
    pub failure_ts: Option<i64>,
    pub last_successful_stream_ordering: Option<i64>,
}

impl DestinationRow {
    /// A row from its five columns, in the table's order.
    pub fn new(
        destination: &str,
        retry_last_ts: Option<i64>,
        retry_interval: Option<i64>,
        failure_ts: Option<i64>,
        last_successful_stream_ordering: Option<i64>,
    ) -> DestinationRow {
        DestinationRow {
            destination: destination.into(),
            retry_last_ts,
            retry_interval,
            failure_ts,
            last_successful_stream_ordering,
        }
    }

    /// The row as the list endpoint shows it (NULL timings as 0).
    pub fn to_api(&self) -> Destination {
        Destination {
            destination: self.destination.clone(),
            retry_last_ts: self.retry_last_ts.unwrap_or(0),
            retry_interval: self.retry_interval.unwrap_or(0),
            failure_ts: self.failure_ts,
            last_successful_stream_ordering: self.last_successful_stream_ordering,
        }
    }

    fn key(&self, order: OrderBy) -> Option<i64> {
        match order {
            OrderBy::Destination => None,
            OrderBy::RetryLastTs => self.retry_last_ts,
            OrderBy::RetryInterval => self.retry_interval,
            OrderBy::FailureTs => self.failure_ts,
            OrderBy::LastSuccessfulStreamOrdering => self.last_successful_stream_ordering,
        }
    }
}

/// Byte that ends each name in the lower-cased buffer; a needle containing it
/// cannot match across two names.
const SEPARATOR: u8 = 0;

#[derive(Debug, Default)]
pub struct DestinationIndex {
    rows: Vec<DestinationRow>,
    by_name: HashMap<String, u32>,
    /// ASCII-lower-cased names, each followed by `SEPARATOR`, in id order.
    lower: Vec<u8>,
    /// Offset of each id's name in `lower`.
    starts: Vec<usize>,
    /// One list per non-name order; the name order is `by_name_order`.
    orders: [RankedList; 4],
    by_name_order: RankedList,
    /// Ids of forgotten rows: out of every list and of `by_name`, their
    /// bytes in `lower` blanked; a name forgotten and seen again gets a new id.
    removed: std::collections::HashSet<u32>,
}

/// Index into `orders` for a numeric order.
fn slot(order: OrderBy) -> Option<usize> {
    match order {
        OrderBy::Destination => None,
        OrderBy::RetryLastTs => Some(0),
        OrderBy::RetryInterval => Some(1),
        OrderBy::FailureTs => Some(2),
        OrderBy::LastSuccessfulStreamOrdering => Some(3),
    }
}

const NUMERIC_ORDERS: [OrderBy; 4] = [
    OrderBy::RetryLastTs,
    OrderBy::RetryInterval,
    OrderBy::FailureTs,
    OrderBy::LastSuccessfulStreamOrdering,
];

/// The first 8 bytes of a name, zero-padded, big-endian: comparing two
/// prefixes orders names as comparing their bytes does, except on a tie.
fn name_prefix(name: &str) -> u64 {
    let mut buf = [0u8; 8];
    let n = name.len().min(8);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    u64::from_be_bytes(buf)
}

/// Tables at least this large are filtered on several threads.
const PARALLEL_SCAN_ROWS: usize = 100_000;

/// Most rows one page may hold in memory, whatever `limit` asks for.
const MAX_PAGE_ROWS: u64 = 1_000_000_000;

impl DestinationIndex {
    /// Builds the index from every row of the table.
    pub fn build(rows: Vec<DestinationRow>) -> DestinationIndex {
        let mut index = DestinationIndex {
            by_name: HashMap::with_capacity(rows.len()),
            ..Default::default()
        };
        for row in rows {
            if index.by_name.contains_key(&row.destination) {
                continue;
            }
            index.append(row);
        }
        // Sorting ids through `cmp` chases two pointers per comparison (row,
        // then name); at 1M rows that took seconds. Names are sorted on an
        // inline 8-byte prefix first, and each numeric order sorts inline
        // (key, name rank) pairs, which is the same order because names are
        // unique.
        let rows = &index.rows;
        let mut by_prefix: Vec<(u64, u32)> = (0..rows.len() as u32)
            .map(|id| (name_prefix(&rows[id as usize].destination), id))
            .collect();
        by_prefix.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0).then_with(|| {
                let (na, nb) = (
                    &rows[a.1 as usize].destination,
                    &rows[b.1 as usize].destination,
                );
                na.as_bytes().cmp(nb.as_bytes())
            })
        });
        let by_name: Vec<u32> = by_prefix.into_iter().map(|(_, id)| id).collect();
        let mut sorted_orders: Vec<Vec<u32>> = Vec::with_capacity(NUMERIC_ORDERS.len());
        for order in NUMERIC_ORDERS {
            let mut keyed: Vec<(Option<i64>, u32)> = by_name
                .iter()
                .enumerate()
                .map(|(rank, &id)| (rows[id as usize].key(order), rank as u32))
                .collect();
            keyed.sort_unstable();
            sorted_orders.push(
                keyed
                    .into_iter()
                    .map(|(_, rank)| by_name[rank as usize])
                    .collect(),
            );
        }
        for (order, sorted) in NUMERIC_ORDERS.into_iter().zip(sorted_orders) {
            index.orders[slot(order).unwrap_or(0)] = RankedList::from_sorted(sorted);
        }
        index.by_name_order = RankedList::from_sorted(by_name);
        index
    }

    fn append(&mut self, row: DestinationRow) -> u32 {
        let id = self.rows.len() as u32;
        self.starts.push(self.lower.len());
        self.lower.extend(row.destination.bytes().map(|b| {
            if b == SEPARATOR {
                1
            } else {
                b.to_ascii_lowercase()
            }
        }));
        self.lower.push(SEPARATOR);
        self.by_name.insert(row.destination.clone(), id);
        self.rows.push(row);
        id
    }

    pub fn len(&self) -> usize {
        self.rows.len() - self.removed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets `name`'s row (a forgotten destination); false when unknown.
    pub fn remove(&mut self, name: &str) -> bool {
        let Some(&id) = self.by_name.get(name) else {
            return false;
        };
        for order in NUMERIC_ORDERS {
            let mut list = std::mem::take(&mut self.orders[slot(order).unwrap_or(0)]);
            list.remove(id, |a, b| self.cmp(order, a, b));
            self.orders[slot(order).unwrap_or(0)] = list;
        }
        let mut list = std::mem::take(&mut self.by_name_order);
        list.remove(id, |a, b| self.cmp(OrderBy::Destination, a, b));
        self.by_name_order = list;
        self.by_name.remove(name);
        // No needle holds a SEPARATOR: a blanked name matches no filter.
        let start = self.starts[id as usize];
        let end = start + self.rows[id as usize].destination.len();
        self.lower[start..end].fill(SEPARATOR);
        self.removed.insert(id);
        true
    }

    pub fn get(&self, name: &str) -> Option<&DestinationRow> {
        self.by_name.get(name).map(|&id| &self.rows[id as usize])
    }

    /// Ascending order of two ids: the column (NULL first), then the name.
    fn cmp(&self, order: OrderBy, a: u32, b: u32) -> Ordering {
        let (ra, rb) = (&self.rows[a as usize], &self.rows[b as usize]);
        ra.key(order)
            .cmp(&rb.key(order))
            .then_with(|| ra.destination.as_bytes().cmp(rb.destination.as_bytes()))
    }

    /// Order of two ids in the listed direction (ties by name ascending).
    fn cmp_dir(&self, order: OrderBy, dir: Direction, a: u32, b: u32) -> Ordering {
        let (ra, rb) = (&self.rows[a as usize], &self.rows[b as usize]);
        let by_key = match order {
            OrderBy::Destination => ra.destination.as_bytes().cmp(rb.destination.as_bytes()),
            _ => ra.key(order).cmp(&rb.key(order)),
        };
        let by_key = if dir == Direction::Backwards {
            by_key.reverse()
        } else {
            by_key
        };
        by_key.then_with(|| ra.destination.as_bytes().cmp(rb.destination.as_bytes()))
    }

    fn list(&self, order: OrderBy) -> &RankedList {
        match slot(order) {
            Some(s) => &self.orders[s],
            None => &self.by_name_order,
        }
    }

    /// Inserts a new row or replaces the stored one with the same name.
    pub fn put(&mut self, row: DestinationRow) {
        let id = match self.by_name.get(&row.destination) {
            Some(&id) => {
                if self.rows[id as usize] == row {
                    return;
                }
                for order in NUMERIC_ORDERS {
                    let mut list = std::mem::take(&mut self.orders[slot(order).unwrap_or(0)]);
                    list.remove(id, |a, b| self.cmp(order, a, b));
                    self.orders[slot(order).unwrap_or(0)] = list;
                }
                self.rows[id as usize] = row;
                id
            }
            None => {
                let id = self.append(row);
                let mut list = std::mem::take(&mut self.by_name_order);
                list.insert(id, |a, b| self.cmp(OrderBy::Destination, a, b));
                self.by_name_order = list;
                id
            }
        };
        for order in NUMERIC_ORDERS {
            let mut list = std::mem::take(&mut self.orders[slot(order).unwrap_or(0)]);
            list.insert(id, |a, b| self.cmp(order, a, b));
            self.orders[slot(order).unwrap_or(0)] = list;
        }
    }

    /// Ids whose lower-cased name contains the lower-cased `needle`, as a
    /// bitset, with their count. Matching is Synapse's on SQLite:
    /// `LOWER(destination) LIKE '%' || lower(needle) || '%'`, except that `%`
    /// and `_` match themselves.
    fn matching(&self, needle: &str) -> (Vec<u64>, usize) {
        // Large tables are scanned in parallel, one slice of names a core.
        let parts = if self.rows.len() < PARALLEL_SCAN_ROWS {
            1
        } else {
            std::thread::available_parallelism().map_or(1, |p| p.get().min(4))
        };
        self.matching_on(needle, parts)
    }

    fn matching_on(&self, needle: &str, parts: usize) -> (Vec<u64>, usize) {
        let needle = needle.to_lowercase();
        let mut bits = vec![0u64; self.rows.len().div_ceil(64)];
        let mut count = 0;
        if needle.as_bytes().contains(&SEPARATOR) {
            return (bits, 0);
        }
        let finder = memmem::Finder::new(needle.as_bytes());
        let n = self.rows.len();
        let ranges: Vec<(usize, usize)> = (0..parts)
            .map(|p| (n * p / parts, n * (p + 1) / parts))
            .collect();
        let found: Vec<Vec<u32>> = if parts == 1 {
            vec![self.matching_in(&finder, 0, n)]
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = ranges
                    .iter()
                    .map(|&(lo, hi)| {
                        let finder = &finder;
                        scope.spawn(move || self.matching_in(finder, lo, hi))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_default())
                    .collect()
            })
        };
        for id in found.into_iter().flatten() {
            bits[id as usize / 64] |= 1u64 << (id % 64);
            count += 1;
        }
        (bits, count)
    }

    /// Matching ids among `lo..hi`, ascending, each once.
    fn matching_in(&self, finder: &memmem::Finder<'_>, lo: usize, hi: usize) -> Vec<u32> {
        let mut out = Vec::new();
        if lo >= hi {
            return out;
        }
        let base = self.starts[lo];
        let end = self.starts.get(hi).copied().unwrap_or(self.lower.len());
        let mut id = lo;
        for pos in finder.find_iter(&self.lower[base..end]) {
            let pos = base + pos;
            // Move to the name holding `pos` (the last start at or before it):
            // a few steps when matches are dense, a binary search when sparse.
            let mut next = id + 1;
            while next < hi && next < id + 8 && self.starts[next] <= pos {
                next += 1;
            }
            if next < hi && self.starts[next] <= pos {
                next += self.starts[next..hi].partition_point(|&s| s <= pos);
            }
            id = next - 1;
            if out.last() != Some(&(id as u32)) {
                out.push(id as u32);
            }
        }
        out
    }

    /// Destinations per derived status at `now_ms`.
    pub fn summary(&self, now_ms: i64) -> FederationSummary {
        let mut summary = FederationSummary {
            now_ts: now_ms,
            ..FederationSummary::default()
        };
        for (id, row) in self.rows.iter().enumerate() {
            if !self.removed.is_empty() && self.removed.contains(&(id as u32)) {
                continue;
            }
            summary.add(DestinationStatus::from_columns(
                row.retry_last_ts.unwrap_or(0),
                row.retry_interval.unwrap_or(0),
                row.failure_ts,
                row.last_successful_stream_ordering,
                now_ms,
            ));
        }
        summary
    }

    /// One page of the admin list.
    pub fn page(&self, q: &DestinationsQuery) -> DestinationsPage {
        let limit = q.limit.min(MAX_PAGE_ROWS);
        let mut rows = Vec::new();
        let total = match &q.destination {
            None => {
                let n = self.len() as u64;
                if q.from < n && limit > 0 {
                    let take = limit.min(n - q.from) as usize;
                    rows.reserve(take);
                    self.walk(q.order_by, q.dir, q.from as usize, |id| {
                        rows.push(id);
                        rows.len() < take
                    });
                }
                n
            }
            Some(needle) => {
                let (bits, count) = self.matching(needle);
                let is_match = |id: u32| bits[id as usize / 64] & (1u64 << (id % 64)) != 0;
                if (q.from as usize) < count && limit > 0 {
                    let take = limit.min((count as u64) - q.from) as usize;
                    if count.saturating_mul(16) <= self.rows.len() {
                        // Few matches: sort just them.
                        let mut ids: Vec<u32> = (0..self.rows.len() as u32)
                            .filter(|&i| is_match(i))
                            .collect();
                        ids.sort_unstable_by(|&a, &b| self.cmp_dir(q.order_by, q.dir, a, b));
                        rows.extend(ids.into_iter().skip(q.from as usize).take(take));
                    } else {
                        let mut skip = q.from as usize;
                        self.walk(q.order_by, q.dir, 0, |id| {
                            if is_match(id) {
                                if skip > 0 {
                                    skip -= 1;
                                } else {
                                    rows.push(id);
                                }
                            }
                            rows.len() < take
                        });
                    }
                }
                count as u64
            }
        };
        let destinations: Vec<Destination> = rows
            .iter()
            .map(|&id| self.rows[id as usize].to_api())
            .collect();
        DestinationsPage {
            next_token: next_token(q.from, q.limit, destinations.len(), total),
            destinations,
            total,
        }
    }

    /// Calls `f` with ids in the listed order starting at position `start`,
    /// until it returns false or the rows run out.
    fn walk(&self, order: OrderBy, dir: Direction, start: usize, mut f: impl FnMut(u32) -> bool) {
        let list = self.list(order);
        let n = list.len();
        if start >= n {
            return;
        }
        match (dir, order) {
            (Direction::Forwards, _) => {
                for id in list.iter_from(start) {
                    if !f(id) {
                        return;
                    }
                }
            }
            // Names are unique: descending is the exact reverse.
            (Direction::Backwards, OrderBy::Destination) => {
                for id in list.iter_back_from(n - 1 - start) {
                    if !f(id) {
                        return;
                    }
                }
            }
            // Column descending, ties by name ascending: runs of equal keys
            // come in reverse order, each run read forwards.
            (Direction::Backwards, _) => {
                let key = |id: u32| self.rows[id as usize].key(order);
                // The run holding descending position `start`.
                let Some(at) = list.get(n - 1 - start) else {
                    return;
                };
                let k = key(at);
                let lo = list.rank(|id| key(id) < k);
                let hi = list.rank(|id| key(id) <= k) - 1;
                let first = lo + (start - (n - 1 - hi));
                for id in list.iter_from(first).take(hi + 1 - first) {
                    if !f(id) {
                        return;
                    }
                }
                if lo == 0 {
                    return;
                }
                // The runs before it, each gathered backwards then emitted.
                let mut run: Vec<u32> = Vec::new();
                let mut run_key = None;
                for id in list.iter_back_from(lo - 1) {
                    let k = key(id);
                    if run_key.is_some() && run_key != Some(k) {
                        for &r in run.iter().rev() {
                            if !f(r) {
                                return;
                            }
                        }
                        run.clear();
                    }
                    run_key = Some(k);
                    run.push(id);
                }
                for &r in run.iter().rev() {
                    if !f(r) {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use DestinationRow as R;
    fn row(n: &str, a: Option<i64>, b: Option<i64>, c: Option<i64>, d: Option<i64>) -> R {
        R::new(n, a, b, c, d)
    }

    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    fn random_rows(n: usize, seed: &mut u64) -> Vec<DestinationRow> {
        let opt = |s: &mut u64| match rng(s) % 4 {
            0 => None,
            _ => Some((rng(s) % 7) as i64),
        };
        (0..n)
            .map(|i| {
                let name = format!(
                    "{}{}.Org",
                    ["a", "B", "m%x", "c_d", "É"][i % 5],
                    rng(seed) % 1000 + i as u64 * 1000
                );
                row(&name, opt(seed), opt(seed), opt(seed), opt(seed))
            })
            .collect()
    }

    /// The page as Synapse's SQL would produce it, computed naively.
    fn naive(rows: &[DestinationRow], q: &DestinationsQuery) -> DestinationsPage {
        let mut matching: Vec<&DestinationRow> = rows
            .iter()
            .filter(|r| match &q.destination {
                None => true,
                Some(d) => r
                    .destination
                    .to_ascii_lowercase()
                    .contains(&d.to_lowercase()),
            })
            .collect();
        matching.sort_by(|a, b| {
            let k = match q.order_by {
                OrderBy::Destination => a.destination.as_bytes().cmp(b.destination.as_bytes()),
                o => a.key(o).cmp(&b.key(o)),
            };
            let k = if q.dir == Direction::Backwards {
                k.reverse()
            } else {
                k
            };
            k.then(a.destination.as_bytes().cmp(b.destination.as_bytes()))
        });
        let total = matching.len() as u64;
        let destinations: Vec<Destination> = matching
            .into_iter()
            .skip(q.from as usize)
            .take(q.limit as usize)
            .map(DestinationRow::to_api)
            .collect();
        DestinationsPage {
            next_token: next_token(q.from, q.limit, destinations.len(), total),
            destinations,
            total,
        }
    }

    #[test]
    fn every_order_direction_filter_and_offset_matches_sql_semantics() {
        let mut seed = 0x2545F4914F6CDD1D;
        let mut rows = random_rows(3000, &mut seed);
        let mut index = DestinationIndex::build(rows.clone());
        // Edit some rows in place and add new ones, as the sender will.
        for i in 0..500 {
            let j = (rng(&mut seed) % rows.len() as u64) as usize;
            rows[j].retry_interval = Some((rng(&mut seed) % 7) as i64);
            rows[j].last_successful_stream_ordering = None;
            index.put(rows[j].clone());
            let new = row(&format!("new{i}.example"), Some(i % 3), None, Some(1), None);
            rows.push(new.clone());
            index.put(new);
        }
        // Forget some (as `DELETE .../destinations/<d>` does), and bring a
        // few forgotten names back.
        for i in 0..300 {
            let j = (rng(&mut seed) % rows.len() as u64) as usize;
            let gone = rows.swap_remove(j);
            assert!(index.remove(&gone.destination));
            assert!(!index.remove(&gone.destination));
            if i % 10 == 0 {
                let back = row(&gone.destination, None, Some(3), None, Some(9));
                rows.push(back.clone());
                index.put(back);
            }
        }
        assert_eq!(index.len(), rows.len());
        for order in OrderBy::ALL {
            for dir in [Direction::Forwards, Direction::Backwards] {
                for filter in [
                    None,
                    Some("ORG"),
                    Some("m%"),
                    Some("c_"),
                    Some("new1"),
                    Some("é"),
                    Some("zzz"),
                ] {
                    for (from, limit) in [
                        (0, 100),
                        (0, 0),
                        (7, 13),
                        (1500, 50),
                        (3490, 100),
                        (5000, 10),
                    ] {
                        let q = DestinationsQuery {
                            from,
                            limit,
                            destination: filter.map(String::from),
                            order_by: order,
                            dir,
                        };
                        assert!(index.page(&q) == naive(&rows, &q), "{q:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn parallel_filter_scan_finds_what_one_thread_finds() {
        let mut seed = 99;
        let index = DestinationIndex::build(random_rows(5000, &mut seed));
        for needle in ["org", "B1", "%", "zz", "9.o", "é"] {
            let one = index.matching_on(needle, 1);
            for parts in [2, 3, 7] {
                assert!(
                    index.matching_on(needle, parts) == one,
                    "{needle} on {parts}"
                );
            }
        }
    }

    #[test]
    fn nulls_first_ascending_last_descending_ties_by_name() {
        let index = DestinationIndex::build(vec![
            row("b", None, None, None, None),
            row("a", Some(5), None, None, None),
            row("c", Some(5), None, None, None),
            row("A", None, None, None, None),
        ]);
        let names = |dir| {
            let q = DestinationsQuery {
                order_by: OrderBy::RetryLastTs,
                dir,
                ..Default::default()
            };
            index
                .page(&q)
                .destinations
                .into_iter()
                .map(|d| d.destination)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(Direction::Forwards), ["A", "b", "a", "c"]);
        assert_eq!(names(Direction::Backwards), ["a", "c", "A", "b"]);
    }

    #[test]
    fn build_orders_names_sharing_and_shorter_than_the_sort_prefix() {
        let names = [
            "matrix.org",
            "matrix.orga",
            "matrix.org:8448",
            "matrix",
            "matri",
            "",
            "Matrix.org",
            "matrix\u{1}org",
            "matrix.oRg",
            "é.org",
            "e.org",
            "matrix.example.org",
        ];
        let rows: Vec<DestinationRow> = names
            .iter()
            .enumerate()
            .map(|(i, n)| row(n, Some((i % 3) as i64), None, Some(1), None))
            .collect();
        let index = DestinationIndex::build(rows.clone());
        for order in OrderBy::ALL {
            for dir in [Direction::Forwards, Direction::Backwards] {
                let q = DestinationsQuery {
                    order_by: order,
                    dir,
                    ..Default::default()
                };
                assert!(index.page(&q) == naive(&rows, &q), "{q:?}");
            }
        }
    }

    #[test]
    fn huge_limit_does_not_allocate_it() {
        let index = DestinationIndex::build(random_rows(10, &mut 7));
        let q = DestinationsQuery {
            limit: i64::MAX as u64,
            ..Default::default()
        };
        assert_eq!(index.page(&q).destinations.len(), 10);
    }
}
