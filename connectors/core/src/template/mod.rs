//! Templates of the Create Account specification: `"{firstName} {lastName}"`,
//! `"uid={id},ou=people,dc=example,dc=com"`. A placeholder names `id` or an identity
//! attribute; `{{` and `}}` stand for literal braces. Filled values go through an escape
//! function chosen by the connector (RFC 4514 for DNs, JSON or URL encoding for HTTP),
//! so the template's own text is never escaped, only what came from the identity.
//! A placeholder may also be an expression with functions ([`expr`]).

mod expr;

use crate::Identity;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The identity has no such attribute; the job fails permanently with this message.
    #[error(
        "identity {identity} has no attribute `{attribute}` (needed by template \"{template}\")"
    )]
    MissingAttribute {
        identity: String,
        attribute: String,
        template: String,
    },
    #[error("template \"{template}\": {reason}")]
    Syntax { template: String, reason: String },
}

#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Brace(char),
    Field(&'a str),
    Expr(Vec<expr::Term>),
}

fn parse(template: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let syntax = |reason: &str| TemplateError::Syntax {
        template: template.to_string(),
        reason: reason.to_string(),
    };
    let mut pieces = Vec::new();
    let mut rest = template;
    while let Some(pos) = rest.find(['{', '}']) {
        if pos > 0 {
            pieces.push(Piece::Text(&rest[..pos]));
        }
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("{{") {
            pieces.push(Piece::Brace('{'));
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            pieces.push(Piece::Brace('}'));
            rest = after;
        } else if tail.starts_with('}') {
            return Err(syntax("a lone `}` (write `}}` for a literal brace)"));
        } else {
            let end = tail
                .find('}')
                .ok_or_else(|| syntax("a `{` is never closed"))?;
            let name = tail[1..end].trim();
            if name.is_empty() || name.contains('{') {
                return Err(syntax("an empty or nested placeholder"));
            }
            if name.contains('(') {
                pieces.push(Piece::Expr(expr::parse(name).map_err(|r| syntax(&r))?));
            } else {
                pieces.push(Piece::Field(name));
            }
            rest = &tail[end + 1..];
        }
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    Ok(pieces)
}

/// The attributes a template reads (its placeholders', its expressions'), for `provd
/// check`.
pub fn placeholders(template: &str) -> Result<Vec<String>, TemplateError> {
    let mut out = Vec::new();
    for p in parse(template)? {
        match p {
            Piece::Field(name) => out.push(name.to_string()),
            Piece::Expr(terms) => expr::attributes(&terms, &mut out),
            Piece::Text(_) | Piece::Brace(_) => {}
        }
    }
    Ok(out)
}

/// Whether a template asks for a unique value (`unique(…)`): a connector that finds
/// its value taken tries [`fill_nth`] 2, 3, … instead of linking what it found.
pub fn is_unique(template: &str) -> Result<bool, TemplateError> {
    Ok(parse(template)?.iter().any(|p| match p {
        Piece::Expr(terms) => expr::has_unique(terms),
        _ => false,
    }))
}

/// Fills `template` from `identity`, passing every filled value through `escape`.
pub fn fill(
    template: &str,
    identity: &Identity,
    escape: impl Fn(&str) -> String,
) -> Result<String, TemplateError> {
    fill_nth(template, identity, escape, 1)
}

/// [`fill`] at the `nth` try of its `unique(…)` values: 1 is the value itself, 2 and on
/// add that number within the limit (`ada.lovelace2`).
pub fn fill_nth(
    template: &str,
    identity: &Identity,
    escape: impl Fn(&str) -> String,
    nth: u32,
) -> Result<String, TemplateError> {
    let missing = |attribute: String| TemplateError::MissingAttribute {
        identity: identity.id.clone(),
        attribute,
        template: template.to_string(),
    };
    let mut out = String::with_capacity(template.len() + 16);
    for piece in parse(template)? {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Brace(c) => out.push(c),
            Piece::Field(name) => {
                let value = identity
                    .get(name)
                    .ok_or_else(|| missing(name.to_string()))?;
                out.push_str(&escape(value));
            }
            Piece::Expr(terms) => {
                let value = expr::eval(&terms, identity, nth).map_err(missing)?;
                out.push_str(&escape(&value));
            }
        }
    }
    Ok(out)
}

/// The escape function for plain text: values as they are.
pub fn verbatim(value: &str) -> String {
    value.to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn ada() -> Identity {
        Identity {
            id: "ada".into(),
            attributes: BTreeMap::from([
                ("firstName".into(), "Ada".into()),
                ("lastName".into(), "Lovelace, Countess".into()),
            ]),
        }
    }

    #[test]
    fn fills_id_and_attributes() {
        let s = fill("{firstName} {lastName}", &ada(), verbatim).unwrap();
        assert_eq!(s, "Ada Lovelace, Countess");
        let s = fill("uid={id},ou=people", &ada(), verbatim).unwrap();
        assert_eq!(s, "uid=ada,ou=people");
    }

    #[test]
    fn escapes_only_filled_values() {
        let s = fill("cn={lastName},dc=x", &ada(), |v| v.replace(',', "\\,")).unwrap();
        assert_eq!(s, "cn=Lovelace\\, Countess,dc=x");
    }

    #[test]
    fn double_braces_are_literal() {
        let s = fill("{{{id}}}", &ada(), verbatim).unwrap();
        assert_eq!(s, "{ada}");
    }

    #[test]
    fn missing_attribute_names_it() {
        let err = fill("{email}", &ada(), verbatim).unwrap_err();
        assert!(err.to_string().contains("`email`"), "{err}");
        assert!(matches!(err, TemplateError::MissingAttribute { .. }));
    }

    #[test]
    fn syntax_errors_are_reported() {
        for bad in ["{id", "id}", "{}", "{ }"] {
            assert!(
                matches!(placeholders(bad), Err(TemplateError::Syntax { .. })),
                "{bad}"
            );
        }
        assert_eq!(placeholders("{a} and {b}").unwrap(), vec!["a", "b"]);
        let e = placeholders("{lower(a}").unwrap_err().to_string();
        assert!(e.contains("`lower(` is never closed"), "{e}");
    }

    #[test]
    fn expressions_fill_escaped_and_name_their_attributes() {
        let t = "cn={lower(lastName)}-{unique(truncate(firstName, 2), 4)},dc=x";
        assert_eq!(placeholders(t).unwrap(), ["lastName", "firstName"]);
        assert!(is_unique(t).unwrap() && !is_unique("{lower(id)}").unwrap());
        let s = fill(t, &ada(), |v| v.replace(',', "\\,")).unwrap();
        assert_eq!(s, "cn=lovelace\\, countess-Ad,dc=x");
        let s = fill_nth(t, &ada(), verbatim, 3).unwrap();
        assert_eq!(s, "cn=lovelace, countess-Ad3,dc=x");
        let err = fill("{upper(email)}", &ada(), verbatim).unwrap_err();
        assert!(
            matches!(err, TemplateError::MissingAttribute { ref attribute, .. } if attribute == "email")
        );
    }
}
