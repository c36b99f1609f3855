//! Cursor pagination: a page of rows plus an opaque cursor to the next one.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

pub const MAX_PAGE: u32 = 200;

/// Where the previous page ended: the sort key and id of its last row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub key: String,
    pub id: Uuid,
}

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}\u{1f}{}", self.id, self.key))
    }

    pub fn decode(text: &str) -> Option<Cursor> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        let s = String::from_utf8(bytes).ok()?;
        let (id, key) = s.split_once('\u{1f}')?;
        Some(Cursor {
            key: key.to_owned(),
            id: Uuid::parse_str(id).ok()?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: u32,
    pub after: Option<Cursor>,
}

impl PageRequest {
    pub fn first(limit: u32) -> Self {
        Self {
            limit: limit.clamp(1, MAX_PAGE),
            after: None,
        }
    }

    pub fn after(limit: u32, cursor: Cursor) -> Self {
        Self {
            limit: limit.clamp(1, MAX_PAGE),
            after: Some(cursor),
        }
    }

    /// Rows to fetch: one more than the page, to know whether another page follows.
    pub fn fetch(&self) -> i64 {
        i64::from(self.limit) + 1
    }
}

impl Default for PageRequest {
    fn default() -> Self {
        Self::first(50)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Cursor>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows fetched in order, each with its sort key.
    pub fn from_rows(mut rows: Vec<(String, Uuid, T)>, limit: u32) -> Self {
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next = if more {
            rows.last().map(|(key, id, _)| Cursor {
                key: key.clone(),
                id: *id,
            })
        } else {
            None
        };
        Page {
            items: rows.into_iter().map(|(_, _, t)| t).collect(),
            next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = Cursor {
            key: "garcía".into(),
            id: Uuid::now_v7(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("not a cursor!"), None);
    }
}
