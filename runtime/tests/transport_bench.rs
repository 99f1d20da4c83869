//! `maniflow transport-bench` between two processes, briefly: rows come back
//! with samples, our image subscriber gets them through shared memory, and a
//! missing Python peer is a skipped row with its reason, not an error. No
//! timing is asserted (numbers are for the benchmark, not the test).

use std::process::Command;

#[test]
fn transport_bench_two_processes_shm_and_skipped_peer() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let o = Command::new(env!("CARGO_BIN_EXE_maniflow"))
        .args([
            "transport-bench",
            "--transports",
            "zenoh-shm,python-zenoh",
            "--images",
            "5",
            "--joints",
            "10",
            "--port",
            "17971",
            "--python",
            "/nonexistent/python",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = v["rows"].as_array().unwrap();
    let ours: Vec<_> = rows
        .iter()
        .filter(|r| r["path"] == "maniflow -> maniflow")
        .collect();
    assert_eq!(ours.len(), 2, "{rows:?}");
    for r in &ours {
        assert!(r["skipped"].is_null(), "{r}");
        assert!(r["received"].as_u64().unwrap() > 0, "{r}");
    }
    let img = ours
        .iter()
        .find(|r| r["message"] == "Image 640x480 rgb8")
        .unwrap();
    assert_eq!(img["bytes"], 921_652);
    // "N of M samples in shm": on Linux the same-host subscriber maps the buffers.
    let shm = img["shm"].as_str().unwrap();
    if std::path::Path::new("/dev/shm").is_dir() {
        assert!(!shm.starts_with("0 of"), "{shm}");
    }
    let py: Vec<_> = rows
        .iter()
        .filter(|r| r["path"] == "python -> python")
        .collect();
    assert_eq!(py.len(), 2, "{rows:?}");
    for r in py {
        assert!(
            r["skipped"]
                .as_str()
                .unwrap()
                .contains("/nonexistent/python"),
            "{r}"
        );
    }
    assert!(out.contains("skipped"), "{out}");
}
