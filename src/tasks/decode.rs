//! Task files as spreadsheets save them (DESIGN §15): LibreOffice and Excel write CSV in
//! UTF-8 with or without a byte order mark, in UTF-16 ("Unicode text") or in the
//! Windows code page, and an owner cannot be asked which. The encoding is detected, and
//! the import says which one it assumed.

use encoding_rs::{Encoding, UTF_16BE, UTF_16LE, WINDOWS_1252};

/// A file's text and the encoding it was read as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub text: String,
    /// `UTF-8`, `UTF-8 (with byte order mark)`, `UTF-16LE`, `UTF-16BE` or `windows-1252`.
    pub encoding: String,
}

/// Detects and decodes: a byte order mark decides; else UTF-16 when every other byte of
/// the start is zero (text without a mark); else UTF-8 when the bytes are valid UTF-8;
/// else Windows-1252, which maps every byte to a character (what Latin-1 saves too).
pub fn decode(bytes: &[u8]) -> Decoded {
    // A UTF-8 mark before bytes that are not UTF-8: a spreadsheet read our file as
    // Windows-1252 (the mark became `ï»¿`) and saved it so, mark bytes and all.
    if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF")
        && std::str::from_utf8(rest).is_err()
    {
        let (text, _) = WINDOWS_1252.decode_without_bom_handling(rest);
        return Decoded {
            text: text.into_owned(),
            encoding: "windows-1252 (after a UTF-8 byte order mark)".into(),
        };
    }
    if let Some((enc, bom)) = Encoding::for_bom(bytes) {
        let (text, _) = enc.decode_without_bom_handling(&bytes[bom..]);
        return Decoded {
            text: text.into_owned(),
            encoding: format!("{} (with byte order mark)", enc.name()),
        };
    }
    if let Some(enc) = utf16_without_bom(bytes) {
        let (text, _) = enc.decode_without_bom_handling(bytes);
        return Decoded {
            text: text.into_owned(),
            encoding: enc.name().to_string(),
        };
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Decoded {
            text: text.to_string(),
            encoding: "UTF-8".into(),
        },
        Err(_) => {
            let (text, _) = WINDOWS_1252.decode_without_bom_handling(bytes);
            Decoded {
                text: text.into_owned(),
                encoding: WINDOWS_1252.name().to_string(),
            }
        }
    }
}

/// Undoes the classic mix-up: UTF-8 text read as Windows-1252 (`ZoÃ«` for `Zoë`,
/// `ï»¿` for the byte order mark) and saved again. A cell whose characters, written back
/// as Windows-1252, are valid UTF-8 with something beyond ASCII is taken as such; what an
/// owner typed themselves (`Jürgen`) is not valid UTF-8 that way and stays as it is.
pub fn repair(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.is_ascii() {
        return cell.into();
    }
    let (bytes, _, unmappable) = WINDOWS_1252.encode(cell);
    if unmappable {
        return cell.into();
    }
    match std::str::from_utf8(&bytes) {
        Ok(fixed) if !fixed.is_ascii() && fixed != cell => fixed.to_string().into(),
        _ => cell.into(),
    }
}

/// ASCII text in UTF-16 has a zero in every other byte: the header (`task_id,…`) always
/// starts that way.
fn utf16_without_bom(bytes: &[u8]) -> Option<&'static Encoding> {
    let head = &bytes[..bytes.len().min(64) & !1];
    if head.len() < 8 {
        return None;
    }
    let (even, odd): (Vec<u8>, Vec<u8>) = head.chunks(2).map(|p| (p[0], p[1])).unzip();
    let zeros = |v: &[u8]| v.iter().filter(|b| **b == 0).count() * 10 >= v.len() * 9;
    match (zeros(&even), zeros(&odd)) {
        (false, true) => Some(UTF_16LE),
        (true, false) => Some(UTF_16BE),
        _ => None,
    }
}

/// A spreadsheet's name for the 0-based column `i`: A … Z, AA, AB, …
pub fn column_letter(i: usize) -> String {
    let mut n = i + 1;
    let mut out = Vec::new();
    while n > 0 {
        let r = (n - 1) % 26;
        out.push(b'A' + r as u8);
        n = (n - 1) / 26;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16le(s: &str, bom: bool) -> Vec<u8> {
        let mut out = if bom { vec![0xFF, 0xFE] } else { Vec::new() };
        out.extend(s.encode_utf16().flat_map(u16::to_le_bytes));
        out
    }

    #[test]
    fn every_encoding_a_spreadsheet_saves_is_read() {
        let text = "task_id,resolved_by\nT1,Jürgen Zoë\n";
        let d = decode(text.as_bytes());
        assert_eq!((d.text.as_str(), d.encoding.as_str()), (text, "UTF-8"));
        let mut bom = "\u{feff}".as_bytes().to_vec();
        bom.extend(text.as_bytes());
        let d = decode(&bom);
        assert_eq!(d.text, text);
        assert_eq!(d.encoding, "UTF-8 (with byte order mark)");
        let (latin, _, _) = WINDOWS_1252.encode(text);
        let d = decode(&latin);
        assert_eq!(
            (d.text.as_str(), d.encoding.as_str()),
            (text, "windows-1252")
        );
        assert_eq!(decode(&utf16le(text, true)).text, text);
        let d = decode(&utf16le(text, false));
        assert_eq!((d.text.as_str(), d.encoding.as_str()), (text, "UTF-16LE"));
        let be: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
        assert_eq!(decode(&be).text, text);
    }

    #[test]
    fn a_file_read_as_windows_1252_and_saved_again_is_repaired() {
        assert_eq!(repair("ZoÃ«"), "Zoë");
        assert_eq!(repair("ï»¿task_id"), "\u{feff}task_id");
        assert_eq!(repair("Jürgen"), "Jürgen", "typed by the owner: left alone");
        assert_eq!(repair("plain"), "plain");
        // Saved as Windows-1252 after the misreading: mark bytes, then non-UTF-8.
        let mut bytes = b"\xEF\xBB\xBFtask_id,resolved_by\r\nT1,J".to_vec();
        bytes.extend([0xFC]);
        bytes.extend(b"rgen Zo\xC3\xAB\r\n");
        let d = decode(&bytes);
        assert!(d.encoding.starts_with("windows-1252"), "{}", d.encoding);
        assert_eq!(d.text, "task_id,resolved_by\r\nT1,Jürgen ZoÃ«\r\n");
        assert_eq!(
            repair("Jürgen ZoÃ«"),
            "Jürgen ZoÃ«",
            "mixed: cannot tell, left alone"
        );
    }

    #[test]
    fn columns_are_lettered_as_spreadsheets_do() {
        assert_eq!(column_letter(0), "A");
        assert_eq!(column_letter(13), "N");
        assert_eq!(column_letter(25), "Z");
        assert_eq!(column_letter(26), "AA");
        assert_eq!(column_letter(701), "ZZ");
        assert_eq!(column_letter(702), "AAA");
    }
}
