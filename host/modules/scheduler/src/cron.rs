//! The cron engine behind `scheduler.modular` and the `schedule` trigger: jobs with a cron
//! expression (5 fields, or 6 with seconds first), an IANA timezone, and an overlap policy for a
//! tick that comes while the job's previous run is still going.
//!
//! Ticks missed while the process could not run (a suspended machine) collapse into one: the
//! job fires once, late, and continues from the present, instead of firing a burst.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use schemars::JsonSchema;
use serde::Deserialize;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;
use wf_engine::async_trait;

use crate::clock::{Clock, SystemClock};

/// A parsed cron expression in a timezone.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: croner::Cron,
    pattern: String,
    timezone: Tz,
}

impl Schedule {
    /// `pattern`: 5 fields (minute first) or 6 (second first); `timezone`: an IANA name.
    pub fn parse(pattern: &str, timezone: &str) -> Result<Self, String> {
        let cron = croner::parser::CronParser::new()
            .parse(pattern)
            .map_err(|e| format!("`{pattern}` is not a cron expression: {e}"))?;
        let timezone = Tz::from_str(timezone).map_err(|_| {
            format!("`{timezone}` is not an IANA timezone (e.g. `UTC`, `Europe/Berlin`)")
        })?;
        Ok(Schedule {
            cron,
            pattern: pattern.to_string(),
            timezone,
        })
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    pub fn timezone(&self) -> &str {
        self.timezone.name()
    }

    /// The first fire time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&after.with_timezone(&self.timezone), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The next `count` fire times after `after`, as RFC 3339 in the schedule's timezone.
    pub fn upcoming(&self, after: DateTime<Utc>, count: usize) -> Vec<String> {
        let mut out = Vec::with_capacity(count);
        let mut at = after;
        while out.len() < count {
            let Some(next) = self.next_after(at) else {
                break;
            };
            out.push(
                next.with_timezone(&self.timezone)
                    .to_rfc3339_opts(SecondsFormat::Secs, true),
            );
            at = next;
        }
        out
    }
}

/// What happens to a tick while the job's previous run has not finished.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// Drop the tick (logged and counted).
    #[default]
    Skip,
    /// Start another run beside the running one.
    Allow,
    /// Run it after the running one finishes (at most 100 waiting; more are skipped).
    Queue,
}

impl Overlap {
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Allow => "allow",
            Overlap::Queue => "queue",
        }
    }
}

const MAX_QUEUED: usize = 100;

/// One tick of a job.
#[derive(Clone, Debug)]
pub struct Tick {
    pub job: String,
    pub scheduler: String,
    /// When the tick was due (RFC 3339 in the job's timezone).
    pub scheduled_at: String,
}

/// What a job does on a tick.
#[async_trait]
pub trait JobAction: Send + Sync {
    async fn fire(&self, tick: Tick) -> anyhow::Result<()>;
}

/// Counters of one job.
#[derive(Debug, Default)]
pub struct JobStats {
    pub started: AtomicU64,
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    pub skipped: AtomicU64,
}

pub struct Job {
    pub name: String,
    pub schedule: Schedule,
    pub overlap: Overlap,
    pub action: Arc<dyn JobAction>,
    pub stats: JobStats,
    /// One permit: held by the running run under `skip` and `queue`.
    running: Arc<Semaphore>,
    queued: AtomicUsize,
}

impl Job {
    pub fn new(
        name: String,
        schedule: Schedule,
        overlap: Overlap,
        action: Arc<dyn JobAction>,
    ) -> Arc<Self> {
        Arc::new(Job {
            name,
            schedule,
            overlap,
            action,
            stats: JobStats::default(),
            running: Arc::new(Semaphore::new(1)),
            queued: AtomicUsize::new(0),
        })
    }
}

/// Runs jobs on their schedules until stopped.
pub struct CronScheduler {
    name: String,
    clock: RwLock<Arc<dyn Clock>>,
    jobs: Mutex<Vec<Arc<Job>>>,
    loops: Mutex<Vec<JoinHandle<()>>>,
    stop: watch::Sender<bool>,
    started: std::sync::atomic::AtomicBool,
    in_flight: Arc<InFlight>,
    this: Weak<CronScheduler>,
}

#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

impl wf_engine::ServiceKind for CronScheduler {
    const LABEL: &'static str = "a scheduler";
}

impl CronScheduler {
    pub fn new(name: &str) -> Arc<Self> {
        Arc::new_cyclic(|this| CronScheduler {
            name: name.to_string(),
            clock: RwLock::new(Arc::new(SystemClock)),
            jobs: Mutex::default(),
            loops: Mutex::default(),
            stop: watch::channel(false).0,
            started: Default::default(),
            in_flight: Arc::default(),
            this: this.clone(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Replaces the clock (tests); takes effect for loops started afterwards.
    pub fn set_clock(&self, clock: Arc<dyn Clock>) {
        if let Ok(mut slot) = self.clock.write() {
            *slot = clock;
        }
    }

    fn clock(&self) -> Arc<dyn Clock> {
        self.clock
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|_| Arc::new(SystemClock))
    }

    pub fn jobs(&self) -> Vec<Arc<Job>> {
        self.jobs.lock().map(|j| j.clone()).unwrap_or_default()
    }

    /// Adds a job; it starts ticking now when the scheduler runs, else at `start`.
    pub fn add(&self, job: Arc<Job>) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.push(job.clone());
        }
        if self.started.load(Ordering::Acquire) {
            self.spawn_loop(job);
        }
    }

    pub fn start(&self) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        for job in self.jobs() {
            self.spawn_loop(job);
        }
    }

    /// Stops ticking and waits (until `deadline`) for runs in progress.
    pub async fn stop(&self, deadline: tokio::time::Instant) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        let loops = self
            .loops
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default();
        for handle in loops {
            handle.abort();
        }
        let finished = tokio::time::timeout_at(deadline, async {
            loop {
                // Registered before the count is read, so the last run's wake-up is not missed.
                let idle = self.in_flight.idle.notified();
                tokio::pin!(idle);
                idle.as_mut().enable();
                if self.in_flight.count.load(Ordering::Acquire) == 0 {
                    break;
                }
                idle.await;
            }
        })
        .await;
        if finished.is_err() {
            anyhow::bail!(
                "{} scheduled runs of `{}` were still going at the deadline",
                self.in_flight.count.load(Ordering::Acquire),
                self.name
            );
        }
        Ok(())
    }

    fn spawn_loop(&self, job: Arc<Job>) {
        let clock = self.clock();
        // The first tick is the first one after the moment the job was started.
        let start = clock.now();
        let mut stop = self.stop.subscribe();
        let scheduler = self.this.clone();
        let handle = tokio::spawn(async move {
            let mut last = start;
            loop {
                let Some(next) = job.schedule.next_after(last) else {
                    tracing::warn!(job = %job.name, cron = %job.schedule.pattern(), "the schedule never fires again");
                    return;
                };
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|stopped| *stopped) => return,
                    _ = clock.sleep_until(next) => {}
                }
                let Some(scheduler) = scheduler.upgrade() else {
                    return;
                };
                let now = clock.now();
                // Woken well after the tick (suspended): later ticks already missed collapse.
                last = if (now - next) > chrono::Duration::seconds(1) {
                    tracing::warn!(job = %job.name, due = %next, "a tick fired late; the ticks missed meanwhile are skipped");
                    now
                } else {
                    next
                };
                scheduler.fire(&job, next);
            }
        });
        if let Ok(mut loops) = self.loops.lock() {
            loops.push(handle);
        }
    }

    fn fire(&self, job: &Arc<Job>, due: DateTime<Utc>) {
        let tick = Tick {
            job: job.name.clone(),
            scheduler: self.name.clone(),
            scheduled_at: due
                .with_timezone(&job.schedule.timezone)
                .to_rfc3339_opts(SecondsFormat::Secs, true),
        };
        // Under `skip` the permit is taken now; under `queue` the run waits for it.
        let permit = match job.overlap {
            Overlap::Allow => None,
            Overlap::Skip => match job.running.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    job.stats.skipped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(job = %job.name, scheduled_at = %tick.scheduled_at, "the previous run is still going; tick skipped (overlap: skip)");
                    return;
                }
            },
            Overlap::Queue => {
                if job.queued.fetch_add(1, Ordering::AcqRel) >= MAX_QUEUED {
                    job.queued.fetch_sub(1, Ordering::AcqRel);
                    job.stats.skipped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(job = %job.name, "{MAX_QUEUED} ticks are already waiting; tick skipped (overlap: queue)");
                    return;
                }
                None
            }
        };
        let job = job.clone();
        // Counted until the task ends, even if the run panics.
        let in_flight = InFlightGuard::new(self.in_flight.clone());
        let mut stop = self.stop.subscribe();
        tokio::spawn(async move {
            let _in_flight = in_flight;
            let _permit = match (job.overlap, permit) {
                (Overlap::Queue, _) => {
                    let acquired = tokio::select! {
                        biased;
                        // A tick still waiting when the scheduler stops never runs.
                        _ = stop.wait_for(|stopped| *stopped) => None,
                        permit = job.running.clone().acquire_owned() => permit.ok(),
                    };
                    job.queued.fetch_sub(1, Ordering::AcqRel);
                    match acquired {
                        Some(permit) => Some(permit),
                        None => return,
                    }
                }
                (_, permit) => permit,
            };
            // A tick that fired as the scheduler stopped does not start a run after `stop`.
            if *stop.borrow() {
                return;
            }
            job.stats.started.fetch_add(1, Ordering::Relaxed);
            match job.action.fire(tick.clone()).await {
                Ok(()) => {
                    job.stats.succeeded.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    job.stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(job = %job.name, scheduler = %tick.scheduler, scheduled_at = %tick.scheduled_at, error = %format!("{e:#}"), "scheduled run failed");
                }
            }
        });
    }
}

/// One scheduled run in progress; dropping it (however the run ends) tells `stop`.
struct InFlightGuard(Arc<InFlight>);

impl InFlightGuard {
    fn new(in_flight: Arc<InFlight>) -> Self {
        in_flight.count.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(in_flight)
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use chrono::TimeZone;

    #[test]
    fn timezones_and_seconds_are_honoured() {
        let at = Utc.with_ymd_and_hms(2026, 7, 1, 12, 0, 0).unwrap();
        // 09:00 in New York is 13:00 UTC in summer.
        let daily = Schedule::parse("0 9 * * *", "America/New_York").unwrap();
        assert_eq!(
            daily.next_after(at),
            Some(Utc.with_ymd_and_hms(2026, 7, 1, 13, 0, 0).unwrap())
        );
        assert_eq!(
            daily.upcoming(at, 2),
            ["2026-07-01T09:00:00-04:00", "2026-07-02T09:00:00-04:00"]
        );
        let every_ten_seconds = Schedule::parse("*/10 * * * * *", "UTC").unwrap();
        assert_eq!(
            every_ten_seconds.next_after(at),
            Some(Utc.with_ymd_and_hms(2026, 7, 1, 12, 0, 10).unwrap())
        );
        assert!(
            Schedule::parse("61 * * * *", "UTC")
                .unwrap_err()
                .contains("not a cron expression")
        );
        assert!(
            Schedule::parse("* * * * *", "Mars/Olympus")
                .unwrap_err()
                .contains("IANA")
        );
    }

    /// Counts runs; each run waits until `release` is notified when `block` is set.
    struct Probe {
        runs: AtomicUsize,
        block: bool,
        release: Notify,
        ticks: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl JobAction for Probe {
        async fn fire(&self, tick: Tick) -> anyhow::Result<()> {
            self.runs.fetch_add(1, Ordering::AcqRel);
            self.ticks.lock().unwrap().push(tick.scheduled_at);
            if self.block {
                self.release.notified().await;
            }
            Ok(())
        }
    }

    async fn until(what: &str, f: impl Fn() -> bool) {
        for _ in 0..500 {
            if f() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("timed out waiting for {what}");
    }

    fn setup(
        overlap: Overlap,
        block: bool,
    ) -> (Arc<CronScheduler>, Arc<ManualClock>, Arc<Probe>, Arc<Job>) {
        let clock = Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        ));
        let scheduler = CronScheduler::new("s");
        scheduler.set_clock(clock.clone());
        let probe = Arc::new(Probe {
            runs: AtomicUsize::new(0),
            block,
            release: Notify::new(),
            ticks: Mutex::default(),
        });
        let job = Job::new(
            "j".into(),
            Schedule::parse("*/10 * * * * *", "UTC").unwrap(),
            overlap,
            probe.clone(),
        );
        scheduler.add(job.clone());
        scheduler.start();
        (scheduler, clock, probe, job)
    }

    #[tokio::test]
    async fn ticks_follow_the_clock() {
        let (scheduler, clock, probe, _) = setup(Overlap::Skip, false);
        clock.advance(chrono::Duration::seconds(9));
        tokio::task::yield_now().await;
        assert_eq!(probe.runs.load(Ordering::Acquire), 0);
        for n in 1..=3 {
            clock.advance(chrono::Duration::seconds(10));
            until("a tick", || probe.runs.load(Ordering::Acquire) == n).await;
        }
        assert_eq!(
            *probe.ticks.lock().unwrap(),
            [
                "2026-01-01T00:00:10Z",
                "2026-01-01T00:00:20Z",
                "2026-01-01T00:00:30Z"
            ]
        );
        scheduler
            .stop(tokio::time::Instant::now() + std::time::Duration::from_secs(1))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn skip_drops_ticks_while_a_run_is_going_and_queue_runs_them_after() {
        for (overlap, runs_after_release) in
            [(Overlap::Skip, 1), (Overlap::Queue, 3), (Overlap::Allow, 3)]
        {
            let (scheduler, clock, probe, job) = setup(overlap, true);
            for tick in 1..=3u64 {
                clock.advance(chrono::Duration::seconds(10));
                // Each tick is handled (run, skipped or queued) before the next one comes.
                until("the tick to be handled", || {
                    probe.runs.load(Ordering::Acquire) as u64
                        + job.stats.skipped.load(Ordering::Acquire)
                        + job.queued.load(Ordering::Acquire) as u64
                        >= tick
                })
                .await;
            }
            let expected_skipped = if overlap == Overlap::Skip { 2 } else { 0 };
            assert_eq!(
                job.stats.skipped.load(Ordering::Acquire),
                expected_skipped,
                "{overlap:?}"
            );
            // Release runs one by one until all that will run have run.
            for _ in 0..runs_after_release {
                until("a run to be waiting", || {
                    probe.runs.load(Ordering::Acquire)
                        > job.stats.succeeded.load(Ordering::Acquire) as usize
                })
                .await;
                probe.release.notify_one();
                tokio::task::yield_now().await;
            }
            until("every run to finish", || {
                job.stats.succeeded.load(Ordering::Acquire) == runs_after_release
            })
            .await;
            assert_eq!(
                probe.runs.load(Ordering::Acquire),
                runs_after_release as usize,
                "{overlap:?}"
            );
            scheduler
                .stop(tokio::time::Instant::now() + std::time::Duration::from_secs(1))
                .await
                .unwrap();
        }
    }
}
