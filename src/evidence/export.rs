//! Reading a manual source's account export (DESIGN §17): CSV in any encoding a
//! spreadsheet saves, or the first sheet of an xlsx workbook, described by the source's
//! `[export]`. A cell it cannot read is named as the spreadsheet shows it (row, column
//! letter, header), and the whole file is refused: a partial export is no evidence.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;

use calamine::{Reader, Xlsx};

use crate::config::files::ExportSettings;
use crate::tasks::decode::{column_letter, decode};

/// The "any attribute" of values read from an `entitlements` column.
pub const ANY: &str = "*";

/// One account as the export shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub key: String,
    /// (attribute, value); attribute [`ANY`] when the column does not say.
    pub values: BTreeSet<(String, String)>,
    pub disabled: bool,
    /// (attribute, value) held only through a nested group, with that group (the one the
    /// account is directly in): read from a directory, never written (DESIGN §24).
    pub nested: BTreeMap<(String, String), String>,
}

impl Seen {
    /// The snapshot row's values: `[attribute, value]` each, and `[attribute, value, via]`
    /// for a nested one. A row of pairs only is what older snapshots hold.
    pub fn values_json(&self) -> Result<String, String> {
        let mut out: Vec<Vec<&str>> = self
            .values
            .iter()
            .map(|(a, v)| vec![a.as_str(), v.as_str()])
            .collect();
        out.extend(
            self.nested
                .iter()
                .map(|((a, v), via)| vec![a.as_str(), v.as_str(), via.as_str()]),
        );
        serde_json::to_string(&out).map_err(|e| e.to_string())
    }

    /// An account as a snapshot row holds it ([`Seen::values_json`]).
    pub fn from_row(key: String, values: &str, disabled: bool) -> Result<Seen, String> {
        let rows: Vec<Vec<String>> = serde_json::from_str(values).map_err(|e| e.to_string())?;
        let mut seen = Seen {
            key,
            values: BTreeSet::new(),
            disabled,
            nested: BTreeMap::new(),
        };
        for r in rows {
            match r.as_slice() {
                [a, v] => {
                    seen.values.insert((a.clone(), v.clone()));
                }
                [a, v, via] => {
                    seen.nested.insert((a.clone(), v.clone()), via.clone());
                }
                _ => return Err(format!("a value of {} is not [attribute, value]", seen.key)),
            }
        }
        Ok(seen)
    }

    /// Whether the account shows `value` in `attribute`.
    pub fn has(&self, attribute: &str, value: &str) -> bool {
        self.values
            .contains(&(attribute.to_string(), value.to_string()))
            || self.values.contains(&(ANY.to_string(), value.to_string()))
    }
}

/// The file's rows, header first.
pub fn table(bytes: &[u8]) -> Result<(Vec<Vec<String>>, String), String> {
    if crate::tasks::xlsx_in::is_xlsx(bytes) {
        let mut wb = Xlsx::new(Cursor::new(bytes.to_vec()))
            .map_err(|e| format!("not a readable xlsx workbook: {e}"))?;
        let Some(name) = wb.sheet_names().first().cloned() else {
            return Err("the workbook has no sheet".into());
        };
        let range = wb
            .worksheet_range(&name)
            .map_err(|e| format!("sheet `{name}`: {e}"))?;
        let rows = range
            .rows()
            .map(|r| r.iter().map(crate::tasks::xlsx_in::text).collect())
            .collect();
        return Ok((rows, format!("xlsx, sheet `{name}`")));
    }
    let d = decode(bytes);
    let mut rows = Vec::new();
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(d.text.as_bytes());
    for (i, r) in rdr.records().enumerate() {
        let r = r.map_err(|e| format!("row {}: {e}", i + 1))?;
        rows.push(r.iter().map(|c| c.trim().to_string()).collect());
    }
    Ok((rows, format!("CSV, {}", d.encoding)))
}

/// The accounts of the export, keyed; every problem found, each naming its cell.
pub fn accounts(
    rows: &[Vec<String>],
    e: &ExportSettings,
) -> Result<BTreeMap<String, Seen>, Vec<String>> {
    let Some((header, body)) = rows.split_first() else {
        return Err(vec!["the file is empty (no header row)".into()]);
    };
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(name))
    };
    let mut problems = Vec::new();
    let mut need = |name: &str, key: &str| {
        let c = col(name);
        if c.is_none() {
            problems.push(format!("no column `{name}` (export.{key}) in the header"));
        }
        c
    };
    let key = need(&e.key, "key");
    let ents = e
        .entitlements
        .as_ref()
        .map(|x| (need(&x.column, "entitlements.column"), x.separator.as_str()));
    let attrs: Vec<(String, Option<usize>)> = e
        .attributes
        .iter()
        .map(|(a, c)| (a.clone(), need(c, &format!("attributes.{a}"))))
        .collect();
    let status = e
        .status
        .as_ref()
        .map(|s| (need(&s.column, "status.column"), &s.disabled));
    if !problems.is_empty() {
        return Err(problems);
    }
    fn cell(r: &[String], c: Option<usize>) -> &str {
        c.and_then(|c| r.get(c)).map(|s| s.trim()).unwrap_or("")
    }
    let split = |text: &str, sep: &str| -> Vec<String> {
        text.split(sep)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .collect()
    };
    let mut out = BTreeMap::new();
    for (i, r) in body.iter().enumerate() {
        let row = i + 2;
        if r.iter().all(|c| c.trim().is_empty()) {
            continue;
        }
        let k = cell(r, key);
        let at = |c: Option<usize>, h: &str| {
            format!("row {row}, column {} ({h})", column_letter(c.unwrap_or(0)))
        };
        if k.is_empty() {
            problems.push(format!("{}: empty key", at(key, &e.key)));
            continue;
        }
        let mut values = BTreeSet::new();
        if let Some((c, sep)) = ents {
            values.extend(
                split(cell(r, c), sep)
                    .into_iter()
                    .map(|v| (ANY.to_string(), v)),
            );
        }
        for (a, c) in &attrs {
            values.extend(split(cell(r, *c), ";").into_iter().map(|v| (a.clone(), v)));
        }
        let disabled = status.is_some_and(|(c, disabled)| {
            let v = cell(r, c);
            disabled.iter().any(|d| d.eq_ignore_ascii_case(v))
        });
        let seen = Seen {
            key: k.to_string(),
            values,
            disabled,
            nested: BTreeMap::new(),
        };
        if out.insert(k.to_string(), seen).is_some() {
            problems.push(format!("{}: key `{k}` appears twice", at(key, &e.key)));
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 34, item 9: nested values survive the snapshot row; older rows (pairs
    /// only) still read.
    #[test]
    fn a_snapshot_row_keeps_nested_values_and_reads_old_rows() {
        let mut s = Seen {
            key: "uid=ada".into(),
            values: [("groups".to_string(), "cn=vpn".to_string())].into(),
            disabled: false,
            nested: BTreeMap::new(),
        };
        s.nested
            .insert(("groups".into(), "cn=all".into()), "cn=team".into());
        let back = Seen::from_row("uid=ada".into(), &s.values_json().unwrap(), false).unwrap();
        assert_eq!(back, s);
        let old = Seen::from_row("uid=ada".into(), r#"[["groups","cn=vpn"]]"#, true).unwrap();
        assert!(old.has("groups", "cn=vpn") && old.nested.is_empty() && old.disabled);
        assert!(Seen::from_row("x".into(), r#"[["groups"]]"#, false).is_err());
    }

    fn settings() -> ExportSettings {
        toml::from_str(
            "key = \"employee_id\"\nentitlements = { column = \"roles\" }\nstatus = { column = \"state\", disabled = [\"inactive\"] }",
        )
        .unwrap()
    }

    #[test]
    fn rows_become_accounts_with_values_and_status() {
        let (rows, how) = table(b"employee_id,name,roles,state\r\nada@x,Ada,PAYROLL_VIEW; PAYROLL_ADMIN,active\r\nbob@x,Bob,,INACTIVE\r\n,,,\r\n").unwrap();
        assert_eq!(how, "CSV, UTF-8");
        let a = accounts(&rows, &settings()).unwrap();
        assert_eq!(a.len(), 2);
        assert!(a["ada@x"].has("groups", "PAYROLL_ADMIN"));
        assert!(!a["ada@x"].disabled);
        assert!(a["bob@x"].disabled && a["bob@x"].values.is_empty());
    }

    #[test]
    fn a_bad_file_is_refused_with_its_cells_named() {
        let (rows, _) = table(b"employee,roles\nada,X\n").unwrap();
        let e = accounts(&rows, &settings()).unwrap_err();
        assert!(
            e.contains(&"no column `employee_id` (export.key) in the header".to_string()),
            "{e:?}"
        );
        let (rows, _) = table(b"employee_id,roles,state\nada,X,\n,Y,\nada,Z,\n").unwrap();
        let e = accounts(&rows, &settings()).unwrap_err();
        assert_eq!(
            e,
            [
                "row 3, column A (employee_id): empty key",
                "row 4, column A (employee_id): key `ada` appears twice"
            ]
        );
    }
}
