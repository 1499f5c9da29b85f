//! Embeds uPlot (the dashboard's charts) from the cache that `scripts/setup.sh`
//! fills from the npm registry, at the version `assets/uplot.pin` names. Nothing
//! of it is in the repository.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let pin = manifest.join("assets/uplot.pin");
    println!("cargo:rerun-if-changed={}", pin.display());
    let text = std::fs::read_to_string(&pin).unwrap_or_else(|e| panic!("reading {}: {e}", pin.display()));
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("version="))
        .unwrap_or_else(|| panic!("{} names no version", pin.display()));
    let dir = manifest.join("../../.cache").join(format!("uplot-{}", version.trim()));
    for (file, var) in [("uPlot.iife.min.js", "MILLIONS_UPLOT_JS"), ("uPlot.min.css", "MILLIONS_UPLOT_CSS")] {
        let path = dir.join(file);
        println!("cargo:rerun-if-changed={}", path.display());
        if !path.is_file() {
            panic!(
                "{} is missing: the dashboard's charts (uPlot {version}) come from the npm registry; \
                 run `scripts/setup.sh` (or `make setup`) once to fetch and check them",
                path.display()
            );
        }
        println!("cargo:rustc-env={var}={}", path.display());
    }
}
