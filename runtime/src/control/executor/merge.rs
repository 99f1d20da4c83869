//! The timestep-indexed merge of a chunk into the queue (LeRobot
//! `_aggregate_action_queues`), shared by the Async and Rtc modes.

use super::Executor;

impl Executor {
    /// Rebuilds the queue from `chunk` (`(chunk_len, da)`, row `i` for timestep
    /// `start_timestep + i`): rows with `timestep <= last executed` are dropped;
    /// a row whose timestep is queued is written by `merge(i, old, new, dst)`
    /// (`old` = the queued row, `new` = chunk row `i`); other rows are copied;
    /// the queue becomes exactly these rows (queued timesteps absent from the
    /// chunk are discarded). Uses the preallocated scratch (no allocation).
    pub(super) fn merge_into_queue(
        &mut self,
        chunk: &[f32],
        start_timestep: u64,
        mut merge: impl FnMut(usize, &[f32], &[f32], &mut [f32]),
    ) {
        let da = self.da;
        let mut new_len = 0usize;
        let mut new_ts = 0u64;
        for (i, row) in chunk.chunks_exact(da).enumerate() {
            let Some(t) = start_timestep.checked_add(i as u64) else {
                break;
            };
            if self.last_executed.is_some_and(|le| t <= le) {
                continue;
            }
            let dst = &mut self.scratch[new_len * da..(new_len + 1) * da];
            let queued_idx = t
                .checked_sub(self.queue_ts)
                .filter(|&off| off < self.len as u64)
                .map(|off| self.head + off as usize);
            match queued_idx {
                Some(q) => merge(i, &self.queue[q * da..(q + 1) * da], row, dst),
                None => dst.copy_from_slice(row),
            }
            if new_len == 0 {
                new_ts = t;
            }
            new_len += 1;
        }
        std::mem::swap(&mut self.queue, &mut self.scratch);
        self.head = 0;
        self.len = new_len;
        self.queue_ts = new_ts;
    }
}
