//! Training windows over episodes and the held-out episode split.
//!
//! [`Windows`] follows diffusion-policy's `SequenceSampler` with
//! `pad_before = n_obs_steps - 1` and `pad_after = n_action_steps - 1`: in an
//! episode of length `len`, a window starts at every `s` in
//! `-(To - 1) ..= len - horizon + (n_action_steps - 1)`, covers frames
//! `s .. s + horizon`, and positions outside the episode repeat its first / last
//! frame (edge padding) and are flagged in `action_is_pad`. The observation frames
//! are the first `To` of the window.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::reader::LeRobotDataset;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    /// To: observation frames per sample.
    pub n_obs_steps: usize,
    /// Frames per window (action chunk length).
    pub horizon: usize,
    /// Actions executed per chunk (sets the padding after the episode end).
    pub n_action_steps: usize,
}

/// One sample: global frame indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// `n_obs_steps` global frame indices (clamped into the episode).
    pub obs_frames: Vec<usize>,
    /// `horizon` global frame indices (clamped into the episode).
    pub action_frames: Vec<usize>,
    pub episode: usize,
    /// True where the window position lies outside the episode (edge-padded).
    pub action_is_pad: Vec<bool>,
}

#[derive(Debug, Clone)]
struct EpisodeSpan {
    episode: usize,
    from: usize,
    len: usize,
    first_start: i64,
    /// Index of this episode's first sample.
    offset: usize,
}

/// Every sample position of the chosen episodes.
#[derive(Debug, Clone)]
pub struct Windows {
    spec: WindowSpec,
    spans: Vec<EpisodeSpan>,
    len: usize,
}

impl Windows {
    pub fn new(ds: &LeRobotDataset, episodes: &[usize], spec: WindowSpec) -> Self {
        let lens: Vec<(usize, usize, usize)> = episodes
            .iter()
            .filter(|&&e| e < ds.num_episodes())
            .map(|&e| {
                let r = ds.episode_range(e);
                (e, r.start, r.len())
            })
            .collect();
        Self::from_lengths(&lens, spec)
    }

    /// Windows over `(episode, first global frame, length)` triples.
    pub fn from_lengths(episodes: &[(usize, usize, usize)], spec: WindowSpec) -> Self {
        let to = spec.n_obs_steps.max(1) as i64;
        let pad_after = spec.n_action_steps.max(1) as i64 - 1;
        let horizon = spec.horizon.max(1) as i64;
        let mut spans = Vec::new();
        let mut total = 0usize;
        for &(episode, from, len) in episodes {
            let first = -(to - 1);
            let last = len as i64 - horizon + pad_after;
            let count = if len == 0 || last < first {
                0
            } else {
                (last - first + 1) as usize
            };
            if count > 0 {
                spans.push(EpisodeSpan {
                    episode,
                    from,
                    len,
                    first_start: first,
                    offset: total,
                });
                total += count;
            }
        }
        Windows {
            spec,
            spans,
            len: total,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn spec(&self) -> WindowSpec {
        self.spec
    }

    /// Sample `i` (`0..len()`); panics when out of range.
    pub fn sample(&self, i: usize) -> Window {
        assert!(i < self.len, "window {i} out of range (len {})", self.len);
        let span_idx = self.spans.partition_point(|s| s.offset <= i) - 1;
        let sp = &self.spans[span_idx];
        let start = sp.first_start + (i - sp.offset) as i64;
        let horizon = self.spec.horizon.max(1);
        let last = sp.len as i64 - 1;
        let mut action_frames = Vec::with_capacity(horizon);
        let mut action_is_pad = Vec::with_capacity(horizon);
        for k in 0..horizon as i64 {
            let t = start + k;
            action_is_pad.push(t < 0 || t > last);
            action_frames.push(sp.from + t.clamp(0, last) as usize);
        }
        let to = self.spec.n_obs_steps.max(1).min(horizon);
        let mut obs_frames: Vec<usize> = action_frames[..to].to_vec();
        // n_obs_steps > horizon: keep extending with the clamped frame grid.
        for k in to..self.spec.n_obs_steps {
            obs_frames.push(sp.from + (start + k as i64).clamp(0, last) as usize);
        }
        Window {
            obs_frames,
            action_frames,
            episode: sp.episode,
            action_is_pad,
        }
    }

    /// Number of samples of each episode, in the order given to `new`.
    pub fn per_episode(&self) -> Vec<(usize, usize)> {
        self.spans
            .iter()
            .enumerate()
            .map(|(j, s)| {
                let end = self.spans.get(j + 1).map_or(self.len, |n| n.offset);
                (s.episode, end - s.offset)
            })
            .collect()
    }
}

/// Held-out split by episode (diffusion-policy `get_val_mask`): `round(n * val_ratio)`
/// episodes, at least 1 when `n >= 2` and `val_ratio > 0`, at most `n - 1`, chosen
/// by a seeded shuffle. Both lists are sorted. Deterministic in `(n, val_ratio, seed)`.
pub fn split_episodes(n_episodes: usize, val_ratio: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let all: Vec<usize> = (0..n_episodes).collect();
    if n_episodes < 2 || val_ratio.is_nan() || val_ratio <= 0.0 {
        return (all, Vec::new());
    }
    let n_val = ((n_episodes as f64 * val_ratio).round() as usize).clamp(1, n_episodes - 1);
    let mut order = all;
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let mut val = order[..n_val].to_vec();
    let mut train = order[n_val..].to_vec();
    val.sort_unstable();
    train.sort_unstable();
    (train, val)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(to: usize, h: usize, na: usize) -> WindowSpec {
        WindowSpec {
            n_obs_steps: to,
            horizon: h,
            n_action_steps: na,
        }
    }

    #[test]
    fn counts_match_diffusion_policy_sampler() {
        // len 10, To 2, horizon 16, n_action 8: starts -1 ..= 10 - 16 + 7 = 1 -> 3 samples.
        let w = Windows::from_lengths(&[(0, 0, 10)], spec(2, 16, 8));
        assert_eq!(w.len(), 3);
        // len 60, To 2, horizon 16, n_action 8: -1 ..= 51 -> 53.
        let w = Windows::from_lengths(&[(0, 0, 60), (1, 60, 40)], spec(2, 16, 8));
        assert_eq!(w.per_episode(), vec![(0, 53), (1, 33)]);
        assert_eq!(w.len(), 86);
        // Too short for any window: len 3, To 1, horizon 8, n_action 1 -> 0..=-5: none.
        assert!(Windows::from_lengths(&[(0, 0, 3)], spec(1, 8, 1)).is_empty());
    }

    #[test]
    fn padding_at_both_ends_repeats_edge_frames() {
        let w = Windows::from_lengths(&[(4, 100, 10)], spec(3, 6, 4));
        // First sample starts at -2.
        let first = w.sample(0);
        assert_eq!(first.episode, 4);
        assert_eq!(first.action_frames, vec![100, 100, 100, 101, 102, 103]);
        assert_eq!(
            first.action_is_pad,
            vec![true, true, false, false, false, false]
        );
        assert_eq!(first.obs_frames, vec![100, 100, 100]);
        // Last sample starts at 10 - 6 + 3 = 7: frames 7, 8, 9, then padding.
        let last = w.sample(w.len() - 1);
        assert_eq!(last.action_frames, vec![107, 108, 109, 109, 109, 109]);
        assert_eq!(
            last.action_is_pad,
            vec![false, false, false, true, true, true]
        );
        assert_eq!(last.obs_frames, vec![107, 108, 109]);
        // Every window stays inside its episode.
        for i in 0..w.len() {
            assert!(w
                .sample(i)
                .action_frames
                .iter()
                .all(|f| (100..110).contains(f)));
        }
    }

    #[test]
    fn split_is_disjoint_deterministic_and_nonempty() {
        let (t1, v1) = split_episodes(20, 0.1, 7);
        let (t2, v2) = split_episodes(20, 0.1, 7);
        assert_eq!((t1.clone(), v1.clone()), (t2, v2));
        assert_eq!(v1.len(), 2);
        assert!(v1.iter().all(|e| !t1.contains(e)));
        let mut all: Vec<usize> = t1.iter().chain(&v1).copied().collect();
        all.sort();
        assert_eq!(all, (0..20).collect::<Vec<_>>());
        assert_ne!(
            split_episodes(20, 0.1, 8).1,
            v1,
            "another seed gives another split"
        );
        assert_eq!(
            split_episodes(2, 0.01, 0).1.len(),
            1,
            "at least one val episode"
        );
        assert_eq!(
            split_episodes(3, 0.99, 0).0.len(),
            1,
            "at least one train episode"
        );
        assert!(split_episodes(1, 0.5, 0).1.is_empty());
        assert!(split_episodes(10, 0.0, 0).1.is_empty());
    }
}
