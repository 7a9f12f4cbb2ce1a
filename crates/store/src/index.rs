//! The in-memory index of the `destinations` table that answers the admin
//! list: every sort order as an order-statistic list, the names in one
//! lower-cased arena for the substring filter, and each destination's room
//! count (the rooms list's `total`).
//!
//! The database stays the source of truth: the index is loaded from it at
//! start-up ([`IndexBuilder`], fed row by row) and every write the store
//! commits to `destinations` is applied here after the commit. It exists
//! because SQL needs a full scan to count a substring filter or to skip to a
//! deep `OFFSET` (tens of ms to seconds at 1M rows), while here both cost
//! microseconds to a few milliseconds.
//!
//! Lean by layout (about 110 bytes a destination at 1M, and 1 bit per
//! arena byte, ~3.4 bytes a destination, for the last filter's matches):
//! the names live once,
//! ASCII-lower-cased and separated in one arena (which the filter scans and
//! the pages read); a name that lower-casing changes also keeps its original
//! spelling beside it (rare: server names are lower-case). The four numeric
//! columns are plain `i64` arrays with `i64::MIN` standing for NULL (the
//! columns hold millisecond times, intervals and stream orderings, never
//! `i64::MIN`); a name finds its id through a hash table of ids that hashes
//! the arena's bytes, not a copy of them.
//!
//! Ordering is Synapse's SQL: `ORDER BY <column> <dir>, destination ASC`,
//! names compared as bytes, NULL placed as the database Synapse runs on
//! places it ([`NullsOrder`]).
//!
//! A filter scans the arena once, on a thread per core (up to four) from
//! 100,000 rows, a 64-byte block at a time ([`crate::substring`]), marking
//! the end of each matching name. The last filter's match set is kept ([`LastFilter`]): the
//! console asks the same filter page after page, and those pages then only
//! walk the order. Only a change to the set of names (a new destination, a
//! forgotten one) drops it; a row's timings changing does not, since the
//! set is of names and the walk reads the live orders.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::{DefaultHashBuilder, HashTable};
use herald_shared::{
    next_token, Destination, DestinationStatus, DestinationsPage, DestinationsQuery, Direction,
    FederationSummary, OrderBy,
};
use parking_lot::Mutex;

use super::ranked::RankedList;
use super::substring::{self, Matches, Needle, BLANK, SEPARATOR};

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

    /// The four numeric columns in slot order (see [`slot`]).
    fn columns(&self) -> [Option<i64>; 4] {
        [
            self.retry_last_ts,
            self.retry_interval,
            self.failure_ts,
            self.last_successful_stream_ordering,
        ]
    }
}

/// Where NULL goes in a column's order: the database Synapse runs on decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NullsOrder {
    /// Before any value ascending, after any value descending: SQLite (and
    /// Herald's own store).
    #[default]
    Smallest,
    /// After any value ascending, before any value descending: PostgreSQL.
    Largest,
}

/// A NULL in the numeric columns.
const NULL: i64 = i64::MIN;

fn to_column(value: Option<i64>) -> i64 {
    value.unwrap_or(NULL)
}

fn from_column(value: i64) -> Option<i64> {
    (value != NULL).then_some(value)
}

/// A column value as an unsigned key in ascending list order: NULL at 0 or
/// at `u64::MAX` as `nulls` says, values in their order between.
fn sort_key(value: i64, nulls: NullsOrder) -> u64 {
    let key = (value as u64) ^ (1 << 63);
    match nulls {
        NullsOrder::Smallest => key,
        NullsOrder::Largest => key.wrapping_sub(1),
    }
}

/// The names: one arena of lower-cased names, and the original spelling of
/// the few that lower-casing changes.
#[derive(Debug, Default)]
struct Names {
    /// ASCII-lower-cased names, each followed by `SEPARATOR`, in id order.
    lower: Vec<u8>,
    /// Offset of each id's name in `lower`.
    starts: Vec<usize>,
    /// One bit per id: its spelling is in `originals`.
    mixed: Vec<u64>,
    originals: HashMap<u32, Box<str>>,
}

impl Names {
    fn len(&self) -> usize {
        self.starts.len()
    }

    fn push(&mut self, name: &str) -> u32 {
        let id = self.starts.len() as u32;
        let start = self.lower.len();
        self.starts.push(start);
        self.lower.extend_from_slice(name.as_bytes());
        let stored = &mut self.lower[start..];
        if (id as usize) / 64 >= self.mixed.len() {
            self.mixed.push(0);
        }
        if stored.iter().any(u8::is_ascii_uppercase) {
            stored.make_ascii_lowercase();
            self.mixed[id as usize / 64] |= 1 << (id % 64);
            self.originals.insert(id, name.into());
        }
        self.lower.push(SEPARATOR);
        id
    }

    fn end(&self, id: u32) -> usize {
        self.starts
            .get(id as usize + 1)
            .copied()
            .unwrap_or(self.lower.len())
            - 1
    }

    /// The lower-cased name of `id`, as the filter sees it.
    fn lower(&self, id: u32) -> &[u8] {
        &self.lower[self.starts[id as usize]..self.end(id)]
    }

    /// The name of `id` as spelled.
    fn name(&self, id: u32) -> &[u8] {
        if self.mixed[id as usize / 64] & (1 << (id % 64)) != 0 {
            if let Some(original) = self.originals.get(&id) {
                return original.as_bytes();
            }
        }
        self.lower(id)
    }

    /// Blanks a forgotten name: it matches no filter (no needle holds a
    /// `BLANK`) and its spelling is dropped.
    fn blank(&mut self, id: u32) {
        let (start, end) = (self.starts[id as usize], self.end(id));
        self.lower[start..end].fill(BLANK);
        self.mixed[id as usize / 64] &= !(1 << (id % 64));
        self.originals.remove(&id);
    }

    fn shrink_to_fit(&mut self) {
        self.lower.shrink_to_fit();
        self.starts.shrink_to_fit();
        self.mixed.shrink_to_fit();
        self.originals.shrink_to_fit();
    }
}

pub struct DestinationIndex {
    nulls: NullsOrder,
    names: Names,
    /// The numeric columns by id, in slot order, `NULL` for NULL.
    columns: [Vec<i64>; 4],
    /// Rows of `destination_rooms` per id.
    rooms: Vec<u64>,
    hasher: DefaultHashBuilder,
    /// Ids of the live names, hashed by name.
    by_name: HashTable<u32>,
    /// One list per numeric order (by slot); the name order is `by_name_order`.
    orders: [RankedList; 4],
    by_name_order: RankedList,
    /// Ids of forgotten rows: out of every list and of `by_name`, their
    /// names blanked; a name forgotten and seen again gets a new id.
    removed: HashSet<u32>,
    /// The last filter's match set, dropped when a name is added or blanked.
    last_filter: Mutex<Option<Arc<LastFilter>>>,
}

/// The names one lower-cased needle matches: one bit per byte of the
/// arena, set at the end of each matching name (3.4 MB at 1M rows), and
/// how many.
#[derive(Debug)]
struct LastFilter {
    needle: String,
    matches: Matches,
}

impl Default for DestinationIndex {
    fn default() -> DestinationIndex {
        DestinationIndex::builder(NullsOrder::Smallest).finish()
    }
}

impl std::fmt::Debug for DestinationIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DestinationIndex")
            .field("nulls", &self.nulls)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

/// Index into `columns` and `orders` for a numeric order.
fn slot(order: OrderBy) -> Option<usize> {
    match order {
        OrderBy::Destination => None,
        OrderBy::RetryLastTs => Some(0),
        OrderBy::RetryInterval => Some(1),
        OrderBy::FailureTs => Some(2),
        OrderBy::LastSuccessfulStreamOrdering => Some(3),
    }
}

/// The first 8 bytes of a name, zero-padded, big-endian: comparing two
/// prefixes orders names as comparing their bytes does, except on a tie.
fn name_prefix(name: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = name.len().min(8);
    buf[..n].copy_from_slice(&name[..n]);
    u64::from_be_bytes(buf)
}

/// Tables at least this large are filtered on several threads.
const PARALLEL_SCAN_ROWS: usize = 100_000;

/// Most rows one page may hold in memory, whatever `limit` asks for.
const MAX_PAGE_ROWS: u64 = 1_000_000_000;

/// A filter matching at most one name in this many (or this many names)
/// sorts its matches; more are met walking the listed order.
const SORT_FEW: usize = 256;

/// Feeds an index row by row (a database read at start-up), then sorts
/// every order once.
#[derive(Debug)]
pub struct IndexBuilder {
    index: DestinationIndex,
}

impl IndexBuilder {
    /// Room for `rows` more rows.
    pub fn reserve(&mut self, rows: usize) {
        let index = &mut self.index;
        index.names.starts.reserve(rows);
        index.names.lower.reserve(rows.saturating_mul(32));
        for column in &mut index.columns {
            column.reserve(rows);
        }
        index.rooms.reserve(rows);
    }

    /// Adds one row and its room count. A name pushed twice keeps its first row.
    pub fn push(&mut self, row: DestinationRow, room_count: u64) {
        self.push_columns(&row.destination, row.columns(), room_count);
    }

    /// [`IndexBuilder::push`] without an owned row: the numeric columns as
    /// `[retry_last_ts, retry_interval, failure_ts,
    /// last_successful_stream_ordering]`.
    pub fn push_columns(&mut self, destination: &str, columns: [Option<i64>; 4], room_count: u64) {
        let index = &mut self.index;
        index.names.push(destination);
        for (column, value) in index.columns.iter_mut().zip(columns) {
            column.push(to_column(value));
        }
        index.rooms.push(room_count);
    }

    /// How many rows were pushed.
    pub fn len(&self) -> usize {
        self.index.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sorts every order and hashes the names: the index, ready.
    ///
    /// Every large temporary (two sort buffers, the name order) and the hash
    /// table are allocated before any large block is freed, and freed only
    /// at the end: glibc then maps each on its own and unmaps it when freed.
    /// Once a large mapped block has been freed, glibc serves blocks up to
    /// that size from its heap and keeps up to twice that size of freed heap:
    /// building in that order cost 45 MB more RSS at 1M rows (measured).
    pub fn finish(self) -> DestinationIndex {
        let mut index = self.index;
        index.names.shrink_to_fit();
        for column in &mut index.columns {
            column.shrink_to_fit();
        }
        index.rooms.shrink_to_fit();
        let n = index.names.len();
        let names = &index.names;
        // Names sort on an inline 8-byte prefix first (a comparison through
        // the arena chases a pointer); ties by id so a repeated name keeps
        // its first row.
        let mut first: Vec<(u64, u32)> = (0..n as u32)
            .map(|id| (name_prefix(names.name(id)), id))
            .collect();
        let mut second: Vec<(u64, u32)> = Vec::with_capacity(n);
        let mut table: HashTable<u32> = HashTable::with_capacity(n);
        let mut by_name: Vec<u32> = Vec::with_capacity(n);
        first.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| names.name(a.1).cmp(names.name(b.1)))
                .then(a.1.cmp(&b.1))
        });
        let mut repeated: Vec<u32> = Vec::new();
        for &(_, id) in &first {
            match by_name.last() {
                Some(&last) if names.name(last) == names.name(id) => repeated.push(id),
                _ => by_name.push(id),
            }
        }
        // Each numeric order sorts inline (key, name rank) pairs: the same
        // order as (key, name) since names are unique. Two threads sort two
        // orders each, one buffer each, while this one hashes the names.
        let (columns, nulls, hasher) = (&index.columns, index.nulls, &index.hasher);
        let by_name_ref = &by_name;
        let sort_into = move |buffer: &mut Vec<(u64, u32)>, s: usize| -> RankedList {
            let column = &columns[s];
            buffer.clear();
            buffer.extend(
                by_name_ref
                    .iter()
                    .enumerate()
                    .map(|(rank, &id)| (sort_key(column[id as usize], nulls), rank as u32)),
            );
            buffer.sort_unstable();
            RankedList::from_sorted_iter(
                buffer.len(),
                buffer.iter().map(|&(_, rank)| by_name_ref[rank as usize]),
            )
        };
        // Small tables (tests, a new server) sort on this thread: the
        // orders left `None` are sorted below.
        let parallel = n >= PARALLEL_SCAN_ROWS;
        let (sorted, by_name_order) = std::thread::scope(|scope| {
            if !parallel {
                for &id in by_name_ref {
                    let hash = hasher.hash_one(names.name(id));
                    table.insert_unique(hash, id, |&i| hasher.hash_one(names.name(i)));
                }
                let by_name_order = RankedList::from_sorted_iter(n, by_name_ref.iter().copied());
                return ([None, None], by_name_order);
            }
            let (a, b) = (&mut first, &mut second);
            let one = scope.spawn(move || [sort_into(a, 0), sort_into(a, 2)]);
            let two = scope.spawn(move || [sort_into(b, 1), sort_into(b, 3)]);
            for &id in by_name_ref {
                let hash = hasher.hash_one(names.name(id));
                table.insert_unique(hash, id, |&i| hasher.hash_one(names.name(i)));
            }
            let by_name_order = RankedList::from_sorted_iter(n, by_name_ref.iter().copied());
            // A sorting thread does not panic; if one did, its orders are
            // sorted again below.
            ([one.join().ok(), two.join().ok()], by_name_order)
        });
        let [one, two] = sorted;
        let mut orders: [Option<RankedList>; 4] = Default::default();
        if let Some([zero, two_]) = one {
            orders[0] = Some(zero);
            orders[2] = Some(two_);
        }
        if let Some([one_, three]) = two {
            orders[1] = Some(one_);
            orders[3] = Some(three);
        }
        for (s, list) in orders.into_iter().enumerate() {
            index.orders[s] = match list {
                Some(list) => list,
                None => sort_into(&mut first, s),
            };
        }
        index.by_name = table;
        index.by_name_order = by_name_order;
        drop((first, second, by_name));
        for id in repeated {
            index.names.blank(id);
            index.removed.insert(id);
        }
        index
    }
}

impl DestinationIndex {
    /// An empty builder; `nulls` says where NULL sorts.
    pub fn builder(nulls: NullsOrder) -> IndexBuilder {
        IndexBuilder {
            index: DestinationIndex {
                nulls,
                names: Names::default(),
                columns: Default::default(),
                rooms: Vec::new(),
                hasher: DefaultHashBuilder::default(),
                by_name: HashTable::new(),
                orders: Default::default(),
                by_name_order: RankedList::default(),
                removed: HashSet::new(),
                last_filter: Mutex::new(None),
            },
        }
    }

    /// Builds the index from every row of the table (no room counts), NULL
    /// sorting first as in SQLite.
    pub fn build(rows: Vec<DestinationRow>) -> DestinationIndex {
        let mut builder = DestinationIndex::builder(NullsOrder::Smallest);
        builder.reserve(rows.len());
        for row in rows {
            builder.push(row, 0);
        }
        builder.finish()
    }

    /// Where NULL sorts in this index.
    pub fn nulls(&self) -> NullsOrder {
        self.nulls
    }

    pub fn len(&self) -> usize {
        self.names.len() - self.removed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn find(&self, name: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(name.as_bytes());
        self.by_name
            .find(hash, |&id| self.names.name(id) == name.as_bytes())
            .copied()
    }

    fn key(&self, s: usize, id: u32) -> u64 {
        sort_key(self.columns[s][id as usize], self.nulls)
    }

    fn destination(&self, id: u32) -> String {
        String::from_utf8_lossy(self.names.name(id)).into_owned()
    }

    fn column(&self, s: usize, id: u32) -> Option<i64> {
        from_column(self.columns[s][id as usize])
    }

    fn row(&self, id: u32) -> DestinationRow {
        DestinationRow {
            destination: self.destination(id),
            retry_last_ts: self.column(0, id),
            retry_interval: self.column(1, id),
            failure_ts: self.column(2, id),
            last_successful_stream_ordering: self.column(3, id),
        }
    }

    fn to_api(&self, id: u32) -> Destination {
        Destination {
            destination: self.destination(id),
            retry_last_ts: self.column(0, id).unwrap_or(0),
            retry_interval: self.column(1, id).unwrap_or(0),
            failure_ts: self.column(2, id),
            last_successful_stream_ordering: self.column(3, id),
        }
    }

    /// Forgets `name`'s row (a forgotten destination); false when unknown.
    pub fn remove(&mut self, name: &str) -> bool {
        let Some(id) = self.find(name) else {
            return false;
        };
        for s in 0..self.orders.len() {
            let mut list = std::mem::take(&mut self.orders[s]);
            list.remove(id, |a, b| self.cmp(Some(s), a, b));
            self.orders[s] = list;
        }
        let mut list = std::mem::take(&mut self.by_name_order);
        list.remove(id, |a, b| self.cmp(None, a, b));
        self.by_name_order = list;
        let hash = self.hasher.hash_one(name.as_bytes());
        if let Ok(entry) = self.by_name.find_entry(hash, |&i| i == id) {
            entry.remove();
        }
        self.names.blank(id);
        *self.last_filter.get_mut() = None;
        self.rooms[id as usize] = 0;
        self.removed.insert(id);
        true
    }

    pub fn get(&self, name: &str) -> Option<DestinationRow> {
        self.find(name).map(|id| self.row(id))
    }

    /// Rows of `destination_rooms` for `name`; `None` when unknown.
    pub fn room_count(&self, name: &str) -> Option<u64> {
        self.find(name).map(|id| self.rooms[id as usize])
    }

    /// Sets the room count of a known destination; false when unknown.
    pub fn set_room_count(&mut self, name: &str, rooms: u64) -> bool {
        match self.find(name) {
            Some(id) => {
                self.rooms[id as usize] = rooms;
                true
            }
            None => false,
        }
    }

    /// Ascending order of two ids in a list: the column of `slot` (NULL as
    /// `nulls` says), then the name; by name alone without a slot.
    fn cmp(&self, slot: Option<usize>, a: u32, b: u32) -> Ordering {
        let by_key = match slot {
            Some(s) => self.key(s, a).cmp(&self.key(s, b)),
            None => Ordering::Equal,
        };
        by_key.then_with(|| self.names.name(a).cmp(self.names.name(b)))
    }

    /// Order of two ids in the listed direction (ties by name ascending).
    fn cmp_dir(&self, order: OrderBy, dir: Direction, a: u32, b: u32) -> Ordering {
        let by_key = match slot(order) {
            Some(s) => self.key(s, a).cmp(&self.key(s, b)),
            None => self.names.name(a).cmp(self.names.name(b)),
        };
        let by_key = if dir == Direction::Backwards {
            by_key.reverse()
        } else {
            by_key
        };
        by_key.then_with(|| self.names.name(a).cmp(self.names.name(b)))
    }

    fn list(&self, order: OrderBy) -> &RankedList {
        match slot(order) {
            Some(s) => &self.orders[s],
            None => &self.by_name_order,
        }
    }

    /// Inserts a new row or replaces the stored one with the same name.
    pub fn put(&mut self, row: DestinationRow) {
        let values = row.columns().map(to_column);
        let (id, changed) = match self.find(&row.destination) {
            Some(id) => {
                let mut changed = [false; 4];
                for s in 0..values.len() {
                    changed[s] = self.columns[s][id as usize] != values[s];
                    if changed[s] {
                        let mut list = std::mem::take(&mut self.orders[s]);
                        list.remove(id, |a, b| self.cmp(Some(s), a, b));
                        self.orders[s] = list;
                        self.columns[s][id as usize] = values[s];
                    }
                }
                (id, changed)
            }
            None => {
                let id = self.names.push(&row.destination);
                *self.last_filter.get_mut() = None;
                for (column, value) in self.columns.iter_mut().zip(values) {
                    column.push(value);
                }
                self.rooms.push(0);
                let hash = self.hasher.hash_one(row.destination.as_bytes());
                let (names, hasher) = (&self.names, &self.hasher);
                self.by_name
                    .insert_unique(hash, id, |&i| hasher.hash_one(names.name(i)));
                let mut list = std::mem::take(&mut self.by_name_order);
                list.insert(id, |a, b| self.cmp(None, a, b));
                self.by_name_order = list;
                (id, [true; 4])
            }
        };
        for (s, changed) in changed.into_iter().enumerate() {
            if changed {
                let mut list = std::mem::take(&mut self.orders[s]);
                list.insert(id, |a, b| self.cmp(Some(s), a, b));
                self.orders[s] = list;
            }
        }
    }

    fn scan_parts(&self) -> usize {
        if self.names.len() < PARALLEL_SCAN_ROWS {
            1
        } else {
            std::thread::available_parallelism().map_or(1, |p| p.get().min(4))
        }
    }

    /// The names containing the lower-cased needle: one pass over the
    /// arena, on `parts` threads (see [`crate::substring`]).
    fn scan(&self, needle: &Needle<'_>, parts: usize, reuse: Vec<u64>) -> Matches {
        substring::scan(&self.names.lower, needle, parts, reuse)
    }

    /// The destinations in backoff (a `retry_last_ts` set and not 0).
    pub fn in_backoff(&self) -> Vec<String> {
        let last = &self.columns[0];
        (0..self.names.len())
            .filter(|&id| {
                from_column(last[id]).is_some_and(|ts| ts != 0)
                    && (self.removed.is_empty() || !self.removed.contains(&(id as u32)))
            })
            .map(|id| self.destination(id as u32))
            .collect()
    }

    /// Destinations per derived status at `now_ms`.
    pub fn summary(&self, now_ms: i64) -> FederationSummary {
        let mut summary = FederationSummary {
            now_ts: now_ms,
            ..FederationSummary::default()
        };
        let [last, interval, failure, delivered] = &self.columns;
        for id in 0..self.names.len() {
            if !self.removed.is_empty() && self.removed.contains(&(id as u32)) {
                continue;
            }
            summary.add(DestinationStatus::from_columns(
                from_column(last[id]).unwrap_or(0),
                from_column(interval[id]).unwrap_or(0),
                from_column(failure[id]),
                from_column(delivered[id]),
                now_ms,
            ));
        }
        summary
    }

    /// One page of the admin list.
    pub fn page(&self, q: &DestinationsQuery) -> DestinationsPage {
        let limit = q.limit.min(MAX_PAGE_ROWS);
        let mut rows = Vec::new();
        let needle = q
            .destination
            .as_deref()
            .filter(|d| !d.is_empty())
            .map(str::to_lowercase);
        let total = match needle {
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
            // Matching is Synapse's on SQLite: `LOWER(destination) LIKE '%'
            // || lower(needle) || '%'`, except that `%` and `_` match
            // themselves.
            Some(needle) => self.filtered(q, limit, &needle, &mut rows) as u64,
        };
        let destinations: Vec<Destination> = rows.iter().map(|&id| self.to_api(id)).collect();
        DestinationsPage {
            next_token: next_token(q.from, q.limit, destinations.len(), total),
            destinations,
            total,
        }
    }

    /// The names matching the lower-cased `needle`: the last filter's set
    /// when it is the same needle, else one scan (kept as the last filter).
    fn matches(&self, needle: &str) -> Arc<LastFilter> {
        if let Some(last) = self.last_filter.lock().as_ref() {
            if last.needle == needle {
                return Arc::clone(last);
            }
        }
        // The last filter's words, written over when no page holds them.
        let reuse = self
            .last_filter
            .lock()
            .take()
            .and_then(|last| Arc::try_unwrap(last).ok())
            .map(|last| last.matches.ends)
            .unwrap_or_default();
        let matches = Arc::new(LastFilter {
            needle: needle.to_owned(),
            matches: self.scan(&Needle::new(needle.as_bytes()), self.scan_parts(), reuse),
        });
        *self.last_filter.lock() = Some(Arc::clone(&matches));
        matches
    }

    /// A filtered page: the ids of its rows into `rows`, the match count
    /// returned. One scan of the arena marks the matches; few are sorted,
    /// more are met walking the listed order.
    fn filtered(
        &self,
        q: &DestinationsQuery,
        limit: u64,
        needle: &str,
        rows: &mut Vec<u32>,
    ) -> usize {
        let last = self.matches(needle);
        let (matches, count) = (&last.matches, last.matches.count);
        if (q.from as usize) >= count || limit == 0 {
            return count;
        }
        let take = limit.min((count as u64) - q.from) as usize;
        if count <= (self.names.len() / SORT_FEW).max(SORT_FEW) {
            // Each separator's name: the last one starting before it.
            let starts = &self.names.starts;
            let mut ids: Vec<u32> = Vec::with_capacity(count);
            for end in matches.ends() {
                ids.push((starts.partition_point(|&s| s <= end) - 1) as u32);
            }
            ids.sort_unstable_by(|&a, &b| self.cmp_dir(q.order_by, q.dir, a, b));
            rows.extend(ids.into_iter().skip(q.from as usize).take(take));
            return count;
        }
        let mut skip = q.from as usize;
        self.walk(q.order_by, q.dir, 0, |id| {
            if matches.holds_end(self.names.end(id)) {
                if skip > 0 {
                    skip -= 1;
                } else {
                    rows.push(id);
                }
            }
            rows.len() < take
        });
        count
    }

    /// Calls `f` with ids in the listed order starting at position `start`,
    /// until it returns false or the rows run out.
    fn walk(&self, order: OrderBy, dir: Direction, start: usize, mut f: impl FnMut(u32) -> bool) {
        let list = self.list(order);
        let n = list.len();
        if start >= n {
            return;
        }
        match (dir, slot(order)) {
            (Direction::Forwards, _) => {
                for id in list.iter_from(start) {
                    if !f(id) {
                        return;
                    }
                }
            }
            // Names are unique: descending is the exact reverse.
            (Direction::Backwards, None) => {
                for id in list.iter_back_from(n - 1 - start) {
                    if !f(id) {
                        return;
                    }
                }
            }
            // Column descending, ties by name ascending: runs of equal keys
            // come in reverse order, each run read forwards.
            (Direction::Backwards, Some(s)) => {
                let key = |id: u32| self.key(s, id);
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
            _ => Some((rng(s) % 7) as i64 - 3),
        };
        (0..n)
            .map(|i| {
                let name = format!(
                    "{}{}.Org",
                    ["a", "B", "m%x", "c_d", "É", "n\u{0}ul"][i % 6],
                    rng(seed) % 1000 + i as u64 * 1000
                );
                row(&name, opt(seed), opt(seed), opt(seed), opt(seed))
            })
            .collect()
    }

    fn key(row: &DestinationRow, order: OrderBy) -> Option<i64> {
        slot(order).and_then(|s| row.columns()[s])
    }

    /// The page as the database's SQL would produce it, computed naively:
    /// `ORDER BY <col> <dir>, destination ASC` with NULL where `nulls` says.
    fn naive(
        rows: &[DestinationRow],
        q: &DestinationsQuery,
        nulls: NullsOrder,
    ) -> DestinationsPage {
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
                o => match (key(a, o), key(b, o)) {
                    (None, None) => Ordering::Equal,
                    (None, Some(_)) if nulls == NullsOrder::Smallest => Ordering::Less,
                    (None, Some(_)) => Ordering::Greater,
                    (Some(_), None) if nulls == NullsOrder::Smallest => Ordering::Greater,
                    (Some(_), None) => Ordering::Less,
                    (Some(x), Some(y)) => x.cmp(&y),
                },
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

    fn built(rows: &[DestinationRow], nulls: NullsOrder) -> DestinationIndex {
        let mut builder = DestinationIndex::builder(nulls);
        for (i, r) in rows.iter().enumerate() {
            builder.push(r.clone(), i as u64 % 5);
        }
        builder.finish()
    }

    /// Every order, direction, filter and page of `index` against `naive`.
    fn assert_matches_naive(index: &DestinationIndex, rows: &[DestinationRow], nulls: NullsOrder) {
        assert_eq!(index.len(), rows.len());
        let n = rows.len() as u64;
        for order in OrderBy::ALL {
            for dir in [Direction::Forwards, Direction::Backwards] {
                for filter in [
                    None,
                    Some("ORG"),
                    Some("m%"),
                    Some("c_"),
                    Some("new1"),
                    Some("é"),
                    Some("1"),
                    Some("zzz"),
                    Some("n\u{1}u"),
                ] {
                    for (from, limit) in [
                        (0, 100),
                        (0, 0),
                        (7, 13),
                        (n / 2, 50),
                        (n.saturating_sub(10), 100),
                        (n + 5, 10),
                    ] {
                        let q = DestinationsQuery {
                            from,
                            limit,
                            destination: filter.map(String::from),
                            order_by: order,
                            dir,
                        };
                        assert!(index.page(&q) == naive(rows, &q, nulls), "{nulls:?} {q:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn every_order_direction_filter_and_offset_matches_sql_semantics() {
        for nulls in [NullsOrder::Smallest, NullsOrder::Largest] {
            let mut seed = 0x2545F4914F6CDD1D;
            let mut rows = random_rows(3000, &mut seed);
            let mut index = built(&rows, nulls);
            assert_eq!(index.nulls(), nulls);
            assert_matches_naive(&index, &rows, nulls);
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
            // Forget some (as `DELETE .../destinations/<d>` does), and bring
            // a few forgotten names back.
            for i in 0..300 {
                let j = (rng(&mut seed) % rows.len() as u64) as usize;
                let gone = rows.swap_remove(j);
                assert!(index.remove(&gone.destination));
                assert!(!index.remove(&gone.destination));
                assert_eq!(index.get(&gone.destination), None);
                if i % 10 == 0 {
                    let back = row(&gone.destination, None, Some(3), None, Some(9));
                    rows.push(back.clone());
                    index.put(back);
                }
            }
            for r in &rows {
                assert_eq!(index.get(&r.destination).as_ref(), Some(r));
            }
            assert_matches_naive(&index, &rows, nulls);
        }
    }

    /// PostgreSQL's order: NULL after every value ascending, before every
    /// value descending, in every sortable column, ties by name ascending.
    #[test]
    fn nulls_largest_sorts_as_postgresql_in_every_column() {
        let rows = vec![
            row("b", None, None, None, None),
            row("a", Some(5), Some(-1), Some(i64::MAX), Some(0)),
            row("c", Some(5), None, Some(7), None),
            row("A", None, Some(2), None, Some(i64::MIN + 1)),
            row("d", Some(-3), Some(2), Some(7), Some(4)),
        ];
        let index = built(&rows, NullsOrder::Largest);
        let names = |order_by, dir| {
            let q = DestinationsQuery {
                order_by,
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
        use Direction::{Backwards as B, Forwards as F};
        assert_eq!(names(OrderBy::RetryLastTs, F), ["d", "a", "c", "A", "b"]);
        assert_eq!(names(OrderBy::RetryLastTs, B), ["A", "b", "a", "c", "d"]);
        assert_eq!(names(OrderBy::RetryInterval, F), ["a", "A", "d", "b", "c"]);
        assert_eq!(names(OrderBy::RetryInterval, B), ["b", "c", "A", "d", "a"]);
        assert_eq!(names(OrderBy::FailureTs, F), ["c", "d", "a", "A", "b"]);
        assert_eq!(names(OrderBy::FailureTs, B), ["A", "b", "a", "c", "d"]);
        let lsso = OrderBy::LastSuccessfulStreamOrdering;
        assert_eq!(names(lsso, F), ["A", "a", "d", "b", "c"]);
        assert_eq!(names(lsso, B), ["b", "c", "d", "a", "A"]);
        for order in OrderBy::ALL {
            for dir in [F, B] {
                for (from, limit) in [(0, 5), (1, 2), (3, 10), (4, 1)] {
                    let q = DestinationsQuery {
                        from,
                        limit,
                        order_by: order,
                        dir,
                        ..Default::default()
                    };
                    assert!(
                        index.page(&q) == naive(&rows, &q, NullsOrder::Largest),
                        "{q:?}"
                    );
                }
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
    fn filter_paths_agree_on_a_table_scanned_in_parts() {
        // Large enough to be scanned on several threads, and needles from
        // every name to a few (sorted, or met walking the order).
        let mut seed = 7;
        let rows = random_rows(PARALLEL_SCAN_ROWS + 2_000, &mut seed);
        let index = built(&rows, NullsOrder::Smallest);
        for needle in ["org", "b1", "%", "zz", "9.o", "é", "n\u{0}ul", "12345"] {
            let prepared = Needle::new(needle.as_bytes());
            let one = index.scan(&prepared, 1, Vec::new());
            let want = rows
                .iter()
                .filter(|r| r.destination.to_ascii_lowercase().contains(needle))
                .count();
            assert_eq!(one.count, want, "{needle}");
            for parts in [2, 3, 7] {
                assert!(
                    index.scan(&prepared, parts, vec![u64::MAX; 9]) == one,
                    "{needle} on {parts}"
                );
            }
            for (from, order_by, dir) in [
                (0, OrderBy::Destination, Direction::Forwards),
                (0, OrderBy::FailureTs, Direction::Backwards),
                (5_000, OrderBy::RetryInterval, Direction::Forwards),
                (60_000, OrderBy::Destination, Direction::Backwards),
                (
                    90_000,
                    OrderBy::LastSuccessfulStreamOrdering,
                    Direction::Backwards,
                ),
            ] {
                let q = DestinationsQuery {
                    from: from.min(want as u64 / 2),
                    limit: 100,
                    destination: Some(needle.to_uppercase()),
                    order_by,
                    dir,
                };
                let q = DestinationsQuery {
                    destination: q.destination.clone().filter(|_| needle != "é"),
                    ..q
                };
                assert!(
                    index.page(&q) == naive(&rows, &q, NullsOrder::Smallest),
                    "{q:?}"
                );
            }
        }
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
            "matrix\u{0}org",
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
                assert!(
                    index.page(&q) == naive(&rows, &q, NullsOrder::Smallest),
                    "{q:?}"
                );
            }
        }
        for r in &rows {
            assert_eq!(index.get(&r.destination).as_ref(), Some(r));
        }
    }

    #[test]
    fn a_name_pushed_twice_keeps_its_first_row() {
        let mut builder = DestinationIndex::builder(NullsOrder::Smallest);
        builder.push(row("b.org", Some(1), None, None, None), 3);
        builder.push(row("a.org", None, None, None, None), 0);
        builder.push(row("b.org", Some(2), None, None, None), 9);
        assert_eq!(builder.len(), 3);
        let index = builder.finish();
        assert_eq!(index.len(), 2);
        assert_eq!(index.get("b.org").unwrap().retry_last_ts, Some(1));
        assert_eq!(index.room_count("b.org"), Some(3));
        let page = index.page(&DestinationsQuery::default());
        assert_eq!(page.total, 2);
        assert_eq!(page.destinations.len(), 2);
        let filtered = index.page(&DestinationsQuery {
            destination: Some("b.".into()),
            ..Default::default()
        });
        assert_eq!(filtered.total, 1);
    }

    #[test]
    fn room_counts_follow_the_row() {
        let mut index = built(
            &[row("a.org", None, None, None, None)],
            NullsOrder::Smallest,
        );
        assert_eq!(index.room_count("a.org"), Some(0));
        assert!(index.set_room_count("a.org", 12));
        assert!(!index.set_room_count("b.org", 1));
        assert_eq!(index.room_count("b.org"), None);
        index.put(row("a.org", Some(1), Some(2), None, None));
        assert_eq!(index.room_count("a.org"), Some(12));
        assert!(index.remove("a.org"));
        index.put(row("a.org", None, None, None, None));
        assert_eq!(index.room_count("a.org"), Some(0));
    }

    /// The last filter's match set is reused page after page, follows
    /// changed timings, and is dropped when a name comes or goes.
    #[test]
    fn the_last_filter_follows_every_write() {
        let mut seed = 11;
        let mut rows = random_rows(2_000, &mut seed);
        let mut index = built(&rows, NullsOrder::Smallest);
        let q = |needle: &str, from| DestinationsQuery {
            from,
            limit: 10,
            destination: Some(needle.into()),
            order_by: OrderBy::RetryLastTs,
            dir: Direction::Backwards,
        };
        let check = |index: &DestinationIndex, rows: &[DestinationRow], needle: &str| {
            for from in [0, 10, 30] {
                let want = naive(rows, &q(needle, from), NullsOrder::Smallest);
                assert!(index.page(&q(needle, from)) == want, "{needle} {from}");
            }
        };
        check(&index, &rows, "ORG");
        // A timing change keeps the set but moves the row in the order.
        rows[3].retry_last_ts = Some(1 << 40);
        index.put(rows[3].clone());
        check(&index, &rows, "org");
        // A new matching name, then a forgotten one, change the total.
        let new = row("zz-new.org", Some(5), None, None, None);
        rows.push(new.clone());
        index.put(new);
        check(&index, &rows, "org");
        assert_eq!(index.page(&q("zz-new", 0)).total, 1);
        check(&index, &rows, "org");
        let gone = rows.swap_remove(0);
        assert!(index.remove(&gone.destination));
        check(&index, &rows, "org");
        let back = row(&gone.destination, None, None, None, None);
        rows.push(back.clone());
        index.put(back);
        check(&index, &rows, "ORG");
        check(&index, &rows, "1");
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
