//! Reading the task CSV back from a source owner, as spreadsheets save it: in any of the
//! encodings `decode` detects, CRLF or LF, columns reordered or added, trailing empty rows,
//! and cells still carrying the `'` the export put before formula-like values. A bad row
//! is named as the spreadsheet shows it: row number, column letter and header.

use super::csv_out::unescape_cell;
use super::decode::{column_letter, repair};

/// The owner's answer on one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Done,
    Failed,
}

impl Resolution {
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Done => "DONE",
            Resolution::Failed => "FAILED",
        }
    }
}

/// One row that names a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Line in the file (the header is line 1).
    pub line: u64,
    pub task: i64,
    /// Where the task id is (`A (task_id)`), for errors about it.
    pub task_cell: String,
    /// The source the row says the task belongs to (if the file has that column).
    pub source: Option<String>,
    /// None: left blank, the task stays open.
    pub resolution: Option<Resolution>,
    pub resolved_by: String,
    pub note: String,
}

/// A row that cannot be applied, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    /// The row as the spreadsheet numbers it (the header is row 1).
    pub line: u64,
    /// The column, as the spreadsheet shows it: `N (resolution)`.
    pub column: Option<String>,
    /// The workbook's sheet (xlsx).
    pub sheet: Option<String>,
    pub reason: String,
}

impl BadRow {
    pub fn new(line: u64, reason: String) -> Self {
        Self {
            line,
            column: None,
            sheet: None,
            reason,
        }
    }

    pub fn at(line: u64, column: String, reason: String) -> Self {
        Self {
            line,
            column: Some(column),
            sheet: None,
            reason,
        }
    }
}

impl std::fmt::Display for BadRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(s) = &self.sheet {
            write!(f, "sheet {s}, ")?;
        }
        match &self.column {
            Some(c) => write!(f, "row {}, column {c}: {}", self.line, self.reason),
            None => write!(f, "row {}: {}", self.line, self.reason),
        }
    }
}

/// A column as the spreadsheet names it: letter and header.
fn cell_name(i: usize, header: &str) -> String {
    format!("{} ({header})", column_letter(i))
}

/// Parses the file; a problem with the header (no task_id or resolution column) is one
/// bad row at line 1 and nothing else is read.
pub fn parse(text: &str) -> (Vec<Row>, Vec<BadRow>) {
    let bytes = text.strip_prefix('\u{feff}').unwrap_or(text).as_bytes();
    let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(bytes);
    let headers: Vec<String> = match rdr.headers() {
        Ok(h) => h.iter().map(String::from).collect(),
        Err(e) => {
            return (
                Vec::new(),
                vec![BadRow::new(1, format!("cannot read the header row: {e}"))],
            );
        }
    };
    let mut lines = LineCounter::default();
    let records = rdr.records().map(|record| match record {
        Ok(r) => {
            let line = lines.line_of(bytes, r.position().map_or(0, |p| p.byte()));
            Ok((line, r.iter().map(String::from).collect()))
        }
        Err(e) => {
            let line = lines.line_of(bytes, e.position().map_or(0, |p| p.byte()));
            Err(BadRow::new(line, format!("not a CSV row: {e}")))
        }
    });
    parse_records(&headers, records)
}

/// A record: its row number and cells, or why it could not be read.
pub type Record = Result<(u64, Vec<String>), BadRow>;

/// The rows of a table (CSV or a workbook's sheet) under `headers`.
pub fn parse_records(
    headers: &[String],
    records: impl Iterator<Item = Record>,
) -> (Vec<Row>, Vec<BadRow>) {
    let mut rows = Vec::new();
    let mut bad = Vec::new();
    let headers: Vec<String> = headers.iter().map(|c| header_name(c)).collect();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let (Some(task_col), Some(res_col)) = (col("task_id"), col("resolution")) else {
        bad.push(BadRow::new(
            1,
            "the header row needs task_id and resolution columns".into(),
        ));
        return (rows, bad);
    };
    let (source_col, by_col, note_col) = (col("source"), col("resolved_by"), col("note"));
    for record in records {
        let (line, record) = match record {
            Ok(r) => r,
            Err(b) => {
                bad.push(b);
                continue;
            }
        };
        let cell = |i: Option<usize>| {
            i.and_then(|i| record.get(i))
                .map(|c| unescape_cell(repair(c).trim()).to_string())
                .unwrap_or_default()
        };
        if record.iter().all(|c| c.trim().is_empty()) {
            continue; // spreadsheets save trailing empty rows
        }
        let task_text = cell(Some(task_col));
        let task_cell = cell_name(task_col, "task_id");
        let Some(task) = task_id(&task_text) else {
            bad.push(BadRow::at(
                line,
                task_cell,
                format!("`{task_text}` is not a task id (like T12)"),
            ));
            continue;
        };
        let resolution = match cell(Some(res_col)).to_ascii_uppercase().as_str() {
            // VERIFIED: an account export closed it (DESIGN §17), not the owner; a file
            // exported with it and handed back unchanged leaves it as it is.
            "" | "VERIFIED" => None,
            "DONE" => Some(Resolution::Done),
            "FAILED" => Some(Resolution::Failed),
            other => {
                bad.push(BadRow::at(
                    line,
                    cell_name(res_col, "resolution"),
                    format!("`{other}` is not DONE, FAILED or blank"),
                ));
                continue;
            }
        };
        let source = source_col
            .map(|_| cell(source_col))
            .filter(|s| !s.is_empty());
        rows.push(Row {
            line,
            task,
            task_cell,
            source,
            resolution,
            resolved_by: cell(by_col),
            note: cell(note_col),
        });
    }
    (rows, bad)
}

/// Does the header row have this column (case-insensitive)?
pub fn header_has(text: &str, name: &str) -> bool {
    let bytes = text.strip_prefix('\u{feff}').unwrap_or(text).as_bytes();
    csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(bytes)
        .headers()
        .is_ok_and(|h| h.iter().any(|c| header_name(c) == name))
}

/// A header cell as a column name: a byte order mark (or what became of one when the file
/// was read as Windows-1252) and case do not count.
fn header_name(cell: &str) -> String {
    repair(cell)
        .trim_start_matches('\u{feff}')
        .trim()
        .to_ascii_lowercase()
}

/// `T12`, `t12` or `12`: digits only after the optional `T` (`+5`, `-3`, ` 7` and `T0`
/// are not task ids, though Rust's integer parser would take some of them).
pub fn task_id(text: &str) -> Option<i64> {
    let digits = text.strip_prefix(['T', 't']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<i64>().ok().filter(|n| *n > 0)
}

/// Turns the csv crate's byte offsets into 1-based lines (it miscounts lines ending in
/// CRLF). Offsets only grow, so it counts each byte once: linear in the file, where
/// counting from the start for every row made a 200,000-row import take minutes.
#[derive(Default)]
struct LineCounter {
    /// Bytes counted so far, and the newlines among them.
    upto: usize,
    newlines: u64,
}

impl LineCounter {
    /// For CRLF files the offset the csv crate reports is that of the `\n` ending the
    /// previous line.
    fn line_of(&mut self, bytes: &[u8], offset: u64) -> u64 {
        let offset = offset as usize;
        let end = (offset + usize::from(bytes.get(offset) == Some(&b'\n'))).min(bytes.len());
        if end > self.upto {
            self.newlines += bytes[self.upto..end]
                .iter()
                .filter(|b| **b == b'\n')
                .count() as u64;
            self.upto = end;
        }
        1 + self.newlines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spreadsheet_round_trip_is_read() {
        let text = "\u{feff}note,Resolution,task_id,extra,source,resolved_by\r\n\
                    all good,done,T1,x,flat,'=bob\r\n\
                    ,,T2,,flat,\r\n\
                    'no account,FAILED,3,,flat,ann\r\n\
                    ,,,,,\r\n\
                    \r\n";
        let (rows, bad) = parse(text);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[0],
            Row {
                line: 2,
                task: 1,
                task_cell: "C (task_id)".into(),
                source: Some("flat".into()),
                resolution: Some(Resolution::Done),
                resolved_by: "=bob".into(),
                note: "all good".into()
            }
        );
        assert_eq!(rows[1].resolution, None, "blank leaves it open");
        assert_eq!(rows[2].task, 3);
        assert_eq!(
            rows[2].note, "'no account",
            "a ' before a harmless character is the owner's own"
        );
        assert_eq!(rows[2].resolution, Some(Resolution::Failed));
    }

    #[test]
    fn task_ids_are_digits_after_an_optional_t() {
        assert_eq!(task_id("T12"), Some(12));
        assert_eq!(task_id("t12"), Some(12));
        assert_eq!(task_id("12"), Some(12));
        for bad in [
            "+5",
            "-3",
            "T+5",
            "T",
            "",
            "T0",
            "1e3",
            "T 5",
            "99999999999999999999",
        ] {
            assert_eq!(task_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn lines_are_counted_once_per_byte() {
        let mut text = String::from("task_id,resolution\r\n");
        for i in 1..=20_000 {
            text.push_str(&format!("T{i},DONE\r\n"));
        }
        let (rows, bad) = parse(&text);
        assert!(bad.is_empty());
        assert_eq!(rows.len(), 20_000);
        assert_eq!(rows[19_999].line, 20_001);
        // Every byte is looked at once, whatever the number of rows (counting from the
        // start for each row looked at ~200 million here).
        let mut c = LineCounter::default();
        let bytes = text.as_bytes();
        let mut scanned = 0;
        for (at, _) in text.match_indices("\r\n") {
            let before = c.upto;
            c.line_of(bytes, at as u64 + 1);
            scanned += c.upto - before;
        }
        assert!(scanned <= bytes.len(), "{scanned} > {}", bytes.len());
        assert_eq!(c.line_of(bytes, bytes.len() as u64 - 1), 20_002);
    }

    #[test]
    fn broken_rows_are_reported_with_their_line() {
        let text = "task_id,resolution\nT1,DONE\nX9,DONE\nT2,MAYBE\nT3,\n";
        let (rows, bad) = parse(text);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            bad,
            [
                BadRow::at(
                    3,
                    "A (task_id)".into(),
                    "`X9` is not a task id (like T12)".into()
                ),
                BadRow::at(
                    4,
                    "B (resolution)".into(),
                    "`MAYBE` is not DONE, FAILED or blank".into()
                ),
            ]
        );
        assert_eq!(
            bad[1].to_string(),
            "row 4, column B (resolution): `MAYBE` is not DONE, FAILED or blank"
        );
        let (_, bad) = parse("id,status\n1,DONE\n");
        assert_eq!(bad[0].line, 1);
    }
}
