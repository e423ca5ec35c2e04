//! Plain-text tables for terminals and logs.

/// Prints a left-aligned table with a header row; columns are as wide as their widest cell,
/// capped at `max_width` (longer cells overflow rather than being cut).
pub fn print<const N: usize>(header: [&str; N], rows: &[[String; N]], max_width: usize) {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count()).min(max_width);
        }
    }
    let header = header.map(str::to_owned);
    for row in std::iter::once(&header).chain(rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}
