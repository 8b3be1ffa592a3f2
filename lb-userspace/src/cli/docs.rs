//! The manual pages and shell completions, generated from the command-line definition
//! (`lb-docs DIR`; the Debian package installs them).

use std::{io, path::Path};

use clap_complete::Shell;

use super::command;

/// The shells completions are written for.
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// Writes `lb.1` and one page per subcommand (`lb-backend-add.1`, ...) into `out/man`, and the
/// completions (`lb.bash`, `_lb`, `lb.fish`) into `out/completions`.
pub fn generate(out: &Path) -> io::Result<()> {
    let man = out.join("man");
    let completions = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    clap_mangen::generate_to(command(), &man)?;
    for shell in SHELLS {
        clap_complete::generate_to(shell, &mut command(), "lb", &completions)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// A scratch directory, removed when dropped.
    struct Scratch(std::path::PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn writes_a_page_per_command_and_three_completions() {
        let dir = Scratch(std::env::temp_dir().join(format!("lb-docs-test-{}", std::process::id())));
        generate(&dir.0).unwrap();
        let names = |sub: &str| -> BTreeSet<String> {
            std::fs::read_dir(dir.0.join(sub)).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect()
        };
        let (man, completions) = (names("man"), names("completions"));
        let lb = std::fs::read_to_string(dir.0.join("man/lb.1")).unwrap();
        let bash = std::fs::read_to_string(dir.0.join("completions/lb.bash")).unwrap();

        let mut expected: BTreeSet<String> = BTreeSet::from(["lb.1".into()]);
        for sub in command().get_subcommands() {
            let name = sub.get_name();
            expected.insert(format!("lb-{name}.1"));
            expected.extend(sub.get_subcommands().map(|s| format!("lb-{name}-{}.1", s.get_name())));
        }
        assert_eq!(man, expected);
        for page in ["lb-run.1", "lb-backend-add.1", "lb-config-check.1", "lb-backend-setup.1"] {
            assert!(man.contains(page), "{page} in {man:?}");
        }
        assert!(!man.iter().any(|p| p.contains("help")), "no page for the help subcommand: {man:?}");
        assert_eq!(completions, BTreeSet::from(["lb.bash".into(), "_lb".into(), "lb.fish".into()]));
        assert!(lb.contains(super::super::VERSION), "lb.1 names the version and commit");
        assert!(bash.contains("backend-setup") && bash.contains("--socket"), "bash completes verbs and flags");
    }
}
