//! The synchronous control step: observation -> (inference when the executor
//! asks) -> chunk validation -> executor tick -> safety filter -> command.
//!
//! Used by `maniflow demo` and the allocation test; the threaded robot node
//! runs the same pieces with inference on its own thread. After `new`, `step`
//! performs no heap allocation.

use crate::control::executor::{Executor, ExecutorConfig, ExecutorMode, Tick};
use crate::control::safety::{ChunkVerdict, CommandVerdict, Safety, SafetyConfig};
use crate::error::EngineError;
use crate::policy::engine::Engine;

/// SO-101 safety limits in LeRobot units (degrees; gripper 0..100) for a control rate `fps`.
pub fn so101_safety(fps: f32) -> SafetyConfig {
    let limits = maniflow_bridge::so101::limits_lerobot_units();
    let per_joint = |arm: f32, gripper: f32| -> Vec<f32> {
        (0..limits.len())
            .map(|i| if i + 1 == limits.len() { gripper } else { arm })
            .collect()
    };
    SafetyConfig {
        joint_min: limits.iter().map(|l| l.0).collect(),
        joint_max: limits.iter().map(|l| l.1).collect(),
        // Per tick, against the present position: 300 deg/s for the arm (about
        // the STS3215's no-load speed; the scripted expert's commands lead the
        // servos by up to 7.9 deg at 30 Hz, which 180 deg/s clamped). The gripper
        // is commanded shut past the object it holds (the squeeze is the grip):
        // its whole range, as LeRobot does (no max_relative_target by default).
        max_step: per_joint(300.0 / fps, 100.0),
        max_first_jump: per_joint(30.0, 60.0),
        // Whole-chunk checks. Grippers are commanded open/closed in one step
        // (leader arms and the scripted expert do it: 50 -> 0 in one tick, 1500 %/s):
        // the gripper may traverse its whole range in one row of a chunk. What
        // reaches its servo is still bounded per tick by `max_step` (300 %/s).
        max_velocity: per_joint(360.0, 100.0 * fps),
        max_jerk: per_joint(1.0e6, 4.0 * 100.0 * fps * fps * fps),
        dt_s: 1.0 / fps,
        ramp_ticks: (fps * 0.5).round().max(1.0) as u32,
    }
}

/// What one control step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// An inference ran in this step.
    pub inferred: bool,
    /// The new chunk was rejected by the whole-chunk checks.
    pub chunk_rejected: bool,
    /// Base timestep of the executed action (`None` when the executor had none).
    pub timestep: Option<u64>,
    pub verdict: CommandVerdict,
}

pub struct Controller {
    pub engine: Engine,
    pub executor: Executor,
    pub safety: Safety,
    /// Rtc with a prefix policy: the prefix rows given to the engine,
    /// `(prefix_max, da)` (empty otherwise).
    prefix: Vec<f32>,
}

impl Controller {
    /// `Rtc { prefix: true }` gives the policy the prefix only when it takes
    /// one (`Engine::prefix_max() > 0`); for other policies it is the blend
    /// (`prefix: false`).
    pub fn new(
        engine: Engine,
        mut executor: ExecutorConfig,
        safety: SafetyConfig,
    ) -> Result<Controller, EngineError> {
        if let ExecutorMode::Rtc { prefix } = &mut executor.mode {
            *prefix = *prefix && engine.prefix_max() > 0;
        }
        let prefix_rows = match executor.mode {
            ExecutorMode::Rtc { prefix: true } => engine.prefix_max(),
            _ => 0,
        };
        let n_exec = match executor.mode {
            ExecutorMode::TemporalEnsemble { .. } => 1,
            _ => engine.n_action_steps(),
        };
        let ex = Executor::new(executor, engine.action_dim(), engine.chunk_len(), n_exec).map_err(
            |e| EngineError::Config {
                what: "executor".into(),
                message: e.to_string(),
            },
        )?;
        if safety.joint_min.len() != engine.action_dim() {
            return Err(EngineError::Config {
                what: "safety".into(),
                message: format!(
                    "limits cover {} joints, the policy's action has {}",
                    safety.joint_min.len(),
                    engine.action_dim()
                ),
            });
        }
        let sf = Safety::new(safety).map_err(|e| EngineError::Config {
            what: "safety".into(),
            message: e.to_string(),
        })?;
        let prefix = vec![0.0; prefix_rows * engine.action_dim()];
        Ok(Controller {
            engine,
            executor: ex,
            safety: sf,
            prefix,
        })
    }

    /// One control tick. `observe` writes the current observation into the
    /// engine (called only when an inference runs); `present` is the arm's
    /// position; the command is written to `out`.
    ///
    /// Rtc: the inference runs inside the step, so no action executes while
    /// it does: the measured delay is 0 and, with a prefix policy, the prefix
    /// given is `min(delay_estimate, prefix_max)` queued actions (none once a
    /// delay has been measured).
    pub fn step(
        &mut self,
        observe: impl FnOnce(&mut Engine) -> Result<(), EngineError>,
        present: &[f32],
        out: &mut [f32],
    ) -> Result<StepReport, EngineError> {
        let mut inferred = false;
        let mut chunk_rejected = false;
        if self.executor.needs_inference() {
            observe(&mut self.engine)?;
            if !self.prefix.is_empty() {
                let da = self.engine.action_dim();
                let d = self.executor.delay_estimate().min(self.prefix.len() / da);
                let rows = &mut self.prefix[..d * da];
                let d = if self.executor.prefix_rows(d, rows) > 0 {
                    d
                } else {
                    0
                };
                self.engine.set_prefix(&self.prefix[..d * da], d)?;
            }
            let chunk = self.engine.infer()?;
            inferred = true;
            match self.safety.check_chunk(chunk, present) {
                ChunkVerdict::Accepted => {
                    // Row 0 is for the next base step to execute (not the control
                    // tick: with interpolation there are M ticks per base step).
                    let start = self.executor.timestep();
                    self.executor
                        .push_chunk(chunk, start)
                        .map_err(|e| EngineError::Config {
                            what: "executor".into(),
                            message: e.to_string(),
                        })?;
                }
                ChunkVerdict::Rejected(_) => chunk_rejected = true,
            }
        }
        let (timestep, verdict) = match self.executor.tick(out) {
            Tick::Action { timestep, .. } => {
                (Some(timestep), self.safety.filter_command(out, present))
            }
            Tick::Empty => (None, self.safety.hold(out, present)),
        };
        Ok(StepReport {
            inferred,
            chunk_rejected,
            timestep,
            verdict,
        })
    }

    pub fn reset(&mut self) {
        self.executor.reset();
        self.safety.reset();
    }
}
