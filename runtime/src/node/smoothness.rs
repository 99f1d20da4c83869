//! The smoothness of the commanded trajectory, per episode: seam jumps, jerk,
//! chunks rejected by each whole-chunk check, and the delay of each chunk.
//! Recorded on the control thread into buffers allocated before it starts
//! (no allocation per tick); summarised after it ends.
//!
//! Definitions (arm joints only: the gripper, the last joint, is commanded
//! open/shut in one step by design and is left out of the seam and jerk figures):
//! - seam jump: for each accepted chunk but the first of an episode, the
//!   largest `|a - prev|` over the arm joints, `a` = the first command
//!   executed from that chunk, `prev` = the command sent just before it
//!   (degrees);
//! - jerk: the third finite difference of the commands sampled at the base
//!   rate (every `interpolation`-th control tick of the episode) over `dt^3`,
//!   `|c[k] - 3c[k-1] + 3c[k-2] - c[k-3]| / dt^3` per arm joint (deg/s^3);
//!   a tick without a command restarts the difference;
//! - delay: per accepted chunk, how many of its rows had already been executed
//!   when it arrived (base ticks); the estimate and the prefix given are
//!   recorded per request.
//!
//! Episodes are delimited by the episode-start events the node receives
//! (`control.reset_topic`); what comes before the first one is a record with
//! no episode number.

use maniflow_bridge::so101::N_JOINTS;
use serde::Serialize;

use crate::control::safety::SafetyCounters;

/// Episode records kept; later episodes are merged into the last record.
pub const MAX_EPISODES: usize = 1024;
/// Seam jumps kept for the percentiles (about 4.8 h of chunks at 30 Hz with 8
/// actions each); later ones count in `max` and `seams` but not in p50/p99.
pub const MAX_SEAMS: usize = 65536;
/// Joints in the seam and jerk figures: all but the gripper.
const ARM: usize = N_JOINTS - 1;

#[derive(Debug, Clone, Copy, Default)]
struct Acc {
    episode: Option<u64>,
    ticks: u64,
    commands: u64,
    chunks_accepted: u64,
    chunks_rejected: u64,
    safety_at_start: SafetyCounters,
    safety_at_end: SafetyCounters,
    /// Seam jumps of this record: `seams[seams_from..seams_to]`.
    seams_from: usize,
    seams_to: usize,
    seams: u64,
    seam_max: f32,
    jerk_sum: f64,
    jerk_n: u64,
    jerk_max: f64,
    delay_sum: u64,
    delay_n: u64,
    delay_max: u64,
    requests: u64,
    estimate_sum: u64,
    estimate_max: u64,
    prefix_rows_sum: u64,
}

/// The recorder (see the module docs). Build it before the control thread starts.
pub(super) struct Smoothness {
    m: u64,
    inv_dt3: f64,
    records: Vec<Acc>,
    seams: Vec<f32>,
    seams_unrecorded: u64,
    /// Base-rate command samples, newest last; `hist_n` valid.
    hist: [[f32; N_JOINTS]; 3],
    hist_n: usize,
    prev: [f32; N_JOINTS],
    have_prev: bool,
    tick_in_episode: u64,
}

impl Smoothness {
    /// `rate_hz` = base rate of the actions, `interpolation` = control ticks per base tick.
    pub(super) fn new(rate_hz: f64, interpolation: usize) -> Smoothness {
        let dt = 1.0 / rate_hz.max(f64::MIN_POSITIVE);
        let mut records = Vec::with_capacity(MAX_EPISODES);
        records.push(Acc::default());
        Smoothness {
            m: interpolation.max(1) as u64,
            inv_dt3: 1.0 / (dt * dt * dt),
            records,
            seams: Vec::with_capacity(MAX_SEAMS),
            seams_unrecorded: 0,
            hist: [[0.0; N_JOINTS]; 3],
            hist_n: 0,
            prev: [0.0; N_JOINTS],
            have_prev: false,
            tick_in_episode: 0,
        }
    }

    fn cur(&mut self) -> &mut Acc {
        let i = self.records.len() - 1;
        &mut self.records[i]
    }

    /// An episode starts (number `episode` from the event); `safety` = the
    /// counters now (each record reports its own differences).
    pub(super) fn start_episode(&mut self, episode: Option<u64>, safety: &SafetyCounters) {
        let seams_at = self.seams.len();
        let cur = self.cur();
        cur.safety_at_end = *safety;
        cur.seams_to = seams_at;
        if self.records.len() < self.records.capacity() {
            self.records.push(Acc {
                episode,
                safety_at_start: *safety,
                safety_at_end: *safety,
                seams_from: seams_at,
                seams_to: seams_at,
                ..Acc::default()
            });
        }
        self.hist_n = 0;
        self.have_prev = false;
        self.tick_in_episode = 0;
    }

    /// An inference was requested with this delay estimate and `prefix_rows` given rows.
    pub(super) fn requested(&mut self, estimate: usize, prefix_rows: usize) {
        let c = self.cur();
        c.requests += 1;
        c.estimate_sum += estimate as u64;
        c.estimate_max = c.estimate_max.max(estimate as u64);
        c.prefix_rows_sum += prefix_rows as u64;
    }

    /// A chunk entered the executor; `delay` = its measured delay.
    pub(super) fn chunk_accepted(&mut self, delay: Option<usize>) {
        let c = self.cur();
        c.chunks_accepted += 1;
        if let Some(d) = delay {
            c.delay_sum += d as u64;
            c.delay_n += 1;
            c.delay_max = c.delay_max.max(d as u64);
        }
    }

    /// A chunk was refused (whole-chunk checks or the executor).
    pub(super) fn chunk_rejected(&mut self) {
        self.cur().chunks_rejected += 1;
    }

    /// One control tick: `cmd` = the command sent (`None`: none was sent),
    /// `first_of_chunk` = it is the first command executed from a new chunk.
    pub(super) fn tick(&mut self, cmd: Option<&[f32; N_JOINTS]>, first_of_chunk: bool) {
        let base_sample = self.tick_in_episode % self.m == self.m - 1;
        self.tick_in_episode += 1;
        let (prev, have_prev) = (self.prev, self.have_prev);
        let cur = self.cur();
        cur.ticks += 1;
        let Some(cmd) = cmd else {
            self.hist_n = 0;
            return;
        };
        cur.commands += 1;
        // The first chunk of an episode has no seam (it follows a hold).
        if first_of_chunk && have_prev && cur.chunks_accepted >= 2 {
            let jump = (0..ARM)
                .map(|j| (cmd[j] - prev[j]).abs())
                .fold(0.0f32, f32::max);
            cur.seams += 1;
            cur.seam_max = cur.seam_max.max(jump);
            if self.seams.len() < self.seams.capacity() {
                self.seams.push(jump);
                let n = self.seams.len();
                self.cur().seams_to = n;
            } else {
                self.seams_unrecorded += 1;
            }
        }
        self.prev = *cmd;
        self.have_prev = true;
        if base_sample {
            if self.hist_n == 3 {
                let [c3, c2, c1] = self.hist;
                let inv = self.inv_dt3;
                let (mut sum, mut max) = (0.0f64, 0.0f64);
                for j in 0..ARM {
                    let d3 = f64::from(cmd[j]) - 3.0 * f64::from(c1[j]) + 3.0 * f64::from(c2[j])
                        - f64::from(c3[j]);
                    let jerk = d3.abs() * inv;
                    sum += jerk;
                    max = max.max(jerk);
                }
                let cur = self.cur();
                cur.jerk_sum += sum;
                cur.jerk_n += ARM as u64;
                cur.jerk_max = cur.jerk_max.max(max);
                self.hist = [c2, c1, *cmd];
            } else {
                self.hist[self.hist_n] = *cmd;
                self.hist_n += 1;
            }
        }
    }

    /// The report, once the control thread has ended (`safety` = final counters).
    pub(super) fn report(mut self, safety: &SafetyCounters) -> SmoothnessReport {
        let seams_at = self.seams.len();
        let cur = self.cur();
        cur.safety_at_end = *safety;
        cur.seams_to = seams_at;
        let per_episode: Vec<SmoothnessStats> = self
            .records
            .iter()
            .filter(|r| r.episode.is_some())
            .map(|r| {
                stats(
                    std::slice::from_ref(r),
                    &self.seams[r.seams_from..r.seams_to],
                )
            })
            .collect();
        let overall = stats(&self.records, &self.seams);
        SmoothnessReport {
            arm_joints: ARM,
            overall,
            per_episode,
            seams_unrecorded: self.seams_unrecorded,
        }
    }
}

/// Nearest-rank percentile of sorted values (0 when empty).
fn percentile(sorted: &[f32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn stats(records: &[Acc], seams: &[f32]) -> SmoothnessStats {
    let mut s = SmoothnessStats {
        episode: match records {
            [r] => r.episode,
            _ => None,
        },
        ..SmoothnessStats::default()
    };
    let (mut jerk_sum, mut jerk_n) = (0.0f64, 0u64);
    let (mut delay_sum, mut delay_n, mut est_sum) = (0u64, 0u64, 0u64);
    let mut prefix_sum = 0u64;
    let mut seam_max = 0.0f32;
    for r in records {
        s.ticks += r.ticks;
        s.commands += r.commands;
        s.chunks_accepted += r.chunks_accepted;
        s.chunks_rejected += r.chunks_rejected;
        let (a, b) = (&r.safety_at_start, &r.safety_at_end);
        s.rejected_first_jump += b.chunk_first_jump.saturating_sub(a.chunk_first_jump);
        s.rejected_velocity += b.chunk_velocity.saturating_sub(a.chunk_velocity);
        s.rejected_jerk += b.chunk_jerk.saturating_sub(a.chunk_jerk);
        s.rejected_nonfinite += b.chunk_nonfinite.saturating_sub(a.chunk_nonfinite);
        s.seams += r.seams;
        seam_max = seam_max.max(r.seam_max);
        jerk_sum += r.jerk_sum;
        jerk_n += r.jerk_n;
        s.jerk_max_deg_s3 = s.jerk_max_deg_s3.max(r.jerk_max);
        delay_sum += r.delay_sum;
        delay_n += r.delay_n;
        s.delay_max_ticks = s.delay_max_ticks.max(r.delay_max);
        s.requests += r.requests;
        est_sum += r.estimate_sum;
        s.delay_estimate_max_ticks = s.delay_estimate_max_ticks.max(r.estimate_max);
        prefix_sum += r.prefix_rows_sum;
    }
    let mut sorted = seams.to_vec();
    sorted.sort_by(f32::total_cmp);
    s.seam_jump_deg = SeamJump {
        p50: percentile(&sorted, 0.50),
        p99: percentile(&sorted, 0.99),
        max: f64::from(seam_max),
    };
    s.jerk_samples = jerk_n;
    s.jerk_mean_deg_s3 = if jerk_n > 0 {
        jerk_sum / jerk_n as f64
    } else {
        0.0
    };
    let mean = |sum: u64, n: u64| if n > 0 { sum as f64 / n as f64 } else { 0.0 };
    s.delay_mean_ticks = mean(delay_sum, delay_n);
    s.delay_estimate_mean_ticks = mean(est_sum, s.requests);
    s.prefix_rows_mean = mean(prefix_sum, s.requests);
    s
}

/// Seam jump percentiles over arm joints, degrees (0 when there was no seam).
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct SeamJump {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// Smoothness of one episode or of the whole run (see the module docs);
/// means and percentiles are 0 when nothing was measured.
#[derive(Debug, Clone, Serialize, Default)]
pub struct SmoothnessStats {
    /// The episode's number (from its start event); absent for the whole run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub episode: Option<u64>,
    /// Control ticks, and those that sent a command.
    pub ticks: u64,
    pub commands: u64,
    pub chunks_accepted: u64,
    /// Chunks refused by the whole-chunk checks or the executor.
    pub chunks_rejected: u64,
    /// Chunks rejected by each whole-chunk check.
    pub rejected_first_jump: u64,
    pub rejected_velocity: u64,
    pub rejected_jerk: u64,
    pub rejected_nonfinite: u64,
    /// Seam jumps measured (accepted chunks after the first of each episode).
    pub seams: u64,
    pub seam_jump_deg: SeamJump,
    /// Per arm joint and base tick (deg/s^3).
    pub jerk_mean_deg_s3: f64,
    pub jerk_max_deg_s3: f64,
    /// Jerk values averaged (base ticks x arm joints).
    pub jerk_samples: u64,
    /// Measured delay of the accepted chunks (base ticks).
    pub delay_mean_ticks: f64,
    pub delay_max_ticks: u64,
    /// Inference requests, the executor's delay estimate at each, and the
    /// prefix rows given to the policy (0 unless `rtc` with a prefix policy).
    pub requests: u64,
    pub delay_estimate_mean_ticks: f64,
    pub delay_estimate_max_ticks: u64,
    pub prefix_rows_mean: f64,
}

/// The node's smoothness report (`NodeStats::smoothness`).
#[derive(Debug, Clone, Serialize, Default)]
pub struct SmoothnessReport {
    /// Joints in the seam and jerk figures (the first `arm_joints`; the
    /// gripper is left out).
    pub arm_joints: usize,
    /// The whole run, including what came before the first episode start.
    pub overall: SmoothnessStats,
    /// One record per episode start received, in order.
    pub per_episode: Vec<SmoothnessStats>,
    /// Seam jumps past [`MAX_SEAMS`], left out of the percentiles.
    pub seams_unrecorded: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(v: f32) -> [f32; N_JOINTS] {
        let mut c = [v; N_JOINTS];
        c[N_JOINTS - 1] = 50.0 + 1000.0 * v; // the gripper is left out
        c
    }

    #[test]
    fn seams_jerk_and_episodes_by_hand() {
        // 10 Hz: dt^3 = 1e-3 s^3.
        let mut s = Smoothness::new(10.0, 1);
        let mut safety = SafetyCounters::default();
        // Before the first episode: one chunk, two commands.
        s.chunk_accepted(Some(0));
        s.tick(Some(&cmd(0.0)), true);
        s.tick(Some(&cmd(0.0)), false);
        s.start_episode(Some(0), &safety);
        // Episode 0: chunk 1 (no seam), commands 0, 0, 0, 1 (jerk at the 4th:
        // |1 - 0 + 0 - 0| / 1e-3 = 1000), then chunk 2 starts at 3 (seam |3 - 1| = 2,
        // jerk |3 - 3*1 + 0 - 0| / 1e-3 = 0), a tick without a command, chunk 3
        // starts at 3.5 (seam 0.5: against the last command sent).
        s.requested(1, 0);
        s.chunk_accepted(Some(0));
        s.tick(Some(&cmd(0.0)), true);
        s.tick(Some(&cmd(0.0)), false);
        s.tick(Some(&cmd(0.0)), false);
        s.tick(Some(&cmd(1.0)), false);
        s.requested(3, 2);
        s.chunk_accepted(Some(2));
        s.tick(Some(&cmd(3.0)), true);
        s.tick(None, false);
        safety.chunk_velocity += 1;
        s.chunk_rejected();
        s.requested(3, 2);
        s.chunk_accepted(Some(4));
        s.tick(Some(&cmd(3.5)), true);
        s.start_episode(Some(1), &safety);
        // Episode 1: a rejected chunk (first jump), one accepted, no seam.
        safety.chunk_first_jump += 1;
        s.chunk_rejected();
        s.chunk_accepted(Some(1));
        s.tick(Some(&cmd(7.0)), true);
        let r = s.report(&safety);
        assert_eq!(r.arm_joints, 5);
        assert_eq!(r.per_episode.len(), 2);
        let e0 = &r.per_episode[0];
        assert_eq!(e0.episode, Some(0));
        assert_eq!((e0.ticks, e0.commands), (7, 6));
        assert_eq!((e0.chunks_accepted, e0.chunks_rejected), (3, 1));
        assert_eq!((e0.rejected_velocity, e0.rejected_first_jump), (1, 0));
        assert_eq!(e0.seams, 2);
        // Nearest rank over [0.5, 2]: p50 = 0.5, p99 = 2.
        assert_eq!(e0.seam_jump_deg.p50, 0.5);
        assert_eq!(e0.seam_jump_deg.p99, 2.0);
        assert_eq!(e0.seam_jump_deg.max, 2.0);
        // Two jerk samples per arm joint: 1000 and 0 (the tick without a
        // command restarted the difference).
        assert_eq!(e0.jerk_samples, 10);
        assert!((e0.jerk_mean_deg_s3 - 500.0).abs() < 1e-6, "{e0:?}");
        assert!((e0.jerk_max_deg_s3 - 1000.0).abs() < 1e-6, "{e0:?}");
        assert!((e0.delay_mean_ticks - 2.0).abs() < 1e-12);
        assert_eq!(e0.delay_max_ticks, 4);
        assert_eq!(e0.requests, 3);
        assert!((e0.delay_estimate_mean_ticks - 7.0 / 3.0).abs() < 1e-12);
        assert_eq!(e0.delay_estimate_max_ticks, 3);
        assert!((e0.prefix_rows_mean - 4.0 / 3.0).abs() < 1e-12);
        let e1 = &r.per_episode[1];
        assert_eq!((e1.episode, e1.seams, e1.jerk_samples), (Some(1), 0, 0));
        assert_eq!((e1.rejected_first_jump, e1.rejected_velocity), (1, 0));
        assert_eq!(e1.seam_jump_deg.max, 0.0);
        // Overall: everything, including the 2 ticks before episode 0.
        let o = &r.overall;
        assert_eq!(o.episode, None);
        assert_eq!((o.ticks, o.chunks_accepted, o.chunks_rejected), (10, 5, 2));
        assert_eq!((o.rejected_first_jump, o.rejected_velocity), (1, 1));
        assert_eq!(o.seams, 2);
        assert_eq!(o.seam_jump_deg.max, 2.0);
        assert_eq!(r.seams_unrecorded, 0);
    }

    #[test]
    fn base_rate_sampling_with_interpolation() {
        // M = 2 at 10 Hz: every 2nd tick is a base-rate sample; a ramp of
        // 1 deg per base tick interpolated in between has no jerk.
        let mut s = Smoothness::new(10.0, 2);
        s.start_episode(Some(0), &SafetyCounters::default());
        for k in 0..20 {
            s.tick(Some(&cmd(k as f32 * 0.5)), k == 0);
        }
        let r = s.report(&SafetyCounters::default());
        let e = &r.per_episode[0];
        assert_eq!(e.jerk_samples, 7 * 5); // 10 samples -> 7 third differences
        assert_eq!(e.jerk_max_deg_s3, 0.0);
    }

    #[test]
    fn recording_does_not_allocate() {
        use crate::control::executor::tests::alloc_count;
        let mut s = Smoothness::new(30.0, 1);
        let safety = SafetyCounters::default();
        let before = alloc_count();
        for ep in 0..100u64 {
            s.start_episode(Some(ep), &safety);
            for k in 0..300u64 {
                if k % 8 == 0 {
                    s.requested(1, 1);
                    s.chunk_accepted(Some(1));
                }
                s.tick(Some(&cmd((k % 13) as f32)), k % 8 == 0);
            }
        }
        assert_eq!(alloc_count() - before, 0);
        let r = s.report(&safety);
        assert_eq!(r.per_episode.len(), 100);
        assert_eq!(r.overall.seams, 100 * (300 / 8 + 1 - 1));
    }
}
