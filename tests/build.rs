//! Builds two variants of the XDP program for the end-to-end tests: the `upgrade-probe` build
//! (`lb-ebpf` with one extra counter), which the upgrade test replaces the running program
//! with, as `$OUT_DIR/lb-xdp`; and the `single-buffer` build (without XDP frags), which drivers
//! refuse at an MTU above a page, as `$OUT_DIR/lb-xdp-single-buffer`.

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=../lb-common/src");
    let out_dir = std::path::PathBuf::from(std::env::var_os("OUT_DIR").ok_or_else(|| anyhow::anyhow!("OUT_DIR not set"))?);
    let build = |features: &[&str]| {
        aya_build::build_ebpf(
            [aya_build::Package {
                name: "lb-ebpf",
                root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../lb-ebpf"),
                features,
                ..Default::default()
            }],
            aya_build::Toolchain::Nightly,
        )
    };
    // aya-build writes each build's program to `$OUT_DIR/lb-xdp`: the single-buffer one is moved
    // aside before the upgrade-probe build takes its place.
    build(&["single-buffer"])?;
    std::fs::rename(out_dir.join("lb-xdp"), out_dir.join("lb-xdp-single-buffer"))?;
    build(&["upgrade-probe"])
}
