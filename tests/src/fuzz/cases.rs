//! Which cases a seeded fuzz test of the configuration or the admin API runs, as the
//! environment picks them: `LB_FUZZ_SEED` (decimal or `0x` hexadecimal), `LB_FUZZ_CASE` (one
//! case alone, to replay it), `LB_FUZZ_CASES` (how many), `LB_FUZZ_SURVEY` (every failure
//! reported instead of stopping at the first).

/// The cases to run.
#[derive(Clone, Copy, Debug)]
pub struct Cases {
    /// The generator's seed.
    pub seed: u64,
    /// The one case to run alone, if any.
    pub only: Option<u64>,
    /// How many cases a run has.
    pub count: u64,
    /// Whether every failure is reported rather than the first.
    pub survey: bool,
}

impl Cases {
    /// The cases the environment asks for, `default_seed` and `default_count` otherwise.
    pub fn from_env(default_seed: u64, default_count: u64) -> Cases {
        Cases {
            seed: env_u64("LB_FUZZ_SEED").unwrap_or(default_seed),
            only: env_u64("LB_FUZZ_CASE"),
            count: env_u64("LB_FUZZ_CASES").unwrap_or(default_count),
            survey: std::env::var_os("LB_FUZZ_SURVEY").is_some(),
        }
    }

    /// The case indices to run, in order.
    pub fn indices(&self) -> Box<dyn Iterator<Item = u64>> {
        match self.only {
            Some(i) => Box::new(std::iter::once(i)),
            None => Box::new(0..self.count),
        }
    }
}

/// The number in environment variable `name`, decimal or `0x` hexadecimal.
fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}
