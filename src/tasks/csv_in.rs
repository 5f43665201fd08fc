//! Reading the task CSV back from a source owner, as spreadsheets save it: with or without
//! a byte order mark, CRLF or LF, columns reordered or added, trailing empty rows, and
//! cells still carrying the `'` the export put before formula-like values.

use super::csv_out::unescape_cell;

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
    pub line: u64,
    pub reason: String,
}

impl std::fmt::Display for BadRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// Parses the file; a problem with the header (no task_id or resolution column) is one
/// bad row at line 1 and nothing else is read.
pub fn parse(bytes: &[u8]) -> (Vec<Row>, Vec<BadRow>) {
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
    let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(bytes);
    let mut rows = Vec::new();
    let mut bad = Vec::new();
    let headers: Vec<String> = match rdr.headers() {
        Ok(h) => h.iter().map(|c| c.trim().to_ascii_lowercase()).collect(),
        Err(e) => {
            bad.push(BadRow {
                line: 1,
                reason: format!("cannot read the header row: {e}"),
            });
            return (rows, bad);
        }
    };
    let col = |name: &str| headers.iter().position(|h| h == name);
    let (Some(task_col), Some(res_col)) = (col("task_id"), col("resolution")) else {
        bad.push(BadRow {
            line: 1,
            reason: "the header row needs task_id and resolution columns".into(),
        });
        return (rows, bad);
    };
    let (source_col, by_col, note_col) = (col("source"), col("resolved_by"), col("note"));
    for record in rdr.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = line_of(bytes, e.position().map_or(0, |p| p.byte()));
                bad.push(BadRow {
                    line,
                    reason: format!("not a CSV row: {e}"),
                });
                continue;
            }
        };
        let line = line_of(bytes, record.position().map_or(0, |p| p.byte()));
        let cell = |i: Option<usize>| {
            i.and_then(|i| record.get(i))
                .map(|c| unescape_cell(c.trim()).to_string())
                .unwrap_or_default()
        };
        if record.iter().all(|c| c.trim().is_empty()) {
            continue; // spreadsheets save trailing empty rows
        }
        let task_text = cell(Some(task_col));
        let Some(task) = task_text
            .strip_prefix(['T', 't'])
            .unwrap_or(&task_text)
            .parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
        else {
            bad.push(BadRow {
                line,
                reason: format!("`{task_text}` is not a task id (like T12)"),
            });
            continue;
        };
        let resolution = match cell(Some(res_col)).to_ascii_uppercase().as_str() {
            "" => None,
            "DONE" => Some(Resolution::Done),
            "FAILED" => Some(Resolution::Failed),
            other => {
                bad.push(BadRow {
                    line,
                    reason: format!("resolution `{other}` is not DONE, FAILED or blank"),
                });
                continue;
            }
        };
        let source = source_col
            .map(|_| cell(source_col))
            .filter(|s| !s.is_empty());
        rows.push(Row {
            line,
            task,
            source,
            resolution,
            resolved_by: cell(by_col),
            note: cell(note_col),
        });
    }
    (rows, bad)
}

/// The 1-based line a byte offset is on (the csv crate miscounts lines ending in CRLF).
/// For CRLF files the offset it reports is that of the `\n` ending the previous line.
fn line_of(bytes: &[u8], offset: u64) -> u64 {
    let offset = offset as usize;
    let end = (offset + usize::from(bytes.get(offset) == Some(&b'\n'))).min(bytes.len());
    1 + bytes[..end].iter().filter(|b| **b == b'\n').count() as u64
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
        let (rows, bad) = parse(text.as_bytes());
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[0],
            Row {
                line: 2,
                task: 1,
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
    fn broken_rows_are_reported_with_their_line() {
        let text = "task_id,resolution\nT1,DONE\nX9,DONE\nT2,MAYBE\nT3,\n";
        let (rows, bad) = parse(text.as_bytes());
        assert_eq!(rows.len(), 2);
        assert_eq!(
            bad,
            [
                BadRow {
                    line: 3,
                    reason: "`X9` is not a task id (like T12)".into()
                },
                BadRow {
                    line: 4,
                    reason: "resolution `MAYBE` is not DONE, FAILED or blank".into()
                },
            ]
        );
        let (_, bad) = parse(b"id,status\n1,DONE\n");
        assert_eq!(bad[0].line, 1);
    }
}
