//! Plain-text tables for the CLI's human output.

/// Where a column's cells sit in their width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    /// Text: padded on the right.
    Left,
    /// Numbers: padded on the left, so units and digits line up.
    Right,
}

/// Formats rows under a header with columns padded to their widest cell.
#[allow(dead_code, reason = "the render functions align their number columns; kept for left-aligned tables")]
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    table_aligned(header, &[], rows)
}

/// Like [`table`], with an alignment per column (columns beyond `align` are left-aligned).
pub fn table_aligned(header: &[&str], align: &[Align], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| match align.get(i).copied().unwrap_or(Align::Left) {
                Align::Left => format!("{c:<w$}"),
                Align::Right => format!("{c:>w$}"),
            })
            .collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out += &line(row.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_columns() {
        let t = table(&["A", "LONGER"], &[vec!["xyz".into(), "1".into()], vec!["q".into(), "22".into()]]);
        assert_eq!(t, "A    LONGER\nxyz  1\nq    22\n");
    }

    #[test]
    fn right_aligns_numbers() {
        let t = table_aligned(
            &["NAME", "RATE", "NOTE"],
            &[Align::Left, Align::Right],
            &[vec!["a".into(), "1.2k pkt/s".into(), "x".into()], vec!["bb".into(), "3 pkt/s".into(), "".into()]],
        );
        assert_eq!(t, "NAME        RATE  NOTE\na     1.2k pkt/s  x\nbb       3 pkt/s\n");
    }
}
