//! Writing the task CSV so that it opens cleanly in a spreadsheet and no cell can be taken
//! for a formula (OWASP "CSV injection"): a cell starting with `=`, `+`, `-`, `@`, tab or
//! carriage return gets a leading `'`, which spreadsheets hide and the import strips.

use std::io::Write;

use super::row::{COLUMNS, TaskRow};

const DANGEROUS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// The cell as written: prefixed with `'` if a spreadsheet could take it for a formula.
pub fn escape_cell(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(DANGEROUS) {
        std::borrow::Cow::Owned(format!("'{cell}"))
    } else {
        std::borrow::Cow::Borrowed(cell)
    }
}

/// The inverse, for the import: a leading `'` before a dangerous character goes.
pub fn unescape_cell(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if rest.starts_with(DANGEROUS) => rest,
        _ => cell,
    }
}

/// Writes the header and rows. `bom` adds a UTF-8 byte order mark (Excel reads the file
/// as UTF-8 only with it); lines end in CRLF as RFC 4180 and spreadsheets expect.
pub fn write(out: impl Write, rows: &[TaskRow], bom: bool) -> Result<(), csv::Error> {
    let mut out = out;
    if bom {
        out.write_all("\u{feff}".as_bytes())?;
    }
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(out);
    w.write_record(COLUMNS)?;
    for row in rows {
        w.write_record(row.cells().iter().map(|c| escape_cell(c).into_owned()))?;
    }
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dangerous_cells_are_prefixed() {
        for bad in [
            "=1+1",
            "+1",
            "-2",
            "@SUM(A1)",
            "\tx",
            "\rx",
            "=HYPERLINK(\"http://x\")",
        ] {
            let e = escape_cell(bad);
            assert!(e.starts_with('\''), "{bad:?} -> {e:?}");
            assert_eq!(unescape_cell(&e), bad);
        }
        for ok in ["Ada", "cn=vpn,dc=x", "", "'quoted", "a=b"] {
            assert_eq!(escape_cell(ok), ok);
            assert_eq!(unescape_cell(ok), ok);
        }
    }

    fn row(name: &str) -> TaskRow {
        TaskRow {
            task_id: "T1".into(),
            source: "flat".into(),
            owner: "o@x".into(),
            identity_id: "u1".into(),
            identity_name: name.into(),
            operation: "ADD_ENTITLEMENT".into(),
            account: "u1".into(),
            attribute: "groups".into(),
            value: "-admins".into(),
            request_id: "r".into(),
            created_at: "2030-01-01T00:00:00.000Z".into(),
            due_at: String::new(),
            status: "OPEN".into(),
            resolution: String::new(),
            resolved_by: String::new(),
            note: String::new(),
        }
    }

    #[test]
    fn written_file_has_header_bom_and_no_formula_cells() {
        let mut buf = Vec::new();
        write(
            &mut buf,
            &[row("=cmd|' /C calc'!A0"), row("Zoë, \"the\" admin")],
            true,
        )
        .unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.starts_with("\u{feff}task_id,source,owner,identity_id,identity_name,operation,account,attribute,value,request_id,created_at,due_at,status,resolution,resolved_by,note\r\n"));
        let mut rdr = csv::Reader::from_reader(text.trim_start_matches('\u{feff}').as_bytes());
        for rec in rdr.records() {
            for cell in rec.unwrap().iter() {
                assert!(!cell.starts_with(DANGEROUS), "dangerous cell {cell:?}");
            }
        }
        assert!(text.contains("\"Zoë, \"\"the\"\" admin\""));
    }
}
