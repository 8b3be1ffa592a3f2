//! Builds the XDP program (`lb-ebpf`) for the BPF target so that `lb` embeds it.

fn main() -> anyhow::Result<()> {
    // aya-build watches lb-ebpf itself; the shared crate is compiled into the object too.
    println!("cargo:rerun-if-changed=../lb-common/src");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "lb-ebpf",
            root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../lb-ebpf"),
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
}
