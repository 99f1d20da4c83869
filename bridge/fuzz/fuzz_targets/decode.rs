//! Feeds arbitrary bytes to `maniflow_bridge::msg::decode` as every message
//! type. Decoding must never panic, whatever the input; when it succeeds, the
//! decoded value must encode again and decode to an equal value. The borrowed
//! image reader (`transport::image::ImageView::parse`) must agree with the
//! decoder on every input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use maniflow_bridge::msg::*;
use maniflow_bridge::transport::image::ImageView;

fn check<M: RosMessage + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(msg) = decode::<M>(data) {
        let again = encode_vec(&msg).expect("a decoded message must encode");
        let back: M = decode(&again).expect("our own encoding must decode");
        // NaN payloads are not equal to themselves; compare the bytes instead.
        assert_eq!(encode_vec(&back).unwrap(), again, "{}", M::ros_type_name());
    }
}

fuzz_target!(|data: &[u8]| {
    check::<Time>(data);
    check::<Duration>(data);
    check::<Header>(data);
    check::<Image>(data);
    check::<CompressedImage>(data);
    check::<JointState>(data);
    check::<MultiArrayDimension>(data);
    check::<MultiArrayLayout>(data);
    check::<Float32MultiArray>(data);
    check::<Float64MultiArray>(data);
    check::<JointTrajectoryPoint>(data);
    check::<JointTrajectory>(data);
    let view = ImageView::parse(data).map(|v| v.to_image());
    assert_eq!(view.ok(), decode::<Image>(data).ok(), "ImageView::parse vs decode");
});
