//! Escaping values for DNs (RFC 4514 §2.4) and search filters (RFC 4515 §3). Only values
//! that come from identities are escaped; the template text around them is the operator's.

/// Escapes an attribute value for use in a DN: `,` `+` `"` `\` `<` `>` `;` `=` anywhere,
/// `#` and space at the start, space at the end, and NUL.
pub fn dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            _ => out.push(c),
        }
    }
    out
}

/// Escapes an assertion value for a search filter: `*` `(` `)` `\` NUL as `\XX`.
pub fn filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            _ => out.push(c),
        }
    }
    out
}

/// Splits a DN into its first RDN and the parent, honouring `\,` escapes.
pub fn split_dn(dn: &str) -> (&str, &str) {
    let bytes = dn.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b',' => return (&dn[..i], dn[i + 1..].trim_start()),
            _ => i += 1,
        }
    }
    (dn, "")
}

/// A DN folded the way the directory compares member values (case-insensitive names and
/// values, no spaces around the separators), so that `uid=A, ou=P` is `uid=a,ou=p`.
pub fn dn_key(dn: &str) -> String {
    let mut parts = Vec::new();
    let mut rest = dn.trim();
    while !rest.is_empty() {
        let (rdn, tail) = split_dn(rest);
        let folded = match rdn.split_once('=') {
            Some((k, v)) => format!("{}={}", k.trim(), v.trim()),
            None => rdn.trim().to_string(),
        };
        parts.push(folded.to_lowercase());
        rest = tail;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_fold_as_the_directory_compares_them() {
        assert_eq!(dn_key("UID=Ada, ou=People ,DC=x"), "uid=ada,ou=people,dc=x");
        assert_eq!(dn_key("cn=Doe\\, John,ou=p"), "cn=doe\\, john,ou=p");
        assert_eq!(dn_key(""), "");
    }

    #[test]
    fn dn_specials_are_escaped() {
        assert_eq!(dn_value("Doe, John"), "Doe\\, John");
        assert_eq!(
            dn_value("a+b=c\"d\\e<f>g;h"),
            "a\\+b\\=c\\\"d\\\\e\\<f\\>g\\;h"
        );
        assert_eq!(dn_value("#1"), "\\#1");
        assert_eq!(dn_value("a#1"), "a#1", "only a leading # is special");
        assert_eq!(dn_value(" lead"), "\\ lead");
        assert_eq!(dn_value("trail "), "trail\\ ");
        assert_eq!(dn_value("mid dle"), "mid dle");
        assert_eq!(dn_value(" "), "\\ ");
        assert_eq!(dn_value("Zoë"), "Zoë", "UTF-8 stays as it is");
        assert_eq!(dn_value(""), "");
    }

    #[test]
    fn filter_specials_are_hex_escaped() {
        assert_eq!(filter_value("a*b(c)d\\e"), "a\\2ab\\28c\\29d\\5ce");
        assert_eq!(filter_value("x\0"), "x\\00");
        assert_eq!(filter_value("plain, text=1"), "plain, text=1");
    }

    #[test]
    fn split_dn_honours_escaped_commas() {
        assert_eq!(
            split_dn("uid=a,ou=people,dc=x"),
            ("uid=a", "ou=people,dc=x")
        );
        assert_eq!(split_dn("cn=Doe\\, John,ou=p"), ("cn=Doe\\, John", "ou=p"));
        assert_eq!(split_dn("cn=a\\\\,ou=p"), ("cn=a\\\\", "ou=p"));
        assert_eq!(split_dn("dc=com"), ("dc=com", ""));
    }
}
