//! What an identity id may be. Ids come from HR feeds, CSV files and request paths, and
//! end up in logs, terminals, spreadsheets and target attributes: one rule for every
//! way in, so that a path like `../../etc`, a NUL or a bidi override never becomes a
//! stored identity.

/// The longest identity id taken, in bytes (an e-mail address fits with room to spare).
pub const MAX_IDENTITY_ID: usize = 256;

/// Control characters and the invisible formatting characters that can reorder or hide
/// text on a screen (bidi overrides and isolates, zero-width marks, the BOM).
pub fn is_control_or_invisible(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200b}'..='\u{200f}'   // zero-width spaces and joiners, LRM, RLM
            | '\u{202a}'..='\u{202e}' // embeddings and overrides
            | '\u{2066}'..='\u{2069}' // isolates
            | '\u{061c}'              // Arabic letter mark
            | '\u{feff}')
}

/// Checks an identity id; the error says what is wrong without repeating the id (it may
/// be 10 KB, or hold characters that rewrite a terminal).
pub fn check_identity_id(id: &str) -> Result<(), String> {
    if id.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if id.len() > MAX_IDENTITY_ID {
        return Err(format!(
            "is {} bytes long; at most {MAX_IDENTITY_ID} are allowed",
            id.len()
        ));
    }
    if let Some(c) = id.chars().find(|c| is_control_or_invisible(*c)) {
        return Err(format!(
            "must not hold control or invisible formatting characters (U+{:04X})",
            c as u32
        ));
    }
    // A backslash stays: it is an ordinary character in a DN or a name once escaped.
    if id.contains('/') {
        return Err("must not hold `/`".into());
    }
    if id.starts_with('.') {
        return Err("must not start with `.`".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_ids_pass() {
        for id in [
            "ada",
            "u0001",
            "ada.lovelace@example.com",
            "Ada King",
            "Zoë-1",
        ] {
            assert_eq!(check_identity_id(id), Ok(()), "{id}");
        }
    }

    #[test]
    fn hostile_ids_are_refused_without_being_quoted() {
        let long = "a".repeat(10_000);
        for id in [
            "",
            " ",
            "ada\0",
            "evil\u{202e}txt",
            "../../etc",
            "a/b",
            ".hidden",
            "ada\n",
            "\u{feff}ada",
            &long,
        ] {
            let e = check_identity_id(id).unwrap_err();
            assert!(id.trim().is_empty() || !e.contains(id.trim()), "{e}");
        }
        assert!(check_identity_id(&"a".repeat(MAX_IDENTITY_ID)).is_ok());
    }
}
