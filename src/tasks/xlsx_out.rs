//! The source owners' workbook (DESIGN §15): one sheet per source, the columns the owner
//! fills first (a DONE/FAILED drop-down, note, who did it), then what to do in words they
//! know (the catalog's display names, requester, ticket, removeDate, dates as real date
//! cells in the agent's time zone), the task id last; header frozen; an instructions
//! sheet last. `provd tasks import` reads it back (`xlsx_in`).

use std::collections::BTreeMap;

use jiff::tz::TimeZone;
use rust_xlsxwriter::{DataValidation, Format, Workbook, Worksheet, XlsxError};

use crate::config::Catalog;
use crate::store::tasks::Task;

/// The header, in the order the owner reads it.
pub const HEADER: [&str; 15] = [
    "resolution",
    "note",
    "resolved_by",
    "operation",
    "identity_name",
    "item",
    "item_description",
    "account",
    "value",
    "requester",
    "ticket",
    "remove_date",
    "created",
    "due",
    "task_id",
];

const INSTRUCTIONS: &[&str] = &[
    "Access tasks for you to carry out",
    "",
    "Each sheet lists the tasks of one system. For each row:",
    "1. Do what the row says (operation, for whom, which access) in the system.",
    "2. Choose DONE in the resolution column when it is done, or FAILED when it cannot be done (say why in note).",
    "3. Put your name in resolved_by.",
    "Leave resolution empty for a task you have not done yet: it stays open.",
    "Save the file as it is (xlsx, or CSV in any encoding) and send it back; nothing else needs changing.",
    "",
    "remove_date: the access ends on that day; you will get a task to remove it then.",
    "Dates are in the time zone named below.",
];

/// Excel's serial date for a moment, in `zone` (days since 1899-12-30, the time as a
/// fraction).
fn serial(ms: i64, zone: &TimeZone) -> f64 {
    let ts = jiff::Timestamp::from_millisecond(ms).unwrap_or_default();
    let offset = zone.to_offset(ts).seconds() as f64;
    (ms as f64 / 1000.0 + offset) / 86_400.0 + 25_569.0
}

/// A sheet name Excel accepts: at most 31 characters, none of `[]:*?/\`.
fn sheet_name(source: &str) -> String {
    source
        .chars()
        .map(|c| if "[]:*?/\\".contains(c) { '_' } else { c })
        .take(31)
        .collect()
}

/// The workbook of `tasks` (grouped by source), as bytes.
pub fn write(tasks: &[Task], catalog: &Catalog, zone: &TimeZone) -> Result<Vec<u8>, XlsxError> {
    let mut wb = Workbook::new();
    let bold = Format::new().set_bold();
    let date = Format::new().set_num_format("yyyy-mm-dd hh:mm");
    let fill = Format::new().set_background_color("#FFF2CC");
    let mut by_source: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
    for t in tasks {
        by_source.entry(t.source.as_str()).or_default().push(t);
    }
    for (source, tasks) in by_source {
        let ws = wb.add_worksheet();
        ws.set_name(sheet_name(source))?;
        sheet(ws, &tasks, catalog, zone, (&bold, &date, &fill))?;
    }
    // Last: a spreadsheet that saves "the" sheet as CSV saves the first, a task sheet.
    let help = wb.add_worksheet();
    help.set_name("Instructions")?;
    help.set_column_width(0, 110)?;
    for (i, line) in INSTRUCTIONS.iter().enumerate() {
        if i == 0 {
            help.write_with_format(0, 0, *line, &bold)?;
        } else {
            help.write(i as u32, 0, *line)?;
        }
    }
    help.write(
        INSTRUCTIONS.len() as u32,
        0,
        format!("Time zone: {}", zone.iana_name().unwrap_or("UTC")),
    )?;
    wb.save_to_buffer()
}

fn sheet(
    ws: &mut Worksheet,
    tasks: &[&Task],
    catalog: &Catalog,
    zone: &TimeZone,
    (bold, date, fill): (&Format, &Format, &Format),
) -> Result<(), XlsxError> {
    for (c, h) in HEADER.iter().enumerate() {
        ws.write_with_format(0, c as u16, *h, bold)?;
    }
    let widths = [12, 30, 18, 20, 22, 26, 34, 28, 28, 16, 14, 17, 17, 17, 9];
    for (c, w) in widths.iter().enumerate() {
        ws.set_column_width(c as u16, *w)?;
    }
    ws.set_freeze_panes(1, 0)?;
    // Printed or rendered: landscape, every column on one page's width, the header on
    // every page (the columns to fill were on the fourth page of the CSV).
    ws.set_landscape();
    ws.set_print_fit_to_pages(1, 0);
    ws.set_repeat_rows(0, 0)?;
    let last = tasks.len().max(1) as u32;
    let choices = DataValidation::new().allow_list_strings(&["DONE", "FAILED"])?;
    ws.add_data_validation(1, 0, last, 0, &choices)?;
    for (i, t) in tasks.iter().enumerate() {
        let r = i as u32 + 1;
        let answered = t.status != crate::store::rules::TaskStatus::Open;
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        ws.write_with_format(r, 0, text(&t.resolution), fill)?;
        ws.write_with_format(r, 1, text(&t.note), fill)?;
        ws.write_with_format(
            r,
            2,
            if answered {
                text(&t.resolved_by)
            } else {
                String::new()
            },
            fill,
        )?;
        ws.write(r, 3, t.operation.as_str())?;
        ws.write(r, 4, t.identity_name.as_str())?;
        let item = catalog
            .value_name(&t.source, &t.attribute, &t.value)
            .unwrap_or(&t.value);
        ws.write(r, 5, item)?;
        let about = catalog
            .value_description(&t.source, &t.attribute, &t.value)
            .unwrap_or_default();
        ws.write(r, 6, about)?;
        ws.write(r, 7, t.account.as_str())?;
        ws.write(r, 8, t.value.as_str())?;
        ws.write(r, 9, text(&t.requester))?;
        ws.write(r, 10, text(&t.ticket))?;
        if let Some(at) = t.remove_at {
            ws.write_number_with_format(r, 11, serial(at, zone), date)?;
        }
        ws.write_number_with_format(r, 12, serial(t.created_at, zone), date)?;
        if let Some(at) = t.due_at {
            ws.write_number_with_format(r, 13, serial(at, zone), date)?;
        }
        ws.write(r, 14, format!("T{}", t.id))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_serials_in_the_agents_zone() {
        // 2026-01-01T00:00:00Z = serial 46023.
        let utc = serial(1_767_225_600_000, &TimeZone::UTC);
        assert!((utc - 46_023.0).abs() < 1e-9, "{utc}");
        let berlin = serial(1_767_225_600_000, &TimeZone::get("Europe/Berlin").unwrap());
        assert!((berlin - (46_023.0 + 1.0 / 24.0)).abs() < 1e-9, "{berlin}");
        assert_eq!(sheet_name("a/b:c"), "a_b_c");
        assert_eq!(sheet_name(&"x".repeat(40)).len(), 31);
    }
}
