//! Reading long histories out of pack files, with a delta base cache.
//!
//! gitoxide's pack decoder caches the object it was asked for, never the delta bases it
//! resolved on the way. Git orders delta chains by object size, not by time, so reading
//! the trees of a history newest first resolved most chains from their far end again:
//! for 10,000 commits, 793,015 inflates for 50,023 objects (callgrind), and inflating
//! was two thirds of an `add`. This reader walks a chain's headers (no inflating) down to
//! the first object it already holds, then decodes upwards, keeping every object it
//! produced, as git's delta base cache does; each pack entry is then inflated about once.
//! Decoding itself is gitoxide's (`gix_pack::data::File::decode_entry`); objects in no
//! pack (loose ones) and anything unusual go to the repository's object database.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::path::Path;

use gix::hash::oid;
use gix::objs::{Data, Kind};
use gix::odb::pack;

/// What all readers of one sync may keep together (git's `core.deltaBaseCacheLimit` is
/// 96 MiB per process); each of N threads gets 1/N.
pub const CACHE_BYTES: usize = 128 * 1024 * 1024;
/// Longer chains than this are left to gitoxide's own decoder (git's default depth is 50).
const MAX_CHAIN: usize = 4096;

/// An object database view for one thread that reads a long history.
pub struct PackedObjects<'r> {
    repo: &'r gix::Repository,
    packs: Vec<(pack::index::File, pack::data::File)>,
    state: RefCell<State>,
}

struct State {
    inflate: gix::zlib::Inflate,
    cache: BaseCache,
    scratch: Vec<u8>,
    chain: Vec<pack::data::Entry>,
}

impl<'r> PackedObjects<'r> {
    /// Opens every pack of `repo`, with a delta base cache of at most `cache_bytes`. A pack
    /// that cannot be opened is skipped: its objects are then read through the object
    /// database, which reports any real damage.
    pub fn new(repo: &'r gix::Repository, cache_bytes: usize) -> Self {
        let pack_dir = repo.objects.store_ref().path().join("pack");
        let kind = repo.object_hash();
        let mut packs = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&pack_dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "idx") {
                    if let Some(pair) = open_pack(&path, kind) {
                        packs.push(pair);
                    }
                }
            }
        }
        let state = State {
            inflate: gix::zlib::Inflate::default(),
            cache: BaseCache::new(cache_bytes),
            scratch: Vec::new(),
            chain: Vec::new(),
        };
        Self { repo, packs, state: RefCell::new(state) }
    }

    /// Decodes the entry at `offset` of pack `index` into `out`, resolving its delta chain
    /// from the nearest object already held.
    fn decode<'a>(&self, index: usize, offset: u64, out: &'a mut Vec<u8>) -> gix::Result<Data<'a>> {
        let (idx, data) = &self.packs[index];
        let hash = data.object_hash();
        let mut guard = self.state.borrow_mut();
        let State { inflate, cache, scratch, chain } = &mut *guard;
        let mut entry = data.entry(offset)?;
        if let Some(kind) = cache.get(index, entry.data_offset, out) {
            return Ok(Data { kind, object_hash: hash, data: out.as_slice() });
        }
        // From the wanted entry down to the first one whose base is held (or a full object).
        chain.clear();
        loop {
            let base = match entry.header {
                pack::data::entry::Header::OfsDelta { base_distance } => entry.checked_base_pack_offset(base_distance),
                _ => None,
            };
            chain.push(entry);
            let Some(base) = base else { break };
            if chain.len() >= MAX_CHAIN {
                break;
            }
            entry = data.entry(base)?;
            if cache.contains(index, entry.data_offset) {
                break;
            }
        }
        let resolve = |id: &oid, buf: &mut Vec<u8>| -> gix::Result<Option<pack::data::decode::entry::ResolvedBase>> {
            if let Some(i) = idx.lookup(id) {
                return Ok(Some(pack::data::decode::entry::ResolvedBase::InPack(
                    data.entry(idx.pack_offset_at_index(i))?,
                )));
            }
            use gix::objs::Find;
            let kind = self.repo.objects.try_find(id, buf)?.map(|object| object.kind);
            Ok(kind.map(|kind| pack::data::decode::entry::ResolvedBase::OutOfPack { kind, end: buf.len() }))
        };
        let mut view = CacheView { cache, pack: index };
        let last = chain.len() - 1;
        let mut kind = Kind::Blob;
        for (n, entry) in chain.drain(..).rev().enumerate() {
            let target = if n == last { &mut *out } else { &mut *scratch };
            let data_offset = entry.data_offset;
            let outcome = data.decode_entry(entry.clone(), target, inflate, &resolve, &mut view)?;
            kind = outcome.kind;
            if !entry.header.is_delta() {
                // decode_entry keeps only resolved deltas; full objects are bases too.
                view.cache.put(index, data_offset, target, kind);
            }
        }
        Ok(Data { kind, object_hash: hash, data: out.as_slice() })
    }
}

impl gix::objs::Find for PackedObjects<'_> {
    fn try_find<'a>(&self, id: &oid, buffer: &'a mut Vec<u8>) -> gix::Result<Option<Data<'a>>> {
        for (n, (idx, _)) in self.packs.iter().enumerate() {
            if let Some(i) = idx.lookup(id) {
                let offset = idx.pack_offset_at_index(i);
                return self.decode(n, offset, buffer).map(Some);
            }
        }
        self.repo.objects.try_find(id, buffer)
    }
}

fn open_pack(idx_path: &Path, kind: gix::hash::Kind) -> Option<(pack::index::File, pack::data::File)> {
    let index = pack::index::File::at(idx_path, kind).ok()?;
    let data = pack::data::File::at(idx_path.with_extension("pack"), kind).ok()?;
    (index.num_objects() == data.num_objects()).then_some((index, data))
}

/// Decoded objects by (pack, data offset), kept in 1 MiB slabs (one allocation per slab,
/// not per object: per-object allocations were a tenth of a long read) and evicted a whole
/// slab at a time, oldest first, once over the byte cap.
struct BaseCache {
    /// (kind, slab number, start, length)
    map: HashMap<(usize, u64), (Kind, u64, usize, usize)>,
    /// The live slabs, oldest first, each with the keys stored in it.
    slabs: VecDeque<Slab>,
    /// The number of `slabs[0]`.
    first_slab: u64,
    bytes: usize,
    cap: usize,
}

struct Slab {
    data: Vec<u8>,
    keys: Vec<(usize, u64)>,
}

const SLAB_BYTES: usize = 1024 * 1024;

impl BaseCache {
    fn new(cap: usize) -> Self {
        Self { map: HashMap::new(), slabs: VecDeque::new(), first_slab: 0, bytes: 0, cap }
    }

    fn contains(&self, pack: usize, offset: u64) -> bool {
        self.map.contains_key(&(pack, offset))
    }

    fn get(&self, pack: usize, offset: u64, out: &mut Vec<u8>) -> Option<Kind> {
        let &(kind, slab, start, len) = self.map.get(&(pack, offset))?;
        let slab = &self.slabs[(slab - self.first_slab) as usize];
        out.clear();
        out.extend_from_slice(&slab.data[start..start + len]);
        Some(kind)
    }

    fn put(&mut self, pack: usize, offset: u64, data: &[u8], kind: Kind) {
        if data.len() > self.cap / 4 || self.map.contains_key(&(pack, offset)) {
            return;
        }
        let fits = self.slabs.back().is_some_and(|s| s.data.capacity() - s.data.len() >= data.len());
        if !fits {
            let capacity = SLAB_BYTES.max(data.len());
            while self.bytes + capacity > self.cap {
                let Some(oldest) = self.slabs.pop_front() else { break };
                self.first_slab += 1;
                self.bytes -= oldest.data.capacity();
                for key in oldest.keys {
                    self.map.remove(&key);
                }
            }
            let data = Vec::with_capacity(capacity);
            self.bytes += data.capacity();
            self.slabs.push_back(Slab { data, keys: Vec::new() });
        }
        let number = self.first_slab + self.slabs.len() as u64 - 1;
        let slab = self.slabs.back_mut().expect("a slab with room");
        let start = slab.data.len();
        slab.data.extend_from_slice(data);
        slab.keys.push((pack, offset));
        self.map.insert((pack, offset), (kind, number, start, data.len()));
    }
}

/// gitoxide's decoder sees one pack's slice of the cache.
struct CacheView<'c> {
    cache: &'c mut BaseCache,
    pack: usize,
}

impl pack::cache::DecodeEntry for CacheView<'_> {
    fn put(&mut self, _pack_id: u32, offset: u64, data: &[u8], kind: Kind, _compressed_size: usize) {
        self.cache.put(self.pack, offset, data, kind);
    }

    fn get(&mut self, _pack_id: u32, offset: u64, out: &mut Vec<u8>) -> Option<(Kind, usize)> {
        // The compressed size is only reported back in decode statistics, which go unused here.
        self.cache.get(self.pack, offset, out).map(|kind| (kind, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_evicts_oldest_first_and_keeps_under_its_cap() {
        let mut cache = BaseCache::new(3 * SLAB_BYTES);
        let object = |n: u8| vec![n; 300 * 1024];
        // Three objects to a slab: slab 0 holds 1-3, slab 1 holds 4-6, slab 2 holds 7-9.
        for n in 1..=9u8 {
            cache.put(0, u64::from(n), &object(n), Kind::Tree);
        }
        assert!((1..=9).all(|n| cache.contains(0, n)));
        assert_eq!(cache.bytes, 3 * SLAB_BYTES);
        // A tenth needs a fourth slab: the oldest goes, with everything in it.
        cache.put(1, 10, &object(10), Kind::Blob);
        assert!((1..=3).all(|n| !cache.contains(0, n)), "the oldest slab goes first");
        assert!((4..=9).all(|n| cache.contains(0, n)) && cache.contains(1, 10));
        assert!(cache.bytes <= 3 * SLAB_BYTES);
        let mut out = Vec::new();
        assert_eq!(cache.get(1, 10, &mut out), Some(Kind::Blob));
        assert_eq!(out, object(10));
        assert_eq!(cache.get(0, 5, &mut out), Some(Kind::Tree));
        assert_eq!(out, object(5));
        assert_eq!(cache.get(0, 2, &mut out), None);
        cache.put(0, 99, &vec![0; SLAB_BYTES], Kind::Tree);
        assert!(!cache.contains(0, 99), "objects over a quarter of the cap are not kept");
        // Small objects share a slab; a big one gets a slab of its own size.
        let mut cache = BaseCache::new(64 * SLAB_BYTES);
        cache.put(0, 1, b"small", Kind::Commit);
        cache.put(0, 2, &vec![7; 3 * SLAB_BYTES], Kind::Blob);
        cache.put(0, 3, b"after", Kind::Commit);
        assert_eq!(cache.get(0, 1, &mut out), Some(Kind::Commit));
        assert_eq!(out, b"small");
        assert_eq!(cache.get(0, 2, &mut out), Some(Kind::Blob));
        assert_eq!(out.len(), 3 * SLAB_BYTES);
        assert_eq!(cache.get(0, 3, &mut out), Some(Kind::Commit));
        assert_eq!(out, b"after");
    }

    fn git(dir: &Path, args: &[&str], stdin: Option<&str>) -> String {
        use std::io::Write;
        let mut child = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("git runs");
        let input = stdin.unwrap_or_default().to_owned();
        let mut pipe = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || pipe.write_all(input.as_bytes()));
        let output = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(output.status.success(), "git {args:?} failed");
        String::from_utf8(output.stdout).unwrap()
    }

    /// A history whose trees and blobs form long delta chains, in two packs, plus a loose
    /// object and a pack the reader must skip: every object reads back exactly as
    /// gitoxide's own object database returns it, whatever order it is asked in.
    #[test]
    fn reads_every_object_exactly_as_the_object_database_does() {
        let dir = tempfile::tempdir().unwrap();
        let repo_dir = dir.path().join("r.git");
        std::fs::create_dir(&repo_dir).unwrap();
        git(&repo_dir, &["init", "-q", "--bare"], None);
        let history = |from: usize, to: usize, parent: bool| {
            let mut script = String::new();
            for i in from..to {
                let message = format!("commit {i}");
                script.push_str(&format!(
                    "commit refs/heads/main\ncommitter A <a@example.com> {} +0000\ndata {}\n{message}\n",
                    1_600_000_000 + i,
                    message.len()
                ));
                if parent && i == from {
                    script.push_str("from refs/heads/main^0\n");
                }
                let content: String = (0..40).map(|line| format!("line {line} of file {} at {i}\n", i % 7)).collect();
                script.push_str(&format!(
                    "M 644 inline dir{}/file{}.txt\ndata {}\n{content}\n",
                    i % 3,
                    i % 7,
                    content.len()
                ));
            }
            script
        };
        git(&repo_dir, &["fast-import", "--quiet"], Some(&history(0, 300, false)));
        git(&repo_dir, &["repack", "-a", "-d", "-q", "--depth=250", "--window=50"], None);
        // A second pack (fast-import writes one), and a loose object.
        git(&repo_dir, &["fast-import", "--quiet"], Some(&history(300, 340, true)));
        let loose = git(&repo_dir, &["hash-object", "-w", "--stdin"], Some("a loose blob\n"));
        // A pack whose index does not match its data is skipped, not trusted.
        std::fs::write(repo_dir.join("objects/pack/pack-broken.idx"), b"not an index").unwrap();
        std::fs::write(repo_dir.join("objects/pack/pack-broken.pack"), b"not a pack").unwrap();

        let repo = gix::open(&repo_dir).unwrap();
        let objects = PackedObjects::new(&repo, CACHE_BYTES);
        assert_eq!(objects.packs.len(), 2, "both real packs are opened, the broken one skipped");
        let mut ids: Vec<gix::ObjectId> =
            git(&repo_dir, &["cat-file", "--batch-all-objects", "--batch-check=%(objectname)"], None)
                .lines()
                .map(|l| gix::ObjectId::from_hex(l.as_bytes()).unwrap())
                .collect();
        assert!(ids.len() > 900, "{} objects", ids.len());
        assert!(ids.contains(&gix::ObjectId::from_hex(loose.trim().as_bytes()).unwrap()));
        // The test is only worth something if the packs really hold long delta chains.
        let longest_chain = std::fs::read_dir(repo_dir.join("objects/pack"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "idx") && !p.ends_with("pack-broken.idx"))
            .flat_map(|idx| {
                git(&repo_dir, &["verify-pack", "-v", idx.to_str().unwrap()], None)
                    .lines()
                    .filter_map(|l| l.strip_prefix("chain length = ")?.split(':').next()?.trim().parse::<usize>().ok())
                    .collect::<Vec<_>>()
            })
            .max()
            .unwrap_or(0);
        assert!(longest_chain >= 20, "longest delta chain {longest_chain}");
        use gix::objs::Find;
        // Forwards, backwards and again (from the cache): the same bytes and kind each time.
        for round in 0..3 {
            if round == 1 {
                ids.reverse();
            }
            for id in &ids {
                let (mut ours, mut theirs) = (Vec::new(), Vec::new());
                let a = objects.try_find(id, &mut ours).unwrap().expect("found by the reader");
                let b = repo.objects.try_find(id, &mut theirs).unwrap().expect("found by the odb");
                assert_eq!((a.kind, a.data), (b.kind, b.data), "object {id} in round {round}");
            }
        }
        let missing = gix::ObjectId::from_hex(b"0123456789012345678901234567890123456789").unwrap();
        assert!(objects.try_find(&missing, &mut Vec::new()).unwrap().is_none());
    }
}
