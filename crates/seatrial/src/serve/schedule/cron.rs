//! Cron expressions as Vixie cron reads them — `minute hour day-of-month month day-of-week` —
//! and the next time one fires in a time zone.
//!
//! Each field is `*`, a value, a range `a-b`, a step `*/s`, `a-b/s` or `a/s` (from `a` to the
//! field's end), or a comma-separated list of these. Months take `jan`…`dec`, days of the week
//! `sun`…`sat` (and 0–7, both 0 and 7 meaning Sunday). `@hourly`, `@daily` (`@midnight`),
//! `@weekly`, `@monthly` and `@yearly` (`@annually`) stand for their five fields.
//!
//! Day of month and day of week combine as in Vixie cron: when both are restricted (neither
//! field starts with `*`), a day matches either; otherwise it must match both (that is, the
//! restricted one). `0 3 1 * mon` fires on the 1st and on every Monday; `0 3 */2 * mon` only on
//! the odd-numbered days that are Mondays, because `*/2` starts with `*`.
//!
//! Wall-clock times are read in the schedule's time zone: a time that does not exist that day
//! (the hour skipped when daylight saving time starts) fires at the first instant after the
//! gap; a time that happens twice (the hour repeated when it ends) fires once, the first time.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, TimeZone};

/// A parsed cron expression.
#[derive(Clone, PartialEq, Eq)]
pub struct Cron {
    text: String,
    /// Bit `m` set: minute `m` (0–59).
    minutes: u64,
    /// Bit `h`: hour `h` (0–23).
    hours: u64,
    /// Bit `d`: day of month `d` (1–31).
    days: u64,
    /// Bit `m`: month `m` (1–12).
    months: u64,
    /// Bit `w`: day of week `w`, Sunday 0 (0–6).
    weekdays: u64,
    /// The day-of-month field starts with `*` (Vixie cron's `DOM_STAR`).
    days_star: bool,
    /// The day-of-week field starts with `*` (`DOW_STAR`).
    weekdays_star: bool,
}

impl fmt::Debug for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cron({:?})", self.text)
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// One field's rules: its name (for errors), its range, and the names its values may have
/// (the first name stands for `min`).
struct Field {
    what: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: Field = Field {
    what: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Field = Field {
    what: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY: Field = Field {
    what: "day of month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Field = Field {
    what: "month",
    min: 1,
    max: 12,
    names: &MONTHS,
};
/// 7 is Sunday too; folded onto 0 after parsing.
const WEEKDAY: Field = Field {
    what: "day of week",
    min: 0,
    max: 7,
    names: &WEEKDAYS,
};

impl Field {
    fn value(&self, s: &str) -> Result<u32, String> {
        let lower = s.to_ascii_lowercase();
        if let Some(i) = self.names.iter().position(|n| *n == lower) {
            return Ok(self.min + i as u32);
        }
        let n: u32 = s.parse().map_err(|_| {
            let names = if self.names.is_empty() {
                String::new()
            } else {
                format!(" or a name ({}…)", self.names[..3].join(", "))
            };
            format!(
                "{} {s:?} is not a number from {} to {}{names}",
                self.what, self.min, self.max
            )
        })?;
        if n < self.min || n > self.max {
            return Err(format!(
                "{} {n} is out of range {}-{}",
                self.what, self.min, self.max
            ));
        }
        Ok(n)
    }

    /// The set of values the field allows, as bits.
    fn parse(&self, text: &str) -> Result<u64, String> {
        let mut bits = 0u64;
        for part in text.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => {
                    let step: u32 = s.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                        format!("{}: step {s:?} is not a whole number above 0", self.what)
                    })?;
                    (r, step)
                }
                None => (part, 1),
            };
            let (low, high) = if range == "*" {
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                let (a, b) = (self.value(a)?, self.value(b)?);
                if a > b {
                    return Err(format!(
                        "{}: range {range:?} runs backwards (write the lower value first)",
                        self.what
                    ));
                }
                (a, b)
            } else if range.is_empty() {
                return Err(format!("{}: empty value in {text:?}", self.what));
            } else {
                let a = self.value(range)?;
                // `5/15`: from 5 to the field's end, every 15 (as cronie reads it).
                (a, if part.contains('/') { self.max } else { a })
            };
            let mut v = low;
            while v <= high {
                bits |= 1 << v;
                v += step;
            }
        }
        Ok(bits)
    }
}

impl FromStr for Cron {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let expanded = match text.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            s if s.starts_with('@') => {
                return Err(format!(
                    "{text:?} is not a cron shortcut (@hourly, @daily, @weekly, @monthly, @yearly)"
                ));
            }
            _ => text,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields.as_slice() else {
            return Err(format!(
                "{text:?} has {} field(s); a cron expression has 5: minute hour day-of-month month day-of-week (e.g. \"0 3 * * *\")",
                fields.len()
            ));
        };
        let mut weekdays = WEEKDAY.parse(weekday)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays & !(1 << 7)) | 1;
        }
        let cron = Self {
            text: text.to_owned(),
            minutes: MINUTE.parse(minute)?,
            hours: HOUR.parse(hour)?,
            days: DAY.parse(day)?,
            months: MONTH.parse(month)?,
            weekdays,
            days_star: day.starts_with('*'),
            weekdays_star: weekday.starts_with('*'),
        };
        if !cron.can_fire() {
            return Err(format!(
                "{text:?} never fires: no month of the ones it names has the days it names"
            ));
        }
        Ok(cron)
    }
}

/// The longest month of each month number (February with its leap day).
const LONGEST: [u32; 13] = [0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

impl Cron {
    /// Whether some day matches: only a day-of-month list that no named month has (`30 2`)
    /// matches nothing, and only when the day of week does not rescue it (OR semantics).
    fn can_fire(&self) -> bool {
        if !self.days_star && !self.weekdays_star {
            return true;
        }
        (1..=12u32).any(|m| {
            self.months & (1 << m) != 0
                && (1..=LONGEST[m as usize]).any(|d| self.days & (1 << d) != 0)
        })
    }

    fn day_matches(&self, date: Date) -> bool {
        let month = self.months & (1 << date.month()) != 0;
        let day = self.days & (1 << date.day()) != 0;
        let weekday = self.weekdays & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        month
            && if self.days_star || self.weekdays_star {
                day && weekday
            } else {
                day || weekday
            }
    }

    /// The first instant strictly after `after` at which this fires in `tz`; `None` only when
    /// none comes within nine years (which [`FromStr`] rules out) or the calendar ends.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let local = tz.to_datetime(after);
        // Candidates are whole minutes of wall-clock time from the minute after `after`'s.
        let start = local
            .date()
            .at(local.hour(), local.minute(), 0, 0)
            .checked_add(jiff::SignedDuration::from_mins(1))
            .ok()?;
        let mut date = start.date();
        // Every 29 February within any 9 years (a century year may skip one).
        for _ in 0..(366 * 9) {
            if self.day_matches(date) {
                for hour in (0..24i8).filter(|h| self.hours & (1 << h) != 0) {
                    for minute in (0..60i8).filter(|m| self.minutes & (1 << m) != 0) {
                        let wall = date.at(hour, minute, 0, 0);
                        if wall < start {
                            continue;
                        }
                        if let Some(at) = instant(tz, wall).filter(|at| *at > after) {
                            return Some(at);
                        }
                    }
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }
}

/// When wall-clock time `wall` happens in `tz`: a time in a gap happens at the end of the gap,
/// a time in a fold the first time round.
fn instant(tz: &TimeZone, wall: DateTime) -> Option<Timestamp> {
    match tz.to_ambiguous_timestamp(wall).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(wall).ok(),
        AmbiguousOffset::Fold { before, .. } => before.to_timestamp(wall).ok(),
        AmbiguousOffset::Gap { after, .. } => {
            // Read with the later offset, `wall` lands before the transition; the transition
            // is the first instant after the gap.
            let early = after.to_timestamp(wall).ok()?;
            tz.following(early).next().map(|t| t.timestamp())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cron(s: &str) -> Cron {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn berlin() -> TimeZone {
        TimeZone::get("Europe/Berlin").expect("the tz database has Europe/Berlin")
    }

    /// The next firing after local time `from` (in `tz`), as local time with its offset.
    fn next_local(c: &str, tz: &TimeZone, from: &str) -> String {
        let from: DateTime = from.parse().expect("datetime");
        let after = tz.to_timestamp(from).expect("exists");
        let at = cron(c).next_after(after, tz).expect("fires");
        let zoned = at.to_zoned_datetime(tz.clone());
        format!("{} {}", zoned.datetime(), zoned.offset())
    }

    fn next_utc(c: &str, from: &str) -> String {
        next_local(c, &TimeZone::UTC, from)
            .trim_end_matches(" +00")
            .to_owned()
    }

    #[test]
    fn fields_lists_ranges_steps_and_names() {
        let c = cron("*/15 1-5/2 * jan,Mar-may mon-fri");
        assert_eq!(c.minutes, (1 << 0) | (1 << 15) | (1 << 30) | (1 << 45));
        assert_eq!(c.hours, (1 << 1) | (1 << 3) | (1 << 5));
        assert_eq!(c.months, (1 << 1) | (1 << 3) | (1 << 4) | (1 << 5));
        assert_eq!(c.weekdays, 0b0111110);
        assert_eq!(cron("0 0 * * 7").weekdays, 1, "7 is Sunday");
        assert_eq!(cron("0 0 * * 5-7").weekdays, 0b1100001);
        assert_eq!(
            cron("5/20 * * * *").minutes,
            (1 << 5) | (1 << 25) | (1 << 45)
        );
        assert_eq!(cron("@daily"), {
            let mut c = cron("0 0 * * *");
            c.text = "@daily".into();
            c
        });
        assert_eq!(cron(" 0 3 * * * ").to_string(), "0 3 * * *");
    }

    #[test]
    fn mistakes_are_named() {
        for (bad, says) in [
            ("0 3 * *", "has 4 field(s)"),
            ("0 3 * * * *", "has 6 field(s)"),
            ("60 3 * * *", "minute 60 is out of range 0-59"),
            ("0 24 * * *", "hour 24 is out of range 0-23"),
            ("0 3 0 * *", "day of month 0 is out of range 1-31"),
            ("0 3 * 13 *", "month 13 is out of range 1-12"),
            ("0 3 * * 8", "day of week 8 is out of range 0-7"),
            ("0 3 * * funday", "day of week \"funday\" is not a number"),
            ("*/0 3 * * *", "step \"0\" is not a whole number above 0"),
            ("0 5-1 * * *", "runs backwards"),
            ("0 3 1,,2 * *", "empty value"),
            ("0 3 30 feb *", "never fires"),
            ("@sometimes", "not a cron shortcut"),
            ("", "has 0 field(s)"),
        ] {
            let e = bad.parse::<Cron>().expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
        // February 30th is rescued by the day of week (OR): it fires on Mondays of February.
        assert!("0 3 30 feb mon".parse::<Cron>().is_ok());
        assert!("0 3 29 feb *".parse::<Cron>().is_ok(), "leap days exist");
    }

    #[test]
    fn next_times_in_utc() {
        assert_eq!(
            next_utc("0 3 * * *", "2025-01-10T02:59:59"),
            "2025-01-10T03:00:00"
        );
        assert_eq!(
            next_utc("0 3 * * *", "2025-01-10T03:00:00"),
            "2025-01-11T03:00:00",
            "strictly after"
        );
        assert_eq!(
            next_utc("*/15 * * * *", "2025-01-10T10:07:30"),
            "2025-01-10T10:15:00"
        );
        assert_eq!(
            next_utc("0 0 1 1 *", "2025-06-01T00:00:00"),
            "2026-01-01T00:00:00"
        );
        assert_eq!(
            next_utc("0 0 29 2 *", "2025-03-01T00:00:00"),
            "2028-02-29T00:00:00",
            "the next leap day"
        );
        assert_eq!(
            next_utc("59 23 31 dec *", "2025-12-31T23:59:00"),
            "2026-12-31T23:59:00"
        );
    }

    #[test]
    fn day_of_month_and_day_of_week_combine_as_in_vixie_cron() {
        // Both restricted: either matches. 2025-01-06 is a Monday, 2025-01-15 a Wednesday.
        let c = "0 3 15 * mon";
        assert_eq!(next_utc(c, "2025-01-01T00:00:00"), "2025-01-06T03:00:00");
        assert_eq!(next_utc(c, "2025-01-13T04:00:00"), "2025-01-15T03:00:00");
        assert_eq!(next_utc(c, "2025-01-15T04:00:00"), "2025-01-20T03:00:00");
        // Only the day of week restricted: it alone decides.
        assert_eq!(
            next_utc("0 3 * * mon", "2025-01-01T00:00:00"),
            "2025-01-06T03:00:00"
        );
        // Only the day of month restricted: it alone decides.
        assert_eq!(
            next_utc("0 3 15 * *", "2025-01-01T00:00:00"),
            "2025-01-15T03:00:00"
        );
        // `*/2` starts with `*`: both must match (an odd day that is a Monday). 2025-01-13 is a
        // Monday on an odd day; 2025-01-06 is even.
        assert_eq!(
            next_utc("0 3 */2 * mon", "2025-01-01T00:00:00"),
            "2025-01-13T03:00:00"
        );
        // Sunday as 0 and as 7. 2025-01-05 is a Sunday.
        assert_eq!(
            next_utc("0 3 * * 0", "2025-01-01T00:00:00"),
            "2025-01-05T03:00:00"
        );
        assert_eq!(
            next_utc("0 3 * * 7", "2025-01-01T00:00:00"),
            "2025-01-05T03:00:00"
        );
    }

    #[test]
    fn daylight_saving_time_in_berlin() {
        let tz = berlin();
        // An ordinary night: 03:00 CET is 02:00 UTC.
        assert_eq!(
            next_local("0 3 * * *", &tz, "2025-01-10T12:00:00"),
            "2025-01-11T03:00:00 +01"
        );
        // 2025-03-30: clocks jump from 02:00 CET to 03:00 CEST. 02:30 does not exist that day:
        // it fires at the end of the gap, 03:00 CEST, once.
        assert_eq!(
            next_local("30 2 * * *", &tz, "2025-03-29T12:00:00"),
            "2025-03-30T03:00:00 +02"
        );
        let after_gap = tz
            .to_timestamp("2025-03-30T03:00:00".parse().expect("dt"))
            .expect("exists");
        let next = cron("30 2 * * *")
            .next_after(after_gap, &tz)
            .expect("fires");
        assert_eq!(
            next.to_zoned_datetime(tz.clone()).datetime().to_string(),
            "2025-03-31T02:30:00",
            "the next day as usual"
        );
        // Every quarter hour of the skipped hour fires once at the end of the gap.
        assert_eq!(
            next_local("*/15 2 * * *", &tz, "2025-03-30T01:50:00"),
            "2025-03-30T03:00:00 +02"
        );
        let again = cron("*/15 2 * * *")
            .next_after(after_gap, &tz)
            .expect("fires");
        assert_eq!(
            again.to_zoned_datetime(tz.clone()).datetime().to_string(),
            "2025-03-31T02:00:00"
        );
        // 03:00 itself is unaffected by the gap.
        assert_eq!(
            next_local("0 3 * * *", &tz, "2025-03-29T12:00:00"),
            "2025-03-30T03:00:00 +02"
        );
        // 2025-10-26: clocks go back from 03:00 CEST to 02:00 CET; 02:30 happens twice. It
        // fires the first time only.
        let c = cron("30 2 * * *");
        let first = c
            .next_after(
                tz.to_timestamp("2025-10-25T12:00:00".parse().expect("dt"))
                    .expect("exists"),
                &tz,
            )
            .expect("fires");
        assert_eq!(first.to_string(), "2025-10-26T00:30:00Z", "02:30 CEST");
        let second = c.next_after(first, &tz).expect("fires");
        assert_eq!(
            second.to_string(),
            "2025-10-27T01:30:00Z",
            "not at 02:30 CET the same night, but the next night"
        );
        // From inside the repeated hour's second pass it does not fire again either.
        let in_second_pass: Timestamp = "2025-10-26T01:10:00Z".parse().expect("ts");
        assert_eq!(
            c.next_after(in_second_pass, &tz)
                .expect("fires")
                .to_string(),
            "2025-10-27T01:30:00Z"
        );
        // 03:00 after the change is 03:00 CET.
        assert_eq!(
            next_local("0 3 * * *", &tz, "2025-10-26T01:00:00"),
            "2025-10-26T03:00:00 +01"
        );
    }

    /// A slow, obviously right answer: every minute from `after` on, checked one by one.
    fn brute_force(c: &Cron, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let mut wall = tz.to_datetime(after);
        wall = wall.date().at(wall.hour(), wall.minute(), 0, 0);
        for _ in 0..(60 * 24 * 800) {
            wall = wall.checked_add(jiff::SignedDuration::from_mins(1)).ok()?;
            if !c.day_matches(wall.date())
                || c.hours & (1 << wall.hour()) == 0
                || c.minutes & (1 << wall.minute()) == 0
            {
                continue;
            }
            if let Some(at) = instant(tz, wall).filter(|at| *at > after) {
                return Some(at);
            }
        }
        None
    }

    #[test]
    fn next_agrees_with_a_minute_by_minute_search() {
        let tz = berlin();
        let exprs = [
            "0 3 * * *",
            "30 2 * * *",
            "*/7 */5 * * *",
            "15 2,14 1-7 * mon",
            "0 0 */3 * *",
            "45 23 * feb,mar,oct sun",
            "0 12 31 * *",
        ];
        // Instants spread over two years, crossing both DST changes.
        let mut rng = fastrand_like(0x5eed);
        let base: Timestamp = "2024-01-01T00:00:00Z".parse().expect("ts");
        for e in exprs {
            let c = cron(e);
            for _ in 0..12 {
                let secs = (rng() % (2 * 365 * 86_400)) as i64;
                let after = base
                    .checked_add(jiff::SignedDuration::from_secs(secs))
                    .expect("in range");
                assert_eq!(
                    c.next_after(after, &tz),
                    brute_force(&c, after, &tz),
                    "{e} after {after}"
                );
            }
        }
    }

    /// A tiny deterministic generator (xorshift), so the search above is reproducible.
    fn fastrand_like(mut state: u64) -> impl FnMut() -> u64 {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }
}
