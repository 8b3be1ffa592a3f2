//! Writes metric families in the Prometheus text format (version 0.0.4) through prometheus-client.
//!
//! The values are snapshots read from the agent's reports at scrape time, so nothing is kept
//! between scrapes: each scrape builds a registry holding one collector with that scrape's
//! families, and the crate's encoder writes the names (adding `_total` to counters), the
//! labels and their escapes, `# HELP` and `# TYPE`.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, prometheus_text},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

/// A sample's labels, in the order they are written.
pub type Labels = Vec<(&'static str, String)>;

/// A family's samples, by type.
#[derive(Debug)]
enum Samples {
    Counters(Vec<(Labels, u64)>),
    Gauges(Vec<(Labels, u64)>),
    Fractions(Vec<(Labels, f64)>),
}

/// One metric family: its help, type and samples. Its `# HELP` and `# TYPE` are written even
/// when it has no samples.
#[derive(Debug)]
pub struct Family {
    /// A counter's name is given without `_total`, which the encoder adds.
    name: &'static str,
    help: &'static str,
    samples: Samples,
}

impl Family {
    /// A counter family; `name` without its `_total`.
    pub fn counter(name: &'static str, help: &'static str, samples: impl IntoIterator<Item = (Labels, u64)>) -> Self {
        Self { name, help, samples: Samples::Counters(samples.into_iter().collect()) }
    }

    /// A gauge family of whole numbers.
    pub fn gauge(name: &'static str, help: &'static str, samples: impl IntoIterator<Item = (Labels, u64)>) -> Self {
        Self { name, help, samples: Samples::Gauges(samples.into_iter().collect()) }
    }

    /// A gauge family of fractions.
    pub fn fraction_gauge(name: &'static str, help: &'static str, samples: impl IntoIterator<Item = (Labels, f64)>) -> Self {
        Self { name, help, samples: Samples::Fractions(samples.into_iter().collect()) }
    }
}

/// The families of one scrape, handed to the encoder.
#[derive(Debug)]
struct Snapshot(Vec<Family>);

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in &self.0 {
            let kind = match family.samples {
                Samples::Counters(_) => MetricType::Counter,
                Samples::Gauges(_) | Samples::Fractions(_) => MetricType::Gauge,
            };
            let mut metric = encoder.encode_descriptor(family.name, family.help, None, kind)?;
            match &family.samples {
                Samples::Counters(samples) => write(&mut metric, samples, ConstCounter::new)?,
                Samples::Gauges(samples) => write(&mut metric, samples, ConstGauge::new)?,
                Samples::Fractions(samples) => write(&mut metric, samples, ConstGauge::new)?,
            }
        }
        Ok(())
    }
}

/// Writes each sample as the metric `make` builds from its value.
fn write<V: Copy, M: EncodeMetric>(
    metric: &mut MetricEncoder,
    samples: &[(Labels, V)],
    make: fn(V) -> M,
) -> Result<(), std::fmt::Error> {
    samples.iter().try_for_each(|(labels, value)| make(*value).encode(metric.encode_family(labels)?))
}

/// The families in the Prometheus text format, in the order given.
pub fn encode(families: Vec<Family>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(families)));
    let mut text = String::new();
    // Writing to a String cannot fail, nor can encoding counts and fractions in this format
    // (`encodes_the_extremes` checks the largest and non-finite values).
    prometheus_text::encode(&mut text, &registry).expect("the text format encodes every count and fraction");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_gain_total_in_help_type_and_samples() {
        let text = encode(vec![Family::counter("lb_x", "Xs.", [(vec![("vip", "web".to_owned())], 4)])]);
        assert_eq!(text, "# HELP lb_x_total Xs.\n# TYPE lb_x_total counter\nlb_x_total{vip=\"web\"} 4\n");
    }

    #[test]
    fn a_family_without_samples_keeps_its_help_and_type_and_no_eof_is_written() {
        let text = encode(vec![Family::gauge("lb_g", "Gs.", []), Family::gauge("lb_h", "Hs.", [(vec![], 1)])]);
        assert_eq!(text, "# HELP lb_g Gs.\n# TYPE lb_g gauge\n# HELP lb_h Hs.\n# TYPE lb_h gauge\nlb_h 1\n");
    }

    #[test]
    fn label_values_are_escaped_and_kept_in_order() {
        let labels = vec![("vip", "a\"b\\c\nd".to_owned()), ("backend", "[fd00::2]:443".to_owned())];
        let text = encode(vec![Family::gauge("lb_g", "Gs.", [(labels, 2)])]);
        assert!(text.ends_with("\nlb_g{vip=\"a\\\"b\\\\c\\nd\",backend=\"[fd00::2]:443\"} 2\n"), "{text}");
    }

    #[test]
    fn encodes_the_extremes() {
        let text = encode(vec![
            Family::counter("lb_c", "Cs.", [(vec![], u64::MAX)]),
            Family::gauge("lb_g", "Gs.", [(vec![], u64::MAX)]),
            Family::fraction_gauge(
                "lb_f",
                "Fs.",
                [("0.0125", 0.0125), ("+Inf", f64::INFINITY), ("-Inf", f64::NEG_INFINITY), ("NaN", f64::NAN)]
                    .map(|(l, x)| (vec![("v", l.to_owned())], x)),
            ),
        ]);
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [
                "lb_c_total 18446744073709551615",
                "lb_g 18446744073709551615",
                "lb_f{v=\"0.0125\"} 0.0125",
                "lb_f{v=\"+Inf\"} +Inf",
                "lb_f{v=\"-Inf\"} -Inf",
                "lb_f{v=\"NaN\"} NaN",
            ]
        );
    }
}
