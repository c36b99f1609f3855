//! What the simulator remembers: accepted messages (oldest forgotten past a capacity), indexed
//! by SID and by recipient so the reconciler's "what did you send to this number?" stays cheap,
//! and who has opted out of what.

use super::lifecycle::Record;
use std::collections::{HashMap, HashSet, VecDeque};

pub(super) struct Ledger {
    capacity: usize,
    /// Sequence number of `records[0]`; sequence numbers never repeat.
    first_seq: u64,
    records: VecDeque<Record>,
    by_sid: HashMap<String, u64>,
    by_to: HashMap<String, VecDeque<u64>>,
    accepted_total: u64,
    opted_out_everywhere: HashSet<String>,
    /// (recipient, sender) pairs: a STOP blocks only the number it was texted to.
    opted_out_from: HashSet<(String, String)>,
}

impl Ledger {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            first_seq: 0,
            records: VecDeque::new(),
            by_sid: HashMap::new(),
            by_to: HashMap::new(),
            accepted_total: 0,
            opted_out_everywhere: HashSet::new(),
            opted_out_from: HashSet::new(),
        }
    }

    pub fn push(&mut self, record: Record) {
        let seq = self.first_seq + self.records.len() as u64;
        self.by_sid.insert(record.sid.clone(), seq);
        self.by_to
            .entry(record.to.clone())
            .or_default()
            .push_back(seq);
        self.records.push_back(record);
        self.accepted_total += 1;
        while self.records.len() > self.capacity {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        let Some(old) = self.records.pop_front() else {
            return;
        };
        let seq = self.first_seq;
        self.first_seq += 1;
        self.by_sid.remove(&old.sid);
        if let Some(seqs) = self.by_to.get_mut(&old.to) {
            // Sequence numbers grow, so a recipient's oldest entry is at the front.
            if seqs.front() == Some(&seq) {
                seqs.pop_front();
            }
            if seqs.is_empty() {
                self.by_to.remove(&old.to);
            }
        }
    }

    pub fn get(&self, seq: u64) -> Option<&Record> {
        let index = usize::try_from(seq.checked_sub(self.first_seq)?).ok()?;
        self.records.get(index)
    }

    pub fn seq_of(&self, sid: &str) -> Option<u64> {
        self.by_sid.get(sid).copied()
    }

    pub fn by_sid(&self, sid: &str) -> Option<&Record> {
        self.get(self.seq_of(sid)?)
    }

    /// Sequence numbers, newest first (Twilio lists newest first), of everything or of the
    /// messages to one recipient.
    pub fn newest_first(&self, to: Option<&str>) -> Vec<u64> {
        match to {
            Some(to) => self
                .by_to
                .get(to)
                .map(|seqs| seqs.iter().rev().copied().collect())
                .unwrap_or_default(),
            None => (self.first_seq..self.first_seq + self.records.len() as u64)
                .rev()
                .collect(),
        }
    }

    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.records.iter()
    }

    pub fn count_to(&self, to: &str) -> usize {
        self.by_to.get(to).map_or(0, VecDeque::len)
    }

    pub fn accepted_total(&self) -> u64 {
        self.accepted_total
    }

    /// A Messaging Service send has no fixed sender, so any STOP from the recipient blocks it.
    pub fn is_opted_out(&self, to: &str, from: Option<&str>) -> bool {
        if self.opted_out_everywhere.contains(to) {
            return true;
        }
        match from {
            Some(from) => self
                .opted_out_from
                .contains(&(to.to_owned(), from.to_owned())),
            None => self.opted_out_from.iter().any(|(r, _)| r == to),
        }
    }

    pub fn opt_out(&mut self, recipient: &str, sender: Option<&str>) {
        match sender {
            Some(sender) => {
                self.opted_out_from
                    .insert((recipient.to_owned(), sender.to_owned()));
            }
            None => {
                self.opted_out_everywhere.insert(recipient.to_owned());
            }
        }
    }

    pub fn opt_in(&mut self, recipient: &str, sender: Option<&str>) {
        match sender {
            Some(sender) => {
                self.opted_out_from
                    .remove(&(recipient.to_owned(), sender.to_owned()));
            }
            None => {
                self.opted_out_everywhere.remove(recipient);
                self.opted_out_from.retain(|(r, _)| r != recipient);
            }
        }
    }
}
