//! Builds the `upgrade-probe` variant of the XDP program (`lb-ebpf` with one extra counter) for
//! the end-to-end upgrade test: `$OUT_DIR/lb-xdp`.

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=../lb-common/src");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "lb-ebpf",
            root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../lb-ebpf"),
            features: &["upgrade-probe"],
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
}
