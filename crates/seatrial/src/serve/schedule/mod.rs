//! When the nightly job runs: `[schedule]`'s cron expression read in its time zone (`cron`),
//! and what the server remembers of its nightly jobs across restarts (`<data dir>/nightly.json`)
//! to decide at start whether one was missed.

pub mod cron;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

pub use cron::Cron;

/// `[schedule]`: the nightly job's cron expression and the time zone it is read in.
#[derive(Clone)]
pub struct Schedule {
    pub nightly: Cron,
    pub tz: TimeZone,
    /// The time zone key as configured (`Europe/Berlin`, `UTC`).
    pub timezone: String,
}

impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Schedule({:?} in {})",
            self.nightly.to_string(),
            self.timezone
        )
    }
}

impl Schedule {
    /// `nightly` as cron, read in `timezone` (an IANA key; default UTC).
    pub fn new(nightly: &str, timezone: Option<&str>) -> Result<Self, String> {
        let cron = nightly
            .parse::<Cron>()
            .map_err(|e| format!("schedule.nightly = {nightly:?}: {e}"))?;
        let timezone = timezone.unwrap_or("UTC").trim();
        let tz = TimeZone::get(timezone).map_err(|e| {
            format!(
                "schedule.timezone = {timezone:?}: {e} (give a time zone key such as \"Europe/Berlin\" or \"UTC\")"
            )
        })?;
        Ok(Self {
            nightly: cron,
            tz,
            timezone: timezone.to_owned(),
        })
    }

    /// The first nightly time strictly after `after`.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        self.nightly.next_after(after, &self.tz)
    }

    /// `at` as people of the schedule's time zone read it: `2025-03-30 03:00 CEST`.
    pub fn local(&self, at: Timestamp) -> String {
        let zoned = at.to_zoned_datetime(self.tz.clone());
        let abbreviation = self.tz.to_offset_info(at).abbreviation().to_owned();
        format!(
            "{} {}",
            zoned.datetime().strftime("%Y-%m-%d %H:%M"),
            abbreviation
        )
    }
}

/// What the server remembers of its nightly jobs (durable across restarts).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NightlyRecord {
    /// When this data directory first had a schedule: a nightly time after it that passed
    /// without a nightly was missed.
    #[serde(default, with = "rfc3339")]
    pub armed_at: Option<Timestamp>,
    #[serde(default, with = "rfc3339")]
    pub last_started_at: Option<Timestamp>,
    /// Set when the nightly that started last ran to its end (whatever each part's verdict).
    #[serde(default, with = "rfc3339")]
    pub last_finished_at: Option<Timestamp>,
    /// What the last finished nightly did.
    #[serde(default)]
    pub last: Option<NightlyOutcome>,
}

/// What one nightly did: each infra app's action, each sweep trial's run and verdict.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NightlyOutcome {
    pub infra: Vec<InfraResult>,
    pub sweep: Vec<SweepResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InfraResult {
    pub app: String,
    pub action: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepResult {
    /// The enrolled repository (`owner/name`).
    pub repo: String,
    /// The release tried (`None` when none was found).
    pub release: Option<String>,
    /// The store's run, when one was recorded.
    pub run: Option<i64>,
    /// `passed`, `failed`, … or `skipped`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl NightlyRecord {
    /// A nightly that started and never finished (the server stopped or died during it).
    pub fn interrupted(&self) -> Option<Timestamp> {
        let started = self.last_started_at?;
        match self.last_finished_at {
            Some(finished) if finished >= started => None,
            _ => Some(started),
        }
    }

    /// Whether the nightly that started last succeeded as a whole (nothing failed).
    pub fn last_success(&self) -> Option<Timestamp> {
        self.last_finished_at.filter(|_| {
            self.last.as_ref().is_some_and(|o| {
                o.infra
                    .iter()
                    .all(|i| !matches!(i.action.as_str(), "failed" | "rolled-back"))
                    && o.sweep
                        .iter()
                        .all(|s| matches!(s.state.as_str(), "passed" | "skipped"))
            })
        })
    }
}

/// What the server does about the nightly when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtStart {
    /// Nothing was missed: wait for the next nightly time.
    Wait,
    /// A nightly time passed while the server was down: run one now (one, however many nights
    /// were missed).
    CatchUp { missed: Timestamp },
    /// The last nightly started and never finished: run it again now.
    Resume { started: Timestamp },
}

/// Decides at start, from what is remembered, the time now and the schedule.
pub fn at_start(record: &NightlyRecord, now: Timestamp, schedule: &Schedule) -> AtStart {
    if let Some(started) = record.interrupted() {
        return AtStart::Resume { started };
    }
    // A schedule seen for the first time has missed nothing.
    let Some(since) = record.last_started_at.or(record.armed_at) else {
        return AtStart::Wait;
    };
    match schedule.next_after(since) {
        Some(missed) if missed <= now => AtStart::CatchUp { missed },
        _ => AtStart::Wait,
    }
}

/// `<data dir>/nightly.json`, written whole and atomically.
#[derive(Debug, Clone)]
pub struct RecordFile {
    path: PathBuf,
}

impl RecordFile {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join("nightly.json"),
        }
    }

    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The record (empty when there is none). A damaged one is an error naming the file.
    pub fn load(&self) -> Result<NightlyRecord, String> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                format!(
                    "{} is damaged ({e}); remove it to start the nightly record afresh",
                    self.path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(NightlyRecord::default()),
            Err(e) => Err(format!("cannot read {}: {e}", self.path.display())),
        }
    }

    pub fn save(&self, record: &NightlyRecord) -> Result<(), String> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(record).unwrap_or_default();
        let mut f = std::fs::File::create(&tmp)
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        f.write_all(&bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .map_err(|e| format!("cannot replace {}: {e}", self.path.display()))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// Optional timestamps as RFC 3339 text.
mod rfc3339 {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&t.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn nightly_at_three() -> Schedule {
        Schedule::new("0 3 * * *", Some("Europe/Berlin")).expect("schedule")
    }

    #[test]
    fn schedule_errors_name_the_key() {
        let e = Schedule::new("0 3 * *", None).expect_err("four fields");
        assert!(e.starts_with("schedule.nightly = \"0 3 * *\""), "{e}");
        let e = Schedule::new("0 3 * * *", Some("Europe/Berlim")).expect_err("typo");
        assert!(
            e.starts_with("schedule.timezone = \"Europe/Berlim\"") && e.contains("Europe/Berlin"),
            "{e}"
        );
        let utc = Schedule::new("0 3 * * *", None).expect("default UTC");
        assert_eq!(utc.timezone, "UTC");
        assert_eq!(
            utc.next_after(ts("2025-01-01T00:00:00Z")),
            Some(ts("2025-01-01T03:00:00Z"))
        );
        assert_eq!(
            nightly_at_three().local(ts("2025-07-01T01:00:00Z")),
            "2025-07-01 03:00 CEST"
        );
    }

    #[test]
    fn the_binary_carries_its_own_time_zones() {
        // A scratch image has no /usr/share/zoneinfo: the bundled copy must know the zones.
        let bundled = jiff::tz::TimeZoneDatabase::bundled();
        for key in ["Europe/Berlin", "America/New_York", "UTC"] {
            assert!(bundled.get(key).is_ok(), "{key} is bundled");
        }
    }

    #[test]
    fn catch_up_at_start() {
        let s = nightly_at_three();
        let now = ts("2025-01-10T12:00:00Z"); // 13:00 in Berlin
        // A schedule never seen before missed nothing.
        assert_eq!(at_start(&NightlyRecord::default(), now, &s), AtStart::Wait);
        // Armed yesterday evening, the server was down at 03:00 today: one catch-up.
        let armed = NightlyRecord {
            armed_at: Some(ts("2025-01-09T20:00:00Z")),
            ..NightlyRecord::default()
        };
        assert_eq!(
            at_start(&armed, now, &s),
            AtStart::CatchUp {
                missed: ts("2025-01-10T02:00:00Z")
            }
        );
        // Last ran at 03:00 today: nothing missed.
        let ran_today = NightlyRecord {
            armed_at: Some(ts("2025-01-01T00:00:00Z")),
            last_started_at: Some(ts("2025-01-10T02:00:00Z")),
            last_finished_at: Some(ts("2025-01-10T02:40:00Z")),
            last: None,
        };
        assert_eq!(at_start(&ran_today, now, &s), AtStart::Wait);
        // Last ran a week ago: one catch-up for the first night missed, not seven.
        let week_ago = NightlyRecord {
            last_started_at: Some(ts("2025-01-03T02:00:00Z")),
            last_finished_at: Some(ts("2025-01-03T02:40:00Z")),
            ..ran_today.clone()
        };
        assert_eq!(
            at_start(&week_ago, now, &s),
            AtStart::CatchUp {
                missed: ts("2025-01-04T02:00:00Z")
            }
        );
        // Down from 02:59 to 03:01 local: the 03:00 run was missed.
        let just_missed = NightlyRecord {
            last_started_at: Some(ts("2025-01-09T02:00:00Z")),
            last_finished_at: Some(ts("2025-01-09T02:30:00Z")),
            ..ran_today.clone()
        };
        assert_eq!(
            at_start(&just_missed, ts("2025-01-10T02:01:00Z"), &s),
            AtStart::CatchUp {
                missed: ts("2025-01-10T02:00:00Z")
            }
        );
        assert_eq!(
            at_start(&just_missed, ts("2025-01-10T01:59:00Z"), &s),
            AtStart::Wait,
            "before 03:00 nothing is missed yet"
        );
        // Started and never finished: run again now.
        let interrupted = NightlyRecord {
            last_started_at: Some(ts("2025-01-10T02:00:00Z")),
            last_finished_at: Some(ts("2025-01-09T02:40:00Z")),
            ..ran_today
        };
        assert_eq!(
            at_start(&interrupted, now, &s),
            AtStart::Resume {
                started: ts("2025-01-10T02:00:00Z")
            }
        );
    }

    #[test]
    fn the_record_survives_a_restart_and_damage_is_named() {
        let tmp = tempfile::tempdir().expect("tmp");
        let file = RecordFile::new(tmp.path());
        assert_eq!(file.load().expect("empty"), NightlyRecord::default());
        let record = NightlyRecord {
            armed_at: Some(ts("2025-01-01T00:00:00Z")),
            last_started_at: Some(ts("2025-01-10T02:00:00Z")),
            last_finished_at: Some(ts("2025-01-10T02:40:00Z")),
            last: Some(NightlyOutcome {
                infra: vec![InfraResult {
                    app: "traefik".into(),
                    action: "upgraded".into(),
                    reason: "2.0.1+3.1 is the newest the policy allows".into(),
                }],
                sweep: vec![SweepResult {
                    repo: "coop/app".into(),
                    release: Some("1.2.0+1".into()),
                    run: Some(7),
                    state: "passed".into(),
                    reason: None,
                }],
            }),
        };
        file.save(&record).expect("save");
        assert_eq!(file.load().expect("load"), record);
        assert_eq!(record.last_success(), record.last_finished_at);
        std::fs::write(file.path(), "{").expect("damage");
        let e = file.load().expect_err("damaged");
        assert!(e.contains("nightly.json is damaged"), "{e}");
    }
}
