//! Business hours in a centre's local time turned into UTC spans, and customers' preferred
//! times. Pure: no I/O.
//!
//! A day's opening span `[open, close)` is resolved to UTC instants through the centre's
//! IANA zone for that very date, so a DST change moves the UTC span, never the local one. A
//! local time that does not exist (inside a spring-forward gap) resolves to the first local
//! time after it that does; an ambiguous one (fall-back) to its earlier instant. Slots then
//! step through the span in elapsed time, so a span containing a gap is an hour shorter and
//! one containing a fall-back hour an hour longer, as the clock on the workshop wall says.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, TimeZone, Timelike};
use chrono_tz::Tz;

use pmi_sinks::sql::registry::{OpeningHours, PreferredTime};

/// Minutes in a day; `24:00` is this.
pub(crate) const DAY_MINUTES: u32 = 24 * 60;

/// `HH:MM` (00:00 ..= 24:00) as minutes since midnight.
pub(crate) fn parse_hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    let two_digits = |p: &str| p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit());
    if !two_digits(h) || !two_digits(m) {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    let t = h * 60 + m;
    (m < 60 && t <= DAY_MINUTES).then_some(t)
}

/// A field at fault and what is wrong with it.
pub(crate) type FieldError = (String, String);

/// Opening spans per ISO weekday (index 0 = Monday), in minutes since local midnight,
/// sorted and merged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct WeekHours {
    days: [Vec<(u32, u32)>; 7],
}

impl WeekHours {
    /// Checks and merges `hours`; errors name `{field}[i].weekday|open|close`.
    pub(crate) fn parse(hours: &[OpeningHours], field: &str) -> Result<WeekHours, FieldError> {
        let mut week = WeekHours::default();
        for (i, h) in hours.iter().enumerate() {
            let at = |part: &str| format!("{field}[{i}].{part}");
            let (open, close) = span(h.weekday, &h.open, &h.close)
                .map_err(|(part, message)| (at(part), message))?;
            week.days[usize::from(h.weekday - 1)].push((open, close));
        }
        for day in &mut week.days {
            *day = merge(std::mem::take(day));
        }
        Ok(week)
    }

    /// Whether no day has an opening span.
    pub(crate) fn is_empty(&self) -> bool {
        self.days.iter().all(Vec::is_empty)
    }
}

/// Checks one `weekday, from, to`; errors name the part at fault.
fn span(weekday: u8, from: &str, to: &str) -> Result<(u32, u32), (&'static str, String)> {
    if !(1..=7).contains(&weekday) {
        return Err((
            "weekday",
            format!("{weekday}: must be 1 (Monday) to 7 (Sunday)"),
        ));
    }
    let open = parse_hhmm(from).ok_or(("open", format!("`{from}`: must be HH:MM")))?;
    let close = parse_hhmm(to).ok_or(("close", format!("`{to}`: must be HH:MM")))?;
    if close <= open {
        return Err(("close", format!("`{to}`: must be after `{from}`")));
    }
    Ok((open, close))
}

fn merge(mut spans: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    spans.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(spans.len());
    for (o, c) in spans {
        match out.last_mut() {
            Some(last) if o <= last.1 => last.1 = last.1.max(c),
            _ => out.push((o, c)),
        }
    }
    out
}

/// Milliseconds since the epoch as a UTC time, if representable.
pub(crate) fn utc(ms: i64) -> Option<DateTime<chrono::Utc>> {
    DateTime::from_timestamp_millis(ms)
}

/// A centre's opening calendar: its zone, weekly hours and closed days.
#[derive(Clone, Debug)]
pub(crate) struct Calendar {
    /// The centre's zone.
    pub(crate) tz: Tz,
    week: WeekHours,
    closed: BTreeSet<NaiveDate>,
}

impl Calendar {
    /// A calendar in `tz` open `week`, except on `closed` days.
    pub(crate) fn new(tz: Tz, week: WeekHours, closed: BTreeSet<NaiveDate>) -> Calendar {
        Calendar { tz, week, closed }
    }

    /// The local dates whose spans can touch `[from, to]` (one day of margin either side).
    pub(crate) fn local_dates(&self, from: i64, to: i64) -> Option<(NaiveDate, NaiveDate)> {
        let first = utc(from)?.with_timezone(&self.tz).date_naive().pred_opt()?;
        let last = utc(to)?.with_timezone(&self.tz).date_naive().succ_opt()?;
        Some((first, last))
    }

    /// Opening spans `[open, close)` in UTC ms that overlap `[from, to]`, in time order.
    pub(crate) fn spans(&self, from: i64, to: i64) -> Vec<(i64, i64)> {
        let Some((first, last)) = self.local_dates(from, to) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for day in first.iter_days().take_while(|d| *d <= last) {
            if self.closed.contains(&day) {
                continue;
            }
            let weekday = day.weekday().number_from_monday() as usize - 1;
            for &(open, close) in &self.week.days[weekday] {
                let (Some(o), Some(c)) = (self.instant(day, open), self.instant(day, close)) else {
                    continue;
                };
                if o < c && c > from && o < to {
                    out.push((o, c));
                }
            }
        }
        out.sort_unstable();
        out
    }

    /// Whether `[start, end)` lies inside one opening span.
    pub(crate) fn contains(&self, start: i64, end: i64) -> bool {
        start < end
            && self
                .spans(start, end)
                .iter()
                .any(|&(o, c)| o <= start && end <= c)
    }

    /// The UTC instant of local `day` + `minutes` (see the module docs for gaps and
    /// ambiguities).
    fn instant(&self, day: NaiveDate, minutes: u32) -> Option<i64> {
        let midnight = day.and_hms_opt(0, 0, 0)?;
        (0..=2 * i64::from(DAY_MINUTES)).find_map(|later| {
            let local = midnight + TimeDelta::minutes(i64::from(minutes) + later);
            self.tz
                .from_local_datetime(&local)
                .earliest()
                .map(|t| t.timestamp_millis())
        })
    }

    /// `(ISO weekday, minutes since local midnight)` of `ms` in the centre's zone.
    pub(crate) fn local_weekday_minutes(&self, ms: i64) -> Option<(u8, u32)> {
        let t = utc(ms)?.with_timezone(&self.tz);
        let weekday = t.weekday().number_from_monday() as u8;
        Some((weekday, t.hour() * 60 + t.minute()))
    }
}

/// A customer's preferred times, checked: `(ISO weekday, from, to)` in local minutes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Preferences(Vec<(u8, u32, u32)>);

impl Preferences {
    /// Checks `times`; errors name `{field}[i].weekday|from|to`.
    pub(crate) fn parse(times: &[PreferredTime], field: &str) -> Result<Preferences, FieldError> {
        times
            .iter()
            .enumerate()
            .map(|(i, t)| {
                span(t.weekday, &t.from, &t.to)
                    .map(|(from, to)| (t.weekday, from, to))
                    .map_err(|(part, message)| {
                        let part = match part {
                            "open" => "from",
                            "close" => "to",
                            other => other,
                        };
                        (format!("{field}[{i}].{part}"), message)
                    })
            })
            .collect::<Result<_, _>>()
            .map(Preferences)
    }

    /// Whether `[start, end)` falls within one preferred time (local, on the start's day).
    pub(crate) fn matches(&self, calendar: &Calendar, start: i64, end: i64) -> bool {
        let Some((weekday, from)) = calendar.local_weekday_minutes(start) else {
            return false;
        };
        let to = i64::from(from) + (end - start) / 60_000;
        self.0
            .iter()
            .any(|&(w, f, t)| w == weekday && f <= from && to <= i64::from(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hours(spans: &[(u8, &str, &str)]) -> Vec<OpeningHours> {
        spans
            .iter()
            .map(|&(weekday, open, close)| OpeningHours {
                weekday,
                open: open.into(),
                close: close.into(),
            })
            .collect()
    }

    fn ms(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn times_parse_strictly() {
        assert_eq!(parse_hhmm("08:30"), Some(510));
        assert_eq!(parse_hhmm("24:00"), Some(DAY_MINUTES));
        for bad in ["8:30", "24:01", "12:60", "+1:00", "12-00", ""] {
            assert_eq!(parse_hhmm(bad), None, "{bad}");
        }
    }

    #[test]
    fn week_hours_merge_and_name_the_field() {
        let w = WeekHours::parse(
            &hours(&[
                (1, "13:00", "18:00"),
                (1, "08:00", "12:00"),
                (1, "11:00", "13:00"),
            ]),
            "business_hours",
        )
        .unwrap();
        assert_eq!(w.days[0], vec![(480, 1080)]);
        assert!(WeekHours::parse(&[], "x").unwrap().is_empty());
        let e = WeekHours::parse(&hours(&[(1, "08:00", "18:00"), (8, "08:00", "18:00")]), "h");
        assert_eq!(e.unwrap_err().0, "h[1].weekday");
        let e = WeekHours::parse(&hours(&[(2, "18:00", "08:00")]), "h");
        assert_eq!(e.unwrap_err().0, "h[0].close");
    }

    #[test]
    fn spans_follow_the_local_clock_across_dst() {
        // Berlin leaves CET (UTC+1) for CEST (UTC+2) on Sunday 2026-03-29 at 02:00.
        let week = WeekHours::parse(
            &hours(&[
                (6, "08:00", "18:00"),
                (7, "00:00", "06:00"),
                (1, "08:00", "18:00"),
            ]),
            "h",
        )
        .unwrap();
        let cal = Calendar::new(chrono_tz::Europe::Berlin, week, BTreeSet::new());
        let spans = cal.spans(ms("2026-03-28T00:00:00Z"), ms("2026-03-30T23:00:00Z"));
        assert_eq!(
            spans,
            vec![
                (ms("2026-03-28T07:00:00Z"), ms("2026-03-28T17:00:00Z")),
                // 00:00 CET to 06:00 CEST: five hours, not six.
                (ms("2026-03-28T23:00:00Z"), ms("2026-03-29T04:00:00Z")),
                (ms("2026-03-30T06:00:00Z"), ms("2026-03-30T16:00:00Z")),
            ]
        );
        assert!(cal.contains(ms("2026-03-30T06:00:00Z"), ms("2026-03-30T16:00:00Z")));
        assert!(!cal.contains(ms("2026-03-30T05:30:00Z"), ms("2026-03-30T06:30:00Z")));
        assert!(!cal.contains(ms("2026-03-28T16:30:00Z"), ms("2026-03-28T17:30:00Z")));
    }

    #[test]
    fn closed_days_and_gaps() {
        let week = WeekHours::parse(&hours(&[(7, "02:30", "05:00")]), "h").unwrap();
        let closed: BTreeSet<NaiveDate> = [NaiveDate::from_ymd_opt(2026, 4, 5).unwrap()].into();
        let cal = Calendar::new(chrono_tz::Europe::Berlin, week, closed);
        let spans = cal.spans(ms("2026-03-28T00:00:00Z"), ms("2026-04-06T00:00:00Z"));
        // 02:30 does not exist on 2026-03-29: the span opens at 03:00 CEST (01:00 UTC); the
        // next Sunday is closed.
        assert_eq!(
            spans,
            vec![(ms("2026-03-29T01:00:00Z"), ms("2026-03-29T03:00:00Z"))]
        );
    }

    #[test]
    fn preferences_match_local_weekday_and_time() {
        let week = WeekHours::parse(&hours(&[(6, "08:00", "18:00")]), "h").unwrap();
        let cal = Calendar::new(chrono_tz::America::New_York, week, BTreeSet::new());
        let p = Preferences::parse(
            &[PreferredTime {
                weekday: 6,
                from: "09:00".into(),
                to: "11:00".into(),
            }],
            "preferred",
        )
        .unwrap();
        // Saturday 2026-06-06 09:00 EDT = 13:00 UTC.
        assert!(p.matches(&cal, ms("2026-06-06T13:00:00Z"), ms("2026-06-06T15:00:00Z")));
        assert!(!p.matches(&cal, ms("2026-06-06T13:30:00Z"), ms("2026-06-06T15:30:00Z")));
        assert!(!p.matches(&cal, ms("2026-06-07T13:00:00Z"), ms("2026-06-07T14:00:00Z")));
        let e = Preferences::parse(
            &[PreferredTime {
                weekday: 1,
                from: "10:00".into(),
                to: "9:00".into(),
            }],
            "preferred",
        );
        assert_eq!(e.unwrap_err().0, "preferred[0].to");
    }
}
