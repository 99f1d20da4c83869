//! How an episode of the pick task ended, judged at its end (`maniflow eval`'s outcomes).

use super::SimWorld;

/// How an episode ended, judged by the simulator at its end.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    /// Slip task: squeezed past the cube's crush squeeze.
    Crushed,
    /// Grasped at some point, not in the jaws at the end (slipped out or released).
    Dropped,
    /// In the jaws at the end but not lifted (or, on the slip task, held too lightly).
    GraspedNotLifted,
    /// The jaws never held the cube.
    NeverGrasped,
    #[default]
    Unknown,
}

impl Outcome {
    /// The end of an episode: `succeeded` at some time, `ever_grasped` at some step.
    pub fn judge(world: &SimWorld, succeeded: bool, ever_grasped: bool) -> Outcome {
        if succeeded {
            Outcome::Success
        } else if world.is_crushed() {
            Outcome::Crushed
        } else if world.is_grasped() {
            Outcome::GraspedNotLifted
        } else if ever_grasped {
            Outcome::Dropped
        } else {
            Outcome::NeverGrasped
        }
    }

    /// The snake_case name serde writes (tested to agree).
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Crushed => "crushed",
            Outcome::Dropped => "dropped",
            Outcome::GraspedNotLifted => "grasped_not_lifted",
            Outcome::NeverGrasped => "never_grasped",
            Outcome::Unknown => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Outcome;

    /// `name()` (no allocation, for the eval's counts) and the JSON names serde derives agree.
    #[test]
    fn names_are_the_serialized_names() {
        use Outcome::*;
        for o in [Success, Crushed, Dropped, GraspedNotLifted, NeverGrasped, Unknown] {
            assert_eq!(serde_json::to_string(&o).unwrap(), format!("\"{}\"", o.name()));
            assert_eq!(serde_json::from_str::<Outcome>(&format!("\"{}\"", o.name())).unwrap(), o);
        }
    }
}
