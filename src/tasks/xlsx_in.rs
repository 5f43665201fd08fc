//! Reading the owners' workbook back (`calamine`): every sheet but the instructions is a
//! source's tasks, its header row names the columns (reordered or added columns are
//! fine, as in CSV). A sheet stands for its source, so a workbook answers for several
//! sources at once without a `source` column.

use std::io::Cursor;

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

/// The rows of every task sheet; a workbook that cannot be read is one bad row.
pub fn parse(bytes: &[u8]) -> (Vec<Row>, Vec<BadRow>) {
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
        let range = match wb.worksheet_range(&name) {
            Ok(r) => r,
            Err(e) => {
                bad.push(BadRow::new(1, format!("sheet `{name}`: {e}")));
                continue;
            }
        };
        let Some((first_row, first_col)) = range.start() else {
            continue; // an empty sheet
        };
        let pad = vec![String::new(); first_col as usize];
        let mut all = range.rows().map(|r| {
            let mut cells = pad.clone();
            cells.extend(r.iter().map(text));
            cells
        });
        let Some(header) = all.next() else { continue };
        // The header is the sheet's row `first_row + 1` (1-based).
        let records = all
            .enumerate()
            .map(|(i, cells)| -> Record { Ok((u64::from(first_row) + i as u64 + 2, cells)) });
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
