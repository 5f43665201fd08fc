//! `identities.csv`: a header row, `id` required, every other column an attribute.

use std::collections::BTreeMap;
use std::io::Read;

use provd_connector_core::Identity;

/// Reads identities from CSV. Problems name the line. Empty cells are left out, so that a
/// template naming them fails with "missing attribute" instead of filling in nothing.
/// Values are kept exactly (a leading space is part of a name and of the DN made from it).
pub fn parse_csv(reader: impl Read) -> (BTreeMap<String, Identity>, Vec<(String, String)>) {
    let mut out = BTreeMap::new();
    let mut problems = Vec::new();
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(false)
        .trim(csv::Trim::Headers)
        .from_reader(strip_bom(reader));
    let headers = match rdr.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            problems.push(("line 1".into(), format!("cannot read the header row: {e}")));
            return (out, problems);
        }
    };
    let Some(id_col) = headers.iter().position(|h| h == "id") else {
        problems.push(("line 1".into(), "the header row has no `id` column".into()));
        return (out, problems);
    };
    for record in rdr.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                problems.push((format!("line {line}"), e.to_string()));
                continue;
            }
        };
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        if record.iter().all(str::is_empty) {
            continue;
        }
        let id = record.get(id_col).unwrap_or("").to_string();
        if id.is_empty() {
            problems.push((format!("line {line}"), "empty `id`".into()));
            continue;
        }
        if let Err(e) = crate::model::ident::check_identity_id(&id) {
            problems.push((format!("line {line}"), format!("`id` {e}")));
            continue;
        }
        let attributes = headers
            .iter()
            .zip(record.iter())
            .filter(|(h, v)| *h != "id" && !v.is_empty())
            .map(|(h, v)| (h.to_string(), v.to_string()))
            .collect();
        if out.contains_key(&id) {
            problems.push((
                format!("line {line}"),
                format!("duplicate identity id `{id}`"),
            ));
            continue;
        }
        out.insert(id.clone(), Identity { id, attributes });
    }
    (out, problems)
}

/// Spreadsheets save CSV with a UTF-8 byte order mark; the csv crate would make it part
/// of the first header.
fn strip_bom(mut reader: impl Read) -> impl Read {
    let mut head = [0u8; 3];
    let mut n = 0;
    while n < 3 {
        match reader.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    let skip = if n == 3 && head == [0xEF, 0xBB, 0xBF] {
        3
    } else {
        0
    };
    std::io::Cursor::new(head[skip..n].to_vec()).chain(reader)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_attributes_and_skips_blank_cells() {
        let csv =
            "\u{feff}id,firstName,lastName,email\r\nada,Ada,Lovelace,\r\n\r\nbob,Bob,,b@x\r\n";
        let (ids, problems) = parse_csv(csv.as_bytes());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(ids["ada"].attributes.get("firstName").unwrap(), "Ada");
        assert!(!ids["ada"].attributes.contains_key("email"));
        assert!(!ids["bob"].attributes.contains_key("lastName"));
    }

    #[test]
    fn reports_lines() {
        let csv = "id,a\nx,1\nx,2\n,3\n";
        let (_, problems) = parse_csv(csv.as_bytes());
        assert_eq!(problems.len(), 2);
        assert_eq!(problems[0].0, "line 3");
        assert!(problems[0].1.contains("duplicate"));
        assert_eq!(problems[1].0, "line 4");
        let (_, problems) = parse_csv("name\nx\n".as_bytes());
        assert!(problems[0].1.contains("no `id` column"));
    }
}
