//! A bounded cache of `ETag`s and bodies for conditional GETs.

use std::num::NonZeroUsize;

/// A least-recently-used cache of (ETag, body) by URL, bounded in entries and in bytes, so a
/// server polling many repositories for months holds a fixed amount of memory.
pub struct EtagCache {
    entries: lru::LruCache<String, (String, String)>,
    bytes: usize,
    max_bytes: usize,
}

impl EtagCache {
    pub fn new(max_entries: NonZeroUsize, max_bytes: usize) -> Self {
        Self {
            entries: lru::LruCache::new(max_entries),
            bytes: 0,
            max_bytes,
        }
    }

    fn size(url: &str, etag: &str, body: &str) -> usize {
        url.len() + etag.len() + body.len()
    }

    pub(super) fn etag(&mut self, url: &str) -> Option<String> {
        self.entries.get(url).map(|(e, _)| e.clone())
    }

    pub(super) fn body(&mut self, url: &str) -> Option<String> {
        self.entries.get(url).map(|(_, b)| b.clone())
    }

    pub(super) fn insert(&mut self, url: &str, etag: &str, body: &str) {
        let size = Self::size(url, etag, body);
        if let Some((e, b)) = self.entries.pop(url) {
            self.bytes -= Self::size(url, &e, &b);
        }
        if size > self.max_bytes {
            return;
        }
        if let Some((old_url, (e, b))) = self
            .entries
            .push(url.to_owned(), (etag.to_owned(), body.to_owned()))
        {
            self.bytes -= Self::size(&old_url, &e, &b);
        }
        self.bytes += size;
        while self.bytes > self.max_bytes {
            match self.entries.pop_lru() {
                Some((u, (e, b))) => self.bytes -= Self::size(&u, &e, &b),
                None => break,
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held (URLs, ETags, bodies).
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}
