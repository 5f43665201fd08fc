//! Reading the owners' workbook back (`calamine`): every sheet but the instructions is a
//! source's tasks, its header row names the columns (reordered or added columns are
//! fine, as in CSV). A sheet stands for its source, so a workbook answers for several
//! sources at once without a `source` column.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};

use calamine::{Data, Reader, Xlsx};

use super::csv_in::{BadRow, Record, Row, parse_records};

/// Does this look like an xlsx file (a ZIP archive)?
pub fn is_xlsx(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04")
}

pub(crate) fn text(d: &Data) -> String {
    match d {
        Data::Empty => String::new(),
        Data::String(s) | Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
        Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
        Data::Float(f) => f.to_string(),
        Data::Int(i) => i.to_string(),
        Data::Bool(b) => b.to_string(),
        Data::DateTime(dt) => dt.as_f64().to_string(),
        Data::Error(e) => format!("{e:?}"),
    }
}

/// The widest a task sheet may be: far more than the columns provd writes, far less
/// than Excel's 16,384. One cell at XFD1048576 must not make a 16,384-column row.
const MAX_COLUMNS: u32 = 256;

/// What the workbook's parts may unpack to in all: a 200,000-task workbook is some
/// 100 MiB of XML; a zip bomb is far more.
const MAX_UNPACKED: u64 = 256 << 20;

/// The most parts (files) a workbook may hold.
const MAX_PARTS: usize = 10_000;

/// Checks what the archive unpacks to before anything is read into memory: the sizes
/// its directory declares, then what each part really inflates to (counted, not kept,
/// since a declared size can lie).
fn check_archive(bytes: &[u8]) -> Result<(), String> {
    check_archive_within(bytes, MAX_UNPACKED)
}

fn check_archive_within(bytes: &[u8], max_unpacked: u64) -> Result<(), String> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| format!("not a readable xlsx workbook: {e}"))?;
    if zip.len() > MAX_PARTS {
        return Err(format!(
            "the workbook holds {} parts; at most {MAX_PARTS} are read",
            zip.len()
        ));
    }
    let too_big = || {
        format!(
            "the workbook unpacks to more than {} MiB; split it, or export fewer tasks per file",
            max_unpacked >> 20
        )
    };
    let mut total = 0u64;
    for i in 0..zip.len() {
        let mut part = zip
            .by_index(i)
            .map_err(|e| format!("not a readable xlsx workbook: {e}"))?;
        let left = max_unpacked.saturating_sub(total);
        if part.size() > left {
            return Err(too_big());
        }
        let n = std::io::copy(&mut (&mut part).take(left + 1), &mut std::io::sink())
            .map_err(|e| format!("not a readable xlsx workbook: {e}"))?;
        total += n;
        if total > max_unpacked {
            return Err(too_big());
        }
    }
    Ok(())
}

/// `A1`-style name of a 0-based (row, column).
fn cell_name(row: u32, col: u32) -> String {
    let mut letters = Vec::new();
    let mut c = col + 1;
    while c > 0 {
        let rem = (c - 1) % 26;
        letters.push(char::from(b'A' + rem as u8));
        c = (c - 1) / 26;
    }
    letters.reverse();
    format!("{}{}", letters.into_iter().collect::<String>(), row + 1)
}

/// A sheet's non-empty rows by 0-based index, each as wide as the widest, read cell by
/// cell: only cells that exist take memory, whatever the sheet says its size is.
fn sheet_rows(
    wb: &mut Xlsx<Cursor<Vec<u8>>>,
    name: &str,
) -> Result<BTreeMap<u32, Vec<String>>, String> {
    let mut reader = wb.worksheet_cells_reader(name).map_err(|e| e.to_string())?;
    let declared = reader.dimensions();
    if declared.end.1 >= MAX_COLUMNS {
        return Err(format!(
            "it says it reaches cell {}; a task sheet has at most {MAX_COLUMNS} columns",
            cell_name(declared.end.0, declared.end.1)
        ));
    }
    let mut rows: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let mut width = 0;
    while let Some(cell) = reader.next_cell().map_err(|e| e.to_string())? {
        let (r, c) = cell.get_position();
        if c >= MAX_COLUMNS {
            return Err(format!(
                "cell {} is past the last column a task sheet may use ({})",
                cell_name(r, c),
                cell_name(r, MAX_COLUMNS - 1)
            ));
        }
        let value = text(&Data::from(cell.get_value().clone()));
        if value.is_empty() {
            continue;
        }
        let row = rows.entry(r).or_default();
        let c = c as usize;
        if row.len() <= c {
            row.resize(c + 1, String::new());
        }
        row[c] = value;
        width = width.max(c + 1);
    }
    for row in rows.values_mut() {
        row.resize(width, String::new());
    }
    Ok(rows)
}

/// The rows of every task sheet; a workbook that cannot be read is one bad row.
pub fn parse(bytes: &[u8]) -> (Vec<Row>, Vec<BadRow>) {
    if let Err(e) = check_archive(bytes) {
        return (Vec::new(), vec![BadRow::new(1, e)]);
    }
    let mut wb = match Xlsx::new(Cursor::new(bytes.to_vec())) {
        Ok(wb) => wb,
        Err(e) => {
            return (
                Vec::new(),
                vec![BadRow::new(1, format!("not a readable xlsx workbook: {e}"))],
            );
        }
    };
    let (mut rows, mut bad) = (Vec::new(), Vec::new());
    for name in wb.sheet_names() {
        if name.eq_ignore_ascii_case("instructions") {
            continue;
        }
        let sheet = match sheet_rows(&mut wb, &name) {
            Ok(r) => r,
            Err(e) => {
                bad.push(BadRow::new(1, format!("sheet `{name}`: {e}")));
                continue;
            }
        };
        let mut all = sheet.into_iter();
        let Some((_, header)) = all.next() else {
            continue; // an empty sheet
        };
        // A row's line is its 1-based number in the sheet, as the owner sees it.
        let records = all.map(|(r, cells)| -> Record { Ok((u64::from(r) + 1, cells)) });
        let (mut r, b) = parse_records(&header, records);
        for row in &mut r {
            row.source.get_or_insert_with(|| name.clone());
        }
        rows.extend(r);
        bad.extend(b.into_iter().map(|mut b| {
            b.sheet = Some(name.clone());
            b
        }));
    }
    (rows, bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn workbook(cells: &[(u32, u16, &str)]) -> Vec<u8> {
        let mut wb = rust_xlsxwriter::Workbook::new();
        let ws = wb.add_worksheet().set_name("flat").unwrap();
        for (r, c, v) in cells {
            ws.write(*r, *c, *v).unwrap();
        }
        wb.save_to_buffer().unwrap()
    }

    #[test]
    fn a_cell_at_the_far_corner_is_refused_by_name_without_allocating_the_sheet() {
        let bytes = workbook(&[(0, 0, "task_id"), (1, 0, "T1"), (1_048_575, 16_383, "x")]);
        let (rows, bad) = parse(&bytes);
        assert!(rows.is_empty());
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].reason.contains("XFD1048576"), "{:?}", bad[0].reason);
    }

    #[test]
    fn rows_keep_their_sheet_line_numbers() {
        let bytes = workbook(&[
            (2, 1, "task_id"),
            (2, 2, "resolution"),
            (5, 1, "T7"),
            (5, 2, "DONE"),
        ]);
        let (rows, bad) = parse(&bytes);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].line, 6);
    }

    #[test]
    fn an_archive_that_unpacks_past_the_limit_is_refused_before_it_is_read() {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        zip.start_file(
            "xl/sharedStrings.xml",
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        let zeros = vec![b'0'; 1 << 20];
        for _ in 0..3 {
            zip.write_all(&zeros).unwrap();
        }
        let bytes = zip.finish().unwrap().into_inner();
        assert!(bytes.len() < 64 << 10, "{} bytes packed", bytes.len());
        let e = check_archive_within(&bytes, 2 << 20).unwrap_err();
        assert!(e.contains("unpacks to more than 2 MiB"), "{e}");
        assert!(check_archive_within(&bytes, 4 << 20).is_ok());
        assert_eq!(cell_name(0, 0), "A1");
        assert_eq!(cell_name(9, 27), "AB10");
    }
}
