//! Medians and spreads over repeated sets.

/// Summary of repeated measurements.
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    /// Number of values.
    pub n: usize,
    /// Median.
    pub median: f64,
    /// 25th percentile.
    pub p25: f64,
    /// 75th percentile.
    pub p75: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

/// The `q`-quantile of sorted `v` (linear interpolation).
fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

impl Summary {
    /// Summarises `values` (NaNs ignored).
    pub fn of(values: &[f64]) -> Summary {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
        v.sort_by(f64::total_cmp);
        Summary {
            n: v.len(),
            median: quantile(&v, 0.5),
            p25: quantile(&v, 0.25),
            p75: quantile(&v, 0.75),
            min: v.first().copied().unwrap_or(f64::NAN),
            max: v.last().copied().unwrap_or(f64::NAN),
        }
    }

    /// Half the interquartile range: the "±" shown next to the median.
    pub fn spread(&self) -> f64 {
        (self.p75 - self.p25) / 2.0
    }

    /// `median ±spread` with `digits` decimals.
    pub fn show(&self, digits: usize) -> String {
        format!("{:.*} ±{:.*}", digits, self.median, digits, self.spread())
    }

    /// As JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let f = |x: f64| if x.is_finite() { serde_json::json!((x * 1000.0).round() / 1000.0) } else { serde_json::Value::Null };
        serde_json::json!({
            "n": self.n,
            "median": f(self.median),
            "p25": f(self.p25),
            "p75": f(self.p75),
            "min": f(self.min),
            "max": f(self.max),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quartiles() {
        let s = Summary::of(&[5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!((s.median, s.p25, s.p75, s.min, s.max), (3.0, 2.0, 4.0, 1.0, 5.0));
        assert_eq!(s.spread(), 1.0);
        assert_eq!(Summary::of(&[1.0, 2.0]).median, 1.5);
        assert!(Summary::of(&[]).median.is_nan());
    }
}
