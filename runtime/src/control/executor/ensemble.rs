//! Temporal ensembling (LeRobot `ACTTemporalEnsembler`).

use super::Executor;

impl Executor {
    /// LeRobot `ACTTemporalEnsembler.update` without the final pop.
    /// `chunk` is `(chunk_len, da)` row-major (length already checked).
    pub(super) fn ensemble_update(&mut self, chunk: &[f32]) {
        let da = self.da;
        let n = self.chunk_len;
        if !self.ens_init {
            self.ens.copy_from_slice(chunk);
            self.ens_count.fill(1);
            self.ens_len = n;
            self.ens_init = true;
            return;
        }
        // Invariant: ens_len == n - 1 here (one row popped per update).
        let rows = self.ens_len.min(n - 1);
        let last_w = n - 1;
        for i in 0..rows {
            let c = self.ens_count[i].clamp(1, last_w.max(1));
            // wc[c-1], w[c], wc[c]; c <= n-1 by the LeRobot invariant
            // (count + position == n - 1), indices clamped defensively.
            let (wc_prev, w_c, wc_c) = (
                self.wc[c - 1],
                self.w[c.min(last_w)],
                self.wc[c.min(last_w)],
            );
            let e = &mut self.ens[i * da..(i + 1) * da];
            let a = &chunk[i * da..(i + 1) * da];
            for (ev, &av) in e.iter_mut().zip(a) {
                let mut v = *ev * wc_prev;
                v += av * w_c;
                v /= wc_c;
                *ev = v;
            }
            self.ens_count[i] = (c + 1).min(n);
        }
        // Append the last row of the new chunk with count 1.
        self.ens[rows * da..(rows + 1) * da].copy_from_slice(&chunk[(n - 1) * da..n * da]);
        self.ens_count[rows] = 1;
        self.ens_len = rows + 1;
    }
}
