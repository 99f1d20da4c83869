//! Safety layer: every chunk and every command passes through it.
//!
//! Units are the policy's (e.g. degrees for SO-101 joints 1-5, 0..100 for the
//! gripper). A chunk is `(n, da)` row-major `f32`, row 0 being the action for
//! the control step at which the chunk starts; a command, a present position
//! and every per-joint limit vector are `(da,)`.
//!
//! Hot path: after [`Safety::new`], [`Safety::check_chunk`],
//! [`Safety::filter_command`], [`Safety::hold`] and [`Safety::reset`] perform
//! no heap allocation.

use thiserror::Error;

/// Safety limits. Every vector is `(da,)`, indexed by joint.
#[derive(Debug, Clone, PartialEq)]
pub struct SafetyConfig {
    /// Lower joint limit (policy units); must be finite and `< joint_max`.
    pub joint_min: Vec<f32>,
    /// Upper joint limit (policy units); must be finite.
    pub joint_max: Vec<f32>,
    /// Max `|command - present position|` per tick (policy units), `> 0`.
    pub max_step: Vec<f32>,
    /// Max `|chunk row 0 - present position|` (policy units), `> 0`.
    pub max_first_jump: Vec<f32>,
    /// Max `|row[i+1] - row[i]| / dt_s` between consecutive chunk rows
    /// (units per second), `> 0`.
    pub max_velocity: Vec<f32>,
    /// Max `|row[i+3] - 3 row[i+2] + 3 row[i+1] - row[i]| / dt_s^3`
    /// (units per s^3), `> 0`.
    pub max_jerk: Vec<f32>,
    /// Time between chunk rows in seconds (`1 / fps`), `> 0`.
    pub dt_s: f32,
    /// Start ramp length in ticks: on the `k`-th command (`k = 1, 2, ...`)
    /// after new/reset/hold, the step limit is scaled by
    /// `min(k, ramp_ticks) / ramp_ticks` (from `1/ramp_ticks` up to 1).
    /// 0 = no ramp.
    pub ramp_ticks: u32,
}

/// Running event counts (kept across [`Safety::reset`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SafetyCounters {
    /// Commands replaced by a hold because the command or the present
    /// position contained NaN/Inf (one per command).
    pub nan_rejected: u64,
    /// Commands in which at least one joint was clamped to the joint limits
    /// (one per command).
    pub limit_clamped: u64,
    /// Commands in which at least one joint was step-limited (one per command).
    pub step_clamped: u64,
    /// Chunks whose row 0 jumps too far from the present position.
    pub chunk_first_jump: u64,
    /// Chunks exceeding the velocity bound.
    pub chunk_velocity: u64,
    /// Chunks exceeding the jerk bound.
    pub chunk_jerk: u64,
    /// Chunks containing NaN/Inf (or checked against a non-finite present
    /// position).
    pub chunk_nonfinite: u64,
    /// Calls to [`Safety::hold`].
    pub held: u64,
    /// Chunks / commands rejected because a slice length did not match `da`
    /// (a caller bug).
    pub shape_rejected: u64,
    /// Where the whole-chunk checks fired: the joint (and for velocity and jerk the
    /// chunk row) of each check's first violation, so a report can say which joint
    /// and which part of the chunk is the trouble. Indices past the arrays count in
    /// the last entry.
    pub where_rejected: RejectionSites,
}

/// Joint and row histograms of the whole-chunk checks' first violations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RejectionSites {
    pub first_jump_joint: [u64; MAX_SITE_JOINTS],
    pub velocity_joint: [u64; MAX_SITE_JOINTS],
    pub jerk_joint: [u64; MAX_SITE_JOINTS],
    pub velocity_row: [u64; MAX_SITE_ROWS],
    pub jerk_row: [u64; MAX_SITE_ROWS],
}

/// Joints tracked by [`RejectionSites`].
pub const MAX_SITE_JOINTS: usize = 8;
/// Chunk rows tracked by [`RejectionSites`].
pub const MAX_SITE_ROWS: usize = 32;

fn bump_site<const N: usize>(h: &mut [u64; N], i: usize) {
    h[i.min(N - 1)] += 1;
}

/// Why a chunk was rejected. Joint and row indices are 0-based; `row` is the
/// chunk row where the violation is detected.
#[derive(Debug, Clone, Copy, PartialEq, Error)]
pub enum ChunkRejection {
    /// `chunk.len()` is not a positive multiple of `da`, or `present.len() != da`.
    #[error("chunk shape: chunk has {chunk_len} values, present has {present_len}, da = {da}")]
    Shape {
        /// `chunk.len()`.
        chunk_len: usize,
        /// `present.len()`.
        present_len: usize,
        /// Configured joint count.
        da: usize,
    },
    /// NaN/Inf in the chunk.
    #[error("chunk value at row {row}, joint {joint} is not finite")]
    NonFinite {
        /// Row index.
        row: usize,
        /// Joint index.
        joint: usize,
    },
    /// NaN/Inf in the present position.
    #[error("present position of joint {joint} is not finite")]
    PresentNonFinite {
        /// Joint index.
        joint: usize,
    },
    /// `|row 0 - present| > max_first_jump`.
    #[error("first-row jump at row 0, joint {joint}: {jump} > max_first_jump {limit}")]
    FirstJump {
        /// Joint index.
        joint: usize,
        /// `|row0 - present|`.
        jump: f32,
        /// Configured limit.
        limit: f32,
    },
    /// `|row[row] - row[row-1]| / dt > max_velocity`.
    #[error("velocity at row {row}, joint {joint}: {velocity} > max_velocity {limit}")]
    Velocity {
        /// Row index (`>= 1`).
        row: usize,
        /// Joint index.
        joint: usize,
        /// Absolute velocity (units/s).
        velocity: f32,
        /// Configured limit.
        limit: f32,
    },
    /// `|third difference ending at row| / dt^3 > max_jerk`.
    #[error("jerk at row {row}, joint {joint}: {jerk} > max_jerk {limit}")]
    Jerk {
        /// Row index (`>= 3`).
        row: usize,
        /// Joint index.
        joint: usize,
        /// Absolute jerk (units/s^3).
        jerk: f32,
        /// Configured limit.
        limit: f32,
    },
}

/// Outcome of [`Safety::check_chunk`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ChunkVerdict {
    /// Every check passed.
    Accepted,
    /// First violation found (checks in order: shape, non-finite, first jump,
    /// velocity, jerk).
    Rejected(ChunkRejection),
}

/// Outcome of [`Safety::filter_command`] / [`Safety::hold`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandVerdict {
    /// Command unchanged; send it.
    Passed,
    /// Command modified by a joint-limit or step clamp; send it.
    Clamped,
    /// Command overwritten with the hold target (last safe command, else the
    /// present position); send it.
    Held,
    /// No safe target is known (no last safe command and the present
    /// position is non-finite or has the wrong length, or `cmd.len() != da`):
    /// the buffer is untouched and MUST NOT be sent.
    Blocked,
}

/// Configuration errors; each names the field and, where relevant, the joint.
#[derive(Debug, Clone, Copy, PartialEq, Error)]
pub enum SafetyError {
    /// `joint_min` is empty.
    #[error("SafetyConfig.joint_min is empty: at least one joint is required")]
    NoJoints,
    /// A vector's length differs from `joint_min.len()`.
    #[error("SafetyConfig.{field} has {got} entries, expected {expected} (joint_min.len())")]
    Length {
        /// Field name.
        field: &'static str,
        /// `joint_min.len()`.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// A joint limit is NaN/Inf.
    #[error("SafetyConfig.{field}[{joint}] = {value} must be finite")]
    NonFinite {
        /// Field name.
        field: &'static str,
        /// Joint index.
        joint: usize,
        /// Offending value.
        value: f32,
    },
    /// `joint_min[j] >= joint_max[j]`.
    #[error("SafetyConfig.joint_min[{joint}] = {min} must be < joint_max[{joint}] = {max}")]
    MinNotBelowMax {
        /// Joint index.
        joint: usize,
        /// `joint_min[joint]`.
        min: f32,
        /// `joint_max[joint]`.
        max: f32,
    },
    /// A rate/step limit is not positive and finite.
    #[error("SafetyConfig.{field}[{joint}] = {value} must be positive and finite")]
    NonPositive {
        /// Field name.
        field: &'static str,
        /// Joint index.
        joint: usize,
        /// Offending value.
        value: f32,
    },
    /// `dt_s` not positive and finite, or `dt_s^3` not a normal f32.
    #[error("SafetyConfig.dt_s = {0} must be positive and finite (with dt_s^3 a normal f32)")]
    BadDt(f32),
}

/// Safety filter state.
#[derive(Debug, Clone)]
pub struct Safety {
    cfg: SafetyConfig,
    da: usize,
    /// `dt_s^3`.
    dt3: f32,
    /// Last command that left the filter (or hold target), `(da,)`.
    last_safe: Vec<f32>,
    has_last_safe: bool,
    /// Commands filtered since the ramp (re)started, saturating at ramp_ticks.
    ramp_done: u32,
    counters: SafetyCounters,
}

fn all_finite(v: &[f32]) -> bool {
    v.iter().all(|x| x.is_finite())
}

impl Safety {
    /// Validates the configuration: all vectors of equal, non-zero length;
    /// joint limits finite with `min < max`; step/jump/velocity/jerk limits
    /// and `dt_s` positive and finite.
    pub fn new(cfg: SafetyConfig) -> Result<Self, SafetyError> {
        let da = cfg.joint_min.len();
        if da == 0 {
            return Err(SafetyError::NoJoints);
        }
        let lens = [
            ("joint_max", cfg.joint_max.len()),
            ("max_step", cfg.max_step.len()),
            ("max_first_jump", cfg.max_first_jump.len()),
            ("max_velocity", cfg.max_velocity.len()),
            ("max_jerk", cfg.max_jerk.len()),
        ];
        for (field, got) in lens {
            if got != da {
                return Err(SafetyError::Length {
                    field,
                    expected: da,
                    got,
                });
            }
        }
        for (field, v) in [("joint_min", &cfg.joint_min), ("joint_max", &cfg.joint_max)] {
            for (joint, &value) in v.iter().enumerate() {
                if !value.is_finite() {
                    return Err(SafetyError::NonFinite {
                        field,
                        joint,
                        value,
                    });
                }
            }
        }
        for (joint, (&min, &max)) in cfg.joint_min.iter().zip(&cfg.joint_max).enumerate() {
            if min >= max {
                return Err(SafetyError::MinNotBelowMax { joint, min, max });
            }
        }
        for (field, v) in [
            ("max_step", &cfg.max_step),
            ("max_first_jump", &cfg.max_first_jump),
            ("max_velocity", &cfg.max_velocity),
            ("max_jerk", &cfg.max_jerk),
        ] {
            for (joint, &value) in v.iter().enumerate() {
                if !(value.is_finite() && value > 0.0) {
                    return Err(SafetyError::NonPositive {
                        field,
                        joint,
                        value,
                    });
                }
            }
        }
        let dt3 = cfg.dt_s * cfg.dt_s * cfg.dt_s;
        if !(cfg.dt_s.is_finite() && cfg.dt_s > 0.0 && dt3.is_normal()) {
            return Err(SafetyError::BadDt(cfg.dt_s));
        }
        Ok(Self {
            cfg,
            da,
            dt3,
            last_safe: vec![0.0; da],
            has_last_safe: false,
            ramp_done: 0,
            counters: SafetyCounters::default(),
        })
    }

    /// Number of joints.
    pub fn da(&self) -> usize {
        self.da
    }

    /// The validated configuration.
    pub fn config(&self) -> &SafetyConfig {
        &self.cfg
    }

    /// Last safe command, `(da,)`, if any since new/reset.
    pub fn last_safe(&self) -> Option<&[f32]> {
        self.has_last_safe.then_some(self.last_safe.as_slice())
    }

    /// Checks a chunk `(n, da)` row-major against the present position `(da,)`.
    ///
    /// Checks, in order: shape (`chunk.len()` a positive multiple of `da`,
    /// `present.len() == da`); NaN/Inf in the chunk or in `present` (if any,
    /// the remaining checks are skipped); then all of
    /// - first jump: `|row0[j] - present[j]| > max_first_jump[j]`,
    /// - velocity: `|row[i][j] - row[i-1][j]| / dt_s > max_velocity[j]`, `i >= 1`,
    /// - jerk: `|row[i][j] - 3 row[i-1][j] + 3 row[i-2][j] - row[i-3][j]| / dt_s^3 > max_jerk[j]`,
    ///   `i >= 3`.
    ///
    /// Limits are inclusive (equal to the limit passes). Each violated
    /// category increments its counter once per chunk; the verdict reports the
    /// first violation (category order above, then row, then joint).
    pub fn check_chunk(&mut self, chunk: &[f32], present: &[f32]) -> ChunkVerdict {
        let da = self.da;
        if chunk.is_empty() || !chunk.len().is_multiple_of(da) || present.len() != da {
            self.counters.shape_rejected += 1;
            return ChunkVerdict::Rejected(ChunkRejection::Shape {
                chunk_len: chunk.len(),
                present_len: present.len(),
                da,
            });
        }
        if let Some(pos) = chunk.iter().position(|v| !v.is_finite()) {
            self.counters.chunk_nonfinite += 1;
            return ChunkVerdict::Rejected(ChunkRejection::NonFinite {
                row: pos / da,
                joint: pos % da,
            });
        }
        if let Some(joint) = present.iter().position(|v| !v.is_finite()) {
            self.counters.chunk_nonfinite += 1;
            return ChunkVerdict::Rejected(ChunkRejection::PresentNonFinite { joint });
        }
        let mut first: Option<ChunkRejection> = None;

        // First-row jump.
        let mut jump_hit = None;
        for (joint, ((&a, &p), &limit)) in chunk[..da]
            .iter()
            .zip(present)
            .zip(&self.cfg.max_first_jump)
            .enumerate()
        {
            let jump = (a - p).abs();
            if jump > limit {
                jump_hit = Some(ChunkRejection::FirstJump { joint, jump, limit });
                break;
            }
        }
        if let Some(r) = jump_hit {
            self.counters.chunk_first_jump += 1;
            if let ChunkRejection::FirstJump { joint, .. } = r {
                bump_site(&mut self.counters.where_rejected.first_jump_joint, joint);
            }
            first.get_or_insert(r);
        }

        // Velocity between consecutive rows.
        let n = chunk.len() / da;
        let mut vel_hit = None;
        'vel: for row in 1..n {
            let cur = &chunk[row * da..(row + 1) * da];
            let prev = &chunk[(row - 1) * da..row * da];
            for (joint, ((&c, &p), &limit)) in
                cur.iter().zip(prev).zip(&self.cfg.max_velocity).enumerate()
            {
                let velocity = (c - p).abs() / self.cfg.dt_s;
                if velocity > limit {
                    vel_hit = Some(ChunkRejection::Velocity {
                        row,
                        joint,
                        velocity,
                        limit,
                    });
                    break 'vel;
                }
            }
        }
        if let Some(r) = vel_hit {
            self.counters.chunk_velocity += 1;
            if let ChunkRejection::Velocity { row, joint, .. } = r {
                bump_site(&mut self.counters.where_rejected.velocity_joint, joint);
                bump_site(&mut self.counters.where_rejected.velocity_row, row);
            }
            first.get_or_insert(r);
        }

        // Jerk: third difference ending at `row`.
        let mut jerk_hit = None;
        'jerk: for row in 3..n {
            for (joint, &limit) in self.cfg.max_jerk.iter().enumerate() {
                let x = |r: usize| chunk[r * da + joint];
                let d3 = x(row) - 3.0 * x(row - 1) + 3.0 * x(row - 2) - x(row - 3);
                let jerk = d3.abs() / self.dt3;
                if jerk > limit {
                    jerk_hit = Some(ChunkRejection::Jerk {
                        row,
                        joint,
                        jerk,
                        limit,
                    });
                    break 'jerk;
                }
            }
        }
        if let Some(r) = jerk_hit {
            self.counters.chunk_jerk += 1;
            if let ChunkRejection::Jerk { row, joint, .. } = r {
                bump_site(&mut self.counters.where_rejected.jerk_joint, joint);
                bump_site(&mut self.counters.where_rejected.jerk_row, row);
            }
            first.get_or_insert(r);
        }

        match first {
            Some(r) => ChunkVerdict::Rejected(r),
            None => ChunkVerdict::Accepted,
        }
    }

    /// Filters one command `(da,)` in place against the present position
    /// `(da,)`, then remembers the result as the last safe command.
    ///
    /// 1. `cmd.len() != da` -> [`CommandVerdict::Blocked`] (cmd untouched,
    ///    `shape_rejected`). `present.len() != da` -> hold (`shape_rejected`).
    /// 2. NaN/Inf in `cmd` or `present` -> `cmd` is overwritten with the last
    ///    safe command (else the present position if finite, else Blocked),
    ///    `nan_rejected` += 1, the ramp restarts; returns Held.
    /// 3. Clamp each joint to `[joint_min, joint_max]` (`limit_clamped` += 1
    ///    if any joint changed).
    /// 4. Clamp each joint to `present ± max_step * ramp` where `ramp =
    ///    min(k, ramp_ticks) / ramp_ticks` on the k-th filtered command since
    ///    new/reset/hold (1 if `ramp_ticks == 0`); `step_clamped` += 1 if any
    ///    joint changed. The step clamp is applied last so the command never
    ///    jumps from the present position, even when the present position is
    ///    outside the joint limits (the command then moves toward the range).
    pub fn filter_command(&mut self, cmd: &mut [f32], present: &[f32]) -> CommandVerdict {
        if cmd.len() != self.da {
            self.counters.shape_rejected += 1;
            return CommandVerdict::Blocked;
        }
        if present.len() != self.da {
            self.counters.shape_rejected += 1;
            return self.emit_hold(cmd, present);
        }
        if !all_finite(cmd) || !all_finite(present) {
            self.counters.nan_rejected += 1;
            return self.emit_hold(cmd, present);
        }

        let mut limit_hit = false;
        for ((c, &lo), &hi) in cmd
            .iter_mut()
            .zip(&self.cfg.joint_min)
            .zip(&self.cfg.joint_max)
        {
            let v = c.clamp(lo, hi);
            if v != *c {
                limit_hit = true;
                *c = v;
            }
        }

        let ramp = if self.cfg.ramp_ticks == 0 {
            1.0
        } else {
            let k = self.ramp_done.saturating_add(1).min(self.cfg.ramp_ticks);
            k as f32 / self.cfg.ramp_ticks as f32
        };
        let mut step_hit = false;
        for ((c, &p), &s) in cmd.iter_mut().zip(present).zip(&self.cfg.max_step) {
            let lim = s * ramp;
            let v = c.clamp(p - lim, p + lim);
            if v != *c {
                step_hit = true;
                *c = v;
            }
        }
        if self.cfg.ramp_ticks > 0 {
            self.ramp_done = self.ramp_done.saturating_add(1).min(self.cfg.ramp_ticks);
        }

        if limit_hit {
            self.counters.limit_clamped += 1;
        }
        if step_hit {
            self.counters.step_clamped += 1;
        }
        self.last_safe.copy_from_slice(cmd);
        self.has_last_safe = true;
        if limit_hit || step_hit {
            CommandVerdict::Clamped
        } else {
            CommandVerdict::Passed
        }
    }

    /// Hold: writes the last safe command into `out` `(da,)` (or, if there is
    /// none yet, the present position, which then becomes the last safe
    /// command so repeated holds do not follow a sagging arm). Counts `held`
    /// and restarts the ramp for the next resumed command. Returns Held, or
    /// Blocked (out untouched) when `out.len() != da` or no target is known.
    pub fn hold(&mut self, out: &mut [f32], present: &[f32]) -> CommandVerdict {
        self.counters.held += 1;
        if out.len() != self.da {
            self.counters.shape_rejected += 1;
            return CommandVerdict::Blocked;
        }
        self.emit_hold(out, present)
    }

    /// Writes the hold target into `out` (len already == da), restarts the ramp.
    fn emit_hold(&mut self, out: &mut [f32], present: &[f32]) -> CommandVerdict {
        self.ramp_done = 0;
        if !self.has_last_safe {
            if present.len() != self.da || !all_finite(present) {
                return CommandVerdict::Blocked;
            }
            self.last_safe.copy_from_slice(present);
            self.has_last_safe = true;
        }
        out.copy_from_slice(&self.last_safe);
        CommandVerdict::Held
    }

    /// Event counters.
    pub fn counters(&self) -> &SafetyCounters {
        &self.counters
    }

    /// New episode: forgets the last safe command and restarts the ramp
    /// (counters are kept).
    pub fn reset(&mut self) {
        self.has_last_safe = false;
        self.ramp_done = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::executor::tests::alloc_count;

    /// 2 joints: joint 0 in [-10, 10], joint 1 (gripper-like) in [0, 100].
    fn cfg2() -> SafetyConfig {
        SafetyConfig {
            joint_min: vec![-10.0, 0.0],
            joint_max: vec![10.0, 100.0],
            max_step: vec![2.0, 5.0],
            max_first_jump: vec![3.0, 10.0],
            max_velocity: vec![8.0, 40.0], // dt 0.5 -> max row delta 4 and 20
            max_jerk: vec![16.0, 160.0],   // dt^3 0.125 -> max |d3| 2 and 20
            dt_s: 0.5,
            ramp_ticks: 0,
        }
    }

    #[test]
    fn config_validation_names_field_and_joint() {
        assert_eq!(
            Safety::new(SafetyConfig {
                joint_min: vec![],
                ..cfg2()
            })
            .err(),
            Some(SafetyError::NoJoints)
        );
        assert_eq!(
            Safety::new(SafetyConfig {
                max_jerk: vec![1.0],
                ..cfg2()
            })
            .err(),
            Some(SafetyError::Length {
                field: "max_jerk",
                expected: 2,
                got: 1
            })
        );
        assert_eq!(
            Safety::new(SafetyConfig {
                joint_max: vec![10.0, 0.0],
                ..cfg2()
            })
            .err(),
            Some(SafetyError::MinNotBelowMax {
                joint: 1,
                min: 0.0,
                max: 0.0
            })
        );
        assert!(matches!(
            Safety::new(SafetyConfig {
                joint_min: vec![-10.0, f32::NAN],
                ..cfg2()
            }),
            Err(SafetyError::NonFinite {
                field: "joint_min",
                joint: 1,
                ..
            })
        ));
        assert_eq!(
            Safety::new(SafetyConfig {
                max_step: vec![2.0, 0.0],
                ..cfg2()
            })
            .err(),
            Some(SafetyError::NonPositive {
                field: "max_step",
                joint: 1,
                value: 0.0
            })
        );
        assert!(matches!(
            Safety::new(SafetyConfig {
                max_velocity: vec![f32::INFINITY, 1.0],
                ..cfg2()
            }),
            Err(SafetyError::NonPositive {
                field: "max_velocity",
                joint: 0,
                ..
            })
        ));
        assert_eq!(
            Safety::new(SafetyConfig {
                max_first_jump: vec![-1.0, 1.0],
                ..cfg2()
            })
            .err(),
            Some(SafetyError::NonPositive {
                field: "max_first_jump",
                joint: 0,
                value: -1.0
            })
        );
        assert_eq!(
            Safety::new(SafetyConfig {
                dt_s: 0.0,
                ..cfg2()
            })
            .err(),
            Some(SafetyError::BadDt(0.0))
        );
        let msg = SafetyError::Length {
            field: "max_jerk",
            expected: 2,
            got: 1,
        }
        .to_string();
        assert!(msg.contains("max_jerk"), "{msg}");
        let msg = SafetyError::MinNotBelowMax {
            joint: 1,
            min: 0.0,
            max: 0.0,
        }
        .to_string();
        assert!(msg.contains("joint_min[1]"), "{msg}");
    }

    #[test]
    fn chunk_accepted_at_exact_limits() {
        let mut s = Safety::new(cfg2()).unwrap();
        // present (0, 50). Joint 0 rows: 3, 7, 11, 15 -> first jump 3 (= limit),
        // deltas 4 (= 4/0.5 = 8 = max_velocity), d3 = 15 - 33 + 21 - 3 = 0.
        // Joint 1 rows: 60, 60, 60, 80: first jump 10 (= limit), deltas 0,0,20
        // (velocity 40 = limit), d3 = 80 - 180 + 180 - 60 = 20 -> 20/0.125 = 160 = limit.
        let chunk = [3.0, 60.0, 7.0, 60.0, 11.0, 60.0, 15.0, 80.0];
        assert_eq!(s.check_chunk(&chunk, &[0.0, 50.0]), ChunkVerdict::Accepted);
        assert_eq!(*s.counters(), SafetyCounters::default());
    }

    #[test]
    fn chunk_nonfinite() {
        let mut s = Safety::new(cfg2()).unwrap();
        let chunk = [0.0, 50.0, 0.0, f32::NAN, f32::INFINITY, 50.0];
        assert_eq!(
            s.check_chunk(&chunk, &[0.0, 50.0]),
            ChunkVerdict::Rejected(ChunkRejection::NonFinite { row: 1, joint: 1 })
        );
        assert_eq!(
            s.check_chunk(&[0.0, 50.0], &[0.0, f32::NEG_INFINITY]),
            ChunkVerdict::Rejected(ChunkRejection::PresentNonFinite { joint: 1 })
        );
        assert_eq!(s.counters().chunk_nonfinite, 2);
        assert_eq!(s.counters().chunk_first_jump, 0);
    }

    #[test]
    fn chunk_first_jump() {
        let mut s = Safety::new(cfg2()).unwrap();
        // Joint 1: |61 - 50| = 11 > 10.
        assert_eq!(
            s.check_chunk(&[1.0, 61.0, 1.0, 61.0], &[0.0, 50.0]),
            ChunkVerdict::Rejected(ChunkRejection::FirstJump {
                joint: 1,
                jump: 11.0,
                limit: 10.0
            })
        );
        assert_eq!(s.counters().chunk_first_jump, 1);
        assert_eq!(s.counters().chunk_velocity, 0);
        assert_eq!(s.counters().where_rejected.first_jump_joint[..2], [0, 1]);
    }

    #[test]
    fn chunk_velocity() {
        let mut s = Safety::new(cfg2()).unwrap();
        // Joint 0 rows 0, 2, 6.5: delta 4.5 at row 2 -> 4.5 / 0.5 = 9 > 8.
        let chunk = [0.0, 50.0, 2.0, 50.0, 6.5, 50.0];
        assert_eq!(
            s.check_chunk(&chunk, &[0.0, 50.0]),
            ChunkVerdict::Rejected(ChunkRejection::Velocity {
                row: 2,
                joint: 0,
                velocity: 9.0,
                limit: 8.0
            })
        );
        assert_eq!(s.counters().chunk_velocity, 1);
        assert_eq!(s.counters().chunk_jerk, 0);
    }

    #[test]
    fn chunk_jerk_and_multiple_categories() {
        let mut s = Safety::new(cfg2()).unwrap();
        // Joint 0 rows 0, 0, 0, 3: velocities 0, 0, 6 (ok); d3 = 3 - 0 + 0 - 0 = 3,
        // 3 / 0.125 = 24 > 16 at row 3.
        let chunk = [0.0, 50.0, 0.0, 50.0, 0.0, 50.0, 3.0, 50.0];
        assert_eq!(
            s.check_chunk(&chunk, &[0.0, 50.0]),
            ChunkVerdict::Rejected(ChunkRejection::Jerk {
                row: 3,
                joint: 0,
                jerk: 24.0,
                limit: 16.0
            })
        );
        assert_eq!(s.counters().chunk_jerk, 1);
        // Jump (|5 - 0| = 5 > 3), velocity (|0 - 5| / 0.5 = 10 > 8) and jerk
        // (joint 0 rows 5, 0, 0, 0: d3 = 0 - 0 + 0 - 5 = -5 -> 40 > 16) all violated:
        // each counter +1, the verdict reports the first-jump violation.
        let chunk = [5.0, 50.0, 0.0, 50.0, 0.0, 50.0, 0.0, 50.0];
        assert_eq!(
            s.check_chunk(&chunk, &[0.0, 50.0]),
            ChunkVerdict::Rejected(ChunkRejection::FirstJump {
                joint: 0,
                jump: 5.0,
                limit: 3.0
            })
        );
        let c = *s.counters();
        assert_eq!(
            (c.chunk_first_jump, c.chunk_velocity, c.chunk_jerk),
            (1, 1, 2)
        );
        // Where: jerk rows 3 (both chunks), velocity row 1, all on joint 0.
        let w = c.where_rejected;
        assert_eq!((w.jerk_row[3], w.velocity_row[1], w.jerk_joint[0]), (2, 1, 2));
        assert_eq!((w.first_jump_joint[0], w.velocity_joint[0]), (1, 1));
        assert_eq!(w.jerk_row.iter().sum::<u64>(), 2);
    }

    #[test]
    fn chunk_shape() {
        let mut s = Safety::new(cfg2()).unwrap();
        assert!(matches!(
            s.check_chunk(&[0.0, 1.0, 2.0], &[0.0, 50.0]),
            ChunkVerdict::Rejected(ChunkRejection::Shape {
                chunk_len: 3,
                present_len: 2,
                da: 2
            })
        ));
        assert!(matches!(
            s.check_chunk(&[], &[0.0, 50.0]),
            ChunkVerdict::Rejected(ChunkRejection::Shape { .. })
        ));
        assert!(matches!(
            s.check_chunk(&[0.0, 50.0], &[0.0]),
            ChunkVerdict::Rejected(ChunkRejection::Shape { .. })
        ));
        assert_eq!(s.counters().shape_rejected, 3);
    }

    #[test]
    fn command_pass_limit_and_step_clamp() {
        let mut s = Safety::new(cfg2()).unwrap();
        let present = [9.0, 50.0];
        // Within everything: passes unchanged.
        let mut cmd = [10.0, 54.0];
        assert_eq!(s.filter_command(&mut cmd, &present), CommandVerdict::Passed);
        assert_eq!(cmd, [10.0, 54.0]);
        // Joint 0: 12 -> limit 10 (within step 2 of 9). Joint 1 fine.
        let mut cmd = [12.0, 50.0];
        assert_eq!(
            s.filter_command(&mut cmd, &present),
            CommandVerdict::Clamped
        );
        assert_eq!(cmd, [10.0, 50.0]);
        assert_eq!(
            (s.counters().limit_clamped, s.counters().step_clamped),
            (1, 0)
        );
        // Joint 1: 40 -> step-limited to 50 - 5 = 45.
        let mut cmd = [9.0, 40.0];
        assert_eq!(
            s.filter_command(&mut cmd, &present),
            CommandVerdict::Clamped
        );
        assert_eq!(cmd, [9.0, 45.0]);
        assert_eq!(
            (s.counters().limit_clamped, s.counters().step_clamped),
            (1, 1)
        );
        // Both: joint 0 = -50 -> limit -10 -> step 9 - 2 = 7; joint 1 = 120 -> 100 -> 55.
        let mut cmd = [-50.0, 120.0];
        assert_eq!(
            s.filter_command(&mut cmd, &present),
            CommandVerdict::Clamped
        );
        assert_eq!(cmd, [7.0, 55.0]);
        assert_eq!(
            (s.counters().limit_clamped, s.counters().step_clamped),
            (2, 2)
        );
        assert_eq!(s.last_safe(), Some(&[7.0f32, 55.0][..]));
        // Present outside the limits (joint 0 at 14): command 10 is within limits,
        // step clamp keeps it within 2 of 14 -> 12 (moves toward the range, no jump).
        let mut cmd = [10.0, 50.0];
        assert_eq!(
            s.filter_command(&mut cmd, &[14.0, 50.0]),
            CommandVerdict::Clamped
        );
        assert_eq!(cmd, [12.0, 50.0]);
    }

    #[test]
    fn command_nan_holds_last_safe() {
        let mut s = Safety::new(cfg2()).unwrap();
        // No last safe yet: NaN command -> present position.
        let mut cmd = [f32::NAN, 50.0];
        assert_eq!(
            s.filter_command(&mut cmd, &[1.0, 20.0]),
            CommandVerdict::Held
        );
        assert_eq!(cmd, [1.0, 20.0]);
        assert_eq!(s.counters().nan_rejected, 1);
        let mut cmd = [2.0, 22.0];
        assert_eq!(
            s.filter_command(&mut cmd, &[1.0, 20.0]),
            CommandVerdict::Passed
        );
        // NaN in present -> last safe (2, 22).
        let mut cmd = [3.0, 23.0];
        assert_eq!(
            s.filter_command(&mut cmd, &[f32::NAN, 20.0]),
            CommandVerdict::Held
        );
        assert_eq!(cmd, [2.0, 22.0]);
        // Inf in command -> last safe.
        let mut cmd = [3.0, f32::INFINITY];
        assert_eq!(
            s.filter_command(&mut cmd, &[2.0, 22.0]),
            CommandVerdict::Held
        );
        assert_eq!(cmd, [2.0, 22.0]);
        assert_eq!(s.counters().nan_rejected, 3);
        assert_eq!(s.counters().held, 0);
        // After reset, with NaN present and no last safe: nothing safe to send.
        s.reset();
        let mut cmd = [f32::NAN, 1.0];
        assert_eq!(
            s.filter_command(&mut cmd, &[f32::NAN, 0.0]),
            CommandVerdict::Blocked
        );
        assert!(cmd[0].is_nan());
        assert_eq!(s.counters().nan_rejected, 4);
        // Wrong command length: blocked.
        let mut short = [0.0f32; 1];
        assert_eq!(
            s.filter_command(&mut short, &[0.0, 0.0]),
            CommandVerdict::Blocked
        );
        assert_eq!(s.counters().shape_rejected, 1);
    }

    #[test]
    fn ramp_and_hold() {
        // max_step joint 0 = 2, ramp 4 ticks: limits 0.5, 1.0, 1.5, 2.0, 2.0 ...
        let mut s = Safety::new(SafetyConfig {
            ramp_ticks: 4,
            ..cfg2()
        })
        .unwrap();
        let present = [0.0, 50.0];
        let expected = [0.5f32, 1.0, 1.5, 2.0, 2.0];
        for (k, e) in expected.iter().enumerate() {
            let mut cmd = [5.0, 50.0];
            assert_eq!(
                s.filter_command(&mut cmd, &present),
                CommandVerdict::Clamped,
                "k={k}"
            );
            assert_eq!(cmd, [*e, 50.0], "k={k}");
        }
        assert_eq!(s.counters().step_clamped, 5);
        // Hold: last safe (2, 50), counts held, restarts the ramp.
        let mut out = [0.0f32; 2];
        assert_eq!(s.hold(&mut out, &[1.0, 49.0]), CommandVerdict::Held);
        assert_eq!(out, [2.0, 50.0]);
        assert_eq!(s.hold(&mut out, &[1.0, 49.0]), CommandVerdict::Held);
        assert_eq!(out, [2.0, 50.0]);
        assert_eq!(s.counters().held, 2);
        // Resume: ramp restarted -> 0.5 step, then 1.0.
        let mut cmd = [5.0, 50.0];
        s.filter_command(&mut cmd, &present);
        assert_eq!(cmd, [0.5, 50.0]);
        let mut cmd = [5.0, 50.0];
        s.filter_command(&mut cmd, &present);
        assert_eq!(cmd, [1.0, 50.0]);
        // A small command inside the ramped limit passes.
        let mut cmd = [0.25, 50.0];
        assert_eq!(s.filter_command(&mut cmd, &present), CommandVerdict::Passed);

        // reset: forget last safe -> hold uses the present position, which is
        // then held (not followed) on the next hold; ramp restarts.
        s.reset();
        assert_eq!(s.last_safe(), None);
        assert_eq!(s.hold(&mut out, &[3.0, 30.0]), CommandVerdict::Held);
        assert_eq!(out, [3.0, 30.0]);
        assert_eq!(s.hold(&mut out, &[2.5, 29.0]), CommandVerdict::Held);
        assert_eq!(out, [3.0, 30.0]);
        let mut cmd = [9.0, 30.0];
        s.filter_command(&mut cmd, &[3.0, 30.0]);
        assert_eq!(cmd, [3.5, 30.0]);
        assert_eq!(s.counters().held, 4); // counters survive reset
                                          // Hold with nothing known.
        s.reset();
        assert_eq!(s.hold(&mut out, &[f32::NAN, 0.0]), CommandVerdict::Blocked);
        assert_eq!(s.hold(&mut [0.0; 3], &[0.0, 0.0]), CommandVerdict::Blocked);
    }

    #[test]
    fn zero_allocations_in_steady_state() {
        let da = 6;
        let n = 50;
        let mut s = Safety::new(SafetyConfig {
            joint_min: vec![-100.0; da],
            joint_max: vec![100.0; da],
            max_step: vec![1.0; da],
            max_first_jump: vec![5.0; da],
            max_velocity: vec![100.0; da],
            max_jerk: vec![1.0e6; da],
            dt_s: 1.0 / 30.0,
            ramp_ticks: 10,
        })
        .unwrap();
        let mut chunk = vec![0.0f32; n * da];
        let mut cmd = vec![0.0f32; da];
        let mut present = vec![0.0f32; da];
        let before = alloc_count();
        let mut accepted = 0u32;
        for it in 0..3000u32 {
            for (i, v) in chunk.iter_mut().enumerate() {
                *v = ((i / da) as f32) * 0.5 + (it % 7) as f32 * 0.1;
            }
            if it % 97 == 0 {
                chunk[3] = f32::NAN;
            }
            if let ChunkVerdict::Accepted = s.check_chunk(&chunk, &present) {
                accepted += 1;
            }
            cmd.copy_from_slice(&chunk[..da]);
            cmd[0] += if it % 2 == 0 { 3.0 } else { 0.0 };
            if it % 50 == 0 {
                cmd[1] = f32::NAN;
            }
            let _ = s.filter_command(&mut cmd, &present);
            if it % 100 == 0 {
                s.hold(&mut cmd, &present);
            }
            if it % 1000 == 999 {
                s.reset();
            }
            present.copy_from_slice(&cmd);
        }
        let after = alloc_count();
        assert_eq!(after - before, 0);
        assert!(accepted > 2900, "{accepted}");
        let c = s.counters();
        assert!(c.chunk_nonfinite > 0 && c.nan_rejected > 0 && c.held > 0 && c.step_clamped > 0);
    }
}
