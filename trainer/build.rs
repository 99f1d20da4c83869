//! Put libtorch's directory on the rpath of `maniflow-train`, so the binary runs
//! without LD_LIBRARY_PATH, and check that the wheel is the torch `tch` 0.24
//! expects (2.11.x).

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Some(libtorch) = std::env::var_os("LIBTORCH").map(PathBuf::from) else {
        println!(
            "cargo:warning=LIBTORCH is not set; run `make bootstrap` (see .cargo/config.toml)"
        );
        return;
    };
    let version_py = libtorch.join("version.py");
    match std::fs::read_to_string(&version_py) {
        Ok(text) => {
            let v = text
                .lines()
                .find_map(|l| l.strip_prefix("__version__ = "))
                .map(|s| s.trim_matches(|c| c == '\'' || c == '"').to_string())
                .unwrap_or_default();
            if !v.starts_with("2.11.") {
                panic!(
                    "libtorch at {} is torch {v}, but tch 0.24 needs 2.11.x: run `make bootstrap` (torch==2.11.0)",
                    libtorch.display()
                );
            }
        }
        Err(e) => panic!(
            "no torch wheel at {} ({e}): run `make bootstrap` to install torch==2.11.0 into .venv",
            libtorch.display()
        ),
    }
    let lib = libtorch.join("lib");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
}
