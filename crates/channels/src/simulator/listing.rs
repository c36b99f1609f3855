//! ListMessage: filters by recipient, sender and date sent (`DateSent`, `DateSent<`,
//! `DateSent>`, each inclusive, to the day or to the second), newest first, paged the way
//! Twilio pages (`PageSize`, `Page`, and a `PageToken` in `next_page_uri`).

use super::error::TwilioError;
use super::ledger::Ledger;
use super::lifecycle::Record;
use super::resource::{MessagePage, MessageResource};
use domain::E164;
use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;

const DEFAULT_PAGE_SIZE: usize = 50;
const MAX_PAGE_SIZE: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    On,
    OnOrBefore,
    OnOrAfter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SentAt {
    Day(Date),
    /// Seconds since the epoch: Twilio's dates carry no finer precision.
    Second(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct SentFilter {
    key: &'static str,
    raw: String,
    bound: Bound,
    at: SentAt,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ListQuery {
    to: Option<String>,
    from: Option<String>,
    sent: Vec<SentFilter>,
    page_size: usize,
    page: usize,
    page_token: Option<String>,
}

impl ListQuery {
    pub fn parse(params: &[(String, String)]) -> Result<Self, TwilioError> {
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, v)| k == name && !v.is_empty())
                .map(|(_, v)| v.clone())
        };
        let mut sent = Vec::new();
        for (key, bound) in [
            ("DateSent", Bound::On),
            ("DateSent<", Bound::OnOrBefore),
            ("DateSent>", Bound::OnOrAfter),
        ] {
            if let Some(raw) = get(key) {
                let at = parse_sent_at(&raw).ok_or(TwilioError::invalid_parameter(
                    "Invalid value for DateSent.",
                ))?;
                sent.push(SentFilter {
                    key,
                    raw,
                    bound,
                    at,
                });
            }
        }
        let page_size = match get("PageSize") {
            None => DEFAULT_PAGE_SIZE,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
                .ok_or(TwilioError::invalid_parameter(
                    "PageSize must be between 1 and 1000.",
                ))?,
        };
        let page = match get("Page") {
            None => 0,
            Some(v) => v
                .parse::<usize>()
                .map_err(|_| TwilioError::invalid_parameter("Page must be a whole number."))?,
        };
        Ok(Self {
            // Twilio matches the number however the client wrote it.
            to: get("To").map(|to| E164::parse(&to, "US").map_or(to, String::from)),
            from: get("From"),
            sent,
            page_size,
            page,
            page_token: get("PageToken"),
        })
    }

    fn matches(&self, record: &Record, pool_number: &str) -> bool {
        let from_ok = self.from.as_deref().is_none_or(|from| match &record.from {
            Some(own) => own == from,
            None => from == pool_number,
        });
        from_ok && self.sent.iter().all(|f| f.matches(record.accepted_at))
    }

    fn uri(&self, path: &str, page: usize, token: Option<&str>) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        if let Some(to) = &self.to {
            pairs.push(("To", to.clone()));
        }
        if let Some(from) = &self.from {
            pairs.push(("From", from.clone()));
        }
        for f in &self.sent {
            pairs.push((f.key, f.raw.clone()));
        }
        pairs.push(("PageSize", self.page_size.to_string()));
        pairs.push(("Page", page.to_string()));
        if let Some(token) = token {
            pairs.push(("PageToken", token.to_owned()));
        }
        let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
        format!("{path}?{query}")
    }
}

impl SentFilter {
    fn matches(&self, sent: Timestamp) -> bool {
        let ordering = match self.at {
            SentAt::Day(day) => sent.to_zoned(TimeZone::UTC).date().cmp(&day),
            SentAt::Second(second) => sent.as_second().cmp(&second),
        };
        match self.bound {
            Bound::On => ordering.is_eq(),
            Bound::OnOrBefore => ordering.is_le(),
            Bound::OnOrAfter => ordering.is_ge(),
        }
    }
}

/// `YYYY-MM-DD`, or a moment: RFC 3339, `YYYY-MM-DD hh:mm:ss[.fff]` (read as GMT), or RFC 2822.
fn parse_sent_at(raw: &str) -> Option<SentAt> {
    let raw = raw.trim();
    if raw.len() == 10
        && let Ok(day) = raw.parse::<Date>()
    {
        return Some(SentAt::Day(day));
    }
    let moment = raw
        .parse::<Timestamp>()
        .ok()
        .or_else(|| {
            let civil = raw.parse::<DateTime>().ok()?;
            civil.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp())
        })
        .or_else(|| {
            jiff::fmt::rfc2822::DateTimeParser::new()
                .parse_timestamp(raw)
                .ok()
        })?;
    Some(SentAt::Second(moment.as_second()))
}

/// One page of the matching messages as they stand at `now`.
pub(super) fn page(
    ledger: &Ledger,
    query: &ListQuery,
    path: &str,
    account_sid: &str,
    pool_number: &str,
    now: Timestamp,
) -> MessagePage {
    let matching: Vec<&Record> = ledger
        .newest_first(query.to.as_deref())
        .into_iter()
        .filter_map(|seq| ledger.get(seq))
        .filter(|r| query.matches(r, pool_number))
        .collect();
    // A token names the last message of the previous page, so messages accepted meanwhile
    // do not shift what the next page holds.
    let after_token = query
        .page_token
        .as_deref()
        .and_then(|t| t.strip_prefix("PA"))
        .and_then(|sid| matching.iter().position(|r| r.sid == sid))
        .map(|i| i + 1);
    let offset = after_token
        .unwrap_or(query.page.saturating_mul(query.page_size))
        .min(matching.len());
    let end_index = (offset + query.page_size).min(matching.len());
    let slice = &matching[offset..end_index];
    let messages: Vec<MessageResource> = slice
        .iter()
        .map(|r| MessageResource::new(account_sid, pool_number, r, r.step_at(now)))
        .collect();
    let next_page_uri = match slice.last() {
        Some(last) if end_index < matching.len() => {
            Some(query.uri(path, query.page + 1, Some(&format!("PA{}", last.sid))))
        }
        _ => None,
    };
    let start = query.page.saturating_mul(query.page_size);
    MessagePage {
        end: start + messages.len().saturating_sub(1),
        first_page_uri: query.uri(path, 0, None),
        next_page_uri,
        page: query.page,
        page_size: query.page_size,
        previous_page_uri: (query.page > 0).then(|| query.uri(path, query.page - 1, None)),
        start,
        uri: query.uri(path, query.page, query.page_token.as_deref()),
        messages,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_sent_takes_days_and_moments() {
        let day = "2024-03-05".parse::<Date>().expect("date");
        assert_eq!(parse_sent_at("2024-03-05"), Some(SentAt::Day(day)));
        let second = "2019-06-11T22:05:25Z"
            .parse::<Timestamp>()
            .expect("ts")
            .as_second();
        assert_eq!(
            parse_sent_at("2019-06-11T22:05:25Z"),
            Some(SentAt::Second(second))
        );
        assert_eq!(
            parse_sent_at("2019-06-11 22:05:25.000"),
            Some(SentAt::Second(second))
        );
        assert_eq!(
            parse_sent_at("Tue, 11 Jun 2019 22:05:25 -0000"),
            Some(SentAt::Second(second))
        );
        assert_eq!(parse_sent_at("06/11/2019"), None);
    }
}
