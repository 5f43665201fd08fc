//! Answering an auditor (DESIGN §14): what each identity holds now, which removals came
//! from removeDates and how late each was, and the audit trail filtered and paged. The
//! store returns rows; this stage shapes them the same way for the CLI and the HTTP API
//! (JSON objects, CSV with the tasks' formula guard, terminal tables).

pub mod access;
pub mod trail;

use std::io::Write;

use crate::tasks::csv_out::escape_cell;

/// The output formats a listing can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Csv,
}

impl Format {
    /// `table`, `json` or `csv`; `allowed` lists the ones the command offers.
    pub fn parse(text: &str, allowed: &[Format]) -> Result<Self, String> {
        let f = match text {
            "table" => Format::Table,
            "json" => Format::Json,
            "csv" => Format::Csv,
            _ => return Err(Self::refusal(text, allowed)),
        };
        if allowed.contains(&f) {
            Ok(f)
        } else {
            Err(Self::refusal(text, allowed))
        }
    }

    fn refusal(text: &str, allowed: &[Format]) -> String {
        let names: Vec<&str> = allowed.iter().map(|f| f.name()).collect();
        format!(
            "--format: must be {}, not `{}`",
            names.join(" or "),
            text.escape_debug()
        )
    }

    fn name(self) -> &'static str {
        match self {
            Format::Table => "table",
            Format::Json => "json",
            Format::Csv => "csv",
        }
    }
}

/// Writes a header and rows as CSV; every cell that a spreadsheet could take for a
/// formula is guarded as in task exports (a value an identity or requester chose may
/// start with `=`).
pub fn write_csv(
    out: impl Write,
    header: &[&str],
    rows: impl IntoIterator<Item = Vec<String>>,
) -> Result<(), csv::Error> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(header)?;
    for row in rows {
        w.write_record(row.iter().map(|c| escape_cell(c).into_owned()))?;
    }
    w.flush()?;
    Ok(())
}

/// A terminal table: columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_guarded_and_tables_line_up() {
        let mut out = Vec::new();
        write_csv(
            &mut out,
            &["a", "b"],
            vec![vec!["=1+1".into(), "plain".into()]],
        )
        .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "a,b\n'=1+1,plain\n");
        let t = table(&["id", "x"], &[vec!["longer".into(), "1".into()]]);
        assert_eq!(t, "id      x\nlonger  1\n");
        assert_eq!(
            Format::parse("csv", &[Format::Json, Format::Csv]),
            Ok(Format::Csv)
        );
        let e = Format::parse("table", &[Format::Json, Format::Csv]).unwrap_err();
        assert!(e.contains("json or csv"), "{e}");
    }
}
